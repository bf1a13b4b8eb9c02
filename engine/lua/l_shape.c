/* l_shape.c — Lua binding of the shape ops (ops_shape.c): views that share storage (view,
 * reshape, flatten, permute, transpose, t, narrow, slice, select, squeeze, unsqueeze, expand,
 * chunk, split), and the ops that copy (contiguous, cat, stack, index_select).
 * Dims and indices are 1-based on the Lua side (see docs/tensor-api.md). */
#include <stdio.h>

#include "autograd.h"
#include "binding.h"

static int reshape_like(lua_State *L, bool view) {
    cn_tensor *t = cnl_checktensor(L, 1);
    int64_t shape[CN_MAX_DIMS];
    int ndim = cnl_checkshape(L, 2, shape);
    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    return cnl_result(L, box, view ? cn_view(t, ndim, shape, &err) : cn_reshape(t, ndim, shape, &err), &err);
}

static int l_view(lua_State *L) { return reshape_like(L, true); }
static int l_reshape(lua_State *L) { return reshape_like(L, false); }

static int l_flatten(lua_State *L) {
    cn_tensor *t = cnl_checktensor(L, 1);
    int64_t n = (int64_t)cn_numel(t);
    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    return cnl_result(L, box, cn_reshape(t, 1, &n, &err), &err);
}

static int l_permute(lua_State *L) {
    cn_tensor *t = cnl_checktensor(L, 1);
    int perm[CN_MAX_DIMS];
    int n;
    if (lua_istable(L, 2)) {
        n = (int)luaL_len(L, 2);
        luaL_argcheck(L, n == t->ndim, 2, lua_pushfstring(L, "permute needs %d dims, got %d", t->ndim, n));
        for (int i = 0; i < n; i++) {
            lua_geti(L, 2, i + 1);
            perm[i] = cnl_todim(L, luaL_checkinteger(L, -1), t->ndim, 2);
            lua_pop(L, 1);
        }
    } else {
        n = lua_gettop(L) - 1;
        if (n != t->ndim)
            return luaL_error(L, "permute: %d dims given for a %d-D tensor", n, t->ndim);
        for (int i = 0; i < n; i++) perm[i] = cnl_checkdim(L, i + 2, t->ndim);
    }
    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    return cnl_result(L, box, cn_permute(t, perm, &err), &err);
}

static int l_transpose(lua_State *L) {
    cn_tensor *t = cnl_checktensor(L, 1);
    int d0 = cnl_checkdim(L, 2, t->ndim), d1 = cnl_checkdim(L, 3, t->ndim);
    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    return cnl_result(L, box, cn_transpose(t, d0, d1, &err), &err);
}

static int l_t(lua_State *L) {
    cn_tensor *t = cnl_checktensor(L, 1);
    if (t->ndim != 2) {
        char buf[160];
        return luaL_error(L, "t: expects a 2-D tensor, got shape %s", cn_shape_str(buf, sizeof buf, t->ndim, t->shape));
    }
    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    return cnl_result(L, box, cn_transpose(t, 0, 1, &err), &err);
}

static int l_narrow(lua_State *L) {
    cn_tensor *t = cnl_checktensor(L, 1);
    int d = cnl_checkdim(L, 2, t->ndim);
    lua_Integer start = luaL_checkinteger(L, 3), length = luaL_checkinteger(L, 4);
    luaL_argcheck(L, start >= 1, 3, "start is 1-based");
    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    return cnl_result(L, box, cn_narrow(t, d, start - 1, length, &err), &err);
}

/* t:slice(dim, first [, last]) — inclusive range like string.sub; negatives count from the end */
static int l_slice(lua_State *L) {
    cn_tensor *t = cnl_checktensor(L, 1);
    int d = cnl_checkdim(L, 2, t->ndim);
    int64_t size = t->shape[d];
    lua_Integer first = luaL_checkinteger(L, 3), last = luaL_optinteger(L, 4, -1);
    int64_t f = first > 0 ? first - 1 : first + size, l = last > 0 ? last - 1 : last + size;
    if (f < 0) f = 0;
    if (l >= size) l = size - 1;
    int64_t length = l >= f ? l - f + 1 : 0;
    if (f > size) f = size;
    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    return cnl_result(L, box, cn_narrow(t, d, f, length, &err), &err);
}

