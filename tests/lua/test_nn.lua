-- test_nn.lua — the neural-network functional ops (engine/ops_nn.h through engine/lua/l_nn.c):
-- every case of tests/fixtures/nn_functional.lua (PyTorch, written by tests/tools/fixtures_nn.py)
-- forward and gradients, cn.gradcheck on tiny cases, dropout by statistics and identities, the
-- 1-based ids of embedding and cross_entropy, and the error messages.
local lu = require "luaunit"
local helpers = require "helpers"
local cn = require "cunet"
local fx = require "fixture_check"

local function flat(t) return t:totable{flat = true} end

local assert_error = helpers.assert_error

local function assert_tensors_close(got, want, tol, label)
  lu.assertEquals(got:shape(), want:shape(), (label or "") .. ": shape")
  local g, w = flat(got), flat(want)
  for i = 1, #w do
    if w[i] ~= w[i] then
      lu.assertTrue(g[i] ~= g[i], (label or "") .. ": element " .. i .. " should be nan")
    else
      lu.assertAlmostEquals(g[i], w[i], (tol or 1e-6) * (1 + math.abs(w[i])), (label or "") .. ": element " .. i)
    end
  end
end

-- ---- PyTorch fixtures ----------------------------------------------------------------------------

-- Expected values are float64 torch rounded to float32. The engine sums in double but its GEMMs
-- (linear, attention) accumulate in float32, hence the looser bound there.
local TOL = {
  linear = {rtol = 1e-5, atol = 1e-5},
  sdpa = {rtol = 1e-5, atol = 1e-5},
  default = {rtol = 1e-5, atol = 1e-6},
}

local run = {
  linear = function(x) return cn.linear(x[1], x[2], x[3]) end,
  softmax = function(x, a) return x[1]:softmax(a.dim) end,
  log_softmax = function(x, a) return cn.log_softmax(x[1], a.dim) end,
  sdpa = function(x, a) return cn.scaled_dot_product_attention(x[1], x[2], x[3], {mask = x[4], scale = a.scale}) end,
  embedding = function(x) return cn.embedding(x[1], x[2]) end,
  mse_loss = function(x, a) return cn.mse_loss(x[1], x[2], {reduction = a.reduction}) end,
  l1_loss = function(x, a) return cn.l1_loss(x[1], x[2], {reduction = a.reduction}) end,
  cross_entropy = function(x, a)
    return cn.cross_entropy(x[1], x[2], {weight = x[3], reduction = a.reduction, ignore_index = a.ignore_index,
      label_smoothing = a.label_smoothing})
  end,
}

TestNnTorch = {}

for _, case in ipairs(fx.load("nn_functional")) do
  TestNnTorch["test_" .. case.name] = function()
    local tol = TOL[case.op] or TOL.default
    local inputs = fx.inputs(case, true)
    local out = run[case.op](inputs, case.args)
    fx.assert_close(out, case.output, {rtol = tol.rtol, atol = tol.atol, label = case.name})
    fx.check_grads(case, inputs, out, tol)
  end
end

function TestNnTorch:testEveryOpHasCases()
  local seen = {}
  for _, case in ipairs(fx.load("nn_functional")) do seen[case.op] = (seen[case.op] or 0) + 1 end
  for op in pairs(run) do lu.assertTrue((seen[op] or 0) > 0, "no fixture case for " .. op) end
end

-- ---- gradcheck on tiny cases ---------------------------------------------------------------------

TestNnGradcheck = {}

local function check(fn, inputs, opts) lu.assertTrue((cn.gradcheck(fn, inputs, opts))) end

function TestNnGradcheck:setUp() cn.seed(42) end

function TestNnGradcheck:testLinear()
  check(function(x, w, b) return cn.linear(x, w, b) end, {cn.randn{2, 3, 4}, cn.randn{5, 4}, cn.randn{5}})
  check(function(x, w) return cn.linear(x, w) end, {cn.randn{4}, cn.randn{2, 4}})
end

