/* test_metrics.c — the metrics C API (metrics.h) on small cases with answers known in closed form
 * or computed here straight from the definitions (the fixtures against scikit-image, pytorch-msssim,
 * SciPy and torchmetrics are in tests/lua/test_metrics.lua).
 *
 * SSIM is checked against a direct 2-D evaluation (the full 11 x 11 window over reflect-indexed
 * pixels, no separable filtering) and against constant images; MS-SSIM with one scale against
 * SSIM's interior mean; PSNR against a known MSE; the PSD square root on a 2 x 2 matrix; the
 * Fréchet distance against the closed forms for 1-D and 2 x 2 Gaussians; feature statistics
 * merged over uneven batches against a two-pass computation; MMD^2 against a brute-force sum and
 * KID with subset = whole set; then error messages.
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ctest.h"
#include "metrics.h"
#include "rng.h"
#include "test_util.h"

/* ---- helpers ----------------------------------------------------------------------------- */


static cn_tensor *full(int ndim, const int64_t *shape, float v) {
    cn_error err;
    return cn_full(ndim, shape, v, &err);
}

static int64_t reflect_ref(int64_t i, int64_t n) { /* scipy 'reflect' by repeated mirroring */
    while (i < 0 || i >= n) i = i < 0 ? -i - 1 : 2 * n - i - 1;
    return i;
}

/* SSIM map value at (i, j) of plane (x, y) [h, w] from the definition, 2-D window, in double. */
static double ssim_direct(const float *x, const float *y, int64_t h, int64_t w, int64_t i, int64_t j, double range) {
    double g[11], gs = 0.0;
    for (int k = 0; k < 11; k++) gs += g[k] = exp(-(k - 5.0) * (k - 5.0) / (2 * 1.5 * 1.5));
    double ux = 0, uy = 0, uxx = 0, uyy = 0, uxy = 0;
    for (int a = 0; a < 11; a++)
        for (int b = 0; b < 11; b++) {
            const double wt = g[a] * g[b] / (gs * gs);
            const int64_t r = reflect_ref(i + a - 5, h), c = reflect_ref(j + b - 5, w);
            const double xv = x[r * w + c], yv = y[r * w + c];
            ux += wt * xv, uy += wt * yv, uxx += wt * xv * xv, uyy += wt * yv * yv, uxy += wt * xv * yv;
        }
    const double c1 = (0.01 * range) * (0.01 * range), c2 = (0.03 * range) * (0.03 * range);
    return (2 * ux * uy + c1) * (2 * (uxy - ux * uy) + c2) /
           ((ux * ux + uy * uy + c1) * (uxx - ux * ux + uyy - uy * uy + c2));
}

/* ---- SSIM -------------------------------------------------------------------------------- */

static void test_ssim_window_is_skimage_11_taps(void) {
    cn_error err;
    double w[CN_SSIM_MAX_WIN];
    cn_ssim_params p = cn_ssim_defaults(1.0);
    CHECK(cn_ssim_window(&p, w, &err) == 11);
    double sum = 0;
    for (int k = 0; k < 11; k++) sum += w[k];
    CHECK_CLOSE(sum, 1.0, 1e-15, 0);
    CHECK_CLOSE(w[5] / w[4], exp(1.0 / (2 * 1.5 * 1.5)), 1e-14, 0);
    p.sigma = 1.0;
    CHECK(cn_ssim_window(&p, w, &err) == 9); /* int(3.5 + 0.5) = 4 */
    p.sigma = 0.0;
    CHECK(cn_ssim_window(&p, w, &err) == -1 && mentions(&err, "sigma"));
}

