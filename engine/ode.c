/* ode.c — explicit Runge–Kutta solvers (see ode.h).
 *
 * One tableau drives every method: stage s evaluates f at t + c_s h on z + h Σ_j a_sj k_j, the
 * step is z + h Σ_s b_s k_s, and adaptive methods estimate the error as h Σ_s e_s k_s with
 * e = b − b̂. Coefficients: Hairer, Nørsett & Wanner, Solving ODEs I (dopri5: Table 5.2;
 * bosh3: Bogacki & Shampine 1989). Outputs between steps come from each method's continuous
 * extension (dopri5: Shampine 1986; bosh3: cubic Hermite), or for the fixed-step methods from the
 * cubic Hermite interpolant of the step's end values and derivatives.
 */
#include "ode.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autograd.h"
#include "ops.h"

#define MAX_STAGES 7
#define MAX_STATE 32

typedef struct {
    const char *name;
    int stages, order;          /* order of the solution (the error estimate is one lower) */
    bool adaptive, fsal;
    double c[MAX_STAGES];
    double a[MAX_STAGES][MAX_STAGES];
    double b[MAX_STAGES];
    double e[MAX_STAGES];       /* b - b_hat (adaptive only) */
    double beta;                /* the PI controller's default β (0: plain I-control) */
    /* dense output (adaptive only): z(t + θh) = z + h Σ_s w_s(θ) k_s with w_s(θ) = Σ_j p_sj θ^(j+1),
     * over the stages of the accepted step (the last one is f at its end, FSAL) */
    int dense_degree;
    double p[MAX_STAGES][4];
} tableau;

static const tableau tableaus[CN_ODE_METHOD_COUNT] = {
    [CN_ODE_EULER] = {"euler", 1, 1, false, false, {0}, {{0}}, {1}, {0}},
    [CN_ODE_MIDPOINT] = {"midpoint", 2, 2, false, false, {0, 0.5}, {{0}, {0.5}}, {0, 1}, {0}},
    [CN_ODE_HEUN] = {"heun", 2, 2, false, false, {0, 1}, {{0}, {1}}, {0.5, 0.5}, {0}},
    [CN_ODE_RK4] = {"rk4", 4, 4, false, false, {0, 0.5, 0.5, 1},
                    {{0}, {0.5}, {0, 0.5}, {0, 0, 1}}, {1.0 / 6, 1.0 / 3, 1.0 / 3, 1.0 / 6}, {0}},
    [CN_ODE_RK4_38] = {"rk4_38", 4, 4, false, false, {0, 1.0 / 3, 2.0 / 3, 1},
                       {{0}, {1.0 / 3}, {-1.0 / 3, 1}, {1, -1, 1}}, {0.125, 0.375, 0.375, 0.125}, {0}},
    [CN_ODE_BOSH3] = {"bosh3", 4, 3, true, true, {0, 0.5, 0.75, 1},
                      {{0}, {0.5}, {0, 0.75}, {2.0 / 9, 1.0 / 3, 4.0 / 9}},
                      {2.0 / 9, 1.0 / 3, 4.0 / 9, 0},
                      {2.0 / 9 - 7.0 / 24, 1.0 / 3 - 0.25, 4.0 / 9 - 1.0 / 3, -0.125},
                      0.0,
                      /* the cubic Hermite interpolant of z, f(t, z), z_new, f(t + h, z_new) (SciPy's RK23) */
                      3,
                      {{1, -4.0 / 3, 5.0 / 9}, {0, 1, -2.0 / 3}, {0, 4.0 / 3, -8.0 / 9}, {0, -1, 1}}},
    [CN_ODE_DOPRI5] = {"dopri5", 7, 5, true, true, {0, 0.2, 0.3, 0.8, 8.0 / 9, 1, 1},
                       {{0},
                        {0.2},
                        {3.0 / 40, 9.0 / 40},
                        {44.0 / 45, -56.0 / 15, 32.0 / 9},
                        {19372.0 / 6561, -25360.0 / 2187, 64448.0 / 6561, -212.0 / 729},
                        {9017.0 / 3168, -355.0 / 33, 46732.0 / 5247, 49.0 / 176, -5103.0 / 18656},
                        {35.0 / 384, 0, 500.0 / 1113, 125.0 / 192, -2187.0 / 6784, 11.0 / 84}},
                       {35.0 / 384, 0, 500.0 / 1113, 125.0 / 192, -2187.0 / 6784, 11.0 / 84, 0},
                       {35.0 / 384 - 5179.0 / 57600, 0, 500.0 / 1113 - 7571.0 / 16695, 125.0 / 192 - 393.0 / 640,
                        -2187.0 / 6784 + 92097.0 / 339200, 11.0 / 84 - 187.0 / 2100, -1.0 / 40},
                       0.04,
                       /* Shampine's (1986) 4th-order continuous extension, as Hairer's DOPRI5 dense output
                        * and SciPy's RK45.P; w(1) = b */
                       4,
                       {{1, -8048581381.0 / 2820520608, 8663915743.0 / 2820520608, -12715105075.0 / 11282082432},
                        {0, 0, 0, 0},
                        {0, 131558114200.0 / 32700410799, -68118460800.0 / 10900136933, 87487479700.0 / 32700410799},
                        {0, -1754552775.0 / 470086768, 14199869525.0 / 1410260304, -10690763975.0 / 1880347072},
                        {0, 127303824393.0 / 49829197408, -318862633887.0 / 49829197408,
                         701980252875.0 / 199316789632},
                        {0, -282668133.0 / 205662961, 2019193451.0 / 616988883, -1453857185.0 / 822651844},
                        {0, 40617522.0 / 29380423, -110615467.0 / 29380423, 69997945.0 / 29380423}}},
};

