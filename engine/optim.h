/* optim.h — fused optimiser updates, gradient norms and EMA kernels (as torch.optim / clip_grad_norm_).
 *
 * Each update is one pass over a parameter that reads its gradient and state and writes the
 * parameter and state in place, with float32 arithmetic in the order of PyTorch 1.13's
 * single-tensor ("for-loop") implementations; scalars derived from hyperparameters (bias
 * corrections, step sizes) are computed in double as Python does, then rounded to float. Loops run
 * with OpenMP above a size threshold; nothing is allocated per step.
 *
 * The kernels write through the parameters behind autograd's back: call them with grad mode off and
 * never between a forward pass and its backward (saved tensors share the parameters' storage).
 * Parameters and state tensors must be contiguous and of one shape; gradients too (the Lua layer
 * makes a contiguous copy of a strided gradient). Every function returning int gives 0, or -1 with
 * err filled (message starts with the kernel's name and shows the shapes).
 */
#ifndef CN_OPTIM_H
#define CN_OPTIM_H

#include <stdbool.h>
#include <stdint.h>

#include "tensor.h"

/* One SGD step on param (torch.optim.SGD):
 *   d = grad + weight_decay * param
 *   buf = first_step ? d : momentum * buf + (1 - dampening) * d      (when momentum != 0)
 *   d = nesterov ? d + momentum * buf : buf
 *   param -= lr * d
 * momentum_buf may be NULL only when momentum == 0; first_step initialises it (no dampening). */
int cn_sgd_step(cn_tensor *param, const cn_tensor *grad, cn_tensor *momentum_buf, double lr,
                double momentum, double dampening, double weight_decay, bool nesterov,
                bool first_step, cn_error *err);

/* One Adam (decoupled = false) or AdamW (decoupled = true) step on param; step is the 1-based
 * count of this update (the bias corrections use it):
 *   AdamW: param *= 1 - lr * weight_decay          Adam: g = grad + weight_decay * param
 *   m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g g
 *   amsgrad (max_exp_avg_sq != NULL): vmax = max(vmax, v), used in place of v below
 *   param -= lr / (1 - beta1^step) * m / (sqrt(v) / sqrt(1 - beta2^step) + eps) */
int cn_adam_step(cn_tensor *param, const cn_tensor *grad, cn_tensor *exp_avg, cn_tensor *exp_avg_sq,
                 cn_tensor *max_exp_avg_sq, int64_t step, double lr, double beta1, double beta2,
                 double eps, double weight_decay, bool decoupled, cn_error *err);

/* The norm_type-norm of all elements of n tensors taken together (any strides), accumulated in
 * double: norm_type > 0 (2 Euclidean, 1, any p), INFINITY (max |x|), 0 (count of non-zeros).
 * NaN when an element is NaN; 0 for n == 0. norm_type < 0 or NaN gives NaN. */
double cn_grad_norm(int n, const cn_tensor *const *grads, double norm_type);

/* t *= factor in place (any strides; an expanded view, which aliases elements, is an error). */
int cn_scale_(cn_tensor *t, float factor, cn_error *err);

/* Exponential moving average, as the DDPM/LDM EMA: shadow -= (1 - decay) * (shadow - param). */
int cn_ema_update_(cn_tensor *shadow, const cn_tensor *param, double decay, cn_error *err);

/* Exchanges the contents of two contiguous tensors of one shape (EMA weights in and out). */
int cn_swap_(cn_tensor *a, cn_tensor *b, cn_error *err);

#endif
