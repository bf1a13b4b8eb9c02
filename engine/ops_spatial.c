/* ops_spatial.c — upsampling (nearest, bilinear), pooling (avg, max, adaptive avg) and padding.
 *
 * Every 2-D op views its contiguous input as `planes` = N·C independent [H, W] images and runs one
 * plane per OpenMP iteration, so a backward that scatters into its plane never races. Each op's
 * forward and backward sit side by side; index rules are torch's (aten/src/ATen/native/UpSample.h,
 * Pool.h, AdaptivePooling.h, PadNd.cpp), cited at each. Sums in forwards are in double.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd.h"
#include "ops.h"
#include "ops_spatial.h"
#include "parallel.h"

typedef long long ll; /* for printing int64_t with %lld */

/* ---- shared helpers ------------------------------------------------------------------------- */

/* Checks that x is 4-D (or 3-D when allow_3d) with non-empty H and W. */
static int check_spatial(const cn_tensor *x, const char *op, bool allow_3d, cn_error *err) {
    char s[160];
    if (x->ndim != 4 && !(allow_3d && x->ndim == 3)) {
        cn_error_set(err, "%s: expected a %s input, got %s", op,
                     allow_3d ? "3-D [C, H, W] or 4-D [N, C, H, W]" : "4-D [N, C, H, W]",
                     cn_shape_str(s, sizeof s, x->ndim, x->shape));
        return -1;
    }
    if (x->shape[x->ndim - 1] < 1 || x->shape[x->ndim - 2] < 1) {
        cn_error_set(err, "%s: input %s has an empty spatial dim", op, cn_shape_str(s, sizeof s, x->ndim, x->shape));
        return -1;
    }
    return 0;
}

/* x's shape with its last two dims replaced by h, w. */
static cn_tensor *new_output(const cn_tensor *x, int64_t h, int64_t w, cn_error *err) {
    int64_t shape[CN_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 2] = h;
    shape[x->ndim - 1] = w;
    return cn_empty(x->ndim, shape, err);
}

/* Number of [H, W] planes of a tensor of >= 2 dims. */
static int64_t num_planes(const cn_tensor *t) {
    int64_t n = 1;
    for (int d = 0; d < t->ndim - 2; d++) n *= t->shape[d];
    return n;
}

/* A zero tensor shaped like the node's input i, for a backward to scatter into. */
static cn_tensor *zeros_like_input(const cn_node *n, int i, cn_error *err) {
    return cn_zeros(n->inputs[i]->ndim, n->inputs[i]->shape, err);
}

static int64_t floor_div(int64_t a, int64_t b) { /* b > 0 */
    return a >= 0 ? a / b : -((-a + b - 1) / b);
}

/* ---- nearest upsampling ----------------------------------------------------------------------
 * out[h, w] = x[src(h), src(w)], src(d) = min(floor(d * s), in - 1) with s = in / out (or 1 / scale)
 * in float, as torch's generic (NCHW) kernel, HelperInterpNearest. (torch's channels-last kernel,
 * which it also picks for ambiguous strides such as C = 1, copies when out == in and halves when
 * out == 2 in whatever the scale; the two agree unless a scale_factor is given that those sizes
 * do not reflect.) Backward: gx[src(h), src(w)] += g[h, w]. */

static int64_t nearest_index(int64_t dst, int64_t in, int64_t out, double scale) {
    float s = scale > 0 ? (float)(1.0 / scale) : (float)in / (float)out;
    int64_t src = (int64_t)floorf((float)dst * s);
    return src < in - 1 ? src : in - 1;
}

/* maps[0..out_h) rows, maps[out_h..out_h+out_w) columns. malloc'ed; NULL when out of memory. */
static int64_t *nearest_maps(int64_t in_h, int64_t in_w, int64_t out_h, int64_t out_w, double scale_h,
                             double scale_w) {
    int64_t *m = malloc((size_t)(out_h + out_w) * sizeof *m);
    if (!m) return NULL;
    for (int64_t i = 0; i < out_h; i++) m[i] = nearest_index(i, in_h, out_h, scale_h);
    for (int64_t i = 0; i < out_w; i++) m[out_h + i] = nearest_index(i, in_w, out_w, scale_w);
    return m;
}

static int check_upsample(const cn_tensor *x, const char *op, int64_t out_h, int64_t out_w, cn_error *err) {
    if (check_spatial(x, op, false, err)) return -1;
    if (out_h < 1 || out_w < 1) {
        char s[160];
        cn_error_set(err, "%s: output size must be positive, got %lldx%lld for input %s", op, (ll)out_h,
                     (ll)out_w, cn_shape_str(s, sizeof s, x->ndim, x->shape));
        return -1;
    }
    return 0;
}

static cn_tensor *nearest_forward(const cn_tensor *x, int64_t out_h, int64_t out_w, double scale_h,
                                  double scale_w, cn_error *err) {
    if (check_upsample(x, "upsample_nearest2d", out_h, out_w, err)) return NULL;
    int64_t in_h = x->shape[2], in_w = x->shape[3], planes = num_planes(x);
    int64_t *map = nearest_maps(in_h, in_w, out_h, out_w, scale_h, scale_w);
    cn_tensor *xc = map ? cn_contiguous((cn_tensor *)x, err) : NULL;
    cn_tensor *out = xc ? new_output(x, out_h, out_w, err) : NULL;
    if (!map) cn_error_set(err, "upsample_nearest2d: out of memory");
    if (out) {
        const float *px = cn_data(xc);
        float *po = cn_data(out);
        const int64_t *mh = map, *mw = map + out_h;
#pragma omp parallel for schedule(static) if (planes * out_h * out_w > PARALLEL_MIN)
        for (int64_t p = 0; p < planes; p++) {
            const float *src = px + p * in_h * in_w;
            float *dst = po + p * out_h * out_w;
            for (int64_t h = 0; h < out_h; h++) {
                const float *row = src + mh[h] * in_w;
                for (int64_t w = 0; w < out_w; w++) dst[h * out_w + w] = row[mw[w]];
            }
        }
    }
    free(map);
    cn_release(xc);
    return out;
}

/* The recorded backward of a separable op (create_graph): the resizes and the average pools are
 * out = A_h x A_w^T with constant matrices a_h [out_h, in_h] and a_w [out_w, in_w], so
 * dx = A_h^T g A_w as two matmuls, themselves differentiable. Takes over a_h and a_w (NULL-safe). */
static cn_tensor *resize_backward_graph(const cn_tensor *g, cn_tensor *a_h, cn_tensor *a_w, cn_error *err) {
    cn_tensor *a_ht = a_h ? cn_transpose(a_h, 0, 1, err) : NULL;
    cn_tensor *rows = a_ht && a_w ? cn_matmul(a_ht, g, err) : NULL; /* [N, C, in_h, out_w] */
    cn_tensor *r = rows ? cn_matmul(rows, a_w, err) : NULL;
    /* a failed matrix has filled err already */
    cn_release(a_h), cn_release(a_w), cn_release(a_ht), cn_release(rows);
    return r;
}

