/* ops_softmax.c — softmax and log_softmax along a dim, forward and fused backward.
 *
 *   softmax      y_i = exp(x_i - m) / sum_j exp(x_j - m),   m = max_j x_j
 *                gx_i = y_i (g_i - sum_j g_j y_j)
 *   log_softmax  y_i = x_i - m - log sum_j exp(x_j - m)
 *                gx_i = g_i - exp(y_i) sum_j g_j
 *
 * The input is laid out contiguous as [outer, n, inner] (n the size of dim); each of the
 * outer * inner lanes is one softmax, its sums accumulated in double. With inner == 1 a lane is a
 * contiguous row; otherwise lanes are processed TILE columns at a time so each step reads adjacent
 * floats. A lane holding NaN, or only -inf, gives NaN (as torch).
 */
#include <math.h>

#include "autograd.h"
#include "ops.h"
#include "ops_nn.h"
#include "parallel.h"
#include "vmath.h"

#define TILE 64            /* lanes per step when inner > 1 */

/* ---- forward ------------------------------------------------------------------------------- */

static void softmax_row(const float *x, float *y, int64_t n, bool log_out) {
    float m = -INFINITY;
    for (int64_t j = 0; j < n; j++)
        if (x[j] > m) m = x[j];
    double sum = 0.0;
    if (log_out) {
        for (int64_t j = 0; j < n; j++) sum += exp((double)x[j] - m);
        double lse = log(sum);
        for (int64_t j = 0; j < n; j++) y[j] = (float)(((double)x[j] - m) - lse);
    } else {
        /* a vectorised float exp (≤ 1 ulp, engine/vmath.h), the sum and the division in double */
#pragma omp simd
        for (int64_t j = 0; j < n; j++) y[j] = cn_vexpf(x[j] - m);
#pragma omp simd reduction(+ : sum)
        for (int64_t j = 0; j < n; j++) sum += y[j];
#pragma omp simd
        for (int64_t j = 0; j < n; j++) y[j] = (float)((double)y[j] / sum);
    }
}

/* Lanes [i0, i0 + w) of one outer block: x[r * inner + c], r < n. */
static void softmax_tile(const float *x, float *y, int64_t n, int64_t inner, int64_t w, bool log_out) {
    float m[TILE];
    double sum[TILE];
    for (int64_t c = 0; c < w; c++) m[c] = -INFINITY, sum[c] = 0.0;
    for (int64_t r = 0; r < n; r++)
        for (int64_t c = 0; c < w; c++)
            if (x[r * inner + c] > m[c]) m[c] = x[r * inner + c];
    if (log_out) {
        for (int64_t r = 0; r < n; r++)
            for (int64_t c = 0; c < w; c++) sum[c] += exp((double)x[r * inner + c] - m[c]);
        for (int64_t c = 0; c < w; c++) sum[c] = log(sum[c]);
        for (int64_t r = 0; r < n; r++)
            for (int64_t c = 0; c < w; c++) y[r * inner + c] = (float)(((double)x[r * inner + c] - m[c]) - sum[c]);
        return;
    }
    /* as softmax_row: the vectorised float exp, once per element, kept in y; sums and the division
     * in double (the double libm exp here took 12% of the 64² U-Net's forward) */
    for (int64_t r = 0; r < n; r++) {
        const float *xr = x + r * inner;
        float *yr = y + r * inner;
#pragma omp simd
        for (int64_t c = 0; c < w; c++) yr[c] = cn_vexpf(xr[c] - m[c]);
        for (int64_t c = 0; c < w; c++) sum[c] += yr[c];
    }
    for (int64_t c = 0; c < w; c++) sum[c] = 1.0 / sum[c];
    for (int64_t r = 0; r < n; r++)
        for (int64_t c = 0; c < w; c++) y[r * inner + c] = (float)((double)y[r * inner + c] * sum[c]);
}

/* The size of dims before / after dim, for the [outer, n, inner] layout (a 0-d tensor is [1, 1, 1]). */
static void lanes(const cn_tensor *t, int dim, int64_t *outer, int64_t *n, int64_t *inner) {
    *outer = *inner = 1;
    *n = t->ndim ? t->shape[dim] : 1;
    for (int d = 0; d < dim; d++) *outer *= t->shape[d];
    for (int d = dim + 1; d < t->ndim; d++) *inner *= t->shape[d];
}

