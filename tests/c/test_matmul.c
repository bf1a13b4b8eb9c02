/* test_matmul.c — cn_matmul / cn_gemm (ops_matmul.c) against a naive double-precision reference.
 *
 * The reference follows torch.matmul's rules independently of the engine: promote 1-D operands,
 * broadcast the batch dims, triple loop in double reading each operand through cn_offset_of (so
 * transposed, narrowed and expanded views are read as they are).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "alloc.h"
#include "ctest.h"
#include "ops.h"
#include "tensor.h"
#include "test_util.h"

static float at(const cn_tensor *t, const int64_t *idx) {
    return t->storage->data[cn_offset_of(t, idx)];
}

/* torch.matmul in double; fills out_shape/out_ndim and returns a malloc'd row-major array. */
static double *ref_matmul(const cn_tensor *a, const cn_tensor *b, int *out_ndim, int64_t *out_shape) {
    int na = a->ndim, nb = b->ndim;
    int64_t m = na == 1 ? 1 : a->shape[na - 2], k = a->shape[na - 1];
    int64_t n = nb == 1 ? 1 : b->shape[nb - 1];
    int ba = na > 2 ? na - 2 : 0, bb = nb > 2 ? nb - 2 : 0, nbatch = ba > bb ? ba : bb;
    int64_t batch[CN_MAX_DIMS], nbatches = 1;
    for (int j = 0; j < nbatch; j++) {
        int da = j - (nbatch - ba), db = j - (nbatch - bb);
        int64_t x = da >= 0 ? a->shape[da] : 1, y = db >= 0 ? b->shape[db] : 1;
        batch[j] = x > y ? x : y;
        nbatches *= batch[j];
    }
    *out_ndim = 0;
    for (int j = 0; j < nbatch; j++) out_shape[(*out_ndim)++] = batch[j];
    if (na > 1) out_shape[(*out_ndim)++] = m;
    if (nb > 1) out_shape[(*out_ndim)++] = n;
    double *out = malloc(sizeof(double) * (size_t)(nbatches * m * n + 1));
    for (int64_t bi = 0; bi < nbatches; bi++) {
        int64_t bidx[CN_MAX_DIMS], rem = bi;
        for (int j = nbatch - 1; j >= 0; j--) { bidx[j] = rem % batch[j]; rem /= batch[j]; }
        int64_t ia[CN_MAX_DIMS] = {0}, ib[CN_MAX_DIMS] = {0};
        for (int j = 0; j < nbatch; j++) {
            int da = j - (nbatch - ba), db = j - (nbatch - bb);
            if (da >= 0) ia[da] = a->shape[da] == 1 ? 0 : bidx[j];
            if (db >= 0) ib[db] = b->shape[db] == 1 ? 0 : bidx[j];
        }
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) {
                double acc = 0.0;
                for (int64_t p = 0; p < k; p++) {
                    if (na == 1) ia[0] = p; else { ia[na - 2] = i; ia[na - 1] = p; }
                    if (nb == 1) ib[0] = p; else { ib[nb - 2] = p; ib[nb - 1] = j; }
                    acc += (double)at(a, ia) * at(b, ib);
                }
                out[(bi * m + i) * n + j] = acc;
            }
    }
    return out;
}

/* Checks cn_matmul(a, b) against the reference; returns true when shape and values match. */
static bool check_matmul(const cn_tensor *a, const cn_tensor *b, double rtol, const char *what) {
    cn_error err;
    int ndim;
    int64_t shape[CN_MAX_DIMS];
    double *want = ref_matmul(a, b, &ndim, shape);
    cn_tensor *r = cn_matmul(a, b, &err);
    bool ok = r != NULL;
    if (!r) fprintf(stderr, "  %s: %s\n", what, err.msg);
    if (ok && (r->ndim != ndim || memcmp(r->shape, shape, sizeof(int64_t) * (size_t)ndim) != 0)) {
        char s1[128], s2[128];
        fprintf(stderr, "  %s: shape %s, expected %s\n", what, cn_shape_str(s1, sizeof s1, r->ndim, r->shape),
                cn_shape_str(s2, sizeof s2, ndim, shape));
        ok = false;
    }
    for (size_t i = 0; ok && i < cn_numel(r); i++) {
        double got = cn_data(r)[i];
        if (!(fabs(got - want[i]) <= 1e-5 + rtol * fabs(want[i]))) {
            fprintf(stderr, "  %s: element %zu = %.9g, expected %.9g\n", what, i, got, want[i]);
            ok = false;
        }
    }
    free(want);
    cn_release(r);
    return ok;
}

