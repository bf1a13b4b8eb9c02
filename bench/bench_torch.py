"""bench/bench_torch.py — the PyTorch side of `make bench`: the cases of bench/bench.lua, case for
case (same shapes, same architectures, same timing method).

    /usr/bin/python3 bench/bench_torch.py [out.tsv]                    # the lone-op rows (lone/...)
    BENCH_PART=model /usr/bin/python3 bench/bench_torch.py [out.tsv]   # the whole models (model/...)

Lone ops: every case builds its inputs and parameters, runs a few warm-up iterations, then times
each of the next iterations: the forward pass alone (grad mode on), then y.backward(g) alone with
a fixed random g of y's shape. Gradients are dropped (set to None) between iterations, outside the
timed regions. A case reports the median of its timed iterations (at least BENCH_REPS, more for
cases that take under ~0.3 s). Warm-up: BENCH_WARMUP iterations (2), or one for a case whose
iteration takes over 0.5 s.

Whole models (bench/models.lua's cases, built by bench/models_torch.py from the fixture
generators' modules with the parameter counts of cunet's): "fwd" times model(x, t) in eval mode
under no_grad; "train" times, in train mode, loss = mse(model(x, t), eps) then loss.backward() and
one Adam step; repetitions as for the lone ops, except that a case whose iteration takes over 1 s
gets BENCH_SLOW_REPS (3). BENCH_TORCH_SETTING says how torch runs: "tuned" calls
torch.set_num_threads(cores) (bench/run.sh also preloads tcmalloc and sets OPENBLAS_NUM_THREADS=1),
"default" leaves torch as it starts.

Output: tab-separated "RESULT key op shape fwd_ms bwd_ms" (lone ops), "MODEL key label case shape
ms fwd_ms bwd_ms macs params trainable" (whole models; macs "-": cunet counts them) and "INFO name
value" lines, to the file named by the first argument, stdout otherwise; progress on stderr.

Environment: BENCH_PART (lone | model), BENCH_THREADS (2) for torch.set_num_threads in the lone-op
part, BENCH_TORCH_SETTING (tuned | default) in the model part, BENCH_REPS (5), BENCH_SLOW_REPS (3),
BENCH_WARMUP (2), BENCH_FILTER (only the cases whose key contains this string, or one of several
separated by commas), BENCH_MIN_TIME (0.3 s).
"""
import ctypes
import ctypes.util
import os
import re
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

THREADS = int(os.environ.get("BENCH_THREADS") or 2)
REPS = int(os.environ.get("BENCH_REPS") or 5)
WARMUP = int(os.environ.get("BENCH_WARMUP") or 2)
MIN_TIME = float(os.environ.get("BENCH_MIN_TIME") or 0.3)
SLOW_REPS = int(os.environ.get("BENCH_SLOW_REPS") or 3)
MAX_REPS = 50
SLOW = 0.5  # seconds per iteration above which one warm-up iteration is enough
VERY_SLOW = 1.0  # seconds per iteration above which SLOW_REPS timed iterations are enough
FILTER = [term for term in (os.environ.get("BENCH_FILTER") or "").split(",") if term]
PART = os.environ.get("BENCH_PART") or "lone"
SETTING = os.environ.get("BENCH_TORCH_SETTING") or "tuned"
if PART not in ("lone", "model") or SETTING not in ("tuned", "default"):
    raise SystemExit(f"bench: BENCH_PART must be lone or model (got {PART}), "
                     f"BENCH_TORCH_SETTING tuned or default (got {SETTING})")


def cores():
    return len(os.sched_getaffinity(0))


if PART == "lone":
    torch.set_num_threads(THREADS)
elif SETTING == "tuned":
    torch.set_num_threads(cores())
torch.manual_seed(0)

out = open(sys.argv[1], "w") if len(sys.argv) > 1 else sys.stdout


def info(name, value):
    out.write(f"INFO\t{name}\t{value}\n")


def openblas():
    """The OpenBLAS this process loaded (torch links it): core name, thread count."""
    for name in ("libopenblas.so.0", ctypes.util.find_library("openblas")):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
            lib.openblas_get_corename.restype = ctypes.c_char_p
            return lib.openblas_get_corename().decode(), lib.openblas_get_num_threads()
        except (OSError, AttributeError):
            continue
    return "?", "?"


