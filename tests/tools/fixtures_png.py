#!/usr/bin/python3
"""fixtures_png.py — the PNG files read by tests/c/test_png.c and tests/lua/test_image.lua,
written to tests/fixtures/png/.

    /usr/bin/python3 tests/tools/fixtures_png.py

cunet writes only 8-bit grey / grey+alpha / RGB / RGBA, non-interlaced; these files cover what it
must also *read*: 16-bit samples, palettes (2-bit, and with a tRNS chunk), 1- and 4-bit grey, grey
with a tRNS colour key, and Adam7 interlacing. They are encoded here by a few lines of Python
(zlib + CRC chunks, every filter row type 0..4 used in turn), so every byte is known; each file
that Pillow can also decode exactly is checked against Pillow's reading.

Every file holds a pattern the tests recompute (x, y 0-based, c the channel; values as stored):
  grey16_5x3.png        16-bit grey        v = 0x1111 * (5y + x) + 1
  rgb16_4x3.png         16-bit RGB         v = (1777 * (12c + 4y + x) + 3) mod 65536
  rgba16_3x2.png        16-bit RGBA        v = (1777 * (6c + 3y + x) + 3) mod 65536
  palette2_5x4.png      2-bit palette      index (x + 2y) mod 4 into PALETTE
  palette_trns_5x4.png  8-bit palette + tRNS  index (x + 2y) mod 4, alpha ALPHAS[index]
  grey1_9x2.png         1-bit grey         v = (x + y) mod 2                  (-> 0 or 255)
  grey4_5x3.png         4-bit grey         v = (5y + x) mod 16                (-> 17 v)
  grey_trns_4x2.png     8-bit grey + tRNS  v = 30 (4y + x), alpha 0 where v == 90, else 255
  adam7_rgb_7x5.png     8-bit RGB, Adam7   v = 2 (35c + 7y + x)
"""

import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.normpath(os.path.join(HERE, "..", "fixtures", "png"))

PALETTE = [(255, 0, 0), (0, 128, 255), (10, 20, 30), (255, 255, 255)]
ALPHAS = [255, 128, 0, 64]

GREY, RGB, PALETTED, GREY_ALPHA, RGBA = 0, 2, 3, 4, 6
CHANNELS = {GREY: 1, RGB: 3, PALETTED: 1, GREY_ALPHA: 2, RGBA: 4}


def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def pack_row(samples, depth):
    """Samples of one row (already interleaved) to bytes at the bit depth."""
    if depth == 16:
        return b"".join(struct.pack(">H", s) for s in samples)
    if depth == 8:
        return bytes(samples)
    out, acc, nbits = bytearray(), 0, 0
    for s in samples:
        acc = (acc << depth) | s
        nbits += depth
        if nbits == 8:
            out.append(acc)
            acc, nbits = 0, 0
    if nbits:
        out.append(acc << (8 - nbits))
    return bytes(out)


def paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def filter_rows(rows, bpp):
    """Filters each row with type (row index mod 5): every filter gets used."""
    out, prev = bytearray(), bytes(len(rows[0])) if rows else b""
    for i, row in enumerate(rows):
        ftype = i % 5
        f = bytearray()
        for j, x in enumerate(row):
            a = row[j - bpp] if j >= bpp else 0
            b = prev[j]
            c = prev[j - bpp] if j >= bpp else 0
            pred = (0, a, b, (a + b) // 2, paeth(a, b, c))[ftype]
            f.append((x - pred) & 0xFF)
        out.append(ftype)
        out += f
        prev = row
    return bytes(out)


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def encode(path, width, height, depth, color, pixel, plte=None, trns=None, interlace=False):
    """pixel(x, y) -> tuple of samples."""
    channels = CHANNELS[color]
    bpp = max(1, channels * depth // 8)

    def raw_rows(xs, ys):
        return [pack_row([s for x in xs for s in pixel(x, y)], depth) for y in ys]

    if interlace:
        data = b""
        for x0, y0, dx, dy in ADAM7:
            xs, ys = list(range(x0, width, dx)), list(range(y0, height, dy))
            if xs and ys:
                data += filter_rows(raw_rows(xs, ys), bpp)
    else:
        data = filter_rows(raw_rows(range(width), range(height)), bpp)
    png = b"\x89PNG\r\n\x1a\n"
    png += chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 1 if interlace else 0))
    if plte:
        png += chunk(b"PLTE", bytes(v for rgb in plte for v in rgb))
    if trns is not None:
        png += chunk(b"tRNS", trns)
    png += chunk(b"IDAT", zlib.compress(data, 9))
    png += chunk(b"IEND", b"")
    with open(os.path.join(OUT, path), "wb") as f:
        f.write(png)
    return os.path.join(OUT, path)