struct nearest_args {
    double scale_h, scale_w; /* 0: none */
};

static int nearest_backward(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    const struct nearest_args *args = CN_NODE_ARGS(n, struct nearest_args);
    const cn_tensor *x = n->inputs[0];
    int64_t in_h = x->shape[2], in_w = x->shape[3], out_h = g->shape[2], out_w = g->shape[3];
    int64_t planes = num_planes(x);
    int64_t *map = nearest_maps(in_h, in_w, out_h, out_w, args->scale_h, args->scale_w);
    cn_tensor *gc = map ? cn_contiguous((cn_tensor *)g, err) : NULL;
    cn_tensor *gx = gc ? zeros_like_input(n, 0, err) : NULL;
    if (!map) cn_error_set(err, "upsample_nearest2d: out of memory");
    if (gx) {
        const float *pg = cn_data(gc);
        float *px = cn_data(gx);
        const int64_t *mh = map, *mw = map + out_h;
#pragma omp parallel for schedule(static) if (planes * out_h * out_w > PARALLEL_MIN)
        for (int64_t p = 0; p < planes; p++) {
            float *dst = px + p * in_h * in_w;
            const float *src = pg + p * out_h * out_w;
            for (int64_t h = 0; h < out_h; h++) {
                float *row = dst + mh[h] * in_w;
                for (int64_t w = 0; w < out_w; w++) row[mw[w]] += src[h * out_w + w];
            }
        }
    }
    free(map);
    cn_release(gc);
    gi[0] = gx;
    return gx ? 0 : -1;
}

/* A[d, map[d]] = 1 for the out rows of one dim. */
static cn_tensor *nearest_matrix(const int64_t *map, int64_t out, int64_t in, cn_error *err) {
    const int64_t shape[2] = {out, in};
    cn_tensor *a = cn_zeros(2, shape, err);
    if (a)
        for (int64_t d = 0; d < out; d++) cn_data(a)[d * in + map[d]] = 1.0f;
    return a;
}

static int nearest_backward_graph(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    const struct nearest_args *args = CN_NODE_ARGS(n, struct nearest_args);
    const cn_tensor *x = n->inputs[0];
    int64_t in_h = x->shape[2], in_w = x->shape[3], out_h = g->shape[2], out_w = g->shape[3];
    int64_t *map = nearest_maps(in_h, in_w, out_h, out_w, args->scale_h, args->scale_w);
    if (!map) {
        cn_error_set(err, "upsample_nearest2d: out of memory");
        return -1;
    }
    cn_tensor *a_h = nearest_matrix(map, out_h, in_h, err), *a_w = nearest_matrix(map + out_h, out_w, in_w, err);
    free(map);
    return (gi[0] = resize_backward_graph(g, a_h, a_w, err)) ? 0 : -1;
}

static const cn_op_def op_upsample_nearest = {"upsample_nearest2d", nearest_backward, nearest_backward_graph};

cn_tensor *cn_upsample_nearest2d_scaled(const cn_tensor *x, int64_t out_h, int64_t out_w, double scale_h,
                                        double scale_w, cn_error *err) {
    cn_tensor *r;
    CN_WITHOUT_GRAD(r = nearest_forward(x, out_h, out_w, scale_h, scale_w, err));
    cn_node *node;
    cn_tensor *in = (cn_tensor *)x;
    r = cn_record_result(r, &op_upsample_nearest, 1, &in, &node, err);
    if (node) *CN_NODE_ARGS(node, struct nearest_args) = (struct nearest_args){scale_h, scale_w};
    return r;
}

cn_tensor *cn_upsample_nearest2d(const cn_tensor *x, int64_t out_h, int64_t out_w, cn_error *err) {
    return cn_upsample_nearest2d_scaled(x, out_h, out_w, 0.0, 0.0, err);
}

/* ---- bilinear upsampling ---------------------------------------------------------------------
 * Per axis (torch's area_pixel_compute_source_index and compute_source_index_and_lambda):
 *   align_corners: real = d * (in - 1) / (out - 1)          (0 when out == 1)
 *   otherwise:     real = max(0, (d + 0.5) * s - 0.5),  s = in / out (or 1 / scale)
 *   i0 = min(floor(real), in - 1), i1 = min(i0 + 1, in - 1), l1 = clamp(real - i0, 0, 1), l0 = 1 - l1
 * (out == in copies). out[h, w] = sum over the four taps of lh * lw * x[ih, iw]; backward adds
 * lh * lw * g[h, w] into each tap. Weights in double. */

typedef struct lerp_tap {
    int64_t i0, i1;
    double l0, l1;
} lerp_tap;

static void linear_taps(int64_t in, int64_t out, bool align_corners, double scale, lerp_tap *taps) {
    double ratio;
    if (align_corners) ratio = out > 1 ? (double)(in - 1) / (double)(out - 1) : 0.0;
    else ratio = scale > 0 ? 1.0 / scale : (double)in / (double)out;
    for (int64_t d = 0; d < out; d++) {
        lerp_tap *t = &taps[d];
        if (out == in) {
            t->i0 = t->i1 = d, t->l0 = 1.0, t->l1 = 0.0;
            continue;
        }
        double real = align_corners ? ratio * (double)d : ratio * ((double)d + 0.5) - 0.5;
        if (real < 0) real = 0;
        int64_t i0 = (int64_t)real;
        if (i0 > in - 1) i0 = in - 1;
        double l1 = real - (double)i0;
        l1 = l1 < 0 ? 0 : l1 > 1 ? 1 : l1;
        t->i0 = i0;
        t->i1 = i0 < in - 1 ? i0 + 1 : i0;
        t->l1 = l1;
        t->l0 = 1.0 - l1;
    }
}

/* taps[0..out_h) rows, taps[out_h..) columns; malloc'ed, NULL when out of memory. */
static lerp_tap *bilinear_taps(int64_t in_h, int64_t in_w, int64_t out_h, int64_t out_w, bool align_corners,
                               double scale_h, double scale_w) {
    lerp_tap *t = malloc((size_t)(out_h + out_w) * sizeof *t);
    if (!t) return NULL;
    linear_taps(in_h, out_h, align_corners, scale_h, t);
    linear_taps(in_w, out_w, align_corners, scale_w, t + out_h);
    return t;
}

