/* tensor.c — tensor lifetime, creation, views, copies and broadcasting (see tensor.h). */
#include "tensor.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "autograd.h"

/* ---- lifetime ---------------------------------------------------------------------------- */

static cn_storage *storage_new(size_t numel) {
    cn_storage *s = malloc(sizeof *s);
    if (!s) return NULL;
    s->data = cn_alloc_floats(numel);
    if (!s->data) {
        free(s);
        return NULL;
    }
    s->numel = numel;
    s->refcount = 1;
    return s;
}

static void storage_release(cn_storage *s) {
    if (s && --s->refcount == 0) {
        cn_free_floats(s->data, s->numel);
        free(s);
    }
}

/* A tensor header over storage (takes one storage reference from the caller). */
static cn_tensor *tensor_over(cn_storage *s, int ndim, const int64_t *shape, const int64_t *stride,
                              size_t offset, cn_error *err) {
    cn_tensor *t = calloc(1, sizeof *t);
    if (!t) {
        storage_release(s);
        cn_error_set(err, "out of memory");
        return NULL;
    }
    t->refcount = 1;
    t->ndim = ndim;
    if (ndim) {
        memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
        memcpy(t->stride, stride, (size_t)ndim * sizeof *stride);
    }
    t->offset = offset;
    t->storage = s;
    return t;
}

/* A view of t's storage with new geometry (a new reference). */
static cn_tensor *view_of(const cn_tensor *t, int ndim, const int64_t *shape, const int64_t *stride,
                          size_t offset, cn_error *err) {
    if (cn_shape_numel_checked(ndim, shape, NULL, "view", err)) return NULL;
    t->storage->refcount++;
    return tensor_over(t->storage, ndim, shape, stride, offset, err);
}

cn_tensor *cn_as_strided(cn_tensor *t, int ndim, const int64_t *shape, const int64_t *stride,
                         size_t offset, cn_error *err) {
    return view_of(t, ndim, shape, stride, offset, err);
}

cn_tensor *cn_retain(cn_tensor *t) {
    if (t) t->refcount++;
    return t;
}

/* Pushes x on the dead list when this drops its last reference. */
static void drop(cn_tensor *x, cn_tensor **dead) {
    if (x && --x->refcount == 0) {
        x->next_dead = *dead;
        *dead = x;
    }
}

void cn_release(cn_tensor *t) {
    if (!t || --t->refcount > 0) return;
    /* a worklist instead of recursion: a long graph (thousands of ops) dies in constant stack */
    t->next_dead = NULL;
    cn_tensor *dead = t;
    while (dead) {
        cn_tensor *cur = dead;
        dead = cur->next_dead;
        storage_release(cur->storage);
        drop(cur->grad, &dead);
        cn_node *node = cur->node;
        if (node) {
            for (int i = 0; i < node->n_inputs; i++) drop(node->inputs[i], &dead);
            for (int i = 0; i < CN_NODE_MAX_SAVED; i++) drop(node->saved[i], &dead);
            cn_node_free(node);
        }
        free(cur);
    }
}

/* ---- facts ------------------------------------------------------------------------------- */

int cn_size_mul(size_t a, size_t b, size_t *out) {
    size_t product;
    if (__builtin_mul_overflow(a, b, &product)) return -1;
    *out = product;
    return 0;
}

size_t cn_shape_numel(int ndim, const int64_t *shape) {
    size_t n = 1;
    bool saturated = false;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] == 0) return 0;
        if (saturated || cn_size_mul(n, (size_t)shape[i], &n)) saturated = true;
    }
    return saturated ? SIZE_MAX : n;
}

