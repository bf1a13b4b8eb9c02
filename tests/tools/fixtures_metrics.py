#!/usr/bin/python3
"""fixtures_metrics.py — reference values for the metrics (engine/metrics.h, lua/cunet/metrics.lua),
written as a Lua table to tests/fixtures/metrics.lua and read by tests/lua/test_metrics.lua.

Run from anywhere:  /usr/bin/python3 tests/tools/fixtures_metrics.py
(Debian's python3-skimage, python3-scipy, python3-torch, python3-numpy.)

References, each called the way its users call it:
- SSIM: skimage.metrics.structural_similarity(im1, im2, gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=R[, channel_axis=0][, full=True]) on [H, W] or [C, H, W].
- PSNR: skimage.metrics.peak_signal_noise_ratio(im1, im2, data_range=R).
- MS-SSIM: pytorch-msssim 1.0 (VainF/pytorch-msssim, pytorch_msssim/ssim.py: _fspecial_gauss_1d,
  gaussian_filter, _ssim, ms_ssim), not packaged for Debian, so restated below from its source in
  float64 torch. One change: its `assert min(H, W) > (win_size - 1) * 2**4` is made
  `> (win_size - 1) * 2**(levels - 1)`, so fewer weights can be used on small images; wherever the
  package accepts an input the two agree.
- FID: pytorch-fid's calculate_frechet_distance (scipy.linalg.sqrtm of sigma1 @ sigma2, real part of
  the trace) on mu = mean(act, axis=0), sigma = np.cov(act, rowvar=False), as its
  calculate_activation_statistics does.
- KID: torchmetrics' KernelInceptionDistance.compute (poly_kernel, poly_mmd,
  maximum_mean_discrepancy; degree 3, gamma 1 / D, coef 1; mean and std(unbiased=False) over the
  subsets), restated in float64 torch on subsets whose indices are written into the fixture, since
  the engine draws its own (torchmetrics is not packaged for Debian).

Images are float32; 8-bit images are stored as integers (the Lua test divides by 255 in float32 for
the [0, 1] versions, as here). References are computed in float64 from those exact float32 values.
Feature sets are not stored: both sides generate them from an integer LCG (see `lcg_features`,
mirrored in test_metrics.lua), exactly representable in float32.
"""

import math
import os
import sys

import numpy as np
import scipy
import scipy.linalg
import skimage
import torch
import torch.nn.functional as F
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixture_util import FIXTURES, lua_value, tensor_spec  # noqa: E402

SEED = 20240611
MAX_BYTES = 1_500_000
WANG = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333]

rng = np.random.default_rng(SEED)
cases = []


def add(**case):
    assert all(c["name"] != case["name"] for c in cases), case["name"]
    cases.append(case)


def spec(a):
    """float32 array -> {shape=, data=} (torch tensor for fixture_util)."""
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


# ---- images ------------------------------------------------------------------------------------

def smooth_image(h, w, channels=1):
    """A smooth image in [0, 1]: random Gaussian blobs over a gradient, per channel."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    out = np.empty((channels, h, w))
    for c in range(channels):
        img = rng.uniform(0.2, 0.6) * (xx / w) + rng.uniform(0.0, 0.3) * (yy / h)
        for _ in range(6):
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            s = rng.uniform(0.08, 0.3) * min(h, w)
            img += rng.uniform(-0.6, 0.9) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
        img += 0.03 * rng.standard_normal((h, w))  # texture
        img -= img.min()
        out[c] = img / img.max()
    return out


def noisy(img, sigma, lo=0.0, hi=1.0):
    return np.clip(img + sigma * rng.standard_normal(img.shape), lo, hi)


def as_u8(img):
    return np.round(img * 255.0).astype(np.float32)  # integer values 0..255


def f32(a):
    return np.asarray(a, dtype=np.float32)


def skimage_ssim(a, b, data_range, full=False):
    """a, b: float32 [C, H, W]; grey images go to skimage as [H, W], colour with channel_axis=0."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=data_range, full=full)
    if a.shape[0] == 1:
        r = structural_similarity(a64[0], b64[0], **kw)
        return (r[0], r[1][None]) if full else r
    return structural_similarity(a64, b64, channel_axis=0, **kw)


def skimage_psnr(a, b, data_range):
    with np.errstate(divide="ignore"):  # identical images: inf, as skimage returns
        return peak_signal_noise_ratio(a.astype(np.float64), b.astype(np.float64), data_range=data_range)


