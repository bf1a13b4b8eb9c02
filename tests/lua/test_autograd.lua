-- test_autograd.lua — autograd of the foundation ops against PyTorch, and the tape's semantics.
--
-- Gradients: every case of tests/fixtures/autograd_foundation.lua (written by
-- tests/tools/fixtures_autograd.py; regenerate it there, never edit it) becomes one test method,
-- test_<case name>, in the class of its op family. Each checks the forward output, the gradients
-- through cn.autograd.grad and, on fresh inputs, the gradients that backward() accumulates into
-- the leaves' .grad. Expected values are torch's float64 answer for the float32 inputs, rounded to
-- float32, so they do not depend on a summation order.
-- Then cn.gradcheck (finite differences) on one small case per op family, and the semantics:
-- accumulation, zero_grad, retain_graph, cn.autograd.grad, detach, in-place checks, no_grad,
-- is_leaf / grad_fn, error messages, a 100,000-op chain and memory over training-like steps.

local lu = require "luaunit"
local helpers = require "helpers"
local cn = require "cunet"
local fx = require "fixture_check"

-- |got - expected| <= ATOL + RTOL * |expected|; inf and nan must match exactly.
local RTOL, ATOL = 1e-5, 1e-6
-- matmul and its backward go through cblas_sgemm, which accumulates in float32 in a blocking
-- order of its own: over k terms the rounding error grows like k * eps relative to the terms, so
-- the float64 reference is met to 1e-4 there (as in test_ops_torch.lua). Reductions accumulate
-- in double and keep the tight tolerance.
local RTOL_FOR_FAMILY = { matmul = 1e-4 }

local cases = fx.load("autograd_foundation")

-- ---- calling each op through the Lua API -------------------------------------------------------

-- The arguments up to the last non-nil one, so that `t:sum()` is called as a user would write it.
local function args_upto(...)
  local packed = table.pack(...)
  local n = packed.n
  while n > 0 and packed[n] == nil do n = n - 1 end
  return table.unpack(packed, 1, n)
end

local UNARY = { "neg", "exp", "log", "sqrt", "rsqrt", "abs", "sin", "cos", "tanh", "sigmoid",
  "relu", "silu", "softplus", "gelu", "sign", "square", "reciprocal", "floor", "ceil", "round" }

local OPERATOR = {
  add = function(a, b) return a + b end,
  sub = function(a, b) return a - b end,
  mul = function(a, b) return a * b end,
  div = function(a, b) return a / b end,
  pow = function(a, b) return a ^ b end,
}

-- sum over the used pieces k of k * sum(piece_k^2), as pieces_loss in the generator
local function pieces_loss(pieces, used)
  local total
  for _, k in ipairs(used) do
    local term = (pieces[k] * pieces[k]):sum() * k
    total = total and total + term or term
  end
  return total
end

-- op -> function(inputs, args) returning the output tensor
local dispatch = {}

for _, op in ipairs(UNARY) do
  dispatch[op] = function(x, args)
    x = x[1]
    if args.operator then return -x end
    if args.approximate then return x:gelu { approximate = args.approximate } end
    return x[op](x)
  end
end

for op, operator in pairs(OPERATOR) do
  dispatch[op] = function(x, args)
    if args.scalar ~= nil then
      if args.scalar_first then return operator(args.scalar, x[1]) end
      return operator(x[1], args.scalar)
    end
    if args.operator then return operator(x[1], x[2]) end
    return x[1][op](x[1], x[2])
  end
end

for _, op in ipairs { "maximum", "minimum" } do
  dispatch[op] = function(x) return x[1][op](x[1], x[2]) end
end

function dispatch.clamp(x, args) return x[1]:clamp(args_upto(args.lo, args.hi)) end
function dispatch.where(x) return cn.where(x[1], x[2], x[3]) end

for _, op in ipairs { "sum", "mean" } do
  dispatch[op] = function(x, args) return x[1][op](x[1], args_upto(args.dims, args.keepdim or nil)) end
