-- models/unet_blocks — the building blocks of the two published U-Nets that models/unet.lua
-- assembles. Each block keeps the child names of the PyTorch code it follows, so a state_dict
-- written by that code loads unchanged:
--
--   Ho et al. 2020 (DDPM, diffusion_tf/models/unet.py, as ported to PyTorch by pesser/pytorch_diffusion):
--     ResnetBlock{style="ddpm"}   norm1 conv1 temb_proj norm2 dropout conv2 [nin_shortcut]
--     AttnBlock                   norm q k v proj_out                (single head, + x inside)
--     Downsample                  conv   (pad right/bottom by 1, 3×3 stride 2: TF's "SAME")
--     Upsample                    conv   (nearest ×2, 3×3)
--     TimestepEmbedding           dense.0 dense.1                    (sinusoid -> swish MLP)
--
--   lucidrains' denoising-diffusion-pytorch v1.8.3 (the cDDPM paper's baseline):
--     ResnetBlock{style="scale_shift"}   mlp.1 block1.{proj,norm} block2.{proj,norm} [res_conv]
--     Attention                   norm.g to_qkv to_out               (4 heads × 32, the caller adds x)
--     LinearAttention             norm.g to_qkv to_out.0 to_out.1.g  (the caller adds x)
--     RMSNorm                     g
--     PixelUnshuffle              (no parameters; einops' 'b c (h p1) (w p2) -> b (c p1 p2) h w')
--
-- Every block takes one options table whose defaults live in Block.defaults.

local cn = require "cunet"
local nn = require "cunet.nn"
local class = require "cunet.class"
local util = require "cunet.nn.util"

local M = {}

local function check_channels(x, channels, who)
  util.check_input(x, 4, who, "[N, C, H, W]")
  if x:size(2) ~= channels then
    error(string.format("%s: expected %d channels, got shape %s", who, channels, util.shape_str(x)), 3)
  end
end

-- ---- ResnetBlock -------------------------------------------------------------------------------------

-- The post-norm conv block of the scale_shift style (lucidrains' Block): conv 3×3 -> GroupNorm
-- -> [· (1 + scale) + shift] -> SiLU.
local ConvNormAct = class("Block", nn.Module)

function ConvNormAct:__init(in_ch, out_ch, groups, eps)
  nn.Module.__init(self)
  self.proj = nn.Conv2d(in_ch, out_ch, 3, { padding = 1 })
  self.norm = nn.GroupNorm(groups, out_ch, { eps = eps })
  self.act = nn.SiLU()
end

function ConvNormAct:forward(x, scale, shift)
  local h = self.norm(self.proj(x))
  if scale then h = h * (scale + 1) + shift end
  return self.act(h)
end

--- ResnetBlock(in_channels, out_channels, opts): a residual block conditioned on the time embedding.
--
-- style "ddpm" (Ho et al.):        h = conv1(swish(norm1(x))) + temb_proj(swish(temb))
--                                  h = conv2(dropout(swish(norm2(h))));  out = shortcut(x) + h
-- style "scale_shift" (lucidrains): scale, shift = chunk(mlp(temb), 2)      -- mlp = SiLU, Linear(temb, 2·out)
--                                  h = block2(block1(x, scale, shift));   out = res_conv(x) + h
-- The shortcut is a 1×1 conv (nin_shortcut / res_conv) when the channel count changes, else x.
local ResnetBlock = class("ResnetBlock", nn.Module)
M.ResnetBlock = ResnetBlock
ResnetBlock.defaults = { style = "ddpm", temb_channels = 512, groups = 32, eps = 1e-6, dropout = 0.0 }

function ResnetBlock:__init(in_channels, out_channels, opts)
  nn.Module.__init(self)
  local who = "ResnetBlock"
  local o = util.options(opts, ResnetBlock.defaults, who)
  self.in_channels = util.check_size(in_channels, "in_channels", who)
  self.out_channels = util.check_size(out_channels, "out_channels", who)
  self.style = o.style
  -- children in the reference's registration order: it is the state_dict order
  if o.style == "ddpm" then
    self.norm1 = nn.GroupNorm(o.groups, in_channels, { eps = o.eps })
    self.conv1 = nn.Conv2d(in_channels, out_channels, 3, { padding = 1 })
    self.temb_proj = nn.Linear(o.temb_channels, out_channels)
    self.norm2 = nn.GroupNorm(o.groups, out_channels, { eps = o.eps })
    self.dropout = nn.Dropout(o.dropout)
    self.conv2 = nn.Conv2d(out_channels, out_channels, 3, { padding = 1 })
    if in_channels ~= out_channels then self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) end
  elseif o.style == "scale_shift" then
    self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(o.temb_channels, 2 * out_channels))
    self.block1 = ConvNormAct(in_channels, out_channels, o.groups, o.eps)
    self.block2 = ConvNormAct(out_channels, out_channels, o.groups, o.eps)
    self.res_conv = in_channels ~= out_channels and nn.Conv2d(in_channels, out_channels, 1) or nn.Identity()
  else
    error(string.format("%s: style must be 'ddpm' or 'scale_shift', got '%s'", who, tostring(o.style)), 2)
  end