void cn_ode_default_opts(cn_ode_opts *o) {
    *o = (cn_ode_opts){.method = CN_ODE_DOPRI5, .step_size = 0, .steps = 0, .rtol = 1e-7, .atol = 1e-9,
                       .first_step = 0, .max_steps = 100000, .safety = 0.9, .min_factor = 0.2, .max_factor = 10,
                       .pi_beta = -1, .norm_states = 0};
}

const char *cn_ode_method_name(cn_ode_method m) {
    return (unsigned)m < CN_ODE_METHOD_COUNT ? tableaus[m].name : "?";
}

bool cn_ode_is_adaptive(cn_ode_method m) { return (unsigned)m < CN_ODE_METHOD_COUNT && tableaus[m].adaptive; }

int cn_ode_method_from_name(const char *name, cn_ode_method *method, cn_error *err) {
    for (int m = 0; m < CN_ODE_METHOD_COUNT; m++)
        if (strcmp(name, tableaus[m].name) == 0) {
            *method = (cn_ode_method)m;
            return 0;
        }
    cn_error_set(err, "odeint: unknown method '%s' (euler, midpoint, heun, rk4, rk4_38, bosh3, dopri5)", name);
    return -1;
}

/* ---- state helpers ----------------------------------------------------------------------------- */

static void release_all(int n, cn_tensor **ts) {
    for (int i = 0; i < n; i++) {
        cn_release(ts[i]);
        ts[i] = NULL;
    }
}

/* Calls f and checks what it returns: one tensor per state entry, with the entry's shape. */
static int eval_f(cn_ode_fn f, void *ctx, double t, int n, cn_tensor *const *z, cn_tensor **dz,
                  cn_ode_stats *st, cn_error *err) {
    for (int k = 0; k < n; k++) dz[k] = NULL;
    st->nfe++;
    if (f(ctx, t, n, z, dz, err)) {
        release_all(n, dz);
        return -1;
    }
    for (int k = 0; k < n; k++) {
        if (!dz[k] || !cn_same_shape(dz[k], z[k])) {
            char a[160], b[160];
            cn_error_set(err, "odeint: the dynamics returned %s for state %d of shape %s (dz/dt must have the state's shape)",
                         dz[k] ? cn_shape_str(a, sizeof a, dz[k]->ndim, dz[k]->shape) : "nothing", k + 1,
                         cn_shape_str(b, sizeof b, z[k]->ndim, z[k]->shape));
            release_all(n, dz);
            return -1;
        }
    }
    return 0;
}

