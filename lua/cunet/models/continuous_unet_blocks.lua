-- models/continuous_unet_blocks — the pieces models/continuous_unet.lua assembles into the
-- continuous U-Net (cU-Net) of "The Missing U for Efficient Diffusion Models" (Calvo-Ordoñez et
-- al., TMLR 2024, §4.1 and Fig. 2), with the child names of the authors' code (Sergio20f/cDDPM,
-- alt_diffusion.ipynb) where the two agree:
--
--   ConvSODEFunc      norm1 conv1 norm2 [mlp.1] conv2 [res_conv]   the ODE function (Fig. 2, right)
--   InitialVelocity   norm1 conv1 norm2 conv2                      the initial-velocity block g
--   sinusoidal_table(n, d)                                         the authors' frozen time table
--
-- The attention block is lucidrains' Attention (RMSNorm, heads × dim_head, bias-free 1×1 qkv,
-- 1×1 out), shared with the U-Net in models/unet_blocks.lua.

local cn = require "cunet"
local nn = require "cunet.nn"
local class = require "cunet.class"
local util = require "cunet.nn.util"

local M = {}

local ACTIVATIONS = { softplus = true, relu = true, silu = true }
M.ACTIVATIONS = ACTIVATIONS

--- act(x, name): the nonlinearities the authors' get_nonlinearity offers (softplus with torch's
-- beta 1 and threshold 20).
local function act(x, name)
  if name == "softplus" then return x:softplus() end
  if name == "relu" then return x:relu() end
  return x:silu()
end
M.act = act

--- conv_act(conv, x, name): act(conv(x), name), with relu and softplus fused into the convolution.
local function conv_act(conv, x, name)
  if name == "softplus" or name == "relu" then return conv(x, name) end
  return act(conv(x), name)
end
M.conv_act = conv_act

local function check_act(name, who)
  if not ACTIVATIONS[name] then
    error(string.format("%s: activation must be 'softplus', 'relu' or 'silu', got %s", who, tostring(name)), 3)
  end
end

local function norm_layer(kind, channels, groups)
  if kind == "instance" then return nn.InstanceNorm2d(channels) end
  return nn.GroupNorm(groups, channels)
end

-- ---- the time table ------------------------------------------------------------------------------------

--- sinusoidal_table(n, d) -> [n, d]: row r (the 0-based step r) holds sin(r·ω_i) in column 2i and
-- cos(r·ω_i) in column 2i+1, ω_i = 10000^(−4i/d), i = 0 … d/2−1 — the authors' sinusoidal_embedding
-- (frequencies wk_j = 10000^(−2j/d) taken at even j, sines and cosines interleaved). Computed as
-- they do, in float32: ω rounded to float32, r·ω rounded, then sin and cos.
function M.sinusoidal_table(n, d)
  util.check_size(n, "n", "sinusoidal_table")
  util.check_size(d, "d", "sinusoidal_table")
  if d % 2 ~= 0 then error("sinusoidal_table: d must be even, got " .. d, 2) end
  local half = d // 2
  local omega = {}
  for i = 0, half - 1 do omega[i + 1] = 1 / 10000 ^ (2 * (2 * i) / d) end
  return cn.no_grad(function()
    local args = cn.arange(n):reshape { n, 1 } * cn.tensor(omega, { 1, half }) -- [n, half], float32
    return cn.stack({ args:sin(), args:cos() }, 3):reshape { n, d }
  end)
end

-- ---- the ODE function -----------------------------------------------------------------------------------

