/* l_nn.c — Lua binding of the neural-network functional ops (ops_nn.h).
 *
 *   cn.linear(x, w [, b])                     x [*, in], w [out, in], b [out] -> [*, out]
 *   cn.softmax(x, dim)  cn.log_softmax(x, dim)   (also t:softmax(dim), t:log_softmax(dim))
 *   cn.scaled_dot_product_attention(q, k, v [, {mask=, scale=}])
 *   cn.dropout(x [, p = 0.5 [, training = true]])
 *   cn.embedding(ids, weight)                 ids: 1-based row numbers (any shape)
 *   cn.mse_loss(a, b [, {reduction = "mean"}])   cn.l1_loss(a, b [, {reduction = ...}])
 *   cn.cross_entropy(logits, target [, {weight=, reduction=, ignore_index=, label_smoothing=}])
 *
 * dims are 1-based (negatives from the end). Embedding ids and cross-entropy class ids (and
 * ignore_index, default -100) are 1-based too: the binding checks them in Lua's numbering, then
 * hands the engine a 0-based copy. A cross-entropy target with the logits' shape holds class
 * probabilities and is passed as it is. reduction may also be given as a plain string.
 */
#include <math.h>
#include <string.h>

#include "autograd.h"
#include "binding.h"
#include "ops_nn.h"

/* ---- option tables ------------------------------------------------------------------------ */

static cn_reduction check_reduction_name(lua_State *L, int arg, const char *name) {
    if (strcmp(name, "mean") == 0) return CN_REDUCTION_MEAN;
    if (strcmp(name, "sum") == 0) return CN_REDUCTION_SUM;
    if (strcmp(name, "none") == 0) return CN_REDUCTION_NONE;
    luaL_argerror(L, arg, lua_pushfstring(L, "reduction must be \"mean\", \"sum\" or \"none\", got \"%s\"", name));
    return CN_REDUCTION_MEAN;
}

/* reduction at arg: nil (mean), a string, or a table with field reduction (keys checked by the caller). */
static cn_reduction opt_reduction(lua_State *L, int arg) {
    if (lua_type(L, arg) == LUA_TSTRING) return check_reduction_name(L, arg, lua_tostring(L, arg));
    const char *name = cnl_opt_string(L, arg, "reduction", NULL);
    return name ? check_reduction_name(L, arg, name) : CN_REDUCTION_MEAN;
}

/* ---- 1-based ids --------------------------------------------------------------------------- */

/* ids - 1 as a fresh contiguous tensor outside any graph (NULL with err on failure). */
static cn_tensor *zero_based(const cn_tensor *ids, cn_error *err) {
    cn_tensor *r;
    CN_WITHOUT_GRAD(r = cn_binary_scalar(CN_SUB, ids, 1.0f, false, err));
    return r;
}

/* Index of the first element of the 0-based ids that is not an integer in [0, n) (and not
 * `allowed`); -1 when all are fine. */
static int64_t first_bad_id(const cn_tensor *ids, int64_t n, bool has_allowed, int64_t allowed) {
    const float *p = cn_data(ids);
    size_t count = cn_numel(ids);
    for (size_t i = 0; i < count; i++) {
        float v = p[i];
        if (v == floorf(v) && fabsf(v) < 9e15f) {
            int64_t id = (int64_t)v;
            if ((id >= 0 && id < n) || (has_allowed && id == allowed)) continue;
        }
        return (int64_t)i;
    }
    return -1;
}

/* Raises "bad argument #arg (<what> <v> out of range for <pre><n><post> ...)" for a bad 1-based
 * id v: out of 1..n, or not an integer. */
static int bad_id(lua_State *L, int arg, const char *what, double v, int64_t n, const char *pre, const char *post) {
    if (v == floor(v) && fabs(v) < 9e15)
        return luaL_argerror(L, arg, lua_pushfstring(L, "%s %I out of range for %s%I%s (1-based: 1..%I)", what,
                                                     (lua_Integer)v, pre, (lua_Integer)n, post, (lua_Integer)n));
    return luaL_argerror(L, arg, lua_pushfstring(L, "%s %f is not an integer in 1..%I (%s%I%s)", what, (lua_Number)v,
                                                 (lua_Integer)n, pre, (lua_Integer)n, post));
}

/* ---- functions ----------------------------------------------------------------------------- */

static int l_linear(lua_State *L) {
    cn_tensor *x = cnl_checktensor(L, 1), *w = cnl_checktensor(L, 2);
    cn_tensor *b = lua_isnoneornil(L, 3) ? NULL : cnl_checktensor(L, 3);
    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    return cnl_result(L, box, cn_linear(x, w, b, &err), &err);
}

static int softmax_common(lua_State *L, bool log_out) {
    cn_tensor *x = cnl_checktensor(L, 1);
    int dim = cnl_checkdim(L, 2, x->ndim ? x->ndim : 1);
    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    return cnl_result(L, box, log_out ? cn_log_softmax(x, dim, &err) : cn_softmax(x, dim, &err), &err);
}

static int l_softmax(lua_State *L) { return softmax_common(L, false); }
static int l_log_softmax(lua_State *L) { return softmax_common(L, true); }

