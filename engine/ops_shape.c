/* ops_shape.c — differentiable shape ops: views (view, reshape, permute, transpose, narrow,
 * select, squeeze, unsqueeze, expand), contiguous, cat and stack, each with its backward.
 *
 * Views share storage (cn_as_strided); their backward maps the output gradient back onto the
 * input's geometry. Broadcasting of expand needs no backward code: the engine sums every gradient
 * down to its input's shape (autograd.c). */
#include <stdlib.h>
#include <string.h>

#include "autograd.h"
#include "ops.h"
#include "ops_spatial.h"
#include "tensor.h"

/* ---- view, reshape ----------------------------------------------------------------------- */

/* Resolves one -1 entry of a requested shape against numel; fills out. */
static bool infer_shape(int ndim, const int64_t *shape, size_t numel, int64_t *out, const char *fname,
                        const cn_tensor *t, cn_error *err) {
    char want[160], have[160];
    if (!(ndim >= 0 && ndim <= CN_MAX_DIMS)) {
        cn_error_set(err, "%s: %d dims requested, at most %d supported", fname, ndim, CN_MAX_DIMS);
        return false;
    }
    int infer = -1;
    size_t known = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] == -1 && infer < 0) {
            infer = i;
        } else if (shape[i] < 0) {
            cn_error_set(err, "%s: invalid shape %s", fname, cn_shape_str(want, sizeof want, ndim, shape));
            return false;
        } else if (shape[i] == 0) {
            known = 0;
        } else if (known != 0 && cn_size_mul(known, (size_t)shape[i], &known)) {
            known = SIZE_MAX; /* saturated: equals no tensor's numel (all are <= CN_MAX_NUMEL) */
        }
        out[i] = shape[i];
    }
    if (infer >= 0) {
        if (known == 0 || numel % known) goto mismatch;
        out[infer] = (int64_t)(numel / known);
    } else if (known != numel) {
        goto mismatch;
    }
    return true;
mismatch:
    cn_error_set(err, "%s: shape %s is invalid for a tensor of shape %s (%zu elements)", fname,
                 cn_shape_str(want, sizeof want, ndim, shape),
                 cn_shape_str(have, sizeof have, t->ndim, t->shape), numel);
    return false;
}

/* Strides for viewing t as new_shape without copying (as torch's computeStride); false if impossible. */
static bool view_strides(const cn_tensor *t, int ndim, const int64_t *new_shape, int64_t *new_stride) {
    if (cn_numel(t) == 0 || cn_is_contiguous(t)) {
        cn_contiguous_strides(ndim, new_shape, new_stride);
        return true;
    }
    int view_d = ndim - 1;
    int64_t chunk_base_stride = t->ndim ? t->stride[t->ndim - 1] : 1;
    int64_t tensor_numel = 1, view_numel = 1;
    for (int tensor_d = t->ndim - 1; tensor_d >= 0; tensor_d--) {
        tensor_numel *= t->shape[tensor_d];
        if (tensor_d == 0 || (t->shape[tensor_d - 1] != 1 &&
                              t->stride[tensor_d - 1] != tensor_numel * chunk_base_stride)) {
            while (view_d >= 0 && (view_numel < tensor_numel || new_shape[view_d] == 1)) {
                new_stride[view_d] = view_numel * chunk_base_stride;
                view_numel *= new_shape[view_d];
                view_d--;
            }
            if (view_numel != tensor_numel) return false;
            if (tensor_d > 0) {
                chunk_base_stride = t->stride[tensor_d - 1];
                tensor_numel = 1;
                view_numel = 1;
            }
        }
    }
    return view_d == -1;
}

static cn_tensor *view_raw(cn_tensor *t, int ndim, const int64_t *shape, cn_error *err) {
    int64_t resolved[CN_MAX_DIMS], stride[CN_MAX_DIMS];
    if (!infer_shape(ndim, shape, cn_numel(t), resolved, "view", t, err)) return NULL;
    if (!view_strides(t, ndim, resolved, stride)) {
        char a[160], b[160];
        cn_error_set(err, "view: a tensor of shape %s with these strides cannot be viewed as %s; "
                     "use reshape (or contiguous first)",
                     cn_shape_str(a, sizeof a, t->ndim, t->shape), cn_shape_str(b, sizeof b, ndim, resolved));
        return NULL;
    }
    return cn_as_strided(t, ndim, resolved, stride, t->offset, err);
}

