/* ops_elementwise.c — unary, binary (NumPy broadcasting), axpby, clamp and where (see ops.h).
 *
 * Every op runs through one strided iterator. The output shape is the broadcast of the inputs;
 * each input gets strides aligned to it (0 on broadcast dims, as cn_expand would give). Size-1
 * dims are dropped and adjacent dims merged wherever every operand allows it, so the common cases
 * collapse to one tight loop: contiguous same-shape operands become one flat row, a tensor-scalar
 * op a flat row against a stride-0 operand, and a contiguous [N, C] + [C] N rows of C against a
 * repeating row. What remains is an odometer over the output index with the innermost dim as a
 * row kernel specialised for strides 1 and 0. Threads split the flat output range evenly.
 *
 * Numerics follow PyTorch's float32 CPU kernels (softplus threshold 20, exact and tanh GELU,
 * NaN-propagating maximum/minimum, round half to even, sign(0) = 0). exp, sigmoid, silu and
 * softplus and their gradients use vmath.h's exp and log1p (≤ 1 ulp, as PyTorch's SLEEF ones), so
 * their dense rows vectorise.
 */
#include <assert.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd.h"
#include "ops.h"
#include "parallel.h"
#include "vmath.h"

/* Operands of one iteration: the output plus up to three inputs (where). */
#define MAX_OPS 5

/* ---- names ------------------------------------------------------------------------------- */

static const char *const unary_names[] = {
    "neg", "exp", "log", "sqrt", "rsqrt", "abs", "sin", "cos", "tanh", "sigmoid", "relu", "silu",
    "softplus", "gelu", "gelu_tanh", "sign", "square", "reciprocal", "floor", "ceil", "round",
};
_Static_assert(sizeof unary_names / sizeof unary_names[0] == CN_UNARY_COUNT,
               "every unary op needs a name");

static const char *const binary_names[] = {
    "add", "sub", "mul", "div", "pow", "maximum", "minimum", "eq", "ne", "lt", "le", "gt", "ge",
};
_Static_assert(sizeof binary_names / sizeof binary_names[0] == CN_BINARY_COUNT,
               "every binary op needs a name");

const char *cn_unary_name(cn_unary_op op) {
    return (unsigned)op < CN_UNARY_COUNT ? unary_names[op] : "unknown_unary";
}

const char *cn_binary_name(cn_binary_op op) {
    return (unsigned)op < CN_BINARY_COUNT ? binary_names[op] : "unknown_binary";
}

/* ---- scalar math --------------------------------------------------------------------------- */


/* x Φ(x) = x/2 (1 + erf(x / √2)) */
static inline float gelu_exactf(float x) { return 0.5f * x * (1.0f + erff(x * (float)M_SQRT1_2)); }

/* x/2 (1 + tanh(√(2/π) (x + 0.044715 x³))), torch's approximate='tanh' */
static inline float gelu_tanhf(float x) {
    const float k_beta = (float)(M_SQRT2 * M_2_SQRTPI * 0.5);
    const float k_kappa = 0.044715f;
    float inner = k_beta * (x + k_kappa * x * x * x);
    return 0.5f * x * (1.0f + tanhf(inner));
}

/* min(max(x, lo), hi): lo > hi gives hi and NaN stays NaN, as torch.clamp */
static inline float clampf(float x, float lo, float hi) {
    float t = x < lo ? lo : x;
    return t > hi ? hi : t;
}

/* ---- row kernels: out[i] = f(in[i * stride]) for i < n; out is always dense ---------------- */

/* Each op's expression over `x`, specialised for a dense input row. The output never overlaps
 * the input at another index, so dense rows are `omp simd` (no runtime alias check). */
#define UNARY_ROW(EXPR)                                                                       \
    do {                                                                                      \
        if (sx == 1) {                                                                        \
            _Pragma("omp simd")                                                               \
            for (size_t i = 0; i < n; i++) {                                                  \
                float x = px[i];                                                              \
                out[i] = (EXPR);                                                              \
            }                                                                                 \
        } else {                                                                              \
            for (size_t i = 0; i < n; i++) {                                                  \
                float x = px[(int64_t)i * sx];                                                \
                out[i] = (EXPR);                                                              \
            }                                                                                 \
        }                                                                                     \
    } while (0)

static void unary_row(cn_unary_op op, const float *px, int64_t sx, float *out, size_t n) {
    switch (op) {
    case CN_NEG: UNARY_ROW(-x); break;
    case CN_EXP: UNARY_ROW(cn_vexpf(x)); break;
    case CN_LOG: UNARY_ROW(logf(x)); break;
    case CN_SQRT: UNARY_ROW(sqrtf(x)); break;
    case CN_RSQRT: UNARY_ROW(1.0f / sqrtf(x)); break;
    case CN_ABS: UNARY_ROW(fabsf(x)); break;
    case CN_SIN: UNARY_ROW(sinf(x)); break;
    case CN_COS: UNARY_ROW(cosf(x)); break;
    case CN_TANH: UNARY_ROW(tanhf(x)); break;
    case CN_SIGMOID: UNARY_ROW(cn_vsigmoidf(x)); break;
    case CN_RELU: UNARY_ROW(x < 0.0f ? 0.0f : x); break; /* NaN passes through, as torch */
    case CN_SILU: UNARY_ROW(cn_vsiluf(x)); break;
    case CN_SOFTPLUS: UNARY_ROW(cn_vsoftplusf(x)); break;
    case CN_GELU: UNARY_ROW(gelu_exactf(x)); break;
    case CN_GELU_TANH: UNARY_ROW(gelu_tanhf(x)); break;
    case CN_SIGN: UNARY_ROW((float)((0.0f < x) - (x < 0.0f))); break; /* sign(0) = sign(NaN) = 0 */
    case CN_SQUARE: UNARY_ROW(x * x); break;
    case CN_RECIPROCAL: UNARY_ROW(1.0f / x); break;
    case CN_FLOOR: UNARY_ROW(floorf(x)); break;
    case CN_CEIL: UNARY_ROW(ceilf(x)); break;
    case CN_ROUND: UNARY_ROW(nearbyintf(x)); break; /* default rounding mode: half to even */
    case CN_UNARY_COUNT: break;
    }
}

/* Each op's expression over `u` (left) and `v` (right), specialised for the stride patterns
 * broadcasting produces: both dense, one side repeated (stride 0), anything else. */
#define BINARY_ROW(EXPR)                                                                      \
    do {                                                                                      \
        if (su == 1 && sv == 1) {                                                             \
            for (size_t i = 0; i < n; i++) {                                                  \
                float u = pu[i], v = pv[i];                                                   \
                out[i] = (EXPR);                                                              \
            }                                                                                 \
        } else if (su == 1 && sv == 0) {                                                      \
            const float v = pv[0];                                                            \
            for (size_t i = 0; i < n; i++) {                                                  \
                float u = pu[i];                                                              \
                out[i] = (EXPR);                                                              \
            }                                                                                 \
        } else if (su == 0 && sv == 1) {                                                      \
            const float u = pu[0];                                                            \
            for (size_t i = 0; i < n; i++) {                                                  \
                float v = pv[i];                                                              \
                out[i] = (EXPR);                                                              \
            }                                                                                 \
        } else {                                                                              \
            for (size_t i = 0; i < n; i++) {                                                  \
                float u = pu[(int64_t)i * su], v = pv[(int64_t)i * sv];                       \
                out[i] = (EXPR);                                                              \
            }                                                                                 \
        }                                                                                     \
    } while (0)

