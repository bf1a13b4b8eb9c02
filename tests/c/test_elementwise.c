/* test_elementwise.c — unary, binary, broadcasting, strided views, in-place, where, clamp, axpby
 * (ops_elementwise.c) against references computed here in double precision with libm. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "alloc.h"
#include "ctest.h"
#include "ops.h"
#include "test_util.h"

/* got (float) against a double reference rounded to float: NaN matches NaN, inf matches the same inf. */
#define CHECK_REF(got, ref, rtol, atol)                                                       \
    do {                                                                                      \
        float g_ = (got), w_ = (float)(ref);                                                  \
        if (isnan(w_) || isinf(w_)) {                                                         \
            if (!(isnan(w_) ? isnan(g_) : g_ == w_)) {                                        \
                fprintf(stderr, "  FAIL %s (%s:%d): %s = %.9g, expected %.9g\n",              \
                        ctest_current, __FILE__, __LINE__, #got, (double)g_, (double)w_);     \
                ctest_current_failed = 1;                                                     \
            }                                                                                 \
        } else {                                                                              \
            CHECK_CLOSE(g_, w_, rtol, atol);                                                  \
        }                                                                                     \
    } while (0)

/* ---- fixtures ------------------------------------------------------------------------------ */

static cn_tensor *make(int ndim, const int64_t *shape, const float *data) {
    cn_tensor *t = cn_from_data(ndim, shape, data, NULL);
    if (!t) {
        fprintf(stderr, "fixture allocation failed\n");
        exit(2);
    }
    return t;
}

/* The element of t at a full index of the broadcast output shape (out_ndim dims), from t's own
 * strides: the reference indexing, independent of the engine's iterator. */
static float at_broadcast(const cn_tensor *t, int out_ndim, const int64_t *idx) {
    int64_t off = (int64_t)t->offset;
    int lead = out_ndim - t->ndim;
    for (int j = 0; j < t->ndim; j++)
        if (t->shape[j] != 1) off += idx[j + lead] * t->stride[j];
    return t->storage->data[off];
}

/* Advances a row-major index over shape; false after the last. */
static bool next_index(int ndim, const int64_t *shape, int64_t *idx) {
    for (int d = ndim - 1; d >= 0; d--) {
        if (++idx[d] < shape[d]) return true;
        idx[d] = 0;
    }
    return false;
}

static bool has_shape(const cn_tensor *t, int ndim, const int64_t *shape) {
    if (!t || t->ndim != ndim) return false;
    for (int i = 0; i < ndim; i++)
        if (t->shape[i] != shape[i]) return false;
    return true;
}

/* True when a and b hold bitwise-equal values (NaN == NaN) in row-major order. */
static bool same_values(const cn_tensor *a, const cn_tensor *b) {
    if (!a || !b || !cn_same_shape(a, b)) return false;
    size_t n = cn_numel(a);
    float *pa = malloc(n * sizeof *pa + 1), *pb = malloc(n * sizeof *pb + 1);
    cn_to_buffer(a, pa);
    cn_to_buffer(b, pb);
    bool ok = true;
    for (size_t i = 0; i < n && ok; i++) ok = pa[i] == pb[i] || (isnan(pa[i]) && isnan(pb[i]));
    free(pa);
    free(pb);
    return ok;
}

/* ---- double references ------------------------------------------------------------------- */

static double ref_sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

static double ref_unary(cn_unary_op op, double x) {
    switch (op) {
    case CN_NEG: return -x;
    case CN_EXP: return exp(x);
    case CN_LOG: return log(x);
    case CN_SQRT: return sqrt(x);
    case CN_RSQRT: return 1.0 / sqrt(x);
    case CN_ABS: return fabs(x);
    case CN_SIN: return sin(x);
    case CN_COS: return cos(x);
    case CN_TANH: return tanh(x);
    case CN_SIGMOID: return ref_sigmoid(x);
    case CN_RELU: return x > 0 ? x : 0;
    case CN_SILU: return x * ref_sigmoid(x);
    case CN_SOFTPLUS: return x > 20 ? x : log1p(exp(x));
    case CN_GELU: return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
    case CN_GELU_TANH:
        return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    case CN_SIGN: return x > 0 ? 1 : x < 0 ? -1 : 0;
    case CN_SQUARE: return x * x;
    case CN_RECIPROCAL: return 1.0 / x;
    case CN_FLOOR: return floor(x);
    case CN_CEIL: return ceil(x);
    case CN_ROUND: return nearbyint(x);
    case CN_UNARY_COUNT: break;
    }
    return NAN;
}

static double ref_binary(cn_binary_op op, double u, double v) {
    switch (op) {
    case CN_ADD: return u + v;
    case CN_SUB: return u - v;
    case CN_MUL: return u * v;
    case CN_DIV: return u / v;
    case CN_POW: return pow(u, v);
    case CN_MAXIMUM: return isnan(u) || isnan(v) ? NAN : fmax(u, v);
    case CN_MINIMUM: return isnan(u) || isnan(v) ? NAN : fmin(u, v);
    case CN_EQ: return u == v;
    case CN_NE: return u != v;
    case CN_LT: return u < v;
    case CN_LE: return u <= v;
    case CN_GT: return u > v;
    case CN_GE: return u >= v;
    case CN_BINARY_COUNT: break;
    }
    return NAN;
}

/* Checks cn_binary(op, a, b) element by element against ref_binary over the broadcast shape. */
static void check_binary_ref(cn_binary_op op, const cn_tensor *a, const cn_tensor *b, int ndim,
                             const int64_t *shape) {
    cn_error err;
    cn_tensor *r = cn_binary(op, a, b, &err);
    CHECK(has_shape(r, ndim, shape));
    if (!has_shape(r, ndim, shape)) {
        cn_release(r);
        return;
    }
    int64_t idx[CN_MAX_DIMS] = {0};
    const float *p = cn_data(r);
    size_t i = 0, bad = 0;
    if (cn_numel(r) > 0) {
        do {
            double want = ref_binary(op, at_broadcast(a, ndim, idx), at_broadcast(b, ndim, idx));
            float w = (float)want;
            bool ok = isnan(w) ? isnan(p[i]) : p[i] == w || fabs(p[i] - w) <= 1e-6 + 1e-6 * fabs(w);
            if (!ok && bad++ < 3)
                fprintf(stderr, "    %s at flat %zu: got %.9g, expected %.9g\n", cn_binary_name(op), i,
                        (double)p[i], (double)w);
            i++;
        } while (next_index(ndim, shape, idx));
    }
    CHECK(bad == 0);
    CHECK(i == cn_numel(r));
    cn_release(r);
}

/* ---- tests --------------------------------------------------------------------------------- */

static const float special[] = {-100, -25, -20.5f, -3.5f, -2.5f, -1.5f, -1, -0.5f, -0.3f, -0.0f,
                                0,    0.3f, 0.5f,  1,     1.5f,  2.5f,  3.5f, 19.5f, 20.5f, 25, 100};
#define NSPECIAL ((int64_t)(sizeof special / sizeof special[0]))

static void test_names(void) {
    CHECK(strcmp(cn_unary_name(CN_EXP), "exp") == 0);
    CHECK(strcmp(cn_unary_name(CN_GELU), "gelu") == 0);
    CHECK(strcmp(cn_unary_name(CN_ROUND), "round") == 0);
    CHECK(strcmp(cn_binary_name(CN_ADD), "add") == 0);
    CHECK(strcmp(cn_binary_name(CN_MAXIMUM), "maximum") == 0);
    CHECK(strcmp(cn_binary_name(CN_GE), "ge") == 0);
    CHECK(cn_unary_name(CN_UNARY_COUNT) != NULL);
    CHECK(cn_binary_name((cn_binary_op)-1) != NULL);
}

static void test_unary_all_ops(void) {
    cn_tensor *x = make(1, (int64_t[]){NSPECIAL}, special);
    for (int op = 0; op < CN_UNARY_COUNT; op++) {
        cn_error err;
        cn_tensor *r = cn_unary((cn_unary_op)op, x, &err);
        CHECK(has_shape(r, 1, (int64_t[]){NSPECIAL}));
        if (!r) continue;
        const float *p = cn_data(r);
        for (int64_t i = 0; i < NSPECIAL; i++) {
            double want = ref_unary((cn_unary_op)op, special[i]);
            int before = ctest_current_failed;
            ctest_current_failed = 0;
            CHECK_REF(p[i], want, 2e-6, 1e-6);
            if (ctest_current_failed)
                fprintf(stderr, "    (%s of %.9g)\n", cn_unary_name((cn_unary_op)op), (double)special[i]);
            ctest_current_failed |= before;
        }
        cn_release(r);
    }
    cn_release(x);
}

/* The values the brief singles out, checked exactly or to a relative tolerance. */
static float unary1(cn_unary_op op, float x) {
    cn_tensor *t = cn_scalar(x, NULL);
    cn_tensor *r = cn_unary(op, t, NULL);
    float v = r ? *cn_data(r) : -12345.0f;
    cn_release(t);
    cn_release(r);
    return v;
}

static void test_unary_edge_cases(void) {
    /* softplus: above the threshold x itself, far below e^x (relative accuracy, no log1p loss) */
    CHECK(unary1(CN_SOFTPLUS, 25) == 25.0f);
    CHECK(unary1(CN_SOFTPLUS, 20.5f) == 20.5f);
    CHECK_CLOSE(unary1(CN_SOFTPLUS, -25), log1p(exp(-25.0)), 1e-5, 0);
    CHECK_CLOSE(unary1(CN_SOFTPLUS, 19.5f), log1p(exp(19.5)), 1e-6, 0);
    /* sigmoid saturates without NaN, and keeps relative accuracy in the tail */
    CHECK(unary1(CN_SIGMOID, 100) == 1.0f);
    float s = unary1(CN_SIGMOID, -100);
    CHECK(s > 0.0f && s < 1e-40f);
    CHECK_CLOSE(unary1(CN_SIGMOID, -25), ref_sigmoid(-25), 1e-5, 0);
    CHECK(unary1(CN_SILU, -100) < 0.0f && unary1(CN_SILU, -100) > -1e-39f);
    CHECK(unary1(CN_SILU, 100) == 100.0f);
    /* gelu, exact and tanh forms (torch values) */
    CHECK_CLOSE(unary1(CN_GELU, 1), 0.841344746, 1e-6, 0);
    CHECK_CLOSE(unary1(CN_GELU, -1), -0.158655254, 1e-6, 0);
    CHECK_CLOSE(unary1(CN_GELU_TANH, 1), 0.841192007, 1e-6, 0);
    CHECK_CLOSE(unary1(CN_GELU_TANH, -0.5f), -0.154285997, 1e-6, 0);
    CHECK(unary1(CN_GELU, -100) == 0.0f);
    CHECK(unary1(CN_GELU_TANH, 100) == 100.0f);
    /* round half to even */
    CHECK(unary1(CN_ROUND, 0.5f) == 0.0f);
    CHECK(unary1(CN_ROUND, 1.5f) == 2.0f);
    CHECK(unary1(CN_ROUND, 2.5f) == 2.0f);
    CHECK(unary1(CN_ROUND, -2.5f) == -2.0f);
    CHECK(unary1(CN_ROUND, -3.5f) == -4.0f);
    CHECK(unary1(CN_ROUND, 2.6f) == 3.0f);
    /* logs and roots at the edges of their domains */
    CHECK(isinf(unary1(CN_LOG, 0)) && unary1(CN_LOG, 0) < 0);
    CHECK(isnan(unary1(CN_LOG, -1)));
    CHECK(isnan(unary1(CN_SQRT, -1)));
    CHECK(isinf(unary1(CN_RSQRT, 0)) && unary1(CN_RSQRT, 0) > 0);
    CHECK_CLOSE(unary1(CN_RSQRT, 4), 0.5, 0, 0);
    CHECK(isinf(unary1(CN_RECIPROCAL, 0)));
    CHECK(isinf(unary1(CN_EXP, 100)));
    /* sign of zeros and NaN is 0; relu and abs keep NaN */
    CHECK(unary1(CN_SIGN, 0) == 0.0f && unary1(CN_SIGN, -0.0f) == 0.0f);
    CHECK(unary1(CN_SIGN, NAN) == 0.0f);
    CHECK(unary1(CN_SIGN, -3) == -1.0f && unary1(CN_SIGN, 1e-30f) == 1.0f);
    CHECK(isnan(unary1(CN_RELU, NAN)));
    CHECK(unary1(CN_RELU, -2) == 0.0f && unary1(CN_RELU, 2) == 2.0f);
    CHECK(isnan(unary1(CN_SIGMOID, NAN)));
    CHECK(unary1(CN_FLOOR, -1.5f) == -2.0f && unary1(CN_CEIL, -1.5f) == -1.0f);
    /* 0-d in, 0-d out */
    cn_tensor *t = cn_scalar(2, NULL);
    cn_tensor *r = cn_unary(CN_SQUARE, t, NULL);
    CHECK(r && r->ndim == 0 && *cn_data(r) == 4.0f);
    cn_release(t);
    cn_release(r);
}

static void test_unary_bad_op(void) {
    cn_error err = {{0}};
    cn_tensor *t = cn_scalar(1, NULL);
    CHECK(cn_unary(CN_UNARY_COUNT, t, &err) == NULL);
    CHECK(strstr(err.msg, "unknown op") != NULL);
    CHECK(cn_binary(CN_BINARY_COUNT, t, t, &err) == NULL);
    CHECK(cn_binary_scalar(CN_BINARY_COUNT, t, 1, false, NULL) == NULL);
    CHECK(cn_binary_(CN_BINARY_COUNT, t, t, NULL) == -1);
    cn_release(t);
}

static void test_binary_all_ops(void) {
    /* every pair from a value list that includes NaN, inf, zeros, negatives and integers */
    static const float vals[] = {-3, -2, -1.5f, -0.5f, 0, 0.5f, 1, 2, 3, 7.25f, INFINITY, NAN};
    const int64_t nv = (int64_t)(sizeof vals / sizeof vals[0]);
    cn_tensor *u = make(2, (int64_t[]){nv, 1}, vals);
    cn_tensor *v = make(2, (int64_t[]){1, nv}, vals);
    for (int op = 0; op < CN_BINARY_COUNT; op++)
        check_binary_ref((cn_binary_op)op, u, v, 2, (int64_t[]){nv, nv});
    cn_release(u);
    cn_release(v);
}

static void test_binary_specifics(void) {
    float av[] = {1, NAN, 3, -0.5f}, bv[] = {NAN, 2, 1, -0.5f};
    cn_tensor *a = make(1, (int64_t[]){4}, av), *b = make(1, (int64_t[]){4}, bv);
    cn_tensor *mx = cn_binary(CN_MAXIMUM, a, b, NULL), *mn = cn_binary(CN_MINIMUM, a, b, NULL);
    cn_tensor *eq = cn_binary(CN_EQ, a, b, NULL), *ne = cn_binary(CN_NE, a, b, NULL);
    CHECK(mx && mn && eq && ne);
    if (mx && mn && eq && ne) {
        const float *x = cn_data(mx), *n = cn_data(mn), *e = cn_data(eq), *q = cn_data(ne);
        CHECK(isnan(x[0]) && isnan(x[1]) && x[2] == 3 && x[3] == -0.5f);
        CHECK(isnan(n[0]) && isnan(n[1]) && n[2] == 1 && n[3] == -0.5f);
        CHECK(e[0] == 0 && e[1] == 0 && e[2] == 0 && e[3] == 1);
        CHECK(q[0] == 1 && q[1] == 1 && q[2] == 1 && q[3] == 0);
    }
    cn_release(mx), cn_release(mn), cn_release(eq), cn_release(ne);
    /* pow: float semantics, negative bases with integer exponents, NaN for fractional ones */
    float pb[] = {-2, -2, 2, 0, 4}, pe[] = {3, 0.5f, -1, 0, 0.5f};
    cn_tensor *base = make(1, (int64_t[]){5}, pb), *ex = make(1, (int64_t[]){5}, pe);
    cn_tensor *pw = cn_binary(CN_POW, base, ex, NULL);
    CHECK(pw != NULL);
    if (pw) {
        const float *p = cn_data(pw);
        CHECK(p[0] == -8 && isnan(p[1]) && p[2] == 0.5f && p[3] == 1 && p[4] == 2);
    }
    cn_release(pw), cn_release(base), cn_release(ex), cn_release(a), cn_release(b);
}

static void test_broadcast_shapes(void) {
    struct { int na; int64_t sa[3]; int nb; int64_t sb[3]; int nr; int64_t sr[3]; } cases[] = {
        {2, {3, 1}, 2, {1, 4}, 2, {3, 4}},
        {2, {2, 3}, 1, {3}, 2, {2, 3}},
        {1, {3}, 2, {2, 3}, 2, {2, 3}},
        {0, {0}, 2, {2, 3}, 2, {2, 3}},
        {2, {2, 3}, 0, {0}, 2, {2, 3}},
        {1, {1}, 1, {5}, 1, {5}},
        {1, {5}, 1, {1}, 1, {5}},
        {3, {2, 1, 4}, 2, {3, 1}, 3, {2, 3, 4}},
        {2, {3, 1}, 3, {2, 1, 4}, 3, {2, 3, 4}},
        {0, {0}, 0, {0}, 0, {0}},
        {2, {0, 3}, 1, {3}, 2, {0, 3}},
        {2, {1, 1}, 1, {1}, 2, {1, 1}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        cn_tensor *a = random_tensor(cases[c].na, cases[c].sa, -3, 3);
        cn_tensor *b = random_tensor(cases[c].nb, cases[c].sb, 0.5f, 3);
        for (int op = 0; op < CN_BINARY_COUNT; op++)
            check_binary_ref((cn_binary_op)op, a, b, cases[c].nr, cases[c].sr);
        cn_release(a);
        cn_release(b);
    }
}

static void test_broadcast_mismatch(void) {
    cn_error err = {{0}};
    cn_tensor *a = cn_zeros(2, (int64_t[]){2, 3}, NULL), *b = cn_zeros(2, (int64_t[]){4, 5}, NULL);
    CHECK(cn_binary(CN_ADD, a, b, &err) == NULL);
    CHECK(strcmp(err.msg, "add: cannot broadcast shapes [2, 3] and [4, 5]") == 0);
    CHECK(cn_binary(CN_GE, b, a, &err) == NULL);
    CHECK(strcmp(err.msg, "ge: cannot broadcast shapes [4, 5] and [2, 3]") == 0);
    CHECK(cn_binary(CN_MUL, a, b, NULL) == NULL); /* err may be NULL */
    cn_tensor *c = cn_zeros(1, (int64_t[]){2}, NULL);
    CHECK(cn_binary(CN_SUB, a, c, &err) == NULL);
    CHECK(strstr(err.msg, "sub") && strstr(err.msg, "[2, 3]") && strstr(err.msg, "[2]"));
    CHECK(cn_axpby(a, 1, b, 1, &err) == NULL);
    CHECK(strstr(err.msg, "axpby") && strstr(err.msg, "[2, 3]") && strstr(err.msg, "[4, 5]"));
    cn_release(a), cn_release(b), cn_release(c);
}

/* Op on a view vs the same op on its contiguous clone: bitwise equal. */
static void check_view_vs_clone(cn_tensor *view, cn_tensor *other) {
    cn_tensor *copy = cn_clone(view, NULL);
    for (int op = 0; op < CN_BINARY_COUNT; op++) {
        cn_tensor *r1 = cn_binary((cn_binary_op)op, view, other, NULL);
        cn_tensor *r2 = cn_binary((cn_binary_op)op, copy, other, NULL);
        CHECK(same_values(r1, r2));
        cn_tensor *r3 = cn_binary((cn_binary_op)op, other, view, NULL);
        cn_tensor *r4 = cn_binary((cn_binary_op)op, other, copy, NULL);
        CHECK(same_values(r3, r4));
        cn_release(r1), cn_release(r2), cn_release(r3), cn_release(r4);
    }
    for (int op = 0; op < CN_UNARY_COUNT; op++) {
        cn_tensor *r1 = cn_unary((cn_unary_op)op, view, NULL), *r2 = cn_unary((cn_unary_op)op, copy, NULL);
        CHECK(same_values(r1, r2));
        cn_release(r1), cn_release(r2);
    }
    cn_tensor *c1 = cn_clamp(view, -0.5f, 0.5f, NULL), *c2 = cn_clamp(copy, -0.5f, 0.5f, NULL);
    CHECK(same_values(c1, c2));
    cn_tensor *w1 = cn_where(view, other, view, NULL), *w2 = cn_where(copy, other, copy, NULL);
    CHECK(same_values(w1, w2));
    cn_tensor *x1 = cn_axpby(view, 2, other, -3, NULL), *x2 = cn_axpby(copy, 2, other, -3, NULL);
    CHECK(same_values(x1, x2));
    cn_release(c1), cn_release(c2), cn_release(w1), cn_release(w2), cn_release(x1), cn_release(x2);
    cn_release(copy);
}

static void test_strided_views(void) {
    cn_tensor *base = random_tensor(3, (int64_t[]){4, 5, 6}, -2, 2);
    cn_tensor *row = random_tensor(1, (int64_t[]){4}, -2, 2);
    cn_tensor *mat = random_tensor(2, (int64_t[]){5, 4}, -2, 2);
    /* permuted: [6, 5, 4] with strides (1, 6, 30) */
    cn_tensor *perm = cn_permute(base, (int[]){2, 1, 0}, NULL);
    CHECK(perm && !cn_is_contiguous(perm));
    check_view_vs_clone(perm, row);
    check_view_vs_clone(perm, mat);
    /* transposed 2-D and narrowed */
    cn_tensor *sel = cn_select(base, 2, 3, NULL);           /* [4, 5], strides (30, 6) */
    cn_tensor *tr = cn_transpose(sel, 0, 1, NULL);          /* [5, 4] */
    check_view_vs_clone(tr, row);
    check_view_vs_clone(tr, mat);
    cn_tensor *nar = cn_narrow(base, 2, 1, 4, NULL);        /* [4, 5, 4], rows with gaps */
    check_view_vs_clone(nar, row);
    check_view_vs_clone(nar, mat);
    /* expanded: stride-0 dims in the middle and in front */
    cn_tensor *col = random_tensor(2, (int64_t[]){5, 1}, -2, 2);
    cn_tensor *ex = cn_expand(col, 3, (int64_t[]){3, 5, 4}, NULL);
    CHECK(ex && ex->stride[0] == 0 && ex->stride[2] == 0);
    check_view_vs_clone(ex, row);
    check_view_vs_clone(ex, mat);
    /* both operands strided at once, checked against the reference indexing */
    check_binary_ref(CN_SUB, perm, tr, 3, (int64_t[]){6, 5, 4});
    check_binary_ref(CN_POW, tr, nar, 3, (int64_t[]){4, 5, 4});
    cn_release(perm), cn_release(sel), cn_release(tr), cn_release(nar), cn_release(col);
    cn_release(ex), cn_release(base), cn_release(row), cn_release(mat);
}

static void test_scalar_ops(void) {
    float av[] = {1, 2, 4, -0.5f, 0, 3};
    cn_tensor *a = make(2, (int64_t[]){2, 3}, av);
    for (int op = 0; op < CN_BINARY_COUNT; op++) {
        for (int first = 0; first <= 1; first++) {
            float s = 2.0f;
            cn_tensor *r = cn_binary_scalar((cn_binary_op)op, a, s, first, NULL);
            CHECK(has_shape(r, 2, (int64_t[]){2, 3}));
            if (!r) continue;
            const float *p = cn_data(r);
            for (int i = 0; i < 6; i++) {
                double want = first ? ref_binary((cn_binary_op)op, s, av[i]) : ref_binary((cn_binary_op)op, av[i], s);
                CHECK_REF(p[i], want, 1e-6, 1e-7);
            }
            cn_release(r);
        }
    }
    /* 2 - a, 2 / a, 2 ^ a read the right way round */
    cn_tensor *r = cn_binary_scalar(CN_SUB, a, 2, true, NULL);
    CHECK(r && cn_data(r)[2] == -2.0f);
    cn_release(r);
    r = cn_binary_scalar(CN_POW, a, 2, true, NULL);
    CHECK(r && cn_data(r)[2] == 16.0f && cn_data(r)[3] == (float)pow(2, -0.5));
    cn_release(r);
    r = cn_binary_scalar(CN_DIV, a, 2, false, NULL);
    CHECK(r && cn_data(r)[1] == 1.0f);
    cn_release(r);
    /* on a transposed view and on a 0-d tensor */
    cn_tensor *t = cn_transpose(a, 0, 1, NULL);
    r = cn_binary_scalar(CN_MUL, t, 10, false, NULL);
    CHECK(r && has_shape(r, 2, (int64_t[]){3, 2}) && cn_data(r)[1] == -5.0f && cn_data(r)[2] == 20.0f &&
          cn_data(r)[4] == 40.0f);
    cn_release(r), cn_release(t);
    cn_tensor *z = cn_scalar(3, NULL);
    r = cn_binary_scalar(CN_SUB, z, 1, true, NULL);
    CHECK(r && r->ndim == 0 && *cn_data(r) == -2.0f);
    cn_release(r), cn_release(z), cn_release(a);
}

static void test_inplace(void) {
    cn_error err = {{0}};
    float av[] = {1, 2, 3, 4, 5, 6}, bv[] = {10, 20, 30};
    cn_tensor *a = make(2, (int64_t[]){2, 3}, av), *b = make(1, (int64_t[]){3}, bv);
    CHECK(cn_binary_(CN_ADD, a, b, &err) == 0);
    const float *p = cn_data(a);
    CHECK(p[0] == 11 && p[2] == 33 && p[3] == 14 && p[5] == 36);
    CHECK(cn_binary_(CN_MUL, a, b, &err) == 0);
    CHECK(p[0] == 110 && p[5] == 1080);
    cn_tensor *two = cn_scalar(2, NULL);
    CHECK(cn_binary_(CN_DIV, a, two, &err) == 0);
    CHECK(cn_binary_(CN_SUB, a, two, &err) == 0);
    CHECK(p[0] == 53 && p[5] == 538);
    /* b must broadcast to a's shape exactly: [3] op= [2, 3] grows the result */
    CHECK(cn_binary_(CN_ADD, b, a, &err) == -1);
    CHECK(strstr(err.msg, "add_") && strstr(err.msg, "[2, 3]") && strstr(err.msg, "[3]"));
    cn_tensor *c = cn_zeros(1, (int64_t[]){4}, NULL);
    CHECK(cn_binary_(CN_SUB, a, c, &err) == -1);
    CHECK(strcmp(err.msg, "sub_: cannot broadcast shapes [2, 3] and [4]") == 0);
    CHECK(cn_data(b)[0] == 10); /* failed calls leave the target alone */
    /* an expanded target would write one element many times */
    cn_tensor *ex = cn_expand(b, 2, (int64_t[]){2, 3}, NULL);
    CHECK(cn_binary_(CN_ADD, ex, two, &err) == -1);
    CHECK(strstr(err.msg, "expanded") != NULL);
    cn_release(ex), cn_release(c), cn_release(two);
    /* a strided target: only its elements change */
    cn_tensor *m = make(2, (int64_t[]){3, 3}, (float[]){0, 1, 2, 3, 4, 5, 6, 7, 8});
    cn_tensor *mt = cn_transpose(m, 0, 1, NULL);
    cn_tensor *col = cn_narrow(mt, 1, 0, 2, NULL); /* mt[:, 0:2] = m[0:2, :]^T */
    cn_tensor *ones = make(1, (int64_t[]){2}, (float[]){100, 200});
    CHECK(cn_binary_(CN_ADD, col, ones, &err) == 0);
    const float *q = cn_data(m);
    CHECK(q[0] == 100 && q[1] == 101 && q[2] == 102 && q[3] == 203 && q[5] == 205 && q[6] == 6 && q[8] == 8);
    cn_release(col), cn_release(ones);
    /* aliasing: m += m^T must read the original m^T */
    float orig[9];
    memcpy(orig, q, sizeof orig);
    CHECK(cn_binary_(CN_ADD, m, mt, &err) == 0);
    bool ok = true;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) ok = ok && q[i * 3 + j] == orig[i * 3 + j] + orig[j * 3 + i];
    CHECK(ok);
    /* and m *= m elementwise */
    memcpy(orig, q, sizeof orig);
    CHECK(cn_binary_(CN_MUL, m, m, &err) == 0);
    CHECK(q[4] == orig[4] * orig[4] && q[7] == orig[7] * orig[7]);
    cn_release(mt), cn_release(m), cn_release(a), cn_release(b);
}

static void test_where(void) {
    cn_error err = {{0}};
    cn_tensor *cond = make(2, (int64_t[]){3, 1}, (float[]){1, 0, NAN});
    cn_tensor *a = make(2, (int64_t[]){1, 4}, (float[]){1, 2, 3, 4});
    cn_tensor *b = cn_scalar(-1, NULL);
    cn_tensor *r = cn_where(cond, a, b, &err);
    CHECK(has_shape(r, 2, (int64_t[]){3, 4}));
    if (r) {
        const float *p = cn_data(r);
        CHECK(p[0] == 1 && p[3] == 4 && p[4] == -1 && p[7] == -1 && p[8] == 1 && p[11] == 4);
    }
    cn_release(r);
    /* the condition may be the broadcast one and the values full-size */
    cn_tensor *big = random_tensor(2, (int64_t[]){3, 4}, -1, 1);
    r = cn_where(b, a, big, &err); /* cond -1 != 0: all from a */
    CHECK(has_shape(r, 2, (int64_t[]){3, 4}) && cn_data(r)[5] == 2);
    cn_release(r);
    cn_tensor *bad = cn_zeros(1, (int64_t[]){5}, NULL);
    CHECK(cn_where(cond, a, bad, &err) == NULL);
    CHECK(strstr(err.msg, "where") && strstr(err.msg, "[3, 1]") && strstr(err.msg, "[1, 4]") &&
          strstr(err.msg, "[5]"));
    CHECK(cn_where(bad, a, b, &err) == NULL);
    CHECK(strstr(err.msg, "where") && strstr(err.msg, "[5]") && strstr(err.msg, "[1, 4]"));
    cn_release(bad), cn_release(big), cn_release(cond), cn_release(a), cn_release(b);
}

static void test_clamp(void) {
    float av[] = {-3, -1, 0, 0.5f, 2, NAN, INFINITY, -INFINITY};
    cn_tensor *a = make(1, (int64_t[]){8}, av);
    cn_tensor *r = cn_clamp(a, -1, 1, NULL);
    CHECK(r != NULL);
    if (r) {
        const float *p = cn_data(r);
        CHECK(p[0] == -1 && p[1] == -1 && p[2] == 0 && p[3] == 0.5f && p[4] == 1);
        CHECK(isnan(p[5]) && p[6] == 1 && p[7] == -1);
    }
    cn_release(r);
    r = cn_clamp(a, 0, INFINITY, NULL); /* open top: relu-like */
    CHECK(r && cn_data(r)[0] == 0 && cn_data(r)[4] == 2 && isinf(cn_data(r)[6]));
    cn_release(r);
    r = cn_clamp(a, -INFINITY, 0.25f, NULL); /* open bottom */
    CHECK(r && cn_data(r)[0] == -3 && cn_data(r)[3] == 0.25f && isinf(cn_data(r)[7]));
    cn_release(r);
    r = cn_clamp(a, 2, 1, NULL); /* lo > hi gives hi everywhere, as torch */
    CHECK(r && cn_data(r)[0] == 1 && cn_data(r)[4] == 1);
    cn_release(r);
    cn_release(a);
}

static void test_axpby(void) {
    cn_tensor *a = random_tensor(2, (int64_t[]){3, 4}, -1, 1), *b = random_tensor(1, (int64_t[]){4}, -1, 1);
    cn_tensor *r = cn_axpby(a, 0.5f, b, -2, NULL);
    CHECK(has_shape(r, 2, (int64_t[]){3, 4}));
    if (r)
        for (int i = 0; i < 12; i++)
            CHECK_CLOSE(cn_data(r)[i], 0.5 * cn_data(a)[i] - 2.0 * cn_data(b)[i % 4], 1e-6, 1e-6);
    cn_release(r), cn_release(a), cn_release(b);
}

static void test_empty_tensors(void) {
    cn_tensor *a = cn_zeros(2, (int64_t[]){0, 3}, NULL), *b = cn_ones(1, (int64_t[]){3}, NULL);
    cn_tensor *r = cn_binary(CN_ADD, a, b, NULL);
    CHECK(has_shape(r, 2, (int64_t[]){0, 3}));
    cn_release(r);
    r = cn_unary(CN_EXP, a, NULL);
    CHECK(has_shape(r, 2, (int64_t[]){0, 3}));
    cn_release(r);
    CHECK(cn_binary_(CN_ADD, a, b, NULL) == 0);
    cn_release(a), cn_release(b);
}

/* > 1e6 elements: the threaded path, contiguous and strided, against a serial reference. */
static void test_big(void) {
    const int64_t n = 1031; /* n * n = 1,062,961 */
    cn_tensor *a = random_tensor(2, (int64_t[]){n, n}, -4, 4);
    cn_tensor *row = random_tensor(1, (int64_t[]){n}, -4, 4);
    const float *pa = cn_data(a), *pr = cn_data(row);
    cn_tensor *e = cn_unary(CN_GELU, a, NULL);
    size_t bad = 0;
    for (int64_t i = 0; i < n * n; i++) {
        double x = pa[i], want = 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
        bad += !(fabs(cn_data(e)[i] - want) <= 1e-6 + 2e-6 * fabs(want));
    }
    CHECK(bad == 0);
    /* transposed a plus a broadcast row: the general strided path */
    cn_tensor *at = cn_transpose(a, 0, 1, NULL);
    cn_tensor *s = cn_binary(CN_ADD, at, row, NULL);
    CHECK(has_shape(s, 2, (int64_t[]){n, n}));
    bad = 0;
    for (int64_t i = 0; s && i < n; i++)
        for (int64_t j = 0; j < n; j++) bad += cn_data(s)[i * n + j] != pa[j * n + i] + pr[j];
    CHECK(bad == 0);
    /* in place on the contiguous tensor, with a column broadcast */
    cn_tensor *colv = cn_view(row, 2, (int64_t[]){n, 1}, NULL);
    cn_tensor *before = cn_clone(a, NULL);
    CHECK(cn_binary_(CN_MUL, a, colv, NULL) == 0);
    bad = 0;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) bad += pa[i * n + j] != cn_data(before)[i * n + j] * pr[i];
    CHECK(bad == 0);
    /* a scalar op over the whole thing and where */
    cn_tensor *pos = cn_binary_scalar(CN_GT, a, 0, false, NULL);
    cn_tensor *w = cn_where(pos, a, row, NULL);
    bad = 0;
    for (int64_t i = 0; w && i < n * n; i++) bad += cn_data(w)[i] != (pa[i] > 0 ? pa[i] : pr[i % n]);
    CHECK(bad == 0);
    cn_release(pos), cn_release(w), cn_release(before), cn_release(colv), cn_release(s);
    cn_release(at), cn_release(e), cn_release(a), cn_release(row);
}

int main(void) {
    test_seed(12345u);
    size_t live = cn_memory_live();
    RUN(test_names);
    RUN(test_unary_all_ops);
    RUN(test_unary_edge_cases);
    RUN(test_unary_bad_op);
    RUN(test_binary_all_ops);
    RUN(test_binary_specifics);
    RUN(test_broadcast_shapes);
    RUN(test_broadcast_mismatch);
    RUN(test_strided_views);
    RUN(test_scalar_ops);
    RUN(test_inplace);
    RUN(test_where);
    RUN(test_clamp);
    RUN(test_axpby);
    RUN(test_empty_tensors);
    RUN(test_big);
    ctest_current = "memory";
    ctest_current_failed = 0;
    CHECK(cn_memory_live() == live); /* every temporary released */
    if (ctest_current_failed) ctest_failed++; else ctest_passed++;
    return CTEST_SUMMARY("elementwise");
}
