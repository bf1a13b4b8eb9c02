/* test_conv.c — cn_conv2d / cn_conv_transpose2d (ops_conv.c) against a naive direct convolution.
 *
 * The reference is the definition, one loop nest in double per op, written independently of the
 * engine's im2col/GEMM: conv2d visits every (n, o, oy, ox, c, i, j) whose input pixel lies inside
 * the image and accumulates out += w·x, dx += g·w, dw += g·x (g the upstream gradient); the
 * transposed op visits every (n, c_in, iy, ix, c_out, i, j) whose output pixel lies inside and does
 * the same. The engine's gradients come from cn_backward on sum(out * g). The shapes cover the
 * paths of the engine: one image per GEMM (planes of 1024+ pixels), images split in tiles of
 * output rows (im2col buffers past 4 MB), chunks of images (small planes, with a partial last
 * chunk), the 1×1 fast path, stride 1 adjoints as flipped convs, strided adjoints through col2im,
 * groups, depthwise, strided views.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "autograd.h"
#include "ctest.h"
#include "ops.h"
#include "ops_conv.h"
#include "tensor.h"
#include "test_util.h"

/* One configuration: x [n, c_in, h, w]; a conv2d weight [c_out, c_in/g, kh, kw] or a transposed
 * one [c_in, c_out/g, kh, kw]. */
typedef struct conv_case {
    const char *name;
    bool transposed;
    int n, c_in, c_out, h, w, kh, kw;
    cn_conv2d_opts o;
    bool bias;
} conv_case;

#define OPTS(sh, sw, ph, pw, dh, dw, oph, opw, g) {{sh, sw}, {ph, pw}, {dh, dw}, {oph, opw}, g, CN_ACT_NONE}

/* Each value with the sum of the absolute values of its terms (its float32 rounding scale). */
typedef struct reference {
    int64_t out_shape[4];
    double *out, *dx, *dw, *db;
    double *out_abs, *dx_abs, *dw_abs, *db_abs;
} reference;

static void free_reference(reference *r) {
    free(r->out), free(r->dx), free(r->dw), free(r->db);
    free(r->out_abs), free(r->dx_abs), free(r->dw_abs), free(r->db_abs);
}

/* The definition of both ops, in double. g is the upstream gradient (out_shape) or NULL for the
 * forward only (then called first to learn the shape). */