static cn_tensor *bilinear_forward(const cn_tensor *x, int64_t out_h, int64_t out_w, bool align_corners,
                                   double scale_h, double scale_w, cn_error *err) {
    if (check_upsample(x, "upsample_bilinear2d", out_h, out_w, err)) return NULL;
    int64_t in_h = x->shape[2], in_w = x->shape[3], planes = num_planes(x);
    lerp_tap *taps = bilinear_taps(in_h, in_w, out_h, out_w, align_corners, scale_h, scale_w);
    cn_tensor *xc = taps ? cn_contiguous((cn_tensor *)x, err) : NULL;
    cn_tensor *out = xc ? new_output(x, out_h, out_w, err) : NULL;
    if (!taps) cn_error_set(err, "upsample_bilinear2d: out of memory");
    if (out) {
        const float *px = cn_data(xc);
        float *po = cn_data(out);
        const lerp_tap *th = taps, *tw = taps + out_h;
#pragma omp parallel for schedule(static) if (planes * out_h * out_w > PARALLEL_MIN)
        for (int64_t p = 0; p < planes; p++) {
            const float *src = px + p * in_h * in_w;
            float *dst = po + p * out_h * out_w;
            for (int64_t h = 0; h < out_h; h++) {
                const float *r0 = src + th[h].i0 * in_w, *r1 = src + th[h].i1 * in_w;
                double a = th[h].l0, b = th[h].l1;
                for (int64_t w = 0; w < out_w; w++) {
                    const lerp_tap *c = &tw[w];
                    double top = c->l0 * r0[c->i0] + c->l1 * r0[c->i1];
                    double bottom = c->l0 * r1[c->i0] + c->l1 * r1[c->i1];
                    dst[h * out_w + w] = (float)(a * top + b * bottom);
                }
            }
        }
    }
    free(taps);
    cn_release(xc);
    return out;
}

struct bilinear_args {
    bool align_corners;
    double scale_h, scale_w; /* 0: none */
};

static int bilinear_backward(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    const struct bilinear_args *args = CN_NODE_ARGS(n, struct bilinear_args);
    const cn_tensor *x = n->inputs[0];
    int64_t in_h = x->shape[2], in_w = x->shape[3], out_h = g->shape[2], out_w = g->shape[3];
    int64_t planes = num_planes(x);
    lerp_tap *taps = bilinear_taps(in_h, in_w, out_h, out_w, args->align_corners, args->scale_h, args->scale_w);
    cn_tensor *gc = taps ? cn_contiguous((cn_tensor *)g, err) : NULL;
    cn_tensor *gx = gc ? zeros_like_input(n, 0, err) : NULL;
    if (!taps) cn_error_set(err, "upsample_bilinear2d: out of memory");
    if (gx) {
        const float *pg = cn_data(gc);
        float *px = cn_data(gx);
        const lerp_tap *th = taps, *tw = taps + out_h;
#pragma omp parallel for schedule(static) if (planes * out_h * out_w > PARALLEL_MIN)
        for (int64_t p = 0; p < planes; p++) {
            float *dst = px + p * in_h * in_w;
            const float *src = pg + p * out_h * out_w;
            for (int64_t h = 0; h < out_h; h++) {
                float *r0 = dst + th[h].i0 * in_w, *r1 = dst + th[h].i1 * in_w;
                double a = th[h].l0, b = th[h].l1;
                for (int64_t w = 0; w < out_w; w++) {
                    const lerp_tap *c = &tw[w];
                    double v = src[h * out_w + w];
                    r0[c->i0] += (float)(a * c->l0 * v);
                    r0[c->i1] += (float)(a * c->l1 * v);
                    r1[c->i0] += (float)(b * c->l0 * v);
                    r1[c->i1] += (float)(b * c->l1 * v);
                }
            }
        }
    }
    free(taps);
    cn_release(gc);
    gi[0] = gx;
    return gx ? 0 : -1;
}

/* A[d, i0] += l0, A[d, i1] += l1 for the out rows of one dim. */
static cn_tensor *lerp_matrix(const lerp_tap *taps, int64_t out, int64_t in, cn_error *err) {
    const int64_t shape[2] = {out, in};
    cn_tensor *a = cn_zeros(2, shape, err);
    if (a)
        for (int64_t d = 0; d < out; d++) {
            cn_data(a)[d * in + taps[d].i0] += (float)taps[d].l0;
            cn_data(a)[d * in + taps[d].i1] += (float)taps[d].l1;
        }
    return a;
}

static int bilinear_backward_graph(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    const struct bilinear_args *args = CN_NODE_ARGS(n, struct bilinear_args);
    const cn_tensor *x = n->inputs[0];
    int64_t in_h = x->shape[2], in_w = x->shape[3], out_h = g->shape[2], out_w = g->shape[3];
    lerp_tap *taps = bilinear_taps(in_h, in_w, out_h, out_w, args->align_corners, args->scale_h, args->scale_w);
    if (!taps) {
        cn_error_set(err, "upsample_bilinear2d: out of memory");
        return -1;
    }
    cn_tensor *a_h = lerp_matrix(taps, out_h, in_h, err), *a_w = lerp_matrix(taps + out_h, out_w, in_w, err);
    free(taps);
    return (gi[0] = resize_backward_graph(g, a_h, a_w, err)) ? 0 : -1;
}

static const cn_op_def op_upsample_bilinear = {"upsample_bilinear2d", bilinear_backward, bilinear_backward_graph};

cn_tensor *cn_upsample_bilinear2d_scaled(const cn_tensor *x, int64_t out_h, int64_t out_w, bool align_corners,
                                         double scale_h, double scale_w, cn_error *err) {
    cn_tensor *r;
    CN_WITHOUT_GRAD(r = bilinear_forward(x, out_h, out_w, align_corners, scale_h, scale_w, err));
    cn_node *node;
    cn_tensor *in = (cn_tensor *)x;
    r = cn_record_result(r, &op_upsample_bilinear, 1, &in, &node, err);
    if (node)
        *CN_NODE_ARGS(node, struct bilinear_args) =
            (struct bilinear_args){.align_corners = align_corners, .scale_h = scale_h, .scale_w = scale_w};
    return r;
}

cn_tensor *cn_upsample_bilinear2d(const cn_tensor *x, int64_t out_h, int64_t out_w, bool align_corners,
                                  cn_error *err) {
    return cn_upsample_bilinear2d_scaled(x, out_h, out_w, align_corners, 0.0, 0.0, err);
}

/* ---- pooling geometry (torch's pooling_output_shape and pool2d_shape_check) ------------------ */

typedef struct pool_geom {
    int64_t kernel[2], stride[2], padding[2], dilation[2];
    int64_t in[2], out[2]; /* {h, w} */
} pool_geom;

/* out = floor((in + 2 pad - dil (k - 1) - 1 + (ceil ? stride - 1 : 0)) / stride) + 1, and with
 * ceil_mode the last window must start inside the input or its left padding. */
