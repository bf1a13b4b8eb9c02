/* ops_reduce.c — reductions: sum, mean, var, std, norm, max/min (with indices), argmax/argmin.
 *
 * Every reduction first lays its input out as a contiguous block [outer, red, inner]:
 *   - reduced dims adjacent (ignoring size-1 dims): cn_contiguous(t), no copy when t already is;
 *   - otherwise: permute the kept dims to the front, the reduced dims to the back, make contiguous
 *     (inner = 1).
 * Then each output element o*inner + i reduces x[(o*red + r)*inner + i] over r. With inner == 1 an
 * output reduces one contiguous row; with inner > 1 outputs are computed in tiles of TILE columns so
 * every step over r reads TILE adjacent floats.
 *
 * Accumulation is in double. Each output is reduced by one thread in a fixed order, and a single huge
 * row is split into a fixed number of chunks combined in order, so results never depend on the
 * number of threads.
 *
 *   mean = sum / N
 *   var  = sum (x - mean)^2 / max(0, N - correction)      (two passes, as torch; 0/0 gives NaN)
 *   norm = (sum |x|^p)^(1/p);  p = inf: max |x|;  p = -inf: min |x|;  p = 0: count of x != 0
 *   max/min: first occurrence wins; a NaN beats everything (the first NaN's index is returned).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "autograd.h"
#include "ops.h"
#include "parallel.h"

#define TILE 1024                /* columns per tile when inner > 1 (wide: fewer strided jumps) */
#define ROW_CHUNKS 64            /* a single long row is split into this many chunks */
#define ROW_PARALLEL_MIN 65536   /* rows shorter than this are never split */

/* ---- planning: validate dims, lay the input out as [outer, red, inner] --------------------- */

typedef struct reduce_plan {
    int out_ndim;
    int64_t out_shape[CN_MAX_DIMS];
    int64_t outer, red, inner;
    cn_tensor *src; /* contiguous; owned by the plan */
} reduce_plan;

/* Marks the reduced dims in mask (all when ndims == 0). A 0-d tensor accepts dim 0 and -1 (as
 * torch). Returns 0, or -1 with err naming fname, the dim and the shape. */
static int check_dims(const char *fname, const cn_tensor *t, int ndims, const int *dims,
                      bool *mask, cn_error *err) {
    char sbuf[160];
    int ndim = t->ndim;
    int range = ndim > 0 ? ndim : 1;
    for (int d = 0; d < CN_MAX_DIMS; d++) mask[d] = ndims == 0;
    if (ndims < 0 || (ndims > 0 && !dims)) {
        cn_error_set(err, "%s: invalid list of %d dims", fname, ndims);
        return -1;
    }
    bool seen[CN_MAX_DIMS] = {false};
    for (int j = 0; j < ndims; j++) {
        int d = dims[j];
        if (d < -range || d >= range) {
            cn_error_set(err, "%s: dim %d out of range for a %d-D tensor of shape %s", fname, d,
                         ndim, cn_shape_str(sbuf, sizeof sbuf, ndim, t->shape));
            return -1;
        }
        if (d < 0) d += range;
        if (seen[d]) {
            cn_error_set(err, "%s: dim %d appears more than once in the dims for shape %s", fname,
                         dims[j], cn_shape_str(sbuf, sizeof sbuf, ndim, t->shape));
            return -1;
        }
        seen[d] = true;
        mask[d] = true;
    }
    return 0;
}

static int plan_reduce(const char *fname, const cn_tensor *t, int ndims, const int *dims,
                       bool keepdim, reduce_plan *plan, cn_error *err) {
    bool mask[CN_MAX_DIMS];
    int ndim = t->ndim;
    plan->src = NULL;
    if (check_dims(fname, t, ndims, dims, mask, err)) return -1;

    plan->out_ndim = 0;
    for (int d = 0; d < ndim; d++) {
        if (!mask[d]) plan->out_shape[plan->out_ndim++] = t->shape[d];
        else if (keepdim) plan->out_shape[plan->out_ndim++] = 1;
    }

    /* The reduced dims are adjacent in memory order when no kept dim of size > 1 lies between the
     * first and the last reduced dim of size > 1. */
    int lo = -1, hi = -1;
    for (int d = 0; d < ndim; d++) {
        if (mask[d] && t->shape[d] != 1) {
            if (lo < 0) lo = d;
            hi = d;
        }
    }
    bool adjacent = true;
    for (int d = lo + 1; lo >= 0 && d < hi; d++)
        if (!mask[d] && t->shape[d] != 1) adjacent = false;

    cn_tensor *src_in = (cn_tensor *)t; /* views only touch refcounts */
    if (adjacent) {
        if (lo < 0) lo = hi = ndim; /* nothing of size > 1 is reduced: red = 1 */
        plan->outer = plan->red = plan->inner = 1;
        for (int d = 0; d < ndim; d++) {
            if (d < lo) plan->outer *= t->shape[d];
            else if (d <= hi) plan->red *= t->shape[d];
            else plan->inner *= t->shape[d];
        }
        plan->src = cn_contiguous(src_in, err);
    } else {
        int perm[CN_MAX_DIMS], n = 0;
        plan->outer = plan->red = 1;
        plan->inner = 1;
        for (int d = 0; d < ndim; d++)
            if (!mask[d]) { perm[n++] = d; plan->outer *= t->shape[d]; }
        for (int d = 0; d < ndim; d++)
            if (mask[d]) { perm[n++] = d; plan->red *= t->shape[d]; }
        cn_tensor *p = cn_permute(src_in, perm, err);
        if (!p) return -1;
        plan->src = cn_contiguous(p, err);
        cn_release(p);
    }
    return plan->src ? 0 : -1;
}

