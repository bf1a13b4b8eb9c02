/* metrics.c — feature statistics, the Fréchet distance (FID) and the kernel distance (KID).
 *
 * Statistics (Chan, Golub & LeVeque 1979): a batch B of n_b rows is centred on its own mean m_b
 * and its scatter X_c^T X_c added to the running scatter M2 (one dsyrk), then the two means are
 * merged, with delta = m_b - m_a and n = n_a + n_b:
 *
 *     M2 += X_c^T X_c + delta delta^T n_a n_b / n,      mean += delta n_b / n,
 *
 * and cov = M2 / (n - 1). Rows are taken in chunks of CHUNK, so the split of the data into
 * batches only changes rounding. M2 keeps its upper triangle (row-major) only.
 *
 * Fréchet distance: with cov1 = V Lambda V^T (dsyevd) and U = Lambda^(1/2) V^T, the matrix
 * cov1^(1/2) cov2 cov1^(1/2) = V (U cov2 U^T) V^T has the eigenvalues of the symmetric
 * U cov2 U^T, and those are the eigenvalues of cov1 cov2 whose square roots scipy's sqrtm sums
 * in pytorch-fid. Rows of U with lambda <= 0 (round-off on a singular covariance) are zero after
 * the clamp and are dropped, so the second matrix is k x k with k the numerical rank of cov1.
 *
 * KID: kernel Gram matrices of a subset in double through dsyrk / dgemm, the cubic kernel and the
 * unbiased sums in OpenMP loops (never inside BLAS).
 */
#include <cblas.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "rng.h"

/* LAPACK (shipped in OpenBLAS): symmetric eigendecomposition, divide and conquer. The two
 * trailing arguments are the lengths of the character arguments, as gfortran passes them. */
void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda, double *w,
             double *work, const int *lwork, int *iwork, const int *liwork, int *info, size_t jobz_len,
             size_t uplo_len);

#define CHUNK 512        /* rows converted to double and centred at a time */
#define MAX_DIM 32768    /* LAPACK's 32-bit workspace sizes stay in range below this */
#define PAR_MIN 65536    /* kernel entries below which the sums run on one thread */

struct cn_feature_stats {
    int64_t count, dim;
    double *mean;  /* dim */
    double *m2;    /* dim x dim, upper triangle */
    double *chunk; /* CHUNK x dim scratch, allocated with the rest */
};

static int set_dim(cn_feature_stats *s, int64_t dim, cn_error *err) {
    if (dim < 1 || dim > MAX_DIM) {
        cn_error_set(err, "feature_stats: the feature dimension must be in 1..%d, got %" PRId64, MAX_DIM, dim);
        return -1;
    }
    const size_t d = (size_t)dim;
    double *mem = calloc(d + d * d + (size_t)CHUNK * d, sizeof(double));
    if (!mem) {
        cn_error_set(err, "feature_stats: out of memory for %" PRId64 "-dimensional statistics", dim);
        return -1;
    }
    s->dim = dim;
    s->mean = mem;
    s->m2 = mem + d;
    s->chunk = mem + d + d * d;
    return 0;
}

cn_feature_stats *cn_feature_stats_new(int64_t dim, cn_error *err) {
    cn_feature_stats *s = calloc(1, sizeof *s);
    if (!s) {
        cn_error_set(err, "feature_stats: out of memory");
        return NULL;
    }
    if (dim != 0 && set_dim(s, dim, err)) {
        free(s);
        return NULL;
    }
    return s;
}

void cn_feature_stats_free(cn_feature_stats *s) {
    if (!s) return;
    free(s->mean);
    free(s);
}

int64_t cn_feature_stats_count(const cn_feature_stats *s) { return s->count; }
int64_t cn_feature_stats_dim(const cn_feature_stats *s) { return s->dim; }
const double *cn_feature_stats_mean(const cn_feature_stats *s) { return s->mean; }