end

function ResnetBlock:forward(x, temb)
  check_channels(x, self.in_channels, "ResnetBlock")
  local n, c = x:size(1), self.out_channels
  if self.style == "ddpm" then
    local h = self.conv1(self.norm1(x, "silu"))
    h = h + self.temb_proj(temb:silu()):reshape { n, c, 1, 1 }
    h = self.conv2(self.dropout(self.norm2(h, "silu")))
    if self.nin_shortcut then x = self.nin_shortcut(x) end
    return x + h
  end
  local ss = self.mlp(temb):reshape { n, 2 * c, 1, 1 }
  local h = self.block1(x, ss:narrow(2, 1, c), ss:narrow(2, c + 1, c))
  return self.block2(h) + self.res_conv(x)
end

function ResnetBlock:extra_repr()
  return string.format("%d, %d, style=%s", self.in_channels, self.out_channels, self.style)
end

-- ---- attention ----------------------------------------------------------------------------------------

--- AttnBlock(channels, {groups=32, eps=1e-6}): Ho et al.'s self-attention over the H·W positions,
-- one head of width C: y = x + proj_out(softmax(q kᵀ / √C) v), with q, k, v 1×1 convs of
-- GroupNorm(x).
local AttnBlock = class("AttnBlock", nn.Module)
M.AttnBlock = AttnBlock
AttnBlock.defaults = { groups = 32, eps = 1e-6 }

function AttnBlock:__init(channels, opts)
  nn.Module.__init(self)
  local o = util.options(opts, AttnBlock.defaults, "AttnBlock")
  self.channels = util.check_size(channels, "channels", "AttnBlock")
  self.norm = nn.GroupNorm(o.groups, channels, { eps = o.eps })
  self.q = nn.Conv2d(channels, channels, 1)
  self.k = nn.Conv2d(channels, channels, 1)
  self.v = nn.Conv2d(channels, channels, 1)
  self.proj_out = nn.Conv2d(channels, channels, 1)
end

function AttnBlock:forward(x)
  check_channels(x, self.channels, "AttnBlock")
  local n, c, h, w = x:size(1), x:size(2), x:size(3), x:size(4)
  local hn = self.norm(x)
  -- [N, C, H, W] -> [N, HW, C]: H·W tokens of width C
  local function tokens(t) return t:reshape { n, c, h * w }:transpose(2, 3) end
  local o = cn.scaled_dot_product_attention(tokens(self.q(hn)), tokens(self.k(hn)), tokens(self.v(hn)),
    { scale = 1 / math.sqrt(c) })
  return x + self.proj_out(o:transpose(2, 3):reshape { n, c, h, w })
end

function AttnBlock:extra_repr() return tostring(self.channels) end

--- RMSNorm(dim): lucidrains' channel RMS norm, F.normalize(x, dim=1) · g · √C, with g [1, C, 1, 1]
-- (F.normalize divides by max(‖x‖₂, 1e-12) over the channels).
local RMSNorm = class("RMSNorm", nn.Module)
M.RMSNorm = RMSNorm

function RMSNorm:__init(dim)
  nn.Module.__init(self)
  self.dim = util.check_size(dim, "dim", "RMSNorm")
  self.g = nn.Parameter(cn.ones { 1, dim, 1, 1 })
end

function RMSNorm:forward(x)
  check_channels(x, self.dim, "RMSNorm")
  return x / x:norm(2, 2, true):clamp(1e-12) * (self.g * math.sqrt(self.dim))
