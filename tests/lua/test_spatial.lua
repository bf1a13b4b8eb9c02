-- test_spatial.lua — the spatial ops (engine/ops_spatial.c, engine/lua/l_spatial.c): every case of
-- tests/fixtures/nn_spatial.lua (PyTorch, see tests/tools/fixtures_spatial.py) forward and gradient;
-- strided inputs and tensor methods; finite-difference gradchecks on tiny inputs; the Lua API's
-- defaults and options; error messages.
local lu = require "luaunit"
local helpers = require "helpers"
local cn = require "cunet"
local fx = require "fixture_check"

-- The fixtures hold torch's float64 answers rounded to float32. Forwards sum in double and round
-- once; backwards scatter in float32 over a handful of terms, so a few ulps at most. Tolerances ten
-- times tighter than fixture_check's defaults: an off-by-one window or index would show at once.
local RTOL, ATOL = 1e-5, 1e-6

local function flat(t) return t:totable{flat = true} end

local assert_error = helpers.assert_error

-- ---- PyTorch fixtures: one test per case ---------------------------------------------------------

local cases = fx.load("nn_spatial")

TestSpatialFixtures = {}

for _, case in ipairs(cases) do
  TestSpatialFixtures["test_" .. case.name] = function()
    local ins = fx.inputs(case, true)
    local y = cn[case.op](ins[1], table.unpack(case.args))
    fx.assert_close(y, case.output, {rtol = RTOL, atol = ATOL, label = case.name .. ": output"})
    fx.check_grads(case, ins, y, {rtol = RTOL, atol = ATOL})
  end
end

-- The same cases on a non-contiguous copy of the input (a transposed view), called as methods.
TestSpatialViews = {}

function TestSpatialViews:testEveryCaseOnATransposedView()
  for _, case in ipairs(cases) do
    local x = fx.tensor(case.inputs[1])
    local nd = x:dim()
    if nd >= 2 then
      local v = x:transpose(nd - 1, nd):contiguous():transpose(nd - 1, nd) -- same values, strided
      lu.assertFalse(v:is_contiguous())
      v:requires_grad(true)
      local y = v[case.op](v, table.unpack(case.args))
      fx.assert_close(y, case.output, {rtol = RTOL, atol = ATOL, label = case.name .. " (view): output"})
      fx.check_grads(case, {v}, y, {rtol = RTOL, atol = ATOL, label = case.name .. " (view)"})
    end
  end
end

-- ---- autograd behaviour --------------------------------------------------------------------------

TestSpatialAutograd = {}

function TestSpatialAutograd:testBackwardAccumulates()
  local x = cn.randn{1, 2, 4, 4}:requires_grad(true)
  local y = cn.max_pool2d(x, 2):sum() + cn.avg_pool2d(x, 2):sum()
  y:backward()
  local once = flat(x.grad)
  cn.max_pool2d(x, 2):sum():backward()
  cn.avg_pool2d(x, 2):sum():backward()
  local twice = flat(x.grad)
  for i = 1, #once do lu.assertAlmostEquals(twice[i], 2 * once[i], 1e-6) end
  -- each 2x2 window: 1 to its max, 0.25 to all four
  local total = 0
  for i = 1, #once do total = total + once[i] end
  lu.assertAlmostEquals(total, 2 * 4 * 1 + 2 * 16 * 0.25, 1e-5)
end

function TestSpatialAutograd:testNoGradRecordsNothing()
  local x = cn.randn{1, 1, 4, 4}:requires_grad(true)
  local y = cn.no_grad(function() return cn.upsample(x, {scale_factor = 2, mode = "bilinear"}) end)
  lu.assertFalse(y:requires_grad())
  lu.assertTrue(cn.pad(x, {1, 1}):requires_grad())
end