static int l_select(lua_State *L) {
    cn_tensor *t = cnl_checktensor(L, 1);
    int d = cnl_checkdim(L, 2, t->ndim);
    int64_t i = cnl_checkpos(L, 3, t->shape[d], "index");
    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    return cnl_result(L, box, cn_select(t, d, i, &err), &err);
}

static int l_squeeze(lua_State *L) {
    cn_tensor *t = cnl_checktensor(L, 1);
    cn_error err;
    if (lua_isnoneornil(L, 2)) {
        cn_tensor **box = cnl_newbox(L);
        return cnl_result(L, box, cn_squeeze_all(t, &err), &err);
    }
    int d = cnl_checkdim(L, 2, t->ndim);
    cn_tensor **box = cnl_newbox(L);
    return cnl_result(L, box, cn_squeeze(t, d, &err), &err);
}

static int l_unsqueeze(lua_State *L) {
    cn_tensor *t = cnl_checktensor(L, 1);
    int d = cnl_checkdim(L, 2, t->ndim + 1);
    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    return cnl_result(L, box, cn_unsqueeze(t, d, &err), &err);
}

static int l_expand(lua_State *L) {
    cn_tensor *t = cnl_checktensor(L, 1);
    int64_t shape[CN_MAX_DIMS];
    int ndim = cnl_checkshape(L, 2, shape);
    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    return cnl_result(L, box, cn_expand(t, ndim, shape, &err), &err);
}

static int l_contiguous(lua_State *L) {
    cn_tensor *t = cnl_checktensor(L, 1);
    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    return cnl_result(L, box, cn_contiguous(t, &err), &err);
}

/* Collects a Lua list of tensors at arg into a malloc'd array (caller frees). */
static cn_tensor **checklist(lua_State *L, int arg, int *n) {
    luaL_checktype(L, arg, LUA_TTABLE);
    lua_Integer len = luaL_len(L, arg);
    luaL_argcheck(L, len > 0 && len < 1 << 20, arg, "expected a non-empty list of tensors");
    cn_tensor **ts = lua_newuserdatauv(L, (size_t)len * sizeof *ts, 0); /* GC-owned scratch */
    for (lua_Integer i = 1; i <= len; i++) {
        lua_geti(L, arg, i);
        ts[i - 1] = cnl_totensor(L, -1);
        if (!ts[i - 1]) luaL_error(L, "bad argument #%d (entry %d is a %s, not a tensor)", arg, (int)i, luaL_typename(L, -1));
        lua_pop(L, 1);
    }
    *n = (int)len;
    return ts;
}

static int join(lua_State *L, bool stack) {
    lua_Integer dim = luaL_optinteger(L, 2, 1); /* before checklist pushes its scratch block */
    int n;
    cn_tensor **ts = checklist(L, 1, &n);
    int ndim = ts[0]->ndim + (stack ? 1 : 0);
    int d = cnl_todim(L, dim, ndim, 2);
    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    return cnl_result(L, box, stack ? cn_stack(n, ts, d, &err) : cn_cat(n, ts, d, &err), &err);
}

static int l_cat(lua_State *L) { return join(L, false); }
static int l_stack(lua_State *L) { return join(L, true); }

/* Pushes a table of narrow views of sizes[0..n) along d. */
static int push_pieces(lua_State *L, cn_tensor *t, int d, const int64_t *sizes, int n) {
    lua_createtable(L, n, 0);
    int64_t at = 0;
    for (int i = 0; i < n; i++) {
        cn_error err;
        cn_tensor **box = cnl_newbox(L);
        cnl_result(L, box, cn_narrow(t, d, at, sizes[i], &err), &err);
        lua_rawseti(L, -2, i + 1);
        at += sizes[i];
    }
    return 1;
}

/* t:chunk(n [, dim]) — as torch.chunk: pieces of ceil(size / n), the last one smaller */
static int l_chunk(lua_State *L) {
    cn_tensor *t = cnl_checktensor(L, 1);
    lua_Integer chunks = luaL_checkinteger(L, 2);
    luaL_argcheck(L, chunks > 0, 2, "number of chunks must be positive");
    int d = lua_isnoneornil(L, 3) ? 0 : cnl_checkdim(L, 3, t->ndim);
    int64_t size = t->shape[d], piece = (size + chunks - 1) / chunks;
    if (piece == 0) piece = 1;
    int n = size == 0 ? 1 : (int)((size + piece - 1) / piece);
    int64_t *sizes = lua_newuserdatauv(L, (size_t)n * sizeof *sizes, 0);
    for (int i = 0; i < n; i++) sizes[i] = (i + 1) * piece <= size ? piece : size - i * piece;
    return push_pieces(L, t, d, sizes, n);
}

