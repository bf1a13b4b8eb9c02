#!/usr/bin/python3
"""fixtures_modules.py — PyTorch reference cases for the nn modules (lua/cunet/nn/), written to
tests/fixtures/nn_modules.lua and read by tests/lua/test_modules.lua.

Run from anywhere:  /usr/bin/python3 tests/tools/fixtures_modules.py   (Debian's python3-torch)

Each case describes one module instance:
    name=          the case name
    module=        the Lua class under cn.nn ("Conv2d", "Sequential", ...)
    args=          the Lua constructor arguments (positional sizes, then an options table), or
    build=         the name of a builder in test_modules.lua for models made of several modules
    training=      the mode of the forward pass
    state=         {{key, tensor}, ...}: torch's state_dict, in its order, under torch's key names
    inputs=        {tensor, ...} the forward arguments (embedding ids already 1-based)
    output=        the module's output
    grad_output=   g, a random upstream gradient
    grads=         d sum(g * output) / d input for each input (false: none, e.g. integer ids)
    param_grads=   {{name, tensor}, ...}: the same for every parameter, in named_parameters order
    buffers_after= {{key, tensor}, ...}: the buffers after the forward pass (training-mode norms)
    num_params=    sum of numel over parameters()
    repr=          str(module) as torch prints it, as a list of lines (absent where the Lua
                   arguments differ by design, e.g. 1-based dims)
    rtol=, atol=   looser tolerances where float32 cannot do better (explained at the case)

Parameters are torch's default initialisation from a seeded generator, then — for norms, whose
defaults are 1 and 0 — redrawn at random, so the affine terms are exercised. Inputs and weights are
float32; the expected values are torch's float64 computation on those exact float32 numbers,
rounded to float32, so they do not depend on any summation order. The script reruns every case in
float32 torch and prints how far that lands from the stored answer.

The modules with no torch counterpart (SelfAttention2d, Downsample, SinusoidalTimeEmbedding) are
written below exactly as lua/cunet/nn/ defines them, with the same child names and repr.
"""

import collections
import copy
import math
import warnings

import torch
import torch.nn as tnn
import torch.nn.functional as F

from fixture_util import Fixture

F64 = torch.float64
warnings.filterwarnings("ignore", message="Using padding='same' with even kernel")  # the case is on purpose

fx = Fixture("nn_modules", seed=20241003, max_bytes=1_500_000)
self_check = []  # (name, float32 torch output, stored float64 output)


# ---- the modules cunet adds, in torch --------------------------------------------------------------

class SelfAttention2d(tnn.Module):
    """GroupNorm -> 1x1 conv to qkv -> multi-head attention over H*W -> 1x1 proj (-> + x)."""

    def __init__(self, channels, heads=1, groups=32, eps=1e-5, residual=True, bias=True):
        super().__init__()
        self.channels, self.heads, self.residual = channels, heads, residual
        self.norm = tnn.GroupNorm(groups, channels, eps=eps)
        self.qkv = tnn.Conv2d(channels, 3 * channels, 1, bias=bias)
        self.proj = tnn.Conv2d(channels, channels, 1, bias=bias)

    def forward(self, x):
        n, c, h, w = x.shape
        d = c // self.heads
        qkv = self.qkv(self.norm(x)).reshape(n, 3, self.heads, d, h * w)
        q, k, v = (qkv[:, i].transpose(2, 3) for i in range(3))  # [N, heads, HW, d]
        att = torch.softmax(q @ k.transpose(2, 3) / math.sqrt(d), dim=-1)
        o = (att @ v).transpose(2, 3).reshape(n, c, h, w)
        out = self.proj(o)
        return x + out if self.residual else out

    def extra_repr(self):
        s = "%d, heads=%d" % (self.channels, self.heads)
        return s if self.residual else s + ", residual=False"


