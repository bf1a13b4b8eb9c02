-- nn.ODEBlock and nn.SecondOrderODEBlock — layers whose output is the solution of an ODE.
--
--   local block = nn.ODEBlock(func, {t1 = 1, method = "rk4", steps = 1})
--   local y = block(x, cond)            -- solves dz/dt = func(t, z, cond) from z(0) = x, returns z(t1)
--
--   local block = nn.SecondOrderODEBlock(accel, init_velocity, {form = "second_order"})
--   local y = block(x, cond)            -- x'' = accel(t, x, x', cond), x'(0) = init_velocity(x, cond)
--   local y = block:solve(x, v0, cond)  -- the same from a given x'(0) = v0
--
-- func / accel / init_velocity are modules (their parameters become the block's) or functions.
-- Extra arguments after x (e.g. a time embedding) are handed to them on every evaluation; with the
-- adjoint method those that require grad are added to the adjoint's parameters, so gradients reach
-- them (and, through them, whatever produced them). See docs/ode.md.
--
-- SecondOrderODEBlock forms:
--   "second_order" (default, the paper's §4.1): the state is (x, v) with x' = v, v' = accel(t, x, v, ...)
--   "augmented" (the authors' notebook, as ANODE): the state is cat(x, v) along channels and accel
--   maps it to its whole derivative: s' = accel(t, s, ...).

local core = require "cunet.core"
local class = require "cunet.class"
local Module = require("cunet.nn.module").Module
local util = require "cunet.nn.util"
local ode = require "cunet.ode"

local M = {}

-- The layers' defaults (ODEBlock.defaults, SecondOrderODEBlock.defaults), the one place they live.
-- A layer's, not cn.odeint's (dopri5 at torchdiffeq's 1e-7 / 1e-9, engine/ode.h): one rk4 step over
-- [0, 1], a fixed cost per forward as a layer wants; the tolerances, for a layer given an adaptive
-- method, within float32's reach (1e-7 is at its rounding edge: docs/ode.md, "Solver defaults").
-- The continuous U-Net sets its own (continuous_unet.defaults: the authors' rk4_38).
local ODE_DEFAULTS = {
  t0 = 0, t1 = 1, method = "rk4", steps = 1, step_size = false, rtol = 1e-5, atol = 1e-6,
  adjoint = false, max_steps = 100000, return_trajectory = false, times = false,
}

local function solver_options(o, params)
  return {
    method = o.method, steps = o.steps, step_size = o.step_size or nil, rtol = o.rtol, atol = o.atol,
    adjoint = o.adjoint, max_steps = o.max_steps, params = params,
  }
end

local function callable(v)
  return type(v) == "function" or (type(v) == "table" and getmetatable(v) and getmetatable(v).__call ~= nil)
end

-- The adjoint's parameter list: the dynamics modules' parameters plus extra tensor arguments
-- that require grad.
local function adjoint_params(modules, extras)
  local params = {}
  for _, m in ipairs(modules) do
    if type(m) == "table" and type(m.parameters) == "function" then
      for _, p in ipairs(m:parameters()) do params[#params + 1] = p end
    end
  end
  for i = 1, extras.n do
    local e = extras[i]
    if core.is_tensor(e) and e:requires_grad() then params[#params + 1] = e end
  end
  return params
end

local function times_of(o)
  if o.times then return o.times end
  return {o.t0, o.t1}
end

local ODEBlock = class("ODEBlock", Module)
M.ODEBlock = ODEBlock
ODEBlock.defaults = ODE_DEFAULTS

--- func(t, z, ...) -> dz/dt. opts: t0 (0), t1 (1) or times (a list), method ("rk4"), steps (1)
-- or step_size, rtol/atol (adaptive methods), adjoint (false), return_trajectory (false).
function ODEBlock:__init(func, opts)
  Module.__init(self)
  if not callable(func) then error("ODEBlock: func must be a module or a function, got " .. type(func), 2) end
  self.options = util.options(opts, ODEBlock.defaults, "ODEBlock")
  if class.is_instance(func, Module) then self.func = func else rawset(self, "_func_fn", func) end
  self.stats = nil
end

function ODEBlock:dynamics()
  return rawget(self, "_func_fn") or self.func
end

function ODEBlock:forward(x, ...)
  local extras = table.pack(...)
  local func = self:dynamics()
  local f = function(t, z) return func(t, z, table.unpack(extras, 1, extras.n)) end
  local o = self.options
  local sol, stats = ode.odeint(f, x, times_of(o), solver_options(o, o.adjoint and adjoint_params({func}, extras) or nil))
  self.stats = stats
  if o.return_trajectory then return sol end
  return sol[#sol]
end

function ODEBlock:extra_repr()
  local o = self.options
  return string.format("method=%s, t=[%s, %s], steps=%s, adjoint=%s", o.method, tostring(o.t0), tostring(o.t1),
    tostring(o.steps), util.repr(o.adjoint))
end

local SecondOrderODEBlock = class("SecondOrderODEBlock", Module)
M.SecondOrderODEBlock = SecondOrderODEBlock
SecondOrderODEBlock.defaults = (function()
  local d = {}
  for k, v in pairs(ODE_DEFAULTS) do d[k] = v end
  d.form = "second_order"
  d.return_velocity = false
  return d
end)()

--- accel(t, x, v, ...) -> x'' ("second_order") or accel(t, s, ...) -> s' ("augmented");
-- init_velocity(x, ...) -> v0 (a module, a function, or nil for v0 = 0). opts as ODEBlock plus
-- form and return_velocity (return {x, v} instead of x; for "augmented", the whole state).
function SecondOrderODEBlock:__init(accel, init_velocity, opts)
  Module.__init(self)
  if not callable(accel) then error("SecondOrderODEBlock: accel must be a module or a function, got " .. type(accel), 2) end
  if init_velocity ~= nil and not callable(init_velocity) then
    error("SecondOrderODEBlock: init_velocity must be a module, a function or nil, got " .. type(init_velocity), 2)
  end
  self.options = util.options(opts, SecondOrderODEBlock.defaults, "SecondOrderODEBlock")
  if self.options.form ~= "second_order" and self.options.form ~= "augmented" then
    error("SecondOrderODEBlock: form must be 'second_order' or 'augmented', got " .. tostring(self.options.form), 2)
  end
  if class.is_instance(accel, Module) then self.accel = accel else rawset(self, "_accel_fn", accel) end
  if class.is_instance(init_velocity, Module) then self.init_velocity = init_velocity
  elseif init_velocity then rawset(self, "_v0_fn", init_velocity) end
end

--- block(x, ...): integrates from x and v0 = init_velocity(x, ...) (zeros without one).
function SecondOrderODEBlock:forward(x, ...)
  local v0fn = rawget(self, "_v0_fn") or self.init_velocity
  local v0 = v0fn and v0fn(x, ...) or core.zeros_like(x)
  return self:solve(x, v0, ...)
end

--- block:solve(x, v0, ...): integrates from the given initial position x and velocity v0 (the
-- block's init_velocity is not called; its parameters still join the adjoint's). Returns what
-- forward does.
function SecondOrderODEBlock:solve(x, v0, ...)
  if not (core.is_tensor(x) and core.is_tensor(v0)) then
    error(string.format("SecondOrderODEBlock:solve: x and v0 must be tensors, got %s and %s", type(x), type(v0)), 2)
  end
  local extras = table.pack(...)
  local accel = rawget(self, "_accel_fn") or self.accel
  local v0fn = rawget(self, "_v0_fn") or self.init_velocity
  local o = self.options
  local params = o.adjoint and adjoint_params({accel, v0fn}, extras) or nil
  local sol, stats
  if o.form == "second_order" then
    local f = function(t, s) return {s[2], accel(t, s[1], s[2], table.unpack(extras, 1, extras.n))} end
    sol, stats = ode.odeint(f, {x, v0}, times_of(o), solver_options(o, params))
    self.stats = stats
    if o.return_trajectory then return sol end
    local n = sol[1]:size(1)
    if o.return_velocity then return {sol[1][n], sol[2][n]} end
    return sol[1][n]
  end
  local f = function(t, s) return accel(t, s, table.unpack(extras, 1, extras.n)) end
  sol, stats = ode.odeint(f, core.cat({x, v0}, 2), times_of(o), solver_options(o, params))
  self.stats = stats
  if o.return_trajectory then return sol end
  local last = sol[sol:size(1)]
  if o.return_velocity then return last end
  return last:narrow(2, 1, x:size(2))
end

function SecondOrderODEBlock:extra_repr()
  local o = self.options
  return string.format("form=%s, method=%s, t=[%s, %s], steps=%s, adjoint=%s", o.form, o.method, tostring(o.t0),
    tostring(o.t1), tostring(o.steps), util.repr(o.adjoint))
end

return M
