#!/usr/bin/python3
"""fixtures_norm.py — PyTorch reference cases for the normalisation layers (engine/ops_norm.c),
written to tests/fixtures/nn_norm.lua and read by tests/lua/test_norm.lua.

Run from anywhere:  /usr/bin/python3 tests/tools/fixtures_norm.py   (Debian's python3-torch)

Format: see fixture_util.py. Each case has op = "group_norm" | "instance_norm" | "layer_norm" |
"batch_norm" and args mirroring the Lua call:
    group_norm     inputs {x [, weight, bias]}                args {num_groups=, eps=}
    instance_norm  inputs {x [, weight, bias]}                args {eps=}
    layer_norm     inputs {x [, weight, bias]}                args {normalized_shape={...}, eps=}
    batch_norm     inputs {x, running_mean, running_var [, weight, bias]}
                                                              args {training=, momentum=, eps=}
Every case has output (y), grad_output g and grads (d sum(g * y) / d input; false for the running
buffers). batch_norm training cases also have running_mean / running_var: the buffers' expected
values after the call (torch updates them in place; the running variance is unbiased).

Inputs are float32 (randn with a per-channel offset and scale, so the mean matters); expected
values are torch's float64 results from those exact float32 inputs, rounded to float32. The script
also reruns each case in float32 torch and prints how far that lands from the stored answer.
"""

import torch
import torch.nn.functional as F

from fixture_util import Fixture

F64 = torch.float64

fx = Fixture("nn_norm", seed=20240917, max_bytes=1_500_000)
self_check = []  # (name, float32 torch tensors, stored float64 tensors)


def randx(shape, offset=1.5, scale=2.0):
    """randn with a channel-dependent offset and scale (channels = dim 2 when there is one)."""
    x = torch.randn(*shape)
    if len(shape) >= 2:
        c = shape[1]
        view = [1, c] + [1] * (len(shape) - 2)
        x = x * torch.linspace(0.5, scale, c).reshape(view) + torch.linspace(-offset, offset, c).reshape(view)
    return x.float()


def run(fn, inputs, differentiable):
    """fn(*inputs) in float64 with grads of the differentiable inputs; returns y (f64), ins (f64)."""
    ins = [t.to(F64).clone().requires_grad_(d) for t, d in zip(inputs, differentiable)]
    return fn(*ins), ins


def add_case(name, op, args, inputs, differentiable, fn, extra=None):
    y, ins = run(fn, inputs, differentiable)
    g = torch.randn(y.shape).float()
    wanted = [t for t, d in zip(ins, differentiable) if d]
    got = torch.autograd.grad(y, wanted, g.to(F64))
    grads, k = [], 0
    for d in differentiable:
        grads.append(got[k] if d else False)
        k += 1 if d else 0
    case = dict(name=name, op=op, args=args, inputs=list(inputs), output=y, grad_output=g, grads=grads)
    stored = [y] + [t for t in got]
    if extra:
        for key, value in extra(ins).items():
            case[key] = value
            stored.append(value)
    fx.add(**case)
    # float32 torch on the same inputs, for the printed self-check
    ins32 = [t.clone().requires_grad_(d) for t, d in zip(inputs, differentiable)]
    y32 = fn(*ins32)
    got32 = torch.autograd.grad(y32, [t for t, d in zip(ins32, differentiable) if d], g)
    f32 = [y32] + list(got32)
    if extra:
        f32 += list(extra(ins32).values())
    self_check.append((name, f32, stored))


def affine(c, with_affine):
    if not with_affine:
        return []
    return [(torch.randn(c) * 0.5 + 1.0).float(), (torch.randn(c) * 0.5).float()]


# ---- group norm --------------------------------------------------------------------------------

def group_norm_case(name, shape, groups, with_affine, eps=1e-5):
    c = shape[1]
    inputs = [randx(shape)] + affine(c, with_affine)
    add_case(name, "group_norm", {"num_groups": groups, "eps": eps}, inputs, [True] * len(inputs),
             lambda x, *wb: F.group_norm(x, groups, *wb, eps=eps))


