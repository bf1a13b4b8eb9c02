/* test_bm3d.c — BM3D's building blocks and invariants (bm3d.h); the published-PSNR check on
 * cameraman is tests/lua/test_bm3d.lua.
 *
 * The 2-D transforms invert exactly (F I = identity) and the DCT is orthonormal; bior1.5 has unit
 * basis rows and reproduces entries of the matrix the authors' MATLAB code builds with
 * wavedec(..., 'bior1.5') in dwtmode('per') (printed in their BM3D.m); the Haar and Walsh-Hadamard
 * group transforms round-trip and keep energy; the Kaiser window matches MATLAB's kaiser(8, 2).
 * Then: a flat image stays flat under both profiles, the result is bit-identical for 1 and 3
 * threads, noise is removed from a synthetic image, and bad input is refused with a message.
 */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bm3d.h"
#include "ctest.h"
#include "rng.h"
#include "test_util.h"

/* max |F I - identity| for the n x n pair */
static double inverse_error(const double *f, const double *inv, int n) {
    double worst = 0.0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double s = 0.0;
            for (int k = 0; k < n; k++) s += f[i * n + k] * inv[k * n + j];
            worst = fmax(worst, fabs(s - (i == j)));
        }
    return worst;
}

static void test_dct_orthonormal(void) {
    double f[32 * 32], inv[32 * 32];
    for (int n = 1; n <= 32; n++) {
        CHECK(cn_bm3d_matrix(CN_BM3D_DCT, n, f, inv, NULL) == 0);
        CHECK(inverse_error(f, inv, n) < 1e-12);
        for (int i = 0; i < n * n; i++) CHECK(fabs(inv[(i % n) * n + i / n] - f[i]) < 1e-15); /* I = F^T */
    }
    cn_bm3d_matrix(CN_BM3D_DCT, 8, f, inv, NULL);
    CHECK_CLOSE(f[1 * 8 + 0], 0.490392640201615, 0, 1e-12); /* cos(pi/16) / 2 */
}

static void test_bior15_matrix(void) {
    double f[32 * 32], inv[32 * 32];
    for (int n = 1; n <= 32; n *= 2) {
        CHECK(cn_bm3d_matrix(CN_BM3D_BIOR15, n, f, inv, NULL) == 0);
        CHECK(inverse_error(f, inv, n) < 1e-10);
        for (int k = 0; k < n; k++) {
            double s = 0.0;
            for (int i = 0; i < n; i++) s += f[k * n + i] * f[k * n + i];
            CHECK_CLOSE(s, 1.0, 0, 1e-12);
        }
    }
    /* n = 8 against the values of the authors' hard-coded matrix */
    cn_bm3d_matrix(CN_BM3D_BIOR15, 8, f, inv, NULL);
    for (int i = 0; i < 8; i++) CHECK_CLOSE(f[i], 0.353553390593274, 0, 1e-12);
    const double row1[8] = {0.219417649252501, 0.449283757993216, 0.449283757993216, 0.219417649252501,
                            -0.219417649252501, -0.449283757993216, -0.449283757993216, -0.219417649252501};
    const double row2[8] = {0.569359398342846, 0.402347308162278, -0.402347308162278, -0.569359398342846,
                            -0.083506045090284, 0.083506045090284, -0.083506045090284, 0.083506045090284};
    for (int i = 0; i < 8; i++) {
        CHECK_CLOSE(f[8 + i], row1[i], 0, 1e-12);
        CHECK_CLOSE(f[16 + i], row2[i], 0, 1e-12);
        CHECK_CLOSE(f[24 + i], row2[(i + 4) % 8] , 0, 1e-12); /* row 3: row 2 shifted by 4 */
    }
    CHECK_CLOSE(f[4 * 8 + 0], M_SQRT1_2, 0, 1e-12);
    CHECK_CLOSE(f[4 * 8 + 1], -M_SQRT1_2, 0, 1e-12);
    cn_error err;
    CHECK(cn_bm3d_matrix(CN_BM3D_BIOR15, 12, f, inv, &err) == -1 && mentions(&err, "power-of-two"));
}

