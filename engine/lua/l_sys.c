/* l_sys.c — small system helpers the Lua library needs: wall-clock time, terminal detection,
 * thread counts. */
#include <omp.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "binding.h"

/* OpenBLAS's own thread count (declared here: cblas.h does not in every version) */
int openblas_get_num_threads(void);

/* cn.time() -> seconds from a monotonic clock (wall time, unlike os.clock's CPU time) */
static int l_time(lua_State *L) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec * 1e-9);
    return 1;
}

/* cn.isatty([file]) -> whether the file (default io.stdout) is a terminal */
static int l_isatty(lua_State *L) {
    FILE *f = stdout;
    if (!lua_isnoneornil(L, 1)) {
        luaL_Stream *s = luaL_checkudata(L, 1, LUA_FILEHANDLE);
        f = s->f;
    }
    lua_pushboolean(L, f && isatty(fileno(f)));
    return 1;
}

/* cn.set_num_threads(n): threads for every parallel loop and product (OpenMP; OpenBLAS itself
 * always runs on its caller's thread: cn_gemm in ops_matmul.c spreads big products) */
static int l_set_num_threads(lua_State *L) {
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 1 && n <= 1024, 1, "thread count must be in 1..1024");
    omp_set_num_threads((int)n);
    return 0;
}

/* cn.num_threads() -> OpenMP threads, OpenBLAS threads (1: see cn_blas_single_thread) */
static int l_num_threads(lua_State *L) {
    lua_pushinteger(L, omp_get_max_threads());
    lua_pushinteger(L, openblas_get_num_threads());
    return 2;
}

void cnl_open_sys(lua_State *L) {
    static const luaL_Reg functions[] = {
        {"time", l_time}, {"isatty", l_isatty}, {"set_num_threads", l_set_num_threads},
        {"num_threads", l_num_threads}, {NULL, NULL},
    };
    cn_blas_single_thread();
    cnl_register(L, NULL, functions);
}
