/* tensor.c — tensor lifetime, creation, views, copies and broadcasting (see tensor.h). */
#include "tensor.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"

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
    t->storage->refcount++;
    return tensor_over(t->storage, ndim, shape, stride, offset, err);
}

cn_tensor *cn_retain(cn_tensor *t) {
    if (t) t->refcount++;
    return t;
}

void cn_release(cn_tensor *t) {
    if (!t || --t->refcount > 0) return;
    storage_release(t->storage);
    cn_release(t->grad);
    free(t);
}

/* ---- facts ------------------------------------------------------------------------------- */

size_t cn_shape_numel(int ndim, const int64_t *shape) {
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
    return n;
}

size_t cn_numel(const cn_tensor *t) { return cn_shape_numel(t->ndim, t->shape); }

void cn_contiguous_strides(int ndim, const int64_t *shape, int64_t *stride) {
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        stride[i] = s;
        s *= shape[i] > 0 ? shape[i] : 1;
    }
}

bool cn_is_contiguous(const cn_tensor *t) {
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

/* Checks a requested shape: rank and non-negative sizes. */
static bool check_shape(int ndim, const int64_t *shape, const char *fname, cn_error *err) {
    if (ndim < 0 || ndim > CN_MAX_DIMS) {
        cn_error_set(err, "%s: %d dims requested, at most %d supported", fname, ndim, CN_MAX_DIMS);
        return false;
    }
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) {
            char buf[128];
            cn_error_set(err, "%s: negative size in shape %s", fname,
                         cn_shape_str(buf, sizeof buf, ndim, shape));
            return false;
        }
    }
    return true;
}

/* ---- creation ----------------------------------------------------------------------------- */

cn_tensor *cn_empty(int ndim, const int64_t *shape, cn_error *err) {
    if (!check_shape(ndim, shape, "empty", err)) return NULL;
    size_t n = cn_shape_numel(ndim, shape);
    cn_storage *s = storage_new(n);
    if (!s) {
        char buf[128];
        cn_error_set(err, "out of memory allocating a tensor of shape %s (%zu bytes)",
                     cn_shape_str(buf, sizeof buf, ndim, shape), n * sizeof(float));
        return NULL;
    }
    int64_t stride[CN_MAX_DIMS];
    cn_contiguous_strides(ndim, shape, stride);
    return tensor_over(s, ndim, shape, stride, 0, err);
}

cn_tensor *cn_empty_like(const cn_tensor *t, cn_error *err) { return cn_empty(t->ndim, t->shape, err); }

cn_tensor *cn_full(int ndim, const int64_t *shape, float value, cn_error *err) {
    cn_tensor *t = cn_empty(ndim, shape, err);
    if (t) cn_fill_(t, value);
    return t;
}

cn_tensor *cn_zeros(int ndim, const int64_t *shape, cn_error *err) { return cn_full(ndim, shape, 0.0f, err); }
cn_tensor *cn_ones(int ndim, const int64_t *shape, cn_error *err) { return cn_full(ndim, shape, 1.0f, err); }

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
    int64_t n = (int64_t)ceil((end - start) / step);
    cn_tensor *t = cn_empty(1, &n, err);
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
    cn_tensor *t = cn_empty(1, &steps, err);
    if (!t) return NULL;
    float *p = cn_data(t);
    double step = steps > 1 ? (end - start) / (double)(steps - 1) : 0;
    /* as torch: the first half counts up from start, the second half down from end */
    int64_t half = steps == 1 ? 1 : steps / 2;
    for (int64_t i = 0; i < steps; i++)
        p[i] = (float)(i < half ? start + step * (double)i : end - step * (double)(steps - 1 - i));
    return t;
}

