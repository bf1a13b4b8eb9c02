/* io_idx.c — IDX arrays (MNIST's format) through zlib, with every size checked against the data.
 *
 * Reading never trusts the header's sizes for an allocation: the shape must be one a tensor can
 * have and within cn_idx_max_bytes(); a plain file's length is compared with it up front; a
 * gzipped file must be big enough to inflate to it (deflate packs at most 1032:1), and is read
 * into a buffer that grows only as data actually arrive, never past the declared size. So a
 * corrupt header claiming terabytes, or a small gzip bomb, costs nothing before it is refused.
 */
#include "io_idx.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "io_file.h"

typedef struct idx_type {
    int code;
    const char *name;
    unsigned size;
    bool is_int;
    double lo, hi; /* range of the integer types */
} idx_type;

static const idx_type TYPES[] = {
    {CN_IDX_U8, "u8", 1, true, 0, 255},
    {CN_IDX_I8, "i8", 1, true, -128, 127},
    {CN_IDX_I16, "i16", 2, true, -32768, 32767},
    {CN_IDX_I32, "i32", 4, true, -2147483648.0, 2147483647.0},
    {CN_IDX_F32, "f32", 4, false, 0, 0},
    {CN_IDX_F64, "f64", 8, false, 0, 0},
};

static const idx_type *find_type(int code) {
    for (size_t k = 0; k < sizeof TYPES / sizeof TYPES[0]; k++)
        if (TYPES[k].code == code) return &TYPES[k];
    return NULL;
}

const char *cn_idx_type_name(int type_code) {
    const idx_type *ty = find_type(type_code);
    return ty ? ty->name : NULL;
}

/* ---- big-endian values -------------------------------------------------------------------- */

static uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static uint64_t be64(const unsigned char *p) { return (uint64_t)be32(p) << 32 | be32(p + 4); }

static void put_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16), p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static void put_be64(unsigned char *p, uint64_t v) {
    put_be32(p, (uint32_t)(v >> 32));
    put_be32(p + 4, (uint32_t)v);
}

static float decode(const idx_type *ty, const unsigned char *p) {
    switch (ty->code) {
    case CN_IDX_U8: return (float)p[0];
    case CN_IDX_I8: return (float)(p[0] < 128 ? (int)p[0] : (int)p[0] - 256);
    case CN_IDX_I16: {
        int v = (int)p[0] << 8 | p[1];
        return (float)(v < 32768 ? v : v - 65536);
    }
    case CN_IDX_I32: {
        int64_t v = be32(p);
        return (float)(v < INT64_C(2147483648) ? v : v - INT64_C(4294967296));
    }
    case CN_IDX_F32: {
        uint32_t bits = be32(p);
        float f;
        memcpy(&f, &bits, sizeof f);
        return f;
    }
    default: {
        uint64_t bits = be64(p);
        double d;
        memcpy(&d, &bits, sizeof d);
        if (isfinite(d) && fabs(d) >= 0x1.ffffffp127) return d > 0 ? INFINITY : -INFINITY;
        return (float)d;
    }
    }
}

/* ---- load --------------------------------------------------------------------------------- */

#define DEFLATE_MAX_RATIO 1032

size_t cn_idx_max_bytes(void) {
    const char *env = getenv("CUNET_IDX_MAX_BYTES");
    if (env && *env && env[0] != '-') {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(env, &end, 10);
        if (!errno && *end == '\0' && v > 0) return v < SIZE_MAX ? (size_t)v : SIZE_MAX;
    }
    return CN_IDX_MAX_BYTES;
}

/* Reads up to n bytes; returns how many arrived. A corrupt stream sets *zerr to zlib's message;
 * a gzip stream cut short is just a short read (zlib's "unexpected end of file"). */
