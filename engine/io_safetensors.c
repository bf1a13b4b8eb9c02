/* io_safetensors.c — safetensors save (atomic, through io_file.h; laid out as the reference
 * implementation does) and open (the whole file read into memory, every header field validated
 * before use).
 *
 * Reading trusts nothing: the header length is bounded, the header must be UTF-8 JSON without NUL
 * bytes (cJSON then parses a NUL-terminated copy, so it cannot run past it), every number is
 * checked to be a non-negative integer below 2^53 before it becomes a size, every product is
 * overflow-checked, and the tensors must tile the data buffer exactly. Only then are bytes read,
 * each tensor strictly inside [data start, file end).
 */
#include "io_safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io_file.h"

#if !defined(__BYTE_ORDER__) || !defined(__ORDER_LITTLE_ENDIAN__)
#error "io_safetensors.c needs __BYTE_ORDER__ (GCC or Clang)"
#elif __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "io_safetensors.c assumes a little-endian host (safetensors data are little-endian)"
#endif

/* Names in messages are cut to this many bytes, so a hostile name cannot swamp the message. */
#define NAME_FMT "%.120s"

/* ==== shared helpers ======================================================================= */

/* Offset of the first byte that breaks UTF-8 (overlongs, surrogates and > U+10FFFF included),
 * or n when s[0..n) is valid. */
static size_t utf8_error_at(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
        if (c >= 0xC2 && c <= 0xDF) len = 2;
        else if (c == 0xE0) len = 3, lo = 0xA0;
        else if (c >= 0xE1 && c <= 0xEC) len = 3;
        else if (c == 0xED) len = 3, hi = 0x9F;
        else if (c >= 0xEE && c <= 0xEF) len = 3;
        else if (c == 0xF0) len = 4, lo = 0x90;
        else if (c >= 0xF1 && c <= 0xF3) len = 4;
        else if (c == 0xF4) len = 4, hi = 0x8F;
        else return i;
        if (n - i < len) return i;
        if (s[i + 1] < lo || s[i + 1] > hi) return i;
        for (size_t k = 2; k < len; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF) return i;
        i += len;
    }
    return n;
}

static bool is_utf8(const char *s) {
    size_t n = strlen(s);
    return utf8_error_at((const unsigned char *)s, n) == n;
}

/* Growable string; on allocation failure it stops growing and remembers. */
typedef struct strbuf {
    char *p;
    size_t len, cap;
    bool failed;
} strbuf;

static void sb_put(strbuf *b, const char *s, size_t n) {
    if (b->failed) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->failed = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_puts(strbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_uint(strbuf *b, uint64_t v) {
    char buf[24];
    int k = snprintf(buf, sizeof buf, "%llu", (unsigned long long)v);
    sb_put(b, buf, (size_t)k);
}

/* A JSON string escaped as serde_json writes it: \" \\ \b \f \n \r \t, other controls \u00xx. */
static void sb_json_string(strbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': sb_put(b, "\\\"", 2); break;
        case '\\': sb_put(b, "\\\\", 2); break;
        case '\b': sb_put(b, "\\b", 2); break;
        case '\f': sb_put(b, "\\f", 2); break;
        case '\n': sb_put(b, "\\n", 2); break;
        case '\r': sb_put(b, "\\r", 2); break;
        case '\t': sb_put(b, "\\t", 2); break;
        default:
            if (*p < 0x20) {
                char esc[8];
                snprintf(esc, sizeof esc, "\\u%04x", *p);
                sb_put(b, esc, 6);
            } else {
                sb_put(b, (const char *)p, 1);
            }
        }
    }
    sb_put(b, "\"", 1);
}

/* ==== save ================================================================================= */

typedef struct named {
    const char *name;
    int index;
} named;

static int cmp_named(const void *a, const void *b) {
    return strcmp(((const named *)a)->name, ((const named *)b)->name);
}

/* The header name and element size of each cn_safetensors_store, indexed by it. */
static const struct {
    const char *name;
    unsigned size;
} STORES[] = {[CN_SAFETENSORS_F32] = {"F32", 4}, [CN_SAFETENSORS_F16] = {"F16", 2}};

/* IEEE binary32 -> binary16, round to nearest even; NaN stays NaN, infinities stay infinite.
 * *overflow is set when a finite x rounds beyond F16's largest value (65504). */
