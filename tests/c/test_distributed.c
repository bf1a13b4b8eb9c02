/* test_distributed.c — engine/distributed.c before MPI starts (no launcher in `make test`): one
 * process of one rank, every collective an error naming what to do, the timeout setting. The
 * collectives themselves run on 2 ranks under mpirun in tests/lua/test_distributed.lua. */
#include <string.h>

#include "ctest.h"
#include "distributed.h"

static void test_one_process(void) {
    CHECK(!cn_dist_initialized());
    CHECK(cn_dist_rank() == 0);
    CHECK(cn_dist_world_size() == 1);
}

static void test_collectives_need_init(void) {
    const char *want = cn_dist_available() ? "call cn.distributed.init() first" : "built without MPI";
    int64_t shape[1] = {3};
    cn_error err;
    cn_tensor *t = cn_zeros(1, shape, &err);
    CHECK(t != NULL);
    err.msg[0] = '\0';
    CHECK(cn_dist_all_reduce(t, CN_DIST_SUM, &err) == -1);
    CHECK(strstr(err.msg, "all_reduce: ") == err.msg && strstr(err.msg, want) != NULL);
    err.msg[0] = '\0';
    CHECK(cn_dist_broadcast(t, 0, &err) == -1);
    CHECK(strstr(err.msg, want) != NULL);
    err.msg[0] = '\0';
    CHECK(cn_dist_all_gather(t, &err) == NULL);
    CHECK(strstr(err.msg, want) != NULL);
    CHECK(cn_dist_barrier(&err) == -1);
    CHECK(cn_dist_finalize(&err) == 0); /* nothing to end */
    cn_release(t);
}

static void test_init_without_mpi(void) {
    if (cn_dist_available()) return; /* starting MPI here would make this process a singleton job */
    cn_error err;
    CHECK(cn_dist_init(&err) == -1);
    CHECK(strstr(err.msg, "built without MPI") != NULL && strstr(err.msg, "make MPI=1") != NULL);
}

static void test_timeout(void) {
    double before = cn_dist_timeout();
    CHECK(before > 0);
    cn_dist_set_timeout(2.5);
    CHECK(cn_dist_timeout() == 2.5);
    cn_dist_set_timeout(-1); /* ignored */
    CHECK(cn_dist_timeout() == 2.5);
    cn_dist_set_timeout(before);
}

int main(void) {
    RUN(test_one_process);
    RUN(test_collectives_need_init);
    RUN(test_init_without_mpi);
    RUN(test_timeout);
    return CTEST_SUMMARY("distributed");
}
