/* metrics_ssim.c — SSIM (scikit-image), MS-SSIM (pytorch-msssim 1.0) and PSNR (scikit-image).
 *
 * Every image plane (n, c) is read into double once and processed alone, so the work is a loop
 * over N x C planes, OpenMP-parallel when there are several, each thread with its own scratch.
 *
 * SSIM (Wang et al. 2004, Eq. 13 with alpha = beta = gamma = 1), per pixel, with Gaussian-weighted
 * local statistics mu_x = G * x, sigma_x^2 = G * x^2 - mu_x^2, sigma_xy = G * xy - mu_x mu_y:
 *
 *     S = (2 mu_x mu_y + C1) (2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1) (sigma_x^2 + sigma_y^2 + C2))
 *
 * scikit-image filters the whole image with scipy.ndimage's 'reflect' border (d c b a | a b c d |
 * d c b a), returns that full map, and averages it over the interior cropped by the window radius
 * — exactly the positions where the window stays inside the image. MS-SSIM (Wang, Simoncelli &
 * Bovik 2003) as pytorch-msssim computes only those "valid" positions at every scale, takes the
 * contrast-structure term cs = (2 sigma_xy + C2) / (sigma_x^2 + sigma_y^2 + C2) at the first
 * L - 1 scales and S at the last, and halves the image between scales by 2x2 average pooling
 * (torch avg_pool2d, padding = size % 2, padded zeros counted):
 *
 *     MS-SSIM = prod_{l < L} relu(mean cs_l)^w_l * relu(mean S_L)^w_L, averaged over channels.
 */
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>

#include "metrics.h"

#define PAR_MIN 16384 /* pixels below which a batch runs on one thread */

const double cn_ms_ssim_weights[5] = {0.0448, 0.2856, 0.3001, 0.2363, 0.1333};

cn_ssim_params cn_ssim_defaults(double data_range) {
    cn_ssim_params p = {.data_range = data_range, .sigma = 1.5, .win_size = 0, .k1 = 0.01, .k2 = 0.03};
    return p;
}

/* Gaussian taps exp(-x^2 / (2 sigma^2)), x = -r..r, normalised to sum 1: scipy's
 * _gaussian_kernel1d and pytorch-msssim's _fspecial_gauss_1d are the same formula. */
int cn_ssim_window(const cn_ssim_params *p, double *w, cn_error *err) {
    if (!(p->sigma > 0.0) || !isfinite(p->sigma) || p->sigma > 1e4) {
        cn_error_set(err, "ssim: sigma must be a positive number, got %g", p->sigma);
        return -1;
    }
    if (!(p->k1 >= 0.0 && p->k2 >= 0.0) || !isfinite(p->k1) || !isfinite(p->k2)) {
        cn_error_set(err, "ssim: K1 and K2 must be non-negative numbers, got %g and %g", p->k1, p->k2);
        return -1;
    }
    int win = p->win_size;
    if (win == 0) {
        double r = floor(3.5 * p->sigma + 0.5); /* scipy's radius int(truncate * sigma + 0.5) */
        if (r > (CN_SSIM_MAX_WIN - 1) / 2) {
            cn_error_set(err, "ssim: sigma %g needs a window wider than %d taps", p->sigma, CN_SSIM_MAX_WIN);
            return -1;
        }
        win = 2 * (int)r + 1;
    }
    if (win < 1 || win % 2 == 0 || win > CN_SSIM_MAX_WIN) {
        cn_error_set(err, "ssim: the window size must be odd and in 1..%d, got %d", CN_SSIM_MAX_WIN, win);
        return -1;
    }
    int r = win / 2;
    double sum = 0.0;
    for (int k = 0; k < win; k++) {
        double x = k - r;
        w[k] = exp(-0.5 / (p->sigma * p->sigma) * x * x);
        sum += w[k];
    }
    for (int k = 0; k < win; k++) w[k] /= sum;
    return win;
}

/* ---- argument checks ------------------------------------------------------------------------- */