static void test_group_transforms(void) {
    float x[64], y[64];
    cn_rng_seed(5);
    for (int kind = 0; kind < 2; kind++)
        for (int n = 1; n <= 64; n *= 2) {
            cn_rng_normal(x, (size_t)n, 0.0f, 1.0f);
            memcpy(y, x, sizeof x);
            double e0 = 0.0, e1 = 0.0;
            for (int i = 0; i < n; i++) e0 += (double)x[i] * x[i];
            cn_bm3d_transform_1d((cn_bm3d_transform1d)kind, y, n, false);
            for (int i = 0; i < n; i++) e1 += (double)y[i] * y[i];
            CHECK_CLOSE(e1, e0, 1e-5, 0); /* orthonormal */
            cn_bm3d_transform_1d((cn_bm3d_transform1d)kind, y, n, true);
            for (int i = 0; i < n; i++) CHECK_CLOSE(y[i], x[i], 0, 1e-5);
        }
    /* a constant group is one DC coefficient sqrt(n) c; a step splits into DC and the coarsest detail */
    for (int i = 0; i < 16; i++) x[i] = 2.0f;
    cn_bm3d_transform_1d(CN_BM3D_HAAR, x, 16, false);
    CHECK_CLOSE(x[0], 8.0, 0, 1e-5);
    for (int i = 1; i < 16; i++) CHECK_CLOSE(x[i], 0.0, 0, 1e-6);
    for (int i = 0; i < 4; i++) x[i] = i < 2 ? 1.0f : -1.0f;
    cn_bm3d_transform_1d(CN_BM3D_HAAR, x, 4, false);
    CHECK_CLOSE(x[0], 0.0, 0, 1e-6);
    CHECK_CLOSE(x[1], 2.0, 0, 1e-6);
    CHECK_CLOSE(x[2], 0.0, 0, 1e-6);
    CHECK_CLOSE(x[3], 0.0, 0, 1e-6);
}

static void test_kaiser(void) {
    double w[12];
    cn_bm3d_kaiser(8, 2.0, w);
    /* the diagonal of the authors' 8 x 8 window kaiser(8, 2) * kaiser(8, 2)' (4 decimals) */
    const double diag[4] = {0.1924, 0.4642, 0.7688, 0.9718};
    for (int i = 0; i < 4; i++) {
        CHECK_CLOSE(w[i] * w[i], diag[i], 0, 6e-5);
        CHECK_CLOSE(w[7 - i], w[i], 0, 1e-15);
    }
    cn_bm3d_kaiser(12, 0.0, w); /* beta 0: rectangular */
    for (int i = 0; i < 12; i++) CHECK_CLOSE(w[i], 1.0, 0, 1e-15);
}

static void test_flat_stays_flat(void) {
    int64_t h = 45, w = 37;
    float *img = malloc((size_t)(h * w) * sizeof *img), *out = malloc((size_t)(h * w) * sizeof *out);
    for (int64_t i = 0; i < h * w; i++) img[i] = 0.375f;
    const double sigmas[2] = {20.0 / 255, 60.0 / 255}; /* both profiles */
    for (int s = 0; s < 2; s++)
        for (int stages = 1; stages <= 2; stages++) {
            cn_bm3d_params p = cn_bm3d_defaults(sigmas[s]);
            p.stages = stages;
            CHECK(cn_bm3d_plane(img, h, w, sigmas[s], &p, out, NULL) == 0);
            /* flat, at the level up to the Wiener stage's shrinkage of the group's DC term,
             * W = B^2 / (B^2 + sigma^2) with B = 0.375 N1 sqrt(N2): at most 4e-5 relative here */
            double lo = out[0], hi = out[0];
            for (int64_t i = 0; i < h * w; i++) lo = fmin(lo, out[i]), hi = fmax(hi, out[i]);
            CHECK(hi - lo < 1e-6);
            CHECK_CLOSE(lo, 0.375, stages == 1 ? 1e-6 : 1.5e-4, 0);
        }
    free(img);
    free(out);
}

/* A test card: a smooth ramp, a bright disc and vertical bars, in [0.1, 0.9]. */
static void test_card(float *img, int64_t h, int64_t w) {
    for (int64_t i = 0; i < h; i++)
        for (int64_t j = 0; j < w; j++) {
            double v = 0.2 + 0.3 * (double)j / (double)w;
            double di = (double)i - h / 3.0, dj = (double)j - w / 3.0;
            if (di * di + dj * dj < (h / 5.0) * (h / 5.0)) v = 0.85;
            if (i > 2 * h / 3 && (j / 4) % 2) v = 0.1;
            img[i * w + j] = (float)v;
        }
}

static double mse(const float *a, const float *b, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    return s / (double)n;
}

