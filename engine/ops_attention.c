/* ops_attention.c — scaled dot-product attention, forward and backward.
 *
 *   S = scale q k^T + mask      [Lq, Lk]   (per batch index)
 *   P = softmax(S) along keys   (kept for backward)
 *   O = P v                     [Lq, dv]
 * backward, from G = dL/dO:
 *   dv = P^T G,  dP = G v^T,  dS = P (dP - rowsum(dP P)),  dq = scale dS k,  dk = scale dS^T q,
 *   dmask = dS
 *
 * Batch dims broadcast (as torch.matmul): each operand is expanded to the result's batch shape, so
 * a batch index finds its q, k, v, mask slice through the expanded strides (0 on broadcast dims).
 * The two products are GEMMs per batch index; the mask add and the softmax are fused in one pass
 * over each row, with double sums. Gradients of broadcast q, k, v accumulate straight into their
 * own shape (GEMM with beta = 1); the mask's gradient has the full shape and the engine sums it.
 */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autograd.h"
#include "ops.h"
#include "ops_nn.h"
#include "parallel.h"
#include "vmath.h"

static const char *NAME = "scaled_dot_product_attention";

typedef struct attn_shape {
    int nb;                       /* batch dims of the result */
    int64_t batch[CN_MAX_DIMS];   /* their sizes */
    int64_t nbatches, lq, lk, d, dv;
} attn_shape;

/* Broadcasts the batch dims (all but the last two) of t into sh (nb, batch); false on mismatch. */
static bool broadcast_batch(attn_shape *sh, const cn_tensor *t) {
    int tb = t->ndim - 2;
    if (tb > sh->nb) {
        memmove(sh->batch + (tb - sh->nb), sh->batch, (size_t)sh->nb * sizeof *sh->batch);
        for (int j = 0; j < tb - sh->nb; j++) sh->batch[j] = 1;
        sh->nb = tb;
    }
    for (int j = 0; j < tb; j++) {
        int64_t *o = &sh->batch[sh->nb - tb + j], s = t->shape[j];
        if (*o == 1) *o = s;
        else if (s != 1 && s != *o) return false;
    }
    return true;
}

static int plan(const cn_tensor *q, const cn_tensor *k, const cn_tensor *v, const cn_tensor *mask,
                attn_shape *sh, cn_error *err) {
    char sq[160], sk[160], sv[160], sm[160], sw[160];
#define SHAPES cn_shape_str(sq, sizeof sq, q->ndim, q->shape), cn_shape_str(sk, sizeof sk, k->ndim, k->shape), \
               cn_shape_str(sv, sizeof sv, v->ndim, v->shape)
    if (q->ndim < 2 || k->ndim < 2 || v->ndim < 2) {
        cn_error_set(err, "%s: q, k, v need at least 2 dims ([*, L, d]), got shapes %s, %s, %s", NAME, SHAPES);
        return -1;
    }
    sh->lq = q->shape[q->ndim - 2], sh->d = q->shape[q->ndim - 1];
    sh->lk = k->shape[k->ndim - 2], sh->dv = v->shape[v->ndim - 1];
    if (k->shape[k->ndim - 1] != sh->d) {
        cn_error_set(err, "%s: q and k must have the same last dim, got shapes %s, %s, %s", NAME, SHAPES);
        return -1;
    }
    if (v->shape[v->ndim - 2] != sh->lk) {
        cn_error_set(err, "%s: k and v must have the same length (dim -2), got shapes %s, %s, %s", NAME, SHAPES);
        return -1;
    }
    sh->nb = 0;
    if (!broadcast_batch(sh, q) || !broadcast_batch(sh, k) || !broadcast_batch(sh, v)) {
        cn_error_set(err, "%s: batch dims of q, k, v cannot be broadcast, got shapes %s, %s, %s", NAME, SHAPES);
        return -1;
    }
#undef SHAPES
    int64_t wshape[CN_MAX_DIMS];
    memcpy(wshape, sh->batch, (size_t)sh->nb * sizeof *wshape);
    wshape[sh->nb] = sh->lq, wshape[sh->nb + 1] = sh->lk;
    if (mask) {
        bool ok = mask->ndim <= sh->nb + 2;
        for (int j = 0; ok && j < mask->ndim; j++) {
            int64_t s = mask->shape[mask->ndim - 1 - j], o = wshape[sh->nb + 1 - j];
            ok = s == 1 || s == o;
        }
        if (!ok) {
            cn_error_set(err, "%s: mask of shape %s does not broadcast to the attention weights' shape %s",
                         NAME, cn_shape_str(sm, sizeof sm, mask->ndim, mask->shape),
                         cn_shape_str(sw, sizeof sw, sh->nb + 2, wshape));
            return -1;
        }
    }
    if (sh->lq > INT_MAX || sh->lk > INT_MAX || sh->d > INT_MAX || sh->dv > INT_MAX) {
        cn_error_set(err, "%s: sizes too large for BLAS (attention weights of shape %s)", NAME,
                     cn_shape_str(sw, sizeof sw, sh->nb + 2, wshape));
        return -1;
    }
    sh->nbatches = 1;
    for (int j = 0; j < sh->nb; j++) sh->nbatches *= sh->batch[j];
    return 0;
}

