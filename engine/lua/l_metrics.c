/* l_metrics.c — Lua binding of the metrics (metrics.h), as the kernels table core.metrics that
 * lua/cunet/metrics.lua wraps with options, defaults and single-image handling:
 *
 *   m.ssim(a, b, data_range, sigma, win_size, k1, k2, return_map) -> {v1, ..., vN} [, map]
 *   m.ms_ssim(a, b, data_range, sigma, win_size, k1, k2, {w1, ..., wL}) -> {v1, ..., vN}
 *   m.psnr(a, b, data_range) -> {v1, ..., vN}
 *   m.ms_ssim_max_scales(h, w, win_size, max_scales) -> L;  m.ms_ssim_weights() -> {0.0448, ...}
 *   m.ssim_window(sigma, win_size) -> {taps...}
 *   m.feature_stats([dim]) -> stats   (methods: add, merge, count, dim, mean, cov, parts, free)
 *   m.feature_stats_from(count, mean_hi, mean_lo, cov_hi, cov_lo) -> stats
 *   m.fid(stats_a, stats_b) -> number;  m.mmd2(x, y) -> number
 *   m.kid(x, y, subsets, subset_size) -> mean, std, {v1, ..., v_subsets}
 *
 * Images are 4-D tensors [N, C, H, W]; features 2-D [N, D]. Per-image values come back as Lua
 * numbers (double). Statistics are full userdata of metatable "cunet.FeatureStats" holding a
 * cn_feature_stats*, freed by __gc, __close or :free(). parts() splits each double into two
 * float32 tensors, hi = float(v) and lo = float(v - hi), so a safetensors file (float32) keeps
 * about 48 bits of every mean and covariance entry.
 */
#include <math.h>
#include <string.h>

#include "binding.h"
#include "metrics.h"

#define STATS_MT "cunet.FeatureStats"

/* A scratch array of n doubles owned by a userdata pushed on the stack (collected even when a
 * later check raises). */
static double *scratch(lua_State *L, size_t n) {
    return lua_newuserdatauv(L, (n ? n : 1) * sizeof(double), 0);
}

static void push_values(lua_State *L, const double *v, int64_t n) {
    lua_createtable(L, (int)n, 0);
    for (int64_t i = 0; i < n; i++) {
        lua_pushnumber(L, v[i]);
        lua_rawseti(L, -2, i + 1);
    }
}

static cn_tensor *check_images(lua_State *L, int arg) {
    cn_tensor *t = cnl_checktensor(L, arg);
    if (t->ndim != 4) {
        char s[96];
        cn_shape_str(s, sizeof s, t->ndim, t->shape);
        luaL_argerror(L, arg, lua_pushfstring(L, "4-D images [N, C, H, W] expected, got %s", s));
    }
    return t;
}

static cn_ssim_params check_params(lua_State *L, int first) {
    cn_ssim_params p = cn_ssim_defaults(luaL_checknumber(L, first));
    p.sigma = luaL_optnumber(L, first + 1, p.sigma);
    lua_Integer win = luaL_optinteger(L, first + 2, 0);
    luaL_argcheck(L, win >= 0 && win <= CN_SSIM_MAX_WIN, first + 2, "window size out of range");
    p.win_size = (int)win;
    p.k1 = luaL_optnumber(L, first + 3, p.k1);
    p.k2 = luaL_optnumber(L, first + 4, p.k2);
    return p;
}

/* ---- SSIM, MS-SSIM, PSNR --------------------------------------------------------------------- */

static int l_ssim(lua_State *L) {
    cn_tensor *a = check_images(L, 1), *b = check_images(L, 2);
    cn_ssim_params p = check_params(L, 3);
    bool want_map = lua_toboolean(L, 8);
    double *v = scratch(L, (size_t)a->shape[0]);
    cn_tensor **box = want_map ? cnl_newbox(L) : NULL; /* stack: ..., v, [box] */
    cn_tensor *map = NULL;
    cn_error err;
    if (cn_ssim(a, b, &p, v, want_map ? &map : NULL, &err)) return cnl_raise(L, &err);
    push_values(L, v, a->shape[0]);
    if (!want_map) return 1;
    lua_pushvalue(L, -2);
    cnl_result(L, box, map, &err);
    return 2;
}