def allocator():
    """tcmalloc when this process has it loaded (LD_PRELOAD), else glibc's malloc."""
    with open("/proc/self/maps") as f:
        return "tcmalloc" if "libtcmalloc" in f.read() else "glibc malloc"


core, blas_threads = openblas()
capability = re.search(r"CPU capability usage: (\S+)", torch.__config__.show())
info("torch_version", torch.__version__)
info("torch_openblas_core", core)
info("torch_threads", f"intra-op {torch.get_num_threads()}, OpenBLAS {blas_threads}")
info("torch_allocator", allocator())
info("torch_kernels", f"ATen {capability.group(1) if capability else '?'}, "
     f"oneDNN {'on' if torch.backends.mkldnn.is_available() else 'off'}")


# ---- measurement -----------------------------------------------------------------------------

def measure(forward, grads=(), backward=None, after=None, forward_only=False, total=False, slow_reps=False):
    """Median forward and backward ms (backward None when forward_only); with total=True also the
    median of the iterations' forward + backward. With slow_reps, a case whose iteration takes over
    1 s gets SLOW_REPS timed iterations."""
    g = None

    def do_backward(y):
        nonlocal g
        if backward is not None:
            return backward(y)
        if g is None:
            g = torch.randn_like(y)
        y.backward(g)

    def once():
        t0 = time.perf_counter()
        y = forward()
        t1 = time.perf_counter()
        tb = 0.0
        if not forward_only:
            do_backward(y)
            tb = time.perf_counter() - t1
        del y
        if after is not None:
            after()
        else:
            for t in grads:
                t.grad = None
        return t1 - t0, tb

    # warm-up: one iteration, and the rest of WARMUP only for cases faster than SLOW seconds
    f0, b0 = once()
    if f0 + b0 < SLOW:
        for _ in range(WARMUP - 1):
            once()
    # whole models over VERY_SLOW seconds an iteration: SLOW_REPS timed iterations (the median of 3)
    reps = min(REPS, SLOW_REPS) if slow_reps and f0 + b0 > VERY_SLOW else REPS
    fwd, bwd, spent = [], [], 0.0
    while len(fwd) < MAX_REPS and (len(fwd) < reps or spent < MIN_TIME):
        f, b = once()
        fwd.append(f)
        bwd.append(b)
        spent += f + b
    result = statistics.median(fwd) * 1e3, None if forward_only else statistics.median(bwd) * 1e3
    if total:
        result += (statistics.median([f + b for f, b in zip(fwd, bwd)]) * 1e3,)
    return result


def fmt(v):
    return "-" if v is None else f"{v:.4f}"


def report(key, op, shape, fwd_ms, bwd_ms):
    out.write(f"RESULT\t{key}\t{op}\t{shape}\t{fmt(fwd_ms)}\t{fmt(bwd_ms)}\n")
    out.flush()
    sys.stderr.write(f"  torch  {key:<36} {shape:<24} fwd {fmt(fwd_ms):>9} ms  bwd {fmt(bwd_ms):>9} ms\n")


cases = []


def case(*keys):
    """Registers a case under the keys of the rows it reports."""
    def register(fn):
        cases.append((keys, fn))
        return fn
    return register


def params_and(module, *tensors):
    return list(module.parameters()) + list(tensors)


# ---- single ops --------------------------------------------------------------------------------

def conv_case(c, hw, n):
    key = f"lone/conv3x3/c{c}/{hw}/n{n}"

    @case(key)
    def run():
        conv = nn.Conv2d(c, c, 3, padding=1)
        x = torch.randn(n, c, hw, hw, requires_grad=True)
        f, b = measure(lambda: conv(x), params_and(conv, x))
        report(key, "conv2d 3x3 pad 1", f"[{n},{c},{hw},{hw}] {c}->{c}", f, b)


for c in (32, 64, 128):
    for hw in (28, 14):
        for n in (1, 64):
            conv_case(c, hw, n)


def groupnorm_case(n, c, hw):
    key = f"lone/groupnorm/c{c}/{hw}/n{n}"

    @case(key)
    def run():
        gn = nn.GroupNorm(32, c)
        x = torch.randn(n, c, hw, hw, requires_grad=True)
        f, b = measure(lambda: gn(x), params_and(gn, x))
        report(key, "GroupNorm(32)", f"[{n},{c},{hw},{hw}]", f, b)


