/* test_png.c — PNG I/O at the C level (io_png.h): round trips for 1..4 channels at odd sizes,
 * the committed files of tests/fixtures/png (16-bit, palettes, 1/4-bit grey, tRNS, Adam7; made by
 * tests/tools/fixtures_png.py) read value for value, every truncation and every single-bit flip
 * of a valid file refused with the file named, crafted headers, non-PNG input, and atomic saves
 * (a failed save, even one that fails mid-write, leaves the old file and no temp file).
 * Run it under the sanitizers too:
 *     make BUILD=build-asan SAN=1 build-asan/tests/test_png && build-asan/tests/test_png */
#include <dirent.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "alloc.h"
#include "ctest.h"
#include "io_png.h"
#include "tensor.h"
#include "test_util.h"

static char fixture_dir[512];

static const char *fixture(const char *name) {
    static char buf[768];
    snprintf(buf, sizeof buf, "%s/%s", fixture_dir, name);
    return buf;
}

/* value of t at [c, y, x] (3-D contiguous) */
static float at(const cn_tensor *t, int c, int y, int x) {
    return cn_data(t)[((size_t)c * t->shape[1] + (size_t)y) * t->shape[2] + (size_t)x];
}

static int has_shape(const cn_tensor *t, int64_t c, int64_t h, int64_t w) {
    return t && t->ndim == 3 && t->shape[0] == c && t->shape[1] == h && t->shape[2] == w;
}

/* A load that must fail with a message naming the file and containing want. */
static int read_fails(const char *path, const char *want) {
    cn_error err = {{0}};
    cn_tensor *t = cn_png_read(path, &err);
    if (t) {
        cn_release(t);
        fprintf(stderr, "  %s: read, expected an error containing \"%s\"\n", path, want);
        return 0;
    }
    if (!strstr(err.msg, path) || (want && !strstr(err.msg, want))) {
        fprintf(stderr, "  got \"%s\", expected the path and \"%s\"\n", err.msg, want ? want : "");
        return 0;
    }
    return 1;
}

/* ---- round trips ---------------------------------------------------------------------------- */

/* every byte value appears: sample (c, y, x) is byte (37 c + 11 y + 3 x + 5) mod 256 */
static cn_tensor *byte_pattern(int c, int h, int w) {
    int64_t shape[3] = {c, h, w};
    cn_tensor *t = cn_empty(3, shape, NULL);
    for (int k = 0; k < c; k++)
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                cn_data(t)[((size_t)k * h + y) * w + x] = (float)((37 * k + 11 * y + 3 * x + 5) % 256) / 255.0f;
    return t;
}

static void test_round_trip(void) {
    static const int sizes[][2] = {{1, 1}, {3, 5}, {17, 9}, {2, 33}, {64, 1}};
    for (int c = 1; c <= 4; c++)
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            int h = sizes[s][0], w = sizes[s][1];
            cn_tensor *t = byte_pattern(c, h, w);
            cn_error err = {{0}};
            const char *path = tmp_path("rt.png");
            CHECK(cn_png_write(path, t, &err) == 0);
            cn_tensor *r = cn_png_read(path, &err);
            CHECK(has_shape(r, c, h, w));
            if (has_shape(r, c, h, w)) {
                int bad = 0;
                for (size_t i = 0; i < cn_numel(t); i++)
                    if (fabsf(cn_data(r)[i] - cn_data(t)[i]) > 1e-7f) bad++;
                CHECK(bad == 0);
            }
            cn_release(t);
            cn_release(r);
        }
    CHECK(count_entries(test_tmpdir()) == 1); /* rt.png, rewritten in place, and no temp files */
    unlink(tmp_path("rt.png"));
}