static int l_ms_ssim(lua_State *L) {
    cn_tensor *a = check_images(L, 1), *b = check_images(L, 2);
    cn_ssim_params p = check_params(L, 3);
    luaL_checktype(L, 8, LUA_TTABLE);
    lua_Integer n = luaL_len(L, 8);
    luaL_argcheck(L, n >= 1 && n <= CN_MS_SSIM_MAX_SCALES, 8, "1 to 16 scale weights expected");
    double weights[CN_MS_SSIM_MAX_SCALES];
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, 8, i);
        int isnum;
        weights[i - 1] = lua_tonumberx(L, -1, &isnum);
        if (!isnum) luaL_argerror(L, 8, lua_pushfstring(L, "weight %d is not a number", (int)i));
        lua_pop(L, 1);
    }
    double *v = scratch(L, (size_t)a->shape[0]);
    cn_error err;
    if (cn_ms_ssim(a, b, &p, (int)n, weights, v, &err)) return cnl_raise(L, &err);
    push_values(L, v, a->shape[0]);
    return 1;
}

static int l_psnr(lua_State *L) {
    cn_tensor *a = check_images(L, 1), *b = check_images(L, 2);
    double range = luaL_checknumber(L, 3);
    double *v = scratch(L, (size_t)a->shape[0]);
    cn_error err;
    if (cn_psnr(a, b, range, v, &err)) return cnl_raise(L, &err);
    push_values(L, v, a->shape[0]);
    return 1;
}

static int l_ms_ssim_max_scales(lua_State *L) {
    lua_Integer h = luaL_checkinteger(L, 1), w = luaL_checkinteger(L, 2), win = luaL_checkinteger(L, 3);
    lua_Integer max = luaL_optinteger(L, 4, 5);
    luaL_argcheck(L, h >= 1, 1, "image height must be positive");
    luaL_argcheck(L, w >= 1, 2, "image width must be positive");
    luaL_argcheck(L, win >= 1 && win <= CN_SSIM_MAX_WIN, 3, "window size out of range");
    luaL_argcheck(L, max >= 1 && max <= CN_MS_SSIM_MAX_SCALES, 4, "1 to 16 scales expected");
    lua_pushinteger(L, cn_ms_ssim_max_scales(h, w, (int)win, (int)max));
    return 1;
}

static int l_ms_ssim_weights(lua_State *L) {
    push_values(L, cn_ms_ssim_weights, 5);
    return 1;
}

static int l_ssim_window(lua_State *L) {
    cn_ssim_params p = cn_ssim_defaults(1.0);
    p.sigma = luaL_optnumber(L, 1, p.sigma);
    lua_Integer win = luaL_optinteger(L, 2, 0);
    luaL_argcheck(L, win >= 0 && win <= CN_SSIM_MAX_WIN, 2, "window size out of range");
    p.win_size = (int)win;
    double w[CN_SSIM_MAX_WIN];
    cn_error err;
    int n = cn_ssim_window(&p, w, &err);
    if (n < 0) return cnl_raise(L, &err);
    push_values(L, w, n);
    return 1;
}

/* ---- feature statistics ---------------------------------------------------------------------- */

static cn_feature_stats **stats_box(lua_State *L) {
    cn_feature_stats **box = lua_newuserdatauv(L, sizeof *box, 0);
    *box = NULL;
    luaL_setmetatable(L, STATS_MT);
    return box;
}

static cn_feature_stats *check_stats(lua_State *L, int arg) {
    cn_feature_stats **box = luaL_checkudata(L, arg, STATS_MT);
    if (!*box) luaL_argerror(L, arg, "feature statistics were freed");
    return *box;
}

/* The collector cannot see the D x D doubles behind a 8-byte box: count them (cnl_pace_gc). */
static void pace_gc(lua_State *L, int64_t dim) {
    cnl_pace_gc(L, (size_t)dim * (size_t)dim * sizeof(double));
}

static int stats_gc(lua_State *L) {
    cn_feature_stats **box = luaL_checkudata(L, 1, STATS_MT);
    cn_feature_stats_free(*box);
    *box = NULL;
    return 0;
}

/* [dim] */
static int l_feature_stats(lua_State *L) {
    lua_Integer dim = luaL_optinteger(L, 1, 0);
    luaL_argcheck(L, dim >= 0, 1, "the dimension must be >= 0 (0: set by the first batch)");
    cn_feature_stats **box = stats_box(L);
    cn_error err;
    if (!(*box = cn_feature_stats_new(dim, &err))) return cnl_raise(L, &err);
    pace_gc(L, dim);
    return 1;
}