/* Random operands of the given shapes, multiplied and checked. */
static bool check_shapes(int na, const int64_t *sa, int nb, const int64_t *sb, const char *what) {
    cn_tensor *a = random_tensor(na, sa, -1, 1), *b = random_tensor(nb, sb, -1, 1);
    bool ok = check_matmul(a, b, 1e-5, what);
    cn_release(a);
    cn_release(b);
    return ok;
}

static void test_dot(void) {
    int64_t s[] = {7};
    CHECK(check_shapes(1, s, 1, s, "dot"));
    cn_error err;
    const float x[] = {1, 2, 3}, y[] = {4, 5, 6};
    int64_t s3[] = {3};
    cn_tensor *a = cn_from_data(1, s3, x, &err), *b = cn_from_data(1, s3, y, &err);
    cn_tensor *r = cn_matmul(a, b, &err);
    CHECK(r && r->ndim == 0 && cn_data(r)[0] == 32.0f);
    cn_release(a);
    cn_release(b);
    cn_release(r);
}

static void test_2d(void) {
    int64_t sa[] = {2, 3}, sb[] = {3, 4};
    CHECK(check_shapes(2, sa, 2, sb, "2d"));
    cn_error err;
    const float x[] = {1, 2, 3, 4}, y[] = {5, 6, 7, 8};
    int64_t s[] = {2, 2};
    cn_tensor *a = cn_from_data(2, s, x, &err), *b = cn_from_data(2, s, y, &err);
    cn_tensor *r = cn_matmul(a, b, &err);
    float *p = cn_data(r);
    CHECK(p[0] == 19 && p[1] == 22 && p[2] == 43 && p[3] == 50);
    cn_release(a);
    cn_release(b);
    cn_release(r);
}

static void test_vector_matrix(void) {
    int64_t v[] = {3}, m34[] = {3, 4}, m23[] = {2, 3}, m13[] = {1, 3}, m31[] = {3, 1};
    CHECK(check_shapes(1, v, 2, m34, "1d @ 2d"));
    CHECK(check_shapes(2, m23, 1, v, "2d @ 1d"));
    CHECK(check_shapes(2, m13, 2, m34, "[1,3] @ [3,4]"));
    CHECK(check_shapes(2, m23, 2, m31, "[2,3] @ [3,1]"));
    CHECK(check_shapes(2, m13, 2, m31, "[1,3] @ [3,1]"));
}

static void test_batched(void) {
    int64_t a1[] = {10, 3, 4}, b1[] = {4, 5};
    CHECK(check_shapes(3, a1, 2, b1, "[10,3,4] @ [4,5]"));
    int64_t a2[] = {2, 1, 3, 4}, b2[] = {5, 4, 6};
    CHECK(check_shapes(4, a2, 3, b2, "[2,1,3,4] @ [5,4,6]"));
    int64_t a3[] = {3, 4}, b3[] = {2, 4, 5};
    CHECK(check_shapes(2, a3, 3, b3, "[3,4] @ [2,4,5]"));
    int64_t v4[] = {4}, b4[] = {2, 4, 5};
    CHECK(check_shapes(1, v4, 3, b4, "[4] @ [2,4,5]"));
    int64_t a5[] = {2, 3, 4};
    CHECK(check_shapes(3, a5, 1, v4, "[2,3,4] @ [4]"));
    int64_t a6[] = {2, 3, 1, 4}, b6[] = {3, 4, 2};
    CHECK(check_shapes(4, a6, 3, b6, "[2,3,1,4] @ [3,4,2] (m = 1)"));
    int64_t a7[] = {4, 2, 3}, b7[] = {4, 3, 1};
    CHECK(check_shapes(3, a7, 3, b7, "[4,2,3] @ [4,3,1] (n = 1)"));
    int64_t a8[] = {1, 3, 4}, b8[] = {6, 4, 5};
    CHECK(check_shapes(3, a8, 3, b8, "[1,3,4] @ [6,4,5]"));
}

