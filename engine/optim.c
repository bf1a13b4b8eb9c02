/* optim.c — fused optimiser updates, gradient norms, scaling and EMA (see optim.h).
 *
 * The update formulas and their float32 order of operations are those of PyTorch 1.13's
 * _single_tensor_sgd / _single_tensor_adam / _single_tensor_adamw (torch/optim/{sgd,adam,adamw}.py): every
 * tensor op there rounds to float32, so each line below rounds where torch's ops do, and Python
 * scalars (lr / (1 - beta1^step), sqrt(1 - beta2^step), 1 - lr * wd) are computed in double and
 * then rounded to float, as torch does when it passes them to a float kernel.
 */
#include <math.h>
#include <stdio.h>

#include "optim.h"
#include "parallel.h"

/* ---- checks ------------------------------------------------------------------------------ */

/* t must be contiguous and, when ref is given, have ref's shape. `what` names t in the message. */
static int check_operand(const char *fname, const char *what, const cn_tensor *t, const cn_tensor *ref,
                         cn_error *err) {
    char a[160], b[160];
    if (!t) {
        cn_error_set(err, "%s: %s is missing", fname, what);
        return -1;
    }
    if (ref && !cn_same_shape(t, ref)) {
        cn_error_set(err, "%s: %s has shape %s but the parameter has shape %s", fname, what,
                     cn_shape_str(a, sizeof a, t->ndim, t->shape), cn_shape_str(b, sizeof b, ref->ndim, ref->shape));
        return -1;
    }
    if (!cn_is_contiguous(t)) {
        cn_error_set(err, "%s: %s of shape %s must be contiguous (call contiguous())", fname, what,
                     cn_shape_str(a, sizeof a, t->ndim, t->shape));
        return -1;
    }
    return 0;
}

/* ---- SGD --------------------------------------------------------------------------------- */

/* torch: d_p = d_p.add(param, alpha=wd); buf.mul_(momentum).add_(d_p, alpha=1 - dampening);
 * d_p = d_p.add(buf, alpha=momentum) (nesterov) or buf; param.add_(d_p, alpha=-lr). */
int cn_sgd_step(cn_tensor *param, const cn_tensor *grad, cn_tensor *momentum_buf, double lr,
                double momentum, double dampening, double weight_decay, bool nesterov,
                bool first_step, cn_error *err) {
    if (check_operand("sgd_step", "parameter", param, NULL, err) ||
        check_operand("sgd_step", "gradient", grad, param, err))
        return -1;
    bool use_momentum = momentum != 0.0;
    if (use_momentum && check_operand("sgd_step", "momentum buffer", momentum_buf, param, err)) return -1;
    float *restrict p = cn_data(param);
    const float *restrict g = cn_data(grad);
    float *restrict buf = use_momentum ? cn_data(momentum_buf) : NULL;
    const float wd = (float)weight_decay, mom = (float)momentum, keep = (float)(1.0 - dampening);
    const float neg_lr = (float)-lr;
    const bool decay = weight_decay != 0.0;
    const int64_t n = (int64_t)cn_numel(param);
#pragma omp parallel for schedule(static) if (n > PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) {
        float d = g[i];
        if (decay) d = d + wd * p[i];
        if (use_momentum) {
            float b = first_step ? d : buf[i] * mom + keep * d;
            buf[i] = b;
            d = nesterov ? d + mom * b : b;
        }
        p[i] = p[i] + neg_lr * d;
    }
    return 0;
}

/* ---- Adam / AdamW ------------------------------------------------------------------------ */

/* torch (single tensor, not capturable):
 *   AdamW: param.mul_(1 - lr * wd)                   Adam: grad = grad.add(param, alpha=wd)
 *   exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
 *   exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
 *   step_size = lr / (1 - beta1 ** step); bc2_sqrt = sqrt(1 - beta2 ** step)      (Python floats)
 *   denom = (exp_avg_sq.sqrt() / bc2_sqrt).add_(eps)      (amsgrad: the running max of exp_avg_sq)
 *   param.addcdiv_(exp_avg, denom, value=-step_size)
 * eps is added after the bias-corrected square root (Kingma & Ba 2015, Algorithm 1, as torch). */
