-- cunet — the Lua library over the C engine.
--
--   local cn = require "cunet"
--   cn.seed(7); local x = cn.randn{2, 3}; print(x:sum())
--
-- The engine's functions (cunet.core) are re-exported here; Lua-side layers add to the tensor
-- metatable (printing now; autograd, nn, diffusion later). See docs/tensor-api.md.

local core = require "cunet.core"
local tensor_print = require "cunet.tensor_print"

local cn = {}
for name, value in pairs(core) do cn[name] = value end

local Tensor = core.Tensor
Tensor.__tostring = tensor_print.tostring
cn.set_printoptions = tensor_print.set_printoptions

--- Autograd: cn.autograd.grad(outputs, inputs [, grad_outputs [, {retain_graph=, allow_unused=,
-- create_graph=}]]) returns the list of d(sum grad_outputs . outputs)/d input, without touching any
-- .grad; with create_graph the gradients have graphs of their own (docs/tensor-api.md).
cn.autograd = {
  grad = core.autograd_grad,
  --- custom(inputs, output, backward): output (computed under no_grad) becomes differentiable
  -- w.r.t. inputs; backward(grad_output) returns the list of their gradients (nil for none).
  custom = core.autograd_custom,
  --- backward(t [, grad [, opts]]): t:backward, opts {retain_graph=, create_graph=}
  backward = function(t, grad, opts) return t:backward(grad, opts) end,
}
cn.autograd_grad, cn.autograd_custom = nil, nil
local gradchecks = require "cunet.gradcheck" -- first and second order (docs/tensor-api.md)
cn.gradcheck, cn.gradgradcheck = gradchecks.gradcheck, gradchecks.gradgradcheck
local ode = require "cunet.ode"
cn.odeint, cn.ode = ode.odeint, ode
cn.nn = require "cunet.nn" -- layers (docs/nn.md); needs only cunet.core, so no require cycle
cn.optim = require "cunet.optim" -- replaces core.optim, the kernels it calls
cn.metrics = require "cunet.metrics" -- replaces core.metrics, the kernels it calls
cn.distributed = require "cunet.distributed" -- adds the data-parallel helpers to core.distributed
--- cn.profile(fn [, opts], ...): per-op times of fn(...) (lua/cunet/profile.lua, docs/benchmarks.md)
cn.profile = require("cunet.profile").profile
cn.profile_enable, cn.profile_reset, cn.profile_entries = nil, nil, nil
--- cn.count_nonfinite(t): the number of NaN and infinite elements of t (lua/cunet/nn/util.lua).
cn.count_nonfinite = require("cunet.nn.util").count_nonfinite

return cn
