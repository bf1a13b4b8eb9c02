-- test_elementwise.lua — operators, elementwise methods and cn.* functions, where, clamp, in-place
-- ops and their error messages, against values computed here in Lua (double precision).
local lu = require "luaunit"
local helpers = require "helpers"
local cn = require "cunet"

local function flat(t) return t:totable{flat = true} end

local assert_error = helpers.assert_error

local FLT_MAX = 3.4028234663852886e38

-- t's values against expected (a flat table), |got - want| <= atol + rtol |want|; NaN matches NaN.
local function assert_values(t, expected, rtol, atol)
  rtol, atol = rtol or 1e-6, atol or 1e-6
  local got = flat(t)
  lu.assertEquals(#got, #expected)
  for i, want in ipairs(expected) do
    local g = got[i]
    if math.abs(want) > FLT_MAX then want = want > 0 and math.huge or -math.huge end -- float overflow
    if want ~= want then
      lu.assertTrue(g ~= g, ("element %d: got %.9g, expected nan"):format(i, g))
    elseif want == math.huge or want == -math.huge then
      lu.assertEquals(g, want, ("element %d"):format(i))
    else
      lu.assertTrue(math.abs(g - want) <= atol + rtol * math.abs(want),
                    ("element %d: got %.9g, expected %.9g"):format(i, g, want))
    end
  end
end

local function map(values, f)
  local out = {}
  for i, v in ipairs(values) do out[i] = f(v) end
  return out
end

-- Values as float32 sees them (the tensor stores 0.3 as 0.300000011920929).
local function f32(values)
  return flat(cn.tensor(values))
end

-- ---- references (Lua's math has no erf, tanh or log1p) ----------------------------------------

local function tanh(x) return 1 - 2 / (math.exp(2 * x) + 1) end

local function log1p(y)
  if math.abs(y) < 1e-5 then return y - y * y / 2 + y * y * y / 3 end
  return math.log(1 + y)
end

-- erf by its Maclaurin series (|x| < 3) or continued fraction (beyond): ~1e-15 accurate.
local function erf(x)
  local ax = math.abs(x)
  if ax < 3 then
    local sum, term, n = x, x, 0
    repeat
      n = n + 1
      term = -term * x * x / n
      local add = term / (2 * n + 1)
      sum = sum + add
    until math.abs(add) <= 1e-17 * math.abs(sum)
    return 2 / math.sqrt(math.pi) * sum
  end
  local frac = 0
  for k = 60, 1, -1 do frac = (k / 2) / (ax + frac) end
  local erfc = math.exp(-ax * ax) / math.sqrt(math.pi) / (ax + frac)
  return x > 0 and 1 - erfc or erfc - 1
end

local function sigmoid(x) return 1 / (1 + math.exp(-x)) end

local function round_half_even(x)
  local f = math.floor(x)
  local d = x - f
  if d > 0.5 then return f + 1 elseif d < 0.5 then return f end
  return f % 2 == 0 and f or f + 1
end

local reference = {
  neg = function(x) return -x end,
  exp = math.exp,
  log = function(x) if x < 0 then return 0 / 0 end return math.log(x) end,
  sqrt = function(x) if x < 0 then return 0 / 0 end return math.sqrt(x) end,
  rsqrt = function(x) if x < 0 then return 0 / 0 end return 1 / math.sqrt(x) end,
  abs = math.abs,
  sin = math.sin,
  cos = math.cos,
  tanh = tanh,
  sigmoid = sigmoid,
  relu = function(x) return x > 0 and x or 0 end,
  silu = function(x) return x * sigmoid(x) end,
  softplus = function(x) return x > 20 and x or log1p(math.exp(x)) end,
  gelu = function(x) return 0.5 * x * (1 + erf(x / math.sqrt(2))) end,
  sign = function(x) return x > 0 and 1 or x < 0 and -1 or 0 end,
  square = function(x) return x * x end,
  reciprocal = function(x) return 1 / x end,
  floor = math.floor,
  ceil = math.ceil,
  round = round_half_even,
}

local function gelu_tanh(x)
  return 0.5 * x * (1 + tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ^ 3)))
end

local special = {-100, -25, -20.5, -3.5, -2.5, -1.5, -1, -0.5, -0.3, 0, 0.3, 0.5, 1, 1.5, 2.5, 3.5,
                 19.5, 20.5, 25, 100}

-- ---- operators ------------------------------------------------------------------------------

TestElementwiseOperators = {}

function TestElementwiseOperators:setUp()
  self.t = cn.tensor{{1, 2, 3}, {4, -5, 0.5}}
  self.v = {1, 2, 3, 4, -5, 0.5}
end

