/* test_nn.c — the neural-network functional ops (ops_nn.h) against naive double-precision
 * references written here, independently of the engine: each case compares the forward values, then
 * backpropagates a random upstream gradient G with cn_backward and compares every input's gradient
 * with central differences of sum(G * reference) in double (step 1e-6, so exact to ~1e-9). Also:
 * dropout by statistics and identities, the error messages, and tensor memory back to its baseline
 * once everything is released.
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "autograd.h"
#include "ctest.h"
#include "ops.h"
#include "ops_nn.h"
#include "rng.h"
#include "tensor.h"
#include "test_util.h"

/* ---- helpers ------------------------------------------------------------------------------- */

/* Values uniform in [-scale, scale). */
static cn_tensor *symmetric(int ndim, const int64_t *shape, double scale) {
    return random_tensor(ndim, shape, -scale, scale);
}

static cn_tensor *leaf(cn_tensor *t) {
    t->requires_grad = true;
    return t;
}

static cn_tensor *from_values(int ndim, const int64_t *shape, const float *values) {
    cn_error err;
    return cn_from_data(ndim, shape, values, &err);
}

/* ---- the reference harness ----------------------------------------------------------------- */

typedef struct ref_case ref_case;
typedef void (*ref_fn)(const ref_case *c, double *out);

struct ref_case {
    int n_in;
    cn_tensor *in[4]; /* engine inputs */
    double *x[4];     /* their values in double, row-major: what the reference reads */
    ref_fn ref;       /* the reference forward, writing every output element */
    const void *ctx;  /* op parameters for the reference */
};

static void case_init(ref_case *c, int n_in, cn_tensor *const *ins, ref_fn ref, const void *ctx) {
    c->n_in = n_in;
    c->ref = ref;
    c->ctx = ctx;
    for (int i = 0; i < n_in; i++) {
        c->in[i] = ins[i];
        size_t n = cn_numel(ins[i]);
        c->x[i] = malloc((n ? n : 1) * sizeof(double));
        for (size_t e = 0; e < n; e++) c->x[i][e] = elem(ins[i], e);
    }
}

static double weighted_ref(const ref_case *c, const float *g, size_t n_out, double *scratch) {
    c->ref(c, scratch);
    double s = 0.0;
    for (size_t i = 0; i < n_out; i++) s += (double)g[i] * scratch[i];
    return s;
}

/* Checks out (consumed) against the reference, then the gradients of inputs that require grad.
 * Releases the inputs and frees the case. */
static void check_case(ref_case *c, cn_tensor *out, const char *what, double rtol, double atol) {
    cn_error err;
    if (!out) {
        fprintf(stderr, "  FAIL %s: %s returned NULL\n", ctest_current, what);
        ctest_current_failed = 1;
        goto done;
    }
    size_t n_out = cn_numel(out);
    double *want = malloc((n_out ? n_out : 1) * sizeof *want);
    c->ref(c, want);
    int bad = 0;
    for (size_t i = 0; i < n_out && bad < 3; i++) {
        double got = elem(out, i);
        bool same_nan = isnan(got) && isnan(want[i]);
        if (!same_nan && !(fabs(got - want[i]) <= atol + rtol * fabs(want[i]))) {
            fprintf(stderr, "    %s: output %zu is %.9g, expected %.9g\n", what, i, got, want[i]);
            ctest_current_failed = 1;
            bad++;
        }
    }
    if (out->requires_grad) {
        cn_tensor *g = symmetric(out->ndim, out->shape, 1.0f);
        CHECK(cn_backward(out, g, 0, &err) == 0);
        const float *pg = cn_data(g);
        for (int k = 0; k < c->n_in; k++) {
            cn_tensor *t = c->in[k];
            if (!t->requires_grad) continue;
            CHECK(t->grad != NULL);
            if (!t->grad) continue;
            size_t n = cn_numel(t);
            for (size_t e = 0; e < n && bad < 3; e++) {
                double save = c->x[k][e], h = 1e-6;
                c->x[k][e] = save + h;
                double plus = weighted_ref(c, pg, n_out, want);
                c->x[k][e] = save - h;
                double minus = weighted_ref(c, pg, n_out, want);
                c->x[k][e] = save;
                double numeric = (plus - minus) / (2 * h), got = elem(t->grad, e);
                if (!(fabs(got - numeric) <= 10 * atol + 10 * rtol * fabs(numeric))) {
                    fprintf(stderr, "    %s: grad of input %d, element %zu is %.9g, expected %.9g\n", what, k, e,
                            got, numeric);
                    ctest_current_failed = 1;
                    bad++;
                }
            }
        }
        cn_release(g);
    }
    free(want);
done:
    cn_release(out);
    for (int i = 0; i < c->n_in; i++) {
        cn_release(c->in[i]);
        free(c->x[i]);
    }
}

