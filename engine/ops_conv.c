/* ops_conv.c — conv2d and conv_transpose2d, forward and backward: im2col / col2im + GEMM.
 *
 * Both ops are one linear map seen from its two ends. Call the end where the kernel slides the
 * "image" X [N, C, H, W] and the other the "columns" side Y [N, O, Ho, Wo], with P = Ho·Wo. The
 * weight w [O, C/G, kH, kW] (G groups) is read per group g as the row-major matrix
 * W_g [O/G, K], K = C/G·kH·kW. im2col lays out every kernel-sized patch of X as one column,
 * col(X) [C·kH·kW, P] (row c·kH·kW + i·kW + j, column oy·Wo + ox holds
 * X[c, oy·sH - pH + i·dH, ox·sW - pW + j·dW], zero outside X); col2im is its adjoint, adding each
 * entry back where it came from. Rows g·K .. (g+1)·K - 1 are group g's col_g. Then
 *
 *   conv       Y_g   = W_g @ col_g(X)                     conv2d forward, conv_transpose2d dx
 *   adjoint    X     = col2im(W_g^T @ Y_g)                conv2d dx,      conv_transpose2d forward
 *   weight     dW_g += Y_g @ col_g(X)^T  over the images  dw of both
 *   bias       db[o] = sum over n, p of the output-side gradient
 *
 * conv2d takes X = x, Y = out and w [C_out, C_in/G, kH, kW] as is; conv_transpose2d takes
 * X = out, Y = x, and its w [C_in, C_out/G, kH, kW] is already [O, C/G, kH, kW] for that pairing.
 *
 * One driver, run_conv, does any subset of conv / weight / adjoint image by image, sharing the
 * im2col of an image between them (conv_transpose2d's backward: dx and dw from one col(g)). With
 * stride 1 the adjoint runs as a conv by the flipped kernel instead (run_adjoint: a wide GEMM and
 * no col2im scatter), so conv2d's dx and conv_transpose2d's forward use col2im only when strided.
 * A conv alone batches small images (P < CHUNK_COLS) in chunks, their columns side by side and
 * the result scattered out of a [O, nb·P] buffer, so its GEMM stays wide; every other job goes
 * one image at a time (big images in tiles of output rows), reading and writing Y in place.
 * A 1×1, stride 1, unpadded kernel skips im2col: col(X) is X. Buffers are allocated once per call
 * and reused for every image. im2col, col2im, the scatter and the bias sums are loops over planes,
 * OpenMP-parallel only when that is safe (loops_parallel); GEMMs, threaded by OpenBLAS, are not
 * called inside them. When the GEMMs are too small for OpenBLAS to thread well (plan_threads), the
 * chunks themselves go over OpenMP threads instead, each with its own buffers, serial loops and
 * single-threaded GEMMs, and dW summed from per-thread parts.
 *
 * Time goes to the GEMMs (about 80% single-threaded at 3×3, 28², 64 channels, packing included);
 * im2col is the rest. Tried and dropped, measured on 2 cores: im2col tiles sized for L2 (no
 * faster), chunking images in the backward (10-30% slower), 9 shifted GEMMs of depth C instead of
 * im2col (slower with 2 threads).
 */
#include <limits.h>
#include <omp.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "autograd.h"
#include "conv_direct.h"
#include "ops.h"
#include "ops_conv.h"
#include "parallel.h"
#include "profile.h"
#include "vmath.h"

#define CHUNK_COLS 1024          /* images are chunked until a GEMM has about this many columns */
#define CHUNK_MAX_FLOATS (1 << 24) /* cap on the im2col buffer of a chunk (64 MB) */
#define TILE_FLOATS (1 << 20)    /* im2col tile of one image: 4 MB (bounds the buffer for big images) */
#define THREAD_CHUNK_FLOATS (1 << 18) /* cap on a chunk's im2col buffer on such a thread (1 MB) */


typedef struct conv_geom {
    int64_t N;
    int C, H, W;    /* image side */
    int O, Ho, Wo;  /* columns side */
    int kh, kw, sh, sw, ph, pw, dh, dw, groups; /* padding may be negative (a crop) */
    bool parallel;  /* OpenMP loops for im2col, col2im, scatter (see loops_parallel) */
} conv_geom;

/* What run_conv computes; NULL pointers switch parts off. */
typedef struct conv_job {
    const float *x_in;   /* image side read through im2col (conv, weight) */
    float *y_out;        /* conv: Y = W @ col(X) */
    const float *y_bias; /* [O] added to y_out, or NULL */
    int y_act;           /* cn_conv_act applied to y_out after the bias */
    const float *y_in;   /* columns side read (weight, adjoint) */
    float *x_out;        /* adjoint: X = col2im(W^T @ Y) */
    const float *x_bias; /* [C] starting value of x_out's planes, or NULL for zeros */
    const float *w;      /* [O, C/G, kH, kW] */
    float *dw;           /* weight: dW = sum over images of Y @ col(X)^T (overwritten) */
} conv_job;

static size_t plane_p(const conv_geom *g) { return (size_t)g->Ho * (size_t)g->Wo; }

/* 1×1, stride 1, no padding, same size on both sides: col(X) is X itself. */
static bool is_pointwise(const conv_geom *g) {
    return g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 && g->ph == 0 && g->pw == 0 &&
           g->H == g->Ho && g->W == g->Wo;
}

/* Outputs o in [0, count) whose input index o·stride + off lies in [0, size): [*lo, *hi). */
static void valid_range(int64_t off, int stride, int size, int count, int *lo, int *hi) {
    int64_t l = off >= 0 ? 0 : (-off + stride - 1) / stride;
    int64_t h = size - 1 - off < 0 ? 0 : (size - 1 - off) / stride + 1;
    if (h > count) h = count;
    if (l > h) l = h;
    *lo = (int)l;
    *hi = (int)h;
}

/* ---- im2col / col2im ---------------------------------------------------------------------- */

/* Zeroes columns [c0, c1) of rows [r0, r1) of a [rows, Wo] block. Border widths are a pixel or two,
 * so narrow bands are written column by column (strided stores, inline): written row by row, gcc
 * turns each row's one- or two-float band into a memset call, thousands per image. */
static void zero_band(float *restrict col, int Wo, int r0, int r1, int c0, int c1) {
    if (c1 - c0 >= 16) {
        for (int r = r0; r < r1; r++)
            memset(col + (size_t)r * Wo + c0, 0, (size_t)(c1 - c0) * sizeof *col);
        return;
    }
    for (int c = c0; c < c1; c++)
        for (int r = r0; r < r1; r++) col[(size_t)r * Wo + c] = 0.0f;
}

/* Output rows [oy0, oy1) of one image plane [H, W] -> its kH·kW rows of col (row stride ld, column
 * (oy - oy0)·Wo + ox). Per tap: the output rows whose input row lies outside the image are zeroed
 * as one block, the valid span is copied, then the border columns are zeroed (zero_band). Output
 * rows are short (tens of floats) and per-row work dominated, so with stride 1 and W = Wo ("same"
 * padding, the common case) the valid span is one block copy of all its rows, shifted by the tap's
 * offset, whose columns that wrapped around a row end are then the zeroed border; otherwise rows
 * are copied one by one. */
