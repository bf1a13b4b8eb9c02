#!/usr/bin/python3
"""fixtures_conv.py — PyTorch reference cases for conv2d and conv_transpose2d, forward and
gradients, written to tests/fixtures/nn_conv.lua (read by tests/lua/test_conv.lua).

Run from anywhere:  /usr/bin/python3 tests/tools/fixtures_conv.py
(Debian's python3-torch; see tests/tools/README.md.)

Each case (format in fixture_util.py):
    {name=, op="conv2d" | "conv_transpose2d", args={opts}, inputs={x, w [, b]},
     output=, grad_output=, grads={gx, gw [, gb]}}
args is the options table exactly as the Lua test passes it ({stride=2, padding={1, 2}, ...}:
numbers and {h, w} pairs both appear); a case without bias has two inputs.

Inputs and grad_output are float32 (uniform in [-1, 1)). The expected output and gradients are
torch's float64 result on those exact float32 values, rounded to float32: the correctly rounded
answer, independent of any float32 summation order. grads[i] = d sum(grad_output * output) / d
inputs[i]. The script also reruns every case in float32 torch and prints the worst distance to the
stored answer as a fraction of the Lua test's tolerance (below 1: float32 PyTorch itself would pass).
"""

import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixture_util import Fixture  # noqa: E402

SEED = 20240612
fx = Fixture("nn_conv", seed=SEED, max_bytes=1_500_000)
worst = [0.0, ""]
RTOL, ATOL = 1e-4, 1e-5  # the tolerance of tests/lua/test_conv.lua


def uniform(*shape):
    return torch.rand(*shape, dtype=torch.float32) * 2 - 1


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def torch_kwargs(op, args):
    kw = {}
    for k in ("stride", "padding", "dilation", "output_padding"):
        if k in args:
            kw[k] = pair(args[k])
    if "groups" in args:
        kw["groups"] = args["groups"]
    return kw


def run(op, inputs, args, dtype):
    ts = [t.to(dtype).detach().requires_grad_(True) for t in inputs]
    fn = F.conv2d if op == "conv2d" else F.conv_transpose2d
    out = fn(ts[0], ts[1], ts[2] if len(ts) > 2 else None, **torch_kwargs(op, args))
    return ts, out


def add(name, op, x_shape, w_shape, bias, args):
    """One case: x [x_shape], w [w_shape], a bias of the output channels when bias is true."""
    x, w = uniform(*x_shape), uniform(*w_shape)
    groups = args.get("groups", 1)
    c_out = w_shape[0] if op == "conv2d" else w_shape[1] * groups
    inputs = [x, w] + ([uniform(c_out)] if bias else [])
    ts, out = run(op, inputs, args, torch.float64)
    g = uniform(*out.shape)
    grads = torch.autograd.grad(out, ts, g.to(torch.float64))
    for t in [x, w, out, g] + list(grads):
        assert t.numel() <= 2500, "%s: a tensor of %d elements" % (name, t.numel())
    fx.add(name=name, op=op, args=args, inputs=inputs, output=out.float(), grad_output=g,
           grads=[gr.float() for gr in grads])
    # how far float32 torch lands from the stored (float64, rounded) answer
    ts32, out32 = run(op, inputs, args, torch.float32)
    got = [out32] + list(torch.autograd.grad(out32, ts32, g))
    want = [out.float()] + [gr.float() for gr in grads]
    for a, b in zip(got, want):
        rel = ((a - b).abs() / (ATOL + RTOL * b.abs())).max().item()
        if rel > worst[0]:
            worst[:] = [rel, name]


# ---- conv2d ------------------------------------------------------------------------------------
add("basic", "conv2d", (1, 3, 5, 5), (4, 3, 3, 3), True, {})
add("pad1_batch3", "conv2d", (3, 2, 6, 6), (4, 2, 3, 3), True, {"padding": 1})
add("stride2_pad1", "conv2d", (2, 3, 7, 7), (5, 3, 3, 3), True, {"stride": 2, "padding": 1})
add("pad2_nobias", "conv2d", (1, 2, 5, 6), (3, 2, 3, 3), False, {"padding": 2})
add("asym_pad_stride", "conv2d", (2, 3, 6, 7), (2, 3, 3, 3), True,
    {"stride": [2, 1], "padding": [1, 2]})
