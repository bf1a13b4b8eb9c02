/* bm3d.c — BM3D denoising (bm3d.h): transforms, block matching, the two collaborative-filtering
 * stages and their aggregation.
 *
 * Each stage first tabulates the 2-D spectrum of every block position (the table holds
 * (H - N1 + 1)(W - N1 + 1) spectra of N1^2 floats), so a block that joins many groups is
 * transformed once and a block distance is a contiguous sum of squares. With orthonormal 2-D
 * transforms (DCT) that distance equals the pixel-domain one of the paper's stage 2; with bior1.5
 * it is taken in the transform domain, as the paper defines stage 1's.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bm3d.h"

#define MAX_BLOCK 32
#define MAX_GROUP 64

/* ---- transforms -------------------------------------------------------------------------- */

static bool is_pow2(int n) { return n >= 1 && (n & (n - 1)) == 0; }

/* bior1.5's analysis low-pass (MATLAB's wfilters('bior1.5') Lo_D, here without its 1/sqrt(2));
 * its analysis high-pass is Haar's. The periodic DWT below takes y[k] = sum_j f[j] x[(2k + 5 - j)
 * mod n], the alignment of MATLAB's dwtmode('per'), which reproduces the authors' matrix. */
static const double bior15_lo[10] = {3.0 / 128, -3.0 / 128, -22.0 / 128, 22.0 / 128, 1.0,
                                     1.0,       22.0 / 128, -22.0 / 128, -3.0 / 128, 3.0 / 128};

static void bior15_forward(const double *x, int n, double *out) {
    double a[MAX_BLOCK], tmp[MAX_BLOCK];
    memcpy(a, x, (size_t)n * sizeof *a);
    /* wavedec order: [a_L, d_L, d_{L-1}, ..., d_1]; each level fills the tail it leaves */
    for (int len = n; len > 1; len /= 2) {
        int half = len / 2;
        for (int k = 0; k < half; k++) {
            double lo = 0.0;
            for (int j = 0; j < 10; j++) {
                int idx = ((2 * k + 5 - j) % len + len) % len;
                lo += bior15_lo[j] * a[idx] * M_SQRT1_2;
            }
            tmp[k] = lo;
            out[half + k] = (a[2 * k] - a[2 * k + 1]) * M_SQRT1_2;
        }
        memcpy(a, tmp, (size_t)half * sizeof *a);
    }
    out[0] = a[0];
}

/* Inverts the n x n matrix a (row-major) into inv by Gauss-Jordan with partial pivoting; the
 * matrices here are well conditioned (bior1.5 with normalised rows: cond ~ 2). */
static int invert(const double *a, int n, double *inv) {
    double m[MAX_BLOCK * MAX_BLOCK * 2];
    int w = 2 * n;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < w; j++) m[i * w + j] = j < n ? a[i * n + j] : (j - n == i);
    for (int c = 0; c < n; c++) {
        int p = c;
        for (int i = c + 1; i < n; i++)
            if (fabs(m[i * w + c]) > fabs(m[p * w + c])) p = i;
        if (fabs(m[p * w + c]) < 1e-12) return -1;
        if (p != c)
            for (int j = 0; j < w; j++) {
                double t = m[c * w + j];
                m[c * w + j] = m[p * w + j];
                m[p * w + j] = t;
            }
        double d = m[c * w + c];
        for (int j = 0; j < w; j++) m[c * w + j] /= d;
        for (int i = 0; i < n; i++) {
            if (i == c || m[i * w + c] == 0.0) continue;
            double f = m[i * w + c];
            for (int j = 0; j < w; j++) m[i * w + j] -= f * m[c * w + j];
        }
    }
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) inv[i * n + j] = m[i * w + n + j];
    return 0;
}