function TestNnGradcheck:testLinearTransposedWeight()
  local wt = cn.randn{4, 3}
  check(function(x, w) return cn.linear(x, w:t()) end, {cn.randn{2, 4}, wt})
end

function TestNnGradcheck:testSoftmaxEveryDim()
  for dim = 1, 3 do
    check(function(x) return x:softmax(dim) end, {cn.randn{2, 3, 4}})
    check(function(x) return x:log_softmax(dim) end, {cn.randn{2, 3, 4}})
  end
end

function TestNnGradcheck:testAttention()
  local mask = cn.randn{3, 5}
  check(function(q, k, v, m) return cn.scaled_dot_product_attention(q, k, v, {mask = m}) end,
    {cn.randn{2, 3, 4}, cn.randn{2, 5, 4}, cn.randn{2, 5, 2}, mask})
  check(function(q, k, v) return cn.scaled_dot_product_attention(q, k, v, {scale = 0.7}) end,
    {cn.randn{2, 2, 3, 4}, cn.randn{2, 1, 5, 4}, cn.randn{5, 3}})
end

function TestNnGradcheck:testEmbedding()
  local ids = cn.tensor{{1, 3, 3}, {2, 1, 4}}
  check(function(w) return cn.embedding(ids, w) end, {cn.randn{4, 3}})
end

function TestNnGradcheck:testPointwiseLosses()
  for _, red in ipairs{"mean", "sum", "none"} do
    check(function(a, b) return cn.mse_loss(a, b, {reduction = red}) end, {cn.randn{3, 4}, cn.randn{3, 4}})
    check(function(a, b) return cn.l1_loss(a, b, {reduction = red}) end, {cn.randn{3, 4}, cn.randn{4}})
  end
end

function TestNnGradcheck:testCrossEntropy()
  local target = cn.tensor{1, 3, 2, 3}
  local weight = cn.tensor{0.5, 1.0, 2.0}
  for _, red in ipairs{"mean", "sum", "none"} do
    check(function(x) return cn.cross_entropy(x, target, {reduction = red}) end, {cn.randn{4, 3}})
    check(function(x)
      return cn.cross_entropy(x, target, {weight = weight, reduction = red, ignore_index = 2, label_smoothing = 0.2})
    end, {cn.randn{4, 3}})
  end
  local t3 = cn.tensor{{1, 2}, {3, 3}}
  check(function(x) return cn.cross_entropy(x, t3, {label_smoothing = 0.1}) end, {cn.randn{2, 3, 2}})
  check(function(x, p) return cn.cross_entropy(x, p, {weight = weight, label_smoothing = 0.1}) end,
    {cn.randn{4, 3}, cn.rand{4, 3}})
end

-- ---- dropout -------------------------------------------------------------------------------------

TestDropout = {}

function TestDropout:testSeededReproducible()
  local x = cn.randn{1000}
  cn.seed(7)
  local a = flat(cn.dropout(x, 0.3))
  cn.seed(7)
  local b = flat(cn.dropout(x, 0.3))
  lu.assertEquals(a, b)
  local c = flat(cn.dropout(x, 0.3)) -- the generator moved on: a different mask
  local differ = false
  for i = 1, #a do if (a[i] == 0) ~= (c[i] == 0) then differ = true end end
  lu.assertTrue(differ)
end

function TestDropout:testStatistics()
  cn.seed(11)
  local n, p = 200000, 0.3
  local y = cn.dropout(cn.ones{n}, p)
  -- mean 1 with std sqrt(p / (1 - p) / n) ~ 0.0015; zero fraction p with std sqrt(p (1 - p) / n) ~ 0.001
  lu.assertAlmostEquals(y:mean():item(), 1.0, 0.01)
  local zeros, kept = 0, 1 / (1 - p)
  for _, v in ipairs(flat(y)) do
    if v == 0 then zeros = zeros + 1 else lu.assertAlmostEquals(v, kept, 1e-6) end
  end
  lu.assertAlmostEquals(zeros / n, p, 0.006)
end

