-- cunet.optim — optimisers with PyTorch's update rules, gradient clipping, schedules, EMA.
--
--   local optim = require "cunet.optim"          -- also cn.optim
--   local opt = optim.AdamW(params, {lr = 3e-4, weight_decay = 0.01})
--   for step = 1, n do
--     optim.schedule.apply(opt, sched, step)
--     opt:zero_grad(); loss_of(batch):backward()
--     optim.clip_grad_norm(params, 1.0)
--     opt:step()
--   end
--
-- The updates are fused C kernels (engine/optim.c) that follow torch 1.13's single-tensor
-- implementations operation by operation; they write parameters in place with grad mode off.
-- See docs/optim.md.

local core = require "cunet.core"
local common = require "cunet.optim.common"
local collect_params, with_defaults, check_number = common.collect_params, common.with_defaults, common.check_number
local nonneg, fail, shape_str = common.nonneg, common.fail, common.shape_str
local to_scalar_string, from_scalar = common.to_scalar_string, common.from_scalar
local is_tensor = core.is_tensor
local kernels = core.optim

local optim = {}

-- ---- the optimiser base ----------------------------------------------------------------------
-- A class lists its hyperparameters (hyper = {{name, kind}}) and its per-parameter state tensors
-- (slots); state[i] holds them for parameter i once it has had a gradient.

local Optimizer = {}
Optimizer.__index = Optimizer

local function new_optimizer(class, params, opts)
  local self = setmetatable({}, class)
  self.params = collect_params(params, class.name)
  local o = with_defaults(class.name, opts, class.defaults)
  for k, v in pairs(o) do self[k] = v end
  class.validate(self)
  self.state = {}
  return self
end

