/* ops_norm.c — group, instance, layer and batch normalisation, forward and backward.
 *
 * Every one normalises a set of elements with its own statistics (PyTorch's formulas):
 *
 *   mean = Σ x / M,  var = Σ (x - mean)² / M  (biased),  rstd = 1 / sqrt(var + eps)
 *   y    = (x - mean) · rstd · w + b
 *
 * with Σ accumulated in double in one pass over d = x - K, K the set's first element (the
 * shifted-data algorithm): mean = K + Σd/M, var = Σd²/M - (Σd/M)². Its cancellation costs var a
 * relative error of about ((K - mean)/σ)² ≤ M - 1 double ulps (no element lies further than
 * σ·sqrt(M - 1) from the mean): nothing at float32 precision, and x is read once, not twice.
 * With g = dL/dy and x̂ = (x - mean) · rstd, the backward closed forms
 * per set of M elements are
 *
 *   dx = rstd · (g·w - Σ(g·w) / M - x̂ · Σ(g·w·x̂) / M)
 *   dw = Σ g·x̂ (over every set sharing that weight),  db = Σ g
 *
 * and reuse the mean and rstd saved by the forward. The mean is kept as a pair of floats (high +
 * low part) and x - mean computed as (x - high) - low, so a large mean (|mean| ≫ σ) costs no
 * precision; Σ g·(x - mean) is accumulated directly around it, in double.
 *
 * Two kernels cover the four ops:
 *   rows: x is a sequence of contiguous rows, each normalised alone, viewed as [channels, inner]
 *         with one weight per channel — group norm (a row is one group of one sample: C/G
 *         channels × spatial), instance norm (one channel × spatial) and layer norm (a row is the
 *         normalised trailing block: channels = its numel, inner = 1, a weight per element).
 *         OpenMP over rows; stats, output and gradient of a row are computed while it is in cache.
 *   channels: x as [N, C, S] with statistics per channel over N and S — batch norm. OpenMP over
 *         channels (over chunks of channels when S = 1, so the loops stay unit-strided).
 */
#include "ops_norm.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "autograd.h"
#include "ops.h"
#include "parallel.h"
#include "vmath.h"

#define CHUNK 64      /* channels per task when batch norm reduces over rows (S = 1) */

/* ---- shared helpers ----------------------------------------------------------------------- */

/* *sum = Σ (p - shift), *sumsq = Σ (p - shift)² in double, one pass. */
static void moments(const float *p, int64_t n, double shift, double *sum, double *sumsq) {
    double s = 0.0, q = 0.0;
#pragma omp simd reduction(+ : s, q)
    for (int64_t i = 0; i < n; i++) {
        double d = (double)p[i] - shift;
        s += d;
        q += d * d;
    }
    *sum = s;
    *sumsq = q;
}

/* mean and biased variance of M elements from their shifted moments (see the top comment). */
static void mean_var(double shift, double sum, double sumsq, double M, double *mean, double *var) {
    double dm = sum / M, v = sumsq / M - dm * dm;
    *mean = shift + dm;
    *var = v > 0.0 ? v : 0.0;
}

/* *sg += Σ g, *sgx += Σ g · (x - center) */
static void sum_grad(const float *x, const float *g, int64_t n, double center, double *sg, double *sgx) {
    double a = 0.0, b = 0.0;
#pragma omp simd reduction(+ : a, b)
    for (int64_t i = 0; i < n; i++) {
        a += g[i];
        b += (double)g[i] * ((double)x[i] - center);
    }
    *sg += a;
    *sgx += b;
}

/* A float array of n copies of value (the stand-in for an absent weight or bias). */
static float *filled(int64_t n, float value, cn_error *err) {
    float *p = malloc((size_t)(n ? n : 1) * sizeof *p);
    if (!p) {
        cn_error_set(err, "norm: out of memory");
        return NULL;
    }
    for (int64_t i = 0; i < n; i++) p[i] = value;
    return p;
}

static int64_t numel_range(const cn_tensor *t, int from, int to) {
    int64_t n = 1;
    for (int d = from; d < to; d++) n *= t->shape[d];
    return n;
}

/* 0 when t (weight or bias of op) is 1-D with `size` elements; else fills err and returns -1. */
static int check_vector(const char *op, const char *what, const cn_tensor *t, int64_t size,
                        const cn_tensor *x, cn_error *err) {
    if (!t || (t->ndim == 1 && t->shape[0] == size)) return 0;
    char a[160], b[160];
    cn_error_set(err, "%s: %s of shape %s does not match the %lld channels of input %s (expected [%lld])",
                 op, what, cn_shape_str(a, sizeof a, t->ndim, t->shape), (long long)size,
                 cn_shape_str(b, sizeof b, x->ndim, x->shape), (long long)size);
    return -1;
}

/* ---- rows kernel: group / instance / layer norm ------------------------------------------- */

typedef struct row_geom {
    int64_t rows;     /* independent sets: N·G (group norm) or the leading numel (layer norm) */
    int64_t groups;   /* rows per sample: row r's first weight is (r mod groups) · channels */
    int64_t channels; /* weights per row: C/G channels, or the normalised numel (layer norm) */
    int64_t inner;    /* elements per channel (spatial numel; 1 for layer norm) */
} row_geom;

