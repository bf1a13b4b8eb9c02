/* test_io.c — safetensors and IDX at the C level: round trips, the reference layout byte for byte,
 * dtype conversions, validation messages, atomic saves, and a seeded fuzz loop that flips and
 * truncates bytes of valid files (run it under the sanitizers: make BUILD=build-asan SAN=1
 * build-asan/tests/test_io && build-asan/tests/test_io). */
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "alloc.h"
#include "ctest.h"
#include "io_file.h"
#include "io_idx.h"
#include "io_safetensors.h"
#include "tensor.h"
#include "test_util.h"

static cn_tensor *iota(int ndim, const int64_t *shape, float start) {
    cn_tensor *t = cn_empty(ndim, shape, NULL);
    for (size_t i = 0; i < cn_numel(t); i++) cn_data(t)[i] = start + (float)i;
    return t;
}

static bool same_values(const cn_tensor *a, const cn_tensor *b) {
    if (a->ndim != b->ndim) return false;
    for (int d = 0; d < a->ndim; d++)
        if (a->shape[d] != b->shape[d]) return false;
    size_t n = cn_numel(a);
    float *x = malloc((n ? n : 1) * sizeof(float)), *y = malloc((n ? n : 1) * sizeof(float));
    cn_to_buffer(a, x);
    cn_to_buffer(b, y);
    bool same = n == 0 || memcmp(x, y, n * sizeof(float)) == 0;
    free(x), free(y);
    return same;
}

/* A safetensors image from a header and data, in a static buffer. */
static size_t st_image(unsigned char *out, const char *header, const void *data, size_t data_len) {
    uint64_t n = strlen(header);
    memcpy(out, &n, 8);
    memcpy(out + 8, header, n);
    if (data_len) memcpy(out + 8 + n, data, data_len);
    return 8 + n + data_len;
}

/* Opens a crafted image and checks it fails with a message containing want. */
static bool fails_with(const char *header, const void *data, size_t data_len, const char *want) {
    static unsigned char buf[4096];
    size_t n = st_image(buf, header, data, data_len);
    cn_error err = {{0}};
    cn_safetensors_file *f = cn_safetensors_open_memory(buf, n, "crafted.safetensors", &err);
    if (f) {
        cn_safetensors_close(f);
        fprintf(stderr, "  opened, expected an error containing \"%s\"\n", want);
        return false;
    }
    if (!strstr(err.msg, want) || !strstr(err.msg, "crafted.safetensors")) {
        fprintf(stderr, "  got \"%s\", expected \"%s\"\n", err.msg, want);
        return false;
    }
    return true;
}

/* ---- safetensors ---------------------------------------------------------------------------- */

static void test_round_trip(void) {
    cn_error err;
    int64_t s3[3] = {2, 3, 4}, s8[8] = {2, 1, 2, 1, 1, 2, 1, 2}, s0[2] = {0, 7};
    cn_tensor *cube = iota(3, s3, 0), *deep = iota(8, s8, 100), *empty = cn_zeros(2, s0, &err);
    cn_tensor *scalar = cn_scalar(-1.5f, &err);
    int perm[3] = {2, 0, 1};
    cn_tensor *permuted = cn_permute(cube, perm, &err);
    cn_tensor *narrowed = cn_narrow(cube, 2, 1, 2, &err);
    CHECK(!cn_is_contiguous(permuted) && !cn_is_contiguous(narrowed));
    const char *names[] = {"cube", "deep", "empty", "scalar", "permuted", "narrowed"};
    cn_tensor *ts[] = {cube, deep, empty, scalar, permuted, narrowed};
    const char *keys[] = {"format", "epoch"}, *values[] = {"pt", "7"};
    const char *path = tmp_path("rt.safetensors");
    CHECK(cn_safetensors_save(path, 6, names, ts, 2, keys, values, &err) == 0);
    cn_safetensors_file *f = cn_safetensors_open(path, &err);
    CHECK(f != NULL);
    if (f) {
        CHECK(cn_safetensors_count(f) == 6);
        CHECK(strcmp(cn_safetensors_name(f, 0), "cube") == 0); /* name order */
        CHECK(strcmp(cn_safetensors_name(f, 5), "scalar") == 0);
        CHECK(cn_safetensors_name(f, 6) == NULL && cn_safetensors_name(f, -1) == NULL);
        for (int i = 0; i < 6; i++) {
            int k = cn_safetensors_find(f, names[i]);
            CHECK(k >= 0);
            CHECK(strcmp(cn_safetensors_dtype(f, k), "F32") == 0);
            CHECK(cn_safetensors_ndim(f, k) == ts[i]->ndim);
            cn_tensor *t = cn_safetensors_tensor(f, k, &err);
            CHECK(t && same_values(t, ts[i]));
            cn_release(t);
        }
        CHECK(cn_safetensors_find(f, "nope") == -1);
        CHECK(cn_safetensors_meta_count(f) == 2);
        CHECK(strcmp(cn_safetensors_meta_key(f, 0), "epoch") == 0); /* key order */
        CHECK(strcmp(cn_safetensors_meta(f, "format"), "pt") == 0);
        CHECK(cn_safetensors_meta(f, "missing") == NULL);
        CHECK(cn_safetensors_tensor(f, 9, &err) == NULL && strstr(err.msg, "out of range"));
        cn_safetensors_close(f);
    }
    CHECK(count_entries(test_tmpdir()) == 1);
    for (int i = 0; i < 6; i++) cn_release(ts[i]);
    unlink(path);
}