static void im2col_plane(const conv_geom *g, const float *restrict img, float *restrict col,
                         size_t ld, int oy0, int oy1) {
    int Wo = g->Wo, W = g->W;
    size_t n = (size_t)(oy1 - oy0) * Wo;
    for (int i = 0; i < g->kh; i++)
        for (int j = 0; j < g->kw; j++, col += ld) {
            int64_t xoff = (int64_t)j * g->dw - g->pw, yoff = (int64_t)i * g->dh - g->ph;
            int lo, hi, ylo, yhi;
            valid_range(xoff, g->sw, W, Wo, &lo, &hi);
            valid_range(yoff, g->sh, g->H, g->Ho, &ylo, &yhi);
            ylo = ylo < oy0 ? oy0 : ylo > oy1 ? oy1 : ylo;
            yhi = yhi > oy1 ? oy1 : yhi < ylo ? ylo : yhi;
            if (lo == hi) ylo = yhi = oy0;
            size_t head = (size_t)(ylo - oy0) * Wo, tail = (size_t)(yhi - oy0) * Wo;
            if (head) memset(col, 0, head * sizeof *col);
            if (tail < n) memset(col + tail, 0, (n - tail) * sizeof *col);
            if (yhi == ylo) continue;
            if (g->sw == 1 && g->sh == 1 && W == Wo) { /* row ylo from column lo .. row yhi-1 to hi-1 */
                const float *src = img + (size_t)(ylo + yoff) * W + (xoff + lo);
                size_t count = (size_t)(yhi - ylo - 1) * Wo + (size_t)(hi - lo);
                memcpy(col + head + lo, src, count * sizeof *col);
            } else {
                for (int oy = ylo; oy < yhi; oy++) {
                    float *dst = col + (size_t)(oy - oy0) * Wo;
                    const float *row = img + (size_t)((int64_t)oy * g->sh + yoff) * W;
                    if (g->sw == 1) {
                        memcpy(dst + lo, row + (xoff + lo), (size_t)(hi - lo) * sizeof *col);
                    } else {
                        for (int ox = lo; ox < hi; ox++) dst[ox] = row[(int64_t)ox * g->sw + xoff];
                    }
                }
            }
            zero_band(col, Wo, ylo - oy0, yhi - oy0, 0, lo);
            zero_band(col, Wo, ylo - oy0, yhi - oy0, hi, Wo);
        }
}

/* The adjoint of im2col_plane: adds the kH·kW rows of col (row stride ld) for output rows
 * [oy0, oy1) into one image plane [H, W]. */
static void col2im_plane(const conv_geom *g, const float *restrict col, size_t ld,
                         float *restrict img, int oy0, int oy1) {
    int Wo = g->Wo;
    for (int i = 0; i < g->kh; i++)
        for (int j = 0; j < g->kw; j++, col += ld) {
            int64_t xoff = (int64_t)j * g->dw - g->pw;
            int lo, hi;
            valid_range(xoff, g->sw, g->W, Wo, &lo, &hi);
            if (lo == hi) continue;
            for (int oy = oy0; oy < oy1; oy++) {
                int64_t iy = (int64_t)oy * g->sh - g->ph + (int64_t)i * g->dh;
                if (iy < 0 || iy >= g->H) continue;
                float *row = img + (size_t)iy * (size_t)g->W;
                const float *src = col + (size_t)(oy - oy0) * Wo;
                if (g->sw == 1) {
                    float *dst = row + (xoff + lo);
                    for (int k = 0; k < hi - lo; k++) dst[k] += src[lo + k];
                } else {
                    for (int ox = lo; ox < hi; ox++) row[(int64_t)ox * g->sw + xoff] += src[ox];
                }
            }
        }
}

/* Tiles of at most this many taps × outputs (3×3 kernels on planes up to 5²) gather each column
 * entry through a table of source offsets made once per chunk: im2col_plane's per-tap bookkeeping
 * (ranges, memsets, a copy of 1-3 floats per row) cost more than the copies there — 25% of a
 * 208 -> 208 conv at 3² against the GEMM's 56% (perf, one thread). */
#define GATHER_MAX 256

/* src[t·T + p]: the offset in the image plane that tap t of tile output p reads, or -1 (padding). */
static void gather_table(const conv_geom *g, int oy0, int oy1, int *src) {
    int T = (oy1 - oy0) * g->Wo;
    for (int i = 0; i < g->kh; i++)
        for (int j = 0; j < g->kw; j++)
            for (int p = 0; p < T; p++) {
                int64_t iy = (int64_t)(oy0 + p / g->Wo) * g->sh - g->ph + (int64_t)i * g->dh;
                int64_t ix = (int64_t)(p % g->Wo) * g->sw - g->pw + (int64_t)j * g->dw;
                bool in = iy >= 0 && iy < g->H && ix >= 0 && ix < g->W;
                src[(i * g->kw + j) * T + p] = in ? (int)(iy * g->W + ix) : -1;
            }
}

/* col [C·kH·kW, nb·T] (row stride ld) for output rows [oy0, oy1) of the nb images at x, T the
 * tile's (oy1 - oy0)·Wo columns; image b fills columns b·T.. */
static void im2col_chunk(const conv_geom *g, const float *x, int nb, int oy0, int oy1, float *col,
                         size_t ld) {
    size_t kk = (size_t)g->kh * g->kw, T = (size_t)(oy1 - oy0) * g->Wo, HW = (size_t)g->H * g->W;
    int planes = nb * g->C;
    int table[GATHER_MAX];
    bool gather = kk * T <= GATHER_MAX;
    if (gather) gather_table(g, oy0, oy1, table);
    #pragma omp parallel for schedule(static) if (g->parallel && (double)planes * kk * T > PARALLEL_MIN)
    for (int q = 0; q < planes; q++) {
        int b = q / g->C, c = q % g->C;
        const float *img = x + (size_t)q * HW;
        float *dst = col + (size_t)c * kk * ld + (size_t)b * T;
        if (!gather) {
            im2col_plane(g, img, dst, ld, oy0, oy1);
            continue;
        }
        for (size_t t = 0; t < kk; t++, dst += ld)
            for (size_t p = 0; p < T; p++) {
                int k = table[t * T + p];
                dst[p] = k >= 0 ? img[k] : 0.0f;
            }
    }
}

/* Adds col2im(col) of output rows [oy0, oy1) into the planes of one image x; with init, first sets
 * them to the bias (or 0). */
static void col2im_image(const conv_geom *g, const float *col, size_t ld, int oy0, int oy1,
                         bool init, const float *bias, float *x) {
    size_t kk = (size_t)g->kh * g->kw, T = (size_t)(oy1 - oy0) * g->Wo, HW = (size_t)g->H * g->W;
    #pragma omp parallel for schedule(static) \
        if (g->parallel && (double)g->C * (kk * T + HW) > PARALLEL_MIN)
    for (int c = 0; c < g->C; c++) {
        float *img = x + (size_t)c * HW;
        if (init) {
            float v = bias ? bias[c] : 0.0f;
            for (size_t k = 0; k < HW; k++) img[k] = v;
        }
        col2im_plane(g, col + (size_t)c * kk * ld, ld, img, oy0, oy1);
    }
}

/* ---- columns side: scatter, bias ----------------------------------------------------------- */

/* y[b, o, p] = act(buf[o, b·P + p] + bias[o]) (bias may be NULL). With nb == 1, buf may be y
 * itself: the bias and activation are then applied in place. */
static void scatter_chunk(const float *buf, int nb, int O, size_t P, const float *bias, int act,
                          float *y, bool par) {
    int rows = nb * O;
    #pragma omp parallel for schedule(static) if (par && (double)rows * P > PARALLEL_MIN)
    for (int r = 0; r < rows; r++) {
        int b = r / O, o = r % O;
        const float *src = buf + (size_t)o * nb * P + (size_t)b * P;
        float *dst = y + (size_t)r * P, bv = bias ? bias[o] : 0.0f;
        if (src != dst) memcpy(dst, src, P * sizeof *dst);
        cn_conv_bias_act_row(dst, P, bv, act);
    }
}

/* out[c] = sum over n, p of t[n, c, p] (t [N, Ch, P]), accumulated in double: the bias gradient. */
static void sum_channels(const float *t, int64_t N, int Ch, size_t P, float *out, bool par) {
    #pragma omp parallel for schedule(static) if (par && (double)N * Ch * P > PARALLEL_MIN)
    for (int c = 0; c < Ch; c++) {
        double lane[8] = {0};
        for (int64_t n = 0; n < N; n++) {
            const float *row = t + ((size_t)n * Ch + c) * P;
            size_t p = 0;
            for (; p + 8 <= P; p += 8)
                for (int l = 0; l < 8; l++) lane[l] += row[p + l];
            for (; p < P; p++) lane[p % 8] += row[p];
        }
        out[c] = (float)(((lane[0] + lane[1]) + (lane[2] + lane[3])) +
                         ((lane[4] + lane[5]) + (lane[6] + lane[7])));
    }
}

/* ---- the driver ----------------------------------------------------------------------------- */