static void ref_conv(const conv_case *c, const float *x, const float *w, const float *b,
                     const float *g, reference *r) {
    const cn_conv2d_opts *o = &c->o;
    int G = o->groups, kh = c->kh, kw = c->kw;
    int64_t H = c->h, W = c->w, Ho, Wo;
    if (!c->transposed) {
        Ho = (H + 2 * o->padding[0] - o->dilation[0] * (kh - 1) - 1) / o->stride[0] + 1;
        Wo = (W + 2 * o->padding[1] - o->dilation[1] * (kw - 1) - 1) / o->stride[1] + 1;
    } else {
        Ho = (H - 1) * o->stride[0] - 2 * o->padding[0] + o->dilation[0] * (kh - 1) + o->output_padding[0] + 1;
        Wo = (W - 1) * o->stride[1] - 2 * o->padding[1] + o->dilation[1] * (kw - 1) + o->output_padding[1] + 1;
    }
    int64_t shape[4] = {c->n, c->c_out, Ho, Wo};
    memcpy(r->out_shape, shape, sizeof shape);
    size_t n_out = (size_t)(c->n * c->c_out * Ho * Wo), n_x = (size_t)(c->n * c->c_in * H * W);
    size_t n_w = (size_t)c->c_out * (c->c_in / G) * kh * kw;
    r->out = calloc(n_out + 1, sizeof(double));
    r->dx = calloc(n_x + 1, sizeof(double));
    r->dw = calloc(n_w + 1, sizeof(double));
    r->db = calloc((size_t)c->c_out + 1, sizeof(double));
    r->out_abs = calloc(n_out + 1, sizeof(double));
    r->dx_abs = calloc(n_x + 1, sizeof(double));
    r->dw_abs = calloc(n_w + 1, sizeof(double));
    r->db_abs = calloc((size_t)c->c_out + 1, sizeof(double));
    int cig = c->c_in / G, cog = c->c_out / G;
    for (int n = 0; n < c->n; n++)
        for (int ci = 0; ci < c->c_in; ci++)
            for (int co_g = 0; co_g < cog; co_g++)
                for (int i = 0; i < kh; i++)
                    for (int j = 0; j < kw; j++) {
                        int grp = ci / cig, co = grp * cog + co_g;
                        /* conv2d: w[co, ci % cig, i, j]; transposed: w[ci, co_g, i, j] */
                        size_t wi = !c->transposed ? (((size_t)co * cig + ci % cig) * kh + i) * kw + j
                                                   : (((size_t)ci * cog + co_g) * kh + i) * kw + j;
                        /* pairs (input pixel, output pixel) related by the kernel tap (i, j) */
                        int64_t ny = !c->transposed ? Ho : H, nx = !c->transposed ? Wo : W;
                        for (int64_t a = 0; a < ny; a++)
                            for (int64_t bb = 0; bb < nx; bb++) {
                                /* conv2d: output (a, bb) reads input (a·s - p + i·d); the
                                 * transposed op: input (a, bb) writes output (a·s - p + i·d) */
                                int64_t yy = a * o->stride[0] - o->padding[0] + (int64_t)i * o->dilation[0];
                                int64_t xx = bb * o->stride[1] - o->padding[1] + (int64_t)j * o->dilation[1];
                                int64_t lim_y = !c->transposed ? H : Ho, lim_x = !c->transposed ? W : Wo;
                                if (yy < 0 || yy >= lim_y || xx < 0 || xx >= lim_x) continue;
                                size_t xi, oi;
                                if (!c->transposed) {
                                    xi = (((size_t)n * c->c_in + ci) * H + yy) * W + xx;
                                    oi = (((size_t)n * c->c_out + co) * Ho + a) * Wo + bb;
                                } else {
                                    xi = (((size_t)n * c->c_in + ci) * H + a) * W + bb;
                                    oi = (((size_t)n * c->c_out + co) * Ho + yy) * Wo + xx;
                                }
                                r->out[oi] += (double)w[wi] * x[xi];
                                r->out_abs[oi] += fabs((double)w[wi] * x[xi]);
                                if (g) {
                                    r->dx[xi] += (double)g[oi] * w[wi];
                                    r->dw[wi] += (double)g[oi] * x[xi];
                                    r->dx_abs[xi] += fabs((double)g[oi] * w[wi]);
                                    r->dw_abs[wi] += fabs((double)g[oi] * x[xi]);
                                }
                            }
                    }
    for (int n = 0; n < c->n; n++)
        for (int co = 0; co < c->c_out; co++)
            for (int64_t p = 0; p < Ho * Wo; p++) {
                size_t oi = ((size_t)n * c->c_out + co) * Ho * Wo + p;
                if (b) r->out[oi] += b[co], r->out_abs[oi] += fabs(b[co]);
                if (g) r->db[co] += g[oi], r->db_abs[co] += fabs(g[oi]);
            }
}

/* |got - want| <= 1e-5 |want| + 2e-7 sum|terms| + 1e-7 for all n: a float32 sum of K terms, in
 * any order, rounds at the scale of the terms, not of the (possibly cancelled) result — a few
 * ulps of sum|terms|. An indexing bug misses by whole terms. Prints the first miss. */
static bool close_all(const char *what, const char *name, const float *got, const double *want,
                      const double *scale, size_t n) {
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        if (!(d <= 1e-5 * fabs(want[i]) + 2e-7 * scale[i] + 1e-7)) {
            fprintf(stderr, "  %s %s: element %zu is %.9g, expected %.9g (sum of |terms| %.3g)\n",
                    name, what, i, (double)got[i], want[i], scale[i]);
            return false;
        }
    }
    return true;
}