/* ---- linear -------------------------------------------------------------------------------- */

typedef struct { int64_t rows, in, out; bool bias; } linear_ctx;

static void ref_linear(const ref_case *c, double *y) {
    const linear_ctx *p = c->ctx;
    for (int64_t r = 0; r < p->rows; r++)
        for (int64_t j = 0; j < p->out; j++) {
            double acc = p->bias ? c->x[2][j] : 0.0;
            for (int64_t k = 0; k < p->in; k++) acc += c->x[0][r * p->in + k] * c->x[1][j * p->in + k];
            y[r * p->out + j] = acc;
        }
}

static void test_linear(void) {
    cn_error err;
    int64_t xs[3] = {2, 3, 4}, ws[2] = {5, 4}, bs[1] = {5};
    linear_ctx p = {6, 4, 5, true};
    ref_case c;
    cn_tensor *ins[3] = {leaf(symmetric(3, xs, 1)), leaf(symmetric(2, ws, 1)), leaf(symmetric(1, bs, 1))};
    case_init(&c, 3, ins, ref_linear, &p);
    check_case(&c, cn_linear(ins[0], ins[1], ins[2], &err), "linear 3-d with bias", 1e-5, 1e-6);

    /* no bias; the weight a transposed view of a row-major [in, out] (read in place) */
    linear_ctx p2 = {6, 4, 5, false};
    int64_t wts[2] = {4, 5};
    cn_tensor *wt = symmetric(2, wts, 1);
    cn_tensor *ins2[2] = {leaf(symmetric(2, (int64_t[]){6, 4}, 1)), leaf(cn_transpose(wt, 0, 1, &err))};
    cn_release(wt);
    case_init(&c, 2, ins2, ref_linear, &p2);
    check_case(&c, cn_linear(ins2[0], ins2[1], NULL, &err), "linear, transposed weight", 1e-5, 1e-6);

    /* 1-d input, only the bias requires grad; a strided (transposed) input */
    linear_ctx p3 = {1, 4, 5, true};
    cn_tensor *ins3[3] = {symmetric(1, (int64_t[]){4}, 1), symmetric(2, ws, 1), leaf(symmetric(1, bs, 1))};
    case_init(&c, 3, ins3, ref_linear, &p3);
    cn_tensor *y = cn_linear(ins3[0], ins3[1], ins3[2], &err);
    CHECK(y && y->ndim == 1 && y->shape[0] == 5);
    check_case(&c, y, "linear 1-d", 1e-5, 1e-6);

    linear_ctx p4 = {4, 3, 2, true};
    cn_tensor *xt = symmetric(2, (int64_t[]){3, 4}, 1);
    cn_tensor *ins4[3] = {leaf(cn_transpose(xt, 0, 1, &err)), leaf(symmetric(2, (int64_t[]){2, 3}, 1)),
                          symmetric(1, (int64_t[]){2}, 1)};
    cn_release(xt);
    case_init(&c, 3, ins4, ref_linear, &p4);
    check_case(&c, cn_linear(ins4[0], ins4[1], ins4[2], &err), "linear, strided input", 1e-5, 1e-6);
}

/* ---- softmax ------------------------------------------------------------------------------- */

typedef struct { int64_t outer, n, inner; bool log; } softmax_ctx;

static void ref_softmax(const ref_case *c, double *y) {
    const softmax_ctx *p = c->ctx;
    const double *x = c->x[0];
    for (int64_t o = 0; o < p->outer; o++)
        for (int64_t i = 0; i < p->inner; i++) {
            double m = -INFINITY, s = 0.0;
            for (int64_t r = 0; r < p->n; r++) m = fmax(m, x[(o * p->n + r) * p->inner + i]);
            for (int64_t r = 0; r < p->n; r++) s += exp(x[(o * p->n + r) * p->inner + i] - m);
            for (int64_t r = 0; r < p->n; r++) {
                size_t at = (size_t)((o * p->n + r) * p->inner + i);
                y[at] = p->log ? x[at] - m - log(s) : exp(x[at] - m) / s;
            }
        }
}