/* out[k] = z[k] + h Σ_j w_j k_j[k] over the stages with non-zero weights (differentiable). */
static int combine(int n, cn_tensor *const *z, int nk, cn_tensor *k[][MAX_STATE], const double *w, double h,
                   cn_tensor **out, cn_error *err) {
    for (int s = 0; s < n; s++) {
        cn_tensor *terms[MAX_STAGES + 1];
        double coef[MAX_STAGES + 1];
        int m = 0;
        terms[m] = z[s], coef[m++] = 1.0;
        for (int j = 0; j < nk; j++)
            if (w[j] != 0.0) terms[m] = k[j][s], coef[m++] = h * w[j];
        out[s] = m == 1 ? cn_retain(z[s]) : cn_lincomb(m, terms, coef, err);
        if (!out[s]) {
            release_all(s, out);
            return -1;
        }
    }
    return 0;
}

/* RMS over the whole state of err / (atol + rtol max(|z0|, |z1|)), in double, without grad. */
static double error_norm(int n, cn_tensor *const *z0, cn_tensor *const *z1, cn_tensor *const *e, double rtol,
                         double atol) {
    double sum = 0;
    size_t count = 0;
    for (int s = 0; s < n; s++) {
        size_t len = cn_numel(e[s]);
        cn_tensor *c0 = cn_contiguous(z0[s], NULL), *c1 = cn_contiguous(z1[s], NULL), *ce = cn_contiguous(e[s], NULL);
        if (!c0 || !c1 || !ce) {
            cn_release(c0), cn_release(c1), cn_release(ce);
            return INFINITY;
        }
        const float *p0 = cn_data(c0), *p1 = cn_data(c1), *pe = cn_data(ce);
        double part = 0;
#pragma omp parallel for reduction(+ : part) schedule(static) if (len > 65536)
        for (size_t i = 0; i < len; i++) {
            double scale = atol + rtol * fmax(fabs((double)p0[i]), fabs((double)p1[i]));
            double r = (double)pe[i] / scale;
            part += r * r;
        }
        sum += part;
        count += len;
        cn_release(c0), cn_release(c1), cn_release(ce);
    }
    return count ? sqrt(sum / (double)count) : 0.0;
}

/* ---- output times ------------------------------------------------------------------------------ */

/* The output times still to fill: ts[next..nt), state k of output i into out[i * n + k]. The solver
 * steps with its own control over [ts[0], ts[nt - 1]]; after each step it hands over the outputs
 * the step covers, evaluated on the step's interpolant (dense output), so output times never
 * change the steps taken. */
typedef struct {
    int n, nt, next;
    const double *ts;
    cn_tensor **out;
} output_cursor;

/* An output within rounding of the step's end takes the end state itself. */
static bool at_step_end(double t, double t_end, double h) { return fabs(t - t_end) <= 1e-9 * fabs(h); }

/* True when the next output lies strictly inside the step (t_end - h, t_end). */
static bool output_inside(const output_cursor *oc, double t_end, double h) {
    if (oc->next >= oc->nt) return false;
    double t = oc->ts[oc->next];
    return !at_step_end(t, t_end, h) && (h > 0 ? t < t_end : t > t_end);
}

/* Hands over every output the step from (t_end - h, z) to (t_end, z_new) covers. With f_end NULL,
 * inner outputs come from the method's continuous extension over the stages k (dense_degree > 0);
 * otherwise from the cubic Hermite interpolant of z, k[0] = f(t, z), z_new and f_end. Both are one
 * differentiable linear combination per state tensor (cn_lincomb). */