/* Whether the loops around the products may use OpenMP threads. Round 1 allowed it only under
 * OMP_WAIT_POLICY=passive: with spinning OpenMP workers, OpenBLAS's own pthreads were starved (10-40x
 * slower on 2 cores). OpenBLAS now always runs on its caller's thread (cn_blas_single_thread), so
 * OpenMP's threads are the engine's only ones and the loops are parallel under any policy (a Lua
 * module user who keeps libgomp's default spinning gets every core, as PyTorch does). */
static bool loops_parallel(void) { return true; }

/* Images per chunk of a conv-only job: 1 when one image already gives a wide GEMM, else enough
 * for CHUNK_COLS columns, within the buffer cap. */
static int chunk_images(const conv_geom *g) {
    size_t P = plane_p(g), rows = (size_t)g->C * g->kh * g->kw;
    if (P >= CHUNK_COLS || g->N <= 1) return 1;
    size_t nb = P ? (CHUNK_COLS + P - 1) / P : (size_t)g->N;
    if ((int64_t)nb > g->N) nb = (size_t)g->N;
    while (nb > 1 && (rows > (size_t)g->O ? rows : (size_t)g->O) * nb * P > CHUNK_MAX_FLOATS) nb--;
    return (int)nb;
}

/* Output rows per tile of one image: the tile's columns of col, C·kH·kW × rows·Wo floats, stay
 * within TILE_FLOATS, in tiles of even size. This bounds the buffer for big images; cache-sized
 * tiles (512 KB) measured no faster than whole images for 28² and 14² planes. */
static int tile_rows(const conv_geom *g) {
    size_t per_row = (size_t)g->C * g->kh * g->kw * (size_t)g->Wo;
    int rows = per_row ? (int)(TILE_FLOATS / per_row) : g->Ho;
    if (rows < 1) rows = 1;
    if (rows >= g->Ho) return g->Ho > 0 ? g->Ho : 1;
    int tiles = (g->Ho + rows - 1) / rows;
    return (g->Ho + tiles - 1) / tiles;
}

/* How run_conv goes through the images. */
typedef struct conv_plan {
    int nb_max, tr;  /* images per chunk, output rows per tile */
    bool direct;     /* col(X) is X (is_pointwise) */
    int threads;     /* > 1: chunks spread over OpenMP threads, single-threaded GEMMs (plan_threads) */
} conv_plan;

/* Images n0 .. n0 + nb - 1: every part of the job for them, with col_buf (and ybuf when nb > 1)
 * as scratch and dW accumulated into dw. */
static void run_chunk(const conv_geom *g, const conv_job *job, const conv_plan *pl, int64_t n0,
                      int nb, float *col_buf, float *ybuf, float *dw) {
    int G = g->groups, Og = g->O / G, Cg = g->C / G, K = Cg * g->kh * g->kw, tr = pl->tr;
    size_t P = plane_p(g), HW = (size_t)g->H * g->W;
    const float *xi = job->x_in ? job->x_in + (size_t)n0 * g->C * HW : NULL;
    float *yo = job->y_out ? job->y_out + (size_t)n0 * g->O * P : NULL;
    const float *yi = job->y_in ? job->y_in + (size_t)n0 * g->O * P : NULL;
    float *xo = job->x_out ? job->x_out + (size_t)n0 * g->C * HW : NULL;
    if (nb > 1) { /* conv only: [O, nb·P] = W_g @ col of the chunk, scattered out with the bias */
        int cols = nb * (int)P;
        im2col_chunk(g, xi, nb, 0, g->Ho, col_buf, (size_t)cols);
        for (int gi = 0; gi < G; gi++)
            cn_gemm(false, false, Og, cols, K, 1.0f, job->w + (size_t)gi * Og * K, K,
                    col_buf + (size_t)gi * K * cols, cols, 0.0f, ybuf + (size_t)gi * Og * cols, cols);
        scatter_chunk(ybuf, nb, g->O, P, job->y_bias, job->y_act, yo, g->parallel);
        return;
    }
    if (pl->direct) { /* col(X) = X: the jobs are plain GEMMs on the image */
        for (int gi = 0; gi < G; gi++) {
            const float *wg = job->w + (size_t)gi * Og * K;
            if (yo)
                cn_gemm(false, false, Og, (int)P, Cg, 1.0f, wg, K, xi + (size_t)gi * Cg * P, (int)P,
                        0.0f, yo + (size_t)gi * Og * P, (int)P);
            if (dw)
                cn_gemm(false, true, Og, Cg, (int)P, 1.0f, yi + (size_t)gi * Og * P, (int)P,
                        xi + (size_t)gi * Cg * P, (int)P, 1.0f, dw + (size_t)gi * Og * K, K);
            if (xo) {
                if (job->x_bias)
                    for (int c = gi * Cg; c < (gi + 1) * Cg; c++)
                        for (size_t k = 0; k < HW; k++) xo[(size_t)c * HW + k] = job->x_bias[c];
                cn_gemm(true, false, Cg, (int)P, Og, 1.0f, wg, K, yi + (size_t)gi * Og * P, (int)P,
                        job->x_bias ? 1.0f : 0.0f, xo + (size_t)gi * Cg * P, (int)P);
            }
        }
    } else {
        for (int oy0 = 0; oy0 < g->Ho; oy0 += tr) { /* one tile of output rows */
            int oy1 = oy0 + tr < g->Ho ? oy0 + tr : g->Ho, cols = (oy1 - oy0) * g->Wo;
            size_t at = (size_t)oy0 * g->Wo; /* the tile's first column in Y */
            if (yo || dw) im2col_chunk(g, xi, 1, oy0, oy1, col_buf, (size_t)cols);
            for (int gi = 0; gi < G; gi++) {
                const float *wg = job->w + (size_t)gi * Og * K, *cg = col_buf + (size_t)gi * K * cols;
                if (yo) /* Y_g = W_g @ col_g */
                    cn_gemm(false, false, Og, cols, K, 1.0f, wg, K, cg, cols, 0.0f,
                            yo + (size_t)gi * Og * P + at, (int)P);
                if (dw) /* dW_g += Y_g @ col_g^T */
                    cn_gemm(false, true, Og, K, cols, 1.0f, yi + (size_t)gi * Og * P + at, (int)P, cg,
                            cols, 1.0f, dw + (size_t)gi * Og * K, K);
            }
            if (xo) { /* X += col2im(W_g^T @ Y_g), col_buf reused once the tile's col is done */
                for (int gi = 0; gi < G; gi++)
                    cn_gemm(true, false, K, cols, Og, 1.0f, job->w + (size_t)gi * Og * K, K,
                            yi + (size_t)gi * Og * P + at, (int)P, 0.0f,
                            col_buf + (size_t)gi * K * cols, cols);
                col2im_image(g, col_buf, (size_t)cols, oy0, oy1, oy0 == 0, job->x_bias, xo);
            }
        }
    }
    if (yo && (job->y_bias || job->y_act))
        scatter_chunk(yo, 1, g->O, P, job->y_bias, job->y_act, yo, g->parallel);
}

/* Threads to spread the chunks over (1: the serial loop, each GEMM threaded by OpenBLAS): every
 * thread takes whole chunks (images, or chunks of small images) — its own im2col, single-threaded
 * GEMMs, scatter — whenever there are two images or more. OpenBLAS's own threads lose here: for
 * small images they wait for each other on every call (32->32 at 14², batch 64: a third of the time
 * in the scheduler), and for the 64² models' GEMMs (M = 32..64, a tile of 2,048 columns) OpenBLAS
 * ran them on one core (measured: 2 threads as slow as 1; spread by image: 1.9-2.0x). One image
 * alone keeps the serial loop with threaded GEMMs. */
static int plan_threads(const conv_geom *g) {
    if (!g->parallel || g->N < 2 || omp_in_parallel()) return 1;
    int threads = omp_get_max_threads();
    if (threads > g->N) threads = (int)g->N;
    return threads < 2 ? 1 : threads;
}

/* The direct route (conv_direct.c) for a conv alone, dilation 1, one group, padding (not a crop),
 * kernels up to 7×7, stride 1 (strided: strided_small_applies). */