class Downsample(tnn.Module):
    """DDPM downsampling: 3x3 conv, stride 2, padding 1 (or a 2x2 average pool)."""

    def __init__(self, channels, with_conv=True, out_channels=None):
        super().__init__()
        self.channels, self.with_conv = channels, with_conv
        self.out_channels = out_channels or channels
        if with_conv:
            self.conv = tnn.Conv2d(channels, self.out_channels, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x) if self.with_conv else F.avg_pool2d(x, 2, stride=2)

    def extra_repr(self):
        s = "%d, with_conv=%s" % (self.channels, self.with_conv)
        return s if self.out_channels == self.channels else s + ", out_channels=%d" % self.out_channels


class SinusoidalTimeEmbedding(tnn.Module):
    """Ho et al.'s get_timestep_embedding (DDPM), with diffusers' flip/shift switches."""

    def __init__(self, dim, max_period=10000, flip_sin_to_cos=False, freq_shift=1):
        super().__init__()
        self.dim, self.max_period, self.flip, self.shift = dim, max_period, flip_sin_to_cos, freq_shift
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=F64) / (half - freq_shift))
        self.register_buffer("freqs", freqs.float().reshape(1, half), persistent=False)

    def forward(self, t):
        args = t.reshape(-1, 1) * self.freqs
        parts = [torch.cos(args), torch.sin(args)] if self.flip else [torch.sin(args), torch.cos(args)]
        if self.dim % 2 == 1:
            parts.append(torch.zeros(t.numel(), 1, dtype=t.dtype))
        return torch.cat(parts, dim=1)

    def extra_repr(self):
        s = "%d, max_period=%s" % (self.dim, self.max_period)
        if self.flip:
            s += ", flip_sin_to_cos=True"
        if self.shift != 1:
            s += ", freq_shift=%s" % self.shift
        return s


# ---- cases -------------------------------------------------------------------------------------------

NORMS = (tnn.GroupNorm, tnn.LayerNorm, tnn.BatchNorm2d, tnn.InstanceNorm2d)