def add_image_case(name, a, b, data_range, u8=False, with_map=False):
    """a, b: float32 [N, C, H, W]. u8: values are integers 0..255 and the Lua side divides them by
    255 first when data_range is 1 (the references then use the same float32 quotient)."""
    ua, ub = a, b
    if u8 and data_range == 1:
        a, b = f32(a) / np.float32(255), f32(b) / np.float32(255)
    ssim, psnr, maps = [], [], []
    for i in range(a.shape[0]):
        if with_map:
            v, m = skimage_ssim(a[i], b[i], data_range, full=True)
            maps.append(m)
        else:
            v = skimage_ssim(a[i], b[i], data_range)
        ssim.append(float(v))
        psnr.append(float(skimage_psnr(a[i], b[i], data_range)))
    case = dict(name=name, kind="image", data_range=data_range, u8=u8, inputs=[spec(ua), spec(ub)],
                ssim=ssim, psnr=psnr)
    if with_map:
        case["ssim_map"] = spec(np.stack(maps))
    add(**case)


# ---- MS-SSIM: pytorch-msssim 1.0 restated in float64 ----------------------------------------------

def _fspecial_gauss_1d(size, sigma):
    coords = torch.arange(size, dtype=torch.float64)
    coords -= size // 2
    g = torch.exp(-(coords ** 2) / (2 * sigma ** 2))
    g /= g.sum()
    return g.unsqueeze(0).unsqueeze(0)


def _gaussian_filter(x, win):
    c = x.shape[1]
    out = x
    for i, s in enumerate(x.shape[2:]):
        if s >= win.shape[-1]:
            out = F.conv2d(out, weight=win.transpose(2 + i, -1), stride=1, padding=0, groups=c)
        else:
            raise AssertionError("pytorch-msssim would skip smoothing here; the fixture avoids it")
    return out


def _ssim(x, y, data_range, win, k=(0.01, 0.03)):
    c1, c2 = (k[0] * data_range) ** 2, (k[1] * data_range) ** 2
    mu1, mu2 = _gaussian_filter(x, win), _gaussian_filter(y, win)
    mu1_sq, mu2_sq, mu1_mu2 = mu1.pow(2), mu2.pow(2), mu1 * mu2
    sigma1_sq = _gaussian_filter(x * x, win) - mu1_sq
    sigma2_sq = _gaussian_filter(y * y, win) - mu2_sq
    sigma12 = _gaussian_filter(x * y, win) - mu1_mu2
    cs_map = (2 * sigma12 + c2) / (sigma1_sq + sigma2_sq + c2)
    ssim_map = ((2 * mu1_mu2 + c1) / (mu1_sq + mu2_sq + c1)) * cs_map
    return torch.flatten(ssim_map, 2).mean(-1), torch.flatten(cs_map, 2).mean(-1)


def ms_ssim_ref(x, y, data_range, weights, win_size=11, win_sigma=1.5):
    """pytorch_msssim.ms_ssim(x, y, data_range, size_average=False, win_size, win_sigma, weights)."""
    x, y = torch.from_numpy(x).double(), torch.from_numpy(y).double()
    levels = len(weights)
    assert min(x.shape[-2:]) > (win_size - 1) * 2 ** (levels - 1)
    w = torch.tensor(weights, dtype=torch.float64)
    win = _fspecial_gauss_1d(win_size, win_sigma).repeat([x.shape[1]] + [1] * (x.dim() - 1))
    mcs = []
    for i in range(levels):
        ssim_per_channel, cs = _ssim(x, y, data_range, win)
        if i < levels - 1:
            mcs.append(torch.relu(cs))
            padding = [s % 2 for s in x.shape[2:]]
            x = F.avg_pool2d(x, kernel_size=2, padding=padding)
            y = F.avg_pool2d(y, kernel_size=2, padding=padding)
    ssim_per_channel = torch.relu(ssim_per_channel)
    mcs_and_ssim = torch.stack(mcs + [ssim_per_channel], dim=0)
    return torch.prod(mcs_and_ssim ** w.view(-1, 1, 1), dim=0).mean(1).tolist()