/* t expanded to [batch..., rows, cols] (a view; stride 0 on broadcast batch dims). New reference. */
static cn_tensor *expand_to(const cn_tensor *t, const attn_shape *sh, int64_t rows, int64_t cols, cn_error *err) {
    int64_t shape[CN_MAX_DIMS];
    memcpy(shape, sh->batch, (size_t)sh->nb * sizeof *shape);
    shape[sh->nb] = rows, shape[sh->nb + 1] = cols;
    return cn_expand((cn_tensor *)t, sh->nb + 2, shape, err);
}

/* Storage offset, relative to t's first element, of batch index idx in the expanded view t. */
static int64_t batch_offset(const cn_tensor *t, int nb, const int64_t *idx) {
    int64_t off = 0;
    for (int j = 0; j < nb; j++) off += idx[j] * t->stride[j];
    return off;
}

static void next_index(int64_t *idx, const attn_shape *sh) {
    for (int j = sh->nb - 1; j >= 0; j--) {
        if (++idx[j] < sh->batch[j]) return;
        idx[j] = 0;
    }
}

/* Offsets of every batch index's slice in each expanded view (NULL views are skipped). */
static int64_t *batch_offsets(const attn_shape *sh, int nviews, cn_tensor *const *views, cn_error *err) {
    int64_t *off = malloc((size_t)(sh->nbatches ? sh->nbatches : 1) * (size_t)nviews * sizeof *off);
    if (!off) {
        cn_error_set(err, "%s: out of memory", NAME);
        return NULL;
    }
    int64_t idx[CN_MAX_DIMS] = {0};
    for (int64_t b = 0; b < sh->nbatches; b++) {
        for (int v = 0; v < nviews; v++) off[b * nviews + v] = views[v] ? batch_offset(views[v], sh->nb, idx) : 0;
        next_index(idx, sh);
    }
    return off;
}

/* Row r of s ([rows, lk]) becomes softmax(s_r + mask_r); mask_r (or NULL) read with stride ms_col. */
static void masked_softmax_row(float *row, int64_t lk, const float *mask_row, int64_t ms_col) {
    if (mask_row)
        for (int64_t j = 0; j < lk; j++) row[j] += mask_row[j * ms_col];
    float m = -INFINITY;
    for (int64_t j = 0; j < lk; j++)
        if (row[j] > m) m = row[j];
    /* a vectorised float exp (≤ 1 ulp, engine/vmath.h), the sum and the division in double */
#pragma omp simd
    for (int64_t j = 0; j < lk; j++) row[j] = cn_vexpf(row[j] - m);
    double sum = 0.0;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < lk; j++) sum += row[j];
#pragma omp simd
    for (int64_t j = 0; j < lk; j++) row[j] = (float)((double)row[j] / sum);
}

/* Forward; *weights receives P [batch..., lq, lk] (new reference), *qkv the contiguous q, k, v.
 * Three phases, so the threaded BLAS and the OpenMP loop hand the cores over only twice: the score
 * GEMMs of every batch index, one parallel loop over every row (mask + softmax), the value GEMMs. */
