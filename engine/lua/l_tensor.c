/* l_tensor.c — Lua binding of tensor creation, the RNG and memory counters, facts, element
 * access, copies and fills, and the tensor metatable (__index, __newindex, __gc, __close, __len,
 * __tostring). Shape ops and views are l_shape.c. Dims and indices are 1-based on the Lua side
 * (see docs/tensor-api.md). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "binding.h"
#include "rng.h"

/* ---- creation ----------------------------------------------------------------------------- */

/* Walks a nested table to find its shape (first elements), then checks it is rectangular. */
static int nested_shape(lua_State *L, int idx, int64_t *shape) {
    int n = 0;
    lua_pushvalue(L, idx);
    while (lua_istable(L, -1)) {
        if (n == CN_MAX_DIMS) luaL_error(L, "tensor: nested table deeper than %d dims", CN_MAX_DIMS);
        shape[n++] = (int64_t)luaL_len(L, -1);
        if (shape[n - 1] == 0) break;
        lua_geti(L, -1, 1);
        lua_remove(L, -2);
    }
    lua_pop(L, 1);
    return n;
}

static void fill_nested(lua_State *L, int idx, int depth, int ndim, const int64_t *shape, float *out,
                        size_t *at) {
    if (!lua_istable(L, idx) || luaL_len(L, idx) != shape[depth]) {
        char buf[160];
        luaL_error(L, "tensor: nested table is not rectangular (expected %d entries at depth %d for shape %s)",
                   (int)shape[depth], depth + 1, cn_shape_str(buf, sizeof buf, ndim, shape));
    }
    for (int64_t i = 1; i <= shape[depth]; i++) {
        lua_geti(L, idx, i);
        if (depth + 1 < ndim) {
            fill_nested(L, lua_gettop(L), depth + 1, ndim, shape, out, at);
        } else {
            int isnum;
            lua_Number v = lua_tonumberx(L, -1, &isnum);
            if (!isnum)
                luaL_error(L, "tensor: entry %d at depth %d is a %s, not a number", (int)i, depth + 1,
                           luaL_typename(L, -1));
            out[(*at)++] = (float)v;
        }
        lua_pop(L, 1);
    }
}

/* cn.tensor(nested) | cn.tensor(flat, shape) | cn.tensor(number) | cn.tensor(tensor) (a copy) */
static int l_tensor(lua_State *L) {
    cn_error err;
    int64_t shape[CN_MAX_DIMS];
    if (lua_type(L, 1) == LUA_TNUMBER) {
        cn_tensor **box = cnl_newbox(L);
        return cnl_result(L, box, cn_scalar((float)lua_tonumber(L, 1), &err), &err);
    }
    cn_tensor *src = cnl_totensor(L, 1);
    if (src) {
        cn_tensor **box = cnl_newbox(L);
        return cnl_result(L, box, cn_clone(src, &err), &err);
    }
    luaL_argexpected(L, lua_istable(L, 1), 1, "table, number or tensor");
    int ndim;
    bool flat = !lua_isnoneornil(L, 2);
    if (flat) {
        ndim = cnl_checkshape(L, 2, shape);
        size_t want = cn_shape_numel(ndim, shape);
        lua_Integer len = luaL_len(L, 1);
        if ((size_t)len != want) {
            char buf[160];
            return luaL_error(L, "tensor: %d values given for shape %s (%d needed)", (int)len,
                              cn_shape_str(buf, sizeof buf, ndim, shape), (int)want);
        }
    } else {
        ndim = nested_shape(L, 1, shape);
    }
    cn_tensor **box = cnl_newbox(L);
    cn_tensor *t = cn_empty(ndim, shape, &err);
    if (!t) return cnl_raise(L, &err);
    *box = t; /* owned by the box from here: a Lua error below cannot leak it */
    float *p = cn_data(t);
    if (flat) {
        size_t n = cn_numel(t);
        for (size_t i = 0; i < n; i++) {
            lua_geti(L, 1, (lua_Integer)i + 1);
            int isnum;
            lua_Number v = lua_tonumberx(L, -1, &isnum);
            if (!isnum) return luaL_error(L, "tensor: entry %d is a %s, not a number", (int)i + 1, luaL_typename(L, -1));
            p[i] = (float)v;
            lua_pop(L, 1);
        }
    } else if (ndim > 0 && cn_numel(t) > 0) {
        size_t at = 0;
        fill_nested(L, 1, 0, ndim, shape, p, &at);
    }
    return 1;
}