static void test_two_d_and_clamping(void) {
    /* a [H, W] tensor is grey; values are clamped to [0, 1], NaN is 0, rounding is to nearest */
    float values[6] = {-0.5f, 2.0f, NAN, 0.5f / 255.0f, 0.49f / 255.0f, 1.0f};
    int64_t shape[2] = {2, 3};
    cn_error err = {{0}};
    cn_tensor *t = cn_from_data(2, shape, values, &err);
    const char *path = tmp_path("clamp.png");
    CHECK(cn_png_write(path, t, &err) == 0);
    cn_tensor *r = cn_png_read(path, &err);
    CHECK(has_shape(r, 1, 2, 3));
    if (has_shape(r, 1, 2, 3)) {
        CHECK(at(r, 0, 0, 0) == 0.0f);
        CHECK(at(r, 0, 0, 1) == 1.0f);
        CHECK(at(r, 0, 0, 2) == 0.0f);
        CHECK_CLOSE(at(r, 0, 1, 0), 1.0 / 255.0, 0, 1e-7);
        CHECK(at(r, 0, 1, 1) == 0.0f);
        CHECK(at(r, 0, 1, 2) == 1.0f);
    }
    /* a strided view is written as what it shows */
    cn_tensor *pattern = byte_pattern(3, 4, 6);
    int perm[3] = {0, 2, 1};
    cn_tensor *transposed = cn_permute(pattern, perm, &err);
    CHECK(cn_png_write(path, transposed, &err) == 0);
    cn_tensor *r2 = cn_png_read(path, &err);
    CHECK(has_shape(r2, 3, 6, 4));
    if (has_shape(r2, 3, 6, 4)) CHECK_CLOSE(at(r2, 2, 5, 1), at(pattern, 2, 1, 5), 0, 1e-7);
    cn_release(t), cn_release(r), cn_release(pattern), cn_release(transposed), cn_release(r2);
    unlink(path);
}

static void test_bad_shapes(void) {
    cn_error err = {{0}};
    int64_t s5[3] = {5, 2, 2}, s1[1] = {4}, s0[3] = {1, 0, 3}, s4[4] = {1, 1, 2, 2};
    cn_tensor *five = cn_zeros(3, s5, &err), *flat = cn_zeros(1, s1, &err), *empty = cn_zeros(3, s0, &err),
              *four = cn_zeros(4, s4, &err);
    const char *path = tmp_path("shape.png");
    CHECK(cn_png_write(path, five, &err) != 0 && strstr(err.msg, "expected an image [C, H, W]") && strstr(err.msg, "[5, 2, 2]") &&
          strstr(err.msg, path));
    CHECK(cn_png_write(path, flat, &err) != 0 && strstr(err.msg, "[4]"));
    CHECK(cn_png_write(path, four, &err) != 0 && strstr(err.msg, "[1, 1, 2, 2]"));
    CHECK(cn_png_write(path, empty, &err) != 0 && strstr(err.msg, "[1, 0, 3]"));
    CHECK(count_entries(test_tmpdir()) == 0);
    cn_release(five), cn_release(flat), cn_release(empty), cn_release(four);
}

/* ---- the committed fixtures --------------------------------------------------------------------- */

static void test_sixteen_bit(void) {
    cn_error err = {{0}};
    cn_tensor *g = cn_png_read(fixture("grey16_5x3.png"), &err);
    CHECK(has_shape(g, 1, 3, 5));
    if (has_shape(g, 1, 3, 5))
        for (int y = 0; y < 3; y++)
            for (int x = 0; x < 5; x++) CHECK_CLOSE(at(g, 0, y, x), (0x1111 * (5 * y + x) + 1) / 65535.0, 0, 1e-7);
    cn_tensor *rgb = cn_png_read(fixture("rgb16_4x3.png"), &err);
    CHECK(has_shape(rgb, 3, 3, 4));
    if (has_shape(rgb, 3, 3, 4))
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < 3; y++)
                for (int x = 0; x < 4; x++)
                    CHECK_CLOSE(at(rgb, c, y, x), ((1777 * (12 * c + 4 * y + x) + 3) % 65536) / 65535.0, 0, 1e-7);
    cn_tensor *rgba = cn_png_read(fixture("rgba16_3x2.png"), &err);
    CHECK(has_shape(rgba, 4, 2, 3));
    if (has_shape(rgba, 4, 2, 3))
        for (int c = 0; c < 4; c++)
            for (int y = 0; y < 2; y++)
                for (int x = 0; x < 3; x++)
                    CHECK_CLOSE(at(rgba, c, y, x), ((1777 * (6 * c + 3 * y + x) + 3) % 65536) / 65535.0, 0, 1e-7);
    if (!g) fprintf(stderr, "  (%s)\n", err.msg);
    cn_release(g), cn_release(rgb), cn_release(rgba);
}

