-- fixture_check — shared helpers for tests against PyTorch fixtures (tests/fixtures/*.lua, see
-- tests/tools/fixture_util.py for the format).
--
--   local fx = require "fixture_check"
--   for _, case in ipairs(fx.load("nn_conv")) do
--     local inputs = fx.inputs(case, true)          -- tensors, requiring grad
--     local out = run(case, inputs)
--     fx.assert_close(out, case.output, {rtol = 1e-4, label = case.name})
--     fx.check_grads(case, inputs, out, {rtol = 1e-4})
--   end

local lu = require "luaunit"
local cn = require "cunet"

local M = {}

M.RTOL, M.ATOL = 1e-4, 1e-5

local root = require("helpers").root

--- The repository root (helpers.root).
M.root = root

--- helpers.assert_error (tests/lua/helpers.lua), for the suites that already hold this module.
M.assert_error = require("helpers").assert_error

--- The list of cases of tests/fixtures/<name>.lua.
function M.load(name)
  return dofile(root() .. "/tests/fixtures/" .. name .. ".lua")
end

--- A tensor from a fixture spec {shape=, data=}.
function M.tensor(spec)
  return cn.tensor(spec.data, spec.shape)
end

--- The case's inputs as tensors; with requires_grad, those that have expected grads require grad.
function M.inputs(case, requires_grad)
  local ts = {}
  for i, spec in ipairs(case.inputs) do
    ts[i] = M.tensor(spec)
    if requires_grad and case.grads and case.grads[i] then ts[i]:requires_grad(true) end
  end
  return ts
end

-- true/false when exactness is required (nan or inf on either side), nil to compare with tolerance
local function same(want, got)
  if want ~= want then return got ~= got end
  if want == math.huge or want == -math.huge then return want == got end
  if got ~= got or got == math.huge or got == -math.huge then return false end
  return nil
end

--- Asserts tensor got equals spec (shape exactly; values within atol + rtol * |want|).
function M.assert_close(got, spec, opts)
  opts = opts or {}
  local rtol, atol, label = opts.rtol or M.RTOL, opts.atol or M.ATOL, opts.label or "value"
  lu.assertTrue(cn.is_tensor(got), label .. ": expected a tensor, got " .. type(got))
  lu.assertEquals(got:shape(), spec.shape, label .. ": shape")
  local g = got:totable{flat = true}
  local worst, worst_i = 0, nil
  for i, want in ipairs(spec.data) do
    local s = same(want, g[i])
    if s == false then
      lu.fail(string.format("%s: element %d is %s, expected %s", label, i, tostring(g[i]), tostring(want)))
    elseif s == nil then
      local excess = math.abs(g[i] - want) - (atol + rtol * math.abs(want))
      if excess > worst then worst, worst_i = excess, i end
    end
  end
  if worst_i then
    lu.fail(string.format("%s: element %d is %.9g, expected %.9g (rtol %g, atol %g)", label, worst_i,
      g[worst_i], spec.data[worst_i], rtol, atol))
  end
end

--- Backpropagates case.grad_output through out and compares every input's gradient with case.grads.
function M.check_grads(case, inputs, out, opts)
  opts = opts or {}
  local want, ins = {}, {}
  for i, g in ipairs(case.grads) do
    if g then
      ins[#ins + 1] = inputs[i]
      want[#want + 1] = { i = i, spec = g }
    end
  end
  local grads = cn.autograd.grad(out, ins, M.tensor(case.grad_output), { allow_unused = true })
  for k, w in ipairs(want) do
    M.assert_close(grads[k], w.spec, {
      rtol = opts.rtol, atol = opts.atol,
      label = (opts.label or case.name) .. ": grad of input " .. w.i,
    })
  end
end

return M