static void test_denoises_and_thread_independent(void) {
    int64_t h = 64, w = 72;
    size_t n = (size_t)(h * w);
    float *clean = malloc(n * sizeof *clean), *noisy = malloc(n * sizeof *noisy);
    float *one = malloc(n * sizeof *one), *three = malloc(n * sizeof *three), *noise = malloc(n * sizeof *noise);
    test_card(clean, h, w);
    const double sigmas[2] = {25.0 / 255, 50.0 / 255};
    int saved = omp_get_max_threads();
    for (int s = 0; s < 2; s++) {
        cn_rng_seed(11);
        cn_rng_normal(noise, n, 0.0f, (float)sigmas[s]);
        for (size_t i = 0; i < n; i++) noisy[i] = clean[i] + noise[i];
        cn_bm3d_params p = cn_bm3d_defaults(sigmas[s]);
        omp_set_num_threads(1);
        CHECK(cn_bm3d_plane(noisy, h, w, sigmas[s], &p, one, NULL) == 0);
        omp_set_num_threads(3);
        CHECK(cn_bm3d_plane(noisy, h, w, sigmas[s], &p, three, NULL) == 0);
        CHECK(memcmp(one, three, n * sizeof *one) == 0);
        double before = mse(noisy, clean, n), after = mse(one, clean, n);
        CHECK(after < before / 8); /* more than 9 dB better on this card */
        p.stages = 1;
        CHECK(cn_bm3d_plane(noisy, h, w, sigmas[s], &p, three, NULL) == 0);
        CHECK(mse(three, clean, n) > after); /* the Wiener stage improves on the basic estimate */
    }
    omp_set_num_threads(saved);
    free(clean), free(noisy), free(one), free(three), free(noise);
}

static void test_errors(void) {
    cn_error err;
    float img[16 * 16] = {0}, out[16 * 16];
    cn_bm3d_params p = cn_bm3d_defaults(0.1);
    CHECK(cn_bm3d_plane(img, 7, 16, 0.1, &p, out, &err) == -1 && mentions(&err, "smaller than the 8x8 blocks"));
    CHECK(cn_bm3d_plane(img, 16, 16, 0.0, &p, out, &err) == -1 && mentions(&err, "sigma must be positive"));
    p.ht.search = 38;
    CHECK(cn_bm3d_check(&p, &err) == -1 && mentions(&err, "ht search must be odd"));
    p = cn_bm3d_defaults(0.1);
    p.wiener.block_size = 12;
    p.wiener.transform = CN_BM3D_BIOR15;
    CHECK(cn_bm3d_check(&p, &err) == -1 && mentions(&err, "wiener transform bior1.5 needs a power-of-two"));
    p = cn_bm3d_defaults(0.1);
    p.ht.group_max = 65;
    CHECK(cn_bm3d_check(&p, &err) == -1 && mentions(&err, "group_max must be 1..64"));
    p = cn_bm3d_defaults(0.1);
    p.stages = 3;
    CHECK(cn_bm3d_check(&p, &err) == -1 && mentions(&err, "stages must be 1 or 2"));
    int64_t shape[2] = {16, 16};
    cn_tensor *t = cn_zeros(2, shape, &err);
    cn_data(t)[5] = NAN;
    CHECK(cn_bm3d(t, 0.1, NULL, &err) == NULL && mentions(&err, "non-finite"));
    cn_release(t);
    int64_t one = 16;
    t = cn_zeros(1, &one, &err);
    CHECK(cn_bm3d(t, 0.1, NULL, &err) == NULL && mentions(&err, "[H, W] or [C, H, W] expected, got [16]"));
    cn_release(t);
}

static void test_tensor_planes(void) {
    /* [2, H, W]: each plane as if alone */
    cn_error err;
    int64_t shape[3] = {2, 20, 24};
    cn_tensor *t = cn_empty(3, shape, &err);
    cn_rng_seed(3);
    cn_rng_uniform(cn_data(t), cn_numel(t), 0.0f, 1.0f);
    cn_tensor *r = cn_bm3d(t, 0.2, NULL, &err);
    CHECK(r && r->ndim == 3 && r->shape[0] == 2);
    float plane[20 * 24];
    cn_bm3d_params p = cn_bm3d_defaults(0.2);
    for (int c = 0; c < 2 && r; c++) {
        CHECK(cn_bm3d_plane(cn_data(t) + c * 480, 20, 24, 0.2, &p, plane, NULL) == 0);
        CHECK(memcmp(plane, cn_data(r) + c * 480, sizeof plane) == 0);
    }
    cn_release(r);
    cn_release(t);
}

int main(void) {
    RUN(test_dct_orthonormal);
    RUN(test_bior15_matrix);
    RUN(test_group_transforms);
    RUN(test_kaiser);
    RUN(test_flat_stays_flat);
    RUN(test_denoises_and_thread_independent);
    RUN(test_errors);
    RUN(test_tensor_planes);
    return CTEST_SUMMARY("test_bm3d");
}
