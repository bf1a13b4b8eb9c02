/* l_autograd.c — Lua binding of autograd: requires_grad, .grad, backward, detach, no_grad,
 * and the functional vector-Jacobian product cn.autograd.grad. */
#include "autograd.h"
#include "binding.h"

/* t:requires_grad() -> boolean; t:requires_grad(flag) -> t */
static int l_requires_grad(lua_State *L) {
    cn_tensor *t = cnl_checktensor(L, 1);
    if (lua_isnone(L, 2)) {
        lua_pushboolean(L, t->requires_grad);
        return 1;
    }
    bool flag = lua_toboolean(L, 2);
    if (t->node && !flag)
        return luaL_error(L, "requires_grad: cannot switch off grad of a non-leaf tensor (made by '%s'); use detach()",
                          t->node->op->name);
    t->requires_grad = flag;
    lua_settop(L, 1);
    return 1;
}

/* t.grad: the accumulated gradient (a tensor sharing its storage) or nil */
static int get_grad(lua_State *L) {
    cn_tensor *t = cnl_checktensor(L, 1);
    if (!t->grad) {
        lua_pushnil(L);
        return 1;
    }
    cnl_pushtensor(L, cn_retain(t->grad));
    return 1;
}

/* t.grad = nil | tensor of t's shape */
static int set_grad(lua_State *L) {
    cn_tensor *t = cnl_checktensor(L, 1);
    if (lua_isnil(L, 2)) {
        cn_release(t->grad);
        t->grad = NULL;
        return 0;
    }
    cn_tensor *g = cnl_checktensor(L, 2);
    if (!cn_same_shape(g, t)) {
        char a[160], b[160];
        return luaL_error(L, "grad: assigned gradient has shape %s but the tensor has shape %s",
                          cn_shape_str(a, sizeof a, g->ndim, g->shape), cn_shape_str(b, sizeof b, t->ndim, t->shape));
    }
    cn_retain(g);
    cn_release(t->grad);
    t->grad = g;
    return 0;
}

static int get_is_leaf(lua_State *L) {
    lua_pushboolean(L, cnl_checktensor(L, 1)->node == NULL);
    return 1;
}

static int get_grad_fn(lua_State *L) {
    cn_tensor *t = cnl_checktensor(L, 1);
    if (t->node) lua_pushstring(L, t->node->op->name);
    else lua_pushnil(L);
    return 1;
}

/* t:backward([grad [, retain_graph]]) */
static int l_backward(lua_State *L) {
    cn_tensor *t = cnl_checktensor(L, 1);
    cn_tensor *g = lua_isnoneornil(L, 2) ? NULL : cnl_checktensor(L, 2);
    bool retain = cnl_optbool(L, 3, 0);
    cn_error err;
    if (cn_backward(t, g, retain, &err)) return cnl_raise(L, &err);
    return 0;
}

static int l_detach(lua_State *L) {
    cn_tensor *t = cnl_checktensor(L, 1);
    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    return cnl_result(L, box, cn_detach(t, &err), &err);
}

/* t:zero_grad(): drops the accumulated gradient */
static int l_zero_grad(lua_State *L) {
    cn_tensor *t = cnl_checktensor(L, 1);
    cn_release(t->grad);
    t->grad = NULL;
    return 0;
}

/* cn.no_grad(fn, ...) runs fn(...) with grad mode off (restored even when fn raises) */
static int l_no_grad(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    bool previous = cn_set_grad_enabled(false);
    int status = lua_pcall(L, lua_gettop(L) - 1, LUA_MULTRET, 0);
    cn_set_grad_enabled(previous);
    if (status != LUA_OK) return lua_error(L);
    return lua_gettop(L);
}

static int l_set_grad_enabled(lua_State *L) {
    luaL_checkany(L, 1);
    lua_pushboolean(L, cn_set_grad_enabled(lua_toboolean(L, 1)));
    return 1;
}

static int l_is_grad_enabled(lua_State *L) {
    lua_pushboolean(L, cn_grad_enabled());
    return 1;
}

