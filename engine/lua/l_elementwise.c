/* l_elementwise.c — Lua binding of the elementwise ops: methods, cn.* functions and the arithmetic
 * metamethods (docs/tensor-api.md, "Elementwise"). Operands broadcast as in NumPy; a number may
 * stand on either side of a binary op (t + 1, 2 - t, cn.maximum(t, 0)). */
#include <math.h>
#include <string.h>

#include "binding.h"

/* The tensor at idx, or NULL when the value there is not a tensor; a freed tensor raises. */
static cn_tensor *opttensor(lua_State *L, int idx) {
    if (!luaL_testudata(L, idx, CNL_TENSOR_MT)) return NULL;
    return cnl_checktensor(L, idx);
}

/* ---- unary ------------------------------------------------------------------------------- */

static int unary(lua_State *L, cn_unary_op op) {
    cn_tensor *a = cnl_checktensor(L, 1);
    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    return cnl_result(L, box, cn_unary(op, a, &err), &err);
}

#define UNARY(name, OP) \
    static int l_##name(lua_State *L) { return unary(L, OP); }
UNARY(neg, CN_NEG)
UNARY(exp, CN_EXP)
UNARY(log, CN_LOG)
UNARY(sqrt, CN_SQRT)
UNARY(rsqrt, CN_RSQRT)
UNARY(abs, CN_ABS)
UNARY(sin, CN_SIN)
UNARY(cos, CN_COS)
UNARY(tanh, CN_TANH)
UNARY(sigmoid, CN_SIGMOID)
UNARY(relu, CN_RELU)
UNARY(silu, CN_SILU)
UNARY(softplus, CN_SOFTPLUS)
UNARY(sign, CN_SIGN)
UNARY(square, CN_SQUARE)
UNARY(reciprocal, CN_RECIPROCAL)
UNARY(floor_op, CN_FLOOR) /* l_floor is a luaconf.h macro */
UNARY(ceil, CN_CEIL)
UNARY(round, CN_ROUND)
#undef UNARY

/* t:gelu([{approximate="none"|"tanh"}]) */
static int l_gelu(lua_State *L) {
    cn_tensor *a = cnl_checktensor(L, 1);
    static const char *const options[] = {"approximate", NULL};
    cnl_check_keys(L, 2, options, "gelu");
    const char *mode = cnl_opt_string(L, 2, "approximate", "none");
    if (strcmp(mode, "tanh") != 0 && strcmp(mode, "none") != 0)
        luaL_argerror(L, 2, "approximate must be \"none\" or \"tanh\"");
    cn_unary_op op = strcmp(mode, "tanh") == 0 ? CN_GELU_TANH : CN_GELU;
    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    return cnl_result(L, box, cn_unary(op, a, &err), &err);
}

/* t:clamp(lo, hi): nil leaves a side open; at least one bound. */
static int l_clamp(lua_State *L) {
    cn_tensor *a = cnl_checktensor(L, 1);
    bool has_lo = !lua_isnoneornil(L, 2), has_hi = !lua_isnoneornil(L, 3);
    float lo = has_lo ? (float)luaL_checknumber(L, 2) : -INFINITY;
    float hi = has_hi ? (float)luaL_checknumber(L, 3) : INFINITY;
    luaL_argcheck(L, has_lo || has_hi, 2, "at least one of lo and hi expected");
    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    return cnl_result(L, box, cn_clamp(a, lo, hi, &err), &err);
}

/* ---- binary ------------------------------------------------------------------------------ */

/* op(a, b) where either side may be a number (methods, cn.* functions and metamethods alike). */
static int binary(lua_State *L, cn_binary_op op) {
    cn_tensor *a = opttensor(L, 1), *b = opttensor(L, 2);
    if (!a && !b) {
        if (lua_isnumber(L, 1)) return luaL_typeerror(L, 2, "tensor");
        return luaL_typeerror(L, 1, "tensor or number");
    }
    if (!a && !lua_isnumber(L, 1)) return luaL_typeerror(L, 1, "tensor or number");
    if (!b && !lua_isnumber(L, 2)) return luaL_typeerror(L, 2, "tensor or number");
    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    cn_tensor *r;
    if (a && b)
        r = cn_binary(op, a, b, &err);
    else if (a)
        r = cn_binary_scalar(op, a, (float)lua_tonumber(L, 2), false, &err);
    else
        r = cn_binary_scalar(op, b, (float)lua_tonumber(L, 1), true, &err);
    return cnl_result(L, box, r, &err);
}

#define BINARY(name, OP) \
    static int l_##name(lua_State *L) { return binary(L, OP); }