static bool direct_applies(const conv_geom *g, const conv_job *job) {
    return job->y_out && !job->dw && !job->x_out && g->groups == 1 && g->sh == 1 && g->sw == 1 &&
           g->dh == 1 && g->dw == 1 && g->ph >= 0 && g->pw >= 0 && g->kh * g->kw <= CN_DIRECT_MAX_TAPS &&
           !is_pointwise(g);
}

/* A strided conv alone that the small-plane kernel takes (stride 2 in either dim or both, the
 * rest as direct_applies): a downsampling conv's forward. */
static bool strided_small_applies(const conv_geom *g, const conv_job *job) {
    conv_geom unit = *g;
    unit.sh = unit.sw = 1;
    return (g->sh > 1 || g->sw > 1) && g->sh <= 2 && g->sw <= 2 && direct_applies(&unit, job);
}

#define DIRECT_WEIGHT_CHUNK_FLOATS (1 << 19) /* 2 MB of images per weight-gradient chunk (12% faster than 512 KB) */

static _Atomic cn_conv_route route_choice = CN_CONV_AUTO;

cn_conv_route cn_conv_set_route(cn_conv_route route) { return atomic_exchange(&route_choice, route); }

/* The same geometry for the weight gradient alone (x_in, y_in, dw). */
static bool direct_weight_applies(const conv_geom *g, const conv_job *job) {
    conv_job as_conv = {.y_out = job->dw};
    return job->dw && job->x_in && job->y_in && !job->y_out && !job->x_out && direct_applies(g, &as_conv);
}

/* Which kernel, measured per core (AMD EPYC, AVX-512; docs/benchmarks.md):
 * - convolutions (and input gradients, the same kernel on flipped weights): rows of 7 to 16 outputs
 *   with 32 output channels or more take the kernel with vectors across output channels (64 channels
 *   at 14²: 83 GFLOP/s, at 7²: 85; 91-94 with 128-192 inputs, where GEMM gave 50-57); everything else
 *   the flat-grid kernel (102-105 from 28² to 64² at any K, against 72-89 for GEMM), unless the plane
 *   is so small that less than half its blocks is output (3×3: 14 GFLOP/s, GEMM 21-31);
 * - weight gradients: 32 output channels or more, the kernel with vectors across output channels
 *   (82-97 from 3² to 64², GEMM 44-91) up to K = C·kH·kW = 2304 (512 -> 512 at 8²: GEMM 98 against
 *   83); 16 to 31 output channels on planes of 28² and up, the flat-grid one (1.2-1.5x GEMM; 0.75-0.85x
 *   below 28²); the rest GEMM. */
#define DIRECT_MIN_GRID_USE 0.5
#define SMALL_MIN_WIDTH 7
#define SMALL_MAX_WIDTH 16
#define SMALL_MIN_OUT 32
#define SMALL_MIN_OUT_STRIDED 16
#define SMALL_WEIGHT_MAX_K 2304
#define DIRECT_WEIGHT_MIN_PLANE 784
#define DIRECT_WEIGHT_MIN_OUT 16

/* The direct kernels' view of a convolution's geometry. */
static cn_direct_geom direct_geom(const conv_geom *g) {
    return (cn_direct_geom){.C = g->C, .H = g->H, .W = g->W, .O = g->O, .kh = g->kh, .kw = g->kw,
                            .ph = g->ph, .pw = g->pw, .sh = g->sh, .sw = g->sw};
}

static bool use_small(const cn_direct_geom *dg) {
    int Wo = (dg->W + 2 * dg->pw - dg->kw) / dg->sw + 1;
    bool strided = dg->sh > 1 || dg->sw > 1;
    return Wo >= SMALL_MIN_WIDTH && Wo <= SMALL_MAX_WIDTH && dg->O >= (strided ? SMALL_MIN_OUT_STRIDED : SMALL_MIN_OUT);
}

static bool use_small_weight(const cn_direct_geom *dg) {
    return dg->O >= SMALL_MIN_OUT && dg->C * dg->kh * dg->kw <= SMALL_WEIGHT_MAX_K;
}

static bool use_direct(const conv_geom *g, const conv_job *job) {
    cn_conv_route r = atomic_load(&route_choice);
    if (strided_small_applies(g, job)) {
        cn_direct_geom dg = direct_geom(g);
        return r == CN_CONV_DIRECT || (r == CN_CONV_AUTO && use_small(&dg));
    }
    bool weight = direct_weight_applies(g, job);
    if (r == CN_CONV_GEMM || !(direct_applies(g, job) || weight)) return false;
    if (r == CN_CONV_DIRECT) return true;
    cn_direct_geom dg = direct_geom(g);
    if (weight && use_small_weight(&dg)) return true;
    if (weight && (plane_p(g) < DIRECT_WEIGHT_MIN_PLANE || g->O < DIRECT_WEIGHT_MIN_OUT)) return false;
    if (!weight && use_small(&dg)) return true;
    return cn_direct_grid_use(&dg) >= DIRECT_MIN_GRID_USE;
}

/* dW = sum over images of the direct weight gradient: each thread its images and its own partial
 * sum (thread 0 into dw), added in thread order, so the result does not depend on timing. */

static int run_direct_weight(const conv_geom *g, const cn_direct_geom *dgp, const conv_job *job, int threads,
                             const char *fname, cn_error *err) {
    cn_direct_geom dg = *dgp;
    bool small = use_small_weight(&dg);
    size_t dw_n = (size_t)g->O * g->C * g->kh * g->kw;
    size_t per = small ? cn_direct_small_weight_scratch_floats(&dg) : cn_direct_weight_scratch_floats(&dg);
    /* images per chunk: their padded planes and gradients within about half a core's L2 */
    int64_t nb = (int64_t)(DIRECT_WEIGHT_CHUNK_FLOATS / (per ? per : 1));
    int64_t per_thread = (g->N + threads - 1) / threads;
    if (nb > per_thread) nb = per_thread;
    if (nb < 1) nb = 1;
    size_t sn = (per * (size_t)nb + 15) / 16 * 16, pn = (dw_n + 15) / 16 * 16;
    size_t total = sn * (size_t)threads + pn * (size_t)(threads - 1);
    float *buf = cn_alloc_floats(total);
    if (!buf) {
        cn_error_set(err, "%s: out of memory for a %zu-float direct weight-gradient buffer", fname, total);
        return -1;
    }
    cn_profile_add_flops(2.0 * (double)g->N * g->O * g->C * g->kh * g->kw * (double)plane_p(g));
    float *parts = buf + sn * (size_t)threads;
    memset(job->dw, 0, dw_n * sizeof *job->dw);
    if (threads > 1) memset(parts, 0, pn * (size_t)(threads - 1) * sizeof *parts);
    size_t in_n = (size_t)g->C * g->H * g->W, out_n = (size_t)g->O * plane_p(g);
    int64_t chunks = (g->N + nb - 1) / nb;
    #pragma omp parallel num_threads(threads) if (threads > 1)
    {
        int t = omp_get_thread_num();
        float *dw = t ? parts + pn * (size_t)(t - 1) : job->dw;
        #pragma omp for schedule(static)
        for (int64_t k = 0; k < chunks; k++) {
            int64_t n0 = k * nb, m = g->N - n0 < nb ? g->N - n0 : nb;
            if (small)
                cn_direct_small_weight_images(&dg, job->x_in + (size_t)n0 * in_n, job->y_in + (size_t)n0 * out_n,
                                              (int)m, dw, buf + sn * (size_t)t);
            else
                cn_direct_conv_weight_images(&dg, job->x_in + (size_t)n0 * in_n, job->y_in + (size_t)n0 * out_n,
                                             (int)m, dw, buf + sn * (size_t)t);
        }
    }
    for (int t = 1; t < threads; t++)
        for (size_t k = 0; k < dw_n; k++) job->dw[k] += parts[pn * (size_t)(t - 1) + k];
    cn_free_floats(buf, total);
    return 0;
}

