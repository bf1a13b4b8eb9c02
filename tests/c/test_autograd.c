/* test_autograd.c — the tape (autograd.c) through the engine API: backward into leaves with
 * accumulation, cn_grad with leaf and non-leaf inputs, retain_graph and the freed-graph error, the
 * grad mode switch, cn_sum_to_shape, a diamond graph, memory back to baseline once outputs are
 * released, create_graph (second order through a lincomb, the refusal by op name), and a
 * 100,000-node chain walked and freed on a small thread stack (no recursion).
 * Expected gradients are worked out by hand in double (d/dx of each expression in its comment).
 */
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "alloc.h"
#include "autograd.h"
#include "ctest.h"
#include "ops.h"
#include "ops_nn.h"
#include "tensor.h"
#include "test_util.h"

/* ---- helpers ----------------------------------------------------------------------------- */

static cn_tensor *tensor_of(int ndim, const int64_t *shape, const float *values) {
    cn_error err;
    return cn_from_data(ndim, shape, values, &err);
}

static cn_tensor *vec(int n, const float *values) {
    int64_t shape[1] = {n};
    return tensor_of(1, shape, values);
}

static cn_tensor *leaf(int n, const float *values) {
    cn_tensor *t = vec(n, values);
    t->requires_grad = true;
    return t;
}

/* t (non-NULL, numel n) equals want within rtol 1e-6 / atol 1e-6. */
static bool values_are(const cn_tensor *t, size_t n, const double *want) {
    if (!t || cn_numel(t) != n) return false;
    for (size_t i = 0; i < n; i++) {
        double got = elem(t, i);
        if (!(fabs(got - want[i]) <= 1e-6 + 1e-6 * fabs(want[i]))) {
            fprintf(stderr, "    element %zu is %.9g, expected %.9g\n", i, got, want[i]);
            return false;
        }
    }
    return true;
}

static cn_tensor *mul(cn_tensor *a, cn_tensor *b) {
    cn_error err;
    return cn_binary(CN_MUL, a, b, &err);
}

static cn_tensor *scale(cn_tensor *a, float s) {
    cn_error err;
    return cn_binary_scalar(CN_MUL, a, s, false, &err);
}

static cn_tensor *sum_all(cn_tensor *a) {
    cn_error err;
    return cn_sum(a, 0, NULL, false, &err);
}

/* ---- backward ---------------------------------------------------------------------------- */

static void test_backward_accumulates_into_leaves(void) {
    const float xv[3] = {1, 2, 3}, cv[3] = {0.5f, -1, 4};
    cn_tensor *x = leaf(3, xv), *c = vec(3, cv);
    cn_error err;
    /* y = sum(x * x): dy/dx = 2x */
    cn_tensor *xx = mul(x, x), *y = sum_all(xx);
    CHECK(y && y->requires_grad && y->node && y->ndim == 0);
    CHECK(cn_backward(y, NULL, 0, &err) == 0);
    CHECK(values_are(x->grad, 3, (double[]){2, 4, 6}));
    CHECK(x->grad && !x->grad->requires_grad && !x->grad->node);
    /* a second graph adds: y2 = sum(x * c) + sum(3 x) -> c + 3 */
    cn_tensor *xc = mul(x, c), *x3 = scale(x, 3), *s1 = sum_all(xc), *s2 = sum_all(x3);
    cn_tensor *y2 = cn_binary(CN_ADD, s1, s2, &err);
    CHECK(cn_backward(y2, NULL, 0, &err) == 0);
    CHECK(values_are(x->grad, 3, (double[]){2 + 0.5 + 3, 4 - 1 + 3, 6 + 4 + 3}));
    CHECK(c->grad == NULL); /* takes no gradient */
    CHECK(xx->grad == NULL && s1->grad == NULL); /* non-leaves keep none */
    cn_release(xx), cn_release(y), cn_release(xc), cn_release(x3), cn_release(s1), cn_release(s2);
    cn_release(y2), cn_release(x), cn_release(c);
}

