-- models/dncnn — DnCNN (Zhang, Zuo, Chen, Meng and Zhang, "Beyond a Gaussian denoiser: residual
-- learning of deep CNN for image denoising", IEEE TIP 2017), the baseline of the diffusion paper's
-- Table 4 as its authors' code builds it: `depth` 3×3 convolutions of `features` channels, all
-- without bias,
--
--   conv (C→F) · ReLU  →  (depth − 2) × [conv (F→F) · BatchNorm · ReLU]  →  conv (F→C)
--
-- predicting the noise: the output is x − net(x) (residual learning). Images are [N, C, H, W] in
-- [0, 1] (any H, W: every conv is padded). Parameters: 669,312 for C = 3 at depth 20, 64 features
-- (the authors' count), 667,008 for C = 1.
--
--   local dncnn = require "cunet.models.dncnn"
--   local net = dncnn.from_preset("dncnn", {in_channels = 1})
--   local clean_estimate = net(noisy)

local nn = require "cunet.nn"
local class = require "cunet.class"
local options = require "cunet.options"

local M = {}

--- Every option and its default.
M.defaults = {in_channels = 1, depth = 20, features = 64}

--- Presets: "dncnn" (the paper's 20 layers of 64 features), "tiny" (5 layers of 16: tests).
M.presets = {
  dncnn = {depth = 20, features = 64},
  tiny = {depth = 5, features = 16},
}

local DnCNN = class("DnCNN", nn.Module)
M.DnCNN = DnCNN

--- config: in_channels, depth (>= 3), features (see M.defaults).
function DnCNN:__init(config)
  nn.Module.__init(self)
  local o = options.merge(config, M.defaults, "DnCNN", 4)
  for _, k in ipairs{"in_channels", "depth", "features"} do
    if math.type(o[k]) ~= "integer" or o[k] < 1 then error(string.format("DnCNN: %s must be a positive integer, got %s", k, tostring(o[k])), 3) end
  end
  if o.depth < 3 then error("DnCNN: depth must be at least 3 (first, middle and last layers), got " .. o.depth, 3) end
  self.config = {in_channels = o.in_channels, depth = o.depth, features = o.features}
  local c, f = o.in_channels, o.features
  local layers = {nn.Conv2d(c, f, 3, {padding = 1, bias = false}), nn.ReLU()}
  for _ = 1, o.depth - 2 do
    layers[#layers + 1] = nn.Conv2d(f, f, 3, {padding = 1, bias = false})
    layers[#layers + 1] = nn.BatchNorm2d(f)
    layers[#layers + 1] = nn.ReLU()
  end
  layers[#layers + 1] = nn.Conv2d(f, c, 3, {padding = 1, bias = false})
  self.net = nn.Sequential(table.unpack(layers))
end

--- The denoised image x − net(x) (net predicts the noise).
function DnCNN:forward(x)
  return x - self.net(x)
end

--- dncnn.from_config(config) -> DnCNN(config) (what checkpoints rebuild it with).
function M.from_config(config) return DnCNN(config) end

--- dncnn.from_preset(name [, overrides]) -> a DnCNN; overrides replace preset options.
M.from_preset = require("cunet.models.presets").from_preset("dncnn", M.presets, DnCNN)

return M