function TestElementwiseOperators:testNumberOnEitherSide()
  local t, v = self.t, self.v
  assert_values(t + 1, map(v, function(x) return x + 1 end))
  assert_values(1 + t, map(v, function(x) return 1 + x end))
  assert_values(t - 1.5, map(v, function(x) return x - 1.5 end))
  assert_values(2 - t, map(v, function(x) return 2 - x end))
  assert_values(t * 3, map(v, function(x) return x * 3 end))
  assert_values(-3 * t, map(v, function(x) return -3 * x end))
  assert_values(t / 4, map(v, function(x) return x / 4 end))
  assert_values(2 / t, map(v, function(x) return 2 / x end))
  assert_values(t ^ 2, map(v, function(x) return x ^ 2 end))
  assert_values(2 ^ t, map(v, function(x) return 2 ^ x end))
  assert_values(-t, map(v, function(x) return -x end))
  -- the operand is untouched and the result is a new tensor
  lu.assertEquals(flat(t), self.v)
  lu.assertFalse(rawequal(t + 0, t))
end

function TestElementwiseOperators:testTensorsAndBroadcasting()
  local t = self.t
  local row = cn.tensor{10, 20, 30}
  local col = cn.tensor{{100}, {200}}
  lu.assertEquals((t + row):totable(), {{11, 22, 33}, {14, 15, 30.5}})
  lu.assertEquals((row - t):totable(), {{9, 18, 27}, {6, 25, 29.5}})
  lu.assertEquals((t * col):totable(), {{100, 200, 300}, {800, -1000, 100}})
  lu.assertEquals((col + row):shape(), {2, 3})
  lu.assertEquals((col + row):totable(), {{110, 120, 130}, {210, 220, 230}})
  lu.assertEquals((cn.tensor(2) * t):shape(), {2, 3})
  assert_values(t ^ cn.tensor{1, 2, 0.5}, {1, 4, math.sqrt(3), 4, 25, math.sqrt(0.5)})
  assert_values(t / t, {1, 1, 1, 1, 1, 1})
end

function TestElementwiseOperators:testChainedExpression()
  local t, v = self.t, self.v
  local r = ((t + 1) * 2 - t / 4) ^ 2 / (1 + t * t)
  assert_values(r, map(v, function(x) return ((x + 1) * 2 - x / 4) ^ 2 / (1 + x * x) end), 1e-5, 1e-6)
end

function TestElementwiseOperators:testStridedOperands()
  local base = cn.arange(12):view{3, 4}
  local tr = base:t()                              -- [4, 3], not contiguous
  lu.assertFalse(tr:is_contiguous())
  local r = tr + cn.tensor{100, 200, 300}
  lu.assertEquals(r:totable(), {{100, 204, 308}, {101, 205, 309}, {102, 206, 310}, {103, 207, 311}})
  local nar = base:narrow(2, 2, 2)                 -- columns 2..3
  lu.assertEquals((nar * 10):totable(), {{10, 20}, {50, 60}, {90, 100}})
  local ex = cn.tensor{{1}, {2}, {3}}:expand{3, 4}
  lu.assertEquals((ex - base):totable(), (ex:contiguous() - base):totable())
  lu.assertEquals((tr:exp()):totable(), (tr:contiguous():exp()):totable())
end

-- ---- methods and functions ----------------------------------------------------------------------

TestElementwiseMethods = {}

function TestElementwiseMethods:testUnaryAgainstLuaMath()
  local x = cn.tensor(special)
  local xs = f32(special)
  for name, ref in pairs(reference) do
    local expected = map(xs, ref)
    assert_values(x[name](x), expected, 2e-6, 1e-6)
    assert_values(cn[name](x), expected, 2e-6, 1e-6)
  end
end

function TestElementwiseMethods:testUnaryEdgeCases()
  lu.assertEquals(cn.tensor{25}:softplus():item(), 25)
  local sp = cn.tensor{-25}:softplus():item()
  lu.assertAlmostEquals(sp / math.exp(-25), 1, 1e-5)     -- relative accuracy far in the tail
  lu.assertEquals(cn.tensor{100}:sigmoid():item(), 1)
  local s = cn.tensor{-100}:sigmoid():item()
  lu.assertTrue(s > 0 and s < 1e-40)
  lu.assertEquals(cn.tensor{0}:log():item(), -math.huge)
  lu.assertEquals(cn.tensor{0.5, 1.5, 2.5, -0.5, -2.5}:round():totable(), {0, 2, 2, 0, -2})
  lu.assertEquals(cn.tensor{-0.0, 0, 3, -2}:sign():totable(), {0, 0, 1, -1})
  lu.assertEquals(cn.tensor{4}:rsqrt():item(), 0.5)
  local nan = cn.tensor{0 / 0}
  lu.assertTrue(nan:relu():item() ~= nan:relu():item())
end

