/* vmath.h — branch-free float32 exp and log1p that GCC vectorises inside a loop.
 *
 * glibc's expf/log1pf are calls, so a loop over them stays scalar. These are plain inline
 * arithmetic with selects instead of branches: a `#pragma omp simd` loop over them becomes
 * AVX2/AVX-512 code. Both stay within 1 ulp over their whole range (tests/c/test_vmath.c measures
 * it against double-precision libm) and give the same bits scalar or vectorised. No FMA is
 * assumed (-std=c11 does not contract), and the error bounds hold if a compiler contracts anyway.
 *
 * exp:   x = n ln2 + r, |r| <= ln2/2 (Cody–Waite: n ln2_hi is exact), e^r by a degree-6
 *        polynomial, times 2^n built in the exponent bits as 2^(n/2) 2^(n - n/2), so that
 *        subnormal results round once and 2^128 overflows to inf by itself.
 * log1p: u = 1 + x rounded and e = (1 + x) - u exactly (Knuth's two-sum); u = 2^k m with m in
 *        [√½, √2), f = m - 1, s = f / (2 + f), and as in fdlibm
 *        log(1 + f) = 2 atanh(s) = f - f²/2 + s (f²/2 + R(s²)); then
 *        log1p(x) = k ln2 + log(1 + f) + e/u, the small terms summed first. The correction e/u
 *        stands in for Goldberg's log(u)·x/(u - 1), which would add a quotient's and a product's
 *        rounding to the whole result.
 */
#ifndef CN_VMATH_H
#define CN_VMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* A loop vectorises only once everything it calls is inlined, and GCC stops inlining plain
 * `static inline` functions into a function already large (a switch of row kernels): forced. */
#if defined(__GNUC__)
#define CN_VMATH_INLINE static inline __attribute__((always_inline))
#else
#define CN_VMATH_INLINE static inline
#endif

/* The bits of a float, and the float of some bits (memcpy: no aliasing games). */
CN_VMATH_INLINE uint32_t cn_vmath_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