/* y, mean[2 · rows] (each row's mean as a float pair: high parts, then low parts) and rstd[rows]
 * from x; w and b have groups·channels entries. silu: y is SiLU of the normalised value, in the
 * same pass (sampling only: no node records it). */
static void rows_forward(const row_geom *gm, const float *x, const float *w, const float *b, double eps,
                         bool silu, float *y, float *mean, float *rstd) {
    const int64_t cpg = gm->channels, inner = gm->inner, len = cpg * inner;
#pragma omp parallel for schedule(static) if (gm->rows > 1 && gm->rows * len > PARALLEL_MIN)
    for (int64_t r = 0; r < gm->rows; r++) {
        const float *xr = x + r * len;
        float *yr = y + r * len;
        double sum, sumsq, mu, var;
        moments(xr, len, xr[0], &sum, &sumsq);
        mean_var(xr[0], sum, sumsq, (double)len, &mu, &var);
        double rs = 1.0 / sqrt(var + eps);
        const float m = (float)mu, ml = (float)(mu - m);
        mean[r] = m;
        mean[gm->rows + r] = ml;
        rstd[r] = (float)rs;
        const float *wr = w + (r % gm->groups) * cpg, *br = b + (r % gm->groups) * cpg;
        if (inner == 1) {
            const float rsf = (float)rs;
#pragma omp simd
            for (int64_t c = 0; c < cpg; c++) yr[c] = ((xr[c] - m) - ml) * (rsf * wr[c]) + br[c];
            if (silu)
#pragma omp simd
                for (int64_t c = 0; c < cpg; c++) yr[c] = cn_vsiluf(yr[c]);
        } else {
            for (int64_t c = 0; c < cpg; c++) {
                const float a = (float)(rs * wr[c]), shift = br[c];
                const float *xc = xr + c * inner;
                float *yc = yr + c * inner;
                if (silu) {
#pragma omp simd
                    for (int64_t s = 0; s < inner; s++) yc[s] = cn_vsiluf(((xc[s] - m) - ml) * a + shift);
                } else {
#pragma omp simd
                    for (int64_t s = 0; s < inner; s++) yc[s] = ((xc[s] - m) - ml) * a + shift;
                }
            }
        }
    }
}

/* dx (NULL: not wanted) and per-thread partial dw, db (acc[thread · affine + c], zeroed; NULL: not
 * wanted) from g, x and the saved statistics. */
static void rows_backward(const row_geom *gm, const float *x, const float *g, const float *w,
                          const float *mean, const float *rstd, float *dx, double *dw_acc, double *db_acc) {
    const int64_t cpg = gm->channels, inner = gm->inner, len = cpg * inner, affine = gm->groups * cpg;
#pragma omp parallel if (gm->rows > 1 && gm->rows * len > PARALLEL_MIN)
    {
        const int t = omp_get_thread_num();
        double *dwt = dw_acc ? dw_acc + t * affine : NULL, *dbt = db_acc ? db_acc + t * affine : NULL;
#pragma omp for schedule(static)
        for (int64_t r = 0; r < gm->rows; r++) {
            const float *xr = x + r * len, *gr = g + r * len;
            const int64_t c0 = (r % gm->groups) * cpg;
            const float *wr = w + c0;
            const float m = mean[r], ml = mean[gm->rows + r];
            const double md = (double)m + ml, rs = rstd[r];
            double sum1 = 0.0, sum2 = 0.0; /* Σ w·g, Σ w·g·(x - mean) over the row */
            if (inner == 1) {
#pragma omp simd reduction(+ : sum1, sum2)
                for (int64_t c = 0; c < cpg; c++) {
                    double wg = (double)wr[c] * gr[c];
                    sum1 += wg;
                    sum2 += wg * ((double)xr[c] - md);
                }
                if (dwt) {
                    double *dwr = dwt + c0;
#pragma omp simd
                    for (int64_t c = 0; c < cpg; c++) dwr[c] += (double)gr[c] * ((double)xr[c] - md) * rs;
                }
                if (dbt) {
                    double *dbr = dbt + c0;
#pragma omp simd
                    for (int64_t c = 0; c < cpg; c++) dbr[c] += gr[c];
                }
            } else {
                for (int64_t c = 0; c < cpg; c++) {
                    double sg = 0.0, sgx = 0.0;
                    sum_grad(xr + c * inner, gr + c * inner, inner, md, &sg, &sgx);
                    sum1 += wr[c] * sg;
                    sum2 += wr[c] * sgx;
                    if (dwt) dwt[c0 + c] += sgx * rs;
                    if (dbt) dbt[c0 + c] += sg;
                }
            }
            if (!dx) continue;
            /* dx = rstd·w·g + kx·(x - mean) + k0 */
            const float kx = (float)(-rs * rs * rs * sum2 / (double)len), k0 = (float)(-rs * sum1 / (double)len);
            float *dxr = dx + r * len;
            if (inner == 1) {
                const float rsf = rstd[r];
#pragma omp simd
                for (int64_t c = 0; c < cpg; c++) dxr[c] = rsf * wr[c] * gr[c] + kx * ((xr[c] - m) - ml) + k0;
            } else {
                for (int64_t c = 0; c < cpg; c++) {
                    const float a = (float)(rs * wr[c]);
                    const float *xc = xr + c * inner, *gc = gr + c * inner;
                    float *dxc = dxr + c * inner;
#pragma omp simd
                    for (int64_t s = 0; s < inner; s++) dxc[s] = a * gc[s] + kx * ((xc[s] - m) - ml) + k0;
                }
            }
        }
    }
}