static void binary_row(cn_binary_op op, const float *pu, int64_t su, const float *pv, int64_t sv,
                       float *out, size_t n) {
    switch (op) {
    case CN_ADD: BINARY_ROW(u + v); break;
    case CN_SUB: BINARY_ROW(u - v); break;
    case CN_MUL: BINARY_ROW(u * v); break;
    case CN_DIV: BINARY_ROW(u / v); break;
    case CN_POW: BINARY_ROW(powf(u, v)); break;
    /* a NaN on either side wins, as torch.maximum / torch.minimum */
    case CN_MAXIMUM: BINARY_ROW((u != u || u > v) ? u : v); break;
    case CN_MINIMUM: BINARY_ROW((u != u || u < v) ? u : v); break;
    case CN_EQ: BINARY_ROW((float)(u == v)); break;
    case CN_NE: BINARY_ROW((float)(u != v)); break;
    case CN_LT: BINARY_ROW((float)(u < v)); break;
    case CN_LE: BINARY_ROW((float)(u <= v)); break;
    case CN_GT: BINARY_ROW((float)(u > v)); break;
    case CN_GE: BINARY_ROW((float)(u >= v)); break;
    case CN_BINARY_COUNT: break;
    }
}

/* d op(x) / dx times g, from the input x and the output y (formulas as torch's derivatives.yaml). */
CN_VMATH_INLINE float unary_grad(cn_unary_op op, float g, float x, float y) {
    switch (op) {
    case CN_NEG: return -g;
    case CN_EXP: return g * y;
    case CN_LOG: return g / x;
    case CN_SQRT: return g / (2.0f * y);
    case CN_RSQRT: return -0.5f * g * y * y * y;
    case CN_ABS: return x > 0.0f ? g : x < 0.0f ? -g : 0.0f;
    case CN_SIN: return g * cosf(x);
    case CN_COS: return -g * sinf(x);
    case CN_TANH: return g * (1.0f - y * y);
    case CN_SIGMOID: return g * y * (1.0f - y);
    case CN_RELU: return y > 0.0f ? g : 0.0f;
    case CN_SILU: {
        float sg = cn_vsigmoidf(x);
        return g * sg * (1.0f + x * (1.0f - sg));
    }
    case CN_SOFTPLUS: return cn_vselectf(x > 20.0f, g, g * cn_vsigmoidf(x));
    case CN_GELU: {
        float cdf = 0.5f * (1.0f + erff(x * (float)M_SQRT1_2));
        float pdf = expf(-0.5f * x * x) * (float)(0.5 * M_2_SQRTPI * M_SQRT1_2);
        return g * (cdf + x * pdf);
    }
    case CN_GELU_TANH: {
        const float beta = (float)(M_SQRT2 * M_2_SQRTPI * 0.5), kappa = 0.044715f;
        float inner = beta * (x + kappa * x * x * x), t = tanhf(inner);
        float left = 0.5f * x, right = 1.0f + t;
        float dright = left * (1.0f - t * t) * beta * (1.0f + 3.0f * kappa * x * x);
        return g * (0.5f * right + dright);
    }
    case CN_SQUARE: return 2.0f * x * g;
    case CN_RECIPROCAL: return -g * y * y;
    case CN_SIGN: case CN_FLOOR: case CN_CEIL: case CN_ROUND: case CN_UNARY_COUNT: return 0.0f;
    }
    return 0.0f;
}

/* out[i] = unary_grad(OP, g[i], x[i], y[i]) with in = g, x, y; OP a constant, so the switch in
 * unary_grad folds away and a dense row vectorises where the formula allows. */
#define GRAD_ROW(OP)                                                                          \
    do {                                                                                      \
        const float *pg = in[0], *px = in[1], *py = in[2];                                    \
        if (s[0] == 1 && s[1] == 1 && s[2] == 1) {                                            \
            _Pragma("omp simd")                                                               \
            for (size_t i = 0; i < n; i++) out[i] = unary_grad(OP, pg[i], px[i], py[i]);      \
        } else {                                                                              \
            for (size_t i = 0; i < n; i++) {                                                  \
                int64_t j = (int64_t)i;                                                       \
                out[i] = unary_grad(OP, pg[j * s[0]], px[j * s[1]], py[j * s[2]]);            \
            }                                                                                 \
        }                                                                                     \
    } while (0)

#define GRAD_CASE(OP) case OP: GRAD_ROW(OP); break

static void unary_grad_row(cn_unary_op op, const float *const *in, const int64_t *s, float *out, size_t n) {
    switch (op) {
    GRAD_CASE(CN_NEG); GRAD_CASE(CN_EXP); GRAD_CASE(CN_LOG); GRAD_CASE(CN_SQRT); GRAD_CASE(CN_RSQRT);
    GRAD_CASE(CN_ABS); GRAD_CASE(CN_SIN); GRAD_CASE(CN_COS); GRAD_CASE(CN_TANH); GRAD_CASE(CN_SIGMOID);
    GRAD_CASE(CN_RELU); GRAD_CASE(CN_SILU); GRAD_CASE(CN_SOFTPLUS); GRAD_CASE(CN_GELU);
    GRAD_CASE(CN_GELU_TANH); GRAD_CASE(CN_SIGN); GRAD_CASE(CN_SQUARE); GRAD_CASE(CN_RECIPROCAL);
    GRAD_CASE(CN_FLOOR); GRAD_CASE(CN_CEIL); GRAD_CASE(CN_ROUND);
    case CN_UNARY_COUNT: break;
    }
}

/* What one iteration computes per element. */
typedef enum { K_UNARY, K_BINARY, K_AXPBY, K_CLAMP, K_WHERE, K_UNARY_GRAD, K_CLAMP_GRAD, K_MAXMIN_GRAD,
               K_POW_BASE_GRAD, K_POW_EXP_GRAD } kernel_kind;

typedef struct {
    kernel_kind kind;
    int op;           /* cn_unary_op / cn_binary_op */
    float p0, p1;     /* axpby: alpha, beta; clamp: lo, hi */
} kernel;