function TestDropout:testIdentities()
  local x = cn.randn{3, 4}
  lu.assertEquals(flat(cn.dropout(x, 0.5, false)), flat(x)) -- eval
  lu.assertEquals(flat(cn.dropout(x, 0)), flat(x))           -- p = 0
  lu.assertEquals(flat(cn.dropout(x, 1)), flat(cn.zeros{3, 4}))
  local state = cn.rng_state()
  cn.dropout(x, 0.5, false)
  cn.dropout(x, 1)
  lu.assertEquals(cn.rng_state(), state) -- nothing drawn when nothing is random
end

function TestDropout:testGradientIsMaskTimesScale()
  cn.seed(3)
  local p = 0.4
  local x = cn.rand{500} + 0.5 -- no zeros: y / x recovers the mask
  x:requires_grad(true)
  local y = cn.dropout(x, p)
  local g = cn.autograd.grad(y:sum(), {x})[1]
  local gy, yy, xx = flat(g), flat(y), flat(x)
  for i = 1, #gy do
    local m = yy[i] == 0 and 0 or 1 / (1 - p)
    lu.assertAlmostEquals(gy[i], m, 1e-6)
    lu.assertAlmostEquals(yy[i], xx[i] * m, 1e-5)
  end
  local x1 = cn.randn{4}
  x1:requires_grad(true)
  lu.assertEquals(flat(cn.autograd.grad(cn.dropout(x1, 1):sum(), {x1})[1]), {0, 0, 0, 0})
end

function TestDropout:testErrors()
  assert_error(function() cn.dropout(cn.ones{2}, 1.5) end, "dropout", "1.5")
  assert_error(function() cn.dropout(cn.ones{2}, -0.1) end, "dropout")
end

-- ---- API details ---------------------------------------------------------------------------------

TestNnApi = {}

function TestNnApi:testSoftmaxDims()
  local x = cn.randn{2, 3, 4}
  assert_tensors_close(x:softmax(-1), cn.softmax(x, 3), 0)
  assert_tensors_close(x:log_softmax(-3), x:log_softmax(1), 0)
  assert_tensors_close(x:softmax(2):sum(2), cn.ones{2, 4}, 1e-6)
  assert_tensors_close(x:log_softmax(2):exp(), x:softmax(2), 1e-6)
  local t = x:transpose(1, 3) -- a strided view
  assert_tensors_close(t:softmax(2), t:contiguous():softmax(2), 0)
  lu.assertEquals(cn.tensor({5}, {}):softmax(1):item(), 1) -- 0-d, as torch
end

function TestNnApi:testSoftmaxLargeAndInf()
  local y = cn.tensor{1000, 1001, -math.huge}:softmax(1)
  local want = {1 / (1 + math.exp(1)), math.exp(1) / (1 + math.exp(1)), 0}
  for i = 1, 3 do lu.assertAlmostEquals(flat(y)[i], want[i], 1e-6) end
  local all = flat(cn.tensor{-math.huge, -math.huge}:softmax(1))
  lu.assertTrue(all[1] ~= all[1]) -- every entry masked: NaN, as torch
end

function TestNnApi:testLinearWeightViewsAndBias()
  local x, w, b = cn.randn{3, 4}, cn.randn{5, 4}, cn.randn{5}
  local ref = x:matmul(w:t()) + b
  assert_tensors_close(cn.linear(x, w, b), ref, 1e-5)
  local wt = w:t():contiguous() -- [in, out]: pass its transpose, read in place
  assert_tensors_close(cn.linear(x, wt:t(), b), ref, 1e-5)
  assert_tensors_close(cn.linear(x:t():contiguous():t(), w, b), ref, 1e-5)
  lu.assertEquals(cn.linear(cn.randn{2, 3, 4}, w):shape(), {2, 3, 5})
  lu.assertEquals(cn.linear(cn.randn{4}, w, b):shape(), {5})
end

