/* l_io.c — Lua binding of the file formats (io_safetensors.c, io_idx.c).
 *
 *   cn.save(path, {name = tensor, ...} [, {key = "value", ...} [, {dtype = "F32" | "F16"}]])
 *                                                                   safetensors, atomic
 *   cn.load(path) -> {name = tensor, ...}, {key = "value", ...}
 *   cn.load_meta(path) -> {key = "value", ...}                     the metadata alone (file validated)
 *   cn.load_idx(path) -> tensor                                    IDX, plain or .gz
 *   cn.save_idx(path, t [, "u8" | "i8" | "i16" | "i32" | "f32" | "f64"])   default "u8"
 *
 * Every failure raises: a missing or unreadable file names the path ("cannot open 'm.safetensors':
 * No such file or directory"), corrupt content gives the validation message, and a failed save
 * leaves any existing file untouched.
 */
#include <string.h>

#include "binding.h"
#include "io_idx.h"
#include "io_safetensors.h"

#define FILE_MT "cunet.SafetensorsFile"

/* A path argument: a string without NUL bytes (the C side would silently cut it). */
static const char *check_path(lua_State *L, int arg) {
    size_t len;
    const char *path = luaL_checklstring(L, arg, &len);
    luaL_argcheck(L, strlen(path) == len, arg, "path contains a NUL byte");
    luaL_argcheck(L, len > 0, arg, "path is empty");
    return path;
}

/* The string keys of the table at arg, for messages and the engine; raises on non-strings. */
static const char *check_key(lua_State *L, int arg, const char *what) {
    if (lua_type(L, -2) != LUA_TSTRING)
        luaL_argerror(L, arg, lua_pushfstring(L, "%s must be strings, got %s", what, luaL_typename(L, -2)));
    size_t len;
    const char *key = lua_tolstring(L, -2, &len);
    if (strlen(key) != len) luaL_argerror(L, arg, lua_pushfstring(L, "%s contains a NUL byte", what));
    return key;
}

static int count_pairs(lua_State *L, int arg) {
    int n = 0;
    lua_pushnil(L);
    while (lua_next(L, arg)) {
        lua_pop(L, 1);
        if (n == (1 << 28)) luaL_argerror(L, arg, "too many entries");
        n++;
    }
    return n;
}