static void run_row(const kernel *k, float *out, const float *const *in, const int64_t *s, size_t n) {
    switch (k->kind) {
    case K_UNARY: unary_row((cn_unary_op)k->op, in[0], s[0], out, n); break;
    case K_BINARY: binary_row((cn_binary_op)k->op, in[0], s[0], in[1], s[1], out, n); break;
    case K_AXPBY: {
        const float alpha = k->p0, beta = k->p1;
        const float *pu = in[0], *pv = in[1];
        int64_t su = s[0], sv = s[1];
        BINARY_ROW(u * alpha + v * beta);
        break;
    }
    case K_CLAMP: {
        const float lo = k->p0, hi = k->p1;
        const float *px = in[0];
        int64_t sx = s[0];
        UNARY_ROW(clampf(x, lo, hi));
        break;
    }
    case K_WHERE: {
        const float *pc = in[0], *pu = in[1], *pv = in[2];
        int64_t sc = s[0], su = s[1], sv = s[2];
        if (sc == 1 && su == 1 && sv == 1) {
            for (size_t i = 0; i < n; i++) out[i] = pc[i] != 0.0f ? pu[i] : pv[i];
        } else {
            for (size_t i = 0; i < n; i++) {
                int64_t j = (int64_t)i;
                out[i] = pc[j * sc] != 0.0f ? pu[j * su] : pv[j * sv];
            }
        }
        break;
    }
    case K_UNARY_GRAD: /* in: g, x, y */
        unary_grad_row((cn_unary_op)k->op, in, s, out, n);
        break;
    case K_CLAMP_GRAD: /* in: g, x: the gradient passes where lo <= x <= hi */
        for (size_t i = 0; i < n; i++) {
            int64_t j = (int64_t)i;
            float x = in[1][j * s[1]];
            out[i] = x >= k->p0 && x <= k->p1 ? in[0][j * s[0]] : 0.0f;
        }
        break;
    case K_MAXMIN_GRAD: /* in: g, self, other: as torch, ties split the gradient in half */
        for (size_t i = 0; i < n; i++) {
            int64_t j = (int64_t)i;
            float g = in[0][j * s[0]], a = in[1][j * s[1]], b = in[2][j * s[2]];
            bool loses = k->op == CN_MAXIMUM ? a < b : a > b;
            out[i] = a == b ? 0.5f * g : loses ? 0.0f : g;
        }
        break;
    case K_POW_BASE_GRAD: /* in: g, a, b: g * b * a^(b-1), 0 where b == 0 */
        for (size_t i = 0; i < n; i++) {
            int64_t j = (int64_t)i;
            float g = in[0][j * s[0]], a = in[1][j * s[1]], b = in[2][j * s[2]];
            out[i] = b == 0.0f ? 0.0f : g * b * powf(a, b - 1.0f);
        }
        break;
    case K_POW_EXP_GRAD: /* in: g, out, a, b: g * a^b * log(a), 0 where a == 0 and b >= 0 */
        for (size_t i = 0; i < n; i++) {
            int64_t j = (int64_t)i;
            float g = in[0][j * s[0]], y = in[1][j * s[1]], a = in[2][j * s[2]], b = in[3][j * s[3]];
            out[i] = a == 0.0f && b >= 0.0f ? 0.0f : g * y * logf(a);
        }
        break;
    }
}

/* ---- the strided iterator ---------------------------------------------------------------- */

/* Operand 0 is the output (dense after coalescing), 1.. the inputs. */
typedef struct {
    int ndim, nops;
    int64_t shape[CN_MAX_DIMS];
    int64_t stride[MAX_OPS][CN_MAX_DIMS];
    float *base[MAX_OPS];
} iter;

/* Starts an iteration over out (any shape); out must be dense or an in-place target. */
static void iter_init(iter *it, cn_tensor *out) {
    memset(it, 0, sizeof *it);
    it->ndim = out->ndim;
    it->nops = 1;
    memcpy(it->shape, out->shape, sizeof it->shape);
    memcpy(it->stride[0], out->stride, sizeof it->stride[0]);
    it->base[0] = cn_data(out);
}

/* Adds an input whose shape broadcasts to the output's (checked by the caller). */
static void iter_add(iter *it, const cn_tensor *t) {
    int k = it->nops++;
    int lead = it->ndim - t->ndim;
    for (int i = 0; i < it->ndim; i++) {
        int j = i - lead;
        it->stride[k][i] = (j < 0 || t->shape[j] == 1) ? 0 : t->stride[j];
    }
    it->base[k] = cn_data(t);
}

/* Adds a single value broadcast everywhere (the scalar of a tensor-scalar op). */
static void iter_add_value(iter *it, const float *value) {
    int k = it->nops++;
    for (int i = 0; i < it->ndim; i++) it->stride[k][i] = 0;
    it->base[k] = (float *)value; /* only ever read */
}

/* Drops size-1 dims and merges dim i into the dim before it where every operand allows. */
static void iter_coalesce(iter *it) {
    int n = 0;
    for (int i = 0; i < it->ndim; i++) {
        if (it->shape[i] == 1) continue;
        it->shape[n] = it->shape[i];
        for (int k = 0; k < it->nops; k++) it->stride[k][n] = it->stride[k][i];
        n++;
    }
    if (n == 0) { /* one element: a single row of length 1 */
        it->ndim = 1;
        it->shape[0] = 1;
        for (int k = 0; k < it->nops; k++) it->stride[k][0] = k == 0 ? 1 : 0;
        return;
    }
    int m = 0;
    for (int i = 1; i < n; i++) {
        bool merge = true;
        for (int k = 0; k < it->nops && merge; k++)
            merge = it->stride[k][m] == it->stride[k][i] * it->shape[i];
        if (merge) {
            it->shape[m] *= it->shape[i];
        } else {
            m++;
            it->shape[m] = it->shape[i];
        }
        for (int k = 0; k < it->nops; k++) it->stride[k][m] = it->stride[k][i];
    }
    it->ndim = m + 1;
}

/* Elements [e0, e1) of the flat output: an odometer over the outer dims, rows of the inner one. */
static void iter_range(const iter *it, const kernel *k, size_t e0, size_t e1) {
    const int nd = it->ndim, inner = nd - 1, nin = it->nops - 1;
    int64_t idx[CN_MAX_DIMS], off[MAX_OPS] = {0}, in_stride[MAX_OPS];
    size_t rem = e0;
    for (int d = nd - 1; d >= 0; d--) {
        idx[d] = (int64_t)(rem % (size_t)it->shape[d]);
        rem /= (size_t)it->shape[d];
        for (int j = 0; j < it->nops; j++) off[j] += idx[d] * it->stride[j][d];
    }
    for (int j = 0; j < nin; j++) in_stride[j] = it->stride[j + 1][inner];
    const float *in[MAX_OPS];
    size_t e = e0;
    for (;;) {
        size_t len = (size_t)(it->shape[inner] - idx[inner]);
        if (len > e1 - e) len = e1 - e;
        for (int j = 0; j < nin; j++) in[j] = it->base[j + 1] + off[j + 1];
        run_row(k, it->base[0] + off[0], in, in_stride, len);
        e += len;
        if (e >= e1) break;
        /* the row is finished: rewind the inner dim and carry into the outer ones */
        for (int j = 0; j < it->nops; j++) off[j] -= idx[inner] * it->stride[j][inner];
        idx[inner] = 0;
        for (int d = inner - 1; d >= 0; d--) {
            idx[d]++;
            for (int j = 0; j < it->nops; j++) off[j] += it->stride[j][d];
            if (idx[d] < it->shape[d]) break;
            for (int j = 0; j < it->nops; j++) off[j] -= it->shape[d] * it->stride[j][d];
            idx[d] = 0;
        }
    }
}