static void test_softmax(void) {
    cn_error err;
    int64_t shape[3] = {3, 4, 5};
    for (int log_out = 0; log_out < 2; log_out++)
        for (int dim = 0; dim < 3; dim++) {
            softmax_ctx p = {1, shape[dim], 1, log_out};
            for (int d = 0; d < dim; d++) p.outer *= shape[d];
            for (int d = dim + 1; d < 3; d++) p.inner *= shape[d];
            for (int big = 0; big < 2; big++) {
                ref_case c;
                cn_tensor *x = leaf(symmetric(3, shape, big ? 500.0f : 3.0f));
                case_init(&c, 1, &x, ref_softmax, &p);
                char what[64];
                snprintf(what, sizeof what, "%s dim %d%s", log_out ? "log_softmax" : "softmax", dim,
                         big ? " large" : "");
                check_case(&c, log_out ? cn_log_softmax(x, dim, &err) : cn_softmax(x, dim - 3, &err), what,
                           1e-5, 1e-6);
            }
        }
    /* a wide inner block (several tiles) */
    int64_t wide[2] = {3, 150};
    softmax_ctx p = {1, 3, 150, false};
    ref_case c;
    cn_tensor *x = leaf(symmetric(2, wide, 2.0f));
    case_init(&c, 1, &x, ref_softmax, &p);
    check_case(&c, cn_softmax(x, 0, &err), "softmax over dim 0 of [3, 150]", 1e-5, 1e-6);
}

static void test_softmax_special_values(void) {
    cn_error err;
    int64_t s3[1] = {3};
    cn_tensor *x = from_values(1, s3, (float[]){-INFINITY, 0.0f, -INFINITY});
    cn_tensor *y = cn_softmax(x, 0, &err), *ly = cn_log_softmax(x, 0, &err);
    CHECK(elem(y, 0) == 0.0f && elem(y, 1) == 1.0f && elem(y, 2) == 0.0f);
    CHECK(isinf(elem(ly, 0)) && elem(ly, 1) == 0.0f);
    cn_release(x), cn_release(y), cn_release(ly);
    x = from_values(1, s3, (float[]){-INFINITY, -INFINITY, -INFINITY});
    y = cn_softmax(x, 0, &err);
    CHECK(isnan(elem(y, 0))); /* as torch */
    cn_release(x), cn_release(y);
    x = cn_scalar(4.0f, &err);
    y = cn_softmax(x, -1, &err);
    CHECK(y && y->ndim == 0 && elem(y, 0) == 1.0f);
    cn_release(x), cn_release(y);
}

/* ---- attention ----------------------------------------------------------------------------- */

/* Each operand as 4-D [B1, B2, rows, cols] (sizes 1 broadcast); engine tensors may drop leading 1s. */
typedef struct {
    int64_t q[4], k[4], v[4], m[4];
    bool has_mask;
    double scale;
} sdpa_ctx;

static size_t at4(const int64_t *s, int64_t b1, int64_t b2, int64_t r, int64_t col) {
    b1 = s[0] == 1 ? 0 : b1, b2 = s[1] == 1 ? 0 : b2, r = s[2] == 1 ? 0 : r, col = s[3] == 1 ? 0 : col;
    return (size_t)(((b1 * s[1] + b2) * s[2] + r) * s[3] + col);
}

static void ref_sdpa(const ref_case *c, double *out) {
    const sdpa_ctx *p = c->ctx;
    int64_t B1 = p->q[0] > p->k[0] ? p->q[0] : p->k[0], B2 = p->q[1] > p->k[1] ? p->q[1] : p->k[1];
    B1 = B1 > p->v[0] ? B1 : p->v[0], B2 = B2 > p->v[1] ? B2 : p->v[1];
    int64_t lq = p->q[2], d = p->q[3], lk = p->k[2], dv = p->v[3];
    double *s = malloc((size_t)lk * sizeof *s);
    for (int64_t b1 = 0; b1 < B1; b1++)
        for (int64_t b2 = 0; b2 < B2; b2++)
            for (int64_t i = 0; i < lq; i++) {
                double m = -INFINITY, sum = 0.0;
                for (int64_t j = 0; j < lk; j++) {
                    double acc = 0.0;
                    for (int64_t e = 0; e < d; e++)
                        acc += c->x[0][at4(p->q, b1, b2, i, e)] * c->x[1][at4(p->k, b1, b2, j, e)];
                    s[j] = acc * p->scale + (p->has_mask ? c->x[3][at4(p->m, b1, b2, i, j)] : 0.0);
                    m = fmax(m, s[j]);
                }
                for (int64_t j = 0; j < lk; j++) sum += (s[j] = exp(s[j] - m));
                for (int64_t e = 0; e < dv; e++) {
                    double acc = 0.0;
                    for (int64_t j = 0; j < lk; j++) acc += s[j] / sum * c->x[2][at4(p->v, b1, b2, j, e)];
                    out[((b1 * B2 + b2) * lq + i) * dv + e] = acc;
                }
            }
    free(s);
}