static const int palette[4][3] = {{255, 0, 0}, {0, 128, 255}, {10, 20, 30}, {255, 255, 255}};
static const int alphas[4] = {255, 128, 0, 64};

static void test_palettes(void) {
    cn_error err = {{0}};
    cn_tensor *p = cn_png_read(fixture("palette2_5x4.png"), &err);
    CHECK(has_shape(p, 3, 4, 5)); /* 2-bit palette -> RGB */
    if (has_shape(p, 3, 4, 5))
        for (int y = 0; y < 4; y++)
            for (int x = 0; x < 5; x++)
                for (int c = 0; c < 3; c++) CHECK_CLOSE(at(p, c, y, x), palette[(x + 2 * y) % 4][c] / 255.0, 0, 1e-7);
    cn_tensor *q = cn_png_read(fixture("palette_trns_5x4.png"), &err);
    CHECK(has_shape(q, 4, 4, 5)); /* palette + tRNS -> RGBA */
    if (has_shape(q, 4, 4, 5))
        for (int y = 0; y < 4; y++)
            for (int x = 0; x < 5; x++) {
                int k = (x + 2 * y) % 4;
                for (int c = 0; c < 3; c++) CHECK_CLOSE(at(q, c, y, x), palette[k][c] / 255.0, 0, 1e-7);
                CHECK_CLOSE(at(q, 3, y, x), alphas[k] / 255.0, 0, 1e-7);
            }
    cn_release(p), cn_release(q);
}

static void test_low_bit_grey_trns_and_interlace(void) {
    cn_error err = {{0}};
    cn_tensor *g1 = cn_png_read(fixture("grey1_9x2.png"), &err);
    CHECK(has_shape(g1, 1, 2, 9));
    if (has_shape(g1, 1, 2, 9))
        for (int y = 0; y < 2; y++)
            for (int x = 0; x < 9; x++) CHECK(at(g1, 0, y, x) == (float)((x + y) % 2));
    cn_tensor *g4 = cn_png_read(fixture("grey4_5x3.png"), &err);
    CHECK(has_shape(g4, 1, 3, 5));
    if (has_shape(g4, 1, 3, 5))
        for (int y = 0; y < 3; y++)
            for (int x = 0; x < 5; x++) CHECK_CLOSE(at(g4, 0, y, x), ((5 * y + x) % 16) / 15.0, 0, 1e-7);
    cn_tensor *gt = cn_png_read(fixture("grey_trns_4x2.png"), &err);
    CHECK(has_shape(gt, 2, 2, 4)); /* grey + tRNS key -> grey + alpha */
    if (has_shape(gt, 2, 2, 4))
        for (int y = 0; y < 2; y++)
            for (int x = 0; x < 4; x++) {
                int v = 30 * (4 * y + x);
                CHECK_CLOSE(at(gt, 0, y, x), v / 255.0, 0, 1e-7);
                CHECK(at(gt, 1, y, x) == (v == 90 ? 0.0f : 1.0f));
            }
    cn_tensor *a7 = cn_png_read(fixture("adam7_rgb_7x5.png"), &err);
    CHECK(has_shape(a7, 3, 5, 7));
    if (has_shape(a7, 3, 5, 7))
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < 5; y++)
                for (int x = 0; x < 7; x++) CHECK_CLOSE(at(a7, c, y, x), 2 * (35 * c + 7 * y + x) / 255.0, 0, 1e-7);
    cn_release(g1), cn_release(g4), cn_release(gt), cn_release(a7);
}

/* ---- corrupt input -------------------------------------------------------------------------------- */

