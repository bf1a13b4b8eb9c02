/* l_core.c — the binding's shared helpers (binding.h) and the module opener for "cunet.core". */
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "autograd.h"
#include "binding.h"

/* ---- boxes -------------------------------------------------------------------------------- */

cn_tensor **cnl_newbox(lua_State *L) {
    cn_tensor **box = lua_newuserdatauv(L, sizeof *box, 0);
    *box = NULL;
    luaL_setmetatable(L, CNL_TENSOR_MT);
    return box;
}

/* The collector cannot see the storage behind a box (4 bytes for a tensor of megabytes), so the
 * binding counts the bytes it hands out and runs a full collection once they exceed the largest of
 * GC_EVERY_BYTES (cn.set_gc_bytes), a quarter of the storage alive after the last full collection,
 * and the Lua heap. The first keeps garbage tensors few enough for their memory to be reused while
 * still in cache (docs/benchmarks.md: sampling forwards 10-25% faster than when every allocation
 * pushed the incremental collector, which then traversed the Lua heap about once per big tensor);
 * the second bounds the collections per byte for big live sets, the third the marking work per
 * byte for big Lua heaps (Lua's own pace). Garbage tensors thus never hold more than
 * max(32 MB, live / 4, Lua heap), whatever the program (the adjoint ODE's flat memory needs it). */
#define GC_EVERY_BYTES ((size_t)32 << 20)
#define GC_LIVE_DIVISOR 4

static size_t gc_every_bytes = GC_EVERY_BYTES, allocated_since_full_gc, gc_threshold = GC_EVERY_BYTES;

size_t cnl_set_gc_bytes(size_t bytes) {
    size_t previous = gc_every_bytes;
    gc_every_bytes = gc_threshold = bytes;
    return previous;
}

void cnl_pace_gc(lua_State *L, size_t bytes) {
    allocated_since_full_gc += bytes;
    if (allocated_since_full_gc <= gc_threshold) return;
    lua_gc(L, LUA_GCCOLLECT);
    allocated_since_full_gc = 0;
    size_t by_live = cn_memory_live() / GC_LIVE_DIVISOR;
    size_t by_heap = (size_t)lua_gc(L, LUA_GCCOUNT) * 1024;
    gc_threshold = gc_every_bytes;
    if (by_live > gc_threshold) gc_threshold = by_live;
    if (by_heap > gc_threshold) gc_threshold = by_heap;
}

/* Paces the collector for a fresh tensor (a view brings no new storage). */
static void pace_gc(lua_State *L, const cn_tensor *t) {
    if (t->storage->refcount == 1) cnl_pace_gc(L, cn_numel(t) * sizeof(float));
}

void cnl_pushtensor(lua_State *L, cn_tensor *t) {
    cn_tensor **box = lua_newuserdatauv(L, sizeof *box, 0);
    *box = t;
    luaL_setmetatable(L, CNL_TENSOR_MT);
    pace_gc(L, t);
}

cn_tensor *cnl_totensor(lua_State *L, int idx) {
    cn_tensor **box = luaL_testudata(L, idx, CNL_TENSOR_MT);
    return box ? *box : NULL;
}

cn_tensor *cnl_checktensor(lua_State *L, int idx) {
    cn_tensor **box = luaL_testudata(L, idx, CNL_TENSOR_MT);
    if (!box) luaL_typeerror(L, idx, "tensor");
    if (!*box) luaL_argerror(L, idx, "tensor was freed");
    return *box;
}

int cnl_raise(lua_State *L, const cn_error *err) {
    return luaL_error(L, "%s", err->msg);
}

int cnl_result(lua_State *L, cn_tensor **box, cn_tensor *r, const cn_error *err) {
    if (!r) return cnl_raise(L, err);
    *box = r;
    pace_gc(L, r);
    return 1;
}

/* ---- arguments ---------------------------------------------------------------------------- */

int cnl_todim(lua_State *L, lua_Integer d, int ndim, int arg) {
    if (d >= 1 && d <= ndim) return (int)d - 1;
    if (d < 0 && d >= -ndim) return ndim + (int)d;
    if (d == 0)
        return luaL_argerror(L, arg, lua_pushfstring(L, "dim 0 is invalid: dims are 1-based (1..%d, or -1 for the last)", ndim));
    return luaL_argerror(L, arg, lua_pushfstring(L, "dim %d out of range for a %d-D tensor", (int)d, ndim));
}

int cnl_checkdim(lua_State *L, int arg, int ndim) {
    return cnl_todim(L, luaL_checkinteger(L, arg), ndim, arg);
}

int64_t cnl_checkpos(lua_State *L, int arg, int64_t size, const char *what) {
    lua_Integer i = luaL_checkinteger(L, arg);
    int64_t i0 = i > 0 ? i - 1 : i + size;
    if (i == 0 || i0 < 0 || i0 >= size)
        luaL_argerror(L, arg, lua_pushfstring(L, "%s %d out of range for a dim of size %d (1-based)", what,
                                              (int)i, (int)size));
    return i0;
}