static int check_pair(const char *fname, const cn_tensor *a, const cn_tensor *b, cn_error *err) {
    char sa[96], sb[96];
    if (a->ndim != 4 || !cn_same_shape(a, b)) {
        cn_shape_str(sa, sizeof sa, a->ndim, a->shape);
        cn_shape_str(sb, sizeof sb, b->ndim, b->shape);
        if (a->ndim != 4)
            cn_error_set(err, "%s: images must be 4-D [N, C, H, W], got %s", fname, sa);
        else
            cn_error_set(err, "%s: images must have the same shape, got %s and %s", fname, sa, sb);
        return -1;
    }
    if (a->shape[1] < 1 || a->shape[2] < 1 || a->shape[3] < 1) {
        cn_shape_str(sa, sizeof sa, a->ndim, a->shape);
        cn_error_set(err, "%s: images of shape %s have no pixels", fname, sa);
        return -1;
    }
    return 0;
}

static int check_range(const char *fname, double data_range, cn_error *err) {
    if (!(data_range > 0.0) || !isfinite(data_range)) {
        cn_error_set(err, "%s: data_range must be a positive number, got %g", fname, data_range);
        return -1;
    }
    return 0;
}

/* ---- plane helpers --------------------------------------------------------------------------- */

/* Plane (n, c) of t into out[H * W] in double. */
static void load_plane(const cn_tensor *t, int64_t n, int64_t c, double *out) {
    const int64_t h = t->shape[2], w = t->shape[3], sh = t->stride[2], sw = t->stride[3];
    const float *base = cn_data(t) + n * t->stride[0] + c * t->stride[1];
    for (int64_t i = 0; i < h; i++)
        for (int64_t j = 0; j < w; j++) out[i * w + j] = base[i * sh + j * sw];
}

/* scipy.ndimage 'reflect': the signal mirrored about its edges, edge samples repeated; period 2n. */
static int64_t reflect(int64_t i, int64_t n) {
    int64_t period = 2 * n;
    i %= period;
    if (i < 0) i += period;
    return i < n ? i : period - 1 - i;
}

/* out[h, w] = the window along H then along W over in[h, w], 'reflect' at the borders.
 * tmp: h * w, line: w + win - 1. */
static void filter_reflect(const double *in, double *out, double *tmp, double *line, int64_t h, int64_t w,
                           const double *win, int n) {
    const int r = n / 2;
    for (int64_t i = 0; i < h; i++) {
        double *t = tmp + i * w;
        for (int64_t j = 0; j < w; j++) t[j] = 0.0;
        for (int k = 0; k < n; k++) {
            const double *src = in + reflect(i + k - r, h) * w, wk = win[k];
            for (int64_t j = 0; j < w; j++) t[j] += wk * src[j];
        }
    }
    for (int64_t i = 0; i < h; i++) {
        const double *t = tmp + i * w;
        for (int64_t j = 0; j < w + 2 * r; j++) line[j] = t[reflect(j - r, w)];
        double *o = out + i * w;
        for (int64_t j = 0; j < w; j++) {
            double s = 0.0;
            for (int k = 0; k < n; k++) s += win[k] * line[j + k];
            o[j] = s;
        }
    }
}

/* out[h - n + 1, w - n + 1] = the window along H then along W, valid positions only. tmp: h * w. */
static void filter_valid(const double *in, double *out, double *tmp, int64_t h, int64_t w, const double *win,
                         int n) {
    const int64_t oh = h - n + 1, ow = w - n + 1;
    for (int64_t i = 0; i < oh; i++) {
        double *t = tmp + i * w;
        for (int64_t j = 0; j < w; j++) t[j] = 0.0;
        for (int k = 0; k < n; k++) {
            const double *src = in + (i + k) * w, wk = win[k];
            for (int64_t j = 0; j < w; j++) t[j] += wk * src[j];
        }
    }
    for (int64_t i = 0; i < oh; i++) {
        const double *t = tmp + i * w;
        double *o = out + i * ow;
        for (int64_t j = 0; j < ow; j++) {
            double s = 0.0;
            for (int k = 0; k < n; k++) s += win[k] * t[j + k];
            o[j] = s;
        }
    }
}

/* The five local statistics of x, y (mu_x, mu_y, E[x^2], E[y^2], E[xy]) into stat[0..5), each
 * m pixels, through filter(src, dst). prod: scratch of the input's size. */
typedef struct scratch {
    double *x, *y, *prod, *tmp, *line, *stat[5];
} scratch;