static void test_not_png(void) {
    CHECK(read_fails(tmp_path("missing.png"), "No such file"));
    const char *text = tmp_path("text.png");
    write_bytes(text, "hello, this is text and not an image\n", 37);
    CHECK(read_fails(text, "not a PNG file (bad signature)"));
    const char *empty = tmp_path("empty.png");
    write_bytes(empty, "", 0);
    CHECK(read_fails(empty, "not a PNG file (empty)"));
    const char *short_sig = tmp_path("short.png");
    write_bytes(short_sig, "\x89PNG", 4);
    CHECK(read_fails(short_sig, "truncated inside the signature"));
    const char *jpeg = tmp_path("photo.png");
    write_bytes(jpeg, "\xff\xd8\xff\xe0\0\x10JFIF\0", 11);
    CHECK(read_fails(jpeg, "bad signature"));
    const char *dir = tmp_path("a_directory.png");
    mkdir(dir, 0755);
    CHECK(read_fails(dir, "Is a directory"));
    rmdir(dir);
    /* tmp_path's buffers rotate: name the files again */
    static const char *const names[] = {"text.png", "empty.png", "short.png", "photo.png"};
    for (int i = 0; i < 4; i++) unlink(tmp_path(names[i]));
    CHECK(count_entries(test_tmpdir()) == 0);
}

/* Every prefix of a valid file, and every single-bit flip of it, is refused with the file named. */
static void test_truncations_and_bit_flips(void) {
    cn_error err = {{0}};
    cn_tensor *t = byte_pattern(3, 6, 5);
    const char *good = tmp_path("good.png");
    CHECK(cn_png_write(good, t, &err) == 0);
    size_t n = 0;
    unsigned char *bytes = read_bytes(good, &n);
    CHECK(bytes && n > 40);
    const char *bad = tmp_path("bad.png");
    int truncations_refused = 0, flips_refused = 0, flips_read = 0;
    for (size_t len = 0; bytes && len < n; len++) {
        write_bytes(bad, bytes, len);
        cn_tensor *r = cn_png_read(bad, &err);
        if (!r && strstr(err.msg, bad)) truncations_refused++;
        cn_release(r);
    }
    CHECK(truncations_refused == (int)n);
    for (size_t i = 8; bytes && i < n; i++)
        for (int bit = 0; bit < 8; bit++) {
            bytes[i] ^= (unsigned char)(1u << bit);
            write_bytes(bad, bytes, n);
            cn_tensor *r = cn_png_read(bad, &err);
            if (!r && strstr(err.msg, bad) && strstr(err.msg, "corrupt or truncated PNG")) flips_refused++;
            if (r) flips_read++;
            cn_release(r);
            bytes[i] ^= (unsigned char)(1u << bit);
        }
    /* CRC-32 catches every single-bit error in a chunk's type and data; a flip in a length field
     * misreads the chunk boundaries, and a flip in a CRC mismatches */
    CHECK(flips_read == 0);
    CHECK(flips_refused == (int)(n - 8) * 8);
    free(bytes);
    cn_release(t);
    unlink(good), unlink(bad);
}

static void put_u32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16), p[2] = (unsigned char)(v >> 8), p[3] = (unsigned char)v;
}

/* A PNG with a crafted IHDR (valid CRC) and one IDAT holding `idat` compressed bytes of zeros. */
static size_t crafted(unsigned char *out, uint32_t w, uint32_t h, int depth, int color, size_t raw) {
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    size_t k = 0;
    memcpy(out, sig, 8), k = 8;
    put_u32(out + k, 13), memcpy(out + k + 4, "IHDR", 4);
    put_u32(out + k + 8, w), put_u32(out + k + 12, h);
    out[k + 16] = (unsigned char)depth, out[k + 17] = (unsigned char)color, out[k + 18] = 0, out[k + 19] = 0,
    out[k + 20] = 0;
    put_u32(out + k + 21, (uint32_t)crc32(0, out + k + 4, 17));
    k += 25;
    unsigned char zeros[256] = {0}, z[512];
    uLongf zlen = sizeof z;
    compress(z, &zlen, zeros, raw < sizeof zeros ? raw : sizeof zeros);
    put_u32(out + k, (uint32_t)zlen), memcpy(out + k + 4, "IDAT", 4), memcpy(out + k + 8, z, zlen);
    put_u32(out + k + 8 + zlen, (uint32_t)crc32(0, out + k + 4, 4 + zlen));
    k += 12 + zlen;
    put_u32(out + k, 0), memcpy(out + k + 4, "IEND", 4), put_u32(out + k + 8, (uint32_t)crc32(0, out + k + 4, 4));
    return k + 12;
}

