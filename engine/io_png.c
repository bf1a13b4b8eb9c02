/* io_png.c — PNG write and read with libpng (see io_png.h).
 *
 * libpng reports errors by longjmp to the setjmp point of each function; every resource is
 * released there, and the message libpng gave is kept for the caller. Locals changed between
 * setjmp and a possible longjmp are volatile (C11 7.13.2.1).
 *
 * Writing goes through the engine's atomic file replacement (cn_atomic_*, io_file.h):
 * libpng's output is sent to the temp file by a write callback, and path is replaced only by a
 * complete file, with the mode a plain fopen would give it (or the replaced file's).
 */
#include "io_png.h"

#include <errno.h>
#include <png.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io_file.h"

/* Names in messages are cut to this many bytes, so a long path cannot swamp the message. */
#define PATH_FMT "%.300s"

/* Reading bounds memory by what the file can hold: a 69-byte header may claim 65535 x 65535 RGBA,
 * and a 261 KB file of deflated zeros really does hold a 16384 x 16384 image. So, before any
 * buffer is sized by the header: at most cn_png_max_samples() samples; raw image data no larger
 * than deflate's best ratio (1032:1) allows for the file's size; the variable-size ancillary
 * chunks (text, ICC profiles, none of which the reader uses) skipped unread; others capped at
 * CHUNK_MAX bytes each and CHUNK_COUNT_MAX in number, as libpng recommends for untrusted input. */
#define DEFLATE_MAX_RATIO 1032
#define CHUNK_MAX 8000000
#define CHUNK_COUNT_MAX 1000

size_t cn_png_max_samples(void) {
    const char *env = getenv("CUNET_PNG_MAX_SAMPLES");
    if (env && *env) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(env, &end, 10);
        if (!errno && *end == '\0' && v > 0 && env[0] != '-') return v < CN_MAX_NUMEL ? (size_t)v : CN_MAX_NUMEL;
    }
    return CN_PNG_MAX_SAMPLES;
}

typedef struct {
    char msg[CN_ERROR_LEN];
    cn_atomic_file *af; /* writing only */
    bool refused;       /* reading: msg is a limit, not a libpng error */
} png_context;

static void on_png_error(png_structp png, png_const_charp message) {
    png_context *ctx = png_get_error_ptr(png);
    snprintf(ctx->msg, sizeof ctx->msg, "%s", message);
    png_longjmp(png, 1);
}

static void on_png_warning(png_structp png, png_const_charp message) { (void)png, (void)message; }

static void write_to_atomic(png_structp png, png_bytep data, size_t length) {
    png_context *ctx = png_get_io_ptr(png);
    cn_error err;
    if (cn_atomic_write(ctx->af, data, length, &err)) png_error(png, err.msg);
}

static void flush_nothing(png_structp png) { (void)png; }

int cn_png_write(const char *path, const cn_tensor *t, cn_error *err) {
    char sbuf[160];
    int channels, h, w;
    if (t->ndim == 2) {
        channels = 1, h = (int)t->shape[0], w = (int)t->shape[1];
    } else if (t->ndim == 3 && t->shape[0] >= 1 && t->shape[0] <= 4) {
        channels = (int)t->shape[0], h = (int)t->shape[1], w = (int)t->shape[2];
    } else {
        cn_error_set(err, "save_png: " PATH_FMT ": expected an image [C, H, W] with C in 1..4 or [H, W], got shape %s",
                     path, cn_shape_str(sbuf, sizeof sbuf, t->ndim, t->shape));
        return -1;
    }
    /* PNG's own limit is 2^31 - 1 per side; libpng refuses more than 10^6 unless told otherwise */
    if (t->shape[t->ndim - 2] <= 0 || t->shape[t->ndim - 1] <= 0 || t->shape[t->ndim - 2] > 1000000 ||
        t->shape[t->ndim - 1] > 1000000) {
        cn_error_set(err, "save_png: " PATH_FMT ": cannot write an image of shape %s (each side must be in 1..1000000)",
                     path, cn_shape_str(sbuf, sizeof sbuf, t->ndim, t->shape));
        return -1;
    }
    float *pixels = malloc((size_t)channels * (size_t)h * (size_t)w * sizeof *pixels);
    png_bytep row = malloc((size_t)channels * (size_t)w);
    if (!pixels || !row) {
        free(pixels), free(row);
        cn_error_set(err, "save_png: " PATH_FMT ": out of memory", path);
        return -1;
    }
    cn_to_buffer(t, pixels);
    cn_atomic_file af;
    cn_error inner;
    if (cn_atomic_begin(&af, path, &inner)) {
        cn_error_set(err, "save_png: %s", inner.msg);
        free(pixels), free(row);
        return -1;
    }
    png_context ctx = {{0}, &af, false};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &ctx, on_png_error, on_png_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        snprintf(ctx.msg, sizeof ctx.msg, "out of memory");
        goto fail;
    }
    if (setjmp(png_jmpbuf(png))) goto fail;
    png_set_write_fn(png, &ctx, write_to_atomic, flush_nothing);
    static const int color_type[5] = {0, PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA, PNG_COLOR_TYPE_RGB,
                                      PNG_COLOR_TYPE_RGB_ALPHA};
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, color_type[channels], PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    size_t plane = (size_t)h * (size_t)w;
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++)
            for (int c = 0; c < channels; c++) {
                float v = pixels[c * plane + (size_t)y * w + x];
                v = v != v ? 0.0f : v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v; /* NaN -> 0 */
                row[(size_t)x * channels + c] = (png_byte)(v * 255.0f + 0.5f);
            }
        png_write_row(png, row);
    }
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    free(pixels), free(row);
    if (cn_atomic_commit(&af, &inner)) {
        cn_error_set(err, "save_png: %s", inner.msg);
        return -1;
    }
    return 0;
