/* conv_direct.c — direct convolution of one image (see conv_direct.h).
 *
 *   y[o, oy, ox] = bias[o] + sum_{c, i, j} w[o, c, i, j] · xp[c, (oy + i)·Wp + ox + j]
 *
 * with xp the image zero-padded by (pH, pW) and flattened with row width Wp = W + pW (+ e): a row's
 * right padding is the next row's left padding, since a tap that runs past the right edge lands
 * there (e = max(0, pW - kW + 1) extra zero columns only where the output is wider than that). The
 * output is computed on the same flat grid, q = oy·Wp + ox for ox < Wp: the last Wp - Wo columns
 * of each row are wasted work (1 of W + 1 for 3×3 "same"), thrown away when the grid is copied out. In exchange
 * every tap is one constant offset, so a block of OB output channels × PB vectors of 16 outputs
 * is OB·PB accumulators fed, per input channel and tap, by PB loads and OB broadcast weights:
 * 16 FMAs for 8 loads at OB = PB = 4, which keeps the FMA units busy from L1/L2.
 * Weights are packed as [O/OB][C][kH·kW][OB] (O padded with zero rows) so the OB broadcasts of a
 * tap are adjacent.
 */
#include "conv_direct.h"

#include <omp.h>
#include <string.h>

#include "ops_conv.h"
#include "vmath.h"

#define VL 16 /* floats per vector */
#define OB 4  /* output channels per block */
#define PB 4  /* vectors per block */
#define QB (VL * PB)

typedef float vf __attribute__((vector_size(64)));
typedef float vfu __attribute__((vector_size(64), aligned(4))); /* unaligned loads */

static int out_h(const cn_direct_geom *g) { return (g->H + 2 * g->ph - g->kh) / g->sh + 1; }
static int out_w(const cn_direct_geom *g) { return (g->W + 2 * g->pw - g->kw) / g->sw + 1; }
static int pad_w(const cn_direct_geom *g) {
    int extra = g->pw - g->kw + 1;
    return g->W + g->pw + (extra > 0 ? extra : 0);
}
static int blocks_o(const cn_direct_geom *g) { return (g->O + OB - 1) / OB; }

/* Outputs on the flat grid, rounded up to whole blocks. */
static size_t grid_len(const cn_direct_geom *g) {
    size_t n = (size_t)out_h(g) * pad_w(g);
    return (n + QB - 1) / QB * QB;
}

/* Floats of one padded input plane: the padded image, and room for the last block's reads (the flat
 * grid's, or with a stride the small-plane kernel's: its last row's last segment of up to SPB pixels
 * past the row end, sW apart). */
static size_t plane_len(const cn_direct_geom *g) {
    size_t Wp = (size_t)pad_w(g), img = (size_t)(g->H + 2 * g->ph) * Wp;
    size_t reach = grid_len(g) + (size_t)(g->kh - 1) * Wp + (size_t)g->kw + 8; /* + SPB: see small_block */
    size_t strided = ((size_t)(out_h(g) - 1) * g->sh + g->kh) * Wp + ((size_t)out_w(g) + 8) * g->sw + g->kw;
    size_t n = img > reach ? img : reach;
    if (strided > n) n = strided;
    return (n + VL - 1) / VL * VL;
}

double cn_direct_grid_use(const cn_direct_geom *g) {
    return (double)out_h(g) * out_w(g) / (double)grid_len(g);
}

size_t cn_direct_weight_floats(const cn_direct_geom *g) {
    return (size_t)blocks_o(g) * OB * g->C * g->kh * g->kw;
}

size_t cn_direct_scratch_floats(const cn_direct_geom *g) {
    return (size_t)g->C * plane_len(g) + (size_t)blocks_o(g) * OB * grid_len(g);
}

void cn_direct_pack_weight(const cn_direct_geom *g, const float *w, float *wp) {
    int T = g->kh * g->kw;
    for (int b = 0; b < blocks_o(g); b++)
        for (int c = 0; c < g->C; c++)
            for (int t = 0; t < T; t++)
                for (int k = 0; k < OB; k++) {
                    int o = b * OB + k;
                    *wp++ = o < g->O ? w[((size_t)o * g->C + c) * T + t] : 0.0f;
                }
}

