#!/usr/bin/python3
"""fixtures_spatial.py — PyTorch reference cases for the spatial ops (engine/ops_spatial.c):
upsample/interpolate (nearest, bilinear), avg_pool2d, max_pool2d, adaptive_avg_pool2d and pad,
written to tests/fixtures/nn_spatial.lua and read by tests/lua/test_spatial.lua.

Run from anywhere:  /usr/bin/python3 tests/tools/fixtures_spatial.py
(Debian's python3-torch; see tests/tools/README.md.)

Each case is {name=, op=, args=, inputs={x}, output=, grad_output=, grads={gx}} in the format of
fixture_util.py. `op` names the cunet function and `args` are the Lua arguments after x, so the
test calls cn[op](x, table.unpack(args)). Inputs are float32 (standard normal, so max pooling has
no ties); output and grads are torch's float64 answer on those exact inputs with a random float32
grad_output, rounded to float32. The script also reruns every case in float32 torch and prints the
largest deviation from the float64 answer. One exception, printed when it happens: where torch's
nearest backward is not the gradient of its own forward (see nearest_vjp), the true gradient is stored.
"""

import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixture_util import Fixture  # noqa: E402

SEED = 20240612
fx = Fixture("nn_spatial", seed=SEED, max_bytes=1_500_000)
worst = {"out": 0.0, "grad": 0.0}


def pair(v):
    return tuple(v) if isinstance(v, (list, tuple)) else (v, v)


def torch_call(op, x, args):
    """Runs the Lua call cn[op](x, *args) with torch.nn.functional."""
    if op in ("upsample", "interpolate"):
        o = args[0]
        kw = dict(mode=o.get("mode", "nearest"))
        if "size" in o:
            kw["size"] = pair(o["size"])
        else:
            kw["scale_factor"] = pair(o["scale_factor"])
            kw["recompute_scale_factor"] = o.get("recompute_scale_factor", None)
        if "align_corners" in o:
            kw["align_corners"] = o["align_corners"]
        elif kw["mode"] == "bilinear":
            kw["align_corners"] = False
        return F.interpolate(x, **kw)
    if op == "avg_pool2d":
        o = args[1] if len(args) > 1 else {}
        k = pair(args[0])
        return F.avg_pool2d(x, k, stride=pair(o.get("stride", k)), padding=pair(o.get("padding", 0)),
                            ceil_mode=o.get("ceil_mode", False),
                            count_include_pad=o.get("count_include_pad", True))
    if op == "max_pool2d":
        o = args[1] if len(args) > 1 else {}
        k = pair(args[0])
        return F.max_pool2d(x, k, stride=pair(o.get("stride", k)), padding=pair(o.get("padding", 0)),
                            dilation=pair(o.get("dilation", 1)), ceil_mode=o.get("ceil_mode", False))
    if op == "adaptive_avg_pool2d":
        return F.adaptive_avg_pool2d(x, pair(args[0]))
    if op == "pad":
        mode = args[1] if len(args) > 1 else "constant"
        if mode == "constant":
            return F.pad(x, tuple(args[0]), mode=mode, value=args[2] if len(args) > 2 else 0.0)
        return F.pad(x, tuple(args[0]), mode=mode)
    raise ValueError(op)


def nearest_vjp(op, x64, args, g64):
    """The true gradient of torch's nearest forward: torch 1.13 computes the forward of NCHW inputs
    without the shortcuts of nearest_idx (out == in copies, out == 2 in halves) but its backward with
    them, so when a scale_factor disagrees with those sizes its gradient is not that of its own
    forward. Here the forward's source indices are read off an arange input and the gradient is the
    scatter-add through them (the VJP of the gather)."""
    h, w = x64.shape[-2:]
    where = torch_call(op, torch.arange(h * w, dtype=torch.float64).reshape(1, 1, h, w).expand(1, 2, h, w).contiguous(),
                       args)[0, 0].long()  # C = 2 keeps torch on its NCHW kernel
    flat = x64.detach().flatten(-2)
    y = flat[..., where.flatten()].reshape(g64.shape)
    assert torch.equal(y, torch_call(op, x64.detach(), args)), "nearest index map does not reproduce torch"
    grad = torch.zeros_like(flat).index_add_(-1, where.flatten(), g64.flatten(-2))
    return grad.reshape(x64.shape)