static void test_ssim_matches_direct_definition(void) {
    cn_error err;
    const int64_t shape[4] = {2, 2, 13, 12};
    cn_tensor *a = random_tensor(4, shape, 0, 1.0f), *b = random_tensor(4, shape, 0, 1.0f);
    for (size_t i = 0; i < cn_numel(b); i++) cn_data(b)[i] = 0.6f * cn_data(a)[i] + 0.4f * cn_data(b)[i];
    cn_ssim_params p = cn_ssim_defaults(1.0);
    double v[2];
    cn_tensor *map = NULL;
    CHECK(cn_ssim(a, b, &p, v, &map, &err) == 0);
    for (int64_t n = 0; n < 2; n++) {
        double mean = 0;
        for (int64_t c = 0; c < 2; c++) {
            const float *x = cn_data(a) + (n * 2 + c) * 156, *y = cn_data(b) + (n * 2 + c) * 156;
            double sum = 0;
            for (int64_t i = 0; i < 13; i++)
                for (int64_t j = 0; j < 12; j++) {
                    const double s = ssim_direct(x, y, 13, 12, i, j, 1.0);
                    CHECK_CLOSE(cn_data(map)[(n * 2 + c) * 156 + i * 12 + j], s, 1e-6, 1e-7);
                    if (i >= 5 && i < 8 && j >= 5 && j < 7) sum += s;
                }
            mean += sum / 6.0 / 2.0;
        }
        CHECK_CLOSE(v[n], mean, 1e-12, 1e-13);
    }
    cn_release(map), cn_release(a), cn_release(b);
}

static void test_ssim_constant_and_identical_images(void) {
    cn_error err;
    const int64_t shape[4] = {1, 1, 16, 16};
    cn_tensor *a = full(4, shape, 0.2f), *b = full(4, shape, 0.5f);
    cn_ssim_params p = cn_ssim_defaults(1.0);
    double v;
    CHECK(cn_ssim(a, b, &p, &v, NULL, &err) == 0);
    const double ca = (double)0.2f, cb = 0.5, c1 = 1e-4;
    CHECK_CLOSE(v, (2 * ca * cb + c1) / (ca * ca + cb * cb + c1), 1e-12, 0);
    cn_tensor *r = random_tensor(4, shape, 0, 255.0f);
    p.data_range = 255;
    CHECK(cn_ssim(r, r, &p, &v, NULL, &err) == 0);
    CHECK_CLOSE(v, 1.0, 1e-12, 0);
    cn_release(a), cn_release(b), cn_release(r);
}

static void test_ssim_strided_equals_contiguous(void) {
    cn_error err;
    const int64_t shape[4] = {3, 2, 14, 17};
    cn_tensor *a = random_tensor(4, shape, 0, 1.0f), *b = random_tensor(4, shape, 0, 1.0f);
    /* the same values behind a transposed view */
    cn_tensor *at = cn_transpose(a, 2, 3, &err), *ac = cn_contiguous(at, &err), *av = cn_transpose(ac, 2, 3, &err);
    CHECK(!cn_is_contiguous(av));
    cn_ssim_params p = cn_ssim_defaults(1.0);
    double v1[3], v2[3], m1[3], m2[3], q1[3], q2[3];
    CHECK(cn_ssim(a, b, &p, v1, NULL, &err) == 0 && cn_ssim(av, b, &p, v2, NULL, &err) == 0);
    CHECK(cn_psnr(a, b, 1.0, q1, &err) == 0 && cn_psnr(av, b, 1.0, q2, &err) == 0);
    CHECK(cn_ms_ssim(a, b, &p, 1, cn_ms_ssim_weights, m1, &err) == 0);
    CHECK(cn_ms_ssim(av, b, &p, 1, cn_ms_ssim_weights, m2, &err) == 0);
    for (int i = 0; i < 3; i++) {
        CHECK(v1[i] == v2[i]);
        CHECK(q1[i] == q2[i]);
        CHECK(m1[i] == m2[i]);
    }
    cn_release(at), cn_release(ac), cn_release(av), cn_release(a), cn_release(b);
}

