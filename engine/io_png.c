/* io_png.c — PNG write and read with libpng (see io_png.h).
 *
 * libpng reports errors by longjmp to the setjmp point of each function; every resource is
 * released there, and the message libpng gave is kept for the caller.
 */
#include "io_png.h"

#include <errno.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    char msg[CN_ERROR_LEN];
} png_failure;

static void on_png_error(png_structp png, png_const_charp message) {
    png_failure *f = png_get_error_ptr(png);
    snprintf(f->msg, sizeof f->msg, "%s", message);
    png_longjmp(png, 1);
}

static void on_png_warning(png_structp png, png_const_charp message) { (void)png, (void)message; }

int cn_png_write(const char *path, const cn_tensor *t, cn_error *err) {
    char sbuf[160];
    int channels, h, w;
    if (t->ndim == 2) {
        channels = 1, h = (int)t->shape[0], w = (int)t->shape[1];
    } else if (t->ndim == 3 && t->shape[0] >= 1 && t->shape[0] <= 4) {
        channels = (int)t->shape[0], h = (int)t->shape[1], w = (int)t->shape[2];
    } else {
        cn_error_set(err, "save_png: %s: expected an image [C, H, W] with C in 1..4 or [H, W], got shape %s", path,
                     cn_shape_str(sbuf, sizeof sbuf, t->ndim, t->shape));
        return -1;
    }
    if (h <= 0 || w <= 0) {
        cn_error_set(err, "save_png: %s: empty image of shape %s", path, cn_shape_str(sbuf, sizeof sbuf, t->ndim, t->shape));
        return -1;
    }
    float *pixels = malloc((size_t)channels * h * w * sizeof *pixels);
    png_bytep row = malloc((size_t)channels * w);
    size_t tlen = strlen(path) + 16;
    char *tmp = malloc(tlen);
    if (!pixels || !row || !tmp) {
        free(pixels), free(row), free(tmp);
        cn_error_set(err, "save_png: out of memory");
        return -1;
    }
    cn_to_buffer(t, pixels);
    snprintf(tmp, tlen, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp);
    FILE *fp = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (!fp) {
        cn_error_set(err, "save_png: cannot write %s: %s", path, strerror(errno));
        if (fd >= 0) close(fd), unlink(tmp);
        free(pixels), free(row), free(tmp);
        return -1;
    }
    png_failure failure = {{0}};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &failure, on_png_error, on_png_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    int status = -1;
    if (!png || !info) {
        snprintf(failure.msg, sizeof failure.msg, "out of memory");
        goto done;
    }
    if (setjmp(png_jmpbuf(png))) goto done;
    png_init_io(png, fp);
    static const int color_type[5] = {0, PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA, PNG_COLOR_TYPE_RGB,
                                      PNG_COLOR_TYPE_RGB_ALPHA};
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, color_type[channels], PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    size_t plane = (size_t)h * w;
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++)
            for (int c = 0; c < channels; c++) {
                float v = pixels[c * plane + (size_t)y * w + x];
                v = v != v ? 0.0f : v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
                row[(size_t)x * channels + c] = (png_byte)(v * 255.0f + 0.5f);
            }
        png_write_row(png, row);
    }
    png_write_end(png, NULL);
    status = 0;
done:
    png_destroy_write_struct(png ? &png : NULL, info ? &info : NULL);
    if (fflush(fp) || fsync(fileno(fp))) status = status ? status : (snprintf(failure.msg, sizeof failure.msg, "%s", strerror(errno)), -1);
    fclose(fp);
    if (status == 0 && rename(tmp, path) != 0) {
        snprintf(failure.msg, sizeof failure.msg, "rename failed: %s", strerror(errno));
        status = -1;
    }
    if (status) {
        unlink(tmp);
        cn_error_set(err, "save_png: cannot write %s: %s", path, failure.msg);
    }
    free(pixels), free(row), free(tmp);
    return status;
}

cn_tensor *cn_png_read(const char *path, cn_error *err) {
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        cn_error_set(err, "load_png: cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    png_byte sig[8];
    if (fread(sig, 1, 8, fp) != 8 || png_sig_cmp(sig, 0, 8)) {
        fclose(fp);
        cn_error_set(err, "load_png: %s is not a PNG file (bad signature)", path);
        return NULL;
    }
    png_failure failure = {{0}};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &failure, on_png_error, on_png_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    cn_tensor *volatile out = NULL;
    png_bytep volatile rowbuf = NULL;
    png_bytep *volatile rows = NULL;
    if (!png || !info) {
        snprintf(failure.msg, sizeof failure.msg, "out of memory");
        goto fail;
    }
    if (setjmp(png_jmpbuf(png))) goto fail;
    png_init_io(png, fp);
    png_set_sig_bytes(png, 8);
    png_set_user_limits(png, 1 << 16, 1 << 16);
    png_read_info(png, info);
    png_set_expand(png);          /* palette -> RGB, grey < 8 bits -> 8, tRNS -> alpha */
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int w = (int)png_get_image_width(png, info), h = (int)png_get_image_height(png, info);
    int channels = png_get_channels(png, info), depth = png_get_bit_depth(png, info);
    int bytes = depth == 16 ? 2 : 1;
    int64_t shape[3] = {channels, h, w};
    cn_error inner;
    out = cn_empty(3, shape, &inner);
    if (!out) {
        snprintf(failure.msg, sizeof failure.msg, "%s", inner.msg);
        goto fail;
    }
    size_t rowbytes = png_get_rowbytes(png, info);
    rowbuf = malloc(rowbytes * (size_t)h);
    if (!rowbuf) {
        snprintf(failure.msg, sizeof failure.msg, "out of memory");
        goto fail;
    }
    rows = malloc((size_t)h * sizeof *rows);
    if (!rows) {
        snprintf(failure.msg, sizeof failure.msg, "out of memory");
        goto fail;
    }
    for (int y = 0; y < h; y++) rows[y] = rowbuf + (size_t)y * rowbytes;
    png_read_image(png, rows);
    png_read_end(png, NULL);
    float *p = cn_data(out);
    size_t plane = (size_t)h * w;
    float scale = depth == 16 ? 1.0f / 65535.0f : 1.0f / 255.0f;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < channels; c++) {
                const png_byte *s = rowbuf + (size_t)y * rowbytes + ((size_t)x * channels + c) * bytes;
                unsigned v = bytes == 2 ? (unsigned)s[0] << 8 | s[1] : s[0];
                p[c * plane + (size_t)y * w + x] = (float)v * scale;
            }
    free(rows);
    free(rowbuf);
    png_destroy_read_struct(&png, &info, NULL);
    fclose(fp);
    return out;
fail:
    free(rows);
    free(rowbuf);
    cn_release(out);
    png_destroy_read_struct(png ? &png : NULL, info ? &info : NULL, NULL);
    fclose(fp);
    cn_error_set(err, "load_png: %s: corrupt or truncated PNG (libpng: %s)", path, failure.msg[0] ? failure.msg : "unknown error");
    return NULL;
}