static uint16_t float_to_half(float x, bool *overflow) {
    uint32_t b;
    memcpy(&b, &x, sizeof b);
    uint16_t sign = (uint16_t)((b >> 16) & 0x8000u);
    uint32_t exponent = (b >> 23) & 0xFFu, mantissa = b & 0x7FFFFFu;
    if (exponent == 0xFF) return (uint16_t)(sign | 0x7C00u | (mantissa ? 0x200u | (mantissa >> 13) : 0));
    int e = (int)exponent - 127 + 15;
    if (e >= 0x1F) {
        *overflow = true;
        return (uint16_t)(sign | 0x7C00u);
    }
    if (e <= 0) { /* subnormal half (or zero): value = m * 2^-24, m = round(|x| * 2^24) */
        if (e < -10) return sign; /* below half the smallest subnormal: rounds to zero */
        uint32_t m = mantissa | 0x800000u;
        int shift = 14 - e; /* 14..24 */
        uint32_t q = m >> shift, rest = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rest > half || (rest == half && (q & 1u))) q++;
        return (uint16_t)(sign | q); /* q == 0x400 carries into the smallest normal: still right */
    }
    uint32_t q = ((uint32_t)e << 10) | (mantissa >> 13), rest = mantissa & 0x1FFFu;
    if (rest > 0x1000u || (rest == 0x1000u && (q & 1u))) q++; /* may carry into the exponent */
    if (q >= 0x7C00u) {
        *overflow = true;
        return (uint16_t)(sign | 0x7C00u);
    }
    return (uint16_t)(sign | q);
}

/* Element i of t (row-major) as written: for messages. */
static void element_text(const cn_tensor *t, size_t i, char *buf, size_t cap) {
    size_t idx[CN_MAX_DIMS];
    for (int d = t->ndim - 1; d >= 0; d--) {
        idx[d] = i % (size_t)t->shape[d];
        i /= (size_t)t->shape[d];
    }
    size_t len = 0;
    buf[0] = 0;
    for (int d = 0; d < t->ndim && len < cap; d++)
        len += (size_t)snprintf(buf + len, cap - len, d ? ", %zu" : "%zu", idx[d]);
}

static int write_tensor_data(cn_atomic_file *af, const char *name, const cn_tensor *t, cn_safetensors_store dtype,
                             cn_error *err) {
    size_t n = cn_numel(t);
    if (n == 0) return 0;
    if (dtype == CN_SAFETENSORS_F32 && cn_is_contiguous(t)) return cn_atomic_write(af, cn_data(t), n * sizeof(float), err);
    size_t bytes = n * STORES[dtype].size;
    float *tmp = malloc(n * sizeof(float));
    if (!tmp) {
        cn_error_set(err, "cannot write '" CN_PATH_FMT "': out of memory (%zu bytes)", af->path, n * sizeof(float));
        return -1;
    }
    cn_to_buffer(t, tmp);
    if (dtype == CN_SAFETENSORS_F16) { /* in place: halves are written over the floats already read */
        uint16_t *h = (uint16_t *)tmp;
        for (size_t i = 0; i < n; i++) {
            bool overflow = false;
            float x = tmp[i];
            h[i] = float_to_half(x, &overflow);
            if (overflow) {
                char where[CN_MAX_DIMS * 22];
                element_text(t, i, where, sizeof where);
                cn_error_set(err, "cannot write '" CN_PATH_FMT "' as F16: tensor '" NAME_FMT "' element [%s] is %g, "
                             "beyond F16's range (+-65504)", af->path, name, where, (double)x);
                free(tmp);
                return -1;
            }
        }
    }
    int rc = cn_atomic_write(af, tmp, bytes, err);
    free(tmp);
    return rc;
}

/* Checks names (non-NULL, UTF-8, unique) and returns them sorted, or NULL with err filled. */
static named *sorted_names(const char *path, int n, const char *const *names, const char *what,
                           bool tensors, cn_error *err) {
    named *order = malloc((size_t)(n > 0 ? n : 1) * sizeof *order);
    if (!order) {
        cn_error_set(err, "cannot save '" CN_PATH_FMT "': out of memory", path);
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        const char *why = NULL;
        if (!names[i]) why = "is NULL";
        else if (!is_utf8(names[i])) why = "is not valid UTF-8";
        else if (tensors && strcmp(names[i], "__metadata__") == 0) why = "is reserved for the metadata";
        if (why) {
            cn_error_set(err, "cannot save '" CN_PATH_FMT "': %s %d ('" NAME_FMT "') %s", path, what, i + 1,
                         names[i] ? names[i] : "", why);
            free(order);
            return NULL;
        }
        order[i] = (named){names[i], i};
    }
    if (n > 1) qsort(order, (size_t)n, sizeof *order, cmp_named);
    for (int i = 1; i < n; i++) {
        if (strcmp(order[i - 1].name, order[i].name) == 0) {
            cn_error_set(err, "cannot save '" CN_PATH_FMT "': duplicate %s '" NAME_FMT "'", path, what, order[i].name);
            free(order);
            return NULL;
        }
    }
    return order;
}

int cn_safetensors_save(const char *path, int n, const char *const *names, cn_tensor *const *tensors,
                        int n_meta, const char *const *meta_keys, const char *const *meta_values,
                        cn_error *err) {
    return cn_safetensors_save_as(path, CN_SAFETENSORS_F32, n, names, tensors, n_meta, meta_keys, meta_values, err);
}

