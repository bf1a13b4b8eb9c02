/* ops_matmul.c — matrix products through OpenBLAS: cn_gemm and cn_matmul (torch.matmul semantics).
 *
 *   C[m,n] = sum_k A[m,k] B[k,n]
 *
 * cn_matmul promotes a 1-D left operand to [1, k] and a 1-D right operand to [k, 1] (the added dim
 * is dropped from the result), broadcasts the batch dims (all but the last two) NumPy-style, and
 * reads each operand in place whenever BLAS can: a matrix whose rows or columns are unit-strided
 * (a plain or transposed view, narrowed rows included) is passed with the matching transpose flag
 * and leading dimension; broadcast batch dims are just a zero offset step. Only a matrix that BLAS
 * cannot address (e.g. an expanded or doubly strided one) is copied with cn_contiguous.
 * When the right operand has no batch dims and the left one's batch and row dims collapse into one
 * stride, the whole batch is a single GEMM of batch*m rows. Batches otherwise loop here, serially:
 * cn_gemm spreads each big GEMM over the OpenMP threads itself.
 */
#include <cblas.h>
#include <limits.h>
#include <omp.h>
#include <stdatomic.h>
#include <string.h>

#include "autograd.h"
#include "ops.h"
#include "profile.h"

/* One threading model: OpenBLAS always runs on its caller's thread (its own pthreads spin in
 * sched_yield between calls and fight OpenMP's threads for the cores; measured 5-6% of a cU-Net
 * forward in the scheduler), and a product big enough to share is split here, over OpenMP threads
 * (passive when idle), into blocks of C's columns or rows, one single-threaded GEMM each. */
void openblas_set_num_threads(int num_threads);

#define GEMM_SPLIT_MACS 2.0e6 /* multiply-adds below which a product stays on one thread */
#define GEMM_SPLIT_ALIGN 16   /* block edges on multiples of a vector */

static atomic_int blas_single;

void cn_blas_single_thread(void) {
    if (!atomic_load_explicit(&blas_single, memory_order_relaxed) && !atomic_exchange(&blas_single, 1))
        openblas_set_num_threads(1);
}