def add_ms_ssim_case(name, a, b, data_range, weights=None, scales=None, used=None, u8=False):
    """used: the weights the Lua side is expected to pick (defaults applied there)."""
    ua, ub = a, b
    if u8 and data_range == 1:
        a, b = f32(a) / np.float32(255), f32(b) / np.float32(255)
    w = used or weights or WANG
    case = dict(name=name, kind="ms_ssim", data_range=data_range, u8=u8, inputs=[spec(ua), spec(ub)],
                weights_used=w, ms_ssim=ms_ssim_ref(f32(a), f32(b), data_range, w))
    if weights:
        case["weights"] = weights
    if scales:
        case["scales"] = scales
    add(**case)


def renormalised(n):
    s = sum(WANG[:n])
    return [v / s for v in WANG[:n]]


# ---- features: an integer LCG both sides can run ----------------------------------------------------

MASK = (1 << 64) - 1


def lcg_features(seed, n, d, scale, mix, shift):
    """Rows x_j = (scale v_j + mix v_{(j+1) mod d} + shift (j mod 3)) / 64 with v the top 8 bits of
    a 64-bit LCG (Knuth's MMIX constants) started at seed, d draws per row: exact in float32."""
    state = seed & MASK
    out = np.empty((n, d), dtype=np.float64)
    for i in range(n):
        v = []
        for _ in range(d):
            state = (state * 6364136223846793005 + 1442695040888963407) & MASK
            v.append(state >> 56)
        for j in range(d):
            out[i, j] = (scale * v[j] + mix * v[(j + 1) % d] + shift * (j % 3)) / 64.0
    assert np.all(out.astype(np.float32) == out)
    return out


def pytorch_fid_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """pytorch-fid 0.3 calculate_frechet_distance, verbatim in substance."""
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    diff = mu1 - mu2
    covmean, _ = scipy.linalg.sqrtm(sigma1.dot(sigma2), disp=False)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError("Imaginary component {}".format(np.max(np.abs(covmean.imag))))
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def stats(act):
    return np.mean(act, axis=0), np.cov(act, rowvar=False)


def add_fid_case(name, gen_a, gen_b, with_stats=False):
    a, b = lcg_features(**gen_a), lcg_features(**gen_b)
    mu1, s1 = stats(a)
    mu2, s2 = stats(b)
    case = dict(name=name, kind="fid", gen_a=gen_a, gen_b=gen_b, fid=pytorch_fid_distance(mu1, s1, mu2, s2))
    if with_stats:
        case["mean_a"] = spec(mu1)
        case["cov_a"] = spec(s1)
    add(**case)


# torchmetrics.image.kid, restated (float64)
def poly_kernel(f1, f2, degree=3, gamma=None, coef=1.0):
    if gamma is None:
        gamma = 1.0 / f1.shape[1]
    return (f1 @ f2.T * gamma + coef) ** degree


def maximum_mean_discrepancy(k_xx, k_xy, k_yy):
    m = k_xx.shape[0]
    kt_xx_sum = (k_xx.sum(dim=-1) - torch.diag(k_xx)).sum()
    kt_yy_sum = (k_yy.sum(dim=-1) - torch.diag(k_yy)).sum()
    k_xy_sum = k_xy.sum(dim=0).sum()
    value = (kt_xx_sum + kt_yy_sum) / (m * (m - 1))
    value -= 2 * k_xy_sum / (m ** 2)
    return value


def poly_mmd(f_real, f_fake):
    return maximum_mean_discrepancy(poly_kernel(f_real, f_real), poly_kernel(f_real, f_fake),
                                    poly_kernel(f_fake, f_fake))


def mmd2_general(x, y):
    """The engine's definition for unequal sizes (equal sizes: torchmetrics' formula)."""
    m, n, d = x.shape[0], y.shape[0], x.shape[1]
    kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.sum() / (m * n))


def add_kid_case(name, gen_a, gen_b, subsets, subset_size):
    a, b = lcg_features(**gen_a), lcg_features(**gen_b)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    g = torch.Generator().manual_seed(SEED)
    idx_a, idx_b, values = [], [], []
    for _ in range(subsets):  # as KernelInceptionDistance.compute, real (a) first
        pa = torch.randperm(a.shape[0], generator=g)[:subset_size]
        pb = torch.randperm(b.shape[0], generator=g)[:subset_size]
        values.append(float(poly_mmd(ta[pa], tb[pb])))
        idx_a.append([int(i) + 1 for i in pa])  # 1-based, as the Lua API
        idx_b.append([int(i) + 1 for i in pb])
    kid = torch.tensor(values, dtype=torch.float64)
    case = dict(name=name, kind="kid", gen_a=gen_a, gen_b=gen_b, subset_size=subset_size,
                indices_a=idx_a, indices_b=idx_b, values=values, mean=float(kid.mean()),
                std=float(kid.std(unbiased=False)), mmd2_all=mmd2_general(a, b))
    if a.shape[0] == b.shape[0]:
        case["mmd2_all_torchmetrics"] = float(poly_mmd(ta, tb))
    add(**case)