static void softmax_kernel(const float *x, float *y, int64_t outer, int64_t n, int64_t inner, bool log_out) {
    bool par = outer * n * inner >= PARALLEL_MIN;
    if (inner == 1) {
#pragma omp parallel for schedule(static) if (par && outer > 1)
        for (int64_t o = 0; o < outer; o++) softmax_row(x + o * n, y + o * n, n, log_out);
        return;
    }
    int64_t ntiles = (inner + TILE - 1) / TILE, total = outer * ntiles;
#pragma omp parallel for schedule(static) if (par && total > 1)
    for (int64_t t = 0; t < total; t++) {
        int64_t o = t / ntiles, i0 = t % ntiles * TILE, w = inner - i0 < TILE ? inner - i0 : TILE;
        size_t off = (size_t)(o * n * inner + i0);
        softmax_tile(x + off, y + off, n, inner, w, log_out);
    }
}

static cn_tensor *softmax_forward(const cn_tensor *x, int dim, bool log_out, int *wrapped, cn_error *err) {
    const char *name = log_out ? "log_softmax" : "softmax";
    int d = cn_wrap_dim(dim, x->ndim ? x->ndim : 1, name, err); /* a 0-d tensor takes dim 0 or -1 */
    if (d < 0) return NULL;
    *wrapped = d;
    cn_tensor *xc = cn_contiguous((cn_tensor *)x, err);
    cn_tensor *y = xc ? cn_empty(x->ndim, x->shape, err) : NULL;
    if (!y) {
        cn_release(xc);
        return NULL;
    }
    int64_t outer, n, inner;
    lanes(x, d, &outer, &n, &inner);
    if (cn_numel(y)) softmax_kernel(cn_data(xc), cn_data(y), outer, n, inner, log_out);
    cn_release(xc);
    return y;
}

/* ---- backward ------------------------------------------------------------------------------ */

/* One lane with stride `inner`: softmax gx = y (g - sum g y); log_softmax gx = g - exp(y) sum g. */
static void softmax_grad_lane(const float *y, const float *g, float *gx, int64_t n, int64_t inner, bool log_out) {
    double acc = 0.0;
    if (log_out) {
        for (int64_t r = 0; r < n; r++) acc += g[r * inner];
        for (int64_t r = 0; r < n; r++)
            gx[r * inner] = (float)((double)g[r * inner] - exp((double)y[r * inner]) * acc);
    } else {
        for (int64_t r = 0; r < n; r++) acc += (double)g[r * inner] * y[r * inner];
        for (int64_t r = 0; r < n; r++)
            gx[r * inner] = (float)((double)y[r * inner] * ((double)g[r * inner] - acc));
    }
}

/* As softmax_grad_lane over lanes [i0, i0 + w) of one outer block. */
static void softmax_grad_tile(const float *y, const float *g, float *gx, int64_t n, int64_t inner, int64_t w,
                              bool log_out) {
    double acc[TILE];
    for (int64_t c = 0; c < w; c++) acc[c] = 0.0;
    for (int64_t r = 0; r < n; r++)
        for (int64_t c = 0; c < w; c++)
            acc[c] += log_out ? (double)g[r * inner + c] : (double)g[r * inner + c] * y[r * inner + c];
    for (int64_t r = 0; r < n; r++)
        for (int64_t c = 0; c < w; c++) {
            size_t i = (size_t)(r * inner + c);
            gx[i] = (float)(log_out ? (double)g[i] - exp((double)y[i]) * acc[c]
                                    : (double)y[i] * ((double)g[i] - acc[c]));
        }
}

struct softmax_args {
    int dim;      /* wrapped */
    bool log_out; /* log_softmax */
};
enum { SOFTMAX_SAVED_Y };

