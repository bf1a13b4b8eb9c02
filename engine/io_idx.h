/* io_idx.h — IDX arrays, the format of MNIST and Fashion-MNIST, plain or gzipped.
 *
 * An IDX file is two zero bytes, a type code, a dim count d, then d big-endian u32 sizes and the
 * values, big-endian and row-major. Loading goes through zlib (gzread reads plain files as they
 * are), so "t10k-images-idx3-ubyte.gz" and its gunzipped copy load alike:
 *
 *     cn_tensor *images = cn_idx_load("t10k-images-idx3-ubyte.gz", &err); -- [10000, 28, 28], 0..255
 *
 * Values are returned raw as float32 (u8 pixels stay 0..255; scale them in Lua). The data length
 * must match the sizes exactly: a truncated file or trailing bytes are errors naming the file and
 * the expected and actual byte counts.
 */
#ifndef CN_IO_IDX_H
#define CN_IO_IDX_H

#include "error.h"
#include "tensor.h"

/* The type codes of the format. */
#define CN_IDX_U8 0x08
#define CN_IDX_I8 0x09
#define CN_IDX_I16 0x0B
#define CN_IDX_I32 0x0C
#define CN_IDX_F32 0x0D
#define CN_IDX_F64 0x0E

/* Reads an IDX file (gzipped or not) into a float32 tensor of the stored shape (0 to 8 dims);
 * returns a new reference, or NULL with err filled. */
cn_tensor *cn_idx_load(const char *path, cn_error *err);

/* Writes t as IDX with type_code (any CN_IDX_*), gzipped when path ends in ".gz", atomically
 * (see cn_atomic_* in io_safetensors.h). Integer codes round to nearest (halves away from zero)
 * and refuse NaN and values outside the type's range, naming the element; nothing is written
 * then. Returns 0, or -1 with err filled. */
int cn_idx_save(const char *path, const cn_tensor *t, int type_code, cn_error *err);

/* The type's name ("u8", "f32", ...), or NULL for an unknown code. */
const char *cn_idx_type_name(int type_code);

#endif
