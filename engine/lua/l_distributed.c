/* l_distributed.c — cn.distributed: MPI collectives over tensors (engine/distributed.h).
 *
 *   local dist = cn.distributed
 *   dist.init()                          -- under mpirun/srun; world_size() = 1 without one
 *   dist.all_reduce(grad, "mean")        -- in place on every rank
 *   dist.broadcast(w, 0); dist.barrier(); local all = dist.all_gather(x)
 *
 * init() leaves a guard in the registry whose __gc finalizes MPI when the Lua state closes, so a
 * script that ends without finalize() still ends the job cleanly. lua/cunet/distributed.lua adds
 * the training helpers (gradient buckets, sharding, abort on error). docs/distributed.md.
 */
#include <limits.h>
#include <stdlib.h>

#include "binding.h"
#include "distributed.h"

#define GUARD_MT "cunet.distributed.guard"

static int raise_error(lua_State *L, const cn_error *err) {
    return luaL_error(L, "cn.distributed.%s", err->msg);
}

static int guard_gc(lua_State *L) {
    (void)L;
    cn_error err;
    cn_dist_finalize(&err); /* nothing to report to at close */
    return 0;
}

/* dist.available() -> whether this build has MPI */
static int l_available(lua_State *L) {
    lua_pushboolean(L, cn_dist_available());
    return 1;
}

/* dist.init() -> rank, world_size. Starts MPI once; later calls return the same. */
static int l_init(lua_State *L) {
    cn_error err;
    bool fresh = !cn_dist_initialized();
    if (cn_dist_init(&err)) return raise_error(L, &err);
    if (fresh) {
        lua_newuserdatauv(L, 0, 0);
        if (luaL_newmetatable(L, GUARD_MT)) {
            lua_pushcfunction(L, guard_gc);
            lua_setfield(L, -2, "__gc");
        }
        lua_setmetatable(L, -2);
        lua_setfield(L, LUA_REGISTRYINDEX, GUARD_MT);
    }
    lua_pushinteger(L, cn_dist_rank());
    lua_pushinteger(L, cn_dist_world_size());
    return 2;
}

static int l_initialized(lua_State *L) {
    lua_pushboolean(L, cn_dist_initialized());
    return 1;
}

/* dist.rank() -> 0-based rank (0 when not initialized) */
static int l_rank(lua_State *L) {
    lua_pushinteger(L, cn_dist_rank());
    return 1;
}

/* dist.world_size() -> number of ranks (1 when not initialized) */
static int l_world_size(lua_State *L) {
    lua_pushinteger(L, cn_dist_world_size());
    return 1;
}

/* dist.local_size() -> ranks on this node */
static int l_local_size(lua_State *L) {
    lua_pushinteger(L, cn_dist_local_size());
    return 1;
}

/* dist.timeout([seconds]) -> the collectives' deadline in seconds; sets it when given */
static int l_timeout(lua_State *L) {
    if (!lua_isnoneornil(L, 1)) {
        lua_Number s = luaL_checknumber(L, 1);
        luaL_argcheck(L, s > 0, 1, "a number of seconds > 0 expected");
        cn_dist_set_timeout((double)s);
    }
    lua_pushnumber(L, cn_dist_timeout());
    return 1;
}

/* dist.all_reduce(t [, "sum"|"mean"|"max"]) -> t, reduced in place over all ranks (default sum) */
static int l_all_reduce(lua_State *L) {
    static const char *const ops[] = {"sum", "mean", "max", NULL};
    static const cn_dist_op codes[] = {CN_DIST_SUM, CN_DIST_MEAN, CN_DIST_MAX};
    cn_tensor *t = cnl_checktensor(L, 1);
    int op = luaL_checkoption(L, 2, "sum", ops);
    cnl_check_inplace(L, t, "all_reduce");
    cn_error err;
    if (cn_dist_all_reduce(t, codes[op], &err)) return raise_error(L, &err);
    lua_settop(L, 1);
    return 1;
}

/* dist.broadcast(t [, root = 0]) -> t, holding root's values on every rank */
static int l_broadcast(lua_State *L) {
    cn_tensor *t = cnl_checktensor(L, 1);
    lua_Integer root = luaL_optinteger(L, 2, 0);
    cnl_check_inplace(L, t, "broadcast");
    cn_error err;
    if (cn_dist_broadcast(t, root < 0 || root > INT_MAX ? -1 : (int)root, &err)) return raise_error(L, &err);
    lua_settop(L, 1);
    return 1;
}

/* dist.barrier() */
static int l_barrier(lua_State *L) {
    cn_error err;
    if (cn_dist_barrier(&err)) return raise_error(L, &err);
    return 0;
}

/* dist.all_gather(t) -> a new tensor: every rank's t along dim 1, in rank order */
static int l_all_gather(lua_State *L) {
    cn_tensor *t = cnl_checktensor(L, 1);
    cn_tensor **box = cnl_newbox(L);
    cn_error err;
    cn_tensor *r = cn_dist_all_gather(t, &err);
    if (!r) {
        err.msg[CN_ERROR_LEN - 1] = '\0';
        return raise_error(L, &err);
    }
    *box = r;
    return 1;
}

/* dist.finalize(): ends MPI; collectives fail afterwards */
static int l_finalize(lua_State *L) {
    cn_error err;
    if (cn_dist_finalize(&err)) return raise_error(L, &err);
    return 0;
}

/* dist.abort(msg [, code = 1]): prints msg with the rank and ends every rank of the job; without
 * a running MPI, prints msg and exits the process with code */
static int l_abort(lua_State *L) {
    const char *msg = luaL_checkstring(L, 1);
    lua_Integer code = luaL_optinteger(L, 2, 1);
    cn_dist_abort(msg, (int)code);
    exit((int)code); /* MPI not running: this process is the job */
}

void cnl_open_distributed(lua_State *L) {
    static const luaL_Reg functions[] = {
        {"available", l_available}, {"init", l_init}, {"initialized", l_initialized}, {"rank", l_rank},
        {"world_size", l_world_size}, {"local_size", l_local_size}, {"timeout", l_timeout},
        {"all_reduce", l_all_reduce}, {"broadcast", l_broadcast}, {"barrier", l_barrier},
        {"all_gather", l_all_gather}, {"finalize", l_finalize}, {"abort", l_abort}, {NULL, NULL},
    };
    lua_newtable(L);
    cnl_register(L, NULL, functions);
    lua_setfield(L, -2, "distributed");
}