int cn_shape_numel_checked(int ndim, const int64_t *shape, size_t *numel, const char *fname, cn_error *err) {
    char buf[200];
    if (ndim < 0 || ndim > CN_MAX_DIMS) {
        cn_error_set(err, "%s: %d dims requested, at most %d supported", fname, ndim, CN_MAX_DIMS);
        return -1;
    }
    bool has_zero = false;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) {
            cn_error_set(err, "%s: negative size in shape %s", fname, cn_shape_str(buf, sizeof buf, ndim, shape));
            return -1;
        }
        if (shape[i] == 0) has_zero = true;
    }
    /* the span counts a size-0 dim as 1: the strides of the others must still be representable */
    size_t span = 1;
    bool too_many = false;
    for (int i = 0; i < ndim && !too_many; i++) {
        if (shape[i] != 0 && (cn_size_mul(span, (size_t)shape[i], &span) || span > CN_MAX_NUMEL)) too_many = true;
    }
    if (too_many) {
        cn_error_set(err, "%s: shape %s has too many elements%s (a tensor spans at most 2^44 = %zu)", fname,
                     cn_shape_str(buf, sizeof buf, ndim, shape),
                     has_zero ? " for its strides, counting the non-zero sizes" : "", CN_MAX_NUMEL);
        return -1;
    }
    if (numel) *numel = has_zero ? 0 : span;
    return 0;
}

size_t cn_numel(const cn_tensor *t) { return cn_shape_numel(t->ndim, t->shape); }

void cn_contiguous_strides(int ndim, const int64_t *shape, int64_t *stride) {
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        stride[i] = s;
        if (__builtin_mul_overflow(s, shape[i] > 0 ? shape[i] : 1, &s)) s = INT64_MAX;
    }
}

bool cn_is_contiguous(const cn_tensor *t) {
    for (int i = 0; i < t->ndim; i++)
        if (t->shape[i] == 0) return true; /* no elements: any strides will do (found by fuzz_idx) */
    int64_t expected = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] == 1) continue;
        if (t->stride[i] != expected) return false;
        expected *= t->shape[i];
    }
    return true;
}

float *cn_data(const cn_tensor *t) { return t->storage->data + t->offset; }

