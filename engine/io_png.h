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
/* Reads a PNG into a new [C, H, W] tensor in [0, 1]; NULL with err naming the file on failure. */
cn_tensor *cn_png_read(const char *path, cn_error *err);

#endif
