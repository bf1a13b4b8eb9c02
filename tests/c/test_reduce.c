/* test_reduce.c — reductions (ops_reduce.c) against a naive double-precision reference.
 *
 * The reference walks the input through cn_offset_of (so it reads any strided view directly),
 * gathers the reduced elements of each output in row-major order and computes the statistic in
 * the obvious way. Every subset of dims of a 3-D and a 4-D tensor is checked, with and without
 * keepdim, on contiguous tensors and on transposed / narrowed / expanded views.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "alloc.h"
#include "ctest.h"
#include "ops.h"
#include "tensor.h"
#include "test_util.h"

/* ---- helpers ----------------------------------------------------------------------------- */

static cn_tensor *tensor_of(int ndim, const int64_t *shape, const float *values) {
    cn_error err;
    return cn_from_data(ndim, shape, values, &err);
}

static float at(const cn_tensor *t, const int64_t *idx) {
    return t->storage->data[cn_offset_of(t, idx)];
}

/* Flat row-major element i of a contiguous tensor. */
static float flat(const cn_tensor *t, size_t i) { return cn_data(t)[i]; }

typedef enum stat {
    ST_SUM, ST_MEAN, ST_VAR, ST_STD, ST_NORM, ST_MAX, ST_MIN, ST_ARGMAX, ST_ARGMIN
} stat;

static const char *stat_name[] = {"sum", "mean", "var", "std", "norm", "max", "min", "argmax", "argmin"};

/* The statistic of n values (double). */
static double ref_stat(stat s, const double *v, int64_t n, double p, int correction) {
    double acc = 0.0;
    switch (s) {
    case ST_SUM:
        for (int64_t i = 0; i < n; i++) acc += v[i];
        return acc;
    case ST_MEAN:
        for (int64_t i = 0; i < n; i++) acc += v[i];
        return acc / (double)n;
    case ST_VAR:
    case ST_STD: {
        double mean = 0.0;
        for (int64_t i = 0; i < n; i++) mean += v[i];
        mean /= (double)n;
        for (int64_t i = 0; i < n; i++) acc += (v[i] - mean) * (v[i] - mean);
        double denom = (double)n - correction;
        acc /= denom > 0 ? denom : 0.0;
        return s == ST_STD ? sqrt(acc) : acc;
    }
    case ST_NORM:
        if (isinf(p)) {
            acc = p > 0 ? 0.0 : INFINITY;
            for (int64_t i = 0; i < n; i++) {
                if (isnan(v[i])) return NAN;
                acc = p > 0 ? fmax(acc, fabs(v[i])) : fmin(acc, fabs(v[i]));
            }
            return acc;
        }
        if (p == 0) {
            for (int64_t i = 0; i < n; i++) acc += v[i] != 0.0;
            return acc;
        }
        for (int64_t i = 0; i < n; i++) acc += pow(fabs(v[i]), p);
        return pow(acc, 1.0 / p);
    case ST_MAX:
    case ST_MIN:
    case ST_ARGMAX:
    case ST_ARGMIN: {
        bool is_max = s == ST_MAX || s == ST_ARGMAX;
        int64_t best = 0;
        for (int64_t i = 0; i < n; i++) {
            if (isnan(v[i])) { best = i; break; }
            if (is_max ? v[i] > v[best] : v[i] < v[best]) best = i;
        }
        return s == ST_MAX || s == ST_MIN ? v[best] : (double)best;
    }
    }
    return NAN;
}

/* Reference reduction of t over the dims in mask (bit d = dim d) into out (row-major over the
 * kept dims). Returns the number of outputs. */
