/* test_spatial.c — the spatial ops (ops_spatial.c) against naive references written here.
 *
 * Each reference computes one output element at a time straight from torch's definition (for
 * pooling: walk the k x k kernel positions and count those inside the padded / unpadded input),
 * in double. Every op here is linear in x except max pooling, so the reference gradient of
 * L = sum(g * y) is built from the reference forward itself: dL/dx_i = sum_o g_o * ref(e_i)_o with
 * e_i the i-th basis tensor; max pooling's goes to the reference argmax. The engine's gradients
 * come from cn_backward. Inputs are contiguous and strided (transposed) views; a batch past the
 * OpenMP threshold runs too; then the error messages.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "autograd.h"
#include "ctest.h"
#include "ops.h"
#include "ops_spatial.h"
#include "test_util.h"

#define RTOL 1e-5
#define ATOL 1e-6

/* ---- helpers ----------------------------------------------------------------------------- */

/* A transposed-storage copy of x with the same values: non-contiguous (last two dims swapped). */
static cn_tensor *strided_copy(cn_tensor *x) {
    cn_error err;
    int nd = x->ndim;
    cn_tensor *t = cn_transpose(x, nd - 2, nd - 1, &err);
    cn_tensor *c = cn_contiguous(t, &err); /* [.., W, H] storage */
    cn_tensor *v = cn_transpose(c, nd - 2, nd - 1, &err);
    cn_release(t), cn_release(c);
    return v;
}

/* ---- the cases and their references ----------------------------------------------------------- */

typedef enum { NEAREST, BILINEAR, AVG, MAX, ADAPTIVE, PAD } op_kind;

typedef struct spatial_case {
    const char *name;
    op_kind op;
    int ndim;
    int64_t shape[5];
    int64_t size[2];                          /* upsample / adaptive output */
    double scale[2];                          /* upsample scale (0: none) */
    bool align_corners;
    int64_t kernel[2], stride[2], padding[2], dilation[2];
    bool ceil_mode, count_include_pad;
    int n_pairs;                              /* pad */
    int64_t pads[6];
    cn_pad_mode mode;
    float value;
} spatial_case;

static cn_tensor *run_op(const spatial_case *c, const cn_tensor *x, cn_error *err) {
    switch (c->op) {
    case NEAREST:
        return cn_upsample_nearest2d_scaled(x, c->size[0], c->size[1], c->scale[0], c->scale[1], err);
    case BILINEAR:
        return cn_upsample_bilinear2d_scaled(x, c->size[0], c->size[1], c->align_corners, c->scale[0], c->scale[1], err);
    case AVG:
        return cn_avg_pool2d(x, c->kernel, c->stride, c->padding, c->ceil_mode, c->count_include_pad, err);
    case MAX:
        return cn_max_pool2d(x, c->kernel, c->stride, c->padding, c->dilation, c->ceil_mode, err);
    case ADAPTIVE:
        return cn_adaptive_avg_pool2d(x, c->size[0], c->size[1], err);
    case PAD:
        return cn_pad(x, c->n_pairs, c->pads, c->mode, c->value, err);
    }
    return NULL;
}

/* torch's pooling_output_shape */
static int64_t ref_pool_out(int64_t in, int64_t k, int64_t p, int64_t s, int64_t d, bool ceil_mode) {
    double span = (double)(in + 2 * p - d * (k - 1) - 1);
    int64_t out = (int64_t)(ceil_mode ? ceil(span / (double)s) : floor(span / (double)s)) + 1;
    if (ceil_mode && (out - 1) * s >= in + p) out--;
    return out;
}