/* Runs kernel k over the whole iteration, split evenly across threads for big outputs. */
static void iter_run(iter *it, const kernel *k) {
    size_t n = cn_shape_numel(it->ndim, it->shape);
    if (n == 0) return;
    iter_coalesce(it);
    assert(it->stride[0][it->ndim - 1] == 1); /* outputs are dense */
#pragma omp parallel if (n > PARALLEL_MIN)
    {
        size_t nth = (size_t)omp_get_num_threads(), tid = (size_t)omp_get_thread_num();
        size_t chunk = ((n + nth - 1) / nth + 63) & ~(size_t)63; /* whole cache lines per thread */
        size_t e0 = tid * chunk < n ? tid * chunk : n;
        size_t e1 = e0 + chunk < n ? e0 + chunk : n;
        if (e0 < e1) iter_range(it, k, e0, e1);
    }
}

/* ---- broadcasting and gradient helpers --------------------------------------------------- */

static bool shape_equal(int na, const int64_t *sa, int nb, const int64_t *sb) {
    if (na != nb) return false;
    for (int i = 0; i < na; i++)
        if (sa[i] != sb[i]) return false;
    return true;
}

/* True when writing through t would hit one storage element twice (an expanded view). */
static bool has_stride0_dim(const cn_tensor *t) {
    for (int i = 0; i < t->ndim; i++)
        if (t->stride[i] == 0 && t->shape[i] > 1) return true;
    return false;
}

/* A fresh tensor of g's shape from a grad kernel over (g, operands...) broadcast to g's shape. */
static cn_tensor *grad_kernel(const kernel *k, const cn_tensor *g, int n, const cn_tensor *const *ops,
                              const float *value, int value_at, cn_error *err) {
    cn_tensor *out = cn_empty(g->ndim, g->shape, err);
    if (!out) return NULL;
    iter it;
    iter_init(&it, out);
    iter_add(&it, g);
    for (int i = 0, o = 0; i < n + (value ? 1 : 0); i++) {
        if (value && i == value_at) iter_add_value(&it, value);
        else iter_add(&it, ops[o++]);
    }
    iter_run(&it, k);
    return out;
}

/* g times a gradient factor that is constant almost everywhere (relu's step, clamp's window):
 * the factor comes from the fast grad kernel over ones and is outside the
 * graph, the product with g is recorded (create_graph). */
static cn_tensor *times_step(const kernel *k, const cn_tensor *g, int n, const cn_tensor *const *ops,
                             const float *value, int value_at, cn_error *err) {
    cn_tensor *ones = cn_full(g->ndim, g->shape, 1.0f, err);
    cn_tensor *step = ones ? grad_kernel(k, ones, n, ops, value, value_at, err) : NULL;
    cn_tensor *r = step ? cn_binary(CN_MUL, g, step, err) : NULL;
    cn_release(ones);
    cn_release(step);
    return r;
}

/* ---- unary ops: forward, args, backward -------------------------------------------------- */

static cn_tensor *unary_forward(cn_unary_op op, const cn_tensor *a, cn_error *err) {
    if ((unsigned)op >= CN_UNARY_COUNT) {
        cn_error_set(err, "unary: unknown op %d", (int)op);
        return NULL;
    }
    if (!a) {
        cn_error_set(err, "%s: missing operand", cn_unary_name(op));
        return NULL;
    }
    cn_tensor *out = cn_empty(a->ndim, a->shape, err);
    if (!out) return NULL;
    iter it;
    iter_init(&it, out);
    iter_add(&it, a);
    kernel k = {.kind = K_UNARY, .op = (int)op};
    iter_run(&it, &k);
    return out;
}

/* unary: y = op(x); dx = g op'(x) from x or y (unary_grad) */
struct unary_args {
    cn_unary_op op;
};
enum { UNARY_SAVED_X, UNARY_SAVED_Y };

static int unary_backward(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    const struct unary_args *args = CN_NODE_ARGS(n, struct unary_args);
    kernel k = {.kind = K_UNARY_GRAD, .op = (int)args->op};
    const cn_tensor *ops[2] = {n->saved[UNARY_SAVED_X], n->saved[UNARY_SAVED_Y]};
    return (gi[0] = grad_kernel(&k, g, 2, ops, NULL, 0, err)) ? 0 : -1;
}

/* op'(x) as recorded ops on x, for the smooth ops (the rest have a piecewise-constant op'). */
static cn_tensor *unary_derivative(cn_unary_op op, cn_tensor *x, cn_error *err) {
    switch (op) {
    case CN_EXP: return cn_unary(CN_EXP, x, err);
    case CN_LOG: return cn_unary(CN_RECIPROCAL, x, err);
    case CN_SQRT: return cn_binary_scalar_drop(CN_MUL, cn_unary_drop(CN_RSQRT, cn_retain(x), err), 0.5f, false, err);
    case CN_RSQRT: { /* -x^(-3/2) / 2 */
        cn_tensor *r = cn_unary(CN_RSQRT, x, err);
        cn_tensor *r3 = r ? cn_binary_drop(CN_MUL, cn_unary(CN_SQUARE, r, err), r, err) : NULL;
        cn_release(r);
        return cn_binary_scalar_drop(CN_MUL, r3, -0.5f, false, err);
    }
    case CN_SIN: return cn_unary(CN_COS, x, err);
    case CN_COS: return cn_unary_drop(CN_NEG, cn_unary(CN_SIN, x, err), err);
    case CN_TANH: /* 1 - tanh^2 */
        return cn_binary_scalar_drop(CN_SUB, cn_unary_drop(CN_SQUARE, cn_unary(CN_TANH, x, err), err), 1.0f, true, err);
    case CN_SIGMOID: /* s (1 - s) */
    case CN_SILU: {  /* s (1 + x (1 - s)) */
        cn_tensor *sg = cn_unary(CN_SIGMOID, x, err);
        cn_tensor *rest = sg ? cn_binary_scalar(CN_SUB, sg, 1.0f, true, err) : NULL;
        if (op == CN_SILU) rest = cn_binary_scalar_drop(CN_ADD, cn_binary_drop(CN_MUL, rest, x, err), 1.0f, false, err);
        cn_tensor *r = cn_binary_drop(CN_MUL, rest, sg, err);
        cn_release(sg);
        return r;
    }
    case CN_SOFTPLUS: { /* sigmoid(x), 1 past the threshold 20 */
        cn_tensor *sg = cn_unary(CN_SIGMOID, x, err);
        cn_tensor *past = cn_binary_scalar(CN_GT, x, 20.0f, false, err);
        cn_tensor *one = cn_scalar(1.0f, err);
        cn_tensor *r = sg && past && one ? cn_where(past, one, sg, err) : NULL;
        cn_release(sg), cn_release(past), cn_release(one);
        return r;
    }
    case CN_SQUARE: return cn_binary_scalar(CN_MUL, x, 2.0f, false, err);
    case CN_RECIPROCAL: /* -1 / x^2 */
        return cn_unary_drop(CN_NEG, cn_unary_drop(CN_SQUARE, cn_unary(CN_RECIPROCAL, x, err), err), err);
    default:
        cn_error_set(err, "%s has no differentiable backward yet (create_graph)", cn_unary_name(op));
        return NULL;
    }
}

