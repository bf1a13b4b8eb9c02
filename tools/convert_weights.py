#!/usr/bin/python3
"""convert_weights.py — the official PyTorch weights of LPIPS and of pytorch-fid's Inception-v3 as
the safetensors files that lua/cunet/models/lpips.lua and inception.lua load.

Run with Debian's /usr/bin/python3 (torch is needed to read a .pth file; the writer is plain Python):

    /usr/bin/python3 tools/convert_weights.py lpips --net alex --lin alex.pth \\
        --trunk alexnet-owt-7be5be79.pth --out lpips_alex.safetensors
    /usr/bin/python3 tools/convert_weights.py lpips --net vgg --lin vgg.pth \\
        --trunk vgg16-397923af.pth --out lpips_vgg.safetensors
    /usr/bin/python3 tools/convert_weights.py inception \\
        --pth pt_inception-2015-12-05-6726825d.pth --out inception_fid.safetensors

LPIPS: --lin is the lpips package's v0.1 head file (lpips/weights/v0.1/alex.pth or vgg.pth, keys
lin0.model.1.weight .. lin4.model.1.weight); --trunk is torchvision's ImageNet alexnet or vgg16
state dict (keys features.N.weight/bias). The output holds the trunk's features.* tensors and the
five heads under their official names; the trunk's classifier.* (not used by LPIPS) is left out.
Inception: --pth is pytorch-fid's FID weights file; fc.* (the 1008-way classifier, not used by the
2048-d pool3 features) and BatchNorm's num_batches_tracked counters are left out, every other
tensor is written under its name. What is left out is printed. The Lua loader then checks that the
file holds exactly the tensors the architecture needs, with their shapes.
"""

import argparse
import json
import os
import struct
import sys


def write_safetensors(path, tensors, metadata=None):
    """Writes {name: torch tensor} as float32 safetensors (little-endian, C order), atomically
    (temp file, fsync, rename). Names are written sorted."""
    import torch

    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().to(torch.float32).contiguous()
        data = t.numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_pth(path):
    import torch

    sd = torch.load(path, map_location="cpu")
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise SystemExit("%s: not a state dict (a %s)" % (path, type(sd).__name__))
    return sd


def lpips_tensors(lin_sd, trunk_sd, lin_path, trunk_path):
    """The features.* of the trunk and the lin*.model.1.weight heads; (tensors, left_out names)."""
    out, left_out = {}, []
    for k, v in trunk_sd.items():
        if k.startswith("features."):
            out[k] = v
        else:
            left_out.append(k)
    if not out:
        raise SystemExit("%s: no features.* tensors: not a torchvision alexnet/vgg16 state dict" % trunk_path)
    heads = 0
    for k, v in lin_sd.items():
        if k.startswith("lin") and k.endswith(".model.1.weight"):
            out[k] = v
            heads += 1
        else:
            left_out.append(k)
    if heads == 0:
        raise SystemExit("%s: no lin*.model.1.weight tensors: not an lpips v0.1 head file" % lin_path)
    return out, left_out


def inception_tensors(sd):
    out, left_out = {}, []
    for k, v in sd.items():
        if k.startswith("fc.") or k.endswith(".num_batches_tracked"):
            left_out.append(k)
        else:
            out[k] = v
    return out, left_out


def main(argv):
    p = argparse.ArgumentParser(description="official LPIPS / pytorch-fid Inception weights -> safetensors")
    sub = p.add_subparsers(dest="kind", required=True)
    lp = sub.add_parser("lpips")
    lp.add_argument("--net", choices=["alex", "vgg"], required=True)
    lp.add_argument("--lin", required=True, help="lpips v0.1 heads: alex.pth or vgg.pth")
    lp.add_argument("--trunk", required=True, help="torchvision alexnet or vgg16 ImageNet state dict (.pth)")
    lp.add_argument("--out", required=True)
    ip = sub.add_parser("inception")
    ip.add_argument("--pth", required=True, help="pt_inception-2015-12-05-6726825d.pth")
    ip.add_argument("--out", required=True)
    a = p.parse_args(argv)
    if a.kind == "lpips":
        tensors, left_out = lpips_tensors(load_pth(a.lin), load_pth(a.trunk), a.lin, a.trunk)
        meta = {"format": "lpips-v0.1", "net": a.net, "lin": os.path.basename(a.lin),
                "trunk": os.path.basename(a.trunk)}
    else:
        tensors, left_out = inception_tensors(load_pth(a.pth))
        meta = {"format": "pytorch-fid-inception", "source": os.path.basename(a.pth)}
    write_safetensors(a.out, tensors, meta)
    print("%s: %d tensors written" % (a.out, len(tensors)))
    counters = [k for k in left_out if k.endswith(".num_batches_tracked")]
    others = sorted(k for k in left_out if not k.endswith(".num_batches_tracked"))
    if counters:
        others.append("%d BatchNorm num_batches_tracked counters" % len(counters))
    if others:
        print("left out (not used): %s" % ", ".join(others))


if __name__ == "__main__":
    main(sys.argv[1:])
