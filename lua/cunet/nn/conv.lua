-- nn.Conv2d and nn.ConvTranspose2d, with PyTorch's arguments, weight layout and initialisation.
--
--   nn.Conv2d(in_channels, out_channels, kernel_size [, {stride=1, padding=0, dilation=1, groups=1,
--             bias=true, padding_mode="zeros"}])
--   nn.ConvTranspose2d(in_channels, out_channels, kernel_size [, {stride=1, padding=0,
--             output_padding=0, groups=1, bias=true, dilation=1}])
--
-- Sizes are a number or a {h, w} table; Conv2d's padding may also be "same" or "valid".
-- Weights: conv [out, in/groups, kh, kw], transposed [in, out/groups, kh, kw], as torch; both
-- start from kaiming_uniform_(a=√5) = U(-1/√fan_in, 1/√fan_in) with the bias from the same bound.

local core = require "cunet.core"
local class = require "cunet.class"
local Module = require("cunet.nn.module").Module
local F = require "cunet.nn.functional"
local init = require "cunet.nn.weight_init"
local util = require "cunet.nn.util"

local repr = util.repr

-- ---- Conv2d ---------------------------------------------------------------------------------------

local Conv2d = class("Conv2d", Module)

Conv2d.defaults = { stride = 1, padding = 0, dilation = 1, groups = 1, bias = true, padding_mode = "zeros" }

local PADDING_MODES = { zeros = true, reflect = true, replicate = true }

