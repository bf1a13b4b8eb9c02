/* io_safetensors.h — safetensors checkpoints (the format PyTorch and Hugging Face read).
 *
 * A safetensors file is an 8-byte little-endian u64 N, then N bytes of UTF-8 JSON
 *     {"__metadata__": {"key": "value", ...}, "name": {"dtype": "F32", "shape": [2, 3],
 *      "data_offsets": [begin, end]}, ...}
 * then the data buffer; offsets are relative to the buffer's start, tensors little-endian and
 * row-major, and the tensors cover the buffer exactly (no gaps, no overlaps).
 *
 *     const char *names[] = {"w", "b"}; cn_tensor *ts[] = {w, b};
 *     if (cn_safetensors_save("m.safetensors", 2, names, ts, 0, NULL, NULL, &err)) fail(err.msg);
 *     cn_safetensors_file *f = cn_safetensors_open("m.safetensors", &err);
 *     cn_tensor *w2 = cn_safetensors_tensor(f, cn_safetensors_find(f, "w"), &err);
 *     cn_safetensors_close(f);
 *
 * Reading validates the whole header before anything is returned and never reads outside the
 * file: every problem (bad JSON, missing fields, offsets that do not match shape x dtype, ranges
 * past the buffer, overlaps, gaps, duplicate names, more than 8 dims...) is an error naming the
 * file, and the tensor when there is one. Loaded tensors are float32: F32 as is; F16, BF16
 * exactly (every value is a float32); F64 rounded to nearest; BOOL as 0/1; integer dtypes (U8, I8,
 * U16, I16, U32, I32, U64, I64) when every value is exactly a float32 (|v| <= 2^24 always is),
 * otherwise an error naming the tensor, the value and its element. Other dtypes (F8_*, C64) are
 * accepted by open (their sizes are known) and refused by cn_safetensors_tensor.
 *
 * Hosts are little-endian (checked at compile time in io_safetensors.c).
 */
#ifndef CN_IO_SAFETENSORS_H
#define CN_IO_SAFETENSORS_H

#include <stddef.h>

#include "error.h"
#include "tensor.h"

/* Header lengths above this are refused as corrupt (the reference implementation's limit). */
#define CN_SAFETENSORS_MAX_HEADER 100000000u

typedef struct cn_safetensors_file cn_safetensors_file;

/* Writes n float32 tensors (any strided view, written row-major) and n_meta string pairs to path,
 * atomically (cn_atomic_*, io_file.h): an existing file at path is replaced only by a complete new one.
 * The header is laid out as the reference implementation does: compact JSON, "__metadata__"
 * first (keys sorted; omitted when n_meta is 0), tensors sorted by name (bytewise), data in that
 * order, the header padded with spaces to a multiple of 8. Names and metadata must be valid
 * UTF-8 and unique; "__metadata__" is not a tensor name. Returns 0, or -1 with err filled. */
int cn_safetensors_save(const char *path, int n, const char *const *names, cn_tensor *const *tensors,
                        int n_meta, const char *const *meta_keys, const char *const *meta_values,
                        cn_error *err);

/* The dtypes cn_safetensors_save_as can store. */
typedef enum { CN_SAFETENSORS_F32, CN_SAFETENSORS_F16 } cn_safetensors_store;

/* cn_safetensors_save storing every tensor as dtype: F16 rounds to nearest even (half the size;
 * infinities and NaN kept) and refuses a finite value beyond F16's range (|x| >= 65520), naming
 * the tensor and the element, rather than writing an infinity. */
int cn_safetensors_save_as(const char *path, cn_safetensors_store dtype, int n, const char *const *names,
                           cn_tensor *const *tensors, int n_meta, const char *const *meta_keys,
                           const char *const *meta_values, cn_error *err);

/* Reads and validates the file at path (read whole into memory). NULL with err filled on a
 * file-system error ("cannot open 'p': No such file or directory") or corrupt content
 * ("p: tensor 'w' has data_offsets [0, 100] but shape [3, 3] of F32 needs 36 bytes"). */
cn_safetensors_file *cn_safetensors_open(const char *path, cn_error *err);
/* The same over size bytes in memory (copied); label stands for the path in messages. */
cn_safetensors_file *cn_safetensors_open_memory(const void *bytes, size_t size, const char *label,
                                                cn_error *err);
/* Frees f (NULL-safe). Tensors already returned stay valid: they own their data. */
void cn_safetensors_close(cn_safetensors_file *f);

/* Number of tensors; they are indexed 0..count-1 in name order (bytewise). */
int cn_safetensors_count(const cn_safetensors_file *f);
/* Name, dtype string ("F32", "BF16", ...), ndim and shape of tensor i (shape: ndim entries). */
const char *cn_safetensors_name(const cn_safetensors_file *f, int i);
const char *cn_safetensors_dtype(const cn_safetensors_file *f, int i);
int cn_safetensors_ndim(const cn_safetensors_file *f, int i);
const int64_t *cn_safetensors_shape(const cn_safetensors_file *f, int i);
/* Index of the tensor called name, or -1. */
int cn_safetensors_find(const cn_safetensors_file *f, const char *name);
/* Tensor i converted to float32 (see the top of this file); returns a new reference, or NULL
 * with err filled (unsupported dtype, an integer float32 cannot hold, out of memory). */
cn_tensor *cn_safetensors_tensor(const cn_safetensors_file *f, int i, cn_error *err);

/* Metadata: number of pairs, key and value of pair i (key order), value of key or NULL. */
int cn_safetensors_meta_count(const cn_safetensors_file *f);
const char *cn_safetensors_meta_key(const cn_safetensors_file *f, int i);
const char *cn_safetensors_meta_value(const cn_safetensors_file *f, int i);
const char *cn_safetensors_meta(const cn_safetensors_file *f, const char *key);

#endif