/* Output shape of a case; returns its ndim. */
static int ref_shape(const spatial_case *c, int64_t *out) {
    int nd = c->ndim;
    memcpy(out, c->shape, sizeof c->shape);
    switch (c->op) {
    case NEAREST:
    case BILINEAR:
    case ADAPTIVE:
        out[nd - 2] = c->size[0], out[nd - 1] = c->size[1];
        break;
    case AVG:
    case MAX:
        for (int i = 0; i < 2; i++)
            out[nd - 2 + i] = ref_pool_out(c->shape[nd - 2 + i], c->kernel[i], c->padding[i], c->stride[i],
                                           c->op == MAX ? c->dilation[i] : 1, c->ceil_mode);
        break;
    case PAD:
        for (int k = 0; k < c->n_pairs; k++) out[nd - 1 - k] += c->pads[2 * k] + c->pads[2 * k + 1];
        break;
    }
    return nd;
}

static int64_t numel_of(int nd, const int64_t *s) {
    int64_t n = 1;
    for (int d = 0; d < nd; d++) n *= s[d];
    return n;
}

/* Source coordinate and weights of a bilinear output index along one axis. */
static void ref_lerp(int64_t d, int64_t in, int64_t out, bool ac, double scale, int64_t *i0, int64_t *i1,
                     double *l1) {
    if (in == out) {
        *i0 = *i1 = d, *l1 = 0;
        return;
    }
    double real;
    if (ac) real = out > 1 ? (double)d * (double)(in - 1) / (double)(out - 1) : 0.0;
    else real = fmax(0.0, ((double)d + 0.5) * (scale > 0 ? 1.0 / scale : (double)in / (double)out) - 0.5);
    *i0 = (int64_t)floor(real);
    if (*i0 > in - 1) *i0 = in - 1;
    *i1 = *i0 + 1 < in ? *i0 + 1 : in - 1;
    *l1 = fmin(1.0, real - (double)*i0);
}

/* torch's reflection/replication index for output j (crop-then-pad via o_start / i_start) */
static int64_t ref_pad_index(int64_t j, int64_t in, int64_t l, cn_pad_mode mode) {
    if (mode == CN_PAD_CONSTANT) return j - l >= 0 && j - l < in ? j - l : -1;
    int64_t shift = (l < 0 ? -l : 0) - (l > 0 ? l : 0), ip;
    if (j < l) ip = mode == CN_PAD_REFLECT ? 2 * l - j : l;
    else if (j < in + l) ip = j;
    else ip = mode == CN_PAD_REFLECT ? 2 * (in + l - 1) - j : in + l - 1;
    return ip + shift;
}

/* Reference forward in double over x (contiguous data of the case's shape) into y; for max pooling,
 * argmax (flat input index) per output when non-NULL. */