function Conv2d:__init(in_channels, out_channels, kernel_size, opts)
  Module.__init(self)
  local who = "Conv2d"
  local o = util.options(opts, Conv2d.defaults, who)
  self.in_channels = util.check_size(in_channels, "in_channels", who)
  self.out_channels = util.check_size(out_channels, "out_channels", who)
  self.kernel_size = util.pair(kernel_size, "kernel_size", who)
  self.stride = util.pair(o.stride, "stride", who)
  self.dilation = util.pair(o.dilation, "dilation", who)
  self.groups = util.check_size(o.groups, "groups", who)
  if in_channels % o.groups ~= 0 or out_channels % o.groups ~= 0 then
    error(string.format("Conv2d: in_channels (%d) and out_channels (%d) must be divisible by groups (%d)",
      in_channels, out_channels, o.groups), 2)
  end
  if not PADDING_MODES[o.padding_mode] then
    error(string.format("Conv2d: padding_mode must be 'zeros', 'reflect' or 'replicate', got '%s'",
      tostring(o.padding_mode)), 2)
  end
  self.padding_mode = o.padding_mode
  if o.padding == "valid" then
    self.padding = { 0, 0 }
  elseif o.padding == "same" then
    if self.stride[1] ~= 1 or self.stride[2] ~= 1 then
      error("Conv2d: padding='same' is not supported for strided convolutions", 2)
    end
    self.padding = "same"
    -- total padding dilation·(k-1) per dim, the odd one out going to the bottom/right (as torch)
    local pads = {}
    for d = 1, 2 do
      local total = self.dilation[d] * (self.kernel_size[d] - 1)
      pads[d] = { total // 2, total - total // 2 }
    end
    self._same_pads = pads
  else
    self.padding = util.pair(o.padding, "padding", who)
  end
  self:register_parameter("weight",
    core.empty { out_channels, in_channels // o.groups, self.kernel_size[1], self.kernel_size[2] })
  self:register_parameter("bias", o.bias and core.empty { out_channels } or nil)
  self:reset_parameters()
end

--- Redraws weight and bias with PyTorch's default rule.
function Conv2d:reset_parameters()
  init.default_affine_(self.weight, self.bias)
end

--- conv(x [, activation]): with activation "relu" or "softplus", the activation of the output is
-- fused into the convolution (cn.conv2d's option: one pass less over the output, forward and
-- backward); the result equals conv(x):relu() / :softplus().
function Conv2d:forward(x, activation)
  util.check_input(x, 4, "Conv2d", "[N, C, H, W]")
  local padding = self.padding
  local explicit -- {left, right, top, bottom} for F.pad, when the conv itself cannot pad
  if padding == "same" then
    local p = self._same_pads
    if p[1][1] == p[1][2] and p[2][1] == p[2][2] then
      padding = { p[1][1], p[2][1] }
    else
      explicit, padding = { p[2][1], p[2][2], p[1][1], p[1][2] }, { 0, 0 }
    end
  end
  if self.padding_mode ~= "zeros" then
    explicit = explicit or { padding[2], padding[2], padding[1], padding[1] }
    padding = { 0, 0 }
  end
  if explicit then
    if self.padding_mode == "zeros" then
      x = F.pad(x, explicit)
    else
      x = F.pad(x, explicit, self.padding_mode)
    end
  end
  return F.conv2d(x, self.weight, self.bias,
    { stride = self.stride, padding = padding, dilation = self.dilation, groups = self.groups, activation = activation })
end

function Conv2d:extra_repr()
  local s = string.format("%d, %d, kernel_size=%s, stride=%s", self.in_channels, self.out_channels,
    repr(self.kernel_size), repr(self.stride))
  if self.padding == "same" then
    s = s .. ", padding=same"
  elseif self.padding[1] ~= 0 or self.padding[2] ~= 0 then
    s = s .. ", padding=" .. repr(self.padding)
  end
  if self.dilation[1] ~= 1 or self.dilation[2] ~= 1 then s = s .. ", dilation=" .. repr(self.dilation) end
  if self.groups ~= 1 then s = s .. ", groups=" .. self.groups end
  if self.bias == nil then s = s .. ", bias=False" end
  if self.padding_mode ~= "zeros" then s = s .. ", padding_mode=" .. self.padding_mode end
  return s
end

-- ---- ConvTranspose2d ---------------------------------------------------------------------------------

local ConvTranspose2d = class("ConvTranspose2d", Module)

ConvTranspose2d.defaults = { stride = 1, padding = 0, output_padding = 0, groups = 1, bias = true, dilation = 1 }

function ConvTranspose2d:__init(in_channels, out_channels, kernel_size, opts)
  Module.__init(self)
  local who = "ConvTranspose2d"
  local o = util.options(opts, ConvTranspose2d.defaults, who)
  self.in_channels = util.check_size(in_channels, "in_channels", who)
  self.out_channels = util.check_size(out_channels, "out_channels", who)
  self.kernel_size = util.pair(kernel_size, "kernel_size", who)
  self.stride = util.pair(o.stride, "stride", who)
  self.padding = util.pair(o.padding, "padding", who)
  self.output_padding = util.pair(o.output_padding, "output_padding", who)
  self.dilation = util.pair(o.dilation, "dilation", who)
  self.groups = util.check_size(o.groups, "groups", who)
  if in_channels % o.groups ~= 0 or out_channels % o.groups ~= 0 then
    error(string.format("ConvTranspose2d: in_channels (%d) and out_channels (%d) must be divisible by groups (%d)",
      in_channels, out_channels, o.groups), 2)
  end
  for d = 1, 2 do
    if self.output_padding[d] >= math.max(self.stride[d], self.dilation[d]) then
      error("ConvTranspose2d: output_padding must be smaller than either stride or dilation", 2)
    end
  end
  self:register_parameter("weight",
    core.empty { in_channels, out_channels // o.groups, self.kernel_size[1], self.kernel_size[2] })
  self:register_parameter("bias", o.bias and core.empty { out_channels } or nil)
  self:reset_parameters()
end

--- Redraws weight and bias with PyTorch's default rule (fan_in from weight dim 2: (out/groups)·kh·kw).
function ConvTranspose2d:reset_parameters()
  init.default_affine_(self.weight, self.bias)
end

function ConvTranspose2d:forward(x)
  util.check_input(x, 4, "ConvTranspose2d", "[N, C, H, W]")
  return F.conv_transpose2d(x, self.weight, self.bias, {
    stride = self.stride, padding = self.padding, output_padding = self.output_padding,
    dilation = self.dilation, groups = self.groups,
  })
end

function ConvTranspose2d:extra_repr()
  local s = string.format("%d, %d, kernel_size=%s, stride=%s", self.in_channels, self.out_channels,
    repr(self.kernel_size), repr(self.stride))
  if self.padding[1] ~= 0 or self.padding[2] ~= 0 then s = s .. ", padding=" .. repr(self.padding) end
  if self.dilation[1] ~= 1 or self.dilation[2] ~= 1 then s = s .. ", dilation=" .. repr(self.dilation) end
  if self.output_padding[1] ~= 0 or self.output_padding[2] ~= 0 then
    s = s .. ", output_padding=" .. repr(self.output_padding)
  end
  if self.groups ~= 1 then s = s .. ", groups=" .. self.groups end
  if self.bias == nil then s = s .. ", bias=False" end
  return s
end

return { Conv2d = Conv2d, ConvTranspose2d = ConvTranspose2d }
