/* l_matmul.c — Lua binding of matrix products (ops_matmul.c).
 *
 *   a:matmul(b)   cn.matmul(a, b)   as torch.matmul: vectors, matrices and broadcast batches
 */
#include "binding.h"

static int t_matmul(lua_State *L) {
    cn_tensor *a = cnl_checktensor(L, 1), *b = cnl_checktensor(L, 2);
    cn_error err;
    cn_tensor **box = cnl_newbox(L);
    return cnl_result(L, box, cn_matmul(a, b, &err), &err);
}

static const luaL_Reg matmul_functions[] = {{"matmul", t_matmul}, {NULL, NULL}};

void cnl_open_matmul(lua_State *L) { cnl_register(L, matmul_functions, matmul_functions); }