static int softmax_backward(cn_node *node, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    const struct softmax_args *args = CN_NODE_ARGS(node, struct softmax_args);
    const cn_tensor *y = node->saved[SOFTMAX_SAVED_Y];
    bool log_out = args->log_out;
    cn_tensor *gc = cn_contiguous((cn_tensor *)g, err);
    cn_tensor *yc = gc ? cn_contiguous((cn_tensor *)y, err) : NULL;
    cn_tensor *gx = yc ? cn_empty(y->ndim, y->shape, err) : NULL;
    if (!gx) {
        cn_release(gc), cn_release(yc);
        return -1;
    }
    int64_t outer, n, inner;
    lanes(y, args->dim, &outer, &n, &inner);
    const float *py = cn_data(yc), *pg = cn_data(gc);
    float *px = cn_data(gx);
    bool par = outer * n * inner >= PARALLEL_MIN;
    if (inner == 1) {
#pragma omp parallel for schedule(static) if (par && outer > 1)
        for (int64_t o = 0; o < outer; o++) softmax_grad_lane(py + o * n, pg + o * n, px + o * n, n, 1, log_out);
    } else {
        int64_t ntiles = (inner + TILE - 1) / TILE, total = outer * ntiles;
#pragma omp parallel for schedule(static) if (par && total > 1)
        for (int64_t t = 0; t < total; t++) {
            int64_t o = t / ntiles, i0 = t % ntiles * TILE, w = inner - i0 < TILE ? inner - i0 : TILE;
            size_t off = (size_t)(o * n * inner + i0);
            softmax_grad_tile(py + off, pg + off, px + off, n, inner, w, log_out);
        }
    }
    cn_release(gc), cn_release(yc);
    gi[0] = gx;
    return 0;
}

/* The recorded backward (create_graph), with y recomputed by the recording op:
 *   softmax:      dx = y (g - sum(g y))
 *   log_softmax:  dx = g - exp(y) sum(g)      (sums along dim, kept) */
static int softmax_backward_graph(cn_node *node, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    const struct softmax_args *args = CN_NODE_ARGS(node, struct softmax_args);
    int dim = args->dim;
    cn_tensor *x = node->inputs[0];
    cn_tensor *y = args->log_out ? cn_log_softmax(x, dim, err) : cn_softmax(x, dim, err);
    cn_tensor *gy = y && !args->log_out ? cn_binary(CN_MUL, g, y, err) : NULL;
    cn_tensor *total = y ? cn_sum(args->log_out ? g : gy, 1, &dim, true, err) : NULL;
    cn_tensor *r = NULL;
    if (total && args->log_out) {
        cn_tensor *p = cn_unary(CN_EXP, y, err);
        cn_tensor *share = p ? cn_binary(CN_MUL, p, total, err) : NULL;
        r = share ? cn_binary(CN_SUB, g, share, err) : NULL;
        cn_release(p), cn_release(share);
    } else if (total) {
        cn_tensor *centred = cn_binary(CN_SUB, g, total, err);
        r = centred ? cn_binary(CN_MUL, y, centred, err) : NULL;
        cn_release(centred);
    }
    cn_release(y), cn_release(gy), cn_release(total);
    return (gi[0] = r) ? 0 : -1;
}

static const cn_op_def op_softmax = {"softmax", softmax_backward, softmax_backward_graph};
static const cn_op_def op_log_softmax = {"log_softmax", softmax_backward, softmax_backward_graph};

static cn_tensor *softmax_op(const cn_tensor *x, int dim, bool log_out, cn_error *err) {
    cn_tensor *r;
    int wrapped = 0;
    CN_WITHOUT_GRAD(r = softmax_forward(x, dim, log_out, &wrapped, err));
    cn_node *node;
    cn_tensor *in = (cn_tensor *)x;
    r = cn_record_result(r, log_out ? &op_log_softmax : &op_softmax, 1, &in, &node, err);
    if (node) {
        *CN_NODE_ARGS(node, struct softmax_args) = (struct softmax_args){.dim = wrapped, .log_out = log_out};
        cn_node_save(node, SOFTMAX_SAVED_Y, r);
    }
    return r;
}

cn_tensor *cn_softmax(const cn_tensor *x, int dim, cn_error *err) { return softmax_op(x, dim, false, err); }

cn_tensor *cn_log_softmax(const cn_tensor *x, int dim, cn_error *err) { return softmax_op(x, dim, true, err); }