int cn_safetensors_save_as(const char *path, cn_safetensors_store dtype, int n, const char *const *names,
                           cn_tensor *const *tensors, int n_meta, const char *const *meta_keys,
                           const char *const *meta_values, cn_error *err) {
    if ((dtype != CN_SAFETENSORS_F32 && dtype != CN_SAFETENSORS_F16) || n < 0 || n_meta < 0 || (n > 0 && (!names || !tensors)) ||
        (n_meta > 0 && (!meta_keys || !meta_values))) {
        cn_error_set(err, "cannot save '" CN_PATH_FMT "': bad arguments", path);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        if (!tensors[i]) {
            cn_error_set(err, "cannot save '" CN_PATH_FMT "': tensor %d is NULL", path, i + 1);
            return -1;
        }
    }
    for (int i = 0; i < n_meta; i++) {
        if (!meta_values[i] || !is_utf8(meta_values[i])) {
            cn_error_set(err, "cannot save '" CN_PATH_FMT "': metadata value %d is %s", path, i + 1,
                         meta_values[i] ? "not valid UTF-8" : "NULL");
            return -1;
        }
    }
    named *order = sorted_names(path, n, names, "tensor name", true, err);
    if (!order) return -1;
    named *meta_order = sorted_names(path, n_meta, meta_keys, "metadata key", false, err);
    if (!meta_order) {
        free(order);
        return -1;
    }

    /* The header, as serde_json writes the reference's Metadata: compact, metadata first. */
    strbuf h = {0};
    sb_puts(&h, "{");
    if (n_meta > 0) {
        sb_puts(&h, "\"__metadata__\":{");
        for (int i = 0; i < n_meta; i++) {
            if (i) sb_puts(&h, ",");
            sb_json_string(&h, meta_order[i].name);
            sb_puts(&h, ":");
            sb_json_string(&h, meta_values[meta_order[i].index]);
        }
        sb_puts(&h, "}");
    }
    uint64_t offset = 0;
    for (int i = 0; i < n; i++) {
        const cn_tensor *t = tensors[order[i].index];
        if (i || n_meta > 0) sb_puts(&h, ",");
        sb_json_string(&h, order[i].name);
        sb_puts(&h, ":{\"dtype\":\"");
        sb_puts(&h, STORES[dtype].name);
        sb_puts(&h, "\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) {
            if (d) sb_puts(&h, ",");
            sb_uint(&h, (uint64_t)t->shape[d]);
        }
        sb_puts(&h, "],\"data_offsets\":[");
        sb_uint(&h, offset);
        sb_puts(&h, ",");
        offset += (uint64_t)cn_numel(t) * STORES[dtype].size;
        sb_uint(&h, offset);
        sb_puts(&h, "]}");
    }
    sb_puts(&h, "}");
    while (!h.failed && h.len % 8) sb_puts(&h, " ");
    free(meta_order);
    if (h.failed) {
        cn_error_set(err, "cannot save '" CN_PATH_FMT "': out of memory building the header", path);
        free(h.p), free(order);
        return -1;
    }

    cn_atomic_file af;
    if (cn_atomic_begin(&af, path, err)) {
        free(h.p), free(order);
        return -1;
    }
    uint64_t hlen = h.len; /* little-endian host: the bytes are the u64 */
    int rc = cn_atomic_write(&af, &hlen, 8, err);
    if (!rc) rc = cn_atomic_write(&af, h.p, h.len, err);
    for (int i = 0; !rc && i < n; i++) rc = write_tensor_data(&af, order[i].name, tensors[order[i].index], dtype, err);
    free(h.p), free(order);
    if (rc) {
        cn_atomic_abort(&af);
        return -1;
    }
    return cn_atomic_commit(&af, err);
}

/* ==== open ================================================================================= */

typedef enum {
    K_F32, K_F16, K_BF16, K_F64, K_BOOL, K_U8, K_I8, K_U16, K_I16, K_U32, K_I32, K_U64, K_I64,
    K_UNSUPPORTED
} dtype_kind;

typedef struct dtype_info {
    const char *name;
    unsigned size;
    dtype_kind kind;
} dtype_info;

static const dtype_info DTYPES[] = {
    {"F32", 4, K_F32},   {"F16", 2, K_F16},   {"BF16", 2, K_BF16},  {"F64", 8, K_F64},
    {"BOOL", 1, K_BOOL}, {"U8", 1, K_U8},     {"I8", 1, K_I8},      {"U16", 2, K_U16},
    {"I16", 2, K_I16},   {"U32", 4, K_U32},   {"I32", 4, K_I32},    {"U64", 8, K_U64},
    {"I64", 8, K_I64},   {"F8_E5M2", 1, K_UNSUPPORTED}, {"F8_E4M3", 1, K_UNSUPPORTED},
    {"F8_E8M0", 1, K_UNSUPPORTED}, {"C64", 8, K_UNSUPPORTED},
};

typedef struct entry {
    char *name;
    const dtype_info *dtype;
    int ndim;
    int64_t shape[CN_MAX_DIMS];
    uint64_t begin, end; /* relative to the data buffer */
} entry;