int cnl_checkdims(lua_State *L, int arg, int ndim, int *dims) {
    int n = 0;
    if (lua_isnoneornil(L, arg)) return 0;
    if (lua_isinteger(L, arg) || lua_type(L, arg) == LUA_TNUMBER) {
        dims[0] = cnl_checkdim(L, arg, ndim);
        return 1;
    }
    luaL_argexpected(L, lua_istable(L, arg), arg, "dim or table of dims");
    lua_Integer len = luaL_len(L, arg);
    if (len == 0) return 0;
    luaL_argcheck(L, len <= ndim, arg, "more dims than the tensor has");
    for (lua_Integer i = 1; i <= len; i++) {
        lua_geti(L, arg, i);
        int isint;
        lua_Integer d = lua_tointegerx(L, -1, &isint);
        lua_pop(L, 1);
        if (!isint) luaL_argerror(L, arg, "dims must be integers");
        int dim = cnl_todim(L, d, ndim, arg);
        for (int j = 0; j < n; j++)
            if (dims[j] == dim) luaL_argerror(L, arg, lua_pushfstring(L, "dim %d repeated", (int)d));
        dims[n++] = dim;
    }
    return n;
}

int cnl_checkshape(lua_State *L, int arg, int64_t *shape) {
    int n = 0;
    if (lua_istable(L, arg)) {
        lua_Integer len = luaL_len(L, arg);
        if (len > CN_MAX_DIMS)
            luaL_argerror(L, arg, lua_pushfstring(L, "at most %d dims supported", CN_MAX_DIMS));
        for (lua_Integer i = 1; i <= len; i++) {
            lua_geti(L, arg, i);
            int isint;
            lua_Integer v = lua_tointegerx(L, -1, &isint);
            lua_pop(L, 1);
            if (!isint)
                luaL_argerror(L, arg, lua_pushfstring(L, "shape entry %d is not an integer", (int)i));
            shape[n++] = v;
        }
        return n;
    }
    int top = lua_gettop(L);
    if (arg > top || !lua_isinteger(L, arg)) luaL_typeerror(L, arg, "shape (table or integers)");
    for (int i = arg; i <= top && lua_type(L, i) == LUA_TNUMBER; i++) {
        if (n == CN_MAX_DIMS) luaL_argerror(L, i, lua_pushfstring(L, "at most %d dims supported", CN_MAX_DIMS));
        shape[n++] = luaL_checkinteger(L, i);
    }
    return n;
}

int cnl_optbool(lua_State *L, int arg, int def) {
    return lua_isnoneornil(L, arg) ? def : lua_toboolean(L, arg);
}

void cnl_check_inplace(lua_State *L, const cn_tensor *t, const char *fname) {
    if (cn_grad_enabled() && t->requires_grad)
        luaL_error(L, "%s: in-place operation on a tensor that requires grad (%s); run it inside cn.no_grad "
                   "or on a detach()ed tensor", fname, t->node ? "part of a graph" : "a leaf");
}

void cnl_register(lua_State *L, const luaL_Reg *methods, const luaL_Reg *functions) {
    if (functions) cnl_setfuncs(L, functions);
    if (methods) {
        luaL_getmetatable(L, CNL_TENSOR_MT);
        lua_getfield(L, -1, "__methods");
        cnl_setfuncs(L, methods);
        lua_pop(L, 2);
    }
}

/* ---- module ------------------------------------------------------------------------------- */

int luaopen_cunet_core(lua_State *L) {
    lua_newtable(L); /* the module */
    if (luaL_newmetatable(L, CNL_TENSOR_MT)) {
        lua_newtable(L);
        lua_setfield(L, -2, "__methods");
        lua_newtable(L);
        lua_setfield(L, -2, "__setters"); /* name -> setter(t, value), for t.name = value */
        lua_pushliteral(L, "cunet.Tensor");
        lua_setfield(L, -2, "__name");
    }
    lua_pop(L, 1);
    cnl_open_tensor(L);
    cnl_open_shape(L);
    cnl_open_elementwise(L);
    cnl_open_reduce(L);
    cnl_open_matmul(L);
    cnl_open_autograd(L);
    cnl_open_conv(L);
    cnl_open_spatial(L);
    cnl_open_norm(L);
    cnl_open_nn(L);
    cnl_open_optim(L);
    cnl_open_io(L);
    cnl_open_image(L);
    cnl_open_ode(L);
    cnl_open_sys(L);
    cnl_open_metrics(L);
    cnl_open_profile(L);
    cnl_open_bm3d(L);
    cnl_open_distributed(L);
    luaL_getmetatable(L, CNL_TENSOR_MT);
    lua_setfield(L, -2, "Tensor"); /* the metatable, for Lua-side extensions (printing, autograd) */
    lua_pushliteral(L, CUNET_VERSION);
    lua_setfield(L, -2, "version");
    return 1;
}