end

function RMSNorm:extra_repr() return tostring(self.dim) end

-- Shared by the two lucidrains attentions: RMSNorm, then a bias-free 1×1 conv to q, k, v of
-- heads × dim_head channels each; returns q, k, v as [N, heads, dim_head, H·W].
local function heads_qkv(self, x)
  local n, h, w = x:size(1), x:size(3), x:size(4)
  local qkv = self.to_qkv(self.norm(x)):reshape { n, 3, self.heads, self.dim_head, h * w }
  return qkv:select(2, 1), qkv:select(2, 2), qkv:select(2, 3)
end

local ATTENTION_DEFAULTS = { heads = 4, dim_head = 32 }

local function attention_init(self, who, dim, opts)
  nn.Module.__init(self)
  local o = util.options(opts, ATTENTION_DEFAULTS, who)
  self.dim = util.check_size(dim, "dim", who)
  self.heads = util.check_size(o.heads, "heads", who)
  self.dim_head = util.check_size(o.dim_head, "dim_head", who)
  self.norm = RMSNorm(dim)
  self.to_qkv = nn.Conv2d(dim, 3 * o.heads * o.dim_head, 1, { bias = false })
end

local function attention_repr(self)
  return string.format("%d, heads=%d, dim_head=%d", self.dim, self.heads, self.dim_head)
end

--- Attention(dim, {heads=4, dim_head=32}): lucidrains' full multi-head attention (v1.8.3, Attend
-- without flash): softmax(q kᵀ / √dim_head) v per head over the H·W positions, then a 1×1 conv
-- (to_out) back to dim channels. No residual: the U-Net adds x.
local Attention = class("Attention", nn.Module)
M.Attention = Attention
Attention.defaults = ATTENTION_DEFAULTS

function Attention:__init(dim, opts)
  attention_init(self, "Attention", dim, opts)
  self.to_out = nn.Conv2d(self.heads * self.dim_head, dim, 1)
end

function Attention:forward(x)
  check_channels(x, self.dim, "Attention")
  local n, h, w = x:size(1), x:size(3), x:size(4)
  local q, k, v = heads_qkv(self, x)
  -- [N, heads, d, HW] -> [N, heads, HW, d]
  local o = cn.scaled_dot_product_attention(q:transpose(3, 4), k:transpose(3, 4), v:transpose(3, 4),
    { scale = 1 / math.sqrt(self.dim_head) })
  return self.to_out(o:transpose(3, 4):reshape { n, self.heads * self.dim_head, h, w })
end

Attention.extra_repr = attention_repr

--- LinearAttention(dim, {heads=4, dim_head=32}): lucidrains' linear attention (v1.8.3):
-- q softmaxed over its dim_head channels and scaled by dim_head^-½, k softmaxed over the positions,
-- context = k vᵀ [d × d] per head, out = contextᵀ q; then to_out = 1×1 conv, RMSNorm. No residual.
local LinearAttention = class("LinearAttention", nn.Module)
M.LinearAttention = LinearAttention
LinearAttention.defaults = ATTENTION_DEFAULTS

function LinearAttention:__init(dim, opts)
  attention_init(self, "LinearAttention", dim, opts)
  self.to_out = nn.Sequential(nn.Conv2d(self.heads * self.dim_head, dim, 1), RMSNorm(dim))
end

function LinearAttention:forward(x)
  check_channels(x, self.dim, "LinearAttention")
  local n, h, w = x:size(1), x:size(3), x:size(4)
  local q, k, v = heads_qkv(self, x)
  q = q:softmax(3) * (1 / math.sqrt(self.dim_head))
  k = k:softmax(4)
  local context = k:matmul(v:transpose(3, 4))       -- [N, heads, d, e]: Σ_n k[d, n] v[e, n]
  local out = context:transpose(3, 4):matmul(q)     -- [N, heads, e, HW]: Σ_d context[d, e] q[d, n]
  return self.to_out(out:reshape { n, self.heads * self.dim_head, h, w })
end

LinearAttention.extra_repr = attention_repr

-- ---- resampling ---------------------------------------------------------------------------------------