static int run_direct(const conv_geom *g, const conv_job *job, const char *fname, cn_error *err) {
    cn_direct_geom dg = direct_geom(g);
    int threads = g->parallel && g->N >= 2 && !omp_in_parallel() ? omp_get_max_threads() : 1;
    if (threads > g->N) threads = (int)g->N;
    if (job->dw) return run_direct_weight(g, &dg, job, threads, fname, err);
    bool small = dg.sh > 1 || dg.sw > 1 || use_small(&dg); /* strided: only the small-plane kernel */
    size_t wn = small ? cn_direct_small_weight_floats(&dg) : cn_direct_weight_floats(&dg);
    size_t sn = ((small ? cn_direct_small_scratch_floats(&dg) : cn_direct_scratch_floats(&dg)) + 15) / 16 * 16;
    size_t total = wn + sn * (size_t)threads;
    float *buf = cn_alloc_floats(total);
    if (!buf) {
        cn_error_set(err, "%s: out of memory for a %zu-float direct convolution buffer", fname, total);
        return -1;
    }
    cn_profile_add_flops(2.0 * (double)g->N * g->O * g->C * g->kh * g->kw * (double)plane_p(g));
    float *wp = buf + sn * (size_t)threads; /* scratch first: 64-byte aligned blocks */
    if (small) cn_direct_small_pack_weight(&dg, job->w, wp);
    else cn_direct_pack_weight(&dg, job->w, wp);
    size_t in_n = (size_t)g->C * g->H * g->W, out_n = (size_t)g->O * plane_p(g);
    bool inner = g->parallel && threads == 1 && !omp_in_parallel();
    #pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (threads > 1)
    for (int64_t n = 0; n < g->N; n++) {
        const float *xi = job->x_in + (size_t)n * in_n;
        float *yi = job->y_out + (size_t)n * out_n, *scratch = buf + sn * (size_t)omp_get_thread_num();
        if (small) cn_direct_small_conv_image(&dg, xi, wp, job->y_bias, job->y_act, yi, scratch, inner);
        else cn_direct_conv_image(&dg, xi, wp, job->y_bias, job->y_act, yi, scratch, inner);
    }
    cn_free_floats(buf, total);
    return 0;
}

/* A conv alone over small images runs in chunks of images (chunk_images); everything else goes
 * image by image, each image in tiles of output rows (tile_rows), reading and writing Y in place.
 * Chunks run one after the other, or spread over OpenMP threads (plan_threads). */
static int run_conv(const conv_geom *geom, const conv_job *job, const char *fname, cn_error *err) {
    conv_geom gl = *geom;
    const conv_geom *g = &gl;
    gl.parallel = loops_parallel();
    if (use_direct(g, job)) return run_direct(g, job, fname, err);
    int K = g->C / g->groups * g->kh * g->kw;
    size_t P = plane_p(g), rows_all = (size_t)g->C * g->kh * g->kw;
    conv_plan pl = {.direct = is_pointwise(g)};
    pl.nb_max = pl.direct || job->x_out || job->dw ? 1 : chunk_images(g);
    pl.tr = pl.direct || pl.nb_max > 1 ? g->Ho : tile_rows(g);
    pl.threads = plan_threads(g);
    /* A thread's GEMM need not be wide: its chunk stays within about half a core's L2 (measured:
     * as fast as one image per chunk, faster than the serial loop's wide chunks) */
    while (pl.threads > 1 && pl.nb_max > 1 && rows_all * pl.nb_max * P > THREAD_CHUNK_FLOATS)
        pl.nb_max--;

    size_t dw_n = job->dw ? (size_t)g->O * K : 0;
    if (dw_n) memset(job->dw, 0, dw_n * sizeof *job->dw);
    /* per thread: a col buffer, a chunk's output (nb_max > 1) and, but for thread 0, a dW */
    size_t col_n = pl.direct ? 0 : rows_all * pl.nb_max * (size_t)pl.tr * g->Wo;
    size_t ybuf_n = pl.nb_max > 1 ? (size_t)g->O * pl.nb_max * P : 0;
    size_t nt = (size_t)pl.threads, buf_n = (col_n + ybuf_n) * nt + dw_n * (nt - 1);
    float *buf = buf_n ? cn_alloc_floats(buf_n) : NULL;
    if (buf_n && !buf) {
        cn_error_set(err, "%s: out of memory for a %zu-float im2col buffer", fname, buf_n);
        return -1;
    }
    float *dw_part = buf ? buf + (col_n + ybuf_n) * nt : NULL;
    if (dw_n && nt > 1) memset(dw_part, 0, dw_n * (nt - 1) * sizeof *dw_part);

    if (pl.threads == 1) {
        for (int64_t n0 = 0; n0 < g->N; n0 += pl.nb_max) {
            int nb = (int)(g->N - n0 < pl.nb_max ? g->N - n0 : pl.nb_max);
            run_chunk(g, job, &pl, n0, nb, buf, buf ? buf + col_n : NULL, job->dw);
        }
    } else {
        /* Chunks of at most nb_max images, as many as a multiple of the thread count, so that a
         * static schedule balances them (and dW's partial sums do not depend on timing). */
        int64_t per = (g->N + pl.nb_max - 1) / pl.nb_max;
        int64_t chunks = (per + pl.threads - 1) / pl.threads * pl.threads;
        if (chunks > g->N) chunks = g->N;
        conv_geom gs = gl; /* inside the region the loops stay serial */
        gs.parallel = false;
        /* cn_gemm runs OpenBLAS single-threaded: each call on its caller's thread, concurrently */
        #pragma omp parallel num_threads(pl.threads)
        {
            size_t t = (size_t)omp_get_thread_num();
            float *col = buf ? buf + (col_n + ybuf_n) * t : NULL;
            float *dw = job->dw && t ? dw_part + dw_n * (t - 1) : job->dw;
            if (job->dw) { /* static: each thread's dW part sums the same images every run */
                #pragma omp for schedule(static)
                for (int64_t c = 0; c < chunks; c++) {
                    int64_t n0 = g->N * c / chunks, n1 = g->N * (c + 1) / chunks;
                    run_chunk(&gs, job, &pl, n0, (int)(n1 - n0), col, col ? col + col_n : NULL, dw);
                }
            } else { /* dynamic: a thread slowed by another job on its core takes fewer chunks */
                #pragma omp for schedule(dynamic, 1)
                for (int64_t c = 0; c < chunks; c++) {
                    int64_t n0 = g->N * c / chunks, n1 = g->N * (c + 1) / chunks;
                    run_chunk(&gs, job, &pl, n0, (int)(n1 - n0), col, col ? col + col_n : NULL, dw);
                }
            }
        }
        for (size_t t = 1; t < nt && dw_n; t++) /* dW = thread 0's part + the others' in order */
            for (size_t k = 0; k < dw_n; k++) job->dw[k] += dw_part[dw_n * (t - 1) + k];
    }
    cn_free_floats(buf, buf_n);
    return 0;
}

/* X = bias + adjoint(Y). With stride 1 the adjoint is itself a convolution, of Y by the kernel
 * flipped in space with its channel axes swapped, padding dH (kH - 1) - pH (negative: a crop):
 *   X[c, y, x] = sum_{o, i, j} w[o, c, i, j] Y[o, y + pH - i dH, x + pW - j dW]
 *              = sum_{o, i', j'} w'[c, o, i', j'] Y[o, y - p'H + i' dH, x - p'W + j' dW]
 * with w'[c, o, i', j'] = w[o, c, kH-1-i', kW-1-j'] (per group). That runs as conv GEMMs with
 * K = O/G·kH·kW, much wider than the adjoint's K = O/G, and needs no col2im scatter. */
