/* test_norm.c — group, instance, layer and batch norm (ops_norm.c) against naive double-precision
 * references.
 *
 * The reference sees every op as "sets" of elements normalised together, each element with a weight
 * index: group norm (set = sample·group, weight = channel), layer norm (set = leading index, weight =
 * position in the normalised block), batch norm (set = channel). It computes mean, biased variance and
 * y = (x - mean) / sqrt(var + eps) · w + b in double, and the gradients of L = Σ g·y by the closed forms
 * in double — themselves checked against central finite differences of the double forward on small
 * cases. The engine's gradients come from cn_backward on sum(y * g). Sizes past the kernels' OpenMP
 * threshold run too, as do strided inputs, partial requires_grad and the error messages.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "autograd.h"
#include "ctest.h"
#include "ops.h"
#include "ops_norm.h"
#include "tensor.h"
#include "test_util.h"

/* ---- helpers ----------------------------------------------------------------------------- */

/* Values uniform in [offset - scale, offset + scale). */
static cn_tensor *around(int ndim, const int64_t *shape, double offset, double scale) {
    return random_tensor(ndim, shape, offset - scale, offset + scale);
}

static cn_tensor *vec(int64_t n, double offset, double scale) { return around(1, &n, offset, scale); }

static int64_t prod(const int64_t *shape, int from, int to) {
    int64_t n = 1;
    for (int d = from; d < to; d++) n *= shape[d];
    return n;
}

/* ---- reference --------------------------------------------------------------------------- */

typedef enum kind { GROUP, INSTANCE, LAYER, BATCH_TRAIN, BATCH_EVAL } kind;

typedef struct spec {
    kind kind;
    int ndim;
    int64_t shape[CN_MAX_DIMS];
    int64_t groups;   /* group norm */
    int norm_dims;    /* layer norm */
    bool affine;
    double eps;
    double offset, scale; /* x uniform in [offset - scale, offset + scale) */
} spec;

typedef struct layout {
    int64_t numel, nsets, naffine;
    int64_t *set, *aff; /* per element */
} layout;

static layout make_layout(const spec *s) {
    layout l;
    l.numel = prod(s->shape, 0, s->ndim);
    l.set = malloc(sizeof(int64_t) * (size_t)(l.numel ? l.numel : 1));
    l.aff = malloc(sizeof(int64_t) * (size_t)(l.numel ? l.numel : 1));
    if (s->kind == LAYER) {
        int64_t k = prod(s->shape, s->ndim - s->norm_dims, s->ndim);
        l.nsets = l.numel / k, l.naffine = k;
        for (int64_t i = 0; i < l.numel; i++) l.set[i] = i / k, l.aff[i] = i % k;
        return l;
    }
    int64_t N = s->shape[0], C = s->shape[1], S = prod(s->shape, 2, s->ndim);
    int64_t G = s->kind == GROUP ? s->groups : C;
    l.naffine = C;
    l.nsets = s->kind == GROUP || s->kind == INSTANCE ? N * G : C;
    for (int64_t i = 0; i < l.numel; i++) {
        int64_t n = i / (C * S), c = i / S % C;
        l.aff[i] = c;
        l.set[i] = s->kind == GROUP || s->kind == INSTANCE ? n * G + c / (C / G) : c;
    }
    return l;
}

static void free_layout(layout *l) { free(l->set), free(l->aff); }

/* Per-set mean and biased variance of x (double). */
static void ref_stats(const layout *l, const double *x, double *mean, double *var) {
    double *count = calloc((size_t)l->nsets, sizeof *count);
    for (int64_t k = 0; k < l->nsets; k++) mean[k] = var[k] = 0.0;
    for (int64_t i = 0; i < l->numel; i++) mean[l->set[i]] += x[i], count[l->set[i]] += 1;
    for (int64_t k = 0; k < l->nsets; k++) mean[k] /= count[k];
    for (int64_t i = 0; i < l->numel; i++) var[l->set[i]] += (x[i] - mean[l->set[i]]) * (x[i] - mean[l->set[i]]);
    for (int64_t k = 0; k < l->nsets; k++) var[k] /= count[k];
    free(count);
}

