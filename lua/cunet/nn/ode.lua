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
--
-- Regularised dynamics (RNODE, Finlay et al. 2020, "How to train your neural ODE"): with
-- regularize = {kinetic = λ1, jacobian = λ2}, a forward in training mode with grad on integrates
-- the kinetic energy ∫‖f‖² dt and a Hutchinson estimate ∫‖εᵀ ∂f/∂z‖² dt of the Jacobian's squared
-- Frobenius norm alongside the state; block:penalties() returns them, weighted by λ, for the loss.

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
  adjoint = false, max_steps = 100000, return_trajectory = false, times = false, regularize = false,
}
-- The keys of the regularize option (RNODE), defaults included: λ = 0 leaves a penalty out; the
-- noise ε of the Jacobian estimate is "gaussian" (the paper's) or "rademacher".
local REGULARIZE_DEFAULTS = {kinetic = 0, jacobian = 0, noise = "gaussian"}

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

-- The checked regularize option of a block's options (nil when off), raised at the layer's caller.
local function regularize_options(o, who)
  if not o.regularize then return nil end
  if type(o.regularize) ~= "table" then
    error(string.format("%s: regularize must be a table {kinetic=, jacobian=, noise=}, got %s", who, type(o.regularize)), 4)
  end
  local r = util.options(o.regularize, REGULARIZE_DEFAULTS, who .. " regularize", 2)
  for _, k in ipairs{"kinetic", "jacobian"} do
    if type(r[k]) ~= "number" or r[k] < 0 or r[k] ~= r[k] then
      error(string.format("%s: regularize.%s must be a number >= 0, got %s", who, k, tostring(r[k])), 4)
    end
  end
  if r.noise ~= "gaussian" and r.noise ~= "rademacher" then
    error(string.format("%s: regularize.noise must be \"gaussian\" or \"rademacher\", got %s", who, tostring(r.noise)), 4)
  end
  if r.kinetic == 0 and r.jacobian == 0 then return nil end
  if o.adjoint then
    error(who .. ": regularize is not supported with adjoint = true (the penalties are integrated with the " ..
      "state and differentiated through the solver; use adjoint = false)", 4)
  end
  return r
end

-- Σ over the list's tensors of each sample's sum of squares: a [B] tensor (B the first dim).
local function per_sample_squares(list, batch)
  local total
  for _, t in pairs(list) do
    local sq = (t * t):reshape{batch, -1}:sum(2)
    total = total and total + sq or sq
  end
  return total
end

-- RNODE (Finlay et al. 2020, eq. 5 and §4): solves the state zs (a list of [B, ...] tensors) with
-- f(t, zs) -> list of derivatives, augmented by E_k' = ‖f‖²/d and E_j' = ‖εᵀ ∂f/∂z‖²/d per sample
-- (d the elements of one sample's state, so λ does not scale with the size), from 0, with one ε
-- per solve. Returns the state's solution (a list), stats, and the penalties: each the batch mean
-- of E(t_end), unweighted, with graphs to the parameters (and to zs).
local function rnode_odeint(f, zs, times, solver_opts, reg)
  local batch, n = zs[1]:size(1), #zs
  local d = 0
  for k = 1, n do d = d + zs[k]:numel() end
  d = d / batch
  local eps
  if reg.jacobian > 0 then
    eps = {}
    for k = 1, n do
      local shape = zs[k]:shape()
      eps[k] = reg.noise == "gaussian" and core.randn(shape) or core.randint(0, 2, shape) * 2 - 1
    end
  end
  local function augmented(t, s)
    local z = {}
    for k = 1, n do
      -- ∂f/∂z needs z in the graph: a state without one (the initial stage from data) becomes a leaf
      z[k] = (eps and not s[k]:requires_grad()) and s[k]:detach():requires_grad(true) or s[k]
    end
    local dz = f(t, z)
    local out = {}
    for k = 1, n do out[k] = dz[k] end
    if reg.kinetic > 0 then out[#out + 1] = per_sample_squares(dz, batch) / d end
    if eps then
      -- only derivatives with a graph take part (x' = v of a constant-free system has one; -g none)
      local outs, gouts = {}, {}
      for k = 1, n do
        if dz[k]:requires_grad() then outs[#outs + 1], gouts[#gouts + 1] = dz[k], eps[k] end
      end
      local vjp = #outs > 0 and core.autograd_grad(outs, z, gouts, {create_graph = true, allow_unused = true}) or {}
      out[#out + 1] = (per_sample_squares(vjp, batch) or core.zeros{batch}) / d
    end
    return out
  end
  local state = {}
  for k = 1, n do state[k] = zs[k] end
  if reg.kinetic > 0 then state[#state + 1] = core.zeros{batch} end
  if eps then state[#state + 1] = core.zeros{batch} end
  local sol, stats = ode.odeint(augmented, state, times, solver_opts)
  local nt, at = #times, n
  local penalties = {}
  if reg.kinetic > 0 then at = at + 1; penalties.kinetic = sol[at][nt]:mean() end
  if eps then at = at + 1; penalties.jacobian = sol[at][nt]:mean() end
  local states = {}
  for k = 1, n do states[k] = sol[k] end
  return states, stats, penalties
end

-- The block's solve: ode.odeint's, or RNODE's when the block regularises, is in training mode and
-- grad is on (in eval or under no_grad, no penalty and no extra cost). z0 a tensor or a list, and
-- f(t, z) on the same; sets block.stats and the block's penalties (nil when none were computed).
local function block_odeint(block, f, z0, params)
  local o = block.options
  local reg = rawget(block, "_regularize")
  rawset(block, "_penalties", nil)
  local sol, stats
  if reg and block.training and core.is_grad_enabled() then
    local is_list = not core.is_tensor(z0)
    local g = is_list and f or function(t, s) return {f(t, s[1])} end
    local penalties
    sol, stats, penalties = rnode_odeint(g, is_list and z0 or {z0}, times_of(o), solver_options(o, params), reg)
    if not is_list then sol = sol[1] end
    rawset(block, "_penalties", penalties)
  else
    sol, stats = ode.odeint(f, z0, times_of(o), solver_options(o, params))
  end
  block.stats = stats
  return sol
end

-- block:penalties() for both blocks: {kinetic = λ1·K, jacobian = λ2·J, total = their sum} as 0-d
-- tensors with graphs, K and J the batch means of RNODE's integrals (rnode_odeint) from the last
-- forward; an entry is nil when its λ is 0, and the table is empty (total = 0, a number) when the
-- last forward computed none (no regularize, eval mode, no_grad), so `loss + p.total` always works.
local function penalties_of(block)
  local raw, reg = rawget(block, "_penalties"), rawget(block, "_regularize")
  local out, total = {}, 0
  if raw then
    for _, k in ipairs{"kinetic", "jacobian"} do
      if raw[k] then
        out[k] = raw[k] * reg[k]
        total = out[k] + total
      end
    end
  end
  out.total = total
  return out
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
  rawset(self, "_regularize", regularize_options(self.options, "ODEBlock"))
  if class.is_instance(func, Module) then self.func = func else rawset(self, "_func_fn", func) end
  self.stats = nil
end

--- block:penalties() -> {kinetic=, jacobian=, total=}: the last training forward's RNODE
-- penalties, already weighted by the regularize option's λ (penalties_of above).
ODEBlock.penalties = penalties_of

function ODEBlock:dynamics()
  return rawget(self, "_func_fn") or self.func
end

function ODEBlock:forward(x, ...)
  local extras = table.pack(...)
  local func = self:dynamics()
  local f = function(t, z) return func(t, z, table.unpack(extras, 1, extras.n)) end
  local o = self.options
  local sol = block_odeint(self, f, x, o.adjoint and adjoint_params({func}, extras) or nil)
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
  rawset(self, "_regularize", regularize_options(self.options, "SecondOrderODEBlock"))
  if class.is_instance(accel, Module) then self.accel = accel else rawset(self, "_accel_fn", accel) end
  if class.is_instance(init_velocity, Module) then self.init_velocity = init_velocity
  elseif init_velocity then rawset(self, "_v0_fn", init_velocity) end
end

--- block:penalties(): as ODEBlock's; the "second_order" form's f is the whole (v, accel).
SecondOrderODEBlock.penalties = penalties_of

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
  local sol
  if o.form == "second_order" then
    local f = function(t, s) return {s[2], accel(t, s[1], s[2], table.unpack(extras, 1, extras.n))} end
    sol = block_odeint(self, f, {x, v0}, params)
    if o.return_trajectory then return sol end
    local n = sol[1]:size(1)
    if o.return_velocity then return {sol[1][n], sol[2][n]} end
    return sol[1][n]
  end
  local f = function(t, s) return accel(t, s, table.unpack(extras, 1, extras.n)) end
  sol = block_odeint(self, f, core.cat({x, v0}, 2), params)
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
