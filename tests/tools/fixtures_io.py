"""fixtures_io.py — safetensors fixtures written from PyTorch, and a checker for files cunet wrote.

    /usr/bin/python3 tests/tools/fixtures_io.py                 # regenerate the fixtures
    /usr/bin/python3 tests/tools/fixtures_io.py --check F.safetensors [--expect-arange]

Without arguments it writes
  tests/fixtures/torch_written.safetensors  tensors of dtypes F64, F32, BF16, F16, I64, I32, U8
                                            and BOOL (0-d, empty and 8-d shapes among them) and
                                            string metadata, from torch tensors;
  tests/fixtures/io_torch_written.lua       the values cunet must load from it: each tensor
                                            converted to float32 by torch (`t.to(torch.float32)`),
                                            flat, row-major, bit-exact (%.9g; -0.0, inf and nan
                                            spelled out); and f16_rounding: float32 inputs and
                                            what torch rounds them to in float16 (ties, subnormals,
                                            the edge of the range), which cn.save{dtype = "F16"}
                                            must store.
Read by tests/lua/test_io.lua.

The Python `safetensors` package is not in Debian 12, so this file carries its own writer, which
lays a file out byte for byte as the reference implementation (huggingface/safetensors,
`serialize`) does: tensors sorted by dtype (descending in the reference's Dtype order) then name,
compact JSON with "__metadata__" first, the header padded with spaces to a multiple of 8, data in
header order. And its own strict reader, with the reference's checks (header <= 100 MB, UTF-8,
offsets contiguous from 0 to the end of the file).

--check loads a file through that reader into torch tensors, prints them, and re-serialises them
with the reference layout: "byte-identical" means cunet wrote exactly what the reference would.
With --expect-arange every tensor t must equal torch.arange(t.numel()).reshape(t.shape) + k
for its own offset k (the value of its first element), which cunet can write with cn.arange.
"""

import json
import math
import os
import struct
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.normpath(os.path.join(HERE, "..", "fixtures"))
SEED = 20240612

# The reference's Dtype enum, in its declared (alignment) order.
DTYPE_ORDER = ["BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16",
               "I32", "U32", "F32", "F64", "I64", "U64"]
TORCH_DTYPES = {
    "BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16,
    "F16": torch.float16, "BF16": torch.bfloat16, "I32": torch.int32, "F32": torch.float32,
    "F64": torch.float64, "I64": torch.int64,
}
DTYPE_NAMES = {v: k for k, v in TORCH_DTYPES.items()}
SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "F16": 2, "BF16": 2, "I32": 4, "F32": 4,
         "F64": 8, "I64": 8}


def tensor_bytes(t):
    t = t.detach().contiguous().reshape(-1)
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)  # numpy has no bfloat16; the bits are what we want
    return t.numpy().tobytes()  # native order: little-endian here


