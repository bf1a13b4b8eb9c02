-- Activations and Dropout: nn.SiLU, nn.ReLU, nn.Softplus, nn.GELU, nn.Tanh, nn.Sigmoid,
-- nn.Softmax, nn.Dropout.
--
--   nn.Softplus([{beta=1, threshold=20}])   nn.GELU([{approximate="none"|"tanh"}])
--   nn.Softmax(dim)                          -- dim 1-based (torch's dim=1 is our 2)
--   nn.Dropout([p=0.5])                      -- active in training mode only

local class = require "cunet.class"
local Module = require("cunet.nn.module").Module
local F = require "cunet.nn.functional"
local util = require "cunet.nn.util"

-- A parameterless elementwise module whose forward is fn.
local function simple(name, fn)
  local cls = class(name, Module)
  function cls:__init() Module.__init(self) end
  function cls:forward(x) return fn(x) end
  return cls
end

local M = {
  SiLU = simple("SiLU", F.silu),
  ReLU = simple("ReLU", F.relu),
  Tanh = simple("Tanh", F.tanh),
  Sigmoid = simple("Sigmoid", F.sigmoid),
}

local Softplus = class("Softplus", Module)
Softplus.defaults = { beta = 1, threshold = 20 }

function Softplus:__init(opts)
  Module.__init(self)
  local o = util.options(opts, Softplus.defaults, "Softplus")
  self.beta, self.threshold = o.beta, o.threshold
end

function Softplus:forward(x) return F.softplus(x, self.beta, self.threshold) end

function Softplus:extra_repr()
  return string.format("beta=%s, threshold=%s", util.repr(self.beta), util.repr(self.threshold))
end
M.Softplus = Softplus

local GELU = class("GELU", Module)
GELU.defaults = { approximate = "none" }

function GELU:__init(opts)
  Module.__init(self)
  local o = util.options(opts, GELU.defaults, "GELU")
  if o.approximate ~= "none" and o.approximate ~= "tanh" then
    error("GELU: approximate must be 'none' or 'tanh', got '" .. tostring(o.approximate) .. "'", 2)
  end
  self.approximate = o.approximate
end

function GELU:forward(x) return F.gelu(x, self.approximate) end

function GELU:extra_repr() return "approximate='" .. self.approximate .. "'" end
M.GELU = GELU

local Softmax = class("Softmax", Module)

function Softmax:__init(dim)
  Module.__init(self)
  if math.type(dim) ~= "integer" then error("Softmax: dim (1-based) is required, got " .. tostring(dim), 2) end
  self.dim = dim
end

function Softmax:forward(x) return F.softmax(x, self.dim) end

function Softmax:extra_repr() return "dim=" .. self.dim end
M.Softmax = Softmax

local Dropout = class("Dropout", Module)

--- nn.Dropout([p=0.5]): zeroes each element with probability p and scales the rest by 1/(1-p)
-- in training mode; the identity in evaluation mode.
function Dropout:__init(p)
  Module.__init(self)
  if type(p) == "table" then p = p.p end
  p = p or 0.5
  if type(p) ~= "number" or p < 0 or p > 1 then
    error("Dropout: probability must be between 0 and 1, got " .. tostring(p), 2)
  end
  self.p = p
end

function Dropout:forward(x)
  if not self.training or self.p == 0 then return x end
  return F.dropout(x, self.p, true)
end

function Dropout:extra_repr() return string.format("p=%s, inplace=False", util.repr(self.p)) end
M.Dropout = Dropout

return M