/* t:split(size [, dim]) or t:split({s1, s2, ...} [, dim]) — as torch.split */
static int l_split(lua_State *L) {
    cn_tensor *t = cnl_checktensor(L, 1);
    int d = lua_isnoneornil(L, 3) ? 0 : cnl_checkdim(L, 3, t->ndim);
    int64_t size = t->shape[d];
    int n;
    int64_t *sizes;
    if (lua_istable(L, 2)) {
        n = (int)luaL_len(L, 2);
        sizes = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *sizes, 0);
        int64_t total = 0;
        for (int i = 0; i < n; i++) {
            lua_geti(L, 2, i + 1);
            sizes[i] = luaL_checkinteger(L, -1);
            lua_pop(L, 1);
            luaL_argcheck(L, sizes[i] >= 0, 2, "split sizes must be non-negative");
            total += sizes[i];
        }
        if (total != size)
            return luaL_error(L, "split: sizes sum to %d but dim %d has size %d", (int)total, d + 1, (int)size);
    } else {
        lua_Integer piece = luaL_checkinteger(L, 2);
        luaL_argcheck(L, piece > 0, 2, "split size must be positive");
        n = size == 0 ? 1 : (int)((size + piece - 1) / piece);
        sizes = lua_newuserdatauv(L, (size_t)n * sizeof *sizes, 0);
        for (int i = 0; i < n; i++) sizes[i] = (i + 1) * piece <= size ? piece : size - i * piece;
    }
    return push_pieces(L, t, d, sizes, n);
}

/* t:index_select(dim, index) — index: a tensor or table of 1-based positions */
static int l_index_select(lua_State *L) {
    cn_tensor *t = cnl_checktensor(L, 1);
    int d = cnl_checkdim(L, 2, t->ndim);
    cn_error err;
    cn_tensor *ids;
    if (lua_istable(L, 3)) {
        int64_t n = (int64_t)luaL_len(L, 3);
        ids = cn_empty(1, &n, &err);
        if (!ids) return cnl_raise(L, &err);
        for (int64_t i = 0; i < n; i++) {
            lua_geti(L, 3, i + 1);
            cn_data(ids)[i] = (float)lua_tonumber(L, -1) - 1.0f;
            lua_pop(L, 1);
        }
    } else {
        cn_tensor *one_based = cnl_checktensor(L, 3);
        bool mode = cn_set_grad_enabled(false);
        ids = cn_binary_scalar(CN_SUB, one_based, 1.0f, false, &err);
        cn_set_grad_enabled(mode);
        if (!ids) return cnl_raise(L, &err);
    }
    /* check here, so a message speaks Lua's 1-based positions */
    if (ids->ndim == 1) {
        for (int64_t i = 0; i < ids->shape[0]; i++) {
            float v = ids->storage->data[ids->offset + (size_t)(i * ids->stride[0])];
            if (!(v >= 0 && v < (float)t->shape[d] && v == (float)(int64_t)v)) {
                char buf[160], msg[320];
                snprintf(msg, sizeof msg, "index_select: index %g out of range for dim %d of size %d (shape %s; 1-based)",
                         (double)v + 1, d + 1, (int)t->shape[d], cn_shape_str(buf, sizeof buf, t->ndim, t->shape));
                cn_release(ids);
                return luaL_error(L, "%s", msg);
            }
        }
    }
    cn_tensor **box = cnl_newbox(L);
    cn_tensor *r = cn_index_select(t, d, ids, &err);
    cn_release(ids);
    return cnl_result(L, box, r, &err);
}

static const luaL_Reg shape_methods[] = {
    {"view", l_view}, {"reshape", l_reshape}, {"flatten", l_flatten}, {"permute", l_permute},
    {"transpose", l_transpose}, {"t", l_t}, {"narrow", l_narrow}, {"slice", l_slice},
    {"select", l_select}, {"squeeze", l_squeeze}, {"unsqueeze", l_unsqueeze}, {"expand", l_expand},
    {"contiguous", l_contiguous}, {"chunk", l_chunk}, {"split", l_split},
    {"index_select", l_index_select},
    {NULL, NULL},
};

static const luaL_Reg shape_functions[] = {{"cat", l_cat}, {"stack", l_stack}, {NULL, NULL}};

void cnl_open_shape(lua_State *L) { cnl_register(L, shape_methods, shape_functions); }