static size_t gz_read_full(gzFile g, void *buf, size_t n, const char **zerr) {
    size_t got = 0;
    while (got < n) {
        size_t want = n - got > ((size_t)1 << 30) ? ((size_t)1 << 30) : n - got;
        int r = gzread(g, (char *)buf + got, (unsigned)want);
        if (r < 0) {
            int code;
            const char *msg = gzerror(g, &code);
            if (code != Z_BUF_ERROR) *zerr = code == Z_ERRNO ? strerror(errno) : msg;
            break;
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    return got;
}

static const char *gz_note(gzFile g) {
    int code;
    const char *msg = gzerror(g, &code);
    return code == Z_BUF_ERROR ? msg : NULL;
}

cn_tensor *cn_idx_load(const char *path, cn_error *err) {
    size_t file_size;
    int fd = cn_file_open_regular(path, &file_size, err);
    if (fd < 0) return NULL;
    gzFile g = gzdopen(fd, "rb");
    if (!g) {
        cn_error_set(err, "cannot read '" CN_PATH_FMT "': out of memory", path);
        close(fd);
        return NULL;
    }
    cn_tensor *t = NULL;
    unsigned char *data = NULL;
    const char *zerr = NULL;
    unsigned char head[4 + 4 * 255];
    size_t got = gz_read_full(g, head, 4, &zerr);
    if (zerr) {
        cn_error_set(err, CN_PATH_FMT ": corrupt gzip data (%s)", path, zerr);
        goto done;
    }
    if (got < 4) {
        cn_error_set(err, CN_PATH_FMT ": file is too short (%zu bytes) for an IDX file, which starts with a 4-byte "
                     "magic number", path, got);
        goto done;
    }
    const idx_type *ty = find_type(head[2]);
    if (head[0] != 0 || head[1] != 0 || !ty) {
        cn_error_set(err, CN_PATH_FMT ": bad magic number 0x%02x%02x%02x%02x: not an IDX file (expected 00 00, a type "
                     "code 08 u8, 09 i8, 0B i16, 0C i32, 0D f32 or 0E f64, and the dim count)", path, head[0],
                     head[1], head[2], head[3]);
        goto done;
    }
    int ndim = head[3];
    if (ndim > CN_MAX_DIMS) {
        cn_error_set(err, CN_PATH_FMT ": IDX file has %d dims; cunet supports at most %d", path, ndim, CN_MAX_DIMS);
        goto done;
    }
    size_t size_bytes = 4 * (size_t)ndim;
    got = gz_read_full(g, head + 4, size_bytes, &zerr);
    if (zerr || got < size_bytes) {
        if (zerr) cn_error_set(err, CN_PATH_FMT ": corrupt gzip data (%s)", path, zerr);
        else cn_error_set(err, CN_PATH_FMT ": truncated IDX header: %d dims need %zu bytes of sizes, the file has %zu",
                          path, ndim, size_bytes, got);
        goto done;
    }
    int64_t shape[CN_MAX_DIMS];
    for (int d = 0; d < ndim; d++) shape[d] = be32(head + 4 + 4 * d);
    char shape_buf[160];
    cn_shape_str(shape_buf, sizeof shape_buf, ndim, shape);
    size_t numel, expected, tensor_bytes, max_bytes = cn_idx_max_bytes();
    cn_error inner;
    if (cn_shape_numel_checked(ndim, shape, &numel, "load_idx", &inner)) { /* a shape no tensor can have */
        cn_error_set(err, CN_PATH_FMT ": IDX shape %s of %s is too large (%s)", path, shape_buf, ty->name, inner.msg);
        goto done;
    }
    expected = numel * ty->size, tensor_bytes = numel * sizeof(float); /* numel <= 2^44: no overflow */
    if (tensor_bytes > max_bytes) {
        cn_error_set(err, CN_PATH_FMT ": IDX shape %s of %s is too large: %zu bytes as float32, above the limit of "
                     "%zu (set CUNET_IDX_MAX_BYTES to raise it)", path, shape_buf, ty->name, tensor_bytes, max_bytes);
        goto done;
    }
    if (gzdirect(g)) { /* a plain file: its length must match before anything is allocated */
        uint64_t have = (uint64_t)file_size - 4 - size_bytes;
        if (have != expected) {
            cn_error_set(err, have < expected ? CN_PATH_FMT ": truncated IDX data: shape %s of %s needs %llu bytes, "
                                                "the file has %llu"
                                              : CN_PATH_FMT ": IDX data has the wrong length: shape %s of %s needs %llu "
                                                "bytes, the file has %llu",
                         path, shape_buf, ty->name, (unsigned long long)expected, (unsigned long long)have);
            goto done;
        }
    } else if (expected / DEFLATE_MAX_RATIO > (uint64_t)file_size) {
        cn_error_set(err, CN_PATH_FMT ": truncated IDX data: shape %s of %s needs %zu bytes, more than a %lld-byte "
                     "gzip file can hold", path, shape_buf, ty->name, expected, (long long)file_size);
        goto done;
    }
    /* Read the data into a buffer grown as bytes arrive (at most the expected size). */
    size_t cap = expected < ((size_t)1 << 20) ? (size_t)expected : ((size_t)1 << 20);
    data = malloc(cap ? cap : 1);
    if (!data) {
        cn_error_set(err, CN_PATH_FMT ": out of memory", path);
        goto done;
    }
    got = 0;
    for (;;) {
        size_t want = cap - got, r = gz_read_full(g, data + got, want, &zerr);
        got += r;
        if (zerr || r < want || got == expected) break;
        size_t grown = cap * 2 < expected ? cap * 2 : (size_t)expected;
        unsigned char *p = realloc(data, grown);
        if (!p) {
            cn_error_set(err, CN_PATH_FMT ": out of memory (%zu bytes)", path, grown);
            goto done;
        }
        data = p;
        cap = grown;
    }
    if (zerr) {
        cn_error_set(err, CN_PATH_FMT ": corrupt gzip data (%s)", path, zerr);
        goto done;
    }
    if (got < expected) {
        const char *note = gz_note(g);
        cn_error_set(err, CN_PATH_FMT ": truncated IDX data: shape %s of %s needs %llu bytes, the file has %zu%s%s%s",
                     path, shape_buf, ty->name, (unsigned long long)expected, got, note ? " (gzip: " : "",
                     note ? note : "", note ? ")" : "");
        goto done;
    }
    unsigned char extra;
    if (gz_read_full(g, &extra, 1, &zerr) > 0) {
        cn_error_set(err, CN_PATH_FMT ": IDX data has the wrong length: shape %s of %s needs %llu bytes, the file has "
                     "more", path, shape_buf, ty->name, (unsigned long long)expected);
        goto done;
    }
    if (zerr) {
        cn_error_set(err, CN_PATH_FMT ": corrupt gzip data (%s)", path, zerr);
        goto done;
    }
    t = cn_empty(ndim, shape, &inner);
    if (!t) {
        cn_error_set(err, CN_PATH_FMT ": %s", path, inner.msg);
        goto done;
    }
    float *dst = cn_data(t);
    for (size_t k = 0; k < numel; k++) dst[k] = decode(ty, data + k * ty->size);
done:
    free(data);
    gzclose(g); /* closes fd */
    return t;
}

/* ---- save --------------------------------------------------------------------------------- */

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* Encodes value v of element k into p; -1 with err filled when the type cannot hold it. */
static int encode(const idx_type *ty, float v, size_t k, unsigned char *p, const char *path, cn_error *err) {
    if (ty->is_int) {
        double r = round((double)v);
        if (isnan(v) || r < ty->lo || r > ty->hi) {
            cn_error_set(err, "cannot save '" CN_PATH_FMT "' as %s: element %zu is %g, outside [%.0f, %.0f]", path,
                         ty->name, k, (double)v, ty->lo, ty->hi);
            return -1;
        }
        int64_t i = (int64_t)r;
        uint32_t u = (uint32_t)i; /* two's complement bits of the low 32 */
        if (ty->size == 1) p[0] = (unsigned char)u;
        else if (ty->size == 2) p[0] = (unsigned char)(u >> 8), p[1] = (unsigned char)u;
        else put_be32(p, u);
    } else if (ty->code == CN_IDX_F32) {
        uint32_t bits;
        memcpy(&bits, &v, sizeof bits);
        put_be32(p, bits);
    } else {
        double d = v;
        uint64_t bits;
        memcpy(&bits, &d, sizeof bits);
        put_be64(p, bits);
    }
    return 0;
}

static int write_gzip(cn_atomic_file *af, const unsigned char *bytes, size_t n, cn_error *err) {
    int fd = dup(af->fd); /* gzclose closes its own descriptor; commit still needs af->fd */
    gzFile g = fd >= 0 ? gzdopen(fd, "wb") : NULL;
    if (!g) {
        if (fd >= 0) close(fd);
        cn_error_set(err, "cannot write '" CN_PATH_FMT "': %s", af->path, fd < 0 ? strerror(errno) : "out of memory");
        return -1;
    }
    int rc = 0;
    for (size_t off = 0; off < n && !rc;) {
        unsigned chunk = n - off > ((size_t)1 << 30) ? (1u << 30) : (unsigned)(n - off);
        if (gzwrite(g, bytes + off, chunk) != (int)chunk) {
            int code;
            const char *msg = gzerror(g, &code);
            cn_error_set(err, "cannot write '" CN_PATH_FMT "': %s", af->path, code == Z_ERRNO ? strerror(errno) : msg);
            rc = -1;
        }
        off += chunk;
    }
    int closed = gzclose(g);
    if (!rc && closed != Z_OK) {
        cn_error_set(err, "cannot write '" CN_PATH_FMT "': %s", af->path,
                     closed == Z_ERRNO ? strerror(errno) : "gzip error on close");
        rc = -1;
    }
    return rc;
}

int cn_idx_save(const char *path, const cn_tensor *t, int type_code, cn_error *err) {
    const idx_type *ty = find_type(type_code);
    if (!ty) {
        cn_error_set(err, "cannot save '" CN_PATH_FMT "': unknown IDX type code 0x%02x", path, (unsigned)type_code);
        return -1;
    }
    for (int d = 0; d < t->ndim; d++) {
        if ((uint64_t)t->shape[d] > UINT32_MAX) {
            cn_error_set(err, "cannot save '" CN_PATH_FMT "': size %lld of dim %d does not fit IDX's u32", path,
                         (long long)t->shape[d], d + 1);
            return -1;
        }
    }
    size_t n = cn_numel(t), head = 4 + 4 * (size_t)t->ndim, total = head + n * ty->size;
    unsigned char *bytes = malloc(total);
    float *values = NULL;
    if (bytes && n > 0) values = cn_is_contiguous(t) ? cn_data(t) : malloc(n * sizeof(float));
    if (!bytes || (n > 0 && !values)) {
        cn_error_set(err, "cannot save '" CN_PATH_FMT "': out of memory (%zu bytes)", path, total);
        free(bytes);
        return -1;
    }
    if (n > 0 && values != cn_data(t)) cn_to_buffer(t, values);
    bytes[0] = bytes[1] = 0;
    bytes[2] = (unsigned char)ty->code;
    bytes[3] = (unsigned char)t->ndim;
    for (int d = 0; d < t->ndim; d++) put_be32(bytes + 4 + 4 * d, (uint32_t)t->shape[d]);
    int rc = 0;
    for (size_t k = 0; k < n && !rc; k++) rc = encode(ty, values[k], k, bytes + head + k * ty->size, path, err);
    if (n > 0 && values != cn_data(t)) free(values);
    cn_atomic_file af;
    if (!rc) rc = cn_atomic_begin(&af, path, err);
    if (!rc) {
        rc = ends_with(path, ".gz") ? write_gzip(&af, bytes, total, err) : cn_atomic_write(&af, bytes, total, err);
        rc = rc ? (cn_atomic_abort(&af), -1) : cn_atomic_commit(&af, err);
    }
    free(bytes);
    return rc;
}