static void test_backward_explicit_gradient_and_errors(void) {
    const float xv[6] = {1, 2, 3, 4, 5, 6}, gv[6] = {1, 0, -1, 2, 0.5f, 0};
    int64_t shape[2] = {2, 3}, wrong[2] = {3, 2};
    cn_tensor *x = tensor_of(2, shape, xv);
    x->requires_grad = true;
    cn_tensor *y = mul(x, x), *g = tensor_of(2, shape, gv), *gw = tensor_of(2, wrong, gv);
    cn_error err;
    /* no gradient for a non-scalar output: the message names its shape */
    CHECK(cn_backward(y, NULL, CN_RETAIN_GRAPH, &err) == -1);
    CHECK(mentions(&err, "[2, 3]"));
    CHECK(cn_backward(y, gw, CN_RETAIN_GRAPH, &err) == -1);
    CHECK(mentions(&err, "[3, 2]"));
    CHECK(x->grad == NULL);
    CHECK(cn_backward(y, g, 0, &err) == 0); /* 2 x g */
    CHECK(values_are(x->grad, 6, (double[]){2, 0, -6, 16, 5, 0}));
    /* an output outside any graph */
    cn_tensor *c = tensor_of(2, shape, xv);
    CHECK(cn_backward(c, g, 0, &err) == -1);
    CHECK(mentions(&err, "does not require grad"));
    cn_release(x), cn_release(y), cn_release(g), cn_release(gw), cn_release(c);
}

/* x used by two paths through a shared intermediate h joined later: the node of h must wait for
 * both consumers. y = sum(3 h + exp(h)), h = x * x: dy/dx = (3 + e^(x^2)) 2x; plus a leaf used
 * twice by one op: z = sum(x * sin x): dz/dx = sin x + x cos x. */
static void test_diamond(void) {
    const float xv[3] = {0.5f, -1, 1.5f};
    cn_tensor *x = leaf(3, xv);
    cn_error err;
    cn_tensor *h = mul(x, x), *p1 = scale(h, 3), *p2 = cn_unary(CN_EXP, h, &err);
    cn_tensor *s = cn_binary(CN_ADD, p1, p2, &err), *y = sum_all(s);
    CHECK(cn_backward(y, NULL, 0, &err) == 0);
    double want[3];
    for (int i = 0; i < 3; i++) want[i] = (3 + exp((double)xv[i] * xv[i])) * 2 * xv[i];
    CHECK(values_are(x->grad, 3, want));
    cn_release(x->grad);
    x->grad = NULL;
    cn_tensor *sx = cn_unary(CN_SIN, x, &err), *xs = mul(x, sx), *z = sum_all(xs);
    CHECK(cn_backward(z, NULL, 0, &err) == 0);
    for (int i = 0; i < 3; i++) want[i] = sin(xv[i]) + xv[i] * cos(xv[i]);
    CHECK(values_are(x->grad, 3, want));
    cn_release(h), cn_release(p1), cn_release(p2), cn_release(s), cn_release(y);
    cn_release(sx), cn_release(xs), cn_release(z), cn_release(x);
}

/* ---- cn_grad ----------------------------------------------------------------------------- */

static void test_grad_captures_leaf_and_non_leaf_inputs(void) {
    const float xv[2] = {1, 2};
    cn_tensor *x = leaf(2, xv);
    cn_error err;
    /* y = sum(h * h), h = 3x: dy/dh = 2h = 6x, dy/dx = 18x */
    cn_tensor *h = scale(x, 3), *hh = mul(h, h), *y = sum_all(hh);
    cn_tensor *res[2] = {NULL, NULL};
    CHECK(cn_grad(1, &y, NULL, 1, &h, res, CN_RETAIN_GRAPH, &err) == 0);
    CHECK(values_are(res[0], 2, (double[]){6, 12}));
    cn_release(res[0]);
    CHECK(cn_grad(1, &y, NULL, 1, &x, res, CN_RETAIN_GRAPH, &err) == 0);
    CHECK(values_are(res[0], 2, (double[]){18, 36}));
    cn_release(res[0]);
    /* both at once, as torch.autograd.grad: x also gets its gradient through h */
    cn_tensor *both[2] = {h, x};
    CHECK(cn_grad(1, &y, NULL, 2, both, res, CN_RETAIN_GRAPH, &err) == 0);
    CHECK(values_are(res[0], 2, (double[]){6, 12}));
    CHECK(values_are(res[1], 2, (double[]){18, 36}));
    cn_release(res[0]), cn_release(res[1]);
    /* nothing lands in .grad */
    CHECK(x->grad == NULL && h->grad == NULL);
    /* an explicit grad_output on a non-scalar output: d (g . h) / dx = 3 g */
    const float gv[2] = {0.5f, -2};
    cn_tensor *g = vec(2, gv);
    CHECK(cn_grad(1, &h, &g, 1, &x, res, 0, &err) == 0);
    CHECK(values_are(res[0], 2, (double[]){1.5, -6}));
    cn_release(res[0]);
    cn_release(g), cn_release(h), cn_release(hh), cn_release(y), cn_release(x);
}

