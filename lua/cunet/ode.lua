-- ode — ODE solvers with gradients, torchdiffeq-style.
--
--   local sol, stats = cn.odeint(f, z0, ts, {method = "dopri5", rtol = 1e-6, atol = 1e-8})
--
-- f(t, z) returns dz/dt; z is a tensor or a table of tensors (the state), t a number. ts is a
-- table (or 1-D tensor) of times, increasing or decreasing; the solution stacks the state at every
-- time along a new first dim ([#ts, ...], or a table of such tensors). stats = {nfe, accepted,
-- rejected}. The solver steps over the whole span [ts[1], ts[#ts]] with its own step control and
-- interpolates the outputs between steps (dense output): output times never change the steps.
--
-- Gradients: by default through the solver's operations (memory grows with the steps). With
-- opts.adjoint = true, by the adjoint sensitivity method (Chen et al. 2018): the forward solve keeps
-- no graph, and the backward pass solves the augmented system [z, a_z, a_theta] backwards with
-- vector-Jacobian products of f, in memory independent of the number of steps. The parameters
-- theta are opts.params: a list of tensors, or anything with :parameters() (an nn module); list
-- there every tensor f uses that needs a gradient (non-leaf tensors such as a time embedding too).
-- opts.adjoint_norm = "seminorm" leaves the parameter gradients out of the backward solve's error
-- norm (Kidger et al. 2021): the same gradients for fewer backward evaluations.
--
-- cn.ode.trace_estimate(f_out, z, opts): Hutchinson's unbiased estimate of tr(∂f_out/∂z) from
-- vector-Jacobian products (FFJORD's divergence estimate).

local core = require "cunet.core" -- not "cunet": that one requires this module
local cn = core
local options = require "cunet.options"

local M = {}

-- The options the engine's solver reads (its list, engine/lua/l_ode.c), and those only this module
-- reads (stripped before the engine sees the table, which rejects keys it does not know).
local ENGINE_OPTIONS = core.odeint_options
local LUA_OPTIONS = {adjoint = true, params = true, adjoint_method = true, adjoint_rtol = true, adjoint_atol = true,
  adjoint_norm = true}
local ADJOINT_NORMS = {full = true, seminorm = true}
local KNOWN = {table.unpack(ENGINE_OPTIONS)}
for k in pairs(LUA_OPTIONS) do KNOWN[#KNOWN + 1] = k end

-- opts without the keys only this module reads.
local function engine_options(opts)
  local o = {}
  for _, k in ipairs(ENGINE_OPTIONS) do o[k] = opts[k] end
  return o
end

local function times_of(ts)
  if cn.is_tensor(ts) then
    if ts:dim() ~= 1 then error("odeint: ts must be 1-D", 3) end
    return ts:totable()
  end
  if type(ts) ~= "table" then error("odeint: ts must be a table of times or a 1-D tensor, got " .. type(ts), 3) end
  return ts
end

local function params_of(opts)
  local p = opts.params
  if p == nil then return {} end
  if type(p) == "table" and type(p.parameters) == "function" then return p:parameters() end
  if cn.is_tensor(p) then return {p} end
  return p
end

local function as_list(z)
  if cn.is_tensor(z) then return {z}, false end
  if type(z) ~= "table" or #z == 0 then error("odeint: the state must be a tensor or a table of tensors", 3) end
  return z, true
end

-- The adjoint method as a custom autograd function over the flattened solution.
local function odeint_adjoint(f, z0, ts, opts)
  local zs, is_table = as_list(z0)
  local params = params_of(opts)
  local n = #zs
  local function wrap(list) if is_table then return list end return list[1] end
  local function unwrap(z) if is_table then return z end return {z} end

  -- forward: no graph
  local sol, stats = cn.no_grad(core.odeint, f, z0, ts, engine_options(opts))
  if not is_table then sol = {sol} end
  local nt = #ts

  -- one output tensor [nt, total] holding every state (so one backward sees every gradient)
  local sizes, flat_parts = {}, {}
  for k = 1, n do
    sizes[k] = zs[k]:numel()
    flat_parts[k] = sol[k]:reshape{nt, sizes[k]}
  end
  local flat = cn.no_grad(cn.cat, flat_parts, 2)

  local inputs = {}
  for k = 1, n do inputs[#inputs + 1] = zs[k] end
  for _, p in ipairs(params) do inputs[#inputs + 1] = p end

  local backward_opts = engine_options(opts)
  backward_opts.method = opts.adjoint_method or opts.method
  backward_opts.rtol = opts.adjoint_rtol or opts.rtol
  backward_opts.atol = opts.adjoint_atol or opts.atol
  if opts.steps and not opts.step_size then
    -- fixed steps: `steps` spans the whole forward solve, and the backward one runs interval by
    -- interval, so it takes steps of the forward size
    backward_opts.steps = nil
    backward_opts.step_size = math.abs(ts[nt] - ts[1]) / opts.steps
  end
  -- the seminorm: the error norm covers z and a_z, not a_theta
  if opts.adjoint_norm == "seminorm" then backward_opts.norm_states = 2 * n end

  local function backward(g_flat)
    -- per-state views of the incoming gradient at each time
    local function grad_at(i)
      local row = g_flat[i]
      local out, at = {}, 1
      for k = 1, n do
        out[k] = row:narrow(1, at, sizes[k]):view(zs[k]:shape())
        at = at + sizes[k]
      end
      return out
    end
    local function state_at(i)
      local out = {}
      for k = 1, n do out[k] = sol[k][i] end
      return out
    end
    -- augmented state: z (n), a_z (n), a_theta (#params)
    local aug = {}
    local z = state_at(nt)
    local a = grad_at(nt)
    local function aug_dynamics(t, s)
      local zt, at = {}, {}
      for k = 1, n do zt[k], at[k] = s[k], s[n + k] end
      return cn.enable_grad(function()
        local zr = {}
        for k = 1, n do zr[k] = zt[k]:detach():requires_grad(true) end
        local dz = unwrap(f(t, wrap(zr)))
        local wrt = {}
        for k = 1, n do wrt[k] = zr[k] end
        for _, p in ipairs(params) do wrt[#wrt + 1] = p end
        -- only outputs with a graph take part (in x'' = -g, v' depends on nothing)
        local outs, gouts = {}, {}
        for k = 1, n do
          if dz[k]:requires_grad() then outs[#outs + 1], gouts[#gouts + 1] = dz[k], at[k] end
        end
        local vjp = {}
        if #outs > 0 then
          vjp = core.autograd_grad(outs, wrt, gouts, {allow_unused = true})
        else
          for j, w in ipairs(wrt) do vjp[j] = cn.zeros_like(w) end
        end
        local out = {}
        for k = 1, n do out[k] = dz[k]:detach() end
        for k = 1, n do out[n + k] = -vjp[k] end
        for j = 1, #params do out[2 * n + j] = -vjp[n + j] end
        return out
      end)
    end
    local a_theta = {}
    for j, p in ipairs(params) do a_theta[j] = cn.zeros_like(p) end
    local counts = {nfe = 0, accepted = 0, rejected = 0}
    stats.backward = counts
    for i = nt, 2, -1 do
      aug = {}
      for k = 1, n do aug[k] = z[k] end
      for k = 1, n do aug[n + k] = a[k] end
      for j = 1, #params do aug[2 * n + j] = a_theta[j] end
      local back, back_stats = core.odeint(aug_dynamics, aug, {ts[i], ts[i - 1]}, backward_opts)
      for k, v in pairs(back_stats) do counts[k] = counts[k] + v end
      z = state_at(i - 1) -- the forward solution at t_{i-1}, as torchdiffeq does
      local g_prev = grad_at(i - 1)
      for k = 1, n do a[k] = back[n + k][2] + g_prev[k] end
      for j = 1, #params do a_theta[j] = back[2 * n + j][2] end
    end
    local grads = {}
    for k = 1, n do grads[k] = a[k] end
    for j = 1, #params do grads[n + j] = a_theta[j] end
    return grads
  end

  flat = core.autograd_custom(inputs, flat, backward)
  local result, at = {}, 1
  for k = 1, n do
    local shape = {nt}
    for _, s in ipairs(zs[k]:shape()) do shape[#shape + 1] = s end
    result[k] = flat:narrow(2, at, sizes[k]):reshape(shape)
    at = at + sizes[k]
  end
  return wrap(result), stats
end

-- The initial state made contiguous once (a no-op for a contiguous one, differentiable): every
-- stage combines it with the stage values, and a strided z0 (the halves of a cU-Net level's
-- features) was copied again in each of those combinations.
local function contiguous_state(z0)
  if cn.is_tensor(z0) then return z0:is_contiguous() and z0 or z0:contiguous() end
  if type(z0) ~= "table" then return z0 end
  local out, changed = {}, false
  for i, z in ipairs(z0) do
    out[i] = z
    if cn.is_tensor(z) and not z:is_contiguous() then out[i], changed = z:contiguous(), true end
  end
  return changed and out or z0
end

--- cn.odeint(f, z0, ts [, opts]) -> solution, stats (see the top of this file).
-- opts: method (euler, midpoint, heun, rk4, rk4_38, bosh3, dopri5), rtol, atol, step_size or steps
-- (fixed-step methods: steps over the whole span), first_step, max_steps, safety, pi_beta,
-- norm_states (defaults: cn_ode_default_opts in engine/ode.h, the one place they live: dopri5 at
-- torchdiffeq's tolerances; docs/ode.md, "Solver defaults"), adjoint (false),
-- params, adjoint_method / adjoint_rtol / adjoint_atol, adjoint_norm ("full" or "seminorm"). With
-- the adjoint, stats.backward = {nfe, accepted, rejected} of the backward solve once it has run.
function M.odeint(f, z0, ts, opts)
  opts = options.check(opts, KNOWN, "odeint")
  if opts.adjoint_norm ~= nil and not ADJOINT_NORMS[opts.adjoint_norm] then
    error(string.format("odeint: adjoint_norm must be \"full\" or \"seminorm\", got %s", tostring(opts.adjoint_norm)), 2)
  end
  if type(f) ~= "function" and not (type(f) == "table" and getmetatable(f) and getmetatable(f).__call) then
    error("odeint: f must be a function or a callable module, got " .. type(f), 2)
  end
  local fn = type(f) == "function" and f or function(t, z) return f(t, z) end
  local times = times_of(ts)
  z0 = contiguous_state(z0)
  if opts.adjoint then return odeint_adjoint(fn, z0, times, opts) end
  local has_lua_option = false
  for k in pairs(opts) do has_lua_option = has_lua_option or LUA_OPTIONS[k] ~= nil end
  return core.odeint(fn, z0, times, has_lua_option and engine_options(opts) or opts)
end

local TRACE_DEFAULTS = {samples = 1, distribution = "rademacher", per_sample = false, create_graph = false}

--- cn.ode.trace_estimate(f_out, z [, opts]) -> estimate: Hutchinson's estimate of tr(∂f_out/∂z),
-- the mean over opts.samples of vᵀ (∂f_out/∂z) v with v random of z's shape ("rademacher": ±1,
-- the lower-variance default; "gaussian": N(0, 1)), each by one vector-Jacobian product
-- (cn.autograd.grad; the graph is kept for the caller). f_out must have z's shape and a graph to
-- z. Returns a 0-d tensor, or with per_sample = true a [B] tensor for a batch along z's first dim
-- (the trace of each sample's block: FFJORD's divergence, when f treats samples independently).
-- Unbiased: E[vᵀJv] = tr J for any v with E[v vᵀ] = I. With create_graph = true the estimate has a
-- graph (through double backward), so a loss holding it trains the parameters of f (FFJORD's
-- likelihood, a divergence penalty); without, it carries none and costs one plain backward a sample.
function M.trace_estimate(f_out, z, opts)
  local o = options.merge(opts, TRACE_DEFAULTS, "trace_estimate")
  if not cn.is_tensor(f_out) or not cn.is_tensor(z) then error("trace_estimate: f_out and z must be tensors", 2) end
  local fs, zs = f_out:shape(), z:shape()
  if table.concat(fs, ",") ~= table.concat(zs, ",") then
    error(string.format("trace_estimate: f_out [%s] must have z's shape [%s] (a square Jacobian)",
      table.concat(fs, ", "), table.concat(zs, ", ")), 2)
  end
  if math.type(o.samples) ~= "integer" or o.samples < 1 then
    error("trace_estimate: samples must be an integer >= 1, got " .. tostring(o.samples), 2)
  end
  local draw
  if o.distribution == "rademacher" then
    draw = function() return cn.randint(0, 2, zs) * 2 - 1 end
  elseif o.distribution == "gaussian" then
    draw = function() return cn.randn(zs) end
  else
    error("trace_estimate: distribution must be \"rademacher\" or \"gaussian\", got " .. tostring(o.distribution), 2)
  end
  if o.per_sample and #zs < 1 then error("trace_estimate: per_sample needs a batch dim", 2) end
  if not f_out:requires_grad() then
    error("trace_estimate: f_out has no graph (compute it from z with z:requires_grad(true), grad mode on)", 2)
  end
  local function estimate()
    local total
    for _ = 1, o.samples do
      local v = draw()
      local vjp = core.autograd_grad({f_out}, {z}, {v},
        {retain_graph = true, allow_unused = true, create_graph = o.create_graph == true})[1]
      local term = vjp and vjp * v or cn.zeros_like(v)
      term = o.per_sample and term:reshape{zs[1], -1}:sum(2) or term:sum()
      total = total and total + term or term
    end
    return total / o.samples
  end
  if o.create_graph then return estimate() end
  return cn.no_grad(estimate)
end

--- Turns a second-order system x'' = accel(t, x, v) into the first-order one on {x, v}.
function M.second_order(accel)
  return function(t, state)
    return {state[2], accel(t, state[1], state[2])}
  end
end

return M