function Optimizer:__tostring()
  local parts = {}
  for _, h in ipairs(self.hyper) do parts[#parts + 1] = h[1] .. "=" .. tostring(self[h[1]]) end
  return string.format("%s(%s; %d parameters)", self.name, table.concat(parts, ", "), #self.params)
end

--- Drops every parameter's gradient (torch's zero_grad(set_to_none=True)).
function Optimizer:zero_grad()
  for _, p in ipairs(self.params) do p.grad = nil end
end

--- One update of every parameter that has a gradient (the others are skipped, as torch).
function Optimizer:step()
  check_number(self.name, "learning rate", self.lr, nonneg, "must be a number >= 0")
  core.no_grad(self.update, self)
end

--- Snapshot of the state: tensors (name -> a copy) and scalars (name -> string), ready for
-- cn.save(path, tensors, scalars). Tensor names are "state.<i>.<slot>", i the 1-based parameter.
function Optimizer:state_dict()
  local tensors = {}
  local scalars = { type = self.name, n_params = to_scalar_string(#self.params) }
  for _, h in ipairs(self.hyper) do scalars[h[1]] = to_scalar_string(self[h[1]]) end
  for i = 1, #self.params do
    local st = self.state[i]
    if st then
      for _, slot in ipairs(self.slots) do
        if st[slot] then tensors["state." .. i .. "." .. slot] = st[slot]:clone() end
      end
      if st.step then scalars["state." .. i .. ".step"] = to_scalar_string(st.step) end
    end
  end
  return tensors, scalars
end

--- Restores a state_dict (tensors are copied), hyperparameters included (as torch). Checks the
-- optimiser type, the parameter count and every shape before changing anything.
function Optimizer:load_state_dict(tensors, scalars)
  local fname = self.name .. ":load_state_dict"
  if type(tensors) ~= "table" or type(scalars) ~= "table" then
    fail(fname, "expected (tensors, scalars) as returned by state_dict(), got (%s, %s)", type(tensors), type(scalars))
  end
  if scalars.type ~= self.name then
    fail(fname, "the state is from %s, not %s", tostring(scalars.type), self.name)
  end
  local n = from_scalar(fname, scalars, "n_params", "integer")
  if n ~= #self.params then
    fail(fname, "the state is for %d parameters, this optimiser has %d", n, #self.params)
  end
  local hyper = {}
  for _, h in ipairs(self.hyper) do hyper[h[1]] = from_scalar(fname, scalars, h[1], h[2]) end
  local known_slot = {}
  for _, slot in ipairs(self.slots) do known_slot[slot] = true end
  local state = {}
  for key, t in pairs(tensors) do
    local i, slot = tostring(key):match("^state%.(%d+)%.([%w_]+)$")
    i = tonumber(i)
    if not i or not known_slot[slot] then fail(fname, "unexpected tensor '%s' for %s", tostring(key), self.name) end
    if i < 1 or i > n then fail(fname, "tensor '%s' names parameter %d of %d", key, i, n) end
    if not is_tensor(t) then fail(fname, "'%s' is a %s, not a tensor", key, type(t)) end
    local want = self.params[i]:shape()
    if shape_str(t:shape()) ~= shape_str(want) then
      fail(fname, "'%s' has shape %s but parameter %d has shape %s", key, shape_str(t:shape()), i, shape_str(want))
    end
    state[i] = state[i] or {}
    state[i][slot] = t:detach():clone()
  end
  for key in pairs(scalars) do
    local i = tostring(key):match("^state%.(%d+)%.step$")
    i = tonumber(i)
    if i then
      if i < 1 or i > n then fail(fname, "scalar '%s' names parameter %d of %d", key, i, n) end
      state[i] = state[i] or {}
      state[i].step = from_scalar(fname, scalars, key, "integer")
    end
  end
  for i, st in pairs(state) do self.check_state(self, fname, i, st, hyper) end
  local trial = setmetatable({}, getmetatable(self)) -- validate before touching self
  for k, v in pairs(hyper) do trial[k] = v end
  self.validate(trial)
  for k, v in pairs(hyper) do self[k] = v end
  self.state = state
end

-- ---- SGD -------------------------------------------------------------------------------------

local SGD = setmetatable({}, {__index = Optimizer})
SGD.__index = SGD
SGD.__tostring = Optimizer.__tostring
SGD.name = "SGD"
SGD.defaults = { lr = false, momentum = 0, dampening = 0, weight_decay = 0, nesterov = false }
SGD.hyper = { {"lr", "number"}, {"momentum", "number"}, {"dampening", "number"}, {"weight_decay", "number"},
              {"nesterov", "boolean"} }
SGD.slots = { "momentum_buffer" }

function SGD.validate(self)
  if self.lr == false then fail("SGD", "the learning rate is required: optim.SGD(params, {lr = 0.01})") end
  check_number("SGD", "learning rate", self.lr, nonneg, "must be >= 0")
  check_number("SGD", "momentum", self.momentum, nonneg, "must be >= 0")
  check_number("SGD", "dampening", self.dampening, function() return true end, "must be a number")
  check_number("SGD", "weight_decay", self.weight_decay, nonneg, "must be >= 0")
  if type(self.nesterov) ~= "boolean" then fail("SGD", "nesterov must be a boolean") end
  if self.nesterov and (self.momentum <= 0 or self.dampening ~= 0) then
    fail("SGD", "Nesterov momentum requires a momentum > 0 and zero dampening")
  end
end

function SGD.check_state(_, fname, i, st, hyper)
  if st.step then fail(fname, "SGD keeps no step count (got one for parameter %d)", i) end
  if st.momentum_buffer and hyper.momentum == 0 then
    fail(fname, "a momentum buffer for parameter %d but momentum is 0", i)
  end
end

function SGD.update(self)
  local lr, momentum, dampening, wd, nesterov = self.lr, self.momentum, self.dampening, self.weight_decay, self.nesterov
  for i, p in ipairs(self.params) do
    local g = p.grad
    if g then
      local buf, first = nil, false
      if momentum ~= 0 then
        local st = self.state[i]
        if not st then st = {}; self.state[i] = st end
        buf = st.momentum_buffer
        if not buf then
          buf = core.zeros_like(p)
          st.momentum_buffer, first = buf, true
        end
      end
      kernels.sgd_step(p, g, buf, lr, momentum, dampening, wd, nesterov, first)
    end
  end
end

--- optim.SGD(params, {lr=, momentum=0, dampening=0, weight_decay=0, nesterov=false})
function optim.SGD(params, opts) return new_optimizer(SGD, params, opts) end

-- ---- Adam / AdamW ----------------------------------------------------------------------------

local function adam_class(name, decoupled, default_wd)
  local C = setmetatable({}, {__index = Optimizer})
  C.__index = C
  C.__tostring = Optimizer.__tostring
  C.name = name
  C.decoupled = decoupled
  C.defaults = { lr = 1e-3, betas = false, eps = 1e-8, weight_decay = default_wd, amsgrad = false }
  C.hyper = { {"lr", "number"}, {"beta1", "number"}, {"beta2", "number"}, {"eps", "number"},
              {"weight_decay", "number"}, {"amsgrad", "boolean"} }
  C.slots = { "exp_avg", "exp_avg_sq", "max_exp_avg_sq" }

  function C.validate(self)
    if self.betas ~= nil then
      if self.betas == false then self.betas = {0.9, 0.999} end
      if type(self.betas) ~= "table" or #self.betas ~= 2 then fail(name, "betas must be a table {beta1, beta2}") end
      self.beta1, self.beta2 = self.betas[1], self.betas[2]
      self.betas = nil
    end
    local in01 = function(v) return v >= 0 and v < 1 end
    check_number(name, "learning rate", self.lr, nonneg, "must be >= 0")
    check_number(name, "beta1", self.beta1, in01, "must be in [0, 1)")
    check_number(name, "beta2", self.beta2, in01, "must be in [0, 1)")
    check_number(name, "eps", self.eps, nonneg, "must be >= 0")
    check_number(name, "weight_decay", self.weight_decay, nonneg, "must be >= 0")
    if type(self.amsgrad) ~= "boolean" then fail(name, "amsgrad must be a boolean") end
  end

  function C.check_state(_, fname, i, st, hyper)
    if not st.step or st.step < 1 then fail(fname, "parameter %d has state tensors but no step count >= 1", i) end
    if not (st.exp_avg and st.exp_avg_sq) then fail(fname, "parameter %d lacks exp_avg or exp_avg_sq", i) end
    if hyper.amsgrad and not st.max_exp_avg_sq then fail(fname, "parameter %d lacks max_exp_avg_sq (amsgrad)", i) end
    if not hyper.amsgrad and st.max_exp_avg_sq then fail(fname, "max_exp_avg_sq for parameter %d but amsgrad is off", i) end
  end

  function C.update(self)
    local lr, b1, b2, eps, wd, ams = self.lr, self.beta1, self.beta2, self.eps, self.weight_decay, self.amsgrad
    for i, p in ipairs(self.params) do
      local g = p.grad
      if g then
        local st = self.state[i]
        if not st then
          st = { step = 0, exp_avg = core.zeros_like(p), exp_avg_sq = core.zeros_like(p),
                 max_exp_avg_sq = ams and core.zeros_like(p) or nil }
          self.state[i] = st
        end
        st.step = st.step + 1
        kernels.adam_step(p, g, st.exp_avg, st.exp_avg_sq, st.max_exp_avg_sq, st.step, lr, b1, b2, eps, wd, decoupled)
      end
    end
  end
  return C
end

local Adam = adam_class("Adam", false, 0)
local AdamW = adam_class("AdamW", true, 1e-2)

--- optim.Adam(params, {lr=1e-3, betas={0.9, 0.999}, eps=1e-8, weight_decay=0, amsgrad=false})
function optim.Adam(params, opts) return new_optimizer(Adam, params, opts) end
--- optim.AdamW(params, {lr=1e-3, betas={0.9, 0.999}, eps=1e-8, weight_decay=1e-2, amsgrad=false})
function optim.AdamW(params, opts) return new_optimizer(AdamW, params, opts) end

-- ---- gradient clipping -----------------------------------------------------------------------

local function f32(x) return (string.unpack("f", string.pack("f", x))) end

--- Scales the gradients of params together so that their total norm_type-norm is at most
-- max_norm, as torch.nn.utils.clip_grad_norm_: coef = max_norm / (total + 1e-6), applied when < 1.
-- Parameters without a gradient are skipped. Returns the total norm (before clipping).
function optim.clip_grad_norm(params, max_norm, norm_type)
  local list = collect_params(params, "clip_grad_norm", true)
  norm_type = norm_type or 2
  check_number("clip_grad_norm", "max_norm", max_norm, function() return true end, "must be a number")
  check_number("clip_grad_norm", "norm_type", norm_type, nonneg, "must be >= 0 or math.huge")
  local grads = {}
  for _, p in ipairs(list) do
    local g = p.grad
    if g then grads[#grads + 1] = g end
  end
  if #grads == 0 then return 0.0 end
  local total = kernels.grad_norm(grads, norm_type)
  -- torch computes the coefficient on float32 tensors, max_norm / t as reciprocal(t) * max_norm
  local coef = f32(f32(1 / f32(f32(total) + f32(1e-6))) * f32(max_norm))
  if not (coef >= 1) then -- NaN scales too, as torch does
    for _, g in ipairs(grads) do kernels.scale_(g, coef) end
  end
  return total
end

--- The total norm of the gradients of params (no clipping); nil-grad parameters are skipped.
function optim.grad_norm(params, norm_type)
  local list = collect_params(params, "grad_norm", true)
  norm_type = norm_type or 2
  check_number("grad_norm", "norm_type", norm_type, nonneg, "must be >= 0 or math.huge")
  local grads = {}
  for _, p in ipairs(list) do
    local g = p.grad
    if g then grads[#grads + 1] = g end
  end
  return kernels.grad_norm(grads, norm_type)
end

optim.schedule = require "cunet.optim.schedule"
optim.EMA = require "cunet.optim.ema"
optim.collect_params = collect_params

return optim