function TestNnApi:testAttentionDefaults()
  local q, k, v = cn.randn{2, 3, 4}, cn.randn{2, 5, 4}, cn.randn{2, 5, 6}
  local out = cn.scaled_dot_product_attention(q, k, v)
  lu.assertEquals(out:shape(), {2, 3, 6})
  assert_tensors_close(out, cn.scaled_dot_product_attention(q, k, v, {scale = 0.5}), 1e-6) -- 1/sqrt(4)
  local ref = (q:matmul(k:transpose(2, 3)) * 0.5):softmax(3):matmul(v)
  assert_tensors_close(out, ref, 1e-5)
  -- strided views give the same answer
  local qt = q:transpose(1, 2):contiguous():transpose(1, 2)
  assert_tensors_close(cn.scaled_dot_product_attention(qt, k, v), out, 1e-6)
  -- a -inf mask removes keys: the same as dropping them
  local mask = cn.zeros{1, 5}
  mask[{1, 2}] = -math.huge
  mask[{1, 5}] = -math.huge
  local kept = {1, 3, 4}
  local function pick(t)
    local parts = {}
    for i, j in ipairs(kept) do parts[i] = t:narrow(2, j, 1) end
    return cn.cat(parts, 2)
  end
  assert_tensors_close(cn.scaled_dot_product_attention(q, k, v, {mask = mask}),
    cn.scaled_dot_product_attention(q, pick(k), pick(v)), 1e-5)
end

function TestNnApi:testEmbeddingOneBased()
  local w = cn.tensor{{1, 2}, {3, 4}, {5, 6}}
  lu.assertEquals(cn.embedding(cn.tensor{3, 1, 1}, w):totable(), {{5, 6}, {1, 2}, {1, 2}})
  lu.assertEquals(cn.embedding(cn.tensor{{2}}, w):shape(), {1, 1, 2})
  w:requires_grad(true)
  local g = cn.autograd.grad(cn.embedding(cn.tensor{3, 1, 1}, w):sum(), {w})[1]
  lu.assertEquals(g:totable(), {{2, 2}, {0, 0}, {1, 1}})
end

function TestNnApi:testCrossEntropyIds()
  local x = cn.tensor{{2, 1, 0}, {0, 0, 3}}
  local lse1, lse2 = math.log(math.exp(2) + math.exp(1) + 1), math.log(2 + math.exp(3))
  -- sample 1 targets class 1, sample 2 class 3 (1-based)
  local want = ((lse1 - 2) + (lse2 - 3)) / 2
  lu.assertAlmostEquals(cn.cross_entropy(x, cn.tensor{1, 3}):item(), want, 1e-6)
  lu.assertAlmostEquals(cn.cross_entropy(x, cn.tensor{1, 3}, "sum"):item(), 2 * want, 1e-6)
  -- ignore_index is in Lua's numbering, default -100
  lu.assertAlmostEquals(cn.cross_entropy(x, cn.tensor{1, 3}, {ignore_index = 3}):item(), lse1 - 2, 1e-6)
  lu.assertAlmostEquals(cn.cross_entropy(x, cn.tensor{1, -100}):item(), lse1 - 2, 1e-6)
  local none = cn.cross_entropy(x, cn.tensor{-100, 3}, {reduction = "none"})
  lu.assertEquals(none:shape(), {2})
  lu.assertEquals(flat(none)[1], 0)
  -- every target ignored: 0/0, as torch
  local v = cn.cross_entropy(x, cn.tensor{-100, -100}):item()
  lu.assertTrue(v ~= v)
end

function TestNnApi:testLossesBroadcastAndShapes()
  local a, b = cn.randn{2, 3}, cn.randn{3}
  lu.assertEquals(cn.mse_loss(a, b, {reduction = "none"}):shape(), {2, 3})
  lu.assertEquals(cn.l1_loss(a, b):dim(), 0)
  local d = flat(a - b)
  local s = 0
  for _, x in ipairs(d) do s = s + x * x end
  lu.assertAlmostEquals(cn.mse_loss(a, b, "sum"):item(), s, 1e-5)
end