static void test_attention(void) {
    cn_error err;
    /* q [2, 3, 4, 5], k [3, 6, 5] (no batch dim 1), v [2, 1, 6, 2], mask [2, 1, 4, 6] with a grad */
    sdpa_ctx p = {{2, 3, 4, 5}, {1, 3, 6, 5}, {2, 1, 6, 2}, {2, 1, 4, 6}, true, 1.0 / sqrt(5.0)};
    ref_case c;
    cn_tensor *ins[4] = {leaf(symmetric(4, p.q, 1)), leaf(symmetric(3, p.k + 1, 1)),
                         leaf(symmetric(4, p.v, 1)), leaf(symmetric(4, p.m, 1))};
    case_init(&c, 4, ins, ref_sdpa, &p);
    cn_tensor *o = cn_scaled_dot_product_attention(ins[0], ins[1], ins[2], ins[3], 0.0, &err);
    CHECK(o && o->ndim == 4 && o->shape[0] == 2 && o->shape[1] == 3 && o->shape[2] == 4 && o->shape[3] == 2);
    check_case(&c, o, "attention, broadcast batch and mask", 1e-5, 1e-6);

    /* 2-d operands, a blocking mask [Lk] broadcast over queries, explicit scale, strided k */
    sdpa_ctx p2 = {{1, 1, 3, 4}, {1, 1, 5, 4}, {1, 1, 5, 3}, {1, 1, 1, 5}, true, 0.8};
    cn_tensor *kt = symmetric(2, (int64_t[]){4, 5}, 1);
    cn_tensor *mask = from_values(1, (int64_t[]){5}, (float[]){0.0f, -INFINITY, 0.5f, 0.0f, -INFINITY});
    cn_tensor *ins2[4] = {leaf(symmetric(2, (int64_t[]){3, 4}, 1)), leaf(cn_transpose(kt, 0, 1, &err)),
                          leaf(symmetric(2, (int64_t[]){5, 3}, 1)), mask};
    cn_release(kt);
    case_init(&c, 4, ins2, ref_sdpa, &p2);
    check_case(&c, cn_scaled_dot_product_attention(ins2[0], ins2[1], ins2[2], ins2[3], 0.8, &err),
               "attention 2-d, -inf mask", 1e-5, 1e-6);

    /* Lq = 1, Lk = 1: weights are 1, q and k get zero gradients */
    sdpa_ctx p3 = {{1, 2, 1, 3}, {1, 2, 1, 3}, {1, 2, 1, 4}, {0}, false, 1.0 / sqrt(3.0)};
    cn_tensor *ins3[3] = {leaf(symmetric(3, p3.q + 1, 1)), leaf(symmetric(3, p3.k + 1, 1)),
                          leaf(symmetric(3, p3.v + 1, 1))};
    case_init(&c, 3, ins3, ref_sdpa, &p3);
    check_case(&c, cn_scaled_dot_product_attention(ins3[0], ins3[1], ins3[2], NULL, -1.0, &err),
               "attention, one key", 1e-5, 1e-6);
}

/* ---- embedding ----------------------------------------------------------------------------- */

typedef struct { const float *ids; int64_t count, dim; } embedding_ctx;

static void ref_embedding(const ref_case *c, double *y) {
    const embedding_ctx *p = c->ctx;
    for (int64_t i = 0; i < p->count; i++)
        for (int64_t j = 0; j < p->dim; j++) y[i * p->dim + j] = c->x[0][(int64_t)p->ids[i] * p->dim + j];
}

