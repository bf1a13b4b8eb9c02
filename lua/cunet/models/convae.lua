-- models/convae — the convolutional denoising autoencoder baseline of the diffusion paper's Table 4
-- ("Conv AE"). Its authors' code has four stride-2 convolutions widening 64 → 128 → 256 → 512 and
-- four transposed convolutions back; the kernel sizes are not in what is published of it, so this
-- one takes 3×3 kernels (as DnCNN's) with padding 1, and output_padding 1 on the transposed ones,
-- so each halves and doubles the size exactly:
--
--   conv 3×3/2 (C→64) · ReLU → conv (64→128) · ReLU → conv (128→256) · ReLU → conv (256→512) · ReLU
--   → convT 3×3/2 (512→256) · ReLU → convT (256→128) · ReLU → convT (128→64) · ReLU → convT (64→C)
--
-- The last layer is linear (no activation). Images are [N, C, H, W] in [0, 1] of any size: the
-- input is zero-padded at the bottom and right to a multiple of 16 and the output cropped back.
--
--   local convae = require "cunet.models.convae"
--   local net = convae.from_preset("convae", {in_channels = 1})
--   local clean_estimate = net(noisy)

local cn = require "cunet"
local nn = require "cunet.nn"
local class = require "cunet.class"
local options = require "cunet.options"

local M = {}

--- Every option and its default: widths lists the encoder's channels (the decoder mirrors them).
M.defaults = {in_channels = 1, widths = {64, 128, 256, 512}}

--- Presets: "convae" (the paper's 64..512), "tiny" (8..64: tests).
M.presets = {
  convae = {widths = {64, 128, 256, 512}},
  tiny = {widths = {8, 16, 32, 64}},
}

local ConvAE = class("ConvAE", nn.Module)
M.ConvAE = ConvAE

--- config: in_channels, widths (see M.defaults).
function ConvAE:__init(config)
  nn.Module.__init(self)
  local o = options.merge(config, M.defaults, "ConvAE", 4)
  if math.type(o.in_channels) ~= "integer" or o.in_channels < 1 then
    error("ConvAE: in_channels must be a positive integer, got " .. tostring(o.in_channels), 3)
  end
  if type(o.widths) ~= "table" or #o.widths < 1 then error("ConvAE: widths must be a non-empty list of channel counts", 3) end
  local widths = {}
  for i, w in ipairs(o.widths) do
    if math.type(w) ~= "integer" or w < 1 then error(string.format("ConvAE: widths[%d] must be a positive integer, got %s", i, tostring(w)), 3) end
    widths[i] = w
  end
  self.config = {in_channels = o.in_channels, widths = widths}
  self.multiple = 1 << #widths -- the input size must divide by 2^levels
  local down, up = {}, {}
  local chans = {o.in_channels, table.unpack(widths)}
  for i = 1, #widths do
    down[#down + 1] = nn.Conv2d(chans[i], chans[i + 1], 3, {stride = 2, padding = 1})
    down[#down + 1] = nn.ReLU()
  end
  for i = #widths, 1, -1 do
    up[#up + 1] = nn.ConvTranspose2d(chans[i + 1], chans[i], 3, {stride = 2, padding = 1, output_padding = 1})
    if i > 1 then up[#up + 1] = nn.ReLU() end
  end
  self.encoder = nn.Sequential(table.unpack(down))
  self.decoder = nn.Sequential(table.unpack(up))
end

function ConvAE:forward(x)
  if not cn.is_tensor(x) or x:dim() ~= 4 or x:size(2) ~= self.config.in_channels then
    error(string.format("ConvAE: expected images [N, %d, H, W], got %s", self.config.in_channels,
      cn.is_tensor(x) and ("[" .. table.concat(x:shape(), ", ") .. "]") or type(x)), 2)
  end
  local h, w = x:size(3), x:size(4)
  local m = self.multiple
  local ph, pw = (m - h % m) % m, (m - w % m) % m
  local padded = (ph > 0 or pw > 0) and cn.pad(x, {0, pw, 0, ph}) or x
  local y = self.decoder(self.encoder(padded))
  if ph > 0 or pw > 0 then y = y:narrow(3, 1, h):narrow(4, 1, w) end
  return y
end

--- convae.from_config(config) -> ConvAE(config) (what checkpoints rebuild it with).
function M.from_config(config) return ConvAE(config) end

--- convae.from_preset(name [, overrides]) -> a ConvAE; overrides replace preset options.
M.from_preset = require("cunet.models.presets").from_preset("convae", M.presets, ConvAE)

return M