static void test_grad_several_outputs(void) {
    const float xv[2] = {1, 2}, wv[2] = {3, -1}, g1v[2] = {1, 10}, g2v[2] = {2, -1};
    cn_tensor *x = leaf(2, xv), *w = leaf(2, wv);
    cn_tensor *y1 = mul(x, w), *sx = sum_all(x), *y2 = mul(sx, w);
    cn_tensor *outs[2] = {y1, y2}, *gouts[2] = {vec(2, g1v), vec(2, g2v)}, *ins[2] = {x, w};
    cn_tensor *res[2];
    cn_error err;
    /* dx = g1 w + sum(g2 w); dw = g1 x + g2 sum(x) */
    CHECK(cn_grad(2, outs, gouts, 2, ins, res, 0, &err) == 0);
    CHECK(values_are(res[0], 2, (double[]){3 + 7, -10 + 7}));
    CHECK(values_are(res[1], 2, (double[]){1 + 6, 20 - 3}));
    CHECK(x->grad == NULL && w->grad == NULL);
    cn_release(res[0]), cn_release(res[1]);
    cn_release(y1), cn_release(sx), cn_release(y2), cn_release(gouts[0]), cn_release(gouts[1]);
    cn_release(x), cn_release(w);
}

static void test_grad_unused_inputs(void) {
    const float xv[2] = {1, 2}, uv[4] = {0, 0, 0, 0};
    int64_t shape[2] = {2, 2};
    cn_tensor *x = leaf(2, xv), *u = tensor_of(2, shape, uv), *n = vec(2, xv);
    u->requires_grad = true;
    cn_tensor *xx = mul(x, x), *y = sum_all(xx);
    cn_tensor *ins[2] = {x, u}, *res[2] = {NULL, NULL};
    cn_error err;
    CHECK(cn_grad(1, &y, NULL, 2, ins, res, CN_RETAIN_GRAPH, &err) == -1);
    CHECK(mentions(&err, "allow_unused"));
    CHECK(res[0] == NULL && res[1] == NULL); /* nothing leaks on failure */
    CHECK(cn_grad(1, &y, NULL, 2, ins, res, CN_RETAIN_GRAPH | CN_ALLOW_UNUSED, &err) == 0);
    CHECK(values_are(res[0], 2, (double[]){2, 4}));
    CHECK(res[1] && res[1]->ndim == 2 && res[1]->shape[0] == 2 && res[1]->shape[1] == 2);
    CHECK(values_are(res[1], 4, (double[]){0, 0, 0, 0}));
    cn_release(res[0]), cn_release(res[1]);
    CHECK(cn_grad(1, &y, NULL, 1, &n, res, CN_RETAIN_GRAPH | CN_ALLOW_UNUSED, &err) == -1);
    CHECK(mentions(&err, "does not require grad"));
    cn_release(xx), cn_release(y), cn_release(x), cn_release(u), cn_release(n);
}

/* ---- retain_graph and the freed graph -------------------------------------------------------- */

