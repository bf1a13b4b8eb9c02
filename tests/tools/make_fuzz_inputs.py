#!/usr/bin/env python3
"""Writes the fuzzing seed corpora and the regression (crash) inputs of tests/fuzz/.

    python3 tests/tools/make_fuzz_inputs.py          # from the repository root

tests/fuzz/corpus/<loader>/   small valid files (and a few near-misses) the fuzzers start from
tests/fuzz/crashes/<loader>/  every hostile input a loader once crashed or blew up on (issue 11) and
                              every fuzzer finding; all must be refused except those named ok_*,
                              which must load. `make test` replays both directories through the
                              readers (tests/c/test_fuzz_replay.c)

Only the standard library is used (struct, zlib, gzip), and the output is deterministic.
"""
import gzip
import io
import json
import os
import shutil
import struct
import zlib

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fuzz")


def put(kind, loader, name, data):
    d = os.path.join(ROOT, kind, loader)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- PNG ------------------------------------------------------------------------------------

def chunk(kind, data, length=None):
    body = kind + data
    return struct.pack(">I", len(data) if length is None else length) + body + struct.pack(">I", zlib.crc32(body))


SIG = b"\x89PNG\r\n\x1a\n"


def ihdr(w, h, depth, color, interlace=0):
    return chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, interlace))


def png(w, h, depth, color, raw_rows, extra=b"", interlace=0, level=9):
    return SIG + ihdr(w, h, depth, color, interlace) + extra + chunk(b"IDAT", zlib.compress(raw_rows, level)) + \
        chunk(b"IEND", b"")


def png_corpus():
    # grey 8-bit 4x3, RGB 8-bit 3x2, RGBA 16-bit 2x2, a 2-bit palette with tRNS, an Adam7 grey image
    grey = b"".join(b"\0" + bytes((x * 60 + y * 20) % 256 for x in range(4)) for y in range(3))
    put("corpus", "png", "grey8_4x3.png", png(4, 3, 8, 0, grey))
    rgb = b"".join(b"\1" + bytes((x * 7 + y * 3 + c * 50) % 256 for x in range(3) for c in range(3)) for y in range(2))
    put("corpus", "png", "rgb8_3x2_sub_filter.png", png(3, 2, 8, 2, rgb))
    rgba16 = b"".join(b"\0" + b"".join(struct.pack(">H", (x * 9000 + y * 300 + c * 7000) % 65536)
                                       for x in range(2) for c in range(4)) for y in range(2))
    put("corpus", "png", "rgba16_2x2.png", png(2, 2, 16, 6, rgba16))
    plte = chunk(b"PLTE", bytes([255, 0, 0, 0, 128, 255, 10, 20, 30, 255, 255, 255]))
    trns = chunk(b"tRNS", bytes([255, 128, 0, 64]))
    pal = b"".join(b"\0" + bytes([0b00011011, 0b11100100]) for _ in range(4))  # 2-bit, 8 px per row
    put("corpus", "png", "palette2_8x4_trns.png", png(8, 4, 2, 3, pal, plte + trns))
    text = chunk(b"tEXt", b"Comment\0seed") + chunk(b"zTXt", b"Title\0\0" + zlib.compress(b"cunet" * 20))
    put("corpus", "png", "grey8_4x3_text.png", png(4, 3, 8, 0, grey, text))
    # Adam7 interlaced 5x5 grey: passes of 1x1, 1x1, 2x1, 2x2, 3x2, 2x3(?): let libpng-compatible data be all
    # zeros with one filter byte per pass row (sizes from the Adam7 pattern)
    rows = b""
    for (x0, y0, dx, dy) in [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
                             (0, 1, 1, 2)]:
        pw, ph = (5 - x0 + dx - 1) // dx, (5 - y0 + dy - 1) // dy
        if pw and ph:
            rows += (b"\0" + bytes(range(pw))) * ph
    put("corpus", "png", "adam7_grey8_5x5.png", png(5, 5, 8, 0, rows, interlace=1))


