/* ops.h — tensor operations: elementwise (with NumPy broadcasting), reductions, matmul.
 *
 * Every function returns a new reference (a fresh contiguous tensor) or NULL with err filled.
 * Inputs may be any strided views. Dims are 0-based and may be negative.
 * Implementations: ops_elementwise.c, ops_reduce.c, ops_matmul.c.
 */
#ifndef CN_OPS_H
#define CN_OPS_H

#include "tensor.h"

/* ---- elementwise (ops_elementwise.c) ------------------------------------------------------ */

typedef enum cn_unary_op {
    CN_NEG, CN_EXP, CN_LOG, CN_SQRT, CN_RSQRT, CN_ABS, CN_SIN, CN_COS, CN_TANH,
    CN_SIGMOID, CN_RELU, CN_SILU,
    CN_SOFTPLUS, /* log(1 + exp(x)), as torch with beta 1, threshold 20 (x > 20 -> x) */
    CN_GELU,     /* exact: x * 0.5 * (1 + erf(x / sqrt 2)) */
    CN_GELU_TANH,/* tanh approximation, as torch approximate='tanh' */
    CN_SIGN, CN_SQUARE, CN_RECIPROCAL, CN_FLOOR, CN_CEIL, CN_ROUND,
    CN_UNARY_COUNT
} cn_unary_op;

typedef enum cn_binary_op {
    CN_ADD, CN_SUB, CN_MUL, CN_DIV, CN_POW, CN_MAXIMUM, CN_MINIMUM,
    CN_EQ, CN_NE, CN_LT, CN_LE, CN_GT, CN_GE, /* comparisons give 1.0 / 0.0 */
    CN_BINARY_COUNT
} cn_binary_op;

/* Name of a unary op ("exp"), for messages. */
const char *cn_unary_name(cn_unary_op op);
/* Name of a binary op ("add"), for messages. */
const char *cn_binary_name(cn_binary_op op);

/* op(a) elementwise. */
cn_tensor *cn_unary(cn_unary_op op, const cn_tensor *a, cn_error *err);
/* g * op'(x) computed with recording ops (the create_graph gradient of cn_unary), so that it
 * can be differentiated again; an op without one (gelu) gives an error naming it. */
cn_tensor *cn_unary_backward(cn_unary_op op, const cn_tensor *x, const cn_tensor *g, cn_error *err);
/* op(a, b) with NumPy broadcasting; the message on mismatch names both shapes. */
cn_tensor *cn_binary(cn_binary_op op, const cn_tensor *a, const cn_tensor *b, cn_error *err);
/* op(a, s), or op(s, a) when scalar_first (e.g. 2 - a, 2 ^ a). */
cn_tensor *cn_binary_scalar(cn_binary_op op, const cn_tensor *a, float s, bool scalar_first,
                            cn_error *err);
/* In place a = op(a, b), b broadcast to a's shape; a must not be an expanded view. Returns 0 / -1. */
int cn_binary_(cn_binary_op op, cn_tensor *a, const cn_tensor *b, cn_error *err);
/* a * alpha + b * beta elementwise with broadcasting (used by optimisers and autograd). */
cn_tensor *cn_axpby(const cn_tensor *a, float alpha, const cn_tensor *b, float beta, cn_error *err);
/* sum_i coeffs[i] * ts[i] over n same-shaped tensors, in one pass (differentiable; ODE solvers
 * build their stages with it). */
cn_tensor *cn_lincomb(int n, cn_tensor *const *ts, const double *coeffs, cn_error *err);
/* Chaining forms, for code that builds an expression step by step (the recorded backwards): the
 * op on a, then a released. A NULL operand (a step before failed, err already filled) gives NULL. */