static void test_crafted_headers(void) {
    unsigned char buf[1024];
    const char *path = tmp_path("crafted.png");
    /* a sane 2 x 2 grey file first: the crafting itself is right */
    write_bytes(path, buf, crafted(buf, 2, 2, 8, 0, 6));
    cn_error err = {{0}};
    cn_tensor *ok = cn_png_read(path, &err);
    CHECK(has_shape(ok, 1, 2, 2));
    cn_release(ok);
    write_bytes(path, buf, crafted(buf, 1u << 30, 1, 8, 0, 6)); /* past the 65536 limit */
    CHECK(read_fails(path, "corrupt or truncated PNG"));
    write_bytes(path, buf, crafted(buf, 0, 5, 8, 0, 6)); /* zero width */
    CHECK(read_fails(path, "corrupt or truncated PNG"));
    write_bytes(path, buf, crafted(buf, 4, 4, 7, 0, 6)); /* bit depth 7 */
    CHECK(read_fails(path, "corrupt or truncated PNG"));
    write_bytes(path, buf, crafted(buf, 4, 4, 8, 5, 6)); /* colour type 5 */
    CHECK(read_fails(path, "corrupt or truncated PNG"));
    write_bytes(path, buf, crafted(buf, 40, 40, 8, 0, 6)); /* far less image data than announced */
    CHECK(read_fails(path, "corrupt or truncated PNG"));
    write_bytes(path, buf, crafted(buf, 65535, 65535, 16, 6, 6)); /* 17 G samples in 70 bytes */
    CHECK(read_fails(path, "too large"));
    unlink(path);
}

/* ---- memory bounded by the file (issue 11) ---------------------------------------------------- */

/* A w x h 8-bit grey PNG of zeros, deflated at level 9: a decompression bomb when large. */
static unsigned char *zeros_png(uint32_t w, uint32_t h, size_t *n) {
    size_t raw = ((size_t)w + 1) * h, cap = raw / 500 + 4096;
    unsigned char *out = malloc(cap + 64), *row = calloc((size_t)w + 1, 1);
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    memcpy(out, sig, 8);
    size_t k = 8;
    put_u32(out + k, 13), memcpy(out + k + 4, "IHDR", 4), put_u32(out + k + 8, w), put_u32(out + k + 12, h);
    out[k + 16] = 8, out[k + 17] = 0, out[k + 18] = out[k + 19] = out[k + 20] = 0;
    put_u32(out + k + 21, (uint32_t)crc32(0, out + k + 4, 17));
    k += 25;
    z_stream z = {0};
    deflateInit(&z, 9);
    z.next_out = out + k + 8, z.avail_out = (uInt)cap;
    for (uint32_t y = 0; y < h; y++) {
        z.next_in = row, z.avail_in = w + 1;
        deflate(&z, y + 1 == h ? Z_FINISH : Z_NO_FLUSH);
    }
    size_t zlen = z.total_out;
    deflateEnd(&z);
    put_u32(out + k, (uint32_t)zlen), memcpy(out + k + 4, "IDAT", 4);
    put_u32(out + k + 8 + zlen, (uint32_t)crc32(0, out + k + 4, 4 + (uInt)zlen));
    k += 12 + zlen;
    put_u32(out + k, 0), memcpy(out + k + 4, "IEND", 4), put_u32(out + k + 8, (uint32_t)crc32(0, out + k + 4, 4));
    *n = k + 12;
    free(row);
    return out;
}

