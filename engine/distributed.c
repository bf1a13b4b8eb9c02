/* distributed.c — MPI collectives with shape checks and a deadline (see distributed.h).
 *
 * Each collective is a non-blocking MPI call (MPI_Iallreduce, MPI_Ibcast, ...) completed by
 * polling MPI_Test: back to back for the first millisecond (the usual case, ranks arriving
 * together), then yielding the core, then sleeping up to 1 ms between polls, so a rank waiting
 * for a slow one does not steal its core when ranks share one. Past the deadline the job aborts.
 */
#include "distributed.h"

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef CUNET_MPI
#include <mpi.h>
#include <sched.h>
#include <time.h>
#endif

#define DEFAULT_TIMEOUT_S 300.0

static double timeout_s = DEFAULT_TIMEOUT_S;

double cn_dist_timeout(void) { return timeout_s; }

void cn_dist_set_timeout(double seconds) {
    if (seconds > 0) timeout_s = seconds;
}

#ifndef CUNET_MPI

/* ---- without MPI: one process, every collective an error naming how to build with MPI -------- */

#define NO_MPI "this cunet was built without MPI; install Open MPI (make deps, or apt-get install " \
               "libopenmpi-dev openmpi-bin) and rebuild (make MPI=1)"

bool cn_dist_available(void) { return false; }
bool cn_dist_initialized(void) { return false; }
int cn_dist_rank(void) { return 0; }
int cn_dist_world_size(void) { return 1; }
int cn_dist_local_size(void) { return 1; }

int cn_dist_init(cn_error *err) {
    cn_error_set(err, "init: %s", NO_MPI);
    return -1;
}

int cn_dist_all_reduce(cn_tensor *t, cn_dist_op op, cn_error *err) {
    (void)t, (void)op;
    cn_error_set(err, "all_reduce: %s", NO_MPI);
    return -1;
}

int cn_dist_broadcast(cn_tensor *t, int root, cn_error *err) {
    (void)t, (void)root;
    cn_error_set(err, "broadcast: %s", NO_MPI);
    return -1;
}

int cn_dist_barrier(cn_error *err) {
    cn_error_set(err, "barrier: %s", NO_MPI);
    return -1;
}

cn_tensor *cn_dist_all_gather(const cn_tensor *t, cn_error *err) {
    (void)t;
    cn_error_set(err, "all_gather: %s", NO_MPI);
    return NULL;
}

int cn_dist_finalize(cn_error *err) {
    (void)err;
    return 0;
}

void cn_dist_abort(const char *msg, int code) {
    (void)code;
    fprintf(stderr, "cunet: %s\n", msg);
    fflush(stderr);
}

#else

/* ---- with MPI ----------------------------------------------------------------------------------- */

/* The job's state: 0 before init, 1 running, 2 finalized (MPI allows no second init). */
static int state;
static int my_rank, world_size = 1;

/* MPI counts are int: bigger buffers go in pieces of this many elements. */
#define MAX_PIECE ((size_t)1 << 30)

/* One record per rank in the shape exchange: ndim, then the dims. */
#define SHAPE_RECORD (1 + CN_MAX_DIMS)

bool cn_dist_available(void) { return true; }
bool cn_dist_initialized(void) { return state == 1; }
int cn_dist_rank(void) { return state == 1 ? my_rank : 0; }
int cn_dist_world_size(void) { return state == 1 ? world_size : 1; }

/* Reads a positive integer from the environment variable name, or 0. */
static int env_int(const char *name) {
    const char *s = getenv(name);
    if (!s || !*s) return 0;
    char *end;
    long v = strtol(s, &end, 10);
    return (*end == '\0' && v > 0 && v < INT_MAX) ? (int)v : 0;
}

int cn_dist_local_size(void) {
    int n = env_int("OMPI_COMM_WORLD_LOCAL_SIZE");
    if (!n) n = env_int("MPI_LOCALNRANKS"); /* MPICH's hydra */
    if (!n) n = env_int("SLURM_NTASKS_PER_NODE");
    return n ? n : cn_dist_world_size();
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int mpi_failed(int rc, const char *fname, cn_error *err) {
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) snprintf(text, sizeof text, "MPI error %d", rc);
    cn_error_set(err, "%s: %s (rank %d of %d)", fname, text, my_rank, world_size);
    return -1;
}

