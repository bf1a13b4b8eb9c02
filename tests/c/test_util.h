/* test_util.h — what the C tests share besides the harness (ctest.h): a seeded random source and
 * random tensors, reading any tensor's elements, checking an error message, and a temporary
 * directory with the file helpers the I/O tests use.
 *
 *     int main(void) { test_seed(2024); ... }       the suite's own seed, set before any test runs
 *     cn_tensor *x = random_tensor(4, shape, -1, 1); values uniform in [-1, 1)
 *     make_tmpdir("test_io"); ... tmp_path("a.idx") ... remove_tmpdir();
 *
 * Everything is static inline: each test is one translation unit and uses what it needs.
 */
#ifndef CN_TEST_UTIL_H
#define CN_TEST_UTIL_H

#include <dirent.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tensor.h"

/* ---- random numbers ---------------------------------------------------------------------------- */

/* The state of the suite's generator: an LCG with Numerical Recipes' constants, so a failing case
 * reproduces exactly. */
static inline uint32_t *test_rng_state(void) {
    static uint32_t state = 1u;
    return &state;
}

/* Starts the sequence from seed. */
static inline void test_seed(uint32_t seed) { *test_rng_state() = seed; }

/* The next value, uniform in [0, 1) on a grid of 2^-24. */
static inline double test_uniform(void) {
    uint32_t *state = test_rng_state();
    *state = *state * 1664525u + 1013904223u;
    return (*state >> 8) / 16777216.0;
}

/* A new contiguous tensor of the given shape, values uniform in [lo, hi) (rounded once to
 * float32); exits when out of memory. */
static inline cn_tensor *random_tensor(int ndim, const int64_t *shape, double lo, double hi) {
    cn_error err;
    cn_tensor *t = cn_empty(ndim, shape, &err);
    if (!t) {
        fprintf(stderr, "random_tensor: %s\n", err.msg);
        exit(2);
    }
    float *p = cn_data(t);
    for (size_t i = 0; i < cn_numel(t); i++) p[i] = (float)(lo + (hi - lo) * test_uniform());
    return t;
}

/* ---- reading results ---------------------------------------------------------------------------- */

/* Element i (row-major) of any tensor, contiguous or not. */
static inline float elem(const cn_tensor *t, size_t i) {
    int64_t idx[CN_MAX_DIMS];
    for (int d = t->ndim - 1; d >= 0; d--) {
        idx[d] = (int64_t)(i % (size_t)t->shape[d]);
        i /= (size_t)t->shape[d];
    }
    return t->storage->data[cn_offset_of(t, idx)];
}

/* Whether err's message contains fragment; prints both when it does not (then CHECK fails). */
static inline bool mentions(const cn_error *err, const char *fragment) {
    if (strstr(err->msg, fragment)) return true;
    fprintf(stderr, "    message \"%s\" lacks \"%s\"\n", err->msg, fragment);
    return false;
}

/* ---- a temporary directory ---------------------------------------------------------------------- */

/* The directory make_tmpdir created. */
static inline char *test_tmpdir(void) {
    static char dir[64];
    return dir;
}

/* Creates /tmp/cunet_<name>.XXXXXX; exits when it cannot. */
static inline void make_tmpdir(const char *name) {
    snprintf(test_tmpdir(), 64, "/tmp/cunet_%.30s.XXXXXX", name);
    if (!mkdtemp(test_tmpdir())) {
        perror("mkdtemp");
        exit(1);
    }
}

/* Removes the directory with the files and empty directories in it. */
static inline void remove_tmpdir(void) {
    DIR *d = opendir(test_tmpdir());
    if (!d) return;
    struct dirent *e;
    char path[512];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(path, sizeof path, "%s/%s", test_tmpdir(), e->d_name);
        if (rmdir(path) != 0) unlink(path);
    }
    closedir(d);
    rmdir(test_tmpdir());
}

/* name inside the directory; the last four results stay valid. */
static inline const char *tmp_path(const char *name) {
    static char buf[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", test_tmpdir(), name);
    return buf[k];
}

/* Entries of dir other than . and .., or -1 when it cannot be read. */
static inline int count_entries(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

/* Writes n bytes to path with plain stdio (no atomic replacement: tests make broken files too). */
static inline void write_bytes(const char *path, const void *bytes, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fwrite(bytes, 1, n, f);
    fclose(f);
}

/* The whole file in a malloc'd buffer and its size in *n; NULL (and *n = 0) when it cannot be read. */
static inline unsigned char *read_bytes(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    *n = 0;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = malloc(len > 0 ? (size_t)len : 1);
    *n = fread(p, 1, (size_t)len, f);
    fclose(f);
    return p;
}

#endif
