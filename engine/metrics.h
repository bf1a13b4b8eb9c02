/* metrics.h — image-quality and distribution metrics: SSIM, MS-SSIM, PSNR, Fréchet distance (FID)
 * and kernel distance (KID), each equal to the implementation people cite.
 *
 *   cn_ssim_params p = cn_ssim_defaults(1.0);          // data range 1: images in [0, 1]
 *   double v[N];
 *   if (cn_ssim(a, b, &p, v, NULL, &err)) fail(err.msg);   // per-image SSIM of [N, C, H, W]
 *
 *   cn_feature_stats *real = cn_feature_stats_new(0, &err);
 *   for (each batch) cn_feature_stats_add(real, features, &err);   // [n, D], any n per batch
 *   cn_frechet_distance_stats(real, fake, &fid, &err);
 *   cn_feature_stats_free(real);
 *
 * References (the numbers the tests compare against, tests/tools/fixtures_metrics.py):
 * - SSIM: scikit-image's structural_similarity(im1, im2, gaussian_weights=True, sigma=1.5,
 *   use_sample_covariance=False, data_range=R, channel_axis=0) (Wang et al. 2004): Gaussian
 *   window of radius int(3.5 sigma + 0.5) (11 taps at 1.5), filtered as scipy.ndimage with mode
 *   'reflect', SSIM map averaged over the interior that the window never leaves the image
 *   (crop (win - 1) / 2 from each side), then over channels.
 * - PSNR: scikit-image's peak_signal_noise_ratio: 10 log10(R^2 / MSE), MSE over C x H x W.
 * - MS-SSIM: pytorch-msssim 1.0 (Fang; Wang, Simoncelli & Bovik 2003): per scale the SSIM
 *   terms over the "valid" window positions, 2x2 average pooling (zero padding of size % 2,
 *   counted) between scales, relu'd cs at the first L - 1 scales and relu'd SSIM at the last,
 *   raised to the weights and multiplied, then averaged over channels.
 * - FID: pytorch-fid's calculate_frechet_distance, |mu1 - mu2|^2 + tr S1 + tr S2
 *   - 2 tr sqrtm(S1 S2), with unbiased covariances (np.cov). Here through two symmetric
 *   eigendecompositions (LAPACK dsyevd) instead of a Schur sqrtm.
 * - KID: torchmetrics' KernelInceptionDistance: unbiased MMD^2 with the kernel
 *   k(x, y) = (x.y / D + 1)^3 on random subsets drawn without replacement, mean and population
 *   standard deviation over the subsets.
 *
 * Everything computes in double; nothing records autograd. Images are [N, C, H, W] float32 views
 * of any strides. Functions return 0, or -1 with err filled (messages start with the metric's
 * name and show the shapes); functions returning a pointer return NULL on failure.
 * Implementation: metrics_ssim.c (SSIM, MS-SSIM, PSNR), metrics.c (statistics, FID, KID).
 */
#ifndef CN_METRICS_H
#define CN_METRICS_H

#include <stdint.h>

#include "tensor.h"

/* ---- SSIM, MS-SSIM, PSNR (metrics_ssim.c) ---------------------------------------------------- */

typedef struct cn_ssim_params {
    double data_range; /* R: max - min of the value range (1 for [0, 1], 255 for 8-bit); > 0 */
    double sigma;      /* standard deviation of the Gaussian window; 1.5 */
    int win_size;      /* taps of the window; 0 = as scikit-image, 2 * int(3.5 sigma + 0.5) + 1 */
    double k1, k2;     /* C1 = (k1 R)^2, C2 = (k2 R)^2; 0.01 and 0.03 */
} cn_ssim_params;

/* The defaults above for a data range. */
cn_ssim_params cn_ssim_defaults(double data_range);

/* The normalised Gaussian window of p into w (win taps, win = the resolved window size, at most
 * CN_SSIM_MAX_WIN); returns win, or -1 with err filled for invalid parameters. */
#define CN_SSIM_MAX_WIN 255
int cn_ssim_window(const cn_ssim_params *p, double *w, cn_error *err);

/* SSIM of each image pair of a, b ([N, C, H, W], same shape, H and W at least the window) into
 * per_image[0..N) (the mean over channels); with map non-NULL also the full SSIM map, including
 * the reflect-padded border, as *map = a new reference [N, C, H, W] (scikit-image's full=True). */
int cn_ssim(const cn_tensor *a, const cn_tensor *b, const cn_ssim_params *p, double *per_image,
            cn_tensor **map, cn_error *err);

#define CN_MS_SSIM_MAX_SCALES 16

/* The Wang et al. (2003) scale weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333). */
extern const double cn_ms_ssim_weights[5];
/* The most scales (1..max_scales) a min(H, W) image allows with a window of win taps: the
 * coarsest scale must be larger than the window, i.e. min(H, W) > (win - 1) 2^(L - 1).
 * Returns 0 when not even one scale fits (min(H, W) < win). */
