/* alloc.h — tensor storage allocation with live/peak byte accounting.
 *
 * All tensor storage goes through cn_alloc_floats/cn_free_floats, 64-byte aligned. The counters
 * (the only global state besides the RNG) are atomic, so kernels may allocate from any thread.
 */
#ifndef CN_ALLOC_H
#define CN_ALLOC_H

#include <stddef.h>

/* Allocates n floats, 64-byte aligned; NULL when out of memory or when n * 4 overflows. */
float *cn_alloc_floats(size_t n);
/* Frees a block of n floats from cn_alloc_floats (NULL-safe). */
void cn_free_floats(float *p, size_t n);
/* Bytes of tensor storage alive now. */
size_t cn_memory_live(void);
/* Highest cn_memory_live() since start or the last cn_memory_reset_peak(). */
size_t cn_memory_peak(void);
/* Sets the peak to the current live bytes. */
void cn_memory_reset_peak(void);
/* Total bytes ever allocated (monotonic), so callers can pace a garbage collector. */
size_t cn_memory_allocated_total(void);

#endif