/* Output channels [b·OB, b·OB + OB) over the whole grid, into grid rows of length L. */
static void block_rows(const cn_direct_geom *g, const float *xp, size_t Lp, const float *wp, int b,
                       const int *toff, float *grid, size_t L) {
    int T = g->kh * g->kw, C = g->C;
    const float *wb = wp + (size_t)b * C * T * OB;
    float *out = grid + (size_t)b * OB * L;
    for (size_t q0 = 0; q0 < L; q0 += QB) {
        vf acc[OB][PB];
        #pragma GCC unroll 4
        for (int k = 0; k < OB; k++)
            #pragma GCC unroll 4
            for (int p = 0; p < PB; p++) acc[k][p] = (vf){0};
        for (int c = 0; c < C; c++) {
            const float *xc = xp + (size_t)c * Lp + q0;
            const float *wc = wb + (size_t)c * T * OB;
            for (int t = 0; t < T; t++) {
                const float *src = xc + toff[t];
                vf v[PB];
                #pragma GCC unroll 4
                for (int p = 0; p < PB; p++) v[p] = *(const vfu *)(src + p * VL);
                #pragma GCC unroll 4
                for (int k = 0; k < OB; k++) {
                    vf wk = (vf){0} + wc[t * OB + k];
                    #pragma GCC unroll 4
                    for (int p = 0; p < PB; p++) acc[k][p] += v[p] * wk;
                }
            }
        }
        #pragma GCC unroll 4
        for (int k = 0; k < OB; k++)
            #pragma GCC unroll 4
            for (int p = 0; p < PB; p++) *(vf *)(out + (size_t)k * L + q0 + p * VL) = acc[k][p];
    }
}

/* offs[i·kW + j] = i·Wp + j: where tap (i, j) reads in the flat padded plane, from an output's
 * position on the grid. */
static void tap_offsets(const cn_direct_geom *g, int *offs) {
    int Wp = pad_w(g);
    for (int i = 0; i < g->kh; i++)
        for (int j = 0; j < g->kw; j++) offs[i * g->kw + j] = i * Wp + j;
}

/* Channel c of x [C, H, W], zero-padded, flat with row width Wp, into dst (Lp floats). */
static void pad_plane(const cn_direct_geom *g, const float *x, int c, float *dst, size_t Lp) {
    int Wp = pad_w(g);
    const float *src = x + (size_t)c * g->H * g->W;
    memset(dst, 0, Lp * sizeof *dst);
    for (int r = 0; r < g->H; r++)
        memcpy(dst + (size_t)(r + g->ph) * Wp + g->pw, src + (size_t)r * g->W, (size_t)g->W * sizeof *dst);
}

/* ---- the weight gradient -----------------------------------------------------------------------
 *
 *   dw[o, c, i, j] += sum_{oy, ox} gy[o, oy, ox] · xp[c, (oy + i)·Wp + ox + j]
 *
 * gy laid on the flat grid (zeros in the wasted columns and past the end), so each (o, c, tap) is a
 * dot product of a grid row with the padded plane shifted by the tap's offset. Blocks of WOB output
 * channels × WTB taps are WOB·WTB vector accumulators, fed per vector of 16 outputs by WOB + WTB
 * loads, over a chunk of images; one horizontal sum per (o, c, tap) and chunk at the end. */
#define WOB 8
#define WTB 3

size_t cn_direct_weight_scratch_floats(const cn_direct_geom *g) {
    return (size_t)g->C * plane_len(g) + (size_t)g->O * grid_len(g);
}

typedef float vf8 __attribute__((vector_size(32)));
typedef float vf4 __attribute__((vector_size(16)));

/* The sum of a vector's lanes by halving (4 vector adds instead of 15 scalar ones). */
static inline float hsum(vf v) {
    vf8 a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
            __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
    vf4 b = __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
    return (b[0] + b[2]) + (b[1] + b[3]);
}

/* One chunk of nb images laid out as [image][channel][plane] (xp, planes of Lp) and
 * [image][output channel][grid] (gyp, grids of L). */
typedef struct weight_chunk {
    const float *xp, *gyp;
    size_t Lp, L, x_image, g_image; /* plane and grid lengths, floats per image on each side */
    int nb;
} weight_chunk;

/* WTB taps from t0 of output channels [o0, o0 + no) against input channel c, over the chunk's
 * images: 24 accumulators in registers (no dynamic index into them), 11 loads per 24 FMAs. */