def add(name, op, shape, *args):
    x32 = torch.randn(shape, dtype=torch.float32)
    x64 = x32.double().requires_grad_(True)
    y64 = torch_call(op, x64, list(args))
    g32 = torch.randn(y64.shape, dtype=torch.float32)
    y64.backward(g32.double())
    out, grad = y64.detach().float(), x64.grad.float()
    torch_grad = grad
    if op in ("upsample", "interpolate") and args[0].get("mode", "nearest") == "nearest":
        true_grad = nearest_vjp(op, x64, list(args), g32.double()).float()
        if not torch.equal(true_grad, grad):
            print("%s: torch's backward is not the gradient of its forward; storing the true gradient" % name)
            grad = true_grad
    # the same in float32 torch, as a check that the float64 answer is what users see
    x = x32.clone().requires_grad_(True)
    y = torch_call(op, x, list(args))
    y.backward(g32)
    for key, a, b in (("out", y.detach(), out), ("grad", x.grad, torch_grad)):
        if a.numel():
            worst[key] = max(worst[key], ((a - b).abs() / (1 + b.abs())).max().item())
    fx.add(name=name, op=op, args=list(args), inputs=[x32], output=out, grad_output=g32, grads=[grad])


# ---- upsample / interpolate --------------------------------------------------------------------
add("nearest_x2", "upsample", (2, 3, 4, 5), {"scale_factor": 2})
add("nearest_size_double", "upsample", (1, 2, 3, 4), {"size": [6, 8], "mode": "nearest"})
add("nearest_odd_up_down", "upsample", (1, 2, 5, 7), {"size": [11, 3]})
add("nearest_down", "interpolate", (2, 2, 7, 6), {"size": [3, 4], "mode": "nearest"})
add("nearest_same_size", "upsample", (1, 2, 3, 4), {"size": [3, 4]})
add("nearest_scale_fractional", "upsample", (1, 2, 5, 7), {"scale_factor": [1.5, 0.4]})
add("nearest_scale_recompute", "upsample", (1, 2, 5, 7),
    {"scale_factor": [1.5, 0.4], "recompute_scale_factor": True})
# nearest keeps using 1 / scale when the size stays (3 * 1.2 -> 3) or doubles (5 * 2.1 -> 10); torch's
# NCHW kernel does so (C > 1 here: with C = 1 torch takes its channels-last kernel, which copies/halves)
add("nearest_scale_keeps_size", "upsample", (1, 2, 3, 5), {"scale_factor": 1.2})
add("nearest_scale_doubles_size", "upsample", (1, 2, 5, 4), {"scale_factor": 2.1})
add("nearest_scale_3", "upsample", (1, 1, 3, 2), {"scale_factor": 3})
for ac in (False, True):
    tag = "ac" if ac else "noac"
    add("bilinear_x2_" + tag, "upsample", (2, 2, 4, 5), {"scale_factor": 2, "mode": "bilinear", "align_corners": ac})
    add("bilinear_half_" + tag, "upsample", (1, 3, 6, 7),
        {"scale_factor": 0.5, "mode": "bilinear", "align_corners": ac})
    add("bilinear_odd_" + tag, "interpolate", (1, 2, 5, 7),
        {"size": [11, 3], "mode": "bilinear", "align_corners": ac})
    add("bilinear_to_row_" + tag, "upsample", (1, 2, 4, 5),
        {"size": [1, 9], "mode": "bilinear", "align_corners": ac})
    add("bilinear_scale_fractional_" + tag, "upsample", (1, 2, 5, 6),
        {"scale_factor": [1.7, 0.6], "mode": "bilinear", "align_corners": ac})
add("bilinear_default_align", "upsample", (1, 2, 3, 4), {"size": [5, 9], "mode": "bilinear"})
add("bilinear_half_recompute", "upsample", (1, 2, 7, 5),
    {"scale_factor": 0.5, "mode": "bilinear", "recompute_scale_factor": True})
# floor(3 * 1.2) = 3: bilinear copies an axis whose size does not change, whatever the scale
add("bilinear_scale_keeps_size", "upsample", (1, 2, 3, 5), {"scale_factor": 1.2, "mode": "bilinear"})
add("bilinear_same_size", "upsample", (1, 2, 3, 4), {"size": [3, 4], "mode": "bilinear"})

# ---- avg_pool2d --------------------------------------------------------------------------------
add("avg_k2", "avg_pool2d", (2, 3, 6, 6), 2)
add("avg_k3_s1_p1", "avg_pool2d", (1, 2, 5, 6), 3, {"stride": 1, "padding": 1})
add("avg_k3_s2", "avg_pool2d", (1, 2, 7, 8), 3, {"stride": 2})
add("avg_k3_s2_p1_ceil", "avg_pool2d", (1, 2, 6, 7), 3, {"stride": 2, "padding": 1, "ceil_mode": True})
add("avg_k3_s2_p1_nopad", "avg_pool2d", (1, 2, 7, 6), 3,
    {"stride": 2, "padding": 1, "count_include_pad": False})
