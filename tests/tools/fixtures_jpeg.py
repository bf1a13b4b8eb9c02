#!/usr/bin/python3
"""fixtures_jpeg.py — the JPEG files read by tests/lua/test_jpeg.lua (tests/fixtures/jpeg/, with the
pixels Pillow decodes in tests/fixtures/jpeg.lua) and the JPEG seeds and hostile inputs of the
fuzzing regression suite (tests/fuzz/corpus/jpeg/, tests/fuzz/crashes/jpeg/).

    /usr/bin/python3 tests/tools/fixtures_jpeg.py      # Debian's Pillow, on the system libjpeg-turbo

Pillow decodes with the same libjpeg-turbo as cunet (default islow IDCT, fancy upsampling), so
the decoded values are the reference, exactly. Patterns (x, y 0-based): smooth gradients, so the
lossy coding keeps them recognisable.
  grey_16x12.jpg            baseline greyscale, quality 90
  rgb420_20x14.jpg          baseline YCbCr 4:2:0, quality 85
  rgb444_progressive_24x16.jpg  progressive YCbCr 4:4:4, quality 95
  cmyk_8x8.jpg              CMYK (refused: not supported)
  truncated_rgb.jpg         rgb420_20x14.jpg cut in the middle of its entropy data (refused)
The crash inputs: a 300-byte file whose frame header claims 65500 x 65500 RGB, a sequential file
claiming 2000 x 2000 (under the sample cap, past the sample-per-byte bound), the truncated and CMYK files, and a file
whose scan data are noise, and the progressive file with its last scan repeated 600 times (past the
reader's 500-scan limit).
"""
import io
import os
import random

from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.normpath(os.path.join(HERE, "..", "fixtures"))
FUZZ = os.path.normpath(os.path.join(HERE, "..", "fuzz"))


def put(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def encode(img, **kw):
    buf = io.BytesIO()
    img.save(buf, "JPEG", **kw)
    return buf.getvalue()


def grey():
    img = Image.new("L", (16, 12))
    img.putdata([(x * 13 + y * 9) % 256 for y in range(12) for x in range(16)])
    return img


def rgb(w, h):
    img = Image.new("RGB", (w, h))
    img.putdata([((x * 11) % 256, (y * 17) % 256, ((x + y) * 5 + 40) % 256) for y in range(h) for x in range(w)])
    return img


def set_frame_size(data, w, h):
    """The same file with its SOF0/SOF2 frame header claiming w x h."""
    i = 2
    while i < len(data):
        marker, length = data[i + 1], data[i + 2] << 8 | data[i + 3]
        if marker in (0xC0, 0xC1, 0xC2):
            return data[:i + 5] + bytes([h >> 8, h & 255, w >> 8, w & 255]) + data[i + 9:]
        i += 2 + length
    raise ValueError("no frame header")


def scans(data):
    """The (start, end) byte ranges of the scans (SOS segment and its entropy-coded data)."""
    i, found = 2, []
    while i < len(data) and data[i + 1] != 0xD9:
        length = data[i + 2] << 8 | data[i + 3]
        if data[i + 1] != 0xDA:
            i += 2 + length
            continue
        j = i + 2 + length
        while not (data[j] == 0xFF and data[j + 1] != 0x00 and not 0xD0 <= data[j + 1] <= 0xD7):
            j += 1
        found.append((i, j))
        i = j
    return found


def lua_image(img):
    chans = len(img.getbands())
    w, h = img.size
    px = list(img.getdata())
    if chans == 1:
        px = [(p,) for p in px]
    vals = [px[y * w + x][c] for c in range(chans) for y in range(h) for x in range(w)]
    return "{shape = {%d, %d, %d}, bytes = {%s}}" % (chans, h, w, ", ".join(str(v) for v in vals))


def main():
    files = {
        "grey_16x12.jpg": encode(grey(), quality=90),
        "rgb420_20x14.jpg": encode(rgb(20, 14), quality=85, subsampling=2),
        "rgb444_progressive_24x16.jpg": encode(rgb(24, 16), quality=95, subsampling=0, progressive=True),
    }
    cmyk = encode(rgb(8, 8).convert("CMYK"), quality=90)
    full = files["rgb420_20x14.jpg"]
    sos = full.index(b"\xff\xda")
    scan_start = sos + 2 + (full[sos + 2] << 8 | full[sos + 3])
    truncated = full[:(scan_start + len(full)) // 2]  # half of the entropy-coded data
    for name, data in files.items():
        put(os.path.join(FIX, "jpeg", name), data)
        put(os.path.join(FUZZ, "corpus", "jpeg", name), data)
    put(os.path.join(FIX, "jpeg", "cmyk_8x8.jpg"), cmyk)
    put(os.path.join(FIX, "jpeg", "truncated_rgb.jpg"), truncated)

    lines = ["-- tests/fixtures/jpeg.lua — written by tests/tools/fixtures_jpeg.py: the pixels Pillow decodes",
             "-- (0..255, [C, H, W] row-major) from the files of tests/fixtures/jpeg/.", "return {"]
    for name, data in files.items():
        lines.append("  [\"%s\"] = %s," % (name, lua_image(Image.open(io.BytesIO(data)))))
    lines.append("}")
    put(os.path.join(FIX, "jpeg.lua"), ("\n".join(lines) + "\n").encode())

    crashes = os.path.join(FUZZ, "crashes", "jpeg")
    put(os.path.join(crashes, "sof_claims_65500x65500.jpg"), set_frame_size(full, 65500, 65500))
    put(os.path.join(crashes, "sof_claims_2000x2000.jpg"), set_frame_size(full, 2000, 2000))
    put(os.path.join(crashes, "truncated_rgb.jpg"), truncated)
    put(os.path.join(crashes, "cmyk_8x8.jpg"), cmyk)
    rnd = random.Random(7)
    noise = bytes(rnd.randrange(255) for _ in range(len(full) - scan_start - 2))  # no 0xFF: no markers
    put(os.path.join(crashes, "scan_noise.jpg"), full[:scan_start] + noise + b"\xff\xd9")
    prog = files["rgb444_progressive_24x16.jpg"]
    start, end = scans(prog)[-1]
    put(os.path.join(crashes, "scans_600.jpg"), prog[:end] + prog[start:end] * 600 + b"\xff\xd9")


if __name__ == "__main__":
    main()