function TestSpatialAutograd:testGradcheck()
  cn.seed(7)
  local function x(shape) return cn.randn(shape) end
  local checks = {
    {"nearest", function(t) return cn.upsample(t, {size = {5, 3}}) end, {1, 2, 3, 4}},
    {"nearest scale", function(t) return cn.interpolate(t, {scale_factor = 0.6}) end, {1, 1, 5, 5}},
    {"bilinear", function(t) return cn.upsample(t, {size = {5, 7}, mode = "bilinear"}) end, {1, 2, 3, 4}},
    {"bilinear ac", function(t) return cn.upsample(t, {scale_factor = 0.5, mode = "bilinear", align_corners = true}) end,
      {1, 2, 5, 6}},
    {"avg", function(t) return cn.avg_pool2d(t, 3, {stride = 2, padding = 1, ceil_mode = true}) end, {1, 2, 5, 6}},
    {"avg nopad", function(t) return cn.avg_pool2d(t, 3, {stride = 2, padding = 1, count_include_pad = false}) end,
      {1, 1, 5, 5}},
    {"max", function(t) return cn.max_pool2d(t, 2, {stride = 1, padding = 1, dilation = {1, 2}}) end, {1, 2, 4, 5}},
    {"adaptive", function(t) return cn.adaptive_avg_pool2d(t, {3, 2}) end, {1, 2, 5, 4}},
    {"pad constant", function(t) return cn.pad(t, {1, -1, 2, 0}, "constant", 3) end, {2, 3, 4}},
    {"pad reflect", function(t) return cn.pad(t, {2, 1, -1, 2}, "reflect") end, {1, 2, 3, 4}},
    {"pad replicate", function(t) return cn.pad(t, {3, -1, 1, 2}, {mode = "replicate"}) end, {1, 2, 3, 4}},
  }
  for _, c in ipairs(checks) do
    local ok, err = pcall(cn.gradcheck, c[2], {x(c[3])}, {eps = 1e-3})
    lu.assertTrue(ok, c[1] .. ": " .. tostring(err))
  end
end

-- ---- the Lua API: defaults, options, small exact examples -----------------------------------------

TestSpatialApi = {}

local function grid(h, w) return cn.arange(h * w):reshape{1, 1, h, w} end

function TestSpatialApi:testNearest()
  local y = cn.upsample(cn.tensor{{{{1, 2}, {3, 4}}}}, {scale_factor = 2})
  lu.assertEquals(y:totable(), {{{{1, 1, 2, 2}, {1, 1, 2, 2}, {3, 3, 4, 4}, {3, 3, 4, 4}}}})
  -- size as a number, floor(dst * 3 / 2)
  lu.assertEquals(flat(cn.upsample(grid(1, 3), {size = {1, 2}})), {0, 1})
  lu.assertEquals(cn.interpolate(grid(2, 3), {size = 5}):shape(), {1, 1, 5, 5})
end

function TestSpatialApi:testScaleFactorUsesTheScale()
  -- torch: 7 * 0.4 -> 2 outputs, sampled at floor(j / 0.4) = 0, 2 (in / out would give 0, 3)
  lu.assertEquals(flat(cn.upsample(grid(1, 7), {scale_factor = {1, 0.4}})), {0, 2})
  lu.assertEquals(flat(cn.upsample(grid(1, 7), {scale_factor = {1, 0.4}, recompute_scale_factor = true})), {0, 3})
end

function TestSpatialApi:testBilinear()
  local x = cn.tensor{{{{0, 2}, {4, 6}}}}
  local y = cn.upsample(x, {size = {3, 3}, mode = "bilinear", align_corners = true})
  lu.assertEquals(y:totable(), {{{{0, 1, 2}, {2, 3, 4}, {4, 5, 6}}}})
  local z = cn.upsample(x, {scale_factor = 2, mode = "bilinear"}) -- half-pixel centres, clamped
  lu.assertEquals({z[{1, 1, 1, 1}], z[{1, 1, 1, 2}], z[{1, 1, 1, 3}], z[{1, 1, 1, 4}]}, {0, 0.5, 1.5, 2})
end

function TestSpatialApi:testPoolDefaults()
  local x = grid(4, 4)
  lu.assertEquals(x:max_pool2d(2):totable(), {{{{5, 7}, {13, 15}}}}) -- stride defaults to kernel
  lu.assertEquals(x:avg_pool2d(2):totable(), {{{{2.5, 4.5}, {10.5, 12.5}}}})
  lu.assertEquals(x:avg_pool2d({2, 4}):totable(), {{{{3.5}, {11.5}}}})
  lu.assertEquals(x:max_pool2d(2, {stride = {1, 2}}):shape(), {1, 1, 3, 2})
  -- count_include_pad defaults to true: the corner window of 3x3/pad 1 counts 9, not 4
  lu.assertAlmostEquals(x:avg_pool2d(3, {stride = 1, padding = 1})[{1, 1, 1, 1}], (0 + 1 + 4 + 5) / 9, 1e-6)
  lu.assertAlmostEquals(x:avg_pool2d(3, {stride = 1, padding = 1, count_include_pad = false})[{1, 1, 1, 1}],
    (0 + 1 + 4 + 5) / 4, 1e-6)
  lu.assertEquals(x:adaptive_avg_pool2d(1):totable(), {{{{7.5}}}})
