/* l_profile.c — the binding side of the per-op profiler (engine/profile.h).
 *
 * Every op the binding registers (cnl_register, cnl_setfuncs) is a C closure around its luaL_Reg
 * entry: with the profiler off it calls the op's function directly on the same stack (a pointer
 * test and one call); on, it runs the op in a frame named by the entry (metamethods lose their
 * "__": "__mul" is "mul"), through lua_pcall so that an error raised by the op closes the frame
 * before it propagates. Lua-side reporting is lua/cunet/profile.lua (cn.profile).
 *
 *   cn.profile_enable(on) -> previous state     cn.profile_reset()
 *   cn.profile_entries() -> {{name=, phase="forward"|"backward", calls=, total_s=, self_s=, flops=}, ...}
 */
#include "binding.h"
#include "profile.h"

/* The op of the closure: upvalue 1 is its luaL_Reg entry (static storage). */
static int profiled_call(lua_State *L) {
    const luaL_Reg *reg = lua_touserdata(L, lua_upvalueindex(1));
    if (!cn_profile_enabled()) return reg->func(L);
    const char *name = reg->name[0] == '_' && reg->name[1] == '_' ? reg->name + 2 : reg->name;
    int depth = cn_profile_depth(), nargs = lua_gettop(L);
    lua_pushcfunction(L, reg->func);
    lua_insert(L, 1);
    cn_profile_push(name, CN_PROFILE_FORWARD);
    int status = lua_pcall(L, nargs, LUA_MULTRET, 0);
    cn_profile_unwind(depth);
    if (status != LUA_OK) return lua_error(L);
    return lua_gettop(L);
}

void cnl_setfuncs(lua_State *L, const luaL_Reg *regs) {
    for (const luaL_Reg *r = regs; r->name; r++) {
        lua_pushlightuserdata(L, (void *)r);
        lua_pushcclosure(L, profiled_call, 1);
        lua_setfield(L, -2, r->name);
    }
}

/* cn.profile_enable(on) -> whether it was on */
static int l_profile_enable(lua_State *L) {
    luaL_checktype(L, 1, LUA_TBOOLEAN);
    lua_pushboolean(L, cn_profile_set_enabled(lua_toboolean(L, 1)));
    return 1;
}

/* cn.profile_reset(): drops every recorded row */
static int l_profile_reset(lua_State *L) {
    (void)L;
    cn_profile_reset();
    return 0;
}

/* cn.profile_entries() -> a list of rows in order of first use */
static int l_profile_entries(lua_State *L) {
    size_t n;
    const cn_profile_entry *rows = cn_profile_entries(&n);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        const cn_profile_entry *e = &rows[i];
        lua_createtable(L, 0, 6);
        lua_pushstring(L, e->name);
        lua_setfield(L, -2, "name");
        lua_pushstring(L, e->phase == CN_PROFILE_BACKWARD ? "backward" : "forward");
        lua_setfield(L, -2, "phase");
        lua_pushinteger(L, (lua_Integer)e->calls);
        lua_setfield(L, -2, "calls");
        lua_pushnumber(L, e->total_s);
        lua_setfield(L, -2, "total_s");
        lua_pushnumber(L, e->self_s);
        lua_setfield(L, -2, "self_s");
        lua_pushnumber(L, e->flops);
        lua_setfield(L, -2, "flops");
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

void cnl_open_profile(lua_State *L) {
    static const luaL_Reg functions[] = {
        {"profile_enable", l_profile_enable}, {"profile_reset", l_profile_reset},
        {"profile_entries", l_profile_entries}, {NULL, NULL},
    };
    luaL_setfuncs(L, functions, 0); /* not profiled themselves */
}