/* ---- sum-like reductions --------------------------------------------------------------------- */

typedef enum acc_kind {
    ACC_SUM,     /* x */
    ACC_ABS,     /* |x| */
    ACC_SQ,      /* x^2 */
    ACC_POW,     /* |x|^p */
    ACC_NONZERO, /* x != 0 */
    ACC_SQDEV,   /* (x - shift)^2 */
    ACC_MAXABS,  /* max |x| */
    ACC_MINABS   /* min |x| */
} acc_kind;

typedef enum finish_kind { FIN_SUM, FIN_MEAN, FIN_VAR, FIN_STD, FIN_SQRT, FIN_ROOT } finish_kind;

typedef struct reducer {
    acc_kind kind;
    finish_kind finish;
    double p;        /* ACC_POW / FIN_ROOT */
    int correction;  /* FIN_VAR / FIN_STD (two-pass: mean, then ACC_SQDEV) */
} reducer;

static double acc_identity(acc_kind kind) { return kind == ACC_MINABS ? INFINITY : 0.0; }

/* Combines two partial results in order (NaN sticks for max/min). */
static double acc_combine(acc_kind kind, double a, double b) {
    if (kind == ACC_MAXABS) return (b > a || isnan(b)) && !isnan(a) ? b : a;
    if (kind == ACC_MINABS) return (b < a || isnan(b)) && !isnan(a) ? b : a;
    return a + b;
}

/* Accumulates one contiguous row of n floats. */
static double row_acc(acc_kind kind, const float *x, int64_t n, double p, double shift) {
    double acc = acc_identity(kind);
    switch (kind) {
    case ACC_SUM:
#pragma omp simd reduction(+ : acc)
        for (int64_t j = 0; j < n; j++) acc += x[j];
        break;
    case ACC_ABS:
#pragma omp simd reduction(+ : acc)
        for (int64_t j = 0; j < n; j++) acc += fabs((double)x[j]);
        break;
    case ACC_SQ:
#pragma omp simd reduction(+ : acc)
        for (int64_t j = 0; j < n; j++) acc += (double)x[j] * x[j];
        break;
    case ACC_POW:
        for (int64_t j = 0; j < n; j++) acc += pow(fabs((double)x[j]), p);
        break;
    case ACC_NONZERO:
        for (int64_t j = 0; j < n; j++) acc += x[j] != 0.0f;
        break;
    case ACC_SQDEV:
#pragma omp simd reduction(+ : acc)
        for (int64_t j = 0; j < n; j++) {
            double dev = x[j] - shift;
            acc += dev * dev;
        }
        break;
    case ACC_MAXABS:
        for (int64_t j = 0; j < n; j++) {
            double a = fabs((double)x[j]);
            if (isnan(a)) return a;
            if (a > acc) acc = a;
        }
        break;
    case ACC_MINABS:
        for (int64_t j = 0; j < n; j++) {
            double a = fabs((double)x[j]);
            if (isnan(a)) return a;
            if (a < acc) acc = a;
        }
        break;
    }
    return acc;
}

/* row_acc over a long row, split into ROW_CHUNKS chunks reduced in parallel, combined in order. */
static double row_acc_par(acc_kind kind, const float *x, int64_t n, double p, double shift) {
    if (n < ROW_PARALLEL_MIN) return row_acc(kind, x, n, p, shift);
    double part[ROW_CHUNKS];
    int64_t chunk = (n + ROW_CHUNKS - 1) / ROW_CHUNKS;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < ROW_CHUNKS; c++) {
        int64_t lo = c * chunk, hi = lo + chunk < n ? lo + chunk : n;
        part[c] = lo < hi ? row_acc(kind, x + lo, hi - lo, p, shift) : acc_identity(kind);
    }
    double acc = part[0];
    for (int c = 1; c < ROW_CHUNKS; c++) acc = acc_combine(kind, acc, part[c]);
    return acc;
}

/* Accumulates len adjacent columns of a [red, inner] block: acc[i] over x[r*inner + i]. */
static void tile_acc(acc_kind kind, const float *x, int64_t red, int64_t inner, int len, double p,
                     const double *shift, double *acc) {
    for (int i = 0; i < len; i++) acc[i] = acc_identity(kind);
    for (int64_t r = 0; r < red; r++) {
        const float *row = x + r * inner;
        switch (kind) {
        case ACC_SUM:
            for (int i = 0; i < len; i++) acc[i] += row[i];
            break;
        case ACC_ABS:
            for (int i = 0; i < len; i++) acc[i] += fabs((double)row[i]);
            break;
        case ACC_SQ:
            for (int i = 0; i < len; i++) acc[i] += (double)row[i] * row[i];
            break;
        case ACC_POW:
            for (int i = 0; i < len; i++) acc[i] += pow(fabs((double)row[i]), p);
            break;
        case ACC_NONZERO:
            for (int i = 0; i < len; i++) acc[i] += row[i] != 0.0f;
            break;
        case ACC_SQDEV:
            for (int i = 0; i < len; i++) {
                double dev = row[i] - shift[i];
                acc[i] += dev * dev;
            }
            break;
        case ACC_MAXABS: /* once acc is NaN, neither test can replace it */
            for (int i = 0; i < len; i++) {
                double a = fabs((double)row[i]);
                if (a > acc[i] || isnan(a)) acc[i] = a;
            }
            break;
        case ACC_MINABS:
            for (int i = 0; i < len; i++) {
                double a = fabs((double)row[i]);
                if (a < acc[i] || isnan(a)) acc[i] = a;
            }
            break;
        }
    }
}

