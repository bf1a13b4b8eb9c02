#!/usr/bin/python3
"""fixtures_perceptual.py — PyTorch reference cases for the perceptual feature networks with
*random* weights: LPIPS v0.1 (AlexNet and VGG16 trunks, lua/cunet/models/lpips.lua) and
pytorch-fid's Inception-v3 (lua/cunet/models/inception.lua), written to
tests/fixtures/perceptual.lua and read by tests/lua/test_perceptual.lua.

Run from anywhere:  /usr/bin/python3 tests/tools/fixtures_perceptual.py
(Debian's python3-torch and python3-torchvision 0.14; see tests/tools/README.md.)

The weights. The trained weights cannot be fetched here, and random float32 weights of the full
networks (VGG16 59 MB, Inception 87 MB) are too big to commit. So every tensor is drawn from a
generator both sides compute bit for bit (restated in tests/lua/seeded_weights.lua): a 64-bit LCG
(Knuth's MMIX constants) seeded with the FNV-1a hash of the tensor's name, whose top 24 bits u
give w = center + half * (u - 2^23) / 2^23 in double — exact IEEE operations, so both languages
get the same double — rounded once to float32. center/half: He-uniform bounds sqrt(6 / fan_in)
for conv weights, [0, 1] for the LPIPS heads, 1 ± 1/4 for BatchNorm weights and running
variances, ± 1/8 for biases and running means. Each case stores a few weights at fixed positions
(`weights`) that the Lua test compares bit for bit, so a drift of either generator fails loudly.

The path. The weights go through the real pipeline: the script saves them as the official .pth
layouts (torchvision's alexnet/vgg16 state dict with its classifier, lpips' lin*.model.1.weight
heads, pytorch-fid's full Inception state dict with fc and num_batches_tracked), converts them with
tools/convert_weights.py, reads the safetensors back, checks they equal the originals, and records
the converted names and shapes (`weights`), which the Lua test holds against the tensors its
loader requires. References are computed in float64 from those exact float32 weights and inputs,
then rounded to float32; the float32 torch result's distance to them is printed.

LPIPS is restated from the lpips package 0.1.4 (richzhang/PerceptualSimilarity): scaling layer,
torchvision trunk sliced after relu1..relu5 (alex) / relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
(vgg), channel-normalised features, squared differences, 1x1 heads without bias, spatial mean,
sum. Inception is rebuilt from torchvision's blocks as pytorch-fid 0.3 does (FIDInceptionA, C,
E_1 with count_include_pad=False average pools, E_2 with a max pool), fed as pytorch-fid feeds it
(bilinear resize to 299 without align_corners, 2x - 1), output the 2048-d pool3 features.
"""

import math
import os
import struct
import json
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torchvision.models import inception as tvi

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools"))
from fixture_util import Fixture  # noqa: E402
import convert_weights  # noqa: E402

SEED = 20261206
MASK = (1 << 64) - 1
LCG_A, LCG_C = 6364136223846793005, 1442695040888963407


def fnv1a64(name):
    h = 0xCBF29CE484222325
    for b in name.encode("utf-8"):
        h = ((h ^ b) * 0x100000001B3) & MASK
    return h


def init_rule(name, shape):
    """(center, half) of a tensor's uniform draw, by name and shape (tests/lua/seeded_weights.lua)."""
    if len(shape) == 4:
        if name.startswith("lin"):
            return 0.5, 0.5
        fan_in = shape[1] * shape[2] * shape[3]
        return 0.0, math.sqrt(6 / fan_in)
    if name.endswith("weight") or name.endswith("running_var"):
        return 1.0, 0.25
    return 0.0, 0.125


def lcg_stream(seed, n):
    """The n states after seed of the LCG x <- A x + C (mod 2^64), as numpy uint64: the first block
    step by step, the rest B at a time with the B-step map (A^B, C (A^(B-1) + ... + 1))."""
    block = 4096
    out = np.empty(n, dtype=np.uint64)
    x = seed
    for i in range(min(n, block)):
        x = (x * LCG_A + LCG_C) & MASK
        out[i] = x
    a_b, c_b = 1, 0
    for _ in range(block):
        a_b, c_b = (a_b * LCG_A) & MASK, (c_b * LCG_A + LCG_C) & MASK
    a_b, c_b = np.uint64(a_b), np.uint64(c_b)
    with np.errstate(over="ignore"):
        for pos in range(block, n, block):
            m = min(block, n - pos)
            out[pos:pos + m] = out[pos - block:pos - block + m] * a_b + c_b
    return out