static cn_tensor *reshape_raw(cn_tensor *t, int ndim, const int64_t *shape, cn_error *err) {
    int64_t resolved[CN_MAX_DIMS], stride[CN_MAX_DIMS];
    if (!infer_shape(ndim, shape, cn_numel(t), resolved, "reshape", t, err)) return NULL;
    if (view_strides(t, ndim, resolved, stride)) return cn_as_strided(t, ndim, resolved, stride, t->offset, err);
    cn_tensor *c = cn_empty(t->ndim, t->shape, err);
    if (!c) return NULL;
    if (cn_copy_(c, t, err)) {
        cn_release(c);
        return NULL;
    }
    cn_tensor *r = view_raw(c, ndim, resolved, err);
    cn_release(c);
    return r;
}

/* d/dx reshape(x) = reshape(g) back to x's shape (view, reshape, squeeze, unsqueeze, flatten). */
static int reshape_backward(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    const cn_tensor *in = n->inputs[0];
    return (gi[0] = cn_reshape((cn_tensor *)g, in->ndim, in->shape, err)) ? 0 : -1;
}

static const cn_op_def op_view = {"view", reshape_backward, reshape_backward};
static const cn_op_def op_reshape = {"reshape", reshape_backward, reshape_backward};

cn_tensor *cn_view(cn_tensor *t, int ndim, const int64_t *shape, cn_error *err) {
    return cn_record_result(view_raw(t, ndim, shape, err), &op_view, 1, &t, NULL, err);
}

cn_tensor *cn_reshape(cn_tensor *t, int ndim, const int64_t *shape, cn_error *err) {
    return cn_record_result(reshape_raw(t, ndim, shape, err), &op_reshape, 1, &t, NULL, err);
}

/* ---- permute, transpose ------------------------------------------------------------------ */

static cn_tensor *permute_raw(cn_tensor *t, const int *perm, cn_error *err) {
    int64_t shape[CN_MAX_DIMS], stride[CN_MAX_DIMS];
    bool seen[CN_MAX_DIMS] = {false};
    for (int i = 0; i < t->ndim; i++) {
        int d = cn_wrap_dim(perm[i], t->ndim, "permute", err);
        if (d < 0) return NULL;
        if (seen[d]) {
            cn_error_set(err, "permute: dim %d repeated", perm[i]);
            return NULL;
        }
        seen[d] = true;
        shape[i] = t->shape[d];
        stride[i] = t->stride[d];
    }
    return cn_as_strided(t, t->ndim, shape, stride, t->offset, err);
}

/* permute: the gradient goes through the inverse permutation. */
struct permute_args {
    int inverse[CN_MAX_DIMS];
};

static int permute_backward(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    return (gi[0] = cn_permute((cn_tensor *)g, CN_NODE_ARGS(n, struct permute_args)->inverse, err)) ? 0 : -1;
}

static const cn_op_def op_permute = {"permute", permute_backward, permute_backward};

cn_tensor *cn_permute(cn_tensor *t, const int *perm, cn_error *err) {
    cn_node *node;
    cn_tensor *r = cn_record_result(permute_raw(t, perm, err), &op_permute, 1, &t, &node, err);
    if (node)
        for (int i = 0; i < t->ndim; i++)
            CN_NODE_ARGS(node, struct permute_args)->inverse[cn_wrap_dim(perm[i], t->ndim, "permute", NULL)] = i;
    return r;
}

cn_tensor *cn_transpose(cn_tensor *t, int d0, int d1, cn_error *err) {
    int a = cn_wrap_dim(d0, t->ndim, "transpose", err);
    if (a < 0) return NULL;
    int b = cn_wrap_dim(d1, t->ndim, "transpose", err);
    if (b < 0) return NULL;
    int perm[CN_MAX_DIMS];
    for (int i = 0; i < t->ndim; i++) perm[i] = i;
    perm[a] = b;
    perm[b] = a;
    return cn_permute(t, perm, err);
}

/* ---- narrow, select ---------------------------------------------------------------------- */