static void test_ssim_batched_equals_per_image_in_parallel(void) {
    cn_error err;
    const int64_t shape[4] = {12, 3, 32, 32};
    cn_tensor *a = random_tensor(4, shape, 0, 1.0f), *b = random_tensor(4, shape, 0, 1.0f);
    cn_ssim_params p = cn_ssim_defaults(1.0);
    double v[12];
    CHECK(cn_ssim(a, b, &p, v, NULL, &err) == 0);
    for (int64_t n = 0; n < 12; n++) {
        cn_tensor *x = cn_narrow(a, 0, n, 1, &err), *y = cn_narrow(b, 0, n, 1, &err);
        double s;
        CHECK(cn_ssim(x, y, &p, &s, NULL, &err) == 0);
        CHECK(s == v[n]);
        cn_release(x), cn_release(y);
    }
    cn_release(a), cn_release(b);
}

/* ---- MS-SSIM, PSNR ----------------------------------------------------------------------- */

static void test_ms_ssim_one_scale_is_ssim(void) {
    cn_error err;
    const int64_t shape[4] = {2, 3, 23, 30};
    cn_tensor *a = random_tensor(4, shape, 0, 1.0f), *b = random_tensor(4, shape, 0, 1.0f);
    for (size_t i = 0; i < cn_numel(b); i++) cn_data(b)[i] = 0.5f * cn_data(a)[i] + 0.5f * cn_data(b)[i];
    cn_ssim_params p = cn_ssim_defaults(1.0);
    double s[2], m[2], one = 1.0;
    CHECK(cn_ssim(a, b, &p, s, NULL, &err) == 0);
    CHECK(cn_ms_ssim(a, b, &p, 1, &one, m, &err) == 0);
    for (int i = 0; i < 2; i++) CHECK_CLOSE(m[i], s[i], 1e-12, 1e-13);
    double w2[2] = {0.3, 0.7}, m2[2];
    CHECK(cn_ms_ssim(a, a, &p, 2, w2, m2, &err) == 0); /* identical: every term is 1 */
    CHECK_CLOSE(m2[0], 1.0, 1e-12, 0);
    cn_release(a), cn_release(b);
}

static void test_ms_ssim_scales_that_fit(void) {
    CHECK(cn_ms_ssim_max_scales(28, 28, 11, 5) == 2);   /* 28 > 20, not > 40 */
    CHECK(cn_ms_ssim_max_scales(161, 300, 11, 5) == 5); /* pytorch-msssim: > 160 */
    CHECK(cn_ms_ssim_max_scales(160, 300, 11, 5) == 4);
    CHECK(cn_ms_ssim_max_scales(64, 64, 11, 5) == 3);
    CHECK(cn_ms_ssim_max_scales(10, 64, 11, 5) == 0);
    CHECK(cn_ms_ssim_max_scales(11, 64, 11, 5) == 1);
}

static void test_psnr_known_mse(void) {
    cn_error err;
    const int64_t shape[4] = {2, 1, 4, 4};
    cn_tensor *a = full(4, shape, 0.0f), *b = full(4, shape, 0.25f);
    for (int i = 0; i < 16; i++) cn_data(b)[i] = 0.0f; /* first image identical */
    double v[2];
    CHECK(cn_psnr(a, b, 1.0, v, &err) == 0);
    CHECK(isinf(v[0]) && v[0] > 0);
    CHECK_CLOSE(v[1], 10 * log10(1.0 / 0.0625), 1e-13, 0);
    CHECK(cn_psnr(a, b, 255.0, v, &err) == 0);
    CHECK_CLOSE(v[1], 10 * log10(255.0 * 255.0 / 0.0625), 1e-13, 0);
    cn_release(a), cn_release(b);
}

/* ---- square root, Fréchet distance --------------------------------------------------------- */

