/* ops_norm.h — normalisation layers: group, instance, layer and batch norm (ops_norm.c).
 *
 * Each follows PyTorch's formula exactly: y = (x - mean) / sqrt(var + eps) * weight + bias, with
 * the biased (population) variance, eps inside the square root and the statistics accumulated in
 * double. weight and bias are optional (NULL: scale 1, shift 0), differentiable like x; inputs
 * may be any strided views. Every function returns a new reference or NULL with err filled (the
 * message names the op and the shapes). Backward kernels are fused and reuse the forward's mean
 * and 1/sqrt(var + eps).
 */
#ifndef CN_OPS_NORM_H
#define CN_OPS_NORM_H

#include "tensor.h"

/* torch.nn.functional.group_norm: x [N, C, *] (any number of spatial dims, also none); the C
 * channels split into num_groups groups, each normalised per sample; weight, bias [C]. */
cn_tensor *cn_group_norm(const cn_tensor *x, int64_t num_groups, const cn_tensor *weight,
                         const cn_tensor *bias, double eps, cn_error *err);

/* silu(group_norm(...)), the norm's usual successor: in one pass when no gradient is recorded
 * (sampling), else the two recorded ops. */
cn_tensor *cn_group_norm_silu(const cn_tensor *x, int64_t num_groups, const cn_tensor *weight,
                              const cn_tensor *bias, double eps, cn_error *err);

/* torch.nn.functional.instance_norm with batch statistics: x [N, C, *] (at least one spatial
 * dim, more than one spatial element) normalised per (sample, channel); weight, bias [C]. */
cn_tensor *cn_instance_norm(const cn_tensor *x, const cn_tensor *weight, const cn_tensor *bias,
                            double eps, cn_error *err);

/* torch.nn.functional.layer_norm over the last n_normalized_dims dims of x (1..ndim); weight
 * and bias have exactly those trailing sizes. */
cn_tensor *cn_layer_norm(const cn_tensor *x, int n_normalized_dims, const cn_tensor *weight,
                         const cn_tensor *bias, double eps, cn_error *err);

/* torch.nn.functional.batch_norm: x [N, C, *], statistics per channel. Training: batch
 * statistics, and running_mean/running_var [C] (when given) are updated in place to
 * (1 - momentum) * running + momentum * batch (the variance unbiased for the running one).
 * Eval: normalises with the running statistics, which are then required. The running buffers are
 * never differentiated. */
cn_tensor *cn_batch_norm(const cn_tensor *x, cn_tensor *running_mean, cn_tensor *running_var,
                         const cn_tensor *weight, const cn_tensor *bias, bool training,
                         double momentum, double eps, cn_error *err);

#endif