struct cn_safetensors_file {
    char *label;                 /* the path, for messages */
    unsigned char *bytes;        /* the whole file */
    size_t size;
    const unsigned char *data;   /* the data buffer: bytes + 8 + header length */
    uint64_t data_size;
    int n;
    entry *entries;              /* sorted by name */
    int n_meta;
    char **meta_keys, **meta_values; /* sorted by key */
};

static const char *json_kind(const cJSON *j) {
    if (cJSON_IsObject(j)) return "an object";
    if (cJSON_IsArray(j)) return "an array";
    if (cJSON_IsString(j)) return "a string";
    if (cJSON_IsNumber(j)) return "a number";
    if (cJSON_IsBool(j)) return "a boolean";
    if (cJSON_IsNull(j)) return "null";
    return "an invalid value";
}

/* A JSON number that is an integer in [0, 2^53] (exact in a double). */
static bool json_uint(const cJSON *j, uint64_t *out) {
    if (!cJSON_IsNumber(j)) return false;
    double d = j->valuedouble;
    if (!isfinite(d) || d < 0 || d != floor(d) || d > 9007199254740992.0) return false;
    *out = (uint64_t)d;
    return true;
}

/* Describes a rejected JSON value in a message: the number itself, or its kind. */
static const char *json_repr(const cJSON *j, char *buf, size_t cap) {
    if (cJSON_IsNumber(j)) snprintf(buf, cap, "%.17g", j->valuedouble);
    else snprintf(buf, cap, "%s", json_kind(j));
    return buf;
}

static int fill_entry(const cn_safetensors_file *f, const cJSON *item, entry *e, cn_error *err) {
    const char *L = f->label, *name = item->string;
    e->name = strdup(name);
    if (!e->name) {
        cn_error_set(err, CN_PATH_FMT ": out of memory", L);
        return -1;
    }
    if (!cJSON_IsObject(item)) {
        cn_error_set(err, CN_PATH_FMT ": tensor '" NAME_FMT "' is %s, not an object with dtype, shape and data_offsets",
                     L, name, json_kind(item));
        return -1;
    }
    const cJSON *dtype = NULL, *shape = NULL, *offsets = NULL;
    for (const cJSON *field = item->child; field; field = field->next) {
        const cJSON **slot = strcmp(field->string, "dtype") == 0          ? &dtype
                             : strcmp(field->string, "shape") == 0        ? &shape
                             : strcmp(field->string, "data_offsets") == 0 ? &offsets
                                                                          : NULL;
        if (!slot) continue; /* unknown fields are ignored, as the reference does */
        if (*slot) {
            cn_error_set(err, CN_PATH_FMT ": tensor '" NAME_FMT "' has two '%s' fields", L, name, field->string);
            return -1;
        }
        *slot = field;
    }
    const char *missing = !dtype ? "dtype" : !shape ? "shape" : !offsets ? "data_offsets" : NULL;
    if (missing) {
        cn_error_set(err, CN_PATH_FMT ": tensor '" NAME_FMT "' has no %s", L, name, missing);
        return -1;
    }
    if (!cJSON_IsString(dtype)) {
        cn_error_set(err, CN_PATH_FMT ": tensor '" NAME_FMT "' has a dtype that is %s, not a string", L, name,
                     json_kind(dtype));
        return -1;
    }
    for (size_t k = 0; k < sizeof DTYPES / sizeof DTYPES[0]; k++)
        if (strcmp(dtype->valuestring, DTYPES[k].name) == 0) e->dtype = &DTYPES[k];
    if (!e->dtype) {
        cn_error_set(err, CN_PATH_FMT ": tensor '" NAME_FMT "' has unknown dtype '%.40s'", L, name, dtype->valuestring);
        return -1;
    }
    if (!cJSON_IsArray(shape)) {
        cn_error_set(err, CN_PATH_FMT ": tensor '" NAME_FMT "' has a shape that is %s, not an array", L, name,
                     json_kind(shape));
        return -1;
    }
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > CN_MAX_DIMS) {
        cn_error_set(err, CN_PATH_FMT ": tensor '" NAME_FMT "' has %d dims; cunet supports at most %d", L, name, ndim,
                     CN_MAX_DIMS);
        return -1;
    }
    e->ndim = ndim;
    int d = 0;
    char repr[64];
    for (const cJSON *s = shape->child; s; s = s->next, d++) {
        uint64_t v;
        if (!json_uint(s, &v)) {
            cn_error_set(err, CN_PATH_FMT ": tensor '" NAME_FMT "' has shape entry %d = %s, not a non-negative integer",
                         L, name, d + 1, json_repr(s, repr, sizeof repr));
            return -1;
        }
        e->shape[d] = (int64_t)v; /* < 2^53 */
    }
    char shape_buf[200];
    cn_shape_str(shape_buf, sizeof shape_buf, ndim, e->shape);
    /* the engine's one size check: a shape no tensor can have ([2^32, 2^32], or [0, 2^53, 2^53]
     * whose strides overflow) is refused here, before any data are looked at */
    size_t numel, nbytes = 0;
    cn_error inner;
    if (cn_shape_numel_checked(ndim, e->shape, &numel, "load", &inner) ||
        cn_size_mul(numel, e->dtype->size, &nbytes)) {
        cn_error_set(err, CN_PATH_FMT ": tensor '" NAME_FMT "' has shape %s, whose size overflows the engine's limits (%s)", L, name,
                     shape_buf, inner.msg);
        return -1;
    }
    if (!cJSON_IsArray(offsets) || cJSON_GetArraySize(offsets) != 2 || !json_uint(offsets->child, &e->begin) ||
        !json_uint(offsets->child->next, &e->end)) {
        cn_error_set(err, CN_PATH_FMT ": tensor '" NAME_FMT "' has data_offsets that are not [begin, end] with "
                     "non-negative integers", L, name);
        return -1;
    }
    unsigned long long b = e->begin, en = e->end;
    if (e->begin > e->end) {
        cn_error_set(err, CN_PATH_FMT ": tensor '" NAME_FMT "' has data_offsets [%llu, %llu] with begin > end", L, name,
                     b, en);
        return -1;
    }
    if (e->end > f->data_size) {
        cn_error_set(err, CN_PATH_FMT ": tensor '" NAME_FMT "' has data_offsets [%llu, %llu] past the end of the "
                     "%llu-byte data buffer (truncated file?)", L, name, b, en, (unsigned long long)f->data_size);
        return -1;
    }
    if (e->end - e->begin != nbytes) {
        cn_error_set(err, CN_PATH_FMT ": tensor '" NAME_FMT "' has data_offsets [%llu, %llu] but shape %s of %s needs "
                     "%llu bytes", L, name, b, en, shape_buf, e->dtype->name, (unsigned long long)nbytes);
        return -1;
    }
    return 0;
}