static void ref_forward(const spatial_case *c, const double *x, double *y, int64_t *argmax) {
    int64_t os[CN_MAX_DIMS];
    int nd = ref_shape(c, os);
    if (c->op == PAD) {
        int64_t n = numel_of(nd, os), idx[5];
        for (int64_t o = 0; o < n; o++) {
            int64_t r = o, src = 0;
            bool inside = true;
            for (int d = nd - 1; d >= 0; d--) idx[d] = r % os[d], r /= os[d];
            for (int d = 0; d < nd; d++) {
                int k = nd - 1 - d;
                int64_t s = k < c->n_pairs ? ref_pad_index(idx[d], c->shape[d], c->pads[2 * k], c->mode) : idx[d];
                if (s < 0) inside = false;
                src = src * c->shape[d] + (s < 0 ? 0 : s);
            }
            y[o] = inside ? x[src] : c->value;
        }
        return;
    }
    int64_t H = c->shape[nd - 2], W = c->shape[nd - 1], OH = os[nd - 2], OW = os[nd - 1];
    int64_t planes = numel_of(nd - 2, c->shape);
    for (int64_t p = 0; p < planes; p++)
        for (int64_t oh = 0; oh < OH; oh++)
            for (int64_t ow = 0; ow < OW; ow++) {
                const double *xp = x + p * H * W;
                double v = 0;
                int64_t o = (p * OH + oh) * OW + ow;
                if (c->op == NEAREST) { /* torch: the scale in float, floor(dst * scale) */
                    float s_h = c->scale[0] > 0 ? (float)(1.0 / c->scale[0]) : (float)H / (float)OH;
                    float s_w = c->scale[1] > 0 ? (float)(1.0 / c->scale[1]) : (float)W / (float)OW;
                    int64_t sh = (int64_t)floorf((float)oh * s_h), sw = (int64_t)floorf((float)ow * s_w);
                    v = xp[(sh < H ? sh : H - 1) * W + (sw < W ? sw : W - 1)];
                } else if (c->op == BILINEAR) {
                    int64_t h0, h1, w0, w1;
                    double lh, lw;
                    ref_lerp(oh, H, OH, c->align_corners, c->scale[0], &h0, &h1, &lh);
                    ref_lerp(ow, W, OW, c->align_corners, c->scale[1], &w0, &w1, &lw);
                    v = (1 - lh) * ((1 - lw) * xp[h0 * W + w0] + lw * xp[h0 * W + w1]) +
                        lh * ((1 - lw) * xp[h1 * W + w0] + lw * xp[h1 * W + w1]);
                } else if (c->op == AVG) {
                    double sum = 0;
                    int64_t in_padded = 0, in_input = 0;
                    for (int64_t i = 0; i < c->kernel[0]; i++)
                        for (int64_t j = 0; j < c->kernel[1]; j++) {
                            int64_t h = oh * c->stride[0] - c->padding[0] + i, w = ow * c->stride[1] - c->padding[1] + j;
                            if (h < H + c->padding[0] && w < W + c->padding[1]) in_padded++;
                            if (h >= 0 && h < H && w >= 0 && w < W) in_input++, sum += xp[h * W + w];
                        }
                    v = in_input ? sum / (double)(c->count_include_pad ? in_padded : in_input) : 0;
                } else if (c->op == MAX) {
                    v = -INFINITY;
                    int64_t best = -1;
                    for (int64_t i = 0; i < c->kernel[0]; i++)
                        for (int64_t j = 0; j < c->kernel[1]; j++) {
                            int64_t h = oh * c->stride[0] - c->padding[0] + i * c->dilation[0];
                            int64_t w = ow * c->stride[1] - c->padding[1] + j * c->dilation[1];
                            if (h < 0 || h >= H || w < 0 || w >= W) continue;
                            if (best < 0 || xp[h * W + w] > v) v = xp[h * W + w], best = p * H * W + h * W + w;
                        }
                    if (argmax) argmax[o] = best;
                } else { /* ADAPTIVE */
                    int64_t h0 = (int64_t)floor((double)(oh * H) / (double)OH);
                    int64_t h1 = (int64_t)ceil((double)((oh + 1) * H) / (double)OH);
                    int64_t w0 = (int64_t)floor((double)(ow * W) / (double)OW);
                    int64_t w1 = (int64_t)ceil((double)((ow + 1) * W) / (double)OW);
                    for (int64_t h = h0; h < h1; h++)
                        for (int64_t w = w0; w < w1; w++) v += xp[h * W + w];
                    v /= (double)((h1 - h0) * (w1 - w0));
                }
                y[o] = v;
            }
}

/* Reference dL/dx for L = sum(g * y): through the argmax for max pooling, else by linearity
 * (y = A x, so dL/dx_i = g . A e_i). Only used on small inputs. */
