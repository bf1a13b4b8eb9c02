-- Normalisation layers with PyTorch's arguments, parameters and buffers:
--
--   nn.GroupNorm(num_groups, num_channels [, {eps=1e-5, affine=true}])   norm(x [, "silu"])
--   nn.InstanceNorm2d(num_features [, {eps=1e-5, momentum=0.1, affine=false, track_running_stats=false}])
--   nn.LayerNorm(normalized_shape [, {eps=1e-5, elementwise_affine=true, bias=true}])
--   nn.BatchNorm2d(num_features [, {eps=1e-5, momentum=0.1, affine=true, track_running_stats=true}])
--
-- Affine weights start at 1 and biases at 0. BatchNorm2d keeps the buffers running_mean,
-- running_var and num_batches_tracked, updated in training mode (momentum=false gives the
-- cumulative average, PyTorch's momentum=None) and used in evaluation mode.

local core = require "cunet.core"
local class = require "cunet.class"
local Module = require("cunet.nn.module").Module
local F = require "cunet.nn.functional"
local util = require "cunet.nn.util"

local repr = util.repr

-- ---- GroupNorm ------------------------------------------------------------------------------------

local GroupNorm = class("GroupNorm", Module)
GroupNorm.defaults = { eps = 1e-5, affine = true }

function GroupNorm:__init(num_groups, num_channels, opts)
  Module.__init(self)
  local o = util.options(opts, GroupNorm.defaults, "GroupNorm")
  self.num_groups = util.check_size(num_groups, "num_groups", "GroupNorm")
  self.num_channels = util.check_size(num_channels, "num_channels", "GroupNorm")
  if num_channels % num_groups ~= 0 then
    error(string.format("GroupNorm: num_channels (%d) must be divisible by num_groups (%d)", num_channels, num_groups), 2)
  end
  self.eps, self.affine = o.eps, o.affine
  self:register_parameter("weight", o.affine and core.ones { num_channels } or nil)
  self:register_parameter("bias", o.affine and core.zeros { num_channels } or nil)
end

--- norm(x [, activation]): with activation "silu", silu(norm(x)) — in one pass over the output when
-- no gradient is recorded (sampling), else the two ops as usual.
function GroupNorm:forward(x, activation)
  if not core.is_tensor(x) or x:dim() < 2 or x:size(2) ~= self.num_channels then
    error(string.format("GroupNorm: expected an input [N, %d, ...], got %s", self.num_channels,
      core.is_tensor(x) and util.shape_str(x) or type(x)), 2)
  end
  if activation ~= nil and activation ~= "silu" then
    error(string.format("GroupNorm: activation must be \"silu\" or nil, got %s", tostring(activation)), 2)
  end
  return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps, activation)
end

function GroupNorm:extra_repr()
  return string.format("%d, %d, eps=%s, affine=%s", self.num_groups, self.num_channels, repr(self.eps), repr(self.affine))
end

-- ---- running-statistics base (BatchNorm2d, InstanceNorm2d) ---------------------------------------

local function norm_base_init(self, who, num_features, o)
  self.num_features = util.check_size(num_features, "num_features", who)
  self.eps, self.momentum, self.affine, self.track_running_stats = o.eps, o.momentum, o.affine, o.track_running_stats
  self:register_parameter("weight", o.affine and core.ones { num_features } or nil)
  self:register_parameter("bias", o.affine and core.zeros { num_features } or nil)
  if o.track_running_stats then
    self:register_buffer("running_mean", core.zeros { num_features })
    self:register_buffer("running_var", core.ones { num_features })
    self:register_buffer("num_batches_tracked", core.zeros {})
  else
    self:register_buffer("running_mean", nil)
    self:register_buffer("running_var", nil)
    self:register_buffer("num_batches_tracked", nil)
  end
end

local function norm_base_repr(self)
  return string.format("%d, eps=%s, momentum=%s, affine=%s, track_running_stats=%s", self.num_features,
    repr(self.eps), self.momentum == false and "None" or repr(self.momentum), repr(self.affine),
    repr(self.track_running_stats))
end

-- The factor of this step's statistics in the running average (PyTorch's
-- exponential_average_factor); counts the batch when training with tracked statistics.
local function average_factor(self)
  local factor = self.momentum == false and 0 or self.momentum
  if self.training and self.track_running_stats then
    local n
    core.no_grad(function()
      self.num_batches_tracked:add_(1)
      n = self.num_batches_tracked:item()
    end)
    if self.momentum == false then factor = 1 / n end
  end
  return factor
end

local function check_4d(self, who, x)
  util.check_input(x, 4, who, "[N, C, H, W]")
  if x:size(2) ~= self.num_features then
    error(string.format("%s: expected %d channels, got shape %s", who, self.num_features, util.shape_str(x)), 3)
  end
end

-- ---- BatchNorm2d ----------------------------------------------------------------------------------