static int fill_metadata(cn_safetensors_file *f, const cJSON *meta, cn_error *err) {
    const char *L = f->label;
    if (!cJSON_IsObject(meta)) {
        cn_error_set(err, CN_PATH_FMT ": __metadata__ is %s, not an object of strings", L, json_kind(meta));
        return -1;
    }
    int n = cJSON_GetArraySize(meta);
    size_t slots = (size_t)(n > 0 ? n : 1);
    named *order = malloc(slots * sizeof *order);
    const char **values = malloc(slots * sizeof *values); /* by position, so lookups stay O(1) */
    f->meta_keys = calloc(slots, sizeof *f->meta_keys);
    f->meta_values = calloc(slots, sizeof *f->meta_values);
    if (!order || !values || !f->meta_keys || !f->meta_values) {
        free(order), free(values);
        cn_error_set(err, CN_PATH_FMT ": out of memory", L);
        return -1;
    }
    int i = 0;
    for (const cJSON *kv = meta->child; kv; kv = kv->next, i++) {
        if (!cJSON_IsString(kv)) {
            cn_error_set(err, CN_PATH_FMT ": __metadata__ entry '" NAME_FMT "' is %s, not a string", L, kv->string,
                         json_kind(kv));
            free(order), free(values);
            return -1;
        }
        order[i] = (named){kv->string, i};
        values[i] = kv->valuestring;
    }
    if (n > 1) qsort(order, (size_t)n, sizeof *order, cmp_named);
    for (i = 0; i < n; i++) {
        if (i > 0 && strcmp(order[i - 1].name, order[i].name) == 0) {
            cn_error_set(err, CN_PATH_FMT ": duplicate __metadata__ key '" NAME_FMT "'", L, order[i].name);
            free(order), free(values);
            return -1;
        }
        f->meta_keys[i] = strdup(order[i].name);
        f->meta_values[i] = strdup(values[order[i].index]);
        f->n_meta = i + 1;
        if (!f->meta_keys[i] || !f->meta_values[i]) {
            cn_error_set(err, CN_PATH_FMT ": out of memory", L);
            free(order), free(values);
            return -1;
        }
    }
    free(order), free(values);
    return 0;
}

static int cmp_entry_name(const void *a, const void *b) {
    return strcmp(((const entry *)a)->name, ((const entry *)b)->name);
}

