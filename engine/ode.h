/* ode.h — explicit Runge–Kutta ODE solvers over states made of tensors.
 *
 * cn_odeint integrates dz/dt = f(t, z) from ts[0] through every time in ts (increasing or
 * decreasing). The state is a list of n tensors. Every stage is built with differentiable ops
 * (cn_lincomb), so with grad mode on the solution carries a graph through the solver steps
 * ("backpropagation through the solver"); step-size control runs without grad. The adjoint
 * method is built on top (lua/cunet/ode.lua) from this solver and cn_grad.
 *
 * Methods: fixed-step euler, midpoint, heun, rk4 (classic) and rk4_38 (the 3/8 rule, torchdiffeq's
 * "rk4"), over opts.steps equal steps over the whole span [ts[0], ts[nt-1]], steps of
 * opts.step_size (the last one shortened to land on ts[nt-1]), or by default one step per output
 * interval; adaptive bosh3 (3(2)) and dopri5 (Dormand–Prince 5(4)), both first-same-as-last, with
 * Hairer's PI step control, RMS error norm over the state scaled by atol + rtol·max(|z|, |z_new|),
 * and Hairer's automatic first step.
 *
 * Output times never change the steps: the solver steps over the whole span and evaluates each
 * output on the interpolant of the step it falls in (dopri5: its 4th-order continuous extension;
 * bosh3 and the fixed-step methods: the cubic Hermite interpolant of the step's ends), a
 * differentiable linear combination of the step's stages.
 */
#ifndef CN_ODE_H
#define CN_ODE_H

#include "tensor.h"

/* The dynamics: dz/dt at (t, z) into dz[0..n) (new references). Returns 0, or -1 with err. */
typedef int (*cn_ode_fn)(void *ctx, double t, int n, cn_tensor *const *z, cn_tensor **dz, cn_error *err);

typedef enum {
    CN_ODE_EULER, CN_ODE_MIDPOINT, CN_ODE_HEUN, CN_ODE_RK4, CN_ODE_RK4_38, CN_ODE_BOSH3, CN_ODE_DOPRI5,
    CN_ODE_METHOD_COUNT
} cn_ode_method;

typedef struct cn_ode_opts {
    cn_ode_method method;
    double step_size;   /* fixed-step methods: the step (0: use steps) */
    int64_t steps;      /* fixed-step methods: equal steps over the whole span (0: one per output interval) */
    double rtol, atol;  /* adaptive methods */
    double first_step;  /* adaptive: 0 = automatic */
    int64_t max_steps;  /* adaptive: accepted + rejected steps allowed over the whole solve */
    double safety, min_factor, max_factor;
    double pi_beta;     /* adaptive: the PI controller's β (< 0: the method's, 0.04 dopri5, 0 bosh3; 0 = SciPy's) */
    int norm_states;    /* adaptive: the error norm covers state tensors [0, norm_states) only (0: all) */
} cn_ode_opts;

typedef struct cn_ode_stats {
    int64_t nfe, accepted, rejected;
} cn_ode_stats;

/* Fills o with the defaults: dopri5, rtol 1e-7, atol 1e-9 (torchdiffeq's), one fixed step per output
 * interval, max_steps 100000, safety 0.9, step factors in [0.2, 10], the method's PI β, full norm. */
void cn_ode_default_opts(cn_ode_opts *o);
/* The method called name ("dopri5", "rk4", ...); returns 0, or -1 with err listing the names. */
int cn_ode_method_from_name(const char *name, cn_ode_method *method, cn_error *err);
/* Name of a method. */
const char *cn_ode_method_name(cn_ode_method method);
/* True for the adaptive methods (bosh3, dopri5). */
bool cn_ode_is_adaptive(cn_ode_method method);
/* Solves from z0 (n tensors) at ts[0] through ts[1..nt); out[i * n + k] receives state k at ts[i]
 * (out[k] is z0[k] itself, retained; an output between steps is interpolated). stats may be NULL. Returns 0, or -1 with err (every out
 * entry released and NULL). */
int cn_odeint(cn_ode_fn f, void *ctx, int n, cn_tensor *const *z0, int nt, const double *ts,
              const cn_ode_opts *opts, cn_tensor **out, cn_ode_stats *stats, cn_error *err);

#endif