/* op' is piecewise constant for neg/abs/relu/sign/rounding: a step from the fast kernel. */
cn_tensor *cn_unary_backward(cn_unary_op op, const cn_tensor *x, const cn_tensor *g, cn_error *err) {
    switch (op) {
    case CN_NEG: case CN_ABS: case CN_RELU: case CN_SIGN: case CN_FLOOR: case CN_CEIL: case CN_ROUND: {
        kernel k = {.kind = K_UNARY_GRAD, .op = (int)op};
        cn_tensor *y = unary_forward(op, x, err);
        const cn_tensor *ops[2] = {x, y};
        cn_tensor *r = y ? times_step(&k, g, 2, ops, NULL, 0, err) : NULL;
        cn_release(y);
        return r;
    }
    default:
        return cn_binary_drop(CN_MUL, unary_derivative(op, (cn_tensor *)x, err), g, err);
    }
}

static int unary_backward_graph(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    return (gi[0] = cn_unary_backward(CN_NODE_ARGS(n, struct unary_args)->op, n->inputs[0], g, err)) ? 0 : -1;
}

static const cn_op_def op_unary = {"unary", unary_backward, unary_backward_graph};

cn_tensor *cn_unary(cn_unary_op op, const cn_tensor *a, cn_error *err) {
    cn_node *node;
    cn_tensor *in = (cn_tensor *)a;
    cn_tensor *r = cn_record_result(unary_forward(op, a, err), &op_unary, 1, &in, &node, err);
    if (node) {
        CN_NODE_ARGS(node, struct unary_args)->op = op;
        cn_node_save(node, UNARY_SAVED_X, a);
        cn_node_save(node, UNARY_SAVED_Y, r);
    }
    return r;
}

/* ---- binary ops (tensor-tensor, tensor-scalar, in place) --------------------------------- */

/* Fresh output for inputs a and b broadcast together; NULL with a message naming both shapes. */
static cn_tensor *broadcast_output(const cn_tensor *a, const cn_tensor *b, const char *fname,
                                   cn_error *err) {
    int64_t shape[CN_MAX_DIMS];
    int ndim = cn_broadcast_shapes(a->ndim, a->shape, b->ndim, b->shape, shape, fname, err);
    if (ndim < 0) return NULL;
    return cn_empty(ndim, shape, err);
}

static cn_tensor *binary_forward(cn_binary_op op, const cn_tensor *a, const cn_tensor *b, cn_error *err) {
    if ((unsigned)op >= CN_BINARY_COUNT) {
        cn_error_set(err, "binary: unknown op %d", (int)op);
        return NULL;
    }
    if (!a || !b) {
        cn_error_set(err, "%s: missing operand", cn_binary_name(op));
        return NULL;
    }
    cn_tensor *out = broadcast_output(a, b, cn_binary_name(op), err);
    if (!out) return NULL;
    iter it;
    iter_init(&it, out);
    iter_add(&it, a);
    iter_add(&it, b);
    kernel k = {.kind = K_BINARY, .op = (int)op};
    iter_run(&it, &k);
    return out;
}

static cn_tensor *binary_scalar_forward(cn_binary_op op, const cn_tensor *a, float s, bool scalar_first,
                            cn_error *err) {
    if ((unsigned)op >= CN_BINARY_COUNT) {
        cn_error_set(err, "binary: unknown op %d", (int)op);
        return NULL;
    }
    if (!a) {
        cn_error_set(err, "%s: missing operand", cn_binary_name(op));
        return NULL;
    }
    cn_tensor *out = cn_empty(a->ndim, a->shape, err);
    if (!out) return NULL;
    iter it;
    iter_init(&it, out);
    if (scalar_first) {
        iter_add_value(&it, &s);
        iter_add(&it, a);
    } else {
        iter_add(&it, a);
        iter_add_value(&it, &s);
    }
    kernel k = {.kind = K_BINARY, .op = (int)op};
    iter_run(&it, &k);
    return out;
}

/* The gradient of one operand of mul/div/pow/maximum/minimum; `other` and `self` may be NULL
 * when that operand is the scalar `value`. Results have the broadcast shape (the engine reduces). */
static cn_tensor *binary_operand_grad(cn_binary_op op, int which, const cn_tensor *g, const cn_tensor *a,
                                      const cn_tensor *b, const cn_tensor *out, const float *va,
                                      const float *vb, cn_error *err) {
    /* operands as (tensor or value) pairs, so scalar variants share the code */
    switch (op) {
    case CN_ADD:
        return cn_retain((cn_tensor *)g);
    case CN_SUB:
        return which == 0 ? cn_retain((cn_tensor *)g) : unary_forward(CN_NEG, g, err);
    case CN_MUL: {
        const cn_tensor *other = which == 0 ? b : a;
        const float *v = which == 0 ? vb : va;
        return other ? binary_forward(CN_MUL, g, other, err) : binary_scalar_forward(CN_MUL, g, *v, false, err);
    }
    case CN_DIV: {
        if (which == 0) return b ? binary_forward(CN_DIV, g, b, err) : binary_scalar_forward(CN_DIV, g, *vb, false, err);
        /* d(a/b)/db = -out / b */
        cn_tensor *t = binary_forward(CN_MUL, g, out, err);
        if (!t) return NULL;
        cn_tensor *u = b ? binary_forward(CN_DIV, t, b, err) : binary_scalar_forward(CN_DIV, t, *vb, false, err);
        cn_release(t);
        if (!u) return NULL;
        cn_tensor *r = unary_forward(CN_NEG, u, err);
        cn_release(u);
        return r;
    }
    case CN_POW: {
        if (which == 0) {
            kernel k = {.kind = K_POW_BASE_GRAD};
            const cn_tensor *ops[2] = {a, b};
            return b ? grad_kernel(&k, g, 2, ops, NULL, 0, err) : grad_kernel(&k, g, 1, ops, vb, 1, err);
        }
        kernel k = {.kind = K_POW_EXP_GRAD};
        const cn_tensor *ops[3] = {out, a, b};
        return a ? grad_kernel(&k, g, 3, ops, NULL, 0, err) : grad_kernel(&k, g, 2, (const cn_tensor *[]){out, b}, va, 1, err);
    }
    case CN_MAXIMUM:
    case CN_MINIMUM: {
        kernel k = {.kind = K_MAXMIN_GRAD, .op = (int)op};
        const cn_tensor *self = which == 0 ? a : b, *other = which == 0 ? b : a;
        const float *vother = which == 0 ? vb : va;
        const cn_tensor *ops[2] = {self, other};
        return other ? grad_kernel(&k, g, 2, ops, NULL, 0, err) : grad_kernel(&k, g, 1, ops, vother, 1, err);
    }
    default:
        cn_error_set(err, "%s has no gradient", cn_binary_name(op));
        return NULL;
    }
}

/* binary_operand_grad with recorded ops from the operands (create_graph); a NULL operand is the
 * scalar *va / *vb. */