local BatchNorm2d = class("BatchNorm2d", Module)
BatchNorm2d.defaults = { eps = 1e-5, momentum = 0.1, affine = true, track_running_stats = true }

function BatchNorm2d:__init(num_features, opts)
  Module.__init(self)
  norm_base_init(self, "BatchNorm2d", num_features, util.options(opts, BatchNorm2d.defaults, "BatchNorm2d"))
end

--- Sets the running statistics back to mean 0, variance 1 and the batch count to 0.
function BatchNorm2d:reset_running_stats()
  if not self.track_running_stats then return end
  core.no_grad(function()
    self.running_mean:zero_()
    self.running_var:fill_(1)
    self.num_batches_tracked:zero_()
  end)
end

function BatchNorm2d:forward(x)
  check_4d(self, "BatchNorm2d", x)
  local factor = average_factor(self)
  -- batch statistics when training, or when there are no running statistics to use
  local use_batch = self.training or self.running_mean == nil
  local track = not self.training or self.track_running_stats
  return F.batch_norm(x, track and self.running_mean or nil, track and self.running_var or nil, self.weight, self.bias,
    { training = use_batch, momentum = factor, eps = self.eps })
end

BatchNorm2d.extra_repr = norm_base_repr

-- ---- InstanceNorm2d ---------------------------------------------------------------------------------

local InstanceNorm2d = class("InstanceNorm2d", Module)
InstanceNorm2d.defaults = { eps = 1e-5, momentum = 0.1, affine = false, track_running_stats = false }

function InstanceNorm2d:__init(num_features, opts)
  Module.__init(self)
  local o = util.options(opts, InstanceNorm2d.defaults, "InstanceNorm2d")
  if type(o.momentum) ~= "number" then
    error("InstanceNorm2d: momentum must be a number (no cumulative average here, as torch)", 2)
  end
  norm_base_init(self, "InstanceNorm2d", num_features, o)
end

InstanceNorm2d.reset_running_stats = BatchNorm2d.reset_running_stats

function InstanceNorm2d:forward(x)
  check_4d(self, "InstanceNorm2d", x)
  if self.track_running_stats and not self.training then
    -- evaluation with tracked statistics: per-channel running mean and variance, as batch norm
    return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
      { training = false, eps = self.eps })
  end
  local out = F.instance_norm(x, self.weight, self.bias, self.eps)
  if self.track_running_stats then
    -- PyTorch averages the per-instance statistics over the batch into the running ones
    -- (unbiased variance) with a plain momentum; num_batches_tracked stays as it is (as torch)
    local factor = self.momentum
    core.no_grad(function()
      local d = x:detach()
      local mean = d:mean({ 3, 4 }):mean(1)
      local var = d:var({ 3, 4 }, false, 1):mean(1)
      self.running_mean:copy_(self.running_mean * (1 - factor) + mean * factor)
      self.running_var:copy_(self.running_var * (1 - factor) + var * factor)
    end)
  end
  return out
end

InstanceNorm2d.extra_repr = norm_base_repr

-- ---- LayerNorm ----------------------------------------------------------------------------------------

local LayerNorm = class("LayerNorm", Module)
LayerNorm.defaults = { eps = 1e-5, elementwise_affine = true, bias = true }

function LayerNorm:__init(normalized_shape, opts)
  Module.__init(self)
  local o = util.options(opts, LayerNorm.defaults, "LayerNorm")
  if type(normalized_shape) == "number" then normalized_shape = { normalized_shape } end
  if type(normalized_shape) ~= "table" or #normalized_shape == 0 then
    error("LayerNorm: normalized_shape must be a size or a table of sizes", 2)
  end
  local shape = {}
  for i, s in ipairs(normalized_shape) do shape[i] = util.check_size(s, "normalized_shape", "LayerNorm") end
  self.normalized_shape, self.eps, self.elementwise_affine = shape, o.eps, o.elementwise_affine
  self:register_parameter("weight", o.elementwise_affine and core.ones(shape) or nil)
  self:register_parameter("bias", (o.elementwise_affine and o.bias) and core.zeros(shape) or nil)
end

function LayerNorm:forward(x)
  local shape = self.normalized_shape
  local ok = core.is_tensor(x) and x:dim() >= #shape
  for i = 1, ok and #shape or 0 do ok = ok and x:size(x:dim() - #shape + i) == shape[i] end
  if not ok then
    error(string.format("LayerNorm: expected an input ending in %s, got %s", util.shape_str(shape),
      core.is_tensor(x) and util.shape_str(x) or type(x)), 2)
  end
  return F.layer_norm(x, shape, self.weight, self.bias, self.eps)
end

function LayerNorm:extra_repr()
  return string.format("%s, eps=%s, elementwise_affine=%s", repr(self.normalized_shape), repr(self.eps),
    repr(self.elementwise_affine))
end

return { GroupNorm = GroupNorm, InstanceNorm2d = InstanceNorm2d, LayerNorm = LayerNorm, BatchNorm2d = BatchNorm2d }