int cn_adam_step(cn_tensor *param, const cn_tensor *grad, cn_tensor *exp_avg, cn_tensor *exp_avg_sq,
                 cn_tensor *max_exp_avg_sq, int64_t step, double lr, double beta1, double beta2,
                 double eps, double weight_decay, bool decoupled, cn_error *err) {
    const char *fname = decoupled ? "adamw_step" : "adam_step";
    if (check_operand(fname, "parameter", param, NULL, err) || check_operand(fname, "gradient", grad, param, err) ||
        check_operand(fname, "exp_avg", exp_avg, param, err) ||
        check_operand(fname, "exp_avg_sq", exp_avg_sq, param, err) ||
        (max_exp_avg_sq && check_operand(fname, "max_exp_avg_sq", max_exp_avg_sq, param, err)))
        return -1;
    if (step < 1) {
        cn_error_set(err, "%s: step must be at least 1 (the count of this update), got %lld", fname, (long long)step);
        return -1;
    }
    float *restrict p = cn_data(param);
    const float *restrict g = cn_data(grad);
    float *restrict m = cn_data(exp_avg);
    float *restrict v = cn_data(exp_avg_sq);
    float *restrict vmax = max_exp_avg_sq ? cn_data(max_exp_avg_sq) : NULL;
    const double bias_correction1 = 1.0 - pow(beta1, (double)step);
    const double bias_correction2 = 1.0 - pow(beta2, (double)step);
    const float neg_step_size = (float)-(lr / bias_correction1);
    const float bc2_sqrt = (float)sqrt(bias_correction2);
    const float b1 = (float)beta1, b2 = (float)beta2;
    const float one_minus_b1 = (float)(1.0 - beta1), one_minus_b2 = (float)(1.0 - beta2);
    const float eps_f = (float)eps, wd = (float)weight_decay;
    const float shrink = (float)(1.0 - lr * weight_decay);
    const bool coupled_decay = !decoupled && weight_decay != 0.0;
    const int64_t n = (int64_t)cn_numel(param);
#pragma omp parallel for schedule(static) if (n > PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) {
        float pi = p[i], gi = g[i];
        if (decoupled) pi = pi * shrink;
        else if (coupled_decay) gi = gi + wd * pi;
        float mi = m[i] * b1 + one_minus_b1 * gi;
        float vi = v[i] * b2 + one_minus_b2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        if (vmax) {
            float prev = vmax[i];
            vi = (prev != prev || prev > vi) ? prev : vi; /* torch.maximum: NaN wins */
            vmax[i] = vi;
        }
        float denom = sqrtf(vi) / bc2_sqrt + eps_f;
        p[i] = pi + neg_step_size * (mi / denom);
    }
    return 0;
}

/* ---- gradient norm and scaling ----------------------------------------------------------- */

/* Norm kinds, so the per-element work is chosen once per tensor. */
typedef enum { NORM_P, NORM_1, NORM_2, NORM_INF, NORM_0 } norm_kind;

/* Adds element x's share into acc (a sum of |x|^p, or for NORM_INF the running max |x|). */
static inline double norm_accumulate(double acc, float x, norm_kind kind, double p) {
    double ax = fabs((double)x);
    switch (kind) {
    case NORM_1: return acc + ax;
    case NORM_2: return acc + ax * ax;
    case NORM_INF: return (ax > acc || ax != ax) ? ax : acc;
    case NORM_0: return acc + (x != 0.0f);
    default: return acc + pow(ax, p);
    }
}

/* The accumulated value of a contiguous block of n floats. */
static double norm_block(const float *x, int64_t n, norm_kind kind, double p) {
    double acc = 0.0;
    switch (kind) {
    case NORM_2:
#pragma omp parallel for schedule(static) reduction(+ : acc) if (n > PARALLEL_MIN)
        for (int64_t i = 0; i < n; i++) acc += (double)x[i] * (double)x[i];
        return acc;
    case NORM_1:
#pragma omp parallel for schedule(static) reduction(+ : acc) if (n > PARALLEL_MIN)
        for (int64_t i = 0; i < n; i++) acc += fabs((double)x[i]);
        return acc;
    case NORM_INF: {
        bool nan = false;
#pragma omp parallel for schedule(static) reduction(max : acc) reduction(|| : nan) if (n > PARALLEL_MIN)
        for (int64_t i = 0; i < n; i++) {
            double ax = fabs((double)x[i]);
            nan = nan || ax != ax;
            acc = ax > acc ? ax : acc;
        }
        return nan ? NAN : acc;
    }
    default:
#pragma omp parallel for schedule(static) reduction(+ : acc) if (n > PARALLEL_MIN)
        for (int64_t i = 0; i < n; i++) acc = norm_accumulate(acc, x[i], kind, p);
        return acc;
    }
}

