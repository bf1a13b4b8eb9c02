/* l_conv.c — Lua binding of the 2-D convolutions (ops_conv.c).
 *
 *   cn.conv2d(x, w [, b] [, {stride=, padding=, dilation=, groups=, activation="relu"|"softplus"}])
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

static const char *const conv_options[] = {"stride", "padding", "dilation", "groups", "activation", NULL};
static const char *const conv_transpose_options[] = {"stride", "padding", "output_padding", "dilation", "groups", NULL};

/* Pair option `key` of the table at arg into pair[0..1] (untouched when absent), in int's range. */
static void read_pair(lua_State *L, int arg, const char *key, int pair[2]) {
    int64_t v[2];
    if (!cnl_opt_pair(L, arg, key, v)) return;
    for (int i = 0; i < 2; i++) {
        if (v[i] < INT_MIN || v[i] > INT_MAX)
            luaL_argerror(L, arg, lua_pushfstring(L, "option '%s' must be an integer in int's range, got %I", key,
                                                  (lua_Integer)v[i]));
        pair[i] = (int)v[i];
    }
}

/* The options table at arg (nil/none: defaults) into o. */
static void check_opts(lua_State *L, int arg, bool transposed, cn_conv2d_opts *o) {
    *o = (cn_conv2d_opts)CN_CONV2D_OPTS_DEFAULT;
    cnl_check_keys(L, arg, transposed ? conv_transpose_options : conv_options,
                   transposed ? "conv_transpose2d" : "conv2d");
    read_pair(L, arg, "stride", o->stride);
    read_pair(L, arg, "padding", o->padding);
    read_pair(L, arg, "dilation", o->dilation);
    if (transposed) read_pair(L, arg, "output_padding", o->output_padding);
    lua_Integer groups = cnl_opt_integer(L, arg, "groups", o->groups);
    luaL_argcheck(L, groups >= INT_MIN && groups <= INT_MAX, arg, "option 'groups' out of range");
    o->groups = (int)groups;
    if (!transposed) {
        static const char *const acts[] = {"none", "relu", "softplus", NULL};
        const char *name = cnl_opt_string(L, arg, "activation", "none");
        int a = 0;
        while (acts[a] && strcmp(acts[a], name) != 0) a++;
        luaL_argcheck(L, acts[a] != NULL, arg, "option 'activation' must be \"none\", \"relu\" or \"softplus\"");
        o->activation = (cn_conv_act)a;
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

/* cn.conv_route([name]) -> the route before: "auto", "gemm" or "direct" (engine/ops_conv.h);
 * with a name, sets it for every later convolution. */
static int l_conv_route(lua_State *L) {
    static const char *const names[] = {"auto", "gemm", "direct", NULL};
    cn_conv_route before;
    if (lua_isnoneornil(L, 1)) {
        before = cn_conv_set_route(CN_CONV_AUTO);
        cn_conv_set_route(before);
    } else {
        before = cn_conv_set_route((cn_conv_route)luaL_checkoption(L, 1, NULL, names));
    }
    lua_pushstring(L, names[before]);
    return 1;
}

static const luaL_Reg conv_functions[] = {
    {"conv2d", l_conv2d}, {"conv_transpose2d", l_conv_transpose2d}, {"conv_route", l_conv_route},
    {NULL, NULL}};

void cnl_open_conv(lua_State *L) { cnl_register(L, NULL, conv_functions); }
