-- test_tensor.lua — creation, facts, element access, views, copies, RNG, memory, printing.
local lu = require "luaunit"
local helpers = require "helpers"
local cn = require "cunet"

local function flat(t) return t:totable{flat = true} end

local assert_error = helpers.assert_error

TestCreation = {}

function TestCreation:testNestedAndFlat()
  local a = cn.tensor{{1, 2, 3}, {4, 5, 6}}
  lu.assertEquals(a:shape(), {2, 3})
  lu.assertEquals(a:totable(), {{1, 2, 3}, {4, 5, 6}})
  local b = cn.tensor({1, 2, 3, 4, 5, 6}, {3, 2})
  lu.assertEquals(b:totable(), {{1, 2}, {3, 4}, {5, 6}})
  lu.assertEquals(cn.tensor(2.5):dim(), 0)
  lu.assertEquals(cn.tensor(2.5):item(), 2.5)
  lu.assertEquals(cn.tensor{}:shape(), {0})
end

function TestCreation:testBadTables()
  assert_error(function() return cn.tensor{{1, 2}, {3}} end, "not rectangular")
  assert_error(function() return cn.tensor{1, "x"} end, "string, not a number")
  assert_error(function() return cn.tensor({1, 2, 3}, {2, 2}) end, "3 values given for shape [2, 2]")
  assert_error(function() return cn.zeros{2, -1} end, "negative size", "[2, -1]")
  assert_error(function() return cn.zeros{1, 1, 1, 1, 1, 1, 1, 1, 1} end, "at most 8 dims")
  assert_error(function() return cn.zeros{2.5} end, "not an integer")
end

function TestCreation:testFillers()
  lu.assertEquals(flat(cn.zeros(2, 2)), {0, 0, 0, 0})
  lu.assertEquals(flat(cn.ones{3}), {1, 1, 1})
  lu.assertEquals(flat(cn.full({2}, 7)), {7, 7})
  lu.assertEquals(flat(cn.full(2, 2, -1)), {-1, -1, -1, -1})
  local like = cn.full_like(cn.zeros{2, 3}, 4)
  lu.assertEquals(like:shape(), {2, 3})
  lu.assertEquals(like:get{2, 3}, 4)
  lu.assertEquals(flat(cn.zeros_like(like)), {0, 0, 0, 0, 0, 0})
  lu.assertEquals(cn.ones_like(like):shape(), {2, 3})
  lu.assertEquals(cn.empty{4, 5}:numel(), 20)
end

function TestCreation:testArangeLinspace()
  lu.assertEquals(flat(cn.arange(4)), {0, 1, 2, 3})
  lu.assertEquals(flat(cn.arange(1, 4)), {1, 2, 3})
  lu.assertEquals(flat(cn.arange(0, 1, 0.25)), {0, 0.25, 0.5, 0.75})
  lu.assertEquals(flat(cn.arange(3, 0, -1)), {3, 2, 1})
  lu.assertEquals(flat(cn.linspace(0, 1, 5)), {0, 0.25, 0.5, 0.75, 1})
  assert_error(function() return cn.arange(0, 1, 0) end, "step")
end

TestRandom = {}

function TestRandom:testSameSeedSameNumbers()
  cn.seed(123)
  local a = flat(cn.randn{100})
  local u = flat(cn.rand{10})
  cn.seed(123)
  lu.assertEquals(flat(cn.randn{100}), a)
  lu.assertEquals(flat(cn.rand{10}), u)
  cn.seed(124)
  lu.assertNotEquals(flat(cn.randn{100}), a)
end

function TestRandom:testStateRestore()
  cn.seed(5)
  cn.randn{13}
  local s = cn.rng_state()
  local a = flat(cn.randn{50})
  cn.randn{1000}
  cn.set_rng_state(s)
  lu.assertEquals(flat(cn.randn{50}), a)
  lu.assertEquals(s.seed, 5)
  assert_error(function() cn.set_rng_state{seed = 1} end, "counter")
end

