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
 * One driver, run_conv, does any subset of conv / weight / adjoint for a chunk of images at a
 * time, so each backward shares one im2col (or one gather of Y) between dw and dx. Images are
 * taken alone when P is large (one GEMM per image, no copies, Y read and written in place); when
 * P is small they are batched in chunks of about CHUNK_COLS columns — the columns of the chunk's
 * images side by side, Y gathered into / scattered out of a [O, nb·P] buffer — so the GEMMs stay
 * wide enough to run near peak. A 1×1, stride 1, unpadded kernel skips im2col: col(X) is X.
 * Buffers are allocated once per call and reused for every chunk. im2col, col2im, gather and
 * scatter run in OpenMP loops over planes; GEMMs (threaded by OpenBLAS) are called between
 * those loops, never inside one.
 */
#include <limits.h>
#include <string.h>

#include "alloc.h"
#include "autograd.h"
#include "ops.h"
#include "ops_conv.h"

#define CHUNK_COLS 1024          /* images are chunked until a GEMM has about this many columns */
#define CHUNK_MAX_FLOATS (1 << 24) /* cap on the im2col buffer of a chunk (64 MB) */
#define PARALLEL_MIN 32768       /* element operations below which a loop stays serial */

typedef struct conv_geom {
    int64_t N;
    int C, H, W;    /* image side */
    int O, Ho, Wo;  /* columns side */
    int kh, kw, sh, sw, ph, pw, dh, dw, groups;
} conv_geom;