static int cmp_entry_offsets(const void *a, const void *b) {
    const entry *x = *(const entry *const *)a, *y = *(const entry *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* The tensors must tile [0, data_size) exactly: sorted by offsets, each begins where the one
 * before ended (the reference rejects any other layout; the spec forbids holes). */
static int check_coverage(const cn_safetensors_file *f, cn_error *err) {
    const char *L = f->label;
    const entry **by_offset = malloc((size_t)(f->n > 0 ? f->n : 1) * sizeof *by_offset);
    if (!by_offset) {
        cn_error_set(err, CN_PATH_FMT ": out of memory", L);
        return -1;
    }
    for (int i = 0; i < f->n; i++) by_offset[i] = &f->entries[i];
    if (f->n > 1) qsort(by_offset, (size_t)f->n, sizeof *by_offset, cmp_entry_offsets);
    uint64_t covered = 0;
    const entry *prev = NULL;
    int rc = 0;
    for (int i = 0; i < f->n && !rc; i++) {
        const entry *e = by_offset[i];
        if (e->begin < covered) {
            cn_error_set(err, CN_PATH_FMT ": tensors '" NAME_FMT "' [%llu, %llu] and '" NAME_FMT "' [%llu, %llu] overlap",
                         L, prev->name, (unsigned long long)prev->begin, (unsigned long long)prev->end, e->name,
                         (unsigned long long)e->begin, (unsigned long long)e->end);
            rc = -1;
        } else if (e->begin > covered) {
            cn_error_set(err, CN_PATH_FMT ": bytes [%llu, %llu) of the data buffer belong to no tensor (a gap before "
                         "tensor '" NAME_FMT "')", L, (unsigned long long)covered, (unsigned long long)e->begin,
                         e->name);
            rc = -1;
        }
        covered = e->end;
        prev = e;
    }
    if (!rc && covered != f->data_size) {
        cn_error_set(err, CN_PATH_FMT ": bytes [%llu, %llu) at the end of the data buffer belong to no tensor",
                     L, (unsigned long long)covered, (unsigned long long)f->data_size);
        rc = -1;
    }
    free(by_offset);
    return rc;
}

static int parse_header(cn_safetensors_file *f, cn_error *err) {
    const char *L = f->label;
    if (f->size < 8) {
        cn_error_set(err, CN_PATH_FMT ": file is too short (%zu bytes) for a safetensors file, which starts with an "
                     "8-byte header length", L, f->size);
        return -1;
    }
    uint64_t hlen;
    memcpy(&hlen, f->bytes, 8);
    if (hlen > CN_SAFETENSORS_MAX_HEADER) {
        cn_error_set(err, CN_PATH_FMT ": header length %llu is absurd (over 100 MB): not a safetensors file, or "
                     "corrupt", L, (unsigned long long)hlen);
        return -1;
    }
    if (hlen > f->size - 8) {
        cn_error_set(err, CN_PATH_FMT ": header length %llu exceeds the %zu bytes after the 8-byte prefix (truncated "
                     "file?)", L, (unsigned long long)hlen, f->size - 8);
        return -1;
    }
    const unsigned char *h = f->bytes + 8;
    f->data = h + hlen;
    f->data_size = f->size - 8 - hlen;
    const unsigned char *nul = memchr(h, 0, (size_t)hlen);
    if (nul) {
        cn_error_set(err, CN_PATH_FMT ": header is not valid JSON (NUL byte at header offset %zu)", L,
                     (size_t)(nul - h));
        return -1;
    }
    size_t bad = utf8_error_at(h, (size_t)hlen);
    if (bad != hlen) {
        cn_error_set(err, CN_PATH_FMT ": header is not valid UTF-8 (byte 0x%02x at header offset %zu)", L, h[bad], bad);
        return -1;
    }
    char *text = malloc((size_t)hlen + 1);
    if (!text) {
        cn_error_set(err, CN_PATH_FMT ": out of memory (header of %llu bytes)", L, (unsigned long long)hlen);
        return -1;
    }
    memcpy(text, h, (size_t)hlen);
    text[hlen] = '\0';
    const char *stop = NULL;
    cJSON *root = cJSON_ParseWithOpts(text, &stop, 1);
    if (!root) {
        size_t at = stop && stop >= text && stop <= text + hlen ? (size_t)(stop - text) : 0;
        cn_error_set(err, CN_PATH_FMT ": header is not valid JSON (error near header offset %zu)", L, at);
        free(text);
        return -1;
    }
    free(text);
    int rc = 0;
    if (!cJSON_IsObject(root)) {
        cn_error_set(err, CN_PATH_FMT ": header is %s, not a JSON object", L, json_kind(root));
        rc = -1;
    }
    const cJSON *meta = NULL;
    int count = 0;
    for (const cJSON *it = rc ? NULL : root->child; it && !rc; it = it->next) {
        if (strcmp(it->string, "__metadata__") != 0) {
            count++;
        } else if (meta) {
            cn_error_set(err, CN_PATH_FMT ": header has two __metadata__ entries", L);
            rc = -1;
        } else {
            meta = it;
        }
    }
    if (!rc && meta) rc = fill_metadata(f, meta, err);
    if (!rc) {
        f->entries = calloc((size_t)(count > 0 ? count : 1), sizeof *f->entries);
        if (!f->entries) {
            cn_error_set(err, CN_PATH_FMT ": out of memory", L);
            rc = -1;
        }
    }
    for (const cJSON *it = rc ? NULL : root->child; it && !rc; it = it->next) {
        if (it == meta) continue;
        rc = fill_entry(f, it, &f->entries[f->n], err);
        f->n++; /* counts the entry even on failure, so close frees its name */
    }
    cJSON_Delete(root);
    if (rc) return -1;
    if (f->n > 1) qsort(f->entries, (size_t)f->n, sizeof *f->entries, cmp_entry_name);
    for (int i = 1; i < f->n; i++) {
        if (strcmp(f->entries[i - 1].name, f->entries[i].name) == 0) {
            cn_error_set(err, CN_PATH_FMT ": duplicate tensor name '" NAME_FMT "'", L, f->entries[i].name);
            return -1;
        }
    }
    return check_coverage(f, err);
}

/* Takes over bytes (malloc'd). */
static cn_safetensors_file *open_bytes(unsigned char *bytes, size_t size, const char *label, cn_error *err) {
    cn_safetensors_file *f = calloc(1, sizeof *f);
    char *label_copy = strdup(label ? label : "<memory>");
    if (!f || !label_copy) {
        free(f), free(label_copy), free(bytes);
        cn_error_set(err, CN_PATH_FMT ": out of memory", label ? label : "<memory>");
        return NULL;
    }
    f->label = label_copy;
    f->bytes = bytes;
    f->size = size;
    if (parse_header(f, err)) {
        cn_safetensors_close(f);
        return NULL;
    }
    return f;
}

cn_safetensors_file *cn_safetensors_open_memory(const void *bytes, size_t size, const char *label,
                                                cn_error *err) {
    unsigned char *copy = malloc(size ? size : 1);
    if (!copy) {
        cn_error_set(err, CN_PATH_FMT ": out of memory (%zu bytes)", label ? label : "<memory>", size);
        return NULL;
    }
    if (size) memcpy(copy, bytes, size);
    return open_bytes(copy, size, label, err);
}

cn_safetensors_file *cn_safetensors_open(const char *path, cn_error *err) {
    size_t size;
    int fd = cn_file_open_regular(path, &size, err);
    if (fd < 0) return NULL;
    unsigned char *bytes = malloc(size ? size : 1);
    if (!bytes) {
        cn_error_set(err, "cannot read '" CN_PATH_FMT "': out of memory (%zu bytes)", path, size);
        close(fd);
        return NULL;
    }
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, bytes + got, size - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            cn_error_set(err, "cannot read '" CN_PATH_FMT "': %s", path, strerror(errno));
            free(bytes);
            close(fd);
            return NULL;
        }
        if (r == 0) break; /* the file shrank since fstat: validate what is there */
        got += (size_t)r;
    }
    close(fd);
    return open_bytes(bytes, got, path, err);
}