/* stats:add(features [N, D]) -> stats */
static int stats_add(lua_State *L) {
    cn_feature_stats *s = check_stats(L, 1);
    cn_tensor *x = cnl_checktensor(L, 2);
    int64_t before = cn_feature_stats_dim(s);
    cn_error err;
    if (cn_feature_stats_add(s, x, &err)) return cnl_raise(L, &err);
    if (before == 0) pace_gc(L, cn_feature_stats_dim(s));
    lua_settop(L, 1);
    return 1;
}

/* stats:merge(other) -> stats */
static int stats_merge(lua_State *L) {
    cn_feature_stats *s = check_stats(L, 1), *other = check_stats(L, 2);
    int64_t before = cn_feature_stats_dim(s);
    cn_error err;
    if (cn_feature_stats_merge(s, other, &err)) return cnl_raise(L, &err);
    if (before == 0) pace_gc(L, cn_feature_stats_dim(s));
    lua_settop(L, 1);
    return 1;
}

static int stats_count(lua_State *L) {
    lua_pushinteger(L, cn_feature_stats_count(check_stats(L, 1)));
    return 1;
}

static int stats_dim(lua_State *L) {
    lua_pushinteger(L, cn_feature_stats_dim(check_stats(L, 1)));
    return 1;
}

/* A float32 tensor of shape (ndim, shape) from n doubles: hi = float(v), or with lo the rest. */
static int push_from_doubles(lua_State *L, const double *v, int ndim, const int64_t *shape, bool lo) {
    cn_tensor **box = cnl_newbox(L);
    cn_error err;
    cn_tensor *t = cn_empty(ndim, shape, &err);
    if (t) {
        float *p = cn_data(t);
        size_t n = cn_numel(t);
        for (size_t i = 0; i < n; i++) p[i] = lo ? (float)(v[i] - (double)(float)v[i]) : (float)v[i];
    }
    return cnl_result(L, box, t, &err);
}

static int stats_mean(lua_State *L) {
    cn_feature_stats *s = check_stats(L, 1);
    int64_t d = cn_feature_stats_dim(s);
    luaL_argcheck(L, cn_feature_stats_count(s) > 0, 1, "no feature vectors added yet");
    return push_from_doubles(L, cn_feature_stats_mean(s), 1, &d, false);
}

static int stats_cov(lua_State *L) {
    cn_feature_stats *s = check_stats(L, 1);
    int64_t d = cn_feature_stats_dim(s), shape[2] = {d, d};
    double *cov = scratch(L, (size_t)(d * d));
    cn_error err;
    if (cn_feature_stats_cov(s, cov, &err)) return cnl_raise(L, &err);
    return push_from_doubles(L, cov, 2, shape, false);
}

/* stats:parts() -> mean_hi, mean_lo, cov_hi, cov_lo (float32 pairs that sum to the doubles) */
static int stats_parts(lua_State *L) {
    cn_feature_stats *s = check_stats(L, 1);
    int64_t d = cn_feature_stats_dim(s), shape[2] = {d, d};
    double *cov = scratch(L, (size_t)(d * d));
    cn_error err;
    if (cn_feature_stats_cov(s, cov, &err)) return cnl_raise(L, &err);
    push_from_doubles(L, cn_feature_stats_mean(s), 1, &d, false);
    push_from_doubles(L, cn_feature_stats_mean(s), 1, &d, true);
    push_from_doubles(L, cov, 2, shape, false);
    push_from_doubles(L, cov, 2, shape, true);
    return 4;
}

static int stats_free(lua_State *L) {
    luaL_checkudata(L, 1, STATS_MT);
    return stats_gc(L);
}

static int stats_tostring(lua_State *L) {
    cn_feature_stats **box = luaL_checkudata(L, 1, STATS_MT);
    if (!*box)
        lua_pushliteral(L, "FeatureStats(freed)");
    else
        lua_pushfstring(L, "FeatureStats(count=%I, dim=%I)", (lua_Integer)cn_feature_stats_count(*box),
                        (lua_Integer)cn_feature_stats_dim(*box));
    return 1;
}