static int emit_outputs(output_cursor *oc, const tableau *tb, double t_end, double h, cn_tensor *const *z,
                        cn_tensor *const *z_new, cn_tensor *k[][MAX_STATE], cn_tensor *const *f_end, cn_error *err) {
    int n = oc->n;
    while (oc->next < oc->nt) {
        double t = oc->ts[oc->next];
        cn_tensor **slot = oc->out + (size_t)oc->next * n;
        if (at_step_end(t, t_end, h)) {
            for (int s = 0; s < n; s++) slot[s] = cn_retain(z_new[s]);
        } else if (output_inside(oc, t_end, h)) {
            double theta = (t - (t_end - h)) / h;
            if (!f_end) {
                double w[MAX_STAGES] = {0};
                for (int s = 0; s < tb->stages; s++)
                    for (int j = tb->dense_degree - 1; j >= 0; j--) w[s] = (w[s] + tb->p[s][j]) * theta;
                if (combine(n, z, tb->stages, k, w, h, slot, err)) return -1;
            } else {
                /* Hermite basis: h00 z + h10 h f + h01 z_new + h11 h f_end */
                double u = 1 - theta;
                double coef[4] = {(1 + 2 * theta) * u * u, theta * theta * (3 - 2 * theta), h * theta * u * u,
                                  -h * theta * theta * u};
                for (int s = 0; s < n; s++) {
                    cn_tensor *terms[4] = {z[s], z_new[s], k[0][s], f_end[s]};
                    if (!(slot[s] = cn_lincomb(4, terms, coef, err))) {
                        release_all(s, slot);
                        return -1;
                    }
                }
            }
        } else {
            break;
        }
        oc->next++;
    }
    return 0;
}

/* ---- fixed-step methods ------------------------------------------------------------------------ */

/* One step of size h from (t, z): z_new (new references). */
static int rk_step(const tableau *tb, cn_ode_fn f, void *ctx, double t, double h, int n, cn_tensor *const *z,
                   cn_tensor *k[][MAX_STATE], bool have_k0, cn_tensor **z_new, cn_ode_stats *st, cn_error *err) {
    int made = have_k0 ? 1 : 0;
    int status = 0;
    for (int s = made; s < tb->stages && !status; s++) {
        cn_tensor *zs[MAX_STATE];
        if (s == 0) {
            status = eval_f(f, ctx, t, n, z, k[0], st, err);
        } else if (!(status = combine(n, z, s, k, tb->a[s], h, zs, err))) {
            status = eval_f(f, ctx, t + tb->c[s] * h, n, zs, k[s], st, err);
            release_all(n, zs);
        }
        if (!status) made = s + 1;
    }
    if (!status) status = combine(n, z, tb->stages, k, tb->b, h, z_new, err);
    return status;
}

static void release_stages(int n, int stages, cn_tensor *k[][MAX_STATE], int keep_last_into_first) {
    for (int s = 0; s < stages; s++) {
        if (keep_last_into_first && s == stages - 1) continue;
        release_all(n, k[s]);
    }
    if (keep_last_into_first) {
        memcpy(k[0], k[stages - 1], (size_t)n * sizeof **k);
        memset(k[stages - 1], 0, (size_t)n * sizeof **k);
    }
}

/* The grid: opts.steps equal steps over the whole span [ts[0], ts[nt-1]], or steps of
 * opts.step_size from ts[0] (the last one shortened to land on ts[nt-1]), or, with neither, one
 * step per output interval (the ts grid, torchdiffeq's default). Outputs off the grid come from
 * the cubic Hermite interpolant of the step they fall in, which needs f at the step's end: that
 * evaluation is the next step's first stage, so it costs nothing except inside the last step. */
static int solve_fixed(const tableau *tb, cn_ode_fn f, void *ctx, int n, cn_tensor **z, const double *ts, int nt,
                       const cn_ode_opts *o, output_cursor *oc, cn_ode_stats *st, cn_error *err) {
    double t0 = ts[0], t1 = ts[nt - 1], span = t1 - t0;
    int64_t steps = nt - 1;
    if (o->step_size > 0) steps = (int64_t)ceil(fabs(span) / o->step_size - 1e-9);
    else if (o->steps > 0) steps = o->steps;
    if (steps < 1) steps = 1;
    cn_tensor *k[MAX_STAGES][MAX_STATE] = {{0}};
    bool have_k0 = false;
    double t = t0;
    for (int64_t i = 0; i < steps; i++) {
        double t_next = i == steps - 1    ? t1
                        : o->step_size > 0 ? t0 + copysign((double)(i + 1) * o->step_size, span)
                        : o->steps > 0     ? t0 + span * (double)(i + 1) / (double)steps
                                           : ts[i + 1];
        double h = t_next - t;
        cn_tensor *z_new[MAX_STATE], *f_end[MAX_STATE] = {0};
        int status = rk_step(tb, f, ctx, t, h, n, z, k, have_k0, z_new, st, err);
        if (!status) {
            st->accepted++;
            bool need_end = output_inside(oc, t_next, h);
            if (need_end && eval_f(f, ctx, t_next, n, z_new, f_end, st, err)) status = -1;
            if (!status) status = emit_outputs(oc, tb, t_next, h, z, z_new, k, need_end ? f_end : NULL, err);
            release_stages(n, tb->stages, k, 0);
            memcpy(k[0], f_end, (size_t)n * sizeof *f_end); /* f(t_next, z_new): the next first stage */
            have_k0 = need_end;
            if (status) release_all(n, z_new);
        } else {
            release_stages(n, tb->stages, k, 0);
        }
        if (status) {
            release_all(n, k[0]);
            return -1;
        }
        release_all(n, z);
        memcpy(z, z_new, (size_t)n * sizeof *z);
        t = t_next;
    }
    release_all(n, k[0]);
    return 0;
}