/* ---- channels kernel: batch norm ---------------------------------------------------------- */

typedef struct chan_geom {
    int64_t batch, channels, inner; /* x as [N, C, S] */
} chan_geom;

enum { SUM_MOMENTS, SUM_GRAD };

/* Per channel c, over N and S: SUM_MOMENTS: out0 = Σ (x - center), out1 = Σ (x - center)²;
 * SUM_GRAD: out0 = Σ g, out1 = Σ g·(x - center). */
static void channel_sums(const chan_geom *gm, int mode, const float *x, const float *g, const double *center,
                         double *out0, double *out1) {
    const int64_t N = gm->batch, C = gm->channels, S = gm->inner;
    const bool par = N * C * S > PARALLEL_MIN;
    if (S > 1) {
#pragma omp parallel for schedule(static) if (par && C > 1)
        for (int64_t c = 0; c < C; c++) {
            double a = 0.0, b = 0.0;
            for (int64_t n = 0; n < N; n++) {
                const float *xp = x + (n * C + c) * S;
                if (mode == SUM_MOMENTS) {
                    double s1, s2;
                    moments(xp, S, center[c], &s1, &s2);
                    a += s1, b += s2;
                } else {
                    sum_grad(xp, g + (n * C + c) * S, S, center[c], &a, &b);
                }
            }
            out0[c] = a;
            out1[c] = b;
        }
        return;
    }
    /* S = 1: x is [N, C]; sum down the rows, CHUNK channels at a time, vectorised along a row */
    const int64_t nchunks = (C + CHUNK - 1) / CHUNK;
#pragma omp parallel for schedule(static) if (par && nchunks > 1)
    for (int64_t k = 0; k < nchunks; k++) {
        const int64_t c0 = k * CHUNK, len = C - c0 < CHUNK ? C - c0 : CHUNK;
        double a[CHUNK] = {0}, b[CHUNK] = {0};
        const double *ctr = center + c0;
        for (int64_t n = 0; n < N; n++) {
            const float *xr = x + n * C + c0;
            if (mode == SUM_MOMENTS) {
#pragma omp simd
                for (int64_t j = 0; j < len; j++) {
                    double d = (double)xr[j] - ctr[j];
                    a[j] += d;
                    b[j] += d * d;
                }
            } else {
                const float *gr = g + n * C + c0;
#pragma omp simd
                for (int64_t j = 0; j < len; j++) {
                    a[j] += gr[j];
                    b[j] += (double)gr[j] * ((double)xr[j] - ctr[j]);
                }
            }
        }
        for (int64_t j = 0; j < len; j++) {
            out0[c0 + j] = a[j];
            out1[c0 + j] = b[j];
        }
    }
}

/* out = kx[c]·(x - mean[c]) + kg[c]·g + k0[c] per channel, mean[c] the float pair m[c] + m[C + c];
 * x (with m, kx) or g (with kg) may be NULL. */
static void channel_apply(const chan_geom *gm, const float *x, const float *m, const float *kx, const float *g,
                          const float *kg, const float *k0, float *out) {
    const int64_t N = gm->batch, C = gm->channels, S = gm->inner;
    const bool par = N * C * S > PARALLEL_MIN;
    if (S > 1) {
#pragma omp parallel for schedule(static) if (par)
        for (int64_t nc = 0; nc < N * C; nc++) {
            const int64_t c = nc % C;
            const float *xp = x ? x + nc * S : NULL, *gp = g ? g + nc * S : NULL;
            float *op = out + nc * S;
            const float k0c = k0[c];
            if (xp && gp) {
                const float mc = m[c], mlc = m[C + c], kxc = kx[c], kgc = kg[c];
#pragma omp simd
                for (int64_t s = 0; s < S; s++) op[s] = kxc * ((xp[s] - mc) - mlc) + kgc * gp[s] + k0c;
            } else if (xp) {
                const float mc = m[c], mlc = m[C + c], kxc = kx[c];
#pragma omp simd
                for (int64_t s = 0; s < S; s++) op[s] = kxc * ((xp[s] - mc) - mlc) + k0c;
            } else {
                const float kgc = kg[c];
#pragma omp simd
                for (int64_t s = 0; s < S; s++) op[s] = kgc * gp[s] + k0c;
            }
        }
        return;
    }
#pragma omp parallel for schedule(static) if (par)
    for (int64_t n = 0; n < N; n++) {
        const float *xr = x ? x + n * C : NULL, *gr = g ? g + n * C : NULL;
        float *orow = out + n * C;
        if (xr && gr) {
#pragma omp simd
            for (int64_t c = 0; c < C; c++) orow[c] = kx[c] * ((xr[c] - m[c]) - m[C + c]) + kg[c] * gr[c] + k0[c];
        } else if (xr) {
#pragma omp simd
            for (int64_t c = 0; c < C; c++) orow[c] = kx[c] * ((xr[c] - m[c]) - m[C + c]) + k0[c];
        } else {
#pragma omp simd
            for (int64_t c = 0; c < C; c++) orow[c] = kg[c] * gr[c] + k0[c];
        }
    }
}