static void test_sqrtm_2x2(void) {
    cn_error err;
    const double a[4] = {5, 4, 4, 5}; /* eigenvalues 9 and 1: sqrt = [[2, 1], [1, 2]] */
    double s[4];
    CHECK(cn_sqrtm_psd(2, a, s, &err) == 0);
    CHECK_CLOSE(s[0], 2, 1e-14, 1e-14);
    CHECK_CLOSE(s[1], 1, 1e-14, 1e-14);
    CHECK_CLOSE(s[2], 1, 1e-14, 1e-14);
    CHECK_CLOSE(s[3], 2, 1e-14, 1e-14);
    const double neg[4] = {4, 0, 0, -1e-17}; /* round-off below zero: clamped */
    CHECK(cn_sqrtm_psd(2, neg, s, &err) == 0);
    CHECK_CLOSE(s[0], 2, 1e-14, 0);
    CHECK(s[3] == 0 && s[1] == 0);
    const double bad[4] = {1, NAN, NAN, 1};
    CHECK(cn_sqrtm_psd(2, bad, s, &err) == -1 && mentions(&err, "non-finite"));
}

static void test_frechet_closed_forms(void) {
    cn_error err;
    double f;
    const double m1 = 0.5, v1 = 4.0, m2 = -1.0, v2 = 0.25; /* 1-D: (m1-m2)^2 + (s1-s2)^2 */
    CHECK(cn_frechet_distance(1, &m1, &v1, &m2, &v2, &f, &err) == 0);
    CHECK_CLOSE(f, 1.5 * 1.5 + 1.5 * 1.5, 1e-14, 0);
    /* 2 x 2, non-commuting: tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)), M ~ A B */
    const double A[4] = {2, 1, 1, 3}, B[4] = {1, -0.5, -0.5, 2}, mu1[2] = {1, 2}, mu2[2] = {0, 0};
    const double trAB = A[0] * B[0] + A[1] * B[2] + A[2] * B[1] + A[3] * B[3];
    const double det = (A[0] * A[3] - A[1] * A[2]) * (B[0] * B[3] - B[1] * B[2]);
    const double want = 5.0 + 5.0 + 3.0 - 2.0 * sqrt(trAB + 2.0 * sqrt(det));
    CHECK(cn_frechet_distance(2, mu1, A, mu2, B, &f, &err) == 0);
    CHECK_CLOSE(f, want, 1e-13, 1e-13);
    CHECK(cn_frechet_distance(2, mu1, A, mu1, A, &f, &err) == 0);
    CHECK(fabs(f) < 1e-13);
    /* a singular first covariance (rank 1): B restricted to its range */
    const double S[4] = {1, 1, 1, 1};
    const double want_s = 2.0 + 3.0 - 2.0 * sqrt((S[0] * B[0] + S[1] * B[2] + S[2] * B[1] + S[3] * B[3]));
    CHECK(cn_frechet_distance(2, mu2, S, mu2, B, &f, &err) == 0);
    CHECK_CLOSE(f, want_s, 1e-12, 1e-12);
}

/* ---- feature statistics --------------------------------------------------------------------- */

