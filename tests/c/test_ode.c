/* test_ode.c — the ODE solvers (ode.c) through the engine API with C dynamics, no Lua.
 *
 * Proves: the convergence order of every fixed-step method (euler 1, midpoint 2, heun 2, rk4 4,
 * rk4_38 4) on exponential decay and two linear systems with known matrix exponentials; that
 * dopri5 and bosh3 meet their tolerance on Van der Pol and exponential decay, with SciPy's step
 * counts; integration backwards in time; several output times; a state of several tensors;
 * gradients through the solver against the closed form d/dλ R(-λh)^n; the error paths (bad times,
 * wrong dz shape, a failing dynamics, max_steps) with every output released; and no leaked bytes.
 *
 * Everything is float32. Orders are measured as log2(err(h) / err(h/2)) where the truncation
 * error dominates rounding: errors between ~1e-2 and ~1e-5 (rounding alone is ~1e-7 per step).
 * To keep rounding out of the ratio further, the state is a batch of B initial conditions and the
 * error is the RMS over the batch: truncation error is the same smooth function of h for every
 * member, rounding differs, so it adds in quadrature (a 5% rounding error moves the RMS by 0.1%).
 * Step sizes are 3·2^-k so that h·b_s and h·a_sj of every tableau are exact in float32 (no
 * systematic rounding of the coefficients, which would repeat identically at every step).
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "alloc.h"
#include "autograd.h"
#include "ctest.h"
#include "ode.h"
#include "ops.h"
#include "tensor.h"
#include "test_util.h"

#define B 64            /* initial conditions per batch */
#define INTERVAL 0.75   /* spacing of the output times: with k steps per interval, h = 3 / (4k) */

/* ---- dynamics ------------------------------------------------------------------------------ */

typedef enum { DYN_DECAY, DYN_DECAY_PARAM, DYN_MATRIX, DYN_VDP, DYN_FAIL, DYN_BAD_SHAPE, DYN_NOTHING } dyn_kind;

typedef struct {
    dyn_kind kind;
    cn_tensor *param; /* DYN_DECAY_PARAM: λ [1] (may require grad); DYN_MATRIX: the matrix [2, 2] */
    int calls;
    int fail_at;      /* DYN_FAIL: fails on this call */
} dyn;

static int dynamics(void *p, double t, int n, cn_tensor *const *z, cn_tensor **dz, cn_error *err) {
    dyn *d = p;
    d->calls++;
    switch (d->kind) {
    case DYN_DECAY: /* z' = -z */
        for (int k = 0; k < n; k++)
            if (!(dz[k] = cn_unary(CN_NEG, z[k], err))) return -1;
        return 0;
    case DYN_DECAY_PARAM: { /* z' = -λ z */
        cn_tensor *neg = cn_unary(CN_NEG, d->param, err);
        if (!neg) return -1;
        dz[0] = cn_binary(CN_MUL, z[0], neg, err);
        cn_release(neg);
        return dz[0] ? 0 : -1;
    }
    case DYN_MATRIX: /* z' = M z, z [2, B] */
        return (dz[0] = cn_matmul(d->param, z[0], err)) ? 0 : -1;
    case DYN_VDP: { /* x' = v, v' = (1 - x^2) v - x (mu = 1) */
        cn_tensor *x2 = cn_binary(CN_MUL, z[0], z[0], err);
        cn_tensor *one_minus = x2 ? cn_binary_scalar(CN_SUB, x2, 1.0f, true, err) : NULL;
        cn_tensor *damp = one_minus ? cn_binary(CN_MUL, one_minus, z[1], err) : NULL;
        dz[1] = damp ? cn_binary(CN_SUB, damp, z[0], err) : NULL;
        cn_release(x2), cn_release(one_minus), cn_release(damp);
        if (!dz[1]) return -1;
        dz[0] = cn_retain(z[1]);
        return 0;
    }
    case DYN_FAIL:
        if (d->calls >= d->fail_at) {
            cn_error_set(err, "dynamics failed on call %d at t = %g", d->calls, t);
            return -1;
        }
        dz[0] = cn_unary(CN_NEG, z[0], err);
        return dz[0] ? 0 : -1;
    case DYN_BAD_SHAPE: {
        int64_t shape[1] = {z[0]->shape[0] + 1};
        return (dz[0] = cn_zeros(1, shape, err)) ? 0 : -1;
    }
    case DYN_NOTHING:
        return 0; /* success, but no output */
    }
    (void)t;
    return -1;
}

