/* parallel.h — the one size below which an engine loop stays on one thread.
 *
 * Every OpenMP loop over elements (elementwise ops, reductions, norms, losses, pooling, the
 * optimizer updates...) parallelises only past PARALLEL_MIN elements (or element operations):
 * below it, waking the team costs more than the loop. One value for the whole engine, so a
 * re-measured threshold is changed here once. Loops with another measured size (a whole image
 * in conv_direct.c, long rows in ops_reduce.c, the metrics' kernels) keep their own.
 */
#ifndef CN_PARALLEL_H
#define CN_PARALLEL_H

#define PARALLEL_MIN 32768

#endif