end

function TestSpatialApi:testMaxPoolNaNAndPadding()
  local x = cn.tensor{{{{-5, -6}, {0 / 0, -7}}}}
  local y = cn.max_pool2d(x, 2)
  lu.assertTrue(y:item() ~= y:item()) -- NaN wins
  -- padding counts as -inf: an all-negative input keeps its values
  local z = cn.max_pool2d(cn.full({1, 1, 2, 2}, -3), 2, {stride = 1, padding = 1})
  for _, v in ipairs(flat(z)) do lu.assertEquals(v, -3) end
end

function TestSpatialApi:testPad()
  local x = cn.tensor{{1, 2, 3}}
  lu.assertEquals(cn.pad(x, {1, 2}):totable(), {{0, 1, 2, 3, 0, 0}})
  lu.assertEquals(cn.pad(x, {1, 0, 1, 1}, "constant", 9):totable(), {{9, 9, 9, 9}, {9, 1, 2, 3}, {9, 9, 9, 9}})
  lu.assertEquals(cn.pad(x, {2, 2}, "reflect"):totable(), {{3, 2, 1, 2, 3, 2, 1}})
  lu.assertEquals(x:pad({2, 1}, {mode = "replicate"}):totable(), {{1, 1, 1, 2, 3, 3}})
  lu.assertEquals(cn.pad(x, {-1, -1}):totable(), {{2}})
  lu.assertEquals(cn.pad(x, {-3, 0}):shape(), {1, 0}) -- constant mode may crop to nothing
  lu.assertEquals(cn.pad(x, {}):totable(), {{1, 2, 3}})
  lu.assertEquals(cn.pad(cn.tensor{{1, 2}}, {1, 1, 1, 0}):totable(), {{0, 0, 0, 0}, {0, 1, 2, 0}})
end

-- Constant padding copies each row's run of the last dim at once (and adds it back in the
-- backward); a strided last dim, reflect and replicate take the element-by-element route. Both
-- must agree, forward and backward, with pads and crops on either side.
function TestSpatialApi:testPadRowRunsAgreeWithStridedInput()
  local base = cn.randn{3, 5, 7}
  for _, pads in ipairs{{0, 1, 0, 1}, {2, -1, -1, 3}, {-2, 3, 1, 0}, {-1, -2, 0, 0}} do
    local a = base:clone():requires_grad(true)
    local b = base:transpose(2, 3):clone():transpose(2, 3):requires_grad(true) -- same values, last-dim stride 5
    lu.assertNotEquals(b:stride(3), 1)
    local ya, yb = cn.pad(a, pads, "constant", 0.5), cn.pad(b, pads, "constant", 0.5)
    lu.assertEquals(ya:totable(), yb:totable())
    local w = cn.randn(ya:shape())
    ya:mul(w):sum():backward()
    yb:mul(w):sum():backward()
    lu.assertEquals(a.grad:totable(), b.grad:totable())
  end
end

-- ---- errors --------------------------------------------------------------------------------------

TestSpatialErrors = {}

function TestSpatialErrors:testUpsample()
  local x = cn.zeros{1, 1, 4, 4}
  assert_error(function() cn.upsample(cn.zeros{4, 4}, {size = 8}) end, "upsample_nearest2d", "4-D", "[4, 4]")
  assert_error(function() cn.upsample(x, {size = 8, scale_factor = 2}) end, "exactly one of size and scale_factor")
  assert_error(function() cn.upsample(x, {}) end, "exactly one of size and scale_factor")
  assert_error(function() cn.upsample(x, {size = 8, mode = "bicubic"}) end, "mode must be", "bicubic")
  assert_error(function() cn.upsample(x, {size = 8, align_corners = true}) end, "align_corners", "bilinear")
  assert_error(function() cn.upsample(x, {size = {0, 3}, mode = "bilinear"}) end,
    "upsample_bilinear2d", "output size must be positive", "0x3", "[1, 1, 4, 4]")
  assert_error(function() cn.upsample(x, {scale_factor = 0.1}) end, "output size must be positive", "0x0")
  assert_error(function() cn.upsample(x, {scale_factor = -1}) end, "scale_factor must be a positive number")
  assert_error(function() cn.upsample(x, {size = 8, sizes = 2}) end, "unknown option 'sizes'")
  assert_error(function() cn.upsample(x, {size = 8, mode = 2}) end, "option 'mode' must be a string")
  assert_error(function() cn.upsample(x, {scale_factor = 1e300}) end, "output size too large")
  assert_error(function() cn.upsample(x, {size = {2, 2.5}}) end, "option 'size' must be an integer or a {h, w} pair")
  assert_error(function() cn.upsample(x) end, "upsample", "table expected")