static void weight_block_full(const weight_chunk *ch, const int *offs, int o0, int no, int c, int t0,
                              float *dw, size_t ostride) {
    vf acc[WOB][WTB];
    #pragma GCC unroll 8
    for (int k = 0; k < WOB; k++)
        #pragma GCC unroll 3
        for (int t = 0; t < WTB; t++) acc[k][t] = (vf){0};
    int off[WTB];
    for (int t = 0; t < WTB; t++) off[t] = offs[t0 + t];
    for (int b = 0; b < ch->nb; b++) {
        const float *gk[WOB];
        for (int k = 0; k < WOB; k++) gk[k] = ch->gyp + b * ch->g_image + (size_t)(o0 + (k < no ? k : 0)) * ch->L;
        const float *xc = ch->xp + b * ch->x_image + (size_t)c * ch->Lp;
        for (size_t q = 0; q < ch->L; q += VL) {
            vf v[WTB];
            #pragma GCC unroll 3
            for (int t = 0; t < WTB; t++) v[t] = *(const vfu *)(xc + q + off[t]);
            #pragma GCC unroll 8
            for (int k = 0; k < WOB; k++) {
                vf a = *(const vf *)(gk[k] + q);
                #pragma GCC unroll 3
                for (int t = 0; t < WTB; t++) acc[k][t] += a * v[t];
            }
        }
    }
    for (int k = 0; k < no; k++)
        for (int t = 0; t < WTB; t++) dw[(size_t)(o0 + k) * ostride + t0 + t] += hsum(acc[k][t]);
}

/* The same for fewer taps (the last group of a kernel whose taps are not a multiple of WTB), one
 * tap and output channel at a time. */
static void weight_block_tail(const weight_chunk *ch, const int *offs, int o0, int no, int c, int t0, int nt,
                              float *dw, size_t ostride) {
    for (int t = t0; t < t0 + nt; t++)
        for (int k = 0; k < no; k++) {
            vf acc = (vf){0};
            for (int b = 0; b < ch->nb; b++) {
                const float *gb = ch->gyp + b * ch->g_image + (size_t)(o0 + k) * ch->L;
                const float *xc = ch->xp + b * ch->x_image + (size_t)c * ch->Lp + offs[t];
                for (size_t q = 0; q < ch->L; q += VL) acc += *(const vf *)(gb + q) * *(const vfu *)(xc + q);
            }
            dw[(size_t)(o0 + k) * ostride + t] += hsum(acc);
        }
}

void cn_direct_conv_weight_images(const cn_direct_geom *g, const float *x, const float *gy, int nb, float *dw,
                                  float *scratch) {
    int Wp = pad_w(g), Ho = out_h(g), Wo = out_w(g), T = g->kh * g->kw;
    size_t Lp = plane_len(g), L = grid_len(g);
    weight_chunk ch = {.Lp = Lp, .L = L, .x_image = (size_t)g->C * Lp, .g_image = (size_t)g->O * L, .nb = nb};
    float *xp = scratch, *gyp = scratch + (size_t)nb * ch.x_image;
    ch.xp = xp, ch.gyp = gyp;
    int offs[CN_DIRECT_MAX_TAPS];
    tap_offsets(g, offs);
    for (int b = 0; b < nb; b++) {
        const float *xb = x + (size_t)b * g->C * g->H * g->W, *gb = gy + (size_t)b * g->O * Ho * Wo;
        for (int c = 0; c < g->C; c++) pad_plane(g, xb, c, xp + b * ch.x_image + (size_t)c * Lp, Lp);
        for (int o = 0; o < g->O; o++) { /* gy on the grid, zeros in the wasted columns */
            float *dst = gyp + b * ch.g_image + (size_t)o * L;
            const float *src = gb + (size_t)o * Ho * Wo;
            memset(dst, 0, L * sizeof *dst);
            for (int r = 0; r < Ho; r++) memcpy(dst + (size_t)r * Wp, src + (size_t)r * Wo, (size_t)Wo * sizeof *dst);
        }
    }
    size_t ostride = (size_t)g->C * T; /* dw [O, C, T] */
    for (int o0 = 0; o0 < g->O; o0 += WOB) {
        int no = g->O - o0 < WOB ? g->O - o0 : WOB;
        for (int c = 0; c < g->C; c++) {
            float *dwc = dw + (size_t)c * T;
            int t0 = 0;
            for (; t0 + WTB <= T; t0 += WTB) weight_block_full(&ch, offs, o0, no, c, t0, dwc, ostride);
            if (t0 < T) weight_block_tail(&ch, offs, o0, no, c, t0, T - t0, dwc, ostride);
        }
    }
}