# ---- the cases ------------------------------------------------------------------------------------

def build():
    # SSIM / PSNR: grey 28 x 28 in [0, 1] (floats), with the full map
    g28 = f32(smooth_image(28, 28))[None]
    add_image_case("grey28_noisy", g28, f32(noisy(g28, 0.1)), 1, with_map=True)
    add_image_case("grey28_identical", g28, g28.copy(), 1)
    add_image_case("grey28_blurred_and_dark", g28, f32(0.5 * g28 + 0.1 * noisy(g28, 0.3)), 1)
    # grey 64 x 64, 8-bit values, data ranges 255 (as is) and 1 (divided by 255)
    g64 = as_u8(smooth_image(64, 64))[None]
    g64n = as_u8(noisy(g64 / 255.0, 0.08))
    add_image_case("grey64_u8_range255", g64, g64n, 255, u8=True)
    add_image_case("grey64_u8_range1", g64, g64n, 1, u8=True)
    # RGB 32 x 32 (channel_axis): a batch of 3 with increasing noise; the map of one pair
    rgb = np.stack([as_u8(smooth_image(32, 32, 3)) for _ in range(3)])
    rgbn = np.stack([as_u8(noisy(rgb[i] / 255.0, s)) for i, s in enumerate([0.02, 0.1, 0.3])])
    add_image_case("rgb32_u8_batch_noisy", rgb, rgbn, 1, u8=True)
    add_image_case("rgb32_u8_map", rgb[1:2], rgbn[1:2], 1, u8=True, with_map=True)
    add_image_case("rgb32_u8_range255", rgb[:2], rgbn[1:3], 255, u8=True)
    # [-1, 1] images (a diffusion model's range), data range 2; and unrelated noise (SSIM near 0)
    add_image_case("grey28_range2", f32(2 * g28 - 1), f32(noisy(2 * g28 - 1, 0.2, -1, 1)), 2)
    add_image_case("noise32_u8_unrelated", as_u8(rng.uniform(0, 1, (2, 1, 32, 32))),
                   as_u8(rng.uniform(0, 1, (2, 1, 32, 32))), 1, u8=True)
    # a non-square odd size
    odd = f32(smooth_image(37, 23))[None]
    add_image_case("grey_odd_37x23", odd, f32(noisy(odd, 0.05)), 1)

    # MS-SSIM: five scales need min(H, W) > 160 with 11 taps; 170 x 181 pools odd sizes too
    big = as_u8(smooth_image(170, 181))[None]
    bign = as_u8(noisy(big / 255.0, 0.1))
    add_ms_ssim_case("ms_grey170x181_u8_range255", big, bign, 255, u8=True)
    # RGB 64 x 64: by default the three scales that fit, Wang's first three weights renormalised
    rgb64 = np.stack([as_u8(smooth_image(64, 64, 3)) for _ in range(2)])
    rgb64n = np.stack([as_u8(noisy(rgb64[i] / 255.0, s)) for i, s in enumerate([0.05, 0.2])])
    add_ms_ssim_case("ms_rgb64_default_3_scales", rgb64, rgb64n, 1, used=renormalised(3), u8=True)
    # 28 x 28 (MNIST): two scales by default
    add_ms_ssim_case("ms_grey28_default_2_scales", g28, f32(noisy(g28, 0.1)), 1, used=renormalised(2))
    # explicit weights on odd sizes (83 -> 42 -> 21, 77 -> 39 -> 20); an explicit scale count
    odd = as_u8(smooth_image(83, 77))[None]
    add_ms_ssim_case("ms_odd83x77_weights", odd, as_u8(noisy(odd / 255.0, 0.1)), 1, weights=[0.2, 0.3, 0.5],
                     u8=True)
    odd2 = as_u8(smooth_image(45, 37, 2))[None]
    add_ms_ssim_case("ms_odd45x37_scales2", odd2, as_u8(noisy(odd2 / 255.0, 0.15)), 255, scales=2,
                     used=renormalised(2), u8=True)

    # FID: D = 16, 64, 128; N = 200..2000
    add_fid_case("fid_d16", dict(seed=1, n=200, d=16, scale=1, mix=0, shift=0),
                 dict(seed=2, n=300, d=16, scale=1, mix=1, shift=8), with_stats=True)
    add_fid_case("fid_d64", dict(seed=3, n=1000, d=64, scale=2, mix=1, shift=0),
                 dict(seed=4, n=800, d=64, scale=1, mix=2, shift=5))
    add_fid_case("fid_d128", dict(seed=5, n=2000, d=128, scale=2, mix=1, shift=3),
                 dict(seed=6, n=1500, d=128, scale=1, mix=2, shift=0))
    add_fid_case("fid_d64_same_distribution", dict(seed=7, n=1200, d=64, scale=1, mix=2, shift=2),
                 dict(seed=8, n=1200, d=64, scale=1, mix=2, shift=2))
    add_fid_case("fid_d16_identical", dict(seed=9, n=500, d=16, scale=1, mix=3, shift=1),
                 dict(seed=9, n=500, d=16, scale=1, mix=3, shift=1))
    # v_j + v_{j+1} with d even: the alternating sum of the coordinates is 0, the covariance singular
    add_fid_case("fid_d32_singular_cov", dict(seed=10, n=400, d=32, scale=1, mix=1, shift=0),
                 dict(seed=15, n=300, d=32, scale=1, mix=2, shift=1))

    # KID: fixed subsets (torchmetrics' draw, indices stored), and whole sets
    add_kid_case("kid_d64", dict(seed=11, n=300, d=64, scale=1, mix=1, shift=0),
                 dict(seed=12, n=250, d=64, scale=1, mix=2, shift=1), subsets=5, subset_size=100)
    add_kid_case("kid_d32_equal_sizes", dict(seed=13, n=120, d=32, scale=2, mix=0, shift=0),
                 dict(seed=14, n=120, d=32, scale=1, mix=1, shift=4), subsets=3, subset_size=120)


