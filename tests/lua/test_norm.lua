-- test_norm.lua — the normalisation layers (engine/ops_norm.c, engine/lua/l_norm.c): every case of
-- tests/fixtures/nn_norm.lua (PyTorch, see tests/tools/fixtures_norm.py) forward, gradients and
-- batch-norm running statistics; finite-difference gradchecks on tiny inputs; the Lua API's
-- defaults and options; error messages.
local lu = require "luaunit"
local helpers = require "helpers"
local cn = require "cunet"
local fx = require "fixture_check"

-- The fixtures hold torch's float64 answers rounded to float32. The kernels accumulate in double and
-- lose a few float32 ulps at most (measured worst: 2e-6 absolute on gradients of magnitude ~10, 5e-7 on
-- outputs), so the tolerances are ten times tighter than fixture_check's defaults (1e-4 / 1e-5):
-- a float accumulation or a misplaced eps would show up.
local RTOL, ATOL = 1e-5, 1e-6

local function flat(t) return t:totable{flat = true} end

local assert_error = helpers.assert_error

local function assert_near(got, want, tol, label)
  lu.assertEquals(#got, #want, label)
  for i = 1, #want do
    lu.assertTrue(math.abs(got[i] - want[i]) <= tol * (1 + math.abs(want[i])),
      string.format("%s: element %d is %.9g, expected %.9g", label or "value", i, got[i], want[i]))
  end
end

-- The Lua call a fixture case describes, on tensors ins (nil where the case has no weight/bias).
local function call(case, ins)
  local a = case.args
  if case.op == "group_norm" then
    return cn.group_norm(ins[1], a.num_groups, ins[2], ins[3], a.eps)
  elseif case.op == "instance_norm" then
    return cn.instance_norm(ins[1], ins[2], ins[3], a.eps)
  elseif case.op == "layer_norm" then
    return cn.layer_norm(ins[1], a.normalized_shape, ins[2], ins[3], a.eps)
  elseif case.op == "batch_norm" then
    return cn.batch_norm(ins[1], ins[2], ins[3], ins[4], ins[5],
      {training = a.training, momentum = a.momentum, eps = a.eps})
  end
  error("unknown op " .. tostring(case.op))
end

-- ---- PyTorch fixtures: one test per case ----------------------------------------------------------

TestNormFixtures = {}

for _, case in ipairs(fx.load("nn_norm")) do
  TestNormFixtures["test_" .. case.name] = function()
    local ins = fx.inputs(case, true)
    local before = {}
    for i, t in ipairs(ins) do before[i] = flat(t) end
    local y = call(case, ins)
    fx.assert_close(y, case.output, {rtol = RTOL, atol = ATOL, label = case.name .. ": output"})
    fx.check_grads(case, ins, y, {rtol = RTOL, atol = ATOL})
    if case.running_mean then
      fx.assert_close(ins[2], case.running_mean, {rtol = RTOL, atol = ATOL, label = case.name .. ": running_mean"})
      fx.assert_close(ins[3], case.running_var, {rtol = RTOL, atol = ATOL, label = case.name .. ": running_var"})
    end
    -- nothing else is written in place (eval batch norm leaves its running buffers alone)
    for i, t in ipairs(ins) do
      if not (case.running_mean and (i == 2 or i == 3)) then
        lu.assertEquals(flat(t), before[i], case.name .. ": input " .. i .. " was modified")
      end
    end
  end
end

-- ---- finite differences ---------------------------------------------------------------------------

TestNormGradcheck = {}

function TestNormGradcheck:setUp() cn.seed(11) end

function TestNormGradcheck:testGroupNorm()
  lu.assertTrue(cn.gradcheck(function(x, w, b) return cn.group_norm(x, 2, w, b) end,
    {cn.randn{2, 4, 3, 3}, cn.randn{4}, cn.randn{4}}))
  lu.assertTrue(cn.gradcheck(function(x) return cn.group_norm(x, 3) end, {cn.randn{2, 6, 5} * 3 + 1}))
end

function TestNormGradcheck:testGroupNorm2D()
  lu.assertTrue(cn.gradcheck(function(x, w, b) return cn.group_norm(x, 2, w, b) end,
    {cn.randn{3, 6}, cn.randn{6}, cn.randn{6}}))
end

function TestNormGradcheck:testGroupNormWeightOnly()
  lu.assertTrue(cn.gradcheck(function(x, w) return cn.group_norm(x, 1, w) end, {cn.randn{2, 3, 4}, cn.randn{3}}))
  lu.assertTrue(cn.gradcheck(function(x, b) return cn.group_norm(x, 1, nil, b) end, {cn.randn{2, 3, 4}, cn.randn{3}}))
end

function TestNormGradcheck:testInstanceNorm()
  lu.assertTrue(cn.gradcheck(function(x, w, b) return cn.instance_norm(x, w, b) end,
    {cn.randn{2, 3, 2, 3}, cn.randn{3}, cn.randn{3}}))
  lu.assertTrue(cn.gradcheck(function(x) return cn.instance_norm(x) end, {cn.randn{2, 2, 5}}))
end

function TestNormGradcheck:testLayerNorm()
  lu.assertTrue(cn.gradcheck(function(x, w, b) return cn.layer_norm(x, {3, 4}, w, b) end,
    {cn.randn{2, 3, 4}, cn.randn{3, 4}, cn.randn{3, 4}}))
  lu.assertTrue(cn.gradcheck(function(x) return cn.layer_norm(x, 5) end, {cn.randn{4, 5}}))
end

function TestNormGradcheck:testBatchNormTrain()
  lu.assertTrue(cn.gradcheck(function(x, w, b) return cn.batch_norm(x, nil, nil, w, b, {training = true}) end,
    {cn.randn{3, 2, 2, 3}, cn.randn{2}, cn.randn{2}}))
  lu.assertTrue(cn.gradcheck(function(x, w, b) return cn.batch_norm(x, nil, nil, w, b, {training = true}) end,
    {cn.randn{6, 4}, cn.randn{4}, cn.randn{4}}))
end

function TestNormGradcheck:testBatchNormEval()
  local rm, rv = cn.randn{3}, cn.rand{3} + 0.5
  lu.assertTrue(cn.gradcheck(function(x, w, b) return cn.batch_norm(x, rm, rv, w, b) end,
    {cn.randn{2, 3, 4}, cn.randn{3}, cn.randn{3}}))
end

-- ---- API: defaults, options, views, accumulation --------------------------------------------------

TestNormApi = {}

function TestNormApi:setUp() cn.seed(5) end

function TestNormApi:testEpsDefault()
  local x = cn.randn{2, 4, 3} * 0.001 -- small variance: eps matters
  lu.assertEquals(flat(cn.group_norm(x, 2)), flat(cn.group_norm(x, 2, nil, nil, 1e-5)))
  lu.assertEquals(flat(cn.instance_norm(x)), flat(cn.instance_norm(x, nil, nil, 1e-5)))
  lu.assertEquals(flat(cn.layer_norm(x, {4, 3})), flat(cn.layer_norm(x, {4, 3}, nil, nil, 1e-5)))
  lu.assertNotEquals(flat(cn.group_norm(x, 2)), flat(cn.group_norm(x, 2, nil, nil, 1e-3)))
end

function TestNormApi:testGroupNormMatchesFormula()
  -- one group of 4 values {1, 2, 3, 6}: mean 3, biased var 3.5
  local x = cn.tensor({1, 2, 3, 6}, {1, 2, 2})
  local y = cn.group_norm(x, 1, nil, nil, 0.5)
  local s = math.sqrt(3.5 + 0.5)
  assert_near(flat(y), {-2 / s, -1 / s, 0, 3 / s}, 1e-6, "group_norm")
  local w, b = cn.tensor{2, -1}, cn.tensor{0.5, 1}
  assert_near(flat(cn.group_norm(x, 1, w, b, 0.5)), {-4 / s + 0.5, -2 / s + 0.5, 1, -3 / s + 1}, 1e-6, "affine")
end

-- group_norm(..., "silu") is silu(group_norm(...)): fused in one pass when no gradient is recorded,
-- the same values bit for bit (the same expressions, stored once instead of twice); with gradients,
-- the two recorded ops, so the gradients are those of the composition.
function TestNormApi:testGroupNormSiluFused()
  for _, shape in ipairs{{3, 8, 5, 7}, {2, 6, 4}, {4, 12}} do
    local x, w, b = cn.randn(shape) * 3, cn.randn{shape[2]}, cn.randn{shape[2]}
    local groups = shape[2] // 2
    local want = cn.group_norm(x, groups, w, b, 1e-6):silu()
    local got = cn.no_grad(function() return cn.group_norm(x, groups, w, b, 1e-6, "silu") end)
    lu.assertEquals(flat(got), flat(want), "fused, shape " .. table.concat(shape, "x"))
    lu.assertEquals(flat(cn.group_norm(x, groups, nil, nil, 1e-6, "silu")), flat(cn.group_norm(x, groups, nil, nil, 1e-6):silu()))
    local xs, ws, bs = x:clone():requires_grad(true), w:clone():requires_grad(true), b:clone():requires_grad(true)
    local xu, wu, bu = x:clone():requires_grad(true), w:clone():requires_grad(true), b:clone():requires_grad(true)
    local g = cn.randn(shape)
    cn.group_norm(xs, groups, ws, bs, 1e-6, "silu"):mul(g):sum():backward()
    cn.group_norm(xu, groups, wu, bu, 1e-6):silu():mul(g):sum():backward()
    lu.assertEquals(flat(xs.grad), flat(xu.grad))
    lu.assertEquals(flat(ws.grad), flat(wu.grad))
    lu.assertEquals(flat(bs.grad), flat(bu.grad))
  end
  lu.assertTrue(cn.gradcheck(function(x, w) return cn.group_norm(x, 2, w, nil, 1e-5, "silu") end,
    {cn.randn{2, 4, 3}, cn.randn{4}}))
  local gn = cn.nn.GroupNorm(2, 4)
  local x = cn.randn{2, 4, 3, 3}
  lu.assertEquals(flat(cn.no_grad(function() return gn(x, "silu") end)), flat(gn(x):silu()))
  assert_error(function() gn(x, "relu") end, "GroupNorm", 'activation must be "silu" or nil, got relu')
end

function TestNormApi:testInstanceIsGroupPerChannel()
  local x, w, b = cn.randn{2, 3, 4, 5}, cn.randn{3}, cn.randn{3}
  lu.assertEquals(flat(cn.instance_norm(x, w, b)), flat(cn.group_norm(x, 3, w, b)))
end

function TestNormApi:testLayerNormShapes()
  local x = cn.randn{3, 4, 5}
  lu.assertEquals(flat(cn.layer_norm(x, 5)), flat(cn.layer_norm(x, {5})))
  local y = cn.layer_norm(x, {4, 5})
  lu.assertEquals(y:shape(), {3, 4, 5})
  assert_near(flat(y:mean({2, 3})), {0, 0, 0}, 1e-6, "mean")
  assert_near(flat(y:var({2, 3}, false, 0)), {1, 1, 1}, 1e-4, "var") -- var / (var + eps)
end

function TestNormApi:testStridedInput()
  local x = cn.randn{4, 2, 3, 5}
  local xt = x:transpose(1, 2):contiguous():transpose(1, 2) -- same values, non-contiguous
  lu.assertFalse(xt:is_contiguous())
  local w, b = cn.randn{2}, cn.randn{2}
  lu.assertEquals(flat(cn.group_norm(xt, 2, w, b)), flat(cn.group_norm(x, 2, w, b)))
  lu.assertEquals(flat(cn.batch_norm(xt, nil, nil, w, b, {training = true})),
    flat(cn.batch_norm(x, nil, nil, w, b, {training = true})))
  -- strided weight
  local w2 = cn.randn{2, 2}:select(2, 1)
  local w5 = cn.randn{5, 2}:select(2, 2)
  lu.assertEquals(flat(cn.layer_norm(x, 5, w5)), flat(cn.layer_norm(x, 5, w5:contiguous())))
  lu.assertEquals(flat(cn.group_norm(x, 1, w2)), flat(cn.group_norm(x, 1, w2:contiguous())))
end

function TestNormApi:testExpandedGradient()
  -- sum() hands back an expanded (stride-0) gradient. One channel per group: Σ y is constant in x
  -- (Σ x̂ = 0 per channel), d/dw = Σ x̂ = 0 and d/db = elements per channel
  local x, w, b = cn.randn{2, 4, 3}, cn.randn{4}, cn.randn{4}
  for _, t in ipairs{x, w, b} do t:requires_grad(true) end
  cn.group_norm(x, 4, w, b):sum():backward()
  assert_near(flat(x.grad), flat(cn.zeros{2, 4, 3}), 1e-5, "dx")
  assert_near(flat(w.grad), {0, 0, 0, 0}, 1e-5, "dw")
  lu.assertEquals(flat(b.grad), {6, 6, 6, 6})
end

function TestNormApi:testBackwardAccumulates()
  local x, w = cn.randn{2, 3, 4}, cn.randn{3}
  x:requires_grad(true)
  w:requires_grad(true)
  local g = cn.randn{2, 3, 4}
  cn.group_norm(x, 3, w):backward(g)
  local gx, gw = flat(x.grad), flat(w.grad)
  cn.group_norm(x, 3, w):backward(g)
  assert_near(flat(x.grad), (function() local t = {} for i, v in ipairs(gx) do t[i] = 2 * v end return t end)(), 1e-6, "dx")
  assert_near(flat(w.grad), (function() local t = {} for i, v in ipairs(gw) do t[i] = 2 * v end return t end)(), 1e-6, "dw")
end

function TestNormApi:testOnlySomeInputsRequireGrad()
  local x, w, b = cn.randn{2, 4, 3}, cn.randn{4}, cn.randn{4}
  b:requires_grad(true)
  local y = cn.group_norm(x, 2, w, b)
  lu.assertTrue(y:requires_grad())
  local g = cn.autograd.grad(y, {b}, cn.ones{2, 4, 3})
  lu.assertEquals(flat(g[1]), {6, 6, 6, 6})
  lu.assertFalse(cn.group_norm(cn.randn{2, 4, 3}, 2):requires_grad())
  lu.assertFalse(cn.no_grad(function() return cn.group_norm(x, 2, w, b) end):requires_grad())
end

function TestNormApi:testEmptyBatch()
  local y = cn.group_norm(cn.zeros{0, 4, 3}, 2)
  lu.assertEquals(y:shape(), {0, 4, 3})
end

-- ---- batch norm running statistics ---------------------------------------------------------------

TestNormRunningStats = {}

function TestNormRunningStats:setUp() cn.seed(9) end

function TestNormRunningStats:testTrainingUpdates()
  local x = cn.tensor({1, 2, 3, 10, 20, 60}, {3, 2}) -- channel 1: {1, 3, 20}, channel 2: {2, 10, 60}
  local rm, rv = cn.tensor{0.5, -1}, cn.tensor{2, 3}
  local y = cn.batch_norm(x, rm, rv, nil, nil, {training = true, momentum = 0.25})
  local m1, m2 = 8, 24
  local v1 = ((1 - m1) ^ 2 + (3 - m1) ^ 2 + (20 - m1) ^ 2) / 2 -- unbiased for the running var
  local v2 = ((2 - m2) ^ 2 + (10 - m2) ^ 2 + (60 - m2) ^ 2) / 2
  assert_near(flat(rm), {0.75 * 0.5 + 0.25 * m1, 0.75 * -1 + 0.25 * m2}, 1e-6, "running_mean")
  assert_near(flat(rv), {0.75 * 2 + 0.25 * v1, 0.75 * 3 + 0.25 * v2}, 1e-6, "running_var")
  -- the output uses the biased batch variance
  local s1 = math.sqrt(v1 * 2 / 3 + 1e-5)
  assert_near(flat(y:select(2, 1)), {(1 - m1) / s1, (3 - m1) / s1, (20 - m1) / s1}, 1e-6, "y")
end

function TestNormRunningStats:testMomentumDefault()
  local x = cn.randn{4, 3, 2}
  local rm1, rv1, rm2, rv2 = cn.zeros{3}, cn.ones{3}, cn.zeros{3}, cn.ones{3}
  cn.batch_norm(x, rm1, rv1, nil, nil, {training = true})
  cn.batch_norm(x, rm2, rv2, nil, nil, {training = true, momentum = 0.1, eps = 1e-5})
  lu.assertEquals(flat(rm1), flat(rm2))
  lu.assertEquals(flat(rv1), flat(rv2))
  lu.assertNotEquals(flat(rm1), {0, 0, 0})
end

function TestNormRunningStats:testEvalLeavesBuffersAndUsesThem()
  local x = cn.randn{4, 3, 2}
  local rm, rv = cn.tensor{1, 2, 3}, cn.tensor{4, 9, 16}
  local y = cn.batch_norm(x, rm, rv) -- training defaults to false, as torch.nn.functional
  lu.assertEquals(flat(rm), {1, 2, 3})
  lu.assertEquals(flat(rv), {4, 9, 16})
  local want = flat((x - cn.tensor{1, 2, 3}:view{1, 3, 1}) / (cn.tensor{4, 9, 16}:view{1, 3, 1} + 1e-5):sqrt())
  assert_near(flat(y), want, 1e-6, "y")
end

function TestNormRunningStats:testTrainingWithoutBuffers()
  local x = cn.randn{5, 2, 3}
  local rm, rv = cn.zeros{2}, cn.ones{2}
  lu.assertEquals(flat(cn.batch_norm(x, nil, nil, nil, nil, {training = true})),
    flat(cn.batch_norm(x, rm, rv, nil, nil, {training = true})))
end

function TestNormRunningStats:testStridedBuffers()
  local buf = cn.zeros{3, 2}
  local rm = buf:select(2, 1)
  local rv = cn.ones{3}
  cn.batch_norm(cn.tensor({1, 2, 3, 5, 6, 7}, {2, 3}), rm, rv, nil, nil, {training = true, momentum = 1})
  assert_near(flat(buf), {3, 0, 4, 0, 5, 0}, 1e-6, "buffer")
  assert_near(flat(rv), {8, 8, 8}, 1e-6, "running_var")
end

function TestNormRunningStats:testBuffersAreNotDifferentiated()
  local x, rm, rv = cn.randn{4, 2}, cn.zeros{2}, cn.ones{2}
  x:requires_grad(true)
  local y = cn.batch_norm(x, rm, rv, nil, nil, {training = true})
  y:backward(cn.randn{4, 2})
  lu.assertNil(rm.grad)
  lu.assertFalse(rm:requires_grad())
  -- a running buffer that requires grad may not be updated in place
  local p = cn.zeros{2}
  p:requires_grad(true)
  assert_error(function() cn.batch_norm(x, p, rv, nil, nil, {training = true}) end, "batch_norm", "in-place")
end

-- ---- errors -------------------------------------------------------------------------------------

TestNormErrors = {}

function TestNormErrors:testGroupNorm()
  local x = cn.randn{2, 6, 3, 3}
  assert_error(function() cn.group_norm(x, 4) end, "group_norm", "6 channels cannot be split into 4 groups",
    "[2, 6, 3, 3]")
  assert_error(function() cn.group_norm(x, 0) end, "group_norm", "num_groups must be positive")
  assert_error(function() cn.group_norm(cn.randn{6}, 1) end, "group_norm", "[N, C, *]", "[6]")
  assert_error(function() cn.group_norm(x, 2, cn.randn{5}) end, "group_norm", "weight of shape [5]",
    "6 channels", "[2, 6, 3, 3]")
  assert_error(function() cn.group_norm(x, 2, nil, cn.randn{6, 1}) end, "group_norm", "bias of shape [6, 1]")
  assert_error(function() cn.group_norm(x, 2, nil, nil, -1) end, "group_norm", "eps")
  assert_error(function() cn.group_norm(x, 2, "w") end, "group_norm", "tensor expected")
  assert_error(function() cn.group_norm(x, 2, nil, nil, 1e-5, "gelu") end, "group_norm", 'activation must be "silu" or nil, got gelu')
  assert_error(function() cn.group_norm(x, 2, nil, nil, 1e-5, 1) end, "group_norm", 'activation must be "silu" or nil, got number')
end

function TestNormErrors:testInstanceNorm()
  assert_error(function() cn.instance_norm(cn.randn{2, 3}) end, "instance_norm", "more than 1 spatial element", "[2, 3]")
  assert_error(function() cn.instance_norm(cn.randn{2, 3, 1, 1}) end, "instance_norm", "[2, 3, 1, 1]")
  assert_error(function() cn.instance_norm(cn.randn{2, 3, 4}, cn.randn{4}) end, "instance_norm",
    "weight of shape [4]", "3 channels")
end

function TestNormErrors:testLayerNorm()
  local x = cn.randn{2, 3, 4}
  assert_error(function() cn.layer_norm(x, {3, 5}) end, "layer_norm", "normalized shape [3, 5]",
    "trailing dims of input [2, 3, 4]")
  assert_error(function() cn.layer_norm(x, {1, 2, 3, 4}) end, "layer_norm", "[1, 2, 3, 4]")
  assert_error(function() cn.layer_norm(x, {}) end, "layer_norm", "normalized shape []")
  assert_error(function() cn.layer_norm(x, {3, 4}, cn.randn{4, 3}) end, "layer_norm", "weight of shape [4, 3]",
    "normalized shape [3, 4]")
  assert_error(function() cn.layer_norm(x, 4, nil, cn.randn{3, 4}) end, "layer_norm", "bias of shape [3, 4]")
  assert_error(function() cn.layer_norm(x, "4") end, "layer_norm", "normalized shape")
end

function TestNormErrors:testBatchNorm()
  local x = cn.randn{4, 3, 2}
  assert_error(function() cn.batch_norm(x, nil, nil) end, "batch_norm", "running_mean and running_var are required")
  assert_error(function() cn.batch_norm(cn.randn{1, 3}, nil, nil, nil, nil, {training = true}) end, "batch_norm",
    "more than 1 value per channel", "[1, 3]")
  assert_error(function() cn.batch_norm(x, cn.zeros{4}, cn.ones{3}) end, "batch_norm", "running_mean of shape [4]",
    "3 channels")
  assert_error(function() cn.batch_norm(x, cn.zeros{3}, cn.ones{3}, cn.ones{2}) end, "batch_norm", "weight of shape [2]")
  assert_error(function() cn.batch_norm(cn.randn{3}, nil, nil, nil, nil, {training = true}) end, "batch_norm", "[3]")
  assert_error(function() cn.batch_norm(x, nil, nil, nil, nil, {training = true, momentum = "a"}) end,
    "batch_norm", "momentum")
  assert_error(function() cn.batch_norm(x, nil, nil, nil, nil, 5) end, "batch_norm", "options table")
end