static void local_stats(scratch *s, int64_t h, int64_t w, const double *win, int n, bool valid) {
    const int64_t m = h * w;
    for (int q = 0; q < 5; q++) {
        const double *src = q == 0 ? s->x : q == 1 ? s->y : s->prod;
        if (q >= 2) {
            const double *u = q == 3 ? s->y : s->x, *v = q == 2 ? s->x : s->y;
            for (int64_t i = 0; i < m; i++) s->prod[i] = u[i] * v[i];
        }
        if (valid)
            filter_valid(src, s->stat[q], s->tmp, h, w, win, n);
        else
            filter_reflect(src, s->stat[q], s->tmp, s->line, h, w, win, n);
    }
}

/* SSIM and cs at one pixel from the five statistics. */
static inline void ssim_at(const scratch *s, int64_t i, double c1, double c2, double *ssim, double *cs) {
    const double ux = s->stat[0][i], uy = s->stat[1][i];
    const double vx = s->stat[2][i] - ux * ux, vy = s->stat[3][i] - uy * uy, vxy = s->stat[4][i] - ux * uy;
    const double c = (2.0 * vxy + c2) / (vx + vy + c2);
    *cs = c;
    *ssim = (2.0 * ux * uy + c1) / (ux * ux + uy * uy + c1) * c;
}

/* Scratch for planes up to h x w with a window of n taps (9 planes and a line); NULL when out of memory. */
static double *scratch_alloc(scratch *s, int64_t h, int64_t w, int n) {
    const size_t m = (size_t)(h * w);
    double *mem = malloc((9 * m + (size_t)w + (size_t)n) * sizeof(double));
    if (!mem) return NULL;
    double *p = mem;
    s->x = p, p += m;
    s->y = p, p += m;
    s->prod = p, p += m;
    s->tmp = p, p += m;
    for (int q = 0; q < 5; q++) s->stat[q] = p, p += m;
    s->line = p;
    return mem;
}

/* ---- the loop over planes ---------------------------------------------------------------------- */

/* What SSIM and MS-SSIM need per plane: the inputs, the window, the constants, and the map
 * (SSIM, or NULL) or the scales and their weights (MS-SSIM). */
typedef struct plane_job {
    const cn_tensor *a, *b;
    const double *win;
    int n; /* window taps */
    double c1, c2;
    cn_tensor *map;
    int n_scales;
    const double *weights;
} plane_job;

/* The value of plane q, whose x and y are loaded in s. */
typedef double (*plane_value)(scratch *s, int64_t q, const plane_job *job);

/* The loop SSIM and MS-SSIM share: over the N x C planes, in parallel when there are several
 * and enough pixels, each thread with its own scratch; per_image[i] is the mean of image i's
 * channel values. Returns 0, or -1 when out of memory. */
static int over_planes(const plane_job *job, plane_value value, double *per_image) {
    const int64_t N = job->a->shape[0], C = job->a->shape[1], H = job->a->shape[2], W = job->a->shape[3];
    const int64_t planes = N * C;
    double *plane_val = malloc((size_t)(planes > 0 ? planes : 1) * sizeof(double));
    if (!plane_val) return -1;
    int failed = 0;
#pragma omp parallel if (planes > 1 && planes * H * W > PAR_MIN)
    {
        scratch s;
        double *mem = scratch_alloc(&s, H, W, job->n);
        if (!mem) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic)
        for (int64_t q = 0; q < planes; q++) {
            if (!mem) continue;
            load_plane(job->a, q / C, q % C, s.x);
            load_plane(job->b, q / C, q % C, s.y);
            plane_val[q] = value(&s, q, job);
        }
        free(mem);
    }
    if (failed) {
        free(plane_val);
        return -1;
    }
    for (int64_t i = 0; i < N; i++) {
        double sum = 0.0;
        for (int64_t c = 0; c < C; c++) sum += plane_val[i * C + c];
        per_image[i] = sum / (double)C;
    }
    free(plane_val);
    return 0;
}

/* ---- SSIM ------------------------------------------------------------------------------------- */

/* Mean SSIM over the interior of plane q (the window inside the image); the whole map into
 * job->map when there is one. */