--- Downsample(channels, {with_conv=true}): Ho et al.'s ×½: zero-pad one row and column at the
-- bottom and right, then a 3×3 conv of stride 2 (TensorFlow's "SAME" on even sizes, as the
-- PyTorch port does); without conv, a 2×2 average pool.
local Downsample = class("Downsample", nn.Module)
M.Downsample = Downsample
Downsample.defaults = { with_conv = true }

function Downsample:__init(channels, opts)
  nn.Module.__init(self)
  local o = util.options(opts, Downsample.defaults, "Downsample")
  self.channels = util.check_size(channels, "channels", "Downsample")
  self.with_conv = o.with_conv
  if o.with_conv then self.conv = nn.Conv2d(channels, channels, 3, { stride = 2 }) end
end

function Downsample:forward(x)
  check_channels(x, self.channels, "Downsample")
  if self.with_conv then return self.conv(cn.pad(x, { 0, 1, 0, 1 })) end
  return cn.avg_pool2d(x, 2)
end

function Downsample:extra_repr() return string.format("%d, with_conv=%s", self.channels, util.repr(self.with_conv)) end

--- Upsample(channels, {with_conv=true}): Ho et al.'s ×2: nearest-neighbour, then a 3×3 conv.
local Upsample = class("Upsample", nn.Module)
M.Upsample = Upsample
Upsample.defaults = { with_conv = true }

function Upsample:__init(channels, opts)
  nn.Module.__init(self)
  local o = util.options(opts, Upsample.defaults, "Upsample")
  self.channels = util.check_size(channels, "channels", "Upsample")
  self.with_conv = o.with_conv
  if o.with_conv then self.conv = nn.Conv2d(channels, channels, 3, { padding = 1 }) end
end

function Upsample:forward(x)
  check_channels(x, self.channels, "Upsample")
  local h = cn.upsample(x, { scale_factor = 2, mode = "nearest" })
  if self.with_conv then h = self.conv(h) end
  return h
end

function Upsample:extra_repr() return string.format("%d, with_conv=%s", self.channels, util.repr(self.with_conv)) end

--- PixelUnshuffle(factor): [N, C, H·r, W·r] -> [N, C·r², H, W], channel c·r² + i·r + j taking
-- pixel (i, j) of each r × r patch (torch's nn.PixelUnshuffle; einops 'b c (h p1) (w p2) -> b (c p1 p2) h w').
local PixelUnshuffle = class("PixelUnshuffle", nn.Module)
M.PixelUnshuffle = PixelUnshuffle

function PixelUnshuffle:__init(factor)
  nn.Module.__init(self)
  self.downscale_factor = util.check_size(factor, "downscale_factor", "PixelUnshuffle")
end

function PixelUnshuffle:forward(x)
  util.check_input(x, 4, "PixelUnshuffle", "[N, C, H, W]")
  local r = self.downscale_factor
  local n, c, h, w = x:size(1), x:size(2), x:size(3), x:size(4)
  if h % r ~= 0 or w % r ~= 0 then
    error(string.format("PixelUnshuffle: H and W must be multiples of %d, got shape %s", r, util.shape_str(x)), 2)
  end
  return x:reshape { n, c, h // r, r, w // r, r }:permute(1, 2, 4, 6, 3, 5):reshape { n, c * r * r, h // r, w // r }
end

function PixelUnshuffle:extra_repr() return "downscale_factor=" .. self.downscale_factor end

-- ---- time embedding -----------------------------------------------------------------------------------

--- TimestepEmbedding(ch, temb_ch): Ho et al.'s sinusoidal embedding of width ch (freq_shift 1,
-- sines first) -> dense.0 (ch -> temb_ch) -> swish -> dense.1 (temb_ch -> temb_ch).
local TimestepEmbedding = class("TimestepEmbedding", nn.Module)
M.TimestepEmbedding = TimestepEmbedding

function TimestepEmbedding:__init(ch, temb_ch)
  nn.Module.__init(self)
  self.sinusoid = nn.SinusoidalTimeEmbedding(ch) -- no parameters, no state_dict entry
  self.dense = nn.ModuleList { nn.Linear(ch, temb_ch), nn.Linear(temb_ch, temb_ch) }
end

--- t: [N] timesteps as the embedding sees them (the U-Net passes its 1-based t minus 1).
function TimestepEmbedding:forward(t)
  return self.dense[2](self.dense[1](self.sinusoid(t)):silu())
end

return M