def check_with_pillow(path, expected):
    """expected: list of rows of tuples (what the file means, 8-bit), compared with Pillow's decoding."""
    try:
        from PIL import Image
    except ImportError:
        print("  (Pillow not installed: %s not cross-checked)" % os.path.basename(path))
        return
    img = Image.open(path)
    mode = "RGBA" if len(expected[0][0]) == 4 else "RGB" if len(expected[0][0]) == 3 else \
        "LA" if len(expected[0][0]) == 2 else "L"
    img = img.convert(mode)
    w, h = img.size
    got = [[img.getpixel((x, y)) for x in range(w)] for y in range(h)]
    got = [[p if isinstance(p, tuple) else (p,) for p in row] for row in got]
    assert got == expected, (path, got, expected)
    print("  %s: Pillow agrees" % os.path.basename(path))


def main():
    os.makedirs(OUT, exist_ok=True)
    encode("grey16_5x3.png", 5, 3, 16, GREY, lambda x, y: (0x1111 * (5 * y + x) + 1,))
    encode("rgb16_4x3.png", 4, 3, 16, RGB, lambda x, y: tuple((1777 * (12 * c + 4 * y + x) + 3) % 65536 for c in range(3)))
    encode("rgba16_3x2.png", 3, 2, 16, RGBA, lambda x, y: tuple((1777 * (6 * c + 3 * y + x) + 3) % 65536 for c in range(4)))

    p = encode("palette2_5x4.png", 5, 4, 2, PALETTED, lambda x, y: ((x + 2 * y) % 4,), plte=PALETTE)
    check_with_pillow(p, [[PALETTE[(x + 2 * y) % 4] for x in range(5)] for y in range(4)])
    p = encode("palette_trns_5x4.png", 5, 4, 8, PALETTED, lambda x, y: ((x + 2 * y) % 4,), plte=PALETTE,
               trns=bytes(ALPHAS))
    check_with_pillow(p, [[PALETTE[(x + 2 * y) % 4] + (ALPHAS[(x + 2 * y) % 4],) for x in range(5)] for y in range(4)])
    p = encode("grey1_9x2.png", 9, 2, 1, GREY, lambda x, y: ((x + y) % 2,))
    check_with_pillow(p, [[(255 * ((x + y) % 2),) for x in range(9)] for y in range(2)])
    p = encode("grey4_5x3.png", 5, 3, 4, GREY, lambda x, y: ((5 * y + x) % 16,))
    check_with_pillow(p, [[(17 * ((5 * y + x) % 16),) for x in range(5)] for y in range(3)])
    p = encode("grey_trns_4x2.png", 4, 2, 8, GREY, lambda x, y: (30 * (4 * y + x),), trns=struct.pack(">H", 90))
    check_with_pillow(p, [[(30 * (4 * y + x), 0 if 30 * (4 * y + x) == 90 else 255) for x in range(4)] for y in range(2)])
    p = encode("adam7_rgb_7x5.png", 7, 5, 8, RGB, lambda x, y: tuple(2 * (35 * c + 7 * y + x) for c in range(3)),
               interlace=True)
    check_with_pillow(p, [[tuple(2 * (35 * c + 7 * y + x) for c in range(3)) for x in range(7)] for y in range(5)])
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print("wrote %d files to %s (%d bytes)" % (len(os.listdir(OUT)), OUT, total))


if __name__ == "__main__":
    main()