static int run_adjoint(const conv_geom *g, const float *y, const float *w, const float *bias,
                       float *x, const char *fname, cn_error *err) {
    if (g->sh != 1 || g->sw != 1 || is_pointwise(g)) {
        conv_job job = {.y_in = y, .x_out = x, .x_bias = bias, .w = w};
        return run_conv(g, &job, fname, err);
    }
    int G = g->groups, Og = g->O / G, Cg = g->C / G, kh = g->kh, kw = g->kw;
    size_t wn = (size_t)g->O * Cg * kh * kw;
    float *wf = cn_alloc_floats(wn ? wn : 1);
    if (!wf) {
        cn_error_set(err, "%s: out of memory for a flipped %zu-float weight", fname, wn);
        return -1;
    }
    for (int gi = 0; gi < G; gi++)
        for (int o = 0; o < Og; o++)
            for (int c = 0; c < Cg; c++)
                for (int i = 0; i < kh; i++)
                    for (int j = 0; j < kw; j++)
                        wf[((((size_t)gi * Cg + c) * Og + o) * kh + (kh - 1 - i)) * kw + (kw - 1 - j)] =
                            w[((((size_t)gi * Og + o) * Cg + c) * kh + i) * kw + j];
    conv_geom f = *g; /* the sides swap: Y is now the image, X the columns */
    f.C = g->O, f.H = g->Ho, f.W = g->Wo;
    f.O = g->C, f.Ho = g->H, f.Wo = g->W;
    f.ph = g->dh * (kh - 1) - g->ph;
    f.pw = g->dw * (kw - 1) - g->pw;
    conv_job job = {.x_in = y, .y_out = x, .y_bias = bias, .w = wf};
    int status = run_conv(&f, &job, fname, err);
    cn_free_floats(wf, wn ? wn : 1);
    return status;
}

/* ---- checks and geometry -------------------------------------------------------------------- */

static const cn_conv2d_opts default_opts = CN_CONV2D_OPTS_DEFAULT;

static bool fits_int(int64_t v) { return v >= 0 && v <= INT_MAX; }

/* Validates the operands of conv2d (transposed false) or conv_transpose2d and fills the geometry
 * and the output shape. x is 4-D here (the public functions add a batch dim to a 3-D input). */
static int check_conv(const char *fname, bool transposed, const cn_tensor *x, const cn_tensor *w,
                      const cn_tensor *bias, const cn_conv2d_opts *o, conv_geom *g,
                      int64_t *out_shape, cn_error *err) {
    char sx[160], sw[160], sb[160];
    if (x->ndim != 4) {
        cn_error_set(err, "%s: expected a 4-D input [N, C, H, W] (or 3-D [C, H, W]), got shape %s",
                     fname, cn_shape_str(sx, sizeof sx, x->ndim, x->shape));
        return -1;
    }
    cn_shape_str(sx, sizeof sx, x->ndim, x->shape);
    if (w->ndim != 4) {
        cn_error_set(err, "%s: expected a 4-D weight %s, got shape %s (input %s)", fname,
                     transposed ? "[C_in, C_out/groups, kH, kW]" : "[C_out, C_in/groups, kH, kW]",
                     cn_shape_str(sw, sizeof sw, w->ndim, w->shape), sx);
        return -1;
    }
    cn_shape_str(sw, sizeof sw, w->ndim, w->shape);
    const int *st = o->stride, *pd = o->padding, *dl = o->dilation, *op = o->output_padding;
    if (st[0] < 1 || st[1] < 1) {
        cn_error_set(err, "%s: stride must be positive, got [%d, %d]", fname, st[0], st[1]);
        return -1;
    }
    if (pd[0] < 0 || pd[1] < 0) {
        cn_error_set(err, "%s: padding must be non-negative, got [%d, %d]", fname, pd[0], pd[1]);
        return -1;
    }
    if (dl[0] < 1 || dl[1] < 1) {
        cn_error_set(err, "%s: dilation must be positive, got [%d, %d]", fname, dl[0], dl[1]);
        return -1;
    }
    if (o->groups < 1) {
        cn_error_set(err, "%s: groups must be positive, got %d", fname, o->groups);
        return -1;
    }
    if (o->activation != CN_ACT_NONE && (transposed || (o->activation != CN_ACT_RELU &&
                                                        o->activation != CN_ACT_SOFTPLUS))) {
        cn_error_set(err, transposed ? "%s: a fused activation is for conv2d only"
                                     : "%s: unknown fused activation %d", fname, (int)o->activation);
        return -1;
    }
    if (!transposed && (op[0] != 0 || op[1] != 0)) {
        cn_error_set(err, "%s: output_padding is for conv_transpose2d only, got [%d, %d]", fname,
                     op[0], op[1]);
        return -1;
    }
    if (op[0] < 0 || op[1] < 0) {
        cn_error_set(err, "%s: output_padding must be non-negative, got [%d, %d]", fname, op[0], op[1]);
        return -1;
    }
    for (int d = 0; d < 2; d++)
        if (op[d] >= st[d] && op[d] >= dl[d]) {
            cn_error_set(err, "%s: output_padding [%d, %d] must be smaller than either the stride "
                         "[%d, %d] or the dilation [%d, %d]", fname, op[0], op[1], st[0], st[1],
                         dl[0], dl[1]);
            return -1;
        }
    int64_t groups = o->groups, N = x->shape[0], C_in = x->shape[1], H = x->shape[2], W = x->shape[3];
    int64_t kh = w->shape[2], kw = w->shape[3], C_out;
    if (kh < 1 || kw < 1) {
        cn_error_set(err, "%s: kernel size must be positive, got weight %s", fname, sw);
        return -1;
    }
    if (C_in % groups) {
        cn_error_set(err, "%s: %lld input channels (input %s) are not divisible by groups %lld",
                     fname, (long long)C_in, sx, (long long)groups);
        return -1;
    }
    if (!transposed) {
        C_out = w->shape[0];
        if (C_out % groups) {
            cn_error_set(err, "%s: %lld output channels (weight %s) are not divisible by groups %lld",
                         fname, (long long)C_out, sw, (long long)groups);
            return -1;
        }
        if (w->shape[1] * groups != C_in) {
            cn_error_set(err, "%s: weight of shape %s needs %lld input channels%s, input has %lld (%s)",
                         fname, sw, (long long)(w->shape[1] * groups),
                         groups > 1 ? " (with groups)" : "", (long long)C_in, sx);
            return -1;
        }
    } else {
        if (w->shape[0] != C_in) {
            cn_error_set(err, "%s: weight of shape %s needs %lld input channels, input has %lld (%s)",
                         fname, sw, (long long)w->shape[0], (long long)C_in, sx);
            return -1;
        }
        C_out = w->shape[1] * groups;
    }
    if (bias && (bias->ndim != 1 || bias->shape[0] != C_out)) {
        cn_error_set(err, "%s: bias of shape %s does not match the %lld output channels (expected [%lld])",
                     fname, cn_shape_str(sb, sizeof sb, bias->ndim, bias->shape), (long long)C_out,
                     (long long)C_out);
        return -1;
    }
    int64_t Hout, Wout;
    int64_t ekh = (int64_t)dl[0] * (kh - 1) + 1, ekw = (int64_t)dl[1] * (kw - 1) + 1;
    if (!transposed) {
        if (H + 2 * (int64_t)pd[0] < ekh || W + 2 * (int64_t)pd[1] < ekw) {
            cn_error_set(err, "%s: input %s padded to %lldx%lld is smaller than the dilated kernel "
                         "%lldx%lld (weight %s, padding [%d, %d], dilation [%d, %d])", fname, sx,
                         (long long)(H + 2 * (int64_t)pd[0]), (long long)(W + 2 * (int64_t)pd[1]),
                         (long long)ekh, (long long)ekw, sw, pd[0], pd[1], dl[0], dl[1]);
            return -1;
        }
        Hout = (H + 2 * (int64_t)pd[0] - ekh) / st[0] + 1;
        Wout = (W + 2 * (int64_t)pd[1] - ekw) / st[1] + 1;
    } else {
        Hout = (H - 1) * st[0] - 2 * (int64_t)pd[0] + ekh - 1 + op[0] + 1;
        Wout = (W - 1) * st[1] - 2 * (int64_t)pd[1] + ekw - 1 + op[1] + 1;
        if (Hout <= 0 || Wout <= 0) {
            cn_error_set(err, "%s: output size %lldx%lld is not positive (input %s, weight %s, "
                         "stride [%d, %d], padding [%d, %d], dilation [%d, %d], output_padding [%d, %d])",
                         fname, (long long)Hout, (long long)Wout, sx, sw, st[0], st[1], pd[0], pd[1],
                         dl[0], dl[1], op[0], op[1]);
            return -1;
        }
    }
    /* image side and columns side */
    int64_t img[4] = {N, transposed ? C_out : C_in, transposed ? Hout : H, transposed ? Wout : W};
    int64_t cs[4] = {N, transposed ? C_in : C_out, transposed ? H : Hout, transposed ? W : Wout};
    if (!fits_int(img[1]) || !fits_int(img[2]) || !fits_int(img[3]) || !fits_int(cs[1]) ||
        !fits_int(cs[2]) || !fits_int(cs[3]) || !fits_int(cs[2] * cs[3]) ||
        !fits_int(img[1] / groups * kh * kw) || !fits_int(img[1] * kh * kw)) {
        cn_error_set(err, "%s: sizes too large for BLAS (input %s, weight %s)", fname, sx, sw);
        return -1;
    }
    *g = (conv_geom){.N = N, .C = (int)img[1], .H = (int)img[2], .W = (int)img[3], .O = (int)cs[1],
                     .Ho = (int)cs[2], .Wo = (int)cs[3], .kh = (int)kh, .kw = (int)kw,
                     .sh = st[0], .sw = st[1], .ph = pd[0], .pw = pd[1], .dh = dl[0], .dw = dl[1],
                     .groups = o->groups};
    out_shape[0] = N;
    out_shape[1] = C_out;
    out_shape[2] = Hout;
    out_shape[3] = Wout;
    return 0;
}