/* The reference implementation's test_serialization: "attn.0", F32 [1, 2, 3], 0..5. */
static void test_reference_bytes(void) {
    static const unsigned char want[] = {
        64, 0, 0, 0, 0, 0, 0, 0, 123, 34, 97, 116, 116, 110, 46, 48, 34, 58, 123, 34, 100,
        116, 121, 112, 101, 34, 58, 34, 70, 51, 50, 34, 44, 34, 115, 104, 97, 112, 101, 34,
        58, 91, 49, 44, 50, 44, 51, 93, 44, 34, 100, 97, 116, 97, 95, 111, 102, 102, 115,
        101, 116, 115, 34, 58, 91, 48, 44, 50, 52, 93, 125, 125, 0, 0, 0, 0, 0, 0, 128, 63,
        0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64, 0, 0, 160, 64};
    cn_error err;
    int64_t shape[3] = {1, 2, 3};
    cn_tensor *t = iota(3, shape, 0);
    const char *names[] = {"attn.0"};
    const char *path = tmp_path("ref.safetensors");
    CHECK(cn_safetensors_save(path, 1, names, &t, 0, NULL, NULL, &err) == 0);
    size_t n = 0;
    unsigned char *got = read_bytes(path, &n);
    CHECK(got && n == sizeof want && memcmp(got, want, n) == 0);
    free(got);
    cn_release(t);
    unlink(path);
}

static void test_conversions(void) {
    /* F16: 1, -2, 65504, smallest subnormal, -0, inf, nan; BF16: 1.5, -3; F64: 1/3, 1e300;
     * I64: -16777216, 2^40; BOOL: 0, 1, 7 -> 1 */
    uint16_t half[7] = {0x3C00, 0xC000, 0x7BFF, 0x0001, 0x8000, 0x7C00, 0x7E00};
    uint16_t bf[2] = {0x3FC0, 0xC040};
    double dbl[2] = {1.0 / 3, 1e300};
    int64_t i64[2] = {-16777216, (int64_t)1 << 40};
    unsigned char bools[3] = {0, 1, 7};
    unsigned char data[14 + 4 + 16 + 16 + 3];
    memcpy(data, half, 14);
    memcpy(data + 14, bf, 4);
    memcpy(data + 18, dbl, 16);
    memcpy(data + 34, i64, 16);
    memcpy(data + 50, bools, 3);
    const char *header = "{\"h\":{\"dtype\":\"F16\",\"shape\":[7],\"data_offsets\":[0,14]},"
                         "\"b\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[14,18]},"
                         "\"d\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[18,34]},"
                         "\"i\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[34,50]},"
                         "\"m\":{\"dtype\":\"BOOL\",\"shape\":[3],\"data_offsets\":[50,53]}}";
    static unsigned char buf[1024];
    size_t n = st_image(buf, header, data, sizeof data);
    cn_error err;
    cn_safetensors_file *f = cn_safetensors_open_memory(buf, n, "conv.safetensors", &err);
    CHECK(f != NULL);
    if (!f) return;
    cn_tensor *h = cn_safetensors_tensor(f, cn_safetensors_find(f, "h"), &err);
    float *p = cn_data(h);
    CHECK(p[0] == 1.0f && p[1] == -2.0f && p[2] == 65504.0f && p[3] == 0x1p-24f);
    CHECK(p[4] == 0.0f && signbit(p[4]) && isinf(p[5]) && p[5] > 0 && isnan(p[6]));
    cn_tensor *b = cn_safetensors_tensor(f, cn_safetensors_find(f, "b"), &err);
    CHECK(cn_data(b)[0] == 1.5f && cn_data(b)[1] == -3.0f);
    cn_tensor *d = cn_safetensors_tensor(f, cn_safetensors_find(f, "d"), &err);
    CHECK(cn_data(d)[0] == (float)(1.0 / 3) && isinf(cn_data(d)[1]));
    cn_tensor *i = cn_safetensors_tensor(f, cn_safetensors_find(f, "i"), &err);
    CHECK(cn_data(i)[0] == -16777216.0f && cn_data(i)[1] == 0x1p40f);
    cn_tensor *m = cn_safetensors_tensor(f, cn_safetensors_find(f, "m"), &err);
    CHECK(cn_data(m)[0] == 0.0f && cn_data(m)[1] == 1.0f && cn_data(m)[2] == 1.0f);
    cn_release(h), cn_release(b), cn_release(d), cn_release(i), cn_release(m);
    cn_safetensors_close(f);

    int64_t bad = 16777217;
    n = st_image(buf, "{\"s\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[0,8]}}", &bad, 8);
    f = cn_safetensors_open_memory(buf, n, "int.safetensors", &err);
    CHECK(f != NULL);
    if (f) {
        CHECK(cn_safetensors_tensor(f, 0, &err) == NULL);
        CHECK(strstr(err.msg, "int.safetensors: tensor 's' of I64 holds 16777217 at element 0") != NULL);
        cn_safetensors_close(f);
    }
}

