/* ops_nn.c — linear, dropout, embedding: forward and backward side by side.
 *
 *   linear     y = x w^T + b                 gx = g w,   gw = g^T x,   gb = sum over rows of g
 *   dropout    y = x m,  m = [u >= p]/(1-p)  gx = g m     (u uniform from the engine RNG)
 *   embedding  y[i, :] = W[id_i, :]          gW[id_i, :] += g[i, :]
 *
 * linear flattens x's leading dims into rows and runs one GEMM; w is read where it lies (row-major
 * [out, in], or the transpose of a row-major [in, out]) through the GEMM's transpose flag.
 */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autograd.h"
#include "ops.h"
#include "ops_nn.h"
#include "parallel.h"
#include "rng.h"

/* ---- linear -------------------------------------------------------------------------------- */

/* The 2-D w itself when BLAS can read it in place (cn_blas_layout), else a contiguous copy; fills
 * trans/ld. New reference. */
static cn_tensor *blas_matrix(const cn_tensor *w, bool *trans, int *ld, cn_error *err) {
    if (cn_blas_layout(w->shape[0], w->shape[1], w->stride[0], w->stride[1], trans, ld))
        return cn_retain((cn_tensor *)w);
    cn_tensor *c = cn_contiguous((cn_tensor *)w, err);
    if (c) {
        *trans = false;
        *ld = w->shape[1] > 1 ? (int)w->shape[1] : 1;
    }
    return c;
}

static int64_t leading_rows(const cn_tensor *x) {
    int64_t rows = 1;
    for (int d = 0; d < x->ndim - 1; d++) rows *= x->shape[d];
    return rows;
}

static cn_tensor *linear_forward(const cn_tensor *x, const cn_tensor *w, const cn_tensor *bias,
                                 cn_error *err) {
    char sx[160], sw[160], sb[160];
    if (w->ndim != 2) {
        cn_error_set(err, "linear: weight must be 2-D [out, in], got shape %s",
                     cn_shape_str(sw, sizeof sw, w->ndim, w->shape));
        return NULL;
    }
    int64_t out_f = w->shape[0], in_f = w->shape[1];
    if (x->ndim < 1 || x->shape[x->ndim - 1] != in_f) {
        cn_error_set(err, "linear: input of shape %s does not match weight of shape %s (last dim must be %lld)",
                     cn_shape_str(sx, sizeof sx, x->ndim, x->shape),
                     cn_shape_str(sw, sizeof sw, w->ndim, w->shape), (long long)in_f);
        return NULL;
    }
    if (bias && !(bias->ndim == 1 && bias->shape[0] == out_f)) {
        cn_error_set(err, "linear: bias of shape %s does not match weight of shape %s (expected [%lld])",
                     cn_shape_str(sb, sizeof sb, bias->ndim, bias->shape),
                     cn_shape_str(sw, sizeof sw, w->ndim, w->shape), (long long)out_f);
        return NULL;
    }
    int64_t rows = leading_rows(x);
    if (rows > INT_MAX || in_f > INT_MAX || out_f > INT_MAX) {
        cn_error_set(err, "linear: input of shape %s and weight of shape %s are too large for BLAS",
                     cn_shape_str(sx, sizeof sx, x->ndim, x->shape),
                     cn_shape_str(sw, sizeof sw, w->ndim, w->shape));
        return NULL;
    }
    int64_t shape[CN_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = out_f;
    cn_tensor *y = cn_empty(x->ndim, shape, err);
    if (!y) return NULL;
    float *py = cn_data(y);
    if (bias) { /* rows start as the bias; the GEMM adds x w^T (beta = 1) */
        const float *pb = cn_data(bias);
        int64_t sb0 = bias->stride[0];
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < out_f; j++) py[r * out_f + j] = pb[j * sb0];
    }
    bool w_trans;
    int ldw;
    cn_tensor *xc = cn_contiguous((cn_tensor *)x, err);
    cn_tensor *wm = xc ? blas_matrix(w, &w_trans, &ldw, err) : NULL;
    if (!wm) {
        cn_release(xc), cn_release(y);
        return NULL;
    }
    /* op(B) = w^T [in, out]: a row-major w is read transposed, a transposed view as it is */
    cn_gemm(false, !w_trans, (int)rows, (int)out_f, (int)in_f, 1.0f, cn_data(xc), (int)(in_f ? in_f : 1),
            cn_data(wm), ldw, bias ? 1.0f : 0.0f, py, (int)(out_f ? out_f : 1));
    cn_release(xc), cn_release(wm);
    return y;
}