/* ---- helpers ------------------------------------------------------------------------------- */

static cn_tensor *from(int ndim, const int64_t *shape, const double *values) {
    size_t count = cn_shape_numel(ndim, shape);
    float buf[2 * B];
    if (count > 2 * B) return NULL;
    for (size_t i = 0; i < count; i++) buf[i] = (float)values[i];
    cn_error err;
    return cn_from_data(ndim, shape, buf, &err);
}

static cn_tensor *vec1(double v) {
    int64_t shape[1] = {1};
    return from(1, shape, &v);
}

static void release_n(int n, cn_tensor **ts) {
    for (int i = 0; i < n; i++) cn_release(ts[i]);
}

static cn_ode_opts opts_of(cn_ode_method method) {
    cn_ode_opts o;
    cn_ode_default_opts(&o);
    o.method = method;
    return o;
}

/* The linear test problems: the matrix and exp(M t). */
typedef enum { LIN_ROTATION, LIN_SPIRAL } linear_kind;

/* ROTATION: the harmonic oscillator x'' = -x as (x, v): M = [[0, 1], [-1, 0]], exp = rotation.
 * SPIRAL: M = [[-0.1, 2], [-1, -0.1]] = -0.1 I + S with S^2 = -2 I (not normal), so
 * exp(M t) = e^-0.1t (cos(√2 t) I + sin(√2 t)/√2 S). */
static void linear_matrix(linear_kind kind, double m[4]) {
    static const double rotation[4] = {0, 1, -1, 0}, spiral[4] = {-0.1, 2, -1, -0.1};
    memcpy(m, kind == LIN_ROTATION ? rotation : spiral, sizeof rotation);
}

static void linear_exp(linear_kind kind, double t, double e[4]) {
    if (kind == LIN_ROTATION) {
        e[0] = cos(t), e[1] = sin(t), e[2] = -sin(t), e[3] = cos(t);
    } else {
        double r = sqrt(2.0), g = exp(-0.1 * t), c = cos(r * t), s = sin(r * t) / r;
        e[0] = g * c, e[1] = g * 2 * s, e[2] = -g * s, e[3] = g * c;
    }
}

/* Initial conditions on the unit circle, as the columns of a [2, B] tensor. */
static cn_tensor *circle(void) {
    double v[2 * B];
    for (int i = 0; i < B; i++) v[i] = cos(2 * M_PI * i / B), v[B + i] = sin(2 * M_PI * i / B);
    int64_t shape[2] = {2, B};
    return from(2, shape, v);
}

/* ---- convergence orders -------------------------------------------------------------------- */

typedef enum { PROB_DECAY, PROB_ROTATION, PROB_SPIRAL } problem;

/* Solves problem on the output times 0, 0.75, ..., T with `steps` steps per interval and returns
 * the largest over the output times of the batch-RMS error (relative for decay); -1 on failure. */
