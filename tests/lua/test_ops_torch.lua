-- test_ops_torch.lua — the foundation ops (elementwise, reductions, matmul, creation) against
-- PyTorch, case by case, from tests/fixtures/ops_foundation.lua (written by
-- tests/tools/make_fixtures.py; regenerate it there, never edit it).
--
-- Each fixture case becomes one test method, test_<case name>, in the class of its op family, so
-- a failure names its case. Expected values are torch's float64 answer for the float32 inputs,
-- rounded to float32 (see the generator), so they do not depend on any summation order.

local lu = require "luaunit"
local cn = require "cunet"

-- Tolerances: |got - expected| <= ATOL + RTOL * |expected|; inf and nan must match exactly.
local RTOL, ATOL = 1e-5, 1e-6
-- matmul goes through cblas_sgemm, which accumulates in float32 in a blocking order of its own;
-- over k terms the rounding error grows like k * eps relative to the terms, so float32 summation
-- order forces a looser rtol there. (The large matmul cases use multiples of 1/4, whose sums are
-- exact, so they are checked to the same bound without any slack being needed.) Reductions
-- accumulate in double (engine/ops.h) and keep the tight tolerance.
local RTOL_FOR_OP = { matmul = 1e-4 }

-- ---- the fixture -------------------------------------------------------------------------------

local function fixture_path()
  local root = os.getenv("CUNET_ROOT")
  if root and root ~= "" then
    return root .. "/tests/fixtures/ops_foundation.lua"
  end
  local source = debug.getinfo(1, "S").source
  local dir = "."
  if source:sub(1, 1) == "@" then
    dir = source:sub(2):match("^(.*)[/\\]") or "."
  end
  return dir .. "/../fixtures/ops_foundation.lua"
end

local cases = dofile(fixture_path())

-- ---- calling each op through the Lua API -------------------------------------------------------

-- The arguments up to the last non-nil one, so that `t:sum()` is called as a user would write it.
local function args_upto(...)
  local packed = table.pack(...)
  local n = packed.n
  while n > 0 and packed[n] == nil do
    n = n - 1
  end
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

-- op -> function(inputs, args) returning the list of outputs.
local dispatch = {}

for _, op in ipairs(UNARY) do
  dispatch[op] = function(inputs, args)
    local x = inputs[1]
    if args.operator then
      return { -x }
    elseif args.approximate then
      return { x[op](x, { approximate = args.approximate }) }
    end
    return { x[op](x) }
  end
end

for op, operator in pairs(OPERATOR) do
  dispatch[op] = function(inputs, args)
    local a, b = inputs[1], inputs[2]
    if args.scalar ~= nil then
      if args.scalar_first then
        return { operator(args.scalar, a) }
      end
      return { operator(a, args.scalar) }
    elseif args.operator then
      return { operator(a, b) }
    end
    return { a[op](a, b) }
  end
end

for _, op in ipairs { "maximum", "minimum", "eq", "lt", "ge" } do
  dispatch[op] = function(inputs)
    return { inputs[1][op](inputs[1], inputs[2]) }
  end
end

function dispatch.clamp(inputs, args)
  return { inputs[1]:clamp(args_upto(args.lo, args.hi)) }
end

function dispatch.where(inputs)
  return { cn.where(inputs[1], inputs[2], inputs[3]) }
end

for _, op in ipairs { "sum", "mean" } do
  dispatch[op] = function(inputs, args)
    return { inputs[1][op](inputs[1], args_upto(args.dims, args.keepdim or nil)) }
  end
end

for _, op in ipairs { "var", "std" } do
  dispatch[op] = function(inputs, args)
    return { inputs[1][op](inputs[1], args_upto(args.dims, args.keepdim or nil, args.correction)) }
  end
end

function dispatch.norm(inputs, args)
  return { inputs[1]:norm(args_upto(args.p, args.dims, args.keepdim or nil)) }
end

for _, op in ipairs { "max", "min" } do
  dispatch[op] = function(inputs, args)
    local values, indices = inputs[1][op](inputs[1], args_upto(args.dim, args.keepdim or nil))
    if args.dim == nil then
      return { values }
    end
    return { values, indices }
  end
end

for _, op in ipairs { "argmax", "argmin" } do
  dispatch[op] = function(inputs, args)
    return { inputs[1][op](inputs[1], args_upto(args.dim, args.keepdim or nil)) }
  end
end

function dispatch.matmul(inputs)
  return { inputs[1]:matmul(inputs[2]) }
end

function dispatch.arange(_, args)
  return { cn.arange(table.unpack(args)) }
end

function dispatch.linspace(_, args)
  return { cn.linspace(table.unpack(args)) }
end

-- ---- comparing ---------------------------------------------------------------------------------

local function shape_string(shape)
  return "[" .. table.concat(shape, ", ") .. "]"
end