/* ---- the norm node: args, backward, recording --------------------------------------------- */
/* One node type for all four ops; inputs: x, then weight and bias when given. */

enum { KIND_ROWS, KIND_CHANNELS };
struct norm_args {
    int kind;                 /* KIND_ROWS (group / instance / layer) or KIND_CHANNELS (batch) */
    int weight_slot;          /* input index of weight, -1 when absent */
    int bias_slot;            /* input index of bias, -1 when absent */
    bool training;            /* batch norm: batch statistics (else the running ones) */
    double eps;               /* rows: for the recorded backward, which recomputes the statistics */
    union {
        row_geom rows;        /* KIND_ROWS */
        chan_geom channels;   /* KIND_CHANNELS */
    } geom;
};
enum {
    NORM_SAVED_X,      /* contiguous */
    NORM_SAVED_WEIGHT, /* contiguous, or NULL */
    NORM_SAVED_MEAN,   /* float pairs [2, sets]: high parts, then the low parts mean - high */
    NORM_SAVED_RSTD,   /* [sets] */
};

/* Sums the per-thread partials acc[t · n + i] into a float tensor's n elements. */
static void reduce_partials(const double *acc, int nthreads, int64_t n, cn_tensor *out) {
    float *p = cn_data(out);
    for (int64_t i = 0; i < n; i++) {
        double s = 0.0;
        for (int t = 0; t < nthreads; t++) s += acc[t * n + i];
        p[i] = (float)s;
    }
}

static int rows_grads(cn_node *nd, const float *g, float *w, cn_tensor *dx, cn_tensor *dw, cn_tensor *db,
                      cn_error *err) {
    const row_geom *gm = &CN_NODE_ARGS(nd, struct norm_args)->geom.rows;
    const int64_t affine = gm->groups * gm->channels;
    const int nthreads = omp_get_max_threads();
    double *acc = NULL;
    if (dw || db) {
        acc = calloc((size_t)nthreads * (size_t)affine * 2 + 1, sizeof *acc);
        if (!acc) {
            cn_error_set(err, "out of memory");
            return -1;
        }
    }
    double *dw_acc = dw ? acc : NULL, *db_acc = db ? acc + (size_t)nthreads * affine : NULL;
    rows_backward(gm, cn_data(nd->saved[NORM_SAVED_X]), g, w, cn_data(nd->saved[NORM_SAVED_MEAN]),
                  cn_data(nd->saved[NORM_SAVED_RSTD]), dx ? cn_data(dx) : NULL, dw_acc, db_acc);
    if (dw) reduce_partials(dw_acc, nthreads, affine, dw);
    if (db) reduce_partials(db_acc, nthreads, affine, db);
    free(acc);
    return 0;
}

/* Batch norm: in training mean and rstd are the batch's and dx has the two reduction terms; in
 * eval they are constants and dx = w·rstd·g. */
static int channel_grads(cn_node *nd, const float *g, const float *w, cn_tensor *dx, cn_tensor *dw,
                         cn_tensor *db, cn_error *err) {
    const struct norm_args *args = CN_NODE_ARGS(nd, struct norm_args);
    const chan_geom *gm = &args->geom.channels;
    const bool training = args->training;
    const int64_t C = gm->channels;
    const double M = (double)(gm->batch * gm->inner);
    const float *x = cn_data(nd->saved[NORM_SAVED_X]), *mean = cn_data(nd->saved[NORM_SAVED_MEAN]),
                *rstd = cn_data(nd->saved[NORM_SAVED_RSTD]);
    double *buf = malloc((size_t)C * 3 * sizeof *buf);
    float *coef = malloc((size_t)C * 3 * sizeof *coef);
    if (!buf || !coef) {
        free(buf), free(coef);
        cn_error_set(err, "out of memory");
        return -1;
    }
    double *center = buf, *sg = buf + C, *sgx = buf + 2 * C;
    for (int64_t c = 0; c < C; c++) center[c] = (double)mean[c] + mean[C + c];
    if (training || dw || db) channel_sums(gm, SUM_GRAD, x, g, center, sg, sgx);
    if (dx) {
        float *kx = coef, *kg = coef + C, *k0 = coef + 2 * C;
        for (int64_t c = 0; c < C; c++) {
            double rs = rstd[c], a = w[c] * rs;
            kg[c] = (float)a;
            kx[c] = training ? (float)(-a * rs * rs * sgx[c] / M) : 0.0f;
            k0[c] = training ? (float)(-a * sg[c] / M) : 0.0f;
        }
        channel_apply(gm, training ? x : NULL, mean, kx, g, kg, k0, cn_data(dx));
    }
    if (dw)
        for (int64_t c = 0; c < C; c++) cn_data(dw)[c] = (float)(sgx[c] * rstd[c]);
    if (db)
        for (int64_t c = 0; c < C; c++) cn_data(db)[c] = (float)sg[c];
    free(buf), free(coef);
    return 0;
}