static size_t ref_reduce(const cn_tensor *t, unsigned mask, stat s, double p, int correction,
                         double *out) {
    int kept[CN_MAX_DIMS], red[CN_MAX_DIMS], nk = 0, nr = 0;
    int64_t nout = 1, nred = 1;
    for (int d = 0; d < t->ndim; d++) {
        if (mask >> d & 1) { red[nr++] = d; nred *= t->shape[d]; }
        else { kept[nk++] = d; nout *= t->shape[d]; }
    }
    double *vals = malloc(sizeof(double) * (size_t)(nred ? nred : 1));
    for (int64_t o = 0; o < nout; o++) {
        int64_t idx[CN_MAX_DIMS] = {0}, rem = o;
        for (int j = nk - 1; j >= 0; j--) {
            idx[kept[j]] = rem % t->shape[kept[j]];
            rem /= t->shape[kept[j]];
        }
        for (int64_t r = 0; r < nred; r++) {
            rem = r;
            for (int j = nr - 1; j >= 0; j--) {
                idx[red[j]] = rem % t->shape[red[j]];
                rem /= t->shape[red[j]];
            }
            vals[r] = at(t, idx);
        }
        out[o] = ref_stat(s, vals, nred, p, correction);
    }
    free(vals);
    return (size_t)nout;
}

static bool same_value(double got, double want, double rtol, double atol) {
    if (isnan(want)) return isnan(got);
    if (isinf(want)) return got == want;
    return fabs(got - want) <= atol + rtol * fabs(want);
}

/* Checks r's shape (kept dims; size 1 for reduced ones with keepdim) and values against want. */
static bool check_result(const cn_tensor *r, const cn_tensor *t, unsigned mask, bool keepdim,
                         const double *want, size_t nwant, const char *what) {
    int64_t shape[CN_MAX_DIMS];
    int n = 0;
    for (int d = 0; d < t->ndim; d++) {
        if (!(mask >> d & 1)) shape[n++] = t->shape[d];
        else if (keepdim) shape[n++] = 1;
    }
    if (!r) {
        fprintf(stderr, "  %s: NULL result\n", what);
        return false;
    }
    if (r->ndim != n || memcmp(r->shape, shape, sizeof(int64_t) * (size_t)n) != 0 ||
        cn_numel(r) != nwant) {
        char a[128], b[128];
        fprintf(stderr, "  %s: shape %s, expected %s\n", what, cn_shape_str(a, sizeof a, r->ndim, r->shape),
                cn_shape_str(b, sizeof b, n, shape));
        return false;
    }
    for (size_t i = 0; i < nwant; i++)
        if (!same_value(flat(r, i), want[i], 1e-5, 1e-5)) {
            fprintf(stderr, "  %s: element %zu = %.9g, expected %.9g\n", what, i, flat(r, i), want[i]);
            return false;
        }
    return true;
}

static int mask_dims(unsigned mask, int ndim, int *dims, bool negative) {
    int n = 0;
    for (int d = 0; d < ndim; d++)
        if (mask >> d & 1) dims[n++] = negative ? d - ndim : d;
    return n;
}

/* Runs one engine reduction over mask. */
static cn_tensor *run_stat(stat s, const cn_tensor *t, unsigned mask, bool keepdim, double p,
                           int correction, bool negative_dims, cn_error *err) {
    int dims[CN_MAX_DIMS];
    int nd = mask_dims(mask, t->ndim, dims, negative_dims);
    switch (s) {
    case ST_SUM: return cn_sum(t, nd, dims, keepdim, err);
    case ST_MEAN: return cn_mean(t, nd, dims, keepdim, err);
    case ST_VAR: return cn_var(t, nd, dims, correction, keepdim, err);
    case ST_STD: return cn_std(t, nd, dims, correction, keepdim, err);
    case ST_NORM: return cn_norm(t, p, nd, dims, keepdim, err);
    default: break;
    }
    return NULL;
}

typedef struct variant {
    stat s;
    double p;
    int correction;
} variant;

static const variant variants[] = {
    {ST_SUM, 0, 0},         {ST_MEAN, 0, 0},  {ST_VAR, 0, 0},  {ST_VAR, 0, 1},
    {ST_STD, 0, 0},         {ST_STD, 0, 1},   {ST_NORM, 1, 0}, {ST_NORM, 2, 0},
    {ST_NORM, 3, 0},        {ST_NORM, INFINITY, 0}, {ST_NORM, 0.5, 0}, {ST_NORM, -INFINITY, 0},
    {ST_NORM, 0, 0},
};
#define NVARIANTS (sizeof variants / sizeof variants[0])