/* Calls fn(element pointer, ctx) on every element of a strided tensor, in row-major order. */
static void walk_strided(const cn_tensor *t, void (*fn)(float *x, void *ctx), void *ctx) {
    size_t n = cn_numel(t);
    if (n == 0) return;
    int64_t idx[CN_MAX_DIMS] = {0};
    float *base = t->storage->data;
    int64_t off = (int64_t)t->offset;
    for (size_t e = 0; e < n; e++) {
        fn(base + off, ctx);
        for (int d = t->ndim - 1; d >= 0; d--) {
            off += t->stride[d];
            if (++idx[d] < t->shape[d]) break;
            off -= t->shape[d] * t->stride[d];
            idx[d] = 0;
        }
    }
}

typedef struct {
    double acc;
    norm_kind kind;
    double p;
} norm_ctx;

static void norm_visit(float *x, void *ctx) {
    norm_ctx *c = ctx;
    c->acc = norm_accumulate(c->acc, *x, c->kind, c->p);
}

double cn_grad_norm(int n, const cn_tensor *const *grads, double norm_type) {
    if (!(norm_type >= 0.0)) return NAN;
    norm_kind kind = norm_type == INFINITY ? NORM_INF
                   : norm_type == 2.0      ? NORM_2
                   : norm_type == 1.0      ? NORM_1
                   : norm_type == 0.0      ? NORM_0
                                           : NORM_P;
    double total = 0.0;
    for (int k = 0; k < n; k++) {
        const cn_tensor *t = grads[k];
        double part;
        if (cn_is_contiguous(t)) {
            part = norm_block(cn_data(t), (int64_t)cn_numel(t), kind, norm_type);
        } else {
            norm_ctx c = {0.0, kind, norm_type};
            walk_strided(t, norm_visit, &c);
            part = c.acc;
        }
        if (kind == NORM_INF) total = (part > total || part != part || total != total) ? part : total;
        else total += part;
    }
    switch (kind) {
    case NORM_INF:
    case NORM_1:
    case NORM_0: return total;
    case NORM_2: return sqrt(total);
    default: return pow(total, 1.0 / norm_type);
    }
}

static void scale_visit(float *x, void *ctx) { *x = *x * *(const float *)ctx; }

int cn_scale_(cn_tensor *t, float factor, cn_error *err) {
    for (int d = 0; d < t->ndim; d++) {
        if (t->stride[d] == 0 && t->shape[d] > 1) {
            char a[160];
            cn_error_set(err, "scale_: cannot scale an expanded view of shape %s in place (its elements alias)",
                         cn_shape_str(a, sizeof a, t->ndim, t->shape));
            return -1;
        }
    }
    if (!cn_is_contiguous(t)) {
        walk_strided(t, scale_visit, &factor);
        return 0;
    }
    float *restrict x = cn_data(t);
    const int64_t n = (int64_t)cn_numel(t);
#pragma omp parallel for simd schedule(static) if (n > PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) x[i] = x[i] * factor;
    return 0;
}

/* ---- EMA ----------------------------------------------------------------------------------- */

/* As LitEma (latent diffusion) / the DDPM EMA: shadow.sub_((1 - decay) * (shadow - param)). */
int cn_ema_update_(cn_tensor *shadow, const cn_tensor *param, double decay, cn_error *err) {
    if (check_operand("ema_update", "shadow", shadow, NULL, err) ||
        check_operand("ema_update", "parameter", param, shadow, err))
        return -1;
    float *restrict s = cn_data(shadow);
    const float *restrict p = cn_data(param);
    const float one_minus_decay = (float)(1.0 - decay);
    const int64_t n = (int64_t)cn_numel(shadow);
#pragma omp parallel for simd schedule(static) if (n > PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) s[i] = s[i] - one_minus_decay * (s[i] - p[i]);
    return 0;
}

int cn_swap_(cn_tensor *a, cn_tensor *b, cn_error *err) {
    if (check_operand("swap_", "first tensor", a, NULL, err) || check_operand("swap_", "second tensor", b, a, err))
        return -1;
    float *restrict x = cn_data(a);
    float *restrict y = cn_data(b);
    if (x == y) return 0;
    const int64_t n = (int64_t)cn_numel(a);
#pragma omp parallel for simd schedule(static) if (n > PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) {
        float tmp = x[i];
        x[i] = y[i];
        y[i] = tmp;
    }
    return 0;
}