static void ref_backward(const spatial_case *c, const double *x, const double *g, double *gx) {
    int64_t os[CN_MAX_DIMS];
    int nd = ref_shape(c, os);
    int64_t n_in = numel_of(c->ndim, c->shape), n_out = numel_of(nd, os);
    memset(gx, 0, (size_t)n_in * sizeof *gx);
    double *y = malloc((size_t)(n_out ? n_out : 1) * sizeof *y);
    if (c->op == MAX) {
        int64_t *am = malloc((size_t)(n_out ? n_out : 1) * sizeof *am);
        ref_forward(c, x, y, am);
        for (int64_t o = 0; o < n_out; o++) gx[am[o]] += g[o];
        free(am);
    } else {
        spatial_case lin = *c;
        lin.value = 0; /* the constant fill is not part of the linear map */
        double *e = calloc((size_t)n_in, sizeof *e);
        for (int64_t i = 0; i < n_in; i++) {
            e[i] = 1;
            ref_forward(&lin, e, y, NULL);
            e[i] = 0;
            for (int64_t o = 0; o < n_out; o++) gx[i] += g[o] * y[o];
        }
        free(e);
    }
    free(y);
}

/* Runs a case on a contiguous and a strided input: forward vs reference, then cn_backward vs the
 * reference gradient (when check_grad; the linear-map reference is quadratic in the size). */
static void check_case(const spatial_case *c, bool check_grad) {
    cn_error err;
    int64_t os[CN_MAX_DIMS];
    int nd = ref_shape(c, os);
    int64_t n_in = numel_of(c->ndim, c->shape), n_out = numel_of(nd, os);
    cn_tensor *x = random_tensor(c->ndim, c->shape, -2, 2);
    cn_tensor *g = random_tensor(nd, os, -2, 2);
    double *xd = malloc((size_t)n_in * sizeof *xd), *gd = malloc((size_t)(n_out ? n_out : 1) * sizeof *gd);
    double *yd = malloc((size_t)(n_out ? n_out : 1) * sizeof *yd), *gxd = malloc((size_t)n_in * sizeof *gxd);
    for (int64_t i = 0; i < n_in; i++) xd[i] = cn_data(x)[i];
    for (int64_t i = 0; i < n_out; i++) gd[i] = cn_data(g)[i];
    ref_forward(c, xd, yd, NULL);
    if (check_grad) ref_backward(c, xd, gd, gxd);
    cn_tensor *variants[2] = {cn_clone(x, &err), strided_copy(x)}; /* leaves, before any requires grad */
    for (int variant = 0; variant < 2; variant++) {
        cn_tensor *in = variants[variant];
        in->requires_grad = check_grad;
        cn_tensor *y = run_op(c, in, &err);
        CHECK(y != NULL);
        if (!y) {
            fprintf(stderr, "  %s: %s\n", c->name, err.msg);
            cn_release(in);
            continue;
        }
        CHECK(y->ndim == nd && memcmp(y->shape, os, (size_t)nd * sizeof *os) == 0);
        if (y->ndim == nd && memcmp(y->shape, os, (size_t)nd * sizeof *os) == 0) {
            int bad = 0;
            for (int64_t o = 0; o < n_out && bad < 3; o++)
                if (!(fabs(cn_data(y)[o] - yd[o]) <= ATOL + RTOL * fabs(yd[o]))) {
                    fprintf(stderr, "  %s%s: output %lld is %.9g, expected %.9g\n", c->name,
                            variant ? " (strided)" : "", (long long)o, cn_data(y)[o], yd[o]);
                    bad++;
                }
            CHECK(bad == 0);
            if (check_grad) {
                CHECK(y->requires_grad);
                CHECK(cn_backward(y, g, 0, &err) == 0);
                CHECK(in->grad != NULL);
                if (in->grad) {
                    const float *gx = cn_data(in->grad);
                    bad = 0;
                    for (int64_t i = 0; i < n_in && bad < 3; i++)
                        if (!(fabs(gx[i] - gxd[i]) <= ATOL + RTOL * fabs(gxd[i]))) {
                            fprintf(stderr, "  %s%s: grad %lld is %.9g, expected %.9g\n", c->name,
                                    variant ? " (strided)" : "", (long long)i, gx[i], gxd[i]);
                            bad++;
                        }
                    CHECK(bad == 0);
                }
            } else {
                CHECK(y->node == NULL && !y->requires_grad);
            }
        }
        cn_release(y);
        cn_release(in);
    }
    cn_release(x), cn_release(g);
    free(xd), free(gd), free(yd), free(gxd);
}

