/* alloc.c — aligned tensor storage with live/peak accounting (see alloc.h).
 *
 * Big buffers come from the heap, not fresh mmaps: glibc is told (once, lazily) to keep freed
 * memory, so a training loop that frees and re-allocates the same sizes does not page-fault every
 * step — the cost that DESIGN.md measured in PyTorch.
 */
#include "alloc.h"

#include <malloc.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "tensor.h" /* cn_size_mul */

static atomic_size_t live_bytes, peak_bytes, total_bytes;
static atomic_int malloc_tuned;

static void tune_malloc(void) {
    if (atomic_exchange(&malloc_tuned, 1)) return;
    mallopt(M_MMAP_THRESHOLD, 1 << 30);  /* serve big blocks from the heap ... */
    mallopt(M_TRIM_THRESHOLD, 1 << 30);  /* ... and keep them there when freed */
}

float *cn_alloc_floats(size_t n) {
    if (!atomic_load_explicit(&malloc_tuned, memory_order_relaxed)) tune_malloc();
    size_t bytes;
    /* n * 4, rounded up to the alignment, must not wrap into a small block */
    if (cn_size_mul(n ? n : 1, sizeof(float), &bytes) || bytes > SIZE_MAX - 63) return NULL;
    bytes = (bytes + 63) & ~(size_t)63;
    float *p = aligned_alloc(64, bytes);
    if (!p) return NULL;
    size_t accounted = n * sizeof(float);
    size_t now = atomic_fetch_add(&live_bytes, accounted) + accounted;
    atomic_fetch_add(&total_bytes, accounted);
    size_t peak = atomic_load(&peak_bytes);
    while (now > peak && !atomic_compare_exchange_weak(&peak_bytes, &peak, now)) {}
    return p;
}

void cn_free_floats(float *p, size_t n) {
    if (!p) return;
    free(p);
    atomic_fetch_sub(&live_bytes, n * sizeof(float));
}

size_t cn_memory_live(void) { return atomic_load(&live_bytes); }
size_t cn_memory_peak(void) { return atomic_load(&peak_bytes); }
void cn_memory_reset_peak(void) { atomic_store(&peak_bytes, atomic_load(&live_bytes)); }
size_t cn_memory_allocated_total(void) { return atomic_load(&total_bytes); }