static void test_corrupt(void) {
    float four[9] = {0};
    CHECK(fails_with("{\"conv.weight\":{\"dtype\":\"F32\",\"shape\":[3,3],\"data_offsets\":[0,100]}}", NULL, 0,
                     "past the end of the 0-byte data buffer"));
    static unsigned char zeros[100];
    CHECK(fails_with("{\"conv.weight\":{\"dtype\":\"F32\",\"shape\":[3,3],\"data_offsets\":[0,100]}}", zeros, 100,
                     "tensor 'conv.weight' has data_offsets [0, 100] but shape [3, 3] of F32 needs 36 bytes"));
    CHECK(fails_with("[]", NULL, 0, "not a JSON object"));
    CHECK(fails_with("{\"a\":", NULL, 0, "not valid JSON"));
    CHECK(fails_with("{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", four, 4, "has no data_offsets"));
    CHECK(fails_with("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", four, 4,
                     "shape entry 1 = -1"));
    CHECK(fails_with("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", four, 4,
                     "9 dims"));
    CHECK(fails_with("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                     "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[2,6]}}", four, 8, "overlap"));
    CHECK(fails_with("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", four, 8,
                     "bytes [0, 4) of the data buffer belong to no tensor"));
    CHECK(fails_with("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                     "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", four, 8,
                     "duplicate tensor name 'a'"));
    cn_error err;
    unsigned char tiny[3] = {1, 2, 3};
    CHECK(cn_safetensors_open_memory(tiny, 3, "tiny", &err) == NULL && strstr(err.msg, "tiny: file is too short"));
    uint64_t absurd[2] = {(uint64_t)1 << 62, 0};
    CHECK(cn_safetensors_open_memory(absurd, 16, "big", &err) == NULL && strstr(err.msg, "absurd"));
    CHECK(cn_safetensors_open(tmp_path("missing.safetensors"), &err) == NULL);
    CHECK(strstr(err.msg, "cannot open '") && strstr(err.msg, "No such file or directory"));
}

static void test_atomic_save(void) {
    cn_error err;
    int64_t shape[1] = {3};
    cn_tensor *t = iota(1, shape, 1);
    const char *names[] = {"w", "x"};
    const char *path = tmp_path("atomic.safetensors");
    CHECK(cn_safetensors_save(path, 1, names, &t, 0, NULL, NULL, &err) == 0);
    size_t n0 = 0, n1 = 0;
    unsigned char *before = read_bytes(path, &n0);
    /* failures before and after the temp file exists: a NULL tensor, duplicate names, a bad name */
    cn_tensor *with_null[2] = {t, NULL};
    CHECK(cn_safetensors_save(path, 2, names, with_null, 0, NULL, NULL, &err) == -1 && strstr(err.msg, "NULL"));
    const char *dup[] = {"w", "w"};
    cn_tensor *two[2] = {t, t};
    CHECK(cn_safetensors_save(path, 2, dup, two, 0, NULL, NULL, &err) == -1 && strstr(err.msg, "duplicate"));
    const char *bad[] = {"\xff"};
    CHECK(cn_safetensors_save(path, 1, bad, &t, 0, NULL, NULL, &err) == -1 && strstr(err.msg, "UTF-8"));
    unsigned char *after = read_bytes(path, &n1);
    CHECK(before && after && n0 == n1 && memcmp(before, after, n0) == 0);
    CHECK(count_entries(test_tmpdir()) == 1);
    /* a missing directory */
    CHECK(cn_safetensors_save(tmp_path("no/dir/x.safetensors"), 1, names, &t, 0, NULL, NULL, &err) == -1);
    CHECK(strstr(err.msg, "No such file or directory") != NULL);
    /* the target is a directory: the rename fails and the temp file is removed */
    const char *dir = tmp_path("sub");
    CHECK(mkdir(dir, 0755) == 0);
    CHECK(cn_safetensors_save(dir, 1, names, &t, 0, NULL, NULL, &err) == -1 && strstr(err.msg, "cannot replace"));
    CHECK(count_entries(test_tmpdir()) == 2 && count_entries(dir) == 0);
    rmdir(dir);
    free(before), free(after);
    cn_release(t);
    unlink(path);
}