/* ---- small images: vectors across output channels ---------------------------------------------
 *
 * For small planes (7², 14²) a vector of 16 outputs along a row wastes lanes on the wrapped
 * columns and the rounding of the grid; here a vector holds 16 output channels of one pixel
 * instead (the layout oneDNN uses), and a block is SPB pixels of one output row × SOB vectors of
 * channels (the first block 3 when the vectors are odd in number: with 2 + 2, 48 channels computed
 * 64 and ran at 58 GFLOP/s at 14², against 92 as 3): per input channel and tap, SOB weight loads and
 * SPB broadcast inputs feed SPB·SOB FMAs.
 * Rows are cut in segments of SPB pixels (the last one padded by pixels past the row, computed
 * from the padded plane and dropped). Results go to a [pixel][channel] scratch, transposed into
 * y with the bias and activation at the end. Weights are packed [O/16][C][kH·kW][16]. */
#define SPB 8
#define SOB 2
#define WTB9 9 /* taps per group in the weight gradient */
#define SWB 2  /* vectors of 16 output channels per weight-gradient block */

static int blocks16(const cn_direct_geom *g) { return (g->O + VL - 1) / VL; }

size_t cn_direct_small_weight_floats(const cn_direct_geom *g) {
    return (size_t)blocks16(g) * VL * g->C * g->kh * g->kw;
}

size_t cn_direct_small_scratch_floats(const cn_direct_geom *g) {
    size_t segs = (size_t)(out_w(g) + SPB - 1) / SPB;
    return (size_t)g->C * plane_len(g) + (size_t)out_h(g) * (segs * SPB + SPB) * blocks16(g) * VL;
}

void cn_direct_small_pack_weight(const cn_direct_geom *g, const float *w, float *wp) {
    int T = g->kh * g->kw;
    for (int b = 0; b < blocks16(g); b++)
        for (int c = 0; c < g->C; c++)
            for (int t = 0; t < T; t++)
                for (int k = 0; k < VL; k++) {
                    int o = b * VL + k;
                    *wp++ = o < g->O ? w[((size_t)o * g->C + c) * T + t] : 0.0f;
                }
}

/* NP output pixels of one row, the first reading the flat plane at q0 and each next SW further,
 * channel vectors [b0, b0 + nob) (nob <= NOB), into out[pixel][channel] rows of ldo floats. One
 * copy per segment length NP (7 divides 28, 14 and 7; 8 divides 64, 32, 16 and 8), block width NOB
 * (2, or 3 for the first block when the vectors are odd in number: 48 channels are one block of 3,
 * not 2 + 2 with a quarter recomputed) and stride SW (1, or 2 for downsampling), so that the
 * accumulators stay in registers (8 × 3 + 3 + 1 of AVX-512's 32). */
#define SMALL_BLOCK(NP, NOB, SW)                                                                                \
    static void small_block##NP##_##NOB##_##SW(const cn_direct_geom *g, const float *xp, size_t Lp,            \
                                               const float *wp,                                                \
                                        const int *offs, size_t q0, int b0, int nob, float *out, size_t ldo) { \
        int T = g->kh * g->kw, C = g->C;                                                                       \
        vf acc[NP][NOB];                                                                                       \
        _Pragma("GCC unroll 8") for (int j = 0; j < NP; j++)                                                   \
            _Pragma("GCC unroll 4") for (int k = 0; k < NOB; k++) acc[j][k] = (vf){0};                         \
        const float *wk[NOB];                                                                                  \
        for (int k = 0; k < NOB; k++) wk[k] = wp + (size_t)(b0 + (k < nob ? k : 0)) * C * T * VL;               \
        for (int c = 0; c < C; c++) {                                                                          \
            const float *xc = xp + (size_t)c * Lp + q0;                                                        \
            for (int t = 0; t < T; t++) {                                                                      \
                const float *src = xc + offs[t];                                                               \
                vf wv[NOB];                                                                                    \
                _Pragma("GCC unroll 4") for (int k = 0; k < NOB; k++)                                          \
                    wv[k] = *(const vf *)(wk[k] + ((size_t)c * T + t) * VL);                                   \
                _Pragma("GCC unroll 8") for (int j = 0; j < NP; j++) {                                         \
                    vf xv = (vf){0} + src[j * SW];                                                             \
                    _Pragma("GCC unroll 4") for (int k = 0; k < NOB; k++) acc[j][k] += xv * wv[k];             \
                }                                                                                              \
            }                                                                                                  \
        }                                                                                                      \
        for (int j = 0; j < NP; j++)                                                                           \
            for (int k = 0; k < nob; k++) *(vfu *)(out + (size_t)j * ldo + (size_t)(b0 + k) * VL) = acc[j][k]; \
    }
