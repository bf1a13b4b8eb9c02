/* profile.h — a per-op profiler: calls, total and self time, GEMM FLOPs, per op and phase.
 *
 * The binding opens a frame around every op it runs (cn_profile_push/pop, name = the Lua name)
 * and autograd around every node's backward (phase CN_PROFILE_BACKWARD, name = the op's). A
 * frame's total time includes the frames opened inside it (an ODE solve's right-hand side), its
 * self time does not. cn_gemm adds each product's 2·m·n·k FLOPs to the innermost open frame, and
 * the direct convolution its 2·N·O·C·kH·kW·Ho·Wo, so an op's FLOPs are its matrix products
 * (convolutions, linear layers, attention, matmul).
 *
 * Off by default; when off, push/pop/add_flops return at once. Frames are opened and closed by
 * the thread that runs the Lua state; cn_profile_add_flops may be called from any thread.
 */
#ifndef CN_PROFILE_H
#define CN_PROFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { CN_PROFILE_FORWARD = 0, CN_PROFILE_BACKWARD = 1 } cn_profile_phase;

/* One row of the profile: an op name in one phase. */
typedef struct cn_profile_entry {
    const char *name;        /* static string (a binding name or an op table name) */
    cn_profile_phase phase;
    int64_t calls;
    double total_s, self_s;  /* wall seconds, with and without nested frames */
    double flops;            /* GEMM FLOPs counted in this op's own frames */
} cn_profile_entry;

/* Switches recording on or off; returns the previous state. Frames still open when it is
 * switched off are dropped. */
bool cn_profile_set_enabled(bool on);
/* Whether the profiler records now. */
bool cn_profile_enabled(void);
/* Drops every recorded row and open frame. */
void cn_profile_reset(void);
/* Opens a frame for op `name` (a string that outlives the profile) in phase. No-op when off. */
void cn_profile_push(const char *name, cn_profile_phase phase);
/* Closes the innermost frame and adds it to its row. No-op when off or when none is open. */
void cn_profile_pop(void);
/* Closes frames until `depth` remain open (after a Lua error unwound past them). */
void cn_profile_unwind(int depth);
/* Frames open now. */
int cn_profile_depth(void);
/* Adds flops to the innermost open frame (any thread). No-op when off. */
void cn_profile_add_flops(double flops);
/* Rows recorded so far, in order of first use; *count receives their number. Valid until the
 * next reset or push. */
const cn_profile_entry *cn_profile_entries(size_t *count);

#endif