/* Runs one case forward and backward (all of x, w, b requiring grad), against the reference.
 * strided: x is passed as a non-contiguous view (a transposed copy transposed back). */
static bool check_case(const conv_case *c, bool strided) {
    cn_error err;
    int G = c->o.groups;
    int64_t xs[4] = {c->n, c->c_in, c->h, c->w};
    int64_t ws[4] = {c->transposed ? c->c_in : c->c_out,
                     c->transposed ? c->c_out / G : c->c_in / G, c->kh, c->kw};
    int64_t bs[1] = {c->c_out};
    cn_tensor *x = random_tensor(4, xs, -1, 1), *w = random_tensor(4, ws, -1, 1);
    cn_tensor *b = c->bias ? random_tensor(1, bs, -1, 1) : NULL;
    cn_tensor *xin = cn_retain(x);
    if (strided) { /* same values, strides of a transpose */
        cn_tensor *t = cn_transpose(x, 2, 3, &err), *tc = cn_contiguous(t, &err);
        cn_release(xin);
        xin = cn_transpose(tc, 2, 3, &err);
        cn_release(t), cn_release(tc);
        CHECK(!cn_is_contiguous(xin));
    }
    xin->requires_grad = w->requires_grad = true;
    if (b) b->requires_grad = true;

    reference r = {0};
    ref_conv(c, cn_data(x), cn_data(w), b ? cn_data(b) : NULL, NULL, &r);
    cn_tensor *g = random_tensor(4, r.out_shape, -1, 1);
    free_reference(&r);
    ref_conv(c, cn_data(x), cn_data(w), b ? cn_data(b) : NULL, cn_data(g), &r);

    bool ok = true;
    cn_tensor *out = c->transposed ? cn_conv_transpose2d(xin, w, b, &c->o, &err)
                                   : cn_conv2d(xin, w, b, &c->o, &err);
    if (!out) {
        fprintf(stderr, "  %s: %s\n", c->name, err.msg);
        ok = false;
        goto done;
    }
    ok = ok && out->ndim == 4 && memcmp(out->shape, r.out_shape, sizeof r.out_shape) == 0;
    ok = ok && close_all("output", c->name, cn_data(out), r.out, r.out_abs, cn_numel(out));
    cn_tensor *prod = cn_binary(CN_MUL, out, g, &err);
    cn_tensor *loss = cn_sum(prod, 0, NULL, false, &err);
    ok = ok && cn_backward(loss, NULL, 0, &err) == 0;
    cn_release(prod), cn_release(loss);
    ok = ok && xin->grad && w->grad && (!b || b->grad);
    ok = ok && close_all("dx", c->name, cn_data(xin->grad), r.dx, r.dx_abs, cn_numel(x));
    ok = ok && close_all("dw", c->name, cn_data(w->grad), r.dw, r.dw_abs, cn_numel(w));
    ok = ok && (!b || close_all("db", c->name, cn_data(b->grad), r.db, r.db_abs, (size_t)c->c_out));
    if (!ok) fprintf(stderr, "  case %s%s failed\n", c->name, strided ? " (strided)" : "");
done:
    free_reference(&r);
    cn_release(out), cn_release(g), cn_release(x), cn_release(xin), cn_release(w), cn_release(b);
    return ok;
}

/* ---- cases -------------------------------------------------------------------------------- */