static int norm_backward(cn_node *nd, const cn_tensor *gout, cn_tensor **gi, cn_error *err) {
    const struct norm_args *args = CN_NODE_ARGS(nd, struct norm_args);
    const int wslot = args->weight_slot, bslot = args->bias_slot;
    const cn_tensor *x = nd->saved[NORM_SAVED_X];
    cn_tensor *g = NULL, *dx = NULL, *dw = NULL, *db = NULL;
    float *ones = NULL;
    int status = -1;
    if (!(g = cn_contiguous((cn_tensor *)gout, err))) goto done;
    if (nd->inputs[0]->requires_grad && !(dx = cn_empty(x->ndim, x->shape, err))) goto done;
    if (wslot >= 0 && nd->inputs[wslot]->requires_grad &&
        !(dw = cn_empty(nd->inputs[wslot]->ndim, nd->inputs[wslot]->shape, err)))
        goto done;
    if (bslot >= 0 && nd->inputs[bslot]->requires_grad &&
        !(db = cn_empty(nd->inputs[bslot]->ndim, nd->inputs[bslot]->shape, err)))
        goto done;
    float *w;
    if (nd->saved[NORM_SAVED_WEIGHT]) {
        w = cn_data(nd->saved[NORM_SAVED_WEIGHT]);
    } else {
        int64_t affine = args->kind == KIND_ROWS ? args->geom.rows.groups * args->geom.rows.channels
                                                 : args->geom.channels.channels;
        if (!(ones = filled(affine, 1.0f, err))) goto done;
        w = ones;
    }
    if (cn_numel(x) == 0) { /* nothing flows; the affine gradients are zero */
        if (dx) cn_fill_(dx, 0.0f);
        if (dw) cn_fill_(dw, 0.0f);
        if (db) cn_fill_(db, 0.0f);
        status = 0;
    } else if (args->kind == KIND_ROWS) {
        status = rows_grads(nd, cn_data(g), w, dx, dw, db, err);
    } else {
        status = channel_grads(nd, cn_data(g), w, dx, dw, db, err);
    }
done:
    free(ones);
    cn_release(g);
    if (status) {
        cn_release(dx), cn_release(dw), cn_release(db);
        return -1;
    }
    gi[0] = dx;
    if (dw) gi[wslot] = dw;
    if (db) gi[bslot] = db;
    return 0;
}

/* The recorded backward of group / instance / layer norm (create_graph), from x viewed as
 * [rows, M] with the statistics recomputed by recording ops:
 *   xhat = (x - mean) rstd,  gh = g w,  dx = rstd (gh - mean(gh) - xhat mean(gh xhat)),
 *   dw = sum of g xhat,  db = sum of g  (over all but the weight's dims).
 * Group and instance norm scale per channel (dim 2 of x): w is viewed as [C, 1, ...] and the
 * sums run over the other dims; layer norm's weight has x's trailing shape, and the engine sums
 * its gradient down to it. Batch norm has none yet. */
static int norm_backward_graph(cn_node *nd, const cn_tensor *gout, cn_tensor **gi, cn_error *err) {
    const struct norm_args *args = CN_NODE_ARGS(nd, struct norm_args);
    if (args->kind != KIND_ROWS) {
        cn_error_set(err, "batch_norm has no differentiable backward yet (create_graph)");
        return -1;
    }
    const row_geom *gm = &args->geom.rows;
    cn_tensor *x = nd->inputs[0], *g = (cn_tensor *)gout;
    cn_tensor *w = args->weight_slot >= 0 ? nd->inputs[args->weight_slot] : NULL;
    cn_tensor *b = args->bias_slot >= 0 ? nd->inputs[args->bias_slot] : NULL;
    bool per_channel = !(gm->groups == 1 && gm->inner == 1);
    int64_t wshape[CN_MAX_DIMS], rows_shape[2] = {gm->rows, -1};
    int sum_dims[CN_MAX_DIMS], n_sum = 0, one = 1;
    for (int d = 0; d < x->ndim; d++) {
        wshape[d] = d == 1 ? x->shape[1] : 1;
        if (d != 1) sum_dims[n_sum++] = d;
    }
    int status = -1;
    cn_tensor *xr = NULL, *mean = NULL, *dev = NULL, *var = NULL, *rstd = NULL, *xhat_r = NULL, *wb = NULL;
    cn_tensor *gh = NULL, *ghr = NULL, *m1 = NULL, *m2 = NULL, *dx = NULL;
    /* the statistics, recorded */
    if (!(xr = cn_reshape(x, 2, rows_shape, err)) || !(mean = cn_mean(xr, 1, &one, true, err)) ||
        !(dev = cn_binary(CN_SUB, xr, mean, err)))
        goto done;
    cn_tensor *sq = cn_unary(CN_SQUARE, dev, err);
    var = sq ? cn_mean(sq, 1, &one, true, err) : NULL;
    cn_release(sq);
    cn_tensor *shifted = var ? cn_binary_scalar(CN_ADD, var, (float)args->eps, false, err) : NULL;
    rstd = shifted ? cn_unary(CN_RSQRT, shifted, err) : NULL;
    cn_release(shifted);
    if (!rstd || !(xhat_r = cn_binary(CN_MUL, dev, rstd, err))) goto done;
    /* gh = g w, in rows */
    if (w && !(wb = per_channel ? cn_reshape(w, x->ndim, wshape, err) : cn_retain(w))) goto done;
    if (!(gh = wb ? cn_binary(CN_MUL, g, wb, err) : cn_retain(g)) || !(ghr = cn_reshape(gh, 2, rows_shape, err)))
        goto done;
    if (x->requires_grad) {
        cn_tensor *prod = cn_binary(CN_MUL, ghr, xhat_r, err);
        m2 = prod ? cn_mean(prod, 1, &one, true, err) : NULL;
        cn_release(prod);
        if (!m2 || !(m1 = cn_mean(ghr, 1, &one, true, err))) goto done;
        cn_tensor *xm2 = cn_binary(CN_MUL, xhat_r, m2, err);
        dx = cn_binary_drop(CN_MUL, cn_binary_drop(CN_SUB, cn_binary_drop(CN_SUB, cn_retain(ghr), m1, err), xm2, err), rstd, err);
        cn_release(xm2);
        if (!dx || !(gi[0] = cn_reshape(dx, x->ndim, x->shape, err))) goto done;
    }
    if (w && w->requires_grad) {
        cn_tensor *xhat = cn_reshape(xhat_r, x->ndim, x->shape, err);
        cn_tensor *gx = xhat ? cn_binary(CN_MUL, g, xhat, err) : NULL;
        cn_release(xhat);
        gi[args->weight_slot] = !gx ? NULL : per_channel ? cn_sum(gx, n_sum, sum_dims, false, err) : cn_retain(gx);
        cn_release(gx);
        if (!gi[args->weight_slot]) goto done;
    }
    if (b && b->requires_grad &&
        !(gi[args->bias_slot] = per_channel ? cn_sum(g, n_sum, sum_dims, false, err) : cn_retain(g)))
        goto done;
    status = 0;
done:
    cn_release(xr), cn_release(mean), cn_release(dev), cn_release(var), cn_release(rstd), cn_release(xhat_r);
    cn_release(wb), cn_release(gh), cn_release(ghr), cn_release(m1), cn_release(m2), cn_release(dx);
    return status;
}