static void test_feature_stats_uneven_batches(void) {
    cn_error err;
    const int64_t n = 700, d = 5, shape[2] = {n, d};
    cn_tensor *x = random_tensor(2, shape, 0, 1.0f);
    for (int64_t i = 0; i < n; i++) cn_data(x)[i * d + 2] += 1000.0f; /* a large mean */
    /* two-pass reference */
    double mean[5] = {0}, cov[25] = {0};
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < d; j++) mean[j] += cn_data(x)[i * d + j] / (double)n;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < d; j++)
            for (int64_t k = 0; k < d; k++)
                cov[j * d + k] += (cn_data(x)[i * d + j] - mean[j]) * (cn_data(x)[i * d + k] - mean[k]) / (n - 1);
    cn_feature_stats *one = cn_feature_stats_new(0, &err), *parts = cn_feature_stats_new(d, &err);
    CHECK(cn_feature_stats_add(one, x, &err) == 0);
    const int64_t cuts[] = {0, 1, 4, 4, 300, 611, 700};
    for (int c = 0; c + 1 < 7; c++) {
        cn_tensor *b = cn_narrow(x, 0, cuts[c], cuts[c + 1] - cuts[c], &err);
        CHECK(cn_feature_stats_add(parts, b, &err) == 0);
        cn_release(b);
    }
    CHECK(cn_feature_stats_count(one) == n && cn_feature_stats_count(parts) == n);
    double c1[25], c2[25];
    CHECK(cn_feature_stats_cov(one, c1, &err) == 0 && cn_feature_stats_cov(parts, c2, &err) == 0);
    for (int j = 0; j < 5; j++) {
        CHECK_CLOSE(cn_feature_stats_mean(one)[j], mean[j], 1e-13, 0);
        CHECK_CLOSE(cn_feature_stats_mean(parts)[j], mean[j], 1e-13, 0);
    }
    for (int j = 0; j < 25; j++) {
        CHECK_CLOSE(c1[j], cov[j], 1e-10, 1e-14);
        CHECK_CLOSE(c2[j], cov[j], 1e-10, 1e-14);
    }
    /* merge: two halves into an empty one, and rebuilt from mean and covariance */
    cn_feature_stats *h1 = cn_feature_stats_new(0, &err), *h2 = cn_feature_stats_new(0, &err);
    cn_feature_stats *all = cn_feature_stats_new(0, &err);
    cn_tensor *t1 = cn_narrow(x, 0, 0, 333, &err), *t2 = cn_narrow(x, 0, 333, n - 333, &err);
    CHECK(cn_feature_stats_add(h1, t1, &err) == 0 && cn_feature_stats_add(h2, t2, &err) == 0);
    CHECK(cn_feature_stats_merge(all, h1, &err) == 0 && cn_feature_stats_merge(all, h2, &err) == 0);
    double c3[25];
    CHECK(cn_feature_stats_cov(all, c3, &err) == 0);
    for (int j = 0; j < 25; j++) CHECK_CLOSE(c3[j], cov[j], 1e-10, 1e-14);
    cn_feature_stats *back = cn_feature_stats_from(n, d, cn_feature_stats_mean(all), c3, &err);
    double f;
    CHECK(back && cn_frechet_distance_stats(back, one, &f, &err) == 0 && fabs(f) < 1e-9);
    CHECK(cn_frechet_distance_stats(all, all, &f, &err) == 0 && fabs(f) < 1e-9);
    /* merging into itself doubles the count, keeps mean and (almost) covariance */
    CHECK(cn_feature_stats_merge(all, all, &err) == 0 && cn_feature_stats_count(all) == 2 * n);
    cn_feature_stats_free(one), cn_feature_stats_free(parts), cn_feature_stats_free(h1);
    cn_feature_stats_free(h2), cn_feature_stats_free(all), cn_feature_stats_free(back);
    cn_release(t1), cn_release(t2), cn_release(x);
}

static void test_feature_stats_errors(void) {
    cn_error err;
    const int64_t s3[2] = {4, 3}, s4[2] = {4, 4}, s1[1] = {4};
    cn_tensor *a = random_tensor(2, s3, 0, 1.0f), *b = random_tensor(2, s4, 0, 1.0f), *v = random_tensor(1, s1, 0, 1.0f);
    cn_feature_stats *s = cn_feature_stats_new(0, &err), *t = cn_feature_stats_new(0, &err);
    CHECK(cn_feature_stats_add(s, v, &err) == -1 && mentions(&err, "2-D [N, D], got [4]"));
    CHECK(cn_feature_stats_add(s, a, &err) == 0);
    CHECK(cn_feature_stats_add(s, b, &err) == -1 && mentions(&err, "dimension 4, the statistics 3"));
    double cov[9], f;
    CHECK(cn_feature_stats_cov(t, cov, &err) == -1 && mentions(&err, "at least 2"));
    CHECK(cn_frechet_distance_stats(s, t, &f, &err) == -1 && mentions(&err, "at least 2"));
    CHECK(cn_feature_stats_add(t, b, &err) == 0);
    CHECK(cn_frechet_distance_stats(s, t, &f, &err) == -1 && mentions(&err, "dimensions differ: 3 and 4"));
    CHECK(cn_feature_stats_merge(s, t, &err) == -1 && mentions(&err, "dimension 4 into 3"));
    CHECK(cn_feature_stats_new(-1, &err) == NULL && mentions(&err, "dimension"));
    cn_feature_stats_free(s), cn_feature_stats_free(t);
    cn_release(a), cn_release(b), cn_release(v);
}

