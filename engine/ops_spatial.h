/* ops_spatial.h — spatial ops on [N, C, H, W]: upsampling, pooling, padding.
 *
 * Exactly torch.nn.functional's semantics (interpolate, avg_pool2d, max_pool2d,
 * adaptive_avg_pool2d, pad), forward and backward: every function is differentiable w.r.t. x.
 * Inputs may be any strided views. Every function returns a new reference (a fresh contiguous
 * tensor) or NULL with err filled; messages name the op and the shapes involved.
 * The pooling ops also take an unbatched [C, H, W] input, as torch. Implementation: ops_spatial.c.
 */
#ifndef CN_OPS_SPATIAL_H
#define CN_OPS_SPATIAL_H

#include "tensor.h"

/* ---- upsampling (input [N, C, H, W]) -------------------------------------------------------- */

/* Nearest-neighbour resize to [out_h, out_w], torch mode 'nearest': src = floor(dst * in / out)
 * (in float, as torch). */
cn_tensor *cn_upsample_nearest2d(const cn_tensor *x, int64_t out_h, int64_t out_w, cn_error *err);
/* Bilinear resize to [out_h, out_w]; source coordinates as torch's area_pixel_compute_source_index
 * (align_corners maps corner pixel centres onto each other; otherwise half-pixel, clamped at 0). */
cn_tensor *cn_upsample_bilinear2d(const cn_tensor *x, int64_t out_h, int64_t out_w, bool align_corners,
                                  cn_error *err);
/* As the two above, for interpolate's scale_factor form: out = floor(in * scale) is the caller's, and
 * the source index uses 1 / scale instead of in / out, as torch does (scale <= 0: use in / out). */
cn_tensor *cn_upsample_nearest2d_scaled(const cn_tensor *x, int64_t out_h, int64_t out_w, double scale_h,
                                        double scale_w, cn_error *err);
cn_tensor *cn_upsample_bilinear2d_scaled(const cn_tensor *x, int64_t out_h, int64_t out_w,
                                         bool align_corners, double scale_h, double scale_w,
                                         cn_error *err);

/* ---- pooling (input [N, C, H, W] or [C, H, W]; arrays are {h, w}) --------------------------- */

/* Average over kernel windows. stride NULL means kernel, padding NULL means 0. Padding is at most
 * half the kernel; count_include_pad counts the zero padding in the divisor. */
cn_tensor *cn_avg_pool2d(const cn_tensor *x, const int64_t kernel[2], const int64_t stride[2],
                         const int64_t padding[2], bool ceil_mode, bool count_include_pad, cn_error *err);
/* Maximum over (dilated) kernel windows; padding counts as -inf; NaN wins. The gradient goes to the
 * argmax recorded by the forward. stride NULL = kernel, padding NULL = 0, dilation NULL = 1. */
cn_tensor *cn_max_pool2d(const cn_tensor *x, const int64_t kernel[2], const int64_t stride[2],
                         const int64_t padding[2], const int64_t dilation[2], bool ceil_mode, cn_error *err);
/* Average over the adaptive windows [floor(i*in/out), ceil((i+1)*in/out)) of each output pixel. */
cn_tensor *cn_adaptive_avg_pool2d(const cn_tensor *x, int64_t out_h, int64_t out_w, cn_error *err);

/* ---- padding (any tensor) ------------------------------------------------------------------- */

typedef enum cn_pad_mode {
    CN_PAD_CONSTANT,  /* fill with value; any number of trailing dims */
    CN_PAD_REFLECT,   /* mirror without repeating the edge: pad < size; 1 to 3 trailing dims */
    CN_PAD_REPLICATE  /* repeat the edge; 1 to 3 trailing dims */
} cn_pad_mode;

/* Pads the last n_pairs dims; pads[2*n_pairs] in torch's order, last dim first: (left, right, top,
 * bottom, ...). Negative pads crop, as torch. value is used by CN_PAD_CONSTANT only. */
cn_tensor *cn_pad(const cn_tensor *x, int n_pairs, const int64_t *pads, cn_pad_mode mode, float value,
                  cn_error *err);

#endif
