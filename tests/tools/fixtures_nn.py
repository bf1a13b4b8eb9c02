#!/usr/bin/python3
"""fixtures_nn.py — PyTorch reference cases for the neural-network functional ops (engine/ops_nn.h),
written to tests/fixtures/nn_functional.lua and read by tests/lua/test_nn.lua.

Run from anywhere:  /usr/bin/python3 tests/tools/fixtures_nn.py   (Debian's python3-torch)

Format: see fixture_util.py. Each case is
    {name=, op=, args={...}, inputs={...}, output=, grad_output=, grads={... | false}}
with these ops and input orders:
    linear          inputs {x, w[, b]}
    softmax, log_softmax   inputs {x}; args.dim (1-based)
    sdpa            inputs {q, k, v[, mask]}; args.scale (absent: 1/sqrt(d))
    embedding       inputs {ids (1-based, as floats), weight}
    mse_loss, l1_loss      inputs {input, target}; args.reduction
    cross_entropy   inputs {logits, target[, weight]}; args.reduction, args.ignore_index,
                    args.label_smoothing. Class-id targets and ignore_index are 1-based (Lua's
                    numbering: torch's + 1); a target with the logits' shape holds probabilities.
Dropout has no torch reference (its RNG differs); test_nn.lua checks it by statistics instead.

Inputs are float32 drawn from a fixed seed. Expected outputs and gradients are computed by torch in
float64 from those exact float32 inputs (torch 1.13 has no F.scaled_dot_product_attention, so
attention is written out: softmax(q k^T scale + mask) v), then rounded to float32 on writing.
"""

import math
import os
import sys
import warnings

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixture_util import Fixture  # noqa: E402

F32, F64 = torch.float32, torch.float64

fx = Fixture("nn_functional", seed=20240705, max_bytes=1_500_000)


def randn(*shape, scale=1.0):
    return (torch.randn(tuple(shape), dtype=F32) * scale).to(F32)


def add_case(name, op, fn, inputs, grad_mask, args=None, lua_inputs=None):
    """Runs fn on float64 copies of the float32 inputs; records output and the gradients of the
    inputs whose grad_mask entry is true (a random upstream gradient). lua_inputs, when given,
    replaces the inputs as written (e.g. 1-based ids)."""
    xs = []
    for t, g in zip(inputs, grad_mask):
        if t.dtype == torch.int64:
            xs.append(t)
        else:
            x = t.to(F32).to(F64)
            xs.append(x.requires_grad_(bool(g)))
    out = fn(*xs)
    gout = randn(*out.shape).to(F64)
    wanted = [x for x, g in zip(xs, grad_mask) if g]
    grads = torch.autograd.grad(out, wanted, gout, allow_unused=True) if wanted else []
    it = iter(grads)
    glist = []
    for x, g in zip(xs, grad_mask):
        if not g:
            glist.append(False)
            continue
        gr = next(it)
        glist.append(gr if gr is not None else torch.zeros_like(x))
    written = lua_inputs if lua_inputs is not None else inputs
    fx.add(name=name, op=op, args=args or {}, inputs=[t.to(F32) for t in written], output=out,
           grad_output=gout, grads=glist)


# ---- linear ------------------------------------------------------------------------------------

def linear_cases():
    w, b = randn(3, 6), randn(3)
    add_case("linear_2d_bias", "linear", F.linear, [randn(4, 6), w, b], [1, 1, 1])
    add_case("linear_2d_nobias", "linear", F.linear, [randn(4, 6), w], [1, 1])
    add_case("linear_3d_bias", "linear", F.linear, [randn(2, 3, 6), randn(5, 6), randn(5)], [1, 1, 1])
    add_case("linear_3d_nobias", "linear", F.linear, [randn(2, 3, 6), randn(5, 6)], [1, 1])
    add_case("linear_1d_bias", "linear", F.linear, [randn(6), w, b], [1, 1, 1])
    add_case("linear_one_feature", "linear", F.linear, [randn(5, 1), randn(1, 1), randn(1)], [1, 1, 1])


# ---- softmax, log_softmax ----------------------------------------------------------------------

