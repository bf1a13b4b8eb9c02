-- nn.init — in-place weight initialisers with PyTorch's names and rules (torch.nn.init), drawn
-- from the engine RNG (cn.rand / cn.randn), so cn.seed(n) makes a model reproducible.
--
--   nn.init.kaiming_uniform_(conv.weight, {a = math.sqrt(5)})   -- PyTorch's conv/linear default
--   nn.init.zeros_(conv.bias)
--
-- Each writes into the tensor outside autograd and returns it.

local core = require "cunet.core"
local options = require "cunet.options"

local init = {}

local function check(t, who)
  if not core.is_tensor(t) then error(string.format("nn.init.%s: expected a tensor, got %s", who, type(t)), 3) end
end

local function write(t, values)
  core.no_grad(function() t:copy_(values) end)
  return t
end

--- fan_in, fan_out of a weight as torch computes them: dims 2 and 1 times the receptive field
-- (the product of dims 3..). For ConvTranspose2d's [in, out/groups, kh, kw] this makes fan_in
-- (out/groups)·kh·kw, as torch does.
function init.calculate_fan_in_and_fan_out(t)
  check(t, "calculate_fan_in_and_fan_out")
  if t:dim() < 2 then
    error("nn.init: fan in and fan out can not be computed for a tensor with fewer than 2 dimensions", 2)
  end
  local receptive = 1
  for d = 3, t:dim() do receptive = receptive * t:size(d) end
  return t:size(2) * receptive, t:size(1) * receptive
end

--- The recommended gain of a nonlinearity (torch.nn.init.calculate_gain).
function init.calculate_gain(nonlinearity, param)
  local linear = { linear = true, conv1d = true, conv2d = true, conv3d = true, conv_transpose1d = true,
    conv_transpose2d = true, conv_transpose3d = true, sigmoid = true }
  if linear[nonlinearity] then return 1 end
  if nonlinearity == "tanh" then return 5 / 3 end
  if nonlinearity == "relu" then return math.sqrt(2) end
  if nonlinearity == "leaky_relu" then
    local slope = param or 0.01
    return math.sqrt(2 / (1 + slope * slope))
  end
  if nonlinearity == "selu" then return 3 / 4 end
  error("nn.init.calculate_gain: unsupported nonlinearity '" .. tostring(nonlinearity) .. "'", 2)
end

--- U(a, b) (defaults 0, 1).
function init.uniform_(t, a, b)
  check(t, "uniform_")
  a, b = a or 0, b or 1
  return write(t, core.rand(t:shape()) * (b - a) + a)
end

--- N(mean, std²) (defaults 0, 1).
function init.normal_(t, mean, std)
  check(t, "normal_")
  mean, std = mean or 0, std or 1
  return write(t, core.randn(t:shape()) * std + mean)
end

function init.constant_(t, value)
  check(t, "constant_")
  core.no_grad(function() t:fill_(value) end)
  return t
end

function init.zeros_(t) return init.constant_(t, 0) end
function init.ones_(t) return init.constant_(t, 1) end

local function kaiming_std(t, opts, who)
  opts = options.check(opts, {"a", "mode", "nonlinearity"}, "nn.init." .. who, 4)
  local a, mode, nonlinearity = opts.a or 0, opts.mode or "fan_in", opts.nonlinearity or "leaky_relu"
  local fan_in, fan_out = init.calculate_fan_in_and_fan_out(t)
  local fan = mode == "fan_in" and fan_in or mode == "fan_out" and fan_out or
      error(string.format("nn.init.%s: mode must be 'fan_in' or 'fan_out', got '%s'", who, tostring(mode)), 3)
  return init.calculate_gain(nonlinearity, a) / math.sqrt(fan)
end

--- kaiming_uniform_(t, {a=0, mode="fan_in", nonlinearity="leaky_relu"}): U(-bound, bound) with
-- bound = gain·sqrt(3 / fan). With a = sqrt(5) (PyTorch's default for conv and linear weights)
-- bound = 1 / sqrt(fan_in).
function init.kaiming_uniform_(t, opts)
  check(t, "kaiming_uniform_")
  local bound = math.sqrt(3) * kaiming_std(t, opts, "kaiming_uniform_")
  return init.uniform_(t, -bound, bound)
end

--- kaiming_normal_(t, {a=0, mode="fan_in", nonlinearity="leaky_relu"}): N(0, (gain / sqrt(fan))²).
function init.kaiming_normal_(t, opts)
  check(t, "kaiming_normal_")
  return init.normal_(t, 0, kaiming_std(t, opts, "kaiming_normal_"))
end

--- xavier_uniform_(t [, gain=1]): U(-b, b), b = gain·sqrt(6 / (fan_in + fan_out)).
function init.xavier_uniform_(t, gain)
  check(t, "xavier_uniform_")
  local fan_in, fan_out = init.calculate_fan_in_and_fan_out(t)
  local bound = (gain or 1) * math.sqrt(6 / (fan_in + fan_out))
  return init.uniform_(t, -bound, bound)
end

--- xavier_normal_(t [, gain=1]): N(0, gain²·2 / (fan_in + fan_out)).
function init.xavier_normal_(t, gain)
  check(t, "xavier_normal_")
  local fan_in, fan_out = init.calculate_fan_in_and_fan_out(t)
  return init.normal_(t, 0, (gain or 1) * math.sqrt(2 / (fan_in + fan_out)))
end

--- PyTorch's default for a conv/linear layer: weight kaiming_uniform_(a=√5), i.e.
-- U(-1/√fan_in, 1/√fan_in), then the bias (if any) from the same bound.
function init.default_affine_(weight, bias)
  init.kaiming_uniform_(weight, { a = math.sqrt(5) })
  if bias ~= nil then
    local fan_in = init.calculate_fan_in_and_fan_out(weight)
    local bound = fan_in > 0 and 1 / math.sqrt(fan_in) or 0
    init.uniform_(bias, -bound, bound)
  end
end

return init