local function flatten(value, into)
  into = into or {}
  if type(value) == "table" then
    for _, v in ipairs(value) do
      flatten(v, into)
    end
  else
    into[#into + 1] = value
  end
  return into
end

-- 1-based multi-index of flat position i (1-based) in a row-major tensor of the given shape.
local function multi_index(i, shape)
  local index, rest = {}, i - 1
  for d = #shape, 1, -1 do
    index[d] = rest % shape[d] + 1
    rest = rest // shape[d]
  end
  return "{" .. table.concat(index, ", ") .. "}"
end

local function number_string(x)
  if type(x) ~= "number" then
    return tostring(x)
  elseif x ~= x then
    return "nan"
  end
  return string.format("%.9g", x)
end

local function close(got, expected, rtol)
  if expected ~= expected then
    return got ~= got
  elseif expected == math.huge or expected == -math.huge then
    return got == expected
  end
  return type(got) == "number" and got == got and math.abs(got - expected) <= ATOL + rtol * math.abs(expected)
end

-- Fails with a message naming the case when `got` differs from the expected {shape=, data=}.
local function check_output(label, op, got, expected)
  if type(got) == "number" and #expected.shape == 0 and (op == "argmax" or op == "argmin") then
    got = cn.tensor({ got }, {}) -- the flat index may come back as a plain number
  end
  if type(got) ~= "userdata" and not (type(got) == "table" and getmetatable(got)) then
    lu.fail(string.format("%s: expected a tensor, got %s", label, type(got)))
  end
  local shape = got:shape()
  if #shape ~= #expected.shape or shape_string(shape) ~= shape_string(expected.shape) then
    lu.fail(string.format("%s: shape %s, PyTorch gives %s", label, shape_string(shape),
      shape_string(expected.shape)))
  end
  local data = flatten(got:totable())
  if #data ~= #expected.data then
    lu.fail(string.format("%s: %d values, PyTorch gives %d", label, #data, #expected.data))
  end
  local rtol = RTOL_FOR_OP[op] or RTOL
  local bad, shown = 0, {}
  for i, e in ipairs(expected.data) do
    if not close(data[i], e, rtol) then
      bad = bad + 1
      if #shown < 6 then
        shown[#shown + 1] = string.format("%s got %s want %s", multi_index(i, expected.shape),
          number_string(data[i]), number_string(e))
      end
    end
  end
  if bad > 0 then
    lu.fail(string.format("%s: %d of %d values differ from PyTorch (rtol %g, atol %g): %s%s", label,
      bad, #expected.data, rtol, ATOL, table.concat(shown, "; "), bad > #shown and "; ..." or ""))
  end
end

local function run_case(case)
  local fn = dispatch[case.op]
  if not fn then
    lu.fail(string.format("%s: no Lua call for op '%s'", case.name, case.op))
  end
  local inputs = {}
  for i, spec in ipairs(case.inputs) do
    inputs[i] = cn.tensor(spec.data, spec.shape)
  end
  local ok, outputs = pcall(fn, inputs, case.args)
  if not ok then
    lu.fail(string.format("%s: %s raised: %s", case.name, case.op, tostring(outputs)))
  end
  local expected = case.outputs or { case.output }
  for k, want in ipairs(expected) do
    local label = #expected > 1 and string.format("%s (output %d)", case.name, k) or case.name
    check_output(label, case.op, outputs[k], want)
  end
end

-- ---- one test class per op family, one method per case -----------------------------------------

local FAMILY = {
  add = "Binary", sub = "Binary", mul = "Binary", div = "Binary", pow = "Binary",
  maximum = "Binary", minimum = "Binary", eq = "Binary", lt = "Binary", ge = "Binary",
  clamp = "Select", where = "Select",
  sum = "Reduce", mean = "Reduce", var = "Reduce", std = "Reduce", norm = "Reduce",
  max = "MaxMin", min = "MaxMin", argmax = "MaxMin", argmin = "MaxMin",
  matmul = "Matmul", arange = "Creation", linspace = "Creation",
}
for _, op in ipairs(UNARY) do
  FAMILY[op] = "Unary"
end

TestTorchUnary, TestTorchBinary, TestTorchSelect, TestTorchReduce = {}, {}, {}, {}
TestTorchMaxMin, TestTorchMatmul, TestTorchCreation = {}, {}, {}
local classes = {
  Unary = TestTorchUnary, Binary = TestTorchBinary, Select = TestTorchSelect,
  Reduce = TestTorchReduce, MaxMin = TestTorchMaxMin, Matmul = TestTorchMatmul,
  Creation = TestTorchCreation,
}

TestTorchFixture = {}

function TestTorchFixture.test_every_case_has_a_family()
  lu.assertTrue(#cases >= 300, "fixture has only " .. #cases .. " cases")
  for _, case in ipairs(cases) do
    lu.assertNotNil(FAMILY[case.op], case.name .. ": op '" .. case.op .. "' has no family")
  end
end

for _, case in ipairs(cases) do
  local class = classes[FAMILY[case.op]]
  if class then
    local method = "test_" .. case.name
    assert(class[method] == nil, "duplicate fixture case " .. case.name)
    class[method] = function()
      run_case(case)
    end
  end
end