static const conv_case conv_cases[] = {
    /* name, transposed, n, c_in, c_out, h, w, kh, kw, opts (stride, padding, dilation, outpad, groups), bias */
    {"3x3 pad 1, one image per GEMM", false, 2, 3, 4, 33, 34, 3, 3, OPTS(1, 1, 1, 1, 1, 1, 0, 0, 1), true},
    {"3x3 pad 1, chunks 4 + 2", false, 6, 3, 5, 16, 16, 3, 3, OPTS(1, 1, 1, 1, 1, 1, 0, 0, 1), true},
    {"stride 2, no padding", false, 3, 2, 3, 9, 8, 3, 3, OPTS(2, 2, 0, 0, 1, 1, 0, 0, 1), false},
    {"asymmetric everything", false, 2, 3, 2, 11, 9, 5, 3, OPTS(2, 1, 2, 1, 1, 2, 0, 0, 1), true},
    {"dilation 2 pad 2", false, 2, 2, 3, 10, 10, 3, 3, OPTS(1, 1, 2, 2, 2, 2, 0, 0, 1), true},
    {"groups 2", false, 3, 4, 6, 7, 7, 3, 3, OPTS(1, 1, 1, 1, 1, 1, 0, 0, 2), true},
    {"depthwise stride 2", false, 2, 5, 5, 9, 9, 3, 3, OPTS(2, 2, 1, 1, 1, 1, 0, 0, 5), true},
    {"1x1 fast path", false, 3, 6, 4, 5, 7, 1, 1, OPTS(1, 1, 0, 0, 1, 1, 0, 0, 1), true},
    {"1x1 fast path, groups 3", false, 2, 6, 3, 4, 4, 1, 1, OPTS(1, 1, 0, 0, 1, 1, 0, 0, 3), true},
    {"1x1 big plane", false, 2, 3, 4, 32, 40, 1, 1, OPTS(1, 1, 0, 0, 1, 1, 0, 0, 1), false},
    {"1x1 padded", false, 2, 3, 2, 4, 4, 1, 1, OPTS(1, 1, 1, 1, 1, 1, 0, 0, 1), true},
    {"kernel over input", false, 1, 2, 2, 2, 3, 3, 3, OPTS(1, 1, 1, 1, 1, 1, 0, 0, 1), true},
    {"5x5 pad 2, row tiles", false, 1, 32, 2, 64, 64, 5, 5, OPTS(1, 1, 2, 2, 1, 1, 0, 0, 1), true},
    {"5x5 stride 2, col2im in row tiles", false, 1, 32, 2, 128, 128, 5, 5, OPTS(2, 2, 2, 2, 1, 1, 0, 0, 1), true},
    {"T 5x5 stride 2 in row tiles", true, 1, 2, 32, 64, 64, 5, 5, OPTS(2, 2, 2, 2, 1, 1, 1, 1, 1), true},
    {"T stride 2 outpad 1", true, 2, 4, 3, 5, 4, 3, 3, OPTS(2, 2, 1, 1, 1, 1, 1, 1, 1), true},
    {"T one image per GEMM", true, 2, 3, 2, 32, 33, 3, 3, OPTS(1, 1, 1, 1, 1, 1, 0, 0, 1), true},
    {"T groups 2 dilation", true, 3, 4, 6, 5, 6, 3, 2, OPTS(1, 2, 0, 1, 2, 1, 1, 0, 2), true},
    {"T depthwise", true, 2, 3, 3, 4, 4, 3, 3, OPTS(2, 2, 1, 1, 1, 1, 1, 1, 3), false},
    {"T 1x1 fast path", true, 3, 5, 4, 4, 6, 1, 1, OPTS(1, 1, 0, 0, 1, 1, 0, 0, 1), true},
    {"T 1x1 outpad < dilation", true, 2, 3, 2, 3, 3, 1, 1, OPTS(1, 1, 0, 0, 2, 2, 1, 1, 1), true},
    {"T padding crops", true, 2, 2, 3, 5, 5, 3, 3, OPTS(2, 2, 2, 2, 1, 1, 0, 0, 1), true},
    {"T odd kernel", true, 3, 2, 2, 3, 5, 5, 3, OPTS(2, 1, 1, 1, 1, 1, 1, 0, 1), true},
};

static void test_against_reference(void) {
    for (size_t i = 0; i < sizeof conv_cases / sizeof conv_cases[0]; i++) {
        CHECK(check_case(&conv_cases[i], false));
    }
}