static void test_embedding(void) {
    cn_error err;
    static const float ids_v[6] = {4, 0, 2, 2, 4, 4};
    cn_tensor *ids = from_values(2, (int64_t[]){2, 3}, ids_v);
    embedding_ctx p = {ids_v, 6, 3};
    ref_case c;
    cn_tensor *w = leaf(symmetric(2, (int64_t[]){5, 3}, 1));
    case_init(&c, 1, &w, ref_embedding, &p);
    cn_tensor *y = cn_embedding(ids, w, &err);
    CHECK(y && y->ndim == 3 && y->shape[0] == 2 && y->shape[1] == 3 && y->shape[2] == 3);
    check_case(&c, y, "embedding", 1e-6, 1e-7);
    cn_release(ids);
}

/* ---- mse, l1 ------------------------------------------------------------------------------- */

typedef struct { int64_t rows, cols; bool b_row, l1; cn_reduction reduction; } pointwise_ctx;

static void ref_pointwise(const ref_case *c, double *y) {
    const pointwise_ctx *p = c->ctx;
    double acc = 0.0;
    for (int64_t r = 0; r < p->rows; r++)
        for (int64_t j = 0; j < p->cols; j++) {
            double d = c->x[0][r * p->cols + j] - c->x[1][p->b_row ? j : r * p->cols + j];
            double l = p->l1 ? fabs(d) : d * d;
            if (p->reduction == CN_REDUCTION_NONE) y[r * p->cols + j] = l;
            acc += l;
        }
    if (p->reduction == CN_REDUCTION_SUM) y[0] = acc;
    if (p->reduction == CN_REDUCTION_MEAN) y[0] = acc / (double)(p->rows * p->cols);
}

static void test_pointwise_losses(void) {
    cn_error err;
    const cn_reduction reds[3] = {CN_REDUCTION_NONE, CN_REDUCTION_MEAN, CN_REDUCTION_SUM};
    for (int l1 = 0; l1 < 2; l1++)
        for (int r = 0; r < 3; r++)
            for (int b_row = 0; b_row < 2; b_row++) {
                pointwise_ctx p = {3, 4, b_row, l1, reds[r]};
                ref_case c;
                cn_tensor *ins[2] = {leaf(symmetric(2, (int64_t[]){3, 4}, 1)),
                                     leaf(b_row ? symmetric(1, (int64_t[]){4}, 1)
                                                : symmetric(2, (int64_t[]){3, 4}, 1))};
                case_init(&c, 2, ins, ref_pointwise, &p);
                char what[64];
                snprintf(what, sizeof what, "%s reduction %d%s", l1 ? "l1" : "mse", r, b_row ? " broadcast" : "");
                cn_tensor *y = l1 ? cn_l1_loss(ins[0], ins[1], reds[r], &err) : cn_mse_loss(ins[0], ins[1], reds[r], &err);
                CHECK(y && y->ndim == (reds[r] == CN_REDUCTION_NONE ? 2 : 0));
                check_case(&c, y, what, 1e-6, 1e-6);
            }
}

/* ---- cross entropy ------------------------------------------------------------------------- */

typedef struct {
    int64_t n, classes, inner, ignore;
    const float *ids;      /* class ids, or NULL: probabilities in x[1] */
    const double *weight;  /* or NULL */
    double eps;
    cn_reduction reduction;
} ce_ctx;

static void ref_ce(const ref_case *c, double *y) {
    const ce_ctx *p = c->ctx;
    int64_t C = p->classes, in = p->inner;
    double total = 0.0, denom = 0.0;
    double *logp = malloc((size_t)C * sizeof *logp);
    for (int64_t n = 0; n < p->n; n++)
        for (int64_t s = 0; s < in; s++) {
            double m = -INFINITY, sum = 0.0, l = 0.0;
            for (int64_t k = 0; k < C; k++) m = fmax(m, c->x[0][(n * C + k) * in + s]);
            for (int64_t k = 0; k < C; k++) sum += exp(c->x[0][(n * C + k) * in + s] - m);
            for (int64_t k = 0; k < C; k++) logp[k] = c->x[0][(n * C + k) * in + s] - m - log(sum);
            if (p->ids) {
                int64_t t = (int64_t)p->ids[n * in + s];
                if (t != p->ignore) {
                    double wt = p->weight ? p->weight[t] : 1.0, smooth = 0.0;
                    for (int64_t k = 0; k < C; k++) smooth -= (p->weight ? p->weight[k] : 1.0) * logp[k];
                    l = -(1 - p->eps) * wt * logp[t] + p->eps / (double)C * smooth;
                    denom += wt;
                }
            } else {
                for (int64_t k = 0; k < C; k++) {
                    double q = (1 - p->eps) * c->x[1][(n * C + k) * in + s] + p->eps / (double)C;
                    l -= (p->weight ? p->weight[k] : 1.0) * q * logp[k];
                }
                denom += 1.0;
            }
            if (p->reduction == CN_REDUCTION_NONE) y[n * in + s] = l;
            total += l;
        }
    free(logp);
    if (p->reduction == CN_REDUCTION_SUM) y[0] = total;
    if (p->reduction == CN_REDUCTION_MEAN) y[0] = total / denom;
}