#define SHAPE(...) .shape = {__VA_ARGS__}

static const spatial_case cases[] = {
    {"nearest x2", NEAREST, 4, SHAPE(2, 3, 4, 5), .size = {8, 10}},
    {"nearest odd", NEAREST, 4, SHAPE(1, 2, 5, 7), .size = {11, 3}},
    {"nearest same", NEAREST, 4, SHAPE(1, 1, 3, 4), .size = {3, 4}},
    {"nearest scale", NEAREST, 4, SHAPE(1, 2, 5, 7), .size = {7, 2}, .scale = {1.5, 0.4}},
    {"bilinear x2", BILINEAR, 4, SHAPE(2, 2, 4, 5), .size = {8, 10}},
    {"bilinear x2 ac", BILINEAR, 4, SHAPE(2, 2, 4, 5), .size = {8, 10}, .align_corners = true},
    {"bilinear odd", BILINEAR, 4, SHAPE(1, 2, 5, 7), .size = {11, 3}},
    {"bilinear odd ac", BILINEAR, 4, SHAPE(1, 2, 5, 7), .size = {11, 3}, .align_corners = true},
    {"bilinear to 1 ac", BILINEAR, 4, SHAPE(1, 1, 4, 5), .size = {1, 9}, .align_corners = true},
    {"bilinear half scale", BILINEAR, 4, SHAPE(1, 2, 7, 6), .size = {3, 3}, .scale = {0.5, 0.5}},
    {"bilinear scale keeps size", BILINEAR, 4, SHAPE(1, 2, 3, 5), .size = {3, 6}, .scale = {1.2, 1.2}},
    {"nearest scale keeps size", NEAREST, 4, SHAPE(1, 2, 3, 5), .size = {3, 6}, .scale = {1.2, 1.2}},
    {"nearest scale doubles size", NEAREST, 4, SHAPE(1, 2, 5, 4), .size = {10, 8}, .scale = {2.1, 2.1}},
    {"avg k2", AVG, 4, SHAPE(2, 3, 6, 6), .kernel = {2, 2}, .stride = {2, 2}, .count_include_pad = true},
    {"avg k3 s1 p1", AVG, 4, SHAPE(1, 2, 5, 6), .kernel = {3, 3}, .stride = {1, 1}, .padding = {1, 1},
     .count_include_pad = true},
    {"avg k3 s2 p1 ceil", AVG, 4, SHAPE(1, 2, 6, 7), .kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1},
     .ceil_mode = true, .count_include_pad = true},
    {"avg k3 s2 p1 ceil nopad", AVG, 4, SHAPE(1, 2, 6, 6), .kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1},
     .ceil_mode = true},
    /* ceil_mode's extra window would start in the right padding: torch drops it (5 -> 3, not 4) */
    {"avg k2 s2 p1 ceil", AVG, 4, SHAPE(1, 2, 5, 5), .kernel = {2, 2}, .stride = {2, 2}, .padding = {1, 1},
     .ceil_mode = true, .count_include_pad = true},
    {"avg rect 3-D", AVG, 3, SHAPE(2, 6, 7), .kernel = {2, 3}, .stride = {1, 2}, .padding = {1, 0},
     .count_include_pad = true},
    {"max k2", MAX, 4, SHAPE(2, 3, 6, 6), .kernel = {2, 2}, .stride = {2, 2}, .dilation = {1, 1}},
    {"max k3 s1 p1", MAX, 4, SHAPE(1, 2, 5, 6), .kernel = {3, 3}, .stride = {1, 1}, .padding = {1, 1},
     .dilation = {1, 1}},
    {"max k3 s2 p1 ceil", MAX, 4, SHAPE(1, 2, 6, 7), .kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1},
     .dilation = {1, 1}, .ceil_mode = true},
    {"max k3 dil2", MAX, 4, SHAPE(1, 2, 9, 8), .kernel = {3, 3}, .stride = {3, 3}, .dilation = {2, 2}},
    {"max dil ceil pad", MAX, 4, SHAPE(1, 2, 8, 9), .kernel = {3, 2}, .stride = {2, 1}, .padding = {1, 1},
     .dilation = {2, 3}, .ceil_mode = true},
    {"max k2 s2 p1 ceil", MAX, 4, SHAPE(1, 2, 5, 5), .kernel = {2, 2}, .stride = {2, 2}, .padding = {1, 1},
     .dilation = {1, 1}, .ceil_mode = true},
    {"max 3-D", MAX, 3, SHAPE(3, 5, 5), .kernel = {2, 2}, .stride = {1, 1}, .dilation = {1, 1}},
    {"adaptive 1x1", ADAPTIVE, 4, SHAPE(2, 3, 5, 7), .size = {1, 1}},
    {"adaptive 3x2", ADAPTIVE, 4, SHAPE(1, 2, 5, 7), .size = {3, 2}},
    {"adaptive up", ADAPTIVE, 3, SHAPE(2, 4, 4), .size = {6, 5}},
    {"pad constant", PAD, 4, SHAPE(2, 2, 3, 4), .n_pairs = 2, .pads = {1, 2, 3, 0}, .value = 0.5f},
    {"pad constant negative", PAD, 4, SHAPE(1, 2, 4, 5), .n_pairs = 2, .pads = {-1, 2, 1, -2}},
    {"pad constant 3 pairs", PAD, 3, SHAPE(2, 3, 4), .n_pairs = 3, .pads = {1, 1, 0, 2, -1, 1}, .value = -2},
    {"pad reflect", PAD, 4, SHAPE(1, 2, 4, 5), .n_pairs = 2, .pads = {2, 1, 1, 3}, .mode = CN_PAD_REFLECT},
    {"pad reflect negative", PAD, 4, SHAPE(1, 2, 4, 5), .n_pairs = 2, .pads = {-1, 2, 2, -1}, .mode = CN_PAD_REFLECT},
    {"pad reflect past crop", PAD, 3, SHAPE(2, 3, 5), .n_pairs = 1, .pads = {3, -2}, .mode = CN_PAD_REFLECT},
    {"pad reflect 3 pairs", PAD, 5, SHAPE(1, 1, 3, 4, 3), .n_pairs = 3, .pads = {1, 2, 2, 0, 1, 1},
     .mode = CN_PAD_REFLECT},
    {"pad replicate", PAD, 4, SHAPE(1, 2, 4, 5), .n_pairs = 2, .pads = {2, 3, 1, 0}, .mode = CN_PAD_REPLICATE},
    {"pad replicate negative", PAD, 4, SHAPE(1, 2, 4, 5), .n_pairs = 2, .pads = {-2, 3, -1, 1},
     .mode = CN_PAD_REPLICATE},
    {"pad replicate 1 pair", PAD, 2, SHAPE(3, 4), .n_pairs = 1, .pads = {3, 5}, .mode = CN_PAD_REPLICATE},
};