static void test_strided_input(void) {
    CHECK(check_case(&conv_cases[1], true));
    CHECK(check_case(&conv_cases[5], true));
    CHECK(check_case(&conv_cases[15], true));
}

/* Only w requires grad: x gets no gradient, and the node records with no bias input. */
static void test_partial_grad(void) {
    cn_error err;
    int64_t xs[4] = {2, 3, 6, 6}, ws[4] = {4, 3, 3, 3};
    cn_tensor *x = random_tensor(4, xs, -1, 1), *w = random_tensor(4, ws, -1, 1);
    w->requires_grad = true;
    cn_tensor *y = cn_conv2d(x, w, NULL, NULL, &err);
    CHECK(y && y->requires_grad && y->shape[2] == 4);
    cn_tensor *loss = cn_sum(y, 0, NULL, false, &err);
    CHECK(cn_backward(loss, NULL, 0, &err) == 0);
    CHECK(w->grad && !x->grad);
    cn_release(loss), cn_release(y);
    /* no input requires grad: nothing recorded */
    w->requires_grad = false;
    cn_tensor *y2 = cn_conv2d(x, w, NULL, NULL, &err);
    CHECK(y2 && !y2->requires_grad && !y2->node);
    cn_release(y2), cn_release(x), cn_release(w);
}

/* An unbatched [C, H, W] input gives an unbatched output equal to the batched one's slice. */
static void test_unbatched(void) {
    cn_error err;
    int64_t xs[3] = {2, 5, 6}, ws[4] = {3, 2, 3, 3};
    cn_tensor *x = random_tensor(3, xs, -1, 1), *w = random_tensor(4, ws, -1, 1);
    cn_conv2d_opts o = OPTS(1, 2, 1, 0, 1, 1, 0, 0, 1);
    cn_tensor *y = cn_conv2d(x, w, NULL, &o, &err);
    cn_tensor *x4 = cn_unsqueeze(x, 0, &err);
    cn_tensor *y4 = cn_conv2d(x4, w, NULL, &o, &err);
    CHECK(y && y->ndim == 3 && y->shape[0] == 3 && y->shape[1] == 5 && y->shape[2] == 2);
    CHECK(y4 && memcmp(cn_data(y), cn_data(y4), cn_numel(y) * sizeof(float)) == 0);
    cn_release(x), cn_release(w), cn_release(y), cn_release(x4), cn_release(y4);
}

/* A batch of 0 images: an empty output, and a zero weight gradient. */
static void test_empty_batch(void) {
    cn_error err;
    int64_t xs[4] = {0, 2, 5, 5}, ws[4] = {3, 2, 3, 3};
    cn_tensor *x = random_tensor(4, xs, -1, 1), *w = random_tensor(4, ws, -1, 1);
    w->requires_grad = true;
    cn_tensor *y = cn_conv2d(x, w, NULL, NULL, &err);
    CHECK(y && y->shape[0] == 0 && y->shape[1] == 3 && y->shape[2] == 3);
    cn_tensor *loss = y ? cn_sum(y, 0, NULL, false, &err) : NULL;
    CHECK(loss && cn_backward(loss, NULL, 0, &err) == 0);
    CHECK(w->grad && cn_numel(w->grad) == 54);
    bool zero = w->grad != NULL;
    for (size_t i = 0; zero && i < 54; i++) zero = cn_data(w->grad)[i] == 0.0f;
    CHECK(zero);
    cn_release(loss), cn_release(y), cn_release(x), cn_release(w);
}

/* ---- errors ------------------------------------------------------------------------------- */

static bool fails_with(cn_tensor *r, const cn_error *err, const char *piece) {
    if (r) {
        cn_release(r);
        return false;
    }
    return mentions(err, piece);
}

