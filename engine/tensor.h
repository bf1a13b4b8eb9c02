/* tensor.h — float32 n-d tensors with refcounted storage and strided views.
 *
 * A cn_tensor is a view (shape, strides, offset) onto a refcounted cn_storage of float32. Views
 * (reshape of a contiguous tensor, permute, transpose, narrow, select, squeeze, unsqueeze, expand)
 * share storage; everything else allocates. Dims are 0-based here and may be negative (-1 = last);
 * the Lua binding maps its 1-based dims onto these.
 *
 * Ownership: every function documented "returns a new reference" hands the caller one reference,
 * released with cn_release(). Functions never steal their arguments' references.
 * Errors: on failure a function returning a tensor returns NULL and fills err (see error.h).
 */
#ifndef CN_TENSOR_H
#define CN_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define CN_MAX_DIMS 8

typedef struct cn_storage {
    float *data;
    size_t numel;
    int refcount;
} cn_storage;

struct cn_node; /* autograd graph node (autograd.h) */

typedef struct cn_tensor {
    int refcount;
    int ndim;
    int64_t shape[CN_MAX_DIMS];
    int64_t stride[CN_MAX_DIMS]; /* in elements; 0 for broadcast (expanded) dims */
    size_t offset;               /* first element, in elements from storage->data */
    cn_storage *storage;
    /* autograd */
    bool requires_grad;
    struct cn_tensor *grad;      /* accumulated gradient, or NULL */
    struct cn_node *node;        /* creator node, or NULL for leaves */
    struct cn_tensor *next_dead; /* scratch list for cn_release (graphs die without recursion) */
} cn_tensor;

/* ---- lifetime ---------------------------------------------------------------------------- */

/* Adds one reference to t (NULL-safe); returns t. */
cn_tensor *cn_retain(cn_tensor *t);
/* Drops one reference (NULL-safe); frees the tensor, its autograd node (and so, iteratively, the
 * graph behind it) and, with its last view, the storage. */
void cn_release(cn_tensor *t);

/* ---- facts ------------------------------------------------------------------------------- */

/* The most elements a tensor may span: its number of elements, and also the product of its
 * non-zero sizes (what its strides must address, so [0, 2^40, 2^40] is refused too), is at most
 * 2^44 (64 TiB of float32). Below it every element, stride and byte count fits int64 and size_t
 * with room, so size arithmetic past cn_shape_numel_checked cannot overflow. */
#define CN_MAX_NUMEL ((size_t)1 << 44)

/* Number of elements (1 for a 0-d tensor). */
size_t cn_numel(const cn_tensor *t);
/* Number of elements of a shape; saturates at SIZE_MAX when the product overflows (a shape not
 * yet checked: any allocation of that size then fails). */
size_t cn_shape_numel(int ndim, const int64_t *shape);
/* a * b into *out. Returns 0, or -1 (out untouched) when the product overflows size_t. Every
 * element, stride and byte product of the engine goes through this or cn_shape_numel_checked. */
int cn_size_mul(size_t a, size_t b, size_t *out);
/* Checks a requested shape: 0..CN_MAX_DIMS dims, sizes >= 0, within CN_MAX_NUMEL; stores its
 * number of elements in *numel (may be NULL). Returns 0, or -1 with err "fname: ..." naming the
 * shape ("fname: shape [2^62] has too many elements: ..."). */
int cn_shape_numel_checked(int ndim, const int64_t *shape, size_t *numel, const char *fname, cn_error *err);
/* True when t's elements are laid out densely in row-major order from its offset. */
bool cn_is_contiguous(const cn_tensor *t);
/* Pointer to t's first element (storage data + offset). */
float *cn_data(const cn_tensor *t);
/* True when a and b have the same shape. */
bool cn_same_shape(const cn_tensor *a, const cn_tensor *b);
/* Formats a shape as "[2, 3, 4]" into buf of size cap; returns buf. */
char *cn_shape_str(char *buf, size_t cap, int ndim, const int64_t *shape);
/* Wraps a possibly negative dim into [0, ndim); returns -1 (and fills err) when out of range. */
int cn_wrap_dim(int dim, int ndim, const char *fname, cn_error *err);
/* Row-major contiguous strides for a shape into stride[] (a size-0 dim counts as 1; a stride that
 * would overflow saturates at INT64_MAX, for a shape cn_shape_numel_checked refuses anyway). */
void cn_contiguous_strides(int ndim, const int64_t *shape, int64_t *stride);

/* ---- creation (all return a new reference) ------------------------------------------------ */

/* Uninitialised contiguous tensor. ndim 0 makes a scalar. Refuses shapes beyond CN_MAX_NUMEL
 * (see cn_shape_numel_checked), and every other creation function goes through it. */
