"""fixtures_optim.py — PyTorch reference runs for cunet.optim, written to tests/fixtures/optim.lua.

    /usr/bin/python3 tests/tools/fixtures_optim.py

A small model written with plain tensors (only ops the Lua API has: matmul, tanh, +, -, *, mean),

    loss = mean((tanh(x @ W1 + b1) @ W2 + b2 - y) * (... same ...))

on fixed data, is trained for 20 steps by each optimiser configuration below (SGD with momentum,
dampening, Nesterov and weight decay; Adam with weight decay and AMSGrad; AdamW), some with
torch.nn.utils.clip_grad_norm_ between backward and step. A fifth parameter `unused` takes no part
in the loss, so its .grad stays None and every optimiser must skip it (torch does). Stored: the
data, the initial parameters, each step's loss (and total grad norm when clipping), and the
parameters after steps 1, 5 and 20. Also: clip_grad_norm_ on fixed gradients for several norm
types, learning-rate values of torch's LambdaLR / CosineAnnealingLR for the cunet schedules, and
an EMA (LitEma of latent diffusion: decay_t = min(decay, (1 + n) / (10 + n))) over a short
sequence.

Everything runs in float32 on the CPU through torch's single-tensor (for-loop) optimiser path,
the default in torch 1.13. The script also reruns each training in float64 and prints how far the
float32 run lands from it: the size of float32 noise that any float32 implementation (cunet's
included) may differ by after 20 steps.
"""

import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixture_util import Fixture  # noqa: E402

SEED = 20240612
STEPS = 20
SNAPSHOTS = (1, 5, 20)
NAMES = ("W1", "b1", "W2", "b2", "unused")