/* ---- tests ------------------------------------------------------------------------------- */

static void test_against_reference(void) {
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) check_case(&cases[i], true);
}

static void test_without_grad(void) {
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) check_case(&cases[i], false);
}

/* Batches past the OpenMP threshold (forward only: the gradient reference is quadratic). */
static void test_large(void) {
    const spatial_case big[] = {
        {"big bilinear", BILINEAR, 4, SHAPE(4, 16, 16, 16), .size = {32, 32}},
        {"big nearest", NEAREST, 4, SHAPE(4, 16, 16, 16), .size = {32, 24}},
        {"big avg", AVG, 4, SHAPE(4, 16, 32, 32), .kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1}},
        {"big max", MAX, 4, SHAPE(4, 16, 32, 32), .kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1},
         .dilation = {1, 1}},
        {"big adaptive", ADAPTIVE, 4, SHAPE(4, 16, 32, 32), .size = {7, 5}},
        {"big pad", PAD, 4, SHAPE(4, 16, 32, 32), .n_pairs = 2, .pads = {2, 2, 3, 1}, .mode = CN_PAD_REFLECT},
    };
    for (size_t i = 0; i < sizeof big / sizeof *big; i++) check_case(&big[i], false);
}

/* Large backward: the gradient of a sum is checked by its known total (every op here routes each
 * output's gradient to inputs with weights summing to 1, except padding and clipped windows). */