/* F16 storage: exact halves and a round-to-even tie stored as such, read back; a finite value
 * beyond F16's range refused (the old file kept), infinities kept. */
static void test_save_f16(void) {
    cn_error err;
    int64_t shape[1] = {5};
    cn_tensor *t = cn_empty(1, shape, &err);
    float *x = cn_data(t);
    x[0] = -2.5f, x[1] = 65504.0f, x[2] = 0x1p-24f, x[3] = 1.0f + 0x1p-11f /* tie: to 1 */, x[4] = (float)INFINITY;
    const char *names[] = {"h"};
    const char *path = tmp_path("half.safetensors");
    CHECK(cn_safetensors_save_as(path, CN_SAFETENSORS_F16, 1, names, &t, 0, NULL, NULL, &err) == 0);
    size_t n = 0;
    unsigned char *bytes = read_bytes(path, &n);
    uint64_t hlen = 0;
    if (bytes) memcpy(&hlen, bytes, 8);
    CHECK(bytes && n == 8 + hlen + 10 && strstr((const char *)bytes + 8, "\"dtype\":\"F16\""));
    cn_safetensors_file *f = cn_safetensors_open(path, &err);
    CHECK(f && strcmp(cn_safetensors_dtype(f, 0), "F16") == 0);
    cn_tensor *back = f ? cn_safetensors_tensor(f, 0, &err) : NULL;
    const float want[5] = {-2.5f, 65504.0f, 0x1p-24f, 1.0f, (float)INFINITY};
    CHECK(back && memcmp(cn_data(back), want, sizeof want) == 0);
    cn_safetensors_close(f);
    x[1] = 65520.0f; /* rounds past 65504 */
    CHECK(cn_safetensors_save_as(path, CN_SAFETENSORS_F16, 1, names, &t, 0, NULL, NULL, &err) == -1);
    CHECK(strstr(err.msg, "tensor 'h' element [1] is 65520, beyond F16's range") != NULL);
    size_t n2 = 0;
    unsigned char *after = read_bytes(path, &n2);
    CHECK(after && n2 == n && memcmp(bytes, after, n) == 0);
    free(bytes), free(after);
    cn_release(back), cn_release(t);
    unlink(path);
}

/* A writer killed mid-save leaves path.tmp.XXXXXX; the next save of path removes it when no live
 * writer holds it (flock) and it is older than CN_ATOMIC_STALE_SECONDS. (issue 11) */
static bool exists(const char *path) { return access(path, F_OK) == 0; }

static void age(const char *path, int seconds) {
    struct timespec ts[2];
    clock_gettime(CLOCK_REALTIME, &ts[0]);
    ts[0].tv_sec -= seconds;
    ts[1] = ts[0];
    utimensat(AT_FDCWD, path, ts, 0);
}