void cn_dist_abort(const char *msg, int code) {
    if (state == 1) fprintf(stderr, "cunet: rank %d of %d: %s\n", my_rank, world_size, msg);
    else fprintf(stderr, "cunet: %s\n", msg);
    fflush(stderr);
    if (state == 1) MPI_Abort(MPI_COMM_WORLD, code);
}

/* Completes req or, past the deadline, aborts the job: a started collective cannot be cancelled. */
static int wait_for(MPI_Request *req, const char *fname, cn_error *err) {
    double start = now(), waited = 0;
    for (long polls = 0;; polls++) {
        int done = 0;
        int rc = MPI_Test(req, &done, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) return mpi_failed(rc, fname, err);
        if (done) return 0;
        if ((polls & 63) == 0) {
            waited = now() - start;
            if (waited > timeout_s) {
                char msg[256];
                snprintf(msg, sizeof msg, "%s waited %.0f s for the other ranks (CUNET_MPI_TIMEOUT = %g s): a rank "
                         "died or hangs, or the ranks run different collectives; aborting the job", fname, waited,
                         timeout_s);
                cn_dist_abort(msg, 3);
                cn_error_set(err, "%s: %s", fname, msg); /* not reached: MPI_Abort does not return */
                return -1;
            }
        }
        if (waited > 0.1) {
            struct timespec pause = {0, waited > 1.0 ? 1000000 : 100000};
            nanosleep(&pause, NULL);
        } else if (waited > 0.001) {
            sched_yield();
        }
    }
}

int cn_dist_init(cn_error *err) {
    if (state == 1) return 0;
    if (state == 2) {
        cn_error_set(err, "init: MPI was finalized already and cannot start again in this process");
        return -1;
    }
    int already = 0;
    MPI_Initialized(&already);
    if (!already) {
        int provided;
        /* OpenMP threads compute, only the main thread calls MPI */
        int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
        if (rc != MPI_SUCCESS) {
            cn_error_set(err, "init: MPI_Init_thread failed (code %d)", rc);
            return -1;
        }
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &my_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world_size);
    const char *t = getenv("CUNET_MPI_TIMEOUT");
    if (t && *t) {
        char *end;
        double v = strtod(t, &end);
        if (*end != '\0' || !(v > 0)) {
            cn_error_set(err, "init: CUNET_MPI_TIMEOUT must be a number of seconds > 0, got '%s'", t);
            return -1; /* MPI stays up: finalize or abort still work */
        }
        timeout_s = v;
    }
    state = 1;
    return 0;
}

static int check_running(const char *fname, cn_error *err) {
    if (state == 1) return 0;
    cn_error_set(err, "%s: %s", fname, state == 2 ? "MPI was finalized already" : "call cn.distributed.init() first");
    return -1;
}

/* Every rank's shape (ndim, dims) into all[world_size * SHAPE_RECORD]; returns a new array. */
static int64_t *exchange_shapes(const cn_tensor *t, const char *fname, cn_error *err) {
    int64_t mine[SHAPE_RECORD] = {0};
    mine[0] = t->ndim;
    for (int d = 0; d < t->ndim; d++) mine[1 + d] = t->shape[d];
    int64_t *all = malloc((size_t)world_size * SHAPE_RECORD * sizeof *all);
    if (!all) {
        cn_error_set(err, "%s: out of memory", fname);
        return NULL;
    }
    MPI_Request req;
    int rc = MPI_Iallgather(mine, SHAPE_RECORD, MPI_INT64_T, all, SHAPE_RECORD, MPI_INT64_T, MPI_COMM_WORLD, &req);
    if (rc != MPI_SUCCESS || wait_for(&req, fname, err) != 0) {
        if (rc != MPI_SUCCESS) mpi_failed(rc, fname, err);
        free(all);
        return NULL;
    }
    return all;
}

