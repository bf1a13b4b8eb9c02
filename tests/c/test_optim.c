/* test_optim.c — the optimiser kernels (optim.c) against scalar reference formulas in double.
 *
 * Each update runs a few steps on a small tensor and on one big enough to take the OpenMP path,
 * beside a double-precision loop written straight from torch's update rules; the float32 kernel
 * must stay within float32 rounding of it. Also: gradient norms of every kind over several
 * tensors (contiguous and strided), scaling, EMA, swap, and the errors.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "ctest.h"
#include "optim.h"
#include "tensor.h"
#include "test_util.h"

/* ---- helpers ----------------------------------------------------------------------------- */

/* n values uniform in [-scale, scale). */
static cn_tensor *random_vector(int64_t n, double scale) { return random_tensor(1, &n, -scale, scale); }

static cn_tensor *zeros(int64_t n) {
    cn_error err;
    int64_t shape[1] = {n};
    return cn_zeros(1, shape, &err);
}

static double *to_double(const cn_tensor *t) {
    size_t n = cn_numel(t);
    double *d = malloc(n * sizeof *d);
    for (size_t i = 0; i < n; i++) d[i] = cn_data(t)[i];
    return d;
}

/* Largest |got - want| / (atol + rtol |want|) over n elements: <= 1 passes (NaN fails). */
static double worst_ratio(const cn_tensor *got, const double *want, double rtol, double atol) {
    double worst = 0.0;
    for (size_t i = 0; i < cn_numel(got); i++) {
        double r = fabs(cn_data(got)[i] - want[i]) / (atol + rtol * fabs(want[i]));
        if (!(r <= worst)) worst = r;
    }
    if (getenv("CN_TEST_VERBOSE")) fprintf(stderr, "    worst ratio %.3g (rtol %g, atol %g)\n", worst, rtol, atol);
    return worst;
}

/* True when got holds exactly the values of want. */
static bool equal_to(const cn_tensor *got, const double *want) {
    for (size_t i = 0; i < cn_numel(got); i++)
        if ((double)cn_data(got)[i] != want[i]) return false;
    return true;
}

static const int64_t sizes[] = {37, 100003}; /* small, and above the OpenMP threshold */

/* ---- SGD ----------------------------------------------------------------------------------- */

static void check_sgd(double lr, double momentum, double dampening, double wd, bool nesterov) {
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int64_t n = sizes[s];
        cn_tensor *p = random_vector(n, 1.0), *buf = momentum != 0 ? zeros(n) : NULL;
        double *rp = to_double(p), *rbuf = calloc((size_t)n, sizeof *rbuf);
        cn_error err;
        for (int step = 1; step <= 4; step++) {
            cn_tensor *g = random_vector(n, 0.5);
            CHECK(cn_sgd_step(p, g, buf, lr, momentum, dampening, wd, nesterov, step == 1, &err) == 0);
            for (int64_t i = 0; i < n; i++) {
                double d = cn_data(g)[i] + wd * rp[i];
                if (momentum != 0) {
                    rbuf[i] = step == 1 ? d : momentum * rbuf[i] + (1 - dampening) * d;
                    d = nesterov ? d + momentum * rbuf[i] : rbuf[i];
                }
                rp[i] -= lr * d;
            }
            cn_release(g);
        }
        /* values of order 1: a few float32 ulps (1.2e-7) absolute where momentum sums cancel */
        CHECK(worst_ratio(p, rp, 1e-6, 1e-6) <= 1.0);
        if (buf) CHECK(worst_ratio(buf, rbuf, 1e-6, 1e-6) <= 1.0);
        cn_release(p);
        cn_release(buf);
        free(rp);
        free(rbuf);
    }
}

static void test_sgd_plain(void) { check_sgd(0.1, 0, 0, 0, false); }
static void test_sgd_weight_decay(void) { check_sgd(0.05, 0, 0, 0.1, false); }
static void test_sgd_momentum_dampening(void) { check_sgd(0.05, 0.9, 0.2, 0.01, false); }
static void test_sgd_nesterov(void) { check_sgd(0.05, 0.9, 0, 0.01, true); }

