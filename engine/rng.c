/* rng.c — Philox4x32-10 (Salmon et al., SC'11) with Box–Muller normals (see rng.h).
 *
 * Block i of a draw is philox(key = seed, counter = state.counter + i): independent of how the
 * blocks are split across threads, so parallel fills give the same numbers as serial ones.
 */
#include "rng.h"

#include <math.h>

static cn_rng_state state = {.seed = 0x853c49e6748fea9bULL, .counter = 0};

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

/* The generator itself, inlined into the fill loops so that GCC vectorises them over blocks (the
 * 32×32→64-bit products map to vpmuludq): 3-4x faster uniform fills than a call per block. */
static inline __attribute__((always_inline)) void philox(uint64_t key, uint64_t counter, uint32_t out[4]) {
    uint32_t c0 = (uint32_t)counter, c1 = (uint32_t)(counter >> 32), c2 = 0, c3 = 0;
    uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
    for (int round = 0; round < 10; round++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0, p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n1 = (uint32_t)p1;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1, n3 = (uint32_t)p0;
        c0 = n0; c1 = n1; c2 = n2; c3 = n3;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

void cn_philox4x32(uint64_t key, uint64_t counter, uint32_t out[4]) { philox(key, counter, out); }

void cn_rng_seed(uint64_t seed) {
    state.seed = seed;
    state.counter = 0;
}

cn_rng_state cn_rng_get_state(void) { return state; }
void cn_rng_set_state(cn_rng_state s) { state = s; }

/* Uniform in (0, 1] from 32 random bits, in double: never 0, so log() is safe. */
static inline double unit_open0(uint32_t x) { return ((double)x + 1.0) * (1.0 / 4294967296.0); }
/* Uniform in [0, 1) from 32 bits. */
static inline double unit_closed0(uint32_t x) { return (double)x * (1.0 / 4294967296.0); }

/* Reserves the counter blocks for a draw of n values, 4 per block. */
static uint64_t reserve_blocks(size_t n) {
    uint64_t first = state.counter;
    state.counter += (n + 3) / 4;
    return first;
}

/* Philox on 8 consecutive counters at once, each 32-bit word in a 64-bit lane, so that the
 * 32×32→64-bit products are one vector multiply per round (vpmuludq): out[j][lane] is word j of
 * block counter + lane, as philox() gives it. */
typedef uint64_t v8u __attribute__((vector_size(64)));

static inline __attribute__((always_inline)) void philox8(uint64_t key, uint64_t counter, v8u out[4]) {
    const v8u mask = (v8u){0} + 0xFFFFFFFFu;
    v8u ctr = (v8u){0, 1, 2, 3, 4, 5, 6, 7} + counter;
    v8u c0 = ctr & mask, c1 = ctr >> 32, c2 = (v8u){0}, c3 = (v8u){0};
    uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
    for (int round = 0; round < 10; round++) {
        v8u p0 = c0 * PHILOX_M0, p1 = c2 * PHILOX_M1;
        v8u n0 = ((p1 >> 32) ^ c1 ^ k0) & mask, n1 = p1 & mask;
        v8u n2 = ((p0 >> 32) ^ c3 ^ k1) & mask, n3 = p0 & mask;
        c0 = n0, c1 = n1, c2 = n2, c3 = n3;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
}

void cn_rng_uniform(float *out, size_t n, float lo, float hi) {
    uint64_t first = reserve_blocks(n), key = state.seed;
    size_t nblocks = (n + 3) / 4;
    double span = (double)hi - (double)lo;
    size_t groups = n / 32, full = n / 4; /* groups of 8 blocks, then single blocks */
#pragma omp parallel for schedule(static) if (nblocks > 16384)
    for (size_t gr = 0; gr < groups; gr++) {
        v8u r[4];
        philox8(key, first + 8 * gr, r);
        float *o = out + 32 * gr;
        for (int lane = 0; lane < 8; lane++)
            for (int j = 0; j < 4; j++) {
                float v = (float)(lo + span * unit_closed0((uint32_t)r[j][lane]));
                o[4 * lane + j] = v < hi ? v : lo; /* rounding to float can reach hi: keep [lo, hi) */
            }
    }
    for (size_t b = 8 * groups; b < full; b++) {
        uint32_t r[4];
        philox(key, first + b, r);
        for (size_t j = 0; j < 4; j++) {
            float v = (float)(lo + span * unit_closed0(r[j]));
            out[4 * b + j] = v < hi ? v : lo;
        }
    }
    if (full < nblocks) { /* the last, partial block */
        uint32_t r[4];
        philox(key, first + full, r);
        for (size_t j = 0; 4 * full + j < n; j++) {
            float v = (float)(lo + span * unit_closed0(r[j]));
            out[4 * full + j] = v < hi ? v : lo;
        }
    }
}

void cn_rng_normal(float *out, size_t n, float mean, float std) {
    uint64_t first = reserve_blocks(n), key = state.seed;
    size_t nblocks = (n + 3) / 4;
#pragma omp parallel for schedule(static) if (nblocks > 16384)
    for (size_t b = 0; b < nblocks; b++) {
        uint32_t r[4];
        philox(key, first + b, r);
        double z[4];
        for (int pair = 0; pair < 2; pair++) {
            double radius = sqrt(-2.0 * log(unit_open0(r[2 * pair])));
            double angle = 2.0 * M_PI * unit_closed0(r[2 * pair + 1]);
            z[2 * pair] = radius * cos(angle);
            z[2 * pair + 1] = radius * sin(angle);
        }
        for (size_t j = 0; j < 4 && 4 * b + j < n; j++) out[4 * b + j] = (float)(mean + std * z[j]);
    }
}

uint64_t cn_rng_u64(void) {
    uint32_t r[4];
    cn_philox4x32(state.seed, reserve_blocks(4), r);
    return ((uint64_t)r[0] << 32) | r[1];
}

void cn_rng_randint(float *out, size_t n, int64_t lo, int64_t hi) {
    uint64_t first = reserve_blocks(2 * n), key = state.seed;
    uint64_t range = (uint64_t)(hi - lo);
    /* 64 random bits per value (two words): modulo bias below 2^-32 for any range that fits a float. */
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        uint32_t r[4];
        cn_philox4x32(key, first + i / 2, r);
        int half = (int)(i % 2) * 2;
        uint64_t bits = ((uint64_t)r[half] << 32) | r[half + 1];
        out[i] = (float)(lo + (int64_t)(bits % range));
    }
}