/* A tensor or a list of tensors at arg, into a GC-owned array; returns the count. */
static int checktensors(lua_State *L, int arg, cn_tensor ***out, const char *what) {
    if (cnl_totensor(L, arg)) {
        cn_tensor **one = lua_newuserdatauv(L, sizeof *one, 0);
        one[0] = cnl_checktensor(L, arg);
        *out = one;
        return 1;
    }
    if (!lua_istable(L, arg)) luaL_typeerror(L, arg, what);
    int n = (int)luaL_len(L, arg);
    luaL_argcheck(L, n > 0, arg, "empty list");
    cn_tensor **ts = lua_newuserdatauv(L, (size_t)n * sizeof *ts, 0);
    for (int i = 0; i < n; i++) {
        lua_geti(L, arg, i + 1);
        ts[i] = cnl_totensor(L, -1);
        if (!ts[i]) luaL_argerror(L, arg, lua_pushfstring(L, "entry %d is a %s, not a tensor", i + 1, luaL_typename(L, -1)));
        lua_pop(L, 1);
    }
    *out = ts;
    return n;
}

/* cn.autograd.grad(outputs, inputs [, grad_outputs [, {retain_graph=, allow_unused=}]]) -> list */
static int l_grad(lua_State *L) {
    lua_settop(L, 4);
    cn_tensor **outs, **ins, **gouts = NULL;
    int n_out = checktensors(L, 1, &outs, "tensor or list of outputs");
    int n_in = checktensors(L, 2, &ins, "tensor or list of inputs");
    if (!lua_isnil(L, 3)) {
        int n_g = checktensors(L, 3, &gouts, "tensor or list of gradients");
        if (n_g != n_out) return luaL_error(L, "grad: %d grad_outputs for %d outputs", n_g, n_out);
    }
    bool retain = false, allow_unused = false;
    if (lua_istable(L, 4)) {
        lua_getfield(L, 4, "retain_graph");
        retain = lua_toboolean(L, -1);
        lua_getfield(L, 4, "allow_unused");
        allow_unused = lua_toboolean(L, -1);
        lua_pop(L, 2);
    }
    lua_createtable(L, n_in, 0); /* boxes first, so results never leak */
    cn_tensor ***boxes = lua_newuserdatauv(L, (size_t)n_in * sizeof *boxes, 0);
    for (int j = 0; j < n_in; j++) {
        boxes[j] = cnl_newbox(L);
        lua_rawseti(L, -3, j + 1);
    }
    cn_tensor **results = lua_newuserdatauv(L, (size_t)n_in * sizeof *results, 0);
    cn_error err;
    if (cn_grad(n_out, outs, gouts, n_in, ins, results, retain, allow_unused, &err)) return cnl_raise(L, &err);
    for (int j = 0; j < n_in; j++) *boxes[j] = results[j];
    lua_pop(L, 2);
    return 1;
}

void cnl_open_autograd(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"requires_grad", l_requires_grad}, {"backward", l_backward}, {"detach", l_detach},
        {"zero_grad", l_zero_grad}, {NULL, NULL},
    };
    static const luaL_Reg functions[] = {
        {"no_grad", l_no_grad}, {"set_grad_enabled", l_set_grad_enabled},
        {"is_grad_enabled", l_is_grad_enabled}, {"autograd_grad", l_grad}, {NULL, NULL},
    };
    cnl_register(L, methods, functions);
    luaL_getmetatable(L, CNL_TENSOR_MT);
    lua_getfield(L, -1, "__properties");
    lua_pushcfunction(L, get_grad);
    lua_setfield(L, -2, "grad");
    lua_pushcfunction(L, get_is_leaf);
    lua_setfield(L, -2, "is_leaf");
    lua_pushcfunction(L, get_grad_fn);
    lua_setfield(L, -2, "grad_fn");
    lua_pop(L, 1);
    lua_getfield(L, -1, "__setters");
    lua_pushcfunction(L, set_grad);
    lua_setfield(L, -2, "grad");
    lua_pop(L, 2);
}