/* Doubles hi + lo from a float32 tensor pair (lo may be nil) of the given shape into out. */
static void read_pair(lua_State *L, int arg, int ndim, const int64_t *shape, double *out) {
    cn_tensor *hi = cnl_checktensor(L, arg);
    cn_tensor *lo = lua_isnoneornil(L, arg + 1) ? NULL : cnl_checktensor(L, arg + 1);
    for (int k = 0; k < 2; k++) {
        cn_tensor *t = k ? lo : hi;
        if (!t) continue;
        if (t->ndim != ndim || memcmp(t->shape, shape, (size_t)ndim * sizeof *shape) != 0) {
            char got[96], want[96];
            cn_shape_str(got, sizeof got, t->ndim, t->shape);
            cn_shape_str(want, sizeof want, ndim, shape);
            luaL_argerror(L, arg + k, lua_pushfstring(L, "shape %s expected, got %s", want, got));
        }
    }
    size_t n = cn_shape_numel(ndim, shape);
    float *buf = (float *)scratch(L, n); /* n doubles hold n floats */
    cn_to_buffer(hi, buf);
    for (size_t i = 0; i < n; i++) out[i] = buf[i];
    if (lo) {
        cn_to_buffer(lo, buf);
        for (size_t i = 0; i < n; i++) out[i] += buf[i];
    }
    lua_pop(L, 1);
}

/* count, mean_hi, mean_lo, cov_hi, cov_lo */
static int l_feature_stats_from(lua_State *L) {
    lua_Integer count = luaL_checkinteger(L, 1);
    cn_tensor *mean = cnl_checktensor(L, 2);
    luaL_argcheck(L, mean->ndim == 1 && mean->shape[0] >= 1, 2, "1-D mean [D] expected");
    int64_t d = mean->shape[0], cov_shape[2] = {d, d};
    double *m = scratch(L, (size_t)d), *c = scratch(L, (size_t)(d * d));
    read_pair(L, 2, 1, &d, m);
    read_pair(L, 4, 2, cov_shape, c);
    cn_feature_stats **box = stats_box(L);
    cn_error err;
    if (!(*box = cn_feature_stats_from(count, d, m, c, &err))) return cnl_raise(L, &err);
    pace_gc(L, d);
    return 1;
}

/* ---- FID, KID -------------------------------------------------------------------------------- */

static int l_fid(lua_State *L) {
    cn_feature_stats *a = check_stats(L, 1), *b = check_stats(L, 2);
    double v;
    cn_error err;
    if (cn_frechet_distance_stats(a, b, &v, &err)) return cnl_raise(L, &err);
    lua_pushnumber(L, v);
    return 1;
}

static int l_mmd2(lua_State *L) {
    cn_tensor *x = cnl_checktensor(L, 1), *y = cnl_checktensor(L, 2);
    double v;
    cn_error err;
    if (cn_mmd2_poly(x, y, &v, &err)) return cnl_raise(L, &err);
    lua_pushnumber(L, v);
    return 1;
}

static int l_kid(lua_State *L) {
    cn_tensor *x = cnl_checktensor(L, 1), *y = cnl_checktensor(L, 2);
    lua_Integer subsets = luaL_checkinteger(L, 3), size = luaL_checkinteger(L, 4);
    luaL_argcheck(L, subsets >= 1 && subsets <= 1000000, 3, "the number of subsets must be in 1..1000000");
    double *values = scratch(L, (size_t)subsets), mean, std;
    cn_error err;
    if (cn_kid(x, y, (int)subsets, size, values, &mean, &std, &err)) return cnl_raise(L, &err);
    lua_pushnumber(L, mean);
    lua_pushnumber(L, std);
    push_values(L, values, subsets);
    return 3;
}

void cnl_open_metrics(lua_State *L) {
    static const luaL_Reg kernels[] = {
        {"ssim", l_ssim}, {"ms_ssim", l_ms_ssim}, {"psnr", l_psnr},
        {"ms_ssim_max_scales", l_ms_ssim_max_scales}, {"ms_ssim_weights", l_ms_ssim_weights},
        {"ssim_window", l_ssim_window}, {"feature_stats", l_feature_stats},
        {"feature_stats_from", l_feature_stats_from}, {"fid", l_fid}, {"mmd2", l_mmd2}, {"kid", l_kid},
        {NULL, NULL},
    };
    static const luaL_Reg methods[] = {
        {"add", stats_add}, {"merge", stats_merge}, {"count", stats_count}, {"dim", stats_dim},
        {"mean", stats_mean}, {"cov", stats_cov}, {"parts", stats_parts}, {"free", stats_free},
        {NULL, NULL},
    };
    if (luaL_newmetatable(L, STATS_MT)) {
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, stats_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, stats_gc);
        lua_setfield(L, -2, "__close");
        lua_pushcfunction(L, stats_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_pop(L, 1);
    luaL_newlib(L, kernels);
    lua_setfield(L, -2, "metrics");
}