static const cn_op_def op_norm = {"norm", norm_backward, norm_backward_graph};

/* Records the node of a norm result y over x, weight, bias (either may be NULL) and saves what
 * the backward needs; args gives kind, geometry and training (the slots are filled here).
 * Returns y, or NULL (y released). */
static cn_tensor *record_norm(cn_tensor *y, struct norm_args args, const cn_tensor *x, const cn_tensor *weight,
                              const cn_tensor *bias, cn_tensor *xc, cn_tensor *wc, cn_tensor *mean,
                              cn_tensor *rstd, cn_error *err) {
    cn_tensor *ins[3];
    int n = 0, wslot = -1, bslot = -1;
    ins[n++] = (cn_tensor *)x;
    if (weight) {
        wslot = n;
        ins[n++] = (cn_tensor *)weight;
    }
    if (bias) {
        bslot = n;
        ins[n++] = (cn_tensor *)bias;
    }
    cn_node *node;
    y = cn_record_result(y, &op_norm, n, ins, &node, err);
    if (node) {
        args.weight_slot = wslot;
        args.bias_slot = bslot;
        *CN_NODE_ARGS(node, struct norm_args) = args;
        cn_node_save(node, NORM_SAVED_X, xc);
        cn_node_save(node, NORM_SAVED_WEIGHT, wc);
        cn_node_save(node, NORM_SAVED_MEAN, mean);
        cn_node_save(node, NORM_SAVED_RSTD, rstd);
    }
    return y;
}

/* ---- group / instance / layer norm -------------------------------------------------------- */

/* Runs the rows kernel on x with geometry gm (weight and bias with groups·channels elements,
 * already checked) and records the node; silu (only where no node is recorded) fuses SiLU. */
static cn_tensor *rows_norm(const cn_tensor *x, const row_geom *gm, const cn_tensor *weight, const cn_tensor *bias,
                            double eps, bool silu, cn_error *err) {
    cn_tensor *xc = NULL, *wc = NULL, *bc = NULL, *y = NULL, *mean = NULL, *rstd = NULL;
    float *ones = NULL, *zeros = NULL;
    const int64_t affine = gm->groups * gm->channels, nrows[1] = {gm->rows}, pairs[2] = {2, gm->rows};
    bool ok = false;
    bool mode = cn_set_grad_enabled(false);
    if (!(xc = cn_contiguous((cn_tensor *)x, err))) goto done;
    if (weight && !(wc = cn_contiguous((cn_tensor *)weight, err))) goto done;
    if (bias && !(bc = cn_contiguous((cn_tensor *)bias, err))) goto done;
    if (!weight && !(ones = filled(affine, 1.0f, err))) goto done;
    if (!bias && !(zeros = filled(affine, 0.0f, err))) goto done;
    if (!(y = cn_empty(x->ndim, x->shape, err))) goto done;
    if (!(mean = cn_empty(2, pairs, err)) || !(rstd = cn_empty(1, nrows, err))) goto done;
    if (cn_numel(x))
        rows_forward(gm, cn_data(xc), wc ? cn_data(wc) : ones, bc ? cn_data(bc) : zeros, eps, silu, cn_data(y),
                     cn_data(mean), cn_data(rstd));
    ok = true;
done:
    cn_set_grad_enabled(mode);
    free(ones), free(zeros);
    if (ok) {
        const struct norm_args args = {.kind = KIND_ROWS, .eps = eps, .geom.rows = *gm};
        y = record_norm(y, args, x, weight, bias, xc, wc, mean, rstd, err);
    } else {
        cn_release(y);
        y = NULL;
    }
    cn_release(xc), cn_release(wc), cn_release(bc), cn_release(mean), cn_release(rstd);
    return y;
}

