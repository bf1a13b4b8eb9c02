/* ops_nn.h — neural-network functional ops, forward and backward, as torch.nn.functional.
 *
 * Every function returns a new reference or NULL with err filled (messages start with the op name
 * and show the shapes involved). Inputs may be any strided views. Each op is differentiable: when
 * an input requires grad (and grad mode is on) it records an autograd node; backward sits beside
 * forward in the implementation files. Dims and indices are 0-based here; the Lua binding
 * (engine/lua/l_nn.c) converts from Lua's 1-based ones.
 *
 * Implementations: ops_nn.c (linear, dropout, embedding), ops_softmax.c (softmax, log_softmax),
 * ops_attention.c (scaled_dot_product_attention), ops_loss.c (mse, l1, cross entropy).
 */
#ifndef CN_OPS_NN_H
#define CN_OPS_NN_H

#include <stdbool.h>

#include "tensor.h"

/* How a loss reduces its per-element values (as torch's reduction="none" | "mean" | "sum"). */
typedef enum cn_reduction {
    CN_REDUCTION_NONE,
    CN_REDUCTION_MEAN,
    CN_REDUCTION_SUM
} cn_reduction;

/* ---- ops_nn.c ------------------------------------------------------------------------------ */

/* x @ w^T + bias: x [*, in] (or [in]), w [out, in], bias [out] or NULL -> [*, out]. One GEMM over
 * the flattened leading dims, reading w in place (row-major or a transposed view: no copy). */
cn_tensor *cn_linear(const cn_tensor *x, const cn_tensor *w, const cn_tensor *bias, cn_error *err);

/* Zeroes each element with probability p (draws from the engine RNG, cn_rng_uniform) and scales
 * the rest by 1/(1-p); the mask is kept for backward. p = 1 gives zeros (no draw). With training
 * false or p = 0 it is the identity and returns x itself (a new reference), as torch. */
cn_tensor *cn_dropout(const cn_tensor *x, double p, bool training, cn_error *err);

/* Gathers rows of weight [num, dim] at indices (a float tensor of 0-based integer ids, any shape)
 * -> [indices..., dim]. Backward scatter-adds into weight's gradient (indices take none). An id
 * that is not an integer in [0, num) is an error naming the id and the table size. */
cn_tensor *cn_embedding(const cn_tensor *indices, const cn_tensor *weight, cn_error *err);

/* ---- ops_softmax.c ------------------------------------------------------------------------- */

/* exp(x - max) / sum exp(x - max) along dim (max-subtracted, accumulated in double). */
cn_tensor *cn_softmax(const cn_tensor *x, int dim, cn_error *err);
/* x - max - log sum exp(x - max) along dim. */
cn_tensor *cn_log_softmax(const cn_tensor *x, int dim, cn_error *err);

/* ---- ops_attention.c ----------------------------------------------------------------------- */

/* softmax(q @ k^T * scale + mask) @ v, as torch's F.scaled_dot_product_attention with a float
 * attn_mask. q [*, Lq, d], k [*, Lk, d], v [*, Lk, dv] -> [*, Lq, dv]; the batch dims (*) of q, k
 * and v broadcast as in torch.matmul. mask (or NULL) is ADDED to the scaled scores and must
 * broadcast to [*, Lq, Lk] (without adding dims to the result): 0 lets a key through, -INFINITY
 * blocks it (a row with every key blocked gives NaN, as torch). scale <= 0 means 1/sqrt(d).
 * Computed per batch as two GEMMs and a fused mask+softmax; the attention weights are kept for
 * backward. The mask receives a gradient too when it requires one. */
cn_tensor *cn_scaled_dot_product_attention(const cn_tensor *q, const cn_tensor *k, const cn_tensor *v,
                                           const cn_tensor *mask, double scale, cn_error *err);

/* ---- ops_loss.c ---------------------------------------------------------------------------- */

/* (input - target)^2, reduced; input and target broadcast together (torch warns, we allow it). */
cn_tensor *cn_mse_loss(const cn_tensor *input, const cn_tensor *target, cn_reduction reduction,
                       cn_error *err);
/* |input - target|, reduced; broadcasting as cn_mse_loss. */
cn_tensor *cn_l1_loss(const cn_tensor *input, const cn_tensor *target, cn_reduction reduction,
                      cn_error *err);
/* Cross entropy of logits [N, C] / [N, C, d1...] / [C] as torch's F.cross_entropy. target holds
 * 0-based class ids as floats ([N] / [N, d1...] / []) or, when it has the logits' shape, class
 * probabilities. weight [C] or NULL rescales each class; targets equal to ignore_index add nothing
 * (ids only); label_smoothing in [0, 1] mixes in the uniform distribution. Mean divides by the
 * summed weight of the non-ignored targets (their count without weight; N*d1... for probabilities).
 * Gradients flow to the logits (and to probability targets), not to weight. */
cn_tensor *cn_cross_entropy(const cn_tensor *logits, const cn_tensor *target, const cn_tensor *weight,
                            cn_reduction reduction, int64_t ignore_index, double label_smoothing,
                            cn_error *err);

#endif
