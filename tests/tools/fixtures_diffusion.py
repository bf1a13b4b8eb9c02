#!/usr/bin/python3
"""fixtures_diffusion.py — reference values for cunet.diffusion, written to tests/fixtures/diffusion.lua.

    /usr/bin/python3 tests/tools/fixtures_diffusion.py

Everything is computed here, from the papers' formulas, in torch float64; nothing is read from
lua/cunet/diffusion.lua. Read by tests/lua/test_diffusion.lua.

Timestep convention (the one trap here). cunet counts diffusion timesteps from 1 like every
index: t = 1..T, beta[t] is the noise added by step t, alpha_bar[t] = prod_{s<=t} (1 - beta[s]),
alpha_bar[0] = 1 (clean data). Python code (Ho et al., improved-diffusion, DDIM, diffusers,
denoising-diffusion-pytorch) stores the same arrays 0-based: their betas[i] is our beta[i + 1],
their timestep tau is our t = tau + 1, and the DDIM code's "next timestep -1" (alpha_bar = 1) is
our t_prev = 0. So a Python array element [i] is written here at 1-based index i + 1.

Cases (field `op`):
  schedule        the four named schedules at T = 1000 (and linear at T = 10): every beta, every
                  alpha_bar, alpha_bar_T, every posterior variance
                  beta~_t = beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)
                  - linear         Ho et al. 2020: np.linspace(1e-4, 0.02, T)
                  - cosine         Nichol & Dhariwal 2021 (improved-diffusion betas_for_alpha_bar):
                                   f(u) = cos((u + s) / (1 + s) * pi / 2)^2, s = 0.008,
                                   beta_t = min(1 - f(t/T) / f((t-1)/T), 0.999)
                  - scaled_linear  diffusers: linspace(sqrt(0.00085), sqrt(0.012), T)^2
                  - sigmoid        denoising-diffusion-pytorch sigmoid_beta_schedule(T, start=-3,
                                   end=3, tau=1): alpha_bar from a shifted sigmoid, clipped at 0.999
  q_sample        x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) noise, t a number or one t per example
  v_target        v = sqrt(ab_t) eps - sqrt(1 - ab_t) x0 (Salimans & Ho 2022)
  split_prediction the model output (eps, x0 or v) turned into (eps, x0) given x_t
  ddpm_step       Eq. 2 of the paper (Ho et al. Algorithm 2):
                  x_{t-1} = (x_t - beta_t / sqrt(1 - ab_t) eps) / sqrt(alpha_t) + sigma_t z,
                  sigma_t^2 = beta_t ("beta") or beta~_t ("posterior"); no noise at t = 1
  ddim_step       Song et al. 2021 Eq. 12 with eta; t_prev = 0 means alpha_bar_prev = 1
  ddim_timesteps  the descending list of t visited by DDIM with S steps:
                  - uniform:   the DDIM code (ermongroup/ddim, skip_type "uniform"):
                               tau_i = i * (T // S), i.e. range(0, T, T // S), and t_i = tau_i + 1.
                               cunet takes tau_i = floor(i * T / S), i = 0..S-1: identical when S
                               divides T (asserted below), and exactly S steps when it does not
                               (range(0, T, T // S) then has more than S elements).
                  - quadratic: the DDIM code's skip_type "quad":
                               tau_i = int(np.linspace(0, sqrt(0.8 T), S)[i] ** 2), t_i = tau_i + 1,
                               duplicates dropped (the DDIM code would take a t -> t step there,
                               which with eta = 0 leaves x unchanged).
                  - trailing:  denoising-diffusion-pytorch's ddim_sample (the paper authors' code):
                               times = linspace(-1, T - 1, S + 1) (float32, as there), int(),
                               reversed; the pairs (tau, tau_next) end at -1. In 1-based t:
                               t_j = floor(j * T / S), j = S..1, starting at T (asserted for every
                               case below).
                  The first element is the first t the model is evaluated at, the last step goes
                  to t_prev = 0.

Inputs (x0, noise, x_t, eps, z, model outputs) are float32 draws from torch.manual_seed(SEED);
the expected outputs are computed in float64 from those exact float32 values and stored rounded
to float32 (%.9g, as fixture_util writes every number), so they are correctly rounded answers.
"""

import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixture_util import Fixture  # noqa: E402

SEED = 20240614
F64 = torch.float64
SHAPE = (3, 2, 3, 3)  # N = 3 examples


# ---- schedules (float64) -----------------------------------------------------------------------

def betas_linear(T, start=1e-4, end=0.02):
    return torch.linspace(start, end, T, dtype=F64)


def betas_scaled_linear(T, start=0.00085, end=0.012):
    return torch.linspace(start ** 0.5, end ** 0.5, T, dtype=F64) ** 2


def betas_cosine(T, s=0.008, max_beta=0.999):
    u = torch.arange(T + 1, dtype=F64) / T
    f = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    return torch.clamp(1 - f[1:] / f[:-1], max=max_beta)