static cn_tensor *binary_operand_grad_graph(cn_binary_op op, int which, const cn_tensor *g, cn_tensor *a,
                                            cn_tensor *b, const float *va, const float *vb, cn_error *err) {
    cn_tensor *gt = (cn_tensor *)g;
    switch (op) {
    case CN_ADD:
        return cn_retain(gt);
    case CN_SUB:
        return which == 0 ? cn_retain(gt) : cn_unary(CN_NEG, g, err);
    case CN_MUL: {
        cn_tensor *other = which == 0 ? b : a;
        return other ? cn_binary(CN_MUL, g, other, err)
                     : cn_binary_scalar(CN_MUL, g, which == 0 ? *vb : *va, false, err);
    }
    case CN_DIV: { /* g / b; -g a / b^2 (b is a tensor when which is 1) */
        cn_tensor *q = b ? cn_binary(CN_DIV, g, b, err) : cn_binary_scalar(CN_DIV, g, *vb, false, err);
        if (which == 0) return q;
        cn_tensor *qa = a ? cn_binary_drop(CN_MUL, q, a, err) : cn_binary_scalar_drop(CN_MUL, q, *va, false, err);
        cn_tensor *r = qa ? cn_binary(CN_DIV, qa, b, err) : NULL;
        cn_release(qa);
        return cn_unary_drop(CN_NEG, r, err);
    }
    case CN_POW: {
        if (which == 0) { /* g b a^(b-1) (a is a tensor) */
            if (!b) return cn_binary_drop(CN_MUL, cn_binary_scalar_drop(CN_MUL, cn_binary_scalar(CN_POW, a, *vb - 1.0f, false, err), *vb, false, err), g, err);
            cn_tensor *b1 = cn_binary_scalar(CN_SUB, b, 1.0f, false, err);
            cn_tensor *p = b1 ? cn_binary(CN_POW, a, b1, err) : NULL;
            cn_release(b1);
            return cn_binary_drop(CN_MUL, cn_binary_drop(CN_MUL, p, b, err), g, err);
        }
        /* g a^b log a, 0 where a is 0 (as the fast kernel) */
        cn_tensor *p = a ? cn_binary(CN_POW, a, b, err) : cn_binary_scalar(CN_POW, b, *va, true, err);
        cn_tensor *lg = a ? cn_unary(CN_LOG, a, err) : NULL;
        cn_tensor *r = a ? cn_binary_drop(CN_MUL, p, lg, err) : cn_binary_scalar_drop(CN_MUL, p, logf(*va), false, err);
        cn_release(lg);
        r = cn_binary_drop(CN_MUL, r, g, err);
        if (!a || !r) return r;
        cn_tensor *at_zero = cn_binary_scalar(CN_EQ, a, 0.0f, false, err);
        cn_tensor *zero = cn_scalar(0.0f, err);
        cn_tensor *m = at_zero && zero ? cn_where(at_zero, zero, r, err) : NULL;
        cn_release(at_zero), cn_release(zero), cn_release(r);
        return m;
    }
    case CN_MAXIMUM:
    case CN_MINIMUM: { /* g times the selector, the fast gradient of ones (constant) */
        cn_tensor *ones = cn_full(g->ndim, g->shape, 1.0f, err);
        cn_tensor *step = ones ? binary_operand_grad(op, which, ones, a, b, NULL, va, vb, err) : NULL;
        cn_release(ones);
        return cn_binary_drop(CN_MUL, step, g, err);
    }
    default:
        return binary_operand_grad(op, which, g, a, b, NULL, va, vb, err); /* the error */
    }
}

static bool is_comparison(cn_binary_op op) { return op >= CN_EQ && op <= CN_GE; }

/* binary: out = op(a, b) */
struct binary_args {
    cn_binary_op op;
};
enum { BINARY_SAVED_A, BINARY_SAVED_B, BINARY_SAVED_OUT };

static int binary_backward(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    cn_binary_op op = CN_NODE_ARGS(n, struct binary_args)->op;
    for (int w = 0; w < 2; w++) {
        if (!n->inputs[w]->requires_grad) continue;
        gi[w] = binary_operand_grad(op, w, g, n->saved[BINARY_SAVED_A], n->saved[BINARY_SAVED_B],
                                    n->saved[BINARY_SAVED_OUT], NULL, NULL, err);
        if (!gi[w]) return -1;
    }
    return 0;
}

static int binary_backward_graph(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    cn_binary_op op = CN_NODE_ARGS(n, struct binary_args)->op;
    for (int w = 0; w < 2; w++) {
        if (!n->inputs[w]->requires_grad) continue;
        gi[w] = binary_operand_grad_graph(op, w, g, n->inputs[0], n->inputs[1], NULL, NULL, err);
        if (!gi[w]) return -1;
    }
    return 0;
}

static const cn_op_def op_binary = {"binary", binary_backward, binary_backward_graph};

cn_tensor *cn_binary(cn_binary_op op, const cn_tensor *a, const cn_tensor *b, cn_error *err) {
    cn_tensor *r = binary_forward(op, a, b, err);
    if (!r || is_comparison(op)) return r;
    cn_node *node;
    cn_tensor *ins[2] = {(cn_tensor *)a, (cn_tensor *)b};
    r = cn_record_result(r, &op_binary, 2, ins, &node, err);
    if (node) {
        CN_NODE_ARGS(node, struct binary_args)->op = op;
        cn_node_save(node, BINARY_SAVED_A, a);
        cn_node_save(node, BINARY_SAVED_B, b);
        cn_node_save(node, BINARY_SAVED_OUT, r);
    }
    return r;
}

/* binary with a scalar: out = op(t, scalar), or op(scalar, t) when scalar_first */
struct binary_scalar_args {
    cn_binary_op op;
    bool scalar_first;
    float scalar;
};
enum { BINARY_SCALAR_SAVED_T, BINARY_SCALAR_SAVED_OUT };

static int binary_scalar_backward(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    const struct binary_scalar_args *args = CN_NODE_ARGS(n, struct binary_scalar_args);
    float v = args->scalar;
    const cn_tensor *t = n->saved[BINARY_SCALAR_SAVED_T], *out = n->saved[BINARY_SCALAR_SAVED_OUT];
    gi[0] = args->scalar_first ? binary_operand_grad(args->op, 1, g, NULL, t, out, &v, NULL, err)
                               : binary_operand_grad(args->op, 0, g, t, NULL, out, NULL, &v, err);
    return gi[0] ? 0 : -1;
}

static int binary_scalar_backward_graph(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    const struct binary_scalar_args *args = CN_NODE_ARGS(n, struct binary_scalar_args);
    float v = args->scalar;
    cn_tensor *t = n->inputs[0];
    gi[0] = args->scalar_first ? binary_operand_grad_graph(args->op, 1, g, NULL, t, &v, NULL, err)
                               : binary_operand_grad_graph(args->op, 0, g, t, NULL, NULL, &v, err);
    return gi[0] ? 0 : -1;
}

static const cn_op_def op_binary_scalar = {"binary_scalar", binary_scalar_backward, binary_scalar_backward_graph};

cn_tensor *cn_binary_scalar(cn_binary_op op, const cn_tensor *a, float s, bool scalar_first, cn_error *err) {
    cn_tensor *r = binary_scalar_forward(op, a, s, scalar_first, err);
    if (!r || is_comparison(op)) return r;
    cn_node *node;
    cn_tensor *in = (cn_tensor *)a;
    r = cn_record_result(r, &op_binary_scalar, 1, &in, &node, err);
    if (node) {
        *CN_NODE_ARGS(node, struct binary_scalar_args) =
            (struct binary_scalar_args){.op = op, .scalar_first = scalar_first, .scalar = s};
        cn_node_save(node, BINARY_SCALAR_SAVED_T, a);
        cn_node_save(node, BINARY_SCALAR_SAVED_OUT, r);
    }
    return r;
}