int cn_bm3d_matrix(cn_bm3d_transform2d kind, int n, double *forward, double *inverse, cn_error *err) {
    if (n < 1 || n > MAX_BLOCK) {
        cn_error_set(err, "bm3d: block size %d out of range (1..%d)", n, MAX_BLOCK);
        return -1;
    }
    if (kind == CN_BM3D_DCT) { /* orthonormal DCT-II: the inverse is the transpose */
        for (int k = 0; k < n; k++)
            for (int i = 0; i < n; i++) {
                double c = k == 0 ? sqrt(1.0 / n) : sqrt(2.0 / n);
                forward[k * n + i] = inverse[i * n + k] = c * cos(M_PI * (2 * i + 1) * k / (2.0 * n));
            }
        return 0;
    }
    if (!is_pow2(n)) {
        cn_error_set(err, "bm3d: the bior1.5 transform needs a power-of-two block size, got %d (use the DCT)", n);
        return -1;
    }
    /* column i of the matrix is the transform of the unit vector e_i; then every basis row is
     * scaled to unit norm, so white noise of variance sigma^2 stays sigma^2 per coefficient */
    double e[MAX_BLOCK], col[MAX_BLOCK];
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < n; j++) e[j] = j == i;
        bior15_forward(e, n, col);
        for (int k = 0; k < n; k++) forward[k * n + i] = col[k];
    }
    for (int k = 0; k < n; k++) {
        double s = 0.0;
        for (int i = 0; i < n; i++) s += forward[k * n + i] * forward[k * n + i];
        s = 1.0 / sqrt(s);
        for (int i = 0; i < n; i++) forward[k * n + i] *= s;
    }
    if (invert(forward, n, inverse)) {
        cn_error_set(err, "bm3d: singular bior1.5 matrix for n = %d", n);
        return -1;
    }
    return 0;
}

/* The 1-D transform along a group stored block-major, [n][len]: every step combines whole rows
 * of len coefficients, so the loops run over contiguous memory. tmp holds n * len floats. */
static void group_transform(cn_bm3d_transform1d kind, float *x, float *tmp, int n, int len, bool inverse) {
    if (n < 2) return;
    size_t row = (size_t)len * sizeof *x;
    if (kind == CN_BM3D_WHT) { /* orthonormal Walsh-Hadamard: its own inverse */
        for (int half = 1; half < n; half *= 2)
            for (int i = 0; i < n; i += 2 * half)
                for (int j = i; j < i + half; j++) {
                    float *u = x + (size_t)j * len, *v = x + (size_t)(j + half) * len;
                    for (int k = 0; k < len; k++) {
                        float p = u[k], q = v[k];
                        u[k] = p + q;
                        v[k] = p - q;
                    }
                }
        float s = 1.0f / sqrtf((float)n);
        for (int k = 0; k < n * len; k++) x[k] *= s;
        return;
    }
    /* orthonormal Haar, full decomposition: rows [a, d_coarsest, ..., d_finest] */
    const float r = (float)M_SQRT1_2;
    for (int size = inverse ? 2 : n; inverse ? size <= n : size > 1; size = inverse ? size * 2 : size / 2) {
        int half = size / 2;
        for (int i = 0; i < half; i++) {
            float *lo = tmp + (size_t)(inverse ? 2 * i : i) * len, *hi = tmp + (size_t)(inverse ? 2 * i + 1 : half + i) * len;
            const float *u = x + (size_t)(inverse ? i : 2 * i) * len, *v = x + (size_t)(inverse ? half + i : 2 * i + 1) * len;
            for (int k = 0; k < len; k++) {
                lo[k] = (u[k] + v[k]) * r;
                hi[k] = (u[k] - v[k]) * r;
            }
        }
        memcpy(x, tmp, (size_t)size * row);
    }
}

void cn_bm3d_transform_1d(cn_bm3d_transform1d kind, float *x, int n, bool inverse) {
    float tmp[MAX_GROUP];
    if (n >= 1 && n <= MAX_GROUP) group_transform(kind, x, tmp, n, 1, inverse);
}

