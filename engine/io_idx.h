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
 * returns a new reference, or NULL with err filled. Memory is bounded by the data: a shape whose
 * float32 tensor exceeds cn_idx_max_bytes(), or more data than a gzip file of its size can
 * inflate to, is refused before anything is read; a gzip stream is inflated at most up to the
 * declared size (one byte more detects trailing data). */
cn_tensor *cn_idx_load(const char *path, cn_error *err);

/* Default cap of cn_idx_load on the loaded tensor: 4 GiB of float32 (MNIST's training images are
 * 188 MB); the environment variable CUNET_IDX_MAX_BYTES (a positive integer) replaces it. */
#define CN_IDX_MAX_BYTES ((size_t)1 << 32)
/* The cap in force: CUNET_IDX_MAX_BYTES when set to a positive integer, else the default. */
size_t cn_idx_max_bytes(void);

/* Writes t as IDX with type_code (any CN_IDX_*), gzipped when path ends in ".gz", atomically
 * (see cn_atomic_* in io_file.h). Integer codes round to nearest (halves away from zero)
 * and refuse NaN and values outside the type's range, naming the element; nothing is written
 * then. Returns 0, or -1 with err filled. */
int cn_idx_save(const char *path, const cn_tensor *t, int type_code, cn_error *err);

/* The type's name ("u8", "f32", ...), or NULL for an unknown code. */
const char *cn_idx_type_name(int type_code);

#endif
