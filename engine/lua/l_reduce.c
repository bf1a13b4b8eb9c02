/* l_reduce.c — Lua binding of reductions (ops_reduce.c).
 *
 *   t:sum(dims, keepdim)  t:mean(dims, keepdim)  t:var(dims, keepdim, correction)  t:std(...)
 *   t:norm(p, dims, keepdim)  t:max(dim, keepdim)  t:min(dim, keepdim)  t:argmax(dim, keepdim)
 *   t:argmin(dim, keepdim)
 *
 * dims: nil (all), a dim, or a table of dims; 1-based, negatives from the end. Indices returned by
 * max/min/argmax/argmin are 1-based: the engine's 0-based indices plus one. Every function is also
 * a module function taking the tensor first (cn.sum(t, 2)).
 */
#include <math.h>

#include "binding.h"

/* Engine indices (0-based, as floats) -> Lua's 1-based, in place on a fresh tensor. */
static void to_one_based(cn_tensor *ix) {
    float *p = cn_data(ix);
    size_t n = cn_numel(ix);
    for (size_t i = 0; i < n; i++) p[i] += 1.0f;
}

typedef cn_tensor *(*plain_reduction)(const cn_tensor *, int, const int *, bool, cn_error *);

/* t, dims, keepdim */
static int plain(lua_State *L, plain_reduction fn) {
    cn_tensor *t = cnl_checktensor(L, 1);
    int dims[CN_MAX_DIMS];
    int ndims = cnl_checkdims(L, 2, t->ndim, dims);
    bool keepdim = cnl_optbool(L, 3, 0);
    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    return cnl_result(L, box, fn(t, ndims, dims, keepdim, &err), &err);
}

static int t_sum(lua_State *L) { return plain(L, cn_sum); }
static int t_mean(lua_State *L) { return plain(L, cn_mean); }

/* t, dims, keepdim, correction (default 1) */
static int variance(lua_State *L, bool take_sqrt) {
    cn_tensor *t = cnl_checktensor(L, 1);
    int dims[CN_MAX_DIMS];
    int ndims = cnl_checkdims(L, 2, t->ndim, dims);
    bool keepdim = cnl_optbool(L, 3, 0);
    lua_Integer correction = luaL_optinteger(L, 4, 1);
    luaL_argcheck(L, correction >= -(1 << 30) && correction <= (1 << 30), 4,
                  "correction out of range");
    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    cn_tensor *r = take_sqrt ? cn_std(t, ndims, dims, (int)correction, keepdim, &err)
                             : cn_var(t, ndims, dims, (int)correction, keepdim, &err);
    return cnl_result(L, box, r, &err);
}

static int t_var(lua_State *L) { return variance(L, false); }
static int t_std(lua_State *L) { return variance(L, true); }

/* t, p (default 2; math.huge for the max-norm), dims, keepdim */
static int t_norm(lua_State *L) {
    cn_tensor *t = cnl_checktensor(L, 1);
    lua_Number p = luaL_optnumber(L, 2, 2.0);
    luaL_argcheck(L, !isnan(p), 2, "p must be a number, got nan");
    int dims[CN_MAX_DIMS];
    int ndims = cnl_checkdims(L, 3, t->ndim, dims);
    bool keepdim = cnl_optbool(L, 4, 0);
    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    return cnl_result(L, box, cn_norm(t, (double)p, ndims, dims, keepdim, &err), &err);
}

/* t -> 0-d max; t, dim, keepdim -> values, indices (1-based) */
static int extremum(lua_State *L, bool is_max) {
    cn_tensor *t = cnl_checktensor(L, 1);
    cn_error err;
    if (lua_isnoneornil(L, 2)) {
        cn_tensor **box = cnl_newbox(L);
        return cnl_result(L, box, cn_max_all(t, is_max, &err), &err);
    }
    int dim = cnl_checkdim(L, 2, t->ndim);
    bool keepdim = cnl_optbool(L, 3, 0);
    cn_tensor **vbox = cnl_newbox(L), **ibox = cnl_newbox(L);
    cn_tensor *values, *indices;
    if (cn_max_dim(t, dim, keepdim, is_max, &values, &indices, &err)) return cnl_raise(L, &err);
    to_one_based(indices);
    cnl_result(L, vbox, values, &err);
    cnl_result(L, ibox, indices, &err);
    return 2;
}

static int t_max(lua_State *L) { return extremum(L, true); }
static int t_min(lua_State *L) { return extremum(L, false); }

/* t, dim (optional: flat index), keepdim -> 1-based indices */
static int arg_extremum(lua_State *L, bool is_max) {
    cn_tensor *t = cnl_checktensor(L, 1);
    bool dim_given = !lua_isnoneornil(L, 2);
    int dim = dim_given ? cnl_checkdim(L, 2, t->ndim) : 0;
    bool keepdim = cnl_optbool(L, 3, 0);
    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    cn_tensor *r = cn_argmax(t, dim_given, dim, keepdim, is_max, &err);
    if (r) to_one_based(r);
    return cnl_result(L, box, r, &err);
}

static int t_argmax(lua_State *L) { return arg_extremum(L, true); }
static int t_argmin(lua_State *L) { return arg_extremum(L, false); }

static const luaL_Reg reduce_functions[] = {
    {"sum", t_sum}, {"mean", t_mean}, {"var", t_var},       {"std", t_std},       {"norm", t_norm},
    {"max", t_max}, {"min", t_min},   {"argmax", t_argmax}, {"argmin", t_argmin}, {NULL, NULL}};

void cnl_open_reduce(lua_State *L) { cnl_register(L, reduce_functions, reduce_functions); }