-- ---- errors --------------------------------------------------------------------------------------

TestNnErrors = {}

function TestNnErrors:testLinear()
  assert_error(function() cn.linear(cn.ones{2, 3}, cn.ones{4, 5}) end, "linear", "[2, 3]", "[4, 5]")
  assert_error(function() cn.linear(cn.ones{2, 3}, cn.ones{3}) end, "linear", "2-D")
  assert_error(function() cn.linear(cn.ones{2, 3}, cn.ones{4, 3}, cn.ones{5}) end, "linear", "bias", "[5]")
  assert_error(function() cn.linear(cn.ones{2, 3}, "w") end, "bad argument #2", "tensor expected")
end

function TestNnErrors:testSoftmax()
  assert_error(function() cn.ones{2, 3}:softmax(3) end, "dim 3 out of range")
  assert_error(function() cn.ones{2, 3}:log_softmax(0) end, "1-based")
  assert_error(function() cn.softmax(cn.ones{2}) end, "bad argument #2")
end

function TestNnErrors:testAttention()
  local q, k, v = cn.ones{2, 3, 4}, cn.ones{2, 5, 4}, cn.ones{2, 5, 6}
  assert_error(function() cn.scaled_dot_product_attention(q, cn.ones{2, 5, 3}, v) end,
    "scaled_dot_product_attention", "last dim", "[2, 5, 3]")
  assert_error(function() cn.scaled_dot_product_attention(q, k, cn.ones{2, 4, 6}) end, "same length")
  assert_error(function() cn.scaled_dot_product_attention(q, cn.ones{3, 5, 4}, v) end, "broadcast")
  assert_error(function() cn.scaled_dot_product_attention(q, k, v, {mask = cn.zeros{4, 5}}) end,
    "mask of shape [4, 5]", "[2, 3, 5]")
  assert_error(function() cn.scaled_dot_product_attention(q, k, v, {mask = cn.zeros{1, 2, 3, 5}}) end, "mask")
  assert_error(function() cn.scaled_dot_product_attention(q, k, v, {scale = -1}) end, "scale")
  assert_error(function() cn.scaled_dot_product_attention(cn.ones{4}, k, v) end, "at least 2 dims")
end

function TestNnErrors:testEmbedding()
  local w = cn.ones{5, 3}
  assert_error(function() cn.embedding(cn.tensor{1, 6}, w) end, "embedding", "index 6", "5 rows")
  assert_error(function() cn.embedding(cn.tensor{0}, w) end, "index 0", "1-based")
  assert_error(function() cn.embedding(cn.tensor{1.5}, w) end, "1.5", "integer")
  assert_error(function() cn.embedding(cn.tensor{1}, cn.ones{5}) end, "embedding", "2-D")
end

function TestNnErrors:testLosses()
  assert_error(function() cn.mse_loss(cn.ones{2, 3}, cn.ones{4}) end, "mse_loss", "[2, 3]", "[4]")
  assert_error(function() cn.l1_loss(cn.ones{2}, cn.ones{2}, {reduction = "avg"}) end, "reduction", "avg")
  local x = cn.ones{4, 3}
  assert_error(function() cn.cross_entropy(x, cn.tensor{1, 2, 4, 1}) end, "cross_entropy", "target 4", "3 classes")
  assert_error(function() cn.cross_entropy(x, cn.tensor{1, 2, 0, 1}) end, "target 0", "1-based")
  assert_error(function() cn.cross_entropy(x, cn.tensor{1, 2}) end, "cross_entropy", "[2]", "[4, 3]")
  assert_error(function() cn.cross_entropy(x, cn.tensor{1, 2, 3, 1}, {weight = cn.ones{4}}) end, "weight", "[4]")
  assert_error(function() cn.cross_entropy(x, cn.tensor{1, 2, 3, 1}, {label_smoothing = 2}) end, "label_smoothing")
  assert_error(function() cn.cross_entropy(x, cn.ones{4, 3}, {ignore_index = 1}) end, "ignore_index")
end