static double finish(const reducer *rd, double acc, int64_t n) {
    switch (rd->finish) {
    case FIN_SUM: return acc;
    case FIN_MEAN: return acc / (double)n;
    case FIN_VAR:
    case FIN_STD: {
        double denom = (double)n - rd->correction;
        double var = acc / (denom > 0 ? denom : 0.0);
        return rd->finish == FIN_STD ? sqrt(var) : var;
    }
    case FIN_SQRT: return sqrt(acc);
    case FIN_ROOT: return pow(acc, 1.0 / rd->p);
    }
    return acc;
}

static bool two_pass(const reducer *rd) { return rd->finish == FIN_VAR || rd->finish == FIN_STD; }

/* One output from one contiguous row. */
static double row_value(const reducer *rd, const float *x, int64_t n, bool split) {
    double (*acc_fn)(acc_kind, const float *, int64_t, double, double) =
        split ? row_acc_par : row_acc;
    if (two_pass(rd)) {
        double mean = acc_fn(ACC_SUM, x, n, 0.0, 0.0) / (double)n;
        return finish(rd, acc_fn(ACC_SQDEV, x, n, 0.0, mean), n);
    }
    return finish(rd, acc_fn(rd->kind, x, n, rd->p, 0.0), n);
}

/* y[o*inner + i] = reduction over r of x[(o*red + r)*inner + i]. */
static void run_reduce(const reducer *rd, const float *x, int64_t outer, int64_t red,
                       int64_t inner, float *y) {
    int64_t total = outer * red * inner;
    if (outer * inner == 0) return;
    if (inner == 1) {
        if (outer == 1) {
            y[0] = (float)row_value(rd, x, red, true);
            return;
        }
#pragma omp parallel for schedule(static) if (total >= PARALLEL_MIN)
        for (int64_t o = 0; o < outer; o++) y[o] = (float)row_value(rd, x + o * red, red, false);
        return;
    }
    int64_t ntiles = (inner + TILE - 1) / TILE;
#pragma omp parallel for schedule(static) if (total >= PARALLEL_MIN && outer * ntiles > 1)
    for (int64_t u = 0; u < outer * ntiles; u++) {
        int64_t o = u / ntiles, i0 = (u % ntiles) * TILE;
        int len = (int)(inner - i0 < TILE ? inner - i0 : TILE);
        const float *block = x + o * red * inner + i0;
        double acc[TILE];
        if (two_pass(rd)) {
            double mean[TILE];
            tile_acc(ACC_SUM, block, red, inner, len, 0.0, NULL, mean);
            for (int i = 0; i < len; i++) mean[i] /= (double)red;
            tile_acc(ACC_SQDEV, block, red, inner, len, 0.0, mean, acc);
        } else {
            tile_acc(rd->kind, block, red, inner, len, rd->p, NULL, acc);
        }
        float *out = y + o * inner + i0;
        for (int i = 0; i < len; i++) out[i] = (float)finish(rd, acc[i], red);
    }
}

static cn_tensor *reduce(const char *fname, const cn_tensor *t, int ndims, const int *dims,
                         bool keepdim, const reducer *rd, cn_error *err) {
    reduce_plan plan;
    if (plan_reduce(fname, t, ndims, dims, keepdim, &plan, err)) return NULL;
    if (plan.red == 0 && (rd->kind == ACC_MAXABS || rd->kind == ACC_MINABS) &&
        plan.outer * plan.inner > 0) {
        char sbuf[160];
        cn_error_set(err, "%s: cannot take the %s-norm over zero elements of shape %s", fname,
                     rd->kind == ACC_MAXABS ? "inf" : "-inf",
                     cn_shape_str(sbuf, sizeof sbuf, t->ndim, t->shape));
        cn_release(plan.src);
        return NULL;
    }
    cn_tensor *out = cn_empty(plan.out_ndim, plan.out_shape, err);
    if (out) run_reduce(rd, cn_data(plan.src), plan.outer, plan.red, plan.inner, cn_data(out));
    cn_release(plan.src);
    return out;
}

/* ---- sum / mean / var / std / norm: forwards, args, backward ------------------------------ */
/* Forwards run without grad (their contiguous copies and permutes stay out of the graph); the
 * node keeps the reduced dims as a bit mask (reduce_args.dims_mask). */

static cn_tensor *sum_forward(const cn_tensor *t, int ndims, const int *dims, bool keepdim, cn_error *err) {
    reducer rd = {ACC_SUM, FIN_SUM, 0.0, 0};
    return reduce("sum", t, ndims, dims, keepdim, &rd, err);
}