/* The modified Bessel function I0 by its power series (converges fast for the betas used). */
static double bessel_i0(double x) {
    double sum = 1.0, term = 1.0, q = x * x / 4.0;
    for (int k = 1; k < 200 && term > 1e-17 * sum; k++) {
        term *= q / ((double)k * k);
        sum += term;
    }
    return sum;
}

void cn_bm3d_kaiser(int n, double beta, double *w) {
    if (n == 1) {
        w[0] = 1.0;
        return;
    }
    for (int i = 0; i < n; i++) {
        double t = 2.0 * i / (n - 1) - 1.0;
        w[i] = bessel_i0(beta * sqrt(fmax(0.0, 1.0 - t * t))) / bessel_i0(beta);
    }
}

/* ---- parameters -------------------------------------------------------------------------- */

cn_bm3d_params cn_bm3d_defaults(double sigma) {
    cn_bm3d_params p;
    /* Table I of the paper, "normal profile" */
    p.ht = (cn_bm3d_stage){.block_size = 8, .group_max = 16, .step = 3, .search = 39, .tau_match = 2500,
                           .lambda_2d = 0, .lambda_3d = 2.7, .beta = 2.0, .transform = CN_BM3D_BIOR15};
    p.wiener = (cn_bm3d_stage){.block_size = 8, .group_max = 32, .step = 3, .search = 39, .tau_match = 400,
                               .lambda_2d = 0, .lambda_3d = 0, .beta = 2.0, .transform = CN_BM3D_DCT};
    if (sigma * 255.0 > 40.0) { /* strong noise: larger blocks, a pre-thresholded match */
        p.ht.block_size = 12;
        p.ht.step = 4;
        p.ht.transform = CN_BM3D_DCT; /* bior1.5 has no 12 x 12 form */
        p.ht.lambda_2d = 2.0;
        p.ht.lambda_3d = 2.8;
        p.ht.tau_match = 5000;
        p.wiener.block_size = 11;
        p.wiener.step = 6;
        p.wiener.tau_match = 3500;
    }
    p.transform_3d = CN_BM3D_HAAR;
    p.stages = 2;
    return p;
}

static int check_stage(const cn_bm3d_stage *s, const char *name, cn_error *err) {
    if (s->block_size < 1 || s->block_size > MAX_BLOCK) {
        cn_error_set(err, "bm3d: %s block_size must be 1..%d, got %d", name, MAX_BLOCK, s->block_size);
        return -1;
    }
    if (s->transform == CN_BM3D_BIOR15 && !is_pow2(s->block_size)) {
        cn_error_set(err, "bm3d: %s transform bior1.5 needs a power-of-two block_size, got %d", name, s->block_size);
        return -1;
    }
    if (s->transform != CN_BM3D_BIOR15 && s->transform != CN_BM3D_DCT) {
        cn_error_set(err, "bm3d: %s transform unknown", name);
        return -1;
    }
    if (s->group_max < 1 || s->group_max > MAX_GROUP) {
        cn_error_set(err, "bm3d: %s group_max must be 1..%d, got %d", name, MAX_GROUP, s->group_max);
        return -1;
    }
    if (s->step < 1) {
        cn_error_set(err, "bm3d: %s step must be >= 1, got %d", name, s->step);
        return -1;
    }
    if (s->search < 1 || s->search % 2 == 0 || s->search > 1023) {
        cn_error_set(err, "bm3d: %s search must be odd, 1..1023, got %d", name, s->search);
        return -1;
    }
    if (!(s->tau_match >= 0) || !(s->lambda_2d >= 0) || !(s->lambda_3d >= 0) || !(s->beta >= 0) ||
        !isfinite(s->lambda_2d) || !isfinite(s->lambda_3d) || !isfinite(s->beta)) {
        cn_error_set(err, "bm3d: %s tau_match, lambda_2d, lambda_3d and beta must be finite and >= 0", name);
        return -1;
    }
    return 0;
}