int cn_binary_(cn_binary_op op, cn_tensor *a, const cn_tensor *b, cn_error *err) {
    char fname[32], sa[160], sb[160], sr[160];
    if ((unsigned)op >= CN_BINARY_COUNT) {
        cn_error_set(err, "binary_: unknown op %d", (int)op);
        return -1;
    }
    snprintf(fname, sizeof fname, "%s_", cn_binary_name(op));
    if (!a || !b) {
        cn_error_set(err, "%s: missing operand", fname);
        return -1;
    }
    if (a->requires_grad && cn_grad_enabled()) {
        cn_error_set(err, "%s: in-place operation on a tensor of shape %s that requires grad; run it with "
                     "grad mode off", fname, cn_shape_str(sa, sizeof sa, a->ndim, a->shape));
        return -1;
    }
    if (has_stride0_dim(a)) {
        cn_error_set(err, "%s: the in-place target of shape %s is an expanded view; clone it first",
                     fname, cn_shape_str(sa, sizeof sa, a->ndim, a->shape));
        return -1;
    }
    int64_t shape[CN_MAX_DIMS];
    int ndim = cn_broadcast_shapes(a->ndim, a->shape, b->ndim, b->shape, shape, fname, err);
    if (ndim < 0) return -1;
    if (!shape_equal(ndim, shape, a->ndim, a->shape)) {
        cn_error_set(err, "%s: shape %s does not broadcast to the in-place target's shape %s "
                     "(the result would have shape %s)", fname,
                     cn_shape_str(sb, sizeof sb, b->ndim, b->shape),
                     cn_shape_str(sa, sizeof sa, a->ndim, a->shape),
                     cn_shape_str(sr, sizeof sr, ndim, shape));
        return -1;
    }
    /* Straight in place when a is dense (the output stays dense) and b cannot alias a at another
     * position; otherwise compute out of place and copy back. */
    bool alias = b->storage == a->storage &&
                 !(b->offset == a->offset && b->ndim == a->ndim &&
                   memcmp(b->stride, a->stride, (size_t)a->ndim * sizeof *a->stride) == 0);
    if (cn_is_contiguous(a) && !alias) {
        iter it;
        iter_init(&it, a);
        iter_add(&it, a);
        iter_add(&it, b);
        kernel k = {.kind = K_BINARY, .op = (int)op};
        iter_run(&it, &k);
        return 0;
    }
    cn_tensor *r = binary_forward(op, a, b, err);
    if (!r) return -1;
    int status = cn_copy_(a, r, err);
    cn_release(r);
    return status;
}

/* ---- axpby ------------------------------------------------------------------------------- */

static cn_tensor *axpby_forward(const cn_tensor *a, float alpha, const cn_tensor *b, float beta, cn_error *err) {
    if (!a || !b) {
        cn_error_set(err, "axpby: missing operand");
        return NULL;
    }
    cn_tensor *out = broadcast_output(a, b, "axpby", err);
    if (!out) return NULL;
    iter it;
    iter_init(&it, out);
    iter_add(&it, a);
    iter_add(&it, b);
    kernel k = {.kind = K_AXPBY, .p0 = alpha, .p1 = beta};
    iter_run(&it, &k);
    return out;
}

/* axpby: out = alpha a + beta b; da = alpha g, db = beta g (recorded under create_graph) */
struct axpby_args {
    float coeff[2]; /* alpha, beta: the factor of input 0, 1 */
};

static int axpby_backward(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    const struct axpby_args *args = CN_NODE_ARGS(n, struct axpby_args);
    for (int w = 0; w < 2; w++) {
        if (!n->inputs[w]->requires_grad) continue;
        if (!(gi[w] = cn_binary_scalar(CN_MUL, g, args->coeff[w], false, err))) return -1;
    }
    return 0;
}

static const cn_op_def op_axpby = {"axpby", axpby_backward, axpby_backward};

cn_tensor *cn_axpby(const cn_tensor *a, float alpha, const cn_tensor *b, float beta, cn_error *err) {
    cn_node *node;
    cn_tensor *ins[2] = {(cn_tensor *)a, (cn_tensor *)b};
    cn_tensor *r = cn_record_result(axpby_forward(a, alpha, b, beta, err), &op_axpby, 2, ins, &node, err);
    if (node) *CN_NODE_ARGS(node, struct axpby_args) = (struct axpby_args){{alpha, beta}};
    return r;
}

/* ---- clamp ------------------------------------------------------------------------------- */

static cn_tensor *clamp_forward(const cn_tensor *a, float lo, float hi, cn_error *err) {
    if (!a) {
        cn_error_set(err, "clamp: missing operand");
        return NULL;
    }
    cn_tensor *out = cn_empty(a->ndim, a->shape, err);
    if (!out) return NULL;
    iter it;
    iter_init(&it, out);
    iter_add(&it, a);
    kernel k = {.kind = K_CLAMP, .p0 = lo, .p1 = hi};
    iter_run(&it, &k);
    return out;
}

/* clamp: dx = g where lo <= x <= hi, else 0 */
struct clamp_args {
    float lo, hi;
};
enum { CLAMP_SAVED_X };

static int clamp_backward(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    const struct clamp_args *args = CN_NODE_ARGS(n, struct clamp_args);
    kernel k = {.kind = K_CLAMP_GRAD, .p0 = args->lo, .p1 = args->hi};
    const cn_tensor *ops[1] = {n->saved[CLAMP_SAVED_X]};
    return (gi[0] = grad_kernel(&k, g, 1, ops, NULL, 0, err)) ? 0 : -1;
}

static int clamp_backward_graph(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    const struct clamp_args *args = CN_NODE_ARGS(n, struct clamp_args);
    kernel k = {.kind = K_CLAMP_GRAD, .p0 = args->lo, .p1 = args->hi};
    const cn_tensor *ops[1] = {n->saved[CLAMP_SAVED_X]};
    return (gi[0] = times_step(&k, g, 1, ops, NULL, 0, err)) ? 0 : -1;
}

static const cn_op_def op_clamp = {"clamp", clamp_backward, clamp_backward_graph};

cn_tensor *cn_clamp(const cn_tensor *a, float lo, float hi, cn_error *err) {
    cn_node *node;
    cn_tensor *in = (cn_tensor *)a;
    cn_tensor *r = cn_record_result(clamp_forward(a, lo, hi, err), &op_clamp, 1, &in, &node, err);
    if (node) {
        *CN_NODE_ARGS(node, struct clamp_args) = (struct clamp_args){.lo = lo, .hi = hi};
        cn_node_save(node, CLAMP_SAVED_X, a);
    }
    return r;
}

/* ---- where ------------------------------------------------------------------------------- */

