#!/usr/bin/python3
"""fixtures_double_backward.py — PyTorch Hessian-vector products for the ops that support
create_graph, written to tests/fixtures/double_backward.lua (read by
tests/lua/test_double_backward.lua).

Run from anywhere:  /usr/bin/python3 tests/tools/fixtures_double_backward.py

Every case reads (format of fixture_util.py, plus two fields)
    {name=, op=, args={...}, inputs={{shape=, data=}, ...}, requires_grad={true, false, ...},
     grad_output=u, directions={v_1 | false, ...}, grads={g_1 | false, ...}, hvps={h_1 | false, ...}}
with g_i = d <f(x), u> / d x_i (the first-order gradients, taken with create_graph) and
h_i = d (sum_j <g_j, v_j>) / d x_i: a Hessian-vector product of <f, u>, mixed terms included.
Inputs, u and v are float32; everything is computed in float64 from those values and rounded to
float32. Dims in args are 1-based, as the Lua API.
"""

import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixture_util import Fixture  # noqa: E402

SEED = 20261206
F64 = torch.float64
fx = None


def rand(*shape, low=None):
    """float32 normal values, or uniform in [low, low + 1.5) (away from a domain edge)."""
    if low is None:
        return torch.randn(*shape)
    return torch.rand(*shape) * 1.5 + low


def add(name, op, inputs, fn, args=None, requires_grad=None):
    requires_grad = requires_grad or [True] * len(inputs)
    xs = [t.to(F64).requires_grad_(r) for t, r in zip(inputs, requires_grad)]
    out = fn(*xs)
    u = torch.randn(out.shape)
    wrt = [x for x in xs if x.requires_grad]
    grads = torch.autograd.grad(out, wrt, u.to(F64), create_graph=True, allow_unused=True)
    vs = [torch.randn(x.shape) for x in wrt]
    total = sum((g * v.to(F64)).sum() for g, v in zip(grads, vs) if g is not None)
    hvps = torch.autograd.grad(total, wrt, allow_unused=True) if total.requires_grad else [None] * len(wrt)
    spread = iter(zip(grads, vs, hvps))
    g_out, v_out, h_out = [], [], []
    for x in xs:
        if not x.requires_grad:
            g_out.append(False), v_out.append(False), h_out.append(False)
            continue
        g, v, h = next(spread)
        g_out.append(torch.zeros_like(x) if g is None else g.detach())
        v_out.append(v)
        h_out.append(torch.zeros_like(x) if h is None else h.detach())
    fx.add(name=name, op=op, args=args or {}, inputs=inputs, requires_grad=requires_grad, grad_output=u,
           directions=v_out, grads=g_out, hvps=h_out)


def gen_unary():
    domain = {"log": 0.3, "sqrt": 0.3, "rsqrt": 0.3, "reciprocal": 0.3}
    for op in ["neg", "exp", "log", "sqrt", "rsqrt", "abs", "sin", "cos", "tanh", "sigmoid", "relu", "silu",
               "softplus", "square", "reciprocal"]:
        add(op, op, [rand(3, 4, low=domain.get(op))], getattr(torch, op, None) or getattr(F, op))
    # softplus past its threshold (x > 20: the identity)
    add("softplus_threshold", "softplus", [torch.tensor([-1.0, 0.5, 19.0, 21.0, 30.0])], F.softplus)
    add("clamp", "clamp", [rand(3, 4)], lambda x: torch.clamp(x, -0.5, 0.7), {"lo": -0.5, "hi": 0.7})


def gen_binary():
    add("add_broadcast", "add", [rand(3, 4), rand(4)], torch.add)
    add("sub_broadcast", "sub", [rand(2, 3, 4), rand(3, 1)], torch.sub)
    add("mul_broadcast", "mul", [rand(3, 4), rand(3, 1)], torch.mul)
    add("mul_self", "mul_self", [rand(3, 4)], lambda x: x * x)
    add("mul_one_grad", "mul", [rand(3, 4), rand(3, 4)], torch.mul, requires_grad=[True, False])
    add("div", "div", [rand(3, 4), rand(3, 4, low=0.5)], torch.div)
    add("div_broadcast", "div", [rand(2, 3), rand(3, low=0.5)], torch.div)
    add("pow", "pow", [rand(3, 4, low=0.5), rand(3, 4)], torch.pow)
    add("maximum", "maximum", [rand(3, 4), rand(3, 4)], torch.maximum)
    add("minimum", "minimum", [rand(3, 4), rand(3, 4)], torch.minimum)
    add("where", "where", [(torch.rand(3, 4) > 0.5).float(), rand(3, 4), rand(4)],
        lambda c, a, b: torch.where(c > 0, a, b), requires_grad=[False, True, True])