end
for _, op in ipairs { "var", "std" } do
  dispatch[op] = function(x, args)
    return x[1][op](x[1], args_upto(args.dims, args.keepdim or nil, args.correction))
  end
end
function dispatch.norm(x, args) return x[1]:norm(args_upto(args.p, args.dims, args.keepdim or nil)) end
for _, op in ipairs { "max", "min" } do
  dispatch[op] = function(x, args)
    local values = x[1][op](x[1], args_upto(args.dim, args.keepdim or nil)) -- drops the indices
    return values
  end
end

function dispatch.matmul(x) return x[1]:matmul(x[2]) end

function dispatch.view(x, args) return x[1]:view(args.shape) end
function dispatch.reshape(x, args) return x[1]:reshape(args.shape) end
function dispatch.flatten(x) return x[1]:flatten() end
function dispatch.permute(x, args) return x[1]:permute(args.dims) end
function dispatch.transpose(x, args) return x[1]:transpose(args.dim0, args.dim1) end
function dispatch.t(x) return x[1]:t() end
function dispatch.narrow(x, args) return x[1]:narrow(args.dim, args.start, args.length) end
function dispatch.slice(x, args) return x[1]:slice(args.dim, args.first, args.last) end
function dispatch.select(x, args) return x[1]:select(args.dim, args.index) end
function dispatch.index(x, args) return x[1][args.index] end
function dispatch.squeeze(x, args) return x[1]:squeeze(args.dim) end
function dispatch.unsqueeze(x, args) return x[1]:unsqueeze(args.dim) end
function dispatch.expand(x, args) return x[1]:expand(args.shape) end
function dispatch.contiguous(x) return x[1]:contiguous() end
function dispatch.clone(x) return x[1]:clone() end
function dispatch.cat(x, args) return cn.cat(x, args.dim) end
function dispatch.stack(x, args) return cn.stack(x, args.dim) end
function dispatch.chunk(x, args) return pieces_loss(x[1]:chunk(args.chunks, args.dim), args.used) end
function dispatch.split(x, args) return pieces_loss(x[1]:split(args.size, args.dim), args.used) end