/* Every variant over every non-empty subset of dims of t, keepdim both ways; the full subset also
 * as "no dims". Returns the number of failures. */
static int check_all_subsets(const cn_tensor *t, const char *label) {
    int failures = 0;
    size_t cap = cn_numel(t) + 1;
    double *want = malloc(sizeof(double) * cap);
    for (size_t v = 0; v < NVARIANTS; v++) {
        for (unsigned mask = 1; mask < (1u << t->ndim); mask++) {
            for (int keep = 0; keep < 2; keep++) {
                char what[160];
                cn_error err;
                snprintf(what, sizeof what, "%s %s(p=%g, c=%d) mask=%u keepdim=%d", label,
                         stat_name[variants[v].s], variants[v].p, variants[v].correction, mask, keep);
                size_t n = ref_reduce(t, mask, variants[v].s, variants[v].p, variants[v].correction, want);
                cn_tensor *r = run_stat(variants[v].s, t, mask, keep, variants[v].p,
                                        variants[v].correction, (mask & 1) != 0, &err);
                if (!r) fprintf(stderr, "  %s: %s\n", what, err.msg);
                if (!check_result(r, t, mask, keep, want, n, what)) failures++;
                cn_release(r);
                if (mask == (1u << t->ndim) - 1) { /* ndims == 0 means all dims */
                    variant all = variants[v];
                    int none[1] = {0};
                    cn_tensor *r2 = NULL;
                    switch (all.s) {
                    case ST_SUM: r2 = cn_sum(t, 0, none, keep, &err); break;
                    case ST_MEAN: r2 = cn_mean(t, 0, NULL, keep, &err); break;
                    case ST_VAR: r2 = cn_var(t, 0, NULL, all.correction, keep, &err); break;
                    case ST_STD: r2 = cn_std(t, 0, NULL, all.correction, keep, &err); break;
                    case ST_NORM: r2 = cn_norm(t, all.p, 0, NULL, keep, &err); break;
                    default: break;
                    }
                    if (!check_result(r2, t, mask, keep, want, n, what)) failures++;
                    cn_release(r2);
                }
            }
        }
    }
    /* max / min / argmax / argmin over each single dim */
    for (int s = ST_MAX; s <= ST_MIN; s++) {
        for (int d = 0; d < t->ndim; d++) {
            for (int keep = 0; keep < 2; keep++) {
                char what[160];
                cn_error err;
                snprintf(what, sizeof what, "%s %s dim=%d keepdim=%d", label, stat_name[s], d, keep);
                size_t n = ref_reduce(t, 1u << d, (stat)s, 0, 0, want);
                cn_tensor *values = NULL, *indices = NULL;
                int dim = keep ? d - t->ndim : d; /* negative dims on alternate runs */
                if (cn_max_dim(t, dim, keep, s == ST_MAX, &values, &indices, &err)) {
                    fprintf(stderr, "  %s: %s\n", what, err.msg);
                    failures++;
                    continue;
                }
                if (!check_result(values, t, 1u << d, keep, want, n, what)) failures++;
                ref_reduce(t, 1u << d, s == ST_MAX ? ST_ARGMAX : ST_ARGMIN, 0, 0, want);
                if (!check_result(indices, t, 1u << d, keep, want, n, what)) failures++;
                cn_tensor *ix = cn_argmax(t, true, dim, keep, s == ST_MAX, &err);
                if (!check_result(ix, t, 1u << d, keep, want, n, what)) failures++;
                cn_release(values);
                cn_release(indices);
                cn_release(ix);
            }
        }
    }
    free(want);
    return failures;
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_all_dims_3d(void) {
    int64_t shape[] = {3, 4, 5};
    cn_tensor *t = random_tensor(3, shape, -2, 2);
    CHECK(check_all_subsets(t, "3d") == 0);
    cn_release(t);
}

static void test_all_dims_4d(void) {
    int64_t shape[] = {2, 3, 4, 5};
    cn_tensor *t = random_tensor(4, shape, -2, 2);
    CHECK(check_all_subsets(t, "4d") == 0);
    cn_release(t);
}

/* A view and its clone give the same results (and both match the reference). */
static void check_view(cn_tensor *view, const char *label) {
    cn_error err;
    cn_tensor *copy = cn_clone(view, &err);
    CHECK(check_all_subsets(view, label) == 0);
    for (unsigned mask = 1; mask < (1u << view->ndim); mask++) {
        int dims[CN_MAX_DIMS];
        int nd = mask_dims(mask, view->ndim, dims, false);
        cn_tensor *a = cn_var(view, nd, dims, 1, false, &err), *b = cn_var(copy, nd, dims, 1, false, &err);
        CHECK(a && b && cn_same_shape(a, b));
        for (size_t i = 0; a && b && i < cn_numel(a); i++) CHECK(flat(a, i) == flat(b, i));
        cn_release(a);
        cn_release(b);
    }
    cn_release(copy);
}

static void test_transposed_view(void) {
    int64_t shape[] = {2, 3, 4, 5};
    cn_error err;
    cn_tensor *t = random_tensor(4, shape, -2, 2);
    cn_tensor *v = cn_transpose(t, 1, 3, &err);
    CHECK(v && !cn_is_contiguous(v));
    check_view(v, "transposed");
    int perm[] = {3, 0, 2, 1};
    cn_tensor *p = cn_permute(t, perm, &err);
    check_view(p, "permuted");
    cn_release(p);
    cn_release(v);
    cn_release(t);
}

static void test_narrowed_view(void) {
    int64_t shape[] = {4, 6, 7};
    cn_error err;
    cn_tensor *t = random_tensor(3, shape, -2, 2);
    cn_tensor *a = cn_narrow(t, 1, 2, 3, &err);
    cn_tensor *v = cn_narrow(a, 2, 1, 5, &err);
    CHECK(v && !cn_is_contiguous(v));
    check_view(v, "narrowed");
    cn_release(v);
    cn_release(a);
    cn_release(t);
}

static void test_expanded_view(void) {
    int64_t shape[] = {3, 1, 5}, big[] = {2, 3, 4, 5};
    cn_error err;
    cn_tensor *t = random_tensor(3, shape, -2, 2);
    cn_tensor *v = cn_expand(t, 4, big, &err);
    CHECK(v && v->stride[0] == 0 && v->stride[2] == 0);
    check_view(v, "expanded");
    cn_release(v);
    cn_release(t);
}

/* Sizes large enough for the parallel paths: many rows, tiles wider than one tile, one long row. */
static void test_large(void) {
    int64_t s2[] = {300, 2100}, s3[] = {6, 5, 2100}, s1[] = {200003};
    cn_tensor *a = random_tensor(2, s2, -2, 2), *b = random_tensor(3, s3, -2, 2), *c = random_tensor(1, s1, -2, 2);
    cn_tensor *ts[] = {a, b, c};
    for (int i = 0; i < 3; i++) {
        cn_tensor *t = ts[i];
        size_t cap = cn_numel(t);
        double *want = malloc(sizeof(double) * cap);
        for (unsigned mask = 1; mask < (1u << t->ndim); mask++) {
            const stat stats[] = {ST_SUM, ST_MEAN, ST_VAR, ST_NORM};
            for (int s = 0; s < 4; s++) {
                cn_error err;
                char what[96];
                snprintf(what, sizeof what, "large %d %s mask=%u", i, stat_name[stats[s]], mask);
                size_t n = ref_reduce(t, mask, stats[s], 2.0, 1, want);
                cn_tensor *r = run_stat(stats[s], t, mask, false, 2.0, 1, false, &err);
                CHECK(check_result(r, t, mask, false, want, n, what));
                cn_release(r);
            }
            if (__builtin_popcount(mask) == 1) {
                int d = __builtin_ctz(mask);
                cn_error err;
                cn_tensor *values, *indices;
                size_t n = ref_reduce(t, mask, ST_MAX, 0, 0, want);
                CHECK(cn_max_dim(t, d, false, true, &values, &indices, &err) == 0);
                CHECK(check_result(values, t, mask, false, want, n, "large max"));
                ref_reduce(t, mask, ST_ARGMAX, 0, 0, want);
                CHECK(check_result(indices, t, mask, false, want, n, "large argmax"));
                cn_release(values);
                cn_release(indices);
            }
        }
        free(want);
    }
    /* a long row with a tie in two parallel chunks and a NaN later: NaN wins, first tie before */
    float *p = cn_data(c);
    p[10] = 5.0f;
    p[150000] = 5.0f;
    cn_error err;
    cn_tensor *ix = cn_argmax(c, false, 0, false, true, &err);
    CHECK(ix && ix->ndim == 0 && flat(ix, 0) == 10.0f);
    cn_release(ix);
    p[180000] = NAN;
    p[190000] = NAN;
    ix = cn_argmax(c, false, 0, false, true, &err);
    CHECK(ix && flat(ix, 0) == 180000.0f);
    cn_tensor *m = cn_max_all(c, false, &err);
    CHECK(m && isnan(flat(m, 0)));
    cn_tensor *nrm = cn_norm(c, INFINITY, 0, NULL, false, &err);
    CHECK(nrm && isnan(flat(nrm, 0)));
    cn_tensor *sum = cn_sum(c, 0, NULL, false, &err);
    CHECK(sum && isnan(flat(sum, 0)));
    cn_release(ix);
    cn_release(m);
    cn_release(nrm);
    cn_release(sum);
    cn_release(a);
    cn_release(b);
    cn_release(c);
}

static void test_sum_values(void) {
    int64_t shape[] = {2, 3};
    const float v[] = {1, 2, 3, 4, 5, 6};
    cn_tensor *t = tensor_of(2, shape, v);
    cn_error err;
    int d0 = 0, d1 = -1;
    cn_tensor *s0 = cn_sum(t, 1, &d0, false, &err), *s1 = cn_sum(t, 1, &d1, true, &err);
    cn_tensor *all = cn_sum(t, 0, NULL, false, &err), *allk = cn_sum(t, 0, NULL, true, &err);
    CHECK(s0->ndim == 1 && s0->shape[0] == 3);
    CHECK(flat(s0, 0) == 5 && flat(s0, 1) == 7 && flat(s0, 2) == 9);
    CHECK(s1->ndim == 2 && s1->shape[0] == 2 && s1->shape[1] == 1);
    CHECK(flat(s1, 0) == 6 && flat(s1, 1) == 15);
    CHECK(all->ndim == 0 && flat(all, 0) == 21);
    CHECK(allk->ndim == 2 && allk->shape[0] == 1 && allk->shape[1] == 1 && flat(allk, 0) == 21);
    cn_tensor *mean = cn_mean(t, 0, NULL, false, &err);
    CHECK(mean->ndim == 0 && flat(mean, 0) == 3.5f);
    cn_release(s0);
    cn_release(s1);
    cn_release(all);
    cn_release(allk);
    cn_release(mean);
    cn_release(t);
}

/* var/std with correction, and torch's results when N - correction <= 0. */
static void test_var_correction(void) {
    int64_t shape[] = {4};
    const float v[] = {1, 2, 3, 4};
    cn_tensor *t = tensor_of(1, shape, v);
    cn_error err;
    cn_tensor *v1 = cn_var(t, 0, NULL, 1, false, &err), *v0 = cn_var(t, 0, NULL, 0, false, &err);
    cn_tensor *s1 = cn_std(t, 0, NULL, 1, false, &err), *s0 = cn_std(t, 0, NULL, 0, false, &err);
    CHECK_CLOSE(flat(v1, 0), 5.0 / 3.0, 1e-6, 0);
    CHECK_CLOSE(flat(v0, 0), 1.25, 1e-6, 0);
    CHECK_CLOSE(flat(s1, 0), sqrt(5.0 / 3.0), 1e-6, 0);
    CHECK_CLOSE(flat(s0, 0), sqrt(1.25), 1e-6, 0);
    cn_tensor *v4 = cn_var(t, 0, NULL, 4, false, &err), *v5 = cn_var(t, 0, NULL, 5, false, &err);
    CHECK(isinf(flat(v4, 0)) && flat(v4, 0) > 0); /* 5 / 0 */
    CHECK(isinf(flat(v5, 0)) && flat(v5, 0) > 0); /* 5 / max(0, -1) */
    int64_t one[] = {1};
    cn_tensor *single = tensor_of(1, one, v);
    cn_tensor *vs = cn_var(single, 0, NULL, 1, false, &err), *vs0 = cn_var(single, 0, NULL, 0, false, &err);
    CHECK(isnan(flat(vs, 0)));  /* 0 / 0 */
    CHECK(flat(vs0, 0) == 0.0f);
    /* a constant column stays exactly 0 (two-pass in double) */
    int64_t big[] = {1000};
    cn_tensor *c = cn_full(1, big, 0.1f, &err);
    cn_tensor *vc = cn_var(c, 0, NULL, 1, false, &err);
    CHECK(flat(vc, 0) == 0.0f);
    cn_tensor *ts[] = {t, v1, v0, s1, s0, v4, v5, single, vs, vs0, c, vc};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) cn_release(ts[i]);
}

