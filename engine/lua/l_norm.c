/* l_norm.c — Lua binding of the normalisation layers (ops_norm.c), as torch.nn.functional:
 *
 *   cn.group_norm(x, num_groups [, weight, bias [, eps [, activation]]])  activation "silu": silu(norm)
 *   cn.instance_norm(x [, weight, bias [, eps]])
 *   cn.layer_norm(x, normalized_shape [, weight, bias [, eps]])     normalized_shape {C, H, W} or C
 *   cn.batch_norm(x, running_mean, running_var [, weight, bias [, {training=false, momentum=0.1, eps=1e-5}]])
 *
 * x is [N, C, *]; weight and bias are optional (nil), differentiable like x. batch_norm in training
 * updates running_mean / running_var in place (either may be nil there); in eval it uses them.
 */
#include <math.h>
#include <string.h>

#include "autograd.h"
#include "binding.h"
#include "ops_norm.h"

#define DEFAULT_EPS 1e-5
#define DEFAULT_MOMENTUM 0.1

static double checkeps(lua_State *L, int arg, double eps) {
    luaL_argcheck(L, eps >= 0.0 && isfinite(eps), arg, "eps must be a finite non-negative number");
    return eps;
}

static int l_group_norm(lua_State *L) {
    cn_tensor *x = cnl_checktensor(L, 1);
    lua_Integer groups = luaL_checkinteger(L, 2);
    luaL_argcheck(L, groups > 0, 2, "num_groups must be positive");
    cn_tensor *w = cnl_opttensor(L, 3), *b = cnl_opttensor(L, 4);
    double eps = checkeps(L, 5, luaL_optnumber(L, 5, DEFAULT_EPS));
    bool silu = false;
    if (!lua_isnoneornil(L, 6)) {
        const char *act = lua_type(L, 6) == LUA_TSTRING ? lua_tostring(L, 6) : NULL;
        if (!act || strcmp(act, "silu") != 0)
            return luaL_argerror(L, 6, lua_pushfstring(L, "activation must be \"silu\" or nil, got %s",
                                                        act ? act : luaL_typename(L, 6)));
        silu = true;
    }
    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    cn_tensor *y = silu ? cn_group_norm_silu(x, (int64_t)groups, w, b, eps, &err)
                        : cn_group_norm(x, (int64_t)groups, w, b, eps, &err);
    return cnl_result(L, box, y, &err);
}

static int l_instance_norm(lua_State *L) {
    cn_tensor *x = cnl_checktensor(L, 1);
    cn_tensor *w = cnl_opttensor(L, 2), *b = cnl_opttensor(L, 3);
    double eps = checkeps(L, 4, luaL_optnumber(L, 4, DEFAULT_EPS));
    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    return cnl_result(L, box, cn_instance_norm(x, w, b, eps, &err), &err);
}

static int l_layer_norm(lua_State *L) {
    cn_tensor *x = cnl_checktensor(L, 1);
    int64_t shape[CN_MAX_DIMS];
    int n;
    if (lua_type(L, 2) == LUA_TNUMBER) {
        n = 1;
        shape[0] = luaL_checkinteger(L, 2);
    } else {
        luaL_argexpected(L, lua_istable(L, 2), 2, "normalized shape (table or integer)");
        n = cnl_checkshape(L, 2, shape);
    }
    char a[160], b[160];
    bool match = n >= 1 && n <= x->ndim;
    for (int i = 0; match && i < n; i++) match = shape[i] == x->shape[x->ndim - n + i];
    if (!match)
        return luaL_argerror(L, 2, lua_pushfstring(L, "normalized shape %s does not match the trailing dims of input %s",
                                                   cn_shape_str(a, sizeof a, n, shape),
                                                   cn_shape_str(b, sizeof b, x->ndim, x->shape)));
    cn_tensor *w = cnl_opttensor(L, 3), *bias = cnl_opttensor(L, 4);
    double eps = checkeps(L, 5, luaL_optnumber(L, 5, DEFAULT_EPS));
    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    return cnl_result(L, box, cn_layer_norm(x, n, w, bias, eps, &err), &err);
}

static const char *const batch_norm_options[] = {"training", "momentum", "eps", NULL};

static int l_batch_norm(lua_State *L) {
    cn_tensor *x = cnl_checktensor(L, 1);
    cn_tensor *running_mean = cnl_opttensor(L, 2), *running_var = cnl_opttensor(L, 3);
    cn_tensor *w = cnl_opttensor(L, 4), *b = cnl_opttensor(L, 5);
    cnl_check_keys(L, 6, batch_norm_options, "batch_norm");
    bool training = cnl_opt_bool(L, 6, "training", false);
    double momentum = cnl_opt_number(L, 6, "momentum", DEFAULT_MOMENTUM);
    double eps = cnl_opt_number(L, 6, "eps", DEFAULT_EPS);
    luaL_argcheck(L, isfinite(momentum), 6, "momentum must be a finite number");
    checkeps(L, 6, eps);
    if (training) {
        if (running_mean) cnl_check_inplace(L, running_mean, "batch_norm (running_mean)");
        if (running_var) cnl_check_inplace(L, running_var, "batch_norm (running_var)");
    }
    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    return cnl_result(L, box, cn_batch_norm(x, running_mean, running_var, w, b, training, momentum, eps, &err), &err);
}

void cnl_open_norm(lua_State *L) {
    static const luaL_Reg functions[] = {
        {"group_norm", l_group_norm}, {"instance_norm", l_instance_norm},
        {"layer_norm", l_layer_norm}, {"batch_norm", l_batch_norm}, {NULL, NULL},
    };
    cnl_register(L, NULL, functions);
}