def softmax_cases():
    x = randn(3, 4, 5)
    big = randn(3, 4, 5, scale=1000.0)
    holes = randn(3, 4, 5)
    holes[0, 1, 2] = holes[2, 0, 4] = holes[1, 3, 0] = -math.inf  # not whole lanes along any dim
    for op, fn in (("softmax", F.softmax), ("log_softmax", F.log_softmax)):
        for dim in range(3):
            add_case("%s_dim%d" % (op, dim + 1), op, lambda t, d=dim, f=fn: f(t, dim=d), [x], [1],
                     args={"dim": dim + 1})
            add_case("%s_large_dim%d" % (op, dim + 1), op, lambda t, d=dim, f=fn: f(t, dim=d), [big], [1],
                     args={"dim": dim + 1})
        add_case("%s_dim_neg1" % op, op, lambda t, f=fn: f(t, dim=-1), [x], [1], args={"dim": -1})
        add_case("%s_neg_inf_dim2" % op, op, lambda t, f=fn: f(t, dim=1), [holes], [1], args={"dim": 2})
        add_case("%s_1d" % op, op, lambda t, f=fn: f(t, dim=0), [randn(7)], [1], args={"dim": 1})


# ---- scaled dot-product attention --------------------------------------------------------------

def sdpa(q, k, v, mask=None, scale=None):
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    s = torch.matmul(q, k.transpose(-1, -2)) * scale
    if mask is not None:
        s = s + mask
    return torch.matmul(torch.softmax(s, dim=-1), v)


def sdpa_cases():
    add_case("sdpa_basic", "sdpa", sdpa, [randn(2, 5, 4), randn(2, 7, 4), randn(2, 7, 3)], [1, 1, 1])
    causal = torch.zeros(5, 7)
    for i in range(5):
        causal[i, i + 3:] = -math.inf
    add_case("sdpa_mask_scale", "sdpa", lambda q, k, v, m: sdpa(q, k, v, m, scale=0.3),
             [randn(2, 5, 4), randn(2, 7, 4), randn(2, 7, 3), causal], [1, 1, 1, 0], args={"scale": 0.3})
    # batch dims broadcast: q [2, 3, ...] (batch, heads), k shared across the batch, v without batch
    # dims; a finite mask per batch element, broadcast over heads, that takes a gradient
    add_case("sdpa_broadcast_mask_grad", "sdpa", sdpa,
             [randn(2, 3, 4, 8), randn(1, 3, 6, 8), randn(3, 6, 5), randn(2, 1, 4, 6)], [1, 1, 1, 1])
    add_case("sdpa_single_key", "sdpa", sdpa, [randn(3, 2, 2), randn(3, 1, 2), randn(3, 1, 1)], [1, 1, 1])
    add_case("sdpa_2d", "sdpa", sdpa, [randn(3, 4), randn(6, 4), randn(6, 2)], [1, 1, 1])
    row_mask = torch.zeros(1, 6)
    row_mask[0, 1] = row_mask[0, 4] = -math.inf
    add_case("sdpa_key_mask_long", "sdpa", sdpa,
             [randn(2, 9, 16), randn(2, 6, 16), randn(2, 6, 16), row_mask], [1, 1, 1, 0])


# ---- embedding ---------------------------------------------------------------------------------

def embedding_cases():
    w = randn(5, 4)
    ids = torch.tensor([[0, 3, 3], [4, 0, 1]])
    add_case("embedding_2d_ids", "embedding", lambda i, W: F.embedding(i, W), [ids, w], [0, 1],
             lua_inputs=[(ids + 1).to(F32), w])
    ids1 = torch.tensor([2, 2, 2, 0, 6, 6])
    w1 = randn(7, 3)
    add_case("embedding_1d_ids_repeats", "embedding", lambda i, W: F.embedding(i, W), [ids1, w1], [0, 1],
             lua_inputs=[(ids1 + 1).to(F32), w1])


# ---- mse, l1 -----------------------------------------------------------------------------------