/* gx = g w [rows, in]; gw = g^T x [out, in]; gb[j] = sum_r g[r, j] (in double).
 * inputs {x, w[, bias]} */
enum { LINEAR_SAVED_X, LINEAR_SAVED_W };

static int linear_backward(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    const cn_tensor *x = n->saved[LINEAR_SAVED_X], *w = n->saved[LINEAR_SAVED_W];
    int64_t out_f = w->shape[0], in_f = w->shape[1], rows = leading_rows(x);
    cn_tensor *gc = cn_contiguous((cn_tensor *)g, err), *xc = NULL, *wm = NULL;
    int status = -1;
    if (!gc) return -1;
    const float *pg = cn_data(gc);
    if (n->inputs[0]->requires_grad) {
        bool w_trans;
        int ldw;
        if (!(wm = blas_matrix(w, &w_trans, &ldw, err))) goto done;
        if (!(gi[0] = cn_empty(x->ndim, x->shape, err))) goto done;
        cn_gemm(false, w_trans, (int)rows, (int)in_f, (int)out_f, 1.0f, pg, (int)(out_f ? out_f : 1),
                cn_data(wm), ldw, 0.0f, cn_data(gi[0]), (int)(in_f ? in_f : 1));
    }
    if (n->inputs[1]->requires_grad) {
        if (!(xc = cn_contiguous((cn_tensor *)x, err))) goto done;
        if (!(gi[1] = cn_empty(2, w->shape, err))) goto done;
        cn_gemm(true, false, (int)out_f, (int)in_f, (int)rows, 1.0f, pg, (int)(out_f ? out_f : 1),
                cn_data(xc), (int)(in_f ? in_f : 1), 0.0f, cn_data(gi[1]), (int)(in_f ? in_f : 1));
    }
    if (n->n_inputs == 3 && n->inputs[2]->requires_grad) {
        double *acc = calloc((size_t)(out_f ? out_f : 1), sizeof *acc);
        if (!acc) {
            cn_error_set(err, "linear: out of memory");
            goto done;
        }
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < out_f; j++) acc[j] += pg[r * out_f + j];
        gi[2] = cn_empty(1, &out_f, err);
        if (gi[2])
            for (int64_t j = 0; j < out_f; j++) cn_data(gi[2])[j] = (float)acc[j];
        free(acc);
        if (!gi[2]) goto done;
    }
    status = 0;
done:
    cn_release(gc), cn_release(xc), cn_release(wm);
    return status;
}

/* The recorded backward (create_graph): gx = g @ w, gw = g2^T @ x2 (g, x as [rows, features]),
 * gb = g summed over its leading dims. */
static int linear_backward_graph(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    cn_tensor *x = n->inputs[0], *w = n->inputs[1], *gt = (cn_tensor *)g;
    if (x->requires_grad && !(gi[0] = cn_matmul(g, w, err))) return -1;
    if (w->requires_grad) {
        int64_t gshape[2] = {-1, w->shape[0]}, xshape[2] = {-1, w->shape[1]};
        cn_tensor *g2 = cn_reshape(gt, 2, gshape, err), *x2 = cn_reshape(x, 2, xshape, err);
        cn_tensor *g2t = g2 ? cn_transpose(g2, 0, 1, err) : NULL;
        gi[1] = g2t && x2 ? cn_matmul(g2t, x2, err) : NULL;
        cn_release(g2), cn_release(x2), cn_release(g2t);
        if (!gi[1]) return -1;
    }
    if (n->n_inputs == 3 && n->inputs[2]->requires_grad) {
        int dims[CN_MAX_DIMS];
        for (int d = 0; d < g->ndim - 1; d++) dims[d] = d;
        gi[2] = g->ndim > 1 ? cn_sum(g, g->ndim - 1, dims, false, err) : cn_retain(gt);
        if (!gi[2]) return -1;
    }
    return 0;
}

static const cn_op_def op_linear = {"linear", linear_backward, linear_backward_graph};