static cn_tensor *mean_forward(const cn_tensor *t, int ndims, const int *dims, bool keepdim, cn_error *err) {
    reducer rd = {ACC_SUM, FIN_MEAN, 0.0, 0};
    return reduce("mean", t, ndims, dims, keepdim, &rd, err);
}

static cn_tensor *var_forward(const cn_tensor *t, int ndims, const int *dims, int correction, bool keepdim,
                  cn_error *err) {
    reducer rd = {ACC_SQDEV, FIN_VAR, 0.0, correction};
    return reduce("var", t, ndims, dims, keepdim, &rd, err);
}

static cn_tensor *std_forward(const cn_tensor *t, int ndims, const int *dims, int correction, bool keepdim,
                  cn_error *err) {
    reducer rd = {ACC_SQDEV, FIN_STD, 0.0, correction};
    return reduce("std", t, ndims, dims, keepdim, &rd, err);
}

static cn_tensor *norm_forward(const cn_tensor *t, double p, int ndims, const int *dims, bool keepdim,
                   cn_error *err) {
    reducer rd = {ACC_POW, FIN_ROOT, p, 0};
    if (isnan(p)) {
        cn_error_set(err, "norm: p must be a number, got nan");
        return NULL;
    }
    if (p == 2.0) { rd.kind = ACC_SQ; rd.finish = FIN_SQRT; }
    else if (p == 1.0) { rd.kind = ACC_ABS; rd.finish = FIN_SUM; }
    else if (p == 0.0) { rd.kind = ACC_NONZERO; rd.finish = FIN_SUM; }
    else if (isinf(p)) { rd.kind = p > 0 ? ACC_MAXABS : ACC_MINABS; rd.finish = FIN_SUM; }
    return reduce("norm", t, ndims, dims, keepdim, &rd, err);
}

static int64_t dims_mask(const cn_tensor *t, int ndims, const int *dims) {
    if (ndims == 0) return t->ndim ? ((int64_t)1 << t->ndim) - 1 : 0;
    int64_t mask = 0;
    for (int i = 0; i < ndims; i++) mask |= (int64_t)1 << cn_wrap_dim(dims[i], t->ndim, "reduce", NULL);
    return mask;
}

/* g reshaped to the keepdim shape of input x (reduced dims of size 1); *count = reduced elements. */
static cn_tensor *keepdim_view(const cn_tensor *g, const cn_tensor *x, int64_t mask, double *count,
                               cn_error *err) {
    int64_t shape[CN_MAX_DIMS];
    double n = 1;
    for (int d = 0; d < x->ndim; d++) {
        shape[d] = mask >> d & 1 ? 1 : x->shape[d];
        if (mask >> d & 1) n *= (double)x->shape[d];
    }
    if (count) *count = n;
    return cn_reshape((cn_tensor *)g, x->ndim, shape, err);
}

/* x - mean(x) over the masked dims (kept), for var/std */
static cn_tensor *deviation(const cn_tensor *x, int64_t mask, cn_error *err) {
    int dims[CN_MAX_DIMS], n = 0;
    for (int d = 0; d < x->ndim; d++)
        if (mask >> d & 1) dims[n++] = d;
    cn_tensor *m = cn_mean(x, n, dims, true, err); /* recorded under create_graph */
    if (!m) return NULL;
    cn_tensor *dev = cn_binary(CN_SUB, x, m, err);
    cn_release(m);
    return dev;
}

/* One node type for sum / mean / var / std / norm. */
enum { R_SUM, R_MEAN, R_VAR, R_STD, R_NORM };
struct reduce_args {
    int64_t dims_mask; /* bit d set: dim d was reduced */
    int kind;          /* R_SUM ... R_NORM */
    int correction;    /* var, std */
    double p;          /* norm */
};
enum { REDUCE_SAVED_X, REDUCE_SAVED_OUT };

/* The gradient from the input x and the result out: the saved (detached) ones for the fast
 * backward; the node's input and the result recomputed by the recording op for the recorded one
 * (every op below records under create_graph). */
