-- test_conv.lua — cn.conv2d and cn.conv_transpose2d (engine/ops_conv.c, engine/lua/l_conv.c):
-- every case of tests/fixtures/nn_conv.lua (written by tests/tools/fixtures_conv.py) forward and
-- with all gradients, finite-difference gradchecks, the forms of the options, and the errors.
local lu = require "luaunit"
local helpers = require "helpers"
local cn = require "cunet"
local fx = require "fixture_check"

-- The expected values are torch's float64 answer rounded to float32. The engine computes in
-- float32 through cblas_sgemm, whose blocking decides the summation order over up to
-- C_in/groups·kH·kW (forward, dw: also N·H·W) terms, so the rounding error grows with the number
-- of terms and the tolerance is float32-GEMM sized, not the ops' usual 1e-5.
local RTOL, ATOL = 1e-4, 1e-5

local function call(case, inputs)
  local fn = case.op == "conv2d" and cn.conv2d or cn.conv_transpose2d
  return fn(inputs[1], inputs[2], inputs[3], case.args)
end

local assert_error = helpers.assert_error

-- ---- PyTorch fixtures: one test per case ----------------------------------------------------

TestConvFixtures = {}

for _, case in ipairs(fx.load("nn_conv")) do
  TestConvFixtures["test_" .. case.name] = function()
    local inputs = fx.inputs(case, true)
    local out = call(case, inputs)
    fx.assert_close(out, case.output, {rtol = RTOL, atol = ATOL, label = case.name})
    fx.check_grads(case, inputs, out, {rtol = RTOL, atol = ATOL})
  end
end

