#!/usr/bin/python3
"""fixtures_unet.py — PyTorch reference cases for the U-Nets of lua/cunet/models/unet.lua, written to
tests/fixtures/unet.lua and read by tests/lua/test_unet.lua.

Run from anywhere:  /usr/bin/python3 tests/tools/fixtures_unet.py   (Debian's python3-torch)

The two architectures are written below in plain PyTorch, independently of the Lua code, after
the published sources, with their module names (so the state_dict keys are theirs):

  HoUNet    Ho et al. 2020, diffusion_tf/models/unet.py as ported by pesser/pytorch_diffusion
            (model.py: Model, ResnetBlock, AttnBlock, Downsample with (0,1,0,1) padding, ...)
  LucidUnet lucidrains/denoising-diffusion-pytorch v1.8.3, denoising_diffusion_pytorch.py: Unet,
            ResnetBlock/Block with scale-shift, RMSNorm, LinearAttention, Attention (Attend without
            flash), Downsample = einops pixel-unshuffle + 1x1 conv (written here with reshape/permute)

Each case is a *tiny* configuration (ch 32, multipliers (1, 2), attention at the lower level, 8x8
inputs): the U-Net option table the Lua side builds from (config=), torch's state_dict, the input,
the timesteps, the output, and the gradients of sum(g * output) for an upstream g: with respect to
the input and to every parameter of at most 128 elements.

The weights are "seeded" with a counter-based integer hash instead of torch's RNG, so the fixture
stores how to make them, not the 0.7 and 0.8 M numbers of the two cases (the file stays far below 2 MB): entry number k of
the state_dict (1-based, in torch's order) holds

    w[i] = offset + amp * (2 * u(k, i) - 1),   i = 0 .. numel-1 (row-major),
    u(k, i) = (mix(mix(k * 0x9E3779B9) + i) >> 8) / 2^24,   mix = Wellons' lowbias32 on 32 bits,

computed in float64 and rounded to float32, which Lua reproduces bit for bit (integer arithmetic,
one multiplication and one addition in double; offset and amp are float32 numbers, which
the fixture's %.9g writes exactly). amp is PyTorch's default bound 1/sqrt(fan_in) for
conv and linear weights and biases; norm weights are 1 +- 0.2 and norm biases +- 0.2. Each entry
also carries the float64 sum of its float32 values, so a mismatch in the generator shows up as
such. The inputs x are torch.randn from a seeded generator, stored as float32.

Expected values are the float64 computation on those float32 numbers, with one exception that
every float32 implementation shares: the sinusoidal embedding's arguments t * omega are float32
products of float32 frequencies in the published code (and here, and in Lua), and at t ~ 1000 the
float32 spacing there is ~6e-5, far above the tolerance; the reference therefore rounds omega and
t * omega to float32 as they do, and computes everything after (sin, cos, the network) in float64.
The script reruns each case in float32 and prints how far float32 torch lands from the stored answer.

Timesteps are 0-based here, as in the PyTorch code; the fixture stores them 1-based (t + 1), as the
Lua U-Net takes them.
"""

import math

import numpy as np
import torch
import torch.nn as tnn
import torch.nn.functional as F

from fixture_util import Fixture

F64 = torch.float64
fx = Fixture("unet", seed=20241130, max_bytes=2_000_000)


# ---- the sinusoidal timestep embedding (shared by both: log(10000) / (half - 1), sines first) -------

def timestep_embedding(t, dim):
    """t: [N] 0-based steps. omega and t*omega rounded to float32 (see the module docstring)."""
    half = dim // 2
    omega = torch.exp(-math.log(10000) * torch.arange(half, dtype=F64) / (half - 1)).float()
    args = (t.float().reshape(-1, 1) * omega.reshape(1, -1)).to(F64)
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2 == 1:
        emb = F.pad(emb, (0, 1))
    return emb


# ---- Ho et al. (pesser/pytorch_diffusion names) -------------------------------------------------------

def ho_norm(c, groups=32):
    return tnn.GroupNorm(groups, c, eps=1e-6)