/* ---- conv2d / conv_transpose2d: forward ----------------------------------------------------- */

/* conv2d:            out[n, o] = bias[o] + sum_{c in group(o), i, j} w[o, c, i, j]
 *                                 · x[n, c, oy·sH - pH + i·dH, ox·sW - pW + j·dW]   (conv)
 * conv_transpose2d:  out = bias + the adjoint of that map applied to x              (adjoint)
 * xc, wc, bc contiguous. */
static cn_tensor *conv_forward(bool transposed, const cn_tensor *xc, const cn_tensor *wc,
                               const cn_tensor *bc, const conv_geom *g, const int64_t *out_shape,
                               cn_conv_act act, cn_error *err) {
    cn_tensor *out = cn_empty(4, out_shape, err);
    if (!out) return NULL;
    const float *b = bc ? cn_data(bc) : NULL;
    int status;
    if (!transposed) {
        conv_job job = {.x_in = cn_data(xc), .y_out = cn_data(out), .y_bias = b, .y_act = act,
                        .w = cn_data(wc)};
        status = run_conv(g, &job, "conv2d", err);
    } else {
        status = run_adjoint(g, cn_data(xc), cn_data(wc), b, cn_data(out), "conv_transpose2d", err);
    }
    if (status) {
        cn_release(out);
        return NULL;
    }
    return out;
}

/* ---- conv2d / conv_transpose2d: backward -------------------------------------------------- */
/* inputs = x, w [, bias]. A fused activation's gradient is applied to g first (act_grad); then
 * each op runs the other direction:
 *   conv2d:            dx = adjoint(g), dw = weight(Y = g, X = x), db = sum of g over n, h, w
 *   conv_transpose2d:  dx = conv(X = g), dw = weight(Y = x, X = g), db = the same sum */
struct conv_args {
    conv_geom geom;         /* as the forward ran it (check_conv) */
    cn_conv2d_opts opts;    /* as the caller gave them (the recorded backward calls the ops again);
                               opts.activation was fused into the forward (conv2d only) */
};
enum { CONV_SAVED_X, CONV_SAVED_W, CONV_SAVED_OUT }; /* x, w contiguous; out only with an activation */

/* Allocates the gradients the node's inputs need (left NULL otherwise). */
static int alloc_grads(cn_node *n, const cn_tensor *x, const cn_tensor *w, cn_tensor **gi,
                       cn_error *err) {
    if (n->inputs[0]->requires_grad && !(gi[0] = cn_empty(x->ndim, x->shape, err))) return -1;
    if (n->inputs[1]->requires_grad && !(gi[1] = cn_empty(w->ndim, w->shape, err))) return -1;
    if (n->n_inputs > 2 && n->inputs[2]->requires_grad &&
        !(gi[2] = cn_empty(1, &n->inputs[2]->shape[0], err)))
        return -1;
    return 0;
}

/* g · act'(z) from the output y = act(z): the gradient at the conv's own output. New reference. */
static cn_tensor *act_grad(const cn_tensor *gc, const cn_tensor *y, cn_conv_act act, cn_error *err) {
    cn_tensor *r = cn_empty(gc->ndim, gc->shape, err);
    if (!r) return NULL;
    const float *g = cn_data(gc), *yv = cn_data(y);
    float *out = cn_data(r);
    size_t n = cn_numel(gc);
    bool par = loops_parallel() && n > PARALLEL_MIN;
    if (act == CN_ACT_RELU) {
        #pragma omp parallel for schedule(static) if (par)
        for (size_t i = 0; i < n; i++) out[i] = yv[i] > 0.0f ? g[i] : 0.0f;
    } else {
        #pragma omp parallel for schedule(static) if (par)
        for (size_t i = 0; i < n; i++) out[i] = g[i] * cn_vsoftplus_grad_from_y(yv[i]);
    }
    return r;
}

static int conv_backward(cn_node *n, const cn_tensor *gout, cn_tensor **gi, bool transposed,
                         cn_error *err) {
    const struct conv_args *args = CN_NODE_ARGS(n, struct conv_args);
    const cn_tensor *x = n->saved[CONV_SAVED_X], *w = n->saved[CONV_SAVED_W];
    const conv_geom *g = &args->geom;
    cn_tensor *gc = cn_contiguous((cn_tensor *)gout, err);
    if (gc && args->opts.activation != CN_ACT_NONE) {
        cn_tensor *gz = act_grad(gc, n->saved[CONV_SAVED_OUT], args->opts.activation, err);
        cn_release(gc);
        gc = gz;
    }
    if (!gc || alloc_grads(n, x, w, gi, err)) {
        cn_release(gc);
        return -1;
    }
    const char *fname = transposed ? "conv_transpose2d backward" : "conv2d backward";
    float *dw = gi[1] ? cn_data(gi[1]) : NULL;
    int status = 0;
    if (!transposed) { /* dw: weight(Y = g, X = x); dx: adjoint(g) */
        conv_job job = {.x_in = cn_data(x), .y_in = cn_data(gc), .w = cn_data(w), .dw = dw};
        if (dw) status = run_conv(g, &job, fname, err);
        if (!status && gi[0])
            status = run_adjoint(g, cn_data(gc), cn_data(w), NULL, cn_data(gi[0]), fname, err);
    } else { /* one pass: col(g) feeds both dx = conv(g) and dw = weight(Y = x, X = g) */
        conv_job job = {.x_in = cn_data(gc), .y_out = gi[0] ? cn_data(gi[0]) : NULL,
                        .y_in = cn_data(x), .w = cn_data(w), .dw = dw};
        if (job.y_out || dw) status = run_conv(g, &job, fname, err);
    }
    if (!status && n->n_inputs > 2 && gi[2]) { /* gi has n_inputs entries */
        size_t P = (size_t)gc->shape[2] * (size_t)gc->shape[3];
        sum_channels(cn_data(gc), gc->shape[0], (int)gc->shape[1], P, cn_data(gi[2]), loops_parallel());
    }
    cn_release(gc);
    return status;
}

static int conv2d_backward(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    return conv_backward(n, g, gi, false, err);
}

static int conv_transpose2d_backward(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    return conv_backward(n, g, gi, true, err);
}

/* ---- conv2d / conv_transpose2d: the recorded backward (create_graph) --------------------------
 * The same gradients from the public, recording ops, so that they can be differentiated again:
 *   conv2d:            dx = conv_transpose2d(g, w) (output_padding restoring x's size),
 *                      dw = weight_grad(x, g)
 *   conv_transpose2d:  dx = conv2d(g, w),  dw = weight_grad(g, x)
 *   weight_grad(image, cols)[o, c, i, j] = sum over n, p, q of cols[n, o, p, q] *
 *       image_padded[n, c, p s + i d, q s + j d]: per group, conv2d of the image with channels and
 *       batch swapped by cols likewise swapped, stride and dilation exchanged, cropped to the kernel.
 * A fused activation first takes g to the conv's own output z, recomputed: g act'(z) (recorded). */

static cn_tensor *conv_public(bool transposed, const cn_tensor *x, const cn_tensor *w,
                              const cn_tensor *bias, const cn_conv2d_opts *o, cn_error *err);