static double fixed_step_error(problem prob, cn_ode_method method, int64_t steps, double T) {
    int nt = (int)lround(T / INTERVAL) + 1;
    double ts[64];
    for (int i = 0; i < nt; i++) ts[i] = i * INTERVAL;
    double m[4] = {0};
    cn_tensor *z0, *mat = NULL;
    dyn d = {.kind = prob == PROB_DECAY ? DYN_DECAY : DYN_MATRIX};
    if (prob == PROB_DECAY) {
        double v[B];
        for (int i = 0; i < B; i++) v[i] = 0.5 + 1.5 * i / (B - 1);
        int64_t shape[1] = {B};
        z0 = from(1, shape, v);
    } else {
        linear_matrix(prob == PROB_ROTATION ? LIN_ROTATION : LIN_SPIRAL, m);
        int64_t shape[2] = {2, 2};
        d.param = mat = from(2, shape, m);
        z0 = circle();
    }
    cn_ode_opts o = opts_of(method);
    o.steps = steps * (nt - 1); /* steps span the whole solve: every output time on the grid */
    cn_tensor *out[64];
    cn_ode_stats st;
    cn_error err;
    double worst = -1;
    if (cn_odeint(dynamics, &d, 1, &z0, nt, ts, &o, out, &st, &err) == 0) {
        worst = 0;
        for (int i = 1; i < nt; i++) {
            double sum = 0;
            if (prob == PROB_DECAY) {
                for (int j = 0; j < B; j++) {
                    double want = elem(z0, j) * exp(-ts[i]);
                    double r = (elem(out[i], j) - want) / want;
                    sum += r * r;
                }
            } else {
                double e[4];
                linear_exp(prob == PROB_ROTATION ? LIN_ROTATION : LIN_SPIRAL, ts[i], e);
                for (int j = 0; j < B; j++) {
                    double x = elem(z0, j), y = elem(z0, B + j);
                    double dx = elem(out[i], j) - (e[0] * x + e[1] * y);
                    double dy = elem(out[i], B + j) - (e[2] * x + e[3] * y);
                    sum += dx * dx + dy * dy;
                }
            }
            worst = fmax(worst, sqrt(sum / B));
        }
        /* fixed steps: stages × steps, all accepted */
        static const int stages[] = {1, 2, 2, 4, 4};
        if (st.nfe != (int64_t)stages[method] * steps * (nt - 1) || st.accepted != steps * (nt - 1) || st.rejected)
            worst = -1;
        release_n(nt, out);
    } else {
        fprintf(stderr, "    odeint: %s\n", err.msg);
    }
    cn_release(z0), cn_release(mat);
    return worst;
}

static void test_fixed_step_orders(void) {
    /* steps per 0.75 interval at h and h/2: errors stay within ~1e-2 .. 1e-5 (see the top) */
    static const struct { cn_ode_method method; int64_t steps; double order; } methods[] = {
        {CN_ODE_EULER, 64, 1}, {CN_ODE_MIDPOINT, 8, 2}, {CN_ODE_HEUN, 8, 2}, {CN_ODE_RK4, 4, 4}, {CN_ODE_RK4_38, 4, 4},
    };
    static const struct { problem prob; double T; const char *name; } problems[] = {
        {PROB_DECAY, 15, "decay"}, {PROB_ROTATION, 12, "oscillator"}, {PROB_SPIRAL, 12, "spiral"},
    };
    for (size_t p = 0; p < sizeof problems / sizeof *problems; p++)
        for (size_t k = 0; k < sizeof methods / sizeof *methods; k++) {
            double e1 = fixed_step_error(problems[p].prob, methods[k].method, methods[k].steps, problems[p].T);
            double e2 = fixed_step_error(problems[p].prob, methods[k].method, 2 * methods[k].steps, problems[p].T);
            double order = log2(e1 / e2);
            if (!(e1 > 0 && e2 > 0 && fabs(order - methods[k].order) <= 0.2 && e1 < 0.1 && e2 > 3e-6))
                fprintf(stderr, "    %s %s: err %.3g -> %.3g, order %.3f (want %g)\n", problems[p].name,
                        cn_ode_method_name(methods[k].method), e1, e2, order, methods[k].order);
            CHECK(e1 > 0 && e2 > 0);
            CHECK(fabs(order - methods[k].order) <= 0.2);
            CHECK(e1 < 0.1 && e2 > 3e-6); /* the regime where truncation dominates */
        }
}

/* ---- adaptive methods ---------------------------------------------------------------------- */

/* Van der Pol, mu = 1, (2, 0) over [0, 10]: DOP853 at rtol 1e-13 (tests/tools/fixtures_ode.py). */
static const double VDP_T10[2] = {-2.00834078257971, 0.0329070658633261};