def betas_sigmoid(T, start=-3.0, end=3.0, tau=1.0, max_beta=0.999):
    # denoising-diffusion-pytorch's sigmoid_beta_schedule, with v_start and v_end in float64
    # (that code builds them with torch.tensor(start / tau), a float32 0-d tensor: see main()).
    u = torch.linspace(0, T, T + 1, dtype=F64) / T
    v_start = torch.tensor(start / tau, dtype=F64).sigmoid()
    v_end = torch.tensor(end / tau, dtype=F64).sigmoid()
    ab = (-((u * (end - start) + start) / tau).sigmoid() + v_end) / (v_end - v_start)
    ab = ab / ab[0]
    return torch.clip(1 - ab[1:] / ab[:-1], 0, max_beta)


def betas_sigmoid_as_published(T, start=-3, end=3, tau=1):
    """The function exactly as denoising-diffusion-pytorch has it (float32 sigmoid constants)."""
    steps = T + 1
    t = torch.linspace(0, T, steps, dtype=torch.float64) / T
    v_start = torch.tensor(start / tau).sigmoid()
    v_end = torch.tensor(end / tau).sigmoid()
    alphas_cumprod = (-((t * (end - start) + start) / tau).sigmoid() + v_end) / (v_end - v_start)
    alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
    betas = 1 - (alphas_cumprod[1:] / alphas_cumprod[:-1])
    return torch.clip(betas, 0, 0.999)


MAKERS = {
    "linear": betas_linear,
    "cosine": betas_cosine,
    "scaled_linear": betas_scaled_linear,
    "sigmoid": betas_sigmoid,
}


class Schedule:
    """betas[1..T] kept 0-based as torch does; the helpers take 1-based t."""

    def __init__(self, betas):
        self.T = betas.numel()
        self.betas = betas
        self.alphas = 1 - betas
        self.alpha_bar = torch.cumprod(self.alphas, 0)
        ab_prev = torch.cat([torch.ones(1, dtype=F64), self.alpha_bar[:-1]])
        self.posterior_variance = betas * (1 - ab_prev) / (1 - self.alpha_bar)

    def beta(self, t):
        return self.betas[t - 1].item()

    def alpha(self, t):
        return self.alphas[t - 1].item()

    def ab(self, t):
        """alpha_bar at 1-based t, alpha_bar[0] = 1."""
        return 1.0 if t == 0 else self.alpha_bar[t - 1].item()

    def ab_per_example(self, t, n):
        """alpha_bar as a [N, 1, 1, 1] tensor for a number t or a list of N timesteps."""
        ts = [t] * n if isinstance(t, int) else list(t)
        return torch.tensor([self.ab(k) for k in ts], dtype=F64).view(n, 1, 1, 1)


def named(kind, T=1000):
    return Schedule(MAKERS[kind](T))


# ---- the DDIM timestep lists (descending, 1-based) -------------------------------------------------

def dedupe_descending(ts):
    seen, out = set(), []
    for t in sorted(ts, reverse=True):
        if t not in seen:
            seen.add(t)
            out.append(t)
    return out


