/* conv_direct.h — direct convolution of one image, stride 1, dilation 1, no groups (conv_direct.c).
 *
 * For narrow channels the im2col + GEMM route spends a third of its time copying (im2col, GEMM
 * packing, scatter); this kernel reads the image itself: the image is zero-padded once into a
 * flat plane of row width Wp = W + 2 pW, where every tap (i, j) of the kernel is the fixed offset
 * i·Wp + j, so each output vector is a sum of shifted loads times broadcast weights. Internal to
 * ops_conv.c, which chooses between the two routes.
 */
#ifndef CN_CONV_DIRECT_H
#define CN_CONV_DIRECT_H

#include <stdbool.h>
#include <stddef.h>

/* Kernels up to this many taps (7×7). */
#define CN_DIRECT_MAX_TAPS 49

/* The geometry of one direct convolution: x [C, H, W] -> y [O, Ho, Wo], Ho = (H + 2 pH - kH) / sH + 1.
 * The stride (sh, sw) is 1 everywhere but in the small-plane forward (cn_direct_small_conv_image),
 * which also takes 2. */
typedef struct cn_direct_geom {
    int C, H, W, O, kh, kw, ph, pw, sh, sw;
} cn_direct_geom;

/* The share of the kernel's work that is output: Ho·Wo over the flat grid it computes (rows of
 * Wp, rounded up to whole blocks of 64); small for tiny images (3×3: 9 of 64). */
double cn_direct_grid_use(const cn_direct_geom *g);
/* Floats of the packed weight (cn_direct_pack_weight). */
size_t cn_direct_weight_floats(const cn_direct_geom *g);
/* Floats of scratch one image needs (padded image and output grid); 64-byte aligned by caller. */
size_t cn_direct_scratch_floats(const cn_direct_geom *g);
/* Packs w [O, C, kH, kW] into wp (cn_direct_weight_floats). */
void cn_direct_pack_weight(const cn_direct_geom *g, const float *w, float *wp);
/* y [O, Ho, Wo] = act(conv(x [C, H, W]) + bias) (bias may be NULL, act a cn_conv_act); scratch
 * from cn_direct_scratch_floats. par: spread the work over OpenMP threads (one image alone). */
void cn_direct_conv_image(const cn_direct_geom *g, const float *x, const float *wp, const float *bias,
                          int act, float *y, float *scratch, bool par);
/* Floats of scratch the weight gradient needs per image (padded image, gradient on the grid). */
size_t cn_direct_weight_scratch_floats(const cn_direct_geom *g);
/* dw [O, C, kH, kW] += the weight gradient of nb images: x [nb, C, H, W], gy [nb, O, Ho, Wo];
 * scratch of nb · cn_direct_weight_scratch_floats. */
void cn_direct_conv_weight_images(const cn_direct_geom *g, const float *x, const float *gy, int nb, float *dw,
                                  float *scratch);
/* The same convolution with vectors across 16 output channels (for small planes), stride 1 or 2:
 * its packed weight and scratch sizes, the packing, and one image. */
size_t cn_direct_small_weight_floats(const cn_direct_geom *g);
size_t cn_direct_small_scratch_floats(const cn_direct_geom *g);
void cn_direct_small_pack_weight(const cn_direct_geom *g, const float *w, float *wp);
void cn_direct_small_conv_image(const cn_direct_geom *g, const float *x, const float *wp, const float *bias,
                                int act, float *y, float *scratch, bool par);
/* The weight gradient in that layout: scratch floats per image, and dw += the gradient of nb images
 * (x [nb, C, H, W], gy [nb, O, Ho, Wo]) with nb · cn_direct_small_weight_scratch_floats of scratch. */
size_t cn_direct_small_weight_scratch_floats(const cn_direct_geom *g);
void cn_direct_small_weight_images(const cn_direct_geom *g, const float *x, const float *gy, int nb, float *dw,
                                   float *scratch);
/* row[k] = act(row[k] + bias) for k < n, in place (act a cn_conv_act). */
void cn_conv_bias_act_row(float *row, size_t n, float bias, int act);

#endif