static void test_adaptive_meets_tolerance_on_van_der_pol(void) {
    /* SciPy 1.10 solve_ivp at rtol 1e-6, atol 1e-9: RK45 nfev 710 / 89 steps, RK23 2054 / 663 */
    static const struct { cn_ode_method method; int64_t scipy_nfev, scipy_steps; int stages_per_step; } cases[] = {
        {CN_ODE_DOPRI5, 710, 89, 6}, {CN_ODE_BOSH3, 2054, 663, 3},
    };
    for (size_t c = 0; c < 2; c++) {
        cn_tensor *z0[2] = {vec1(2), vec1(0)}, *out[4];
        double ts[2] = {0, 10};
        cn_ode_opts o = opts_of(cases[c].method);
        o.rtol = 1e-6, o.atol = 1e-9;
        cn_ode_stats st;
        cn_error err;
        dyn d = {.kind = DYN_VDP};
        CHECK(cn_odeint(dynamics, &d, 2, z0, 2, ts, &o, out, &st, &err) == 0);
        double tol = o.atol + o.rtol * 2.0085; /* |state| at t = 10 */
        double ex = fabs(elem(out[2], 0) - VDP_T10[0]), ev = fabs(elem(out[3], 0) - VDP_T10[1]);
        if (!(ex <= 10 * tol && ev <= 10 * tol))
            fprintf(stderr, "    %s: errors %.3g %.3g, 10 tol = %.3g\n", cn_ode_method_name(cases[c].method), ex, ev,
                    10 * tol);
        CHECK(ex <= 10 * tol && ev <= 10 * tol);
        /* FSAL: f(t0) and the starting-step probe, then stages - 1 per step tried */
        CHECK(st.nfe == 2 + cases[c].stages_per_step * (st.accepted + st.rejected));
        CHECK(st.nfe == d.calls);
        CHECK(st.accepted <= 1.5 * cases[c].scipy_steps && st.accepted >= cases[c].scipy_steps / 1.5);
        CHECK(st.nfe <= 1.5 * cases[c].scipy_nfev && st.nfe >= cases[c].scipy_nfev / 1.5);
        CHECK(out[0] == z0[0] && out[1] == z0[1]); /* the first output is the initial state itself */
        release_n(4, out);
        release_n(2, z0);
    }
}

static void test_adaptive_meets_tolerance_on_decay(void) {
    for (int m = CN_ODE_BOSH3; m <= CN_ODE_DOPRI5; m++)
        for (double rtol = 1e-4; rtol >= 0.9e-6; rtol /= 10) {
            double v[B];
            for (int i = 0; i < B; i++) v[i] = 0.5 + 1.5 * i / (B - 1);
            int64_t shape[1] = {B};
            cn_tensor *z0 = from(1, shape, v), *out[6];
            double ts[6] = {0, 1, 2, 3, 4, 5};
            cn_ode_opts o = opts_of((cn_ode_method)m);
            o.rtol = rtol, o.atol = rtol * 1e-3;
            dyn d = {.kind = DYN_DECAY};
            cn_error err;
            CHECK(cn_odeint(dynamics, &d, 1, &z0, 6, ts, &o, out, NULL, &err) == 0);
            double worst = 0;
            for (int i = 1; i < 6; i++)
                for (int j = 0; j < B; j++) {
                    double want = v[j] * exp(-ts[i]);
                    worst = fmax(worst, fabs(elem(out[i], j) - want) / (o.atol + o.rtol * fabs(want)));
                }
            if (worst > 10) fprintf(stderr, "    %s rtol %g: error %.3g x tol\n", cn_ode_method_name(m), rtol, worst);
            CHECK(worst <= 10);
            release_n(6, out);
            cn_release(z0);
        }
}

/* Backwards in time: from the exact state at t = 10 to 0 on the spiral, fixed and adaptive. */
static void test_backwards_in_time(void) {
    double m[4], e[4];
    linear_matrix(LIN_SPIRAL, m);
    linear_exp(LIN_SPIRAL, 10, e);
    int64_t mshape[2] = {2, 2}, zshape[2] = {2, 1};
    double z10[2] = {e[0] + e[1], e[2] + e[3]}; /* exp(10 M) (1, 1) */
    for (int method = CN_ODE_RK4; method <= CN_ODE_DOPRI5; method += CN_ODE_DOPRI5 - CN_ODE_RK4) {
        cn_tensor *mat = from(2, mshape, m), *z0 = from(2, zshape, z10), *out[3];
        dyn d = {.kind = DYN_MATRIX, .param = mat};
        double ts[3] = {10, 5, 0};
        cn_ode_opts o = opts_of((cn_ode_method)method);
        o.steps = 400, o.rtol = 1e-6, o.atol = 1e-9; /* 200 per interval, as the whole span */
        cn_ode_stats st;
        cn_error err;
        CHECK(cn_odeint(dynamics, &d, 1, &z0, 3, ts, &o, out, &st, &err) == 0);
        linear_exp(LIN_SPIRAL, 5, e);
        CHECK_CLOSE(elem(out[1], 0), e[0] + e[1], 0, 2e-5);
        CHECK_CLOSE(elem(out[1], 1), e[2] + e[3], 0, 2e-5);
        CHECK_CLOSE(elem(out[2], 0), 1.0, 0, 2e-5);
        CHECK_CLOSE(elem(out[2], 1), 1.0, 0, 2e-5);
        CHECK(st.accepted >= 2);
        release_n(3, out);
        cn_release(z0), cn_release(mat);
    }
}