function TestConvFixtures:testCount()
  lu.assertTrue(#fx.load("nn_conv") >= 30)
end

-- Without grad the forward is the same and records nothing.
function TestConvFixtures:testNoGrad()
  for _, case in ipairs(fx.load("nn_conv")) do
    local inputs = fx.inputs(case, false)
    local out = call(case, inputs)
    lu.assertFalse(out:requires_grad(), case.name)
    fx.assert_close(out, case.output, {rtol = RTOL, atol = ATOL, label = case.name .. " (no grad)"})
  end
end

-- Strided views are read as they are (made contiguous inside): a transposed input and weight.
function TestConvFixtures:testNonContiguous()
  for _, case in ipairs(fx.load("nn_conv")) do
    if case.op == "conv2d" and #case.inputs[1].shape == 4 then
      local x, w = fx.tensor(case.inputs[1]), fx.tensor(case.inputs[2])
      local xt = x:transpose(3, 4):contiguous():transpose(3, 4)
      local wt = w:transpose(1, 2):contiguous():transpose(1, 2)
      lu.assertFalse(xt:is_contiguous())
      local b = case.inputs[3] and fx.tensor(case.inputs[3]) or nil
      fx.assert_close(cn.conv2d(xt, wt, b, case.args), case.output,
        {rtol = RTOL, atol = ATOL, label = case.name .. " (strided)"})
    end
  end
end

-- ---- finite differences -----------------------------------------------------------------------

TestConvGradcheck = {}

function TestConvGradcheck:testConv2dStridePadGroups()
  cn.seed(11)
  local x, w, b = cn.randn{2, 4, 5, 5}, cn.randn{4, 2, 3, 3}, cn.randn{4}
  lu.assertTrue(cn.gradcheck(function(xx, ww, bb)
    return cn.conv2d(xx, ww, bb, {stride = 2, padding = {1, 2}, groups = 2})
  end, {x, w, b}))
end

function TestConvGradcheck:testConv2dDilation()
  cn.seed(12)
  local x, w = cn.randn{1, 2, 7, 6}, cn.randn{3, 2, 2, 3}
  lu.assertTrue(cn.gradcheck(function(xx, ww)
    return cn.conv2d(xx, ww, nil, {dilation = {2, 1}, padding = 1})
  end, {x, w}))
end

function TestConvGradcheck:testConvTranspose2d()
  cn.seed(13)
  local x, w, b = cn.randn{2, 2, 3, 3}, cn.randn{2, 3, 3, 3}, cn.randn{3}
  lu.assertTrue(cn.gradcheck(function(xx, ww, bb)
    return cn.conv_transpose2d(xx, ww, bb, {stride = 2, padding = 1, output_padding = 1})
  end, {x, w, b}))
end

-- ---- the Lua API ------------------------------------------------------------------------------

TestConvApi = {}

local function x44() return cn.arange(16):reshape{1, 1, 4, 4} end

function TestConvApi:testValues()
  -- a 3x3 box filter with zero padding: each output is the sum of its neighbourhood
  local y = cn.conv2d(x44(), cn.ones{1, 1, 3, 3}, {padding = 1})
  lu.assertEquals(y:totable(), {{{{10, 18, 24, 18}, {27, 45, 54, 39}, {51, 81, 90, 63}, {42, 66, 72, 50}}}})
end

function TestConvApi:testOptionForms()
  local x, w = cn.randn{1, 2, 6, 6}, cn.randn{3, 2, 3, 3}
  local b = cn.randn{3}
  local a1 = cn.conv2d(x, w, b, {stride = 2, padding = 1})
  local a2 = cn.conv2d(x, w, b, {stride = {2, 2}, padding = {1, 1}, dilation = {1, 1}, groups = 1})
  lu.assertEquals(a1:totable(), a2:totable())
  lu.assertEquals(a1:shape(), {1, 3, 3, 3})
  -- no bias: nil, or the options right after the weight
  local n1 = cn.conv2d(x, w, nil, {padding = 1})
  local n2 = cn.conv2d(x, w, {padding = 1})
  lu.assertEquals(n1:totable(), n2:totable())
  lu.assertEquals(cn.conv2d(x, w):shape(), {1, 3, 4, 4})
  lu.assertEquals(cn.conv2d(x, w, b):shape(), {1, 3, 4, 4})
  -- integral floats are integers
  lu.assertEquals(cn.conv2d(x, w, {padding = 2.0 / 2}):totable(), n1:totable())
  lu.assertEquals(cn.conv_transpose2d(x, cn.randn{2, 4, 3, 3}, {stride = {2, 3}, output_padding = {1, 2}}):shape(),
    {1, 4, 14, 20})
end

function TestConvApi:testUnbatched()
  local x, w, b = cn.randn{2, 5, 5}, cn.randn{3, 2, 3, 3}, cn.randn{3}
  local y = cn.conv2d(x, w, b, {padding = 1})
  lu.assertEquals(y:shape(), {3, 5, 5})
  local y4 = cn.conv2d(x:unsqueeze(1), w, b, {padding = 1})
  lu.assertEquals(y:totable(), y4[1]:totable())
  lu.assertEquals(cn.conv_transpose2d(y, cn.randn{3, 2, 2, 2}, {stride = 2}):shape(), {2, 10, 10})
end

-- conv_transpose2d is the adjoint of conv2d: <conv2d(x, w), y> = <x, conv_transpose2d(y, w)>
function TestConvApi:testAdjoint()
  cn.seed(5)
  local opts = {stride = {2, 1}, padding = {1, 2}, dilation = {1, 2}, groups = 2}
  local x, w = cn.randn{2, 4, 7, 8}, cn.randn{6, 2, 3, 3}
  local y = cn.conv2d(x, w, opts)
  local v = cn.randn(y:shape())
  -- output_padding restores the rows conv2d's floor division dropped
  local back = cn.conv_transpose2d(v, w, {stride = {2, 1}, padding = {1, 2}, dilation = {1, 2}, groups = 2,
    output_padding = {(7 + 2 - 2 - 1) % 2, 0}})
  lu.assertEquals(back:shape(), x:shape())
  lu.assertAlmostEquals((y * v):sum():item(), (x * back):sum():item(), 1e-3)
end

function TestConvApi:testBackwardAccumulates()
  local x, w, b = cn.randn{2, 2, 4, 4}, cn.randn{3, 2, 3, 3}, cn.randn{3}
  x:requires_grad(true); w:requires_grad(true); b:requires_grad(true)
  cn.conv2d(x, w, b, {padding = 1}):sum():backward()
  local g1 = b.grad:totable()
  lu.assertEquals(g1, {32, 32, 32}) -- d sum / d bias = N·H·W
  cn.conv2d(x, w, b, {padding = 1}):sum():backward()
  lu.assertEquals(b.grad:totable(), {64, 64, 64})
end

function TestConvApi:testOnlySomeInputsRequireGrad()
  local x, w, b = cn.randn{2, 2, 4, 4}, cn.randn{3, 2, 3, 3}, cn.randn{3}
  w:requires_grad(true)
  local y = cn.conv_transpose2d(x, cn.randn{2, 3, 3, 3}, b)
  lu.assertFalse(y:requires_grad())
  local grads = cn.autograd.grad(cn.conv2d(x, w, b):sum(), {w})
  lu.assertEquals(grads[1]:shape(), {3, 2, 3, 3})
end

-- ---- errors -----------------------------------------------------------------------------------

TestConvErrors = {}

function TestConvErrors:testShapes()
  local x = cn.zeros{2, 4, 16, 16}
  assert_error(function() cn.conv2d(x, cn.zeros{8, 3, 3, 3}) end,
    "conv2d: weight of shape [8, 3, 3, 3] needs 3 input channels, input has 4 ([2, 4, 16, 16])")
  assert_error(function() cn.conv2d(cn.zeros{4, 16}, cn.zeros{8, 4, 3, 3}) end,
    "conv2d: expected a 4-D input", "[4, 16]")
  assert_error(function() cn.conv2d(x, cn.zeros{8, 4, 3}) end, "conv2d: expected a 4-D weight", "[8, 4, 3]")
  assert_error(function() cn.conv2d(x, cn.zeros{8, 4, 3, 3}, cn.zeros{4}) end,
    "conv2d: bias of shape [4] does not match the 8 output channels")
  assert_error(function() cn.conv2d(x, cn.zeros{8, 4, 20, 3}) end,
    "conv2d: input [2, 4, 16, 16] padded to 16x16 is smaller than the dilated kernel 20x3")
  assert_error(function() cn.conv2d(x, cn.zeros{8, 4, 3, 3}, {dilation = 8}) end,
    "smaller than the dilated kernel 17x17")
  assert_error(function() cn.conv_transpose2d(x, cn.zeros{3, 2, 3, 3}) end,
    "conv_transpose2d: weight of shape [3, 2, 3, 3] needs 3 input channels, input has 4")
  assert_error(function() cn.conv_transpose2d(cn.zeros{1, 1, 1, 1}, cn.zeros{1, 1, 1, 1}, {padding = 1}) end,
    "conv_transpose2d: output size -1x-1 is not positive")
end

function TestConvErrors:testGroups()
  local x = cn.zeros{2, 4, 8, 8}
  assert_error(function() cn.conv2d(x, cn.zeros{6, 4, 3, 3}, {groups = 3}) end,
    "conv2d: 4 input channels (input [2, 4, 8, 8]) are not divisible by groups 3")
  assert_error(function() cn.conv2d(x, cn.zeros{5, 2, 3, 3}, {groups = 2}) end,
    "conv2d: 5 output channels (weight [5, 2, 3, 3]) are not divisible by groups 2")
  assert_error(function() cn.conv2d(x, cn.zeros{4, 4, 3, 3}, {groups = 2}) end,
    "needs 8 input channels (with groups), input has 4")
  assert_error(function() cn.conv_transpose2d(x, cn.zeros{4, 2, 3, 3}, {groups = 3}) end,
    "conv_transpose2d: 4 input channels")
  assert_error(function() cn.conv2d(x, cn.zeros{4, 4, 3, 3}, {groups = 0}) end, "groups must be positive, got 0")
end

function TestConvErrors:testOptionValues()
  local x, w = cn.zeros{1, 2, 8, 8}, cn.zeros{2, 2, 3, 3}
  assert_error(function() cn.conv2d(x, w, {stride = 0}) end, "conv2d: stride must be positive, got [0, 0]")
  assert_error(function() cn.conv2d(x, w, {padding = {1, -1}}) end, "padding must be non-negative, got [1, -1]")
  assert_error(function() cn.conv2d(x, w, {dilation = {0, 1}}) end, "dilation must be positive")
  assert_error(function() cn.conv_transpose2d(x, w, {stride = 2, output_padding = 2}) end,
    "conv_transpose2d: output_padding [2, 2] must be smaller than either the stride [2, 2] or the dilation [1, 1]")
  assert_error(function() cn.conv_transpose2d(x, w, {output_padding = -1}) end, "output_padding must be non-negative")
end

function TestConvErrors:testArguments()
  local x, w = cn.zeros{1, 2, 8, 8}, cn.zeros{2, 2, 3, 3}
  assert_error(function() cn.conv2d(x) end, "bad argument #2 to 'conv2d'", "tensor expected")
  assert_error(function() cn.conv2d(1, w) end, "bad argument #1 to 'conv2d'")
  assert_error(function() cn.conv2d(x, w, 3) end, "bad argument #3 to 'conv2d'")
  assert_error(function() cn.conv2d(x, w, nil, 3) end, "bad argument #4 to 'conv2d'", "options table expected")
  assert_error(function() cn.conv2d(x, w, {strid = 2}) end,
    "conv2d: unknown option 'strid' (known: stride, padding, dilation, groups, activation)")
  assert_error(function() cn.conv2d(x, w, {output_padding = 1}) end, "unknown option 'output_padding'")
  assert_error(function() cn.conv2d(x, w, nil, {stride = "2"}) end,
    "bad argument #4 to 'conv2d' (option 'stride' must be an integer or a {h, w} pair of integers, got string)")
  assert_error(function() cn.conv2d(x, w, {padding = {1, 2, 3}}) end, "option 'padding' must be an integer or a {h, w} pair")
  assert_error(function() cn.conv2d(x, w, {padding = 1.5}) end, "option 'padding' must be an integer")
  assert_error(function() cn.conv2d(x, w, {groups = {1, 1}}) end, "option 'groups' must be an integer")
  assert_error(function() cn.conv2d(x, w, {padding = 1}, {}) end, "bad argument #4 to 'conv2d'")
  assert_error(function() cn.conv_transpose2d(x, w, nil, {stride = 1e12}) end,
    "bad argument #4 to 'conv_transpose2d' (option 'stride' must be an integer")
end

-- ---- the two routes (cn.conv_route): im2col + GEMM and the direct kernel --------------------------
-- Every fixture case under each forced route, and random shapes where the direct kernel's blocks
-- (4 output channels × 64 outputs) do not divide the sizes, against the GEMM route.

TestConvRoutes = {}

local function with_route(route, fn)
  local before = cn.conv_route(route)
  local ok, err = pcall(fn)
  cn.conv_route(before)
  if not ok then error(err, 0) end
end

for _, route in ipairs{"gemm", "direct"} do
  TestConvRoutes["testFixtures_" .. route] = function()
    with_route(route, function()
      for _, case in ipairs(fx.load("nn_conv")) do
        local inputs = fx.inputs(case, true)
        local out = call(case, inputs)
        fx.assert_close(out, case.output, {rtol = RTOL, atol = ATOL, label = case.name .. " (" .. route .. ")"})
        fx.check_grads(case, inputs, out, {rtol = RTOL, atol = ATOL})
      end
    end)
  end
end

function TestConvRoutes:testDirectAgainstGemm()
  cn.seed(11)
  local shapes = { -- N, C, H, W, O, kH, kW, pH, pW
    {1, 3, 17, 23, 13, 7, 7, 3, 3}, {3, 5, 9, 10, 6, 3, 3, 1, 1}, {2, 16, 28, 28, 8, 3, 3, 1, 1},
    {2, 8, 7, 7, 5, 3, 3, 0, 0}, {1, 4, 6, 40, 9, 1, 3, 0, 1}, {2, 2, 5, 5, 3, 5, 5, 2, 2},
    {1, 7, 3, 3, 4, 3, 3, 2, 2}, {1, 3, 4, 5, 2, 3, 3, 3, 3}, {2, 3, 6, 4, 5, 1, 3, 2, 4},
    -- small planes with 32 or more outputs: the kernel with vectors across output channels
    {2, 8, 7, 7, 40, 3, 3, 1, 1}, {1, 5, 14, 14, 33, 3, 3, 1, 1}, {2, 3, 9, 11, 32, 5, 5, 2, 2},
    -- an odd number of 16-channel vectors (3, 5, 7: the first block 3 wide), in y, dx and dW
    {2, 48, 7, 7, 48, 3, 3, 1, 1}, {1, 6, 14, 14, 80, 3, 3, 1, 1}, {1, 4, 8, 8, 112, 3, 3, 1, 1},
    -- stride 2 (a 10th entry, {sH, sW}): the small-plane kernel's forward, the GEMM route's gradients;
    -- the U-Net downsamples (29² and 15² padded by hand), a padded one, odd rows (segments of 8 past
    -- the row end), a stride in one dim only
    {2, 16, 29, 29, 16, 3, 3, 0, 0, {2, 2}}, {2, 32, 15, 15, 32, 3, 3, 0, 0, {2, 2}}, {1, 5, 28, 28, 40, 3, 3, 1, 1, {2, 2}},
    {2, 3, 16, 16, 48, 3, 3, 1, 1, {2, 2}}, {1, 4, 15, 17, 20, 5, 5, 2, 2, {2, 2}}, {1, 6, 14, 9, 32, 3, 3, 1, 1, {2, 1}},
    {1, 3, 9, 30, 17, 3, 3, 1, 0, {1, 2}},
  }
  for _, s in ipairs(shapes) do
    local x = cn.randn{s[1], s[2], s[3], s[4]}:requires_grad(true)
    local w = cn.randn{s[5], s[2], s[6], s[7]}:requires_grad(true)
    local b = cn.randn{s[5]}:requires_grad(true)
    local results = {}
    for _, route in ipairs{"gemm", "direct"} do
      with_route(route, function()
        local y = cn.conv2d(x, w, b, {padding = {s[8], s[9]}, stride = s[10] or 1})
        local g = cn.ones_like(y) * 0.5 + y * 0.1
        y:backward(g:detach())
        results[route] = {y = y:detach(), gx = x.grad, gw = w.grad, gb = b.grad}
        x.grad, w.grad, b.grad = nil, nil, nil
      end)
    end
    local label = table.concat(s, ",", 1, 9) .. (s[10] and (" stride " .. table.concat(s[10], "x")) or "")
    for _, k in ipairs{"y", "gx", "gw", "gb"} do
      local want = results.gemm[k]
      fx.assert_close(results.direct[k], {shape = want:shape(), data = want:totable{flat = true}}, {rtol = 1e-4, atol = 1e-4, label = label .. " " .. k})
    end
  end
end

function TestConvRoutes:testRouteNames()
  local before = cn.conv_route()
  lu.assertEquals(cn.conv_route("gemm"), before)
  lu.assertEquals(cn.conv_route(), "gemm")
  lu.assertEquals(cn.conv_route(before), "gemm")
  assert_error(function() cn.conv_route("fast") end, "invalid option 'fast'")
end

-- ---- a fused activation (cn.conv2d option activation) --------------------------------------------
-- Equal to the activation applied after the conv, forward and every gradient, on both routes, for
-- strided, 1×1 and chunked shapes; the gradient comes from the output (softplus: 1 - e^-y).

TestConvActivation = {}

local function spec_of(t) return {shape = t:shape(), data = t:totable{flat = true}} end

function TestConvActivation:testMatchesSeparateActivation()
  cn.seed(5)
  local cases = { -- N, C, H, W, O, k, stride, padding
    {2, 4, 9, 9, 6, 3, 1, 1}, {3, 5, 8, 7, 4, 3, 2, 1}, {2, 6, 5, 5, 3, 1, 1, 0}, {40, 3, 4, 4, 5, 3, 1, 1},
  }
  for _, route in ipairs{"gemm", "direct"} do
    with_route(route, function()
      for _, c in ipairs(cases) do
        for _, act in ipairs{"relu", "softplus"} do
          -- inputs spread so softplus sees its threshold (20) and relu both signs
          local x = (cn.randn{c[1], c[2], c[3], c[4]} * 6):requires_grad(true)
          local w = cn.randn{c[5], c[2], c[6], c[6]}:requires_grad(true)
          local b = cn.randn{c[5]}:requires_grad(true)
          local opts = {stride = c[7], padding = c[8]}
          local function run(fused)
            local y
            if fused then
              y = cn.conv2d(x, w, b, {stride = c[7], padding = c[8], activation = act})
            else
              y = cn.conv2d(x, w, b, opts)
              y = act == "relu" and y:relu() or y:softplus()
            end
            local g = cn.randn(y:shape())
            return y, g
          end
          cn.seed(9)
          local y1, g1 = run(false)
          y1:backward(g1)
          local want = {y = spec_of(y1:detach()), x = spec_of(x.grad), w = spec_of(w.grad), b = spec_of(b.grad)}
          x.grad, w.grad, b.grad = nil, nil, nil
          cn.seed(9)
          local y2, g2 = run(true)
          y2:backward(g2)
          local label = string.format("%s %s %s", route, act, table.concat(c, ","))
          fx.assert_close(y2:detach(), want.y, {rtol = 1e-5, atol = 1e-5, label = label .. " y"})
          fx.assert_close(x.grad, want.x, {rtol = 1e-4, atol = 1e-4, label = label .. " dx"})
          fx.assert_close(w.grad, want.w, {rtol = 1e-4, atol = 1e-4, label = label .. " dw"})
          fx.assert_close(b.grad, want.b, {rtol = 1e-4, atol = 1e-4, label = label .. " db"})
          x.grad, w.grad, b.grad = nil, nil, nil
        end
      end
    end)
  end
end

function TestConvActivation:testGradcheck()
  cn.seed(3)
  local x = cn.randn{1, 2, 5, 5}:requires_grad(true)
  local w = cn.randn{3, 2, 3, 3}:requires_grad(true)
  local b = cn.randn{3}:requires_grad(true)
  lu.assertTrue(cn.gradcheck(function(a, k, c) return cn.conv2d(a, k, c, {padding = 1, activation = "softplus"}) end,
    {x, w, b}))
end

function TestConvActivation:testErrors()
  local x, w = cn.randn{1, 2, 5, 5}, cn.randn{3, 2, 3, 3}
  assert_error(function() cn.conv2d(x, w, {activation = "silu"}) end, "'activation' must be")
  assert_error(function() cn.conv_transpose2d(x, cn.randn{2, 3, 3, 3}, {activation = "relu"}) end,
    "unknown option 'activation'")
end