static void test_norm_values(void) {
    int64_t shape[] = {2, 2};
    const float v[] = {3, -4, 0, 1};
    cn_tensor *t = tensor_of(2, shape, v);
    cn_error err;
    cn_tensor *n2 = cn_norm(t, 2, 0, NULL, false, &err), *n1 = cn_norm(t, 1, 0, NULL, false, &err);
    cn_tensor *ni = cn_norm(t, INFINITY, 0, NULL, false, &err), *n0 = cn_norm(t, 0, 0, NULL, false, &err);
    cn_tensor *n3 = cn_norm(t, 3, 0, NULL, false, &err);
    int d1 = 1;
    cn_tensor *rows = cn_norm(t, 2, 1, &d1, true, &err);
    CHECK_CLOSE(flat(n2, 0), sqrt(26.0), 1e-6, 0);
    CHECK(flat(n1, 0) == 8.0f);
    CHECK(flat(ni, 0) == 4.0f);
    CHECK(flat(n0, 0) == 3.0f);
    CHECK_CLOSE(flat(n3, 0), cbrt(27.0 + 64.0 + 1.0), 1e-6, 0);
    CHECK(rows->ndim == 2 && rows->shape[0] == 2 && rows->shape[1] == 1);
    CHECK(flat(rows, 0) == 5.0f && flat(rows, 1) == 1.0f);
    cn_tensor *bad = cn_norm(t, NAN, 0, NULL, false, &err);
    CHECK(bad == NULL && strstr(err.msg, "norm") != NULL);
    cn_tensor *ts[] = {t, n2, n1, ni, n0, n3, rows};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) cn_release(ts[i]);
}