/* Merges a group of nb vectors with mean mb (scatter already in s->m2) into s's count and mean. */
static void merge_mean(cn_feature_stats *s, int64_t nb, const double *mb) {
    const int64_t d = s->dim, na = s->count, n = na + nb;
    if (nb == 0) return;
    double *delta = s->chunk; /* free now: the scatter is in */
    for (int64_t j = 0; j < d; j++) delta[j] = mb[j] - s->mean[j];
    if (na > 0)
        cblas_dsyr(CblasRowMajor, CblasUpper, (int)d, (double)na * (double)nb / (double)n, delta, 1, s->m2, (int)d);
    for (int64_t j = 0; j < d; j++) s->mean[j] += delta[j] * ((double)nb / (double)n);
    s->count = n;
}

int cn_feature_stats_add(cn_feature_stats *s, const cn_tensor *features, cn_error *err) {
    char sh[96];
    if (features->ndim != 2) {
        cn_shape_str(sh, sizeof sh, features->ndim, features->shape);
        cn_error_set(err, "feature_stats: features must be 2-D [N, D], got %s", sh);
        return -1;
    }
    const int64_t rows = features->shape[0], d = features->shape[1];
    if (s->dim == 0 && rows > 0 && set_dim(s, d, err)) return -1;
    if (s->dim != 0 && d != s->dim) {
        cn_shape_str(sh, sizeof sh, features->ndim, features->shape);
        cn_error_set(err, "feature_stats: features %s have dimension %" PRId64 ", the statistics %" PRId64, sh, d,
                     s->dim);
        return -1;
    }
    const float *base = cn_data(features);
    const int64_t s0 = features->stride[0], s1 = features->stride[1];
    double *mb = malloc((size_t)(d > 0 ? d : 1) * sizeof(double));
    if (!mb) {
        cn_error_set(err, "feature_stats: out of memory");
        return -1;
    }
    for (int64_t r0 = 0; r0 < rows; r0 += CHUNK) {
        const int64_t nb = rows - r0 < CHUNK ? rows - r0 : CHUNK;
        double *x = s->chunk;
        for (int64_t j = 0; j < d; j++) mb[j] = 0.0;
        for (int64_t i = 0; i < nb; i++) {
            const float *row = base + (r0 + i) * s0;
            for (int64_t j = 0; j < d; j++) {
                x[i * d + j] = row[j * s1];
                mb[j] += x[i * d + j];
            }
        }
        for (int64_t j = 0; j < d; j++) mb[j] /= (double)nb;
        for (int64_t i = 0; i < nb; i++)
            for (int64_t j = 0; j < d; j++) x[i * d + j] -= mb[j];
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)d, (int)nb, 1.0, x, (int)d, 1.0, s->m2, (int)d);
        merge_mean(s, nb, mb);
    }
    free(mb);
    return 0;
}

int cn_feature_stats_merge(cn_feature_stats *s, const cn_feature_stats *other, cn_error *err) {
    if (other->count == 0) return 0;
    if (s->dim == 0 && set_dim(s, other->dim, err)) return -1;
    if (s->dim != other->dim) {
        cn_error_set(err, "feature_stats: cannot merge statistics of dimension %" PRId64 " into %" PRId64,
                     other->dim, s->dim);
        return -1;
    }
    const int64_t d = s->dim, nb = other->count;
    double *mb = malloc((size_t)d * sizeof(double));
    if (!mb) {
        cn_error_set(err, "feature_stats: out of memory");
        return -1;
    }
    memcpy(mb, other->mean, (size_t)d * sizeof(double)); /* other may be s itself */
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = i; j < d; j++) s->m2[i * d + j] += other->m2[i * d + j];
    merge_mean(s, nb, mb);
    free(mb);
    return 0;
}

int cn_feature_stats_cov(const cn_feature_stats *s, double *cov, cn_error *err) {
    if (s->count < 2) {
        cn_error_set(err, "feature_stats: the covariance needs at least 2 feature vectors, have %" PRId64, s->count);
        return -1;
    }
    const int64_t d = s->dim;
    const double scale = 1.0 / (double)(s->count - 1);
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = i; j < d; j++) cov[i * d + j] = cov[j * d + i] = s->m2[i * d + j] * scale;
    return 0;
}