cn_tensor *cn_empty(int ndim, const int64_t *shape, cn_error *err);
/* Uninitialised tensor with the shape of t. */
cn_tensor *cn_empty_like(const cn_tensor *t, cn_error *err);
/* Tensor filled with value. */
cn_tensor *cn_full(int ndim, const int64_t *shape, float value, cn_error *err);
/* Tensor of zeros. */
cn_tensor *cn_zeros(int ndim, const int64_t *shape, cn_error *err);
/* Tensor of ones. */
cn_tensor *cn_ones(int ndim, const int64_t *shape, cn_error *err);
/* Copy of numel(shape) floats from data. */
cn_tensor *cn_from_data(int ndim, const int64_t *shape, const float *data, cn_error *err);
/* 0-d tensor holding value. */
cn_tensor *cn_scalar(float value, cn_error *err);
/* 1-d [start, end) with step (as torch.arange; computed in double). */
cn_tensor *cn_arange(double start, double end, double step, cn_error *err);
/* 1-d of `steps` evenly spaced values from start to end inclusive (as torch.linspace). */
cn_tensor *cn_linspace(double start, double end, int64_t steps, cn_error *err);

/* ---- views (share storage; return a new reference) ---------------------------------------- */

/* A view of t's storage with the given geometry (the caller keeps it in bounds; only the shape
 * is checked, as cn_shape_numel_checked); outside any graph. */
cn_tensor *cn_as_strided(cn_tensor *t, int ndim, const int64_t *shape, const int64_t *stride,
                         size_t offset, cn_error *err);
/* View with a new shape; fails when t's strides do not allow it (use cn_reshape). One entry
 * of shape may be -1 (inferred). */
cn_tensor *cn_view(cn_tensor *t, int ndim, const int64_t *shape, cn_error *err);
/* cn_view when possible, otherwise a contiguous copy with the new shape. */
cn_tensor *cn_reshape(cn_tensor *t, int ndim, const int64_t *shape, cn_error *err);
/* Reorders dims: result dim i is t's dim perm[i]; perm must be a permutation of 0..ndim-1. */
cn_tensor *cn_permute(cn_tensor *t, const int *perm, cn_error *err);
/* Swaps dims d0 and d1. */
cn_tensor *cn_transpose(cn_tensor *t, int d0, int d1, cn_error *err);
/* Elements [start, start+length) along dim. */
cn_tensor *cn_narrow(cn_tensor *t, int dim, int64_t start, int64_t length, cn_error *err);
/* The slice at index along dim, with that dim removed. */
cn_tensor *cn_select(cn_tensor *t, int dim, int64_t index, cn_error *err);
/* Removes dim (which must have size 1). */
cn_tensor *cn_squeeze(cn_tensor *t, int dim, cn_error *err);
/* Removes every dim of size 1. */
cn_tensor *cn_squeeze_all(cn_tensor *t, cn_error *err);
/* Inserts a dim of size 1 before position dim (dim may equal ndim). */
cn_tensor *cn_unsqueeze(cn_tensor *t, int dim, cn_error *err);
/* Broadcast view to shape (size-1 dims repeat with stride 0; -1 keeps a size; new dims lead). */
cn_tensor *cn_expand(cn_tensor *t, int ndim, const int64_t *shape, cn_error *err);
/* t itself (new reference) when contiguous, else a contiguous copy. */
cn_tensor *cn_contiguous(cn_tensor *t, cn_error *err);

/* ---- copies ------------------------------------------------------------------------------- */

/* Contiguous copy of t. */
cn_tensor *cn_clone(const cn_tensor *t, cn_error *err);
/* Copies src into dst, broadcasting src to dst's shape. Returns 0, or -1 with err filled. */
int cn_copy_(cn_tensor *dst, const cn_tensor *src, cn_error *err);
/* Sets every element of t to value. */
void cn_fill_(cn_tensor *t, float value);
/* Concatenation of n tensors along dim (all other sizes equal). */
cn_tensor *cn_cat(int n, cn_tensor *const *ts, int dim, cn_error *err);
/* Stacks n same-shaped tensors along a new dim. */
cn_tensor *cn_stack(int n, cn_tensor *const *ts, int dim, cn_error *err);
/* The slices of t at the given 0-based positions along dim (index: 1-d tensor of integral
 * values, repeats allowed), as torch.index_select; differentiable w.r.t. t. */
cn_tensor *cn_index_select(cn_tensor *t, int dim, const cn_tensor *index, cn_error *err);

/* ---- element access ----------------------------------------------------------------------- */

/* Storage offset of the element at 0-based idx[0..ndim) (no checks). */
size_t cn_offset_of(const cn_tensor *t, const int64_t *idx);
/* Copies t's elements in row-major order into out (numel floats). */
void cn_to_buffer(const cn_tensor *t, float *out);

/* ---- broadcasting ------------------------------------------------------------------------- */

/* NumPy broadcast of two shapes into out (CN_MAX_DIMS); returns its ndim, or -1 with err. */
int cn_broadcast_shapes(int na, const int64_t *sa, int nb, const int64_t *sb, int64_t *out,
                        const char *fname, cn_error *err);

#endif
