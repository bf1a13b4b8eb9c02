/* bm3d.h — BM3D image denoising: Dabov, Foi, Katkovnik, Egiazarian, "Image denoising by sparse 3-D
 * transform-domain collaborative filtering", IEEE Trans. Image Process. 16(8), 2007.
 *
 *   cn_bm3d_params p = cn_bm3d_defaults(sigma);      // the paper's normal profile for this sigma
 *   p.ht.lambda_3d = 3.0;                             // any field may be changed, then
 *   cn_tensor *den = cn_bm3d(noisy, sigma, &p, &err); // noisy [..., H, W], sigma on the data's scale
 *
 * Stage 1 (hard thresholding): for reference blocks on a grid of step N_step (the last row and
 * column always included), the blocks of a search window N_S x N_S whose distance
 * ||T2D(Z_R) - T2D(Z_x)||^2 / N1^2 (after hard thresholding each 2-D spectrum with lambda_2d * sigma
 * when lambda_2d > 0) is at most tau_match are stacked, the nearest first and at most N2, into a
 * group of the largest power-of-two size; the 3-D spectrum (2-D transform per block, 1-D Haar
 * along the group) is hard-thresholded at lambda_3d * sigma and inverted, and every block is
 * added to the estimate with weight 1 / (sigma^2 N_har) times a Kaiser window (N_har: retained
 * coefficients). Stage 2 (Wiener) matches on the basic estimate and shrinks the noisy group's
 * spectrum by W = B^2 / (B^2 + sigma^2), B the basic estimate's spectrum, with aggregation weight
 * 1 / (sigma^2 ||W||^2). Distances and tau_match are on the 0..255 scale of the paper when the data
 * are in [0, 1] (tau_match / 255^2 is compared with distances of [0, 1] data).
 *
 * Work is spread over OpenMP threads by rows of reference blocks; each row's contributions are
 * accumulated apart and added to the image in row order, so the result does not depend on the
 * number of threads (bit for bit). Memory: two tables of block spectra at a time (stage 1: the
 * noisy one and, when lambda_2d > 0, its thresholded copy; stage 2: noisy and basic estimate),
 * about 8 N1^2 bytes per pixel: 512 B at N1 = 8, 1152 B at N1 = 12 (75 MB for 256 x 256).
 */
#ifndef CN_BM3D_H
#define CN_BM3D_H

#include <stdbool.h>
#include <stdint.h>

#include "error.h"
#include "tensor.h"

/* The 2-D transform of a block: biorthogonal spline wavelet 1.5 (full dyadic decomposition,
 * periodic boundary, basis rows normalised to unit l2 norm, as the authors' code builds it; block
 * size a power of two) or the orthonormal DCT-II (any size). */
typedef enum cn_bm3d_transform2d { CN_BM3D_BIOR15, CN_BM3D_DCT } cn_bm3d_transform2d;
/* The 1-D transform along a group (orthonormal; group sizes are powers of two). */
typedef enum cn_bm3d_transform1d { CN_BM3D_HAAR, CN_BM3D_WHT } cn_bm3d_transform1d;

/* One stage's parameters, in the paper's symbols (Table I). */
typedef struct cn_bm3d_stage {
    int block_size;                /* N1: blocks are N1 x N1 (1..32) */
    int group_max;                 /* N2: at most this many blocks per group (1..64) */
    int step;                      /* N_step: reference-block grid step (>= 1) */
    int search;                    /* N_S: side of the search window, odd (>= 1) */
    double tau_match;              /* tau_match: largest block distance, 0..255 scale */
    double lambda_2d;              /* lambda_2D: pre-threshold for matching (stage 1 only; 0: none) */
    double lambda_3d;              /* lambda_3D: hard threshold (stage 1 only) */
    double beta;                   /* beta: Kaiser window of the aggregation */
    cn_bm3d_transform2d transform; /* T2D */
} cn_bm3d_stage;

typedef struct cn_bm3d_params {
    cn_bm3d_stage ht;                 /* stage 1, hard thresholding */
    cn_bm3d_stage wiener;             /* stage 2, Wiener filtering */
    cn_bm3d_transform1d transform_3d; /* the 1-D transform along groups, both stages */
    int stages;                       /* 2: the final estimate; 1: the basic estimate only */
} cn_bm3d_params;

/* The paper's normal profile for noise sigma on the [0, 1] scale (Table I): N1 8, N2 16/32,
 * N_step 3, N_S 39, tau_match 2500/400, lambda_3D 2.7, beta 2, bior1.5 then DCT, Haar; for
 * sigma > 40/255: stage 1 N1 12, N_step 4, DCT, lambda_2D 2, lambda_3D 2.8, tau_match 5000;
 * stage 2 N1 11, N_step 6, tau_match 3500. */
cn_bm3d_params cn_bm3d_defaults(double sigma);
/* Returns 0 when p is usable, else -1 with err naming the bad field. */
int cn_bm3d_check(const cn_bm3d_params *p, cn_error *err);
/* Denoises every [H, W] plane of noisy (2-D or more, any strides) independently; sigma > 0 is the
 * noise standard deviation on the data's scale; p NULL means cn_bm3d_defaults(sigma). Returns a
 * new reference (contiguous, same shape), or NULL with err filled. */
cn_tensor *cn_bm3d(cn_tensor *noisy, double sigma, const cn_bm3d_params *p, cn_error *err);
/* One plane: noisy and out are h x w row-major (distinct buffers). Returns 0 or -1 with err. */
int cn_bm3d_plane(const float *noisy, int64_t h, int64_t w, double sigma, const cn_bm3d_params *p,
                  float *out, cn_error *err);

/* ---- the building blocks, exposed for tests ---------------------------------------------- */

/* Fills forward and inverse (n x n, row-major, rows = basis functions) of a 2-D transform's
 * 1-D factor: coefficients c = F x, x = I c. Returns 0, or -1 with err (bior1.5 needs n a power
 * of two). */
int cn_bm3d_matrix(cn_bm3d_transform2d kind, int n, double *forward, double *inverse, cn_error *err);
/* Transforms x (n a power of two, <= 64) in place along the group; inverse undoes it. */
void cn_bm3d_transform_1d(cn_bm3d_transform1d kind, float *x, int n, bool inverse);
/* The Kaiser window w[0..n) of parameter beta (MATLAB's kaiser(n, beta)). */
void cn_bm3d_kaiser(int n, double beta, double *w);

#endif