/* Transposed views are read in place, with BLAS's transpose flags. */
static void test_transposed_operands(void) {
    cn_error err;
    int64_t s43[] = {4, 3}, s54[] = {5, 4}, s34[] = {3, 4}, s45[] = {4, 5};
    cn_tensor *x = random_tensor(2, s43, -1, 1), *y = random_tensor(2, s54, -1, 1), *z = random_tensor(2, s34, -1, 1);
    cn_tensor *m45 = random_tensor(2, s45, -1, 1);
    cn_tensor *xt = cn_transpose(x, 0, 1, &err), *yt = cn_transpose(y, 0, 1, &err); /* [3,4], [4,5] */
    CHECK(!cn_is_contiguous(xt) && !cn_is_contiguous(yt));
    CHECK(check_matmul(xt, m45, 1e-5, "A^T @ B"));
    CHECK(check_matmul(z, yt, 1e-5, "A @ B^T"));
    CHECK(check_matmul(xt, yt, 1e-5, "A^T @ B^T"));
    /* vectors against transposed matrices (sgemv paths) */
    int64_t s4[] = {4}, s3[] = {3};
    cn_tensor *v4 = random_tensor(1, s4, -1, 1), *v3 = random_tensor(1, s3, -1, 1);
    CHECK(check_matmul(v4, yt, 1e-5, "v @ B^T"));
    CHECK(check_matmul(xt, v4, 1e-5, "A^T @ v"));
    CHECK(check_matmul(v3, xt, 1e-5, "v @ A^T"));
    /* batched transposes: p^T [2,3,5], q^T [2,5,4] */
    int64_t s253[] = {2, 5, 3}, s245[] = {2, 4, 5}, s254[] = {2, 5, 4};
    cn_tensor *p = random_tensor(3, s253, -1, 1), *q = random_tensor(3, s245, -1, 1), *plain = random_tensor(3, s254, -1, 1);
    cn_tensor *pt = cn_transpose(p, 1, 2, &err), *qt = cn_transpose(q, 1, 2, &err);
    CHECK(check_matmul(pt, plain, 1e-5, "batched A^T @ B"));
    CHECK(check_matmul(pt, qt, 1e-5, "batched A^T @ B^T"));
    int64_t s235[] = {2, 3, 5};
    cn_tensor *a235 = random_tensor(3, s235, -1, 1);
    CHECK(check_matmul(a235, qt, 1e-5, "batched A @ B^T"));
    /* the batch dim behind the matrix dims: [3,2,4] viewed as [2,3,4]; rows do not nest */
    int64_t s324[] = {3, 2, 4};
    cn_tensor *w = random_tensor(3, s324, -1, 1);
    cn_tensor *wp = cn_transpose(w, 0, 1, &err);
    CHECK(check_matmul(wp, m45, 1e-5, "batch-permuted A @ 2-D"));
    cn_tensor *m45t = cn_transpose(m45, 0, 1, &err); /* [5,4] */
    CHECK(check_matmul(pt, m45t, 1e-5, "batched A^T @ 2-D B^T"));
    cn_release(m45t);
    /* [k, b, m] permuted to [b, m, k]: every row unit-strided, folded as one transposed GEMM */
    int64_t s523[] = {5, 2, 3};
    cn_tensor *u = random_tensor(3, s523, -1, 1);
    int perm[] = {1, 2, 0};
    cn_tensor *up = cn_permute(u, perm, &err); /* [2,3,5] */
    CHECK(check_matmul(up, y, 1e-5, "folded transposed A @ 2-D"));
    cn_tensor *ts[] = {x, y, z, m45, xt, yt, v4, v3, p, q, plain, pt, qt, a235, w, wp, u, up};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) cn_release(ts[i]);
}

