/* l_bm3d.c — Lua binding of BM3D denoising (bm3d.h):
 *
 *   cn.bm3d(noisy, sigma [, opts]) -> denoised
 *
 * noisy: [H, W], [C, H, W] or more leading dims, every [H, W] plane denoised on its own (colour
 * channels too: no opponent-colour transform); sigma: the noise standard deviation on the data's
 * scale ([0, 1] images: sigma / 255 for the paper's sigma). opts override the paper's profile for
 * that sigma (cn_bm3d_defaults), per stage: ht_* (stage 1) and wiener_* (stage 2) for
 * block_size (N1), group_max (N2), step (N_step), search (N_S), tau_match (0..255 scale), beta
 * (Kaiser) and transform ("bior1.5" or "dct"); ht_lambda_2d, ht_lambda_3d; transform_3d ("haar"
 * or "wht"); stages (2: final estimate, 1: the basic estimate).
 */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "binding.h"
#include "bm3d.h"

static const char *const bm3d_options[] = {
    "ht_block_size",     "ht_group_max",     "ht_step",        "ht_search",    "ht_tau_match",
    "ht_lambda_2d",      "ht_lambda_3d",     "ht_beta",        "ht_transform", "wiener_block_size",
    "wiener_group_max",  "wiener_step",      "wiener_search",  "wiener_tau_match",
    "wiener_beta",       "wiener_transform", "transform_3d",   "stages",       NULL};

/* An integer option as an int: out-of-range values saturate, and the engine's check names them. */
static int opt_int(lua_State *L, int idx, const char *key, int def) {
    lua_Integer v = cnl_opt_integer(L, idx, key, def);
    return v > INT_MAX ? INT_MAX : v < INT_MIN ? INT_MIN : (int)v;
}

static cn_bm3d_transform2d opt_transform2d(lua_State *L, int idx, const char *key, cn_bm3d_transform2d def) {
    const char *name = cnl_opt_string(L, idx, key, NULL);
    if (!name) return def;
    if (strcmp(name, "bior1.5") == 0) return CN_BM3D_BIOR15;
    if (strcmp(name, "dct") == 0) return CN_BM3D_DCT;
    return (cn_bm3d_transform2d)luaL_argerror(
        L, idx, lua_pushfstring(L, "option '%s' must be \"bior1.5\" or \"dct\", got \"%s\"", key, name));
}

static void opt_stage(lua_State *L, int idx, const char *prefix, cn_bm3d_stage *s) {
    char key[32];
#define KEY(name) (snprintf(key, sizeof key, "%s_%s", prefix, name), key)
    s->block_size = opt_int(L, idx, KEY("block_size"), s->block_size);
    s->group_max = opt_int(L, idx, KEY("group_max"), s->group_max);
    s->step = opt_int(L, idx, KEY("step"), s->step);
    s->search = opt_int(L, idx, KEY("search"), s->search);
    s->tau_match = cnl_opt_number(L, idx, KEY("tau_match"), s->tau_match);
    s->beta = cnl_opt_number(L, idx, KEY("beta"), s->beta);
    s->transform = opt_transform2d(L, idx, KEY("transform"), s->transform);
#undef KEY
}

/* cn.bm3d(noisy, sigma [, opts]) */
static int l_bm3d(lua_State *L) {
    cn_tensor *noisy = cnl_checktensor(L, 1);
    double sigma = luaL_checknumber(L, 2);
    luaL_argcheck(L, sigma > 0 && sigma < HUGE_VAL, 2, "sigma must be positive and finite");
    if (noisy->ndim < 2) {
        char s[96];
        cn_shape_str(s, sizeof s, noisy->ndim, noisy->shape);
        return luaL_argerror(L, 1, lua_pushfstring(L, "image [H, W] or [C, H, W] expected, got %s", s));
    }
    cnl_check_keys(L, 3, bm3d_options, "bm3d");
    cn_bm3d_params p = cn_bm3d_defaults(sigma);
    opt_stage(L, 3, "ht", &p.ht);
    opt_stage(L, 3, "wiener", &p.wiener);
    p.ht.lambda_2d = cnl_opt_number(L, 3, "ht_lambda_2d", p.ht.lambda_2d);
    p.ht.lambda_3d = cnl_opt_number(L, 3, "ht_lambda_3d", p.ht.lambda_3d);
    const char *t3d = cnl_opt_string(L, 3, "transform_3d", NULL);
    if (t3d) {
        if (strcmp(t3d, "haar") == 0) p.transform_3d = CN_BM3D_HAAR;
        else if (strcmp(t3d, "wht") == 0) p.transform_3d = CN_BM3D_WHT;
        else return luaL_argerror(L, 3, lua_pushfstring(L, "option 'transform_3d' must be \"haar\" or \"wht\", got \"%s\"", t3d));
    }
    p.stages = opt_int(L, 3, "stages", p.stages);
    cn_error err;
    if (cn_bm3d_check(&p, &err)) return cnl_raise(L, &err);
    cn_tensor **box = cnl_newbox(L);
    return cnl_result(L, box, cn_bm3d(noisy, sigma, &p, &err), &err);
}

void cnl_open_bm3d(lua_State *L) {
    static const luaL_Reg functions[] = {{"bm3d", l_bm3d}, {NULL, NULL}};
    cnl_register(L, NULL, functions);
}