/* group_norm's checks; its geometry in *gm. */
static int group_norm_geom(const cn_tensor *x, int64_t num_groups, const cn_tensor *weight, const cn_tensor *bias,
                           row_geom *gm, cn_error *err) {
    char a[160];
    if (x->ndim < 2) {
        cn_error_set(err, "group_norm: expected an input of shape [N, C, *] (at least 2 dims), got %s",
                     cn_shape_str(a, sizeof a, x->ndim, x->shape));
        return -1;
    }
    const int64_t C = x->shape[1];
    if (num_groups <= 0 || C % num_groups != 0) {
        cn_error_set(err, "group_norm: %lld channels cannot be split into %lld groups (input %s)",
                     (long long)C, (long long)num_groups, cn_shape_str(a, sizeof a, x->ndim, x->shape));
        return -1;
    }
    if (check_vector("group_norm", "weight", weight, C, x, err) || check_vector("group_norm", "bias", bias, C, x, err))
        return -1;
    *gm = (row_geom){x->shape[0] * num_groups, num_groups, C / num_groups, numel_range(x, 2, x->ndim)};
    return 0;
}

cn_tensor *cn_group_norm(const cn_tensor *x, int64_t num_groups, const cn_tensor *weight, const cn_tensor *bias,
                         double eps, cn_error *err) {
    row_geom gm;
    return group_norm_geom(x, num_groups, weight, bias, &gm, err) ? NULL : rows_norm(x, &gm, weight, bias, eps, false, err);
}

cn_tensor *cn_group_norm_silu(const cn_tensor *x, int64_t num_groups, const cn_tensor *weight, const cn_tensor *bias,
                              double eps, cn_error *err) {
    row_geom gm;
    if (group_norm_geom(x, num_groups, weight, bias, &gm, err)) return NULL;
    const cn_tensor *ins[3] = {x};
    int n = 1;
    if (weight) ins[n++] = weight;
    if (bias) ins[n++] = bias;
    if (!cn_needs_grad(n, ins)) return rows_norm(x, &gm, weight, bias, eps, true, err);
    cn_tensor *y = rows_norm(x, &gm, weight, bias, eps, false, err); /* recorded: two nodes */
    cn_tensor *out = y ? cn_unary(CN_SILU, y, err) : NULL;
    cn_release(y);
    return out;
}

cn_tensor *cn_instance_norm(const cn_tensor *x, const cn_tensor *weight, const cn_tensor *bias, double eps,
                            cn_error *err) {
    char a[160];
    if (x->ndim < 3 || numel_range(x, 2, x->ndim) <= 1) {
        cn_error_set(err, "instance_norm: expected an input of shape [N, C, *] with more than 1 spatial element, got %s",
                     cn_shape_str(a, sizeof a, x->ndim, x->shape));
        return NULL;
    }
    const int64_t C = x->shape[1];
    if (check_vector("instance_norm", "weight", weight, C, x, err) ||
        check_vector("instance_norm", "bias", bias, C, x, err))
        return NULL;
    const row_geom gm = {x->shape[0] * C, C, 1, numel_range(x, 2, x->ndim)};
    return rows_norm(x, &gm, weight, bias, eps, false, err);
}

cn_tensor *cn_layer_norm(const cn_tensor *x, int n_normalized_dims, const cn_tensor *weight, const cn_tensor *bias,
                         double eps, cn_error *err) {
    char a[160], b[160], c[160];
    if (n_normalized_dims < 1 || n_normalized_dims > x->ndim) {
        cn_error_set(err, "layer_norm: cannot normalise over the last %d dims of a %d-D input %s", n_normalized_dims,
                     x->ndim, cn_shape_str(a, sizeof a, x->ndim, x->shape));
        return NULL;
    }
    const int lead = x->ndim - n_normalized_dims;
    const cn_tensor *affine[2] = {weight, bias};
    for (int i = 0; i < 2; i++) {
        const cn_tensor *t = affine[i];
        if (t && !(t->ndim == n_normalized_dims &&
                   memcmp(t->shape, x->shape + lead, (size_t)n_normalized_dims * sizeof *t->shape) == 0)) {
            cn_error_set(err, "layer_norm: %s of shape %s does not match the normalized shape %s of input %s",
                         i ? "bias" : "weight", cn_shape_str(a, sizeof a, t->ndim, t->shape),
                         cn_shape_str(b, sizeof b, n_normalized_dims, x->shape + lead),
                         cn_shape_str(c, sizeof c, x->ndim, x->shape));
            return NULL;
        }
    }
    const row_geom gm = {numel_range(x, 0, lead), 1, numel_range(x, lead, x->ndim), 1};
    return rows_norm(x, &gm, weight, bias, eps, false, err);
}

