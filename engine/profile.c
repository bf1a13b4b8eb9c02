/* profile.c — the per-op profiler (see profile.h).
 *
 * Rows are found by (name pointer, phase) in a small open-addressing table; names are static
 * strings, so pointer equality is identity. FLOPs go into one atomic counter: a frame's FLOPs are
 * the counter's growth while it was open, less its children's.
 */
#include "profile.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_DEPTH 256
#define TABLE_SIZE 1024 /* power of two, > the number of distinct rows */

typedef struct frame {
    int row;
    double start, child_s;
    int64_t flops_start, child_flops;
} frame;

static atomic_bool enabled;
static atomic_int_fast64_t flops_counter;
static frame stack[MAX_DEPTH];
static int depth, dropped; /* dropped: frames past MAX_DEPTH, not recorded */
static cn_profile_entry *rows;
static size_t n_rows, cap_rows;
static int slots[TABLE_SIZE]; /* row index + 1, 0 = empty */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

bool cn_profile_set_enabled(bool on) {
    bool was = enabled;
    if (!on) depth = dropped = 0;
    enabled = on;
    return was;
}

bool cn_profile_enabled(void) { return enabled; }

void cn_profile_reset(void) {
    free(rows);
    rows = NULL;
    n_rows = cap_rows = 0;
    depth = dropped = 0;
    memset(slots, 0, sizeof slots);
}

/* The row of (name, phase), created on first use; -1 when out of memory or the table is full. */
static int find_row(const char *name, cn_profile_phase phase) {
    size_t h = ((uintptr_t)name >> 3) * 2654435761u + (size_t)phase;
    for (size_t probe = 0; probe < TABLE_SIZE; probe++) {
        size_t s = (h + probe) & (TABLE_SIZE - 1);
        int r = slots[s] - 1;
        if (r >= 0 && rows[r].name == name && rows[r].phase == phase) return r;
        if (r >= 0) continue;
        if (n_rows >= TABLE_SIZE / 2) return -1;
        if (n_rows == cap_rows) {
            size_t cap = cap_rows ? 2 * cap_rows : 64;
            cn_profile_entry *grown = realloc(rows, cap * sizeof *grown);
            if (!grown) return -1;
            rows = grown;
            cap_rows = cap;
        }
        rows[n_rows] = (cn_profile_entry){.name = name, .phase = phase};
        slots[s] = (int)++n_rows;
        return (int)n_rows - 1;
    }
    return -1;
}

void cn_profile_push(const char *name, cn_profile_phase phase) {
    if (!enabled) return;
    if (depth == MAX_DEPTH) {
        dropped++;
        return;
    }
    frame *f = &stack[depth++];
    f->row = find_row(name, phase);
    f->child_s = 0;
    f->child_flops = 0;
    f->flops_start = atomic_load(&flops_counter);
    f->start = now();
}

void cn_profile_pop(void) {
    if (!enabled) return;
    if (dropped) {
        dropped--;
        return;
    }
    if (depth == 0) return;
    double t = now();
    frame *f = &stack[--depth];
    double total = t - f->start;
    int64_t flops = atomic_load(&flops_counter) - f->flops_start;
    if (f->row >= 0) {
        cn_profile_entry *e = &rows[f->row];
        e->calls++;
        e->total_s += total;
        e->self_s += total - f->child_s;
        e->flops += (double)(flops - f->child_flops);
    }
    if (depth > 0) {
        stack[depth - 1].child_s += total;
        stack[depth - 1].child_flops += flops;
    }
}

void cn_profile_unwind(int keep) {
    while (enabled && depth + dropped > keep && depth + dropped > 0) cn_profile_pop();
}

int cn_profile_depth(void) { return depth + dropped; }

void cn_profile_add_flops(double flops) {
    if (atomic_load_explicit(&enabled, memory_order_relaxed))
        atomic_fetch_add(&flops_counter, (int_fast64_t)flops);
}

const cn_profile_entry *cn_profile_entries(size_t *count) {
    *count = n_rows;
    return rows;
}