void cn_safetensors_close(cn_safetensors_file *f) {
    if (!f) return;
    for (int i = 0; i < f->n; i++) free(f->entries[i].name);
    free(f->entries);
    for (int i = 0; i < f->n_meta; i++) free(f->meta_keys[i]), free(f->meta_values[i]);
    free(f->meta_keys);
    free(f->meta_values);
    free(f->bytes);
    free(f->label);
    free(f);
}

/* ==== accessors ============================================================================ */

int cn_safetensors_count(const cn_safetensors_file *f) { return f->n; }

static const entry *entry_at(const cn_safetensors_file *f, int i) {
    return i >= 0 && i < f->n ? &f->entries[i] : NULL;
}

const char *cn_safetensors_name(const cn_safetensors_file *f, int i) {
    const entry *e = entry_at(f, i);
    return e ? e->name : NULL;
}

const char *cn_safetensors_dtype(const cn_safetensors_file *f, int i) {
    const entry *e = entry_at(f, i);
    return e ? e->dtype->name : NULL;
}

int cn_safetensors_ndim(const cn_safetensors_file *f, int i) {
    const entry *e = entry_at(f, i);
    return e ? e->ndim : -1;
}

const int64_t *cn_safetensors_shape(const cn_safetensors_file *f, int i) {
    const entry *e = entry_at(f, i);
    return e ? e->shape : NULL;
}

int cn_safetensors_find(const cn_safetensors_file *f, const char *name) {
    int lo = 0, hi = f->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2, c = strcmp(f->entries[mid].name, name);
        if (c == 0) return mid;
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

int cn_safetensors_meta_count(const cn_safetensors_file *f) { return f->n_meta; }

const char *cn_safetensors_meta_key(const cn_safetensors_file *f, int i) {
    return i >= 0 && i < f->n_meta ? f->meta_keys[i] : NULL;
}

const char *cn_safetensors_meta_value(const cn_safetensors_file *f, int i) {
    return i >= 0 && i < f->n_meta ? f->meta_values[i] : NULL;
}

const char *cn_safetensors_meta(const cn_safetensors_file *f, const char *key) {
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta_keys[i], key) == 0) return f->meta_values[i];
    return NULL;
}

/* ==== conversion to float32 ================================================================ */

static float bits_to_float(uint32_t bits) {
    float x;
    memcpy(&x, &bits, sizeof x);
    return x;
}