cn_tensor *cn_binary_drop(cn_binary_op op, cn_tensor *a, const cn_tensor *b, cn_error *err);
/* cn_binary_scalar on a, then a released (NULL a gives NULL). */
cn_tensor *cn_binary_scalar_drop(cn_binary_op op, cn_tensor *a, float s, bool scalar_first, cn_error *err);
/* cn_unary on a, then a released (NULL a gives NULL). */
cn_tensor *cn_unary_drop(cn_unary_op op, cn_tensor *a, cn_error *err);
/* min(max(a, lo), hi); pass -INFINITY / INFINITY to leave a side open. */
cn_tensor *cn_clamp(const cn_tensor *a, float lo, float hi, cn_error *err);
/* cond != 0 ? a : b, all three broadcast together. */
cn_tensor *cn_where(const cn_tensor *cond, const cn_tensor *a, const cn_tensor *b, cn_error *err);

/* ---- reductions (ops_reduce.c) ------------------------------------------------------------ */
/* dims: ndims distinct dims (0-based, may be negative); ndims == 0 means all dims. Sums accumulate
 * in double. keepdim keeps reduced dims with size 1. Reducing all dims without keepdim gives 0-d. */

/* Sum over dims. */
cn_tensor *cn_sum(const cn_tensor *t, int ndims, const int *dims, bool keepdim, cn_error *err);
/* Mean over dims. */
cn_tensor *cn_mean(const cn_tensor *t, int ndims, const int *dims, bool keepdim, cn_error *err);
/* Variance over dims with `correction` (1 = unbiased, as torch's default; 0 = population). */
cn_tensor *cn_var(const cn_tensor *t, int ndims, const int *dims, int correction, bool keepdim,
                  cn_error *err);
/* Standard deviation, as cn_var then sqrt. */
cn_tensor *cn_std(const cn_tensor *t, int ndims, const int *dims, int correction, bool keepdim,
                  cn_error *err);
/* p-norm over dims (p = 2 Euclidean, 1, inf via INFINITY, any p > 0). */
cn_tensor *cn_norm(const cn_tensor *t, double p, int ndims, const int *dims, bool keepdim,
                   cn_error *err);
/* Max (is_max) or min over one dim: values and 0-based indices (first occurrence; NaN wins as in
 * torch). indices may be NULL. *values / *indices receive new references. Returns 0 / -1. */
int cn_max_dim(const cn_tensor *t, int dim, bool keepdim, bool is_max, cn_tensor **values,
               cn_tensor **indices, cn_error *err);
/* Max (is_max) or min over all elements, as a 0-d tensor. */
cn_tensor *cn_max_all(const cn_tensor *t, bool is_max, cn_error *err);
/* 0-based index of the max (is_max) or min over one dim; with dim_given false, the flat index. */
cn_tensor *cn_argmax(const cn_tensor *t, bool dim_given, int dim, bool keepdim, bool is_max,
                     cn_error *err);

/* ---- matmul (ops_matmul.c) ---------------------------------------------------------------- */

/* Matrix product as torch.matmul for 1-d, 2-d and batched (3-d and more, batch dims broadcast)
 * operands, through cblas_sgemm. Messages name both shapes. */
cn_tensor *cn_matmul(const cn_tensor *a, const cn_tensor *b, cn_error *err);
/* Makes OpenBLAS run every call on its caller's thread (process-wide, once; cn_gemm does it on
 * first use): the engine's threads are OpenMP's alone. */
void cn_blas_single_thread(void);
/* How BLAS reads a [rows, cols] matrix with strides (rs, cs): row-major with leading dim *ld
 * (*trans false), or as the transpose of a row-major [cols, rows] (*trans true). False when it
 * cannot, and the matrix must be copied. Strides of size-1 dims do not matter. */
bool cn_blas_layout(int64_t rows, int64_t cols, int64_t rs, int64_t cs, bool *trans, int *ld);
/* C[m,n] = alpha * op(A)[m,k] @ op(B)[k,n] + beta * C on raw row-major buffers (threaded BLAS;
 * never call from inside an OpenMP parallel region). */
void cn_gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a, int lda,
             const float *b, int ldb, float beta, float *c, int ldc);

#endif