static cn_tensor *narrow_raw(cn_tensor *t, int dim, int64_t start, int64_t length, cn_error *err) {
    int d = cn_wrap_dim(dim, t->ndim, "narrow", err);
    if (d < 0) return NULL;
    int64_t end;
    if (__builtin_add_overflow(start, length, &end)) end = INT64_MAX;
    if (start < 0 || length < 0 || end > t->shape[d]) {
        char buf[160];
        cn_error_set(err, "narrow: range [%lld, %lld) out of bounds for dim %d of size %lld (shape %s)",
                     (long long)start, (long long)end, dim, (long long)t->shape[d],
                     cn_shape_str(buf, sizeof buf, t->ndim, t->shape));
        return NULL;
    }
    int64_t shape[CN_MAX_DIMS];
    memcpy(shape, t->shape, sizeof shape);
    shape[d] = length;
    return cn_as_strided(t, t->ndim, shape, t->stride, t->offset + (size_t)(start * t->stride[d]), err);
}

static cn_tensor *select_raw(cn_tensor *t, int dim, int64_t index, cn_error *err) {
    int d = cn_wrap_dim(dim, t->ndim, "select", err);
    if (d < 0) return NULL;
    if (index < 0 || index >= t->shape[d]) {
        char buf[160];
        cn_error_set(err, "select: index %lld out of range for dim %d of size %lld (shape %s)",
                     (long long)index, dim, (long long)t->shape[d],
                     cn_shape_str(buf, sizeof buf, t->ndim, t->shape));
        return NULL;
    }
    int64_t shape[CN_MAX_DIMS], stride[CN_MAX_DIMS];
    int n = 0;
    for (int i = 0; i < t->ndim; i++) {
        if (i == d) continue;
        shape[n] = t->shape[i];
        stride[n++] = t->stride[i];
    }
    return cn_as_strided(t, n, shape, stride, t->offset + (size_t)(index * t->stride[d]), err);
}

/* narrow / select: scatter the gradient into zeros of the input's shape. */
struct slice_args {
    int dim;       /* wrapped */
    int64_t start; /* narrow's start, select's index */
    bool select;   /* select (drops dim), else narrow */
};

static int scatter_backward(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    const struct slice_args *args = CN_NODE_ARGS(n, struct slice_args);
    const cn_tensor *in = n->inputs[0];
    cn_tensor *z = cn_zeros(in->ndim, in->shape, err);
    if (!z) return -1;
    int dim = args->dim;
    cn_tensor *part = args->select ? select_raw(z, dim, args->start, err)
                                   : narrow_raw(z, dim, args->start, g->shape[dim], err);
    if (!part || cn_copy_(part, g, err)) {
        cn_release(part);
        cn_release(z);
        return -1;
    }
    cn_release(part);
    gi[0] = z;
    return 0;
}

/* The recorded scatter (create_graph): g padded with zeros along dim, whose backward is a narrow. */
static int scatter_backward_graph(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    const struct slice_args *args = CN_NODE_ARGS(n, struct slice_args);
    const cn_tensor *in = n->inputs[0];
    int dim = args->dim;
    cn_tensor *part = args->select ? cn_unsqueeze((cn_tensor *)g, dim, err) : cn_retain((cn_tensor *)g);
    if (!part) return -1;
    int n_pairs = in->ndim - dim;
    int64_t pads[2 * CN_MAX_DIMS] = {0}; /* last dim first, as cn_pad */
    pads[2 * (n_pairs - 1)] = args->start;
    pads[2 * (n_pairs - 1) + 1] = in->shape[dim] - args->start - part->shape[dim];
    gi[0] = cn_pad(part, n_pairs, pads, CN_PAD_CONSTANT, 0.0f, err);
    cn_release(part);
    return gi[0] ? 0 : -1;
}

static const cn_op_def op_narrow = {"narrow", scatter_backward, scatter_backward_graph};
static const cn_op_def op_select = {"select", scatter_backward, scatter_backward_graph};

cn_tensor *cn_narrow(cn_tensor *t, int dim, int64_t start, int64_t length, cn_error *err) {
    cn_node *node;
    cn_tensor *r = cn_record_result(narrow_raw(t, dim, start, length, err), &op_narrow, 1, &t, &node, err);
    if (node)
        *CN_NODE_ARGS(node, struct slice_args) =
            (struct slice_args){.dim = cn_wrap_dim(dim, t->ndim, "narrow", NULL), .start = start, .select = false};
    return r;
}

cn_tensor *cn_select(cn_tensor *t, int dim, int64_t index, cn_error *err) {
    cn_node *node;
    cn_tensor *r = cn_record_result(select_raw(t, dim, index, err), &op_select, 1, &t, &node, err);
    if (node)
        *CN_NODE_ARGS(node, struct slice_args) =
            (struct slice_args){.dim = cn_wrap_dim(dim, t->ndim, "select", NULL), .start = index, .select = true};
    return r;
}