typedef enum { FILL_EMPTY, FILL_ZEROS, FILL_ONES, FILL_RAND, FILL_RANDN } fill_kind;

static void fill_with(cn_tensor *t, fill_kind kind) {
    size_t n = cn_numel(t);
    switch (kind) {
    case FILL_EMPTY: break;
    case FILL_ZEROS: cn_fill_(t, 0.0f); break;
    case FILL_ONES: cn_fill_(t, 1.0f); break;
    case FILL_RAND: cn_rng_uniform(cn_data(t), n, 0.0f, 1.0f); break;
    case FILL_RANDN: cn_rng_normal(cn_data(t), n, 0.0f, 1.0f); break;
    }
}

/* Refuses anything after the shape (which ended before arg `next`): a dtype is the usual
 * mistake, and ignoring it would silently give float32. */
static void check_no_dtype(lua_State *L, int next) {
    if (lua_isnoneornil(L, next)) return;
    if (lua_type(L, next) == LUA_TSTRING)
        luaL_argerror(L, next, lua_pushfstring(L, "dtype '%s' not supported: cunet tensors are float32 only",
                                               lua_tostring(L, next)));
    luaL_argerror(L, next, lua_pushfstring(L, "unexpected %s after the shape", luaL_typename(L, next)));
}

static int create(lua_State *L, fill_kind kind, const char *fname) {
    int64_t shape[CN_MAX_DIMS];
    int ndim = lua_isnoneornil(L, 1) ? 0 : cnl_checkshape(L, 1, shape);
    check_no_dtype(L, lua_istable(L, 1) ? 2 : ndim + 1);
    cn_error err;
    if (cn_shape_numel_checked(ndim, shape, NULL, fname, &err)) return cnl_raise(L, &err);
    cn_tensor **box = cnl_newbox(L);
    cn_tensor *t = cn_empty(ndim, shape, &err);
    if (t) fill_with(t, kind);
    return cnl_result(L, box, t, &err);
}

static int create_like(lua_State *L, fill_kind kind) {
    cn_tensor *src = cnl_checktensor(L, 1);
    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    cn_tensor *t = cn_empty_like(src, &err);
    if (t) fill_with(t, kind);
    return cnl_result(L, box, t, &err);
}

static int l_empty(lua_State *L) { return create(L, FILL_EMPTY, "empty"); }
static int l_zeros(lua_State *L) { return create(L, FILL_ZEROS, "zeros"); }
static int l_ones(lua_State *L) { return create(L, FILL_ONES, "ones"); }
static int l_rand(lua_State *L) { return create(L, FILL_RAND, "rand"); }
static int l_randn(lua_State *L) { return create(L, FILL_RANDN, "randn"); }
static int l_empty_like(lua_State *L) { return create_like(L, FILL_EMPTY); }
static int l_zeros_like(lua_State *L) { return create_like(L, FILL_ZEROS); }
static int l_ones_like(lua_State *L) { return create_like(L, FILL_ONES); }
static int l_rand_like(lua_State *L) { return create_like(L, FILL_RAND); }
static int l_randn_like(lua_State *L) { return create_like(L, FILL_RANDN); }

/* cn.full({2, 3}, v) | cn.full(2, 3, v) */
static int l_full(lua_State *L) {
    int64_t shape[CN_MAX_DIMS];
    float value;
    if (!lua_istable(L, 1)) {
        int top = lua_gettop(L);
        luaL_argcheck(L, top >= 2, top, "full needs a shape and a value");
        value = (float)luaL_checknumber(L, top);
        lua_settop(L, top - 1);
    } else {
        value = (float)luaL_checknumber(L, 2);
    }
    int ndim = cnl_checkshape(L, 1, shape);
    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    return cnl_result(L, box, cn_full(ndim, shape, value, &err), &err);
}

static int l_full_like(lua_State *L) {
    cn_tensor *src = cnl_checktensor(L, 1);
    float value = (float)luaL_checknumber(L, 2);
    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    return cnl_result(L, box, cn_full(src->ndim, src->shape, value, &err), &err);
}

/* cn.arange(end) | cn.arange(start, end [, step]) */
static int l_arange(lua_State *L) {
    double start = 0, end, step = 1;
    if (lua_isnoneornil(L, 2)) {
        end = luaL_checknumber(L, 1);
    } else {
        start = luaL_checknumber(L, 1);
        end = luaL_checknumber(L, 2);
        step = luaL_optnumber(L, 3, 1);
    }
    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    return cnl_result(L, box, cn_arange(start, end, step, &err), &err);
}