int cn_bm3d_check(const cn_bm3d_params *p, cn_error *err) {
    if (check_stage(&p->ht, "ht", err) || check_stage(&p->wiener, "wiener", err)) return -1;
    if (p->transform_3d != CN_BM3D_HAAR && p->transform_3d != CN_BM3D_WHT) {
        cn_error_set(err, "bm3d: transform_3d unknown");
        return -1;
    }
    if (p->stages != 1 && p->stages != 2) {
        cn_error_set(err, "bm3d: stages must be 1 or 2, got %d", p->stages);
        return -1;
    }
    return 0;
}

/* ---- one stage --------------------------------------------------------------------------- */

/* What a stage needs, set up once per plane. */
typedef struct stage_ctx {
    const cn_bm3d_stage *s;
    int n, nn;                 /* N1, N1^2 */
    int64_t h, w, ph, pw;      /* image and block-position grid */
    float fwd[MAX_BLOCK * MAX_BLOCK], fwd_t[MAX_BLOCK * MAX_BLOCK]; /* F and F^T */
    float inv[MAX_BLOCK * MAX_BLOCK], inv_t[MAX_BLOCK * MAX_BLOCK]; /* I and I^T */
    float window[MAX_BLOCK * MAX_BLOCK]; /* 2-D Kaiser */
    const float *spectra;      /* [ph * pw][nn]: 2-D spectra of the blocks filtered (noisy) */
    const float *pilot;        /* [ph * pw][nn]: stage 2, the basic estimate's spectra */
    const float *match;        /* spectra the distances are taken on */
    float threshold;           /* stage 1: lambda_3d * sigma */
    float sigma2;
    float tau;                 /* distance bound on the sum of squares: tau_match N1^2 / 255^2 */
    bool wiener;
    cn_bm3d_transform1d t3d;
} stage_ctx;

static void setup(stage_ctx *c, const cn_bm3d_stage *s, int64_t h, int64_t w, double sigma,
                  const cn_bm3d_params *p, bool wiener) {
    double fwd[MAX_BLOCK * MAX_BLOCK], inv[MAX_BLOCK * MAX_BLOCK], kw[MAX_BLOCK];
    memset(c, 0, sizeof *c);
    c->s = s;
    c->n = s->block_size;
    c->nn = c->n * c->n;
    c->h = h;
    c->w = w;
    c->ph = h - c->n + 1;
    c->pw = w - c->n + 1;
    cn_bm3d_matrix(s->transform, c->n, fwd, inv, NULL); /* checked by cn_bm3d_check */
    cn_bm3d_kaiser(c->n, s->beta, kw);
    for (int i = 0; i < c->nn; i++) {
        int t = (i % c->n) * c->n + i / c->n;
        c->fwd[i] = c->fwd_t[t] = (float)fwd[i];
        c->inv[i] = c->inv_t[t] = (float)inv[i];
        c->window[i] = (float)(kw[i / c->n] * kw[i % c->n]);
    }
    c->threshold = (float)(s->lambda_3d * sigma);
    c->sigma2 = (float)(sigma * sigma);
    c->tau = (float)(s->tau_match * c->nn / (255.0 * 255.0));
    c->wiener = wiener;
    c->t3d = p->transform_3d;
}

/* out = A X for n x n matrices, X with row stride xs: each output row is a sum of rows of X, so
 * the inner loop runs along rows (vectorised). */
static inline __attribute__((always_inline)) void rows_product(const float *restrict a, const float *restrict x,
                                                               int64_t xs, int n, float *restrict out) {
    for (int i = 0; i < n; i++) {
        float *o = out + i * n;
        for (int c = 0; c < n; c++) o[c] = 0.0f;
        for (int b = 0; b < n; b++) {
            float f = a[i * n + b];
            const float *xr = x + b * xs;
            for (int c = 0; c < n; c++) o[c] += f * xr[c];
        }
    }
}

/* out = A X B^T for the n x n block at x (row stride xs), given A and B^T: (A X) B^T, two row
 * products through tmp (n * n floats). The profiles' sizes 8, 11 and 12 get constant-size copies. */