static cn_tensor *permute_drop(cn_tensor *t, const int *perm, cn_error *err) {
    cn_tensor *r = t ? cn_permute(t, perm, err) : NULL;
    cn_release(t);
    return r;
}

static cn_tensor *weight_grad(cn_tensor *image, cn_tensor *cols, const cn_conv2d_opts *o, int kh, int kw,
                              cn_error *err) {
    static const int swap01[4] = {1, 0, 2, 3};
    int G = o->groups;
    int64_t Cg = image->shape[1] / G, Og = cols->shape[1] / G;
    cn_conv2d_opts wo = CN_CONV2D_OPTS_DEFAULT;
    for (int k = 0; k < 2; k++) {
        wo.stride[k] = o->dilation[k];
        wo.dilation[k] = o->stride[k];
        wo.padding[k] = o->padding[k];
    }
    cn_tensor **parts = calloc((size_t)G, sizeof *parts);
    if (!parts) {
        cn_error_set(err, "conv2d backward: out of memory");
        return NULL;
    }
    int made = 0;
    for (; made < G; made++) {
        cn_tensor *xi = permute_drop(cn_narrow(image, 1, made * Cg, Cg, err), swap01, err);
        cn_tensor *gi = permute_drop(cn_narrow(cols, 1, made * Og, Og, err), swap01, err);
        cn_tensor *full = xi && gi ? conv_public(false, xi, gi, NULL, &wo, err) : NULL; /* [Cg, Og, kh', kw'] */
        cn_release(xi), cn_release(gi);
        cn_tensor *rows = full ? cn_narrow(full, 2, 0, kh, err) : NULL;
        cn_tensor *crop = rows ? cn_narrow(rows, 3, 0, kw, err) : NULL;
        cn_release(full), cn_release(rows);
        if (!(parts[made] = permute_drop(crop, swap01, err))) break;
    }
    cn_tensor *r = made == G ? (G == 1 ? cn_retain(parts[0]) : cn_cat(G, parts, 0, err)) : NULL;
    for (int i = 0; i < made; i++) cn_release(parts[i]);
    free(parts);
    return r;
}

static int conv_backward_graph(cn_node *n, const cn_tensor *gout, cn_tensor **gi, bool transposed,
                               cn_error *err) {
    const struct conv_args *args = CN_NODE_ARGS(n, struct conv_args);
    cn_conv2d_opts o = args->opts;
    cn_tensor *x = n->inputs[0], *w = n->inputs[1], *bias = n->n_inputs > 2 ? n->inputs[2] : NULL;
    cn_tensor *g = cn_retain((cn_tensor *)gout);
    if (o.activation != CN_ACT_NONE) {
        cn_unary_op act = o.activation == CN_ACT_RELU ? CN_RELU : CN_SOFTPLUS;
        o.activation = CN_ACT_NONE;
        cn_tensor *z = conv_public(false, x, w, bias, &o, err);
        cn_tensor *gz = z ? cn_unary_backward(act, z, g, err) : NULL;
        cn_release(z), cn_release(g);
        if (!(g = gz)) return -1;
    }
    int status = -1;
    if (x->requires_grad) {
        if (transposed) {
            o.output_padding[0] = o.output_padding[1] = 0;
            gi[0] = conv_public(false, g, w, NULL, &o, err);
        } else { /* the rows and columns the forward's stride left unread come back as zeros */
            for (int k = 0; k < 2; k++) {
                int64_t span = (g->shape[2 + k] - 1) * o.stride[k] - 2 * (int64_t)o.padding[k] +
                               (int64_t)o.dilation[k] * (w->shape[2 + k] - 1) + 1;
                o.output_padding[k] = (int)(x->shape[2 + k] - span);
            }
            gi[0] = conv_public(true, g, w, NULL, &o, err);
            o.output_padding[0] = o.output_padding[1] = 0;
        }
        if (!gi[0]) goto done;
    }
    if (w->requires_grad) {
        o.output_padding[0] = o.output_padding[1] = 0;
        int kh = (int)w->shape[2], kw = (int)w->shape[3];
        gi[1] = transposed ? weight_grad(g, x, &o, kh, kw, err) : weight_grad(x, g, &o, kh, kw, err);
        if (!gi[1]) goto done;
    }
    if (bias && bias->requires_grad) {
        int dims[3] = {0, 2, 3};
        if (!(gi[2] = cn_sum(g, 3, dims, false, err))) goto done;
    }
    status = 0;
done:
    cn_release(g);
    return status;
}

static int conv2d_backward_graph(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    return conv_backward_graph(n, g, gi, false, err);
}

static int conv_transpose2d_backward_graph(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    return conv_backward_graph(n, g, gi, true, err);
}

static const cn_op_def op_conv2d = {"conv2d", conv2d_backward, conv2d_backward_graph};
static const cn_op_def op_conv_transpose2d = {"conv_transpose2d", conv_transpose2d_backward,
                                              conv_transpose2d_backward_graph};

/* Checks, runs the forward without grad on contiguous operands, records the node. x is 4-D. */
static cn_tensor *conv_op(bool transposed, const cn_tensor *x, const cn_tensor *w,
                          const cn_tensor *bias, const cn_conv2d_opts *o, cn_error *err) {
    const char *fname = transposed ? "conv_transpose2d" : "conv2d";
    conv_geom g;
    int64_t out_shape[4];
    if (check_conv(fname, transposed, x, w, bias, o, &g, out_shape, err)) return NULL;
    cn_tensor *xc = NULL, *wc = NULL, *bc = NULL, *r = NULL;
    CN_WITHOUT_GRAD({
        xc = cn_contiguous((cn_tensor *)x, err);
        wc = xc ? cn_contiguous((cn_tensor *)w, err) : NULL;
        bc = wc && bias ? cn_contiguous((cn_tensor *)bias, err) : NULL;
        if (wc && (!bias || bc))
            r = conv_forward(transposed, xc, wc, bc, &g, out_shape, o->activation, err);
    });
    cn_node *node;
    cn_tensor *ins[3] = {(cn_tensor *)x, (cn_tensor *)w, (cn_tensor *)bias};
    r = cn_record_result(r, transposed ? &op_conv_transpose2d : &op_conv2d, bias ? 3 : 2, ins,
                         &node, err);
    if (node) {
        *CN_NODE_ARGS(node, struct conv_args) = (struct conv_args){.geom = g, .opts = *o};
        cn_node_save(node, CONV_SAVED_X, xc);
        cn_node_save(node, CONV_SAVED_W, wc);
        if (o->activation != CN_ACT_NONE) cn_node_save(node, CONV_SAVED_OUT, r);
    }
    cn_release(xc), cn_release(wc), cn_release(bc);
    return r;
}

/* An unbatched [C, H, W] input goes through as [1, C, H, W] (differentiable views). */
static cn_tensor *conv_public(bool transposed, const cn_tensor *x, const cn_tensor *w,
                              const cn_tensor *bias, const cn_conv2d_opts *o, cn_error *err) {
    const char *fname = transposed ? "conv_transpose2d" : "conv2d";
    if (!x || !w) {
        cn_error_set(err, "%s: %s is NULL", fname, x ? "weight" : "input");
        return NULL;
    }
    if (!o) o = &default_opts;
    if (x->ndim != 3) return conv_op(transposed, x, w, bias, o, err);
    cn_tensor *x4 = cn_unsqueeze((cn_tensor *)x, 0, err);
    cn_tensor *r4 = x4 ? conv_op(transposed, x4, w, bias, o, err) : NULL;
    cn_tensor *r = r4 ? cn_squeeze(r4, 0, err) : NULL;
    cn_release(x4), cn_release(r4);
    return r;
}

cn_tensor *cn_conv2d(const cn_tensor *x, const cn_tensor *w, const cn_tensor *bias,
                     const cn_conv2d_opts *o, cn_error *err) {
    return conv_public(false, x, w, bias, o, err);
}

cn_tensor *cn_conv_transpose2d(const cn_tensor *x, const cn_tensor *w, const cn_tensor *bias,
                               const cn_conv2d_opts *o, cn_error *err) {
    return conv_public(true, x, w, bias, o, err);
}
