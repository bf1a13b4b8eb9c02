/* rng.h — the engine's one seedable random generator (Philox4x32-10, counter-based).
 *
 * The state is (seed, counter). Each draw of n numbers uses counters [counter, counter + ceil(n/4))
 * and advances the counter, so results depend only on the seed and the sequence of calls — never on
 * the number of threads or the machine. Normals use Box–Muller in double precision.
 */
#ifndef CN_RNG_H
#define CN_RNG_H

#include <stddef.h>
#include <stdint.h>

typedef struct cn_rng_state {
    uint64_t seed;
    uint64_t counter;
} cn_rng_state;

/* Reseeds the generator (counter back to 0). */
void cn_rng_seed(uint64_t seed);
/* Current state, for checkpoints. */
cn_rng_state cn_rng_get_state(void);
/* Restores a state from cn_rng_get_state. */
void cn_rng_set_state(cn_rng_state s);
/* Fills out[0..n) with uniform floats in [lo, hi). */
void cn_rng_uniform(float *out, size_t n, float lo, float hi);
/* Fills out[0..n) with normal floats of the given mean and std. */
void cn_rng_normal(float *out, size_t n, float mean, float std);
/* Fills out[0..n) with integers uniform in [lo, hi) (stored as float). */
void cn_rng_randint(float *out, size_t n, int64_t lo, int64_t hi);
/* One uniform 64-bit integer (advances the counter by one block). */
uint64_t cn_rng_u64(void);
/* Philox4x32-10 block function: 4 random words for (key, counter); exposed for tests. */
void cn_philox4x32(uint64_t key, uint64_t counter, uint32_t out[4]);

#endif