SMALL_BLOCK(7, 2, 1)
SMALL_BLOCK(8, 2, 1)
SMALL_BLOCK(7, 3, 1)
SMALL_BLOCK(8, 3, 1)
SMALL_BLOCK(7, 2, 2)
SMALL_BLOCK(8, 2, 2)
SMALL_BLOCK(7, 3, 2)
SMALL_BLOCK(8, 3, 2)
SMALL_BLOCK(7, 1, 2)
SMALL_BLOCK(8, 1, 2)

typedef void (*small_block_fn)(const cn_direct_geom *, const float *, size_t, const float *, const int *, size_t,
                               int, int, float *, size_t);

/* The copy of small_block for a segment length, block width and stride; width 1 (one vector of
 * channels in all) only with stride 2: a downsampling conv to 16 channels, which the unit-stride
 * route never sends here. */
static small_block_fn small_block_for(int np, int width, int sw) {
    static const small_block_fn fns[2][2][2] = {
        {{small_block7_2_1, small_block8_2_1}, {small_block7_3_1, small_block8_3_1}},
        {{small_block7_2_2, small_block8_2_2}, {small_block7_3_2, small_block8_3_2}},
    };
    if (width == 1) return np == 7 ? small_block7_1_2 : small_block8_1_2;
    return fns[sw == 2][width - 2][np != 7];
}

/* The segment length for rows of Wo outputs: 7 where it divides Wo, else 8. */
static int seg_len(int Wo) { return Wo % 7 == 0 ? 7 : 8; }

/* nb channel vectors in blocks of 2 (w), the first of 3 when nb is odd (and > 1): the number of
 * blocks, and the first one's width. */
static int small_groups(int nb, int w) { return nb > w ? nb / w : 1; }
static int small_group_first(int nb, int w) { return nb > w && nb % w ? w + 1 : w; }

void cn_direct_small_conv_image(const cn_direct_geom *g, const float *x, const float *wp, const float *bias,
                                int act, float *y, float *scratch, bool par) {
    int Wp = pad_w(g), Ho = out_h(g), Wo = out_w(g), nb = blocks16(g), np = seg_len(Wo);
    int segs = (Wo + np - 1) / np, row = segs * np; /* pixels per row of the scratch */
    int groups = small_groups(nb, SOB), first = nb == 1 && g->sw == 2 ? 1 : small_group_first(nb, SOB);
    size_t Lp = plane_len(g), ldo = (size_t)nb * VL, P = (size_t)Ho * Wo;
    float *xp = scratch, *tmp = scratch + (size_t)g->C * Lp; /* tmp [Ho][row][nb·16] */
    int offs[CN_DIRECT_MAX_TAPS];
    tap_offsets(g, offs);
    int jobs = Ho * segs * groups;
    #pragma omp parallel if (par) num_threads(par ? omp_get_max_threads() : 1)
    {
        #pragma omp for schedule(static)
        for (int c = 0; c < g->C; c++) pad_plane(g, x, c, xp + (size_t)c * Lp, Lp);
        #pragma omp for schedule(dynamic, 4)
        for (int job = 0; job < jobs; job++) {
            int bg = job / (Ho * segs), rs = job % (Ho * segs), oy = rs / segs, sg = rs % segs;
            int b0 = bg ? first + (bg - 1) * SOB : 0, width = bg ? SOB : first;
            int nob = nb - b0 < width ? nb - b0 : width;
            size_t q0 = (size_t)oy * g->sh * Wp + (size_t)sg * np * g->sw;
            float *out = tmp + ((size_t)oy * row + (size_t)sg * np) * ldo;
            small_block_for(np, width, g->sw)(g, xp, Lp, wp, offs, q0, b0, nob, out, ldo);
        }
        #pragma omp for schedule(static)
        for (int o = 0; o < g->O; o++) { /* transpose out, with the bias and activation */
            float *dst = y + (size_t)o * P;
            for (int oy = 0; oy < Ho; oy++)
                for (int ox = 0; ox < Wo; ox++) dst[(size_t)oy * Wo + ox] = tmp[((size_t)oy * row + ox) * ldo + o];
            cn_conv_bias_act_row(dst, P, bias ? bias[o] : 0.0f, act);
        }
    }
}