/* y = (x - mean) / sqrt(var + eps) · w + b; w, b NULL for no affine; rm, rv: eval statistics. */
static void ref_forward(const spec *s, const layout *l, const double *x, const double *w, const double *b,
                        const double *rm, const double *rv, double *y) {
    double *mean = malloc(sizeof(double) * (size_t)l->nsets), *var = malloc(sizeof(double) * (size_t)l->nsets);
    if (s->kind == BATCH_EVAL) {
        memcpy(mean, rm, sizeof(double) * (size_t)l->nsets);
        memcpy(var, rv, sizeof(double) * (size_t)l->nsets);
    } else {
        ref_stats(l, x, mean, var);
    }
    for (int64_t i = 0; i < l->numel; i++) {
        int64_t k = l->set[i], a = l->aff[i];
        y[i] = (x[i] - mean[k]) / sqrt(var[k] + s->eps) * (w ? w[a] : 1.0) + (b ? b[a] : 0.0);
    }
    free(mean), free(var);
}

/* Gradients of Σ g·y: dx = rstd (g w - mean(g w) - x̂ mean(g w x̂)) per set (just rstd g w in eval),
 * dw = Σ g x̂, db = Σ g. */
static void ref_backward(const spec *s, const layout *l, const double *x, const double *w, const double *rm,
                         const double *rv, const double *g, double *dx, double *dw, double *db) {
    int64_t K = l->nsets;
    double *mean = malloc(sizeof(double) * (size_t)K), *var = malloc(sizeof(double) * (size_t)K);
    double *m1 = calloc((size_t)K, sizeof(double)), *m2 = calloc((size_t)K, sizeof(double));
    double *count = calloc((size_t)K, sizeof(double));
    if (s->kind == BATCH_EVAL) {
        memcpy(mean, rm, sizeof(double) * (size_t)K);
        memcpy(var, rv, sizeof(double) * (size_t)K);
    } else {
        ref_stats(l, x, mean, var);
    }
    for (int64_t a = 0; a < l->naffine; a++) dw[a] = db[a] = 0.0;
    for (int64_t i = 0; i < l->numel; i++) {
        int64_t k = l->set[i], a = l->aff[i];
        double xhat = (x[i] - mean[k]) / sqrt(var[k] + s->eps), gw = g[i] * (w ? w[a] : 1.0);
        m1[k] += gw, m2[k] += gw * xhat, count[k] += 1;
        dw[a] += g[i] * xhat, db[a] += g[i];
    }
    for (int64_t i = 0; i < l->numel; i++) {
        int64_t k = l->set[i], a = l->aff[i];
        double rstd = 1.0 / sqrt(var[k] + s->eps), xhat = (x[i] - mean[k]) * rstd, gw = g[i] * (w ? w[a] : 1.0);
        dx[i] = s->kind == BATCH_EVAL ? rstd * gw : rstd * (gw - m1[k] / count[k] - xhat * m2[k] / count[k]);
    }
    free(mean), free(var), free(m1), free(m2), free(count);
}

/* ---- running the engine ------------------------------------------------------------------ */

static cn_tensor *run_op(const spec *s, cn_tensor *x, cn_tensor *w, cn_tensor *b, cn_tensor *rm, cn_tensor *rv,
                         double momentum, cn_error *err) {
    switch (s->kind) {
    case GROUP: return cn_group_norm(x, s->groups, w, b, s->eps, err);
    case INSTANCE: return cn_instance_norm(x, w, b, s->eps, err);
    case LAYER: return cn_layer_norm(x, s->norm_dims, w, b, s->eps, err);
    case BATCH_TRAIN: return cn_batch_norm(x, rm, rv, w, b, true, momentum, s->eps, err);
    case BATCH_EVAL: return cn_batch_norm(x, rm, rv, w, b, false, momentum, s->eps, err);
    }
    return NULL;
}