function TestElementwiseMethods:testGeluForms()
  local x = cn.tensor(special)
  local xs = f32(special)
  assert_values(x:gelu(), map(xs, reference.gelu), 2e-6, 1e-6)
  assert_values(x:gelu{}, map(xs, reference.gelu), 2e-6, 1e-6)
  assert_values(x:gelu{approximate = "none"}, map(xs, reference.gelu), 2e-6, 1e-6)
  assert_values(x:gelu{approximate = "tanh"}, map(xs, gelu_tanh), 2e-6, 1e-6)
  assert_values(cn.gelu(x, {approximate = "tanh"}), map(xs, gelu_tanh), 2e-6, 1e-6)
  lu.assertAlmostEquals(cn.tensor{1}:gelu():item(), 0.841344746, 1e-7)
  lu.assertAlmostEquals(cn.tensor{1}:gelu{approximate = "tanh"}:item(), 0.841192007, 1e-7)
  assert_error(function() return x:gelu{approximate = "fast"} end, "approximate", "tanh")
  assert_error(function() return x:gelu("tanh") end, "bad argument", "table expected")
end

function TestElementwiseMethods:testBinaryMethodsAndFunctions()
  local a = cn.tensor{1, -2, 3, 0.25}
  local b = cn.tensor{2, 2, -1, 0.5}
  local av, bv = flat(a), flat(b)
  local ops = {
    add = function(x, y) return x + y end, sub = function(x, y) return x - y end,
    mul = function(x, y) return x * y end, div = function(x, y) return x / y end,
    pow = function(x, y) return x ^ y end,
    maximum = math.max, minimum = math.min,
    eq = function(x, y) return x == y and 1 or 0 end, ne = function(x, y) return x ~= y and 1 or 0 end,
    lt = function(x, y) return x < y and 1 or 0 end, le = function(x, y) return x <= y and 1 or 0 end,
    gt = function(x, y) return x > y and 1 or 0 end, ge = function(x, y) return x >= y and 1 or 0 end,
  }
  for name, f in pairs(ops) do
    local with_tensor, with_number, number_first = {}, {}, {}
    for i = 1, #av do
      with_tensor[i] = f(av[i], bv[i])
      with_number[i] = f(av[i], 2)
      number_first[i] = f(2, av[i])
    end
    assert_values(a[name](a, b), with_tensor)
    assert_values(cn[name](a, b), with_tensor)
    assert_values(a[name](a, 2), with_number)
    assert_values(cn[name](a, 2), with_number)
    assert_values(cn[name](2, a), number_first)
  end
end

function TestElementwiseMethods:testComparisonsGiveOnesAndZeros()
  local t = cn.tensor{{1, 2}, {3, 4}}
  lu.assertEquals(t:gt(2):totable(), {{0, 0}, {1, 1}})
  lu.assertEquals(t:le(cn.tensor{1, 4}):totable(), {{1, 1}, {0, 1}})
  lu.assertEquals(t:eq(t:t()):totable(), {{1, 0}, {0, 1}})
  lu.assertEquals(cn.ne(t, 3):totable(), {{1, 1}, {0, 1}})
end

function TestElementwiseMethods:testMaximumMinimumNaN()
  local nan = 0 / 0
  local m = cn.tensor{1, nan, 5}:maximum(cn.tensor{nan, 2, 4})
  local got = flat(m)
  lu.assertTrue(got[1] ~= got[1] and got[2] ~= got[2])
  lu.assertEquals(got[3], 5)
  lu.assertEquals(cn.tensor{-1, 2}:maximum(0):totable(), {0, 2})
  lu.assertEquals(cn.minimum(cn.tensor{-1, 2}, 0):totable(), {-1, 0})
end

function TestElementwiseMethods:testClamp()
  local t = cn.tensor{-3, -1, 0, 0.5, 2}
  lu.assertEquals(t:clamp(-1, 1):totable(), {-1, -1, 0, 0.5, 1})
  lu.assertEquals(t:clamp(0):totable(), {0, 0, 0, 0.5, 2})
  lu.assertEquals(t:clamp(nil, 0.25):totable(), {-3, -1, 0, 0.25, 0.25})
  lu.assertEquals(cn.clamp(t, -2, 0):totable(), {-2, -1, 0, 0, 0})
  assert_error(function() return t:clamp() end, "clamp", "at least one of lo and hi")
  assert_error(function() return t:clamp("a") end, "clamp", "number expected")
end