static int64_t pool_out_size(int64_t in, int64_t k, int64_t pad, int64_t stride, int64_t dil, bool ceil_mode) {
    int64_t out = floor_div(in + 2 * pad - dil * (k - 1) - 1 + (ceil_mode ? stride - 1 : 0), stride) + 1;
    if (ceil_mode && (out - 1) * stride >= in + pad) out--;
    return out;
}

static int pool_setup(const char *op, const cn_tensor *x, const int64_t *kernel, const int64_t *stride,
                      const int64_t *padding, const int64_t *dilation, bool ceil_mode, pool_geom *g,
                      cn_error *err) {
    if (check_spatial(x, op, true, err)) return -1;
    if (!kernel) {
        cn_error_set(err, "%s: kernel size missing", op);
        return -1;
    }
    for (int i = 0; i < 2; i++) {
        g->kernel[i] = kernel[i];
        g->stride[i] = stride ? stride[i] : kernel[i];
        g->padding[i] = padding ? padding[i] : 0;
        g->dilation[i] = dilation ? dilation[i] : 1;
        g->in[i] = x->shape[x->ndim - 2 + i];
    }
    if (g->kernel[0] < 1 || g->kernel[1] < 1) {
        cn_error_set(err, "%s: kernel size must be positive, got %lldx%lld", op, (ll)g->kernel[0], (ll)g->kernel[1]);
        return -1;
    }
    if (g->stride[0] < 1 || g->stride[1] < 1) {
        cn_error_set(err, "%s: stride must be positive, got %lldx%lld", op, (ll)g->stride[0], (ll)g->stride[1]);
        return -1;
    }
    if (g->dilation[0] < 1 || g->dilation[1] < 1) {
        cn_error_set(err, "%s: dilation must be positive, got %lldx%lld", op, (ll)g->dilation[0],
                     (ll)g->dilation[1]);
        return -1;
    }
    for (int i = 0; i < 2; i++)
        if (g->padding[i] < 0 || g->padding[i] > g->kernel[i] / 2) {
            cn_error_set(err, "%s: padding must be between 0 and half the kernel size, got padding %lldx%lld "
                         "for kernel %lldx%lld", op, (ll)g->padding[0], (ll)g->padding[1], (ll)g->kernel[0],
                         (ll)g->kernel[1]);
            return -1;
        }
    for (int i = 0; i < 2; i++)
        g->out[i] = pool_out_size(g->in[i], g->kernel[i], g->padding[i], g->stride[i], g->dilation[i], ceil_mode);
    if (g->out[0] < 1 || g->out[1] < 1) {
        char s[160];
        cn_error_set(err, "%s: input %s is too small for kernel %lldx%lld (stride %lldx%lld, padding %lldx%lld, "
                     "dilation %lldx%lld): the output would be %lldx%lld", op,
                     cn_shape_str(s, sizeof s, x->ndim, x->shape), (ll)g->kernel[0], (ll)g->kernel[1],
                     (ll)g->stride[0], (ll)g->stride[1], (ll)g->padding[0], (ll)g->padding[1],
                     (ll)g->dilation[0], (ll)g->dilation[1], (ll)g->out[0], (ll)g->out[1]);
        return -1;
    }
    return 0;
}

/* ---- average pooling -------------------------------------------------------------------------
 * Window of output (oh, ow): rows [oh sH - pH, + kH) clipped to the padded input [-pH, H + pH), then
 * to the input [0, H); likewise columns (torch's avg_pool2d kernel). The divisor is the padded-clipped
 * window size with count_include_pad, else the input-clipped one; an empty window gives 0.
 * Backward: every input of the window gets g / divisor. */

typedef struct avg_window {
    int64_t h0, h1, w0, w1;
    double divisor; /* 0: empty window */
} avg_window;

/* The window of output o along axis (0: h, 1: w) clipped to the input, [*lo, *hi), and its share
 * of the divisor: the padded-clipped size with count_include_pad, else the input-clipped one (the
 * divisor is the product over the two axes, so the op is separable). */
static int64_t avg_axis(const pool_geom *g, int axis, int64_t o, bool count_include_pad, int64_t *lo, int64_t *hi) {
    int64_t a0 = o * g->stride[axis] - g->padding[axis], a1 = a0 + g->kernel[axis];
    if (a1 > g->in[axis] + g->padding[axis]) a1 = g->in[axis] + g->padding[axis];
    *lo = a0 > 0 ? a0 : 0;
    *hi = a1 < g->in[axis] ? a1 : g->in[axis];
    return count_include_pad ? a1 - a0 : *hi - *lo;
}

static avg_window avg_window_at(const pool_geom *g, int64_t oh, int64_t ow, bool count_include_pad) {
    avg_window a;
    int64_t dh = avg_axis(g, 0, oh, count_include_pad, &a.h0, &a.h1);
    int64_t dw = avg_axis(g, 1, ow, count_include_pad, &a.w0, &a.w1);
    a.divisor = a.h0 >= a.h1 || a.w0 >= a.w1 ? 0 : (double)(dh * dw);
    return a;
}

static cn_tensor *avg_pool_forward(const cn_tensor *x, const pool_geom *g, bool count_include_pad, cn_error *err) {
    cn_tensor *xc = cn_contiguous((cn_tensor *)x, err);
    cn_tensor *out = xc ? new_output(x, g->out[0], g->out[1], err) : NULL;
    if (out) {
        int64_t planes = num_planes(x), in_hw = g->in[0] * g->in[1], out_hw = g->out[0] * g->out[1];
        const float *px = cn_data(xc);
        float *po = cn_data(out);
#pragma omp parallel for schedule(static) if (planes * out_hw * g->kernel[0] * g->kernel[1] > PARALLEL_MIN)
        for (int64_t p = 0; p < planes; p++) {
            const float *src = px + p * in_hw;
            float *dst = po + p * out_hw;
            for (int64_t oh = 0; oh < g->out[0]; oh++)
                for (int64_t ow = 0; ow < g->out[1]; ow++) {
                    avg_window a = avg_window_at(g, oh, ow, count_include_pad);
                    double sum = 0;
                    for (int64_t h = a.h0; h < a.h1; h++)
                        for (int64_t w = a.w0; w < a.w1; w++) sum += src[h * g->in[1] + w];
                    dst[oh * g->out[1] + ow] = a.divisor > 0 ? (float)(sum / a.divisor) : 0.0f;
                }
        }
    }
    cn_release(xc);
    return out;
}

struct avg_pool_args {
    pool_geom geom; /* as pool_setup made it for the forward */
    bool count_include_pad;
};

