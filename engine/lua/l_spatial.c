/* l_spatial.c — Lua binding of the spatial ops (ops_spatial.c), as torch.nn.functional:
 *
 *   cn.upsample(x, {size={h, w} | scale_factor=s | {sh, sw}, mode="nearest"|"bilinear",
 *                   align_corners=false, recompute_scale_factor=false})      (also cn.interpolate)
 *   cn.avg_pool2d(x, kernel [, {stride=kernel, padding=0, ceil_mode=false, count_include_pad=true}])
 *   cn.max_pool2d(x, kernel [, {stride=kernel, padding=0, dilation=1, ceil_mode=false}])
 *   cn.adaptive_avg_pool2d(x, size)
 *   cn.pad(x, pads [, mode="constant" [, value=0]])      or cn.pad(x, pads, {mode=, value=})
 *
 * Sizes, kernels, strides, paddings and dilations are a number or an {h, w} pair. pads lists
 * (left, right, top, bottom, ...) in torch's order, last dim first. With scale_factor the output
 * is floor(in * scale) and, as torch, the source index uses 1 / scale (recompute_scale_factor=true
 * uses in / out instead). Each function is also a tensor method (x:max_pool2d(2)). Unknown option
 * names are errors, so a typo never passes silently.
 */
#include <math.h>
#include <string.h>

#include "binding.h"
#include "ops_spatial.h"

/* The value at the top of the stack as an integer or an {h, w} pair of integers into out; raises
 * naming `what` at argument arg otherwise. Pops the value. */
static void pop_pair(lua_State *L, int arg, const char *what, int64_t out[2]) {
    int isint;
    if (lua_type(L, -1) == LUA_TNUMBER) {
        lua_Integer v = lua_tointegerx(L, -1, &isint);
        if (!isint) luaL_argerror(L, arg, lua_pushfstring(L, "%s must be an integer, got %s", what, lua_tostring(L, -1)));
        out[0] = out[1] = v;
    } else if (lua_istable(L, -1) && luaL_len(L, -1) == 2) {
        for (int i = 0; i < 2; i++) {
            lua_geti(L, -1, i + 1);
            out[i] = lua_tointegerx(L, -1, &isint);
            if (!isint) luaL_argerror(L, arg, lua_pushfstring(L, "%s must be an integer or a pair {h, w} of integers", what));
            lua_pop(L, 1);
        }
    } else {
        luaL_argerror(L, arg, lua_pushfstring(L, "%s must be an integer or a pair {h, w}, got %s", what,
                                              luaL_typename(L, -1)));
    }
    lua_pop(L, 1);
}

/* ---- upsample / interpolate ----------------------------------------------------------------- */

static const char *const upsample_options[] = {"size", "scale_factor", "mode", "align_corners",
                                               "recompute_scale_factor", NULL};