static void test_errors(void) {
    cn_error err;
    int64_t xs[4] = {2, 4, 16, 16}, ws[4] = {8, 3, 3, 3}, w4s[4] = {8, 4, 3, 3}, bs[1] = {4};
    int64_t s2[2] = {4, 16}, tws[4] = {4, 2, 3, 3};
    cn_tensor *x = cn_zeros(4, xs, &err), *w = cn_zeros(4, ws, &err), *w4 = cn_zeros(4, w4s, &err);
    cn_tensor *b = cn_zeros(1, bs, &err), *x2 = cn_zeros(2, s2, &err), *tw = cn_zeros(4, tws, &err);
    CHECK(fails_with(cn_conv2d(x, w, NULL, NULL, &err), &err,
                     "conv2d: weight of shape [8, 3, 3, 3] needs 3 input channels, input has 4 ([2, 4, 16, 16])"));
    CHECK(fails_with(cn_conv2d(x2, w4, NULL, NULL, &err), &err, "conv2d: expected a 4-D input"));
    CHECK(fails_with(cn_conv2d(x, x2, NULL, NULL, &err), &err, "conv2d: expected a 4-D weight"));
    CHECK(fails_with(cn_conv2d(x, w4, b, NULL, &err), &err,
                     "conv2d: bias of shape [4] does not match the 8 output channels"));
    CHECK(fails_with(cn_conv2d(NULL, w4, NULL, NULL, &err), &err, "conv2d: input is NULL"));
    cn_conv2d_opts o = OPTS(1, 1, 0, 0, 1, 1, 0, 0, 3);
    CHECK(fails_with(cn_conv2d(x, w4, NULL, &o, &err), &err, "not divisible by groups 3"));
    o = (cn_conv2d_opts)OPTS(0, 1, 0, 0, 1, 1, 0, 0, 1);
    CHECK(fails_with(cn_conv2d(x, w4, NULL, &o, &err), &err, "conv2d: stride must be positive, got [0, 1]"));
    o = (cn_conv2d_opts)OPTS(1, 1, -1, 0, 1, 1, 0, 0, 1);
    CHECK(fails_with(cn_conv2d(x, w4, NULL, &o, &err), &err, "padding must be non-negative"));
    o = (cn_conv2d_opts)OPTS(1, 1, 0, 0, 1, 0, 0, 0, 1);
    CHECK(fails_with(cn_conv2d(x, w4, NULL, &o, &err), &err, "dilation must be positive"));
    o = (cn_conv2d_opts)OPTS(1, 1, 0, 0, 1, 1, 1, 0, 1);
    CHECK(fails_with(cn_conv2d(x, w4, NULL, &o, &err), &err, "output_padding is for conv_transpose2d only"));
    o = (cn_conv2d_opts)OPTS(1, 1, 0, 0, 8, 8, 0, 0, 1);
    CHECK(fails_with(cn_conv2d(x, w4, NULL, &o, &err), &err, "smaller than the dilated kernel 17x17"));
    o = (cn_conv2d_opts)OPTS(2, 2, 0, 0, 1, 1, 2, 0, 1);
    CHECK(fails_with(cn_conv_transpose2d(x, tw, NULL, &o, &err), &err,
                     "conv_transpose2d: output_padding [2, 0] must be smaller than either the stride"));
    CHECK(fails_with(cn_conv_transpose2d(x, w, NULL, NULL, &err), &err,
                     "conv_transpose2d: weight of shape [8, 3, 3, 3] needs 8 input channels, input has 4"));
    o = (cn_conv2d_opts)OPTS(1, 1, 9, 9, 1, 1, 0, 0, 1);
    CHECK(fails_with(cn_conv_transpose2d(x, tw, NULL, &o, &err), &err,
                     "conv_transpose2d: output size 0x0 is not positive"));
    cn_release(x), cn_release(w), cn_release(w4), cn_release(b), cn_release(x2), cn_release(tw);
}

int main(void) {
    test_seed(4242u);
    RUN(test_against_reference);
    RUN(test_strided_input);
    RUN(test_partial_grad);
    RUN(test_unbatched);
    RUN(test_empty_batch);
    RUN(test_errors);
    return CTEST_SUMMARY("conv");
}