static int avg_pool_backward(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    const struct avg_pool_args *args = CN_NODE_ARGS(n, struct avg_pool_args);
    const pool_geom geom = args->geom;
    bool count_include_pad = args->count_include_pad;
    cn_tensor *gc = cn_contiguous((cn_tensor *)g, err);
    cn_tensor *gx = gc ? zeros_like_input(n, 0, err) : NULL;
    if (gx) {
        int64_t planes = num_planes(gx), in_hw = geom.in[0] * geom.in[1], out_hw = geom.out[0] * geom.out[1];
        const float *pg = cn_data(gc);
        float *px = cn_data(gx);
#pragma omp parallel for schedule(static) if (planes * out_hw * geom.kernel[0] * geom.kernel[1] > PARALLEL_MIN)
        for (int64_t p = 0; p < planes; p++) {
            float *dst = px + p * in_hw;
            const float *src = pg + p * out_hw;
            for (int64_t oh = 0; oh < geom.out[0]; oh++)
                for (int64_t ow = 0; ow < geom.out[1]; ow++) {
                    avg_window a = avg_window_at(&geom, oh, ow, count_include_pad);
                    if (a.divisor == 0) continue;
                    float share = (float)(src[oh * geom.out[1] + ow] / a.divisor);
                    for (int64_t h = a.h0; h < a.h1; h++)
                        for (int64_t w = a.w0; w < a.w1; w++) dst[h * geom.in[1] + w] += share;
                }
        }
    }
    cn_release(gc);
    gi[0] = gx;
    return gx ? 0 : -1;
}

/* A[o, i] = 1 / share for i in the window of o, along one axis (an empty window: a zero row). */
static cn_tensor *avg_matrix(const pool_geom *g, int axis, bool count_include_pad, cn_error *err) {
    const int64_t shape[2] = {g->out[axis], g->in[axis]};
    cn_tensor *a = cn_zeros(2, shape, err);
    for (int64_t o = 0; a && o < g->out[axis]; o++) {
        int64_t lo, hi, share = avg_axis(g, axis, o, count_include_pad, &lo, &hi);
        for (int64_t i = lo; i < hi; i++) cn_data(a)[o * g->in[axis] + i] = (float)(1.0 / (double)share);
    }
    return a;
}

/* The recorded backward (create_graph): average pooling is separable, out = A_h x A_w^T. */
static int avg_pool_backward_graph(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    const struct avg_pool_args *args = CN_NODE_ARGS(n, struct avg_pool_args);
    cn_tensor *a_h = avg_matrix(&args->geom, 0, args->count_include_pad, err);
    cn_tensor *a_w = avg_matrix(&args->geom, 1, args->count_include_pad, err);
    return (gi[0] = resize_backward_graph(g, a_h, a_w, err)) ? 0 : -1;
}

static const cn_op_def op_avg_pool2d = {"avg_pool2d", avg_pool_backward, avg_pool_backward_graph};

cn_tensor *cn_avg_pool2d(const cn_tensor *x, const int64_t kernel[2], const int64_t stride[2],
                         const int64_t padding[2], bool ceil_mode, bool count_include_pad, cn_error *err) {
    pool_geom geom;
    if (pool_setup("avg_pool2d", x, kernel, stride, padding, NULL, ceil_mode, &geom, err)) return NULL;
    cn_tensor *r;
    CN_WITHOUT_GRAD(r = avg_pool_forward(x, &geom, count_include_pad, err));
    cn_node *node;
    cn_tensor *in = (cn_tensor *)x;
    r = cn_record_result(r, &op_avg_pool2d, 1, &in, &node, err);
    if (node)
        *CN_NODE_ARGS(node, struct avg_pool_args) =
            (struct avg_pool_args){.geom = geom, .count_include_pad = count_include_pad};
    return r;
}

/* ---- max pooling -----------------------------------------------------------------------------
 * Window of (oh, ow): rows oh sH - pH + i dH for i in [0, kH) that fall inside [0, H); likewise
 * columns. out = the max, where a NaN always wins (torch: `val > max || isnan(val)`), and the first
 * of equal maxima is kept. The argmax (h W + w within the plane) is recorded for backward:
 * gx[argmax] += g. */

static cn_tensor *max_pool_forward(const cn_tensor *x, const pool_geom *g, int64_t **argmax, cn_error *err) {
    cn_tensor *xc = cn_contiguous((cn_tensor *)x, err);
    cn_tensor *out = xc ? new_output(x, g->out[0], g->out[1], err) : NULL;
    int64_t planes = num_planes(x), in_hw = g->in[0] * g->in[1], out_hw = g->out[0] * g->out[1];
    int64_t *idx = NULL;
    if (out && argmax) {
        idx = malloc((size_t)(planes * out_hw > 0 ? planes * out_hw : 1) * sizeof *idx);
        if (!idx) {
            cn_error_set(err, "max_pool2d: out of memory for the argmax of %lld outputs", (ll)(planes * out_hw));
            cn_release(out);
            out = NULL;
        }
    }
    if (out) {
        const float *px = cn_data(xc);
        float *po = cn_data(out);
#pragma omp parallel for schedule(static) if (planes * out_hw * g->kernel[0] * g->kernel[1] > PARALLEL_MIN)
        for (int64_t p = 0; p < planes; p++) {
            const float *src = px + p * in_hw;
            for (int64_t oh = 0; oh < g->out[0]; oh++) {
                int64_t h0 = oh * g->stride[0] - g->padding[0];
                int64_t h1 = h0 + (g->kernel[0] - 1) * g->dilation[0] + 1;
                if (h1 > g->in[0]) h1 = g->in[0];
                while (h0 < 0) h0 += g->dilation[0];
                for (int64_t ow = 0; ow < g->out[1]; ow++) {
                    int64_t w0 = ow * g->stride[1] - g->padding[1];
                    int64_t w1 = w0 + (g->kernel[1] - 1) * g->dilation[1] + 1;
                    if (w1 > g->in[1]) w1 = g->in[1];
                    while (w0 < 0) w0 += g->dilation[1];
                    float best = -INFINITY;
                    int64_t at = h0 * g->in[1] + w0;
                    for (int64_t h = h0; h < h1; h += g->dilation[0])
                        for (int64_t w = w0; w < w1; w += g->dilation[1]) {
                            float v = src[h * g->in[1] + w];
                            if (v > best || isnan(v)) best = v, at = h * g->in[1] + w;
                        }
                    int64_t o = p * out_hw + oh * g->out[1] + ow;
                    po[o] = best;
                    if (idx) idx[o] = at;
                }
            }
        }
    }
    cn_release(xc);
    if (argmax) *argmax = out ? idx : NULL;
    return out;
}

/* ctx = int64_t argmax[planes * out_h * out_w] from the forward (a variable-length array: ctx, not
 * args) */