static double *to_double(const cn_tensor *t) {
    size_t n = cn_numel(t);
    float *f = malloc(sizeof(float) * (n ? n : 1));
    double *d = malloc(sizeof(double) * (n ? n : 1));
    cn_to_buffer(t, f);
    for (size_t i = 0; i < n; i++) d[i] = f[i];
    free(f);
    return d;
}

/* Every element of t (any view) within rtol/atol of want; reports the first miss. */
static void check_tensor(const char *what, const cn_tensor *t, const double *want, size_t n, double rtol, double atol) {
    CHECK(t != NULL);
    if (!t) return;
    CHECK(cn_numel(t) == n);
    double *got = to_double(t);
    for (size_t i = 0; i < n; i++) {
        if (!(fabs(got[i] - want[i]) <= atol + rtol * fabs(want[i]))) {
            fprintf(stderr, "  %s: element %zu is %.9g, expected %.9g\n", what, i, got[i], want[i]);
            CHECK_CLOSE(got[i], want[i], rtol, atol);
            break;
        }
    }
    free(got);
}

#define RTOL 2e-5
#define ATOL 2e-6

/* Forward, running stats and backward of one spec; strided: x is handed over as a permuted view. */
static void check_spec(const spec *s, bool strided) {
    cn_error err;
    layout l = make_layout(s);
    int64_t C = s->kind == LAYER ? 0 : s->shape[1];
    cn_tensor *x = around(s->ndim, s->shape, s->offset, s->scale);
    cn_tensor *w = NULL, *b = NULL, *rm = NULL, *rv = NULL;
    if (s->affine) {
        if (s->kind == LAYER) {
            w = around(s->norm_dims, s->shape + s->ndim - s->norm_dims, 1.0, 0.5);
            b = around(s->norm_dims, s->shape + s->ndim - s->norm_dims, 0.0, 0.5);
        } else {
            w = vec(C, 1.0, 0.5), b = vec(C, 0.0, 0.5);
        }
    }
    if (s->kind == BATCH_TRAIN || s->kind == BATCH_EVAL) rm = vec(C, 0.3, 0.3), rv = vec(C, 1.0, 0.5);
    cn_tensor *g = around(s->ndim, s->shape, 0.0, 1.0);
    double *xd = to_double(x), *gd = to_double(g);
    double *wd = w ? to_double(w) : NULL, *bd = b ? to_double(b) : NULL;
    double *rmd = rm ? to_double(rm) : NULL, *rvd = rv ? to_double(rv) : NULL;

    cn_tensor *input = x;
    if (strided) { /* the same values through a non-contiguous view: transpose a transposed copy */
        cn_tensor *t = cn_transpose(x, 0, 1, &err), *tc = cn_contiguous(t, &err);
        input = cn_transpose(tc, 0, 1, &err);
        cn_release(t), cn_release(tc);
        CHECK(!cn_is_contiguous(input));
    }
    input->requires_grad = true;
    if (w) w->requires_grad = true, b->requires_grad = true;
    const double momentum = 0.2;
    cn_tensor *y = run_op(s, input, w, b, rm, rv, momentum, &err);
    CHECK(y != NULL);
    if (!y) {
        fprintf(stderr, "  %s\n", err.msg);
        goto done;
    }
    double *want = malloc(sizeof(double) * (size_t)l.numel);
    ref_forward(s, &l, xd, wd, bd, rmd, rvd, want);
    check_tensor("y", y, want, (size_t)l.numel, RTOL, ATOL);

    if (s->kind == BATCH_TRAIN) { /* running stats: unbiased variance, momentum */
        double *mean = malloc(sizeof(double) * (size_t)C), *var = malloc(sizeof(double) * (size_t)C);
        ref_stats(&l, xd, mean, var);
        double M = (double)(l.numel / C);
        for (int64_t c = 0; c < C; c++) {
            mean[c] = (1 - momentum) * rmd[c] + momentum * mean[c];
            var[c] = (1 - momentum) * rvd[c] + momentum * var[c] * M / (M - 1);
        }
        check_tensor("running_mean", rm, mean, (size_t)C, 1e-6, 1e-7);
        check_tensor("running_var", rv, var, (size_t)C, 1e-6, 1e-7);
        free(mean), free(var);
    }
    cn_tensor *prod_t = cn_binary(CN_MUL, y, g, &err);
    cn_tensor *loss = cn_sum(prod_t, 0, NULL, false, &err);
    CHECK(cn_backward(loss, NULL, 0, &err) == 0);
    double *dx = malloc(sizeof(double) * (size_t)l.numel);
    double *dw = malloc(sizeof(double) * (size_t)l.naffine), *db = malloc(sizeof(double) * (size_t)l.naffine);
    ref_backward(s, &l, xd, wd, rmd, rvd, gd, dx, dw, db); /* the buffers as they were before the call */
    check_tensor("dx", input->grad, dx, (size_t)l.numel, RTOL, ATOL);
    if (w) {
        check_tensor("dw", w->grad, dw, (size_t)l.naffine, RTOL, ATOL);
        check_tensor("db", b->grad, db, (size_t)l.naffine, RTOL, ATOL);
    }
    cn_release(prod_t), cn_release(loss);
    free(want), free(dx), free(dw), free(db);
done:
    cn_release(y);
    if (input != x) cn_release(input);
    cn_release(x), cn_release(w), cn_release(b), cn_release(rm), cn_release(rv), cn_release(g);
    free(xd), free(gd), free(wd), free(bd), free(rmd), free(rvd);
    free_layout(&l);
}