static int l_linspace(lua_State *L) {
    double start = luaL_checknumber(L, 1), end = luaL_checknumber(L, 2);
    lua_Integer steps = luaL_checkinteger(L, 3);
    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    return cnl_result(L, box, cn_linspace(start, end, steps, &err), &err);
}

/* cn.randint(lo, hi, shape): integers in [lo, hi) */
static int l_randint(lua_State *L) {
    lua_Integer lo = luaL_checkinteger(L, 1), hi = luaL_checkinteger(L, 2);
    luaL_argcheck(L, hi > lo, 2, "randint needs hi > lo");
    luaL_argcheck(L, hi - lo <= (1LL << 24), 2, "range wider than 2^24 cannot be stored exactly in float32");
    int64_t shape[CN_MAX_DIMS];
    int ndim = cnl_checkshape(L, 3, shape);
    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    cn_tensor *t = cn_empty(ndim, shape, &err);
    if (t) cn_rng_randint(cn_data(t), cn_numel(t), lo, hi);
    return cnl_result(L, box, t, &err);
}

/* cn.randperm(n): a permutation of 1..n (Fisher–Yates over the generator) */
static int l_randperm(lua_State *L) {
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 0 && n <= (1LL << 24), 1, "n must be in [0, 2^24]");
    int64_t shape = n;
    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    cn_tensor *t = cn_empty(1, &shape, &err);
    if (!t) return cnl_raise(L, &err);
    *box = t;
    float *p = cn_data(t);
    for (lua_Integer i = 0; i < n; i++) p[i] = (float)(i + 1);
    if (n > 1) {
        float *r = malloc((size_t)n * sizeof *r);
        if (!r) return luaL_error(L, "randperm: out of memory");
        cn_rng_uniform(r, (size_t)n, 0.0f, 1.0f);
        for (lua_Integer i = n - 1; i > 0; i--) {
            lua_Integer j = (lua_Integer)((double)r[i] * (double)(i + 1));
            if (j > i) j = i;
            float tmp = p[i];
            p[i] = p[j];
            p[j] = tmp;
        }
        free(r);
    }
    return 1;
}

/* ---- RNG and memory ----------------------------------------------------------------------- */

static int l_seed(lua_State *L) {
    cn_rng_seed((uint64_t)luaL_checkinteger(L, 1));
    return 0;
}

static int l_rng_state(lua_State *L) {
    cn_rng_state s = cn_rng_get_state();
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, (lua_Integer)s.seed);
    lua_setfield(L, -2, "seed");
    lua_pushinteger(L, (lua_Integer)s.counter);
    lua_setfield(L, -2, "counter");
    return 1;
}

static int l_set_rng_state(lua_State *L) {
    static const char *const options[] = {"seed", "counter", NULL};
    luaL_checktype(L, 1, LUA_TTABLE);
    cnl_check_keys(L, 1, options, "set_rng_state");
    cn_rng_state s;
    int ok1, ok2;
    lua_getfield(L, 1, "seed");
    s.seed = (uint64_t)lua_tointegerx(L, -1, &ok1);
    lua_getfield(L, 1, "counter");
    s.counter = (uint64_t)lua_tointegerx(L, -1, &ok2);
    luaL_argcheck(L, ok1 && ok2, 1, "expected {seed=integer, counter=integer} from cn.rng_state()");
    cn_rng_set_state(s);
    return 0;
}

static int l_memory(lua_State *L) {
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, (lua_Integer)cn_memory_live());
    lua_setfield(L, -2, "live");
    lua_pushinteger(L, (lua_Integer)cn_memory_peak());
    lua_setfield(L, -2, "peak");
    return 1;
}

static int l_reset_peak(lua_State *L) {
    (void)L;
    cn_memory_reset_peak();
    return 0;
}

static int l_set_gc_bytes(lua_State *L) {
    lua_Integer bytes = luaL_checkinteger(L, 1);
    luaL_argcheck(L, bytes >= 0, 1, "set_gc_bytes: bytes must be >= 0");
    lua_pushinteger(L, (lua_Integer)cnl_set_gc_bytes((size_t)bytes));
    return 1;
}

static int l_is_tensor(lua_State *L) {
    lua_pushboolean(L, luaL_testudata(L, 1, CNL_TENSOR_MT) != NULL);
    return 1;
}