static void test_cross_entropy(void) {
    cn_error err;
    static const float ids[8] = {2, 0, 3, 3, 1, 0, 2, 3}; /* [2, 4] for logits [2, 4, 4] */
    static const double weight_v[4] = {0.5, 1.5, 1.0, 2.0};
    cn_tensor *weight = from_values(1, (int64_t[]){4}, (float[]){0.5f, 1.5f, 1.0f, 2.0f});
    const cn_reduction reds[3] = {CN_REDUCTION_NONE, CN_REDUCTION_MEAN, CN_REDUCTION_SUM};
    for (int r = 0; r < 3; r++)
        for (int variant = 0; variant < 3; variant++) {
            /* 0: plain [8, 4]; 1: weight + ignore 3 + smoothing [8, 4]; 2: [2, 4, 4] weight + smoothing */
            bool spatial = variant == 2;
            ce_ctx p = {spatial ? 2 : 8, 4, spatial ? 4 : 1, variant == 1 ? 3 : -100, ids,
                        variant ? weight_v : NULL, variant ? 0.15 : 0.0, reds[r]};
            ref_case c;
            cn_tensor *x = leaf(symmetric(spatial ? 3 : 2, spatial ? (int64_t[]){2, 4, 4} : (int64_t[]){8, 4}, 2));
            cn_tensor *t = from_values(spatial ? 2 : 1, spatial ? (int64_t[]){2, 4} : (int64_t[]){8}, ids);
            case_init(&c, 1, &x, ref_ce, &p);
            char what[64];
            snprintf(what, sizeof what, "cross_entropy variant %d reduction %d", variant, r);
            check_case(&c, cn_cross_entropy(x, t, variant ? weight : NULL, reds[r], p.ignore, p.eps, &err), what,
                       1e-5, 1e-6);
            cn_release(t);
        }
    /* probabilities, differentiable in both */
    for (int r = 0; r < 3; r++) {
        ce_ctx p = {3, 4, 1, -100, NULL, weight_v, 0.1, reds[r]};
        ref_case c;
        cn_tensor *ins[2] = {leaf(symmetric(2, (int64_t[]){3, 4}, 2)), leaf(symmetric(2, (int64_t[]){3, 4}, 1))};
        case_init(&c, 2, ins, ref_ce, &p);
        check_case(&c, cn_cross_entropy(ins[0], ins[1], weight, reds[r], -100, 0.1, &err), "cross_entropy probs",
                   1e-5, 1e-6);
    }
    /* every target ignored: mean is 0/0 */
    cn_tensor *x = symmetric(2, (int64_t[]){2, 4}, 1);
    cn_tensor *t = from_values(1, (int64_t[]){2}, (float[]){1, 1});
    cn_tensor *y = cn_cross_entropy(x, t, NULL, CN_REDUCTION_MEAN, 1, 0.0, &err);
    CHECK(y && isnan(elem(y, 0)));
    cn_release(y), cn_release(x), cn_release(t), cn_release(weight);
}

/* ---- dropout ------------------------------------------------------------------------------- */