static void test_large_backward(void) {
    cn_error err;
    int64_t shape[4] = {4, 16, 32, 32};
    cn_tensor *x = random_tensor(4, shape, -2, 2);
    x->requires_grad = true;
    int64_t k[2] = {2, 2};
    cn_tensor *y = cn_max_pool2d(x, k, NULL, NULL, NULL, false, &err);
    cn_tensor *z = cn_upsample_bilinear2d(y, 32, 32, false, &err);
    cn_tensor *s = cn_sum(z, 0, NULL, false, &err);
    CHECK(s && cn_backward(s, NULL, 0, &err) == 0);
    double total = 0;
    int ones = 0;
    for (size_t i = 0; x->grad && i < cn_numel(x->grad); i++) total += cn_data(x->grad)[i], ones += cn_data(x->grad)[i] != 0;
    CHECK_CLOSE(total, 4 * 16 * 32 * 32, 1e-5, 0);
    CHECK(ones == 4 * 16 * 16 * 16); /* one argmax per 2x2 window */
    cn_release(x), cn_release(y), cn_release(z), cn_release(s);
}

static void test_errors(void) {
    cn_error err;
    int64_t s4[4] = {1, 2, 4, 4}, s2[2] = {4, 4};
    cn_tensor *x = random_tensor(4, s4, -2, 2), *m = random_tensor(2, s2, -2, 2);
    int64_t k3[2] = {3, 3}, k0[2] = {0, 2}, k5[2] = {5, 5}, one[2] = {1, 1}, two[2] = {2, 2}, zero[2] = {0, 0};

    CHECK(!cn_upsample_nearest2d(m, 8, 8, &err) && mentions(&err, "upsample_nearest2d: expected a 4-D [N, C, H, W] input") &&
          mentions(&err, "[4, 4]"));
    CHECK(!cn_upsample_bilinear2d(x, 0, 3, false, &err) && mentions(&err, "upsample_bilinear2d") &&
          mentions(&err, "0x3") && mentions(&err, "[1, 2, 4, 4]"));
    CHECK(!cn_avg_pool2d(m, k3, NULL, NULL, false, true, &err) && mentions(&err, "avg_pool2d: expected a 3-D"));
    CHECK(!cn_avg_pool2d(x, k0, NULL, NULL, false, true, &err) && mentions(&err, "kernel size must be positive, got 0x2"));
    CHECK(!cn_avg_pool2d(x, k3, zero, NULL, false, true, &err) && mentions(&err, "stride must be positive"));
    CHECK(!cn_max_pool2d(x, k3, one, two, NULL, false, &err) && mentions(&err, "max_pool2d") &&
          mentions(&err, "half the kernel size, got padding 2x2 for kernel 3x3"));
    CHECK(!cn_max_pool2d(x, two, NULL, NULL, zero, false, &err) && mentions(&err, "dilation must be positive"));
    CHECK(!cn_max_pool2d(x, k5, NULL, NULL, NULL, false, &err) && mentions(&err, "[1, 2, 4, 4] is too small") &&
          mentions(&err, "kernel 5x5"));
    CHECK(!cn_adaptive_avg_pool2d(x, 2, 0, &err) && mentions(&err, "adaptive_avg_pool2d") && mentions(&err, "2x0"));

    int64_t p_odd[2] = {4, 0}, p_neg[2] = {-2, -2}, p_crop[2] = {-3, -2}, p4[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    CHECK(!cn_pad(m, 3, p4, CN_PAD_CONSTANT, 0, &err) && mentions(&err, "pad: 3 padding pairs for a 2-D input [4, 4]"));
    CHECK(!cn_pad(x, 4, p4, CN_PAD_REFLECT, 0, &err) && mentions(&err, "reflect mode pads 1 to 3 trailing dims"));
    CHECK(!cn_pad(x, 1, p_odd, CN_PAD_REFLECT, 0, &err) &&
          mentions(&err, "reflect padding (4, 0) must be smaller than the size 4 of dim -1"));
    CHECK(!cn_pad(x, 1, p_neg, CN_PAD_REPLICATE, 0, &err) && mentions(&err, "leaves dim -1") &&
          mentions(&err, "size 0 in replicate mode"));
    CHECK(!cn_pad(m, 1, p_crop, CN_PAD_CONSTANT, 0, &err) && mentions(&err, "size -1"));
    CHECK(!cn_pad(x, 1, p4, (cn_pad_mode)7, 0, &err) && mentions(&err, "unknown mode"));
    cn_release(x), cn_release(m);
}

/* Equal maxima: the first in the window wins, and so takes the gradient; a NaN wins over all. */
static void test_max_pool_ties_nan(void) {
    cn_error err;
    int64_t s[4] = {1, 1, 2, 4}, k[2] = {2, 2};
    const float v[8] = {1, 3, NAN, 0, 3, 2, 5, NAN};
    cn_tensor *x = cn_from_data(4, s, v, &err);
    x->requires_grad = true;
    cn_tensor *y = cn_max_pool2d(x, k, NULL, NULL, NULL, false, &err);
    CHECK(y && y->shape[3] == 2);
    if (y) {
        CHECK(cn_data(y)[0] == 3 && isnan(cn_data(y)[1]));
        int64_t gs[4] = {1, 1, 1, 2};
        const float gv[2] = {10, 20};
        cn_tensor *g = cn_from_data(4, gs, gv, &err);
        CHECK(cn_backward(y, g, 0, &err) == 0);
        const float want[8] = {0, 10, 0, 0, 0, 0, 0, 20}; /* the tie goes to [0, 1]; the last NaN wins */
        for (int i = 0; x->grad && i < 8; i++) CHECK(cn_data(x->grad)[i] == want[i]);
        cn_release(g);
    }
    cn_release(x), cn_release(y);
}

/* A constant pad may crop a dim to nothing; its gradient is then all zeros. */
static void test_pad_to_empty(void) {
    cn_error err;
    int64_t s[2] = {2, 3}, p[2] = {-3, 0};
    cn_tensor *x = random_tensor(2, s, -2, 2);
    x->requires_grad = true;
    cn_tensor *y = cn_pad(x, 1, p, CN_PAD_CONSTANT, 0, &err);
    CHECK(y && y->shape[0] == 2 && y->shape[1] == 0);
    cn_tensor *g = y ? cn_zeros(2, y->shape, &err) : NULL;
    CHECK(y && cn_backward(y, g, 0, &err) == 0);
    CHECK(x->grad && cn_numel(x->grad) == 6);
    for (size_t i = 0; x->grad && i < 6; i++) CHECK(cn_data(x->grad)[i] == 0);
    cn_release(x), cn_release(y), cn_release(g);
}

int main(void) {
    test_seed(2024u);
    RUN(test_against_reference);
    RUN(test_without_grad);
    RUN(test_large);
    RUN(test_large_backward);
    RUN(test_max_pool_ties_nan);
    RUN(test_pad_to_empty);
    RUN(test_errors);
    return CTEST_SUMMARY("spatial");
}