/* ---- squeeze, unsqueeze (views; their backward is reshape's) ----------------------------- */

static cn_tensor *squeeze_raw(cn_tensor *t, int dim, cn_error *err) {
    int d = cn_wrap_dim(dim, t->ndim, "squeeze", err);
    if (d < 0) return NULL;
    if (t->shape[d] != 1) {
        char buf[160];
        cn_error_set(err, "squeeze: dim %d has size %lld, not 1 (shape %s)", dim, (long long)t->shape[d],
                     cn_shape_str(buf, sizeof buf, t->ndim, t->shape));
        return NULL;
    }
    return select_raw(t, d, 0, err);
}

static cn_tensor *squeeze_all_raw(cn_tensor *t, cn_error *err) {
    int64_t shape[CN_MAX_DIMS], stride[CN_MAX_DIMS];
    int n = 0;
    for (int i = 0; i < t->ndim; i++) {
        if (t->shape[i] == 1) continue;
        shape[n] = t->shape[i];
        stride[n++] = t->stride[i];
    }
    return cn_as_strided(t, n, shape, stride, t->offset, err);
}

static cn_tensor *unsqueeze_raw(cn_tensor *t, int dim, cn_error *err) {
    if (t->ndim >= CN_MAX_DIMS) {
        cn_error_set(err, "unsqueeze: a tensor already has the maximum of %d dims", CN_MAX_DIMS);
        return NULL;
    }
    int d = cn_wrap_dim(dim, t->ndim + 1, "unsqueeze", err);
    if (d < 0) return NULL;
    int64_t shape[CN_MAX_DIMS], stride[CN_MAX_DIMS];
    for (int i = 0, j = 0; i <= t->ndim; i++) {
        if (i == d) {
            shape[i] = 1;
            stride[i] = d < t->ndim ? t->stride[d] * t->shape[d] : 1;
        } else {
            shape[i] = t->shape[j];
            stride[i] = t->stride[j++];
        }
    }
    return cn_as_strided(t, t->ndim + 1, shape, stride, t->offset, err);
}

static const cn_op_def op_squeeze = {"squeeze", reshape_backward, reshape_backward};
static const cn_op_def op_unsqueeze = {"unsqueeze", reshape_backward, reshape_backward};

cn_tensor *cn_squeeze(cn_tensor *t, int dim, cn_error *err) {
    return cn_record_result(squeeze_raw(t, dim, err), &op_squeeze, 1, &t, NULL, err);
}

cn_tensor *cn_squeeze_all(cn_tensor *t, cn_error *err) {
    return cn_record_result(squeeze_all_raw(t, err), &op_squeeze, 1, &t, NULL, err);
}

cn_tensor *cn_unsqueeze(cn_tensor *t, int dim, cn_error *err) {
    return cn_record_result(unsqueeze_raw(t, dim, err), &op_unsqueeze, 1, &t, NULL, err);
}

/* ---- expand, contiguous ------------------------------------------------------------------ */

static cn_tensor *expand_raw(cn_tensor *t, int ndim, const int64_t *shape, cn_error *err) {
    char a[160], b[160];
    if (ndim < t->ndim || ndim > CN_MAX_DIMS) {
        cn_error_set(err, "expand: cannot expand shape %s to %s (fewer dims)",
                     cn_shape_str(a, sizeof a, t->ndim, t->shape), cn_shape_str(b, sizeof b, ndim, shape));
        return NULL;
    }
    int64_t out_shape[CN_MAX_DIMS], out_stride[CN_MAX_DIMS];
    int lead = ndim - t->ndim;
    for (int i = 0; i < ndim; i++) {
        int64_t want = shape[i];
        if (i < lead) {
            if (want < 0) goto bad;
            out_shape[i] = want;
            out_stride[i] = 0;
            continue;
        }
        int64_t have = t->shape[i - lead];
        if (want == -1 || want == have) {
            out_shape[i] = have;
            out_stride[i] = t->stride[i - lead];
        } else if (have == 1 && want >= 0) {
            out_shape[i] = want;
            out_stride[i] = 0;
        } else {
            goto bad;
        }
    }
    if (cn_shape_numel_checked(ndim, out_shape, NULL, "expand", err)) return NULL;
    return cn_as_strided(t, ndim, out_shape, out_stride, t->offset, err);
bad:
    cn_error_set(err, "expand: cannot expand shape %s to %s",
                 cn_shape_str(a, sizeof a, t->ndim, t->shape), cn_shape_str(b, sizeof b, ndim, shape));
    return NULL;
}