static void sgemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                  const float *b, int ldb, float beta, float *c, int ldc) {
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, m, n,
                k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void cn_gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a, int lda,
             const float *b, int ldb, float beta, float *c, int ldc) {
    cn_blas_single_thread();
    if (m <= 0 || n <= 0) return;
    if (k <= 0) { /* BLAS may skip the beta scaling when k == 0: do it here */
        for (int i = 0; i < m; i++) {
            float *row = c + (size_t)i * ldc;
            for (int j = 0; j < n; j++) row[j] = beta == 0.0f ? 0.0f : beta * row[j];
        }
        return;
    }
    cn_profile_add_flops(2.0 * m * n * k);
    /* Matrix-vector products go to sgemv. With beta == 0 the output is zeroed first: some OpenBLAS
     * versions scale y by beta, and 0 * NaN from an uninitialised buffer would stay NaN. */
    if (n == 1) { /* c[:, 0] = op(A) @ b[:, 0] */
        int incb = trans_b ? 1 : ldb;
        if (beta == 0.0f) for (int i = 0; i < m; i++) c[(size_t)i * ldc] = 0.0f;
        cblas_sgemv(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_a ? k : m,
                    trans_a ? m : k, alpha, a, lda, b, incb, beta, c, ldc);
        return;
    }
    if (m == 1) { /* c[0, :] = op(B)^T @ a[0, :] */
        int inca = trans_a ? lda : 1;
        if (beta == 0.0f) memset(c, 0, (size_t)n * sizeof *c);
        cblas_sgemv(CblasRowMajor, trans_b ? CblasNoTrans : CblasTrans, trans_b ? n : k,
                    trans_b ? k : n, alpha, b, ldb, a, inca, beta, c, 1);
        return;
    }
    int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
    bool by_cols = n >= m;
    int span = by_cols ? n : m, parts = span / GEMM_SPLIT_ALIGN;
    if (parts > threads) parts = threads;
    if (parts < 2 || (double)m * n * k < GEMM_SPLIT_MACS) {
        sgemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    int blocks = (span + GEMM_SPLIT_ALIGN - 1) / GEMM_SPLIT_ALIGN;
    #pragma omp parallel for schedule(static) num_threads(parts)
    for (int p = 0; p < parts; p++) {
        int lo = blocks * p / parts * GEMM_SPLIT_ALIGN, hi = blocks * (p + 1) / parts * GEMM_SPLIT_ALIGN;
        if (hi > span) hi = span;
        if (lo >= hi) continue;
        if (by_cols) /* C[:, lo:hi] = op(A) @ op(B)[:, lo:hi] */
            sgemm(trans_a, trans_b, m, hi - lo, k, alpha, a, lda, trans_b ? b + (size_t)lo * ldb : b + lo, ldb,
                  beta, c + lo, ldc);
        else /* C[lo:hi, :] = op(A)[lo:hi, :] @ op(B) */
            sgemm(trans_a, trans_b, hi - lo, n, k, alpha, trans_a ? a + lo : a + (size_t)lo * lda, lda, b, ldb,
                  beta, c + (size_t)lo * ldc, ldc);
    }
}

/* A matmul operand seen as [batch..., rows, cols] with strides, after 1-D promotion. */
typedef struct operand {
    int ndim;
    int64_t shape[CN_MAX_DIMS];
    int64_t stride[CN_MAX_DIMS];
    const float *data;
} operand;

static void promote(const cn_tensor *t, bool left, operand *op) {
    op->data = cn_data(t);
    if (t->ndim == 1) { /* [k] -> [1, k] (left) or [k, 1] (right); the size-1 stride is unused */
        op->ndim = 2;
        op->shape[0] = left ? 1 : t->shape[0];
        op->shape[1] = left ? t->shape[0] : 1;
        op->stride[0] = left ? 0 : t->stride[0];
        op->stride[1] = left ? t->stride[0] : 0;
        return;
    }
    op->ndim = t->ndim;
    memcpy(op->shape, t->shape, sizeof op->shape);
    memcpy(op->stride, t->stride, sizeof op->stride);
}

bool cn_blas_layout(int64_t rows, int64_t cols, int64_t rs, int64_t cs, bool *trans, int *ld) {
    int64_t need_cols = cols > 1 ? cols : 1, need_rows = rows > 1 ? rows : 1;
    if (cs == 1 || cols == 1) {
        int64_t l = rows == 1 ? need_cols : rs;
        if (l >= need_cols && l <= INT_MAX) { *trans = false; *ld = (int)l; return true; }
    }
    if (rs == 1 || rows == 1) {
        int64_t l = cols == 1 ? need_rows : cs;
        if (l >= need_rows && l <= INT_MAX) { *trans = true; *ld = (int)l; return true; }
    }
    return false;
}

/* Collapses dims [0, ndim-1) of op (batch and rows) into one row dim: total rows and their stride.
 * False when their strides do not nest. */
static bool collapse_rows(const operand *op, int64_t *rows, int64_t *rs) {
    int64_t total = 1, inner_stride = 0, span = 0; /* span: stride the next outer dim must have */
    bool have = false;
    for (int d = op->ndim - 2; d >= 0; d--) {
        if (op->shape[d] == 1) continue;
        if (!have) { inner_stride = op->stride[d]; have = true; }
        else if (op->stride[d] != span) return false;
        span = op->stride[d] * op->shape[d];
        total *= op->shape[d];
    }
    *rows = total;
    *rs = have ? inner_stride : 0;
    return true;
}

static cn_tensor *dot(const cn_tensor *a, const cn_tensor *b, cn_error *err) {
    cn_tensor *out = cn_empty(0, NULL, err);
    if (!out) return NULL;
    const float *x = cn_data(a), *y = cn_data(b);
    int64_t n = a->shape[0], sx = a->stride[0], sy = b->stride[0];
    double acc = 0.0;
    for (int64_t i = 0; i < n; i++) acc += (double)x[i * sx] * y[i * sy];
    cn_data(out)[0] = (float)acc;
    return out;
}

static cn_tensor *matmul_forward(const cn_tensor *a, const cn_tensor *b, cn_error *err) {
    char sa[160], sb[160];
    if (a->ndim == 0 || b->ndim == 0) {
        cn_error_set(err, "matmul: both operands need at least 1 dim, got shapes %s and %s",
                     cn_shape_str(sa, sizeof sa, a->ndim, a->shape),
                     cn_shape_str(sb, sizeof sb, b->ndim, b->shape));
        return NULL;
    }
    int64_t ka = a->shape[a->ndim - 1], kb = b->shape[b->ndim == 1 ? 0 : b->ndim - 2];
    if (ka != kb) {
        cn_error_set(err, "matmul: shapes %s and %s do not match (%lld != %lld)",
                     cn_shape_str(sa, sizeof sa, a->ndim, a->shape),
                     cn_shape_str(sb, sizeof sb, b->ndim, b->shape), (long long)ka, (long long)kb);
        return NULL;
    }
    if (a->ndim == 1 && b->ndim == 1) return dot(a, b, err);

    operand A, B;
    promote(a, true, &A);
    promote(b, false, &B);
    int na = A.ndim - 2, nb = B.ndim - 2, nbatch = na > nb ? na : nb;
    int64_t m = A.shape[A.ndim - 2], k = ka, n = B.shape[B.ndim - 1];

    /* Output: broadcast batch dims, then m and n unless they came from a 1-D promotion. */
    int64_t out_shape[CN_MAX_DIMS];
    int out_ndim = 0;
    int64_t nbatches = 1;
    for (int j = 0; j < nbatch; j++) { /* j counts batch dims from the left of the output */
        int da = j - (nbatch - na), db = j - (nbatch - nb);
        int64_t x = da >= 0 ? A.shape[da] : 1, y = db >= 0 ? B.shape[db] : 1;
        if (x != y && x != 1 && y != 1) {
            cn_error_set(err, "matmul: batch dims of shapes %s and %s cannot be broadcast "
                         "(%lld vs %lld)", cn_shape_str(sa, sizeof sa, a->ndim, a->shape),
                         cn_shape_str(sb, sizeof sb, b->ndim, b->shape), (long long)x,
                         (long long)y);
            return NULL;
        }
        out_shape[out_ndim++] = x == 1 ? y : x;
        nbatches *= out_shape[out_ndim - 1];
    }
    if (a->ndim > 1) out_shape[out_ndim++] = m;
    if (b->ndim > 1) out_shape[out_ndim++] = n;
    if (m > INT_MAX || n > INT_MAX || k > INT_MAX) {
        cn_error_set(err, "matmul: shapes %s and %s are too large for BLAS (sizes over %d)",
                     cn_shape_str(sa, sizeof sa, a->ndim, a->shape),
                     cn_shape_str(sb, sizeof sb, b->ndim, b->shape), INT_MAX);
        return NULL;
    }

    cn_tensor *out = cn_empty(out_ndim, out_shape, err);
    if (!out) return NULL;
    float *c = cn_data(out);
    if (nbatches * m * n == 0) return out;
    if (k == 0) {
        memset(c, 0, (size_t)(nbatches * m * n) * sizeof *c);
        return out;
    }

    cn_tensor *copy_a = NULL, *copy_b = NULL;
    bool ta, tb;
    int lda, ldb;
    if (!cn_blas_layout(m, k, A.stride[A.ndim - 2], A.stride[A.ndim - 1], &ta, &lda)) {
        if (!(copy_a = cn_contiguous((cn_tensor *)a, err))) goto fail;
        promote(copy_a, true, &A);
        cn_blas_layout(m, k, A.stride[A.ndim - 2], A.stride[A.ndim - 1], &ta, &lda);
    }
    if (!cn_blas_layout(k, n, B.stride[B.ndim - 2], B.stride[B.ndim - 1], &tb, &ldb)) {
        if (!(copy_b = cn_contiguous((cn_tensor *)b, err))) goto fail;
        promote(copy_b, false, &B);
        cn_blas_layout(k, n, B.stride[B.ndim - 2], B.stride[B.ndim - 1], &tb, &ldb);
    }

    /* One GEMM for the whole batch when only A is batched and its rows nest. */
    int64_t rows, rs;
    bool fold_ta;
    int fold_lda;
    if (nb == 0 && na > 0 && nbatches * m <= INT_MAX && collapse_rows(&A, &rows, &rs) &&
        cn_blas_layout(rows, k, rs, A.stride[A.ndim - 1], &fold_ta, &fold_lda)) {
        cn_gemm(fold_ta, tb, (int)rows, (int)n, (int)k, 1.0f, A.data, fold_lda, B.data, ldb, 0.0f,
                c, (int)n);
        goto done;
    }

    int64_t idx[CN_MAX_DIMS] = {0};
    for (int64_t bi = 0; bi < nbatches; bi++) {
        int64_t off_a = 0, off_b = 0;
        for (int j = 0; j < nbatch; j++) {
            int da = j - (nbatch - na), db = j - (nbatch - nb);
            if (da >= 0 && A.shape[da] != 1) off_a += idx[j] * A.stride[da];
            if (db >= 0 && B.shape[db] != 1) off_b += idx[j] * B.stride[db];
        }
        cn_gemm(ta, tb, (int)m, (int)n, (int)k, 1.0f, A.data + off_a, lda, B.data + off_b, ldb,
                0.0f, c + bi * m * n, (int)n);
        for (int j = nbatch - 1; j >= 0; j--) { /* next batch index, row-major */
            if (++idx[j] < out_shape[j]) break;
            idx[j] = 0;
        }
    }
done:
    cn_release(copy_a);
    cn_release(copy_b);
    return out;
fail:
    cn_release(copy_a);
    cn_release(copy_b);
    cn_release(out);
    return NULL;
}

/* ---- matmul: backward, the recorded op ------------------------------------------------------ */

/* d(a@b): ga = g @ b^T, gb = a^T @ g, with 1-d operands promoted to matrices ([k] -> [1,k] on
 * the left, [k,1] on the right) and the gradient reshaped to match; broadcast batch dims are
 * summed away by the engine. */
enum { MATMUL_SAVED_A, MATMUL_SAVED_B };

/* The gradients from a and b: the saved (detached) operands for the fast backward, the inputs for
 * the recorded one (every op here records under create_graph). */
static int matmul_grads(cn_node *n, const cn_tensor *g, cn_tensor *a, cn_tensor *b, cn_tensor **gi, cn_error *err) {
    cn_tensor *a2 = a->ndim == 1 ? cn_unsqueeze(a, 0, err) : cn_retain(a);
    cn_tensor *b2 = b->ndim == 1 ? cn_unsqueeze(b, 1, err) : cn_retain(b);
    cn_tensor *g2 = NULL, *at = NULL, *bt = NULL;
    int status = -1;
    if (!a2 || !b2) goto done;
    /* g is a2 @ b2 ([batch..., m, n]) without the promoted dims: put them back */
    int64_t shape[CN_MAX_DIMS];
    int batch = g->ndim - (a->ndim == 1 ? 0 : 1) - (b->ndim == 1 ? 0 : 1);
    for (int d = 0; d < batch; d++) shape[d] = g->shape[d];
    shape[batch] = a2->shape[a2->ndim - 2];
    shape[batch + 1] = b2->shape[b2->ndim - 1];
    int nd = batch + 2;
    if (!(g2 = cn_reshape((cn_tensor *)g, nd, shape, err))) goto done;
    if (n->inputs[0]->requires_grad) {
        if (!(bt = cn_transpose(b2, -1, -2, err))) goto done;
        cn_tensor *ga = cn_matmul(g2, bt, err);
        if (!ga) goto done;
        /* sum broadcast batch dims down to a2's shape, then drop a promoted dim */
        cn_tensor *gs = cn_sum_to_shape(ga, a2->ndim, a2->shape, err);
        cn_release(ga);
        if (!gs) goto done;
        gi[0] = cn_reshape(gs, a->ndim, a->shape, err);
        cn_release(gs);
        if (!gi[0]) goto done;
    }
    if (n->inputs[1]->requires_grad) {
        if (!(at = cn_transpose(a2, -1, -2, err))) goto done;
        cn_tensor *gb = cn_matmul(at, g2, err);
        if (!gb) goto done;
        cn_tensor *gs = cn_sum_to_shape(gb, b2->ndim, b2->shape, err);
        cn_release(gb);
        if (!gs) goto done;
        gi[1] = cn_reshape(gs, b->ndim, b->shape, err);
        cn_release(gs);
        if (!gi[1]) goto done;
    }
    status = 0;
done:
    cn_release(a2), cn_release(b2), cn_release(g2), cn_release(at), cn_release(bt);
    return status;
}

static int matmul_backward(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    return matmul_grads(n, g, n->saved[MATMUL_SAVED_A], n->saved[MATMUL_SAVED_B], gi, err);
}

static int matmul_backward_graph(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    return matmul_grads(n, g, n->inputs[0], n->inputs[1], gi, err);
}

static const cn_op_def op_matmul = {"matmul", matmul_backward, matmul_backward_graph};

cn_tensor *cn_matmul(const cn_tensor *a, const cn_tensor *b, cn_error *err) {
    cn_tensor *r;
    CN_WITHOUT_GRAD(r = matmul_forward(a, b, err));
    cn_node *node;
    cn_tensor *ins[2] = {(cn_tensor *)a, (cn_tensor *)b};
    r = cn_record_result(r, &op_matmul, 2, ins, &node, err);
    if (node) {
        cn_node_save(node, MATMUL_SAVED_A, a);
        cn_node_save(node, MATMUL_SAVED_B, b);
    }
    return r;
}