function TestRandom:testKnownValues()
  cn.seed(7)
  local v = flat(cn.randn{3})
  local w = flat(cn.randn{3})
  lu.assertNotEquals(v, w)
  cn.seed(7)
  local both = flat(cn.randn{6})
  -- every draw starts on a fresh Philox block of 4 numbers: 6 at once begin like the first 3
  lu.assertEquals({both[1], both[2], both[3]}, v)
end

function TestRandom:testRandintRandperm()
  cn.seed(1)
  local r = flat(cn.randint(-2, 3, {1000}))
  local seen = {}
  for _, x in ipairs(r) do
    lu.assertTrue(x >= -2 and x < 3 and x == math.floor(x))
    seen[x] = true
  end
  for x = -2, 2 do lu.assertTrue(seen[x]) end
  local p = flat(cn.randperm(50))
  table.sort(p)
  for i = 1, 50 do lu.assertEquals(p[i], i) end
  assert_error(function() return cn.randint(3, 3, {2}) end, "hi > lo")
end

TestFacts = {}

function TestFacts:testShapeSizeDim()
  local t = cn.zeros{2, 3, 4}
  lu.assertEquals(t:shape(), {2, 3, 4})
  lu.assertEquals(t:size(), {2, 3, 4})
  lu.assertEquals(t:size(1), 2)
  lu.assertEquals(t:size(-1), 4)
  lu.assertEquals(t:dim(), 3)
  lu.assertEquals(t:numel(), 24)
  lu.assertEquals(#t, 2)
  lu.assertEquals(t:stride(), {12, 4, 1})
  assert_error(function() return t:size(4) end, "dim 4 out of range for a 3-D tensor")
  assert_error(function() return t:size(0) end, "1-based")
  assert_error(function() return t:item() end, "24 elements")
end

function TestFacts:testElements()
  local t = cn.arange(6):view{2, 3}
  lu.assertEquals(t[{2, 3}], 5)
  lu.assertEquals(t:get{1, 2}, 1)
  lu.assertEquals(t[{-1, -1}], 5)
  t[{1, 1}] = 10
  lu.assertEquals(t:get{1, 1}, 10)
  t:set({2, 1}, -3)
  lu.assertEquals(t[{2, 1}], -3)
  lu.assertEquals(t[2]:totable(), {-3, 4, 5})
  t[1] = 0
  lu.assertEquals(t[1]:totable(), {0, 0, 0})
  t[2] = cn.tensor{7, 8, 9}
  lu.assertEquals(t:totable(), {{0, 0, 0}, {7, 8, 9}})
  assert_error(function() return t[{3, 1}] end, "index 3 out of range for dim 1 of size 2")
  assert_error(function() return t[{1}] end, "1 indices given for a 2-D tensor")
  assert_error(function() return t[3] end, "out of range")
  assert_error(function() t.foo = 1 end, "cannot set field 'foo'")
  lu.assertNil(t.no_such_method)
end

function TestFacts:testFreeAndClose()
  local t = cn.zeros{10}
  t:free()
  assert_error(function() return t:numel() end, "freed")
  lu.assertEquals(tostring(t), "tensor(<freed>)")
  local live = cn.memory().live
  do
    local big <close> = cn.zeros{1000}
    lu.assertEquals(cn.memory().live, live + 4000)
  end
  lu.assertEquals(cn.memory().live, live)
end

TestViews = {}

function TestViews:testViewReshapeFlatten()
  local t = cn.arange(12)
  local v = t:view{3, -1}
  lu.assertEquals(v:shape(), {3, 4})
  v[{1, 1}] = 100
  lu.assertEquals(t:get{1}, 100) -- shares storage
  local tr = v:t()
  assert_error(function() return tr:view{12} end, "reshape")
  lu.assertEquals(tr:reshape{12}:totable()[2], 4)
  lu.assertEquals(tr:flatten():shape(), {12})
  assert_error(function() return t:view{5, -1} end, "[5, -1]", "[12]")
end

function TestViews:testPermuteTranspose()
  local t = cn.arange(24):view{2, 3, 4}
  local p = t:permute(3, 1, 2)
  lu.assertEquals(p:shape(), {4, 2, 3})
  lu.assertEquals(p[{4, 2, 3}], t[{2, 3, 4}])
  lu.assertEquals(t:permute{-1, 1, 2}:shape(), {4, 2, 3})
  lu.assertFalse(p:is_contiguous())
  lu.assertTrue(p:contiguous():is_contiguous())
  lu.assertEquals(t:transpose(1, 3):shape(), {4, 3, 2})
  assert_error(function() return t:permute(1, 1, 2) end, "repeated")
  assert_error(function() return t:permute(1, 2) end, "2 dims given for a 3-D tensor")
end

function TestViews:testNarrowSliceSelect()
  local t = cn.arange(10)
  lu.assertEquals(flat(t:narrow(1, 3, 2)), {2, 3})
  lu.assertEquals(flat(t:slice(1, 3, 5)), {2, 3, 4})
  lu.assertEquals(flat(t:slice(1, -3)), {7, 8, 9})
  lu.assertEquals(t:slice(1, 5, 4):numel(), 0)
  local m = cn.arange(6):view{2, 3}
  lu.assertEquals(flat(m:select(2, 3)), {2, 5})
  assert_error(function() return t:narrow(1, 9, 5) end, "out of bounds")
end

function TestViews:testSqueezeUnsqueezeExpand()
  local t = cn.zeros{1, 3, 1}
  lu.assertEquals(t:squeeze():shape(), {3})
  lu.assertEquals(t:squeeze(1):shape(), {3, 1})
  lu.assertEquals(t:unsqueeze(4):shape(), {1, 3, 1, 1})
  lu.assertEquals(t:unsqueeze(-1):shape(), {1, 3, 1, 1})
  assert_error(function() return t:squeeze(2) end, "size 3, not 1")
  local col = cn.tensor{{1}, {2}}
  local e = col:expand{2, 2, 3}
  lu.assertEquals(e:shape(), {2, 2, 3})
  lu.assertEquals(e[{2, 2, 3}], 2)
  lu.assertEquals(col:expand(-1, 5):shape(), {2, 5})
  assert_error(function() return col:expand{3, 3} end, "cannot expand shape [2, 1] to [3, 3]")
end

function TestViews:testChunkSplit()
  local t = cn.arange(10)
  local c = t:chunk(3)
  lu.assertEquals(#c, 3)
  lu.assertEquals(flat(c[3]), {8, 9})
  local s = t:split(4)
  lu.assertEquals(#s, 3)
  lu.assertEquals(flat(s[3]), {8, 9})
  local s2 = t:split({2, 8})
  lu.assertEquals(s2[2]:numel(), 8)
  assert_error(function() return t:split({2, 2}) end, "sum to 4")
  local m = cn.arange(12):view{3, 4}
  lu.assertEquals(m:chunk(2, 2)[2]:totable(), {{2, 3}, {6, 7}, {10, 11}})
end

function TestViews:testCatStackCopy()
  local a, b = cn.ones{2, 3}, cn.zeros{2, 1}
  local c = cn.cat({a, b}, 2)
  lu.assertEquals(c:shape(), {2, 4})
  lu.assertEquals(c[{1, 4}], 0)
  lu.assertEquals(cn.cat({a, a}):shape(), {4, 3})
  assert_error(function() return cn.cat({a, b}, 1) end, "[2, 1]", "[2, 3]")
  lu.assertEquals(cn.stack({a, a}, 3):shape(), {2, 3, 2})
  lu.assertEquals(cn.stack{a, a}:shape(), {2, 2, 3})
  assert_error(function() return cn.stack({a, 3}) end, "not a tensor")
  local d = cn.zeros{2, 3}
  d:copy_(cn.tensor{1, 2, 3})
  lu.assertEquals(d:totable(), {{1, 2, 3}, {1, 2, 3}})
  d:fill_(5)
  lu.assertEquals(d[{2, 2}], 5)
  d:zero_()
  lu.assertEquals(d[{2, 2}], 0)
  local e = d:clone()
  e:fill_(1)
  lu.assertEquals(d[{1, 1}], 0)
  assert_error(function() d:copy_(cn.zeros{4}) end, "does not broadcast")
end

TestPrint = {}

function TestPrint:testLikePyTorch()
  lu.assertEquals(tostring(cn.tensor{{1, 2}, {3, 4}}), "tensor([[1., 2.],\n        [3., 4.]], shape=[2, 2])")
  lu.assertEquals(tostring(cn.tensor{0.5, -1.25}), "tensor([ 0.5000, -1.2500], shape=[2])")
  lu.assertEquals(tostring(cn.tensor(3)), "tensor(3.)")
  lu.assertEquals(tostring(cn.tensor{1e-5, 1, 1000}), "tensor([1.0000e-05, 1.0000e+00, 1.0000e+03], shape=[3])")
  lu.assertEquals(tostring(cn.tensor{1 / 0, 0 / 0, 1}), "tensor([inf, nan, 1.], shape=[3])")
  lu.assertEquals(tostring(cn.zeros{0, 3}), "tensor([], shape=[0, 3])")
end

function TestPrint:testSummarised()
  local s = tostring(cn.arange(2000))
  lu.assertEquals(s, "tensor([0.0000e+00, 1.0000e+00, 2.0000e+00,  ..., 1.9970e+03, 1.9980e+03,\n"
    .. "        1.9990e+03], shape=[2000])")
  lu.assertStrContains(s, "shape=[2000]")
  local s2 = tostring(cn.zeros{100, 100})
  lu.assertStrContains(s2, "tensor([[0., 0., 0.,  ..., 0., 0., 0.],\n        [0., 0., 0.,  ..., 0., 0., 0.],")
  lu.assertStrContains(s2, "        ...,\n        [0., 0., 0.,  ..., 0., 0., 0.],")
end

TestMemory = {}

function TestMemory:testLivePeak()
  collectgarbage()
  local m0 = cn.memory()
  cn.reset_peak()
  local t = cn.zeros{1000}
  lu.assertEquals(cn.memory().live, m0.live + 4000)
  local v = t:view{10, 100}
  lu.assertEquals(cn.memory().live, m0.live + 4000)
  t, v = nil, nil
  collectgarbage()
  lu.assertEquals(cn.memory().live, m0.live)
  lu.assertEquals(cn.memory().peak, m0.live + 4000)
end

function TestMemory:testGCKeepsUpWithBigTensors()
  -- 200 tensors of 4 MB each, dropped at once: the collector must be told about C memory
  collectgarbage()
  local base = cn.memory().live
  cn.reset_peak()
  for _ = 1, 200 do local _t = cn.zeros{1024, 1024} end
  lu.assertTrue(cn.memory().peak - base < 200 * 4 * 1024 * 1024 / 4,
    "peak " .. (cn.memory().peak - base) .. " bytes: garbage tensors were not collected")
end

function TestMemory:testSetGcBytes()
  local default = cn.set_gc_bytes(1 << 20)
  lu.assertEquals(default, 32 * 1024 * 1024)
  lu.assertEquals(cn.set_gc_bytes(default), 1 << 20)
  assert_error(function() return cn.set_gc_bytes(-1) end, "set_gc_bytes: bytes must be >= 0")
  assert_error(function() return cn.set_gc_bytes(0.5) end, "number has no integer representation")
  assert_error(function() return cn.set_gc_bytes("a lot") end, "number expected")
end

TestIndexSelect = {}

function TestIndexSelect:testRowsAndColumns()
  local t = cn.arange(12):view{3, 4}
  lu.assertEquals(t:index_select(1, {3, 1, 3}):totable(), {{8, 9, 10, 11}, {0, 1, 2, 3}, {8, 9, 10, 11}})
  lu.assertEquals(t:index_select(2, cn.tensor{4, 1}):totable(), {{3, 0}, {7, 4}, {11, 8}})
  lu.assertEquals(t:t():index_select(-1, {2}):totable(), {{4}, {5}, {6}, {7}})
  assert_error(function() return t:index_select(1, {4}) end, "index 4 out of range for dim 1 of size 3")
  assert_error(function() return t:index_select(1, {0}) end, "index 0 out of range")
end

function TestIndexSelect:testGradientAddsRepeats()
  local x = cn.arange(6):view{3, 2}:requires_grad(true)
  x:index_select(1, {2, 2, 3}):sum():backward()
  lu.assertEquals(x.grad:totable(), {{0, 0}, {2, 2}, {1, 1}})
  lu.assertTrue(cn.gradcheck(function(a) return a:index_select(2, {3, 1, 3}) end, {cn.randn{2, 3}}))
end

-- ---- hostile sizes (issue 11): a size that overflows is a clear error, never a crash or a ----
-- ---- memory blow-up; the limit is 2^44 elements (and, for strides, non-zero sizes) per tensor --

TestHostileSizes = {}

local TOO_MANY = "has too many elements"

function TestHostileSizes:testCreation()
  local before = cn.memory()
  cn.reset_peak()
  for _, f in ipairs{"zeros", "ones", "empty", "rand", "randn"} do
    assert_error(function() return cn[f]{2^62} end, f .. ": shape [4611686018427387904] " .. TOO_MANY)
    assert_error(function() return cn[f](1 << 31, 1 << 31, 4) end, f .. ": shape [2147483648, 2147483648, 4] " .. TOO_MANY)
  end
  assert_error(function() return cn.full({2^62}, 1) end, "full: shape [4611686018427387904] " .. TOO_MANY)
  -- [2^32, 2^32] once wrapped to 0 elements and "succeeded"
  assert_error(function() return cn.zeros{2^32, 2^32}:numel() end, TOO_MANY)
  assert_error(function() return cn.empty{2^31, 2^31, 4} end, TOO_MANY)
  assert_error(function() return cn.randint(0, 2, {2^40, 2^40}) end, TOO_MANY)
  assert_error(function() return cn.tensor({}, {2^32, 2^32, 0}) end, TOO_MANY, "strides")
  assert_error(function() return cn.arange(0, 2^62) end, "arange: [0, 4.61169e+18) with step 1 has 4.61e+18 elements")
  assert_error(function() return cn.arange(0, 1, 1e-300) end, "arange: [0, 1) with step 1e-300 has 1e+300 elements: too many")
  assert_error(function() return cn.linspace(0, 1, 2^62) end, "linspace: shape [4611686018427387904] " .. TOO_MANY)
  local after = cn.memory()
  lu.assertEquals(after.live, before.live)
  lu.assertTrue(after.peak <= before.live + 64, "a refused size allocated memory")
end

function TestHostileSizes:testZeroSizedDims()
  -- no elements, but the other sizes must still give strides that fit: [0, 2^40, 2^40] is refused
  assert_error(function() return cn.zeros{0, 2^40, 2^40} end, "zeros: shape [0, 1099511627776, 1099511627776]",
    "for its strides")
  local e = cn.zeros{0, 2^22, 2^22}
  lu.assertEquals(e:numel(), 0)
  lu.assertEquals(e:stride(), {2^44, 2^22, 1})
  assert_error(function() return cn.zeros{0}:view{2^32, 2^32, 0} end, "view: shape [4294967296, 4294967296, 0]")
end

function TestHostileSizes:testViewsAndPadding()
  local x = cn.zeros{2, 3}
  assert_error(function() return x:expand{2^62, 2, 3}:contiguous() end, "expand: shape [4611686018427387904, 2, 3] " .. TOO_MANY)
  assert_error(function() return cn.zeros{2}:expand{2^62, 2} end, "expand:", TOO_MANY)
  assert_error(function() return cn.pad(x, {2^62, 0, 0, 0}) end, "pad: shape [2, 4611686018427387907] " .. TOO_MANY)
  assert_error(function() return cn.pad(x, {2^62, 2^62}) end, "pad: padding (4611686018427387904, 4611686018427387904)", "overflows")
  assert_error(function() return x:narrow(2, 2^62, 2^62) end, "out of bounds")
  lu.assertEquals(cn.zeros{2}:expand{2^20, 2}:shape(), {2^20, 2}) -- big views are free: no copy
end

-- The issue's commands, each in its own process: a Lua error (exit status 1), never a signal.
function TestHostileSizes:testReproducersInAChildProcess()
  local exe = os.getenv("CUNET_EXE") or "./cunet"
  local commands = {
    'require"cunet".zeros{2^62}', 'require"cunet".rand{2^62}', 'require"cunet".full({2^62}, 1)',
    'require"cunet".arange(0, 2^62)', 'require"cunet".linspace(0, 1, 2^62)',
    'require"cunet".zeros{2, 3}:expand{2^62, 2, 3}:contiguous()', 'local cn = require"cunet"; cn.pad(cn.zeros{2, 2}, {2^62, 0, 0, 0})',
    'print(require"cunet".zeros{2^32, 2^32}:numel())', 'require"cunet".empty{2^31, 2^31, 4}',
    'require"cunet".zeros{0, 2^40, 2^40}', 'require"cunet".arange(0, 1, 1e-300)',
  }
  for _, command in ipairs(commands) do
    local p = io.popen("'" .. exe .. "' -e '" .. command .. "' 2>&1")
    local out = p:read("a")
    local ok, how, code = p:close()
    lu.assertTrue(not ok, command)
    lu.assertEquals(how, "exit", command .. " died of a signal: " .. out)
    lu.assertEquals(code, 1, command)
    lu.assertTrue(out:find("too many", 1, true) ~= nil, command .. ": " .. out)
  end
end

-- ---- small API defects (issue 11) -----------------------------------------------------------

TestTensorArgs = {}

function TestTensorArgs:testStrideOfOneDim()
  local t = cn.zeros{2, 3, 4}
  lu.assertEquals(t:stride(1), 12)
  lu.assertEquals(t:stride(-1), 1)
  lu.assertEquals(t:stride(), {12, 4, 1})
  assert_error(function() return cn.zeros{2, 3}:stride(9) end, "dim 9 out of range for a 2-D tensor")
  assert_error(function() return cn.zeros{2, 3}:stride(0) end, "dim 0 is invalid")
end

function TestTensorArgs:testDtypeIsRefused()
  for _, f in ipairs{"zeros", "ones", "empty", "rand", "randn"} do
    assert_error(function() return cn[f]({2}, "float64") end, "dtype 'float64' not supported: cunet tensors are float32 only")
    assert_error(function() return cn[f](2, 3, "float32") end, "dtype 'float32' not supported")
    assert_error(function() return cn[f]({2}, {}) end, "unexpected table after the shape")
  end
  lu.assertEquals(cn.zeros({2}, nil):shape(), {2})
end

-- cat copies contiguous parts, and narrows along the cat dim or before it, block by block; any
-- other view through the strided copy. Every case against the same cat of contiguous copies.
TestCatBlocks = {}

function TestCatBlocks:testViewsAgainstContiguous()
  cn.seed(3)
  local x = cn.randn{4, 6, 5, 3}
  local cases = {
    {x:narrow(2, 3, 4), x:narrow(2, 1, 2), dim = 2},     -- ODE state halves
    {x:narrow(1, 2, 2), x:narrow(1, 1, 1), dim = 1},
    {x:narrow(1, 2, 2), x:narrow(1, 1, 2), dim = 2},     -- narrowed before the cat dim
    {x:transpose(3, 4), x:transpose(3, 4), dim = 2},     -- not blocks: strided path
    {x:narrow(3, 2, 2), x:narrow(3, 1, 2), dim = 2},     -- narrowed after the cat dim
    {x:select(1, 2), x:select(1, 3), dim = 1},
    {x:narrow(2, 1, 0), x, dim = 2},                     -- an empty part
    {cn.randn{1, 6, 1, 3}:expand{4, 6, 5, 3}, x, dim = 2},
  }
  for i, c in ipairs(cases) do
    local got = cn.cat({c[1], c[2]}, c.dim)
    local want = cn.cat({c[1]:contiguous(), c[2]:contiguous()}, c.dim)
    lu.assertEquals(got:shape(), want:shape(), "case " .. i)
    lu.assertEquals((got - want):abs():max():item(), 0, "case " .. i)
  end
end