/* Narrowed, expanded and strided-vector operands. */
static void test_other_views(void) {
    cn_error err;
    int64_t s38[] = {3, 8}, s76[] = {7, 6};
    cn_tensor *a = random_tensor(2, s38, -1, 1), *b = random_tensor(2, s76, -1, 1);
    cn_tensor *an = cn_narrow(a, 1, 2, 5, &err);  /* [3,5], row stride 8 */
    cn_tensor *bn = cn_narrow(b, 0, 1, 5, &err);  /* [5,6] */
    cn_tensor *bnn = cn_narrow(bn, 1, 1, 4, &err); /* [5,4], row stride 6 */
    CHECK(check_matmul(an, bnn, 1e-5, "narrowed @ narrowed"));
    cn_tensor *col = cn_select(b, 1, 2, &err);      /* [7] with stride 6 */
    int64_t s27[] = {2, 7};
    cn_tensor *m27 = random_tensor(2, s27, -1, 1);
    CHECK(check_matmul(m27, col, 1e-5, "2-D @ strided vector"));
    CHECK(check_matmul(col, b, 1e-5, "strided vector @ 2-D"));
    CHECK(check_matmul(col, col, 1e-5, "strided dot"));
    /* expanded: stride-0 matrix dims and broadcast batch dims */
    int64_t s15[] = {1, 5}, e35[] = {3, 5}, s5[] = {5}, e45[] = {4, 5}, e345[] = {3, 4, 5};
    cn_tensor *row = random_tensor(2, s15, -1, 1), *vec = random_tensor(1, s5, -1, 1);
    cn_tensor *er = cn_expand(row, 2, e35, &err);   /* [3,5], row stride 0 */
    cn_tensor *ev = cn_expand(vec, 2, e45, &err);   /* [4,5], row stride 0 */
    int64_t s56[] = {5, 6}, s54[] = {5, 4};
    cn_tensor *m56 = random_tensor(2, s56, -1, 1), *m54 = random_tensor(2, s54, -1, 1);
    CHECK(check_matmul(er, m56, 1e-5, "expanded rows @ B"));
    CHECK(check_matmul(m54, ev, 1e-5, "A @ expanded"));
    cn_tensor *m45 = random_tensor(2, e45, -1, 1);
    cn_tensor *b345 = cn_expand(m45, 3, e345, &err); /* batch stride 0 */
    CHECK(check_matmul(b345, m56, 1e-5, "batch-expanded A @ B"));
    int64_t s234[] = {3, 2, 4};
    cn_tensor *a234 = random_tensor(3, s234, -1, 1);
    CHECK(check_matmul(a234, b345, 1e-5, "A @ batch-expanded B"));
    int64_t zero_stride[] = {5, 1};
    cn_tensor *v51 = random_tensor(2, zero_stride, -1, 1);
    int64_t e56[] = {5, 6};
    cn_tensor *ecol = cn_expand(v51, 2, e56, &err); /* column stride 0 */
    CHECK(check_matmul(m45, ecol, 1e-5, "A @ column-expanded B"));
    cn_tensor *ts[] = {a, b, an, bn, bnn, col, m27, row, vec, er, ev, m56, m54, m45, b345, a234, v51, ecol};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) cn_release(ts[i]);
}

/* Bytes cn_matmul allocates beyond its result: 0 when every operand is read in place. */
static size_t extra_bytes(const cn_tensor *a, const cn_tensor *b) {
    cn_error err;
    size_t before = cn_memory_allocated_total();
    cn_tensor *r = cn_matmul(a, b, &err);
    size_t used = cn_memory_allocated_total() - before - (r ? cn_numel(r) * sizeof(float) : 0);
    cn_release(r);
    return used;
}

