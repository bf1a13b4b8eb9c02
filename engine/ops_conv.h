/* ops_conv.h — 2-D convolution and transposed convolution (ops_conv.c), as
 * torch.nn.functional.conv2d / conv_transpose2d: NCHW float32, zero padding, groups, dilation.
 *
 *   conv2d            x [N, C_in, H, W], w [C_out, C_in/groups, kH, kW], bias [C_out]
 *                     -> [N, C_out, (H + 2 pH - dH (kH - 1) - 1) / sH + 1, ... (same for W)]
 *   conv_transpose2d  x [N, C_in, H, W], w [C_in, C_out/groups, kH, kW], bias [C_out]
 *                     -> [N, C_out, (H - 1) sH - 2 pH + dH (kH - 1) + opH + 1, ... (same for W)]
 *
 * An unbatched input [C, H, W] gives an unbatched output, as in torch. Inputs may be any strided
 * views (they are made contiguous first). Both ops are differentiable w.r.t. x, w and bias.
 * Each returns a new reference, or NULL with err filled (the message names the op and the shapes).
 */
#ifndef CN_OPS_CONV_H
#define CN_OPS_CONV_H

#include "tensor.h"

/* Options, each pair {height, width}. stride and dilation >= 1, padding and output_padding >= 0,
 * groups >= 1. output_padding is for conv_transpose2d only (cn_conv2d requires it to be 0) and
 * must be smaller than the stride or the dilation of its dim. */
/* An activation applied to conv2d's output in the same pass (fused: no separate read and write of
 * the output, forward or backward). Its gradient is taken from the output: relu's y > 0, softplus's
 * 1 - e^-y (torch's softplus, beta 1, threshold 20). */
typedef enum { CN_ACT_NONE = 0, CN_ACT_RELU = 1, CN_ACT_SOFTPLUS = 2 } cn_conv_act;

typedef struct cn_conv2d_opts {
    int stride[2], padding[2], dilation[2], output_padding[2];
    int groups;
    cn_conv_act activation; /* conv2d only */
} cn_conv2d_opts;

/* The defaults: stride 1, padding 0, dilation 1, output_padding 0, groups 1, no activation (what
 * NULL opts mean). */
#define CN_CONV2D_OPTS_DEFAULT {{1, 1}, {0, 0}, {1, 1}, {0, 0}, 1, CN_ACT_NONE}

/* torch.nn.functional.conv2d(x, w, bias, stride, padding, dilation, groups), then o->activation;
 * bias may be NULL, o may be NULL (defaults). Returns a new reference. */
cn_tensor *cn_conv2d(const cn_tensor *x, const cn_tensor *w, const cn_tensor *bias,
                     const cn_conv2d_opts *o, cn_error *err);

/* torch.nn.functional.conv_transpose2d(x, w, bias, stride, padding, output_padding, groups,
 * dilation) — the gradient of conv2d w.r.t. its input; bias and o may be NULL. New reference. */
cn_tensor *cn_conv_transpose2d(const cn_tensor *x, const cn_tensor *w, const cn_tensor *bias,
                               const cn_conv2d_opts *o, cn_error *err);

/* How conv2d, conv_transpose2d and their gradients compute the products that a direct kernel can
 * take (a convolution alone, stride 1, dilation 1, one group, padding, kernels up to 7×7):
 * CN_CONV_AUTO picks the faster route by the operand sizes (measured on this project's reference
 * machine, see ops_conv.c), the others force one. Everything else always runs as im2col + GEMM. */
typedef enum { CN_CONV_AUTO = 0, CN_CONV_GEMM = 1, CN_CONV_DIRECT = 2 } cn_conv_route;

/* Sets the route for every later convolution (process-wide); returns the previous one. */
cn_conv_route cn_conv_set_route(cn_conv_route route);

#endif
