-- Resampling: nn.Upsample, nn.Downsample (DDPM), nn.AvgPool2d, nn.MaxPool2d.
--
--   nn.Upsample{scale_factor=2 | size={h, w}, mode="nearest"|"bilinear", align_corners=false}
--   nn.Downsample(channels [, {with_conv=true, out_channels=channels}])
--   nn.AvgPool2d(kernel_size [, {stride=kernel_size, padding=0, ceil_mode=false, count_include_pad=true}])
--   nn.MaxPool2d(kernel_size [, {stride=kernel_size, padding=0, dilation=1, ceil_mode=false}])
--
-- Downsample halves H and W as in the DDPM U-Net: with_conv, a 3×3 convolution of stride 2 and
-- padding 1 (the PyTorch ports' choice, e.g. improved-diffusion; Ho et al.'s TensorFlow "SAME"
-- padding puts the odd pixel on the bottom/right instead); without, a 2×2 average pool.

local class = require "cunet.class"
local Module = require("cunet.nn.module").Module
local F = require "cunet.nn.functional"
local util = require "cunet.nn.util"
local Conv2d = require("cunet.nn.conv").Conv2d

local repr = util.repr

-- ---- Upsample --------------------------------------------------------------------------------------

local Upsample = class("Upsample", Module)
Upsample.defaults = { size = false, scale_factor = false, mode = "nearest", align_corners = false }

local MODES = { nearest = true, bilinear = true }

function Upsample:__init(opts)
  Module.__init(self)
  local o = util.options(opts, Upsample.defaults, "Upsample")
  if (o.size and o.scale_factor) or not (o.size or o.scale_factor) then
    error("Upsample: give exactly one of size and scale_factor", 2)
  end
  if not MODES[o.mode] then error("Upsample: mode must be 'nearest' or 'bilinear', got '" .. tostring(o.mode) .. "'", 2) end
  if o.mode == "nearest" and o.align_corners then
    error("Upsample: align_corners only applies to mode 'bilinear'", 2)
  end
  self.size = o.size or nil
  if o.scale_factor then
    -- stored as floats, as torch does (its repr prints 2.0)
    if type(o.scale_factor) == "table" then
      self.scale_factor = { o.scale_factor[1] + 0.0, o.scale_factor[2] + 0.0 }
    else
      self.scale_factor = o.scale_factor + 0.0
    end
  end
  self.mode, self.align_corners = o.mode, o.align_corners
end

function Upsample:forward(x)
  util.check_input(x, 4, "Upsample", "[N, C, H, W]")
  local args = { size = self.size, scale_factor = self.scale_factor, mode = self.mode }
  if self.mode ~= "nearest" then args.align_corners = self.align_corners end
  return F.upsample(x, args)
end

function Upsample:extra_repr()
  local info = self.scale_factor and "scale_factor=" .. repr(self.scale_factor) or "size=" .. repr(self.size)
  return info .. ", mode=" .. self.mode
end

-- ---- Downsample ---------------------------------------------------------------------------------------

local Downsample = class("Downsample", Module)
Downsample.defaults = { with_conv = true, out_channels = false }

function Downsample:__init(channels, opts)
  Module.__init(self)
  local o = util.options(opts, Downsample.defaults, "Downsample")
  self.channels = util.check_size(channels, "channels", "Downsample")
  self.out_channels = o.out_channels or channels
  self.with_conv = o.with_conv
  if o.with_conv then
    self.conv = Conv2d(channels, self.out_channels, 3, { stride = 2, padding = 1 })
  elseif self.out_channels ~= channels then
    error("Downsample: out_channels must equal channels without a convolution", 2)
  end
end

function Downsample:forward(x)
  util.check_input(x, 4, "Downsample", "[N, C, H, W]")
  if self.with_conv then return self.conv(x) end
  return F.avg_pool2d(x, 2, { stride = 2 })
end

function Downsample:extra_repr()
  local s = string.format("%d, with_conv=%s", self.channels, repr(self.with_conv))
  if self.out_channels ~= self.channels then s = s .. ", out_channels=" .. self.out_channels end
  return s
end

-- ---- pooling --------------------------------------------------------------------------------------------

-- A pooling module over op, with option defaults and the settings its repr shows (torch's).
local function pool_class(name, op, defaults, shown)
  local cls = class(name, Module)
  cls.defaults = defaults
  function cls:__init(kernel_size, opts)
    Module.__init(self)
    local o = util.options(opts, cls.defaults, name)
    util.pair(kernel_size, "kernel_size", name)
    self.kernel_size = kernel_size
    self.options = {}
    for k, v in pairs(o) do
      if k == "stride" then v = v or kernel_size end
      self[k], self.options[k] = v, v
    end
  end
  function cls:forward(x)
    util.check_input(x, { 3, 4 }, name, "[N, C, H, W] or [C, H, W]")
    return F[op](x, self.kernel_size, self.options)
  end
  function cls:extra_repr()
    local parts = { "kernel_size=" .. repr(self.kernel_size) }
    for _, k in ipairs(shown) do parts[#parts + 1] = k .. "=" .. repr(self[k]) end
    return table.concat(parts, ", ")
  end
  return cls
end

return {
  Upsample = Upsample,
  Downsample = Downsample,
  AvgPool2d = pool_class("AvgPool2d", "avg_pool2d",
    { stride = false, padding = 0, ceil_mode = false, count_include_pad = true }, { "stride", "padding" }),
  MaxPool2d = pool_class("MaxPool2d", "max_pool2d",
    { stride = false, padding = 0, dilation = 1, ceil_mode = false }, { "stride", "padding", "dilation", "ceil_mode" }),
}