/* ---- MMD, KID ------------------------------------------------------------------------------- */

static double mmd2_brute(const cn_tensor *x, const cn_tensor *y) {
    const int64_t m = x->shape[0], n = y->shape[0], d = x->shape[1];
    const float *px = cn_data(x), *py = cn_data(y);
    double kxx = 0, kyy = 0, kxy = 0;
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < m; j++) {
            if (i == j) continue;
            double dot = 0;
            for (int64_t k = 0; k < d; k++) dot += (double)px[i * d + k] * px[j * d + k];
            kxx += pow(dot / d + 1, 3);
        }
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) {
            if (i == j) continue;
            double dot = 0;
            for (int64_t k = 0; k < d; k++) dot += (double)py[i * d + k] * py[j * d + k];
            kyy += pow(dot / d + 1, 3);
        }
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            double dot = 0;
            for (int64_t k = 0; k < d; k++) dot += (double)px[i * d + k] * py[j * d + k];
            kxy += pow(dot / d + 1, 3);
        }
    return kxx / (m * (m - 1.0)) + kyy / (n * (n - 1.0)) - 2 * kxy / ((double)m * n);
}

static void test_mmd2_and_kid(void) {
    cn_error err;
    const int64_t sx[2] = {30, 6}, sy[2] = {24, 6};
    cn_tensor *x = random_tensor(2, sx, 0, 1.0f), *y = random_tensor(2, sy, 0, 1.5f);
    double v;
    CHECK(cn_mmd2_poly(x, y, &v, &err) == 0);
    CHECK_CLOSE(v, mmd2_brute(x, y), 1e-12, 1e-14);
    /* subset = every row: each subset's MMD^2 is the whole sets' (a permutation changes nothing) */
    cn_tensor *y30 = random_tensor(2, sx, 0, 1.5f);
    double whole, vals[3], mean, std;
    CHECK(cn_mmd2_poly(x, y30, &whole, &err) == 0);
    cn_rng_seed(5);
    CHECK(cn_kid(x, y30, 3, 30, vals, &mean, &std, &err) == 0);
    for (int k = 0; k < 3; k++) CHECK_CLOSE(vals[k], whole, 1e-12, 1e-14);
    CHECK_CLOSE(mean, whole, 1e-12, 1e-14);
    CHECK(std < 1e-12);
    /* subsets: the same seed gives the same draw; mean and population std of the values */
    double v1[4], v2[4], m1, m2, s1, s2;
    cn_rng_seed(9);
    CHECK(cn_kid(x, y, 4, 10, v1, &m1, &s1, &err) == 0);
    cn_rng_seed(9);
    CHECK(cn_kid(x, y, 4, 10, v2, &m2, &s2, &err) == 0);
    double sum = 0, sq = 0;
    for (int k = 0; k < 4; k++) {
        CHECK(v1[k] == v2[k]);
        sum += v1[k];
    }
    for (int k = 0; k < 4; k++) sq += (v1[k] - sum / 4) * (v1[k] - sum / 4);
    CHECK(m1 == m2 && s1 == s2);
    CHECK_CLOSE(m1, sum / 4, 1e-14, 0);
    CHECK_CLOSE(s1, sqrt(sq / 4), 1e-12, 0);
    CHECK(v1[0] != v1[1]);
    /* errors */
    CHECK(cn_kid(x, y, 4, 25, v1, &m1, &s1, &err) == -1 && mentions(&err, "subset_size must be in 2..min(N) = 24"));
    CHECK(cn_kid(x, y, 0, 5, v1, &m1, &s1, &err) == -1 && mentions(&err, "subsets"));
    const int64_t sz[2] = {5, 7};
    cn_tensor *z = random_tensor(2, sz, 0, 1.0f);
    CHECK(cn_mmd2_poly(x, z, &v, &err) == -1 && mentions(&err, "feature dimensions differ: [30, 6] and [5, 7]"));
    cn_release(x), cn_release(y), cn_release(y30), cn_release(z);
}