static void test_dropout(void) {
    cn_error err;
    int64_t n = 100000;
    cn_tensor *x = leaf(cn_ones(1, &n, &err));
    cn_rng_seed(99);
    cn_tensor *y = cn_dropout(x, 0.25, true, &err);
    cn_rng_seed(99);
    cn_tensor *y2 = cn_dropout(x, 0.25, true, &err);
    CHECK(y && y2);
    size_t zeros = 0, same = 0;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        float v = elem(y, (size_t)i);
        zeros += v == 0.0f;
        sum += v;
        same += v == elem(y2, (size_t)i);
        if (v != 0.0f) CHECK_CLOSE(v, 1.0 / 0.75, 1e-6, 0);
    }
    CHECK(same == (size_t)n);                               /* seeded: reproducible */
    CHECK_CLOSE((double)zeros / (double)n, 0.25, 0, 0.007); /* std 0.0014 */
    CHECK_CLOSE(sum / (double)n, 1.0, 0, 0.01);             /* mean preserved; std 0.0018 */
    cn_tensor *s = cn_sum(y, 0, NULL, false, &err);
    CHECK(cn_backward(s, NULL, 0, &err) == 0);
    for (int64_t i = 0; i < n; i += 97) CHECK(elem(x->grad, (size_t)i) == elem(y, (size_t)i)); /* x = 1: g = mask */
    cn_release(s), cn_release(y), cn_release(y2);

    cn_rng_state before = cn_rng_get_state();
    cn_tensor *same_x = cn_dropout(x, 0.5, false, &err); /* eval: x itself */
    CHECK(same_x == x);
    cn_release(same_x);
    same_x = cn_dropout(x, 0.0, true, &err);
    CHECK(same_x == x);
    cn_release(same_x);
    cn_tensor *z = cn_dropout(x, 1.0, true, &err);
    CHECK(z && elem(z, 0) == 0.0f && elem(z, (size_t)n - 1) == 0.0f);
    cn_rng_state after = cn_rng_get_state();
    CHECK(before.counter == after.counter); /* nothing drawn */
    cn_release(z);
    CHECK(cn_dropout(x, 1.5, true, &err) == NULL && mentions(&err, "dropout") && mentions(&err, "1.5"));
    CHECK(cn_dropout(x, NAN, true, &err) == NULL);
    cn_release(x);
}

/* ---- errors -------------------------------------------------------------------------------- */