def serialize(tensors, metadata=None):
    """The bytes the reference's serialize() produces for {name: tensor} and metadata."""
    items = sorted(tensors.items(),
                   key=lambda kv: (-DTYPE_ORDER.index(DTYPE_NAMES[kv[1].dtype]), kv[0].encode()))
    header, offset, chunks = {}, 0, []
    if metadata is not None:
        header["__metadata__"] = {k: metadata[k] for k in sorted(metadata)}
    for name, t in items:
        data = tensor_bytes(t)
        header[name] = {"dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        chunks.append(data)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def deserialize(blob):
    """({name: tensor}, metadata or None) from bytes, with the reference's checks."""
    if len(blob) < 8:
        raise ValueError("header too small")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > 100_000_000 or 8 + n > len(blob):
        raise ValueError("invalid header length %d" % n)
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError("header is not an object")
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not all(isinstance(v, str) for v in metadata.values()):
        raise ValueError("metadata values must be strings")
    data = blob[8 + n:]
    entries = sorted(header.items(), key=lambda kv: tuple(kv[1]["data_offsets"]))
    tensors, start = {}, 0
    for name, info in entries:
        begin, end = info["data_offsets"]
        if begin != start or end < begin:
            raise ValueError("invalid offsets for %s" % name)
        start = end
        dtype = TORCH_DTYPES[info["dtype"]]
        numel = math.prod(info["shape"])
        if end - begin != numel * SIZES[info["dtype"]]:
            raise ValueError("size mismatch for %s" % name)
        if numel == 0:
            tensors[name] = torch.empty(info["shape"], dtype=dtype)
        else:
            raw = bytearray(data[begin:end])
            if dtype == torch.bfloat16:
                t = torch.frombuffer(raw, dtype=torch.int16).view(torch.bfloat16)
            else:
                t = torch.frombuffer(raw, dtype=dtype)
            tensors[name] = t.reshape(info["shape"]).clone()
    if start != len(data):
        raise ValueError("incomplete buffer: tensors cover %d of %d bytes" % (start, len(data)))
    return tensors, metadata


def lua_float(x):
    x = float(x)
    if math.isnan(x):
        return "0/0"
    if math.isinf(x):
        return "1/0" if x > 0 else "-1/0"
    if x == 0.0:
        return "-0.0" if math.copysign(1.0, x) < 0 else "0.0"
    return "%.9g" % x


def lua_str(s):
    out = []
    for ch in s.encode("utf-8"):
        c = chr(ch)
        out.append(c if 32 <= ch < 127 and c not in '"\\' else "\\%d" % ch)
    return '"' + "".join(out) + '"'


def make_tensors():
    torch.manual_seed(SEED)
    nan, inf = float("nan"), float("inf")
    return {
        "conv.weight": torch.randn(4, 3, 3, 3),
        "conv.bias": torch.randn(4),
        "scalar": torch.tensor(3.25),
        "empty": torch.zeros(0, 5),
        "deep": torch.arange(16, dtype=torch.float32).reshape(2, 1, 2, 1, 2, 1, 1, 2),
        # F16: max, -0, smallest subnormal, a subnormal, 1/3, infinities, nan, and random values
        "half": torch.cat([
            torch.tensor([65504.0, -0.0, 2.0 ** -24, 1e-5, 1.0 / 3, inf, -inf, nan],
                         dtype=torch.float16),
            torch.randn(12).to(torch.float16)]).reshape(4, 5),
        "half.empty": torch.zeros(0, dtype=torch.float16),
        "bfloat": torch.cat([
            torch.tensor([1e38, -1e-38, 3.0e-40, 0.1, -inf, nan], dtype=torch.bfloat16),
            (torch.randn(6) * 100).to(torch.bfloat16)]).reshape(3, 4),
        # F64: values float32 must round (1/3, 0.1), overflow (1e300 -> inf), underflow (1e-50 -> 0)
        "double": torch.tensor([[[1.0 / 3, -2.5], [1e300, 1e-50]],
                                [[0.1, -1e-40], [16777217.0, -0.0]]], dtype=torch.float64),
        "double.scalar": torch.tensor(-7.125, dtype=torch.float64),
        "steps": torch.tensor([0, -7, 16777216, 2 ** 40], dtype=torch.int64),
        "counts": torch.tensor([-2 ** 31, 123456], dtype=torch.int32),
        "pixels": torch.tensor([[0, 1, 127], [128, 254, 255]], dtype=torch.uint8),
        "mask": torch.tensor([True, False, False, True]),
    }


def f16_rounding_inputs():
    """float32 values whose float16 rounding is easy to get wrong, and random ones at many scales."""
    g = torch.Generator().manual_seed(SEED + 1)
    e = 2.0 ** -11  # half an F16 ulp at 1
    special = [1 + e, 1 + 3 * e, -(1 + e), 1 + e * (1 + 2 ** -12), 2048 + 1, 2048 + 3,  # ties to even
               2.0 ** -25, 3 * 2.0 ** -25, 2.0 ** -25 * (1 + 2 ** -20), 2.0 ** -26,  # subnormal ties, zero
               2.0 ** -14 - 2.0 ** -25, 2.0 ** -14 - 2.0 ** -24 * 1.5, 6.1e-5, -3e-7, 1e-8,  # near the normal edge
               65504.0, 65519.0, 65519.99, -65519.0, 1e-45, -0.0, 0.0,
               float("inf"), -float("inf")]
    scales = torch.tensor([1e-6, 1e-4, 1e-2, 1.0, 1e2, 1e4]).repeat_interleave(6)
    randoms = torch.randn(36, generator=g) * scales
    return torch.cat([torch.tensor(special, dtype=torch.float32), randoms.to(torch.float32)])


METADATA = {"format": "pt", "epoch": "12", "note": "naïve ✓ \"quoted\"\ttab"}


def write_fixtures():
    tensors = make_tensors()
    blob = serialize(tensors, METADATA)
    path = os.path.join(FIXTURES, "torch_written.safetensors")
    os.makedirs(FIXTURES, exist_ok=True)
    with open(path, "wb") as f:
        f.write(blob)
    # our own reader must give the tensors back, bit for bit
    back, meta = deserialize(blob)
    assert meta == METADATA and set(back) == set(tensors)
    for name, t in tensors.items():
        b = back[name]
        assert b.dtype == t.dtype and b.shape == t.shape and tensor_bytes(b) == tensor_bytes(t), name

    lines = [
        "-- io_torch_written.lua — what cunet must load from torch_written.safetensors (PyTorch %s)."
        % torch.__version__,
        "-- Generated by tests/tools/fixtures_io.py (seed %d); do not edit by hand, regenerate." % SEED,
        "-- data: the tensor converted to float32 by torch, flat and row-major.",
        "return {",
        "  metadata = {%s}," % ", ".join("[%s] = %s" % (lua_str(k), lua_str(v))
                                         for k, v in sorted(METADATA.items())),
        "  tensors = {",
    ]
    for name in sorted(tensors):
        t = tensors[name]
        f32 = t.to(torch.float32).reshape(-1).tolist()
        lines.append("    [%s] = {dtype = %s, shape = {%s}, data = {%s}}," % (
            lua_str(name), lua_str(DTYPE_NAMES[t.dtype]), ", ".join(str(s) for s in t.shape),
            ", ".join(lua_float(x) for x in f32)))
    lines.append("  },")
    x = f16_rounding_inputs()
    lines.append("  f16_rounding = {input = {%s}, want = {%s}}," % (
        ", ".join(lua_float(v) for v in x.tolist()),
        ", ".join(lua_float(v) for v in x.to(torch.float16).to(torch.float32).tolist())))
    lines.append("}")
    lua_path = os.path.join(FIXTURES, "io_torch_written.lua")
    with open(lua_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote %s (%d bytes) and %s" % (path, len(blob), lua_path))


def check(path, expect_arange):
    with open(path, "rb") as f:
        blob = f.read()
    tensors, metadata = deserialize(blob)
    print("%s: %d tensors, metadata %r" % (path, len(tensors), metadata))
    ok = True
    for name in sorted(tensors):
        t = tensors[name]
        print("  %s %s %s: %s" % (name, DTYPE_NAMES[t.dtype], list(t.shape),
                                  t.reshape(-1)[:8].tolist()))
        if expect_arange and t.numel():
            k = t.reshape(-1)[0].item()
            want = (torch.arange(t.numel(), dtype=torch.float64) + k).to(t.dtype).reshape(t.shape)
            if not torch.equal(t, want):
                print("    MISMATCH: expected arange + %g" % k)
                ok = False
    same = serialize(tensors, metadata) == blob
    print("byte-identical to the reference layout: %s" % ("yes" if same else "NO"))
    return ok and same


def main(argv):
    if len(argv) >= 2 and argv[0] == "--check":
        return 0 if check(argv[1], "--expect-arange" in argv[2:]) else 1
    if argv:
        print(__doc__)
        return 2
    write_fixtures()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