def gen_scalar():
    for op, scalar, first, low in [("add", 1.5, False, None), ("sub", 1.5, True, None), ("mul", -2.5, False, None),
                                   ("div", 3.0, False, None), ("div", 3.0, True, 0.5), ("pow", 3.0, False, None),
                                   ("pow", 0.5, False, 0.3), ("pow", 2.0, True, None)]:
        name = "%s_scalar%s_%g" % (op, "_first" if first else "", scalar)
        fn = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div, "pow": torch.pow}[op]
        add(name, op + "_scalar", [rand(3, 4, low=low)],
            (lambda x, fn=fn, s=scalar: fn(torch.tensor(s, dtype=F64), x)) if first
            else (lambda x, fn=fn, s=scalar: fn(x, s)),
            {"scalar": scalar, "scalar_first": first})


def gen_nn():
    add("linear_bias", "linear", [rand(2, 3, 4), rand(5, 4), rand(5)], F.linear)
    add("linear_1d", "linear", [rand(4), rand(2, 4)], F.linear)
    add("matmul_2d", "matmul", [rand(3, 4), rand(4, 5)], torch.matmul)
    add("matmul_batched_broadcast", "matmul", [rand(2, 3, 4), rand(4, 2)], torch.matmul)
    add("matmul_vec", "matmul", [rand(4), rand(4, 3)], torch.matmul)
    # the MLP pattern: tanh(x w1^T + b1) w2^T, a second derivative through the chain
    add("mlp", "mlp", [rand(3, 4), rand(6, 4), rand(6), rand(2, 6)],
        lambda x, w1, b1, w2: F.linear(torch.tanh(F.linear(x, w1, b1)), w2))
    for reduction in ["mean", "sum", "none"]:
        add("mse_loss_" + reduction, "mse_loss", [rand(3, 4), rand(3, 4)],
            lambda a, b, r=reduction: F.mse_loss(a, b, reduction=r), {"reduction": reduction})
    add("l1_loss_mean", "l1_loss", [rand(3, 4), rand(3, 4)], lambda a, b: F.l1_loss(a, b), {"reduction": "mean"})


def gen_reduce_shape():
    add("sum_all", "sum_sq", [rand(3, 4)], lambda x: (x * x).sum())
    add("sum_dim", "sum_sq", [rand(3, 4)], lambda x: (x * x).sum(1, keepdim=True), {"dims": 2, "keepdim": True})
    add("mean_dims", "mean_sq", [rand(2, 3, 4)], lambda x: (x * x).mean((0, 2)), {"dims": [1, 3]})
    # each shape op between two squares, so that the second derivative flows through it
    add("reshape", "reshape_sq", [rand(3, 4)], lambda x: (x * x).reshape(2, 6) ** 2, {"shape": [2, 6]})
    add("permute", "permute_sq", [rand(2, 3, 4)], lambda x: (x * x).permute(2, 0, 1) ** 2, {"dims": [3, 1, 2]})
    add("transpose_contiguous", "transpose_sq", [rand(3, 4)], lambda x: (x * x).t().contiguous() ** 2)
    add("narrow", "narrow_sq", [rand(3, 5)], lambda x: (x * x).narrow(1, 1, 3) ** 2,
        {"dim": 2, "start": 2, "length": 3})
    add("select", "select_sq", [rand(3, 5)], lambda x: (x * x).select(0, 2) ** 2, {"dim": 1, "index": 3})
    add("expand", "expand_sq", [rand(3, 1)], lambda x: (x * x).expand(3, 4) ** 2, {"shape": [3, 4]})
    add("unsqueeze_squeeze", "unsqueeze_sq", [rand(3, 4)], lambda x: ((x * x).unsqueeze(1) ** 2).squeeze(1))
    add("cat", "cat_sq", [rand(2, 3), rand(2, 2)], lambda a, b: torch.cat([a * b[:, :1], b * b], 1) ** 2, {"dim": 2})
    add("stack", "stack_sq", [rand(2, 3), rand(2, 3)], lambda a, b: torch.stack([a * b, b], 0) ** 2, {"dim": 1})
    add("pad", "pad_sq", [rand(2, 3, 4)], lambda x: F.pad(x * x, (1, -1, 2, 0), value=3.0) ** 2,
        {"pads": [1, -1, 2, 0], "value": 3.0})