def seeded(name, shape):
    center, half = init_rule(name, list(shape))
    n = int(np.prod(shape)) if len(shape) else 1
    u = (lcg_stream(fnv1a64(name), n) >> np.uint64(40)).astype(np.int64)
    w = center + half * ((u - 8388608) / 8388608.0)
    return torch.from_numpy(w.astype(np.float32)).reshape(shape)


def fill_seeded(sd):
    """A copy of a state dict with every float tensor replaced by its seeded draw (the classifiers,
    which the converter leaves out, by zeros)."""
    out = {}
    for k, v in sd.items():
        if not v.is_floating_point():
            out[k] = v.clone()
        elif k.startswith("classifier.") or k.startswith("fc."):
            out[k] = torch.zeros_like(v)
        else:
            out[k] = seeded(k, tuple(v.shape))
    return out


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    header.pop("__metadata__", None)
    out = {}
    for k, h in header.items():
        b, e = h["data_offsets"]
        out[k] = torch.frombuffer(bytearray(data[b:e]), dtype=torch.float32).reshape(h["shape"]).clone()
    return out


def samples_of(name, t):
    """A few weights at fixed 1-based flat positions, for the bit-exact check."""
    flat = t.reshape(-1)
    n = flat.numel()
    at = sorted(set([1, 2, n // 3 + 1, n // 2 + 1, n]))
    return {"name": name, "shape": list(t.shape), "at": at, "values": [float(flat[i - 1]) for i in at]}


def weights_entry(converted):
    return [samples_of(k, converted[k]) for k in sorted(converted)]


def round_trip(tmp, kind, pth_files, originals, **kw):
    """Saves the .pth files, runs the converter, reads its output and checks it against originals."""
    for path, sd in pth_files.items():
        torch.save(sd, os.path.join(tmp, path))
    out = os.path.join(tmp, kind + ".safetensors")
    args = [kind]
    for k, v in kw.items():
        args += ["--" + k, os.path.join(tmp, v) if v.endswith(".pth") else v]
    convert_weights.main(args + ["--out", out])
    converted = read_safetensors(out)
    for k, v in converted.items():
        if not torch.equal(v, originals[k]):
            raise SystemExit("converter changed %s" % k)
    return converted


# ---- LPIPS ---------------------------------------------------------------------------------------

SHIFT = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
SCALE = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
TAPS = {"alex": [1, 4, 7, 9, 11], "vgg": [3, 8, 15, 22, 29]}  # features indices after which a slice ends


def lpips_reference(features, heads, taps, x, y, dtype):
    features = features.to(dtype)
    if x.shape[1] == 1:
        x, y = x.repeat(1, 3, 1, 1), y.repeat(1, 3, 1, 1)

    def feats(z):
        z = (z.to(dtype) - SHIFT.to(dtype)) / SCALE.to(dtype)
        out = []
        for i, layer in enumerate(features):
            z = layer(z)
            if i in taps:
                out.append(z)
            if i == taps[-1]:
                break
        return out

    total = 0
    for f0, f1, w in zip(feats(x), feats(y), heads):
        n0 = f0 / (torch.sqrt(torch.sum(f0 ** 2, dim=1, keepdim=True)) + 1e-10)
        n1 = f1 / (torch.sqrt(torch.sum(f1 ** 2, dim=1, keepdim=True)) + 1e-10)
        total = total + F.conv2d((n0 - n1) ** 2, w.to(dtype)).mean([2, 3], keepdim=True)
    return total.reshape(-1)


def lpips_cases(fx, tmp):
    for net, ctor, chns in (("alex", torchvision.models.alexnet, [64, 192, 384, 256, 256]),
                            ("vgg", torchvision.models.vgg16, [64, 128, 256, 512, 512])):
        model = ctor()
        trunk_sd = fill_seeded(model.state_dict())
        lin_sd = {"lin%d.model.1.weight" % k: seeded("lin%d.model.1.weight" % k, (1, c, 1, 1))
                  for k, c in enumerate(chns)}
        originals = dict(trunk_sd)
        originals.update(lin_sd)
        converted = round_trip(tmp, "lpips", {net + ".pth": lin_sd, net + "_trunk.pth": trunk_sd}, originals,
                               net=net, lin=net + ".pth", trunk=net + "_trunk.pth")
        model.load_state_dict(trunk_sd)
        model.eval()
        heads = [converted["lin%d.model.1.weight" % k] for k in range(5)]
        for label, shape in (("rgb", (2, 3, 64, 64)), ("grey", (2, 1, 32, 32))):
            if net == "vgg" and label == "grey":
                continue
            x = torch.rand(shape) * 2 - 1
            y = (x + 0.3 * torch.randn(shape)).clamp(-1, 1)
            y[1] = torch.rand(shape[1:]) * 2 - 1  # a far pair beside a near one
            with torch.no_grad():
                want = lpips_reference(model.features, heads, TAPS[net], x, y, torch.float64)
                f32 = lpips_reference(model.features, heads, TAPS[net], x, y, torch.float32)
            print("lpips %s %s: %s; float32 torch off by %.3g" % (net, label, want.tolist(),
                  (f32.double() - want).abs().max().item()))
            fx.add(name="lpips_%s_%s" % (net, label), op="lpips", args={"net": net}, inputs=[x, y],
                   output=want.to(torch.float32), weights=weights_entry(converted) if label == "rgb" else None)


# ---- Inception (pytorch-fid's FID variant) -------------------------------------------------------

class FIDInceptionA(tvi.InceptionA):
    def forward(self, x):
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False))
        return torch.cat([b1, b5, b3, bp], 1)


class FIDInceptionC(tvi.InceptionC):
    def forward(self, x):
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for m in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                  self.branch7x7dbl_5):
            bd = m(bd)
        bp = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False))
        return torch.cat([b1, b7, bd, bp], 1)