static void test_stale_temp_files(void) {
    cn_error err;
    int64_t shape[1] = {3};
    cn_tensor *t = iota(1, shape, 1);
    const char *names[] = {"w"};
    const char *path = tmp_path("ckpt.safetensors");
    /* a real killed writer: a child begins a save, writes, and dies without commit or abort */
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        cn_atomic_file af;
        cn_error child_err;
        if (cn_atomic_begin(&af, path, &child_err) || cn_atomic_write(&af, "partial", 7, &child_err)) _exit(1);
        _exit(0); /* as kill -9 would: the temp file stays, its lock dies with the process */
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(count_entries(test_tmpdir()) == 1);
    DIR *d = opendir(test_tmpdir());
    char killed[512] = "";
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strncmp(e->d_name, "ckpt.safetensors.tmp.", 21) == 0) snprintf(killed, sizeof killed, "%s/%s", test_tmpdir(), e->d_name);
    if (d) closedir(d);
    CHECK(killed[0] && exists(killed));
    /* fresh: it may still be some writer's, between mkstemp and flock: kept */
    CHECK(cn_safetensors_save(path, 1, names, &t, 0, NULL, NULL, &err) == 0);
    CHECK(exists(killed));
    /* in use: a live writer holds the lock, however old the file: kept */
    char held[512], other[512], longer[512], plain[512];
    snprintf(held, sizeof held, "%s.tmp.Held01", path);
    write_bytes(held, "x", 1);
    age(held, 3600);
    int hold_fd = open(held, O_RDONLY);
    CHECK(hold_fd >= 0 && flock(hold_fd, LOCK_EX) == 0);
    /* names that are not exactly path.tmp.XXXXXX: never touched */
    snprintf(other, sizeof other, "%s/other.safetensors.tmp.AbC123", test_tmpdir());
    snprintf(longer, sizeof longer, "%s.tmp.AbC1234", path);
    snprintf(plain, sizeof plain, "%s.tmp", path);
    const char *keep[] = {other, longer, plain};
    for (int i = 0; i < 3; i++) write_bytes(keep[i], "x", 1), age(keep[i], 3600);
    /* stale: old, unlocked: removed by the next save, which itself succeeds */
    age(killed, CN_ATOMIC_STALE_SECONDS + 5);
    CHECK(cn_safetensors_save(path, 1, names, &t, 0, NULL, NULL, &err) == 0);
    CHECK(!exists(killed));
    CHECK(exists(held));
    for (int i = 0; i < 3; i++) CHECK(exists(keep[i]));
    /* the holder gone, the next save (of any writer: PNG, IDX, safetensors) cleans it */
    close(hold_fd);
    CHECK(cn_idx_save(path, t, CN_IDX_F32, &err) == 0);
    CHECK(!exists(held));
    cn_tensor *back = cn_idx_load(path, &err);
    CHECK(back && same_values(back, t));
    cn_release(back);
    for (int i = 0; i < 3; i++) unlink(keep[i]);
    unlink(path);
    CHECK(count_entries(test_tmpdir()) == 0);
    cn_release(t);
}

/* ---- IDX ------------------------------------------------------------------------------------ */

static size_t idx_header(unsigned char *out, int code, int ndim, const uint32_t *shape) {
    out[0] = out[1] = 0, out[2] = (unsigned char)code, out[3] = (unsigned char)ndim;
    for (int d = 0; d < ndim; d++)
        out[4 + 4 * d] = (unsigned char)(shape[d] >> 24), out[5 + 4 * d] = (unsigned char)(shape[d] >> 16),
        out[6 + 4 * d] = (unsigned char)(shape[d] >> 8), out[7 + 4 * d] = (unsigned char)shape[d];
    return 4 + 4 * (size_t)ndim;
}

/* Writes an IDX header + n bytes of `fill`, gzipped (level 9). */
static void write_idx_gz(const char *path, int code, int ndim, const uint32_t *shape, size_t n, int fill) {
    unsigned char head[64];
    size_t h = idx_header(head, code, ndim, shape);
    gzFile g = gzopen(path, "wb9");
    gzwrite(g, head, (unsigned)h);
    unsigned char chunk[65536];
    memset(chunk, fill, sizeof chunk);
    for (size_t done = 0; done < n;) {
        size_t k = n - done < sizeof chunk ? n - done : sizeof chunk;
        gzwrite(g, chunk, (unsigned)k);
        done += k;
    }
    gzclose(g);
}

static bool idx_fails(const char *path, const char *want) {
    cn_error err = {{0}};
    cn_tensor *t = cn_idx_load(path, &err);
    if (t) {
        cn_release(t);
        fprintf(stderr, "  %s loaded, expected an error containing \"%s\"\n", path, want);
        return false;
    }
    if (!strstr(err.msg, path) || !strstr(err.msg, want)) {
        fprintf(stderr, "  got \"%s\", expected \"%s\"\n", err.msg, want);
        return false;
    }
    return true;
}

/* Memory bounded by the data (issue 11): the header's claim is checked against the cap and against
 * what the file can hold before anything is read or allocated. */
