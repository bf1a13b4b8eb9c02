/* l_optim.c — Lua binding of the optimiser kernels (engine/optim.h), as the table core.optim; in
 * `cn` the Lua optimisers of lua/cunet/optim (which call these) take its place as cn.optim:
 *
 *   sgd_step(param, grad, buf|nil, lr, momentum, dampening, weight_decay, nesterov, first_step)
 *   adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq|nil, step, lr, beta1, beta2, eps,
 *             weight_decay, decoupled)
 *   grad_norm({tensors}, norm_type) -> number      scale_(t, factor)
 *   ema_update_(shadow, param, decay)               swap_(a, b)
 *
 * The updates write parameters in place, so they refuse to run while grad mode is on (the Lua
 * optimisers call them inside cn.no_grad). A strided gradient is copied to a contiguous one first.
 */
#include <math.h>

#include "autograd.h"
#include "binding.h"
#include "optim.h"

/* The gradient at arg as a contiguous tensor: a new reference (a copy only when it is strided). */
static cn_tensor *contiguous_grad(lua_State *L, int arg) {
    cn_tensor *g = cnl_checktensor(L, arg);
    if (cn_is_contiguous(g)) return cn_retain(g);
    cn_error err;
    cn_tensor *c = cn_contiguous(g, &err);
    if (!c) cnl_raise(L, &err);
    return c;
}

static int l_sgd_step(lua_State *L) {
    cn_tensor *param = cnl_checktensor(L, 1);
    cnl_checktensor(L, 2);
    cn_tensor *buf = cnl_opttensor(L, 3);
    double lr = luaL_checknumber(L, 4), momentum = luaL_checknumber(L, 5);
    double dampening = luaL_checknumber(L, 6), weight_decay = luaL_checknumber(L, 7);
    bool nesterov = lua_toboolean(L, 8), first_step = lua_toboolean(L, 9);
    cnl_check_inplace(L, param, "sgd_step");
    cn_tensor *grad = contiguous_grad(L, 2); /* last thing that may raise before the release */
    cn_error err;
    int status = cn_sgd_step(param, grad, buf, lr, momentum, dampening, weight_decay, nesterov, first_step, &err);
    cn_release(grad);
    if (status) return cnl_raise(L, &err);
    return 0;
}

static int l_adam_step(lua_State *L) {
    cn_tensor *param = cnl_checktensor(L, 1);
    cnl_checktensor(L, 2);
    cn_tensor *exp_avg = cnl_checktensor(L, 3), *exp_avg_sq = cnl_checktensor(L, 4);
    cn_tensor *max_exp_avg_sq = cnl_opttensor(L, 5);
    lua_Integer step = luaL_checkinteger(L, 6);
    double lr = luaL_checknumber(L, 7), beta1 = luaL_checknumber(L, 8), beta2 = luaL_checknumber(L, 9);
    double eps = luaL_checknumber(L, 10), weight_decay = luaL_checknumber(L, 11);
    bool decoupled = lua_toboolean(L, 12);
    cnl_check_inplace(L, param, decoupled ? "adamw_step" : "adam_step");
    cn_tensor *grad = contiguous_grad(L, 2);
    cn_error err;
    int status = cn_adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, (int64_t)step, lr, beta1, beta2,
                              eps, weight_decay, decoupled, &err);
    cn_release(grad);
    if (status) return cnl_raise(L, &err);
    return 0;
}

/* grad_norm(list, norm_type) -> number */
static int l_grad_norm(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    double norm_type = luaL_optnumber(L, 2, 2.0);
    luaL_argcheck(L, norm_type >= 0.0, 2, "norm_type must be >= 0 (or math.huge)");
    lua_Integer n = luaL_len(L, 1);
    luaL_argcheck(L, n <= 1 << 24, 1, "too many tensors");
    const cn_tensor **ts = lua_newuserdatauv(L, (size_t)(n > 0 ? n : 1) * sizeof *ts, 0);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, 1, i);
        ts[i - 1] = cnl_totensor(L, -1);
        if (!ts[i - 1])
            luaL_argerror(L, 1, lua_pushfstring(L, "entry %d is a %s, not a tensor", (int)i, luaL_typename(L, -1)));
        lua_pop(L, 1);
    }
    lua_pushnumber(L, cn_grad_norm((int)n, (const cn_tensor *const *)ts, norm_type));
    return 1;
}

static int l_scale_(lua_State *L) {
    cn_tensor *t = cnl_checktensor(L, 1);
    float factor = (float)luaL_checknumber(L, 2);
    cnl_check_inplace(L, t, "scale_");
    cn_error err;
    if (cn_scale_(t, factor, &err)) return cnl_raise(L, &err);
    lua_settop(L, 1);
    return 1;
}

static int l_ema_update_(lua_State *L) {
    cn_tensor *shadow = cnl_checktensor(L, 1);
    cnl_checktensor(L, 2);
    double decay = luaL_checknumber(L, 3);
    cnl_check_inplace(L, shadow, "ema_update_");
    cn_tensor *param = contiguous_grad(L, 2);
    cn_error err;
    int status = cn_ema_update_(shadow, param, decay, &err);
    cn_release(param);
    if (status) return cnl_raise(L, &err);
    return 0;
}

static int l_swap_(lua_State *L) {
    cn_tensor *a = cnl_checktensor(L, 1), *b = cnl_checktensor(L, 2);
    cnl_check_inplace(L, a, "swap_");
    cnl_check_inplace(L, b, "swap_");
    cn_error err;
    if (cn_swap_(a, b, &err)) return cnl_raise(L, &err);
    return 0;
}

void cnl_open_optim(lua_State *L) {
    static const luaL_Reg kernels[] = {
        {"sgd_step", l_sgd_step}, {"adam_step", l_adam_step}, {"grad_norm", l_grad_norm},
        {"scale_", l_scale_}, {"ema_update_", l_ema_update_}, {"swap_", l_swap_}, {NULL, NULL},
    };
    lua_newtable(L);
    cnl_setfuncs(L, kernels);
    lua_setfield(L, -2, "optim");
}