/* ---- adaptive methods -------------------------------------------------------------------------- */

/* Hairer's starting step (Solving ODEs I, II.4), as scipy's select_initial_step; its norms run
 * over the first m state tensors (those of the error norm). */
static int initial_step(cn_ode_fn f, void *ctx, int n, int m, cn_tensor *const *z, cn_tensor *const *f0, double t0,
                        double dir, int order, const cn_ode_opts *o, double *h_out, cn_ode_stats *st, cn_error *err) {
    double d0, d1;
    {
        double sum0 = 0, sum1 = 0;
        size_t count = 0;
        for (int s = 0; s < m; s++) {
            cn_tensor *cz = cn_contiguous(z[s], err), *cf = cn_contiguous(f0[s], err);
            if (!cz || !cf) {
                cn_release(cz), cn_release(cf);
                return -1;
            }
            const float *pz = cn_data(cz), *pf = cn_data(cf);
            size_t len = cn_numel(cz);
            for (size_t i = 0; i < len; i++) {
                double scale = o->atol + fabs((double)pz[i]) * o->rtol;
                sum0 += ((double)pz[i] / scale) * ((double)pz[i] / scale);
                sum1 += ((double)pf[i] / scale) * ((double)pf[i] / scale);
            }
            count += len;
            cn_release(cz), cn_release(cf);
        }
        d0 = count ? sqrt(sum0 / (double)count) : 0;
        d1 = count ? sqrt(sum1 / (double)count) : 0;
    }
    double h0 = (d0 < 1e-5 || d1 < 1e-5) ? 1e-6 : 0.01 * d0 / d1;
    cn_tensor *z1[MAX_STATE], *f1[MAX_STATE];
    for (int s = 0; s < n; s++) {
        cn_tensor *terms[2] = {z[s], f0[s]};
        double coef[2] = {1.0, dir * h0};
        z1[s] = cn_lincomb(2, terms, coef, err);
        if (!z1[s]) {
            release_all(s, z1);
            return -1;
        }
    }
    int status = eval_f(f, ctx, t0 + dir * h0, n, z1, f1, st, err);
    release_all(n, z1);
    if (status) return -1;
    double sum2 = 0;
    size_t count = 0;
    for (int s = 0; s < m && !status; s++) {
        cn_tensor *cz = cn_contiguous(z[s], err), *ca = cn_contiguous(f0[s], err), *cb = cn_contiguous(f1[s], err);
        if (!cz || !ca || !cb) status = -1;
        else {
            const float *pz = cn_data(cz), *pa = cn_data(ca), *pb = cn_data(cb);
            size_t len = cn_numel(cz);
            for (size_t i = 0; i < len; i++) {
                double scale = o->atol + fabs((double)pz[i]) * o->rtol, r = ((double)pb[i] - pa[i]) / scale;
                sum2 += r * r;
            }
            count += len;
        }
        cn_release(cz), cn_release(ca), cn_release(cb);
    }
    release_all(n, f1);
    if (status) return -1;
    double d2 = (count ? sqrt(sum2 / (double)count) : 0) / h0;
    double h1 = (d1 <= 1e-15 && d2 <= 1e-15) ? fmax(1e-6, h0 * 1e-3) : pow(0.01 / fmax(d1, d2), 1.0 / (order + 1));
    *h_out = fmin(100 * h0, h1);
    return 0;
}