int cn_ms_ssim_max_scales(int64_t height, int64_t width, int win, int max_scales);
/* MS-SSIM of each image pair into per_image[0..N) with n_scales (1..CN_MS_SSIM_MAX_SCALES) weights;
 * the window as for SSIM (11 taps at sigma 1.5, pytorch-msssim's default). Fails when
 * min(H, W) <= (win - 1) 2^(n_scales - 1). */
int cn_ms_ssim(const cn_tensor *a, const cn_tensor *b, const cn_ssim_params *p, int n_scales,
               const double *weights, double *per_image, cn_error *err);

/* PSNR of each image pair into per_image[0..N): +inf for identical images. */
int cn_psnr(const cn_tensor *a, const cn_tensor *b, double data_range, double *per_image,
            cn_error *err);

/* ---- feature statistics, FID, KID (metrics.c) ------------------------------------------------ */

/* Count, mean and scatter matrix of feature vectors, in double, accumulated batch by batch with
 * Chan et al.'s pairwise update (each batch centred on its own mean, then merged), so a split
 * into batches changes the result only by rounding. */
typedef struct cn_feature_stats cn_feature_stats;

/* Empty statistics of dimension dim (0: set by the first batch). NULL with err on bad dim or
 * out of memory. Free with cn_feature_stats_free. */
cn_feature_stats *cn_feature_stats_new(int64_t dim, cn_error *err);
/* Frees s (NULL-safe). */
void cn_feature_stats_free(cn_feature_stats *s);
/* Adds the rows of features [n, D] (n >= 0; any strides). */
int cn_feature_stats_add(cn_feature_stats *s, const cn_tensor *features, cn_error *err);
/* Adds every vector other has seen (other unchanged; dims must agree). */
int cn_feature_stats_merge(cn_feature_stats *s, const cn_feature_stats *other, cn_error *err);
/* Number of vectors seen. */
int64_t cn_feature_stats_count(const cn_feature_stats *s);
/* Their dimension (0 while unset). */
int64_t cn_feature_stats_dim(const cn_feature_stats *s);
/* The mean, D doubles owned by s (valid until the next add/merge). */
const double *cn_feature_stats_mean(const cn_feature_stats *s);
/* The unbiased covariance (divided by count - 1, as np.cov) into cov[D * D], row-major and
 * symmetric. Needs count >= 2. */
int cn_feature_stats_cov(const cn_feature_stats *s, double *cov, cn_error *err);
/* Statistics rebuilt from a count (>= 2), mean[dim] and unbiased covariance cov[dim * dim]
 * (its upper triangle is read), as saved from another run. */
cn_feature_stats *cn_feature_stats_from(int64_t count, int64_t dim, const double *mean,
                                        const double *cov, cn_error *err);

/* Symmetric positive semi-definite square root of a[d * d] into out[d * d] (both row-major; a is
 * read as symmetric): V diag(sqrt(max(lambda, 0))) V^T from LAPACK dsyevd. */
int cn_sqrtm_psd(int64_t d, const double *a, double *out, cn_error *err);
/* Fréchet distance between N(mu1, cov1) and N(mu2, cov2) of dimension d:
 *     |mu1 - mu2|^2 + tr cov1 + tr cov2 - 2 tr (cov1^(1/2) cov2 cov1^(1/2))^(1/2),
 * the last trace from the eigenvalues of cov1 and of Lambda^(1/2) V^T cov2 V Lambda^(1/2)
 * (cov1 = V Lambda V^T), eigenvalues below zero from round-off clamped to 0. */
int cn_frechet_distance(int64_t d, const double *mu1, const double *cov1, const double *mu2,
                        const double *cov2, double *out, cn_error *err);
/* The same between two accumulated statistics (each with count >= 2, same dim). */
int cn_frechet_distance_stats(const cn_feature_stats *a, const cn_feature_stats *b, double *out,
                              cn_error *err);

/* Unbiased MMD^2 between all rows of x [m, D] and y [n, D] (m, n >= 2) with the kernel
 * k(u, v) = (u.v / D + 1)^3:
 *     sum_{i != j} k(x_i, x_j) / (m (m - 1)) + sum_{i != j} k(y_i, y_j) / (n (n - 1))
 *     - 2 sum_{i, j} k(x_i, y_j) / (m n).                                                    */
int cn_mmd2_poly(const cn_tensor *x, const cn_tensor *y, double *out, cn_error *err);
/* KID: n_subsets times, subset_size rows of x and of y drawn without replacement (a partial
 * Fisher-Yates shuffle with the engine RNG, x's rows first), their MMD^2 into values[k]
 * (values may be NULL); *mean and *std (population, as torchmetrics) over the subsets.
 * Needs 2 <= subset_size <= min(rows of x, rows of y). */
int cn_kid(const cn_tensor *x, const cn_tensor *y, int n_subsets, int64_t subset_size,
           double *values, double *mean, double *std, cn_error *err);

#endif