static void test_memory_bounds(void) {
    unsigned char buf[1024];
    const char *path = tmp_path("bomb.png");
    size_t live = cn_memory_live();
    cn_memory_reset_peak();
    /* a 68-byte header claiming 65535 x 65535 RGBA16: refused by what the file can hold, before
     * anything is allocated (the sample cap alone would also refuse it) */
    write_bytes(path, buf, crafted(buf, 65535, 65535, 16, 6, 6));
    CHECK(read_fails(path, "image too large for the file: a 65535 x 65535 image needs 34358689800 bytes"));
    /* 1000 x 1000 RGBA announced, 15 bytes of IDAT: 4 MB cannot come out of a ~70-byte file */
    write_bytes(path, buf, crafted(buf, 1000, 1000, 8, 6, 6));
    CHECK(read_fails(path, "more than a"));
    /* a real bomb: 8200 x 8200 zeros deflate to ~65 KB; 67.2 M samples are above the 2^26 cap */
    size_t n;
    unsigned char *bomb = zeros_png(8200, 8200, &n);
    CHECK(n < 100000);
    write_bytes(path, bomb, n);
    free(bomb);
    CHECK(cn_png_max_samples() == CN_PNG_MAX_SAMPLES && CN_PNG_MAX_SAMPLES == (size_t)1 << 26);
    CHECK(read_fails(path, "image of 8200 x 8200 x 1 samples is too large (limit 67108864 samples; set "
                           "CUNET_PNG_MAX_SAMPLES to raise it)"));
    CHECK(cn_memory_live() == live && cn_memory_peak() == live); /* nothing allocated */
    /* the cap is overridable, both ways; values that are not positive integers are ignored */
    bomb = zeros_png(100, 30, &n);
    write_bytes(path, bomb, n);
    free(bomb);
    setenv("CUNET_PNG_MAX_SAMPLES", "2999", 1);
    CHECK(cn_png_max_samples() == 2999);
    CHECK(read_fails(path, "image of 100 x 30 x 1 samples is too large (limit 2999 samples"));
    setenv("CUNET_PNG_MAX_SAMPLES", "3000", 1);
    cn_error err = {{0}};
    cn_tensor *t = cn_png_read(path, &err);
    CHECK(has_shape(t, 1, 30, 100) && at(t, 0, 29, 99) == 0.0f);
    cn_release(t);
    static const char *const ignored[] = {"", "0", "-5", "12abc", "abc"};
    for (size_t i = 0; i < sizeof ignored / sizeof ignored[0]; i++) {
        setenv("CUNET_PNG_MAX_SAMPLES", ignored[i], 1);
        CHECK(cn_png_max_samples() == CN_PNG_MAX_SAMPLES);
    }
    unsetenv("CUNET_PNG_MAX_SAMPLES");
    unlink(path);
}

/* Text and ICC chunks are skipped unread: one whose length claims 2^31 - 1 bytes (once a 2.1 GB
 * allocation from a 45-byte file) is just a truncated file, and a zTXt that inflates to 64 MB
 * costs nothing. (tests/c/test_fuzz_replay.c measures the memory of the same inputs.) */
static void test_huge_ancillary_chunks(void) {
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    static const char *const kinds[] = {"zTXt", "iTXt", "iCCP", "tEXt"};
    const char *path = tmp_path("chunk.png");
    unsigned char buf[128];
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        crafted(buf, 1, 1, 8, 0, 2);
        size_t k = 8 + 25; /* keep the signature and IHDR, then the huge chunk's first bytes */
        CHECK(memcmp(buf, sig, 8) == 0 && memcmp(buf + 12, "IHDR", 4) == 0);
        put_u32(buf + k, 0x7fffffffu), memcpy(buf + k + 4, kinds[i], 4), memcpy(buf + k + 8, "k\0\0x", 4);
        write_bytes(path, buf, k + 12);
        clock_t start = clock();
        CHECK(read_fails(path, "corrupt or truncated PNG"));
        CHECK((double)(clock() - start) / CLOCKS_PER_SEC < 0.5);
    }
    unlink(path);
}

/* ---- atomic saves ---------------------------------------------------------------------------- */

static int same_file(const char *path, const unsigned char *bytes, size_t n) {
    size_t m = 0;
    unsigned char *now = read_bytes(path, &m);
    int same = now && m == n && memcmp(now, bytes, n) == 0;
    free(now);
    return same;
}