def pointwise_cases():
    a, b = randn(3, 4), randn(3, 4)
    b[0, 0] = a[0, 0]  # a tie: l1's gradient there is 0
    for op, fn in (("mse_loss", F.mse_loss), ("l1_loss", F.l1_loss)):
        for red in ("mean", "sum", "none"):
            add_case("%s_%s" % (op, red), op, lambda x, y, f=fn, r=red: f(x, y, reduction=r), [a, b], [1, 1],
                     args={"reduction": red})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about broadcasting in losses; we allow it
            add_case("%s_broadcast_mean" % op, op, lambda x, y, f=fn: f(x, y), [randn(3, 4), randn(4)], [1, 1],
                     args={"reduction": "mean"})


# ---- cross entropy -----------------------------------------------------------------------------

def ce_case(name, logits, target, weight=None, reduction="mean", ignore_index=None, smoothing=0.0):
    probs = target.dtype != torch.int64
    inputs = [logits, target] + ([weight] if weight is not None else [])
    mask = [1, 1 if probs else 0] + ([0] if weight is not None else [])
    args = {"reduction": reduction}
    kw = {"reduction": reduction, "label_smoothing": smoothing}
    if ignore_index is not None:
        args["ignore_index"] = ignore_index + 1
        kw["ignore_index"] = ignore_index
    if smoothing:
        args["label_smoothing"] = smoothing

    def fn(x, t, w=None):
        return F.cross_entropy(x, t, weight=w, **kw)

    lua_target = target.to(F32) if probs else (target + 1).to(F32)
    add_case(name, "cross_entropy", fn, inputs, mask, args=args,
             lua_inputs=[logits, lua_target] + ([weight] if weight is not None else []))


def ce_cases():
    n, c = 6, 5
    logits = randn(n, c, scale=2.0)
    target = torch.tensor([0, 4, 2, 2, 1, 3])
    weight = (torch.rand(c) + 0.5).to(F32)
    for red in ("mean", "sum", "none"):
        ce_case("ce_" + red, logits, target, reduction=red)
        ce_case("ce_weight_" + red, logits, target, weight=weight, reduction=red)
        ce_case("ce_weight_ignore_smooth_" + red, logits, target, weight=weight, reduction=red,
                ignore_index=2, smoothing=0.1)
    ce_case("ce_ignore_mean", logits, target, ignore_index=2)
    ce_case("ce_weight_ignore_mean", logits, target, weight=weight, ignore_index=2)
    ce_case("ce_smooth_mean", logits, target, smoothing=0.2)
    ce_case("ce_smooth_sum", logits, target, reduction="sum", smoothing=0.2)
    ce_case("ce_weight_smooth_mean", logits, target, weight=weight, smoothing=0.25)
    # [N, C, d1, d2]
    x4 = randn(2, 4, 3, 2)
    t4 = torch.randint(0, 4, (2, 3, 2))
    t4[0, 1, 1] = 1
    w4 = (torch.rand(4) + 0.5).to(F32)
    ce_case("ce_spatial_mean", x4, t4)
    ce_case("ce_spatial_weight_smooth_none", x4, t4, weight=w4, reduction="none", smoothing=0.1)
    ce_case("ce_spatial_weight_ignore_mean", x4, t4, weight=w4, ignore_index=1)
    ce_case("ce_spatial_weight_ignore_smooth_sum", x4, t4, weight=w4, reduction="sum", ignore_index=1,
            smoothing=0.3)
    # class probabilities (target with the logits' shape), also differentiable
    probs = torch.softmax(randn(4, 5), dim=1).to(F32)
    ce_case("ce_probs_mean", randn(4, 5), probs)
    ce_case("ce_probs_weight_smooth_none", randn(4, 5), probs, weight=weight, reduction="none", smoothing=0.1)
    ce_case("ce_probs_spatial_sum", x4, torch.softmax(randn(2, 4, 3, 2), dim=1).to(F32), reduction="sum")
    # one unbatched sample: logits [C], target 0-d
    ce_case("ce_unbatched", randn(c), torch.tensor(3))
    ce_case("ce_unbatched_none_smooth", randn(c), torch.tensor(0), reduction="none", smoothing=0.1)


def main():
    linear_cases()
    softmax_cases()
    sdpa_cases()
    embedding_cases()
    pointwise_cases()
    ce_cases()
    fx.write(os.path.basename(__file__))


if __name__ == "__main__":
    main()