/* The weight gradient in the same layout: gy transposed to [pixel][output channel], so that for an
 * input channel c and a group of taps, SWB (or 3) vectors of 16 output channels accumulate
 * gy[pixel] · x[c, pixel + tap] over every valid pixel of a chunk of images — WTB9·SWB accumulators,
 * no horizontal sums, no wasted columns. */
size_t cn_direct_small_weight_scratch_floats(const cn_direct_geom *g) {
    return (size_t)g->C * plane_len(g) + (size_t)out_h(g) * out_w(g) * blocks16(g) * VL;
}

/* The padded planes and transposed gradients of a chunk of nb images (scratch, per floats each). */
typedef struct small_weight_chunk {
    const cn_direct_geom *g;
    const float *scratch;
    size_t per, x_image, Lp, ldo;
    int Wp, Ho, Wo, nb;
} small_weight_chunk;

/* dw of output-channel vectors [b0, b0 + nob) (nob <= NOB), input channel c, taps t0 .. t0 + nt - 1,
 * summed over the chunk: WTB9·NOB accumulators (27 + 3 + 1 of AVX-512's 32 registers at NOB = 3). */
#define SMALL_WEIGHT_BLOCK(NOB)                                                                                 \
    static void small_weight_block##NOB(const small_weight_chunk *ch, const int *offs, int b0, int nob, int c,  \
                                        int t0, int nt, float *dw, size_t ostride) {                           \
        const cn_direct_geom *g = ch->g;                                                                       \
        int T = g->kh * g->kw;                                                                                 \
        vf acc[WTB9][NOB];                                                                                     \
        _Pragma("GCC unroll 9") for (int t = 0; t < WTB9; t++)                                                 \
            _Pragma("GCC unroll 3") for (int k = 0; k < NOB; k++) acc[t][k] = (vf){0};                         \
        int off[WTB9];                                                                                         \
        for (int t = 0; t < WTB9; t++) off[t] = offs[t0 + (t < nt ? t : 0)];                                   \
        size_t gk[NOB];                                                                                        \
        for (int k = 0; k < NOB; k++) gk[k] = (size_t)(k < nob ? k : 0) * VL;                                 \
        for (int b = 0; b < ch->nb; b++) {                                                                     \
            const float *xc = ch->scratch + b * ch->per + (size_t)c * ch->Lp;                                  \
            const float *gt = ch->scratch + b * ch->per + ch->x_image + (size_t)b0 * VL;                       \
            for (int oy = 0; oy < ch->Ho; oy++)                                                                \
                for (int ox = 0; ox < ch->Wo; ox++) {                                                          \
                    const float *gp = gt + ((size_t)oy * ch->Wo + ox) * ch->ldo;                               \
                    vf gv[NOB];                                                                                \
                    _Pragma("GCC unroll 3") for (int k = 0; k < NOB; k++) gv[k] = *(const vf *)(gp + gk[k]);   \
                    const float *xq = xc + (size_t)oy * ch->Wp + ox;                                           \
                    _Pragma("GCC unroll 9") for (int t = 0; t < WTB9; t++) {                                   \
                        vf xv = (vf){0} + xq[off[t]];                                                          \
                        _Pragma("GCC unroll 3") for (int k = 0; k < NOB; k++) acc[t][k] += gv[k] * xv;         \
                    }                                                                                          \
                }                                                                                              \
        }                                                                                                      \
        for (int k = 0; k < nob; k++)                                                                          \
            for (int l = 0; l < VL; l++) {                                                                     \
                int o = (b0 + k) * VL + l;                                                                     \
                if (o >= g->O) break;                                                                          \
                for (int t = 0; t < nt; t++) dw[(size_t)o * ostride + (size_t)c * T + t0 + t] += acc[t][k][l]; \
            }                                                                                                  \
    }
SMALL_WEIGHT_BLOCK(2)
SMALL_WEIGHT_BLOCK(3)