static void test_idx_memory_bounds(void) {
    const char *path = tmp_path("bomb.idx.gz"), *plain = tmp_path("zero.idx");
    size_t live = cn_memory_live();
    cn_memory_reset_peak();
    /* 20 bytes: [0, 2^32 - 1, 2^32 - 1, 1] has no elements, but its strides overflow (once UB) */
    unsigned char buf[64];
    uint32_t zero_huge[4] = {0, 0xffffffffu, 0xffffffffu, 1};
    write_bytes(plain, buf, idx_header(buf, CN_IDX_U8, 4, zero_huge));
    CHECK(idx_fails(plain, "IDX shape [0, 4294967295, 4294967295, 1] of u8 is too large"));
    /* a ~5 KB gzip claiming 5.25 GB: above the 4 GiB default cap as float32 */
    uint32_t claim[2] = {75000, 70000};
    write_idx_gz(path, CN_IDX_U8, 2, claim, 1 << 22, 0);
    CHECK(idx_fails(path, "21000000000 bytes as float32, above the limit of 4294967296 (set CUNET_IDX_MAX_BYTES"));
    /* with the cap raised, the gzip file is still far too small to inflate to 5.25 GB: refused
     * at once instead of after inflating all of it */
    setenv("CUNET_IDX_MAX_BYTES", "100000000000", 1);
    CHECK(cn_idx_max_bytes() == 100000000000u);
    clock_t start = clock();
    CHECK(idx_fails(path, "truncated IDX data: shape [75000, 70000] of u8 needs 5250000000 bytes, more than a"));
    CHECK((double)(clock() - start) / CLOCKS_PER_SEC < 0.2);
    /* a 4 MB stream under a 1 MB header: inflating stops one byte past the declared size */
    uint32_t mb[2] = {1024, 1024};
    write_idx_gz(path, CN_IDX_U8, 2, mb, 4 << 20, 7);
    CHECK(idx_fails(path, "the file has more"));
    /* the cap both ways: 1024 x 1024 u8 is 4 MiB as float32 */
    setenv("CUNET_IDX_MAX_BYTES", "4194303", 1);
    write_idx_gz(path, CN_IDX_U8, 2, mb, 1 << 20, 7);
    CHECK(idx_fails(path, "4194304 bytes as float32, above the limit of 4194303"));
    setenv("CUNET_IDX_MAX_BYTES", "4194304", 1);
    cn_error err;
    cn_tensor *t = cn_idx_load(path, &err);
    CHECK(t && t->ndim == 2 && t->shape[0] == 1024 && cn_data(t)[1024 * 1024 - 1] == 7.0f);
    cn_release(t);
    static const char *const ignored[] = {"", "0", "-1", "4k", "x"};
    for (size_t i = 0; i < sizeof ignored / sizeof ignored[0]; i++) {
        setenv("CUNET_IDX_MAX_BYTES", ignored[i], 1);
        CHECK(cn_idx_max_bytes() == CN_IDX_MAX_BYTES);
    }
    unsetenv("CUNET_IDX_MAX_BYTES");
    CHECK(cn_memory_live() == live && cn_memory_peak() == live + ((size_t)4 << 20));
    unlink(path), unlink(plain);
}

/* safetensors shapes go through the same check as every tensor: [0, 2^53 - 1, 2^53 - 1] (no
 * bytes, overflowing strides) and [2^32, 2^32] (numel once wrapped to 0) are refused at open. */
static void test_safetensors_shape_limits(void) {
    CHECK(fails_with("{\"a\":{\"dtype\":\"F32\",\"shape\":[0,9007199254740991,9007199254740991],"
                     "\"data_offsets\":[0,0]}}", NULL, 0, "has too many elements for its strides"));
    CHECK(fails_with("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}",
                     NULL, 0, "whose size overflows the engine's limits"));
    CHECK(fails_with("{\"a\":{\"dtype\":\"U8\",\"shape\":[17592186044417],\"data_offsets\":[0,0]}}", NULL, 0,
                     "too many elements"));
}