/* path, {name = tensor}, {key = "value"}, {dtype = "F32" | "F16"} */
static int l_save(lua_State *L) {
    const char *path = check_path(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    static const char *const allowed[] = {"dtype", NULL};
    cnl_check_keys(L, 4, allowed, "save");
    const char *dtype_name = cnl_opt_string(L, 4, "dtype", "F32");
    cn_safetensors_store dtype = CN_SAFETENSORS_F32;
    if (strcmp(dtype_name, "F16") == 0) dtype = CN_SAFETENSORS_F16;
    else if (strcmp(dtype_name, "F32") != 0)
        luaL_argerror(L, 4, lua_pushfstring(L, "dtype '%s' cannot be written (known: F32, F16)", dtype_name));
    bool has_meta = !lua_isnoneornil(L, 3);
    if (has_meta) luaL_checktype(L, 3, LUA_TTABLE);
    int n = count_pairs(L, 2), n_meta = has_meta ? count_pairs(L, 3) : 0;
    /* arrays in a userdata: collected even when a check below raises */
    size_t words = (size_t)n * 2 + (size_t)n_meta * 2 + 1;
    void **mem = lua_newuserdatauv(L, words * sizeof(void *), 0);
    const char **names = (const char **)mem;
    cn_tensor **tensors = (cn_tensor **)(mem + n);
    const char **keys = (const char **)(mem + 2 * n), **values = keys + n_meta;
    int i = 0;
    lua_pushnil(L);
    while (lua_next(L, 2)) { /* keys and values stay alive in the table at 2 */
        if (i == n) luaL_argerror(L, 2, "table changed while saving");
        names[i] = check_key(L, 2, "tensor names");
        tensors[i] = cnl_totensor(L, -1);
        if (!tensors[i]) {
            const char *what = luaL_testudata(L, -1, CNL_TENSOR_MT)
                                   ? "a freed tensor"
                                   : lua_pushfstring(L, "a %s, not a tensor", luaL_typename(L, -1));
            luaL_argerror(L, 2, lua_pushfstring(L, "'%s' is %s", names[i], what));
        }
        lua_pop(L, 1);
        i++;
    }
    luaL_argcheck(L, i == n, 2, "table changed while saving");
    i = 0;
    if (has_meta) {
        lua_pushnil(L);
        while (lua_next(L, 3)) {
            if (i == n_meta) luaL_argerror(L, 3, "table changed while saving");
            keys[i] = check_key(L, 3, "metadata keys");
            if (lua_type(L, -1) != LUA_TSTRING)
                luaL_argerror(L, 3, lua_pushfstring(L, "metadata value of '%s' is a %s, not a string (use tostring)",
                                                    keys[i], luaL_typename(L, -1)));
            size_t len;
            values[i] = lua_tolstring(L, -1, &len);
            if (strlen(values[i]) != len)
                luaL_argerror(L, 3, lua_pushfstring(L, "metadata value of '%s' contains a NUL byte", keys[i]));
            lua_pop(L, 1);
            i++;
        }
        luaL_argcheck(L, i == n_meta, 3, "table changed while saving");
    }
    cn_error err;
    if (cn_safetensors_save_as(path, dtype, n, names, tensors, n_meta, keys, values, &err)) return cnl_raise(L, &err);
    return 0;
}

static int file_gc(lua_State *L) {
    cn_safetensors_file **box = luaL_checkudata(L, 1, FILE_MT);
    cn_safetensors_close(*box);
    *box = NULL;
    return 0;
}

/* Opens the safetensors file at arg 1 into a userdata box pushed on the stack (closed by __gc if a later
 * step raises); raises with the validation message when the file is missing or corrupt. */
static cn_safetensors_file *open_boxed(lua_State *L, cn_safetensors_file ***out_box) {
    const char *path = check_path(L, 1);
    cn_safetensors_file **fbox = lua_newuserdatauv(L, sizeof *fbox, 0); /* box first: closed by __gc on error */
    *fbox = NULL;
    luaL_setmetatable(L, FILE_MT);
    cn_error err;
    cn_safetensors_file *f = *fbox = cn_safetensors_open(path, &err);
    if (!f) cnl_raise(L, &err);
    *out_box = fbox;
    return f;
}

/* Pushes the metadata of f as a table of strings. */
static void push_meta(lua_State *L, const cn_safetensors_file *f) {
    int n_meta = cn_safetensors_meta_count(f);
    lua_createtable(L, 0, n_meta);
    for (int i = 0; i < n_meta; i++) {
        lua_pushstring(L, cn_safetensors_meta_value(f, i));
        lua_setfield(L, -2, cn_safetensors_meta_key(f, i));
    }
}

/* path -> tensors, metadata */
static int l_load(lua_State *L) {
    cn_safetensors_file **fbox;
    cn_safetensors_file *f = open_boxed(L, &fbox);
    cn_error err;
    int n = cn_safetensors_count(f);
    lua_createtable(L, 0, n);
    for (int i = 0; i < n; i++) {
        cn_tensor **box = cnl_newbox(L);
        cnl_result(L, box, cn_safetensors_tensor(f, i, &err), &err);
        lua_setfield(L, -2, cn_safetensors_name(f, i));
    }
    push_meta(L, f);
    cn_safetensors_close(f);
    *fbox = NULL;
    return 2;
}

/* path -> metadata (the file is read and validated as by cn.load; no tensor is built) */
static int l_load_meta(lua_State *L) {
    cn_safetensors_file **fbox;
    cn_safetensors_file *f = open_boxed(L, &fbox);
    push_meta(L, f);
    cn_safetensors_close(f);
    *fbox = NULL;
    return 1;
}

/* path -> tensor */
static int l_load_idx(lua_State *L) {
    const char *path = check_path(L, 1);
    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    return cnl_result(L, box, cn_idx_load(path, &err), &err);
}

/* path, t, type */
static int l_save_idx(lua_State *L) {
    static const char *const names[] = {"u8", "i8", "i16", "i32", "f32", "f64", NULL};
    static const int codes[] = {CN_IDX_U8, CN_IDX_I8, CN_IDX_I16, CN_IDX_I32, CN_IDX_F32, CN_IDX_F64};
    const char *path = check_path(L, 1);
    cn_tensor *t = cnl_checktensor(L, 2);
    int type = luaL_checkoption(L, 3, "u8", names);
    cn_error err;
    if (cn_idx_save(path, t, codes[type], &err)) return cnl_raise(L, &err);
    return 0;
}

void cnl_open_io(lua_State *L) {
    static const luaL_Reg functions[] = {
        {"save", l_save}, {"load", l_load}, {"load_meta", l_load_meta}, {"load_idx", l_load_idx}, {"save_idx", l_save_idx}, {NULL, NULL},
    };
    if (luaL_newmetatable(L, FILE_MT)) {
        lua_pushcfunction(L, file_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    cnl_register(L, NULL, functions);
}
