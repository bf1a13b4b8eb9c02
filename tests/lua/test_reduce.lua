-- test_reduce.lua — the Lua API of reductions and matmul (engine/lua/l_reduce.c, l_matmul.c):
-- 1-based and negative dims, keepdim, max/min returning values and 1-based indices, module
-- functions, errors.
local lu = require "luaunit"
local helpers = require "helpers"
local cn = require "cunet"

local function flat(t) return t:totable{flat = true} end

local assert_error = helpers.assert_error

local function assert_close(got, want, tol)
  lu.assertEquals(#got, #want)
  for i = 1, #want do lu.assertAlmostEquals(got[i], want[i], tol or 1e-5) end
end

-- {{1, 2, 3}, {4, 5, 6}}
local function m23() return cn.tensor{{1, 2, 3}, {4, 5, 6}} end

TestSumMean = {}

function TestSumMean:testAll()
  local s = m23():sum()
  lu.assertEquals(s:dim(), 0)
  lu.assertEquals(s:item(), 21)
  lu.assertEquals(m23():mean():item(), 3.5)
  lu.assertEquals(m23():sum({}):item(), 21) -- an empty table means all dims too
end

function TestSumMean:testOneBasedDims()
  lu.assertEquals(m23():sum(1):totable(), {5, 7, 9})
  lu.assertEquals(m23():sum(2):totable(), {6, 15})
  lu.assertEquals(m23():mean(2):totable(), {2, 5})
end

function TestSumMean:testNegativeDims()
  lu.assertEquals(m23():sum(-1):totable(), {6, 15})
  lu.assertEquals(m23():sum(-2):totable(), {5, 7, 9})
end

function TestSumMean:testKeepdim()
  local s = m23():sum(2, true)
  lu.assertEquals(s:shape(), {2, 1})
  lu.assertEquals(s:totable(), {{6}, {15}})
  lu.assertEquals(m23():sum(nil, true):shape(), {1, 1})
  lu.assertEquals(m23():mean({1, 2}, true):shape(), {1, 1})
end

function TestSumMean:testDimsTable()
  local t = cn.arange(24):reshape{2, 3, 4}
  local s = t:sum{1, 3}
  lu.assertEquals(s:shape(), {3})
  -- element j sums t[i][j][k] = 12(i-1) + 4(j-1) + (k-1) over i, k
  lu.assertEquals(s:totable(), {60, 92, 124})
  lu.assertEquals(t:sum({3, 1}, true):shape(), {1, 3, 1})
  lu.assertEquals(t:sum({-1, 1}):totable(), {60, 92, 124})
end

function TestSumMean:testViews()
  local t = cn.arange(24):reshape{2, 3, 4}
  local v = t:transpose(1, 3) -- [4, 3, 2]
  lu.assertEquals(flat(v:sum(2)), flat(v:contiguous():sum(2)))
  lu.assertEquals(flat(v:sum{1, 3}), flat(v:contiguous():sum{1, 3}))
  local n = t:narrow(3, 2, 2)
  lu.assertEquals(flat(n:mean(1)), flat(n:contiguous():mean(1)))
end

function TestSumMean:testModuleFunctions()
  lu.assertEquals(cn.sum(m23(), 1):totable(), {5, 7, 9})
  lu.assertEquals(cn.mean(m23()):item(), 3.5)
  lu.assertEquals(cn.sum(m23(), -1, true):shape(), {2, 1})
end

TestVarStdNorm = {}

function TestVarStdNorm:testCorrection()
  local t = cn.tensor{1, 2, 3, 4}
  lu.assertAlmostEquals(t:var():item(), 5 / 3, 1e-6)
  lu.assertAlmostEquals(t:var(nil, false, 0):item(), 1.25, 1e-6)
  lu.assertAlmostEquals(t:std():item(), math.sqrt(5 / 3), 1e-6)
  lu.assertAlmostEquals(t:std(1, false, 0):item(), math.sqrt(1.25), 1e-6)
  local one = cn.tensor{3}:var():item()
  lu.assertTrue(one ~= one) -- 0 / 0, as torch
end

function TestVarStdNorm:testVarDims()
  local v = m23():var(2, true)
  lu.assertEquals(v:shape(), {2, 1})
  assert_close(flat(v), {1, 1})
  assert_close(flat(m23():std(1)), {math.sqrt(4.5), math.sqrt(4.5), math.sqrt(4.5)})
end

function TestVarStdNorm:testNorm()
  local t = cn.tensor{{3, -4}, {0, 1}}
  lu.assertAlmostEquals(t:norm():item(), math.sqrt(26), 1e-5)
  lu.assertEquals(t:norm(1):item(), 8)
  lu.assertEquals(t:norm(math.huge):item(), 4)
  assert_close(flat(t:norm(2, 2)), {5, 1})
  lu.assertEquals(t:norm(2, -1, true):shape(), {2, 1})
  lu.assertAlmostEquals(cn.norm(t, 3):item(), (27 + 64 + 1) ^ (1 / 3), 1e-5)
end

TestMaxMin = {}

function TestMaxMin:testWholeTensor()
  local t = cn.tensor{{4, 1, 9}, {9, -2, 1}}
  local m = t:max()
  lu.assertEquals(m:dim(), 0)
  lu.assertEquals(m:item(), 9)
  lu.assertEquals(t:min():item(), -2)
  lu.assertEquals(select("#", t:max()), 1)
end

function TestMaxMin:testValuesAndIndices()
  local t = cn.tensor{{4, 1, 9}, {9, -2, 9}}
  local values, indices = t:max(2)
  lu.assertEquals(values:totable(), {9, 9})
  lu.assertEquals(indices:totable(), {3, 1}) -- 1-based, first of the ties
  values, indices = t:min(1)
  lu.assertEquals(values:totable(), {4, -2, 9})
  lu.assertEquals(indices:totable(), {1, 2, 1})
  values, indices = t:max(-1, true)
  lu.assertEquals(values:shape(), {2, 1})
  lu.assertEquals(indices:totable(), {{3}, {1}})
  values, indices = cn.max(t, 1)
  lu.assertEquals(indices:totable(), {2, 1, 1})
  values, indices = cn.min(t, 2)
  lu.assertEquals(values:totable(), {1, -2})
  lu.assertEquals(indices:totable(), {2, 2})
end

function TestMaxMin:testNaN()
  local nan = 0 / 0
  local t = cn.tensor{1, nan, 5, nan}
  local values, indices = t:max(1)
  lu.assertTrue(values:item() ~= values:item())
  lu.assertEquals(indices:item(), 2)
  lu.assertEquals(t:argmin():item(), 2) -- NaN wins for min too
end

function TestMaxMin:testArgmax()
  local t = cn.tensor{{4, 1, 9}, {9, -2, 1}}
  lu.assertEquals(t:argmax():item(), 3) -- flat, 1-based, first of the ties
  lu.assertEquals(t:argmin():item(), 5)
  lu.assertEquals(t:argmax(2):totable(), {3, 1})
  lu.assertEquals(t:argmin(1):totable(), {1, 2, 2})
  lu.assertEquals(t:argmax(-1, true):shape(), {2, 1})
  lu.assertEquals(t:argmax(nil, true):shape(), {1, 1})
  lu.assertEquals(cn.argmax(t, 1):totable(), {2, 1, 1})
  lu.assertEquals(cn.argmin(t):item(), 5)
end

TestMatmul = {}

function TestMatmul:testShapes()
  local a, b = cn.ones{2, 3}, cn.ones{3, 4}
  lu.assertEquals(a:matmul(b):shape(), {2, 4})
  lu.assertEquals(cn.matmul(a, b):totable(), {{3, 3, 3, 3}, {3, 3, 3, 3}})
  lu.assertEquals(cn.matmul(cn.ones{3}, cn.ones{3}):dim(), 0)
  lu.assertEquals(cn.matmul(cn.ones{3}, b):shape(), {4})
  lu.assertEquals(cn.matmul(a, cn.ones{3}):shape(), {2})
  lu.assertEquals(cn.matmul(cn.ones{10, 3, 4}, cn.ones{4, 5}):shape(), {10, 3, 5})
  lu.assertEquals(cn.matmul(cn.ones{2, 1, 3, 4}, cn.ones{5, 4, 6}):shape(), {2, 5, 3, 6})
end

function TestMatmul:testValues()
  local a = cn.tensor{{1, 2}, {3, 4}}
  local b = cn.tensor{{5, 6}, {7, 8}}
  lu.assertEquals(a:matmul(b):totable(), {{19, 22}, {43, 50}})
  lu.assertEquals(a:t():matmul(b):totable(), {{26, 30}, {38, 44}})
  lu.assertEquals(a:matmul(b:t()):totable(), {{17, 23}, {39, 53}})
  lu.assertEquals(cn.tensor{1, 2, 3}:matmul(cn.tensor{4, 5, 6}):item(), 32)
end

TestReduceErrors = {}

function TestReduceErrors:testBadDims()
  local t = m23()
  assert_error(function() return t:sum(3) end,
    "bad argument #1 to 'sum' (dim 3 out of range for a 2-D tensor)")
  assert_error(function() return t:mean(-3) end, "dim -3 out of range")
  assert_error(function() return t:sum(0) end, "dim 0 is invalid")
  assert_error(function() return t:sum{1, 1} end, "repeated")
  assert_error(function() return t:sum{1, -2} end, "repeated")
  assert_error(function() return t:var(5) end, "'var'", "out of range")
  assert_error(function() return t:norm(2, 3) end, "'norm'", "out of range")
  assert_error(function() return t:max(3) end, "'max'", "out of range")
  assert_error(function() return t:argmin(-5) end, "'argmin'", "out of range")
  assert_error(function() return cn.sum(t, 4) end, "bad argument #2 to 'sum'")
  assert_error(function() return t:sum("x") end, "'sum'")
  assert_error(function() return cn.sum(nil) end, "tensor expected")
end

function TestReduceErrors:testEmpty()
  local e = cn.zeros{3, 0}
  assert_error(function() return e:max() end, "max", "[3, 0]")
  assert_error(function() return e:min(2) end, "min", "[3, 0]")
  assert_error(function() return e:argmax() end, "argmax")
  lu.assertEquals(e:sum(2):totable(), {0, 0, 0})
end

function TestReduceErrors:testMatmul()
  assert_error(function() return cn.zeros{2, 3}:matmul(cn.zeros{4, 5}) end,
    "matmul: shapes [2, 3] and [4, 5] do not match (3 != 4)")
  assert_error(function() return cn.matmul(cn.tensor(1), cn.zeros{2}) end, "matmul", "[]")
  assert_error(function() return cn.matmul(cn.zeros{2, 3, 4}, cn.zeros{3, 4, 5}) end,
    "matmul", "[2, 3, 4]", "[3, 4, 5]")
  assert_error(function() return cn.matmul(cn.zeros{2}, 3) end, "tensor expected")
end