static cn_tensor *attention_forward(const cn_tensor *q, const cn_tensor *k, const cn_tensor *v,
                                    const cn_tensor *mask, float scale, cn_tensor **weights,
                                    cn_tensor *qkv[3], cn_error *err) {
    attn_shape sh;
    *weights = NULL;
    qkv[0] = qkv[1] = qkv[2] = NULL;
    if (plan(q, k, v, mask, &sh, err)) return NULL;
    cn_tensor *views[4] = {NULL, NULL, NULL, NULL}, *p = NULL, *o = NULL; /* expanded q, k, v, mask */
    int64_t *off = NULL;
    const cn_tensor *src[3] = {q, k, v};
    for (int i = 0; i < 3; i++)
        if (!(qkv[i] = cn_contiguous((cn_tensor *)src[i], err))) goto fail;
    if (!(views[0] = expand_to(qkv[0], &sh, sh.lq, sh.d, err)) || !(views[1] = expand_to(qkv[1], &sh, sh.lk, sh.d, err)) ||
        !(views[2] = expand_to(qkv[2], &sh, sh.lk, sh.dv, err)) ||
        (mask && !(views[3] = expand_to(mask, &sh, sh.lq, sh.lk, err))))
        goto fail;
    int64_t shape[CN_MAX_DIMS];
    memcpy(shape, sh.batch, (size_t)sh.nb * sizeof *shape);
    shape[sh.nb] = sh.lq, shape[sh.nb + 1] = sh.lk;
    if (!(p = cn_empty(sh.nb + 2, shape, err))) goto fail;
    shape[sh.nb + 1] = sh.dv;
    if (!(o = cn_empty(sh.nb + 2, shape, err))) goto fail;
    if (!(off = batch_offsets(&sh, 4, views, err))) goto fail;
    int lq = (int)sh.lq, lk = (int)sh.lk, d = (int)sh.d, dv = (int)sh.dv;
    int ldd = d ? d : 1, ldk = lk ? lk : 1, ldv = dv ? dv : 1;
    const float *pq = cn_data(views[0]), *pk = cn_data(views[1]), *pv = cn_data(views[2]);
    float *pp = cn_data(p);
    for (int64_t b = 0; b < sh.nbatches; b++) /* S = scale q k^T */
        cn_gemm(false, true, lq, lk, d, scale, pq + off[4 * b], ldd, pk + off[4 * b + 1], ldd, 0.0f,
                pp + b * sh.lq * sh.lk, ldk);
    int64_t rows = sh.nbatches * sh.lq;
    const float *pm = views[3] ? cn_data(views[3]) : NULL;
    int64_t ms_row = pm ? views[3]->stride[sh.nb] : 0, ms_col = pm ? views[3]->stride[sh.nb + 1] : 0;
#pragma omp parallel for schedule(static) if (rows * sh.lk >= PARALLEL_MIN && rows > 1)
    for (int64_t r = 0; r < rows; r++) {
        int64_t b = r / sh.lq, i = r % sh.lq;
        masked_softmax_row(pp + r * sh.lk, sh.lk, pm ? pm + off[4 * b + 3] + i * ms_row : NULL, ms_col);
    }
    for (int64_t b = 0; b < sh.nbatches; b++) /* O = P v */
        cn_gemm(false, false, lq, dv, lk, 1.0f, pp + b * sh.lq * sh.lk, ldk, pv + off[4 * b + 2], ldv, 0.0f,
                cn_data(o) + b * sh.lq * sh.dv, ldv);
    for (int i = 0; i < 4; i++) cn_release(views[i]);
    free(off);
    *weights = p;
    return o;
fail:
    for (int i = 0; i < 4; i++) cn_release(views[i]);
    free(off);
    cn_release(p), cn_release(o);
    for (int i = 0; i < 3; i++) cn_release(qkv[i]), qkv[i] = NULL;
    return NULL;
}

/* inputs {q, k, v[, mask]}. Phases as in the forward: dv and dP GEMMs, one parallel loop for dS,
 * the dq and dk GEMMs. */
struct attention_args {
    float scale;
};
enum { ATTN_SAVED_Q, ATTN_SAVED_K, ATTN_SAVED_V, ATTN_SAVED_P }; /* q, k, v contiguous; P = softmax */