static inline __attribute__((always_inline)) void block_transform_n(const float *x, int64_t xs, const float *a,
                                                                    const float *bt, int n, float *tmp,
                                                                    float *out) {
    rows_product(a, x, xs, n, tmp);
    rows_product(tmp, bt, n, n, out);
}

static void block_transform(const float *x, int64_t xs, const float *a, const float *bt, int n, float *tmp,
                            float *out) {
    switch (n) {
    case 8: block_transform_n(x, xs, a, bt, 8, tmp, out); break;
    case 11: block_transform_n(x, xs, a, bt, 11, tmp, out); break;
    case 12: block_transform_n(x, xs, a, bt, 12, tmp, out); break;
    default: block_transform_n(x, xs, a, bt, n, tmp, out);
    }
}

/* The table of 2-D spectra of every block position of img under c's transform; when lambda_2d
 * > 0, also a hard-thresholded copy for matching (*thresholded, else NULL). */
static float *spectra_table(const stage_ctx *c, const float *img, float prethreshold, float **thresholded,
                            cn_error *err) {
    size_t count, bytes;
    *thresholded = NULL;
    if (cn_size_mul((size_t)c->ph * (size_t)c->pw, (size_t)c->nn, &count) ||
        cn_size_mul(count, sizeof(float), &bytes)) {
        cn_error_set(err, "bm3d: block table size overflows");
        return NULL;
    }
    float *table = malloc(bytes), *thr = prethreshold > 0 ? malloc(bytes) : NULL;
    if (!table || (prethreshold > 0 && !thr)) {
        free(table);
        free(thr);
        cn_error_set(err, "bm3d: out of memory for the block table (%zu bytes)", bytes);
        return NULL;
    }
    int64_t ph = c->ph, pw = c->pw;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < ph; i++) {
        float tmp[MAX_BLOCK * MAX_BLOCK];
        for (int64_t j = 0; j < pw; j++) {
            size_t at = ((size_t)i * (size_t)pw + (size_t)j) * (size_t)c->nn;
            block_transform(img + i * c->w + j, c->w, c->fwd, c->fwd_t, c->n, tmp, table + at);
            if (thr)
                for (int k = 0; k < c->nn; k++)
                    thr[at + k] = fabsf(table[at + k]) > prethreshold ? table[at + k] : 0.0f;
        }
    }
    *thresholded = thr;
    return table;
}

/* Reference positions along one axis: 0, step, 2 step, ... and always the last, limit. */
static int64_t grid(int64_t limit, int step, int64_t *out) {
    int64_t count = 0;
    for (int64_t i = 0; i <= limit; i += step) out[count++] = i;
    if (out[count - 1] != limit) out[count++] = limit;
    return count;
}

/* Sum of squared differences of two spectra. Sixteen independent partial sums let the compiler
 * vectorise without reassociating (no -ffast-math); the order is fixed, so results are too. */
static inline float block_distance(const float *a, const float *b, int nn) {
    float acc[16] = {0};
    int k = 0;
    for (; k + 16 <= nn; k += 16)
        for (int l = 0; l < 16; l++) {
            float e = a[k + l] - b[k + l];
            acc[l] += e * e;
        }
    for (int l = 0; k < nn; k++, l++) acc[l] += (a[k] - b[k]) * (a[k] - b[k]);
    for (int width = 8; width >= 1; width /= 2) /* a fixed tree, in vector registers */
        for (int l = 0; l < width; l++) acc[l] += acc[l + width];
    return acc[0];
}

/* Block matching for the reference at (r, q): the reference first, then up to group_max - 1
 * other positions of the search window with distance <= tau, nearest first (ties: scan order).
 * Returns the group size: the largest power of two <= the number found. */