static void test_sgd_errors(void) {
    cn_tensor *p = random_vector(4, 1), *g = random_vector(5, 1), *g4 = random_vector(4, 1);
    cn_error err;
    CHECK(cn_sgd_step(p, g, NULL, 0.1, 0, 0, 0, false, true, &err) == -1);
    CHECK(strstr(err.msg, "sgd_step: gradient has shape [5] but the parameter has shape [4]") != NULL);
    CHECK(cn_sgd_step(p, g4, NULL, 0.1, 0.9, 0, 0, false, true, &err) == -1);
    CHECK(strstr(err.msg, "momentum buffer is missing") != NULL);
    int64_t shape[2] = {2, 2};
    cn_tensor *m = cn_zeros(2, shape, &err), *mt = cn_transpose(m, 0, 1, &err);
    cn_tensor *gm = cn_zeros(2, shape, &err);
    CHECK(cn_sgd_step(mt, gm, NULL, 0.1, 0, 0, 0, false, true, &err) == -1);
    CHECK(strstr(err.msg, "parameter of shape [2, 2] must be contiguous") != NULL);
    cn_release(p);
    cn_release(g);
    cn_release(g4);
    cn_release(m);
    cn_release(mt);
    cn_release(gm);
}

/* ---- Adam / AdamW -------------------------------------------------------------------------- */

static void check_adam(double lr, double beta1, double beta2, double eps, double wd, bool amsgrad, bool decoupled) {
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int64_t n = sizes[s];
        cn_tensor *p = random_vector(n, 1.0), *m = zeros(n), *v = zeros(n), *vmax = amsgrad ? zeros(n) : NULL;
        double *rp = to_double(p), *rm = calloc((size_t)n, sizeof *rm), *rv = calloc((size_t)n, sizeof *rv);
        double *rvmax = calloc((size_t)n, sizeof *rvmax);
        cn_error err;
        for (int step = 1; step <= 6; step++) {
            /* shrinking gradients exercise amsgrad's running max */
            cn_tensor *g = random_vector(n, 1.0 / step);
            CHECK(cn_adam_step(p, g, m, v, vmax, step, lr, beta1, beta2, eps, wd, decoupled, &err) == 0);
            double bc1 = 1 - pow(beta1, step), bc2 = 1 - pow(beta2, step);
            for (int64_t i = 0; i < n; i++) {
                double gi = cn_data(g)[i];
                if (decoupled) rp[i] *= 1 - lr * wd;
                else gi += wd * rp[i];
                rm[i] = beta1 * rm[i] + (1 - beta1) * gi;
                rv[i] = beta2 * rv[i] + (1 - beta2) * gi * gi;
                double vhat = rv[i];
                if (amsgrad) vhat = rvmax[i] = fmax(rvmax[i], rv[i]);
                rp[i] -= lr / bc1 * rm[i] / (sqrt(vhat) / sqrt(bc2) + eps);
            }
            cn_release(g);
        }
        /* each step's update (about lr) rounds in float32 to ~1e-7 lr; m cancels towards 0, so it
         * gets a few ulps of its inputs (~1e-7) absolute; a wrong formula (eps placement, bias
         * correction, decay order) is off by 1e-3 or more */
        CHECK(worst_ratio(p, rp, 1e-6, 1e-5 * lr) <= 1.0);
        CHECK(worst_ratio(m, rm, 1e-5, 1e-7) <= 1.0);
        CHECK(worst_ratio(v, rv, 1e-5, 1e-9) <= 1.0);
        if (vmax) CHECK(worst_ratio(vmax, rvmax, 1e-5, 1e-9) <= 1.0);
        cn_release(p);
        cn_release(m);
        cn_release(v);
        cn_release(vmax);
        free(rp);
        free(rm);
        free(rv);
        free(rvmax);
    }
}

static void test_adam(void) { check_adam(1e-2, 0.9, 0.999, 1e-8, 0, false, false); }
static void test_adam_weight_decay(void) { check_adam(1e-2, 0.8, 0.99, 1e-6, 0.05, false, false); }
static void test_adam_amsgrad(void) { check_adam(1e-2, 0.9, 0.999, 1e-8, 0.01, true, false); }
static void test_adamw(void) { check_adam(1e-2, 0.9, 0.999, 1e-8, 0.1, false, true); }
static void test_adamw_amsgrad(void) { check_adam(5e-3, 0.9, 0.99, 1e-8, 0.01, true, true); }