static cn_tensor *where_forward(const cn_tensor *cond, const cn_tensor *a, const cn_tensor *b, cn_error *err) {
    if (!cond || !a || !b) {
        cn_error_set(err, "where: missing operand");
        return NULL;
    }
    int64_t ab[CN_MAX_DIMS], shape[CN_MAX_DIMS];
    int nab = cn_broadcast_shapes(a->ndim, a->shape, b->ndim, b->shape, ab, "where", NULL);
    int ndim = nab < 0 ? -1 : cn_broadcast_shapes(cond->ndim, cond->shape, nab, ab, shape, "where", NULL);
    if (ndim < 0) {
        char sc[160], sa[160], sb[160];
        cn_error_set(err, "where: cannot broadcast shapes %s (cond), %s and %s",
                     cn_shape_str(sc, sizeof sc, cond->ndim, cond->shape),
                     cn_shape_str(sa, sizeof sa, a->ndim, a->shape),
                     cn_shape_str(sb, sizeof sb, b->ndim, b->shape));
        return NULL;
    }
    cn_tensor *out = cn_empty(ndim, shape, err);
    if (!out) return NULL;
    iter it;
    iter_init(&it, out);
    iter_add(&it, cond);
    iter_add(&it, a);
    iter_add(&it, b);
    kernel k = {.kind = K_WHERE};
    iter_run(&it, &k);
    return out;
}

/* where(cond, a, b): a gets g where cond holds, b elsewhere */
enum { WHERE_SAVED_COND };

static int where_backward(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    float zero = 0.0f;
    for (int w = 1; w < 3; w++) {
        if (!n->inputs[w]->requires_grad) continue;
        cn_tensor *out = cn_empty(g->ndim, g->shape, err);
        if (!out) return -1;
        iter it;
        iter_init(&it, out);
        iter_add(&it, n->saved[WHERE_SAVED_COND]);
        if (w == 1) {
            iter_add(&it, g);
            iter_add_value(&it, &zero);
        } else {
            iter_add_value(&it, &zero);
            iter_add(&it, g);
        }
        kernel k = {.kind = K_WHERE};
        iter_run(&it, &k);
        gi[w] = out;
    }
    return 0;
}

static int where_backward_graph(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    cn_tensor *zero = cn_scalar(0.0f, err);
    if (!zero) return -1;
    for (int w = 1; w < 3 && zero; w++) {
        if (!n->inputs[w]->requires_grad) continue;
        gi[w] = w == 1 ? cn_where(n->inputs[0], g, zero, err) : cn_where(n->inputs[0], zero, g, err);
        if (!gi[w]) {
            cn_release(zero);
            return -1;
        }
    }
    cn_release(zero);
    return 0;
}

static const cn_op_def op_where = {"where", where_backward, where_backward_graph};

cn_tensor *cn_where(const cn_tensor *cond, const cn_tensor *a, const cn_tensor *b, cn_error *err) {
    cn_node *node;
    cn_tensor *ins[3] = {(cn_tensor *)cond, (cn_tensor *)a, (cn_tensor *)b};
    cn_tensor *r = cn_record_result(where_forward(cond, a, b, err), &op_where, 3, ins, &node, err);
    if (node) cn_node_save(node, WHERE_SAVED_COND, cond);
    return r;
}

/* ---- linear combinations ---------------------------------------------------------------------- */

#define LINCOMB_MAX 16

static cn_tensor *lincomb_forward(int n, cn_tensor *const *ts, const double *coeffs, cn_error *err) {
    char a[160], b[160];
    if (n < 1 || n > LINCOMB_MAX) {
        cn_error_set(err, "lincomb: between 1 and %d terms, got %d", LINCOMB_MAX, n);
        return NULL;
    }
    for (int i = 1; i < n; i++)
        if (!cn_same_shape(ts[i], ts[0])) {
            cn_error_set(err, "lincomb: term %d has shape %s, term 1 has %s", i + 1,
                         cn_shape_str(a, sizeof a, ts[i]->ndim, ts[i]->shape),
                         cn_shape_str(b, sizeof b, ts[0]->ndim, ts[0]->shape));
            return NULL;
        }
    cn_tensor *dense[LINCOMB_MAX] = {0};
    cn_tensor *out = cn_empty(ts[0]->ndim, ts[0]->shape, err);
    for (int i = 0; i < n && out; i++) {
        if (cn_is_contiguous(ts[i])) dense[i] = cn_retain(ts[i]);
        else if (!(dense[i] = cn_empty(ts[i]->ndim, ts[i]->shape, err)) || cn_copy_(dense[i], ts[i], err)) {
            cn_release(out);
            out = NULL;
        }
    }
    if (out) {
        size_t len = cn_numel(out);
        float *po = cn_data(out);
        const float *p[LINCOMB_MAX];
        float c[LINCOMB_MAX];
        for (int i = 0; i < n; i++) p[i] = cn_data(dense[i]), c[i] = (float)coeffs[i];
        /* terms outer, elements inner, over blocks that stay in L1: vectorises, and adds in the
         * same order as one element at a time */
        const size_t block = 1024, nblocks = (len + block - 1) / block;
#pragma omp parallel for schedule(static) if (len > PARALLEL_MIN)
        for (size_t bi = 0; bi < nblocks; bi++) {
            size_t j0 = bi * block, j1 = j0 + block < len ? j0 + block : len;
            float *o = po + j0;
            const float *p0 = p[0] + j0;
            for (size_t j = 0; j < j1 - j0; j++) o[j] = c[0] * p0[j];
            for (int i = 1; i < n; i++) {
                const float *pi = p[i] + j0;
                const float ci = c[i];
                for (size_t j = 0; j < j1 - j0; j++) o[j] += ci * pi[j];
            }
        }
    }
    for (int i = 0; i < n; i++) cn_release(dense[i]);
    return out;
}

/* d/d ts[i] = coeffs[i] * g (recorded under create_graph) */
struct lincomb_args {
    double coeffs[LINCOMB_MAX];
};

static int lincomb_backward(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    const struct lincomb_args *args = CN_NODE_ARGS(n, struct lincomb_args);
    for (int i = 0; i < n->n_inputs; i++) {
        if (!n->inputs[i]->requires_grad) continue;
        if (!(gi[i] = cn_binary_scalar(CN_MUL, g, (float)args->coeffs[i], false, err))) return -1;
    }
    return 0;
}

static const cn_op_def op_lincomb = {"lincomb", lincomb_backward, lincomb_backward};

cn_tensor *cn_lincomb(int n, cn_tensor *const *ts, const double *coeffs, cn_error *err) {
    cn_node *node;
    cn_tensor *r = cn_record_result(lincomb_forward(n, ts, coeffs, err), &op_lincomb, n, ts, &node, err);
    if (node) memcpy(CN_NODE_ARGS(node, struct lincomb_args)->coeffs, coeffs, (size_t)n * sizeof *coeffs);
    return r;
}

/* ---- chaining forms (ops.h) ---------------------------------------------------------------- */

cn_tensor *cn_binary_drop(cn_binary_op op, cn_tensor *a, const cn_tensor *b, cn_error *err) {
    cn_tensor *r = a && b ? cn_binary(op, a, b, err) : NULL;
    cn_release(a);
    return r;
}

cn_tensor *cn_binary_scalar_drop(cn_binary_op op, cn_tensor *a, float s, bool scalar_first, cn_error *err) {
    cn_tensor *r = a ? cn_binary_scalar(op, a, s, scalar_first, err) : NULL;
    cn_release(a);
    return r;
}

cn_tensor *cn_unary_drop(cn_unary_op op, cn_tensor *a, cn_error *err) {
    cn_tensor *r = a ? cn_unary(op, a, err) : NULL;
    cn_release(a);
    return r;
}
