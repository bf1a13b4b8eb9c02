#!/usr/bin/python3
"""fixtures_thop.py — reference MAC counts for lua/cunet/efficiency.lua, written to
tests/fixtures/thop.lua and read by tests/lua/test_efficiency.lua.

Run from anywhere:  /usr/bin/python3 tests/tools/fixtures_thop.py   (Debian's python3-torch)

Two counts of one forward pass (eval mode, no_grad) of small models built identically in PyTorch
and in cunet:

  thop   thop 0.1.1's count (Lyken17/pytorch-OpCounter, PyPI 0.1.1.post2209072238, the counter behind
         the cDDPM paper's "GFLOPs"). thop is not packaged for Debian, so its rules are re-implemented
         below (THOP_RULES): a forward hook on every module whose type (exactly; no isinstance) is
         registered, adding on every call; the total sums the hooked modules, except containers,
         whose children are summed instead. Unregistered types (GroupNorm, SiLU, GELU, custom
         modules) and functional ops (matmul, einsum, F.interpolate, F.instance_norm, x + y) count 0.
           Conv*d, ConvTranspose*d   output elements × (C_in / groups) × kernel area (bias not counted)
           Linear                    in_features × output elements
           BatchNorm, InstanceNorm, LayerNorm   2 × input elements, × 2 when affine
           Softmax                   rows × (3 · features − 1)
           AvgPool                   output elements;  AdaptiveAvgPool: (input/output area + 1) × output
           Upsample                  output elements × 1 nearest, 5 linear, 11 bilinear, 259 bicubic
           ReLU, ReLU6, MaxPool, Dropout, ZeroPad2d, Sequential, PixelShuffle   0
  macs   every multiply-accumulate of the products the forward computes, counted by a
         TorchFunctionMode on the torch functions themselves: conv2d (output × C_in/groups × k²),
         conv_transpose2d (input × C_out/groups × k²), linear (output × in_features), matmul / bmm
         (output × inner size) and einsum (the product of all index sizes). cunet's count_ops must
         give the same MACs for its conv2d, conv_transpose2d, linear, matmul and attention ops.

The U-Nets come from the independent PyTorch rewrites of the other fixture generators:
fixtures_unet.py (LucidUnet, HoUNet: its class definitions are read, the fixture code after them is
not run) and fixtures_cunet.py (ContinuousUNet). The authors' cU-Net normalises with
nn.InstanceNorm2d modules, which thop counts; fixtures_cunet.py writes those norms functionally,
so the notebook model here gets InstanceNorm2d modules in their place (same arithmetic).

The paper-scale cases (lucidrains' Unet(dim=64, dim_mults=(1, 2, 4, 8)) and the authors' cU-Net at
1×3×64²) must give the paper's thop numbers, 7,206,256,640 and 2,830,983,168: the script stops if
they do not. Each case stores the Lua construction (spec or config), the input shapes, the
timesteps (1-based, as the Lua models take them), the thop total and per-type totals, the thop
call counts, and the MACs.
"""

import os
import sys
import types

import torch
import torch.nn as tnn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from fixture_util import Fixture  # noqa: E402
import fixtures_cunet  # noqa: E402  (its fixture code runs only as a script)


def load_unet_classes():
    """The model classes of fixtures_unet.py, without running the fixture code that follows them."""
    path = os.path.join(HERE, "fixtures_unet.py")
    with open(path) as f:
        source = f.read()
    cut = source.index("# ---- hashed weights")
    namespace = {"__name__": "fixtures_unet_classes", "__file__": path}
    exec(compile(source[:cut], path, "exec"), namespace)
    return types.SimpleNamespace(**namespace)


U = load_unet_classes()

# ---- thop 0.1.1's rules -------------------------------------------------------------------------------