/* The first rank whose shape differs from rank 0's (from dim `from` on, ndim always), or -1. */
static int first_mismatch(const int64_t *all, int from) {
    for (int r = 1; r < world_size; r++) {
        const int64_t *a = all, *b = all + (size_t)r * SHAPE_RECORD;
        if (a[0] != b[0]) return r;
        for (int d = from; d < a[0]; d++)
            if (a[1 + d] != b[1 + d]) return r;
    }
    return -1;
}

/* Checks that every rank passed the same shape (from dim `from` on); the same error on every rank. */
static int check_shapes(const cn_tensor *t, int from, const char *fname, int64_t **out_all, cn_error *err) {
    int64_t *all = exchange_shapes(t, fname, err);
    if (!all) return -1;
    int r = first_mismatch(all, from);
    if (r >= 0) {
        char s0[128], sr[128];
        cn_shape_str(s0, sizeof s0, (int)all[0], all + 1);
        cn_shape_str(sr, sizeof sr, (int)all[(size_t)r * SHAPE_RECORD], all + (size_t)r * SHAPE_RECORD + 1);
        cn_error_set(err, "%s: the ranks passed different shapes%s: rank 0 has %s, rank %d has %s", fname,
                     from ? " (only dim 1 may differ)" : "", s0, r, sr);
        free(all);
        return -1;
    }
    if (out_all) *out_all = all;
    else free(all);
    return 0;
}

/* Runs the in-place collective fn on t, through a contiguous copy written back when t is a strided
 * view: refusing one would leave the other ranks waiting in the collective. */
static int in_place(cn_tensor *t, int (*fn)(cn_tensor *, int, cn_error *), int arg, cn_error *err) {
    if (cn_is_contiguous(t)) return fn(t, arg, err);
    cn_tensor *tmp = cn_contiguous(t, err);
    if (!tmp) return -1;
    int rc = fn(tmp, arg, err);
    if (rc == 0) rc = cn_copy_(t, tmp, err);
    cn_release(tmp);
    return rc;
}

/* Starts one non-blocking collective over data[0, len): arg is the operation or the root. */
typedef int (*start_fn)(float *data, int len, int arg, MPI_Request *req);

static int start_all_reduce(float *data, int len, int op, MPI_Request *req) {
    return MPI_Iallreduce(MPI_IN_PLACE, data, len, MPI_FLOAT, op == CN_DIST_MAX ? MPI_MAX : MPI_SUM, MPI_COMM_WORLD,
                          req);
}

static int start_broadcast(float *data, int len, int root, MPI_Request *req) {
    return MPI_Ibcast(data, len, MPI_FLOAT, root, MPI_COMM_WORLD, req);
}

/* Checks the shapes, then runs start over contiguous t in pieces MPI's int counts can hold. */
static int in_pieces(cn_tensor *t, start_fn start, int arg, const char *fname, cn_error *err) {
    if (check_shapes(t, 0, fname, NULL, err)) return -1;
    float *data = cn_data(t);
    size_t n = cn_numel(t);
    for (size_t first = 0; first < n; first += MAX_PIECE) {
        size_t len = n - first < MAX_PIECE ? n - first : MAX_PIECE;
        MPI_Request req;
        int rc = start(data + first, (int)len, arg, &req);
        if (rc != MPI_SUCCESS) return mpi_failed(rc, fname, err);
        if (wait_for(&req, fname, err)) return -1;
    }
    return 0;
}

static int all_reduce_contiguous(cn_tensor *t, int op, cn_error *err) {
    if (in_pieces(t, start_all_reduce, op, "all_reduce", err)) return -1;
    if (op == CN_DIST_MEAN && world_size > 1) {
        float *data = cn_data(t);
        size_t n = cn_numel(t);
        float ranks = (float)world_size;
        for (size_t i = 0; i < n; i++) data[i] /= ranks;
    }
    return 0;
}