cn_feature_stats *cn_feature_stats_from(int64_t count, int64_t dim, const double *mean, const double *cov,
                                        cn_error *err) {
    if (count < 2) {
        cn_error_set(err, "feature_stats: saved statistics need a count of at least 2, got %" PRId64, count);
        return NULL;
    }
    cn_feature_stats *s = cn_feature_stats_new(dim, err);
    if (!s) return NULL;
    const double scale = (double)(count - 1);
    for (int64_t i = 0; i < dim; i++) {
        s->mean[i] = mean[i];
        for (int64_t j = i; j < dim; j++) s->m2[i * dim + j] = cov[i * dim + j] * scale;
    }
    s->count = count;
    return s;
}

/* ---- symmetric eigendecomposition ------------------------------------------------------------ */

/* Eigenvalues (ascending) of the symmetric d x d matrix a into w; with vectors, row j of a becomes
 * the eigenvector of w[j] (LAPACK's column j, read row-major). a is destroyed either way. */
static int eigh(const char *fname, int d, double *a, double *w, bool vectors, cn_error *err) {
    const char jobz = vectors ? 'V' : 'N', uplo = 'U';
    int lwork = -1, liwork = -1, info = 0, iwork_size = 0;
    double work_size = 0.0;
    dsyevd_(&jobz, &uplo, &d, a, &d, w, &work_size, &lwork, &iwork_size, &liwork, &info, 1, 1);
    if (info != 0) {
        cn_error_set(err, "%s: LAPACK dsyevd workspace query failed (info %d)", fname, info);
        return -1;
    }
    lwork = (int)work_size + 1;
    liwork = iwork_size > 1 ? iwork_size : 1;
    double *work = malloc((size_t)lwork * sizeof(double));
    int *iwork = malloc((size_t)liwork * sizeof(int));
    if (!work || !iwork) {
        free(work), free(iwork);
        cn_error_set(err, "%s: out of memory for a %d x %d eigendecomposition", fname, d, d);
        return -1;
    }
    dsyevd_(&jobz, &uplo, &d, a, &d, w, work, &lwork, iwork, &liwork, &info, 1, 1);
    free(work), free(iwork);
    if (info != 0) {
        cn_error_set(err, "%s: LAPACK dsyevd did not converge (info %d)", fname, info);
        return -1;
    }
    return 0;
}

static int check_finite(const char *fname, const char *what, size_t n, const double *v, cn_error *err) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i])) {
            cn_error_set(err, "%s: %s has a non-finite entry (%g at %zu)", fname, what, v[i], i);
            return -1;
        }
    return 0;
}

static int check_square_dim(const char *fname, int64_t d, cn_error *err) {
    if (d < 1 || d > MAX_DIM) {
        cn_error_set(err, "%s: the dimension must be in 1..%d, got %" PRId64, fname, MAX_DIM, d);
        return -1;
    }
    return 0;
}

int cn_sqrtm_psd(int64_t d, const double *a, double *out, cn_error *err) {
    if (check_square_dim("sqrtm_psd", d, err) || check_finite("sqrtm_psd", "the matrix", (size_t)(d * d), a, err))
        return -1;
    const size_t dd = (size_t)(d * d);
    double *e = malloc((dd + (size_t)d) * sizeof(double));
    if (!e) {
        cn_error_set(err, "sqrtm_psd: out of memory");
        return -1;
    }
    double *w = e + dd;
    memcpy(e, a, dd * sizeof(double));
    if (eigh("sqrtm_psd", (int)d, e, w, true, err)) {
        free(e);
        return -1;
    }
    for (int64_t j = 0; j < d; j++) { /* row j of e: v_j lambda_j^(1/4), so out = e^T e */
        const double f = sqrt(sqrt(w[j] > 0.0 ? w[j] : 0.0));
        for (int64_t i = 0; i < d; i++) e[j * d + i] *= f;
    }
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)d, (int)d, (int)d, 1.0, e, (int)d, e, (int)d, 0.0, out,
                (int)d);
    free(e);
    return 0;
}