static int reduce_grads(cn_node *n, const cn_tensor *g, const cn_tensor *x, const cn_tensor *out, cn_tensor **gi,
                        cn_error *err) {
    const struct reduce_args *args = CN_NODE_ARGS(n, struct reduce_args);
    int64_t mask = args->dims_mask;
    double count;
    cn_tensor *gk = keepdim_view(g, x, mask, &count, err);
    if (!gk) return -1;
    cn_tensor *r = NULL;
    switch (args->kind) {
    case R_SUM:
        r = cn_expand(gk, x->ndim, x->shape, err);
        break;
    case R_MEAN:
        r = cn_binary_scalar_drop(CN_MUL, cn_expand(gk, x->ndim, x->shape, err), (float)(1.0 / count), false, err);
        break;
    case R_VAR: /* 2 (x - mean) g / (N - correction) */
        r = cn_binary_scalar_drop(CN_MUL, cn_binary_drop(CN_MUL, deviation(x, mask, err), gk, err),
                                  (float)(2.0 / (count - (double)args->correction)), false, err);
        break;
    case R_STD: { /* (x - mean) g / ((N - correction) std), 0 where std is 0 (as torch) */
        cn_tensor *sk = keepdim_view(out, x, mask, NULL, err);
        cn_tensor *ratio = sk ? cn_binary(CN_DIV, gk, sk, err) : NULL;
        cn_tensor *zero = cn_scalar(0.0f, err);
        cn_tensor *flat = sk && zero ? cn_binary(CN_EQ, sk, zero, err) : NULL;
        cn_tensor *q = ratio && flat ? cn_where(flat, zero, ratio, err) : NULL;
        cn_release(sk), cn_release(ratio), cn_release(zero), cn_release(flat);
        r = q ? cn_binary_scalar_drop(CN_MUL, cn_binary_drop(CN_MUL, deviation(x, mask, err), q, err),
                                      (float)(1.0 / (count - (double)args->correction)), false, err)
              : NULL;
        cn_release(q);
        break;
    }
    case R_NORM: {
        double p = args->p;
        cn_tensor *nk = keepdim_view(out, x, mask, NULL, err);
        if (!nk) break;
        if (p == 0.0) {
            r = cn_zeros(x->ndim, x->shape, err);
        } else if (p == 1.0) {
            r = cn_binary_drop(CN_MUL, cn_unary(CN_SIGN, x, err), gk, err);
        } else if (isinf(p)) {
            /* as torch: split evenly between the elements that reach the norm (or are NaN) */
            cn_tensor *ax = cn_unary(CN_ABS, x, err);
            cn_tensor *hit = ax ? cn_binary(CN_EQ, ax, nk, err) : NULL;
            cn_tensor *nan = ax ? cn_binary(CN_NE, ax, ax, err) : NULL;
            cn_tensor *m = hit && nan ? cn_binary(CN_MAXIMUM, hit, nan, err) : NULL;
            int dims[CN_MAX_DIMS], nd = 0;
            for (int d = 0; d < x->ndim; d++)
                if (mask >> d & 1) dims[nd++] = d;
            cn_tensor *cnt = m ? sum_forward(m, nd, dims, true, err) : NULL;
            cn_tensor *share = cnt ? cn_binary(CN_DIV, gk, cnt, err) : NULL;
            r = share ? cn_binary_drop(CN_MUL, cn_binary_drop(CN_MUL, cn_unary(CN_SIGN, x, err), m, err), share, err) : NULL;
            cn_release(ax), cn_release(hit), cn_release(nan), cn_release(m), cn_release(cnt), cn_release(share);
        } else {
            /* x |x|^(p-2) g / norm^(p-1), 0 where the norm is 0 */
            /* p = 2: |x|^0 is 1, left out so that a second derivative has no 0 * |0|^-1 */
            cn_tensor *ax = p == 2.0 ? cn_scalar(1.0f, err) : cn_unary(CN_ABS, x, err);
            cn_tensor *w = !ax ? NULL : p == 2.0 ? cn_retain(ax) : cn_binary_scalar(CN_POW, ax, (float)(p - 2.0), false, err);
            cn_tensor *np = cn_binary_scalar(CN_POW, nk, (float)(p - 1.0), false, err);
            cn_tensor *q = np ? cn_binary(CN_DIV, gk, np, err) : NULL;
            cn_tensor *zero = cn_scalar(0.0f, err);
            cn_tensor *iszero = cn_binary(CN_EQ, nk, zero, err);
            cn_tensor *qm = q && iszero ? cn_where(iszero, zero, q, err) : NULL;
            r = w && qm ? cn_binary_drop(CN_MUL, cn_binary_drop(CN_MUL, cn_retain((cn_tensor *)x), w, err), qm, err) : NULL;
            cn_release(ax), cn_release(w), cn_release(np), cn_release(q), cn_release(zero), cn_release(iszero),
                cn_release(qm);
        }
        cn_release(nk);
        break;
    }
    }
    cn_release(gk);
    gi[0] = r;
    return r ? 0 : -1;
}

static int reduce_backward(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    return reduce_grads(n, g, n->saved[REDUCE_SAVED_X], n->saved[REDUCE_SAVED_OUT], gi, err);
}

static int reduce_backward_graph(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    const struct reduce_args *args = CN_NODE_ARGS(n, struct reduce_args);
    cn_tensor *x = n->inputs[0], *out = NULL;
    int dims[CN_MAX_DIMS], nd = 0;
    for (int d = 0; d < x->ndim; d++)
        if (args->dims_mask >> d & 1) dims[nd++] = d;
    switch (args->kind) {
    case R_STD: out = cn_std(x, nd, dims, args->correction, false, err); break;
    case R_NORM:
        if (isinf(args->p)) {
            cn_error_set(err, "the max-norm has no differentiable backward yet (create_graph)");
            return -1;
        }
        out = cn_norm(x, args->p, nd, dims, false, err);
        break;
    default: out = cn_retain(x); /* sum, mean, var: not read */
    }
    if (!out) return -1;
    int status = reduce_grads(n, g, x, out, gi, err);
    cn_release(out);
    return status;
}

static const cn_op_def op_reduce = {"reduce", reduce_backward, reduce_backward_graph};