fail:
    png_destroy_write_struct(png ? &png : NULL, info ? &info : NULL);
    cn_atomic_abort(&af);
    free(pixels), free(row);
    cn_error_set(err, "save_png: cannot write " PATH_FMT ": %s", path, ctx.msg);
    return -1;
}

cn_tensor *cn_png_read(const char *path, cn_error *err) {
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        cn_error_set(err, "load_png: cannot open " PATH_FMT ": %s", path, strerror(errno));
        return NULL;
    }
    png_byte sig[8];
    size_t got = fread(sig, 1, 8, fp);
    if (got != 8 || png_sig_cmp(sig, 0, 8)) {
        int read_error = ferror(fp) ? errno : 0;
        fclose(fp);
        if (read_error)
            cn_error_set(err, "load_png: cannot read " PATH_FMT ": %s", path, strerror(read_error));
        else if (got < 8 && (got == 0 || !png_sig_cmp(sig, 0, got)))
            cn_error_set(err, "load_png: " PATH_FMT " is not a PNG file (%s)", path,
                         got == 0 ? "empty" : "truncated inside the signature");
        else
            cn_error_set(err, "load_png: " PATH_FMT " is not a PNG file (bad signature)", path);
        return NULL;
    }
    struct stat st;
    /* a pipe has no size to check against: only the sample cap applies then */
    size_t file_size = fstat(fileno(fp), &st) == 0 && S_ISREG(st.st_mode) ? (size_t)st.st_size : SIZE_MAX;
    png_context ctx = {{0}, NULL, false};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &ctx, on_png_error, on_png_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    cn_tensor *volatile out = NULL;
    png_bytep volatile rowbuf = NULL;
    png_bytep *volatile rows = NULL;
    if (!png || !info) {
        snprintf(ctx.msg, sizeof ctx.msg, "out of memory");
        goto fail;
    }
    if (setjmp(png_jmpbuf(png))) goto fail;
    png_init_io(png, fp);
    png_set_sig_bytes(png, 8);
    png_set_user_limits(png, 1 << 16, 1 << 16);
    png_set_chunk_cache_max(png, CHUNK_COUNT_MAX);
    png_set_chunk_malloc_max(png, CHUNK_MAX);
    /* libpng only warns when a chunk's length exceeds that cap, then allocates it anyway: the
     * variable-size ancillary chunks (unused here) are skipped unread instead */
    static const png_byte ignored[] = "tEXt\0zTXt\0iTXt\0iCCP\0sPLT\0eXIf\0pCAL\0sCAL\0hIST";
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, ignored, (int)(sizeof ignored / 5));
    png_read_info(png, info);
    /* the rows as stored (before palette and bit-depth expansion), filter bytes not counted */
    size_t stored_row = ((size_t)png_get_image_width(png, info) * png_get_channels(png, info) *
                         png_get_bit_depth(png, info) + 7) / 8;
    size_t stored = stored_row * png_get_image_height(png, info); /* <= 2^16 * 8 * 2^16: no overflow */
    if (stored / DEFLATE_MAX_RATIO > file_size) {
        snprintf(ctx.msg, sizeof ctx.msg, "image too large for the file: a %u x %u image needs %zu bytes of pixel "
                 "data, more than a %zu-byte file can hold", (unsigned)png_get_image_width(png, info), (unsigned)png_get_image_height(png, info),
                 stored, file_size);
        ctx.refused = true;
        goto fail;
    }
    png_set_expand(png);          /* palette -> RGB, grey < 8 bits -> 8, tRNS -> alpha */
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int w = (int)png_get_image_width(png, info), h = (int)png_get_image_height(png, info);
    int channels = png_get_channels(png, info), depth = png_get_bit_depth(png, info);
    size_t max_samples = cn_png_max_samples();
    if ((size_t)w * (size_t)h * (size_t)channels > max_samples) {
        snprintf(ctx.msg, sizeof ctx.msg, "image of %d x %d x %d samples is too large (limit %zu samples; set "
                 "CUNET_PNG_MAX_SAMPLES to raise it)", w, h, channels, max_samples);
        ctx.refused = true;
        goto fail;
    }
    int bytes = depth == 16 ? 2 : 1;
    int64_t shape[3] = {channels, h, w};
    cn_error inner;
    out = cn_empty(3, shape, &inner);
    if (!out) {
        snprintf(ctx.msg, sizeof ctx.msg, "%s", inner.msg);
        goto fail;
    }
    size_t rowbytes = png_get_rowbytes(png, info);
    rowbuf = malloc(rowbytes * (size_t)h);
    rows = malloc((size_t)h * sizeof *rows);
    if (!rowbuf || !rows) {
        snprintf(ctx.msg, sizeof ctx.msg, "out of memory");
        goto fail;
    }
    for (int y = 0; y < h; y++) rows[y] = rowbuf + (size_t)y * rowbytes;
    png_read_image(png, rows);
    png_read_end(png, NULL);
    float *p = cn_data(out);
    size_t plane = (size_t)h * (size_t)w;
    float scale = depth == 16 ? 1.0f / 65535.0f : 1.0f / 255.0f;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < channels; c++) {
                const png_byte *s = rowbuf + (size_t)y * rowbytes + ((size_t)x * channels + c) * bytes;
                unsigned v = bytes == 2 ? (unsigned)s[0] << 8 | s[1] : s[0]; /* PNG is big-endian */
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
    if (ctx.refused)
        cn_error_set(err, "load_png: " PATH_FMT ": %s", path, ctx.msg);
    else
        cn_error_set(err, "load_png: " PATH_FMT ": corrupt or truncated PNG (libpng: %s)", path,
                     ctx.msg[0] ? ctx.msg : "unknown error");
    return NULL;
}