/* Ties give the first index; a NaN wins over everything, at its first occurrence. */
static void test_max_ties_and_nan(void) {
    int64_t shape[] = {3, 4};
    const float v[] = {1, 7, 7, 2,   /* tie: first 7 at 1 */
                       5, NAN, 9, NAN, /* NaN at 1 */
                       -3, -3, 0, -3}; /* min tie at 0 */
    cn_tensor *t = tensor_of(2, shape, v);
    cn_error err;
    cn_tensor *values, *indices;
    CHECK(cn_max_dim(t, 1, false, true, &values, &indices, &err) == 0);
    CHECK(flat(values, 0) == 7 && flat(indices, 0) == 1);
    CHECK(isnan(flat(values, 1)) && flat(indices, 1) == 1);
    CHECK(flat(values, 2) == 0 && flat(indices, 2) == 2);
    cn_release(values);
    cn_release(indices);
    CHECK(cn_max_dim(t, -1, true, false, &values, &indices, &err) == 0);
    CHECK(values->ndim == 2 && values->shape[1] == 1 && indices->shape[1] == 1);
    CHECK(flat(values, 0) == 1 && flat(indices, 0) == 0);
    CHECK(isnan(flat(values, 1)) && flat(indices, 1) == 1);
    CHECK(flat(values, 2) == -3 && flat(indices, 2) == 0);
    cn_release(values);
    cn_release(indices);
    /* over dim 0, values only */
    CHECK(cn_max_dim(t, 0, false, true, &values, NULL, &err) == 0);
    CHECK(flat(values, 0) == 5 && isnan(flat(values, 1)) && flat(values, 2) == 9 && isnan(flat(values, 3)));
    cn_release(values);
    cn_tensor *ix = cn_argmax(t, true, 0, false, false, &err);
    CHECK(flat(ix, 0) == 2 && flat(ix, 1) == 1 && flat(ix, 2) == 2 && flat(ix, 3) == 1);
    cn_release(ix);
    /* whole tensor */
    cn_tensor *mx = cn_max_all(t, true, &err), *flat_ix = cn_argmax(t, false, 0, false, true, &err);
    CHECK(mx->ndim == 0 && isnan(flat(mx, 0)));
    CHECK(flat_ix->ndim == 0 && flat(flat_ix, 0) == 5);
    cn_release(mx);
    cn_release(flat_ix);
    /* without NaN: first of the tied maxima, flat; keepdim gives all-ones shape */
    int64_t s2[] = {2, 3};
    const float w[] = {4, 1, 9, 9, -2, 1};
    cn_tensor *u = tensor_of(2, s2, w);
    mx = cn_max_all(u, true, &err);
    cn_tensor *mn = cn_max_all(u, false, &err);
    flat_ix = cn_argmax(u, false, 0, true, true, &err);
    cn_tensor *min_ix = cn_argmax(u, false, 0, false, false, &err);
    CHECK(flat(mx, 0) == 9 && flat(mn, 0) == -2);
    CHECK(flat_ix->ndim == 2 && flat_ix->shape[0] == 1 && flat_ix->shape[1] == 1 && flat(flat_ix, 0) == 2);
    CHECK(min_ix->ndim == 0 && flat(min_ix, 0) == 4);
    cn_tensor *ts[] = {mx, mn, flat_ix, min_ix, u, t};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) cn_release(ts[i]);
}