/* x, {size= | scale_factor=, mode=, align_corners=, recompute_scale_factor=} */
static int l_upsample(lua_State *L) {
    cn_tensor *x = cnl_checktensor(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    cnl_check_keys(L, 2, upsample_options, "upsample");
    const char *mode = cnl_opt_string(L, 2, "mode", "nearest");
    bool bilinear = strcmp(mode, "bilinear") == 0;
    if (!bilinear && strcmp(mode, "nearest") != 0)
        luaL_argerror(L, 2, lua_pushfstring(L, "mode must be \"nearest\" or \"bilinear\", got \"%s\"", mode));
    lua_getfield(L, 2, "align_corners");
    bool has_align = !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (has_align && !bilinear)
        luaL_argerror(L, 2, "align_corners can only be set with mode \"bilinear\"");
    bool align_corners = cnl_opt_bool(L, 2, "align_corners", false);
    bool recompute = cnl_opt_bool(L, 2, "recompute_scale_factor", false);

    int64_t size[2] = {1, 1};
    double scale[2] = {0.0, 0.0};
    bool has_size = cnl_opt_pair(L, 2, "size", size);
    int type = lua_getfield(L, 2, "scale_factor");
    if (has_size == (type != LUA_TNIL))
        luaL_argerror(L, 2, "give exactly one of size and scale_factor");
    if (type != LUA_TNIL) {
        for (int i = 0; i < 2; i++) {
            int isnum = 0;
            if (type == LUA_TTABLE && luaL_len(L, -1) == 2) {
                lua_geti(L, -1, i + 1);
                scale[i] = lua_tonumberx(L, -1, &isnum);
                lua_pop(L, 1);
            } else if (type == LUA_TNUMBER) {
                scale[i] = lua_tonumberx(L, -1, &isnum);
            }
            if (!isnum || !(scale[i] > 0) || isinf(scale[i]))
                luaL_argerror(L, 2, "scale_factor must be a positive number or a pair {sh, sw} of them");
        }
        /* out = floor(in * scale); the engine reports a bad input before these are used */
        if (x->ndim == 4)
            for (int i = 0; i < 2; i++) {
                double out = floor((double)x->shape[2 + i] * scale[i]);
                if (out > (double)(INT64_C(1) << 40))
                    luaL_argerror(L, 2, lua_pushfstring(L, "scale_factor %f gives an output size too large", scale[i]));
                size[i] = (int64_t)out;
            }
        if (recompute) scale[0] = scale[1] = 0.0;
    }
    lua_pop(L, 1);

    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    cn_tensor *r = bilinear ? cn_upsample_bilinear2d_scaled(x, size[0], size[1], align_corners, scale[0], scale[1], &err)
                            : cn_upsample_nearest2d_scaled(x, size[0], size[1], scale[0], scale[1], &err);
    return cnl_result(L, box, r, &err);
}

/* ---- pooling -------------------------------------------------------------------------------- */

static const char *const avg_pool_options[] = {"stride", "padding", "ceil_mode", "count_include_pad", NULL};
static const char *const max_pool_options[] = {"stride", "padding", "dilation", "ceil_mode", NULL};

/* x, kernel, {stride=, padding=, ceil_mode=, count_include_pad=} */
static int l_avg_pool2d(lua_State *L) {
    cn_tensor *x = cnl_checktensor(L, 1);
    int64_t kernel[2], stride[2], padding[2] = {0, 0};
    lua_pushvalue(L, 2);
    pop_pair(L, 2, "kernel size", kernel);
    cnl_check_keys(L, 3, avg_pool_options, "avg_pool2d");
    if (!cnl_opt_pair(L, 3, "stride", stride)) stride[0] = kernel[0], stride[1] = kernel[1];
    cnl_opt_pair(L, 3, "padding", padding);
    bool ceil_mode = cnl_opt_bool(L, 3, "ceil_mode", false);
    bool count_include_pad = cnl_opt_bool(L, 3, "count_include_pad", true);
    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    return cnl_result(L, box, cn_avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad, &err), &err);
}

/* x, kernel, {stride=, padding=, dilation=, ceil_mode=} */
static int l_max_pool2d(lua_State *L) {
    cn_tensor *x = cnl_checktensor(L, 1);
    int64_t kernel[2], stride[2], padding[2] = {0, 0}, dilation[2] = {1, 1};
    lua_pushvalue(L, 2);
    pop_pair(L, 2, "kernel size", kernel);
    cnl_check_keys(L, 3, max_pool_options, "max_pool2d");
    if (!cnl_opt_pair(L, 3, "stride", stride)) stride[0] = kernel[0], stride[1] = kernel[1];
    cnl_opt_pair(L, 3, "padding", padding);
    cnl_opt_pair(L, 3, "dilation", dilation);
    bool ceil_mode = cnl_opt_bool(L, 3, "ceil_mode", false);
    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    return cnl_result(L, box, cn_max_pool2d(x, kernel, stride, padding, dilation, ceil_mode, &err), &err);
}