static int max_pool_backward(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    const int64_t *idx = n->ctx;
    cn_tensor *gc = cn_contiguous((cn_tensor *)g, err);
    cn_tensor *gx = gc ? zeros_like_input(n, 0, err) : NULL;
    if (gx) {
        const cn_tensor *x = n->inputs[0];
        int64_t planes = num_planes(x), in_hw = x->shape[x->ndim - 2] * x->shape[x->ndim - 1];
        int64_t out_hw = g->shape[g->ndim - 2] * g->shape[g->ndim - 1];
        const float *pg = cn_data(gc);
        float *px = cn_data(gx);
#pragma omp parallel for schedule(static) if (planes * out_hw > PARALLEL_MIN)
        for (int64_t p = 0; p < planes; p++) {
            float *dst = px + p * in_hw;
            for (int64_t o = p * out_hw; o < (p + 1) * out_hw; o++)
                if (idx[o] >= 0 && idx[o] < in_hw) dst[idx[o]] += pg[o]; /* an empty window has none */
        }
    }
    cn_release(gc);
    gi[0] = gx;
    return gx ? 0 : -1;
}

static const cn_op_def op_max_pool2d = {"max_pool2d", max_pool_backward, NULL};

cn_tensor *cn_max_pool2d(const cn_tensor *x, const int64_t kernel[2], const int64_t stride[2],
                         const int64_t padding[2], const int64_t dilation[2], bool ceil_mode, cn_error *err) {
    pool_geom geom;
    if (pool_setup("max_pool2d", x, kernel, stride, padding, dilation, ceil_mode, &geom, err)) return NULL;
    bool want_grad = cn_needs_grad(1, &x);
    int64_t *argmax = NULL;
    cn_tensor *r;
    CN_WITHOUT_GRAD(r = max_pool_forward(x, &geom, want_grad ? &argmax : NULL, err));
    cn_node *node;
    cn_tensor *in = (cn_tensor *)x;
    r = cn_record_result(r, &op_max_pool2d, 1, &in, &node, err);
    if (node) {
        node->ctx = argmax;
        node->ctx_free = free;
    } else {
        free(argmax);
    }
    return r;
}

/* ---- adaptive average pooling ----------------------------------------------------------------
 * Output i along an axis averages inputs [floor(i in / out), ceil((i + 1) in / out)) (torch's
 * start_index / end_index in integers). Backward: g / window size to each input of the window. */

static int64_t adaptive_start(int64_t i, int64_t out, int64_t in) { return (i / out) * in + ((i % out) * in) / out; }
static int64_t adaptive_end(int64_t i, int64_t out, int64_t in) { return 1 + ((i + 1) * in - 1) / out; }

static cn_tensor *adaptive_forward(const cn_tensor *x, int64_t out_h, int64_t out_w, cn_error *err) {
    cn_tensor *xc = cn_contiguous((cn_tensor *)x, err);
    cn_tensor *out = xc ? new_output(x, out_h, out_w, err) : NULL;
    if (out) {
        int64_t in_h = x->shape[x->ndim - 2], in_w = x->shape[x->ndim - 1], planes = num_planes(x);
        const float *px = cn_data(xc);
        float *po = cn_data(out);
#pragma omp parallel for schedule(static) if (planes * in_h * in_w > PARALLEL_MIN)
        for (int64_t p = 0; p < planes; p++) {
            const float *src = px + p * in_h * in_w;
            float *dst = po + p * out_h * out_w;
            for (int64_t oh = 0; oh < out_h; oh++) {
                int64_t h0 = adaptive_start(oh, out_h, in_h), h1 = adaptive_end(oh, out_h, in_h);
                for (int64_t ow = 0; ow < out_w; ow++) {
                    int64_t w0 = adaptive_start(ow, out_w, in_w), w1 = adaptive_end(ow, out_w, in_w);
                    double sum = 0;
                    for (int64_t h = h0; h < h1; h++)
                        for (int64_t w = w0; w < w1; w++) sum += src[h * in_w + w];
                    dst[oh * out_w + ow] = (float)(sum / (double)((h1 - h0) * (w1 - w0)));
                }
            }
        }
    }
    cn_release(xc);
    return out;
}

static int adaptive_backward(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    const cn_tensor *x = n->inputs[0];
    int64_t in_h = x->shape[x->ndim - 2], in_w = x->shape[x->ndim - 1], planes = num_planes(x);
    int64_t out_h = g->shape[g->ndim - 2], out_w = g->shape[g->ndim - 1];
    cn_tensor *gc = cn_contiguous((cn_tensor *)g, err);
    cn_tensor *gx = gc ? zeros_like_input(n, 0, err) : NULL;
    if (gx) {
        const float *pg = cn_data(gc);
        float *px = cn_data(gx);
#pragma omp parallel for schedule(static) if (planes * in_h * in_w > PARALLEL_MIN)
        for (int64_t p = 0; p < planes; p++) {
            float *dst = px + p * in_h * in_w;
            const float *src = pg + p * out_h * out_w;
            for (int64_t oh = 0; oh < out_h; oh++) {
                int64_t h0 = adaptive_start(oh, out_h, in_h), h1 = adaptive_end(oh, out_h, in_h);
                for (int64_t ow = 0; ow < out_w; ow++) {
                    int64_t w0 = adaptive_start(ow, out_w, in_w), w1 = adaptive_end(ow, out_w, in_w);
                    float share = (float)(src[oh * out_w + ow] / (double)((h1 - h0) * (w1 - w0)));
                    for (int64_t h = h0; h < h1; h++)
                        for (int64_t w = w0; w < w1; w++) dst[h * in_w + w] += share;
                }
            }
        }
    }
    cn_release(gc);
    gi[0] = gx;
    return gx ? 0 : -1;
}

/* A[o, i] = 1 / window size for i in o's window, along one axis. */
static cn_tensor *adaptive_matrix(int64_t out, int64_t in, cn_error *err) {
    const int64_t shape[2] = {out, in};
    cn_tensor *a = cn_zeros(2, shape, err);
    for (int64_t o = 0; a && o < out; o++) {
        int64_t lo = adaptive_start(o, out, in), hi = adaptive_end(o, out, in);
        for (int64_t i = lo; i < hi; i++) cn_data(a)[o * in + i] = (float)(1.0 / (double)(hi - lo));
    }
    return a;
}

/* The recorded backward (create_graph): separable too, out = A_h x A_w^T. */
static int adaptive_backward_graph(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    const cn_tensor *x = n->inputs[0];
    int64_t in_h = x->shape[x->ndim - 2], in_w = x->shape[x->ndim - 1];
    cn_tensor *a_h = adaptive_matrix(g->shape[g->ndim - 2], in_h, err);
    cn_tensor *a_w = adaptive_matrix(g->shape[g->ndim - 1], in_w, err);
    return (gi[0] = resize_backward_graph(g, a_h, a_w, err)) ? 0 : -1;
}

static const cn_op_def op_adaptive_avg_pool2d = {"adaptive_avg_pool2d", adaptive_backward, adaptive_backward_graph};