def gen_unet_ops():
    """The convolutional U-Nets' ops: conv2d (with its fused activations), the norms, resizing."""
    x, w, b = rand(2, 3, 5, 5), rand(4, 3, 3, 3) * 0.4, rand(4)
    add("conv2d_pad_bias", "conv2d", [x, w, b], lambda x, w, b: torch.tanh(F.conv2d(x, w, b, padding=1)),
        {"padding": 1})
    add("conv2d_stride_groups", "conv2d", [rand(1, 4, 6, 5), rand(4, 2, 3, 3) * 0.4],
        lambda x, w: torch.tanh(F.conv2d(x, w, stride=2, padding=1, groups=2)),
        {"stride": 2, "padding": 1, "groups": 2})
    add("conv2d_dilation", "conv2d", [rand(1, 2, 7, 6), rand(3, 2, 2, 3) * 0.4],
        lambda x, w: torch.sin(F.conv2d(x, w, stride=[2, 1], dilation=2)), {"stride": [2, 1], "dilation": 2, "sin": True})
    add("conv2d_softplus", "conv2d", [rand(1, 2, 4, 4), rand(3, 2, 3, 3) * 0.4, rand(3)],
        lambda x, w, b: F.softplus(F.conv2d(x, w, b, padding=1)), {"padding": 1, "activation": "softplus"})
    add("conv2d_relu", "conv2d", [rand(1, 2, 4, 4), rand(3, 2, 3, 3) * 0.4, rand(3)],
        lambda x, w, b: F.relu(F.conv2d(x, w, b, padding=1)) ** 2, {"padding": 1, "activation": "relu", "square": True})
    add("conv_transpose2d", "conv_transpose2d", [rand(1, 4, 3, 3), rand(4, 3, 3, 3) * 0.4, rand(3)],
        lambda x, w, b: torch.tanh(F.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1)),
        {"stride": 2, "padding": 1, "output_padding": 1})
    add("group_norm", "group_norm", [rand(2, 4, 3, 3), rand(4), rand(4)],
        lambda x, w, b: torch.tanh(F.group_norm(x, 2, w, b)), {"groups": 2})
    add("group_norm_plain", "group_norm", [rand(2, 4, 3)], lambda x: torch.sin(F.group_norm(x, 1)), {"groups": 1})
    add("instance_norm", "instance_norm", [rand(2, 3, 2, 3), rand(3), rand(3)],
        lambda x, w, b: torch.tanh(F.instance_norm(x, weight=w, bias=b)))
    add("layer_norm", "layer_norm", [rand(2, 3, 4), rand(3, 4), rand(3, 4)],
        lambda x, w, b: torch.tanh(F.layer_norm(x, [3, 4], w, b)), {"shape": [3, 4]})
    add("upsample_nearest_x2", "upsample", [rand(1, 2, 3, 3)],
        lambda x: F.interpolate(x, scale_factor=2, mode="nearest") ** 2, {"scale_factor": 2, "mode": "nearest"})
    add("upsample_nearest_size", "upsample", [rand(1, 2, 3, 4)],
        lambda x: F.interpolate(x, size=(5, 7), mode="nearest") ** 2, {"size": [5, 7], "mode": "nearest"})
    add("upsample_bilinear", "upsample", [rand(1, 2, 3, 4)],
        lambda x: F.interpolate(x, size=(5, 7), mode="bilinear", align_corners=False) ** 2,
        {"size": [5, 7], "mode": "bilinear"})
    add("upsample_bilinear_corners", "upsample", [rand(2, 1, 3, 3)],
        lambda x: torch.tanh(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)),
        {"scale_factor": 2, "mode": "bilinear", "align_corners": True, "tanh": True})