static cn_tensor *contiguous_raw(cn_tensor *t, cn_error *err) {
    cn_tensor *c = cn_empty(t->ndim, t->shape, err);
    if (c && cn_copy_(c, t, err)) {
        cn_release(c);
        return NULL;
    }
    return c;
}

/* Identity backward (contiguous, expand: the engine sums broadcast dims away). */
static int identity_backward(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    (void)n, (void)err;
    gi[0] = cn_retain((cn_tensor *)g);
    return 0;
}

static const cn_op_def op_expand = {"expand", identity_backward, identity_backward};
static const cn_op_def op_contiguous = {"contiguous", identity_backward, identity_backward};

cn_tensor *cn_expand(cn_tensor *t, int ndim, const int64_t *shape, cn_error *err) {
    return cn_record_result(expand_raw(t, ndim, shape, err), &op_expand, 1, &t, NULL, err);
}

cn_tensor *cn_contiguous(cn_tensor *t, cn_error *err) {
    if (cn_is_contiguous(t)) return cn_retain(t);
    return cn_record_result(contiguous_raw(t, err), &op_contiguous, 1, &t, NULL, err);
}

/* ---- cat, stack -------------------------------------------------------------------------- */

/* Whether t is, for cat along dim d, a sequence of contiguous blocks of shape[d..] (those dims
 * row-major) at equal steps for the outer index over dims 0..d-1: a contiguous tensor, or a narrow of
 * one along dim d or before (the halves of an ODE state). *step receives the floats between blocks. */
static bool block_layout(const cn_tensor *t, int d, int64_t *step) {
    int64_t span = 1;
    for (int j = t->ndim - 1; j >= d; j--) {
        if (t->shape[j] != 1 && t->stride[j] != span) return false;
        span *= t->shape[j];
    }
    *step = span; /* no outer dim larger than 1: one block */
    int64_t expect = 0;           /* the stride the next outer dim (going left) must have */
    for (int k = d - 1; k >= 0; k--) {
        if (t->shape[k] == 1) continue;
        if (expect == 0) *step = t->stride[k];
        else if (t->stride[k] != expect) return false;
        expect = t->stride[k] * t->shape[k];
    }
    return true;
}

static cn_tensor *cat_raw(int n, cn_tensor *const *ts, int dim, cn_error *err) {
    if (n <= 0) {
        cn_error_set(err, "cat: expected a non-empty list of tensors");
        return NULL;
    }
    const cn_tensor *first = ts[0];
    int d = cn_wrap_dim(dim, first->ndim, "cat", err);
    if (d < 0) return NULL;
    int64_t shape[CN_MAX_DIMS];
    memcpy(shape, first->shape, sizeof shape);
    shape[d] = 0;
    for (int i = 0; i < n; i++) {
        const cn_tensor *t = ts[i];
        bool ok = t->ndim == first->ndim;
        for (int j = 0; ok && j < t->ndim; j++) ok = j == d || t->shape[j] == first->shape[j];
        if (!ok) {
            char a[160], b[160];
            cn_error_set(err, "cat: tensor %d has shape %s, incompatible with %s along dim %d", i + 1,
                         cn_shape_str(a, sizeof a, t->ndim, t->shape),
                         cn_shape_str(b, sizeof b, first->ndim, first->shape), dim);
            return NULL;
        }
        shape[d] += t->shape[d];
    }
    cn_tensor *out = cn_empty(first->ndim, shape, err);
    if (!out) return NULL;
    int64_t at = 0, outer = 1, inner = 1;
    for (int j = 0; j < d; j++) outer *= shape[j];
    for (int j = d + 1; j < first->ndim; j++) inner *= shape[j];
    for (int i = 0; i < n; i++) {
        int64_t src_step;
        if (block_layout(ts[i], d, &src_step)) { /* outer blocks of shape[d]·inner floats each */
            size_t blk = (size_t)(ts[i]->shape[d] * inner), row = (size_t)(shape[d] * inner);
            const float *src = cn_data(ts[i]);
            float *dst = cn_data(out) + (size_t)(at * inner);
            #pragma omp parallel for schedule(static) if ((size_t)outer * blk > 262144 && outer > 1)
            for (int64_t o = 0; o < outer; o++)
                memcpy(dst + (size_t)o * row, src + (size_t)o * (size_t)src_step, blk * sizeof *dst);
            at += ts[i]->shape[d];
            continue;
        }
        cn_tensor *part = narrow_raw(out, d, at, ts[i]->shape[d], err);
        if (!part) {
            cn_release(out);
            return NULL;
        }
        int status = cn_copy_(part, ts[i], err);
        cn_release(part);
        if (status) {
            cn_release(out);
            return NULL;
        }
        at += ts[i]->shape[d];
    }
    return out;
}