static void test_no_copies(void) {
    cn_error err;
    int64_t s43[] = {4, 3}, s54[] = {5, 4}, s2534[] = {2, 5, 3, 4}, s38[] = {3, 8}, s6[] = {6, 5};
    cn_tensor *x = random_tensor(2, s43, -1, 1), *y = random_tensor(2, s54, -1, 1), *z = random_tensor(4, s2534, -1, 1);
    cn_tensor *xt = cn_transpose(x, 0, 1, &err), *yt = cn_transpose(y, 0, 1, &err);
    CHECK(extra_bytes(xt, yt) == 0);                /* both transposed */
    cn_tensor *zt = cn_transpose(z, 2, 3, &err);    /* [2,5,4,3] batched transposes */
    CHECK(extra_bytes(zt, x) == 0);
    CHECK(extra_bytes(z, yt) == 0);                 /* folded into one GEMM */
    cn_tensor *zb = cn_transpose(z, 0, 1, &err);    /* [5,2,3,4]: batch strides permuted */
    CHECK(extra_bytes(zb, yt) == 0);
    cn_tensor *w = random_tensor(2, s38, -1, 1), *v = random_tensor(2, s6, -1, 1);
    cn_tensor *wn = cn_narrow(w, 1, 1, 6, &err);    /* [3,6], row stride 8 */
    CHECK(extra_bytes(wn, v) == 0);
    cn_tensor *col = cn_select(w, 1, 0, &err);      /* [3], stride 8 */
    CHECK(extra_bytes(col, xt) == 0);
    cn_tensor *ts[] = {x, y, z, xt, yt, zt, zb, w, v, wn, col};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) cn_release(ts[i]);
}

static void test_large(void) {
    int64_t sa[] = {257, 129}, sb[] = {129, 65};
    cn_tensor *a = random_tensor(2, sa, -1, 1), *b = random_tensor(2, sb, -1, 1);
    CHECK(check_matmul(a, b, 1e-4, "257x129 @ 129x65"));
    cn_error err;
    cn_tensor *at_ = cn_transpose(a, 0, 1, &err); /* [129, 257] */
    int64_t sc[] = {3, 65, 129};
    cn_tensor *c = random_tensor(3, sc, -1, 1);
    CHECK(check_matmul(c, at_, 1e-4, "[3,65,129] @ A^T"));
    cn_release(at_);
    cn_release(c);
    cn_release(a);
    cn_release(b);
}

static void test_empty(void) {
    cn_error err;
    int64_t s30[] = {3, 0}, s04[] = {0, 4}, s34[] = {3, 4}, s43[] = {4, 3}, s03[] = {0, 3};
    cn_tensor *a = cn_empty(2, s30, &err), *b = cn_empty(2, s04, &err);
    cn_tensor *r = cn_matmul(a, b, &err); /* k = 0: zeros */
    CHECK(r && r->ndim == 2 && r->shape[0] == 3 && r->shape[1] == 4);
    for (size_t i = 0; r && i < 12; i++) CHECK(cn_data(r)[i] == 0.0f);
    cn_release(r);
    cn_tensor *c = cn_empty(2, s03, &err), *d = random_tensor(2, s34, -1, 1);
    r = cn_matmul(c, d, &err); /* m = 0 */
    CHECK(r && r->shape[0] == 0 && r->shape[1] == 4);
    cn_release(r);
    cn_tensor *e = random_tensor(2, s43, -1, 1), *f = cn_empty(2, s30, &err);
    r = cn_matmul(e, f, &err); /* n = 0 */
    CHECK(r && r->shape[0] == 4 && r->shape[1] == 0);
    cn_release(r);
    cn_release(f);
    cn_release(a);
    cn_release(b);
    cn_release(c);
    cn_release(d);
    cn_release(e);
}