static int attention_backward(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    const cn_tensor *q = n->saved[ATTN_SAVED_Q], *k = n->saved[ATTN_SAVED_K], *v = n->saved[ATTN_SAVED_V],
                    *p = n->saved[ATTN_SAVED_P];
    float scale = CN_NODE_ARGS(n, struct attention_args)->scale;
    bool need[4] = {false, false, false, false};
    for (int i = 0; i < n->n_inputs; i++) need[i] = n->inputs[i]->requires_grad;
    attn_shape sh;
    if (plan(q, k, v, NULL, &sh, err)) return -1;
    /* views: expanded q, k, v, then expanded gradients of q, k, v (accumulated in place) */
    cn_tensor *gc = NULL, *ds = NULL, *views[6] = {NULL, NULL, NULL, NULL, NULL, NULL};
    int64_t *off = NULL;
    int status = -1;
    if (!(gc = cn_contiguous((cn_tensor *)g, err))) goto done;
    const int64_t rows_of[3] = {sh.lq, sh.lk, sh.lk}, cols_of[3] = {sh.d, sh.d, sh.dv};
    const cn_tensor *ins[3] = {q, k, v};
    for (int i = 0; i < 3; i++) {
        if (!(views[i] = expand_to(ins[i], &sh, rows_of[i], cols_of[i], err))) goto done;
        if (need[i] && (!(gi[i] = cn_zeros(ins[i]->ndim, ins[i]->shape, err)) ||
                        !(views[3 + i] = expand_to(gi[i], &sh, rows_of[i], cols_of[i], err))))
            goto done;
    }
    bool need_ds = need[0] || need[1] || need[3];
    if (need_ds && !(ds = cn_empty(p->ndim, p->shape, err))) goto done; /* dP, then dS; the mask's gradient */
    if (!(off = batch_offsets(&sh, 6, views, err))) goto done;
    int lq = (int)sh.lq, lk = (int)sh.lk, d = (int)sh.d, dv = (int)sh.dv;
    int ldd = d ? d : 1, ldk = lk ? lk : 1, ldv = dv ? dv : 1;
    const float *pq = cn_data(views[0]), *pk = cn_data(views[1]), *pv = cn_data(views[2]);
    const float *pp = cn_data(p), *pg = cn_data(gc);
    float *pds = ds ? cn_data(ds) : NULL;
    for (int64_t b = 0; b < sh.nbatches; b++) {
        const float *pb = pp + b * sh.lq * sh.lk, *gb = pg + b * sh.lq * sh.dv;
        if (need[2]) /* dv += P^T G */
            cn_gemm(true, false, lk, dv, lq, 1.0f, pb, ldk, gb, ldv, 1.0f, cn_data(views[5]) + off[6 * b + 5], ldv);
        if (need_ds) /* dP = G v^T */
            cn_gemm(false, true, lq, lk, dv, 1.0f, gb, ldv, pv + off[6 * b + 2], ldv, 0.0f, pds + b * sh.lq * sh.lk, ldk);
    }
    if (!need_ds) goto finish;
    int64_t rows = sh.nbatches * sh.lq, lkk = sh.lk;
#pragma omp parallel for schedule(static) if (rows * lkk >= PARALLEL_MIN && rows > 1)
    for (int64_t r = 0; r < rows; r++) { /* dS = P (dP - rowsum(dP P)) */
        const float *pr = pp + r * lkk;
        float *sr = pds + r * lkk;
        double dot = 0.0;
        for (int64_t j = 0; j < lkk; j++) dot += (double)sr[j] * pr[j];
        for (int64_t j = 0; j < lkk; j++) sr[j] = (float)((double)pr[j] * ((double)sr[j] - dot));
    }
    for (int64_t b = 0; b < sh.nbatches; b++) {
        const float *sb = pds + b * sh.lq * sh.lk;
        if (need[0]) /* dq += scale dS k */
            cn_gemm(false, false, lq, d, lk, scale, sb, ldk, pk + off[6 * b + 1], ldd, 1.0f,
                    cn_data(views[3]) + off[6 * b + 3], ldd);
        if (need[1]) /* dk += scale dS^T q */
            cn_gemm(true, false, lk, d, lq, scale, sb, ldk, pq + off[6 * b], ldd, 1.0f,
                    cn_data(views[4]) + off[6 * b + 4], ldd);
    }
    if (need[3]) gi[3] = cn_retain(ds);
finish:
    status = 0;
done:
    cn_release(gc), cn_release(ds);
    for (int i = 0; i < 6; i++) cn_release(views[i]);
    free(off);
    return status;
}

/* The recorded backward (create_graph): P recomputed with recording ops (S = scale q k^T + mask,
 * P = softmax(S)), then the formulas above as matmuls; gradients of broadcast operands have the
 * broadcast shape, and the engine sums them down. */
