/* l_ode.c — Lua binding of the ODE solvers: cunet.core.odeint(f, z0, ts, opts).
 *
 * f(t, z) is any Lua function; the engine calls it through dynamics() below in protected mode,
 * so an error (or Ctrl-C) inside f comes back as an engine error and never unwinds through C. */
#include <string.h>

#include "binding.h"
#include "ode.h"

typedef struct {
    lua_State *L;
    int f_index;      /* stack index of f */
    bool table_state; /* z given as a table of tensors (else one tensor) */
} dynamics_ctx;

static int dynamics(void *p, double t, int n, cn_tensor *const *z, cn_tensor **dz, cn_error *err) {
    dynamics_ctx *ctx = p;
    lua_State *L = ctx->L;
    int top = lua_gettop(L);
    if (!lua_checkstack(L, n + 4)) {
        cn_error_set(err, "odeint: Lua stack overflow");
        return -1;
    }
    lua_pushvalue(L, ctx->f_index);
    lua_pushnumber(L, t);
    if (ctx->table_state) {
        lua_createtable(L, n, 0);
        for (int k = 0; k < n; k++) {
            cnl_pushtensor(L, cn_retain(z[k]));
            lua_rawseti(L, -2, k + 1);
        }
    } else {
        cnl_pushtensor(L, cn_retain(z[0]));
    }
    if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
        cn_error_set(err, "%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "error in the dynamics");
        lua_settop(L, top);
        return -1;
    }
    int status = 0;
    if (ctx->table_state) {
        if (!lua_istable(L, -1)) {
            cn_error_set(err, "odeint: the dynamics must return a table of %d tensors (like the state), got a %s", n,
                         luaL_typename(L, -1));
            status = -1;
        }
        for (int k = 0; k < n && !status; k++) {
            lua_rawgeti(L, -1, k + 1);
            cn_tensor *d = cnl_totensor(L, -1);
            if (!d) {
                cn_error_set(err, "odeint: entry %d returned by the dynamics is a %s, not a tensor", k + 1, luaL_typename(L, -1));
                status = -1;
            } else {
                dz[k] = cn_retain(d);
            }
            lua_pop(L, 1);
        }
    } else {
        cn_tensor *d = cnl_totensor(L, -1);
        if (!d) {
            cn_error_set(err, "odeint: the dynamics must return a tensor, got a %s", luaL_typename(L, -1));
            status = -1;
        } else {
            dz[0] = cn_retain(d);
        }
    }
    lua_settop(L, top);
    return status;
}

static const char *const odeint_options[] = {"method", "rtol", "atol", "step_size", "steps", "first_step",
                                             "max_steps", "safety", "pi_beta", "norm_states", NULL};

/* core.odeint(f, z0 (tensor | {tensors}), ts {numbers}, opts) -> solution, stats
 * solution: a tensor [nt, ...] (or a table of them); stats: {nfe=, accepted=, rejected=} */