int cn_frechet_distance(int64_t d, const double *mu1, const double *cov1, const double *mu2, const double *cov2,
                        double *out, cn_error *err) {
    const char *fname = "fid";
    const size_t dd = (size_t)(d * d);
    if (check_square_dim(fname, d, err) || check_finite(fname, "the first mean", (size_t)d, mu1, err) ||
        check_finite(fname, "the second mean", (size_t)d, mu2, err) ||
        check_finite(fname, "the first covariance", dd, cov1, err) ||
        check_finite(fname, "the second covariance", dd, cov2, err))
        return -1;
    double diff2 = 0.0, tr1 = 0.0, tr2 = 0.0;
    for (int64_t i = 0; i < d; i++) {
        const double delta = mu1[i] - mu2[i];
        diff2 += delta * delta;
        tr1 += cov1[i * d + i];
        tr2 += cov2[i * d + i];
    }
    /* u: eigenvectors, then U; t: U cov2; m: U cov2 U^T; w: eigenvalues */
    double *mem = malloc((3 * dd + (size_t)d) * sizeof(double));
    if (!mem) {
        cn_error_set(err, "%s: out of memory for %" PRId64 "-dimensional covariances", fname, d);
        return -1;
    }
    double *u = mem, *t = mem + dd, *m = mem + 2 * dd, *w = mem + 3 * dd;
    memcpy(u, cov1, dd * sizeof(double));
    if (eigh(fname, (int)d, u, w, true, err)) {
        free(mem);
        return -1;
    }
    int64_t k = 0; /* rows of U kept: lambda > 0 */
    for (int64_t j = 0; j < d; j++) {
        if (!(w[j] > 0.0)) continue;
        const double f = sqrt(w[j]);
        for (int64_t i = 0; i < d; i++) u[k * d + i] = u[j * d + i] * f;
        k++;
    }
    double tr_covmean = 0.0;
    if (k > 0) {
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)k, (int)d, (int)d, 1.0, u, (int)d, cov2, (int)d,
                    0.0, t, (int)d);
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)k, (int)k, (int)d, 1.0, t, (int)d, u, (int)d, 0.0, m,
                    (int)k);
        for (int64_t i = 0; i < k; i++) /* symmetric up to round-off: use the average */
            for (int64_t j = i + 1; j < k; j++) m[i * k + j] = m[j * k + i] = 0.5 * (m[i * k + j] + m[j * k + i]);
        if (eigh(fname, (int)k, m, w, false, err)) {
            free(mem);
            return -1;
        }
        for (int64_t j = 0; j < k; j++) tr_covmean += sqrt(w[j] > 0.0 ? w[j] : 0.0);
    }
    free(mem);
    *out = diff2 + tr1 + tr2 - 2.0 * tr_covmean;
    return 0;
}

int cn_frechet_distance_stats(const cn_feature_stats *a, const cn_feature_stats *b, double *out, cn_error *err) {
    if (a->count < 2 || b->count < 2) {
        cn_error_set(err, "fid: each set needs at least 2 feature vectors, have %" PRId64 " and %" PRId64, a->count,
                     b->count);
        return -1;
    }
    if (a->dim != b->dim) {
        cn_error_set(err, "fid: feature dimensions differ: %" PRId64 " and %" PRId64, a->dim, b->dim);
        return -1;
    }
    const size_t dd = (size_t)(a->dim * a->dim);
    double *cov = malloc(2 * dd * sizeof(double));
    if (!cov) {
        cn_error_set(err, "fid: out of memory");
        return -1;
    }
    int status = cn_feature_stats_cov(a, cov, err) || cn_feature_stats_cov(b, cov + dd, err) ||
                 cn_frechet_distance(a->dim, a->mean, cov, b->mean, cov + dd, out, err);
    free(cov);
    return status ? -1 : 0;
}