static double ssim_plane(scratch *s, int64_t q, const plane_job *job) {
    const int64_t H = job->a->shape[2], W = job->a->shape[3];
    const int r = job->n / 2;
    local_stats(s, H, W, job->win, job->n, false);
    float *out = job->map ? cn_data(job->map) + q * H * W : NULL;
    double sum = 0.0;
    for (int64_t i = 0; i < H; i++)
        for (int64_t j = 0; j < W; j++) {
            double v, cs;
            ssim_at(s, i * W + j, job->c1, job->c2, &v, &cs);
            if (out) out[i * W + j] = (float)v;
            if (i >= r && i < H - r && j >= r && j < W - r) sum += v;
        }
    return sum / (double)((H - 2 * r) * (W - 2 * r));
}

int cn_ssim(const cn_tensor *a, const cn_tensor *b, const cn_ssim_params *p, double *per_image,
            cn_tensor **map, cn_error *err) {
    double win[CN_SSIM_MAX_WIN];
    if (map) *map = NULL;
    if (check_pair("ssim", a, b, err) || check_range("ssim", p->data_range, err)) return -1;
    int n = cn_ssim_window(p, win, err);
    if (n < 0) return -1;
    const int64_t H = a->shape[2], W = a->shape[3];
    if (H < n || W < n) {
        cn_error_set(err, "ssim: images of %" PRId64 "x%" PRId64 " are smaller than the %dx%d Gaussian window "
                     "(sigma %g); SSIM needs H and W >= %d", H, W, n, n, p->sigma, n);
        return -1;
    }
    cn_tensor *m = NULL;
    if (map && !(m = cn_empty(4, a->shape, err))) return -1;
    const plane_job job = {.a = a, .b = b, .win = win, .n = n, .map = m,
                           .c1 = (p->k1 * p->data_range) * (p->k1 * p->data_range),
                           .c2 = (p->k2 * p->data_range) * (p->k2 * p->data_range)};
    if (over_planes(&job, ssim_plane, per_image)) {
        cn_release(m);
        cn_error_set(err, "ssim: out of memory");
        return -1;
    }
    if (map) *map = m;
    return 0;
}

/* ---- MS-SSIM ---------------------------------------------------------------------------------- */

int cn_ms_ssim_max_scales(int64_t height, int64_t width, int win, int max_scales) {
    const int64_t side = height < width ? height : width;
    for (int l = max_scales < 62 ? max_scales : 62; l >= 1; l--)
        if (side > (int64_t)(win - 1) << (l - 1)) return l;
    return 0;
}

/* torch avg_pool2d(kernel 2, stride 2, padding (h % 2, w % 2), count_include_pad): output
 * floor(h / 2) + h % 2 rows; window i covers rows 2i - ph and 2i + 1 - ph, the one outside is 0. */
static void avg_pool2(const double *in, double *out, int64_t h, int64_t w, int64_t *oh, int64_t *ow) {
    const int64_t ph = h % 2, pw = w % 2, rows = h / 2 + ph, cols = w / 2 + pw;
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) {
            double sum = 0.0;
            for (int64_t di = 0; di < 2; di++) {
                const int64_t y = 2 * i + di - ph;
                if (y < 0 || y >= h) continue;
                for (int64_t dj = 0; dj < 2; dj++) {
                    const int64_t x = 2 * j + dj - pw;
                    if (x >= 0 && x < w) sum += in[y * w + x];
                }
            }
            out[i * cols + j] = sum / 4.0;
        }
    *oh = rows, *ow = cols;
}

/* MS-SSIM of plane q: cs at the first n_scales - 1 scales and SSIM at the last, each through relu
 * and raised to its weight, the planes halved between scales. */
