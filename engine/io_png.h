/* io_png.h — PNG images through libpng.
 *
 * Images are float tensors [C, H, W] with values in [0, 1] (C = 1 grey, 2 grey + alpha, 3 RGB,
 * 4 RGBA); a [H, W] tensor is written as grey. Writing clamps to [0, 1] and rounds to 8 bits;
 * reading expands palettes and low bit depths and scales 8- or 16-bit samples to [0, 1].
 */
#ifndef CN_IO_PNG_H
#define CN_IO_PNG_H

#include "tensor.h"

/* Writes t as an 8-bit PNG, atomically (temp file + rename). Returns 0, or -1 with err. */
int cn_png_write(const char *path, const cn_tensor *t, cn_error *err);
/* Reads a PNG into a new [C, H, W] tensor in [0, 1]; NULL with err naming the file on failure.
 * Memory is bounded by the file: images of more than cn_png_max_samples() samples (C x H x W),
 * or whose pixel data could not fit the file's size even at deflate's best ratio, are refused
 * before anything is allocated; ancillary chunks are capped at 8 MB each. */
cn_tensor *cn_png_read(const char *path, cn_error *err);

/* Default sample cap of cn_png_read: 2^26 = 67,108,864 samples (a 256 MiB float32 tensor, e.g.
 * 4096 x 4096 RGBA); the environment variable CUNET_PNG_MAX_SAMPLES (a positive integer)
 * replaces it. */
#define CN_PNG_MAX_SAMPLES ((size_t)1 << 26)
/* The cap in force: CUNET_PNG_MAX_SAMPLES when set to a positive integer, else the default. */
size_t cn_png_max_samples(void);

#endif