/* ---- facts -------------------------------------------------------------------------------- */

static int l_shape(lua_State *L) {
    cn_tensor *t = cnl_checktensor(L, 1);
    lua_createtable(L, t->ndim, 0);
    for (int i = 0; i < t->ndim; i++) {
        lua_pushinteger(L, t->shape[i]);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

/* t:stride() -> table of strides; t:stride(dim) -> the stride of one dim */
static int l_stride(lua_State *L) {
    cn_tensor *t = cnl_checktensor(L, 1);
    if (!lua_isnoneornil(L, 2)) {
        lua_pushinteger(L, t->stride[cnl_checkdim(L, 2, t->ndim)]);
        return 1;
    }
    lua_createtable(L, t->ndim, 0);
    for (int i = 0; i < t->ndim; i++) {
        lua_pushinteger(L, t->stride[i]);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int l_size(lua_State *L) {
    cn_tensor *t = cnl_checktensor(L, 1);
    if (lua_isnoneornil(L, 2)) return l_shape(L);
    lua_pushinteger(L, t->shape[cnl_checkdim(L, 2, t->ndim)]);
    return 1;
}

static int l_len(lua_State *L) {
    cn_tensor *t = cnl_checktensor(L, 1);
    if (t->ndim == 0) return luaL_error(L, "#: a 0-d tensor has no length (use numel)");
    lua_pushinteger(L, t->shape[0]);
    return 1;
}

static int l_dim(lua_State *L) {
    lua_pushinteger(L, cnl_checktensor(L, 1)->ndim);
    return 1;
}

static int l_numel(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)cn_numel(cnl_checktensor(L, 1)));
    return 1;
}

static int l_is_contiguous(lua_State *L) {
    lua_pushboolean(L, cn_is_contiguous(cnl_checktensor(L, 1)));
    return 1;
}

static int l_item(lua_State *L) {
    cn_tensor *t = cnl_checktensor(L, 1);
    if (cn_numel(t) != 1) {
        char buf[160];
        return luaL_error(L, "item: tensor of shape %s has %d elements, item() needs exactly one",
                          cn_shape_str(buf, sizeof buf, t->ndim, t->shape), (int)cn_numel(t));
    }
    lua_pushnumber(L, t->storage->data[t->offset]);
    return 1;
}

static void push_nested(lua_State *L, const cn_tensor *t, int depth, size_t offset) {
    if (depth == t->ndim) {
        lua_pushnumber(L, t->storage->data[offset]);
        return;
    }
    lua_createtable(L, (int)t->shape[depth], 0);
    for (int64_t i = 0; i < t->shape[depth]; i++) {
        push_nested(L, t, depth + 1, offset + (size_t)(i * t->stride[depth]));
        lua_rawseti(L, -2, i + 1);
    }
}

/* t:totable() — nested tables (a number for a 0-d tensor); t:totable{flat=true} — one flat table */
static int l_totable(lua_State *L) {
    cn_tensor *t = cnl_checktensor(L, 1);
    luaL_checkstack(L, t->ndim + 4, "totable");
    static const char *const options[] = {"flat", NULL};
    cnl_check_keys(L, 2, options, "totable");
    bool flat = cnl_opt_bool(L, 2, "flat", false);
    if (flat) {
        size_t n = cn_numel(t);
        float *buf = malloc((n ? n : 1) * sizeof *buf);
        if (!buf) return luaL_error(L, "totable: out of memory");
        cn_to_buffer(t, buf);
        lua_createtable(L, (int)n, 0);
        for (size_t i = 0; i < n; i++) {
            lua_pushnumber(L, buf[i]);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        free(buf);
        return 1;
    }
    push_nested(L, t, 0, t->offset);
    return 1;
}

/* Reads a table of 1-based indices at arg into a storage offset; raises on bad indices. */
static size_t checkindex(lua_State *L, const cn_tensor *t, int arg, const char *fname) {
    luaL_checktype(L, arg, LUA_TTABLE);
    lua_Integer n = luaL_len(L, arg);
    if (n != t->ndim) {
        char buf[160];
        luaL_error(L, "%s: %d indices given for a %d-D tensor of shape %s", fname, (int)n, t->ndim,
                   cn_shape_str(buf, sizeof buf, t->ndim, t->shape));
    }
    int64_t off = (int64_t)t->offset;
    for (int d = 0; d < t->ndim; d++) {
        lua_geti(L, arg, d + 1);
        int isint;
        lua_Integer i = lua_tointegerx(L, -1, &isint);
        lua_pop(L, 1);
        if (!isint) luaL_error(L, "%s: index %d is not an integer", fname, d + 1);
        int64_t size = t->shape[d];
        int64_t i0 = i > 0 ? i - 1 : i + size;
        if (i == 0 || i0 < 0 || i0 >= size) {
            char buf[160];
            luaL_error(L, "%s: index %d out of range for dim %d of size %d (shape %s; indices are 1-based)",
                       fname, (int)i, d + 1, (int)size, cn_shape_str(buf, sizeof buf, t->ndim, t->shape));
        }
        off += i0 * t->stride[d];
    }
    return (size_t)off;
}

static int l_get(lua_State *L) {
    cn_tensor *t = cnl_checktensor(L, 1);
    lua_pushnumber(L, t->storage->data[checkindex(L, t, 2, "get")]);
    return 1;
}

static int l_set(lua_State *L) {
    cn_tensor *t = cnl_checktensor(L, 1);
    size_t off = checkindex(L, t, 2, "set");
    cnl_check_inplace(L, t, "set");
    t->storage->data[off] = (float)luaL_checknumber(L, 3);
    lua_settop(L, 1);
    return 1;
}

static int l_free(lua_State *L) {
    cn_tensor **box = luaL_checkudata(L, 1, CNL_TENSOR_MT);
    cn_release(*box);
    *box = NULL;
    return 0;
}

/* ---- copies and fills ------------------------------------------------------------------- */

static int l_clone(lua_State *L) {
    cn_tensor *t = cnl_checktensor(L, 1);
    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    return cnl_result(L, box, cn_clone(t, &err), &err);
}

static int l_copy_(lua_State *L) {
    cn_tensor *dst = cnl_checktensor(L, 1), *src = cnl_checktensor(L, 2);
    cnl_check_inplace(L, dst, "copy_");
    cn_error err;
    if (cn_copy_(dst, src, &err)) return cnl_raise(L, &err);
    lua_settop(L, 1);
    return 1;
}

static int l_fill_(lua_State *L) {
    cn_tensor *t = cnl_checktensor(L, 1);
    float v = (float)luaL_checknumber(L, 2);
    cnl_check_inplace(L, t, "fill_");
    cn_fill_(t, v);
    lua_settop(L, 1);
    return 1;
}

static int l_zero_(lua_State *L) {
    cn_tensor *t = cnl_checktensor(L, 1);
    cnl_check_inplace(L, t, "zero_");
    cn_fill_(t, 0.0f);
    lua_settop(L, 1);
    return 1;
}

/* ---- metamethods -------------------------------------------------------------------------- */

static int l_gc(lua_State *L) {
    cn_tensor **box = luaL_checkudata(L, 1, CNL_TENSOR_MT);
    cn_release(*box);
    *box = NULL;
    return 0;
}

static int l_tostring_plain(lua_State *L) {
    cn_tensor **box = luaL_checkudata(L, 1, CNL_TENSOR_MT);
    if (!*box) {
        lua_pushliteral(L, "tensor(<freed>)");
        return 1;
    }
    char buf[160];
    lua_pushfstring(L, "tensor(shape=%s)", cn_shape_str(buf, sizeof buf, (*box)->ndim, (*box)->shape));
    return 1;
}

/* __index: methods by name, properties (upvalue 2: name -> getter), t[i] = select(1, i), t[{i,j}] = element */
static int l_index(lua_State *L) {
    int kt = lua_type(L, 2);
    if (kt == LUA_TSTRING) {
        lua_pushvalue(L, 2);
        if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1;
        lua_pushvalue(L, 2);
        if (lua_rawget(L, lua_upvalueindex(2)) == LUA_TNIL) return 1;
        lua_pushvalue(L, 1);
        lua_call(L, 1, 1);
        return 1;
    }
    cn_tensor *t = cnl_checktensor(L, 1);
    if (kt == LUA_TTABLE) {
        lua_pushnumber(L, t->storage->data[checkindex(L, t, 2, "index")]);
        return 1;
    }
    if (kt == LUA_TNUMBER) {
        if (t->ndim == 0) return luaL_error(L, "index: cannot index a 0-d tensor with a number (use item())");
        int64_t i = cnl_checkpos(L, 2, t->shape[0], "index");
        cn_error err;
        cn_tensor **box = cnl_newbox(L);
        return cnl_result(L, box, cn_select(t, 0, i, &err), &err);
    }
    return luaL_error(L, "index: a tensor is indexed by a method name, an integer or a table of indices, not a %s",
                      luaL_typename(L, 2));
}

static int l_newindex(lua_State *L) {
    cn_tensor *t = cnl_checktensor(L, 1);
    int kt = lua_type(L, 2);
    if (kt == LUA_TTABLE) {
        size_t off = checkindex(L, t, 2, "newindex");
        cnl_check_inplace(L, t, "newindex");
        t->storage->data[off] = (float)luaL_checknumber(L, 3);
        return 0;
    }
    if (kt == LUA_TNUMBER) {
        if (t->ndim == 0) return luaL_error(L, "newindex: cannot index a 0-d tensor with a number");
        int64_t i = cnl_checkpos(L, 2, t->shape[0], "index");
        cnl_check_inplace(L, t, "newindex");
        cn_tensor *src = cnl_totensor(L, 3);
        if (!src && lua_type(L, 3) != LUA_TNUMBER)
            return luaL_error(L, "newindex: can assign a number or a tensor, not a %s", luaL_typename(L, 3));
        cn_error err;
        cn_tensor *row = cn_select(t, 0, i, &err);
        if (!row) return cnl_raise(L, &err);
        int status = 0;
        if (src) status = cn_copy_(row, src, &err);
        else cn_fill_(row, (float)lua_tonumber(L, 3));
        cn_release(row);
        if (status) return cnl_raise(L, &err);
        return 0;
    }
    if (kt == LUA_TSTRING && luaL_getmetafield(L, 1, "__setters") == LUA_TTABLE) {
        lua_pushvalue(L, 2);
        if (lua_rawget(L, -2) == LUA_TFUNCTION) {
            lua_pushvalue(L, 1);
            lua_pushvalue(L, 3);
            lua_call(L, 2, 0);
            return 0;
        }
    }
    return luaL_error(L, "newindex: cannot set field '%s' of a tensor", kt == LUA_TSTRING ? lua_tostring(L, 2) : luaL_typename(L, 2));
}

static const luaL_Reg tensor_methods[] = {
    {"shape", l_shape}, {"size", l_size}, {"stride", l_stride}, {"dim", l_dim}, {"numel", l_numel},
    {"is_contiguous", l_is_contiguous}, {"item", l_item}, {"totable", l_totable}, {"get", l_get},
    {"set", l_set}, {"free", l_free}, {"clone", l_clone}, {"copy_", l_copy_}, {"fill_", l_fill_},
    {"zero_", l_zero_},
    {NULL, NULL},
};

static const luaL_Reg tensor_functions[] = {
    {"tensor", l_tensor}, {"empty", l_empty}, {"zeros", l_zeros}, {"ones", l_ones}, {"full", l_full},
    {"rand", l_rand}, {"randn", l_randn}, {"randint", l_randint}, {"randperm", l_randperm},
    {"empty_like", l_empty_like}, {"zeros_like", l_zeros_like}, {"ones_like", l_ones_like},
    {"full_like", l_full_like}, {"rand_like", l_rand_like}, {"randn_like", l_randn_like},
    {"arange", l_arange}, {"linspace", l_linspace}, {"seed", l_seed}, {"rng_state", l_rng_state},
    {"set_rng_state", l_set_rng_state}, {"memory", l_memory}, {"reset_peak", l_reset_peak},
    {"set_gc_bytes", l_set_gc_bytes},
    {"is_tensor", l_is_tensor},
    {NULL, NULL},
};

void cnl_open_tensor(lua_State *L) {
    cnl_register(L, tensor_methods, tensor_functions);
    luaL_getmetatable(L, CNL_TENSOR_MT);
    lua_getfield(L, -1, "__methods");
    lua_newtable(L); /* properties: name -> getter(t), filled by later layers (autograd) */
    lua_pushvalue(L, -1);
    lua_setfield(L, -4, "__properties");
    lua_pushcclosure(L, l_index, 2);
    lua_setfield(L, -2, "__index");
    const luaL_Reg meta[] = {
        {"__newindex", l_newindex}, {"__gc", l_gc}, {"__close", l_gc}, {"__len", l_len},
        {"__tostring", l_tostring_plain}, {NULL, NULL},
    };
    luaL_setfuncs(L, meta, 0);
    lua_pop(L, 1);
}