cn_tensor *cn_linear(const cn_tensor *x, const cn_tensor *w, const cn_tensor *bias, cn_error *err) {
    cn_tensor *r;
    CN_WITHOUT_GRAD(r = linear_forward(x, w, bias, err));
    cn_node *node;
    cn_tensor *ins[3] = {(cn_tensor *)x, (cn_tensor *)w, (cn_tensor *)bias};
    r = cn_record_result(r, &op_linear, bias ? 3 : 2, ins, &node, err);
    if (node) {
        cn_node_save(node, LINEAR_SAVED_X, x);
        cn_node_save(node, LINEAR_SAVED_W, w);
    }
    return r;
}

/* ---- dropout ------------------------------------------------------------------------------- */

/* gx = g m (recorded under create_graph: m is a constant) */
enum { DROPOUT_SAVED_MASK }; /* m: 0 or 1/(1-p) */

static int dropout_backward(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    gi[0] = cn_binary(CN_MUL, g, n->saved[DROPOUT_SAVED_MASK], err);
    return gi[0] ? 0 : -1;
}

static const cn_op_def op_dropout = {"dropout", dropout_backward, dropout_backward};

cn_tensor *cn_dropout(const cn_tensor *x, double p, bool training, cn_error *err) {
    if (!(p >= 0.0 && p <= 1.0)) {
        cn_error_set(err, "dropout: probability must be in [0, 1], got %g", p);
        return NULL;
    }
    if (!training || p == 0.0) return cn_retain((cn_tensor *)x);
    cn_tensor *mask = cn_empty(x->ndim, x->shape, err);
    if (!mask) return NULL;
    float *m = cn_data(mask);
    size_t count = cn_numel(mask);
    cn_tensor *r = NULL;
    if (p == 1.0) {
        memset(m, 0, count * sizeof *m);
    } else {
        cn_rng_uniform(m, count, 0.0f, 1.0f);
        float scale = (float)(1.0 / (1.0 - p));
        if (cn_is_contiguous(x)) { /* mask and output in one pass */
            if (!(r = cn_empty(x->ndim, x->shape, err))) {
                cn_release(mask);
                return NULL;
            }
            const float *xv = cn_data(x);
            float *y = cn_data(r);
#pragma omp parallel for schedule(static) if (count > PARALLEL_MIN)
            for (size_t i = 0; i < count; i++) {
                m[i] = (double)m[i] < p ? 0.0f : scale;
                y[i] = xv[i] * m[i];
            }
        } else {
#pragma omp parallel for schedule(static) if (count > PARALLEL_MIN)
            for (size_t i = 0; i < count; i++) m[i] = (double)m[i] < p ? 0.0f : scale;
        }
    }
    if (!r) CN_WITHOUT_GRAD(r = cn_binary(CN_MUL, x, mask, err));
    cn_node *node;
    cn_tensor *in = (cn_tensor *)x;
    r = cn_record_result(r, &op_dropout, 1, &in, &node, err);
    if (node) cn_node_save(node, DROPOUT_SAVED_MASK, mask);
    cn_release(mask);
    return r;
}

/* ---- embedding ----------------------------------------------------------------------------- */

/* Checks every id is an integer in [0, num); returns 0, or -1 with err naming the first bad one. */
static int check_ids(const float *ids, size_t count, const cn_tensor *weight, cn_error *err) {
    int64_t num = weight->shape[0];
    char sw[160];
    for (size_t i = 0; i < count; i++) {
        float v = ids[i];
        if (v >= 0.0f && v < (float)num && v == floorf(v) && (int64_t)v < num) continue;
        if (v == floorf(v) && fabsf(v) < 9e15f)
            cn_error_set(err, "embedding: index %lld out of range for a table of %lld rows (weight of shape %s)",
                         (long long)v, (long long)num, cn_shape_str(sw, sizeof sw, 2, weight->shape));
        else
            cn_error_set(err, "embedding: index %.9g is not an integer id (table of %lld rows, weight of shape %s)",
                         (double)v, (long long)num, cn_shape_str(sw, sizeof sw, 2, weight->shape));
        return -1;
    }
    return 0;
}

