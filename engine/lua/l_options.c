/* l_options.c — the binding's one set of option-table readers (as lauxlib's luaL_opt* family).
 *
 *   static const char *const batch_norm_options[] = {"training", "momentum", "eps", NULL};
 *   cnl_check_keys(L, 6, batch_norm_options, "batch_norm");   -- first: a typo never runs silently
 *   bool training = cnl_opt_bool(L, 6, "training", false);
 *
 * Readers take the stack index of the options table; when the value there is not a table (nil,
 * none, or a shorthand such as a plain reduction string) every reader returns its default. A value
 * of the wrong type raises "bad argument #idx to 'fname' (option 'key' must be ..., got ...)".
 */
#include <string.h>

#include "binding.h"

bool cnl_check_keys(lua_State *L, int idx, const char *const *allowed, const char *fname) {
    if (lua_isnoneornil(L, idx)) return false;
    idx = lua_absindex(L, idx);
    luaL_argexpected(L, lua_istable(L, idx), idx, "options table");
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1); /* the value; the key stays for lua_next */
        bool known = false;
        if (lua_type(L, -1) == LUA_TSTRING)
            for (const char *const *a = allowed; *a && !known; a++) known = strcmp(lua_tostring(L, -1), *a) == 0;
        if (!known) {
            const char *key = luaL_tolstring(L, -1, NULL); /* not lua_tostring: it would change the key for lua_next */
            luaL_Buffer b;
            luaL_buffinit(L, &b);
            for (const char *const *a = allowed; *a; a++) {
                if (a != allowed) luaL_addstring(&b, ", ");
                luaL_addstring(&b, *a);
            }
            luaL_pushresult(&b);
            luaL_error(L, "%s: unknown option '%s' (known: %s)", fname, key, lua_tostring(L, -1));
        }
    }
    return true;
}

/* Pushes field key of the table at idx (nil when idx holds no table); returns its type. */
static int push_field(lua_State *L, int idx, const char *key) {
    if (!lua_istable(L, idx)) {
        lua_pushnil(L);
        return LUA_TNIL;
    }
    return lua_getfield(L, idx, key);
}

static int bad_option(lua_State *L, int idx, const char *key, const char *expected) {
    return luaL_argerror(L, idx, lua_pushfstring(L, "option '%s' must be %s, got %s", key, expected,
                                                 lua_type(L, -1) == LUA_TNUMBER ? lua_tostring(L, -1)
                                                                                : luaL_typename(L, -1)));
}

lua_Number cnl_opt_number(lua_State *L, int idx, const char *key, lua_Number def) {
    int type = push_field(L, idx, key);
    if (type != LUA_TNIL && type != LUA_TNUMBER) bad_option(L, idx, key, "a number");
    lua_Number v = type == LUA_TNIL ? def : lua_tonumber(L, -1);
    lua_pop(L, 1);
    return v;
}

lua_Integer cnl_opt_integer(lua_State *L, int idx, const char *key, lua_Integer def) {
    int type = push_field(L, idx, key), isint = 1;
    lua_Integer v = def;
    if (type != LUA_TNIL) {
        v = type == LUA_TNUMBER ? lua_tointegerx(L, -1, &isint) : 0;
        if (type != LUA_TNUMBER || !isint) bad_option(L, idx, key, "an integer");
    }
    lua_pop(L, 1);
    return v;
}

bool cnl_opt_bool(lua_State *L, int idx, const char *key, bool def) {
    int type = push_field(L, idx, key);
    if (type != LUA_TNIL && type != LUA_TBOOLEAN) bad_option(L, idx, key, "a boolean");
    bool v = type == LUA_TNIL ? def : lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

const char *cnl_opt_string(lua_State *L, int idx, const char *key, const char *def) {
    int type = push_field(L, idx, key);
    if (type != LUA_TNIL && type != LUA_TSTRING) bad_option(L, idx, key, "a string");
    const char *v = type == LUA_TNIL ? def : lua_tostring(L, -1);
    lua_pop(L, 1); /* the table still holds the string */
    return v;
}

cn_tensor *cnl_opt_tensor(lua_State *L, int idx, const char *key) {
    int type = push_field(L, idx, key);
    cn_tensor *t = NULL;
    if (type != LUA_TNIL && !(t = cnl_totensor(L, -1))) bad_option(L, idx, key, "a tensor");
    lua_pop(L, 1); /* the table still holds the userdata */
    return t;
}

/* The value on top of the stack as an integer; false when it is none. */
static bool top_integer(lua_State *L, int64_t *out) {
    int isint;
    lua_Integer v = lua_tointegerx(L, -1, &isint);
    if (lua_type(L, -1) != LUA_TNUMBER || !isint) return false;
    *out = (int64_t)v;
    return true;
}

bool cnl_opt_pair(lua_State *L, int idx, const char *key, int64_t out[2]) {
    int type = push_field(L, idx, key);
    if (type == LUA_TNIL) {
        lua_pop(L, 1);
        return false;
    }
    int64_t pair[2] = {0, 0};
    bool ok;
    if (type == LUA_TNUMBER) {
        ok = top_integer(L, &pair[0]);
        pair[1] = pair[0];
    } else {
        ok = type == LUA_TTABLE && luaL_len(L, -1) == 2;
        for (int i = 0; ok && i < 2; i++) {
            lua_geti(L, -1, i + 1);
            ok = top_integer(L, &pair[i]);
            lua_pop(L, 1);
        }
    }
    if (!ok) bad_option(L, idx, key, "an integer or a {h, w} pair of integers");
    lua_pop(L, 1);
    out[0] = pair[0];
    out[1] = pair[1];
    return true;
}

cn_tensor *cnl_opttensor(lua_State *L, int arg) {
    return lua_isnoneornil(L, arg) ? NULL : cnl_checktensor(L, arg);
}