def png_crashes():
    # 69 bytes whose header claims 65535 x 65535 RGBA16: once an 8 GiB allocation before any pixel
    put("crashes", "png", "header_65535x65535_rgba16.png",
        SIG + ihdr(65535, 65535, 16, 6) + chunk(b"IDAT", zlib.compress(b"\0" * 8)) + chunk(b"IEND", b""))
    # a real decompression bomb: 8200 x 8200 grey zeros, ~65 KB, above the default 2^26-sample cap
    # (the 261 KB file was 16384 x 16384: the same shape of attack, 4x larger)
    w = h = 8200
    z = zlib.compressobj(9)
    row = b"\0" * (w + 1)
    data = b"".join(z.compress(row) for _ in range(h)) + z.flush()
    put("crashes", "png", "bomb_8200x8200_grey.png", SIG + ihdr(w, h, 8, 0) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    # 45 bytes: a zTXt / iTXt chunk whose length field claims 2^31 - 1 bytes (libpng allocated it all)
    for kind in (b"zTXt", b"iTXt", b"iCCP"):
        body = kind + b"k\0\0x"
        put("crashes", "png", "%s_claims_2gb.png" % kind.decode().lower(),
            SIG + ihdr(1, 1, 8, 0) + struct.pack(">I", 0x7FFFFFFF) + body)
    # a valid image after a zTXt that really inflates to 64 MB: loads, the chunk skipped unread
    big = zlib.compress(b"\0" * (64 << 20), 9)
    put("crashes", "png", "ok_ztxt_inflates_64mb.png",
        SIG + ihdr(1, 1, 8, 0) + chunk(b"zTXt", b"k\0\0" + big) + chunk(b"IDAT", zlib.compress(b"\0\0")) +
        chunk(b"IEND", b""))


# ---- IDX ------------------------------------------------------------------------------------

def idx(code, shape, payload):
    return bytes([0, 0, code, len(shape)]) + b"".join(struct.pack(">I", s) for s in shape) + payload


def gz(data):
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as f:
        f.write(data)
    return buf.getvalue()


def idx_corpus():
    put("corpus", "idx", "u8_2x3.idx", idx(0x08, [2, 3], bytes([0, 1, 2, 253, 254, 255])))
    put("corpus", "idx", "i16_3.idx", idx(0x0B, [3], struct.pack(">hhh", -32768, 0, 32767)))
    put("corpus", "idx", "f32_2x2.idx.gz", gz(idx(0x0D, [2, 2], struct.pack(">ffff", 0.5, -1.0, 3.25, 1e30))))
    put("corpus", "idx", "f64_2.idx", idx(0x0E, [2], struct.pack(">dd", 1e300, -2.5)))
    put("corpus", "idx", "i32_0d.idx", idx(0x0C, [], struct.pack(">i", -7)))
    put("corpus", "idx", "i8_empty_0x5.idx.gz", gz(idx(0x09, [0, 5], b"")))


def idx_crashes():
    # 20 bytes: [0, 2^32-1, 2^32-1, 1]: zero elements, but strides overflow int64 (UB once)
    put("crashes", "idx", "zero_dim_huge_strides.idx", idx(0x08, [0, 0xFFFFFFFF, 0xFFFFFFFF, 1], b""))
    # a small gzip whose header claims 5.25 GB: refused before inflating (cap, and what the file can hold)
    put("crashes", "idx", "gzip_claims_5gb.idx.gz", gz(idx(0x08, [75000, 70000], b"\0" * (1 << 16))))
    # header says 4096 bytes, the gzip stream holds 1 MB: inflating stops at 4096 + 1
    put("crashes", "idx", "gzip_more_data_than_header.idx.gz", gz(idx(0x08, [64, 64], b"\0" * (1 << 20))))
    # header says 2^30 bytes (within the cap), the stream holds 100 KB: a truncation, never a 1 GiB buffer
    put("crashes", "idx", "gzip_truncated_claims_1gb.idx.gz", gz(idx(0x08, [1 << 15, 1 << 15], b"\7" * 100000)))
    # found by fuzz_idx: [0, 2^24, 2052, 0] loads as an empty tensor, once reported non-contiguous
    put("crashes", "idx", "ok_found_empty_strides.idx", bytes.fromhex("0000080400000000010000000000080400000000"))
    # plain file whose header claims 2^33 f64 values
    put("crashes", "idx", "plain_claims_64gb.idx", idx(0x0E, [1 << 16, 1 << 17], b"\0" * 16))


# ---- safetensors ------------------------------------------------------------------------------

def st(header, data=b""):
    text = json.dumps(header, separators=(",", ":")).encode() if not isinstance(header, bytes) else header
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def st_corpus():
    put("corpus", "safetensors", "f32_and_meta.safetensors",
        st({"__metadata__": {"step": "10"}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
            "w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [8, 24]}},
           struct.pack("<6f", 1, -2, 0.5, 0.25, 3, 4)))
    put("corpus", "safetensors", "mixed_dtypes.safetensors",
        st({"h": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]},
            "i": {"dtype": "I64", "shape": [1], "data_offsets": [4, 12]},
            "k": {"dtype": "BF16", "shape": [1, 1], "data_offsets": [12, 14]},
            "m": {"dtype": "BOOL", "shape": [2], "data_offsets": [14, 16]}},
           struct.pack("<eeqHBB", 1.5, -2.0, -123456, 0x3F80, 1, 0)))
    put("corpus", "safetensors", "empty_and_scalar.safetensors",
        st({"e": {"dtype": "F32", "shape": [0, 3], "data_offsets": [0, 0]},
            "s": {"dtype": "F64", "shape": [], "data_offsets": [0, 8]}}, struct.pack("<d", 2.5)))
    shutil.copyfile(os.path.join(ROOT, "..", "fixtures", "torch_written.safetensors"),
                    os.path.join(ROOT, "corpus", "safetensors", "torch_written.safetensors"))


def st_crashes():
    big = 2 ** 53 - 1
    put("crashes", "safetensors", "zero_dim_huge_strides.safetensors",
        st({"a": {"dtype": "F32", "shape": [0, big, big], "data_offsets": [0, 0]}}))
    put("crashes", "safetensors", "numel_wraps_to_zero.safetensors",
        st({"a": {"dtype": "F32", "shape": [2 ** 32, 2 ** 32], "data_offsets": [0, 0]}}))
    put("crashes", "safetensors", "header_length_claims_2gb.safetensors", struct.pack("<Q", 2 ** 31) + b"{}")
    put("crashes", "safetensors", "offsets_past_end.safetensors",
        st({"a": {"dtype": "F32", "shape": [2 ** 40], "data_offsets": [0, 2 ** 42]}}))


if __name__ == "__main__":
    png_corpus(); png_crashes(); idx_corpus(); idx_crashes(); st_corpus(); st_crashes()
