/* l_conv.c — Lua binding of the 2-D convolutions (ops_conv.c).
 *
 *   cn.conv2d(x, w [, b] [, {stride=, padding=, dilation=, groups=}])
 *   cn.conv_transpose2d(x, w [, b] [, {stride=, padding=, output_padding=, dilation=, groups=}])
 *
 * x [N, C, H, W] (or [C, H, W]); b may be nil or left out, and the options table may follow w
 * directly. stride, padding, output_padding and dilation are a number or a {h, w} pair; groups a
 * number. Unknown option names are errors (a typo would otherwise be silently ignored).
 */
#include <limits.h>
#include <string.h>

#include "binding.h"
#include "ops_conv.h"

/* The value at idx as an int: a number with an integral value in int's range. */
static bool to_int(lua_State *L, int idx, int *out) {
    int isint;
    lua_Integer v = lua_tointegerx(L, idx, &isint);
    if (lua_type(L, idx) != LUA_TNUMBER || !isint || v < INT_MIN || v > INT_MAX) return false;
    *out = (int)v;
    return true;
}

/* The option at the top of the stack into pair[0..1]: an integer (both) or a {h, w} pair. */
static void read_pair(lua_State *L, int arg, const char *name, int pair[2]) {
    if (to_int(L, -1, &pair[0])) {
        pair[1] = pair[0];
        return;
    }
    bool ok = lua_istable(L, -1) && luaL_len(L, -1) == 2;
    for (int i = 0; ok && i < 2; i++) {
        lua_geti(L, -1, i + 1);
        ok = to_int(L, -1, &pair[i]);
        lua_pop(L, 1);
    }
    if (!ok)
        luaL_argerror(L, arg, lua_pushfstring(L, "%s must be an integer or a {h, w} pair of integers",
                                              name));
}

/* The options table at arg (nil/none: defaults) into o. */
static void check_opts(lua_State *L, int arg, bool transposed, cn_conv2d_opts *o) {
    *o = (cn_conv2d_opts)CN_CONV2D_OPTS_DEFAULT;
    if (lua_isnoneornil(L, arg)) return;
    luaL_argexpected(L, lua_istable(L, arg), arg, "table of options");
    lua_pushnil(L);
    while (lua_next(L, arg)) {
        const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        if (key && strcmp(key, "stride") == 0) {
            read_pair(L, arg, key, o->stride);
        } else if (key && strcmp(key, "padding") == 0) {
            read_pair(L, arg, key, o->padding);
        } else if (key && strcmp(key, "dilation") == 0) {
            read_pair(L, arg, key, o->dilation);
        } else if (key && transposed && strcmp(key, "output_padding") == 0) {
            read_pair(L, arg, key, o->output_padding);
        } else if (key && strcmp(key, "groups") == 0) {
            if (!to_int(L, -1, &o->groups)) luaL_argerror(L, arg, "groups must be an integer");
        } else {
            luaL_argerror(L, arg, lua_pushfstring(L, "unknown option '%s' (expected stride, padding, %s"
                                                     "dilation or groups)",
                                                  key ? key : luaL_typename(L, -2),
                                                  transposed ? "output_padding, " : ""));
        }
        lua_pop(L, 1);
    }
}

/* x, w [, b] [, opts] */
static int conv(lua_State *L, bool transposed) {
    cn_tensor *x = cnl_checktensor(L, 1), *w = cnl_checktensor(L, 2), *b = NULL;
    int opts_arg = 4;
    if (lua_istable(L, 3)) {
        opts_arg = 3;
        luaL_argcheck(L, lua_isnoneornil(L, 4), 4, "no argument expected after the options table");
    } else if (!lua_isnoneornil(L, 3)) {
        b = cnl_checktensor(L, 3);
    }
    cn_conv2d_opts o;
    check_opts(L, opts_arg, transposed, &o);
    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    cn_tensor *r = transposed ? cn_conv_transpose2d(x, w, b, &o, &err) : cn_conv2d(x, w, b, &o, &err);
    return cnl_result(L, box, r, &err);
}

static int l_conv2d(lua_State *L) { return conv(L, false); }
static int l_conv_transpose2d(lua_State *L) { return conv(L, true); }

static const luaL_Reg conv_functions[] = {
    {"conv2d", l_conv2d}, {"conv_transpose2d", l_conv_transpose2d}, {NULL, NULL}};

void cnl_open_conv(lua_State *L) { cnl_register(L, NULL, conv_functions); }