/* ---- image errors ------------------------------------------------------------------------- */

static void test_image_errors(void) {
    cn_error err;
    const int64_t s4[4] = {1, 1, 16, 16}, s4b[4] = {1, 1, 16, 15}, s3[3] = {1, 16, 16}, small[4] = {1, 1, 10, 30};
    cn_tensor *a = random_tensor(4, s4, 0, 1.0f), *b = random_tensor(4, s4b, 0, 1.0f), *c = random_tensor(3, s3, 0, 1.0f);
    cn_tensor *d = random_tensor(4, small, 0, 1.0f);
    cn_ssim_params p = cn_ssim_defaults(1.0);
    double v[1];
    CHECK(cn_ssim(a, b, &p, v, NULL, &err) == -1 && mentions(&err, "same shape, got [1, 1, 16, 16] and [1, 1, 16, 15]"));
    CHECK(cn_ssim(c, c, &p, v, NULL, &err) == -1 && mentions(&err, "4-D [N, C, H, W], got [1, 16, 16]"));
    CHECK(cn_ssim(d, d, &p, v, NULL, &err) == -1 && mentions(&err, "10x30 are smaller than the 11x11"));
    CHECK(cn_psnr(a, b, 1.0, v, &err) == -1 && mentions(&err, "psnr: images must have the same shape"));
    CHECK(cn_psnr(a, a, 0.0, v, &err) == -1 && mentions(&err, "data_range must be a positive number"));
    p.data_range = -1;
    CHECK(cn_ssim(a, a, &p, v, NULL, &err) == -1 && mentions(&err, "data_range"));
    p.data_range = 1;
    CHECK(cn_ms_ssim(a, a, &p, 5, cn_ms_ssim_weights, v, &err) == -1 &&
          mentions(&err, "16x16 are too small for 5 scales with a 11-tap window (need min(H, W) > 160); "
                        "at most 1 scale fit"));
    CHECK(cn_ms_ssim(a, a, &p, 0, cn_ms_ssim_weights, v, &err) == -1 && mentions(&err, "number of scales"));
    p.win_size = 4;
    CHECK(cn_ssim(a, a, &p, v, NULL, &err) == -1 && mentions(&err, "odd"));
    cn_release(a), cn_release(b), cn_release(c), cn_release(d);
}

int main(void) {
    test_seed(77u);
    RUN(test_ssim_window_is_skimage_11_taps);
    RUN(test_ssim_matches_direct_definition);
    RUN(test_ssim_constant_and_identical_images);
    RUN(test_ssim_strided_equals_contiguous);
    RUN(test_ssim_batched_equals_per_image_in_parallel);
    RUN(test_ms_ssim_one_scale_is_ssim);
    RUN(test_ms_ssim_scales_that_fit);
    RUN(test_psnr_known_mse);
    RUN(test_sqrtm_2x2);
    RUN(test_frechet_closed_forms);
    RUN(test_feature_stats_uneven_batches);
    RUN(test_feature_stats_errors);
    RUN(test_mmd2_and_kid);
    RUN(test_image_errors);
    return CTEST_SUMMARY("metrics");
}
