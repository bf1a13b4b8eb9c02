/* io_jpeg.c — JPEG read with libjpeg(-turbo) (see io_jpeg.h).
 *
 * libjpeg reports fatal errors through error_exit, which must not return: it longjmps to the
 * setjmp point of cn_jpeg_read with the formatted message kept, and everything is released there.
 * Warnings (corrupt data, premature end of file) are counted by emit_message and turned into an
 * error after decoding. Locals changed between setjmp and a possible longjmp are volatile
 * (C11 7.13.2.1).
 */
#include "io_jpeg.h"

#include <errno.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jpeglib.h>

#include "io_png.h" /* cn_png_max_samples: one sample cap for both image readers */

#define PATH_FMT "%.300s"

typedef struct {
    struct jpeg_error_mgr base; /* first: libjpeg hands back a pointer to it */
    jmp_buf jump;
    char msg[CN_ERROR_LEN];
    char warning[JMSG_LENGTH_MAX]; /* the first warning */
    long warnings;
    bool refused;                  /* msg is a limit of ours, not a libjpeg error */
} jpeg_context;

static void on_jpeg_error(j_common_ptr cinfo) {
    jpeg_context *ctx = (jpeg_context *)cinfo->err;
    char text[JMSG_LENGTH_MAX];
    (*cinfo->err->format_message)(cinfo, text);
    if (!ctx->refused) snprintf(ctx->msg, sizeof ctx->msg, "%s", text);
    longjmp(ctx->jump, 1);
}

/* level < 0: a warning (corrupt data); others are trace messages, ignored. Nothing is printed. */
static void on_jpeg_message(j_common_ptr cinfo, int level) {
    jpeg_context *ctx = (jpeg_context *)cinfo->err;
    if (level >= 0) return;
    if (ctx->warnings++ == 0) (*cinfo->err->format_message)(cinfo, ctx->warning);
}

/* Refuses, through the error path, a file that keeps starting new scans. */
static void on_jpeg_progress(j_common_ptr cinfo) {
    if (!cinfo->is_decompressor) return;
    j_decompress_ptr d = (j_decompress_ptr)cinfo;
    if (d->input_scan_number > CN_JPEG_MAX_SCANS) {
        jpeg_context *ctx = (jpeg_context *)cinfo->err;
        snprintf(ctx->msg, sizeof ctx->msg, "more than %d scans (a progressive file built to be slow to decode)",
                 CN_JPEG_MAX_SCANS);
        ctx->refused = true;
        longjmp(ctx->jump, 1);
    }
}