static double ms_ssim_plane(scratch *s, int64_t q, const plane_job *job) {
    (void)q;
    int64_t h = job->a->shape[2], w = job->a->shape[3];
    const int n = job->n, n_scales = job->n_scales;
    double value = 1.0;
    for (int l = 0; l < n_scales; l++) {
        local_stats(s, h, w, job->win, n, true);
        const int64_t count = (h - n + 1) * (w - n + 1);
        double sum_ssim = 0.0, sum_cs = 0.0;
        for (int64_t i = 0; i < count; i++) {
            double v, cs;
            ssim_at(s, i, job->c1, job->c2, &v, &cs);
            sum_ssim += v, sum_cs += cs;
        }
        const double term = (l < n_scales - 1 ? sum_cs : sum_ssim) / (double)count;
        value *= pow(term > 0.0 ? term : 0.0, job->weights[l]); /* relu, as pytorch-msssim */
        if (term != term) value = NAN;
        if (l < n_scales - 1) { /* halve x and y (through prod, a free plane) */
            int64_t oh, ow;
            avg_pool2(s->x, s->prod, h, w, &oh, &ow);
            for (int64_t i = 0; i < oh * ow; i++) s->x[i] = s->prod[i];
            avg_pool2(s->y, s->prod, h, w, &oh, &ow);
            for (int64_t i = 0; i < oh * ow; i++) s->y[i] = s->prod[i];
            h = oh, w = ow;
        }
    }
    return value;
}

int cn_ms_ssim(const cn_tensor *a, const cn_tensor *b, const cn_ssim_params *p, int n_scales,
               const double *weights, double *per_image, cn_error *err) {
    double win[CN_SSIM_MAX_WIN];
    if (check_pair("ms_ssim", a, b, err) || check_range("ms_ssim", p->data_range, err)) return -1;
    int n = cn_ssim_window(p, win, err);
    if (n < 0) return -1;
    if (n_scales < 1 || n_scales > CN_MS_SSIM_MAX_SCALES) {
        cn_error_set(err, "ms_ssim: the number of scales (weights) must be in 1..%d, got %d", CN_MS_SSIM_MAX_SCALES,
                     n_scales);
        return -1;
    }
    for (int l = 0; l < n_scales; l++)
        if (!isfinite(weights[l])) {
            cn_error_set(err, "ms_ssim: weight %d is not a finite number (%g)", l + 1, weights[l]);
            return -1;
        }
    const int64_t H = a->shape[2], W = a->shape[3];
    if (cn_ms_ssim_max_scales(H, W, n, n_scales) < n_scales) {
        int fit = cn_ms_ssim_max_scales(H, W, n, CN_MS_SSIM_MAX_SCALES);
        cn_error_set(err, "ms_ssim: images of %" PRId64 "x%" PRId64 " are too small for %d scales with a %d-tap "
                     "window (need min(H, W) > %" PRId64 "); at most %d scale%s fit", H, W, n_scales, n,
                     (int64_t)(n - 1) << (n_scales - 1), fit, fit == 1 ? "" : "s");
        return -1;
    }
    const plane_job job = {.a = a, .b = b, .win = win, .n = n, .n_scales = n_scales, .weights = weights,
                           .c1 = (p->k1 * p->data_range) * (p->k1 * p->data_range),
                           .c2 = (p->k2 * p->data_range) * (p->k2 * p->data_range)};
    if (over_planes(&job, ms_ssim_plane, per_image)) {
        cn_error_set(err, "ms_ssim: out of memory");
        return -1;
    }
    return 0;
}

/* ---- PSNR ------------------------------------------------------------------------------------- */

int cn_psnr(const cn_tensor *a, const cn_tensor *b, double data_range, double *per_image, cn_error *err) {
    if (check_pair("psnr", a, b, err) || check_range("psnr", data_range, err)) return -1;
    const int64_t N = a->shape[0], C = a->shape[1], H = a->shape[2], W = a->shape[3];
    const float *pa = cn_data(a), *pb = cn_data(b);
#pragma omp parallel for schedule(static) if (N > 1 && N * C * H * W > PAR_MIN)
    for (int64_t i = 0; i < N; i++) {
        double sum = 0.0;
        for (int64_t c = 0; c < C; c++)
            for (int64_t y = 0; y < H; y++) {
                const float *ra = pa + i * a->stride[0] + c * a->stride[1] + y * a->stride[2];
                const float *rb = pb + i * b->stride[0] + c * b->stride[1] + y * b->stride[2];
                for (int64_t x = 0; x < W; x++) {
                    const double d = (double)ra[x * a->stride[3]] - (double)rb[x * b->stride[3]];
                    sum += d * d;
                }
            }
        const double mse = sum / (double)(C * H * W);
        per_image[i] = mse == 0.0 ? INFINITY : 10.0 * log10(data_range * data_range / mse);
    }
    return 0;
}