add("avg_k3_s2_p1_ceil_nopad", "avg_pool2d", (1, 2, 6, 6), 3,
    {"stride": 2, "padding": 1, "ceil_mode": True, "count_include_pad": False})
add("avg_k2_s2_ceil_odd", "avg_pool2d", (1, 2, 5, 5), 2, {"ceil_mode": True})
add("avg_k2_s2_p1_ceil_drop_last", "avg_pool2d", (1, 2, 5, 5), 2, {"padding": 1, "ceil_mode": True})
add("avg_rect", "avg_pool2d", (1, 2, 6, 7), [2, 3], {"stride": [1, 2], "padding": [1, 0]})
add("avg_3d_input", "avg_pool2d", (3, 5, 5), 2, {"stride": 1})

# ---- max_pool2d --------------------------------------------------------------------------------
add("max_k2", "max_pool2d", (2, 3, 6, 6), 2)
add("max_k3_s1_p1", "max_pool2d", (1, 2, 5, 6), 3, {"stride": 1, "padding": 1})
add("max_k3_s2", "max_pool2d", (1, 2, 7, 8), 3, {"stride": 2})
add("max_k3_s2_p1_ceil", "max_pool2d", (1, 2, 6, 7), 3, {"stride": 2, "padding": 1, "ceil_mode": True})
add("max_k2_s2_ceil_odd", "max_pool2d", (1, 2, 5, 5), 2, {"ceil_mode": True})
add("max_k3_dil2", "max_pool2d", (1, 2, 9, 8), 3, {"dilation": 2})
add("max_k2_s1_p1_dil21", "max_pool2d", (1, 2, 7, 7), 2, {"stride": 1, "padding": 1, "dilation": [2, 1]})
add("max_k3_s2_p1_dil2_ceil", "max_pool2d", (1, 2, 8, 9), 3,
    {"stride": 2, "padding": 1, "dilation": 2, "ceil_mode": True})
add("max_k2_s2_p1_ceil_drop_last", "max_pool2d", (1, 2, 5, 5), 2, {"padding": 1, "ceil_mode": True})
add("max_rect", "max_pool2d", (1, 2, 6, 7), [2, 3], {"stride": [2, 1], "padding": [1, 1], "ceil_mode": True})
add("max_3d_input", "max_pool2d", (3, 5, 5), 2, {"stride": 1})

# ---- adaptive_avg_pool2d -----------------------------------------------------------------------
add("adaptive_1x1", "adaptive_avg_pool2d", (2, 3, 5, 7), 1)
add("adaptive_3x2", "adaptive_avg_pool2d", (1, 2, 5, 7), [3, 2])
add("adaptive_up_6x5", "adaptive_avg_pool2d", (1, 2, 4, 4), [6, 5])
add("adaptive_same", "adaptive_avg_pool2d", (1, 2, 4, 3), [4, 3])
add("adaptive_3d_input", "adaptive_avg_pool2d", (3, 7, 6), [2, 4])

# ---- pad ---------------------------------------------------------------------------------------
add("pad_constant", "pad", (2, 2, 3, 4), [1, 2, 3, 0])
add("pad_constant_value", "pad", (1, 2, 3, 4), [1, 2, 3, 0], "constant", 0.5)
add("pad_constant_negative", "pad", (1, 2, 4, 5), [-1, 2, 1, -2])
add("pad_constant_3_pairs", "pad", (2, 3, 4), [1, 1, 0, 2, -1, 1])
add("pad_constant_1d", "pad", (5,), [2, -1], "constant", -1.5)
add("pad_reflect", "pad", (1, 2, 4, 5), [2, 1, 1, 3], "reflect")
add("pad_reflect_negative", "pad", (1, 2, 4, 5), [-1, 2, 2, -1], "reflect")
add("pad_reflect_crop_past", "pad", (2, 3, 5), [3, -2], "reflect")
add("pad_reflect_1d", "pad", (2, 3, 5), [4, 2], "reflect")
add("pad_reflect_3d", "pad", (1, 1, 3, 4, 3), [1, 2, 2, 0, 1, 1], "reflect")
add("pad_replicate", "pad", (1, 2, 4, 5), [2, 3, 1, 0], "replicate")
add("pad_replicate_negative", "pad", (1, 2, 4, 5), [-2, 3, -1, 1], "replicate")
add("pad_replicate_1d", "pad", (2, 3, 4), [3, 5], "replicate")
add("pad_replicate_3d", "pad", (1, 1, 2, 3, 4), [1, 1, 2, 0, 1, 2], "replicate")

fx.write(os.path.basename(__file__))
print("float32 torch vs float64 torch: max |diff| / (1 + |float64|) %.3g (outputs), %.3g (grads)"
      % (worst["out"], worst["grad"]))