function TestElementwiseMethods:testWhere()
  local cond = cn.tensor{{1}, {0}}
  local a = cn.tensor{1, 2, 3}
  lu.assertEquals(cn.where(cond, a, 0):totable(), {{1, 2, 3}, {0, 0, 0}})
  lu.assertEquals(cn.where(cond, -1, a):totable(), {{-1, -1, -1}, {1, 2, 3}})
  lu.assertEquals(cn.where(cond, 7, 8):totable(), {{7}, {8}})
  local x = cn.tensor{-2, 3, -1, 4}
  lu.assertEquals(cn.where(x:gt(0), x, x * 0.5):totable(), {-1, 3, -0.5, 4})
  assert_error(function() return cn.where(cond, a, cn.zeros(4)) end, "where", "[2, 1]", "[3]", "[4]")
  assert_error(function() return cn.where(1, a, a) end, "bad argument #1", "tensor expected")
  assert_error(function() return cn.where(cond, "x", a) end, "bad argument #2", "tensor or number expected")
end

-- ---- in place -----------------------------------------------------------------------------------

TestElementwiseInplace = {}

function TestElementwiseInplace:testNumbersAndTensors()
  local t = cn.tensor{{1, 2, 3}, {4, 5, 6}}
  lu.assertTrue(rawequal(t:add_(1), t))
  lu.assertEquals(t:totable(), {{2, 3, 4}, {5, 6, 7}})
  lu.assertTrue(rawequal(t:mul_(cn.tensor{1, 10, 100}), t))
  lu.assertEquals(t:totable(), {{2, 30, 400}, {5, 60, 700}})
  t:sub_(cn.tensor{{2}, {5}}):div_(2)
  lu.assertEquals(t:totable(), {{0, 14, 199}, {0, 27.5, 347.5}})
end

function TestElementwiseInplace:testThroughViews()
  local base = cn.zeros(3, 4)
  base:narrow(2, 2, 2):add_(1)                     -- columns 2..3 of the base
  lu.assertEquals(base:totable(), {{0, 1, 1, 0}, {0, 1, 1, 0}, {0, 1, 1, 0}})
  base:t():mul_(cn.tensor{1, 2, 3})                -- row i of base scaled by i
  lu.assertEquals(base:totable(), {{0, 1, 1, 0}, {0, 2, 2, 0}, {0, 3, 3, 0}})
  local m = cn.tensor{{1, 2}, {3, 4}}
  m:add_(m:t())                                    -- reads the original transpose
  lu.assertEquals(m:totable(), {{2, 5}, {5, 8}})
end

function TestElementwiseInplace:testErrors()
  local t = cn.zeros(3)
  assert_error(function() return t:add_(cn.zeros(2, 3)) end, "add_", "[2, 3]", "[3]")
  assert_error(function() return t:mul_(cn.zeros(4)) end, "mul_", "cannot broadcast", "[3]", "[4]")
  lu.assertEquals(flat(t), {0, 0, 0})              -- untouched by the failed calls
  local ex = cn.zeros(1, 3):expand{2, 3}
  assert_error(function() return ex:add_(1) end, "add_", "expanded")
  assert_error(function() return t:div_("x") end, "bad argument #1 to 'div_'", "tensor or number expected, got string")
end

-- ---- errors -------------------------------------------------------------------------------------

TestElementwiseErrors = {}

function TestElementwiseErrors:testBroadcastMismatchNamesBothShapes()
  local a, b = cn.zeros(2, 3), cn.zeros(4, 5)
  assert_error(function() return a + b end, "add: cannot broadcast shapes [2, 3] and [4, 5]")
  assert_error(function() return b - a end, "sub: cannot broadcast shapes [4, 5] and [2, 3]")
  assert_error(function() return a * b end, "mul", "[2, 3]", "[4, 5]")
  assert_error(function() return a / b end, "div", "[2, 3]", "[4, 5]")
  assert_error(function() return a ^ b end, "pow", "[2, 3]", "[4, 5]")
  assert_error(function() return a:maximum(cn.zeros(2)) end, "maximum", "[2, 3]", "[2]")
  assert_error(function() return cn.ge(cn.zeros(3), cn.zeros(4)) end, "ge", "[3]", "[4]")
end

function TestElementwiseErrors:testBadOperands()
  local t = cn.zeros(2)
  assert_error(function() return t + "x" end, "bad argument #2 to 'add'", "tensor or number expected, got string")
  assert_error(function() return t * {} end, "tensor or number expected, got table")
  assert_error(function() return t:sub(true) end, "bad argument #1 to 'sub'", "tensor or number expected, got boolean")
  assert_error(function() return t:mul() end, "tensor or number expected, got no value")
  assert_error(function() return cn.add(1, 2) end, "tensor expected, got number")
  assert_error(function() return cn.exp(1) end, "tensor expected, got number")
  assert_error(function() return cn.add("a", t) end, "bad argument #1", "tensor or number expected")
  local dead = cn.ones(2)
  dead:free()
  assert_error(function() return dead + 1 end, "freed")
  assert_error(function() return t + dead end, "freed")
end