void cn_direct_small_weight_images(const cn_direct_geom *g, const float *x, const float *gy, int nb, float *dw,
                                   float *scratch) {
    int Wp = pad_w(g), Ho = out_h(g), Wo = out_w(g), T = g->kh * g->kw, n16 = blocks16(g);
    size_t Lp = plane_len(g), P = (size_t)Ho * Wo, ldo = (size_t)n16 * VL;
    size_t x_image = (size_t)g->C * Lp, g_image = P * ldo, per = x_image + g_image;
    int offs[CN_DIRECT_MAX_TAPS];
    tap_offsets(g, offs);
    for (int b = 0; b < nb; b++) {
        float *xp = scratch + b * per, *gt = xp + x_image;
        const float *xb = x + (size_t)b * g->C * g->H * g->W, *gb = gy + (size_t)b * g->O * P;
        for (int c = 0; c < g->C; c++) pad_plane(g, xb, c, xp + (size_t)c * Lp, Lp);
        memset(gt, 0, g_image * sizeof *gt);
        for (int o = 0; o < g->O; o++)
            for (size_t q = 0; q < P; q++) gt[q * ldo + o] = gb[(size_t)o * P + q];
    }
    size_t ostride = (size_t)g->C * T; /* dw [O, C, T] */
    small_weight_chunk ch = {.g = g, .scratch = scratch, .per = per, .x_image = x_image, .Lp = Lp, .ldo = ldo,
                             .Wp = Wp, .Ho = Ho, .Wo = Wo, .nb = nb};
    int groups = small_groups(n16, SWB), first = small_group_first(n16, SWB);
    for (int bg = 0; bg < groups; bg++) {
        int b0 = bg ? first + (bg - 1) * SWB : 0, width = bg ? SWB : first;
        int nob = n16 - b0 < width ? n16 - b0 : width;
        for (int c = 0; c < g->C; c++)
            for (int t0 = 0; t0 < T; t0 += WTB9) {
                int nt = T - t0 < WTB9 ? T - t0 : WTB9;
                if (width == SWB + 1) small_weight_block3(&ch, offs, b0, nob, c, t0, nt, dw, ostride);
                else small_weight_block2(&ch, offs, b0, nob, c, t0, nt, dw, ostride);
            }
    }
}

void cn_conv_bias_act_row(float *restrict row, size_t n, float bias, int act) {
    switch (act) {
    case CN_ACT_RELU:
        for (size_t k = 0; k < n; k++) {
            float v = row[k] + bias;
            row[k] = v > 0.0f ? v : 0.0f;
        }
        break;
    case CN_ACT_SOFTPLUS:
        for (size_t k = 0; k < n; k++) row[k] = cn_vsoftplusf(row[k] + bias);
        break;
    default:
        if (bias != 0.0f)
            for (size_t k = 0; k < n; k++) row[k] += bias;
    }
}

void cn_direct_conv_image(const cn_direct_geom *g, const float *x, const float *wp, const float *bias,
                          int act, float *y, float *scratch, bool par) {
    int Wp = pad_w(g), Ho = out_h(g), Wo = out_w(g), nb = blocks_o(g);
    size_t Lp = plane_len(g), L = grid_len(g);
    float *xp = scratch, *grid = scratch + (size_t)g->C * Lp;
    int offs[CN_DIRECT_MAX_TAPS];
    tap_offsets(g, offs);
    #pragma omp parallel if (par) num_threads(par ? omp_get_max_threads() : 1)
    {
        #pragma omp for schedule(static)
        for (int c = 0; c < g->C; c++) pad_plane(g, x, c, xp + (size_t)c * Lp, Lp);
        #pragma omp for schedule(dynamic, 1) /* a thread on a shared core takes fewer blocks */
        for (int b = 0; b < nb; b++) block_rows(g, xp, Lp, wp, b, offs, grid, L);
        #pragma omp for schedule(static)
        for (int o = 0; o < g->O; o++) { /* the grid's valid columns out, with the bias */
            const float *src = grid + (size_t)o * L;
            float *dst = y + (size_t)o * Ho * Wo, bv = bias ? bias[o] : 0.0f;
            for (int r = 0; r < Ho; r++)
                memcpy(dst + (size_t)r * Wo, src + (size_t)r * Wp, (size_t)Wo * sizeof *dst);
            cn_conv_bias_act_row(dst, (size_t)Ho * Wo, bv, act);
        }
    }
}