-- The case's output computed from its leaves: the op takes them in args.order when given (a
-- leaf used twice), and the first one transposed when args.transposed.
local function forward(case, leaves)
  local x = {}
  for k, i in ipairs(case.args.order or {}) do x[k] = leaves[i] end
  if not case.args.order then table.move(leaves, 1, #leaves, 1, x) end
  if case.args.transposed then x[1] = x[1]:t() end
  return dispatch[case.op](x, case.args)
end

-- ---- checking a case ---------------------------------------------------------------------------

-- fx.assert_close, plus what its arithmetic cannot see: a nan (or inf) where PyTorch has a finite
-- value makes |got - want| > tol false, so a nan would pass there unnoticed.
local function assert_close(got, spec, opts)
  lu.assertTrue(cn.is_tensor(got), opts.label .. ": expected a tensor, got " .. type(got))
  lu.assertEquals(got:shape(), spec.shape, opts.label .. ": shape")
  local g = got:totable { flat = true }
  for i, want in ipairs(spec.data) do
    local finite_want = want == want and math.abs(want) ~= math.huge
    local finite_got = g[i] == g[i] and math.abs(g[i]) ~= math.huge
    if finite_want ~= finite_got then
      lu.fail(string.format("%s: element %d is %s, PyTorch gives %.9g", opts.label, i, tostring(g[i]), want))
    end
  end
  fx.assert_close(got, spec, opts)
end

-- As fx.check_grads (cn.autograd.grad with the case's grad_output), through assert_close above.
local function check_grads(case, leaves, out, tol)
  local want, wrt = {}, {}
  for i, g in ipairs(case.grads) do
    if g then
      wrt[#wrt + 1] = leaves[i]
      want[#want + 1] = { i = i, spec = g }
    end
  end
  local grads = cn.autograd.grad(out, wrt, fx.tensor(case.grad_output))
  for k, w in ipairs(want) do
    assert_close(grads[k], w.spec, { rtol = tol.rtol, atol = tol.atol,
      label = case.name .. ": cn.autograd.grad of input " .. w.i })
  end
end

local function run_case(case)
  lu.assertNotNil(dispatch[case.op], case.name .. ": no Lua call for op '" .. case.op .. "'")
  local tol = { rtol = RTOL_FOR_FAMILY[case.family] or RTOL, atol = ATOL }
  -- the fixture records which inputs require grad; grads[i] is false exactly for the others
  for i, rg in ipairs(case.requires_grad) do
    lu.assertEquals(case.grads[i] ~= false, rg, case.name .. ": requires_grad of input " .. i)
  end

  -- forward and the vector-Jacobian product (cn.autograd.grad: nothing lands in .grad)
  local leaves = fx.inputs(case, true)
  local out = forward(case, leaves)
  assert_close(out, case.output, { rtol = tol.rtol, atol = tol.atol, label = case.name .. ": output" })
  lu.assertTrue(out:requires_grad(), case.name .. ": the output requires grad")
  check_grads(case, leaves, out, tol)
  for i, x in ipairs(leaves) do
    lu.assertNil(x.grad, case.name .. ": cn.autograd.grad touched .grad of input " .. i)
  end

  -- backward into fresh leaves: the same gradients, accumulated into .grad
  leaves = fx.inputs(case, true)
  out = forward(case, leaves)
  out:backward(fx.tensor(case.grad_output))
  for i, x in ipairs(leaves) do
    local label = case.name .. ": backward, .grad of input " .. i
    if case.grads[i] then
      assert_close(x.grad, case.grads[i], { rtol = tol.rtol, atol = tol.atol, label = label })
    else
      lu.assertNil(x.grad, label .. " (it does not require grad)")
    end
  end
end

-- ---- one test class per op family, one method per case -----------------------------------------

TestAutogradUnary, TestAutogradBinary, TestAutogradSelect, TestAutogradReduce = {}, {}, {}, {}
TestAutogradMaxMin, TestAutogradMatmul, TestAutogradShape = {}, {}, {}
local classes = {
  unary = TestAutogradUnary, binary = TestAutogradBinary, select = TestAutogradSelect,
  reduce = TestAutogradReduce, maxmin = TestAutogradMaxMin, matmul = TestAutogradMatmul,
  shape = TestAutogradShape,
}

for _, case in ipairs(cases) do
  local class = classes[case.family]
  if class then
    local method = "test_" .. case.name
    assert(class[method] == nil, "duplicate fixture case " .. case.name)
    class[method] = function() run_case(case) end
  end
end

TestAutogradFixture = {}

-- The fixture covers every differentiable foundation op, and every case has a class and a call.
function TestAutogradFixture.test_coverage()
  local seen = {}
  for _, case in ipairs(cases) do
    lu.assertNotNil(classes[case.family], case.name .. ": family '" .. tostring(case.family) .. "'")
    lu.assertNotNil(dispatch[case.op], case.name .. ": op '" .. case.op .. "' has no Lua call")
    seen[case.op] = true
    if case.args.approximate then seen.gelu_tanh = true end
  end
  local required = {
    "add", "sub", "mul", "div", "pow", "maximum", "minimum", "clamp", "where", "sum", "mean", "var",
    "std", "norm", "max", "min", "matmul", "view", "reshape", "permute", "transpose", "narrow",
    "select", "squeeze", "unsqueeze", "expand", "cat", "stack", "contiguous", "clone", "chunk",
    "split", "gelu_tanh",
  }
  for _, op in ipairs(UNARY) do required[#required + 1] = op end
  for _, op in ipairs(required) do lu.assertTrue(seen[op], "no fixture case for " .. op) end
  lu.assertTrue(#cases >= 250, "fixture has only " .. #cases .. " cases")
end

-- ---- finite differences: one small case per op family -------------------------------------------

TestGradcheck = {}

local function gradcheck(fn, inputs, opts)
  local ok, worst = cn.gradcheck(fn, inputs, opts)
  lu.assertTrue(ok)
  lu.assertTrue(worst <= 1, "gradcheck reported a worst ratio of " .. tostring(worst))
end

function TestGradcheck.test_unary_chain()
  -- inputs away from the kinks of relu/abs (finite differences straddle them)
  local x = cn.tensor({ -2.1, -1.3, -0.6, 0.4, 0.9, 1.7 }, { 2, 3 })
  gradcheck(function(t)
    return t:tanh() + t:sigmoid() * t:gelu() + t:silu():abs() + t:softplus() + t:sin() * t:cos()
      + t:relu():square() + t:gelu { approximate = "tanh" } - t:exp():neg()
  end, { x })
  local p = cn.tensor({ 0.5, 1.2, 2.0, 3.1 }, { 4 })
  gradcheck(function(t) return t:log() + t:sqrt() + t:rsqrt() + t:reciprocal() end, { p })
end

function TestGradcheck.test_binary_broadcast()
  cn.seed(11)
  local a, b = cn.rand { 2, 3 } + 0.5, cn.rand { 3 } + 0.5
  gradcheck(function(u, v) return u * v + u / v - v ^ u + (u - v):square() + 2 ^ u + u ^ 2.5 end, { a, b })
  gradcheck(function(u, v) return cn.maximum(u, v * 1.3) + cn.minimum(u * 0.7, v) end, { a, b })
end

function TestGradcheck.test_clamp_where()
  local x = cn.tensor({ -1.5, -0.3, 0.2, 0.8, 1.6, 2.4 }, { 2, 3 })
  local y = cn.tensor({ 0.1, 0.2, 0.3 }, { 3 })
  local cond = cn.tensor({ 1, 0, 1 }, { 3 })
  gradcheck(function(u, v) return cn.where(cond, u:clamp(-1, 2), v * v) + u:clamp(nil, 0.5) end, { x, y })
end

function TestGradcheck.test_reductions()
  cn.seed(12)
  local x = cn.randn { 3, 4 }
  gradcheck(function(t)
    return cn.stack({ t:sum(), t:mean(2):sum(), t:var(1):sum(), t:std(2, false, 0):sum(),
      t:norm(1), t:norm(2, 2):sum(), t:norm(3), t:norm(math.huge, 1):sum() })
  end, { x })
end

function TestGradcheck.test_max_min()
  local x = cn.tensor({ 0.3, -1.2, 2.5, 0.9, -0.4, 1.7, -2.2, 0.1, 1.1, -0.8, 0.6, 3.0 }, { 3, 4 })
  gradcheck(function(t) return t:max(2) + t:min(1):sum() + t:max() - t:min() end, { x })
end

function TestGradcheck.test_matmul()
  cn.seed(13)
  local a, b = cn.randn { 2, 1, 3, 4 }, cn.randn { 5, 4, 2 }
  gradcheck(function(u, v) return u:matmul(v) end, { a, b }, { rtol = 2e-2 })
  local v1, m = cn.randn { 4 }, cn.randn { 4, 3 }
  gradcheck(function(u, w) return u:matmul(w):matmul(w:t()):matmul(u) end, { v1, m }, { rtol = 2e-2 })
end

function TestGradcheck.test_shape_ops()
  cn.seed(14)
  local x, y = cn.randn { 2, 3, 4 }, cn.randn { 3, 4 }
  gradcheck(function(u, v)
    local parts = u:permute(3, 1, 2):contiguous():split(3, 1)
    local w = cn.cat({ u:narrow(3, 2, 2):reshape { 2, 6 }, v:t():reshape { 2, 6 } }, 1)
    return cn.stack({ w:sum(2), w:select(2, 4):unsqueeze(1):expand { 3, 4 }:sum(1) }, 2):squeeze()
      + (parts[1] * parts[2]:clone()):view(-1):sum() + v:flatten()[5]
  end, { x, y })
end

-- ---- the tape's semantics --------------------------------------------------------------------------

local function assert_values(t, want, label)
  assert_close(t, { shape = t:shape(), data = want }, { rtol = 1e-6, atol = 1e-6, label = label })
end

local assert_error = helpers.assert_error

TestAutogradBackward = {}

function TestAutogradBackward.test_gradients_accumulate_over_two_backwards()
  local x = cn.tensor { 1, 2, 3 }:requires_grad(true)
  ;(x * x):sum():backward()
  assert_values(x.grad, { 2, 4, 6 }, "after one backward")
  ;(x * x):sum():backward()
  assert_values(x.grad, { 4, 8, 12 }, "after two")
  ;(x * 3):sum():backward()
  assert_values(x.grad, { 7, 11, 15 }, "after a third graph")
end

function TestAutogradBackward.test_zero_grad_and_nil_assignment()
  local x = cn.tensor { 1, 2 }:requires_grad(true)
  ;(x * x):sum():backward()
  x:zero_grad()
  lu.assertNil(x.grad)
  ;(x * 5):sum():backward()
  assert_values(x.grad, { 5, 5 }, "fresh after zero_grad")
  x.grad = nil
  lu.assertNil(x.grad)
  ;(x * x):sum():backward()
  assert_values(x.grad, { 2, 4 }, "fresh after .grad = nil")
  -- an assigned gradient is accumulated into
  x.grad = cn.tensor { 10, 20 }
  ;(x * x):sum():backward()
  assert_values(x.grad, { 12, 24 }, "accumulated into an assigned gradient")
  assert_error(function() x.grad = cn.zeros(3) end, "[3]")
end

function TestAutogradBackward.test_retain_graph()
  local x = cn.tensor { 1, 2, 3 }:requires_grad(true)
  local y = (x:exp() * x):sum()
  y:backward(nil, true)
  y:backward()
  -- d/dx (x e^x) = (1 + x) e^x, twice
  local want = {}
  for i, v in ipairs { 1, 2, 3 } do want[i] = 2 * (1 + v) * math.exp(v) end
  assert_close(x.grad, { shape = { 3 }, data = want }, { rtol = 1e-6, label = "retained" })
  -- the second backward freed the graph: a third one is an error that says what to do
  assert_error(function() y:backward() end, "retain_graph")
  local z = (x * x):sum()
  z:backward()
  assert_error(function() z:backward() end, "retain_graph")
  assert_error(function() cn.autograd.grad(z, x) end, "retain_graph")
end

function TestAutogradBackward.test_explicit_gradient()
  local x = cn.tensor({ 1, 2, 3, 4, 5, 6 }, { 2, 3 }):requires_grad(true)
  local y = x * x
  y:backward(cn.tensor({ 1, 0, -1, 2, 0.5, 0 }, { 2, 3 }))
  assert_values(x.grad, { 2, 0, -6, 16, 5, 0 }, "2 x g")
  local z = x * 2
  assert_error(function() z:backward(cn.ones { 3, 2 }) end, "[3, 2]")
end

function TestAutogradBackward.test_non_scalar_without_gradient_names_the_shape()
  local x = cn.ones({ 2, 3 }):requires_grad(true)
  local y = x * 2
  assert_error(function() y:backward() end, "[2, 3]")
  -- a one-element tensor that is not 0-d is fine
  local s = (x * 2):sum({ 1, 2 }, true)
  s:backward()
  assert_values(x.grad, { 2, 2, 2, 2, 2, 2 }, "through a [1, 1] output")
end

function TestAutogradBackward.test_output_not_requiring_grad_raises()
  local x = cn.ones { 3 }
  assert_error(function() x:sum():backward() end, "does not require grad")
  local w = cn.ones({ 3 }):requires_grad(true)
  local y = cn.no_grad(function() return (w * 2):sum() end)
  lu.assertFalse(y:requires_grad())
  assert_error(function() y:backward() end, "does not require grad")
  assert_error(function() cn.autograd.grad(y, w) end, "does not require grad")
end

function TestAutogradBackward.test_diamond_sums_both_paths()
  local x = cn.tensor { 0.5, -1, 2 }:requires_grad(true)
  local h = x * x                  -- shared by both paths
  local y = (h * 3 + h:exp()):sum() -- dy/dx = (3 + e^(x^2)) 2x
  y:backward()
  local want = {}
  for i, v in ipairs { 0.5, -1, 2 } do want[i] = (3 + math.exp(v * v)) * 2 * v end
  assert_close(x.grad, { shape = { 3 }, data = want }, { rtol = 1e-6, label = "diamond" })
end

TestAutogradGrad = {}

function TestAutogradGrad.test_leaves_grad_untouched()
  local x = cn.tensor { 1, 2, 3 }:requires_grad(true)
  local g = cn.autograd.grad((x * x):sum(), { x })
  assert_values(g[1], { 2, 4, 6 }, "d sum(x^2)")
  lu.assertNil(x.grad)
  x.grad = cn.tensor { 7, 7, 7 }
  local g2 = cn.autograd.grad((x * x * x):sum(), x) -- a single tensor for inputs works too
  assert_values(g2[1], { 3, 12, 27 }, "d sum(x^3)")
  assert_values(x.grad, { 7, 7, 7 }, "the .grad set before")
end

function TestAutogradGrad.test_several_outputs_with_grad_outputs()
  local x = cn.tensor { 1, 2 }:requires_grad(true)
  local w = cn.tensor { 3, -1 }:requires_grad(true)
  local y1, y2 = x * w, x:sum() * w -- [2] and [2]
  local g1, g2 = cn.tensor { 1, 10 }, cn.tensor { 2, -1 }
  local gx, gw = table.unpack(cn.autograd.grad({ y1, y2 }, { x, w }, { g1, g2 }))
  -- dx = g1 w + sum(g2 w) ; dw = g1 x + g2 sum(x)
  assert_values(gx, { 1 * 3 + (2 * 3 - 1 * -1), 10 * -1 + (2 * 3 - 1 * -1) }, "dx")
  assert_values(gw, { 1 * 1 + 2 * 3, 10 * 2 + -1 * 3 }, "dw")
  assert_error(function() cn.autograd.grad({ y1, y2 }, { x }, { g1 }) end, "1 grad_outputs for 2 outputs")
end

function TestAutogradGrad.test_non_leaf_input()
  local x = cn.tensor { 1, 2 }:requires_grad(true)
  local h = x * 3
  local y = (h * h):sum()
  local gh, gx = table.unpack(cn.autograd.grad(y, { h, x }))
  assert_values(gh, { 6, 12 }, "d y / d h = 2 h")
  assert_values(gx, { 18, 36 }, "d y / d x = 18 x")
end

function TestAutogradGrad.test_unused_input()
  local x = cn.tensor { 1, 2 }:requires_grad(true)
  local u = cn.zeros({ 2, 2 }):requires_grad(true)
  assert_error(function() cn.autograd.grad((x * x):sum(), { x, u }) end, "allow_unused")
  local gx, gu = table.unpack(cn.autograd.grad((x * x):sum(), { x, u }, nil, { allow_unused = true }))
  assert_values(gx, { 2, 4 }, "used")
  lu.assertEquals(gu:shape(), { 2, 2 })
  assert_values(gu, { 0, 0, 0, 0 }, "unused gives zeros")
  local n = cn.ones { 2 }
  assert_error(function() cn.autograd.grad((x * n):sum(), { n }) end, "does not require grad")
end

function TestAutogradGrad.test_retain_graph_option()
  local x = cn.tensor { 2 }:requires_grad(true)
  local y = (x * x * x):sum()
  local a = cn.autograd.grad(y, { x }, nil, { retain_graph = true })
  local b = cn.autograd.grad(y, { x })
  assert_values(a[1], { 12 }, "first")
  assert_values(b[1], { 12 }, "second, through the retained graph")
  assert_error(function() cn.autograd.grad(y, { x }) end, "retain_graph")
end

TestAutogradGraph = {}

function TestAutogradGraph.test_is_leaf_and_grad_fn()
  local x = cn.ones({ 2, 2 }):requires_grad(true)
  local c = cn.ones { 2, 2 }
  lu.assertTrue(x.is_leaf)
  lu.assertNil(x.grad_fn)
  lu.assertTrue(c.is_leaf)
  lu.assertNil(c.grad_fn)
  local y = x:matmul(c)
  lu.assertFalse(y.is_leaf)
  lu.assertEquals(y.grad_fn, "matmul")
  lu.assertTrue(y:requires_grad())
  for _, t in ipairs { x + c, x:exp(), x:sum(), x:t(), x * 2, x:clamp(0, 1), x:max() } do
    lu.assertFalse(t.is_leaf)
    lu.assertEquals(type(t.grad_fn), "string")
  end
  -- an op over tensors that do not require grad records nothing
  local z = c * c
  lu.assertTrue(z.is_leaf)
  lu.assertNil(z.grad_fn)
  lu.assertFalse(z:requires_grad())
  -- so does an op under no_grad
  local w = cn.no_grad(function() return x * 2 end)
  lu.assertTrue(w.is_leaf)
  lu.assertFalse(w:requires_grad())
end

function TestAutogradGraph.test_requires_grad_switch()
  local x = cn.ones { 2 }
  lu.assertFalse(x:requires_grad())
  lu.assertIs(x:requires_grad(true), x)
  lu.assertTrue(x:requires_grad())
  x:requires_grad(false) -- a leaf may switch off
  lu.assertFalse(x:requires_grad())
  x:requires_grad(true)
  local y = x * 2
  assert_error(function() y:requires_grad(false) end, "non-leaf")
  lu.assertTrue(y:requires_grad())
end

function TestAutogradGraph.test_detach_shares_storage_and_cuts_the_graph()
  local x = cn.tensor { 1, 2, 3 }:requires_grad(true)
  local y = x * 2
  local d = y:detach()
  lu.assertTrue(d.is_leaf)
  lu.assertNil(d.grad_fn)
  lu.assertFalse(d:requires_grad())
  d[{ 1 }] = 100 -- no grad required: in place is fine, and y sees it
  lu.assertEquals(y[{ 1 }], 100)
  local dx = x:detach()
  dx:fill_(5)
  assert_values(x, { 5, 5, 5 }, "x through its detached view")
  -- the graph stops at the detached tensor: x gets only the direct path's gradient
  local z = (d * x):sum()
  z:backward()
  assert_values(x.grad, { 100, 4, 6 }, "d (d * x) / dx = d")
end

TestAutogradInPlace = {}

local function inplace_ops(t)
  return {
    add_ = function() t:add_(1) end,
    sub_ = function() t:sub_(1) end,
    mul_ = function() t:mul_(2) end,
    fill_ = function() t:fill_(0) end,
    zero_ = function() t:zero_() end,
    copy_ = function() t:copy_(cn.ones(t:shape())) end,
    set = function() t:set({ 1 }, 7) end,
    ["t[{i}] = v"] = function() t[{ 1 }] = 7 end,
    ["t[i] = v"] = function() t[2] = 7 end,
  }
end

function TestAutogradInPlace.test_raise_under_grad_mode()
  local x = cn.tensor { 1, 2, 3 }:requires_grad(true)
  local y = x * 2
  for _, t in ipairs { x, y } do
    for name, fn in pairs(inplace_ops(t)) do assert_error(name, fn, "in-place") end
  end
  assert_values(x, { 1, 2, 3 }, "x untouched")
  assert_values(y, { 2, 4, 6 }, "y untouched")
end

function TestAutogradInPlace.test_work_inside_no_grad()
  local x = cn.tensor { 1, 2, 3 }:requires_grad(true)
  cn.no_grad(function()
    x:add_(1)
    assert_values(x, { 2, 3, 4 }, "add_")
    x:mul_(2)
    assert_values(x, { 4, 6, 8 }, "mul_")
    x[{ 1 }] = -1
    x[2] = 0.5
    assert_values(x, { -1, 0.5, 8 }, "element writes")
    x:copy_(cn.tensor { 9, 8, 7 })
    assert_values(x, { 9, 8, 7 }, "copy_")
    x:fill_(3)
    assert_values(x, { 3, 3, 3 }, "fill_")
  end)
  lu.assertTrue(x:requires_grad())
  lu.assertTrue(x.is_leaf)
  ;(x * x):sum():backward()
  assert_values(x.grad, { 6, 6, 6 }, "still a working leaf")
end

TestNoGrad = {}

function TestNoGrad.test_returns_values()
  local a, b, c = cn.no_grad(function(p, q) return p + q, "two", nil end, 1, 2)
  lu.assertEquals(a, 3)
  lu.assertEquals(b, "two")
  lu.assertNil(c)
  lu.assertEquals(select("#", cn.no_grad(function() end)), 0)
end

function TestNoGrad.test_restores_the_mode_even_on_error()
  lu.assertTrue(cn.is_grad_enabled())
  local seen
  local ok, msg = pcall(cn.no_grad, function()
    seen = cn.is_grad_enabled()
    error("boom")
  end)
  lu.assertFalse(ok)
  lu.assertStrContains(msg, "boom")
  lu.assertFalse(seen)
  lu.assertTrue(cn.is_grad_enabled())
  -- nested: no_grad restores the mode it found, also when that mode was off
  lu.assertTrue(cn.set_grad_enabled(false)) -- returns the previous mode
  cn.no_grad(function() end)
  pcall(cn.no_grad, error, "inner")
  lu.assertFalse(cn.is_grad_enabled())
  lu.assertFalse(cn.set_grad_enabled(true))
  lu.assertTrue(cn.is_grad_enabled())
end

function TestNoGrad.test_set_grad_enabled_switches_recording()
  local x = cn.ones({ 2 }):requires_grad(true)
  cn.set_grad_enabled(false)
  local y = x * 3
  cn.set_grad_enabled(true)
  lu.assertFalse(y:requires_grad())
  lu.assertTrue(y.is_leaf)
  lu.assertTrue((x * 3):requires_grad())
end

TestAutogradScale = {}

-- x = x * 1.0001 a hundred thousand times: backward walks the chain with a worklist and the graph
-- dies without recursion (C stack) when the last reference goes.
function TestAutogradScale.test_long_chain()
  local x0 = cn.ones({ 1 }):requires_grad(true)
  collectgarbage("collect")
  local before = cn.memory().live
  local x = x0
  for _ = 1, 100000 do x = x * 1.0001 end
  -- forward and backward multiply by the same float32 factor from 1: identical roundings
  local y = x:sum()
  y:backward()
  lu.assertEquals(x0.grad:item(), y:item())
  lu.assertAlmostEquals(x0.grad:item(), 1.0001 ^ 100000, 1e-2 * 1.0001 ^ 100000)
  -- a second chain, released without any backward
  local z = x0
  for _ = 1, 100000 do z = z * 1.0001 end
  x, y, z = nil, nil, nil
  x0:zero_grad()
  collectgarbage("collect")
  collectgarbage("collect")
  lu.assertEquals(cn.memory().live, before) -- every node and intermediate is gone
end

function TestAutogradScale.test_memory_does_not_grow_over_training_steps()
  cn.seed(3)
  local x = cn.randn { 32, 16 }
  local w1 = cn.randn({ 16, 24 }):requires_grad(true)
  local w2 = cn.randn({ 24, 1 }):requires_grad(true)
  local function step()
    local loss = x:matmul(w1):tanh():matmul(w2):tanh():mean()
    loss:backward()
    lu.assertNotNil(w1.grad)
    w1.grad, w2.grad = nil, nil -- dropping the gradients, as an optimiser's zero_grad
  end
  for _ = 1, 5 do step() end
  collectgarbage("collect")
  collectgarbage("collect")
  local warm = cn.memory().live
  for _ = 1, 50 do step() end
  collectgarbage("collect")
  collectgarbage("collect")
  local after = cn.memory().live
  lu.assertTrue(after <= warm, string.format("live memory grew from %d to %d bytes over 50 steps", warm, after))
end