/* A state of two tensors of different shapes, solved together: (x [3], y [2, 2]), both decaying. */
static void test_state_of_several_tensors(void) {
    int64_t sx[1] = {3}, sy[2] = {2, 2};
    double vx[3] = {1, 2, 3}, vy[4] = {-1, 0.5, 4, 0};
    cn_tensor *z0[2] = {from(1, sx, vx), from(2, sy, vy)}, *out[4];
    double ts[2] = {0, 2};
    cn_ode_opts o = opts_of(CN_ODE_DOPRI5);
    o.rtol = 1e-6, o.atol = 1e-8;
    dyn d = {.kind = DYN_DECAY};
    cn_error err;
    CHECK(cn_odeint(dynamics, &d, 2, z0, 2, ts, &o, out, NULL, &err) == 0);
    CHECK(out[2]->ndim == 1 && out[3]->ndim == 2 && out[3]->shape[0] == 2);
    for (int i = 0; i < 3; i++) CHECK_CLOSE(elem(out[2], i), vx[i] * exp(-2.0), 1e-5, 1e-7);
    for (int i = 0; i < 4; i++) CHECK_CLOSE(elem(out[3], i), vy[i] * exp(-2.0), 1e-5, 1e-7);
    release_n(4, out);
    release_n(2, z0);
}

/* ---- gradients through the solver ---------------------------------------------------------- */

/* On z' = -λ z every explicit p-stage method of order p <= 4 takes z -> R_p(-λh) z with
 * R_p(x) = Σ_{k<=p} x^k / k!, so after n steps z_n = R^n z0: dz_n/dz0 = R^n and
 * dz_n/dλ = n R^(n-1) R_p'(x) (-h) z0, with R_p' = R_(p-1). */
static double stability_poly(int p, double x) {
    double term = 1, sum = 1;
    for (int k = 1; k <= p; k++) sum += (term *= x / k);
    return sum;
}

static void test_gradient_through_fixed_steps(void) {
    static const int orders[] = {1, 2, 2, 4, 4};
    for (int method = CN_ODE_EULER; method <= CN_ODE_RK4_38; method++) {
        const double lambda = 0.7, z_init = 1.5, T = 2;
        const int64_t n = 10;
        cn_tensor *lam = vec1(lambda), *z0 = vec1(z_init), *out[2];
        lam->requires_grad = true, z0->requires_grad = true;
        dyn d = {.kind = DYN_DECAY_PARAM, .param = lam};
        double ts[2] = {0, T};
        cn_ode_opts o = opts_of((cn_ode_method)method);
        o.steps = n;
        cn_error err;
        CHECK(cn_odeint(dynamics, &d, 1, &z0, 2, ts, &o, out, NULL, &err) == 0);
        CHECK(out[1]->requires_grad && out[1]->node);
        CHECK(cn_backward(out[1], NULL, 0, &err) == 0);
        double h = T / n, x = -lambda * h, R = stability_poly(orders[method], x);
        CHECK_CLOSE(elem(out[1], 0), pow(R, (double)n) * z_init, 1e-5, 0);
        CHECK(z0->grad && lam->grad);
        if (z0->grad && lam->grad) {
            CHECK_CLOSE(elem(z0->grad, 0), pow(R, (double)n), 1e-5, 0);
            CHECK_CLOSE(elem(lam->grad, 0),
                        n * pow(R, (double)(n - 1)) * stability_poly(orders[method] - 1, x) * -h * z_init, 1e-4, 0);
        }
        release_n(2, out);
        cn_release(lam), cn_release(z0);
    }
}

/* Adaptive: the graph goes through the accepted steps only (step control runs without grad);
 * d z(T)/d z0 of the dopri5 solution is e^-λT within the tolerance, and grad mode is restored. */