/* eps is added after the bias-corrected square root: with v tiny, eps dominates the denominator. */
static void test_adam_eps_placement(void) {
    cn_tensor *p = zeros(1), *m = zeros(1), *v = zeros(1), *g = zeros(1);
    cn_data(g)[0] = 1e-6f;
    cn_error err;
    CHECK(cn_adam_step(p, g, m, v, NULL, 1, 1.0, 0.9, 0.999, 1e-6, 0, false, &err) == 0);
    /* m/bc1 = 1e-6, sqrt(v/bc2) = 1e-6: update = 1e-6 / (1e-6 + 1e-6) = 0.5 */
    CHECK_CLOSE(cn_data(p)[0], -0.5, 1e-5, 0);
    cn_release(p);
    cn_release(m);
    cn_release(v);
    cn_release(g);
}

static void test_adam_errors(void) {
    cn_tensor *p = random_vector(4, 1), *g = random_vector(4, 1), *m = zeros(4), *v = zeros(3);
    cn_error err;
    CHECK(cn_adam_step(p, g, m, v, NULL, 1, 1e-3, 0.9, 0.999, 1e-8, 0, false, &err) == -1);
    CHECK(strstr(err.msg, "adam_step: exp_avg_sq has shape [3] but the parameter has shape [4]") != NULL);
    CHECK(cn_adam_step(p, g, m, m, NULL, 0, 1e-3, 0.9, 0.999, 1e-8, 0, true, &err) == -1);
    CHECK(strstr(err.msg, "adamw_step: step must be at least 1") != NULL);
    cn_release(p);
    cn_release(g);
    cn_release(m);
    cn_release(v);
}

/* ---- gradient norms and scaling ------------------------------------------------------------ */

static void test_grad_norm(void) {
    cn_error err;
    int64_t shape[2] = {3, 5};
    cn_tensor *a = random_vector(100003, 2.0), *b = random_vector(15, 3.0);
    cn_tensor *b2 = cn_view(b, 2, shape, &err), *bt = cn_transpose(b2, 0, 1, &err); /* strided */
    const cn_tensor *ts[2] = {a, bt};
    double s1 = 0, s2 = 0, s3 = 0, sinf = 0, s0 = 0;
    const cn_tensor *both[2] = {a, b};
    for (int k = 0; k < 2; k++) {
        for (size_t i = 0; i < cn_numel(both[k]); i++) {
            double x = fabs((double)cn_data(both[k])[i]);
            s1 += x;
            s2 += x * x;
            s3 += x * x * x;
            sinf = fmax(sinf, x);
            s0 += x != 0;
        }
    }
    CHECK_CLOSE(cn_grad_norm(2, ts, 2.0), sqrt(s2), 1e-12, 0);
    CHECK_CLOSE(cn_grad_norm(2, ts, 1.0), s1, 1e-12, 0);
    CHECK_CLOSE(cn_grad_norm(2, ts, 3.0), cbrt(s3), 1e-12, 0);
    CHECK(cn_grad_norm(2, ts, INFINITY) == sinf);
    CHECK(cn_grad_norm(2, ts, 0.0) == s0);
    CHECK(cn_grad_norm(0, ts, 2.0) == 0.0);
    CHECK(isnan(cn_grad_norm(2, ts, -1.0)));
    cn_data(b)[7] = NAN;
    CHECK(isnan(cn_grad_norm(2, ts, 2.0)));
    CHECK(isnan(cn_grad_norm(2, ts, INFINITY)));
    cn_data(b)[7] = 0;
    cn_data(a)[50000] = NAN; /* in the parallel path */
    CHECK(isnan(cn_grad_norm(1, ts, INFINITY)));
    CHECK(isnan(cn_grad_norm(1, ts, 2.0)));
    cn_release(a);
    cn_release(b);
    cn_release(b2);
    cn_release(bt);
}