static void test_retain_graph(void) {
    const float xv[2] = {0.5f, 1};
    cn_tensor *x = leaf(2, xv);
    cn_error err;
    cn_tensor *e = cn_unary(CN_EXP, x, &err), *y = sum_all(e); /* dy/dx = e^x */
    CHECK(cn_backward(y, NULL, CN_RETAIN_GRAPH, &err) == 0);
    CHECK(!y->node->released);
    CHECK(cn_backward(y, NULL, 0, &err) == 0);
    CHECK(values_are(x->grad, 2, (double[]){2 * exp(0.5), 2 * exp(1.0)}));
    CHECK(y->node->released);
    CHECK(cn_backward(y, NULL, 0, &err) == -1);
    CHECK(mentions(&err, "retain_graph"));
    cn_tensor *res[1] = {NULL};
    CHECK(cn_grad(1, &y, NULL, 1, &x, res, 0, &err) == -1);
    CHECK(mentions(&err, "retain_graph"));
    CHECK(res[0] == NULL);
    CHECK(values_are(x->grad, 2, (double[]){2 * exp(0.5), 2 * exp(1.0)})); /* unchanged */
    /* the same through cn_grad's own retain_graph */
    cn_tensor *e2 = cn_unary(CN_EXP, x, &err), *y2 = sum_all(e2);
    CHECK(cn_grad(1, &y2, NULL, 1, &x, res, CN_RETAIN_GRAPH, &err) == 0);
    cn_release(res[0]);
    CHECK(cn_grad(1, &y2, NULL, 1, &x, res, 0, &err) == 0);
    CHECK(values_are(res[0], 2, (double[]){exp(0.5), exp(1.0)}));
    cn_release(res[0]);
    res[0] = NULL;
    CHECK(cn_grad(1, &y2, NULL, 1, &x, res, 0, &err) == -1);
    CHECK(mentions(&err, "retain_graph"));
    cn_release(e), cn_release(y), cn_release(e2), cn_release(y2), cn_release(x);
}

/* ---- grad mode, detach ------------------------------------------------------------------------ */

static void test_grad_mode_switch(void) {
    const float xv[2] = {1, 2};
    cn_tensor *x = leaf(2, xv);
    const cn_tensor *xs[1] = {x};
    CHECK(cn_grad_enabled());
    CHECK(cn_needs_grad(1, xs));
    CHECK(cn_set_grad_enabled(false) == true);
    CHECK(!cn_grad_enabled() && !cn_needs_grad(1, xs));
    cn_tensor *y = scale(x, 2);
    CHECK(y && !y->node && !y->requires_grad);
    CHECK(cn_set_grad_enabled(true) == false);
    cn_tensor *z;
    CN_WITHOUT_GRAD(z = scale(x, 2));
    CHECK(z && !z->node && !z->requires_grad);
    CHECK(cn_grad_enabled()); /* restored */
    cn_tensor *w = scale(x, 2);
    CHECK(w && w->node && w->requires_grad);
    cn_release(y), cn_release(z), cn_release(w), cn_release(x);
}

static void test_detach(void) {
    const float xv[3] = {1, 2, 3};
    cn_tensor *x = leaf(3, xv);
    cn_error err;
    cn_tensor *y = scale(x, 2), *d = cn_detach(y, &err);
    CHECK(d && d->storage == y->storage && d->offset == y->offset);
    CHECK(!d->node && !d->requires_grad && d->grad == NULL);
    cn_data(d)[0] = 100; /* shared storage */
    CHECK(cn_data(y)[0] == 100);
    /* z = sum(d * x): the graph stops at d, so dz/dx = d */
    cn_tensor *dx = mul(d, x), *z = sum_all(dx);
    CHECK(cn_backward(z, NULL, 0, &err) == 0);
    CHECK(values_are(x->grad, 3, (double[]){100, 4, 6}));
    cn_release(y), cn_release(d), cn_release(dx), cn_release(z), cn_release(x);
}

/* ---- cn_sum_to_shape -------------------------------------------------------------------------- */

static void test_sum_to_shape(void) {
    float gv[24];
    for (int i = 0; i < 24; i++) gv[i] = (float)i;
    int64_t shape[3] = {2, 3, 4};
    cn_tensor *g = tensor_of(3, shape, gv);
    cn_error err;
    /* g[a][b][k] = 12a + 4b + k. -> [3,1]: sum over dims 0 and 2: 60 + 32b */
    cn_tensor *r = cn_sum_to_shape(g, 2, (int64_t[]){3, 1}, &err);
    CHECK(r && r->ndim == 2 && r->shape[0] == 3 && r->shape[1] == 1);
    CHECK(values_are(r, 3, (double[]){60, 92, 124}));
    cn_release(r);
    /* -> [4]: sum over the two leading dims: 60 + 6k */
    r = cn_sum_to_shape(g, 1, (int64_t[]){4}, &err);
    CHECK(r && r->ndim == 1 && values_are(r, 4, (double[]){60, 66, 72, 78}));
    cn_release(r);
    /* -> [2,1,4]: sum over the middle dim: 36a + 12 + 3k */
    r = cn_sum_to_shape(g, 3, (int64_t[]){2, 1, 4}, &err);
    CHECK(r && r->ndim == 3 && r->shape[1] == 1);
    CHECK(values_are(r, 8, (double[]){12, 15, 18, 21, 48, 51, 54, 57}));
    cn_release(r);
    /* -> 0-d: the total */
    r = cn_sum_to_shape(g, 0, shape, &err); /* ndim 0: shape unread */
    CHECK(r && r->ndim == 0 && values_are(r, 1, (double[]){276}));
    cn_release(r);
    /* the same shape: g itself, one more reference */
    int before = g->refcount;
    r = cn_sum_to_shape(g, 3, shape, &err);
    CHECK(r == g && g->refcount == before + 1);
    cn_release(r);
    /* impossible targets fail with a message, not a crash */
    CHECK(cn_sum_to_shape(g, 4, (int64_t[]){1, 2, 3, 4}, &err) == NULL);
    CHECK(mentions(&err, "[2, 3, 4]"));
    CHECK(cn_sum_to_shape(g, 1, (int64_t[]){5}, &err) == NULL);
    cn_release(g);
}

