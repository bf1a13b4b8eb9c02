/* test_vmath.c — cn_vexpf and cn_vlog1pf (vmath.h) against double-precision libm exp and log1p:
 * dense sweeps and special values, error in ulps of the correctly rounded float result. The
 * functions run in `omp simd` loops, as in ops_elementwise.c, and the vector results must match
 * the scalar calls bit for bit (every special value, every 61st sweep point): a strided tensor
 * takes the scalar path, a dense one the vector path, and both must agree. */
#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "ctest.h"
#include "vmath.h"

#define MAX_ULP 2
#define CHUNK 4096

static uint32_t bits_of(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static float float_of(uint32_t u) {
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* Floats in increasing order map to increasing integers (-0 and +0 both to 0). */
static int64_t ordinal(float x) {
    int32_t i;
    memcpy(&i, &x, sizeof i);
    return i < 0 ? -(int64_t)(i & 0x7fffffff) : (int64_t)i;
}

/* Distance in ulps from got to the double ref rounded to float; NaN only matches NaN, inf only
 * the same inf (a finite answer next to an overflowing one counts its distance from FLT_MAX). */
static int64_t ulp_error(float got, double ref) {
    float want = (float)ref;
    if (isnan(want) || isnan(got)) return isnan(want) && isnan(got) ? 0 : INT64_MAX;
    if (got == want) return 0;
    if (isinf(got) || (isinf(want) && fabsf(got) < FLT_MAX)) return INT64_MAX;
    int64_t d = ordinal(got) - ordinal(want);
    return d < 0 ? -d : d;
}

/* out[i] = f(in[i]) as the engine's dense rows compute it (vectorised). */
static void run_exp(const float *in, float *out, size_t n) {
#pragma omp simd
    for (size_t i = 0; i < n; i++) out[i] = cn_vexpf(in[i]);
}

static void run_log1p(const float *in, float *out, size_t n) {
#pragma omp simd
    for (size_t i = 0; i < n; i++) out[i] = cn_vlog1pf(in[i]);
}

/* The scalar call, kept out of any vector loop by the volatile. */
static float scalar_call(bool is_exp, float x) {
    volatile float v = x;
    return is_exp ? cn_vexpf(v) : cn_vlog1pf(v);
}

typedef struct {
    bool is_exp;
    int64_t worst;
    float worst_x;
    size_t count, mismatched; /* points; scalar/vector bit mismatches */
    float in[CHUNK], out[CHUNK];
    size_t fill;
} sweep;

static void sweep_flush(sweep *s) {
    if (s->is_exp) run_exp(s->in, s->out, s->fill);
    else run_log1p(s->in, s->out, s->fill);
    for (size_t i = 0; i < s->fill; i++) {
        float x = s->in[i];
        int64_t e = ulp_error(s->out[i], s->is_exp ? exp((double)x) : log1p((double)x));
        if (e > s->worst) s->worst = e, s->worst_x = x;
        if (i % 61 == 0 && bits_of(scalar_call(s->is_exp, x)) != bits_of(s->out[i])) s->mismatched++;
    }
    s->count += s->fill;
    s->fill = 0;
}

static void sweep_add(sweep *s, float x) {
    s->in[s->fill++] = x;
    if (s->fill == CHUNK) sweep_flush(s);
}

/* n + 1 evenly spaced points of [lo, hi]. */
static void sweep_linear(sweep *s, double lo, double hi, size_t n) {
    for (size_t i = 0; i <= n; i++) sweep_add(s, (float)(lo + (hi - lo) * (double)i / (double)n));
}

/* Every step-th float between the bit patterns from and to (same sign): all magnitudes alike. */
static void sweep_bits(sweep *s, uint32_t from, uint32_t to, uint32_t step) {
    for (uint64_t b = from; b <= to; b += step) sweep_add(s, float_of((uint32_t)b));
}

static void sweep_report(sweep *s, const char *name) {
    sweep_flush(s);
    printf("  %s: %zu points, max error %lld ulp (at %.9g)\n", name, s->count, (long long)s->worst,
           (double)s->worst_x);
    CHECK(s->worst <= MAX_ULP);
    CHECK(s->mismatched == 0);
}

static sweep sw; /* big: kept off the stack */

static void test_exp_sweep(void) {
    memset(&sw, 0, sizeof sw);
    sw.is_exp = true;
    sweep_linear(&sw, -104.0, 89.0, 2000000);
    sweep_bits(&sw, 0, bits_of(104.0f), 1024);                   /* +0 up to 104 */
    sweep_bits(&sw, bits_of(-0.0f), bits_of(-104.0f), 1024);    /* -0 down to -104 */
    sweep_bits(&sw, bits_of(87.0f), bits_of(89.0f), 1);          /* every float near overflow */
    sweep_bits(&sw, bits_of(-87.0f), bits_of(-104.0f), 1);       /* and through the subnormals */
    sweep_report(&sw, "exp");
}

static void test_log1p_sweep(void) {
    memset(&sw, 0, sizeof sw);
    sw.is_exp = false;
    sweep_linear(&sw, -1.0, 1e6, 1000000);
    sweep_linear(&sw, -1.0, 1.0, 1000000);
    sweep_bits(&sw, 0, bits_of(1e6f), 1024);                     /* +0 up to 1e6 */
    sweep_bits(&sw, bits_of(-0.0f), bits_of(-1.0f), 1024);       /* -0 down to -1 */
    sweep_bits(&sw, bits_of(-0.5f), bits_of(-1.0f), 1);          /* every float where u < ½ */
    sweep_bits(&sw, bits_of(1e6f), 0x7f7fffffu, 4096);           /* on to FLT_MAX */
    sweep_report(&sw, "log1p");
}

/* One special value, vectorised and scalar: the same bits, within MAX_ULP of the reference. */
static bool special_ok(bool is_exp, float x, float *got) {
    float in[1] = {x}, out[1];
    if (is_exp) run_exp(in, out, 1);
    else run_log1p(in, out, 1);
    *got = out[0];
    double ref = is_exp ? exp((double)x) : log1p((double)x);
    bool ok = ulp_error(out[0], ref) <= MAX_ULP && bits_of(scalar_call(is_exp, x)) == bits_of(out[0]);
    if (!ok) fprintf(stderr, "    %s(%a) = %a, expected %a\n", is_exp ? "exp" : "log1p", (double)x,
                     (double)out[0], ref);
    return ok;
}

static void test_exp_special(void) {
    const float xs[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, -NAN, 1e-30f, -1e-30f, 1e-45f,
                        -1e-40f, FLT_MIN, 88.7f, 88.72283f, 88.72284f, 89.0f, 100.0f, FLT_MAX,
                        -87.3f, -87.33655f, -100.0f, -103.97f, -103.98f, -104.5f, -FLT_MAX,
                        1.0f, -1.0f, 0.34657359f, -0.34657359f, 0.5f, 10.0f, -10.0f};
    float got;
    for (size_t i = 0; i < sizeof xs / sizeof xs[0]; i++) CHECK(special_ok(true, xs[i], &got));
    CHECK(cn_vexpf(0.0f) == 1.0f && cn_vexpf(-0.0f) == 1.0f);
    CHECK(cn_vexpf(1e-45f) == 1.0f && cn_vexpf(-1e-40f) == 1.0f);
    CHECK(isinf(cn_vexpf(INFINITY)) && cn_vexpf(INFINITY) > 0);
    CHECK(cn_vexpf(-INFINITY) == 0.0f && !signbit(cn_vexpf(-INFINITY)));
    CHECK(isnan(cn_vexpf(NAN)));
    CHECK(isinf(cn_vexpf(88.72284f)) && isfinite(cn_vexpf(88.72283f))); /* overflow at ln FLT_MAX */
    CHECK(cn_vexpf(-103.98f) == 0.0f && cn_vexpf(-103.96f) > 0.0f);      /* underflow at ln 2^-150 */
    CHECK(cn_vexpf(-100.0f) > 0.0f && cn_vexpf(-100.0f) < FLT_MIN);      /* a subnormal */
}

static void test_log1p_special(void) {
    const float xs[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, -NAN, 1e-30f, -1e-30f, 1e-45f,
                        -1e-40f, FLT_MIN, 5.96e-8f, -5.96e-8f, 1e-4f, -1e-4f, 0.41421356f,
                        -0.29289322f, 1.0f, -1.0f, -0.99999994f, -0.5f, -1.5f, 1e6f, 1.6777216e7f,
                        FLT_MAX, 88.7f, -87.3f};
    float got;
    for (size_t i = 0; i < sizeof xs / sizeof xs[0]; i++) CHECK(special_ok(false, xs[i], &got));
    CHECK(cn_vlog1pf(0.0f) == 0.0f && !signbit(cn_vlog1pf(0.0f)));
    CHECK(cn_vlog1pf(-0.0f) == 0.0f && signbit(cn_vlog1pf(-0.0f)));
    CHECK(cn_vlog1pf(1e-30f) == 1e-30f && cn_vlog1pf(-1e-40f) == -1e-40f); /* tiny x is exact */
    CHECK(cn_vlog1pf(-1.0f) == -INFINITY);
    CHECK(isnan(cn_vlog1pf(-1.5f)) && isnan(cn_vlog1pf(-INFINITY)) && isnan(cn_vlog1pf(NAN)));
    CHECK(cn_vlog1pf(INFINITY) == INFINITY);
}

/* softplus as ops_elementwise.c builds it: log1p(e^x) keeps relative accuracy far in the tail. */
static void test_log1p_of_exp(void) {
    int64_t worst = 0;
    for (float x = -100.0f; x <= 20.0f; x += 0.001953125f) {
        int64_t e = ulp_error(cn_vlog1pf(cn_vexpf(x)), log1p(exp((double)x)));
        if (e > worst) worst = e;
    }
    printf("  log1p(exp(x)) on [-100, 20]: max error %lld ulp\n", (long long)worst);
    CHECK(worst <= 3);
}

int main(void) {
    RUN(test_exp_sweep);
    RUN(test_log1p_sweep);
    RUN(test_exp_special);
    RUN(test_log1p_special);
    RUN(test_log1p_of_exp);
    return CTEST_SUMMARY("vmath");
}