static void test_idx(void) {
    cn_error err;
    int64_t shape[3] = {2, 3, 4};
    cn_tensor *t = iota(3, shape, 230); /* 230..253 */
    const char *files[] = {"a.idx", "a.idx.gz"};
    for (int k = 0; k < 2; k++) {
        const char *path = tmp_path(files[k]);
        CHECK(cn_idx_save(path, t, CN_IDX_U8, &err) == 0);
        cn_tensor *back = cn_idx_load(path, &err);
        CHECK(back && same_values(back, t));
        cn_release(back);
        CHECK(cn_idx_save(path, t, CN_IDX_F32, &err) == 0);
        back = cn_idx_load(path, &err);
        CHECK(back && same_values(back, t));
        cn_release(back);
    }
    size_t n = 0;
    unsigned char *bytes = read_bytes(tmp_path("a.idx"), &n);
    CHECK(n == 4 + 12 + 24 * 4 && bytes[2] == CN_IDX_F32 && bytes[3] == 3 && bytes[7] == 2);
    /* truncated: the message names the file and both byte counts */
    write_bytes(tmp_path("cut.idx"), bytes, n - 10);
    CHECK(cn_idx_load(tmp_path("cut.idx"), &err) == NULL);
    CHECK(strstr(err.msg, "cut.idx: truncated IDX data: shape [2, 3, 4] of f32 needs 96 bytes, the file has 86"));
    free(bytes);
    /* out of range for u8: nothing written */
    cn_fill_(t, 300);
    CHECK(cn_idx_save(tmp_path("range.idx"), t, CN_IDX_U8, &err) == -1 && strstr(err.msg, "outside [0, 255]"));
    CHECK(access(tmp_path("range.idx"), F_OK) != 0);
    CHECK(cn_idx_save(tmp_path("x.idx"), t, 0x42, &err) == -1 && strstr(err.msg, "unknown IDX type"));
    CHECK(cn_idx_load(tmp_path("none.idx"), &err) == NULL && strstr(err.msg, "No such file or directory"));
    CHECK(strcmp(cn_idx_type_name(CN_IDX_U8), "u8") == 0 && cn_idx_type_name(1) == NULL);
    cn_release(t);
    unlink(tmp_path("a.idx")), unlink(tmp_path("a.idx.gz")), unlink(tmp_path("cut.idx"));
}

/* ---- fuzz ----------------------------------------------------------------------------------- */

static uint64_t rng_state = 0x9E3779B97F4A7C15u;

static uint64_t next_rand(void) { /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Du;
}

static void mutate(unsigned char *buf, size_t *n) {
    int kind = (int)(next_rand() % 7);
    if (*n == 0) return;
    if (kind == 0) { /* truncate */
        *n = next_rand() % *n;
    } else if (kind == 1) { /* flip a few bits anywhere */
        for (int k = 1 + (int)(next_rand() % 4); k > 0; k--)
            buf[next_rand() % *n] ^= (unsigned char)(1u << (next_rand() % 8));
    } else if (kind == 2) { /* a random byte inside the header */
        size_t h = *n > 8 ? 8 + next_rand() % (*n - 8 < 200 ? *n - 8 : 200) : 0;
        buf[h] = (unsigned char)next_rand();
    } else if (kind == 3) { /* a digit changed (offsets, shapes) */
        for (size_t tries = 0; tries < 100; tries++) {
            size_t at = next_rand() % *n;
            if (buf[at] >= '0' && buf[at] <= '9') {
                buf[at] = (unsigned char)("0123456789-.e9"[next_rand() % 14]);
                break;
            }
        }
    } else if (kind == 4) { /* the header length */
        buf[next_rand() % 8] = (unsigned char)next_rand();
    } else { /* the data at the end: the file stays valid, the values change */
        size_t tail = *n < 32 ? *n : 32;
        buf[*n - 1 - next_rand() % tail] = (unsigned char)next_rand();
    }
}

static int fuzz_safetensors_round(const unsigned char *base, size_t base_n, unsigned char *buf, int iter,
                                  int *opened) {
    size_t n = base_n;
    memcpy(buf, base, n);
    for (int m = 1 + (int)(next_rand() % 3); m > 0; m--) mutate(buf, &n);
    cn_error err = {{0}};
    cn_safetensors_file *f;
    if (iter % 10 == 0) { /* through a real file now and then */
        write_bytes(tmp_path("fuzz.safetensors"), buf, n);
        f = cn_safetensors_open(tmp_path("fuzz.safetensors"), &err);
    } else {
        f = cn_safetensors_open_memory(buf, n, "fuzz", &err);
    }
    if (!f) return err.msg[0] != '\0';
    (*opened)++;
    bool ok = true;
    for (int i = 0; i < cn_safetensors_count(f); i++) {
        cn_error terr = {{0}};
        cn_tensor *t = cn_safetensors_tensor(f, i, &terr);
        if (!t) {
            ok = ok && terr.msg[0] != '\0';
            continue;
        }
        const int64_t *shape = cn_safetensors_shape(f, i);
        ok = ok && t->ndim == cn_safetensors_ndim(f, i) && t->ndim <= CN_MAX_DIMS;
        for (int d = 0; d < t->ndim && ok; d++) ok = t->shape[d] == shape[d];
        /* touch every element: the sanitizers see any read past the data */
        volatile float sum = 0;
        for (size_t k = 0; k < cn_numel(t); k++) sum += cn_data(t)[k];
        (void)sum;
        cn_release(t);
    }
    cn_safetensors_close(f);
    return ok;
}