static cn_tensor *record_reduce(cn_tensor *r, const cn_tensor *t, int ndims, const int *dims, int kind,
                                int correction, double p, cn_error *err) {
    cn_node *node;
    cn_tensor *in = (cn_tensor *)t;
    r = cn_record_result(r, &op_reduce, 1, &in, &node, err);
    if (node) {
        *CN_NODE_ARGS(node, struct reduce_args) = (struct reduce_args){
            .dims_mask = dims_mask(t, ndims, dims), .kind = kind, .correction = correction, .p = p};
        cn_node_save(node, REDUCE_SAVED_X, t);
        cn_node_save(node, REDUCE_SAVED_OUT, r);
    }
    return r;
}

cn_tensor *cn_sum(const cn_tensor *t, int ndims, const int *dims, bool keepdim, cn_error *err) {
    cn_tensor *r;
    CN_WITHOUT_GRAD(r = sum_forward(t, ndims, dims, keepdim, err));
    return record_reduce(r, t, ndims, dims, R_SUM, 0, 0, err);
}

cn_tensor *cn_mean(const cn_tensor *t, int ndims, const int *dims, bool keepdim, cn_error *err) {
    cn_tensor *r;
    CN_WITHOUT_GRAD(r = mean_forward(t, ndims, dims, keepdim, err));
    return record_reduce(r, t, ndims, dims, R_MEAN, 0, 0, err);
}

cn_tensor *cn_var(const cn_tensor *t, int ndims, const int *dims, int correction, bool keepdim, cn_error *err) {
    cn_tensor *r;
    CN_WITHOUT_GRAD(r = var_forward(t, ndims, dims, correction, keepdim, err));
    return record_reduce(r, t, ndims, dims, R_VAR, correction, 0, err);
}

cn_tensor *cn_std(const cn_tensor *t, int ndims, const int *dims, int correction, bool keepdim, cn_error *err) {
    cn_tensor *r;
    CN_WITHOUT_GRAD(r = std_forward(t, ndims, dims, correction, keepdim, err));
    return record_reduce(r, t, ndims, dims, R_STD, correction, 0, err);
}

cn_tensor *cn_norm(const cn_tensor *t, double p, int ndims, const int *dims, bool keepdim, cn_error *err) {
    cn_tensor *r;
    CN_WITHOUT_GRAD(r = norm_forward(t, p, ndims, dims, keepdim, err));
    return record_reduce(r, t, ndims, dims, R_NORM, 0, p, err);
}

/* ---- max / min (with indices), argmax ---------------------------------------------------- */

/* v replaces best: strictly better, or the first NaN. Ties keep the earlier index. */
static inline bool better(float v, float best, bool is_max) {
    if (isnan(v)) return !isnan(best);
    return is_max ? v > best : v < best;
}

/* Index of the max/min of a contiguous row of n >= 1 floats; its value into *value. */
static int64_t row_best(const float *x, int64_t n, bool is_max, float *value) {
    float best = x[0];
    int64_t at = 0;
    for (int64_t j = 1; j < n && !isnan(best); j++)
        if (better(x[j], best, is_max)) { best = x[j]; at = j; }
    *value = best;
    return at;
}

static int64_t row_best_par(const float *x, int64_t n, bool is_max, float *value) {
    if (n < ROW_PARALLEL_MIN) return row_best(x, n, is_max, value);
    float part_value[ROW_CHUNKS];
    int64_t part_at[ROW_CHUNKS];
    int64_t chunk = (n + ROW_CHUNKS - 1) / ROW_CHUNKS;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < ROW_CHUNKS; c++) {
        int64_t lo = c * chunk, hi = lo + chunk < n ? lo + chunk : n;
        part_at[c] = lo < hi ? lo + row_best(x + lo, hi - lo, is_max, &part_value[c]) : -1;
    }
    float best = part_value[0];
    int64_t at = part_at[0];
    for (int c = 1; c < ROW_CHUNKS; c++)
        if (part_at[c] >= 0 && better(part_value[c], best, is_max)) {
            best = part_value[c];
            at = part_at[c];
        }
    *value = best;
    return at;
}

/* Max/min over r of a [outer, red >= 1, inner] block into values/indices [outer, inner] (either
 * may be NULL); indices as floats. */
static void run_best(const float *x, int64_t outer, int64_t red, int64_t inner, bool is_max,
                     float *values, float *indices) {
    int64_t total = outer * red * inner;
    if (outer * inner == 0) return;
    if (inner == 1) {
        if (outer == 1) {
            float v;
            int64_t at = row_best_par(x, red, is_max, &v);
            if (values) values[0] = v;
            if (indices) indices[0] = (float)at;
            return;
        }
#pragma omp parallel for schedule(static) if (total >= PARALLEL_MIN)
        for (int64_t o = 0; o < outer; o++) {
            float v;
            int64_t at = row_best(x + o * red, red, is_max, &v);
            if (values) values[o] = v;
            if (indices) indices[o] = (float)at;
        }
        return;
    }
    int64_t ntiles = (inner + TILE - 1) / TILE;
#pragma omp parallel for schedule(static) if (total >= PARALLEL_MIN && outer * ntiles > 1)
    for (int64_t u = 0; u < outer * ntiles; u++) {
        int64_t o = u / ntiles, i0 = (u % ntiles) * TILE;
        int len = (int)(inner - i0 < TILE ? inner - i0 : TILE);
        const float *block = x + o * red * inner + i0;
        float best[TILE];
        int64_t at[TILE];
        for (int i = 0; i < len; i++) { best[i] = block[i]; at[i] = 0; }
        for (int64_t r = 1; r < red; r++) {
            const float *row = block + r * inner;
            for (int i = 0; i < len; i++)
                if (better(row[i], best[i], is_max)) { best[i] = row[i]; at[i] = r; }
        }
        for (int i = 0; i < len; i++) {
            if (values) values[o * inner + i0 + i] = best[i];
            if (indices) indices[o * inner + i0 + i] = (float)at[i];
        }
    }
}