/* ---- KID ------------------------------------------------------------------------------------- */

static int check_features(const char *fname, const cn_tensor *x, const cn_tensor *y, cn_error *err) {
    char sx[96], sy[96];
    cn_shape_str(sx, sizeof sx, x->ndim, x->shape);
    cn_shape_str(sy, sizeof sy, y->ndim, y->shape);
    if (x->ndim != 2 || y->ndim != 2) {
        cn_error_set(err, "%s: features must be 2-D [N, D], got %s and %s", fname, sx, sy);
        return -1;
    }
    if (x->shape[1] != y->shape[1]) {
        cn_error_set(err, "%s: feature dimensions differ: %s and %s", fname, sx, sy);
        return -1;
    }
    if (x->shape[1] < 1 || x->shape[1] > INT32_MAX / 2) {
        cn_error_set(err, "%s: features %s have an unsupported dimension", fname, sx);
        return -1;
    }
    return 0;
}

/* Rows idx[0..m) of t (all rows when idx is NULL) into out[m, D] in double. */
static void gather_rows(const cn_tensor *t, const int64_t *idx, int64_t m, double *out) {
    const int64_t d = t->shape[1], s0 = t->stride[0], s1 = t->stride[1];
    const float *base = cn_data(t);
    for (int64_t i = 0; i < m; i++) {
        const float *row = base + (idx ? idx[i] : i) * s0;
        for (int64_t j = 0; j < d; j++) out[i * d + j] = row[j * s1];
    }
}

static inline double poly3(double dot, double inv_d) {
    const double v = dot * inv_d + 1.0;
    return v * v * v;
}

/* Sum of k over the strict upper triangle of the Gram matrix g[m, m] (upper part filled). */
static double sum_upper(const double *g, int64_t m, double inv_d) {
    double sum = 0.0;
#pragma omp parallel for schedule(dynamic, 16) reduction(+ : sum) if (m * m > PAR_MIN)
    for (int64_t i = 0; i < m; i++) {
        double row = 0.0;
        for (int64_t j = i + 1; j < m; j++) row += poly3(g[i * m + j], inv_d);
        sum += row;
    }
    return sum;
}

static double sum_all(const double *g, int64_t m, int64_t n, double inv_d) {
    double sum = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : sum) if (m * n > PAR_MIN)
    for (int64_t i = 0; i < m; i++) {
        double row = 0.0;
        for (int64_t j = 0; j < n; j++) row += poly3(g[i * n + j], inv_d);
        sum += row;
    }
    return sum;
}

/* Unbiased MMD^2 of the rows of x[m, d] and y[n, d]; g: scratch of max(m, n)^2 and m n doubles. */
static double mmd2(const double *x, int64_t m, const double *y, int64_t n, int64_t d, double *g) {
    const double inv_d = 1.0 / (double)d;
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, (int)m, (int)d, 1.0, x, (int)d, 0.0, g, (int)m);
    const double kxx = 2.0 * sum_upper(g, m, inv_d);
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, (int)n, (int)d, 1.0, y, (int)d, 0.0, g, (int)n);
    const double kyy = 2.0 * sum_upper(g, n, inv_d);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)n, (int)d, 1.0, x, (int)d, y, (int)d, 0.0, g,
                (int)n);
    const double kxy = sum_all(g, m, n, inv_d);
    return kxx / ((double)m * (double)(m - 1)) + kyy / ((double)n * (double)(n - 1)) -
           2.0 * kxy / ((double)m * (double)n);
}

/* Scratch for mmd2 of m and n rows of dimension d; NULL when out of memory (err filled). */
static double *mmd2_scratch(const char *fname, int64_t m, int64_t n, int64_t d, double **x, double **y, double **g,
                            cn_error *err) {
    const int64_t big = m > n ? m : n;
    const size_t words = (size_t)(m * d) + (size_t)(n * d) + (size_t)(big * big > m * n ? big * big : m * n);
    double *mem = malloc(words * sizeof(double));
    if (!mem) {
        cn_error_set(err, "%s: out of memory for %" PRId64 " and %" PRId64 " rows of dimension %" PRId64, fname, m, n,
                     d);
        return NULL;
    }
    *x = mem, *y = mem + m * d, *g = mem + m * d + n * d;
    return mem;
}