# name, optimiser, options as the Lua API takes them, clipping {max_norm, norm_type} or None
CONFIGS = [
    ("sgd", "SGD", {"lr": 0.1}, None),
    ("sgd_momentum", "SGD", {"lr": 0.05, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01}, None),
    ("sgd_nesterov", "SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.001}, None),
    ("sgd_nesterov_clip", "SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True}, {"max_norm": 0.5, "norm_type": 2.0}),
    ("adam", "Adam", {"lr": 0.01}, None),
    ("adam_wd_amsgrad", "Adam", {"lr": 0.01, "betas": [0.8, 0.99], "eps": 1e-6, "weight_decay": 0.05,
                                 "amsgrad": True}, None),
    ("adam_clip", "Adam", {"lr": 0.02, "weight_decay": 0.01}, {"max_norm": 0.1, "norm_type": 2.0}),
    ("adamw", "AdamW", {"lr": 0.01, "weight_decay": 0.1}, None),
    ("adamw_amsgrad", "AdamW", {"lr": 0.005, "amsgrad": True}, None),
    ("adamw_clip_inf", "AdamW", {"lr": 0.01, "weight_decay": 0.05}, {"max_norm": 0.05, "norm_type": math.inf}),
    ("sgd_clip_1", "SGD", {"lr": 0.2, "momentum": 0.5}, {"max_norm": 0.3, "norm_type": 1.0}),
]


def make_model():
    x = torch.randn(16, 4)
    y = torch.tanh(x @ torch.randn(4, 3)) + 0.1 * torch.randn(16, 3)
    params = [torch.randn(4, 8) * 0.5, torch.randn(8) * 0.1, torch.randn(8, 3) * 0.5, torch.randn(3) * 0.1,
              torch.randn(2)]
    return x, y, params


def loss_fn(x, y, p):
    d = torch.tanh(x @ p[0] + p[1]) @ p[2] + p[3] - y
    return (d * d).mean()


def make_optimizer(kind, params, opts):
    o = dict(opts)
    if "betas" in o:
        o["betas"] = tuple(o["betas"])
    cls = {"SGD": torch.optim.SGD, "Adam": torch.optim.Adam, "AdamW": torch.optim.AdamW}[kind]
    return cls(params, **o)


def train(x, y, init, kind, opts, clip, dtype):
    params = [p.clone().to(dtype).requires_grad_(True) for p in init]
    x, y = x.to(dtype), y.to(dtype)
    opt = make_optimizer(kind, params, opts)
    losses, norms, snaps = [], [], []
    for step in range(1, STEPS + 1):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(x, y, params)
        loss.backward()
        if clip:
            norms.append(float(torch.nn.utils.clip_grad_norm_(params, clip["max_norm"], clip["norm_type"])))
        opt.step()
        losses.append(float(loss))
        if step in SNAPSHOTS:
            snaps.append({"step": step, "params": [p.detach().float().clone() for p in params]})
    assert params[4].grad is None
    return losses, norms, snaps


def rel_dev(a, b):
    return max(((u - v).abs() / (v.abs() + 1e-6)).max().item() for u, v in zip(a, b))


def clip_cases(fx):
    grads = [torch.randn(3, 4), torch.randn(5), torch.randn(2, 2, 2) * 3]
    for norm_type in (2.0, 1.0, math.inf, 3.0):
        for max_norm in (0.5, 1e4):
            ps = [torch.zeros_like(g, requires_grad=True) for g in grads]
            for p, g in zip(ps, grads):
                p.grad = g.clone()
            total = torch.nn.utils.clip_grad_norm_(ps, max_norm, norm_type)
            fx.add(name="clip_p%s_max%g" % ("inf" if norm_type == math.inf else "%g" % norm_type, max_norm),
                   kind="clip", norm_type=norm_type, max_norm=max_norm, grads=list(grads),
                   total_norm=float(total), clipped=[p.grad.clone() for p in ps])


def lambda_lrs(lr, factor, n):
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def cosine_lrs(lr, t_max, eta_min, n):
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t_max, eta_min=eta_min)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def schedule_cases(fx):
    # lrs[s] is the learning rate of the s-th optimiser step (1-based), i.e. torch's epoch s - 1
    lr, warmup = 0.1, 5
    fx.add(name="schedule_linear_warmup", kind="schedule", schedule="linear_warmup", lr=lr, warmup=warmup,
           lrs=lambda_lrs(lr, lambda e: min(1.0, (e + 1) / warmup), 12))
    fx.add(name="schedule_cosine", kind="schedule", schedule="cosine", lr=lr, total=12, warmup=0, min_lr=0.0,
           lrs=cosine_lrs(lr, 12, 0.0, 12))
    total, warmup, min_lr = 20, 4, 1e-3
    lrs = lambda_lrs(lr, lambda e: (e + 1) / warmup, warmup) + cosine_lrs(lr, total - warmup, min_lr, total - warmup)
    fx.add(name="schedule_cosine_warmup", kind="schedule", schedule="cosine", lr=lr, total=total, warmup=warmup,
           min_lr=min_lr, lrs=lrs)


def ema_cases(fx):
    seq = [torch.randn(3, 4)]
    for _ in range(11):
        seq.append(seq[-1] + 0.3 * torch.randn(3, 4))
    bias = [torch.randn(4)]
    for _ in range(11):
        bias.append(bias[-1] + 0.3 * torch.randn(4))
    for warmup in (True, False):
        decay = 0.9
        shadow = [seq[0].clone(), bias[0].clone()]  # shadow copies made at construction
        num_updates, out = 0, []
        for k in range(1, len(seq)):
            params = [seq[k], bias[k]]
            num_updates += 1
            d = min(decay, (1 + num_updates) / (10 + num_updates)) if warmup else decay
            for s, p in zip(shadow, params):
                s.sub_((1.0 - d) * (s - p))
            out.append([s.clone() for s in shadow])
        fx.add(name="ema_warmup" if warmup else "ema_plain", kind="ema", decay=decay, warmup=warmup,
               weights=list(seq), biases=list(bias), shadows=out)
    # lucidrains' ema_pytorch (EMA.update as the paper's authors' trainer calls it after every step): a
    # step counter, folds on every `every`-th call only, copies up to update_after_step and on the first
    # fold past it (its `initted`), then the inverse-decay warmup capped at beta. Small values so that
    # 11 calls cover every branch: copies at calls 0 and 3, averages at 6 and 9 (the last capped by beta).
    beta, every, after, power, inv_gamma = 0.7, 3, 2, 2.0 / 3.0, 1.0
    shadow = [seq[0].clone(), bias[0].clone()]  # the deep copy of the model made at construction
    step, initted, out, decays = 0, False, [], []
    for k in range(1, len(seq)):
        online = [seq[k], bias[k]]
        s = step
        step += 1
        d = None  # the decay this call folds with (None: it does not fold; 0: a copy)
        if s % every == 0:
            if s <= after:
                for e, p in zip(shadow, online):
                    e.copy_(p)
                d = 0.0
            else:
                first = not initted
                if first:
                    for e, p in zip(shadow, online):
                        e.copy_(p)
                    initted = True
                epoch = max(step - after - 1, 0)
                d = 0.0 if epoch <= 0 else min(max(1 - (1 + epoch / inv_gamma) ** -power, 0.0), beta)
                for e, p in zip(shadow, online):
                    e.sub_((1.0 - d) * (e - p))
                if first:
                    d = 0.0  # copied, then averaged with itself
        decays.append(d)
        out.append([x.clone() for x in shadow])
    fx.add(name="ema_pytorch_inverse", kind="ema", decay=beta, warmup=False, power=power, inv_gamma=inv_gamma,
           every=every, after=after, decays=[-1.0 if d is None else d for d in decays],
           weights=list(seq), biases=list(bias), shadows=out)


def main():
    fx = Fixture("optim", seed=SEED)
    x, y, init = make_model()
    fx.add(name="model", kind="model", x=x, y=y, params=list(init), names=list(NAMES))
    for name, kind, opts, clip in CONFIGS:
        losses, norms, snaps = train(x, y, init, kind, opts, clip, torch.float32)
        l64, n64, s64 = train(x, y, init, kind, opts, clip, torch.float64)
        dev = max(rel_dev(a["params"], b["params"]) for a, b in zip(snaps, s64))
        print("%-18s loss %.4f -> %.4f; float32 vs float64 params: max rel dev %.2e" %
              (name, losses[0], losses[-1], dev))
        case = {"name": name, "kind": "train", "optimizer": kind, "options": opts, "losses": losses,
                "snapshots": snaps}
        if clip:
            case["clip"] = clip
            case["norms"] = norms
        fx.add(**case)
    clip_cases(fx)
    schedule_cases(fx)
    ema_cases(fx)
    fx.write(os.path.basename(__file__))


if __name__ == "__main__":
    main()