static spec make_spec(kind k, int ndim, const int64_t *shape, int64_t groups, int norm_dims, bool affine) {
    spec s = {k, ndim, {0}, groups, norm_dims, affine, 1e-5, 0.7, 2.0};
    memcpy(s.shape, shape, sizeof(int64_t) * (size_t)ndim);
    return s;
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_group_norm(void) {
    const int64_t s4[] = {2, 6, 3, 5}, s2[] = {3, 4}, s5[] = {2, 4, 3, 2, 3}, s3[] = {3, 6, 7};
    const int64_t groups[] = {1, 2, 3, 6};
    for (int i = 0; i < 4; i++) {
        spec s = make_spec(GROUP, 4, s4, groups[i], 0, i % 2 == 0);
        check_spec(&s, false);
        s.affine = !s.affine;
        check_spec(&s, false);
    }
    spec a = make_spec(GROUP, 2, s2, 2, 0, true), b = make_spec(GROUP, 5, s5, 2, 0, true),
         c = make_spec(GROUP, 3, s3, 3, 0, false);
    check_spec(&a, false), check_spec(&b, false), check_spec(&c, false);
    c.eps = 0.1;
    check_spec(&c, false);
}

static void test_group_norm_parallel(void) { /* past the OpenMP threshold */
    const int64_t s[] = {8, 64, 9, 7}, s2[] = {512, 96};
    spec a = make_spec(GROUP, 4, s, 32, 0, true), b = make_spec(GROUP, 2, s2, 4, 0, true);
    check_spec(&a, false), check_spec(&b, false);
}

static void test_instance_norm(void) {
    const int64_t s4[] = {2, 3, 4, 5}, s3[] = {3, 2, 7};
    spec a = make_spec(INSTANCE, 4, s4, 0, 0, true), b = make_spec(INSTANCE, 3, s3, 0, 0, false);
    check_spec(&a, false), check_spec(&b, false);
}

static void test_layer_norm(void) {
    const int64_t s[] = {3, 4, 5}, big[] = {96, 1024};
    for (int d = 1; d <= 3; d++) {
        spec a = make_spec(LAYER, 3, s, 0, d, true), b = make_spec(LAYER, 3, s, 0, d, false);
        check_spec(&a, false), check_spec(&b, false);
    }
    spec c = make_spec(LAYER, 2, big, 0, 1, true);
    check_spec(&c, false);
}

static void test_batch_norm(void) {
    const int64_t s3[] = {4, 3, 5}, s2[] = {6, 4}, s4[] = {3, 2, 3, 3};
    const int64_t big[] = {16, 32, 10, 10}, big2[] = {600, 100};
    for (int train = 0; train < 2; train++) {
        kind k = train ? BATCH_TRAIN : BATCH_EVAL;
        spec a = make_spec(k, 3, s3, 0, 0, true), b = make_spec(k, 2, s2, 0, 0, true),
             c = make_spec(k, 4, s4, 0, 0, false), d = make_spec(k, 4, big, 0, 0, true),
             e = make_spec(k, 2, big2, 0, 0, true);
        check_spec(&a, false), check_spec(&b, false), check_spec(&c, false), check_spec(&d, false),
            check_spec(&e, false);
    }
}

static void test_strided_input(void) {
    const int64_t s[] = {3, 4, 2, 5}, s2[] = {5, 6};
    spec a = make_spec(GROUP, 4, s, 2, 0, true), b = make_spec(LAYER, 4, s, 0, 2, true),
         c = make_spec(BATCH_TRAIN, 2, s2, 0, 0, true), d = make_spec(INSTANCE, 4, s, 0, 0, true);
    check_spec(&a, true), check_spec(&b, true), check_spec(&c, true), check_spec(&d, true);
}

/* A mean far from zero (|mean| = 1000 σ): x - mean keeps full precision (the mean is saved as a
 * float pair), so the tolerances stay those of the other tests. */
static void test_large_mean(void) {
    const int64_t s4[] = {3, 4, 5, 7}, s2[] = {40, 6};
    spec specs[] = {make_spec(GROUP, 4, s4, 2, 0, true), make_spec(LAYER, 4, s4, 0, 2, true),
                    make_spec(INSTANCE, 4, s4, 0, 0, false), make_spec(BATCH_TRAIN, 4, s4, 0, 0, true),
                    make_spec(BATCH_TRAIN, 2, s2, 0, 0, true), make_spec(GROUP, 2, s2, 3, 0, true)};
    for (size_t i = 0; i < sizeof specs / sizeof *specs; i++) {
        specs[i].offset = -1000.0, specs[i].scale = 1.0;
        check_spec(&specs[i], false);
    }
}

/* The closed-form reference against central differences of the double forward. */
static void test_reference_gradients(void) {
    const int64_t sg[] = {2, 4, 3}, sb[] = {5, 3};
    spec specs[] = {make_spec(GROUP, 3, sg, 2, 0, true), make_spec(LAYER, 3, sg, 0, 2, true),
                    make_spec(BATCH_TRAIN, 2, sb, 0, 0, true), make_spec(BATCH_EVAL, 2, sb, 0, 0, true)};
    for (size_t t = 0; t < sizeof specs / sizeof *specs; t++) {
        spec *s = &specs[t];
        layout l = make_layout(s);
        double x[64], g[64], w[16], b[16], rm[16], rv[16], y[64], dx[64], dw[16], db[16];
        for (int64_t i = 0; i < l.numel; i++) x[i] = 3 * test_uniform() - 1, g[i] = 2 * test_uniform() - 1;
        for (int64_t a = 0; a < l.naffine; a++) w[a] = test_uniform() + 0.5, b[a] = test_uniform(), rm[a] = test_uniform(), rv[a] = 1 + test_uniform();
        ref_backward(s, &l, x, w, rm, rv, g, dx, dw, db);
        const double h = 1e-5;
        double *params[] = {x, w, b}, *grads[] = {dx, dw, db};
        int64_t counts[] = {l.numel, l.naffine, l.naffine};
        for (int p = 0; p < 3; p++) {
            for (int64_t i = 0; i < counts[p]; i++) {
                double keep = params[p][i], lp = 0, lm = 0;
                params[p][i] = keep + h;
                ref_forward(s, &l, x, w, b, rm, rv, y);
                for (int64_t j = 0; j < l.numel; j++) lp += g[j] * y[j];
                params[p][i] = keep - h;
                ref_forward(s, &l, x, w, b, rm, rv, y);
                for (int64_t j = 0; j < l.numel; j++) lm += g[j] * y[j];
                params[p][i] = keep;
                CHECK_CLOSE(grads[p][i], (lp - lm) / (2 * h), 1e-6, 1e-8);
            }
        }
        free_layout(&l);
    }
}

/* Only the weight requires grad: x gets none, the weight's matches the reference. */
static void test_partial_grad(void) {
    cn_error err;
    const int64_t shape[] = {2, 4, 3};
    spec s = make_spec(GROUP, 3, shape, 2, 0, true);
    layout l = make_layout(&s);
    cn_tensor *x = around(3, shape, 0, 1), *w = vec(4, 1, 0.5), *g = around(3, shape, 0, 1);
    w->requires_grad = true;
    cn_tensor *y = cn_group_norm(x, 2, w, NULL, 1e-5, &err);
    CHECK(y && y->requires_grad);
    cn_tensor *p = cn_binary(CN_MUL, y, g, &err), *loss = cn_sum(p, 0, NULL, false, &err);
    CHECK(cn_backward(loss, NULL, 0, &err) == 0);
    CHECK(x->grad == NULL);
    double *xd = to_double(x), *gd = to_double(g), *wd = to_double(w);
    double dx[24], dw[4], db[4];
    ref_backward(&s, &l, xd, wd, NULL, NULL, gd, dx, dw, db);
    check_tensor("dw", w->grad, dw, 4, RTOL, ATOL);
    /* no input requires grad: no graph */
    cn_tensor *y2 = cn_layer_norm(x, 1, NULL, NULL, 1e-5, &err);
    CHECK(y2 && !y2->requires_grad && !y2->node);
    free(xd), free(gd), free(wd);
    free_layout(&l);
    cn_release(x), cn_release(w), cn_release(g), cn_release(y), cn_release(p), cn_release(loss), cn_release(y2);
}

/* Eval batch norm leaves its buffers alone; training without buffers works. */
static void test_batch_norm_buffers(void) {
    cn_error err;
    const int64_t shape[] = {4, 3, 2};
    cn_tensor *x = around(3, shape, 0, 1), *rm = vec(3, 0, 1), *rv = vec(3, 2, 0.5);
    double *rmd = to_double(rm), *rvd = to_double(rv);
    cn_tensor *y = cn_batch_norm(x, rm, rv, NULL, NULL, false, 0.1, 1e-5, &err);
    CHECK(y != NULL);
    check_tensor("running_mean", rm, rmd, 3, 0, 0);
    check_tensor("running_var", rv, rvd, 3, 0, 0);
    cn_tensor *y1 = cn_batch_norm(x, NULL, NULL, NULL, NULL, true, 0.1, 1e-5, &err);
    cn_tensor *y2 = cn_batch_norm(x, rm, rv, NULL, NULL, true, 0.1, 1e-5, &err);
    CHECK(y1 && y2);
    if (y1 && y2) CHECK(memcmp(cn_data(y1), cn_data(y2), 24 * sizeof(float)) == 0);
    free(rmd), free(rvd);
    cn_release(x), cn_release(rm), cn_release(rv), cn_release(y), cn_release(y1), cn_release(y2);
}

static void test_empty(void) {
    cn_error err;
    const int64_t shape[] = {0, 4, 3};
    cn_tensor *x = cn_zeros(3, shape, &err);
    x->requires_grad = true;
    cn_tensor *y = cn_group_norm(x, 2, NULL, NULL, 1e-5, &err);
    CHECK(y && cn_numel(y) == 0 && y->shape[1] == 4);
    cn_tensor *loss = y ? cn_sum(y, 0, NULL, false, &err) : NULL;
    CHECK(loss && cn_backward(loss, NULL, 0, &err) == 0);
    CHECK(x->grad && cn_numel(x->grad) == 0);
    cn_release(x), cn_release(y), cn_release(loss);
}

/* f(...) fails and the message holds each of the pieces. */
static void expect_error(cn_tensor *r, const cn_error *err, const char *a, const char *b, const char *c) {
    CHECK(r == NULL);
    if (r) {
        cn_release(r);
        return;
    }
    const char *pieces[] = {a, b, c};
    for (int i = 0; i < 3; i++)
        if (pieces[i]) CHECK(mentions(err, pieces[i]));
}

static void test_errors(void) {
    cn_error err;
    const int64_t s4[] = {2, 6, 3, 3}, s1[] = {6}, s2[] = {1, 3}, s31[] = {2, 3, 1};
    cn_tensor *x = around(4, s4, 0, 1), *x1 = around(1, s1, 0, 1);
    cn_tensor *x2 = around(2, s2, 0, 1), *x31 = around(3, s31, 0, 1);
    cn_tensor *v5 = vec(5, 0, 1), *v6 = vec(6, 0, 1), *v3 = vec(3, 0, 1);
    expect_error(cn_group_norm(x, 4, NULL, NULL, 1e-5, &err), &err, "group_norm: ", "6 channels cannot be split into 4 groups", "[2, 6, 3, 3]");
    expect_error(cn_group_norm(x, 0, NULL, NULL, 1e-5, &err), &err, "group_norm", "0 groups", NULL);
    expect_error(cn_group_norm(x1, 1, NULL, NULL, 1e-5, &err), &err, "group_norm", "[N, C, *]", "[6]");
    expect_error(cn_group_norm(x, 2, v5, NULL, 1e-5, &err), &err, "group_norm: weight of shape [5]", "6 channels", "[2, 6, 3, 3]");
    expect_error(cn_group_norm(x, 2, NULL, v5, 1e-5, &err), &err, "group_norm: bias of shape [5]", "(expected [6])", NULL);
    expect_error(cn_instance_norm(x31, NULL, NULL, 1e-5, &err), &err, "instance_norm", "more than 1 spatial element", "[2, 3, 1]");
    expect_error(cn_instance_norm(x, v5, NULL, 1e-5, &err), &err, "instance_norm: weight of shape [5]", NULL, NULL);
    expect_error(cn_layer_norm(x, 5, NULL, NULL, 1e-5, &err), &err, "layer_norm", "last 5 dims", "[2, 6, 3, 3]");
    expect_error(cn_layer_norm(x, 0, NULL, NULL, 1e-5, &err), &err, "layer_norm", "last 0 dims", NULL);
    expect_error(cn_layer_norm(x, 2, v3, NULL, 1e-5, &err), &err, "layer_norm: weight of shape [3]", "normalized shape [3, 3]", NULL);
    expect_error(cn_batch_norm(x, NULL, NULL, NULL, NULL, false, 0.1, 1e-5, &err), &err, "batch_norm", "required in eval", NULL);
    expect_error(cn_batch_norm(x2, NULL, NULL, NULL, NULL, true, 0.1, 1e-5, &err), &err, "batch_norm", "more than 1 value per channel", "[1, 3]");
    expect_error(cn_batch_norm(x, v5, v6, NULL, NULL, true, 0.1, 1e-5, &err), &err, "batch_norm: running_mean of shape [5]", "6 channels", NULL);
    expect_error(cn_batch_norm(x, v6, v6, NULL, v3, true, 0.1, 1e-5, &err), &err, "batch_norm: bias of shape [3]", NULL, NULL);
    expect_error(cn_batch_norm(x1, NULL, NULL, NULL, NULL, true, 0.1, 1e-5, &err), &err, "batch_norm", "[6]", NULL);
    cn_release(x), cn_release(x1), cn_release(x2), cn_release(x31), cn_release(v5), cn_release(v6), cn_release(v3);
}

int main(void) {
    test_seed(2024u);
    RUN(test_reference_gradients);
    RUN(test_group_norm);
    RUN(test_group_norm_parallel);
    RUN(test_instance_norm);
    RUN(test_layer_norm);
    RUN(test_batch_norm);
    RUN(test_strided_input);
    RUN(test_large_mean);
    RUN(test_partial_grad);
    RUN(test_batch_norm_buffers);
    RUN(test_empty);
    RUN(test_errors);
    return CTEST_SUMMARY("norm");
}