end

function TestSpatialErrors:testPools()
  local x = cn.zeros{1, 2, 4, 4}
  assert_error(function() cn.max_pool2d(cn.zeros{4, 4}, 2) end, "max_pool2d", "3-D", "4-D", "[4, 4]")
  assert_error(function() cn.avg_pool2d(x, 0) end, "avg_pool2d", "kernel size must be positive", "0x0")
  assert_error(function() cn.avg_pool2d(x, 2, {stride = {1, 0}}) end, "stride must be positive", "1x0")
  assert_error(function() cn.max_pool2d(x, 2, {dilation = 0}) end, "dilation must be positive")
  assert_error(function() cn.max_pool2d(x, 3, {padding = 2}) end, "max_pool2d", "half the kernel", "padding 2x2",
    "kernel 3x3")
  assert_error(function() cn.avg_pool2d(x, 5) end, "avg_pool2d", "[1, 2, 4, 4] is too small", "kernel 5x5", "0x0")
  assert_error(function() cn.max_pool2d(x, 2, {dilation = 4}) end, "too small", "dilation 4x4")
  assert_error(function() cn.max_pool2d(x, 2, {strides = 1}) end, "unknown option 'strides'")
  assert_error(function() cn.max_pool2d(x, 2.5) end, "kernel size must be an integer")
  assert_error(function() cn.avg_pool2d(x, {1, 2, 3}) end, "kernel size must be an integer or a pair")
  assert_error(function() cn.avg_pool2d(x, 2, {ceil_mode = 1}) end, "option 'ceil_mode' must be a boolean")
  assert_error(function() cn.adaptive_avg_pool2d(x, {0, 2}) end, "adaptive_avg_pool2d", "must be positive", "0x2")
  assert_error(function() cn.adaptive_avg_pool2d(cn.zeros{1, 1, 0, 3}, 2) end, "empty spatial dim", "[1, 1, 0, 3]")
end

function TestSpatialErrors:testPad()
  local x = cn.zeros{1, 1, 3, 4}
  assert_error(function() cn.pad(x, {1, 2, 3}) end, "even number of entries, got 3")
  assert_error(function() cn.pad(cn.zeros{3, 4}, {1, 1, 1, 1, 1, 1}) end, "pad: 3 padding pairs for a 2-D input [3, 4]")
  assert_error(function() cn.pad(cn.zeros{2}, {1, 1, 1, 0}) end, "pad: 2 padding pairs for a 1-D input [2]")
  assert_error(function() cn.pad(x, {1, 1}, "circular") end, "mode must be", "'circular'")
  assert_error(function() cn.pad(x, {4, 0}, "reflect") end, "reflect padding (4, 0) must be smaller than the size 4",
    "dim -1", "[1, 1, 3, 4]")
  assert_error(function() cn.pad(x, {0, 0, 0, 3}, "reflect") end, "(0, 3)", "size 3 of dim -2")
  assert_error(function() cn.pad(x, {-2, -2}, "replicate") end, "leaves dim -1", "size 0 in replicate mode")
  assert_error(function() cn.pad(x, {-3, -2}) end, "leaves dim -1", "size -1")
  assert_error(function() cn.pad(x, {1, 1, 1, 1, 1, 1, 1, 1}, "reflect") end, "reflect mode pads 1 to 3 trailing dims")
  assert_error(function() cn.pad(x, {1, 1}, "reflect", 2) end, "padding mode \"reflect\" takes no value")
  assert_error(function() cn.pad(x, {1.5, 1}) end, "padding entry 1 is not an integer")
end