group_norm_case("group_norm_g1_affine", [2, 6, 5, 3], 1, True)
group_norm_case("group_norm_g1_plain", [3, 4, 3, 5], 1, False)
group_norm_case("group_norm_g2_affine", [3, 6, 7, 5], 2, True)
group_norm_case("group_norm_g2_plain", [2, 6, 5, 3], 2, False)
group_norm_case("group_norm_gC_affine", [2, 6, 3, 5], 6, True)
group_norm_case("group_norm_gC_plain", [2, 5, 7, 3], 5, False)
group_norm_case("group_norm_g32_c64", [2, 64, 5, 3], 32, True)
group_norm_case("group_norm_2d_g2_affine", [5, 6], 2, True)
group_norm_case("group_norm_2d_g1_plain", [4, 7], 1, False)
group_norm_case("group_norm_3d_g2", [3, 4, 9], 2, True)
group_norm_case("group_norm_5d_g3", [2, 6, 3, 3, 5], 3, True)
group_norm_case("group_norm_eps_1e-3", [2, 4, 3, 3], 2, True, eps=1e-3)

# ---- instance norm -----------------------------------------------------------------------------

def instance_norm_case(name, shape, with_affine, eps=1e-5):
    inputs = [randx(shape)] + affine(shape[1], with_affine)
    if with_affine:
        fn = lambda x, w, b: F.instance_norm(x, weight=w, bias=b, eps=eps)
    else:
        fn = lambda x: F.instance_norm(x, eps=eps)
    add_case(name, "instance_norm", {"eps": eps}, inputs, [True] * len(inputs), fn)


instance_norm_case("instance_norm_affine", [2, 3, 5, 7], True)
instance_norm_case("instance_norm_plain", [3, 4, 7, 3], False)
instance_norm_case("instance_norm_1d_affine", [2, 5, 9], True)

# ---- layer norm --------------------------------------------------------------------------------

def layer_norm_case(name, shape, ndims, with_affine, eps=1e-5):
    normalized = list(shape[len(shape) - ndims:])
    x = randx(shape)
    inputs = [x]
    if with_affine:
        inputs += [(torch.randn(normalized) * 0.5 + 1.0).float(), (torch.randn(normalized) * 0.5).float()]
    add_case(name, "layer_norm", {"normalized_shape": normalized, "eps": eps}, inputs, [True] * len(inputs),
             lambda x, *wb: F.layer_norm(x, normalized, *wb, eps=eps))


layer_norm_case("layer_norm_last_affine", [3, 4, 10], 1, True)
layer_norm_case("layer_norm_last_plain", [5, 16], 1, False)
layer_norm_case("layer_norm_3dims_affine", [2, 3, 5, 7], 3, True)
layer_norm_case("layer_norm_3dims_plain", [3, 4, 3, 5], 3, False)
layer_norm_case("layer_norm_all_dims", [4, 9], 2, True)

# ---- batch norm --------------------------------------------------------------------------------

def batch_norm_case(name, shape, training, with_affine, momentum=0.1, eps=1e-5):
    c = shape[1]
    rm = (torch.randn(c) * 0.3).float()
    rv = (torch.rand(c) + 0.5).float()
    inputs = [randx(shape), rm, rv] + affine(c, with_affine)
    differentiable = [True, False, False] + [True] * (len(inputs) - 3)

    def fn(x, m, v, *wb):
        return F.batch_norm(x, m, v, *wb, training=training, momentum=momentum, eps=eps)

    # fn updates m and v in place (training): run() hands it fresh float64 copies each time, and
    # extra() reads those copies back after the call
    extra = (lambda ins: {"running_mean": ins[1].detach(), "running_var": ins[2].detach()}) if training else None
    add_case(name, "batch_norm", {"training": training, "momentum": momentum, "eps": eps}, inputs,
             differentiable, fn, extra)


batch_norm_case("batch_norm_train_affine", [4, 3, 5, 7], True, True)
batch_norm_case("batch_norm_train_plain", [3, 4, 3, 5], True, False)
batch_norm_case("batch_norm_train_2d", [8, 5], True, True)
batch_norm_case("batch_norm_train_3d_momentum", [4, 6, 9], True, True, momentum=0.3, eps=1e-3)
batch_norm_case("batch_norm_eval_affine", [3, 4, 3, 5], False, True)
batch_norm_case("batch_norm_eval_2d_plain", [6, 5], False, False)


# ---- write, then self-check ----------------------------------------------------------------------

fx.write("fixtures_norm.py")
worst = (0.0, "")
for name, f32, stored in self_check:
    for a, b in zip(f32, stored):
        a, b = a.detach().to(F64), b.detach().to(F64).to(torch.float32).to(F64)
        e = ((a - b).abs() - 1e-6).clamp(min=0).div(b.abs().clamp(min=1e-30)).max().item()
        worst = max(worst, (e, name))
print("  float32 torch vs reference, worst rtol beyond atol 1e-6: %.2e (%s)" % worst)