/* ---- memory and long graphs ---------------------------------------------------------------------- */

static void test_memory_back_to_baseline(void) {
    size_t base = cn_memory_live();
    const float wv[12] = {0.1f, -0.2f, 0.3f, 0.4f, -0.5f, 0.6f, 0.7f, -0.8f, 0.9f, 1.0f, -1.1f, 1.2f};
    int64_t wshape[2] = {4, 3}, xshape[2] = {2, 4};
    cn_tensor *w = tensor_of(2, wshape, wv), *x = tensor_of(2, xshape, wv);
    w->requires_grad = true;
    size_t with_params = cn_memory_live();
    cn_error err;
    for (int step = 0; step < 3; step++) {
        /* loss = mean(tanh(x @ w)^2), backward, drop everything but the parameters */
        cn_tensor *h = cn_matmul(x, w, &err), *t = cn_unary(CN_TANH, h, &err);
        cn_tensor *sq = mul(t, t), *loss = cn_mean(sq, 0, NULL, false, &err);
        cn_release(h), cn_release(t), cn_release(sq); /* the graph keeps what it needs */
        CHECK(cn_backward(loss, NULL, 0, &err) == 0);
        CHECK(w->grad && w->grad->ndim == 2);
        cn_release(loss);
        cn_release(w->grad);
        w->grad = NULL;
        CHECK(cn_memory_live() == with_params);
    }
    /* a graph released without any backward goes too */
    cn_tensor *h = cn_matmul(x, w, &err), *t = cn_unary(CN_SIGMOID, h, &err), *loss = sum_all(t);
    cn_release(h), cn_release(t);
    CHECK(cn_memory_live() > with_params);
    cn_release(loss);
    CHECK(cn_memory_live() == with_params);
    /* retained graphs as well */
    h = cn_matmul(x, w, &err), loss = sum_all(h);
    CHECK(cn_backward(loss, NULL, CN_RETAIN_GRAPH, &err) == 0);
    cn_release(h), cn_release(loss);
    cn_release(w->grad);
    w->grad = NULL;
    CHECK(cn_memory_live() == with_params);
    cn_release(w), cn_release(x);
    CHECK(cn_memory_live() == base);
}

#define CHAIN 100000

typedef struct {
    bool ok;
    float grad, value;
    size_t live_after;
} chain_result;

/* x = x * 1.0001, CHAIN times from a leaf 1: backward, release; then a chain dropped unwalked. */
static void *chain_thread(void *arg) {
    chain_result *res = arg;
    const float one = 1;
    cn_tensor *x0 = leaf(1, &one);
    size_t base = cn_memory_live();
    cn_tensor *y = cn_retain(x0);
    res->ok = true;
    for (int i = 0; i < CHAIN && res->ok; i++) {
        cn_tensor *next = scale(y, 1.0001f);
        cn_release(y);
        y = next;
        res->ok = y != NULL;
    }
    cn_error err;
    res->ok = res->ok && cn_backward(y, NULL, 0, &err) == 0 && x0->grad;
    res->value = cn_data(y)[0];
    res->grad = res->ok ? cn_data(x0->grad)[0] : 0;
    cn_release(y);
    cn_release(x0->grad);
    x0->grad = NULL;
    y = cn_retain(x0);
    for (int i = 0; i < CHAIN && res->ok; i++) {
        cn_tensor *next = scale(y, 1.0001f);
        cn_release(y);
        y = next;
        res->ok = y != NULL;
    }
    cn_release(y); /* 1e5 nodes die here, iteratively */
    res->live_after = cn_memory_live() - base;
    cn_release(x0);
    return NULL;
}