groupnorm_case(64, 64, 28)
groupnorm_case(64, 128, 14)


class SelfAttention2d(nn.Module):
    """The DDPM attention block as cunet's nn.SelfAttention2d: GroupNorm, 1×1 conv to q, k, v
    (channels [0,C), [C,2C), [2C,3C)), softmax(q kᵀ/√d) v over the H·W positions per head, 1×1
    projection, + x. torch 1.13 has no F.scaled_dot_product_attention: two matmuls and a softmax."""

    def __init__(self, channels, heads=1, groups=32):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        n, c, h, w = x.shape
        d = c // self.heads
        qkv = self.qkv(self.norm(x)).reshape(n, 3, self.heads, d, h * w)
        q = qkv[:, 0].transpose(2, 3)  # [N, heads, HW, d]
        k = qkv[:, 1].transpose(2, 3)
        v = qkv[:, 2].transpose(2, 3)
        p = torch.softmax(torch.matmul(q, k.transpose(2, 3)) * (1 / d ** 0.5), dim=-1)
        o = torch.matmul(p, v).transpose(2, 3).reshape(n, c, h, w)
        return x + self.proj(o)


def attention_case(hw):
    key = f"lone/attention/c64/{hw}/n64"

    @case(key)
    def run():
        attn = SelfAttention2d(64)
        x = torch.randn(64, 64, hw, hw, requires_grad=True)
        f, b = measure(lambda: attn(x), params_and(attn, x))
        report(key, "SelfAttention2d", f"[64,64,{hw},{hw}] 1 head", f, b)


attention_case(14)
attention_case(7)


@case("lone/linear/512/n64")
def linear_case():
    lin = nn.Linear(512, 512)
    x = torch.randn(64, 512, requires_grad=True)
    f, b = measure(lambda: lin(x), params_and(lin, x))
    report("lone/linear/512/n64", "Linear 512->512", "[64,512]", f, b)


# ---- one training step of a small U-Net (the architecture of bench/bench.lua) -------------------

class ConvGNAct(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm = nn.GroupNorm(8, cout)

    def forward(self, x):
        return F.silu(self.norm(self.conv(x)))


class SmallUNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.inc = nn.Conv2d(1, 32, 3, padding=1)
        self.enc1 = nn.Sequential(ConvGNAct(32, 32), ConvGNAct(32, 32))
        self.down1 = nn.Conv2d(32, 64, 3, stride=2, padding=1)
        self.enc2 = nn.Sequential(ConvGNAct(64, 64), ConvGNAct(64, 64))
        self.down2 = nn.Conv2d(64, 64, 3, stride=2, padding=1)
        self.mid = SelfAttention2d(64)
        self.up2 = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(64, 64, 3, padding=1))
        self.dec2 = ConvGNAct(128, 64)
        self.up1 = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(64, 32, 3, padding=1))
        self.dec1 = ConvGNAct(64, 32)
        self.out = nn.Conv2d(32, 1, 3, padding=1)

    def forward(self, x):
        h1 = self.enc1(self.inc(x))
        h2 = self.enc2(self.down1(h1))
        m = self.mid(self.down2(h2))
        u2 = self.dec2(torch.cat([self.up2(m), h2], 1))
        u1 = self.dec1(torch.cat([self.up1(u2), h1], 1))
        return self.out(u1)


@case("lone/unet_step/n64")
def unet_case():
    net = SmallUNet()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.randn(64, 1, 28, 28)
    target = torch.randn(64, 1, 28, 28)

    def backward(loss):
        loss.backward()
        opt.step()

    f, b = measure(lambda: F.mse_loss(net(x), target), backward=backward,
                   after=lambda: opt.zero_grad(set_to_none=True))
    report("lone/unet_step/n64", "U-Net train step (fwd; bwd+Adam)", "[64,1,28,28]", f, b)


# ---- ODE: RK4 over a conv block, written out as tensor ops (cunet: cn.odeint and a Lua loop) ----

ODE_STEPS = 4