static void test_gemm(void) {
    /* C = 2 * A^T @ B + 0.5 * C on raw buffers */
    const float a[] = {1, 2, 3, 4, 5, 6};    /* stored [3,2]; A^T is [2,3] */
    const float b[] = {1, 0, 0, 1, 1, 1};    /* [3,2] */
    float c[] = {10, 20, 30, 40};            /* [2,2] */
    cn_gemm(true, false, 2, 2, 3, 2.0f, a, 2, b, 2, 0.5f, c, 2);
    /* A^T = [[1,3,5],[2,4,6]]; A^T B = [[6,8],[8,10]] */
    CHECK(c[0] == 17 && c[1] == 26 && c[2] == 31 && c[3] == 40);
    /* matrix-vector forms with beta = 0 ignore what was in C, even NaN */
    float y[] = {NAN, NAN};
    const float x[] = {1, 1, 1};
    cn_gemm(true, false, 2, 1, 3, 1.0f, a, 2, x, 1, 0.0f, y, 1);
    CHECK(y[0] == 9 && y[1] == 12);
    float z[] = {NAN, NAN};
    cn_gemm(false, false, 1, 2, 3, 1.0f, x, 3, b, 2, 0.0f, z, 2);
    CHECK(z[0] == 2 && z[1] == 2);
    cn_gemm(false, true, 1, 2, 3, 1.0f, x, 3, a, 3, 0.0f, z, 2); /* B^T from stored [2,3] */
    CHECK(z[0] == 6 && z[1] == 15);
    float w[] = {NAN, 5};
    cn_gemm(false, false, 1, 2, 0, 1.0f, x, 1, b, 2, 0.0f, w, 2); /* k = 0, beta = 0 */
    CHECK(w[0] == 0 && w[1] == 0);
}

static void test_errors(void) {
    cn_error err;
    int64_t s23[] = {2, 3}, s45[] = {4, 5}, s3[] = {3}, s4[] = {4};
    cn_tensor *a = cn_zeros(2, s23, &err), *b = cn_zeros(2, s45, &err);
    CHECK(cn_matmul(a, b, &err) == NULL);
    CHECK(strcmp(err.msg, "matmul: shapes [2, 3] and [4, 5] do not match (3 != 4)") == 0);
    cn_tensor *v3 = cn_zeros(1, s3, &err), *v4 = cn_zeros(1, s4, &err);
    CHECK(cn_matmul(v3, v4, &err) == NULL && strstr(err.msg, "(3 != 4)"));
    CHECK(cn_matmul(a, v4, &err) == NULL && strstr(err.msg, "[2, 3] and [4]"));
    cn_tensor *s = cn_scalar(1.0f, &err);
    CHECK(cn_matmul(s, a, &err) == NULL && strstr(err.msg, "matmul") && strstr(err.msg, "[]"));
    CHECK(cn_matmul(v3, s, &err) == NULL && strstr(err.msg, "matmul"));
    int64_t b1[] = {2, 3, 4}, b2[] = {3, 4, 5};
    cn_tensor *x = cn_zeros(3, b1, &err), *y = cn_zeros(3, b2, &err);
    CHECK(cn_matmul(x, y, &err) == NULL);
    CHECK(strstr(err.msg, "matmul") && strstr(err.msg, "[2, 3, 4]") && strstr(err.msg, "[3, 4, 5]"));
    cn_tensor *ts[] = {a, b, v3, v4, s, x, y};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) cn_release(ts[i]);
}

int main(void) {
    test_seed(777u);
    RUN(test_dot);
    RUN(test_2d);
    RUN(test_vector_matrix);
    RUN(test_batched);
    RUN(test_transposed_operands);
    RUN(test_other_views);
    RUN(test_no_copies);
    RUN(test_large);
    RUN(test_empty);
    RUN(test_gemm);
    RUN(test_errors);
    return CTEST_SUMMARY("matmul");
}