/* Reductions of and over empty dims, and of 0-d tensors. */
static void test_empty_and_scalar(void) {
    int64_t shape[] = {3, 0};
    cn_error err;
    cn_tensor *t = cn_empty(2, shape, &err);
    int d1 = 1, d0 = 0;
    cn_tensor *s = cn_sum(t, 1, &d1, false, &err), *m = cn_mean(t, 1, &d1, false, &err);
    cn_tensor *s0 = cn_sum(t, 1, &d0, false, &err);
    CHECK(s && s->ndim == 1 && s->shape[0] == 3 && flat(s, 0) == 0 && flat(s, 2) == 0);
    CHECK(m && isnan(flat(m, 1)));
    CHECK(s0 && s0->ndim == 1 && s0->shape[0] == 0);
    cn_tensor *v = NULL, *ix = NULL;
    CHECK(cn_max_dim(t, 1, false, true, &v, &ix, &err) == -1 && v == NULL && ix == NULL);
    CHECK(strstr(err.msg, "max") && strstr(err.msg, "[3, 0]"));
    CHECK(cn_max_all(t, false, &err) == NULL && strstr(err.msg, "min") && strstr(err.msg, "[3, 0]"));
    CHECK(cn_argmax(t, false, 0, false, true, &err) == NULL && strstr(err.msg, "argmax"));
    CHECK(cn_norm(t, INFINITY, 1, &d1, false, &err) == NULL && strstr(err.msg, "norm"));
    cn_release(s);
    cn_release(m);
    cn_release(s0);
    cn_release(t);

    cn_tensor *x = cn_scalar(2.5f, &err);
    int dm1 = -1;
    cn_tensor *a = cn_sum(x, 0, NULL, false, &err), *b = cn_mean(x, 1, &d0, true, &err);
    cn_tensor *c = cn_norm(x, 2, 1, &dm1, false, &err);
    CHECK(a && a->ndim == 0 && flat(a, 0) == 2.5f);
    CHECK(b && b->ndim == 0 && flat(b, 0) == 2.5f);
    CHECK(c && c->ndim == 0 && flat(c, 0) == 2.5f);
    CHECK(cn_max_dim(x, 0, false, true, &v, &ix, &err) == 0);
    CHECK(v->ndim == 0 && flat(v, 0) == 2.5f && flat(ix, 0) == 0);
    CHECK(cn_sum(x, 1, &d1, false, &err) == NULL && strstr(err.msg, "dim 1 out of range"));
    cn_tensor *ts[] = {x, a, b, c, v, ix};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) cn_release(ts[i]);
}