static void test_scale(void) {
    cn_error err;
    cn_tensor *a = random_vector(100003, 1.0);
    double *ra = to_double(a);
    CHECK(cn_scale_(a, 0.25f, &err) == 0);
    for (size_t i = 0; i < cn_numel(a); i++) ra[i] *= 0.25;
    CHECK(equal_to(a, ra)); /* exact: a power of two */
    int64_t shape[2] = {2, 3};
    cn_tensor *m = cn_arange(0, 6, 1, &err), *m2 = cn_view(m, 2, shape, &err), *mt = cn_transpose(m2, 0, 1, &err);
    cn_tensor *col = cn_narrow(mt, 1, 1, 1, &err); /* column 2 of the transpose: elements 3, 4, 5 of m */
    CHECK(cn_scale_(col, 2.0f, &err) == 0);
    const float want[6] = {0, 1, 2, 6, 8, 10};
    for (int i = 0; i < 6; i++) CHECK(cn_data(m)[i] == want[i]);
    CHECK(cn_scale_(mt, -1.0f, &err) == 0); /* a transposed view */
    for (int i = 0; i < 6; i++) CHECK(cn_data(m)[i] == -want[i]);
    int64_t big[2] = {4, 3};
    cn_tensor *row = cn_narrow(m2, 0, 0, 1, &err), *ex = cn_expand(row, 2, big, &err);
    CHECK(cn_scale_(ex, 2.0f, &err) == -1);
    CHECK(strstr(err.msg, "scale_: cannot scale an expanded view of shape [4, 3]") != NULL);
    cn_release(a);
    free(ra);
    cn_release(m);
    cn_release(m2);
    cn_release(mt);
    cn_release(col);
    cn_release(row);
    cn_release(ex);
}

/* ---- EMA and swap -------------------------------------------------------------------------- */

static void test_ema_update(void) {
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int64_t n = sizes[s];
        cn_tensor *shadow = random_vector(n, 1.0);
        double *rs = to_double(shadow);
        cn_error err;
        for (int k = 1; k <= 5; k++) {
            cn_tensor *p = random_vector(n, 1.0);
            double decay = fmin(0.99, (1.0 + k) / (10.0 + k));
            CHECK(cn_ema_update_(shadow, p, decay, &err) == 0);
            for (int64_t i = 0; i < n; i++) rs[i] = decay * rs[i] + (1 - decay) * cn_data(p)[i];
            cn_release(p);
        }
        CHECK(worst_ratio(shadow, rs, 1e-5, 1e-6) <= 1.0);
        cn_tensor *wrong = random_vector(n + 1, 1.0);
        CHECK(cn_ema_update_(shadow, wrong, 0.9, &err) == -1);
        CHECK(strstr(err.msg, "ema_update: parameter has shape") != NULL);
        cn_release(wrong);
        cn_release(shadow);
        free(rs);
    }
}

static void test_swap(void) {
    cn_tensor *a = random_vector(100003, 1.0), *b = random_vector(100003, 1.0), *c = random_vector(3, 1.0);
    double *ra = to_double(a), *rb = to_double(b);
    cn_error err;
    CHECK(cn_swap_(a, b, &err) == 0);
    CHECK(equal_to(a, rb));
    CHECK(equal_to(b, ra));
    CHECK(cn_swap_(a, a, &err) == 0);
    CHECK(equal_to(a, rb));
    CHECK(cn_swap_(a, c, &err) == -1);
    CHECK(strstr(err.msg, "swap_: second tensor has shape [3]") != NULL);
    cn_release(a);
    cn_release(b);
    cn_release(c);
    free(ra);
    free(rb);
}

int main(void) {
    test_seed(2024u);
    RUN(test_sgd_plain);
    RUN(test_sgd_weight_decay);
    RUN(test_sgd_momentum_dampening);
    RUN(test_sgd_nesterov);
    RUN(test_sgd_errors);
    RUN(test_adam);
    RUN(test_adam_weight_decay);
    RUN(test_adam_amsgrad);
    RUN(test_adamw);
    RUN(test_adamw_amsgrad);
    RUN(test_adam_eps_placement);
    RUN(test_adam_errors);
    RUN(test_grad_norm);
    RUN(test_scale);
    RUN(test_ema_update);
    RUN(test_swap);
    return CTEST_SUMMARY("optim");
}