int cn_dist_all_reduce(cn_tensor *t, cn_dist_op op, cn_error *err) {
    if (check_running("all_reduce", err)) return -1;
    return in_place(t, all_reduce_contiguous, (int)op, err);
}

static int broadcast_contiguous(cn_tensor *t, int root, cn_error *err) {
    return in_pieces(t, start_broadcast, root, "broadcast", err);
}

int cn_dist_broadcast(cn_tensor *t, int root, cn_error *err) {
    if (check_running("broadcast", err)) return -1;
    if (root < 0 || root >= world_size) { /* every rank passes the same root, or the call is wrong anyway */
        cn_error_set(err, "broadcast: root %d is not a rank (0..%d)", root, world_size - 1);
        return -1;
    }
    return in_place(t, broadcast_contiguous, root, err);
}

int cn_dist_barrier(cn_error *err) {
    static const char fname[] = "barrier";
    if (check_running(fname, err)) return -1;
    MPI_Request req;
    int rc = MPI_Ibarrier(MPI_COMM_WORLD, &req);
    if (rc != MPI_SUCCESS) return mpi_failed(rc, fname, err);
    return wait_for(&req, fname, err);
}

cn_tensor *cn_dist_all_gather(const cn_tensor *t, cn_error *err) {
    static const char fname[] = "all_gather";
    int64_t *all = NULL;
    if (check_running(fname, err)) return NULL;
    if (!cn_is_contiguous(t)) {
        cn_tensor *tmp = cn_clone(t, err);
        if (!tmp) return NULL;
        cn_tensor *r = cn_dist_all_gather(tmp, err);
        cn_release(tmp);
        return r;
    }
    if (check_shapes(t, 1, fname, &all, err)) return NULL;
    int ndim = t->ndim ? t->ndim : 1;
    int64_t shape[CN_MAX_DIMS];
    for (int d = 0; d < t->ndim; d++) shape[d] = t->shape[d];
    size_t row = 1; /* elements per index of dim 0 */
    for (int d = 1; d < t->ndim; d++) row *= (size_t)t->shape[d];
    int *counts = malloc(2 * (size_t)world_size * sizeof *counts);
    cn_tensor *out = NULL;
    if (!counts) {
        cn_error_set(err, "%s: out of memory", fname);
        goto done;
    }
    int *displs = counts + world_size;
    size_t total = 0;
    for (int r = 0; r < world_size; r++) {
        const int64_t *rec = all + (size_t)r * SHAPE_RECORD;
        size_t first = rec[0] ? (size_t)rec[1] : 1;
        size_t count = first * row;
        if (total + count > INT_MAX) {
            cn_error_set(err, "%s: %zu elements in all is more than one MPI call takes (2^31 - 1)", fname,
                         total + count);
            goto done;
        }
        counts[r] = (int)count, displs[r] = (int)total;
        total += count;
    }
    shape[0] = (int64_t)(row ? total / row : 0);
    if (row == 0) { /* nothing to send: the dims besides the first hold a zero */
        shape[0] = 0;
        for (int r = 0; r < world_size; r++) shape[0] += all[(size_t)r * SHAPE_RECORD] ? all[(size_t)r * SHAPE_RECORD + 1] : 1;
    }
    out = cn_empty(ndim, shape, err);
    if (!out) goto done;
    MPI_Request req;
    int rc = MPI_Iallgatherv(cn_data(t), counts[my_rank], MPI_FLOAT, cn_data(out), counts, displs, MPI_FLOAT,
                             MPI_COMM_WORLD, &req);
    if (rc != MPI_SUCCESS || wait_for(&req, fname, err)) {
        if (rc != MPI_SUCCESS) mpi_failed(rc, fname, err);
        cn_release(out);
        out = NULL;
    }
done:
    free(counts);
    free(all);
    return out;
}

int cn_dist_finalize(cn_error *err) {
    if (state != 1) return 0;
    state = 2;
    int rc = MPI_Finalize();
    if (rc != MPI_SUCCESS) {
        cn_error_set(err, "finalize: MPI_Finalize failed (code %d)", rc);
        return -1;
    }
    return 0;
}

#endif