/* What run_conv computes; NULL pointers switch parts off. */
typedef struct conv_job {
    const float *x_in;   /* image side read through im2col (conv, weight) */
    float *y_out;        /* conv: Y = W @ col(X) */
    const float *y_bias; /* [O] added to y_out, or NULL */
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

/* One image plane [H, W] -> its kH·kW rows of col (row stride ld). */
static void im2col_plane(const conv_geom *g, const float *img, float *col, size_t ld) {
    int Wo = g->Wo;
    for (int i = 0; i < g->kh; i++)
        for (int j = 0; j < g->kw; j++, col += ld) {
            int64_t xoff = (int64_t)j * g->dw - g->pw;
            int lo, hi;
            valid_range(xoff, g->sw, g->W, Wo, &lo, &hi);
            for (int oy = 0; oy < g->Ho; oy++) {
                float *dst = col + (size_t)oy * Wo;
                int64_t iy = (int64_t)oy * g->sh - g->ph + (int64_t)i * g->dh;
                if (iy < 0 || iy >= g->H || lo == hi) {
                    memset(dst, 0, (size_t)Wo * sizeof *dst);
                    continue;
                }
                const float *row = img + (size_t)iy * (size_t)g->W;
                for (int ox = 0; ox < lo; ox++) dst[ox] = 0.0f;
                if (g->sw == 1) {
                    memcpy(dst + lo, row + (xoff + lo), (size_t)(hi - lo) * sizeof *dst);
                } else {
                    for (int ox = lo; ox < hi; ox++) dst[ox] = row[(int64_t)ox * g->sw + xoff];
                }
                for (int ox = hi; ox < Wo; ox++) dst[ox] = 0.0f;
            }
        }
}

/* The adjoint: adds the kH·kW rows of col (row stride ld) into one image plane [H, W]. */
static void col2im_plane(const conv_geom *g, const float *col, size_t ld, float *img) {
    int Wo = g->Wo;
    for (int i = 0; i < g->kh; i++)
        for (int j = 0; j < g->kw; j++, col += ld) {
            int64_t xoff = (int64_t)j * g->dw - g->pw;
            int lo, hi;
            valid_range(xoff, g->sw, g->W, Wo, &lo, &hi);
            if (lo == hi) continue;
            for (int oy = 0; oy < g->Ho; oy++) {
                int64_t iy = (int64_t)oy * g->sh - g->ph + (int64_t)i * g->dh;
                if (iy < 0 || iy >= g->H) continue;
                float *row = img + (size_t)iy * (size_t)g->W;
                const float *src = col + (size_t)oy * Wo;
                if (g->sw == 1) {
                    float *dst = row + (xoff + lo);
                    for (int k = 0; k < hi - lo; k++) dst[k] += src[lo + k];
                } else {
                    for (int ox = lo; ox < hi; ox++) row[(int64_t)ox * g->sw + xoff] += src[ox];
                }
            }
        }
}

/* col [C·kH·kW, nb·P] (row stride ld) from the nb images at x; image b fills columns b·P.. */
static void im2col_chunk(const conv_geom *g, const float *x, int nb, float *col, size_t ld) {
    size_t kk = (size_t)g->kh * g->kw, P = plane_p(g), HW = (size_t)g->H * g->W;
    int planes = nb * g->C;
    #pragma omp parallel for schedule(static) if ((double)planes * kk * P > PARALLEL_MIN)
    for (int q = 0; q < planes; q++) {
        int b = q / g->C, c = q % g->C;
        im2col_plane(g, x + (size_t)q * HW, col + (size_t)c * kk * ld + (size_t)b * P, ld);
    }
}

/* The nb images at x = (bias, or 0) + col2im(col). */
static void col2im_chunk(const conv_geom *g, const float *col, size_t ld, int nb, const float *bias,
                         float *x) {
    size_t kk = (size_t)g->kh * g->kw, P = plane_p(g), HW = (size_t)g->H * g->W;
    int planes = nb * g->C;
    #pragma omp parallel for schedule(static) if ((double)planes * (kk * P + HW) > PARALLEL_MIN)
    for (int q = 0; q < planes; q++) {
        int b = q / g->C, c = q % g->C;
        float *img = x + (size_t)q * HW;
        float init = bias ? bias[c] : 0.0f;
        for (size_t k = 0; k < HW; k++) img[k] = init;
        col2im_plane(g, col + (size_t)c * kk * ld + (size_t)b * P, ld, img);
    }
}

/* ---- columns side: gather / scatter / bias ------------------------------------------------- */

/* buf[o, b·P + p] = y[b, o, p] for the nb images at y ([nb, O, P] -> [O, nb·P]). */
static void gather_chunk(const float *y, int nb, int O, size_t P, float *buf) {
    int rows = nb * O;
    #pragma omp parallel for schedule(static) if ((double)rows * P > PARALLEL_MIN)
    for (int r = 0; r < rows; r++) {
        int b = r / O, o = r % O;
        memcpy(buf + (size_t)o * nb * P + (size_t)b * P, y + (size_t)r * P, P * sizeof *buf);
    }
}

/* y[b, o, p] = buf[o, b·P + p] + bias[o] (bias may be NULL). With nb == 1, buf may be y itself:
 * the bias is then added in place. */
static void scatter_chunk(const float *buf, int nb, int O, size_t P, const float *bias, float *y) {
    int rows = nb * O;
    #pragma omp parallel for schedule(static) if ((double)rows * P > PARALLEL_MIN)
    for (int r = 0; r < rows; r++) {
        int b = r / O, o = r % O;
        const float *src = buf + (size_t)o * nb * P + (size_t)b * P;
        float *dst = y + (size_t)r * P, bv = bias ? bias[o] : 0.0f;
        for (size_t p = 0; p < P; p++) dst[p] = src[p] + bv;
    }
}

/* out[c] = sum over n, p of t[n, c, p] (t [N, Ch, P]), accumulated in double: the bias gradient. */
static void sum_channels(const float *t, int64_t N, int Ch, size_t P, float *out) {
    #pragma omp parallel for schedule(static) if ((double)N * Ch * P > PARALLEL_MIN)
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

/* Images per chunk: 1 when one image already gives a wide GEMM, else enough for CHUNK_COLS
 * columns, within the buffer cap. */
static int chunk_images(const conv_geom *g) {
    size_t P = plane_p(g), rows = (size_t)g->C * g->kh * g->kw;
    if (P >= CHUNK_COLS || g->N <= 1) return 1;
    size_t nb = P ? (CHUNK_COLS + P - 1) / P : (size_t)g->N;
    if ((int64_t)nb > g->N) nb = (size_t)g->N;
    while (nb > 1 && (rows > (size_t)g->O ? rows : (size_t)g->O) * nb * P > CHUNK_MAX_FLOATS) nb--;
    return (int)nb;
}

static int run_conv(const conv_geom *g, const conv_job *job, const char *fname, cn_error *err) {
    int G = g->groups, Og = g->O / G, Cg = g->C / G;
    int K = Cg * g->kh * g->kw;
    size_t P = plane_p(g), HW = (size_t)g->H * g->W;
    bool want_col = job->y_out || job->dw, want_y = job->x_out || job->dw;
    bool pointwise = is_pointwise(g);
    int nb_max = pointwise ? 1 : chunk_images(g);
    bool direct = pointwise && nb_max == 1; /* col(X) and the adjoint's target are X itself */

    if (job->dw) {
        size_t n = (size_t)g->O * K;
        if (n) memset(job->dw, 0, n * sizeof *job->dw);
    }
    size_t col_n = direct ? 0 : (size_t)g->C * g->kh * g->kw * nb_max * P;
    size_t ybuf_n = nb_max > 1 ? (size_t)g->O * nb_max * P : 0;
    float *col_buf = col_n ? cn_alloc_floats(col_n) : NULL;
    float *ybuf = ybuf_n ? cn_alloc_floats(ybuf_n) : NULL;
    if ((col_n && !col_buf) || (ybuf_n && !ybuf)) {
        cn_free_floats(col_buf, col_n);
        cn_free_floats(ybuf, ybuf_n);
        cn_error_set(err, "%s: out of memory for a %zu-float im2col buffer", fname, col_n + ybuf_n);
        return -1;
    }

    for (int64_t n0 = 0; n0 < g->N; n0 += nb_max) {
        int nb = (int)(g->N - n0 < nb_max ? g->N - n0 : nb_max);
        int cols = nb * (int)P;
        const float *col = NULL;
        int ldc = cols;
        if (want_col) { /* col(X) of this chunk */
            if (direct) {
                col = job->x_in + (size_t)n0 * g->C * HW;
                ldc = (int)P;
            } else {
                im2col_chunk(g, job->x_in + (size_t)n0 * g->C * HW, nb, col_buf, (size_t)cols);
                col = col_buf;
            }
        }
        if (job->y_out) { /* Y_g = W_g @ col_g */
            float *yo = nb == 1 ? job->y_out + (size_t)n0 * g->O * P : ybuf;
            for (int gi = 0; gi < G; gi++)
                cn_gemm(false, false, Og, cols, K, 1.0f, job->w + (size_t)gi * Og * K, K,
                        col + (size_t)gi * K * ldc, ldc, 0.0f, yo + (size_t)gi * Og * cols, cols);
            if (nb > 1 || job->y_bias)
                scatter_chunk(yo, nb, g->O, P, job->y_bias, job->y_out + (size_t)n0 * g->O * P);
        }
        if (!want_y) continue;
        const float *ym = job->y_in + (size_t)n0 * g->O * P; /* Y of the chunk as [O, cols] */
        if (nb > 1) {
            gather_chunk(ym, nb, g->O, P, ybuf);
            ym = ybuf;
        }
        if (job->dw) /* dW_g += Y_g @ col_g^T */
            for (int gi = 0; gi < G; gi++)
                cn_gemm(false, true, Og, K, cols, 1.0f, ym + (size_t)gi * Og * cols, cols,
                        col + (size_t)gi * K * ldc, ldc, 1.0f, job->dw + (size_t)gi * Og * K, K);
        if (job->x_out) { /* X = col2im(W_g^T @ Y_g) */
            float *xo = job->x_out + (size_t)n0 * g->C * HW;
            if (direct) {
                if (job->x_bias)
                    for (int c = 0; c < g->C; c++)
                        for (size_t k = 0; k < HW; k++) xo[(size_t)c * HW + k] = job->x_bias[c];
                for (int gi = 0; gi < G; gi++)
                    cn_gemm(true, false, Cg, cols, Og, 1.0f, job->w + (size_t)gi * Og * K, K,
                            ym + (size_t)gi * Og * cols, cols, job->x_bias ? 1.0f : 0.0f,
                            xo + (size_t)gi * Cg * HW, (int)HW);
            } else {
                for (int gi = 0; gi < G; gi++)
                    cn_gemm(true, false, K, cols, Og, 1.0f, job->w + (size_t)gi * Og * K, K,
                            ym + (size_t)gi * Og * cols, cols, 0.0f, col_buf + (size_t)gi * K * cols,
                            cols);
                col2im_chunk(g, col_buf, (size_t)cols, nb, job->x_bias, xo);
            }
        }
    }
    cn_free_floats(col_buf, col_n);
    cn_free_floats(ybuf, ybuf_n);
    return 0;
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

/* The geometry from saved shapes: img [N, C, H, W], cols [N, O, Ho, Wo], w's kernel, and the
 * node's ints (stride, padding, dilation, groups). */
static conv_geom node_geom(const int64_t *img, const int64_t *cols, const cn_tensor *w,
                           const int64_t *p) {
    return (conv_geom){.N = img[0], .C = (int)img[1], .H = (int)img[2], .W = (int)img[3],
                       .O = (int)cols[1], .Ho = (int)cols[2], .Wo = (int)cols[3],
                       .kh = (int)w->shape[2], .kw = (int)w->shape[3], .sh = (int)p[0],
                       .sw = (int)p[1], .ph = (int)p[2], .pw = (int)p[3], .dh = (int)p[4],
                       .dw = (int)p[5], .groups = (int)p[6]};
}

/* ---- conv2d / conv_transpose2d: forward ----------------------------------------------------- */

/* conv2d:            out[n, o] = bias[o] + sum_{c in group(o), i, j} w[o, c, i, j]
 *                                 · x[n, c, oy·sH - pH + i·dH, ox·sW - pW + j·dW]   (conv)
 * conv_transpose2d:  out = bias + the adjoint of that map applied to x              (adjoint)
 * xc, wc, bc contiguous. */
static cn_tensor *conv_forward(bool transposed, const cn_tensor *xc, const cn_tensor *wc,
                               const cn_tensor *bc, const conv_geom *g, const int64_t *out_shape,
                               cn_error *err) {
    cn_tensor *out = cn_empty(4, out_shape, err);
    if (!out) return NULL;
    conv_job job = {.w = cn_data(wc)};
    if (!transposed) {
        job.x_in = cn_data(xc);
        job.y_out = cn_data(out);
        job.y_bias = bc ? cn_data(bc) : NULL;
    } else {
        job.y_in = cn_data(xc);
        job.x_out = cn_data(out);
        job.x_bias = bc ? cn_data(bc) : NULL;
    }
    if (run_conv(g, &job, transposed ? "conv_transpose2d" : "conv2d", err)) {
        cn_release(out);
        return NULL;
    }
    return out;
}

/* ---- autograd ------------------------------------------------------------------------------ */
/* saved[0] = x, saved[1] = w (both contiguous); ints = stride[2], padding[2], dilation[2],
 * groups; inputs = x, w [, bias]. The backward of each op runs the other direction:
 *   conv2d:            dx = adjoint(g), dw = weight(Y = g, X = x), db = sum of g over n, h, w
 *   conv_transpose2d:  dx = conv(X = g), dw = weight(Y = x, X = g), db = the same sum */

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

static int conv_backward(cn_node *n, const cn_tensor *gout, cn_tensor **gi, bool transposed,
                         cn_error *err) {
    const cn_tensor *x = n->saved[0], *w = n->saved[1];
    cn_tensor *gc = cn_contiguous((cn_tensor *)gout, err);
    if (!gc || alloc_grads(n, x, w, gi, err)) {
        cn_release(gc);
        return -1;
    }
    const char *fname = transposed ? "conv_transpose2d backward" : "conv2d backward";
    conv_job job = {.w = cn_data(w), .dw = gi[1] ? cn_data(gi[1]) : NULL};
    conv_geom g;
    if (!transposed) {
        g = node_geom(x->shape, gc->shape, w, n->ints);
        job.y_in = cn_data(gc);
        job.x_out = gi[0] ? cn_data(gi[0]) : NULL;
        job.x_in = gi[1] ? cn_data(x) : NULL;
    } else {
        g = node_geom(gc->shape, x->shape, w, n->ints);
        job.x_in = cn_data(gc);
        job.y_out = gi[0] ? cn_data(gi[0]) : NULL;
        job.y_in = gi[1] ? cn_data(x) : NULL;
    }
    int status = 0;
    if (job.x_out || job.y_out || job.dw) status = run_conv(&g, &job, fname, err);
    if (!status && n->n_inputs > 2 && gi[2]) { /* gi has n_inputs entries */
        size_t P = (size_t)gc->shape[2] * (size_t)gc->shape[3];
        sum_channels(cn_data(gc), gc->shape[0], (int)gc->shape[1], P, cn_data(gi[2]));
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

static const cn_op_def op_conv2d = {"conv2d", conv2d_backward};
static const cn_op_def op_conv_transpose2d = {"conv_transpose2d", conv_transpose2d_backward};

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
        if (wc && (!bias || bc)) r = conv_forward(transposed, xc, wc, bc, &g, out_shape, err);
    });
    cn_node *node;
    cn_tensor *ins[3] = {(cn_tensor *)x, (cn_tensor *)w, (cn_tensor *)bias};
    r = cn_record_result(r, transposed ? &op_conv_transpose2d : &op_conv2d, bias ? 3 : 2, ins,
                         &node, err);
    if (node) {
        cn_node_save(node, 0, xc);
        cn_node_save(node, 1, wc);
        const int p[7] = {o->stride[0], o->stride[1], o->padding[0], o->padding[1],
                          o->dilation[0], o->dilation[1], o->groups};
        for (int i = 0; i < 7; i++) node->ints[i] = p[i];
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