/* x, size */
static int l_adaptive_avg_pool2d(lua_State *L) {
    cn_tensor *x = cnl_checktensor(L, 1);
    int64_t size[2];
    lua_pushvalue(L, 2);
    pop_pair(L, 2, "output size", size);
    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    return cnl_result(L, box, cn_adaptive_avg_pool2d(x, size[0], size[1], &err), &err);
}

/* ---- pad ------------------------------------------------------------------------------------ */

static const char *const pad_options[] = {"mode", "value", NULL};

/* x, pads, mode, value   or   x, pads, {mode=, value=} */
static int l_pad(lua_State *L) {
    cn_tensor *x = cnl_checktensor(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_Integer n = luaL_len(L, 2);
    if (n % 2 != 0)
        luaL_argerror(L, 2, lua_pushfstring(L, "padding must have an even number of entries, got %d", (int)n));
    if (n > 2 * CN_MAX_DIMS)
        luaL_argerror(L, 2, lua_pushfstring(L, "padding has %d entries, at most %d supported", (int)n, 2 * CN_MAX_DIMS));
    int64_t pads[2 * CN_MAX_DIMS];
    for (lua_Integer i = 0; i < n; i++) {
        int isint;
        lua_geti(L, 2, i + 1);
        pads[i] = lua_tointegerx(L, -1, &isint);
        lua_pop(L, 1);
        if (!isint) luaL_argerror(L, 2, lua_pushfstring(L, "padding entry %d is not an integer", (int)i + 1));
    }
    /* mode and value: arguments 3 and 4, or fields of an options table at 3 */
    int mode_idx = 3, value_idx = 4, value_arg = 4;
    if (lua_istable(L, 3)) {
        cnl_check_keys(L, 3, pad_options, "pad");
        lua_getfield(L, 3, "mode");
        lua_getfield(L, 3, "value");
        mode_idx = lua_gettop(L) - 1, value_idx = lua_gettop(L), value_arg = 3;
    }
    static const char *const modes[] = {"constant", "reflect", "replicate", NULL};
    static const cn_pad_mode mode_of[] = {CN_PAD_CONSTANT, CN_PAD_REFLECT, CN_PAD_REPLICATE};
    int m = 0;
    if (!lua_isnoneornil(L, mode_idx)) {
        const char *name = lua_type(L, mode_idx) == LUA_TSTRING ? lua_tostring(L, mode_idx) : "";
        while (modes[m] && strcmp(modes[m], name) != 0) m++;
        if (!modes[m])
            luaL_argerror(L, 3, lua_pushfstring(L, "mode must be \"constant\", \"reflect\" or \"replicate\", got '%s'",
                                                luaL_tolstring(L, mode_idx, NULL)));
    }
    lua_Number value = 0.0;
    if (!lua_isnoneornil(L, value_idx)) {
        int isnum;
        value = lua_tonumberx(L, value_idx, &isnum);
        if (!isnum) luaL_argerror(L, value_arg, "value must be a number");
        if (mode_of[m] != CN_PAD_CONSTANT && value != 0.0)
            luaL_argerror(L, value_arg, lua_pushfstring(L, "padding mode \"%s\" takes no value", modes[m]));
    }
    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    return cnl_result(L, box, cn_pad(x, (int)(n / 2), pads, mode_of[m], (float)value, &err), &err);
}

static const luaL_Reg spatial_functions[] = {
    {"upsample", l_upsample},
    {"interpolate", l_upsample},
    {"avg_pool2d", l_avg_pool2d},
    {"max_pool2d", l_max_pool2d},
    {"adaptive_avg_pool2d", l_adaptive_avg_pool2d},
    {"pad", l_pad},
    {NULL, NULL},
};

void cnl_open_spatial(lua_State *L) { cnl_register(L, spatial_functions, spatial_functions); }