def self_check():
    """The restated references agree with each other where they must."""
    x = f32(smooth_image(40, 40))[None]
    y = f32(noisy(x[0], 0.1))[None]
    one = ms_ssim_ref(x, y, 1, [1.0])[0]
    sk = skimage_ssim(x[0], y[0], 1)
    assert abs(one - sk) < 1e-12, (one, sk)  # one-scale MS-SSIM = skimage's cropped mean
    a = lcg_features(21, 50, 8, 1, 1, 0)
    b = lcg_features(22, 50, 8, 1, 0, 2)
    assert abs(mmd2_general(a, b) - float(poly_mmd(torch.from_numpy(a), torch.from_numpy(b)))) < 1e-12


def lua(v):
    """fixture_util.lua_value, but Python floats (the references, in double) with 17 digits so the
    Lua side reads back the same double; tensors stay float32 (%.9g is exact for those)."""
    if isinstance(v, float) and math.isfinite(v):
        return "0" if v == 0.0 else "%.17g" % v
    if isinstance(v, (list, tuple)):
        return "{" + ", ".join(lua(e) for e in v) + "}"
    if isinstance(v, dict):
        return "{" + ", ".join("%s=%s" % (k, lua(v[k])) for k in sorted(v)) + "}"
    if isinstance(v, torch.Tensor):
        return tensor_spec(v)
    return lua_value(v)


def write():
    path = os.path.join(FIXTURES, "metrics.lua")
    lines = [
        "-- metrics.lua — reference values for the metrics: scikit-image %s (SSIM, PSNR), SciPy %s"
        % (skimage.__version__, scipy.__version__),
        "-- (pytorch-fid's FID), PyTorch %s (pytorch-msssim 1.0's MS-SSIM, torchmetrics' KID, restated)."
        % torch.__version__,
        "-- Generated by tests/tools/fixtures_metrics.py (seed %d); do not edit by hand, regenerate." % SEED,
        "return {",
    ]
    for c in cases:
        lines.append("  " + lua(c) + ",")
    lines.append("}")
    text = "\n".join(lines) + "\n"
    if len(text) > MAX_BYTES:
        raise SystemExit("%s: %d bytes, over the %d limit" % (path, len(text), MAX_BYTES))
    with open(path, "w") as f:
        f.write(text)
    print("wrote %s: %d cases, %d bytes" % (path, len(cases), len(text)))


if __name__ == "__main__":
    self_check()
    build()
    write()