typedef struct {
    double h;          /* signed step to try next */
    double err_prev;   /* PI controller memory */
    bool rejected_last;
    cn_tensor *k[MAX_STAGES][MAX_STATE];
    bool have_k0;      /* FSAL: k[0] holds f(t, z) */
} adaptive_state;

/* Steps from (t0, z) to t1 with its own step control, handing the outputs over to oc as it passes them. */
static int solve_adaptive(const tableau *tb, cn_ode_fn f, void *ctx, int n, cn_tensor **z, double t0, double t1,
                          const cn_ode_opts *o, adaptive_state *as, output_cursor *oc, cn_ode_stats *st,
                          cn_error *err) {
    double t = t0, dir = t1 >= t ? 1.0 : -1.0;
    /* the error norm's state tensors: all, or the leading norm_states (a seminorm) */
    const int normed = o->norm_states > 0 && o->norm_states < n ? o->norm_states : n;
    /* Hairer's PI control for an error estimate of order p = tb->order - 1 */
    const double beta = o->pi_beta >= 0 ? o->pi_beta : tb->beta, expo = 1.0 / tb->order - 0.75 * beta;
    while (dir * (t1 - t) > 0) {
        if (st->accepted + st->rejected >= o->max_steps) {
            cn_error_set(err, "odeint: %s reached max_steps = %lld at t = %.9g before t = %.9g (last step %.3g); "
                         "raise max_steps or loosen rtol/atol (%.3g/%.3g)", tb->name, (long long)o->max_steps, t, t1,
                         fabs(as->h), o->rtol, o->atol);
            return -1;
        }
        if (!as->have_k0) {
            if (eval_f(f, ctx, t, n, z, as->k[0], st, err)) return -1;
            as->have_k0 = true;
        }
        if (as->h == 0) {
            double h0 = o->first_step;
            if (h0 <= 0 && initial_step(f, ctx, n, normed, z, as->k[0], t, dir, tb->order - 1, o, &h0, st, err)) return -1;
            as->h = dir * h0;
        }
        double h = as->h;
        bool last = dir * (t + h - t1) >= 0;
        if (last) h = t1 - t;
        if (fabs(h) < 1e-14 * fmax(1.0, fabs(t))) {
            cn_error_set(err, "odeint: step size underflow at t = %.9g (h = %.3g): the problem may be stiff", t, h);
            return -1;
        }
        cn_tensor *z_new[MAX_STATE], *e[MAX_STATE];
        int status = rk_step(tb, f, ctx, t, h, n, z, as->k, true, z_new, st, err);
        if (status) {
            release_stages(n, tb->stages, as->k, 0);
            as->have_k0 = false;
            return -1;
        }
        /* error estimate h Σ e_s k_s of the normed states, without grad */
        bool mode = cn_set_grad_enabled(false);
        for (int s = 0; s < normed && !status; s++) {
            cn_tensor *terms[MAX_STAGES];
            double coef[MAX_STAGES];
            int m = 0;
            for (int j = 0; j < tb->stages; j++)
                if (tb->e[j] != 0) terms[m] = as->k[j][s], coef[m++] = h * tb->e[j];
            e[s] = cn_lincomb(m, terms, coef, err);
            if (!e[s]) {
                release_all(s, e);
                status = -1;
            }
        }
        double ratio = status ? INFINITY : error_norm(normed, z, z_new, e, o->rtol, o->atol);
        cn_set_grad_enabled(mode);
        if (status) {
            release_all(n, z_new);
            return -1;
        }
        release_all(normed, e);
        if (!isfinite(ratio)) ratio = 1e10; /* a step that blew up: shrink hard */
        if (ratio <= 1.0) {
            st->accepted++;
            double fac = pow(fmax(ratio, 1e-10), expo) / pow(as->err_prev, beta);
            fac = fmax(1.0 / o->max_factor, fmin(1.0 / o->min_factor, fac / o->safety));
            double h_next = h / fac;
            if (as->rejected_last) h_next = dir * fmin(fabs(h_next), fabs(h));
            as->err_prev = fmax(ratio, 1e-4);
            as->rejected_last = false;
            double t_new = last ? t1 : t + h;
            if (emit_outputs(oc, tb, t_new, h, z, z_new, as->k, NULL, err)) {
                release_all(n, z_new);
                release_stages(n, tb->stages, as->k, 0);
                as->have_k0 = false;
                return -1;
            }
            release_all(n, z);
            memcpy(z, z_new, (size_t)n * sizeof *z);
            t = t_new;
            /* FSAL: the last stage was evaluated at (t + h, z_new) */
            release_stages(n, tb->stages, as->k, tb->fsal);
            as->have_k0 = tb->fsal;
            as->h = h_next;
        } else {
            st->rejected++;
            double fac11 = pow(ratio, expo);
            as->h = h / fmin(1.0 / o->min_factor, fac11 / o->safety);
            as->rejected_last = true;
            release_all(n, z_new);
            for (int s = 1; s < tb->stages; s++) release_all(n, as->k[s]); /* keep k[0] = f(t, z) */
        }
    }
    return 0;
}

