/* l_autograd.c — Lua binding of autograd: requires_grad, .grad, backward, detach, no_grad,
 * and the functional vector-Jacobian product cn.autograd.grad. */
#include <stdlib.h>

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

/* The Lua state of the innermost backward or grad call in progress, for custom backwards written
 * in Lua (the engine knows nothing of Lua, so the binding keeps it). Per thread. */
static _Thread_local lua_State *backward_L;

/* t:backward([grad [, opts]]), t:backward(opts): opts {retain_graph=, create_graph=} (retain_graph
 * defaults to create_graph, as torch), or a boolean retain_graph */
static int l_backward(lua_State *L) {
    cn_tensor *t = cnl_checktensor(L, 1);
    lua_settop(L, 3);
    if (lua_istable(L, 2) && !cnl_totensor(L, 2)) { /* t:backward(opts) */
        lua_pushvalue(L, 2);
        lua_replace(L, 3);
        lua_pushnil(L);
        lua_replace(L, 2);
    }
    cn_tensor *g = lua_isnil(L, 2) ? NULL : cnl_checktensor(L, 2);
    unsigned flags = 0;
    if (lua_istable(L, 3)) {
        static const char *const options[] = {"retain_graph", "create_graph", NULL};
        cnl_check_keys(L, 3, options, "backward");
        bool create = cnl_opt_bool(L, 3, "create_graph", false);
        flags = (create ? CN_CREATE_GRAPH : 0) | (cnl_opt_bool(L, 3, "retain_graph", create) ? CN_RETAIN_GRAPH : 0);
    } else if (!lua_isnil(L, 3)) {
        luaL_argexpected(L, lua_isboolean(L, 3), 3, "table of options or boolean retain_graph");
        flags = lua_toboolean(L, 3) ? CN_RETAIN_GRAPH : 0;
    }
    cn_error err;
    lua_State *outer = backward_L;
    backward_L = L;
    int status = cn_backward(t, g, flags, &err);
    backward_L = outer;
    if (status) return cnl_raise(L, &err);
    return 0;
}

/* ---- custom differentiable functions written in Lua ----------------------------------------- */

typedef struct {
    lua_State *main;  /* the main thread: alive as long as the state, for unref */
    int fn_ref;       /* registry reference to the Lua backward */
} lua_backward_ctx;

static void lua_backward_free(void *p) {
    lua_backward_ctx *ctx = p;
    luaL_unref(ctx->main, LUA_REGISTRYINDEX, ctx->fn_ref);
    free(ctx);
}

/* Calls the Lua backward fn(grad_output) -> {grad_1, ..., grad_n} (nil for none) in protected
 * mode: a Lua error becomes an engine error and never unwinds through the engine. */
static int lua_backward(cn_node *n, const cn_tensor *gout, cn_tensor **gi, cn_error *err) {
    lua_State *L = backward_L;
    lua_backward_ctx *ctx = n->ctx;
    if (!L) {
        cn_error_set(err, "custom backward: called outside a Lua backward or grad call");
        return -1;
    }
    int top = lua_gettop(L);
    if (!lua_checkstack(L, 4)) {
        cn_error_set(err, "custom backward: Lua stack overflow");
        return -1;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, ctx->fn_ref);
    cnl_pushtensor(L, cn_retain((cn_tensor *)gout));
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        cn_error_set(err, "%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "error object is not a string");
        lua_settop(L, top);
        return -1;
    }
    int status = 0;
    if (n->n_inputs == 1 && cnl_totensor(L, -1)) { /* one input: a bare tensor is fine */
        lua_createtable(L, 1, 0);
        lua_insert(L, -2);
        lua_rawseti(L, -2, 1);
    }
    if (!lua_istable(L, -1)) {
        cn_error_set(err, "custom backward must return a table of %d gradients (nil for none), got a %s",
                     n->n_inputs, luaL_typename(L, -1));
        status = -1;
    }
    for (int i = 0; i < n->n_inputs && !status; i++) {
        lua_rawgeti(L, -1, i + 1);
        if (!lua_isnil(L, -1)) {
            cn_tensor *g = cnl_totensor(L, -1);
            if (!g || !cn_same_shape(g, n->inputs[i])) {
                char a[160], b[160];
                cn_error_set(err, "custom backward: gradient %d must be a tensor of shape %s, got %s", i + 1,
                             cn_shape_str(a, sizeof a, n->inputs[i]->ndim, n->inputs[i]->shape),
                             g ? cn_shape_str(b, sizeof b, g->ndim, g->shape) : luaL_typename(L, -1));
                status = -1;
            } else if (n->inputs[i]->requires_grad) {
                gi[i] = cn_retain(g);
            }
        }
        lua_pop(L, 1);
    }
    lua_settop(L, top);
    return status;
}

/* create_graph through a Lua backward: refused, as the Lua code runs outside the graph (odeint's
 * adjoint solves its backward ODE under no_grad), so its gradients would be silently detached. */