static void test_fuzz_safetensors(void) {
    cn_error err;
    int64_t s1[2] = {3, 5}, s2[1] = {4};
    cn_tensor *a = iota(2, s1, 0), *b = iota(1, s2, -2), *c = cn_scalar(7, &err);
    const char *names[] = {"layer.weight", "layer.bias", "step"};
    cn_tensor *ts[] = {a, b, c};
    const char *keys[] = {"format"}, *values[] = {"pt"};
    const char *path = tmp_path("base.safetensors");
    CHECK(cn_safetensors_save(path, 3, names, ts, 1, keys, values, &err) == 0);
    size_t base_n = 0;
    unsigned char *base = read_bytes(path, &base_n);
    /* a second base with other dtypes, so the conversions get fuzzed too */
    static const char header2[] = "{\"h\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[0,8]},"
                                  "\"i\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[8,24]},"
                                  "\"d\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[24,32]}}";
    unsigned char data2[32];
    for (int k = 0; k < 32; k++) data2[k] = (unsigned char)(k * 37);
    static unsigned char base2[512];
    size_t base2_n = st_image(base2, header2, data2, sizeof data2);
    unsigned char *buf = malloc(base_n > base2_n ? base_n : base2_n);
    int good = 0, opened = 0, rounds = 600;
    for (int iter = 0; iter < rounds; iter++) {
        if (iter % 2) good += fuzz_safetensors_round(base, base_n, buf, iter, &opened);
        else good += fuzz_safetensors_round(base2, base2_n, buf, iter, &opened);
    }
    CHECK(good == rounds);
    CHECK(opened > 0 && opened < rounds); /* the loop exercised both outcomes */
    printf("  fuzz safetensors: %d rounds, %d opened, %d refused with a message\n", rounds, opened,
           rounds - opened);
    free(buf), free(base);
    cn_release(a), cn_release(b), cn_release(c);
    unlink(path), unlink(tmp_path("fuzz.safetensors"));
}

static void test_fuzz_idx(void) {
    cn_error err;
    int64_t shape[2] = {4, 6};
    cn_tensor *t = iota(2, shape, 0);
    const char *bases[] = {"base.idx", "base.idx.gz"};
    int good = 0, loaded = 0, rounds = 0;
    for (int k = 0; k < 2; k++) {
        CHECK(cn_idx_save(tmp_path(bases[k]), t, k ? CN_IDX_F32 : CN_IDX_U8, &err) == 0);
        size_t base_n = 0;
        unsigned char *base = read_bytes(tmp_path(bases[k]), &base_n);
        unsigned char *buf = malloc(base_n);
        for (int iter = 0; iter < 150; iter++, rounds++) {
            size_t n = base_n;
            memcpy(buf, base, n);
            int kind = (int)(next_rand() % 3);
            if (kind == 0) n = next_rand() % n;
            else if (kind == 1) buf[next_rand() % n] ^= (unsigned char)(1u << (next_rand() % 8));
            else buf[next_rand() % (n < 16 ? n : 16)] = (unsigned char)next_rand();
            const char *path = tmp_path(k ? "fuzz.idx.gz" : "fuzz.idx");
            write_bytes(path, buf, n);
            cn_error lerr = {{0}};
            cn_tensor *r = cn_idx_load(path, &lerr);
            if (r) {
                loaded++;
                volatile float sum = 0;
                for (size_t e = 0; e < cn_numel(r); e++) sum += cn_data(r)[e];
                (void)sum;
                good += r->ndim <= CN_MAX_DIMS;
                cn_release(r);
            } else {
                good += lerr.msg[0] != '\0';
            }
        }
        free(buf), free(base);
    }
    CHECK(good == rounds);
    printf("  fuzz idx: %d rounds, %d loaded, %d refused with a message\n", rounds, loaded, rounds - loaded);
    cn_release(t);
    unlink(tmp_path("base.idx")), unlink(tmp_path("base.idx.gz"));
    unlink(tmp_path("fuzz.idx")), unlink(tmp_path("fuzz.idx.gz"));
}

int main(void) {
    make_tmpdir("test_io");
    RUN(test_round_trip);
    RUN(test_reference_bytes);
    RUN(test_conversions);
    RUN(test_corrupt);
    RUN(test_atomic_save);
    RUN(test_save_f16);
    RUN(test_stale_temp_files);
    RUN(test_idx);
    RUN(test_idx_memory_bounds);
    RUN(test_safetensors_shape_limits);
    RUN(test_fuzz_safetensors);
    RUN(test_fuzz_idx);
    remove_tmpdir();
    return CTEST_SUMMARY("io");
}