static void test_errors(void) {
    cn_error err;
    cn_tensor *a23 = symmetric(2, (int64_t[]){2, 3}, 1), *w45 = symmetric(2, (int64_t[]){4, 5}, 1);
    cn_tensor *w43 = symmetric(2, (int64_t[]){4, 3}, 1), *b5 = symmetric(1, (int64_t[]){5}, 1);
    CHECK(cn_linear(a23, w45, NULL, &err) == NULL && mentions(&err, "linear") && mentions(&err, "[2, 3]") &&
          mentions(&err, "[4, 5]"));
    CHECK(cn_linear(a23, w43, b5, &err) == NULL && mentions(&err, "bias") && mentions(&err, "[5]"));
    CHECK(cn_linear(a23, b5, NULL, &err) == NULL && mentions(&err, "2-D"));
    CHECK(cn_softmax(a23, 2, &err) == NULL && mentions(&err, "softmax") && mentions(&err, "dim 2"));
    CHECK(cn_log_softmax(a23, -3, &err) == NULL && mentions(&err, "log_softmax"));

    cn_tensor *q = symmetric(3, (int64_t[]){2, 3, 4}, 1), *k = symmetric(3, (int64_t[]){2, 5, 4}, 1);
    cn_tensor *v = symmetric(3, (int64_t[]){2, 5, 6}, 1), *m = symmetric(2, (int64_t[]){3, 4}, 1);
    CHECK(cn_scaled_dot_product_attention(q, k, v, m, 0, &err) == NULL && mentions(&err, "mask of shape [3, 4]") &&
          mentions(&err, "[2, 3, 5]"));
    CHECK(cn_scaled_dot_product_attention(q, v, v, NULL, 0, &err) == NULL && mentions(&err, "same last dim"));
    CHECK(cn_scaled_dot_product_attention(q, k, q, NULL, 0, &err) == NULL && mentions(&err, "same length"));
    CHECK(cn_scaled_dot_product_attention(b5, k, v, NULL, 0, &err) == NULL && mentions(&err, "at least 2 dims"));
    cn_tensor *k3 = symmetric(3, (int64_t[]){3, 5, 4}, 1);
    CHECK(cn_scaled_dot_product_attention(q, k3, v, NULL, 0, &err) == NULL && mentions(&err, "broadcast"));

    cn_tensor *ids = from_values(1, (int64_t[]){3}, (float[]){0, 7, 1});
    CHECK(cn_embedding(ids, w45, &err) == NULL && mentions(&err, "embedding") && mentions(&err, "index 7") &&
          mentions(&err, "4 rows"));
    cn_tensor *frac = from_values(1, (int64_t[]){1}, (float[]){0.5f});
    CHECK(cn_embedding(frac, w45, &err) == NULL && mentions(&err, "not an integer"));
    cn_tensor *neg = from_values(1, (int64_t[]){1}, (float[]){-1});
    CHECK(cn_embedding(neg, w45, &err) == NULL && mentions(&err, "index -1"));
    CHECK(cn_embedding(ids, b5, &err) == NULL && mentions(&err, "2-D"));

    CHECK(cn_mse_loss(a23, b5, CN_REDUCTION_MEAN, &err) == NULL && mentions(&err, "mse_loss") &&
          mentions(&err, "[2, 3]") && mentions(&err, "[5]"));
    CHECK(cn_l1_loss(a23, a23, (cn_reduction)7, &err) == NULL && mentions(&err, "reduction"));
    cn_tensor *t2 = from_values(1, (int64_t[]){2}, (float[]){0, 3});
    CHECK(cn_cross_entropy(a23, t2, NULL, CN_REDUCTION_MEAN, -100, 0, &err) == NULL &&
          mentions(&err, "target 3 out of range for 3 classes"));
    cn_tensor *t3 = from_values(1, (int64_t[]){3}, (float[]){0, 1, 2});
    CHECK(cn_cross_entropy(a23, t3, NULL, CN_REDUCTION_MEAN, -100, 0, &err) == NULL && mentions(&err, "[3]") &&
          mentions(&err, "[2, 3]"));
    CHECK(cn_cross_entropy(a23, t2, b5, CN_REDUCTION_MEAN, 3, 0, &err) == NULL && mentions(&err, "weight"));
    CHECK(cn_cross_entropy(a23, t2, NULL, CN_REDUCTION_MEAN, 3, 1.5, &err) == NULL &&
          mentions(&err, "label_smoothing"));
    CHECK(cn_cross_entropy(a23, a23, NULL, CN_REDUCTION_MEAN, 0, 0, &err) == NULL && mentions(&err, "ignore_index"));
    cn_release(a23), cn_release(w45), cn_release(w43), cn_release(b5), cn_release(q), cn_release(k), cn_release(v);
    cn_release(m), cn_release(k3), cn_release(ids), cn_release(frac), cn_release(neg), cn_release(t2), cn_release(t3);
}

/* Forward without grad records nothing; ids the caller rewrites after forward do not reach backward. */
static void test_no_grad_and_private_ids(void) {
    cn_error err;
    cn_tensor *w = leaf(symmetric(2, (int64_t[]){3, 2}, 1));
    cn_tensor *ids = from_values(1, (int64_t[]){2}, (float[]){2, 2});
    bool mode = cn_set_grad_enabled(false);
    cn_tensor *y = cn_embedding(ids, w, &err);
    CHECK(y && !y->requires_grad && !y->node);
    cn_release(y);
    cn_set_grad_enabled(mode);
    y = cn_embedding(ids, w, &err);
    cn_data(ids)[0] = 1e9f; /* would be out of bounds if backward read the caller's tensor */
    cn_tensor *g = from_values(2, (int64_t[]){2, 2}, (float[]){1, 1, 1, 1});
    CHECK(cn_backward(y, g, 0, &err) == 0);
    CHECK(elem(w->grad, 4) == 2.0f && elem(w->grad, 5) == 2.0f && elem(w->grad, 0) == 0.0f);
    cn_release(g), cn_release(y), cn_release(ids), cn_release(w);
}

int main(void) {
    test_seed(2024u);
    size_t baseline = cn_memory_live();
    RUN(test_linear);
    RUN(test_softmax);
    RUN(test_softmax_special_values);
    RUN(test_attention);
    RUN(test_embedding);
    RUN(test_pointwise_losses);
    RUN(test_cross_entropy);
    RUN(test_dropout);
    RUN(test_errors);
    RUN(test_no_grad_and_private_ids);
    ctest_current = "memory back to baseline";
    ctest_current_failed = 0;
    CHECK(cn_memory_live() == baseline);
    if (ctest_current_failed) ctest_failed++; else ctest_passed++;
    return CTEST_SUMMARY("nn");
}