cn_tensor *cn_adaptive_avg_pool2d(const cn_tensor *x, int64_t out_h, int64_t out_w, cn_error *err) {
    if (check_spatial(x, "adaptive_avg_pool2d", true, err)) return NULL;
    if (out_h < 1 || out_w < 1) {
        char s[160];
        cn_error_set(err, "adaptive_avg_pool2d: output size must be positive, got %lldx%lld for input %s",
                     (ll)out_h, (ll)out_w, cn_shape_str(s, sizeof s, x->ndim, x->shape));
        return NULL;
    }
    cn_tensor *r;
    CN_WITHOUT_GRAD(r = adaptive_forward(x, out_h, out_w, err));
    cn_tensor *in = (cn_tensor *)x;
    return cn_record_result(r, &op_adaptive_avg_pool2d, 1, &in, NULL, err);
}

/* ---- padding ---------------------------------------------------------------------------------
 * Each padded dim gets a map from output to input index (torch's reflection/replication kernels,
 * which crop for negative pads: o_start = max(0, l), i_start = max(0, -l)):
 *   constant:  j - l when inside [0, in), else -1 (the fill value)
 *   reflect:   j < l: 2l - j;  j < in + l: j;  else 2(in + l - 1) - j;  then - o_start + i_start
 *   replicate: j < l: l;       j < in + l: j;  else in + l - 1;          then - o_start + i_start
 * The output gathers through the maps; backward scatters g back along them (+=). */

typedef struct pad_args {
    int n_pairs;
    cn_pad_mode mode;
    int64_t pads[2 * CN_MAX_DIMS];
} pad_args;

typedef struct pad_plan {
    int ndim;
    int64_t in_shape[CN_MAX_DIMS], out_shape[CN_MAX_DIMS];
    int64_t *map[CN_MAX_DIMS]; /* NULL: identity */
    int64_t *buf;              /* owns the maps */
} pad_plan;

static const char *pad_mode_name(cn_pad_mode mode) {
    return mode == CN_PAD_CONSTANT ? "constant" : mode == CN_PAD_REFLECT ? "reflect" : "replicate";
}

/* Validates the padding of x and builds the maps. Returns 0, or -1 with err filled. */
static int pad_plan_make(const cn_tensor *x, const pad_args *a, pad_plan *p, cn_error *err) {
    char s[160];
    const char *mode = pad_mode_name(a->mode);
    memset(p, 0, sizeof *p);
    if (a->mode != CN_PAD_CONSTANT && a->mode != CN_PAD_REFLECT && a->mode != CN_PAD_REPLICATE) {
        cn_error_set(err, "pad: unknown mode %d", (int)a->mode);
        return -1;
    }
    if (a->n_pairs < 0 || a->n_pairs > x->ndim) {
        cn_error_set(err, "pad: %d padding pairs for a %d-D input %s", a->n_pairs, x->ndim,
                     cn_shape_str(s, sizeof s, x->ndim, x->shape));
        return -1;
    }
    if (a->mode != CN_PAD_CONSTANT && (a->n_pairs < 1 || a->n_pairs > 3)) {
        cn_error_set(err, "pad: %s mode pads 1 to 3 trailing dims, got %d padding pairs for input %s", mode,
                     a->n_pairs, cn_shape_str(s, sizeof s, x->ndim, x->shape));
        return -1;
    }
    p->ndim = x->ndim;
    size_t total = 0;
    for (int d = 0; d < x->ndim; d++) {
        p->in_shape[d] = p->out_shape[d] = x->shape[d];
        int k = x->ndim - 1 - d; /* pads[2k], pads[2k+1] pad dim d */
        if (k >= a->n_pairs) continue;
        int64_t l = a->pads[2 * k], r = a->pads[2 * k + 1], in = x->shape[d];
        if (__builtin_add_overflow(in, l, &p->out_shape[d]) ||
            __builtin_add_overflow(p->out_shape[d], r, &p->out_shape[d])) {
            cn_error_set(err, "pad: padding (%lld, %lld) of dim %d of input %s overflows", (ll)l, (ll)r,
                         d - x->ndim, cn_shape_str(s, sizeof s, x->ndim, x->shape));
            return -1;
        }
        if (a->mode == CN_PAD_REFLECT && (l >= in || r >= in)) {
            cn_error_set(err, "pad: reflect padding (%lld, %lld) must be smaller than the size %lld of dim %d of "
                         "input %s", (ll)l, (ll)r, (ll)in, d - x->ndim, cn_shape_str(s, sizeof s, x->ndim, x->shape));
            return -1;
        }
        if (p->out_shape[d] < (a->mode == CN_PAD_CONSTANT ? 0 : 1)) {
            cn_error_set(err, "pad: padding (%lld, %lld) leaves dim %d of input %s with size %lld in %s mode",
                         (ll)l, (ll)r, d - x->ndim, cn_shape_str(s, sizeof s, x->ndim, x->shape),
                         (ll)p->out_shape[d], mode);
            return -1;
        }
        total += (size_t)p->out_shape[d];
    }
    /* the maps and the output are sized by out_shape: refuse one no tensor can have first */
    if (cn_shape_numel_checked(p->ndim, p->out_shape, NULL, "pad", err)) return -1;
    p->buf = malloc((total ? total : 1) * sizeof *p->buf);
    if (!p->buf) {
        cn_error_set(err, "pad: out of memory");
        return -1;
    }
    int64_t *m = p->buf;
    for (int d = 0; d < x->ndim; d++) {
        int k = x->ndim - 1 - d;
        if (k >= a->n_pairs) continue;
        int64_t l = a->pads[2 * k], in = x->shape[d], out = p->out_shape[d];
        int64_t i_start = l < 0 ? -l : 0, o_start = l > 0 ? l : 0;
        p->map[d] = m;
        for (int64_t j = 0; j < out; j++) {
            int64_t src;
            if (a->mode == CN_PAD_CONSTANT) {
                src = j - l;
                m[j] = src >= 0 && src < in ? src : -1;
                continue;
            }
            bool reflect = a->mode == CN_PAD_REFLECT;
            if (j < l) src = reflect ? 2 * l - j : l;
            else if (j < in + l) src = j;
            else src = reflect ? 2 * (in + l - 1) - j : in + l - 1;
            m[j] = src - o_start + i_start; /* in [0, in) given the checks above */
        }
        m += out;
    }
    return 0;
}

/* Input offset (in elements, with the given strides) of output row r (all dims but the last), or -1
 * when the row lies in constant padding. */
static int64_t pad_row_offset(const pad_plan *p, int64_t r, const int64_t *stride) {
    int64_t off = 0;
    for (int d = p->ndim - 2; d >= 0; d--) {
        int64_t i = r % p->out_shape[d];
        r /= p->out_shape[d];
        int64_t s = p->map[d] ? p->map[d][i] : i;
        if (s < 0) return -1;
        off += s * stride[d];
    }
    return off;
}