int cn_mmd2_poly(const cn_tensor *x, const cn_tensor *y, double *out, cn_error *err) {
    if (check_features("mmd2", x, y, err)) return -1;
    const int64_t m = x->shape[0], n = y->shape[0], d = x->shape[1];
    if (m < 2 || n < 2 || m > INT32_MAX / 2 || n > INT32_MAX / 2) {
        cn_error_set(err, "mmd2: each set needs at least 2 rows, have %" PRId64 " and %" PRId64, m, n);
        return -1;
    }
    double *xd, *yd, *g;
    double *mem = mmd2_scratch("mmd2", m, n, d, &xd, &yd, &g, err);
    if (!mem) return -1;
    gather_rows(x, NULL, m, xd);
    gather_rows(y, NULL, n, yd);
    *out = mmd2(xd, m, yd, n, d, g);
    free(mem);
    return 0;
}

/* Uniform integer in [0, k) from the engine RNG, without modulo bias. */
static int64_t uniform_below(int64_t k) {
    const uint64_t kk = (uint64_t)k, threshold = (0 - kk) % kk; /* 2^64 mod k */
    uint64_t r;
    do r = cn_rng_u64();
    while (r < threshold);
    return (int64_t)(r % kk);
}

/* The first m entries of a fresh uniform permutation of 0..n-1 into perm[0..m) (perm has n). */
static void draw_subset(int64_t *perm, int64_t n, int64_t m) {
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    for (int64_t i = 0; i < m; i++) {
        const int64_t j = i + uniform_below(n - i), tmp = perm[i];
        perm[i] = perm[j], perm[j] = tmp;
    }
}

int cn_kid(const cn_tensor *x, const cn_tensor *y, int n_subsets, int64_t subset_size, double *values, double *mean,
           double *std, cn_error *err) {
    if (check_features("kid", x, y, err)) return -1;
    const int64_t nx = x->shape[0], ny = y->shape[0], d = x->shape[1], m = subset_size;
    if (n_subsets < 1) {
        cn_error_set(err, "kid: the number of subsets must be at least 1, got %d", n_subsets);
        return -1;
    }
    if (m < 2 || m > nx || m > ny) {
        cn_error_set(err, "kid: subset_size must be in 2..min(N) = %" PRId64 " for %" PRId64 " and %" PRId64
                     " feature vectors, got %" PRId64, nx < ny ? nx : ny, nx, ny, m);
        return -1;
    }
    double *xd, *yd, *g;
    double *mem = mmd2_scratch("kid", m, m, d, &xd, &yd, &g, err);
    int64_t *perm = mem ? malloc((size_t)(nx > ny ? nx : ny) * sizeof(int64_t)) : NULL;
    double *vals = mem ? malloc((size_t)n_subsets * sizeof(double)) : NULL;
    if (!mem || !perm || !vals) {
        free(mem), free(perm), free(vals);
        if (mem) cn_error_set(err, "kid: out of memory");
        return -1;
    }
    double sum = 0.0;
    for (int k = 0; k < n_subsets; k++) {
        draw_subset(perm, nx, m);
        gather_rows(x, perm, m, xd);
        draw_subset(perm, ny, m);
        gather_rows(y, perm, m, yd);
        vals[k] = mmd2(xd, m, yd, m, d, g);
        sum += vals[k];
    }
    const double mu = sum / n_subsets;
    double var = 0.0;
    for (int k = 0; k < n_subsets; k++) var += (vals[k] - mu) * (vals[k] - mu);
    if (values) memcpy(values, vals, (size_t)n_subsets * sizeof(double));
    *mean = mu;
    *std = sqrt(var / n_subsets);
    free(mem), free(perm), free(vals);
    return 0;
}