static cn_tensor *stack_raw(int n, cn_tensor *const *ts, int dim, cn_error *err) {
    if (n <= 0) {
        cn_error_set(err, "stack: expected a non-empty list of tensors");
        return NULL;
    }
    int d = cn_wrap_dim(dim, ts[0]->ndim + 1, "stack", err);
    if (d < 0) return NULL;
    for (int i = 1; i < n; i++) {
        if (!cn_same_shape(ts[i], ts[0])) {
            char a[160], b[160];
            cn_error_set(err, "stack: tensor %d has shape %s but tensor 1 has shape %s", i + 1,
                         cn_shape_str(a, sizeof a, ts[i]->ndim, ts[i]->shape),
                         cn_shape_str(b, sizeof b, ts[0]->ndim, ts[0]->shape));
            return NULL;
        }
    }
    cn_tensor **parts = malloc((size_t)n * sizeof *parts);
    if (!parts) {
        cn_error_set(err, "out of memory");
        return NULL;
    }
    cn_tensor *out = NULL;
    int made = 0;
    for (; made < n; made++) {
        parts[made] = unsqueeze_raw(ts[made], d, err);
        if (!parts[made]) goto done;
    }
    out = cat_raw(n, parts, d, err);
done:
    for (int i = 0; i < made; i++) cn_release(parts[i]);
    free(parts);
    return out;
}

/* cat / stack: each input gets its slice of the gradient. */
struct join_args {
    int dim;    /* wrapped (for stack: the new dim) */
    bool stack; /* stack (a new dim), else cat */
};

static int split_backward(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    const struct join_args *args = CN_NODE_ARGS(n, struct join_args);
    int dim = args->dim;
    int64_t at = 0;
    for (int i = 0; i < n->n_inputs; i++) {
        if (!n->inputs[i]->requires_grad) {
            at += args->stack ? 1 : n->inputs[i]->shape[dim];
            continue;
        }
        if (args->stack) {
            gi[i] = cn_select((cn_tensor *)g, dim, at++, err);
        } else {
            gi[i] = cn_narrow((cn_tensor *)g, dim, at, n->inputs[i]->shape[dim], err);
            at += n->inputs[i]->shape[dim];
        }
        if (!gi[i]) return -1;
    }
    return 0;
}

static const cn_op_def op_cat = {"cat", split_backward, split_backward};
static const cn_op_def op_stack = {"stack", split_backward, split_backward};

cn_tensor *cn_cat(int n, cn_tensor *const *ts, int dim, cn_error *err) {
    cn_node *node;
    cn_tensor *r = cn_record_result(cat_raw(n, ts, dim, err), &op_cat, n, ts, &node, err);
    if (node)
        *CN_NODE_ARGS(node, struct join_args) =
            (struct join_args){.dim = cn_wrap_dim(dim, ts[0]->ndim, "cat", NULL), .stack = false};
    return r;
}

cn_tensor *cn_stack(int n, cn_tensor *const *ts, int dim, cn_error *err) {
    cn_node *node;
    cn_tensor *r = cn_record_result(stack_raw(n, ts, dim, err), &op_stack, n, ts, &node, err);
    if (node)
        *CN_NODE_ARGS(node, struct join_args) =
            (struct join_args){.dim = cn_wrap_dim(dim, ts[0]->ndim + 1, "stack", NULL), .stack = true};
    return r;
}

/* ---- index_select ------------------------------------------------------------------------ */

