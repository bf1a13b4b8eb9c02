/* fuzz_targets.h — what the fuzzers (tests/fuzz/fuzz_*.c, `make fuzz`) and the replay test
 * (tests/c/test_fuzz_replay.c, `make test`) do with one input: hand it to the engine's reader and
 * check the outcome. A reader must either load the input, giving a tensor that keeps the format's
 * promises, or refuse it with a message that names the file; anything else is a bug. Crashes,
 * undefined behaviour and leaks are the sanitizers' to find, memory blow-ups libFuzzer's
 * -malloc_limit_mb and -rss_limit_mb (the replay test bounds memory itself).
 */
#ifndef CN_FUZZ_TARGETS_H
#define CN_FUZZ_TARGETS_H

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "io_idx.h"
#include "io_jpeg.h"
#include "io_png.h"
#include "io_safetensors.h"
#include "tensor.h"

typedef enum { FUZZ_LOADED, FUZZ_REFUSED, FUZZ_BUG } fuzz_outcome;

/* A refusal must say why and name the input (label); why receives the message. */
static inline fuzz_outcome fuzz_refused(const cn_error *err, const char *label, char *why, size_t cap) {
    if (err->msg[0] && strstr(err->msg, label)) {
        snprintf(why, cap, "%s", err->msg);
        return FUZZ_REFUSED;
    }
    snprintf(why, cap, "error without a message naming the input: '%s'", err->msg);
    return FUZZ_BUG;
}

/* An image [C, H, W] with C in 1..max_channels, H and W >= 1, every value in [0, 1]. */
static inline fuzz_outcome fuzz_image(cn_tensor *t, int64_t max_channels, char *why, size_t cap) {
    fuzz_outcome r = FUZZ_LOADED;
    if (t->ndim != 3 || t->shape[0] < 1 || t->shape[0] > max_channels || t->shape[1] < 1 || t->shape[2] < 1) {
        snprintf(why, cap, "loaded a tensor of %d dims that is no image", t->ndim);
        r = FUZZ_BUG;
    }
    const float *p = cn_data(t);
    for (size_t i = 0, n = cn_numel(t); i < n && r == FUZZ_LOADED; i++)
        if (!(p[i] >= 0.0f && p[i] <= 1.0f)) {
            snprintf(why, cap, "pixel %zu is %g, outside [0, 1]", i, (double)p[i]);
            r = FUZZ_BUG;
        }
    cn_release(t);
    return r;
}

/* PNG: an image with 1..4 channels. */
static inline fuzz_outcome fuzz_png(const char *path, char *why, size_t cap) {
    cn_error err = {{0}};
    cn_tensor *t = cn_png_read(path, &err);
    return t ? fuzz_image(t, 4, why, cap) : fuzz_refused(&err, path, why, cap);
}

/* JPEG: an image with 1 or 3 channels. */
static inline fuzz_outcome fuzz_jpeg(const char *path, char *why, size_t cap) {
    cn_error err = {{0}};
    cn_tensor *t = cn_jpeg_read(path, &err);
    if (t && t->ndim == 3 && t->shape[0] == 2) {
        snprintf(why, cap, "loaded a 2-channel JPEG");
        cn_release(t);
        return FUZZ_BUG;
    }
    return t ? fuzz_image(t, 3, why, cap) : fuzz_refused(&err, path, why, cap);
}

/* IDX: at most 8 dims; reading every value must be safe (ASan checks the extent). */
static inline fuzz_outcome fuzz_idx(const char *path, char *why, size_t cap) {
    cn_error err = {{0}};
    cn_tensor *t = cn_idx_load(path, &err);
    if (!t) return fuzz_refused(&err, path, why, cap);
    fuzz_outcome r = FUZZ_LOADED;
    if (t->ndim > CN_MAX_DIMS || !cn_is_contiguous(t)) {
        snprintf(why, cap, "loaded a tensor of %d dims that is not contiguous", t->ndim);
        r = FUZZ_BUG;
    }
    volatile float sink = 0;
    const float *p = cn_data(t);
    for (size_t i = 0, n = cn_numel(t); i < n; i++) sink += p[i];
    (void)sink;
    cn_release(t);
    return r;
}

/* safetensors: every tensor the header lists loads with its declared shape, or is refused. */
static inline fuzz_outcome fuzz_safetensors_file(cn_safetensors_file *f, const char *label, char *why, size_t cap) {
    fuzz_outcome r = FUZZ_LOADED;
    for (int i = 0; i < cn_safetensors_count(f) && r != FUZZ_BUG; i++) {
        cn_error err = {{0}};
        const char *name = cn_safetensors_name(f, i);
        if (!name || !cn_safetensors_dtype(f, i) || cn_safetensors_find(f, name) != i) {
            snprintf(why, cap, "tensor %d: name lookup disagrees with its index", i);
            r = FUZZ_BUG;
            break;
        }
        cn_tensor *t = cn_safetensors_tensor(f, i, &err);
        if (!t) {
            if (fuzz_refused(&err, label, why, cap) == FUZZ_BUG) r = FUZZ_BUG;
            continue;
        }
        int ndim = cn_safetensors_ndim(f, i);
        if (t->ndim != ndim || memcmp(t->shape, cn_safetensors_shape(f, i), (size_t)ndim * sizeof(int64_t))) {
            snprintf(why, cap, "tensor '%.60s' loaded with a shape other than its header's", name);
            r = FUZZ_BUG;
        }
        cn_release(t);
    }
    for (int i = 0; i < cn_safetensors_meta_count(f) && r != FUZZ_BUG; i++) {
        const char *key = cn_safetensors_meta_key(f, i), *value = cn_safetensors_meta_value(f, i);
        if (!key || !value || cn_safetensors_meta(f, key) != value) {
            snprintf(why, cap, "metadata %d: key lookup disagrees with its index", i);
            r = FUZZ_BUG;
        }
    }
    return r;
}

static inline fuzz_outcome fuzz_safetensors(const char *path, char *why, size_t cap) {
    cn_error err = {{0}};
    cn_safetensors_file *f = cn_safetensors_open(path, &err);
    if (!f) return fuzz_refused(&err, path, why, cap);
    fuzz_outcome r = fuzz_safetensors_file(f, path, why, cap);
    cn_safetensors_close(f);
    return r;
}

#endif