static int l_odeint(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    bool table_state = lua_istable(L, 2);
    luaL_checktype(L, 3, LUA_TTABLE);
    if (lua_isnoneornil(L, 4)) {
        lua_settop(L, 3);
        lua_newtable(L);
    }
    luaL_checktype(L, 4, LUA_TTABLE);
    int n = 1;
    cn_tensor *z0[32];
    if (table_state) {
        n = (int)luaL_len(L, 2);
        luaL_argcheck(L, n >= 1 && n <= 32, 2, "the state must hold 1 to 32 tensors");
        for (int k = 0; k < n; k++) {
            lua_rawgeti(L, 2, k + 1);
            z0[k] = cnl_totensor(L, -1);
            if (!z0[k]) return luaL_error(L, "odeint: state entry %d is a %s, not a tensor", k + 1, luaL_typename(L, -1));
            lua_pop(L, 1);
        }
    } else {
        z0[0] = cnl_checktensor(L, 2);
    }
    int nt = (int)luaL_len(L, 3);
    luaL_argcheck(L, nt >= 1, 3, "need at least one time");
    double *ts = lua_newuserdatauv(L, (size_t)nt * sizeof *ts, 0);
    for (int i = 0; i < nt; i++) {
        lua_rawgeti(L, 3, i + 1);
        int isnum;
        ts[i] = lua_tonumberx(L, -1, &isnum);
        if (!isnum) return luaL_error(L, "odeint: time %d is a %s, not a number", i + 1, luaL_typename(L, -2 + 1));
        lua_pop(L, 1);
    }
    cn_ode_opts o;
    cn_ode_default_opts(&o);
    cn_error err;
    cnl_check_keys(L, 4, odeint_options, "odeint");
    const char *method = cnl_opt_string(L, 4, "method", NULL);
    if (method && cn_ode_method_from_name(method, &o.method, &err)) return cnl_raise(L, &err);
    o.rtol = cnl_opt_number(L, 4, "rtol", o.rtol);
    o.atol = cnl_opt_number(L, 4, "atol", o.atol);
    o.step_size = cnl_opt_number(L, 4, "step_size", 0);
    bool has_steps = lua_getfield(L, 4, "steps") != LUA_TNIL;
    lua_pop(L, 1);
    o.steps = (int64_t)cnl_opt_integer(L, 4, "steps", 0); /* 0: one step per output interval */
    o.first_step = cnl_opt_number(L, 4, "first_step", 0);
    o.max_steps = (int64_t)cnl_opt_integer(L, 4, "max_steps", (lua_Integer)o.max_steps);
    o.safety = cnl_opt_number(L, 4, "safety", o.safety);
    o.pi_beta = cnl_opt_number(L, 4, "pi_beta", o.pi_beta);
    o.norm_states = (int)cnl_opt_integer(L, 4, "norm_states", 0);
    if (o.step_size < 0 || (has_steps && o.steps < 1) || o.max_steps < 1)
        return luaL_error(L, "odeint: step_size must be >= 0, steps and max_steps >= 1");
    if (o.step_size > 0 && o.steps > 1) return luaL_error(L, "odeint: give step_size or steps, not both");
    bool has_beta = lua_getfield(L, 4, "pi_beta") != LUA_TNIL;
    lua_pop(L, 1);
    if (has_beta && !(o.pi_beta >= 0 && o.pi_beta <= 0.2))
        return luaL_error(L, "odeint: pi_beta must be in [0, 0.2], got %f", o.pi_beta);
    if (o.norm_states < 0 || o.norm_states > n)
        return luaL_error(L, "odeint: norm_states must be in [0, %d] (0: every state tensor), got %d", n, o.norm_states);
    /* results: n boxes for the stacked solutions, created before any engine object */
    lua_createtable(L, n, 0);
    int results = lua_gettop(L);
    cn_tensor ***boxes = lua_newuserdatauv(L, (size_t)n * sizeof *boxes, 0);
    for (int k = 0; k < n; k++) {
        boxes[k] = cnl_newbox(L);
        lua_rawseti(L, results, k + 1);
    }
    cn_tensor **out = lua_newuserdatauv(L, (size_t)nt * n * sizeof *out, 0);
    dynamics_ctx ctx = {L, 1, table_state};
    cn_ode_stats st;
    if (cn_odeint(dynamics, &ctx, n, z0, nt, ts, &o, out, &st, &err)) return cnl_raise(L, &err);
    /* stack each state's trajectory along a new leading time dim (differentiable) */
    cn_tensor *column[4096];
    int status = 0;
    if (nt > 4096) {
        cn_error_set(&err, "odeint: at most 4096 output times");
        status = -1;
    }
    for (int k = 0; k < n && !status; k++) {
        for (int i = 0; i < nt; i++) column[i] = out[i * n + k];
        *boxes[k] = cn_stack(nt, column, 0, &err);
        if (!*boxes[k]) status = -1;
    }
    for (int i = 0; i < nt * n; i++) cn_release(out[i]);
    if (status) return cnl_raise(L, &err);
    lua_settop(L, results);
    if (!table_state) lua_rawgeti(L, results, 1);
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, st.nfe);
    lua_setfield(L, -2, "nfe");
    lua_pushinteger(L, st.accepted);
    lua_setfield(L, -2, "accepted");
    lua_pushinteger(L, st.rejected);
    lua_setfield(L, -2, "rejected");
    return 2;
}

void cnl_open_ode(lua_State *L) {
    static const luaL_Reg functions[] = {{"odeint", l_odeint}, {NULL, NULL}};
    cnl_register(L, NULL, functions);
    /* core.odeint_options: the keys odeint reads, so cn.odeint checks against this one list */
    lua_newtable(L);
    for (int i = 0; odeint_options[i]; i++) {
        lua_pushstring(L, odeint_options[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "odeint_options");
}