static void test_gradient_through_adaptive_steps(void) {
    const double lambda = 0.7, T = 3;
    cn_tensor *lam = vec1(lambda), *z0 = vec1(2), *out[2];
    z0->requires_grad = true, lam->requires_grad = true;
    dyn d = {.kind = DYN_DECAY_PARAM, .param = lam};
    double ts[2] = {0, T};
    cn_ode_opts o = opts_of(CN_ODE_DOPRI5);
    o.rtol = 1e-6, o.atol = 1e-9;
    cn_error err;
    CHECK(cn_grad_enabled());
    CHECK(cn_odeint(dynamics, &d, 1, &z0, 2, ts, &o, out, NULL, &err) == 0);
    CHECK(cn_grad_enabled());
    CHECK(cn_backward(out[1], NULL, 0, &err) == 0);
    if (z0->grad && lam->grad) {
        CHECK_CLOSE(elem(z0->grad, 0), exp(-lambda * T), 1e-5, 0);
        CHECK_CLOSE(elem(lam->grad, 0), -T * 2 * exp(-lambda * T), 1e-5, 0);
    } else {
        CHECK(false);
    }
    release_n(2, out);
    cn_release(lam), cn_release(z0);
}

/* ---- errors -------------------------------------------------------------------------------- */

static void test_errors(void) {
    size_t live0 = cn_memory_live();
    cn_tensor *z0 = vec1(1), *out[8];
    cn_ode_opts o = opts_of(CN_ODE_DOPRI5);
    cn_error err;
    dyn d = {.kind = DYN_DECAY};
    /* times not monotone, or repeated */
    double bad[3] = {0, 1, 0.5}, same[2] = {1, 1}, nan_ts[2] = {0, NAN};
    CHECK(cn_odeint(dynamics, &d, 1, &z0, 3, bad, &o, out, NULL, &err) == -1);
    CHECK(mentions(&err, "strictly increasing or strictly decreasing"));
    CHECK(cn_odeint(dynamics, &d, 1, &z0, 2, same, &o, out, NULL, &err) == -1);
    CHECK(mentions(&err, "equal"));
    CHECK(cn_odeint(dynamics, &d, 1, &z0, 2, nan_ts, &o, out, NULL, &err) == -1);
    CHECK(mentions(&err, "not finite"));
    /* tolerances */
    double ts[2] = {0, 1};
    cn_ode_opts bad_tol = o;
    bad_tol.rtol = 0, bad_tol.atol = 0;
    CHECK(cn_odeint(dynamics, &d, 1, &z0, 2, ts, &bad_tol, out, NULL, &err) == -1);
    CHECK(mentions(&err, "rtol and atol"));
    /* the dynamics returns a tensor of the wrong shape, or nothing */
    for (int m = CN_ODE_EULER; m < CN_ODE_METHOD_COUNT; m++) {
        cn_ode_opts om = opts_of((cn_ode_method)m);
        dyn bs = {.kind = DYN_BAD_SHAPE};
        for (int i = 0; i < 2; i++) out[i] = (cn_tensor *)&err; /* poison: must come back NULL */
        CHECK(cn_odeint(dynamics, &bs, 1, &z0, 2, ts, &om, out, NULL, &err) == -1);
        CHECK(mentions(&err, "returned [2] for state 1 of shape [1]"));
        CHECK(out[0] == NULL && out[1] == NULL);
        dyn none = {.kind = DYN_NOTHING};
        CHECK(cn_odeint(dynamics, &none, 1, &z0, 2, ts, &om, out, NULL, &err) == -1);
        CHECK(mentions(&err, "returned nothing"));
    }
    /* a failing dynamics: its message comes through, at any call (first, inside a step, in the
     * starting-step probe, after outputs were already written) */
    for (int m = CN_ODE_EULER; m < CN_ODE_METHOD_COUNT; m++)
        for (int fail_at = 1; fail_at <= 9; fail_at++) { /* euler makes 9 calls in all */
            cn_ode_opts om = opts_of((cn_ode_method)m);
            om.steps = 9; /* over the whole span: 3 per interval */
            dyn fl = {.kind = DYN_FAIL, .fail_at = fail_at};
            double many[4] = {0, 0.5, 1, 1.5};
            CHECK(cn_odeint(dynamics, &fl, 1, &z0, 4, many, &om, out, NULL, &err) == -1);
            CHECK(mentions(&err, "dynamics failed on call"));
            for (int i = 0; i < 4; i++) CHECK(out[i] == NULL);
            /* output times off the grid: interpolated (euler evaluates f at the ends of the steps
             * that hold them as the next steps' first stages, still 9 calls) */
            dyn fl2 = {.kind = DYN_FAIL, .fail_at = fail_at};
            double off_grid[4] = {0, 0.4, 1.1, 1.5};
            CHECK(cn_odeint(dynamics, &fl2, 1, &z0, 4, off_grid, &om, out, NULL, &err) == -1);
            CHECK(mentions(&err, "dynamics failed on call"));
            for (int i = 0; i < 4; i++) CHECK(out[i] == NULL);
        }
    /* max_steps: the message names the limit, where the solve stopped and what to change */
    cn_ode_opts few = o;
    few.max_steps = 5, few.rtol = 1e-6, few.atol = 1e-9;
    double far[2] = {0, 100};
    CHECK(cn_odeint(dynamics, &d, 1, &z0, 2, far, &few, out, NULL, &err) == -1);
    CHECK(mentions(&err, "max_steps = 5"));
    CHECK(mentions(&err, "raise max_steps or loosen rtol/atol"));
    /* state size and method */
    CHECK(cn_odeint(dynamics, &d, 0, &z0, 2, ts, &o, out, NULL, &err) == -1);
    CHECK(mentions(&err, "1 to 32 tensors"));
    cn_ode_method method;
    CHECK(cn_ode_method_from_name("rk45", &method, &err) == -1);
    CHECK(mentions(&err, "unknown method 'rk45'"));
    CHECK(mentions(&err, "dopri5"));
    cn_release(z0);
    CHECK(cn_memory_live() == live0); /* no error path leaks */
}