static int lua_backward_graph(cn_node *n, const cn_tensor *gout, cn_tensor **gi, cn_error *err) {
    (void)n, (void)gout, (void)gi;
    cn_error_set(err, "create_graph is not supported through a custom Lua function (cn.autograd.custom, or "
                 "cn.odeint with adjoint=true: use the direct backpropagation of odeint for higher order)");
    return -1;
}

static const cn_op_def op_lua_function = {"lua_function", lua_backward, lua_backward_graph};

/* cn.autograd.custom(inputs, output, backward) -> output: makes output (computed by the caller,
 * typically under no_grad) differentiable w.r.t. the list of inputs, backward(grad_output)
 * returning their gradients. Grad mode is off while backward runs (cn.enable_grad turns it on). */
static int l_custom(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    cn_tensor *out = cnl_checktensor(L, 2);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    if (out->node)
        return luaL_error(L, "custom: the output already belongs to a graph (made by '%s'); compute it under cn.no_grad",
                          out->node->op->name);
    int n = (int)luaL_len(L, 1);
    cn_tensor **ins = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *ins, 0);
    for (int i = 0; i < n; i++) {
        lua_geti(L, 1, i + 1);
        ins[i] = cnl_totensor(L, -1);
        if (!ins[i]) return luaL_error(L, "custom: input %d is a %s, not a tensor", i + 1, luaL_typename(L, -1));
        lua_pop(L, 1);
    }
    lua_backward_ctx *ctx = malloc(sizeof *ctx);
    if (!ctx) return luaL_error(L, "custom: out of memory");
    cn_node *node;
    cn_error err;
    if (cn_record(out, &op_lua_function, n, ins, &node, &err)) {
        free(ctx);
        return cnl_raise(L, &err);
    }
    if (!node) { /* nothing requires grad: a plain tensor */
        free(ctx);
    } else {
        lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
        ctx->main = lua_tothread(L, -1);
        lua_pop(L, 1);
        lua_pushvalue(L, 3);
        ctx->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        node->ctx = ctx;
        node->ctx_free = lua_backward_free;
    }
    lua_pushvalue(L, 2);
    return 1;
}

/* cn.enable_grad(fn, ...) runs fn(...) with grad mode on (restored even when fn raises) */
static int l_enable_grad(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    bool previous = cn_set_grad_enabled(true);
    int status = lua_pcall(L, lua_gettop(L) - 1, LUA_MULTRET, 0);
    cn_set_grad_enabled(previous);
    if (status != LUA_OK) return lua_error(L);
    return lua_gettop(L);
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

/* cn.autograd.grad(outputs, inputs [, grad_outputs [, {retain_graph=, allow_unused=, create_graph=}]])
 * -> list; retain_graph defaults to create_graph, as torch */
static int l_grad(lua_State *L) {
    lua_settop(L, 4);
    cn_tensor **outs, **ins, **gouts = NULL;
    int n_out = checktensors(L, 1, &outs, "tensor or list of outputs");
    int n_in = checktensors(L, 2, &ins, "tensor or list of inputs");
    if (!lua_isnil(L, 3)) {
        int n_g = checktensors(L, 3, &gouts, "tensor or list of gradients");
        if (n_g != n_out) return luaL_error(L, "grad: %d grad_outputs for %d outputs", n_g, n_out);
    }
    static const char *const options[] = {"retain_graph", "allow_unused", "create_graph", NULL};
    cnl_check_keys(L, 4, options, "grad");
    bool create = cnl_opt_bool(L, 4, "create_graph", false);
    unsigned flags = (create ? CN_CREATE_GRAPH : 0) |
                     (cnl_opt_bool(L, 4, "retain_graph", create) ? CN_RETAIN_GRAPH : 0) |
                     (cnl_opt_bool(L, 4, "allow_unused", false) ? CN_ALLOW_UNUSED : 0);
    lua_createtable(L, n_in, 0); /* boxes first, so results never leak */
    cn_tensor ***boxes = lua_newuserdatauv(L, (size_t)n_in * sizeof *boxes, 0);
    for (int j = 0; j < n_in; j++) {
        boxes[j] = cnl_newbox(L);
        lua_rawseti(L, -3, j + 1);
    }
    cn_tensor **results = lua_newuserdatauv(L, (size_t)n_in * sizeof *results, 0);
    cn_error err;
    lua_State *outer = backward_L;
    backward_L = L;
    int status = cn_grad(n_out, outs, gouts, n_in, ins, results, flags, &err);
    backward_L = outer;
    if (status) return cnl_raise(L, &err);
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
        {"is_grad_enabled", l_is_grad_enabled}, {"autograd_grad", l_grad}, {"autograd_custom", l_custom},
        {"enable_grad", l_enable_grad}, {NULL, NULL},
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