/* ---- batch norm --------------------------------------------------------------------------- */

static float read1(const cn_tensor *t, int64_t i) { return cn_data(t)[i * t->stride[0]]; }

cn_tensor *cn_batch_norm(const cn_tensor *x, cn_tensor *running_mean, cn_tensor *running_var,
                         const cn_tensor *weight, const cn_tensor *bias, bool training, double momentum,
                         double eps, cn_error *err) {
    char a[160];
    if (x->ndim < 2) {
        cn_error_set(err, "batch_norm: expected an input of shape [N, C, *] (at least 2 dims), got %s",
                     cn_shape_str(a, sizeof a, x->ndim, x->shape));
        return NULL;
    }
    const int64_t C = x->shape[1];
    const chan_geom gm = {x->shape[0], C, numel_range(x, 2, x->ndim)};
    const int64_t M = gm.batch * gm.inner;
    if (check_vector("batch_norm", "weight", weight, C, x, err) || check_vector("batch_norm", "bias", bias, C, x, err) ||
        check_vector("batch_norm", "running_mean", running_mean, C, x, err) ||
        check_vector("batch_norm", "running_var", running_var, C, x, err))
        return NULL;
    if (!training && (!running_mean || !running_var)) {
        cn_error_set(err, "batch_norm: running_mean and running_var are required in eval mode (training false)");
        return NULL;
    }
    if (training && M <= 1) {
        cn_error_set(err, "batch_norm: expected more than 1 value per channel when training, got input %s",
                     cn_shape_str(a, sizeof a, x->ndim, x->shape));
        return NULL;
    }
    cn_tensor *xc = NULL, *wc = NULL, *bc = NULL, *y = NULL, *mean = NULL, *rstd = NULL;
    double *stats = NULL;
    float *coef = NULL;
    const int64_t cshape[1] = {C}, pairs[2] = {2, C};
    bool ok = false;
    bool mode = cn_set_grad_enabled(false);
    if (!(xc = cn_contiguous((cn_tensor *)x, err))) goto done;
    if (weight && !(wc = cn_contiguous((cn_tensor *)weight, err))) goto done;
    if (bias && !(bc = cn_contiguous((cn_tensor *)bias, err))) goto done;
    if (!(y = cn_empty(x->ndim, x->shape, err))) goto done;
    if (!(mean = cn_empty(2, pairs, err)) || !(rstd = cn_empty(1, cshape, err))) goto done;
    stats = malloc((size_t)(C ? C : 1) * 4 * sizeof *stats);
    coef = malloc((size_t)(C ? C : 1) * 2 * sizeof *coef);
    if (!stats || !coef) {
        cn_error_set(err, "batch_norm: out of memory");
        goto done;
    }
    double *mu = stats, *var = stats + C; /* var: biased in training, the running one in eval */
    if (training) {
        double *sum = stats + 2 * C, *sumsq = stats + 3 * C;
        for (int64_t c = 0; c < C; c++) mu[c] = cn_data(xc)[c * gm.inner]; /* shifts: the channel's first x */
        channel_sums(&gm, SUM_MOMENTS, cn_data(xc), NULL, mu, sum, sumsq);
        for (int64_t c = 0; c < C; c++) mean_var(mu[c], sum[c], sumsq[c], (double)M, &mu[c], &var[c]);
    } else {
        for (int64_t c = 0; c < C; c++) mu[c] = read1(running_mean, c), var[c] = read1(running_var, c);
    }
    float *scale = coef, *shift = coef + C;
    for (int64_t c = 0; c < C; c++) {
        double rs = 1.0 / sqrt(var[c] + eps);
        cn_data(mean)[c] = (float)mu[c];
        cn_data(mean)[C + c] = (float)(mu[c] - (float)mu[c]);
        cn_data(rstd)[c] = (float)rs;
        scale[c] = (float)(rs * (wc ? cn_data(wc)[c] : 1.0f));
        shift[c] = bc ? cn_data(bc)[c] : 0.0f;
    }
    if (M > 0) channel_apply(&gm, cn_data(xc), cn_data(mean), scale, NULL, NULL, shift, cn_data(y));
    if (training) { /* torch: running = (1 - momentum)·running + momentum·batch, var unbiased */
        for (int64_t c = 0; c < C; c++) {
            if (running_mean) {
                float *p = cn_data(running_mean) + c * running_mean->stride[0];
                *p = (float)(momentum * mu[c] + (1.0 - momentum) * *p);
            }
            if (running_var) {
                float *p = cn_data(running_var) + c * running_var->stride[0];
                *p = (float)(momentum * var[c] * (double)M / (double)(M - 1) + (1.0 - momentum) * *p);
            }
        }
    }
    ok = true;
done:
    cn_set_grad_enabled(mode);
    free(stats), free(coef);
    if (ok) {
        const struct norm_args args = {.kind = KIND_CHANNELS, .training = training, .geom.channels = gm};
        y = record_norm(y, args, x, weight, bias, xc, wc, mean, rstd, err);
    } else {
        cn_release(y);
        y = NULL;
    }
    cn_release(xc), cn_release(wc), cn_release(bc), cn_release(mean), cn_release(rstd);
    return y;
}