def randomise_norms(model):
    """Norm layers start at weight 1, bias 0 and unit running stats: draw them at random instead."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, NORMS):
                if getattr(m, "weight", None) is not None:
                    m.weight.copy_(1 + 0.5 * torch.randn(m.weight.shape))
                if getattr(m, "bias", None) is not None:
                    m.bias.copy_(0.5 * torch.randn(m.bias.shape))
                if getattr(m, "running_mean", None) is not None:
                    m.running_mean.copy_(0.3 * torch.randn(m.running_mean.shape))
                    m.running_var.copy_(0.5 + torch.rand(m.running_var.shape))


def randx(*shape, offset=0.7, scale=1.5):
    """float32 randn with a per-channel offset and scale, so normalisation has work to do."""
    x = torch.randn(*shape)
    if len(shape) >= 2:
        c = shape[1]
        view = [1, c] + [1] * (len(shape) - 2)
        x = x * torch.linspace(0.5, scale, c).reshape(view) + torch.linspace(-offset, offset, c).reshape(view)
    return x.float()


def add(name, model, inputs, lua_args=None, module=None, build=None, training=True, differentiable=None,
        repr_=True, rtol=None, atol=None, prepare=lambda t: t):
    """Runs model (float32 weights) in float64 on inputs and records everything in a case.
    prepare maps a stored input to what torch takes (embedding: 1-based float ids -> 0-based long)."""
    model = model.float()
    randomise_norms(model)
    if training:
        model.train()
    else:
        model.eval()
    state = [[k, v.detach().clone().float()] for k, v in model.state_dict().items()]
    m32 = copy.deepcopy(model)
    m64 = copy.deepcopy(model).to(F64)
    if differentiable is None:
        differentiable = [True] * len(inputs)
    ins = [t.to(F64).clone().requires_grad_(d) for t, d in zip(inputs, differentiable)]
    y = m64(*[prepare(t) for t in ins])
    g = torch.randn(y.shape).float()
    params = list(m64.named_parameters())
    wanted = [t for t, d in zip(ins, differentiable) if d] + [p for _, p in params]
    got = torch.autograd.grad(y, wanted, g.to(F64), allow_unused=True)
    k = 0
    grads = []
    for d in differentiable:
        grads.append(got[k] if d else False)
        k += 1 if d else 0
    param_grads = [[n, got[k + i]] for i, (n, _) in enumerate(params)]
    case = dict(name=name, training=training, state=state, inputs=list(inputs), output=y, grad_output=g,
                grads=grads, param_grads=param_grads, num_params=sum(p.numel() for p in model.parameters()))
    if module:
        case["module"], case["args"] = module, lua_args or []
    else:
        case["build"] = build
    if repr_:
        case["repr"] = str(model).split("\n")  # lines: fixture_util writes strings without escaping newlines
    if training and any(True for _ in m64.buffers()):
        case["buffers_after"] = [[k, v.float()] for k, v in m64.state_dict().items() if k not in dict(params)]
    if rtol is not None:
        case["rtol"] = rtol
    if atol is not None:
        case["atol"] = atol
    fx.add(**case)
    self_check.append((name, m32(*[prepare(t.clone()) for t in inputs]).detach(), y.detach()))


def conv_cases():
    add("conv2d", tnn.Conv2d(3, 4, 3, padding=1), [randx(2, 3, 5, 5)], [3, 4, 3, {"padding": 1}], "Conv2d")
    add("conv2d_strided_grouped", tnn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2),
        [randx(2, 4, 7, 8)], [4, 6, [3, 2], {"stride": [2, 1], "padding": [1, 0], "dilation": [1, 2], "groups": 2}],
        "Conv2d")
    add("conv2d_reflect_nobias", tnn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect", bias=False),
        [randx(1, 3, 4, 5)], [3, 4, 3, {"padding": 1, "padding_mode": "reflect", "bias": False}], "Conv2d")
    add("conv2d_replicate", tnn.Conv2d(2, 3, 3, padding=(2, 1), padding_mode="replicate"),
        [randx(1, 2, 4, 4)], [2, 3, 3, {"padding": [2, 1], "padding_mode": "replicate"}], "Conv2d")
    add("conv2d_same_even_kernel", tnn.Conv2d(2, 3, 4, padding="same"), [randx(2, 2, 5, 6)],
        [2, 3, 4, {"padding": "same"}], "Conv2d")
    add("conv2d_same_dilated", tnn.Conv2d(2, 3, 3, padding="same", dilation=2), [randx(1, 2, 6, 6)],
        [2, 3, 3, {"padding": "same", "dilation": 2}], "Conv2d")
    add("conv_transpose2d", tnn.ConvTranspose2d(4, 6, 4, stride=2, padding=1), [randx(2, 4, 3, 3)],
        [4, 6, 4, {"stride": 2, "padding": 1}], "ConvTranspose2d")
    add("conv_transpose2d_grouped", tnn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2,
                                                        bias=False),
        [randx(1, 4, 3, 4)], [4, 6, 3, {"stride": 2, "padding": 1, "output_padding": 1, "groups": 2, "bias": False}],
        "ConvTranspose2d")


def linear_cases():
    add("linear", tnn.Linear(5, 3), [randx(2, 4, 5)], [5, 3], "Linear")
    add("linear_nobias", tnn.Linear(4, 6, bias=False), [randx(3, 4)], [4, 6, {"bias": False}], "Linear")
    add("identity", tnn.Identity(), [randx(2, 3)], [], "Identity")
    # Flatten's dims are 1-based in Lua (torch's start_dim=1 is our 2): no repr comparison
    add("flatten", tnn.Flatten(), [randx(2, 3, 2, 2)], [], "Flatten", repr_=False)


def norm_cases():
    add("group_norm", tnn.GroupNorm(2, 6), [randx(2, 6, 3, 3)], [2, 6], "GroupNorm")
    add("group_norm_no_affine", tnn.GroupNorm(3, 6, eps=1e-3, affine=False), [randx(2, 6, 2, 3)],
        [3, 6, {"eps": 1e-3, "affine": False}], "GroupNorm")
    add("instance_norm", tnn.InstanceNorm2d(3), [randx(2, 3, 4, 4)], [3], "InstanceNorm2d")
    add("instance_norm_affine", tnn.InstanceNorm2d(3, affine=True), [randx(2, 3, 3, 4)], [3, {"affine": True}],
        "InstanceNorm2d")
    add("instance_norm_tracked_train", tnn.InstanceNorm2d(3, affine=True, track_running_stats=True, momentum=0.2),
        [randx(2, 3, 3, 3)], [3, {"affine": True, "track_running_stats": True, "momentum": 0.2}], "InstanceNorm2d")
    add("instance_norm_tracked_eval", tnn.InstanceNorm2d(3, affine=True, track_running_stats=True),
        [randx(2, 3, 3, 3)], [3, {"affine": True, "track_running_stats": True}], "InstanceNorm2d", training=False)
    add("layer_norm", tnn.LayerNorm([4, 5]), [randx(2, 3, 4, 5)], [[4, 5]], "LayerNorm")
    add("layer_norm_1d", tnn.LayerNorm(6, eps=1e-6), [randx(3, 6)], [6, {"eps": 1e-6}], "LayerNorm")
    add("batch_norm_train", tnn.BatchNorm2d(3), [randx(4, 3, 3, 3)], [3], "BatchNorm2d")
    add("batch_norm_eval", tnn.BatchNorm2d(3), [randx(2, 3, 3, 3)], [3], "BatchNorm2d", training=False)
    bn = tnn.BatchNorm2d(3, momentum=None)
    bn.num_batches_tracked.fill_(3)  # cumulative average: this batch gets weight 1/4
    add("batch_norm_cumulative", bn, [randx(2, 3, 3, 3)], [3, {"momentum": False}], "BatchNorm2d")
    add("batch_norm_untracked", tnn.BatchNorm2d(3, affine=False, track_running_stats=False), [randx(2, 3, 2, 3)],
        [3, {"affine": False, "track_running_stats": False}], "BatchNorm2d", training=False)


def activation_cases():
    x = lambda: randx(2, 3, 4) * 3  # noqa: E731 — a fresh input spanning the interesting range
    add("silu", tnn.SiLU(), [x()], [], "SiLU")
    add("relu", tnn.ReLU(), [x()], [], "ReLU")
    add("tanh", tnn.Tanh(), [x()], [], "Tanh")
    add("sigmoid", tnn.Sigmoid(), [x()], [], "Sigmoid")
    add("softplus", tnn.Softplus(), [x()], [], "Softplus")
    add("softplus_beta", tnn.Softplus(beta=2, threshold=5), [x()], [{"beta": 2, "threshold": 5}], "Softplus")
    add("gelu", tnn.GELU(), [x()], [], "GELU")
    add("gelu_tanh", tnn.GELU(approximate="tanh"), [x()], [{"approximate": "tanh"}], "GELU")
    # Softmax's dim is 1-based in Lua (torch's dim=1 is our 2): no repr comparison
    add("softmax", tnn.Softmax(dim=1), [x()], [2], "Softmax", repr_=False)
    add("dropout_eval", tnn.Dropout(0.1), [x()], [0.1], "Dropout", training=False)


def attention_cases():
    add("self_attention", SelfAttention2d(8, heads=2, groups=4), [randx(2, 8, 3, 4)],
        [8, {"heads": 2, "groups": 4}], "SelfAttention2d")
    add("self_attention_default", SelfAttention2d(32), [randx(1, 32, 3, 3)], [32], "SelfAttention2d")
    add("self_attention_no_residual", SelfAttention2d(6, heads=3, groups=2, residual=False, bias=False),
        [randx(1, 6, 2, 3)], [6, {"heads": 3, "groups": 2, "residual": False, "bias": False}], "SelfAttention2d")


def resample_cases():
    add("upsample_nearest", tnn.Upsample(scale_factor=2), [randx(1, 2, 3, 4)], [{"scale_factor": 2}], "Upsample")
    add("upsample_bilinear_size", tnn.Upsample(size=(5, 7), mode="bilinear"), [randx(1, 2, 3, 4)],
        [{"size": [5, 7], "mode": "bilinear"}], "Upsample")
    add("upsample_bilinear_corners", tnn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
        [randx(1, 2, 3, 3)], [{"scale_factor": 2, "mode": "bilinear", "align_corners": True}], "Upsample")
    add("downsample_conv", Downsample(4), [randx(2, 4, 6, 6)], [4], "Downsample")
    add("downsample_conv_odd", Downsample(3, out_channels=5), [randx(1, 3, 5, 7)], [3, {"out_channels": 5}],
        "Downsample")
    add("downsample_avg", Downsample(3, with_conv=False), [randx(1, 3, 4, 6)], [3, {"with_conv": False}], "Downsample")
    add("avg_pool", tnn.AvgPool2d(2), [randx(1, 2, 4, 6)], [2], "AvgPool2d")
    add("max_pool", tnn.MaxPool2d(3, stride=2, padding=1), [randx(1, 2, 5, 5)], [3, {"stride": 2, "padding": 1}],
        "MaxPool2d")


def embedding_cases():
    ids = torch.tensor([[3, 0, 9], [5, 5, 1]])
    add("embedding", tnn.Embedding(10, 4), [(ids + 1).float()], [10, 4], "Embedding", differentiable=[False],
        prepare=lambda t: t.long() - 1)
    # Timesteps up to 999 times frequencies up to 1: float32 rounds t·ω to a relative 2^-24, an
    # absolute error up to 999·6e-8 ≈ 6e-5 in the argument of sin/cos (torch's float32 does the
    # same); atol 2e-4 covers it, the other cases keep 1e-5.
    t = torch.tensor([0.0, 1.0, 10.0, 250.0, 999.0])
    add("sinusoidal", SinusoidalTimeEmbedding(16), [t], [16], "SinusoidalTimeEmbedding", atol=2e-4)
    add("sinusoidal_odd", SinusoidalTimeEmbedding(7, max_period=1000), [t], [7, {"max_period": 1000}],
        "SinusoidalTimeEmbedding", atol=2e-4)
    add("sinusoidal_flipped", SinusoidalTimeEmbedding(8, flip_sin_to_cos=True, freq_shift=0), [t],
        [8, {"flip_sin_to_cos": True, "freq_shift": 0}], "SinusoidalTimeEmbedding", atol=2e-4)


def model_cases():
    # the nested model of the brief: conv -> GroupNorm -> SiLU -> SelfAttention2d -> conv
    seq = tnn.Sequential(tnn.Conv2d(3, 32, 3, padding=1), tnn.GroupNorm(8, 32), tnn.SiLU(),
                         SelfAttention2d(32, heads=2), tnn.Conv2d(32, 3, 3, padding=1))
    add("model_sequential", seq, [randx(2, 3, 4, 4)], build="sequential")
    # named and nested: keys like "stem.0.weight", "down.1.conv.weight", "attn.qkv.weight"
    named = tnn.Sequential(collections.OrderedDict([
        ("stem", tnn.Sequential(tnn.Conv2d(2, 8, 3, padding=1), tnn.BatchNorm2d(8), tnn.ReLU())),
        ("down", tnn.Sequential(tnn.GroupNorm(4, 8), Downsample(8))),
        ("attn", SelfAttention2d(8, heads=2, groups=4)),
        ("up", tnn.Upsample(scale_factor=2)),
        ("head", tnn.Conv2d(8, 2, 1)),
    ]))
    add("model_named", named, [randx(2, 2, 4, 4)], build="named")


conv_cases()
linear_cases()
norm_cases()
activation_cases()
attention_cases()
resample_cases()
embedding_cases()
model_cases()
fx.write("fixtures_modules.py")

# how float32 torch fares against the stored answer under the tests' bound atol + rtol·|want|
# (1e-5 + 1e-4·|want| unless the case says otherwise): the ratio must stay below 1
ratios = []
for name, got, want in self_check:
    case = next(c for c in fx.cases if c["name"] == name)
    bound = case.get("atol", 1e-5) + case.get("rtol", 1e-4) * want.float().abs()
    ratios.append((((got - want.float()).abs() / bound).max().item(), name))
ratios.sort(reverse=True)
print("float32 torch vs stored answer, worst |diff| / bound: " + ", ".join("%s %.3g" % (n, r) for r, n in ratios[:4]))
