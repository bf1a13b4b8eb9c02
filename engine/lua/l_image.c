/* l_image.c — Lua binding of image I/O: cn.save_png(path, t), cn.load_png(path), cn.load_jpeg(path). */
#include "binding.h"
#include "io_jpeg.h"
#include "io_png.h"

/* cn.save_png(path, t): t [C, H, W] or [H, W] in [0, 1] */
static int l_save_png(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    cn_tensor *t = cnl_checktensor(L, 2);
    cn_error err;
    if (cn_png_write(path, t, &err)) return cnl_raise(L, &err);
    return 0;
}

/* cn.load_png(path) -> [C, H, W] in [0, 1] */
static int l_load_png(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    return cnl_result(L, box, cn_png_read(path, &err), &err);
}

/* cn.load_jpeg(path) -> [C, H, W] in [0, 1] (C = 1 grey, 3 RGB) */
static int l_load_jpeg(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    return cnl_result(L, box, cn_jpeg_read(path, &err), &err);
}

void cnl_open_image(lua_State *L) {
    static const luaL_Reg functions[] = {{"save_png", l_save_png}, {"load_png", l_load_png},
                                           {"load_jpeg", l_load_jpeg}, {NULL, NULL}};
    cnl_register(L, NULL, functions);
}