bool cn_same_shape(const cn_tensor *a, const cn_tensor *b) {
    if (a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

char *cn_shape_str(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t len = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && len < cap; i++)
        len += (size_t)snprintf(buf + len, cap - len, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (len < cap) snprintf(buf + len, cap - len, "]");
    return buf;
}

int cn_wrap_dim(int dim, int ndim, const char *fname, cn_error *err) {
    int wrapped = dim < 0 ? dim + ndim : dim;
    if (wrapped < 0 || wrapped >= ndim) {
        cn_error_set(err, "%s: dim %d out of range for a %d-D tensor", fname, dim, ndim);
        return -1;
    }
    return wrapped;
}

/* ---- creation ----------------------------------------------------------------------------- */

/* cn_empty with fname naming the caller in messages. */
static cn_tensor *empty_as(int ndim, const int64_t *shape, const char *fname, cn_error *err) {
    size_t n;
    if (cn_shape_numel_checked(ndim, shape, &n, fname, err)) return NULL;
    cn_storage *s = storage_new(n);
    if (!s) {
        char buf[128];
        cn_error_set(err, "%s: out of memory allocating a tensor of shape %s (%zu bytes)", fname,
                     cn_shape_str(buf, sizeof buf, ndim, shape), n * sizeof(float));
        return NULL;
    }
    int64_t stride[CN_MAX_DIMS];
    cn_contiguous_strides(ndim, shape, stride);
    return tensor_over(s, ndim, shape, stride, 0, err);
}

cn_tensor *cn_empty(int ndim, const int64_t *shape, cn_error *err) { return empty_as(ndim, shape, "empty", err); }

cn_tensor *cn_empty_like(const cn_tensor *t, cn_error *err) { return cn_empty(t->ndim, t->shape, err); }

static cn_tensor *full_as(int ndim, const int64_t *shape, float value, const char *fname, cn_error *err) {
    cn_tensor *t = empty_as(ndim, shape, fname, err);
    if (t) cn_fill_(t, value);
    return t;
}

cn_tensor *cn_full(int ndim, const int64_t *shape, float value, cn_error *err) {
    return full_as(ndim, shape, value, "full", err);
}
cn_tensor *cn_zeros(int ndim, const int64_t *shape, cn_error *err) { return full_as(ndim, shape, 0.0f, "zeros", err); }
cn_tensor *cn_ones(int ndim, const int64_t *shape, cn_error *err) { return full_as(ndim, shape, 1.0f, "ones", err); }

cn_tensor *cn_from_data(int ndim, const int64_t *shape, const float *data, cn_error *err) {
    cn_tensor *t = cn_empty(ndim, shape, err);
    if (t) memcpy(cn_data(t), data, cn_numel(t) * sizeof(float));
    return t;
}

cn_tensor *cn_scalar(float value, cn_error *err) { return cn_full(0, NULL, value, err); }

cn_tensor *cn_arange(double start, double end, double step, cn_error *err) {
    if (step == 0 || !isfinite(start) || !isfinite(end) || !isfinite(step)) {
        cn_error_set(err, "arange: need finite start, end and a non-zero step (got %g, %g, %g)", start,
                     end, step);
        return NULL;
    }
    if ((end - start) / step < 0) {
        cn_error_set(err, "arange: step %g goes away from end (start %g, end %g)", step, start, end);
        return NULL;
    }
    /* compared in double before the cast: arange(0, 1, 1e-300) must not overflow int64 */
    double count = ceil((end - start) / step);
    if (!(count <= (double)CN_MAX_NUMEL)) {
        cn_error_set(err, "arange: [%g, %g) with step %g has %.3g elements: too many (a tensor holds at most "
                     "2^44 = %zu)", start, end, step, count, CN_MAX_NUMEL);
        return NULL;
    }
    int64_t n = (int64_t)count;
    cn_tensor *t = empty_as(1, &n, "arange", err);
    if (!t) return NULL;
    float *p = cn_data(t);
    for (int64_t i = 0; i < n; i++) p[i] = (float)(start + (double)i * step);
    return t;
}

cn_tensor *cn_linspace(double start, double end, int64_t steps, cn_error *err) {
    if (steps < 0) {
        cn_error_set(err, "linspace: number of steps must be non-negative (got %lld)", (long long)steps);
        return NULL;
    }
    cn_tensor *t = empty_as(1, &steps, "linspace", err);
    if (!t) return NULL;
    float *p = cn_data(t);
    double step = steps > 1 ? (end - start) / (double)(steps - 1) : 0;
    /* as torch: the first half counts up from start, the second half down from end */
    int64_t half = steps == 1 ? 1 : steps / 2;
    for (int64_t i = 0; i < steps; i++)
        p[i] = (float)(i < half ? start + step * (double)i : end - step * (double)(steps - 1 - i));
    return t;
}

/* ---- strided copy ------------------------------------------------------------------------- */

size_t cn_offset_of(const cn_tensor *t, const int64_t *idx) {
    int64_t off = (int64_t)t->offset;
    for (int i = 0; i < t->ndim; i++) off += idx[i] * t->stride[i];
    return (size_t)off;
}

/* Copies src (any strides) into dst (any strides, same shape), row by row over the last dim. */
static void copy_strided(const cn_tensor *dst, const cn_tensor *src) {
    size_t n = cn_numel(dst);
    if (n == 0) return;
    if (cn_is_contiguous(dst) && cn_is_contiguous(src)) {
        memmove(cn_data(dst), cn_data(src), n * sizeof(float));
        return;
    }
    int nd = dst->ndim;
    int64_t inner = nd ? dst->shape[nd - 1] : 1;
    int64_t ds = nd ? dst->stride[nd - 1] : 1, ss = nd ? src->stride[nd - 1] : 1;
    size_t rows = n / (size_t)inner;
    float *dbase = dst->storage->data, *sbase = src->storage->data;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t row = 0; row < rows; row++) {
        int64_t doff = (int64_t)dst->offset, soff = (int64_t)src->offset;
        size_t rem = row;
        for (int d = nd - 2; d >= 0; d--) {
            int64_t i = (int64_t)(rem % (size_t)dst->shape[d]);
            rem /= (size_t)dst->shape[d];
            doff += i * dst->stride[d];
            soff += i * src->stride[d];
        }
        float *dp = dbase + doff;
        const float *sp = sbase + soff;
        if (ds == 1 && ss == 1) {
            for (int64_t j = 0; j < inner; j++) dp[j] = sp[j];
        } else {
            for (int64_t j = 0; j < inner; j++) dp[j * ds] = sp[j * ss];
        }
    }
}

void cn_to_buffer(const cn_tensor *t, float *out) {
    int64_t stride[CN_MAX_DIMS];
    cn_contiguous_strides(t->ndim, t->shape, stride);
    cn_storage tmp = {.data = out, .numel = cn_numel(t), .refcount = 1};
    cn_tensor dst = {.refcount = 1, .ndim = t->ndim, .storage = &tmp};
    memcpy(dst.shape, t->shape, sizeof dst.shape);
    memcpy(dst.stride, stride, sizeof dst.stride);
    copy_strided(&dst, t);
}

static int clone_backward(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    (void)n, (void)err;
    gi[0] = cn_retain((cn_tensor *)g);
    return 0;
}

static const cn_op_def op_clone = {"clone", clone_backward, clone_backward};

cn_tensor *cn_clone(const cn_tensor *t, cn_error *err) {
    cn_tensor *c = cn_empty(t->ndim, t->shape, err);
    if (!c) return NULL;
    copy_strided(c, t);
    cn_node *node;
    cn_tensor *in = (cn_tensor *)t;
    if (cn_record(c, &op_clone, 1, &in, &node, err)) {
        cn_release(c);
        return NULL;
    }
    return c;
}

/* True when writing through t would hit one storage element twice (an expanded view). */
static bool has_overlap(const cn_tensor *t) {
    for (int i = 0; i < t->ndim; i++)
        if (t->stride[i] == 0 && t->shape[i] > 1) return true;
    return false;
}

int cn_copy_(cn_tensor *dst, const cn_tensor *src, cn_error *err) {
    char a[160], b[160];
    if (has_overlap(dst)) {
        cn_error_set(err, "copy_: destination of shape %s is an expanded view; clone it first",
                     cn_shape_str(a, sizeof a, dst->ndim, dst->shape));
        return -1;
    }
    bool grad_mode = cn_set_grad_enabled(false); /* a copy is not differentiable: no temporaries in a graph */
    cn_tensor *expanded = cn_expand((cn_tensor *)src, dst->ndim, dst->shape, NULL);
    cn_set_grad_enabled(grad_mode);
    if (!expanded) {
        cn_error_set(err, "copy_: source of shape %s does not broadcast to destination shape %s",
                     cn_shape_str(a, sizeof a, src->ndim, src->shape),
                     cn_shape_str(b, sizeof b, dst->ndim, dst->shape));
        return -1;
    }
    /* source and destination may share storage (t:copy_(t:flip...)): go through a temporary */
    if (expanded->storage == dst->storage && !(cn_is_contiguous(dst) && cn_is_contiguous(expanded))) {
        cn_tensor *tmp = cn_empty(expanded->ndim, expanded->shape, err);
        if (tmp) copy_strided(tmp, expanded);
        cn_release(expanded);
        if (!tmp) return -1;
        expanded = tmp;
    }
    copy_strided(dst, expanded);
    cn_release(expanded);
    return 0;
}

void cn_fill_(cn_tensor *t, float value) {
    size_t n = cn_numel(t);
    if (cn_is_contiguous(t)) {
        float *p = cn_data(t);
#pragma omp parallel for schedule(static) if (n > 65536)
        for (size_t i = 0; i < n; i++) p[i] = value;
        return;
    }
    float v = value;
    cn_storage one = {.data = &v, .numel = 1, .refcount = 1};
    cn_tensor src = {.refcount = 1, .ndim = t->ndim, .storage = &one};
    memcpy(src.shape, t->shape, sizeof src.shape); /* every stride 0: one value everywhere */
    copy_strided(t, &src);
}

/* ---- broadcasting ------------------------------------------------------------------------- */

int cn_broadcast_shapes(int na, const int64_t *sa, int nb, const int64_t *sb, int64_t *out,
                        const char *fname, cn_error *err) {
    int n = na > nb ? na : nb;
    for (int i = 0; i < n; i++) {
        int ia = i - (n - na), ib = i - (n - nb);
        int64_t da = ia >= 0 ? sa[ia] : 1, db = ib >= 0 ? sb[ib] : 1;
        if (da == db || db == 1) {
            out[i] = da;
        } else if (da == 1) {
            out[i] = db;
        } else {
            char a[160], b[160];
            cn_error_set(err, "%s: cannot broadcast shapes %s and %s", fname, cn_shape_str(a, sizeof a, na, sa),
                         cn_shape_str(b, sizeof b, nb, sb));
            return -1;
        }
    }
    return n;
}