/* IEEE binary16 -> binary32, exact (subnormals, infinities and NaN payloads included). */
static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exponent = (h >> 10) & 0x1Fu, mantissa = h & 0x3FFu;
    if (exponent == 0x1F) return bits_to_float(sign | 0x7F800000u | (mantissa << 13));
    if (exponent == 0) {
        float v = (float)mantissa * 0x1p-24f; /* subnormal (or zero): exact */
        return sign ? -v : v;
    }
    return bits_to_float(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

/* Nearest float32; beyond its range +-inf (said explicitly rather than left to the cast). */
static float double_to_float(double d) {
    if (isfinite(d) && fabs(d) >= 0x1.ffffffp127) return d > 0 ? INFINITY : -INFINITY;
    return (float)d;
}

/* An integer of magnitude mag is a float32 when its odd part has at most 24 bits. */
static bool exact_in_float(uint64_t mag) {
    return mag == 0 || (mag >> __builtin_ctzll(mag)) < (UINT64_C(1) << 24);
}

/* Magnitude and sign of a signed integer, without overflow at the type's minimum. */
static uint64_t magnitude(int64_t v, bool *neg) {
    *neg = v < 0;
    return *neg ? UINT64_C(0) - (uint64_t)v : (uint64_t)v;
}

static int convert_integers(const cn_safetensors_file *f, const entry *e, const unsigned char *src, float *dst,
                            size_t n, cn_error *err) {
    for (size_t k = 0; k < n; k++) {
        uint64_t mag = 0;
        bool neg = false;
        switch (e->dtype->kind) {
        case K_BOOL: mag = src[k] != 0; break;
        case K_U8: mag = src[k]; break;
        case K_I8: { int8_t v; memcpy(&v, src + k, 1); mag = magnitude(v, &neg); break; }
        case K_U16: { uint16_t v; memcpy(&v, src + 2 * k, 2); mag = v; break; }
        case K_I16: { int16_t v; memcpy(&v, src + 2 * k, 2); mag = magnitude(v, &neg); break; }
        case K_U32: { uint32_t v; memcpy(&v, src + 4 * k, 4); mag = v; break; }
        case K_I32: { int32_t v; memcpy(&v, src + 4 * k, 4); mag = magnitude(v, &neg); break; }
        case K_U64: memcpy(&mag, src + 8 * k, 8); break;
        case K_I64: { int64_t v; memcpy(&v, src + 8 * k, 8); mag = magnitude(v, &neg); break; }
        default: break;
        }
        if (!exact_in_float(mag)) {
            cn_error_set(err, CN_PATH_FMT ": tensor '" NAME_FMT "' of %s holds %s%llu at element %zu, which float32 "
                         "cannot represent exactly", f->label, e->name, e->dtype->name, neg ? "-" : "",
                         (unsigned long long)mag, k);
            return -1;
        }
        dst[k] = neg ? -(float)mag : (float)mag;
    }
    return 0;
}

cn_tensor *cn_safetensors_tensor(const cn_safetensors_file *f, int i, cn_error *err) {
    const entry *e = entry_at(f, i);
    if (!e) {
        cn_error_set(err, CN_PATH_FMT ": tensor index %d out of range (%d tensors)", f->label, i, f->n);
        return NULL;
    }
    if (e->dtype->kind == K_UNSUPPORTED) {
        cn_error_set(err, CN_PATH_FMT ": tensor '" NAME_FMT "' has dtype %s, which cunet cannot load (it loads F32, "
                     "F64, F16, BF16, BOOL and integer dtypes)", f->label, e->name, e->dtype->name);
        return NULL;
    }
    cn_error inner;
    cn_tensor *t = cn_empty(e->ndim, e->shape, &inner);
    if (!t) {
        cn_error_set(err, CN_PATH_FMT ": tensor '" NAME_FMT "': %s", f->label, e->name, inner.msg);
        return NULL;
    }
    size_t n = cn_numel(t);
    if (n == 0) return t;
    const unsigned char *src = f->data + e->begin; /* [begin, end) lies inside the buffer */
    float *dst = cn_data(t);
    switch (e->dtype->kind) {
    case K_F32: memcpy(dst, src, n * sizeof(float)); break;
    case K_F16:
        for (size_t k = 0; k < n; k++) {
            uint16_t h;
            memcpy(&h, src + 2 * k, 2);
            dst[k] = half_to_float(h);
        }
        break;
    case K_BF16:
        for (size_t k = 0; k < n; k++) {
            uint16_t h;
            memcpy(&h, src + 2 * k, 2);
            dst[k] = bits_to_float((uint32_t)h << 16);
        }
        break;
    case K_F64:
        for (size_t k = 0; k < n; k++) {
            double d;
            memcpy(&d, src + 8 * k, 8);
            dst[k] = double_to_float(d);
        }
        break;
    default:
        if (convert_integers(f, e, src, dst, n, err)) {
            cn_release(t);
            return NULL;
        }
    }
    return t;
}