def conv_ops(m, x, y):
    return y.numel() * (x.shape[1] // m.groups) * m.weight[0, 0].numel()


def norm_ops(m, x, y):
    affine = getattr(m, "affine", False) or getattr(m, "elementwise_affine", False)
    return 2 * x.numel() * (2 if affine else 1)


def softmax_ops(m, x, y):
    nf = x.shape[m.dim]
    return (x.numel() // nf) * (3 * nf - 1)


def adaptive_avg_ops(m, x, y):
    area = 1
    for a, b in zip(x.shape[2:], y.shape[2:]):
        area *= a / b
    return int((area + 1) * y.numel())


UPSAMPLE = {"nearest": 1, "linear": 5, "bilinear": 11, "bicubic": 259}


def zero_ops(m, x, y):
    return 0


THOP_RULES = {
    tnn.Conv1d: conv_ops, tnn.Conv2d: conv_ops, tnn.Conv3d: conv_ops,
    tnn.ConvTranspose1d: conv_ops, tnn.ConvTranspose2d: conv_ops, tnn.ConvTranspose3d: conv_ops,
    tnn.BatchNorm1d: norm_ops, tnn.BatchNorm2d: norm_ops, tnn.BatchNorm3d: norm_ops, tnn.LayerNorm: norm_ops,
    tnn.InstanceNorm1d: norm_ops, tnn.InstanceNorm2d: norm_ops, tnn.InstanceNorm3d: norm_ops,
    tnn.Softmax: softmax_ops,
    tnn.Linear: lambda m, x, y: m.in_features * y.numel(),
    tnn.AvgPool1d: lambda m, x, y: y.numel(), tnn.AvgPool2d: lambda m, x, y: y.numel(),
    tnn.AvgPool3d: lambda m, x, y: y.numel(),
    tnn.AdaptiveAvgPool1d: adaptive_avg_ops, tnn.AdaptiveAvgPool2d: adaptive_avg_ops,
    tnn.AdaptiveAvgPool3d: adaptive_avg_ops,
    tnn.Upsample: lambda m, x, y: y.numel() * UPSAMPLE.get(m.mode, 0),
    tnn.ZeroPad2d: zero_ops, tnn.ReLU: zero_ops, tnn.ReLU6: zero_ops,
    tnn.MaxPool1d: zero_ops, tnn.MaxPool2d: zero_ops, tnn.MaxPool3d: zero_ops,
    tnn.AdaptiveMaxPool1d: zero_ops, tnn.AdaptiveMaxPool2d: zero_ops, tnn.AdaptiveMaxPool3d: zero_ops,
    tnn.Dropout: zero_ops, tnn.Sequential: zero_ops, tnn.PixelShuffle: zero_ops,
}


def thop_count(model, inputs):
    """(total, {type name: ops}, {type name: calls}) as thop 0.1.1's profile() sums them."""
    ops, calls, handles = {}, {}, []
    by_type, call_count = {}, {}

    def hook(m, x, y):
        rule = THOP_RULES[type(m)]
        n = rule(m, x[0], y)
        ops[m] = ops.get(m, 0) + n
        name = type(m).__name__
        by_type[name] = by_type.get(name, 0) + n
        call_count[name] = call_count.get(name, 0) + 1

    for m in model.modules():
        if type(m) in THOP_RULES:
            handles.append(m.register_forward_hook(hook))
    model.eval()
    with torch.no_grad():
        model(*inputs)
    for h in handles:
        h.remove()

    def dfs(module):
        total = ops.get(module, 0) if type(module) in THOP_RULES and not isinstance(module, tnn.Sequential) else 0
        for child in module.children():
            if type(child) in THOP_RULES and not isinstance(child, (tnn.Sequential, tnn.ModuleList)):
                total += ops.get(child, 0)
            else:
                total += dfs(child)
        return total

    total = dfs(model)
    return total, {k: v for k, v in by_type.items() if v > 0}, call_count


# ---- every multiply-accumulate -------------------------------------------------------------------------


def einsum_macs(equation, operands):
    sizes = {}
    inputs = equation.replace(" ", "").split("->")[0].split(",")
    for spec, t in zip(inputs, operands):
        for letter, size in zip(spec, t.shape):
            sizes[letter] = size
    n = 1
    for size in sizes.values():
        n *= size
    return n


class MacCounter(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.macs = {}

    def add(self, kind, n):
        self.macs[kind] = self.macs.get(kind, 0) + int(n)

    def __torch_function__(self, func, types_, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if name == "conv2d":
            w = args[1]
            self.add("conv2d", out.numel() * w[0].numel())
        elif name == "conv_transpose2d":
            x, w = args[0], args[1]
            self.add("conv_transpose2d", x.numel() * w[0].numel())
        elif name == "linear":
            self.add("linear", out.numel() * args[1].shape[1])
        elif name in ("matmul", "bmm", "__matmul__"):
            self.add("matmul", max(out.numel(), 1) * args[0].shape[-1])
        elif name == "einsum":
            operands = args[1:] if len(args) > 2 or not isinstance(args[1], (list, tuple)) else args[1]
            self.add("matmul", einsum_macs(args[0], operands))
        return out


def mac_count(model, inputs):
    counter = MacCounter()
    model.eval()
    with torch.no_grad(), counter:
        model(*inputs)
    return sum(counter.macs.values()), counter.macs


# ---- small models, built the same way in Lua from `spec` ---------------------------------------------


class SelfAttention2d(tnn.Module):
    """cunet's nn.SelfAttention2d: GroupNorm, a 1×1 conv to q, k, v, per-head attention, 1×1 proj, + x."""

    def __init__(self, c, heads, groups):
        super().__init__()
        self.heads = heads
        self.norm = tnn.GroupNorm(groups, c)
        self.qkv = tnn.Conv2d(c, 3 * c, 1)
        self.proj = tnn.Conv2d(c, c, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        d = c // self.heads
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, d, h * w).transpose(3, 4).unbind(1)
        att = torch.softmax(q @ k.transpose(2, 3) / d ** 0.5, dim=-1)
        o = (att @ v).transpose(2, 3).reshape(b, c, h, w)
        return x + self.proj(o)


def build(spec):
    """A torch Sequential from the Lua-side spec: a list of {type, args..., opts}."""
    layers = []
    for layer in spec:
        kind, args, opts = layer["type"], layer.get("args", []), layer.get("opts", {})
        if kind == "Conv2d":
            layers.append(tnn.Conv2d(*args, stride=opts.get("stride", 1), padding=opts.get("padding", 0),
                                     groups=opts.get("groups", 1), bias=opts.get("bias", True)))
        elif kind == "ConvTranspose2d":
            layers.append(tnn.ConvTranspose2d(*args, stride=opts.get("stride", 1), padding=opts.get("padding", 0),
                                              groups=opts.get("groups", 1)))
        elif kind == "Linear":
            layers.append(tnn.Linear(*args, bias=opts.get("bias", True)))
        elif kind == "GroupNorm":
            layers.append(tnn.GroupNorm(*args))
        elif kind == "BatchNorm2d":
            layers.append(tnn.BatchNorm2d(*args))
        elif kind == "InstanceNorm2d":
            layers.append(tnn.InstanceNorm2d(*args, affine=opts.get("affine", False)))
        elif kind == "LayerNorm":
            layers.append(tnn.LayerNorm(*args))
        elif kind == "Upsample":
            layers.append(tnn.Upsample(scale_factor=opts["scale_factor"], mode=opts["mode"],
                                       **({"align_corners": False} if opts["mode"] == "bilinear" else {})))
        elif kind == "AvgPool2d":
            layers.append(tnn.AvgPool2d(*args))
        elif kind == "MaxPool2d":
            layers.append(tnn.MaxPool2d(*args))
        elif kind == "Softmax":
            layers.append(tnn.Softmax(dim=args[0] - 1))  # the spec's dim is 1-based, as the Lua API
        elif kind == "Flatten":
            layers.append(tnn.Flatten())
        elif kind == "Dropout":
            layers.append(tnn.Dropout(*args))
        elif kind == "SelfAttention2d":
            layers.append(SelfAttention2d(args[0], opts["heads"], opts["groups"]))
        else:
            layers.append(getattr(tnn, kind)())  # ReLU, SiLU, GELU, Identity
    return tnn.Sequential(*layers)


def L(kind, *args, **opts):
    entry = {"type": kind}
    if args:
        entry["args"] = list(args)
    if opts:
        entry["opts"] = opts
    return entry


SEQUENTIAL_CASES = [
    ("conv_stack", [L("Conv2d", 3, 8, 3, padding=1), L("ReLU"), L("Conv2d", 8, 16, 3, stride=2, padding=1, bias=False),
                    L("GroupNorm", 4, 16), L("SiLU"), L("Conv2d", 16, 16, 3, padding=1, groups=4), L("AvgPool2d", 2),
                    L("MaxPool2d", 2), L("Conv2d", 16, 4, 1)], [(2, 3, 16, 16)]),
    ("mlp", [L("Flatten"), L("Linear", 48, 32), L("LayerNorm", 32), L("GELU"), L("Dropout", 0.1),
             L("Linear", 32, 10, bias=False), L("Softmax", 2)], [(3, 3, 4, 4)]),
    ("norms", [L("Conv2d", 2, 8, 3), L("BatchNorm2d", 8), L("InstanceNorm2d", 8), L("InstanceNorm2d", 8, affine=True),
               L("GroupNorm", 2, 8), L("ReLU")], [(2, 2, 10, 10)]),
    ("resample", [L("Upsample", scale_factor=2, mode="nearest"), L("Conv2d", 4, 4, 3, padding=1),
                  L("Upsample", scale_factor=2, mode="bilinear"), L("ConvTranspose2d", 4, 2, 4, stride=2, padding=1),
                  L("ConvTranspose2d", 2, 2, 3, padding=1, groups=2)], [(1, 4, 5, 5)]),
    ("attention", [L("Conv2d", 3, 8, 3, padding=1), L("SelfAttention2d", 8, heads=2, groups=4),
                   L("SelfAttention2d", 8, heads=1, groups=2), L("Conv2d", 8, 3, 1)], [(2, 3, 4, 4)]),
]

# U-Nets: the Lua config, the torch model, the input shape
LUCID_PAPER = dict(arch="lucidrains", in_channels=3, resolution=64, ch=64, ch_mult=[1, 2, 4, 8], num_res_blocks=2,
                   full_attn=[False, False, False, True])
CUNET_NOTEBOOK = dict(in_channels=3, out_channels=3, resolution=64, widths=[32, 64, 128, 256], mid_width=512,
                      stem="velocity", stem_width=16, velocity_act="softplus", act="softplus", norm="instance",
                      norm_groups=8, form="augmented", residual=True, num_timesteps=1000, time_dim=256,
                      time_scale_shift=False, time_add=False, attention_levels=[4], attention_mid=False,
                      attention_heads=4, attention_dim_head=32, attention_residual=False, method="rk4_38", steps=1,
                      t0=0, t1=1)
PAPER_THOP = {"paper_baseline": 7_206_256_640, "cunet_notebook": 2_830_983_168}


def with_instance_norm_modules(model):
    """The authors' InstanceNorm2d modules in place of fixtures_cunet's functional instance norms (in
    the initial velocity always, in the ODE functions when they use instance norm)."""
    for m in model.modules():
        if isinstance(m, fixtures_cunet.ConvSODEFunc) and m.norm1 is None:
            m.norm1, m.norm2 = tnn.InstanceNorm2d(m.width), tnn.InstanceNorm2d(m.width)
        elif isinstance(m, fixtures_cunet.InitialVelocity):
            m.norm1 = tnn.InstanceNorm2d(m.conv1.in_channels)
            m.norm2 = tnn.InstanceNorm2d(m.conv1.out_channels)

            def forward(self, x):
                out = fixtures_cunet.act(self.conv1(self.norm1(x)), self.nonlin)
                return fixtures_cunet.act(self.conv2(self.norm2(out)), self.nonlin)

            m.forward = types.MethodType(forward, m)
    return model


def cunet_model(options):
    cfg = dict(fixtures_cunet.DEFAULTS)
    cfg.update(options)
    return with_instance_norm_modules(fixtures_cunet.ContinuousUNet(cfg))


def unet_cases():
    small_cunet = dict(in_channels=1, out_channels=1, resolution=16, widths=[4, 8], mid_width=16, stem_width=2,
                       num_timesteps=100, time_dim=32, attention_levels=[2], attention_heads=2, attention_dim_head=4,
                       norm="group", norm_groups=2, residual=False, time_add=True, attention_mid=True)
    return [
        ("lucid_small", "unet", dict(arch="lucidrains", in_channels=3, resolution=16, ch=32, ch_mult=[1, 2],
                                     num_res_blocks=2, full_attn=[False, True]),
         U.LucidUnet(dim=32, dim_mults=(1, 2), channels=3, full_attn=(False, True)), (2, 3, 16, 16)),
        ("ho_small", "unet", dict(arch="ddpm", in_channels=1, resolution=16, ch=32, ch_mult=[1, 2], num_res_blocks=1,
                                  attn_resolutions=[8], dropout=0.1),
         U.HoUNet(32, (1, 2), 1, (8,), 0.1, 1, 1, 16), (2, 1, 16, 16)),
        ("cunet_small", "cunet", small_cunet, cunet_model(small_cunet), (2, 1, 16, 16)),
        ("paper_baseline", "unet", LUCID_PAPER,
         U.LucidUnet(dim=64, dim_mults=(1, 2, 4, 8), channels=3, full_attn=(False, False, False, True)), (1, 3, 64, 64)),
        ("cunet_notebook", "cunet", CUNET_NOTEBOOK, cunet_model(CUNET_NOTEBOOK), (1, 3, 64, 64)),
    ]


def main():
    torch.set_num_threads(4)
    fx = Fixture("thop", seed=20240901)
    for name, spec, shapes in SEQUENTIAL_CASES:
        model = build(spec)
        inputs = [torch.randn(*s) for s in shapes]
        total, by_type, calls = thop_count(model, inputs)
        macs, macs_by = mac_count(model, inputs)
        fx.add(name=name, spec=spec, input_shapes=[list(s) for s in shapes], thop=total, thop_by_type=by_type,
               thop_calls=calls, macs=macs, macs_by_op=macs_by)
    for name, family, config, model, shape in unet_cases():
        x = torch.randn(*shape)
        n = shape[0]
        t0 = torch.tensor([499] * n) if family == "unet" else torch.tensor([49 if name == "cunet_small" else 499] * n)
        total, by_type, calls = thop_count(model, [x, t0])
        macs, macs_by = mac_count(model, [x, t0])
        if name in PAPER_THOP and total != PAPER_THOP[name]:
            raise SystemExit("%s: thop count %d, the paper's %d" % (name, total, PAPER_THOP[name]))
        print("%-16s thop %15d   MACs %15d" % (name, total, macs))
        fx.add(name=name, family=family, config=config, input_shapes=[list(shape)], t=[int(v) + 1 for v in t0],
               thop=total, thop_by_type=by_type, thop_calls=calls, macs=macs, macs_by_op=macs_by)
    fx.write(os.path.basename(__file__))


if __name__ == "__main__":
    main()