static void test_method_table(void) {
    static const char *names[] = {"euler", "midpoint", "heun", "rk4", "rk4_38", "bosh3", "dopri5"};
    cn_error err;
    for (int m = 0; m < CN_ODE_METHOD_COUNT; m++) {
        cn_ode_method got = CN_ODE_METHOD_COUNT;
        CHECK(cn_ode_method_from_name(names[m], &got, &err) == 0 && got == (cn_ode_method)m);
        CHECK(strcmp(cn_ode_method_name((cn_ode_method)m), names[m]) == 0);
        CHECK(cn_ode_is_adaptive((cn_ode_method)m) == (m >= CN_ODE_BOSH3));
    }
    cn_ode_opts o;
    cn_ode_default_opts(&o);
    CHECK(o.method == CN_ODE_DOPRI5 && o.rtol == 1e-7 && o.atol == 1e-9 && o.steps == 0 && o.pi_beta < 0 &&
          o.norm_states == 0);
}

/* Every solve releases everything it made: with grad on, once the outputs and the graph are gone. */
static void test_no_leaks(void) {
    size_t live0 = cn_memory_live();
    for (int m = 0; m < CN_ODE_METHOD_COUNT; m++) {
        cn_tensor *lam = vec1(0.3), *z0 = vec1(1), *out[3];
        lam->requires_grad = true;
        dyn d = {.kind = DYN_DECAY_PARAM, .param = lam};
        double ts[3] = {0, 1, 2};
        cn_ode_opts o = opts_of((cn_ode_method)m);
        o.steps = 5, o.rtol = 1e-5, o.atol = 1e-8;
        cn_error err;
        CHECK(cn_odeint(dynamics, &d, 1, &z0, 3, ts, &o, out, NULL, &err) == 0);
        CHECK(cn_backward(out[2], NULL, 0, &err) == 0);
        release_n(3, out);
        cn_release(lam), cn_release(z0);
    }
    CHECK(cn_memory_live() == live0);
}

int main(void) {
    RUN(test_fixed_step_orders);
    RUN(test_adaptive_meets_tolerance_on_van_der_pol);
    RUN(test_adaptive_meets_tolerance_on_decay);
    RUN(test_backwards_in_time);
    RUN(test_state_of_several_tensors);
    RUN(test_gradient_through_fixed_steps);
    RUN(test_gradient_through_adaptive_steps);
    RUN(test_errors);
    RUN(test_method_table);
    RUN(test_no_leaks);
    return CTEST_SUMMARY("ode");
}