static int empty_error(const char *fname, const cn_tensor *t, const char *what, cn_error *err) {
    char sbuf[160];
    cn_error_set(err, "%s: cannot reduce %s of a tensor of shape %s (no elements)", fname, what,
                 cn_shape_str(sbuf, sizeof sbuf, t->ndim, t->shape));
    return -1;
}

static int max_dim_forward(const cn_tensor *t, int dim, bool keepdim, bool is_max, cn_tensor **values,
               cn_tensor **indices, cn_error *err) {
    const char *fname = is_max ? "max" : "min";
    reduce_plan plan;
    cn_tensor *v = NULL, *ix = NULL;
    if (values) *values = NULL;
    if (indices) *indices = NULL;
    if (plan_reduce(fname, t, 1, &dim, keepdim, &plan, err)) return -1;
    if (plan.red == 0) {
        char what[48];
        snprintf(what, sizeof what, "over dim %d", dim);
        cn_release(plan.src);
        return empty_error(fname, t, what, err);
    }
    if (values && !(v = cn_empty(plan.out_ndim, plan.out_shape, err))) goto fail;
    if (indices && !(ix = cn_empty(plan.out_ndim, plan.out_shape, err))) goto fail;
    run_best(cn_data(plan.src), plan.outer, plan.red, plan.inner, is_max, v ? cn_data(v) : NULL,
             ix ? cn_data(ix) : NULL);
    cn_release(plan.src);
    if (values) *values = v;
    if (indices) *indices = ix;
    return 0;
fail:
    cn_release(v);
    cn_release(ix);
    cn_release(plan.src);
    return -1;
}

/* max/min over a dim: the gradient goes to the chosen index */
struct max_dim_args {
    int dim; /* wrapped; 0 for a 0-d input */
};
enum { MAX_DIM_SAVED_INDICES }; /* keepdim layout */

static int max_dim_backward(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    const cn_tensor *x = n->inputs[0];
    int dim = CN_NODE_ARGS(n, struct max_dim_args)->dim;
    cn_tensor *z = cn_zeros(x->ndim, x->shape, err);
    cn_tensor *gk = keepdim_view(g, x, (int64_t)1 << dim, NULL, err);
    cn_tensor *gc = gk ? cn_contiguous(gk, err) : NULL;
    cn_tensor *ic = cn_contiguous(n->saved[MAX_DIM_SAVED_INDICES], err);
    if (!z || !gc || !ic) {
        cn_release(z), cn_release(gk), cn_release(gc), cn_release(ic);
        return -1;
    }
    int64_t outer = 1, inner = 1, red = x->ndim ? x->shape[dim] : 1;
    for (int d = 0; d < dim; d++) outer *= x->shape[d];
    for (int d = dim + 1; d < x->ndim; d++) inner *= x->shape[d];
    const float *pg = cn_data(gc), *pi = cn_data(ic);
    float *pz = cn_data(z);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            int64_t at = (int64_t)pi[o * inner + i];
            pz[(o * red + at) * inner + i] += pg[o * inner + i];
        }
    cn_release(gk), cn_release(gc), cn_release(ic);
    gi[0] = z;
    return 0;
}

/* The recorded backward (create_graph): a constant one-hot mask at the indices times g, g
 * broadcast along dim (recorded reshape and multiply). */
static int max_dim_backward_graph(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    const cn_tensor *x = n->inputs[0];
    int dim = CN_NODE_ARGS(n, struct max_dim_args)->dim;
    cn_tensor *mask = cn_zeros(x->ndim, x->shape, err);
    cn_tensor *ic = mask ? cn_contiguous(n->saved[MAX_DIM_SAVED_INDICES], err) : NULL;
    cn_tensor *gk = ic ? keepdim_view(g, x, (int64_t)1 << dim, NULL, err) : NULL;
    if (gk) {
        int64_t outer = 1, inner = 1, red = x->ndim ? x->shape[dim] : 1;
        for (int d = 0; d < dim; d++) outer *= x->shape[d];
        for (int d = dim + 1; d < x->ndim; d++) inner *= x->shape[d];
        const float *pi = cn_data(ic);
        for (int64_t o = 0; o < outer; o++)
            for (int64_t i = 0; i < inner; i++) cn_data(mask)[(o * red + (int64_t)pi[o * inner + i]) * inner + i] = 1.0f;
        gi[0] = cn_binary(CN_MUL, mask, gk, err);
    }
    cn_release(mask), cn_release(ic), cn_release(gk);
    return gi[0] ? 0 : -1;
}

static const cn_op_def op_max_dim = {"max_dim", max_dim_backward, max_dim_backward_graph};