static int match_blocks(const stage_ctx *c, int64_t r, int64_t q, int64_t *pos, float *dist) {
    int64_t half = c->s->search / 2, nn = c->nn;
    int64_t i0 = r - half > 0 ? r - half : 0, i1 = r + half < c->ph - 1 ? r + half : c->ph - 1;
    int64_t j0 = q - half > 0 ? q - half : 0, j1 = q + half < c->pw - 1 ? q + half : c->pw - 1;
    int64_t ref = r * c->pw + q;
    const float *refm = c->match + ref * nn;
    int cap = c->s->group_max, count = 1;
    pos[0] = ref;
    dist[0] = 0.0f;
    float tau = c->tau;
    for (int64_t i = i0; i <= i1; i++)
        for (int64_t j = j0; j <= j1; j++) {
            int64_t at = i * c->pw + j;
            if (at == ref) continue;
            float d = block_distance(refm, c->match + at * nn, (int)nn);
            if (d > tau || (count == cap && d >= dist[count - 1])) continue;
            int slot = count < cap ? count++ : cap - 1;
            while (slot > 1 && dist[slot - 1] > d) {
                dist[slot] = dist[slot - 1];
                pos[slot] = pos[slot - 1];
                slot--;
            }
            dist[slot] = d;
            pos[slot] = at;
        }
    int size = 1;
    while (size * 2 <= count) size *= 2;
    return size;
}

/* Per-thread scratch: the group spectra and the row band of aggregation sums. */
typedef struct scratch {
    float *group, *pilot, *tmp; /* [MAX_GROUP][nn], block-major like the tables */
    double *num, *den;          /* band rows x w */
    int64_t pos[MAX_GROUP];
    float dist[MAX_GROUP];
} scratch;

/* Filters the group of the reference at (r, q) and adds its blocks into the band, which starts
 * at image row band_row. */
static void filter_group(const stage_ctx *c, scratch *sc, int64_t r, int64_t q, int64_t band_row) {
    int m = match_blocks(c, r, q, sc->pos, sc->dist);
    int nn = c->nn, n = c->n;
    float *g = sc->group, *b = sc->pilot;
    for (int j = 0; j < m; j++) memcpy(g + j * nn, c->spectra + sc->pos[j] * nn, (size_t)nn * sizeof *g);
    group_transform(c->t3d, g, sc->tmp, m, nn, false);
    double weight;
    if (!c->wiener) { /* stage 1: hard thresholding; weight 1 / N_har (sigma^2 is common to all) */
        int lanes[16] = {0}, kept = 0, total = nn * m; /* nn * m: a multiple of 16 for even N1 */
        float thr = c->threshold;
        int k = 0;
        for (; k + 16 <= total; k += 16)
            for (int l = 0; l < 16; l++) {
                int keep = fabsf(g[k + l]) > thr;
                lanes[l] += keep;
                g[k + l] = keep ? g[k + l] : 0.0f;
            }
        for (; k < total; k++) {
            int keep = fabsf(g[k]) > thr;
            kept += keep;
            g[k] = keep ? g[k] : 0.0f;
        }
        for (int l = 0; l < 16; l++) kept += lanes[l];
        weight = kept ? 1.0 / kept : 1.0;
    } else { /* stage 2: empirical Wiener shrinkage; weight 1 / ||W||^2 */
        for (int j = 0; j < m; j++) memcpy(b + j * nn, c->pilot + sc->pos[j] * nn, (size_t)nn * sizeof *b);
        group_transform(c->t3d, b, sc->tmp, m, nn, false);
        float energy[16] = {0}; /* lane sums in a fixed order (see block_distance) */
        for (int k = 0; k < nn * m; k++) {
            float p2 = b[k] * b[k], shrink = p2 / (p2 + c->sigma2);
            g[k] *= shrink;
            energy[k % 16] += shrink * shrink;
        }
        double total = 0.0;
        for (int l = 0; l < 16; l++) total += energy[l];
        weight = total > 0 ? 1.0 / total : 1.0;
    }
    group_transform(c->t3d, g, sc->tmp, m, nn, true);
    float tmp[MAX_BLOCK * MAX_BLOCK], pix[MAX_BLOCK * MAX_BLOCK];
    for (int j = 0; j < m; j++) {
        block_transform(g + j * nn, n, c->inv, c->inv_t, n, tmp, pix);
        int64_t bi = sc->pos[j] / c->pw, bj = sc->pos[j] % c->pw;
        for (int a = 0; a < n; a++) {
            double *num = sc->num + (bi + a - band_row) * c->w + bj, *den = sc->den + (bi + a - band_row) * c->w + bj;
            for (int e = 0; e < n; e++) {
                double kw = weight * c->window[a * n + e];
                num[e] += kw * pix[a * n + e];
                den[e] += kw;
            }
        }
    }
}