/* ---- views -------------------------------------------------------------------------------- */

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
        } else {
            known *= (size_t)shape[i];
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

cn_tensor *cn_view(cn_tensor *t, int ndim, const int64_t *shape, cn_error *err) {
    int64_t resolved[CN_MAX_DIMS], stride[CN_MAX_DIMS];
    if (!infer_shape(ndim, shape, cn_numel(t), resolved, "view", t, err)) return NULL;
    if (!view_strides(t, ndim, resolved, stride)) {
        char a[160], b[160];
        cn_error_set(err, "view: a tensor of shape %s with these strides cannot be viewed as %s; "
                     "use reshape (or contiguous first)",
                     cn_shape_str(a, sizeof a, t->ndim, t->shape), cn_shape_str(b, sizeof b, ndim, resolved));
        return NULL;
    }
    return view_of(t, ndim, resolved, stride, t->offset, err);
}

cn_tensor *cn_reshape(cn_tensor *t, int ndim, const int64_t *shape, cn_error *err) {
    int64_t resolved[CN_MAX_DIMS], stride[CN_MAX_DIMS];
    if (!infer_shape(ndim, shape, cn_numel(t), resolved, "reshape", t, err)) return NULL;
    if (view_strides(t, ndim, resolved, stride)) return view_of(t, ndim, resolved, stride, t->offset, err);
    cn_tensor *c = cn_clone(t, err);
    if (!c) return NULL;
    cn_tensor *r = cn_view(c, ndim, resolved, err);
    cn_release(c);
    return r;
}

cn_tensor *cn_permute(cn_tensor *t, const int *perm, cn_error *err) {
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
    return view_of(t, t->ndim, shape, stride, t->offset, err);
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

cn_tensor *cn_narrow(cn_tensor *t, int dim, int64_t start, int64_t length, cn_error *err) {
    int d = cn_wrap_dim(dim, t->ndim, "narrow", err);
    if (d < 0) return NULL;
    if (start < 0 || length < 0 || start + length > t->shape[d]) {
        char buf[160];
        cn_error_set(err, "narrow: range [%lld, %lld) out of bounds for dim %d of size %lld (shape %s)",
                     (long long)start, (long long)(start + length), dim, (long long)t->shape[d],
                     cn_shape_str(buf, sizeof buf, t->ndim, t->shape));
        return NULL;
    }
    int64_t shape[CN_MAX_DIMS];
    memcpy(shape, t->shape, sizeof shape);
    shape[d] = length;
    return view_of(t, t->ndim, shape, t->stride, t->offset + (size_t)(start * t->stride[d]), err);
}

cn_tensor *cn_select(cn_tensor *t, int dim, int64_t index, cn_error *err) {
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
    return view_of(t, n, shape, stride, t->offset + (size_t)(index * t->stride[d]), err);
}

cn_tensor *cn_squeeze(cn_tensor *t, int dim, cn_error *err) {
    int d = cn_wrap_dim(dim, t->ndim, "squeeze", err);
    if (d < 0) return NULL;
    if (t->shape[d] != 1) {
        char buf[160];
        cn_error_set(err, "squeeze: dim %d has size %lld, not 1 (shape %s)", dim, (long long)t->shape[d],
                     cn_shape_str(buf, sizeof buf, t->ndim, t->shape));
        return NULL;
    }
    return cn_select(t, d, 0, err);
}

cn_tensor *cn_squeeze_all(cn_tensor *t, cn_error *err) {
    int64_t shape[CN_MAX_DIMS], stride[CN_MAX_DIMS];
    int n = 0;
    for (int i = 0; i < t->ndim; i++) {
        if (t->shape[i] == 1) continue;
        shape[n] = t->shape[i];
        stride[n++] = t->stride[i];
    }
    return view_of(t, n, shape, stride, t->offset, err);
}

cn_tensor *cn_unsqueeze(cn_tensor *t, int dim, cn_error *err) {
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
    return view_of(t, t->ndim + 1, shape, stride, t->offset, err);
}

cn_tensor *cn_expand(cn_tensor *t, int ndim, const int64_t *shape, cn_error *err) {
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
    return view_of(t, ndim, out_shape, out_stride, t->offset, err);
bad:
    cn_error_set(err, "expand: cannot expand shape %s to %s",
                 cn_shape_str(a, sizeof a, t->ndim, t->shape), cn_shape_str(b, sizeof b, ndim, shape));
    return NULL;
}

cn_tensor *cn_contiguous(cn_tensor *t, cn_error *err) {
    if (cn_is_contiguous(t)) return cn_retain(t);
    return cn_clone(t, err);
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

cn_tensor *cn_clone(const cn_tensor *t, cn_error *err) {
    cn_tensor *c = cn_empty(t->ndim, t->shape, err);
    if (c) copy_strided(c, t);
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
    cn_tensor *expanded = cn_expand((cn_tensor *)src, dst->ndim, dst->shape, NULL);
    if (!expanded) {
        cn_error_set(err, "copy_: source of shape %s does not broadcast to destination shape %s",
                     cn_shape_str(a, sizeof a, src->ndim, src->shape),
                     cn_shape_str(b, sizeof b, dst->ndim, dst->shape));
        return -1;
    }
    /* source and destination may share storage (t:copy_(t:flip...)): go through a temporary */
    if (expanded->storage == dst->storage && !(cn_is_contiguous(dst) && cn_is_contiguous(expanded))) {
        cn_tensor *tmp = cn_clone(expanded, err);
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

cn_tensor *cn_cat(int n, cn_tensor *const *ts, int dim, cn_error *err) {
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
    int64_t at = 0;
    for (int i = 0; i < n; i++) {
        cn_tensor *part = cn_narrow(out, d, at, ts[i]->shape[d], err);
        if (!part) {
            cn_release(out);
            return NULL;
        }
        copy_strided(part, ts[i]);
        cn_release(part);
        at += ts[i]->shape[d];
    }
    return out;
}

cn_tensor *cn_stack(int n, cn_tensor *const *ts, int dim, cn_error *err) {
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
        parts[made] = cn_unsqueeze(ts[made], d, err);
        if (!parts[made]) goto done;
    }
    out = cn_cat(n, parts, d, err);
done:
    for (int i = 0; i < made; i++) cn_release(parts[i]);
    free(parts);
    return out;
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