static void test_atomic_save(void) {
    cn_error err = {{0}};
    cn_tensor *small = byte_pattern(1, 4, 4);
    const char *path = tmp_path("keep.png");
    CHECK(cn_png_write(path, small, &err) == 0);
    size_t n = 0;
    unsigned char *before = read_bytes(path, &n);

    /* refused before anything is written */
    int64_t s5[3] = {5, 2, 2};
    cn_tensor *five = cn_zeros(3, s5, &err);
    CHECK(cn_png_write(path, five, &err) != 0);
    CHECK(same_file(path, before, n));

    /* failing mid-write: a file-size limit of 2 KiB, and a noisy image that compresses to ~12 KiB */
    int64_t big_shape[3] = {3, 64, 64};
    cn_tensor *noise = cn_empty(3, big_shape, &err);
    test_seed(12345);
    for (size_t i = 0; i < cn_numel(noise); i++) cn_data(noise)[i] = (float)floor(test_uniform() * 256.0) / 255.0f;
    struct rlimit old_limit, limit;
    getrlimit(RLIMIT_FSIZE, &old_limit);
    limit = old_limit;
    limit.rlim_cur = 2048;
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN); /* write() then fails with EFBIG */
    int limited = setrlimit(RLIMIT_FSIZE, &limit) == 0;
    int status = cn_png_write(path, noise, &err);
    setrlimit(RLIMIT_FSIZE, &old_limit);
    signal(SIGXFSZ, old_handler);
    if (limited) {
        CHECK(status != 0 && strstr(err.msg, path) && strstr(err.msg, "too large"));
        CHECK(same_file(path, before, n));
        CHECK(count_entries(test_tmpdir()) == 1); /* the temp file is gone */
    }
    /* without the limit it goes through and replaces the file */
    CHECK(cn_png_write(path, noise, &err) == 0);
    CHECK(!same_file(path, before, n));

    /* a path that is a directory: the rename fails, the directory stays, no temp file */
    const char *dir = tmp_path("dir.png");
    mkdir(dir, 0755);
    CHECK(cn_png_write(dir, small, &err) != 0 && strstr(err.msg, dir));
    struct stat st;
    CHECK(stat(dir, &st) == 0 && S_ISDIR(st.st_mode));
    CHECK(count_entries(test_tmpdir()) == 2);
    rmdir(dir);

    /* a missing directory */
    const char *nowhere = tmp_path("no/such/dir.png");
    CHECK(cn_png_write(nowhere, small, &err) != 0 && strstr(err.msg, nowhere) && strstr(err.msg, "No such file"));

    free(before);
    cn_release(small), cn_release(five), cn_release(noise);
    unlink(path);
}

static void test_file_mode(void) {
    /* a new file gets 0666 less the umask (mkstemp alone would leave 0600); a replaced one keeps its mode */
    cn_error err = {{0}};
    cn_tensor *t = byte_pattern(1, 2, 2);
    mode_t old_mask = umask(022);
    const char *path = tmp_path("mode.png");
    CHECK(cn_png_write(path, t, &err) == 0);
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0644);
    chmod(path, 0600);
    CHECK(cn_png_write(path, t, &err) == 0);
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
    umask(old_mask);
    cn_release(t);
    unlink(path);
}

int main(void) {
    const char *root = getenv("CUNET_ROOT");
    snprintf(fixture_dir, sizeof fixture_dir, "%s/tests/fixtures/png", root && *root ? root : ".");
    make_tmpdir("test_png");
    RUN(test_round_trip);
    RUN(test_two_d_and_clamping);
    RUN(test_bad_shapes);
    RUN(test_sixteen_bit);
    RUN(test_palettes);
    RUN(test_low_bit_grey_trns_and_interlace);
    RUN(test_not_png);
    RUN(test_truncations_and_bit_flips);
    RUN(test_crafted_headers);
    RUN(test_memory_bounds);
    RUN(test_huge_ancillary_chunks);
    RUN(test_atomic_save);
    RUN(test_file_mode);
    remove_tmpdir();
    return CTEST_SUMMARY("png");
}