/* Runs a stage over the reference grid into out (h x w). The rows of reference blocks go to
 * threads dynamically; each row's sums land in its thread's band and are added to the image's
 * sums in row order (omp ordered), so the floating-point sums never depend on the threads. */
static int run_stage(const stage_ctx *c, const float *noisy, float *out, cn_error *err) {
    int64_t *rows = malloc(((size_t)c->ph + 2) * sizeof *rows), *cols = malloc(((size_t)c->pw + 2) * sizeof *cols);
    size_t plane = (size_t)c->h * (size_t)c->w;
    double *num = calloc(plane, sizeof *num), *den = calloc(plane, sizeof *den);
    if (!rows || !cols || !num || !den) {
        free(rows), free(cols), free(num), free(den);
        cn_error_set(err, "bm3d: out of memory");
        return -1;
    }
    int64_t nrows = grid(c->ph - 1, c->s->step, rows), ncols = grid(c->pw - 1, c->s->step, cols);
    int64_t half = c->s->search / 2;
    int64_t band_cap = 2 * half + c->n; /* rows a reference row's groups can reach */
    int failed = 0;
#pragma omp parallel
    {
        scratch sc;
        sc.group = malloc((size_t)c->nn * MAX_GROUP * sizeof(float));
        sc.pilot = malloc((size_t)c->nn * MAX_GROUP * sizeof(float));
        sc.tmp = malloc((size_t)c->nn * MAX_GROUP * sizeof(float));
        sc.num = calloc((size_t)band_cap * (size_t)c->w, sizeof(double));
        sc.den = calloc((size_t)band_cap * (size_t)c->w, sizeof(double));
        if (!sc.group || !sc.pilot || !sc.tmp || !sc.num || !sc.den) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp barrier
        int ok = !failed; /* every thread still walks the loop: the ordered sections need them all */
#pragma omp for schedule(dynamic, 1) ordered
        for (int64_t ri = 0; ri < nrows; ri++) {
            int64_t r = rows[ri];
            int64_t lo = r - half > 0 ? r - half : 0, hi = r + half + c->n < c->h ? r + half + c->n : c->h;
            if (ok)
                for (int64_t ci = 0; ci < ncols; ci++) filter_group(c, &sc, r, cols[ci], lo);
#pragma omp ordered
            if (ok) {
                size_t len = (size_t)(hi - lo) * (size_t)c->w, at = (size_t)lo * (size_t)c->w;
                for (size_t k = 0; k < len; k++) {
                    num[at + k] += sc.num[k];
                    den[at + k] += sc.den[k];
                }
                memset(sc.num, 0, len * sizeof(double));
                memset(sc.den, 0, len * sizeof(double));
            }
        }
        free(sc.group), free(sc.pilot), free(sc.tmp), free(sc.num), free(sc.den);
    }
    if (!failed)
        for (size_t k = 0; k < plane; k++) out[k] = den[k] > 0 ? (float)(num[k] / den[k]) : noisy[k];
    free(rows), free(cols), free(num), free(den);
    if (failed) cn_error_set(err, "bm3d: out of memory for the threads' scratch");
    return failed ? -1 : 0;
}

/* ---- the two stages ---------------------------------------------------------------------- */