/* Where an output row's last dim maps onto a contiguous input run: output [j0, j1) from input
 * [s0, s0 + j1 - j0) with stride 1, and constant padding elsewhere (ok false otherwise: reflect,
 * replicate, a strided input). Rows then copy and add with memcpy and vector loops. */
typedef struct last_run {
    bool ok;
    int64_t j0, j1, s0;
} last_run;

static last_run last_run_of(const int64_t *lmap, int64_t len, int64_t last_stride) {
    last_run run = {.ok = last_stride == 1, .j0 = 0, .j1 = len, .s0 = 0};
    if (!lmap || !run.ok) return run;
    int64_t j = 0;
    while (j < len && lmap[j] < 0) j++;
    run.j0 = j;
    run.s0 = j < len ? lmap[j] : 0;
    while (j < len && lmap[j] == run.s0 + (j - run.j0)) j++;
    run.j1 = j;
    while (j < len && lmap[j] < 0) j++;
    run.ok = j == len;
    return run;
}

static cn_tensor *pad_forward(const cn_tensor *x, const pad_args *a, float value, cn_error *err) {
    pad_plan p;
    if (pad_plan_make(x, a, &p, err)) return NULL;
    cn_tensor *out = cn_empty(p.ndim, p.out_shape, err);
    if (out && cn_numel(out) > 0) {
        int last = p.ndim - 1;
        int64_t len = p.ndim ? p.out_shape[last] : 1, rows = (int64_t)cn_numel(out) / len;
        int64_t last_stride = p.ndim ? x->stride[last] : 0;
        const int64_t *lmap = p.ndim ? p.map[last] : NULL;
        const float *px = cn_data(x);
        float *po = cn_data(out);
        last_run run = last_run_of(lmap, len, last_stride);
#pragma omp parallel for schedule(static) if (rows * len > PARALLEL_MIN)
        for (int64_t r = 0; r < rows; r++) {
            float *dst = po + r * len;
            int64_t off = pad_row_offset(&p, r, x->stride);
            if (off < 0) {
                for (int64_t j = 0; j < len; j++) dst[j] = value;
                continue;
            }
            const float *src = px + off;
            if (run.ok) { /* constant padding around a copied run */
                for (int64_t j = 0; j < run.j0; j++) dst[j] = value;
                memcpy(dst + run.j0, src + run.s0, (size_t)(run.j1 - run.j0) * sizeof *dst);
                for (int64_t j = run.j1; j < len; j++) dst[j] = value;
                continue;
            }
            for (int64_t j = 0; j < len; j++) {
                int64_t s = lmap ? lmap[j] : j;
                dst[j] = s < 0 ? value : src[s * last_stride];
            }
        }
    }
    free(p.buf);
    return out;
}

/* ctx = pad_args (larger than a node's args area). Constant maps are one-to-one, so rows scatter in parallel; reflect/replicate
 * rows of the same leading (unpadded) plane may hit the same input, so those go plane by plane. */
static int pad_backward(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    const pad_args *a = n->ctx;
    pad_plan p;
    if (pad_plan_make(n->inputs[0], a, &p, err)) return -1;
    cn_tensor *gc = cn_contiguous((cn_tensor *)g, err);
    cn_tensor *gx = gc ? zeros_like_input(n, 0, err) : NULL;
    if (gx && cn_numel(gc) > 0 && cn_numel(gx) > 0) {
        int last = p.ndim - 1;
        int64_t len = p.ndim ? p.out_shape[last] : 1, rows = (int64_t)cn_numel(gc) / len;
        int64_t last_stride = p.ndim ? gx->stride[last] : 0;
        const int64_t *lmap = p.ndim ? p.map[last] : NULL;
        /* rows per independent group: 1 for constant, else the rows of one leading plane */
        int64_t group = 1;
        if (a->mode != CN_PAD_CONSTANT)
            for (int d = p.ndim - a->n_pairs; d < last; d++) group *= p.out_shape[d];
        int64_t groups = rows / group;
        last_run run = last_run_of(lmap, len, last_stride);
        const float *pg = cn_data(gc);
        float *px = cn_data(gx);
#pragma omp parallel for schedule(static) if (rows * len > PARALLEL_MIN)
        for (int64_t q = 0; q < groups; q++)
            for (int64_t r = q * group; r < (q + 1) * group; r++) {
                int64_t off = pad_row_offset(&p, r, gx->stride);
                if (off < 0) continue;
                const float *src = pg + r * len;
                float *dst = px + off;
                if (run.ok) {
                    for (int64_t j = run.j0; j < run.j1; j++) dst[run.s0 + j - run.j0] += src[j];
                    continue;
                }
                for (int64_t j = 0; j < len; j++) {
                    int64_t s = lmap ? lmap[j] : j;
                    if (s >= 0) dst[s * last_stride] += src[j];
                }
            }
    }
    free(p.buf);
    cn_release(gc);
    gi[0] = gx;
    return gx ? 0 : -1;
}

/* The recorded backward of constant padding (create_graph): g padded by the negated pads, i.e.
 * cropped back where x was padded (and zero-padded where x was cropped). */
static int pad_backward_graph(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    const pad_args *a = n->ctx;
    if (a->mode != CN_PAD_CONSTANT) {
        cn_error_set(err, "reflect and replicate padding have no differentiable backward yet (create_graph)");
        return -1;
    }
    int64_t pads[2 * CN_MAX_DIMS];
    for (int i = 0; i < 2 * a->n_pairs; i++) pads[i] = -a->pads[i];
    return (gi[0] = cn_pad(g, a->n_pairs, pads, CN_PAD_CONSTANT, 0.0f, err)) ? 0 : -1;
}

static const cn_op_def op_pad = {"pad", pad_backward, pad_backward_graph};

cn_tensor *cn_pad(const cn_tensor *x, int n_pairs, const int64_t *pads, cn_pad_mode mode, float value,
                  cn_error *err) {
    pad_args a = {.n_pairs = n_pairs, .mode = mode};
    if (n_pairs > 0 && !pads) {
        cn_error_set(err, "pad: padding missing");
        return NULL;
    }
    if (n_pairs > 0 && n_pairs <= CN_MAX_DIMS) memcpy(a.pads, pads, (size_t)(2 * n_pairs) * sizeof *pads);
    cn_tensor *r;
    CN_WITHOUT_GRAD(r = pad_forward(x, &a, value, err));
    cn_node *node;
    cn_tensor *in = (cn_tensor *)x;
    r = cn_record_result(r, &op_pad, 1, &in, &node, err);
    if (node) {
        pad_args *ctx = malloc(sizeof *ctx);
        if (!ctx) {
            cn_release(r);
            cn_error_set(err, "pad: out of memory recording the autograd graph");
            return NULL;
        }
        *ctx = a;
        node->ctx = ctx;
        node->ctx_free = free;
    }
    return r;
}
