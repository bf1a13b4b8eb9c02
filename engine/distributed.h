/* distributed.h — collectives between the processes of one job, over MPI (Open MPI, MPICH).
 *
 * Started by `mpirun -np N cunet script.lua` or SLURM's `srun`, every process calls cn_dist_init,
 * then the same collectives in the same order; cn_dist_finalize ends it. Built with MPI only when
 * the Makefile finds it (CUNET_MPI defined); otherwise cn_dist_available() is false, cn_dist_init
 * fails with a message saying how to build with MPI, and rank/world_size are 0/1.
 *
 * Every collective first exchanges the tensors' shapes (one small all-gather), so ranks passing
 * different shapes all get the same error naming both, instead of reading garbage or hanging.
 * Collectives are non-blocking MPI calls polled against a deadline (cn_dist_timeout, from
 * CUNET_MPI_TIMEOUT, default 300 s): a rank that died or hangs makes the others print which
 * collective waited and abort the whole job (MPI_Abort) — MPI cannot cancel a started collective,
 * so after a timeout no rank could go on. That abort is the one place the engine ends the process.
 * Reductions are over float32 in place (a strided view goes through a contiguous copy written back).
 * Docs: docs/distributed.md.
 */
#ifndef CN_DISTRIBUTED_H
#define CN_DISTRIBUTED_H

#include <stdbool.h>

#include "error.h"
#include "tensor.h"

typedef enum { CN_DIST_SUM, CN_DIST_MEAN, CN_DIST_MAX } cn_dist_op;

/* True when this build has MPI (the Makefile found mpicc or pkg-config ompi). */
bool cn_dist_available(void);
/* Starts MPI (once; a second call is a no-op) and reads CUNET_MPI_TIMEOUT. Returns 0, or -1 with a
 * message (no MPI in this build, MPI_Init failed, or MPI already finalized). */
int cn_dist_init(cn_error *err);
/* True between cn_dist_init and cn_dist_finalize. */
bool cn_dist_initialized(void);
/* This process's rank in 0..world_size-1 (0 when not initialized). */
int cn_dist_rank(void);
/* The number of processes (1 when not initialized). */
int cn_dist_world_size(void);
/* Ranks on this node (OMPI_COMM_WORLD_LOCAL_SIZE / SLURM_NTASKS_PER_NODE; world size otherwise). */
int cn_dist_local_size(void);
/* Seconds a collective waits for the other ranks before aborting the job; set_timeout takes > 0. */
double cn_dist_timeout(void);
void cn_dist_set_timeout(double seconds);

/* Reduces t over all ranks in place: every rank ends with the sum, the mean or the max. */
int cn_dist_all_reduce(cn_tensor *t, cn_dist_op op, cn_error *err);
/* Copies root's t into t on every rank (same shapes required). */
int cn_dist_broadcast(cn_tensor *t, int root, cn_error *err);
/* Waits until every rank has reached it. */
int cn_dist_barrier(cn_error *err);
/* The tensors of all ranks concatenated along dim 0 in rank order; their shapes may differ in dim
 * 0 only (0-d tensors count as [1]). Returns a new reference, or NULL with a message. */
cn_tensor *cn_dist_all_gather(const cn_tensor *t, cn_error *err);
/* Ends MPI (a no-op when not initialized or already finalized). Returns 0 or -1 with a message. */
int cn_dist_finalize(cn_error *err);
/* Prints "cunet: rank R of N: msg" to stderr and aborts every rank of the job with code; returns
 * only when MPI is not running (then the caller should exit itself). */
void cn_dist_abort(const char *msg, int code);

#endif