static int l_sdpa(lua_State *L) {
    cn_tensor *q = cnl_checktensor(L, 1), *k = cnl_checktensor(L, 2), *v = cnl_checktensor(L, 3);
    static const char *const options[] = {"mask", "scale", NULL};
    cnl_check_keys(L, 4, options, "scaled_dot_product_attention");
    cn_tensor *mask = cnl_opt_tensor(L, 4, "mask");
    lua_Number scale = cnl_opt_number(L, 4, "scale", NAN); /* absent: 0, the engine's default 1/sqrt(d) */
    if (isnan(scale)) scale = 0.0;
    else luaL_argcheck(L, scale > 0, 4, "option 'scale' must be a positive number");
    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    return cnl_result(L, box, cn_scaled_dot_product_attention(q, k, v, mask, (double)scale, &err), &err);
}

static int l_dropout(lua_State *L) {
    cn_tensor *x = cnl_checktensor(L, 1);
    lua_Number p = luaL_optnumber(L, 2, 0.5);
    if (!(p >= 0 && p <= 1))
        luaL_argerror(L, 2, lua_pushfstring(L, "dropout probability must be in [0, 1], got %f", p));
    bool training = cnl_optbool(L, 3, 1);
    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    return cnl_result(L, box, cn_dropout(x, (double)p, training, &err), &err);
}

static int l_embedding(lua_State *L) {
    cn_tensor *ids = cnl_checktensor(L, 1), *weight = cnl_checktensor(L, 2);
    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    cn_tensor *ids0 = zero_based(ids, &err);
    if (!ids0) return cnl_raise(L, &err);
    if (weight->ndim == 2) { /* check in Lua's numbering (the engine would name 0-based ids) */
        int64_t bad = first_bad_id(ids0, weight->shape[0], false, 0);
        if (bad >= 0) {
            double v = (double)cn_data(ids0)[bad] + 1.0;
            cn_release(ids0);
            return bad_id(L, 1, "index", v, weight->shape[0], "an embedding table of ", " rows");
        }
    }
    cn_tensor *r = cn_embedding(ids0, weight, &err);
    cn_release(ids0);
    return cnl_result(L, box, r, &err);
}

static int pointwise_loss(lua_State *L, bool l1) {
    cn_tensor *a = cnl_checktensor(L, 1), *b = cnl_checktensor(L, 2);
    static const char *const options[] = {"reduction", NULL};
    if (lua_type(L, 3) != LUA_TSTRING) cnl_check_keys(L, 3, options, l1 ? "l1_loss" : "mse_loss");
    cn_reduction reduction = opt_reduction(L, 3);
    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    cn_tensor *r = l1 ? cn_l1_loss(a, b, reduction, &err) : cn_mse_loss(a, b, reduction, &err);
    return cnl_result(L, box, r, &err);
}

static int l_mse_loss(lua_State *L) { return pointwise_loss(L, false); }
static int l_l1_loss(lua_State *L) { return pointwise_loss(L, true); }

static int l_cross_entropy(lua_State *L) {
    cn_tensor *logits = cnl_checktensor(L, 1), *target = cnl_checktensor(L, 2);
    static const char *const options[] = {"weight", "reduction", "ignore_index", "label_smoothing", NULL};
    if (lua_type(L, 3) != LUA_TSTRING) cnl_check_keys(L, 3, options, "cross_entropy");
    cn_tensor *weight = cnl_opt_tensor(L, 3, "weight");
    cn_reduction reduction = opt_reduction(L, 3);
    lua_Integer ignore = cnl_opt_integer(L, 3, "ignore_index", -100);
    lua_Number smoothing = cnl_opt_number(L, 3, "label_smoothing", 0.0);
    luaL_argcheck(L, smoothing >= 0 && smoothing <= 1, 3, "option 'label_smoothing' must be in [0, 1]");
    luaL_argcheck(L, ignore > LUA_MININTEGER, 3, "option 'ignore_index' out of range");
    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    if (cn_same_shape(logits, target)) /* probabilities: no ids to convert */
        return cnl_result(L, box, cn_cross_entropy(logits, target, weight, reduction, (int64_t)ignore - 1,
                                                   (double)smoothing, &err), &err);
    cn_tensor *t0 = zero_based(target, &err);
    if (!t0) return cnl_raise(L, &err);
    if (logits->ndim >= 1 && target->ndim == logits->ndim - 1) { /* check ids in Lua's numbering */
        int64_t classes = logits->shape[logits->ndim == 1 ? 0 : 1];
        int64_t bad = first_bad_id(t0, classes, true, (int64_t)ignore - 1);
        if (bad >= 0) {
            double v = (double)cn_data(t0)[bad] + 1.0;
            cn_release(t0);
            return bad_id(L, 2, "target", v, classes, "", " classes");
        }
    }
    cn_tensor *r = cn_cross_entropy(logits, t0, weight, reduction, (int64_t)ignore - 1, (double)smoothing, &err);
    cn_release(t0);
    return cnl_result(L, box, r, &err);
}

static const luaL_Reg nn_methods[] = {
    {"softmax", l_softmax}, {"log_softmax", l_log_softmax}, {NULL, NULL}};

static const luaL_Reg nn_functions[] = {
    {"linear", l_linear},
    {"softmax", l_softmax},
    {"log_softmax", l_log_softmax},
    {"scaled_dot_product_attention", l_sdpa},
    {"dropout", l_dropout},
    {"embedding", l_embedding},
    {"mse_loss", l_mse_loss},
    {"l1_loss", l_l1_loss},
    {"cross_entropy", l_cross_entropy},
    {NULL, NULL}};

void cnl_open_nn(lua_State *L) { cnl_register(L, nn_methods, nn_functions); }