static cn_tensor *embedding_forward(const cn_tensor *indices, const cn_tensor *weight, cn_error *err) {
    char si[160], sw[160];
    if (weight->ndim != 2) {
        cn_error_set(err, "embedding: weight must be 2-D [num, dim], got shape %s",
                     cn_shape_str(sw, sizeof sw, weight->ndim, weight->shape));
        return NULL;
    }
    if (indices->ndim + 1 > CN_MAX_DIMS) {
        cn_error_set(err, "embedding: indices of shape %s give more than %d dims",
                     cn_shape_str(si, sizeof si, indices->ndim, indices->shape), CN_MAX_DIMS);
        return NULL;
    }
    cn_tensor *ids = cn_contiguous((cn_tensor *)indices, err);
    if (!ids) return NULL;
    size_t count = cn_numel(ids);
    const float *pi = cn_data(ids);
    if (check_ids(pi, count, weight, err)) {
        cn_release(ids);
        return NULL;
    }
    int64_t shape[CN_MAX_DIMS], dim = weight->shape[1];
    memcpy(shape, indices->shape, sizeof shape);
    shape[indices->ndim] = dim;
    cn_tensor *wc = cn_contiguous((cn_tensor *)weight, err);
    cn_tensor *y = wc ? cn_empty(indices->ndim + 1, shape, err) : NULL;
    if (!y) {
        cn_release(ids), cn_release(wc);
        return NULL;
    }
    const float *pw = cn_data(wc);
    float *py = cn_data(y);
#pragma omp parallel for schedule(static) if (count * (size_t)dim > PARALLEL_MIN)
    for (size_t i = 0; i < count; i++)
        memcpy(py + i * (size_t)dim, pw + (size_t)pi[i] * (size_t)dim, (size_t)dim * sizeof *py);
    cn_release(ids), cn_release(wc);
    return y;
}

/* gW[id_i, :] += g[i, :]; rows sharing an id accumulate in index order. inputs {weight} */
enum { EMBEDDING_SAVED_IDS }; /* a private contiguous copy of the (checked) indices */

static int embedding_backward(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    const cn_tensor *weight = n->inputs[0], *ids = n->saved[EMBEDDING_SAVED_IDS];
    cn_tensor *gc = cn_contiguous((cn_tensor *)g, err);
    cn_tensor *gw = gc ? cn_zeros(2, weight->shape, err) : NULL;
    if (!gw) {
        cn_release(gc);
        return -1;
    }
    size_t count = cn_numel(ids), dim = (size_t)weight->shape[1];
    const float *pi = cn_data(ids), *pg = cn_data(gc);
    float *pw = cn_data(gw);
    for (size_t i = 0; i < count; i++) {
        float *row = pw + (size_t)pi[i] * dim;
        const float *src = pg + i * dim;
        for (size_t j = 0; j < dim; j++) row[j] += src[j];
    }
    cn_release(gc);
    gi[0] = gw;
    return 0;
}

/* The recorded backward (create_graph): gW = onehot(ids)^T @ g as [count, num]^T @ [count, dim],
 * the one-hot matrix a constant, so the gradient is linear in g and differentiable again. */
static int embedding_backward_graph(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    const cn_tensor *weight = n->inputs[0], *ids = n->saved[EMBEDDING_SAVED_IDS];
    int64_t count = (int64_t)cn_numel(ids), shape[2] = {count, weight->shape[0]}, rows[2] = {count, weight->shape[1]};
    cn_tensor *onehot = cn_zeros(2, shape, err);
    if (!onehot) return -1;
    for (int64_t i = 0; i < count; i++) cn_data(onehot)[i * shape[1] + (int64_t)cn_data(ids)[i]] = 1.0f;
    cn_tensor *ot = cn_transpose(onehot, 0, 1, err);
    cn_tensor *g2 = ot ? cn_reshape((cn_tensor *)g, 2, rows, err) : NULL;
    gi[0] = g2 ? cn_matmul(ot, g2, err) : NULL;
    cn_release(onehot), cn_release(ot), cn_release(g2);
    return gi[0] ? 0 : -1;
}

static const cn_op_def op_embedding = {"embedding", embedding_backward, embedding_backward_graph};

cn_tensor *cn_embedding(const cn_tensor *indices, const cn_tensor *weight, cn_error *err) {
    cn_tensor *r;
    CN_WITHOUT_GRAD(r = embedding_forward(indices, weight, err));
    cn_node *node;
    cn_tensor *in = (cn_tensor *)weight;
    r = cn_record_result(r, &op_embedding, 1, &in, &node, err);
    if (node) { /* a private copy: the caller may rewrite its ids before backward */
        cn_tensor *ids;
        CN_WITHOUT_GRAD(ids = cn_clone(indices, err));
        if (!ids) {
            cn_release(r);
            return NULL;
        }
        cn_node_save(node, EMBEDDING_SAVED_IDS, ids);
        cn_release(ids);
    }
    return r;
}