cn_tensor *cn_jpeg_read(const char *path, cn_error *err) {
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        cn_error_set(err, "load_jpeg: cannot open " PATH_FMT ": %s", path, strerror(errno));
        return NULL;
    }
    unsigned char soi[2];
    size_t got = fread(soi, 1, 2, fp);
    if (got != 2 || soi[0] != 0xFF || soi[1] != 0xD8) {
        int read_error = ferror(fp) ? errno : 0;
        fclose(fp);
        if (read_error)
            cn_error_set(err, "load_jpeg: cannot read " PATH_FMT ": %s", path, strerror(read_error));
        else
            cn_error_set(err, "load_jpeg: " PATH_FMT " is not a JPEG file (%s)", path,
                         got == 0 ? "empty" : "no start-of-image marker FF D8");
        return NULL;
    }
    rewind(fp);
    struct stat st;
    /* a pipe has no size to check against: only the sample cap applies then */
    size_t file_size = fstat(fileno(fp), &st) == 0 && S_ISREG(st.st_mode) ? (size_t)st.st_size : SIZE_MAX;

    struct jpeg_decompress_struct cinfo;
    jpeg_context ctx;
    memset(&ctx, 0, sizeof ctx);
    struct jpeg_progress_mgr progress = {on_jpeg_progress, 0, 0, 0, 0};
    cinfo.err = jpeg_std_error(&ctx.base);
    ctx.base.error_exit = on_jpeg_error;
    ctx.base.emit_message = on_jpeg_message;
    cn_tensor *volatile out = NULL;
    unsigned char *volatile row = NULL;
    volatile bool created = false;
    if (setjmp(ctx.jump)) goto fail;
    jpeg_create_decompress(&cinfo);
    created = true;
    cinfo.progress = &progress;
    jpeg_stdio_src(&cinfo, fp);
    jpeg_read_header(&cinfo, TRUE);

    int components = cinfo.num_components;
    if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
        snprintf(ctx.msg, sizeof ctx.msg, "CMYK/YCCK JPEGs are not supported (convert to RGB first)");
        ctx.refused = true;
        goto fail;
    }
    if (cinfo.jpeg_color_space == JCS_GRAYSCALE) {
        cinfo.out_color_space = JCS_GRAYSCALE;
    } else if (components == 3) {
        cinfo.out_color_space = JCS_RGB;
    } else {
        snprintf(ctx.msg, sizeof ctx.msg, "%d colour components of an unknown colour space are not supported", components);
        ctx.refused = true;
        goto fail;
    }
    int channels = cinfo.out_color_space == JCS_GRAYSCALE ? 1 : 3;
    size_t w = cinfo.image_width, h = cinfo.image_height; /* <= 65500 each: libjpeg's JPEG_MAX_DIMENSION */
    size_t samples = w * h * (size_t)channels, max_samples = cn_png_max_samples();
    if (samples > max_samples) {
        snprintf(ctx.msg, sizeof ctx.msg, "image of %zu x %zu x %d samples is too large (limit %zu samples; set "
                 "CUNET_PNG_MAX_SAMPLES to raise it)", w, h, channels, max_samples);
        ctx.refused = true;
        goto fail;
    }
    bool multi_scan = cinfo.progressive_mode || cinfo.arith_code;
    size_t ratio = multi_scan ? CN_JPEG_MAX_RATIO_PROGRESSIVE : CN_JPEG_MAX_RATIO;
    if (samples / ratio > file_size) {
        snprintf(ctx.msg, sizeof ctx.msg, "image too large for the file: %zu x %zu x %d samples cannot be coded in a "
                 "%zu-byte %s JPEG (more than %zu samples per byte)", w, h, channels, file_size,
                 multi_scan ? "progressive or arithmetic-coded" : "sequential", ratio);
        ctx.refused = true;
        goto fail;
    }
    /* libjpeg's working memory: a progressive image keeps every coefficient (2 bytes per sample
     * before upsampling); beyond this the decoder would need a backing store, which libjpeg-turbo
     * refuses with an error */
    cinfo.mem->max_memory_to_use = (long)(2 * max_samples + ((size_t)16 << 20));
    jpeg_start_decompress(&cinfo);
    if ((int)cinfo.output_components != channels || cinfo.output_width != w || cinfo.output_height != h) {
        snprintf(ctx.msg, sizeof ctx.msg, "decoder output %u x %u x %d differs from the header", cinfo.output_width,
                 cinfo.output_height, cinfo.output_components);
        goto fail;
    }
    int64_t shape[3] = {channels, (int64_t)h, (int64_t)w};
    cn_error inner;
    out = cn_empty(3, shape, &inner);
    row = malloc(w * (size_t)channels);
    if (!out || !row) {
        snprintf(ctx.msg, sizeof ctx.msg, "%s", out ? "out of memory" : inner.msg);
        ctx.refused = true;
        goto fail;
    }
    float *p = cn_data(out);
    size_t plane = h * w;
    while (cinfo.output_scanline < cinfo.output_height) {
        size_t y = cinfo.output_scanline;
        JSAMPROW rows[1] = {row};
        if (jpeg_read_scanlines(&cinfo, rows, 1) != 1) {
            snprintf(ctx.msg, sizeof ctx.msg, "decoder stopped at row %zu of %zu", y, h);
            goto fail;
        }
        for (size_t x = 0; x < w; x++)
            for (int c = 0; c < channels; c++) p[c * plane + y * w + x] = (float)row[x * channels + c] * (1.0f / 255.0f);
    }
    jpeg_finish_decompress(&cinfo);
    if (ctx.warnings) {
        snprintf(ctx.msg, sizeof ctx.msg, "%s", ctx.warning);
        goto fail;
    }
    jpeg_destroy_decompress(&cinfo);
    free(row);
    fclose(fp);
    return out;
fail:
    free(row);
    cn_release(out);
    if (created) jpeg_destroy_decompress(&cinfo);
    fclose(fp);
    if (ctx.refused)
        cn_error_set(err, "load_jpeg: " PATH_FMT ": %s", path, ctx.msg);
    else
        cn_error_set(err, "load_jpeg: " PATH_FMT ": corrupt or truncated JPEG (libjpeg: %s)", path,
                     ctx.msg[0] ? ctx.msg : "unknown error");
    return NULL;
}
