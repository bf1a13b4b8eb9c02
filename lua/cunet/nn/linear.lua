-- nn.Linear, nn.Identity and nn.Flatten.
--
--   nn.Linear(in_features, out_features [, {bias=true}])   -- y = x·Wᵀ + b over the last dim
--   nn.Identity()                                          -- returns its input
--   nn.Flatten([{start_dim=2, end_dim=-1}])                -- dims are 1-based (torch's 1 is our 2)

local core = require "cunet.core"
local class = require "cunet.class"
local Module = require("cunet.nn.module").Module
local F = require "cunet.nn.functional"
local init = require "cunet.nn.weight_init"
local util = require "cunet.nn.util"

local Linear = class("Linear", Module)

Linear.defaults = { bias = true }

function Linear:__init(in_features, out_features, opts)
  Module.__init(self)
  local o = util.options(opts, Linear.defaults, "Linear")
  self.in_features = util.check_size(in_features, "in_features", "Linear")
  self.out_features = util.check_size(out_features, "out_features", "Linear")
  self:register_parameter("weight", core.empty { out_features, in_features })
  self:register_parameter("bias", o.bias and core.empty { out_features } or nil)
  self:reset_parameters()
end

--- Redraws weight and bias with PyTorch's default rule: U(-1/√in_features, 1/√in_features).
function Linear:reset_parameters()
  init.default_affine_(self.weight, self.bias)
end

function Linear:forward(x)
  if not core.is_tensor(x) then error("Linear: expected a tensor input, got " .. type(x), 2) end
  if x:dim() < 1 or x:size(-1) ~= self.in_features then
    error(string.format("Linear: expected an input whose last dim is %d, got shape %s", self.in_features,
      util.shape_str(x)), 2)
  end
  return F.linear(x, self.weight, self.bias)
end

function Linear:extra_repr()
  return string.format("in_features=%d, out_features=%d, bias=%s", self.in_features, self.out_features,
    util.repr(self.bias ~= nil))
end

local Identity = class("Identity", Module)

function Identity:__init() Module.__init(self) end

function Identity:forward(x) return x end

local Flatten = class("Flatten", Module)

Flatten.defaults = { start_dim = 2, end_dim = -1 }

function Flatten:__init(opts)
  Module.__init(self)
  local o = util.options(opts, Flatten.defaults, "Flatten")
  self.start_dim, self.end_dim = o.start_dim, o.end_dim
end

function Flatten:forward(x) return F.flatten(x, self.start_dim, self.end_dim) end

function Flatten:extra_repr()
  return string.format("start_dim=%d, end_dim=%d", self.start_dim, self.end_dim)
end

return { Linear = Linear, Identity = Identity, Flatten = Flatten }
