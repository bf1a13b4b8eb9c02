/* conv_direct.c — direct convolution of one image (see conv_direct.h).
 *
 *   y[o, oy, ox] = bias[o] + sum_{c, i, j} w[o, c, i, j] · xp[c, (oy + i)·Wp + ox + j]
 *
 * with xp the image zero-padded by (pH, pW) and flattened with row width Wp = W + 2 pW. The
 * output is computed on the same flat grid, q = oy·Wp + ox for ox < Wp: the last Wp - Wo columns
 * of each row are wasted work (kW - 1 of Wp), thrown away when the grid is copied out. In exchange
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

static int out_h(const cn_direct_geom *g) { return g->H + 2 * g->ph - g->kh + 1; }
static int out_w(const cn_direct_geom *g) { return g->W + 2 * g->pw - g->kw + 1; }
static int pad_w(const cn_direct_geom *g) { return g->W + 2 * g->pw; }
static int blocks_o(const cn_direct_geom *g) { return (g->O + OB - 1) / OB; }

/* Outputs on the flat grid, rounded up to whole blocks. */
static size_t grid_len(const cn_direct_geom *g) {
    size_t n = (size_t)out_h(g) * pad_w(g);
    return (n + QB - 1) / QB * QB;
}

/* Floats of one padded input plane: the padded image, and room for the last block's reads. */
static size_t plane_len(const cn_direct_geom *g) {
    size_t Wp = (size_t)pad_w(g), img = (size_t)(g->H + 2 * g->ph) * Wp;
    size_t reach = grid_len(g) + (size_t)(g->kh - 1) * Wp + (size_t)g->kw;
    size_t n = img > reach ? img : reach;
    return (n + VL - 1) / VL * VL;
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
    for (int i = 0; i < g->kh; i++)
        for (int j = 0; j < g->kw; j++) offs[i * g->kw + j] = i * Wp + j;
    #pragma omp parallel if (par) num_threads(par ? omp_get_max_threads() : 1)
    {
        #pragma omp for schedule(static)
        for (int c = 0; c < g->C; c++) { /* the padded plane of channel c */
            float *dst = xp + (size_t)c * Lp;
            const float *src = x + (size_t)c * g->H * g->W;
            memset(dst, 0, Lp * sizeof *dst);
            for (int r = 0; r < g->H; r++)
                memcpy(dst + (size_t)(r + g->ph) * Wp + g->pw, src + (size_t)r * g->W, (size_t)g->W * sizeof *dst);
        }
        #pragma omp for schedule(static)
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