static cn_tensor *matmul_t(const cn_tensor *a, cn_tensor *b, cn_error *err) { /* a @ b^T */
    cn_tensor *bt = cn_transpose(b, -1, -2, err);
    cn_tensor *r = bt ? cn_matmul(a, bt, err) : NULL;
    cn_release(bt);
    return r;
}

static cn_tensor *t_matmul(cn_tensor *a, const cn_tensor *b, cn_error *err) { /* a^T @ b */
    cn_tensor *at = cn_transpose(a, -1, -2, err);
    cn_tensor *r = at ? cn_matmul(at, b, err) : NULL;
    cn_release(at);
    return r;
}

static int attention_backward_graph(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    float scale = CN_NODE_ARGS(n, struct attention_args)->scale;
    cn_tensor *q = n->inputs[0], *k = n->inputs[1], *v = n->inputs[2], *mask = n->n_inputs > 3 ? n->inputs[3] : NULL;
    int status = -1, last = -1;
    cn_tensor *s = cn_binary_scalar_drop(CN_MUL, matmul_t(q, k, err), scale, false, err), *p = NULL, *dp = NULL, *ds = NULL;
    if (s && mask) {
        cn_tensor *masked = cn_binary(CN_ADD, s, mask, err);
        cn_release(s);
        s = masked;
    }
    if (!s || !(p = cn_softmax(s, -1, err))) goto done;
    if (v->requires_grad && !(gi[2] = t_matmul(p, g, err))) goto done;
    if (!(q->requires_grad || k->requires_grad || (mask && mask->requires_grad))) {
        status = 0;
        goto done;
    }
    if (!(dp = matmul_t(g, v, err))) goto done;
    cn_tensor *dpp = cn_binary(CN_MUL, dp, p, err);
    cn_tensor *dot = dpp ? cn_sum(dpp, 1, &last, true, err) : NULL;
    cn_tensor *centred = dot ? cn_binary(CN_SUB, dp, dot, err) : NULL;
    ds = centred ? cn_binary(CN_MUL, p, centred, err) : NULL;
    cn_release(dpp), cn_release(dot), cn_release(centred);
    if (!ds) goto done;
    if (q->requires_grad && !(gi[0] = cn_binary_scalar_drop(CN_MUL, cn_matmul(ds, k, err), scale, false, err))) goto done;
    if (k->requires_grad && !(gi[1] = cn_binary_scalar_drop(CN_MUL, t_matmul(ds, q, err), scale, false, err))) goto done;
    if (mask && mask->requires_grad) gi[3] = cn_retain(ds);
    status = 0;
done:
    cn_release(s), cn_release(p), cn_release(dp), cn_release(ds);
    return status;
}

static const cn_op_def op_attention = {"scaled_dot_product_attention", attention_backward, attention_backward_graph};

cn_tensor *cn_scaled_dot_product_attention(const cn_tensor *q, const cn_tensor *k, const cn_tensor *v,
                                           const cn_tensor *mask, double scale, cn_error *err) {
    if (isnan(scale)) {
        cn_error_set(err, "%s: scale is NaN", NAME);
        return NULL;
    }
    if (scale <= 0.0) {
        int64_t d = q->ndim ? q->shape[q->ndim - 1] : 0;
        scale = d > 0 ? 1.0 / sqrt((double)d) : 1.0;
    }
    cn_tensor *r, *weights, *qkv[3];
    CN_WITHOUT_GRAD(r = attention_forward(q, k, v, mask, (float)scale, &weights, qkv, err));
    cn_node *node;
    cn_tensor *ins[4] = {(cn_tensor *)q, (cn_tensor *)k, (cn_tensor *)v, (cn_tensor *)mask};
    r = cn_record_result(r, &op_attention, mask ? 4 : 3, ins, &node, err);
    if (node) {
        cn_node_save(node, ATTN_SAVED_Q, qkv[0]);
        cn_node_save(node, ATTN_SAVED_K, qkv[1]);
        cn_node_save(node, ATTN_SAVED_V, qkv[2]);
        cn_node_save(node, ATTN_SAVED_P, weights);
        CN_NODE_ARGS(node, struct attention_args)->scale = (float)scale;
    }
    cn_release(weights);
    for (int i = 0; i < 3; i++) cn_release(qkv[i]);
    return r;
}