def attention(q, k, v, mask=None):
    """softmax(q k^T / sqrt(d) + mask) v (torch 1.13 has no F.scaled_dot_product_attention)."""
    s = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    return torch.softmax(s if mask is None else s + mask, -1) @ v


def gen_attention():
    """softmax, attention (as the U-Nets' attention blocks use it), embedding."""
    add("softmax", "softmax", [rand(3, 4)], lambda x: torch.softmax(x, 1), {"dim": 2})
    add("softmax_dim1", "softmax", [rand(3, 4)], lambda x: torch.softmax(x, 0), {"dim": 1})
    add("log_softmax", "log_softmax", [rand(3, 4)], lambda x: torch.log_softmax(x, 1), {"dim": 2})
    add("sdpa", "sdpa", [rand(2, 3, 4), rand(2, 5, 4), rand(2, 5, 3)], attention)
    mask = torch.where(torch.rand(3, 5) > 0.3, torch.zeros(3, 5), torch.full((3, 5), -2.0))
    add("sdpa_mask_broadcast", "sdpa", [rand(2, 3, 4), rand(5, 4), rand(2, 5, 3), mask],
        attention, requires_grad=[True, True, True, True])
    ids = torch.tensor([[1.0, 3.0, 1.0], [0.0, 2.0, 3.0]])
    add("embedding", "embedding", [ids, rand(4, 3)],
        lambda i, w: torch.tanh(F.embedding(i.long(), w)) ** 2, requires_grad=[False, True])


def gen_statistics():
    """var, std and p-norms (the U-Nets' RMS norm is x / |x|_2 along channels)."""
    add("var_dim", "var", [rand(3, 4)], lambda x: torch.var(x, 1), {"dims": 2})
    add("std_all", "std", [rand(3, 4)], lambda x: torch.std(x, unbiased=False), {"correction": 0})
    add("norm2_rms", "rms", [rand(2, 3, 2)], lambda x: x / x.norm(2, 1, True).clamp(1e-12), {"dim": 2})
    add("norm3", "norm", [rand(3, 4)], lambda x: x.norm(3, 1), {"p": 3, "dims": 2})
    add("norm1", "norm", [rand(3, 4)], lambda x: x.norm(1, 0) ** 2, {"p": 1, "dims": 1, "square": True})


def gen_extrema():
    """max and min, over a dim and over everything (no ties: random data)."""
    add("max_dim", "max", [rand(3, 4)], lambda x: x.max(1)[0] ** 2, {"dim": 2})
    add("min_dim_keepdim", "min", [rand(3, 4)], lambda x: x.min(0, keepdim=True)[0] ** 2, {"dim": 1, "keepdim": True})
    add("max_all", "max", [rand(3, 4)], lambda x: (x * x).max() ** 2, {"square_first": True})


def gen_pools():
    """average pools (separable: two constant matrices)."""
    add("avg_pool2d", "avg_pool2d", [rand(1, 2, 4, 5)], lambda x: F.avg_pool2d(x, 2) ** 2, {"kernel": 2})
    add("avg_pool2d_ceil_nopad", "avg_pool2d", [rand(2, 1, 5, 6)],
        lambda x: F.avg_pool2d(x, 3, stride=2, padding=1, ceil_mode=True, count_include_pad=False) ** 2,
        {"kernel": 3, "stride": 2, "padding": 1, "ceil_mode": True, "count_include_pad": False})
    add("adaptive_avg_pool2d", "adaptive_avg_pool2d", [rand(1, 2, 5, 7)],
        lambda x: F.adaptive_avg_pool2d(x, (3, 2)) ** 2, {"size": [3, 2]})


def main():
    global fx
    fx = Fixture("double_backward", seed=SEED)
    gen_unary()
    gen_binary()
    gen_scalar()
    gen_nn()
    gen_reduce_shape()
    gen_unet_ops()
    gen_attention()
    gen_statistics()
    gen_extrema()
    gen_pools()
    fx.write("fixtures_double_backward.py")


if __name__ == "__main__":
    main()