int cn_max_dim(const cn_tensor *t, int dim, bool keepdim, bool is_max, cn_tensor **values, cn_tensor **indices,
               cn_error *err) {
    cn_tensor *v = NULL, *ix = NULL;
    int status;
    bool want_grad = values && cn_needs_grad(1, &t);
    CN_WITHOUT_GRAD(status = max_dim_forward(t, dim, keepdim, is_max, values ? &v : NULL,
                                             want_grad || indices ? &ix : NULL, err));
    if (status) return -1;
    if (want_grad) {
        cn_node *node;
        cn_tensor *in = (cn_tensor *)t;
        v = cn_record_result(v, &op_max_dim, 1, &in, &node, err);
        if (!v) {
            cn_release(ix);
            return -1;
        }
        CN_NODE_ARGS(node, struct max_dim_args)->dim =
            t->ndim == 0 ? 0 : cn_wrap_dim(dim, t->ndim, "max", NULL);
        if (indices) { /* the caller may change its indices (the binding makes them 1-based) */
            cn_tensor *own = cn_clone(ix, err);
            if (!own) {
                cn_release(v), cn_release(ix);
                return -1;
            }
            cn_node_save(node, MAX_DIM_SAVED_INDICES, own);
            cn_release(own);
        } else {
            cn_node_save(node, MAX_DIM_SAVED_INDICES, ix);
        }
    }
    if (values) *values = v;
    if (indices) *indices = ix;
    else cn_release(ix);
    return 0;
}

static cn_tensor *max_all_forward(const cn_tensor *t, bool is_max, cn_error *err) {
    const char *fname = is_max ? "max" : "min";
    if (cn_numel(t) == 0) {
        empty_error(fname, t, "all dims", err);
        return NULL;
    }
    cn_tensor *src = cn_contiguous((cn_tensor *)t, err);
    if (!src) return NULL;
    cn_tensor *out = cn_empty(0, NULL, err);
    if (out) row_best_par(cn_data(src), (int64_t)cn_numel(src), is_max, cn_data(out));
    cn_release(src);
    return out;
}

/* max/min over everything: as torch, split evenly between the elements equal to the result (the
 * share and the product are recorded ops, the mask and count constants: this backward is its own
 * recorded one) */
enum { MAX_ALL_SAVED_X, MAX_ALL_SAVED_OUT };

static int max_all_backward(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    const cn_tensor *x = n->saved[MAX_ALL_SAVED_X], *out = n->saved[MAX_ALL_SAVED_OUT];
    cn_tensor *m = cn_binary(CN_EQ, x, out, err);
    cn_tensor *cnt = m ? sum_forward(m, 0, NULL, false, err) : NULL;
    cn_tensor *share = cnt ? cn_binary(CN_DIV, g, cnt, err) : NULL;
    gi[0] = share ? cn_binary(CN_MUL, m, share, err) : NULL;
    cn_release(m), cn_release(cnt), cn_release(share);
    return gi[0] ? 0 : -1;
}

static const cn_op_def op_max_all = {"max_all", max_all_backward, max_all_backward};

cn_tensor *cn_max_all(const cn_tensor *t, bool is_max, cn_error *err) {
    cn_tensor *r;
    CN_WITHOUT_GRAD(r = max_all_forward(t, is_max, err));
    cn_node *node;
    cn_tensor *in = (cn_tensor *)t;
    r = cn_record_result(r, &op_max_all, 1, &in, &node, err);
    if (node) {
        cn_node_save(node, MAX_ALL_SAVED_X, t);
        cn_node_save(node, MAX_ALL_SAVED_OUT, r);
    }
    return r;
}

static cn_tensor *argmax_forward(const cn_tensor *t, bool dim_given, int dim, bool keepdim, bool is_max,
                     cn_error *err) {
    const char *fname = is_max ? "argmax" : "argmin";
    if (dim_given) {
        cn_tensor *ix = NULL;
        reduce_plan plan;
        if (plan_reduce(fname, t, 1, &dim, keepdim, &plan, err)) return NULL;
        if (plan.red == 0) {
            char what[48];
            snprintf(what, sizeof what, "over dim %d", dim);
            cn_release(plan.src);
            empty_error(fname, t, what, err);
            return NULL;
        }
        ix = cn_empty(plan.out_ndim, plan.out_shape, err);
        if (ix) run_best(cn_data(plan.src), plan.outer, plan.red, plan.inner, is_max, NULL,
                         cn_data(ix));
        cn_release(plan.src);
        return ix;
    }
    /* Flat index in row-major order; keepdim gives a tensor of t's rank with every size 1. */
    if (cn_numel(t) == 0) {
        empty_error(fname, t, "all dims", err);
        return NULL;
    }
    int64_t ones[CN_MAX_DIMS];
    for (int d = 0; d < CN_MAX_DIMS; d++) ones[d] = 1;
    cn_tensor *src = cn_contiguous((cn_tensor *)t, err);
    if (!src) return NULL;
    cn_tensor *out = cn_empty(keepdim ? t->ndim : 0, ones, err);
    if (out) {
        float v;
        cn_data(out)[0] = (float)row_best_par(cn_data(src), (int64_t)cn_numel(src), is_max, &v);
    }
    cn_release(src);
    return out;
}

cn_tensor *cn_argmax(const cn_tensor *t, bool dim_given, int dim, bool keepdim, bool is_max, cn_error *err) {
    cn_tensor *r;
    CN_WITHOUT_GRAD(r = argmax_forward(t, dim_given, dim, keepdim, is_max, err));
    return r;
}