/* t viewed as [outer, size, inner] (contiguous) with the positions checked; fills the sizes. */
static cn_tensor *index_plan(cn_tensor *t, int d, const cn_tensor *index, int64_t *outer, int64_t *inner,
                             int64_t **pos, cn_error *err) {
    char a[160];
    if (index->ndim != 1) {
        cn_error_set(err, "index_select: index must be 1-D, got shape %s",
                     cn_shape_str(a, sizeof a, index->ndim, index->shape));
        return NULL;
    }
    int64_t n = index->shape[0], size = t->shape[d];
    *pos = malloc((size_t)(n ? n : 1) * sizeof **pos);
    if (!*pos) {
        cn_error_set(err, "index_select: out of memory");
        return NULL;
    }
    for (int64_t j = 0; j < n; j++) {
        float v = index->storage->data[index->offset + (size_t)(j * index->stride[0])];
        if (!(v >= 0 && v < (float)size && v == (float)(int64_t)v)) {
            cn_error_set(err, "index_select: index %g out of range for dim %d of size %lld (shape %s)", (double)v,
                         d, (long long)size, cn_shape_str(a, sizeof a, t->ndim, t->shape));
            free(*pos);
            return NULL;
        }
        (*pos)[j] = (int64_t)v;
    }
    *outer = 1, *inner = 1;
    for (int i = 0; i < d; i++) *outer *= t->shape[i];
    for (int i = d + 1; i < t->ndim; i++) *inner *= t->shape[i];
    return cn_is_contiguous(t) ? cn_retain(t) : contiguous_raw(t, err);
}

static cn_tensor *index_select_raw(cn_tensor *t, int dim, const cn_tensor *index, cn_error *err) {
    int d = cn_wrap_dim(dim, t->ndim, "index_select", err);
    if (d < 0) return NULL;
    int64_t outer, inner, *pos;
    cn_tensor *src = index_plan(t, d, index, &outer, &inner, &pos, err);
    if (!src) return NULL;
    int64_t shape[CN_MAX_DIMS], n = index->shape[0], size = t->shape[d];
    memcpy(shape, t->shape, sizeof shape);
    shape[d] = n;
    cn_tensor *out = cn_empty(t->ndim, shape, err);
    if (out) {
        const float *ps = cn_data(src);
        float *po = cn_data(out);
#pragma omp parallel for schedule(static) if (outer * n * inner > 65536)
        for (int64_t k = 0; k < outer * n; k++) {
            int64_t o = k / n, j = k % n;
            memcpy(po + k * inner, ps + (o * size + pos[j]) * inner, (size_t)inner * sizeof(float));
        }
    }
    cn_release(src);
    free(pos);
    return out;
}

/* index_select: scatter-add the gradient rows back to their positions */
struct index_select_args {
    int dim; /* wrapped */
};
enum { INDEX_SELECT_SAVED_INDEX };

static int index_select_backward(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    const cn_tensor *in = n->inputs[0], *index = n->saved[INDEX_SELECT_SAVED_INDEX];
    int d = CN_NODE_ARGS(n, struct index_select_args)->dim;
    cn_tensor *z = cn_zeros(in->ndim, in->shape, err);
    cn_tensor *gc = cn_contiguous((cn_tensor *)g, err);
    if (!z || !gc) {
        cn_release(z), cn_release(gc);
        return -1;
    }
    int64_t outer = 1, inner = 1, size = in->shape[d], count = index->shape[0];
    for (int i = 0; i < d; i++) outer *= in->shape[i];
    for (int i = d + 1; i < in->ndim; i++) inner *= in->shape[i];
    const float *pg = cn_data(gc);
    float *pz = cn_data(z);
    for (int64_t o = 0; o < outer; o++) /* serial over j: repeated positions add up */
        for (int64_t j = 0; j < count; j++) {
            int64_t p = (int64_t)index->storage->data[index->offset + (size_t)(j * index->stride[0])];
            const float *src = pg + (o * count + j) * inner;
            float *dst = pz + (o * size + p) * inner;
            for (int64_t i = 0; i < inner; i++) dst[i] += src[i];
        }
    cn_release(gc);
    gi[0] = z;
    return 0;
}

static const cn_op_def op_index_select = {"index_select", index_select_backward, NULL};

cn_tensor *cn_index_select(cn_tensor *t, int dim, const cn_tensor *index, cn_error *err) {
    cn_node *node;
    cn_tensor *r = cn_record_result(index_select_raw(t, dim, index, err), &op_index_select, 1, &t, &node, err);
    if (node) {
        CN_NODE_ARGS(node, struct index_select_args)->dim = cn_wrap_dim(dim, t->ndim, "index_select", NULL);
        cn_node_save(node, INDEX_SELECT_SAVED_INDEX, index);
    }
    return r;
}