def ode_setup():
    conv = nn.Conv2d(64, 64, 3, padding=1)
    gn = nn.GroupNorm(32, 64)

    def f(t, z):
        return F.softplus(gn(conv(z)))

    z0 = torch.randn(16, 64, 14, 14, requires_grad=True)
    return f, z0, list(conv.parameters()) + list(gn.parameters()) + [z0]


def rk4_by_hand(f, z, t0, t1, steps):
    h = (t1 - t0) / steps
    t = t0
    for _ in range(steps):
        k1 = f(t, z)
        k2 = f(t + h / 2, z + k1 * (h / 2))
        k3 = f(t + h / 2, z + k2 * (h / 2))
        k4 = f(t + h, z + k3 * h)
        z = z + (k1 + k2 * 2 + k3 * 2 + k4) * (h / 6)
        t += h
    return z


@case("lone/ode_rk4/odeint", "lone/ode_rk4/by_hand")
def ode_case():
    f, z0, grads = ode_setup()
    fwd, bwd = measure(lambda: rk4_by_hand(f, z0, 0.0, 1.0, ODE_STEPS), grads)
    # the same row serves both cunet rows (cn.odeint and the Lua loop): one reference
    report("lone/ode_rk4/odeint", "RK4 ODE, by hand in torch", "[16,64,14,14] 4 steps", fwd, bwd)
    report("lone/ode_rk4/by_hand", "RK4 ODE, by hand in torch", "[16,64,14,14] 4 steps", fwd, bwd)


@case("lone/ode_rk4/odeint_nograd", "lone/ode_rk4/by_hand_nograd")
def ode_nograd_case():
    f, z0, _ = ode_setup()

    def forward():
        with torch.no_grad():
            return rk4_by_hand(f, z0, 0.0, 1.0, ODE_STEPS)

    fwd, _ = measure(forward, forward_only=True)
    report("lone/ode_rk4/odeint_nograd", "RK4 ODE, by hand, no_grad", "[16,64,14,14] 4 steps", fwd, None)
    report("lone/ode_rk4/by_hand_nograd", "RK4 ODE, by hand, no_grad", "[16,64,14,14] 4 steps", fwd, None)


# ---- whole models (bench/models.lua, bench/models_torch.py) -------------------------------------------

def wanted(key):
    return not FILTER or any(term in key for term in FILTER)


def model_cases(m, selected):
    """The cases of one described model; the model is built once (with cunet's parameter counts)."""
    model = models_torch.build(m)
    total_params, trainable = models_torch.count(model)
    c, h, w = m["shape"]
    for cs in selected:
        n = cs["batch"]
        x, target = torch.randn(n, c, h, w), torch.randn(n, c, h, w)
        t = torch.randint(0, m["num_timesteps"], (n,))  # 0-based, as the PyTorch modules take it
        if cs["mode"] == "fwd":
            model.eval()

            def forward():
                with torch.no_grad():
                    return model(x, t)

            f, b, ms = measure(forward, forward_only=True, total=True, slow_reps=True)
        else:
            model.train()
            opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)

            def backward(loss):
                loss.backward()
                opt.step()

            f, b, ms = measure(lambda: F.mse_loss(model(x, t), target), backward=backward,
                               after=lambda: opt.zero_grad(set_to_none=True), total=True, slow_reps=True)
        shape = f"[{n},{c},{h},{w}]"
        what = "forward" if cs["mode"] == "fwd" else "train step"
        out.write(f"MODEL\t{cs['key']}\t{m['label']}\t{what}\t{shape}\t{ms:.4f}\t{f:.4f}\t{fmt(b)}\t-\t"
                  f"{total_params}\t{trainable}\n")
        out.flush()
        sys.stderr.write(f"  torch  {cs['key']:<36} {shape:<16} {ms:10.2f} ms ({SETTING})\n")


if PART == "lone":
    for keys, fn in cases:
        if any(wanted(key) for key in keys):
            fn()
else:
    import models_torch  # noqa: E402  (bench/models_torch.py: this script's directory is on sys.path)
    info("torch_setting", SETTING)
    desc = models_torch.describe()
    for m in desc["models"]:
        selected = [cs for cs in desc["cases"] if cs["model"] == m["name"] and wanted(cs["key"])]
        if selected:
            model_cases(m, selected)

if out is not sys.stdout:
    out.close()