--- ConvSODEFunc(width, opts): the dynamics of one ODE block on a state of `width` channels, read
-- as the halves (x, v). opts (defaults in ConvSODEFunc.defaults):
--   form       "augmented": f(t, s) = ds/dt for the whole state s = cat(x, v) (the authors' code:
--              one derivative of width channels); "second_order": f(t, x, v) = x'' (width/2
--              channels, the acceleration of x' = v, v' = f), with a 1×1 res_conv for the residual.
--   residual   true: GN/IN → conv3×3 → act → GN/IN → [scale/shift] → conv3×3 → act → + input
--              (Fig. 2; the authors' ConvSODEFunc); false: the plain function of the authors'
--              ablation — second conv 1×1, no residual.
--   norm, groups, act, time_dim (false: no scale/shift; else an MLP SiLU → Linear(time_dim → 2·width)
--              makes scale and shift: out · (1 + scale) + shift).
local ConvSODEFunc = class("ConvSODEFunc", nn.Module)
M.ConvSODEFunc = ConvSODEFunc
ConvSODEFunc.defaults = { form = "augmented", residual = true, norm = "instance", groups = 8, act = "softplus",
  time_dim = false }

function ConvSODEFunc:__init(width, opts)
  nn.Module.__init(self)
  local who = "ConvSODEFunc"
  local o = util.options(opts, ConvSODEFunc.defaults, who)
  self.width = util.check_size(width, "width", who)
  if width % 2 ~= 0 then error(string.format("%s: width must be even (halves x, v), got %d", who, width), 2) end
  if o.form ~= "augmented" and o.form ~= "second_order" then
    error(string.format("%s: form must be 'augmented' or 'second_order', got %s", who, tostring(o.form)), 2)
  end
  check_act(o.act, who)
  self.form, self.residual, self.act = o.form, o.residual, o.act
  local out = o.form == "augmented" and width or width // 2
  self.norm1 = norm_layer(o.norm, width, o.groups)
  self.conv1 = nn.Conv2d(width, width, 3, { padding = 1 })
  self.norm2 = norm_layer(o.norm, width, o.groups)
  if o.time_dim then
    self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(util.check_size(o.time_dim, "time_dim", who), 2 * width))
  end
  if o.residual then
    self.conv2 = nn.Conv2d(width, out, 3, { padding = 1 })
    if out ~= width then self.res_conv = nn.Conv2d(width, out, 1) end
  else
    self.conv2 = nn.Conv2d(width, out, 1)
  end
end

--- "augmented": f(t, s, temb) -> ds/dt;  "second_order": f(t, x, v, temb) -> the acceleration.
-- temb [N, time_dim] is used when the function has an mlp (ignored otherwise, may be nil).
function ConvSODEFunc:forward(_, a, b, c)
  local input, temb
  if self.form == "second_order" then
    input, temb = cn.cat({ a, b }, 2), c
  else
    input, temb = a, b
  end
  local h = self.norm2(conv_act(self.conv1, self.norm1(input), self.act))
  if self.mlp then
    if not cn.is_tensor(temb) then error("ConvSODEFunc: this function needs the time embedding [N, time_dim]", 2) end
    local n, w = h:size(1), self.width
    local ss = self.mlp(temb)
    h = h * (ss:narrow(2, 1, w):reshape { n, w, 1, 1 } + 1) + ss:narrow(2, w + 1, w):reshape { n, w, 1, 1 }
  end
  h = conv_act(self.conv2, h, self.act)
  if self.residual then h = h + (self.res_conv and self.res_conv(input) or input) end
  return h
end

function ConvSODEFunc:extra_repr()
  return string.format("%d, form=%s, residual=%s, act=%s", self.width, self.form, util.repr(self.residual), self.act)
end

-- ---- the initial velocity ------------------------------------------------------------------------------

--- InitialVelocity(in_channels, mid_channels, out_channels [, {act="softplus"}]): the block g —
-- InstanceNorm → conv 3×3 (in → mid) → act → InstanceNorm → conv 1×1 (mid → out) → act (the
-- authors' InitialVelocity; the paper's text: instance norm, convolutions, ReLU between them).
local InitialVelocity = class("InitialVelocity", nn.Module)
M.InitialVelocity = InitialVelocity
InitialVelocity.defaults = { act = "softplus" }

function InitialVelocity:__init(in_channels, mid_channels, out_channels, opts)
  nn.Module.__init(self)
  local who = "InitialVelocity"
  local o = util.options(opts, InitialVelocity.defaults, who)
  check_act(o.act, who)
  self.act = o.act
  self.norm1 = nn.InstanceNorm2d(util.check_size(in_channels, "in_channels", who))
  self.conv1 = nn.Conv2d(in_channels, util.check_size(mid_channels, "mid_channels", who), 3, { padding = 1 })
  self.norm2 = nn.InstanceNorm2d(mid_channels)
  self.conv2 = nn.Conv2d(mid_channels, util.check_size(out_channels, "out_channels", who), 1)
end

function InitialVelocity:forward(x)
  local h = conv_act(self.conv1, self.norm1(x), self.act)
  return conv_act(self.conv2, self.norm2(h), self.act)
end

function InitialVelocity:extra_repr() return "act=" .. self.act end

M.Attention = require("cunet.models.unet_blocks").Attention

return M