CN_VMATH_INLINE float cn_vmath_float(uint32_t u) {
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* cond ? a : b without a branch. With a plain ?: GCC may sink the work of the unused side into
 * a branch, or thread jumps through it (log1p(exp(x)) duplicates the body per clamp), and it will
 * not if-convert a division in a branch back (it may trap): the loop stays scalar. */
CN_VMATH_INLINE float cn_vselectf(int cond, float a, float b) {
    uint32_t mask = -(uint32_t)(cond != 0);
    return cn_vmath_float((cn_vmath_bits(a) & mask) | (cn_vmath_bits(b) & ~mask));
}

/* ln 2 = CN_VMATH_LN2_HI + CN_VMATH_LN2_LO; the high part has 15 significant bits, so k·LN2_HI is
 * exact for |k| < 512. */
#define CN_VMATH_LN2_HI 0x1.62e4p-1f
#define CN_VMATH_LN2_LO 1.42860682030941723e-6f

/* e^x for float x, ≤ 1 ulp; +inf above ~88.72, 0 below ~-103.97 (subnormals from ~-87.34),
 * NaN stays NaN. */
CN_VMATH_INLINE float cn_vexpf(float x) {
    /* Past these bounds the result is inf or 0 already; clamping keeps n small (NaN passes). */
    x = cn_vselectf(x > 89.0f, 89.0f, x);
    x = cn_vselectf(x < -104.0f, -104.0f, x);
    /* n = round(x / ln2): adding 1.5·2^23 rounds to an integer held in the low mantissa bits */
    const float shifter = 0x1.8p23f;
    float t = x * 1.44269504088896341f + shifter;
    float n = t - shifter;
    int32_t ni = (int32_t)(cn_vmath_bits(t) - cn_vmath_bits(shifter)); /* in [-150, 128] */
    float r = (x - n * CN_VMATH_LN2_HI) - n * CN_VMATH_LN2_LO;
    /* e^r = 1 + r + r² q(r): q is mpmath.chebyfit of (e^r - 1 - r)/r² on |r| ≤ 1.001 ln2/2,
     * degree 4; its error, ≤ 7.9e-9 absolute, is under 0.15 ulp. */
    float q = 0x1.6d117cp-10f;
    q = q * r + 0x1.120be2p-7f;
    q = q * r + 0x1.555518p-5f;
    q = q * r + 0x1.5554dcp-3f;
    q = q * r + 0.5f;
    float p = 1.0f + (r + (r * r) * q);
    /* p 2^n as p 2^h 2^(n-h): each factor is a normal float for n in [-150, 128] */
    int32_t h = ni / 2;
    float s1 = cn_vmath_float((uint32_t)(h + 127) << 23);
    float s2 = cn_vmath_float((uint32_t)(ni - h + 127) << 23);
    return (p * s1) * s2;
}

/* log(1 + x) for float x, ≤ 1 ulp, exactly x for tiny x; -inf at -1, NaN below -1 and for NaN,
 * +inf at +inf. */
CN_VMATH_INLINE float cn_vlog1pf(float x) {
    float u = 1.0f + x;
    /* two-sum: 1 + x = u + e exactly, whatever the magnitudes */
    float xv = u - 1.0f;
    float ov = u - xv;
    float e = (1.0f - ov) + (x - xv);
    /* u = 2^k m, m in [√½, √2): shift the bits so that the cut falls at m = √½ (0x3f3504f3) */
    uint32_t iu = cn_vmath_bits(u) + (0x3f800000u - 0x3f3504f3u);
    int32_t k = (int32_t)(iu >> 23) - 127;
    float m = cn_vmath_float((iu & 0x007fffffu) + 0x3f3504f3u);
    float f = m - 1.0f; /* exact */
    float s = f / (2.0f + f);
    float z = s * s;
    /* R(z) = 2/3 z + 2/5 z² + 2/7 z³ + 2/9 z⁴ (the atanh series); the rest is < 0.02 ulp */
    float rz = z * (0.666666666666666667f + z * (0.4f + z * (0.285714285714285714f +
                                                                z * 0.222222222222222222f)));
    float hfsq = 0.5f * f * f;
    float kf = (float)k;
    float c = e / u; /* log(u + e) = log(u) + e/u to first order; |e/u| ≤ 2^-24 */
    float y = kf * CN_VMATH_LN2_HI + (f - (hfsq - (s * (hfsq + rz) + (kf * CN_VMATH_LN2_LO + c))));
    /* the edges by selects: ±0 (the sum above turns -0 into +0), +inf, -1, below -1, NaN */
    float edge = cn_vselectf(x == -1.0f, -(float)INFINITY, cn_vselectf(x < -1.0f, (float)NAN, x));
    return cn_vselectf((x == 0.0f) | (x == (float)INFINITY) | !(x > -1.0f), edge, y);
}

/* 1 / (1 + e^-x) for x >= 0 and e^x / (1 + e^x) below, so that e^-|x| never overflows. */
CN_VMATH_INLINE float cn_vsigmoidf(float x) {
    float e = cn_vexpf(-fabsf(x));
    return (x >= 0.0f ? 1.0f : e) / (1.0f + e);
}

/* x · sigmoid(x) (SiLU, swish) */
CN_VMATH_INLINE float cn_vsiluf(float x) { return x * cn_vsigmoidf(x); }

/* log(1 + e^x) with torch's threshold for beta 1: x itself above 20. */
CN_VMATH_INLINE float cn_vsoftplusf(float x) { return cn_vselectf(x > 20.0f, x, cn_vlog1pf(cn_vexpf(x))); }

/* The derivative of softplus at x, read from its value y = softplus(x): sigmoid(x) = 1 - e^-y.
 * Below y = 1/8 the series y (1 - y/2 (1 - y/3 (1 - y/4 (1 - y/5)))) avoids the cancellation. */
CN_VMATH_INLINE float cn_vsoftplus_grad_from_y(float y) {
    float series = y * (1.0f - 0.5f * y * (1.0f - y * (1.0f / 3.0f) * (1.0f - 0.25f * y * (1.0f - 0.2f * y))));
    return cn_vselectf(y < 0.125f, series, 1.0f - cn_vexpf(-y));
}

#endif
