#!/usr/bin/python3
"""fixtures_cameraman.py -> tests/fixtures/cameraman.png

The standard 256 x 256 8-bit grey "cameraman" of the BM3D paper's Table II, read by
tests/lua/test_bm3d.lua. Debian ships it in libvigraimpex-dev's examples (VIGRA, Expat licence
per /usr/share/doc/libvigraimpex-dev/copyright, "Files: *"); this script copies that file byte for
byte after checking it is the expected image.

    apt-get install -y libvigraimpex-dev python3-pil
    /usr/bin/python3 tests/tools/fixtures_cameraman.py
"""
import hashlib
import os
import shutil
import sys

from PIL import Image

SOURCE = "/usr/share/doc/libvigraimpex-dev/examples/cameraman.png"
TARGET = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "cameraman.png")


def main():
    if not os.path.exists(SOURCE):
        sys.exit(f"{SOURCE} not found: apt-get install -y libvigraimpex-dev")
    image = Image.open(SOURCE)
    if image.size != (256, 256) or image.mode != "L":
        sys.exit(f"{SOURCE}: expected a 256x256 8-bit grey image, got {image.size} {image.mode}")
    pixels = list(image.getdata())
    mean = sum(pixels) / len(pixels)
    if abs(mean - 118.72) > 0.01:  # the standard cameraman's mean grey level
        sys.exit(f"{SOURCE}: mean {mean:.3f}, not the standard cameraman (118.72)")
    shutil.copyfile(SOURCE, TARGET)
    with open(TARGET, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    print(f"wrote {os.path.normpath(TARGET)} (mean {mean:.4f}, sha256 {digest})")


if __name__ == "__main__":
    main()
