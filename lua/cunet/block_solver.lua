-- block_solver — the solver of a cU-Net checkpoint's ODE blocks at evaluation time, for the sampling
-- recipes (recipes/sample.lua, recipes/fid_vs_steps.lua): the --block-method/--block-rtol/--block-atol
-- options, their application to the model, and a meter of the blocks' function evaluations per
-- forward (the sum of the blocks' stats.nfe, ContinuousUNet:nfe()). See docs/ode.md "Adaptive cU-Net
-- blocks".
--
--   local block_solver = require "cunet.block_solver"
--   for _, o in ipairs(block_solver.cli_options()) do spec.options[#spec.options + 1] = o end
--   ...
--   local solver = block_solver.apply(model, args, fail)  -- nil when no --block-* option was given
--   local meter = block_solver.meter(model)               -- nil for a model without ODE blocks
--   ... model forwards ...
--   meter:per_forward()                                   -- mean blocks' NFE per forward

local M = {}

--- The command-line options (cunet.cli form): 0 or nil keep the checkpoint's own solver.
function M.cli_options()
  return {
    {"block-method", nil, "cU-Net checkpoints: the ODE blocks' solver at evaluation, euler | midpoint | heun | rk4 | "
      .. "rk4_38 | bosh3 | dopri5 (default: the checkpoint's)", type = "string",
      choices = {"euler", "midpoint", "heun", "rk4", "rk4_38", "bosh3", "dopri5"}},
    {"block-steps", 0, "cU-Net checkpoints: fixed solver steps per ODE block (0: the checkpoint's)", integer = true, min = 0},
    {"block-rtol", 0, "cU-Net checkpoints: the blocks' relative tolerance, adaptive methods (0: the checkpoint's)", min = 0},
    {"block-atol", 0, "cU-Net checkpoints: the blocks' absolute tolerance, adaptive methods (0: the checkpoint's)", min = 0},
  }
end

--- Applies the given --block-* options (parsed args) to the model's ODE blocks through
-- model:set_solver; returns the set_solver options applied, or nil when none was given. A model
-- without ODE blocks (no set_solver) is refused through fail(message).
function M.apply(model, args, fail)
  local opts = {}
  if args.block_method then opts.method = args.block_method end
  if args.block_steps > 0 then opts.steps = math.tointeger(args.block_steps) end
  if args.block_rtol > 0 then opts.rtol = args.block_rtol end
  if args.block_atol > 0 then opts.atol = args.block_atol end
  if next(opts) == nil then return nil end
  if type(model.set_solver) ~= "function" then
    fail("--block-method, --block-steps, --block-rtol and --block-atol are for a cU-Net checkpoint (ODE blocks); this model has none")
  end
  model:set_solver(opts)
  return opts
end

--- A short text of the model's block solver (its config), e.g. "dopri5 rtol 0.01 atol 0.01" or
-- "rk4_38 1 step"; nil for a model without ODE blocks.
function M.describe(model)
  local c = model.config
  if type(model.set_solver) ~= "function" or type(c) ~= "table" then return nil end
  if c.method == "bosh3" or c.method == "dopri5" then
    return string.format("%s rtol %g atol %g", c.method, c.rtol, c.atol)
  end
  return string.format("%s %d step%s", c.method, c.steps, c.steps == 1 and "" or "s")
end

local Meter = {}
Meter.__index = Meter

--- meter:per_forward() -> the blocks' function evaluations per forward since the meter started (or
-- the last reset), the mean over the forwards; nil when none ran.
function Meter:per_forward()
  if self.forwards == 0 then return nil end
  return self.nfe / self.forwards
end

--- meter:reset(): counts from zero again.
function Meter:reset()
  self.nfe, self.forwards = 0, 0
end

--- meter(model) -> a meter counting the forwards of the model and, after each, model:nfe() (the
-- sum of its ODE blocks' stats.nfe); nil for a model without model:nfe(). It wraps this model's
-- forward (the instance's, not the class's) for as long as the model lives.
function M.meter(model)
  if type(model.nfe) ~= "function" then return nil end
  local meter = setmetatable({nfe = 0, forwards = 0}, Meter)
  local forward = model.forward
  rawset(model, "forward", function(self, ...)
    local y = forward(self, ...)
    meter.nfe, meter.forwards = meter.nfe + self:nfe(), meter.forwards + 1
    return y
  end)
  return meter
end

return M
