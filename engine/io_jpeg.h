/* io_jpeg.h — JPEG images through libjpeg(-turbo), read only.
 *
 * Images are float tensors [C, H, W] with values in [0, 1]: C = 1 for a greyscale JPEG, 3 (RGB)
 * for YCbCr or RGB ones; CMYK/YCCK files are refused. Reading is strict: data libjpeg would only
 * warn about (a truncated file, corrupt entropy data) is an error, never a half-grey image.
 */
#ifndef CN_IO_JPEG_H
#define CN_IO_JPEG_H

#include "tensor.h"

/* Reads a JPEG into a new [C, H, W] tensor in [0, 1]; NULL with err naming the file on failure.
 * Memory is bounded before anything is sized by the header: at most cn_png_max_samples()
 * samples (the PNG reader's cap, CUNET_PNG_MAX_SAMPLES); a sequential Huffman-coded image may
 * not claim more than CN_JPEG_MAX_RATIO samples per byte of file (a progressive or arithmetic one
 * CN_JPEG_MAX_RATIO_PROGRESSIVE); libjpeg's own working memory
 * is capped (a progressive image's coefficients); at most CN_JPEG_MAX_SCANS scans. */
cn_tensor *cn_jpeg_read(const char *path, cn_error *err);

/* Output samples per file byte a sequential Huffman JPEG can reach at best (an all-flat image:
 * 2 bits per 8 x 8 block per component, upsampled 4:2:0 chroma) is about 512; twice that is
 * refused as a header lying about the size. */
#define CN_JPEG_MAX_RATIO 1024
/* The same bound for progressive and arithmetic-coded files, which libjpeg decodes through a
 * coefficient buffer of the whole image allocated before any scan is read: a complete progressive
 * Huffman file codes every block's DC in at least 1 bit (about 1,024 samples per byte at 4:2:0);
 * twice that is refused, so a tiny file cannot make the decoder allocate more than ~4 KiB of
 * coefficients per byte. (An arithmetic-coded flat image could in principle go below it: refused.) */
#define CN_JPEG_MAX_RATIO_PROGRESSIVE 2048
/* Progressive files above this many scans are refused (libjpeg-turbo's advice against files
 * made of thousands of tiny scans, which take minutes to decode). */
#define CN_JPEG_MAX_SCANS 500

#endif