int cn_bm3d_plane(const float *noisy, int64_t h, int64_t w, double sigma, const cn_bm3d_params *p, float *out,
                  cn_error *err) {
    if (cn_bm3d_check(p, err)) return -1;
    if (!(sigma > 0) || !isfinite(sigma)) {
        cn_error_set(err, "bm3d: sigma must be positive and finite, got %g", sigma);
        return -1;
    }
    int need = p->ht.block_size > (p->stages == 2 ? p->wiener.block_size : 0) ? p->ht.block_size
                                                                                 : p->wiener.block_size;
    if (h < need || w < need) {
        cn_error_set(err, "bm3d: image %lldx%lld is smaller than the %dx%d blocks", (long long)h, (long long)w,
                     need, need);
        return -1;
    }
    stage_ctx c1, c2;
    float *spectra, *pre, *basic = out;
    setup(&c1, &p->ht, h, w, sigma, p, false);
    if (!(spectra = spectra_table(&c1, noisy, (float)(p->ht.lambda_2d * sigma), &pre, err))) return -1;
    c1.spectra = spectra;
    c1.match = pre ? pre : spectra;
    int rc = run_stage(&c1, noisy, basic, err);
    free(pre);
    if (rc || p->stages == 1) {
        free(spectra);
        return rc;
    }
    setup(&c2, &p->wiener, h, w, sigma, p, true);
    bool reuse = p->wiener.block_size == p->ht.block_size && p->wiener.transform == p->ht.transform;
    if (!reuse) {
        free(spectra);
        if (!(spectra = spectra_table(&c2, noisy, 0.0f, &pre, err))) return -1;
    }
    float *pilot = spectra_table(&c2, basic, 0.0f, &pre, err);
    if (!pilot) {
        free(spectra);
        return -1;
    }
    c2.spectra = spectra;
    c2.pilot = c2.match = pilot; /* stage 2 matches on the basic estimate */
    /* out holds the basic estimate, which the tables now carry: stage 2 may overwrite it */
    rc = run_stage(&c2, noisy, out, err);
    free(spectra);
    free(pilot);
    return rc;
}

cn_tensor *cn_bm3d(cn_tensor *noisy, double sigma, const cn_bm3d_params *p, cn_error *err) {
    if (!noisy) {
        cn_error_set(err, "bm3d: tensor expected");
        return NULL;
    }
    if (noisy->ndim < 2) {
        char s[96];
        cn_shape_str(s, sizeof s, noisy->ndim, noisy->shape);
        cn_error_set(err, "bm3d: an image [H, W] or [C, H, W] expected, got %s", s);
        return NULL;
    }
    cn_bm3d_params defaults = cn_bm3d_defaults(sigma);
    if (!p) p = &defaults;
    cn_tensor *src = cn_contiguous(noisy, err);
    if (!src) return NULL;
    cn_tensor *out = cn_empty(noisy->ndim, noisy->shape, err);
    if (!out) {
        cn_release(src);
        return NULL;
    }
    int64_t h = noisy->shape[noisy->ndim - 2], w = noisy->shape[noisy->ndim - 1];
    size_t plane = (size_t)h * (size_t)w, planes = plane ? cn_numel(src) / plane : 0;
    const float *x = cn_data(src);
    for (size_t i = 0; i < cn_numel(src); i++)
        if (!isfinite(x[i])) {
            cn_error_set(err, "bm3d: the image holds a non-finite value (element %zu)", i);
            cn_release(src), cn_release(out);
            return NULL;
        }
    for (size_t k = 0; k < planes; k++)
        if (cn_bm3d_plane(x + k * plane, h, w, sigma, p, cn_data(out) + k * plane, err)) {
            cn_release(src), cn_release(out);
            return NULL;
        }
    if (planes == 0 && (cn_bm3d_check(p, err) || !(sigma > 0))) {
        if (!(sigma > 0)) cn_error_set(err, "bm3d: sigma must be positive and finite, got %g", sigma);
        cn_release(src), cn_release(out);
        return NULL;
    }
    cn_release(src);
    return out;
}