def ddim_uniform(T, S):
    taus = [(i * T) // S for i in range(S)]
    if T % S == 0:
        assert taus == list(range(0, T, T // S)), (T, S)  # the DDIM code's list
    return dedupe_descending([tau + 1 for tau in taus])


def ddim_quadratic(T, S):
    seq = np.linspace(0, np.sqrt(T * 0.8), S) ** 2  # the DDIM code, verbatim
    return dedupe_descending([int(s) + 1 for s in seq])


def ddim_trailing(T, S):
    # verbatim: torch.linspace's default float32 (in float64, -1 + 18 * 1000 / 30 lands on 598.99...)
    times = torch.linspace(-1, T - 1, steps=S + 1)
    times = list(reversed(times.int().tolist()))  # [T - 1, ..., -1], 0-based as that code
    assert times[-1] == -1
    ts = dedupe_descending([tau + 1 for tau in times[:-1]])
    assert ts == [(j * T) // S for j in range(S, 0, -1)], (T, S)  # = floor(j T / S) exactly
    return ts


# ---- the steps (float64 on float32 inputs) -------------------------------------------------------------

def f64(x):
    return x.to(torch.float32).to(F64)


def q_sample(s, x0, t, noise):
    ab = s.ab_per_example(t, x0.shape[0])
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def split_prediction(s, x_t, t, out, prediction):
    ab = s.ab_per_example(t, x_t.shape[0])
    sa, sb = ab.sqrt(), (1 - ab).sqrt()
    if prediction == "eps":
        eps = out
        x0 = (x_t - sb * eps) / sa
    elif prediction == "x0":
        x0 = out
        eps = (x_t - sa * x0) / sb
    else:  # v = sa eps - sb x0 and x_t = sa x0 + sb eps, solved for eps and x0
        eps = sa * out + sb * x_t
        x0 = sa * x_t - sb * out
    return eps, x0


def ddpm_step(s, x_t, t, eps, z, variance):
    mean = (x_t - s.beta(t) / math.sqrt(1 - s.ab(t)) * eps) / math.sqrt(s.alpha(t))
    if t == 1:
        return mean
    var = s.beta(t) if variance == "beta" else s.posterior_variance[t - 1].item()
    return mean + math.sqrt(var) * z


def ddim_step(s, x_t, t, t_prev, eps, z, eta):
    ab, ab_prev = s.ab(t), s.ab(t_prev)
    x0 = (x_t - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
    sigma = eta * math.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev))
    direction = math.sqrt(1 - ab_prev - sigma ** 2) * eps
    return math.sqrt(ab_prev) * x0 + direction + sigma * z, x0


# ---- main ----------------------------------------------------------------------------------------------

def main():
    fx = Fixture("diffusion", seed=SEED)

    for kind in ("linear", "cosine", "scaled_linear", "sigmoid"):
        s = named(kind)
        fx.add(name="schedule_" + kind, op="schedule", args={"kind": kind, "T": 1000},
               beta=s.betas.tolist(), alpha_bar=s.alpha_bar.tolist(), alpha_bar_T=s.ab(1000),
               posterior_variance=s.posterior_variance.tolist())
    s = Schedule(betas_linear(10))
    fx.add(name="schedule_linear_T10", op="schedule", args={"kind": "linear", "T": 10},
           beta=s.betas.tolist(), alpha_bar=s.alpha_bar.tolist(), alpha_bar_T=s.ab(10),
           posterior_variance=s.posterior_variance.tolist())

    # how far the published sigmoid code (float32 constants) is from the float64 formula
    pub, ours = betas_sigmoid_as_published(1000), betas_sigmoid(1000)
    rel = ((pub - ours).abs() / ours).max().item()
    print("sigmoid: published code (float32 sigmoid(+-3)) vs float64 formula: max relative beta "
          "difference %.2e (at t = %d)" % (rel, int(((pub - ours).abs() / ours).argmax()) + 1))

    x0 = f64(torch.randn(SHAPE))
    noise = f64(torch.randn(SHAPE))
    x_t = f64(torch.randn(SHAPE))
    eps = f64(torch.randn(SHAPE))
    z = f64(torch.randn(SHAPE))
    out = f64(torch.randn(SHAPE))

    for kind in ("linear", "cosine"):
        s = named(kind)
        for t in (1, 2, 250, 999, 1000, [1, 500, 1000]):
            tag = "per_example" if isinstance(t, list) else str(t)
            fx.add(name="q_sample_%s_%s" % (kind, tag), op="q_sample", args={"schedule": kind, "t": t},
                   inputs=[x0, noise], output=q_sample(s, x0, t, noise))
            fx.add(name="v_target_%s_%s" % (kind, tag), op="v_target", args={"schedule": kind, "t": t},
                   inputs=[x0, noise],
                   output=s.ab_per_example(t, 3).sqrt() * noise - (1 - s.ab_per_example(t, 3)).sqrt() * x0)
            for prediction in ("eps", "x0", "v"):
                e, x = split_prediction(s, x_t, t, out, prediction)
                fx.add(name="split_%s_%s_%s" % (prediction, kind, tag), op="split_prediction",
                       args={"schedule": kind, "t": t, "prediction": prediction},
                       inputs=[x_t, out], outputs=[e, x])

    for kind in ("linear", "cosine", "sigmoid"):
        s = named(kind)
        for t in (1, 2, 3, 500, 999, 1000):
            for variance in ("beta", "posterior"):
                fx.add(name="ddpm_%s_%d_%s" % (kind, t, variance), op="ddpm_step",
                       args={"schedule": kind, "t": t, "variance": variance},
                       inputs=[x_t, eps, z], output=ddpm_step(s, x_t, t, eps, z, variance))

    for kind in ("linear", "cosine"):
        s = named(kind)
        for t, t_prev in ((1000, 980), (981, 961), (1000, 500), (21, 1), (2, 1), (1, 0), (500, 0), (1000, 0)):
            for eta in (0.0, 0.5, 1.0):
                x_prev, x0_pred = ddim_step(s, x_t, t, t_prev, eps, z, eta)
                fx.add(name="ddim_%s_%d_%d_eta%g" % (kind, t, t_prev, eta), op="ddim_step",
                       args={"schedule": kind, "t": t, "t_prev": t_prev, "eta": eta},
                       inputs=[x_t, eps, z], outputs=[x_prev, x0_pred])

    makers = {"uniform": ddim_uniform, "quadratic": ddim_quadratic, "trailing": ddim_trailing}
    for T in (1000, 100, 7):
        for S in (1, 2, 3, 7, 10, 11, 30, 50, 100, 256, 999, 1000):
            if S > T:
                continue
            for spacing, maker in makers.items():
                fx.add(name="ddim_timesteps_%s_T%d_S%d" % (spacing, T, S), op="ddim_timesteps",
                       args={"T": T, "steps": S, "spacing": spacing}, timesteps=maker(T, S))

    fx.write("fixtures_diffusion.py")


if __name__ == "__main__":
    main()