add("dilation2", "conv2d", (1, 2, 9, 9), (3, 2, 3, 3), True, {"dilation": 2, "padding": 2})
add("dilation_asym_stride", "conv2d", (2, 2, 9, 8), (3, 2, 3, 2), False,
    {"dilation": [2, 3], "stride": [1, 2], "padding": [0, 1]})
add("groups2", "conv2d", (2, 4, 6, 6), (6, 2, 3, 3), True, {"groups": 2, "padding": 1})
add("depthwise", "conv2d", (2, 4, 7, 7), (4, 1, 3, 3), True, {"groups": 4, "padding": 1})
add("depthwise_mult2_stride2", "conv2d", (2, 3, 8, 8), (6, 1, 3, 3), False,
    {"groups": 3, "padding": 1, "stride": 2})
add("groups_dilation_stride", "conv2d", (2, 4, 8, 8), (4, 2, 3, 3), True,
    {"groups": 2, "dilation": [2, 1], "stride": 2, "padding": [2, 1]})
add("odd_7x9_k5x3", "conv2d", (3, 2, 7, 9), (3, 2, 5, 3), True,
    {"stride": [1, 2], "padding": [2, 1]})
add("k1x1", "conv2d", (3, 5, 4, 5), (4, 5, 1, 1), True, {})
add("k1x1_nobias_batch1", "conv2d", (1, 6, 5, 5), (3, 6, 1, 1), False, {})
add("k1x1_stride2", "conv2d", (2, 3, 5, 5), (4, 3, 1, 1), True, {"stride": 2})
add("k1x1_groups2", "conv2d", (2, 4, 3, 4), (6, 2, 1, 1), True, {"groups": 2})
add("kernel_over_input_pad1", "conv2d", (2, 2, 2, 2), (3, 2, 3, 3), True, {"padding": 1})
add("large_plane_32x32", "conv2d", (1, 1, 32, 32), (2, 1, 3, 3), True, {"padding": 1})
add("unbatched", "conv2d", (2, 5, 5), (3, 2, 3, 3), True, {"padding": 1})
add("full_kernel_k4_stride3", "conv2d", (2, 2, 10, 8), (2, 2, 4, 4), True, {"stride": 3})

# ---- conv_transpose2d --------------------------------------------------------------------------
add("t_basic", "conv_transpose2d", (1, 3, 4, 4), (3, 4, 3, 3), True, {})
add("t_stride2_outpad1", "conv_transpose2d", (2, 4, 4, 5), (4, 3, 3, 3), True,
    {"stride": 2, "padding": 1, "output_padding": 1})
add("t_pad1_nobias", "conv_transpose2d", (2, 2, 5, 5), (2, 3, 3, 3), False, {"padding": 1})
add("t_groups2_stride2", "conv_transpose2d", (2, 4, 3, 4), (4, 3, 3, 3), True,
    {"groups": 2, "stride": 2})
add("t_dilation2", "conv_transpose2d", (1, 2, 4, 4), (2, 2, 3, 3), True,
    {"dilation": 2, "padding": 1})
add("t_outpad_below_dilation", "conv_transpose2d", (2, 2, 4, 4), (2, 3, 3, 3), True,
    {"dilation": 2, "output_padding": 1})
add("t_asym", "conv_transpose2d", (2, 3, 3, 4), (3, 2, 3, 4), True,
    {"stride": [2, 3], "padding": [1, 0], "output_padding": [1, 2]})
add("t_k1x1", "conv_transpose2d", (3, 4, 3, 5), (4, 3, 1, 1), True, {})
add("t_k1x1_outpad", "conv_transpose2d", (2, 3, 3, 3), (3, 2, 1, 1), True,
    {"dilation": 2, "output_padding": 1})
add("t_depthwise", "conv_transpose2d", (2, 3, 4, 4), (3, 1, 3, 3), True,
    {"groups": 3, "stride": 2, "padding": 1, "output_padding": 1})
add("t_odd_k5x3_batch3", "conv_transpose2d", (3, 2, 3, 5), (2, 2, 5, 3), True,
    {"stride": [2, 1], "padding": [1, 1]})
add("t_big_padding_crops", "conv_transpose2d", (1, 2, 5, 5), (2, 2, 3, 3), True,
    {"padding": 2, "stride": 2})
add("t_unbatched", "conv_transpose2d", (3, 3, 3), (3, 2, 3, 3), True, {"stride": 2})

fx.write("fixtures_conv.py")
print("float32 torch vs stored answer: worst |diff| / (atol + rtol |want|) = %.3g (case %s)" % tuple(worst))