class FIDInceptionE(tvi.InceptionE):
    def __init__(self, in_channels, max_pool):
        super().__init__(in_channels)
        self.max_pool = max_pool

    def forward(self, x):
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        if self.max_pool:  # E_2
            bp = F.max_pool2d(x, 3, stride=1, padding=1)
        else:  # E_1
            bp = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
        return torch.cat([b1, b3, bd, self.branch_pool(bp)], 1)


def fid_inception():
    m = tvi.Inception3(num_classes=1008, aux_logits=False, init_weights=False)
    m.Mixed_5b = FIDInceptionA(192, pool_features=32)
    m.Mixed_5c = FIDInceptionA(256, pool_features=64)
    m.Mixed_5d = FIDInceptionA(288, pool_features=64)
    m.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
    m.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
    m.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
    m.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
    m.Mixed_7b = FIDInceptionE(1280, max_pool=False)
    m.Mixed_7c = FIDInceptionE(2048, max_pool=True)
    return m


def pool3(m, x):
    """pytorch-fid InceptionV3(output_blocks=[3]) with resize_input and normalize_input."""
    x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    x = 2 * x - 1
    for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3"):
        x = getattr(m, name)(x)
    x = F.max_pool2d(x, 3, stride=2)
    x = m.Conv2d_4a_3x3(m.Conv2d_3b_1x1(x))
    x = F.max_pool2d(x, 3, stride=2)
    for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
                 "Mixed_7a", "Mixed_7b", "Mixed_7c"):
        x = getattr(m, name)(x)
    return F.adaptive_avg_pool2d(x, (1, 1)).reshape(x.shape[0], -1)


def inception_cases(fx, tmp):
    m = fid_inception()
    sd = fill_seeded(m.state_dict())
    m.load_state_dict(sd)
    m.eval()
    converted = round_trip(tmp, "inception", {"fid.pth": sd}, sd, pth="fid.pth")
    x = torch.rand(2, 3, 24, 24)
    with torch.no_grad():
        want = pool3(m.double(), x.double())
        f32 = pool3(m.float(), x)
    print("inception: features in [%.4g, %.4g]; float32 torch off by %.3g (relative %.3g)" % (
        want.min().item(), want.max().item(), (f32.double() - want).abs().max().item(),
        ((f32.double() - want).abs() / want.abs().clamp_min(1e-3)).max().item()))
    fx.add(name="inception_pool3", op="inception", args={}, inputs=[x], output=want.to(torch.float32),
           weights=weights_entry(converted))


def main():
    fx = Fixture("perceptual", seed=SEED, max_bytes=3_000_000)
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        lpips_cases(fx, tmp)
        inception_cases(fx, tmp)
    fx.write("fixtures_perceptual.py")


if __name__ == "__main__":
    main()