int cn_odeint(cn_ode_fn f, void *ctx, int n, cn_tensor *const *z0, int nt, const double *ts,
              const cn_ode_opts *opts, cn_tensor **out, cn_ode_stats *stats, cn_error *err) {
    cn_ode_stats local_stats = {0};
    cn_ode_stats *st = stats ? stats : &local_stats;
    *st = (cn_ode_stats){0};
    if (n < 1 || n > MAX_STATE) {
        cn_error_set(err, "odeint: the state must have 1 to %d tensors, got %d", MAX_STATE, n);
        return -1;
    }
    if (nt < 1) {
        cn_error_set(err, "odeint: need at least one time");
        return -1;
    }
    if ((unsigned)opts->method >= CN_ODE_METHOD_COUNT) {
        cn_error_set(err, "odeint: unknown method %d", (int)opts->method);
        return -1;
    }
    const tableau *tb = &tableaus[opts->method];
    for (int i = 0; i < nt; i++) {
        if (!isfinite(ts[i])) {
            cn_error_set(err, "odeint: time %d is not finite", i + 1);
            return -1;
        }
        if (i >= 2 && (ts[i] - ts[i - 1]) * (ts[1] - ts[0]) <= 0) {
            cn_error_set(err, "odeint: times must be strictly increasing or strictly decreasing (times %d and %d: %.9g, %.9g)",
                         i, i + 1, ts[i - 1], ts[i]);
            return -1;
        }
        if (i == 1 && ts[1] == ts[0]) {
            cn_error_set(err, "odeint: times 1 and 2 are equal (%.9g)", ts[0]);
            return -1;
        }
    }
    if (tb->adaptive && !(opts->rtol >= 0 && opts->atol >= 0 && opts->rtol + opts->atol > 0)) {
        cn_error_set(err, "odeint: rtol and atol must be non-negative and not both 0 (got %g, %g)", opts->rtol, opts->atol);
        return -1;
    }
    for (int i = 0; i < nt * n; i++) out[i] = NULL;
    cn_tensor *z[MAX_STATE];
    for (int s = 0; s < n; s++) z[s] = cn_retain(z0[s]), out[s] = cn_retain(z0[s]);
    output_cursor oc = {.n = n, .nt = nt, .next = 1, .ts = ts, .out = out};
    adaptive_state as = {.h = 0, .err_prev = 1e-4};
    int status = 0;
    if (nt > 1) {
        status = tb->adaptive ? solve_adaptive(tb, f, ctx, n, z, ts[0], ts[nt - 1], opts, &as, &oc, st, err)
                              : solve_fixed(tb, f, ctx, n, z, ts, nt, opts, &oc, st, err);
        if (!status && oc.next != nt) { /* every output lies in some step: cannot happen */
            cn_error_set(err, "odeint: internal error: output %d of %d not reached", oc.next + 1, nt);
            status = -1;
        }
    }
    for (int j = 0; j < MAX_STAGES; j++) release_all(n, as.k[j]);
    release_all(n, z);
    if (status) release_all(nt * n, out);
    return status;
}