class HoResnetBlock(tnn.Module):
    def __init__(self, cin, cout, temb_ch, dropout, groups=32):
        super().__init__()
        self.cin, self.cout = cin, cout
        self.norm1 = ho_norm(cin, groups)
        self.conv1 = tnn.Conv2d(cin, cout, 3, padding=1)
        self.temb_proj = tnn.Linear(temb_ch, cout)
        self.norm2 = ho_norm(cout, groups)
        self.dropout = tnn.Dropout(dropout)
        self.conv2 = tnn.Conv2d(cout, cout, 3, padding=1)
        if cin != cout:
            self.nin_shortcut = tnn.Conv2d(cin, cout, 1)

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if self.cin != self.cout:
            x = self.nin_shortcut(x)
        return x + h


class HoAttnBlock(tnn.Module):
    def __init__(self, c, groups=32):
        super().__init__()
        self.norm = ho_norm(c, groups)
        self.q = tnn.Conv2d(c, c, 1)
        self.k = tnn.Conv2d(c, c, 1)
        self.v = tnn.Conv2d(c, c, 1)
        self.proj_out = tnn.Conv2d(c, c, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        hn = self.norm(x)
        q = self.q(hn).reshape(b, c, h * w).permute(0, 2, 1)
        k = self.k(hn).reshape(b, c, h * w)
        att = torch.softmax(torch.bmm(q, k) * c ** -0.5, dim=2)          # [b, i, j]
        v = self.v(hn).reshape(b, c, h * w)
        o = torch.bmm(v, att.permute(0, 2, 1)).reshape(b, c, h, w)      # o[c, i] = sum_j v[c, j] att[i, j]
        return x + self.proj_out(o)


class HoDownsample(tnn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = tnn.Conv2d(c, c, 3, stride=2, padding=0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class HoUpsample(tnn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = tnn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class HoUNet(tnn.Module):
    def __init__(self, ch, ch_mult, num_res_blocks, attn_resolutions, dropout, in_channels, out_ch, resolution,
                 groups=32):
        super().__init__()
        self.ch, self.nres, self.nrb = ch, len(ch_mult), num_res_blocks
        temb_ch = 4 * ch
        self.temb = tnn.Module()
        self.temb.dense = tnn.ModuleList([tnn.Linear(ch, temb_ch), tnn.Linear(temb_ch, temb_ch)])
        self.conv_in = tnn.Conv2d(in_channels, ch, 3, padding=1)
        res, in_mult = resolution, (1,) + tuple(ch_mult)
        self.down = tnn.ModuleList()
        for i in range(self.nres):
            block, attn = tnn.ModuleList(), tnn.ModuleList()
            bin_, bout = ch * in_mult[i], ch * ch_mult[i]
            for _ in range(num_res_blocks):
                block.append(HoResnetBlock(bin_, bout, temb_ch, dropout, groups))
                bin_ = bout
                if res in attn_resolutions:
                    attn.append(HoAttnBlock(bin_, groups))
            down = tnn.Module()
            down.block, down.attn = block, attn
            if i != self.nres - 1:
                down.downsample = HoDownsample(bin_)
                res //= 2
            self.down.append(down)
        self.mid = tnn.Module()
        self.mid.block_1 = HoResnetBlock(bin_, bin_, temb_ch, dropout, groups)
        self.mid.attn_1 = HoAttnBlock(bin_, groups)
        self.mid.block_2 = HoResnetBlock(bin_, bin_, temb_ch, dropout, groups)
        self.up = tnn.ModuleList()
        for i in reversed(range(self.nres)):
            block, attn = tnn.ModuleList(), tnn.ModuleList()
            bout, skip = ch * ch_mult[i], ch * ch_mult[i]
            for j in range(num_res_blocks + 1):
                if j == num_res_blocks:
                    skip = ch * in_mult[i]
                block.append(HoResnetBlock(bin_ + skip, bout, temb_ch, dropout, groups))
                bin_ = bout
                if res in attn_resolutions:
                    attn.append(HoAttnBlock(bin_, groups))
            up = tnn.Module()
            up.block, up.attn = block, attn
            if i != 0:
                up.upsample = HoUpsample(bin_)
                res *= 2
            self.up.insert(0, up)
        self.norm_out = ho_norm(bin_, groups)
        self.conv_out = tnn.Conv2d(bin_, out_ch, 3, padding=1)

    def forward(self, x, t):
        temb = timestep_embedding(t, self.ch).to(x.dtype)
        temb = self.temb.dense[1](F.silu(self.temb.dense[0](temb)))
        hs = [self.conv_in(x)]
        for i in range(self.nres):
            for j in range(self.nrb):
                h = self.down[i].block[j](hs[-1], temb)
                if len(self.down[i].attn) > 0:
                    h = self.down[i].attn[j](h)
                hs.append(h)
            if i != self.nres - 1:
                hs.append(self.down[i].downsample(hs[-1]))
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(hs[-1], temb)), temb)
        for i in reversed(range(self.nres)):
            for j in range(self.nrb + 1):
                h = self.up[i].block[j](torch.cat([h, hs.pop()], dim=1), temb)
                if len(self.up[i].attn) > 0:
                    h = self.up[i].attn[j](h)
            if i != 0:
                h = self.up[i].upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


# ---- lucidrains v1.8.3 ----------------------------------------------------------------------------------

class RMSNorm(tnn.Module):
    def __init__(self, dim):
        super().__init__()
        self.g = tnn.Parameter(torch.ones(1, dim, 1, 1))

    def forward(self, x):
        return F.normalize(x, dim=1) * self.g * (x.shape[1] ** 0.5)


class SinusoidalPosEmb(tnn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, t):
        return timestep_embedding(t, self.dim)


class Block(tnn.Module):
    def __init__(self, dim, dim_out, groups=8):
        super().__init__()
        self.proj = tnn.Conv2d(dim, dim_out, 3, padding=1)
        self.norm = tnn.GroupNorm(groups, dim_out)
        self.act = tnn.SiLU()

    def forward(self, x, scale_shift=None):
        x = self.norm(self.proj(x))
        if scale_shift is not None:
            scale, shift = scale_shift
            x = x * (scale + 1) + shift
        return self.act(x)


class LucidResnetBlock(tnn.Module):
    def __init__(self, dim, dim_out, time_emb_dim, groups=8):
        super().__init__()
        self.mlp = tnn.Sequential(tnn.SiLU(), tnn.Linear(time_emb_dim, dim_out * 2))
        self.block1 = Block(dim, dim_out, groups)
        self.block2 = Block(dim_out, dim_out, groups)
        self.res_conv = tnn.Conv2d(dim, dim_out, 1) if dim != dim_out else tnn.Identity()

    def forward(self, x, time_emb):
        scale_shift = self.mlp(time_emb)[:, :, None, None].chunk(2, dim=1)
        h = self.block2(self.block1(x, scale_shift=scale_shift))
        return h + self.res_conv(x)


def split_heads(t, heads):
    """'b (h c) x y -> b h c (x y)'"""
    b, hc, x, y = t.shape
    return t.reshape(b, heads, hc // heads, x * y)


class LinearAttention(tnn.Module):
    def __init__(self, dim, heads=4, dim_head=32):
        super().__init__()
        self.scale, self.heads = dim_head ** -0.5, heads
        hidden = dim_head * heads
        self.norm = RMSNorm(dim)
        self.to_qkv = tnn.Conv2d(dim, hidden * 3, 1, bias=False)
        self.to_out = tnn.Sequential(tnn.Conv2d(hidden, dim, 1), RMSNorm(dim))

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = (split_heads(t, self.heads) for t in self.to_qkv(self.norm(x)).chunk(3, dim=1))
        q = q.softmax(dim=-2) * self.scale
        k = k.softmax(dim=-1)
        context = torch.einsum("bhdn,bhen->bhde", k, v)
        out = torch.einsum("bhde,bhdn->bhen", context, q)
        return self.to_out(out.reshape(b, -1, h, w))


class Attention(tnn.Module):
    def __init__(self, dim, heads=4, dim_head=32):
        super().__init__()
        self.heads = heads
        hidden = dim_head * heads
        self.norm = RMSNorm(dim)
        self.to_qkv = tnn.Conv2d(dim, hidden * 3, 1, bias=False)
        self.to_out = tnn.Conv2d(hidden, dim, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        # 'b (h c) x y -> b h (x y) c'
        q, k, v = (split_heads(t, self.heads).transpose(2, 3) for t in self.to_qkv(self.norm(x)).chunk(3, dim=1))
        sim = torch.einsum("bhid,bhjd->bhij", q, k) * q.shape[-1] ** -0.5
        out = torch.einsum("bhij,bhjd->bhid", sim.softmax(dim=-1), v)
        # 'b h (x y) d -> b (h d) x y'
        return self.to_out(out.transpose(2, 3).reshape(b, -1, h, w))


class PixelUnshuffle(tnn.Module):
    """einops Rearrange('b c (h p1) (w p2) -> b (c p1 p2) h w', p1=2, p2=2)"""

    def forward(self, x):
        b, c, h, w = x.shape
        return x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, c * 4, h // 2, w // 2)


def LucidDownsample(dim, dim_out):
    return tnn.Sequential(PixelUnshuffle(), tnn.Conv2d(dim * 4, dim_out, 1))


def LucidUpsample(dim, dim_out):
    return tnn.Sequential(tnn.Upsample(scale_factor=2, mode="nearest"), tnn.Conv2d(dim, dim_out, 3, padding=1))


class LucidUnet(tnn.Module):
    def __init__(self, dim, dim_mults, channels, full_attn, groups=8):
        super().__init__()
        self.init_conv = tnn.Conv2d(channels, dim, 7, padding=3)
        dims = [dim] + [dim * m for m in dim_mults]
        in_out = list(zip(dims[:-1], dims[1:]))
        time_dim = dim * 4
        self.time_mlp = tnn.Sequential(SinusoidalPosEmb(dim), tnn.Linear(dim, time_dim), tnn.GELU(),
                                       tnn.Linear(time_dim, time_dim))
        self.downs, self.ups = tnn.ModuleList([]), tnn.ModuleList([])
        n = len(in_out)
        for ind, ((din, dout), full) in enumerate(zip(in_out, full_attn)):
            last = ind >= n - 1
            self.downs.append(tnn.ModuleList([
                LucidResnetBlock(din, din, time_dim, groups),
                LucidResnetBlock(din, din, time_dim, groups),
                (Attention if full else LinearAttention)(din),
                LucidDownsample(din, dout) if not last else tnn.Conv2d(din, dout, 3, padding=1)]))
        mid = dims[-1]
        self.mid_block1 = LucidResnetBlock(mid, mid, time_dim, groups)
        self.mid_attn = Attention(mid)
        self.mid_block2 = LucidResnetBlock(mid, mid, time_dim, groups)
        for ind, ((din, dout), full) in enumerate(zip(reversed(in_out), reversed(full_attn))):
            last = ind == n - 1
            self.ups.append(tnn.ModuleList([
                LucidResnetBlock(dout + din, dout, time_dim, groups),
                LucidResnetBlock(dout + din, dout, time_dim, groups),
                (Attention if full else LinearAttention)(dout),
                LucidUpsample(dout, din) if not last else tnn.Conv2d(dout, din, 3, padding=1)]))
        self.final_res_block = LucidResnetBlock(dim * 2, dim, time_dim, groups)
        self.final_conv = tnn.Conv2d(dim, channels, 1)

    def forward(self, x, time):
        x = self.init_conv(x)
        r = x.clone()
        sinusoid, lin1, gelu, lin2 = self.time_mlp  # the embedding is float64 (see timestep_embedding)
        t = lin2(gelu(lin1(sinusoid(time).to(x.dtype))))
        h = []
        for block1, block2, attn, downsample in self.downs:
            x = block1(x, t)
            h.append(x)
            x = block2(x, t)
            x = attn(x) + x
            h.append(x)
            x = downsample(x)
        x = self.mid_block1(x, t)
        x = self.mid_attn(x) + x
        x = self.mid_block2(x, t)
        for block1, block2, attn, upsample in self.ups:
            x = block1(torch.cat((x, h.pop()), dim=1), t)
            x = block2(torch.cat((x, h.pop()), dim=1), t)
            x = attn(x) + x
            x = upsample(x)
        x = self.final_res_block(torch.cat((x, r), dim=1), t)
        return self.final_conv(x)


# ---- hashed weights ----------------------------------------------------------------------------------

M32 = np.uint64(0xFFFFFFFF)


def mix(x):
    """Wellons' lowbias32 on uint64 arrays holding 32-bit values."""
    x = x & M32
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(0x7FEB352D)) & M32
    x ^= x >> np.uint64(15)
    x = (x * np.uint64(0x846CA68B)) & M32
    x ^= x >> np.uint64(16)
    return x


def hashed_uniform(salt, n):
    base = mix(np.array([salt * 0x9E3779B9], dtype=np.uint64))[0]
    u = mix(base + np.arange(n, dtype=np.uint64)) >> np.uint64(8)
    return u.astype(np.float64) / 16777216.0


NORMS = (tnn.GroupNorm, RMSNorm)


def seed_weights(model):
    """Fills every state_dict entry from the hash; returns [[key, shape, offset, amp, salt, sum], ...]."""
    owner = {}
    for mname, m in model.named_modules():
        for pname, _ in m.named_parameters(recurse=False):
            owner[(mname + "." if mname else "") + pname] = m
    recipe = []
    with torch.no_grad():
        for k, (key, p) in enumerate(model.state_dict().items(), start=1):
            m = owner[key]
            leaf = key.rsplit(".", 1)[1]
            if isinstance(m, NORMS):
                offset, amp = (1.0, 0.2) if leaf in ("weight", "g") else (0.0, 0.2)
            else:  # conv / linear weight and bias: PyTorch's default bound
                offset, amp = 0.0, 1.0 / math.sqrt(m.weight[0].numel())
            amp = float(np.float32(amp))  # written with %.9g, read back exactly
            values = offset + amp * (2.0 * hashed_uniform(k, p.numel()) - 1.0)
            p.copy_(torch.from_numpy(values.astype(np.float32)).reshape(p.shape))
            recipe.append([key, list(p.shape), offset, amp, k, float(p.to(F64).sum())])
    return recipe


# ---- cases --------------------------------------------------------------------------------------------

self_check = []


def add_case(name, config, model, x, t0, rtol=1e-4, atol=1e-5):
    model.eval()
    recipe = seed_weights(model)
    g = torch.randn(model(x, t0).shape)

    m64 = model.to(F64)
    x64 = x.to(F64).requires_grad_(True)
    y = m64(x64, t0)
    small = [(k, p) for k, p in m64.named_parameters() if p.numel() <= 128]
    grads = torch.autograd.grad(y, [x64] + [p for _, p in small], g.to(F64))

    m32 = model.float()
    self_check.append((name, m32(x, t0).detach(), y.detach()))
    fx.add(name=name, config=config, params=recipe, num_params=sum(p.numel() for p in model.parameters()),
           x=x, t=[int(v) + 1 for v in t0], output=y.detach(), grad_output=g, grad_x=grads[0],
           param_grads=[[k, gp] for (k, _), gp in zip(small, grads[1:])], rtol=rtol, atol=atol)


t0 = torch.tensor([0, 499, 999])  # 0-based: the Lua side takes 1, 500, 1000

ddpm = HoUNet(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), dropout=0.1, in_channels=1,
              out_ch=1, resolution=8)
add_case("ddpm_tiny",
         dict(arch="ddpm", in_channels=1, resolution=8, ch=32, ch_mult=[1, 2], num_res_blocks=1,
              attn_resolutions=[4], dropout=0.1),
         ddpm, torch.randn(3, 1, 8, 8), t0)

lucid = LucidUnet(dim=32, dim_mults=(1, 2), channels=3, full_attn=(False, True))
add_case("lucidrains_tiny",
         dict(arch="lucidrains", in_channels=3, resolution=8, ch=32, ch_mult=[1, 2], num_res_blocks=2,
              full_attn=[False, True]),
         lucid, torch.randn(3, 3, 8, 8), t0)

fx.write("fixtures_unet.py")

for name, got, want in self_check:
    err = (got.to(F64) - want).abs()
    print("float32 torch vs stored, %s: max abs %.3g, max rel %.3g (|y| max %.3g)" % (
        name, float(err.max()), float((err / want.abs().clamp(min=1e-3)).max()), float(want.abs().max())))