/* create_graph: y = sum(0.5 x*x + 3 x) through a lincomb, g = dy/dx = x + 3 comes back with a
 * graph, and d sum(g * v) / dx = v; an op without a recorded backward refuses by name; and every
 * graph, the gradient's own included, is freed with its outputs. */
static void test_create_graph(void) {
    size_t base = cn_memory_live();
    cn_error err;
    const float xv[3] = {1.0f, -2.0f, 0.5f}, vv[3] = {0.25f, 2.0f, -1.0f};
    cn_tensor *x = leaf(3, xv), *v = vec(3, vv), *g = NULL, *h = NULL;
    cn_tensor *sq = mul(x, x), *terms[2] = {sq, x};
    const double coeffs[2] = {0.5, 3.0};
    cn_tensor *comb = cn_lincomb(2, terms, coeffs, &err), *y = comb ? sum_all(comb) : NULL;
    CHECK(y && cn_grad(1, &y, NULL, 1, &x, &g, CN_CREATE_GRAPH, &err) == 0);
    CHECK(values_are(g, 3, (const double[]){4.0, 1.0, 3.5}));
    CHECK(g && g->node != NULL);
    cn_tensor *gv = g ? mul(g, v) : NULL, *s = gv ? sum_all(gv) : NULL;
    CHECK(s && cn_grad(1, &s, NULL, 1, &x, &h, 0, &err) == 0);
    CHECK(values_are(h, 3, (const double[]){0.25, 2.0, -1.0}));
    /* in C, CN_CREATE_GRAPH alone does not retain the walked graph (the Lua binding defaults
     * retain_graph to create_graph, as torch) */
    cn_release(g), cn_release(h), cn_release(gv), cn_release(s);
    g = NULL;
    CHECK(cn_grad(1, &y, NULL, 1, &x, &g, CN_CREATE_GRAPH, &err) == -1 && mentions(&err, "second time"));
    const float target_value[1] = {1.0f};
    int64_t row[2] = {1, 3};
    cn_tensor *logits = cn_reshape(x, 2, row, &err), *target = vec(1, target_value);
    cn_tensor *loss = logits ? cn_cross_entropy(logits, target, NULL, CN_REDUCTION_MEAN, -100, 0.0, &err) : NULL;
    CHECK(loss && cn_grad(1, &loss, NULL, 1, &x, &g, CN_CREATE_GRAPH, &err) == -1 &&
          mentions(&err, "create_graph is not supported through 'cross_entropy'"));
    cn_release(logits), cn_release(target), cn_release(loss), cn_release(sq), cn_release(comb), cn_release(y), cn_release(x), cn_release(v);
    CHECK(cn_memory_live() == base);
}

static void test_long_chain_without_recursion(void) {
    /* a 1 MiB stack: a recursive walk or free over 1e5 nodes would overflow it */
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, (size_t)1 << 20);
    pthread_t thread;
    chain_result res = {0};
    CHECK(pthread_create(&thread, &attr, chain_thread, &res) == 0);
    pthread_join(thread, NULL);
    pthread_attr_destroy(&attr);
    CHECK(res.ok);
    /* forward and backward multiply by the same float factor starting from 1: identical roundings */
    CHECK(res.grad == res.value);
    CHECK_CLOSE(res.grad, pow(1.0001, CHAIN), 1e-2, 0);
    CHECK(res.live_after == 0);
}

int main(void) {
    RUN(test_backward_accumulates_into_leaves);
    RUN(test_backward_explicit_gradient_and_errors);
    RUN(test_diamond);
    RUN(test_grad_captures_leaf_and_non_leaf_inputs);
    RUN(test_grad_several_outputs);
    RUN(test_grad_unused_inputs);
    RUN(test_retain_graph);
    RUN(test_grad_mode_switch);
    RUN(test_detach);
    RUN(test_sum_to_shape);
    RUN(test_memory_back_to_baseline);
    RUN(test_create_graph);
    RUN(test_long_chain_without_recursion);
    return CTEST_SUMMARY("autograd");
}