BINARY(add, CN_ADD)
BINARY(sub, CN_SUB)
BINARY(mul, CN_MUL)
BINARY(div, CN_DIV)
BINARY(pow, CN_POW)
BINARY(maximum, CN_MAXIMUM)
BINARY(minimum, CN_MINIMUM)
BINARY(eq, CN_EQ)
BINARY(ne, CN_NE)
BINARY(lt, CN_LT)
BINARY(le, CN_LE)
BINARY(gt, CN_GT)
BINARY(ge, CN_GE)
#undef BINARY

/* __unm receives the operand twice; only the first counts. */
static int l_unm(lua_State *L) {
    lua_settop(L, 1);
    return unary(L, CN_NEG);
}

/* ---- in place ---------------------------------------------------------------------------- */

/* t:op_(other): t = op(t, other), other a tensor broadcasting to t's shape or a number; returns t. */
static int inplace(lua_State *L, cn_binary_op op, const char *fname) {
    cn_tensor *a = cnl_checktensor(L, 1);
    cn_tensor *b = opttensor(L, 2);
    if (!b && !lua_isnumber(L, 2)) return luaL_typeerror(L, 2, "tensor or number");
    cnl_check_inplace(L, a, fname);
    cn_error err;
    cn_tensor *scalar = NULL;
    if (!b) {
        scalar = cn_scalar((float)lua_tonumber(L, 2), &err);
        if (!scalar) return cnl_raise(L, &err);
        b = scalar;
    }
    int status = cn_binary_(op, a, b, &err);
    cn_release(scalar);
    if (status) return cnl_raise(L, &err);
    lua_settop(L, 1);
    return 1;
}

static int l_add_(lua_State *L) { return inplace(L, CN_ADD, "add_"); }
static int l_sub_(lua_State *L) { return inplace(L, CN_SUB, "sub_"); }
static int l_mul_(lua_State *L) { return inplace(L, CN_MUL, "mul_"); }
static int l_div_(lua_State *L) { return inplace(L, CN_DIV, "div_"); }

/* ---- where ------------------------------------------------------------------------------- */

/* cn.where(cond, a, b): cond != 0 ? a : b, all broadcast together; a or b may be numbers. */
static int l_where(lua_State *L) {
    cn_tensor *cond = cnl_checktensor(L, 1);
    cn_tensor *a = opttensor(L, 2), *b = opttensor(L, 3);
    if (!a && !lua_isnumber(L, 2)) return luaL_typeerror(L, 2, "tensor or number");
    if (!b && !lua_isnumber(L, 3)) return luaL_typeerror(L, 3, "tensor or number");
    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    cn_tensor *sa = NULL, *sb = NULL, *r = NULL;
    if (!a) a = sa = cn_scalar((float)lua_tonumber(L, 2), &err);
    if (a && !b) b = sb = cn_scalar((float)lua_tonumber(L, 3), &err);
    if (a && b) r = cn_where(cond, a, b, &err);
    cn_release(sa);
    cn_release(sb);
    return cnl_result(L, box, r, &err);
}

/* ---- registration ------------------------------------------------------------------------ */

#define COMMON_OPS                                                                            \
    {"add", l_add}, {"sub", l_sub}, {"mul", l_mul}, {"div", l_div}, {"pow", l_pow},           \
    {"neg", l_neg}, {"exp", l_exp}, {"log", l_log}, {"sqrt", l_sqrt}, {"rsqrt", l_rsqrt},     \
    {"abs", l_abs}, {"sin", l_sin}, {"cos", l_cos}, {"tanh", l_tanh},                         \
    {"sigmoid", l_sigmoid}, {"relu", l_relu}, {"silu", l_silu}, {"softplus", l_softplus},     \
    {"gelu", l_gelu}, {"sign", l_sign}, {"square", l_square},                                 \
    {"reciprocal", l_reciprocal}, {"floor", l_floor_op}, {"ceil", l_ceil}, {"round", l_round},   \
    {"clamp", l_clamp}, {"maximum", l_maximum}, {"minimum", l_minimum}, {"eq", l_eq},         \
    {"ne", l_ne}, {"lt", l_lt}, {"le", l_le}, {"gt", l_gt}, {"ge", l_ge}

static const luaL_Reg elementwise_methods[] = {
    COMMON_OPS,
    {"add_", l_add_}, {"sub_", l_sub_}, {"mul_", l_mul_}, {"div_", l_div_},
    {NULL, NULL},
};

static const luaL_Reg elementwise_functions[] = {
    COMMON_OPS,
    {"where", l_where},
    {NULL, NULL},
};

static const luaL_Reg elementwise_meta[] = {
    {"__add", l_add}, {"__sub", l_sub}, {"__mul", l_mul}, {"__div", l_div}, {"__pow", l_pow},
    {"__unm", l_unm},
    {NULL, NULL},
};

void cnl_open_elementwise(lua_State *L) {
    cnl_register(L, elementwise_methods, elementwise_functions);
    luaL_getmetatable(L, CNL_TENSOR_MT);
    cnl_setfuncs(L, elementwise_meta);
    lua_pop(L, 1);
}
