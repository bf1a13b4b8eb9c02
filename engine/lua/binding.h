/* binding.h — shared helpers of the Lua binding (the files in engine/lua).
 *
 * Tensors are full userdata of metatable CNL_TENSOR_MT holding one cn_tensor* reference, released
 * in __gc/__close/free. The userdata box is always created before the C object (cnl_newbox), so a
 * failing engine call leaves an empty box for the collector and nothing leaks.
 *
 * Lua dims and indices are 1-based; -1 is the last. cnl_checkdim converts to the engine's 0-based.
 */
#ifndef CNL_BINDING_H
#define CNL_BINDING_H

#include <lauxlib.h>
#include <lua.h>

#include "ops.h"
#include "tensor.h"

#define CNL_TENSOR_MT "cunet.Tensor"

/* Pushes an empty tensor box (NULL inside, metatable set); returns the slot to store into. */
cn_tensor **cnl_newbox(lua_State *L);
/* Counts bytes of C memory behind a fresh box; runs a full collection once enough has piled up
 * (the rule in l_core.c). Every binding that hands out such memory calls it. */
void cnl_pace_gc(lua_State *L, size_t bytes);
/* Sets the bytes between full collections (before the live-set and heap bounds); returns the old value. */
size_t cnl_set_gc_bytes(size_t bytes);
/* Pushes t as a new userdata, taking over the caller's reference. t must not be NULL. */
void cnl_pushtensor(lua_State *L, cn_tensor *t);
/* The tensor at idx, or a Lua error "bad argument #idx to 'fname' (tensor expected, got X)". */
cn_tensor *cnl_checktensor(lua_State *L, int idx);
/* The tensor at idx, or NULL when the value there is not a (live) tensor. */
cn_tensor *cnl_totensor(lua_State *L, int idx);
/* Raises err's message as a Lua error (never returns). */
int cnl_raise(lua_State *L, const cn_error *err);
/* Stores r into box and returns 1, or raises err when r is NULL. Use: return cnl_result(L, box, r, &err). */
int cnl_result(lua_State *L, cn_tensor **box, cn_tensor *r, const cn_error *err);
/* Lua 1-based (or negative) dim at arg -> 0-based dim of a tensor with ndim dims; raises when out of range. */
int cnl_checkdim(lua_State *L, int arg, int ndim);
/* Like cnl_checkdim for a dim value already read; `arg` names the argument in the message. */
int cnl_todim(lua_State *L, lua_Integer d, int ndim, int arg);
/* Lua 1-based (or negative) position at arg along a dim of `size` -> 0-based; raises "bad argument
 * #arg (what i out of range for a dim of size n (1-based))". */
int64_t cnl_checkpos(lua_State *L, int arg, int64_t size, const char *what);
/* Dims at arg: nil/none -> 0 (meaning all dims), a number, or a table of numbers; fills dims
 * (0-based, CN_MAX_DIMS) and returns the count; raises on bad or repeated dims. */
int cnl_checkdims(lua_State *L, int arg, int ndim, int *dims);
/* A shape at arg: a table {2, 3} or, from arg on, integer arguments 2, 3. Fills shape, returns ndim. */
int cnl_checkshape(lua_State *L, int arg, int64_t *shape);
/* Optional boolean at arg (nil/none -> def). */
int cnl_optbool(lua_State *L, int arg, int def);
/* Optional tensor at arg (nil/none -> NULL, anything else must be a tensor). */
cn_tensor *cnl_opttensor(lua_State *L, int arg);

/* Option tables (l_options.c), the one set of readers. cnl_check_keys comes first: it raises
 * "fname: unknown option 'key' (known: a, b)" for a key not in allowed (NULL-terminated), and
 * "bad argument #idx" when idx holds neither nil/none nor a table; returns whether a table is there.
 * The readers return def (NULL, false) when the key is absent or idx holds no table, and raise
 * "bad argument #idx to 'f' (option 'key' must be ...)" on a value of the wrong type. */
bool cnl_check_keys(lua_State *L, int idx, const char *const *allowed, const char *fname);
lua_Number cnl_opt_number(lua_State *L, int idx, const char *key, lua_Number def);
lua_Integer cnl_opt_integer(lua_State *L, int idx, const char *key, lua_Integer def);
bool cnl_opt_bool(lua_State *L, int idx, const char *key, bool def);
/* The string stays valid while the table holds it. */
const char *cnl_opt_string(lua_State *L, int idx, const char *key, const char *def);
/* A borrowed tensor (the table keeps its userdata alive), NULL when absent. */
cn_tensor *cnl_opt_tensor(lua_State *L, int idx, const char *key);
/* An integer (both) or an {h, w} pair of integers into out; returns false, out untouched, when absent. */
bool cnl_opt_pair(lua_State *L, int idx, const char *key, int64_t out[2]);
/* Raises when t may not be modified in place: grad mode is on and t requires grad (a leaf
 * parameter or part of a graph). fname names the operation in the message. */
void cnl_check_inplace(lua_State *L, const cn_tensor *t, const char *fname);
/* Sets each entry of regs (static storage, NULL-terminated) into the table at -1 as an op the
 * profiler can time (l_profile.c). */
void cnl_setfuncs(lua_State *L, const luaL_Reg *regs);
/* Adds methods to the tensor method table and functions to the module table at index -1, through
 * cnl_setfuncs. */
void cnl_register(lua_State *L, const luaL_Reg *methods, const luaL_Reg *functions);

/* Registration entry points of each binding file, called by luaopen_cunet_core. */
void cnl_open_tensor(lua_State *L);        /* l_tensor.c: creation, facts, elements, copies, metatable */
void cnl_open_shape(lua_State *L);         /* l_shape.c: views, cat, stack, chunk, split, index_select */
void cnl_open_elementwise(lua_State *L);   /* l_elementwise.c: elementwise ops, arithmetic metamethods */
void cnl_open_reduce(lua_State *L);        /* l_reduce.c: sum, mean, var, std, norm, max, min, argmax */
void cnl_open_matmul(lua_State *L);        /* l_matmul.c: matmul */
void cnl_open_autograd(lua_State *L);      /* l_autograd.c: requires_grad, .grad, backward, no_grad */
void cnl_open_conv(lua_State *L);          /* l_conv.c: conv2d, conv_transpose2d */
void cnl_open_spatial(lua_State *L);       /* l_spatial.c: upsample, pooling, pad */
void cnl_open_norm(lua_State *L);          /* l_norm.c: group/instance/layer/batch norm */
void cnl_open_nn(lua_State *L);            /* l_nn.c: linear, softmax, attention, dropout, embedding, losses */
void cnl_open_optim(lua_State *L);         /* l_optim.c: optimizer update kernels, gradient clipping */
void cnl_open_io(lua_State *L);            /* l_io.c: safetensors, IDX */
void cnl_open_image(lua_State *L);         /* l_image.c: PNG */
void cnl_open_ode(lua_State *L);           /* l_ode.c: ODE solvers */
void cnl_open_sys(lua_State *L);           /* l_sys.c: clock, isatty, threads */
void cnl_open_metrics(lua_State *L);       /* l_metrics.c: SSIM, PSNR, FID, KID */
void cnl_open_profile(lua_State *L);       /* l_profile.c: the per-op profiler */
void cnl_open_bm3d(lua_State *L);          /* l_bm3d.c: BM3D denoising */
void cnl_open_distributed(lua_State *L);   /* l_distributed.c: MPI collectives (cn.distributed) */

/* The module opener: require "cunet.core". */
int luaopen_cunet_core(lua_State *L);

#endif