/* Reducing adjacent dims of a contiguous tensor allocates only the result. */
static void test_no_copies(void) {
    int64_t shape[] = {4, 5, 6, 7};
    cn_tensor *t = random_tensor(4, shape, -2, 2);
    int d12[] = {1, 2}, d3[] = {3};
    cn_error err;
    size_t before = cn_memory_allocated_total();
    cn_tensor *s = cn_sum(t, 2, d12, false, &err);
    CHECK(cn_memory_allocated_total() - before == 4 * 7 * sizeof(float));
    before = cn_memory_allocated_total();
    cn_tensor *v = cn_var(t, 1, d3, 1, true, &err);
    CHECK(cn_memory_allocated_total() - before == 4 * 5 * 6 * sizeof(float));
    cn_release(s);
    cn_release(v);
    cn_release(t);
}

static void test_errors(void) {
    int64_t shape[] = {2, 3};
    cn_error err;
    cn_tensor *t = cn_zeros(2, shape, &err);
    int bad[] = {2}, neg[] = {-3}, rep[] = {0, -2}, ok[] = {1, 0};
    CHECK(cn_sum(t, 1, bad, false, &err) == NULL);
    CHECK(strcmp(err.msg, "sum: dim 2 out of range for a 2-D tensor of shape [2, 3]") == 0);
    CHECK(cn_mean(t, 1, neg, false, &err) == NULL);
    CHECK(strstr(err.msg, "mean: dim -3 out of range") && strstr(err.msg, "[2, 3]"));
    CHECK(cn_var(t, 2, rep, 1, false, &err) == NULL);
    CHECK(strcmp(err.msg, "var: dim -2 appears more than once in the dims for shape [2, 3]") == 0);
    CHECK(cn_std(t, 2, rep, 1, false, &err) == NULL && strncmp(err.msg, "std:", 4) == 0);
    CHECK(cn_norm(t, 2, 1, bad, false, &err) == NULL && strncmp(err.msg, "norm:", 5) == 0);
    cn_tensor *v = NULL, *ix = NULL;
    CHECK(cn_max_dim(t, 5, false, false, &v, &ix, &err) == -1 && v == NULL && ix == NULL);
    CHECK(strcmp(err.msg, "min: dim 5 out of range for a 2-D tensor of shape [2, 3]") == 0);
    CHECK(cn_argmax(t, true, -7, false, true, &err) == NULL && strstr(err.msg, "argmax: dim -7"));
    /* dims in any order give the same result as sorted ones */
    cn_tensor *a = cn_sum(t, 2, ok, false, &err);
    CHECK(a && a->ndim == 0);
    cn_release(a);
    cn_release(t);
}

int main(void) {
    test_seed(12345u);
    RUN(test_all_dims_3d);
    RUN(test_all_dims_4d);
    RUN(test_transposed_view);
    RUN(test_narrowed_view);
    RUN(test_expanded_view);
    RUN(test_large);
    RUN(test_sum_values);
    RUN(test_var_correction);
    RUN(test_norm_values);
    RUN(test_max_ties_and_nan);
    RUN(test_empty_and_scalar);
    RUN(test_no_copies);
    RUN(test_errors);
    return CTEST_SUMMARY("reduce");
}
