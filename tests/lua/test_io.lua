-- test_io.lua — safetensors (cn.save / cn.load) and IDX (cn.load_idx / cn.save_idx): round trips,
-- the reference layout byte for byte, the PyTorch-written fixture, atomic saves, and every kind of
-- corrupt input, built from crafted bytes, raising an error that names the file and the problem.
local lu = require "luaunit"
local helpers = require "helpers"
local read_file, write_file = helpers.read_file, helpers.write_file
local cn = require "cunet"
local fx = require "fixture_check"

local root = require("helpers").root

local FASHION = "/usr/share/datasets/fashion-mnist/"

-- ---- helpers ------------------------------------------------------------------------------

local assert_error = helpers.assert_error

local function listdir(dir)
  local names = {}
  local p = io.popen('ls -A "' .. dir .. '"')
  for name in p:lines() do names[#names + 1] = name end
  p:close()
  table.sort(names)
  return names
end

-- Each test gets a fresh directory, removed afterwards.
local tmp
local function setup_tmp()
  tmp = helpers.temp_dir()
end
local function teardown_tmp()
  helpers.remove_dir(tmp)
  tmp = nil
end

local function with_tmp(suite)
  suite.setUp, suite.tearDown = setup_tmp, teardown_tmp
  return suite
end

-- Exact comparison of a tensor with a shape and flat values (NaN equals NaN; -0 differs from 0).
local function assert_values(t, shape, data, label)
  label = label or "tensor"
  lu.assertEquals(t:shape(), shape, label .. ": shape")
  local got = t:totable{flat = true}
  lu.assertEquals(#got, #data, label .. ": numel")
  for i = 1, #data do
    -- expected values are written with %.9g: rounding them to float32 gives the exact value back
    local g, w = got[i], string.unpack("f", string.pack("f", data[i]))
    local same
    if w ~= w then same = g ~= g
    elseif w == 0 then same = g == 0 and 1 / g == 1 / w
    else same = g == w end
    if not same then
      lu.fail(string.format("%s: element %d is %s, expected %s", label, i, tostring(g), tostring(w)))
    end
  end
end

local function assert_same_tensor(a, b, label)
  assert_values(a, b:shape(), b:contiguous():totable{flat = true}, label)
end

-- A safetensors file from a header string and raw data bytes.
local function st(header, data)
  return string.pack("<I8", #header) .. header .. (data or "")
end

local function f32(...)
  local n = select("#", ...)
  return string.pack("<" .. string.rep("f", n), ...)
end

-- Writes bytes to a file in the temp dir and asserts cn.load fails naming the file and the pieces.
local function assert_corrupt(bytes, ...)
  local path = tmp .. "/corrupt.safetensors"
  write_file(path, bytes)
  return assert_error(function() return cn.load(path) end, path .. ":", ...)
end

local function entry(name, dtype, shape, b, e)
  return string.format('"%s":{"dtype":"%s","shape":[%s],"data_offsets":[%d,%d]}', name, dtype,
    table.concat(shape, ","), b, e)
end

-- ---- safetensors round trips --------------------------------------------------------------

TestSafetensorsRoundTrip = with_tmp{}

function TestSafetensorsRoundTrip:testShapes()
  cn.seed(11)
  local base = cn.randn{3, 4, 5}
  local tensors = {
    scalar = cn.tensor(-2.75),
    empty = cn.zeros{0, 3},
    empty1 = cn.zeros{0},
    vec = cn.randn{7},
    cube = base,
    deep = cn.randn{2, 1, 2, 1, 2, 1, 2, 3},
    ones8 = cn.ones{1, 1, 1, 1, 1, 1, 1, 1},
    -- non-contiguous views, written row-major
    transposed = base:transpose(1, 3),
    permuted = base:permute(2, 3, 1),
    narrowed = base:narrow(2, 2, 2),
    selected = base:select(3, 4),
    expanded = cn.randn{3, 1}:expand{3, 4},
  }
  lu.assertFalse(tensors.transposed:is_contiguous())
  lu.assertFalse(tensors.expanded:is_contiguous())
  local path = tmp .. "/shapes.safetensors"
  cn.save(path, tensors)
  local back, meta = cn.load(path)
  lu.assertEquals(meta, {})
  local n = 0
  for name, t in pairs(tensors) do
    n = n + 1
    lu.assertTrue(back[name] ~= nil, name)
    lu.assertTrue(back[name]:is_contiguous(), name)
    assert_same_tensor(back[name], t, name)
  end
  for _ in pairs(back) do n = n - 1 end
  lu.assertEquals(n, 0)
  lu.assertEquals(back.deep:dim(), 8)
  lu.assertEquals(back.scalar:dim(), 0)
  lu.assertEquals(listdir(tmp), {"shapes.safetensors"})
end

function TestSafetensorsRoundTrip:testSpecialValuesAndNames()
  local t = cn.tensor{0, -0.0, 1 / 0, -1 / 0, 0 / 0, 1e-45, 3.4028234663852886e38, -1.5}
  local names = {
    ["a.b.c"] = t, ["quote\"back\\slash"] = t, ["new\nline\ttab\1"] = t, ["é✓"] = t, [""] = t,
  }
  local path = tmp .. "/names.safetensors"
  cn.save(path, names, {["k\"\n"] = "v\\\r", empty = "", ["ünï"] = "cödé ✓"})
  local back, meta = cn.load(path)
  for name in pairs(names) do assert_same_tensor(back[name], t, name) end
  lu.assertEquals(meta, {["k\"\n"] = "v\\\r", empty = "", ["ünï"] = "cödé ✓"})
end

function TestSafetensorsRoundTrip:testMetadata()
  local path = tmp .. "/meta.safetensors"
  cn.save(path, {w = cn.ones{2}}, {format = "pt", epoch = "3", rng = "seed=7 counter=12"})
  local back, meta = cn.load(path)
  lu.assertEquals(meta, {format = "pt", epoch = "3", rng = "seed=7 counter=12"})
  assert_values(back.w, {2}, {1, 1})
  -- an explicit empty metadata table: no __metadata__ entry
  cn.save(path, {w = cn.ones{2}}, {})
  local _, meta2 = cn.load(path)
  lu.assertEquals(meta2, {})
end

-- cn.load_meta: the metadata alone, the file validated as by cn.load (a corrupt or missing one raises).
function TestSafetensorsRoundTrip:testLoadMeta()
  local path = tmp .. "/meta.safetensors"
  cn.save(path, {w = cn.ones{2}}, {step = "250", kind = "unet"})
  lu.assertEquals(cn.load_meta(path), {step = "250", kind = "unet"})
  cn.save(path, {w = cn.ones{2}})
  lu.assertEquals(cn.load_meta(path), {})
  local bytes = read_file(path)
  local f = assert(io.open(path, "wb"))
  f:write(bytes:sub(1, #bytes - 4)) -- the data cut short: the header's offsets point past the end
  f:close()
  local ok, err = pcall(cn.load_meta, path)
  lu.assertFalse(ok)
  lu.assertStrContains(err, "meta.safetensors")
  lu.assertErrorMsgContains("No such file", cn.load_meta, tmp .. "/none.safetensors")
  lu.assertErrorMsgContains("path is empty", cn.load_meta, "")
end

function TestSafetensorsRoundTrip:testOverwriteLeavesNoTempFiles()
  local path = tmp .. "/m.safetensors"
  cn.save(path, {w = cn.zeros{3}})
  cn.save(path, {w = cn.ones{3}, b = cn.tensor(5)})
  local back = cn.load(path)
  assert_values(back.w, {3}, {1, 1, 1})
  assert_values(back.b, {}, {5})
  lu.assertEquals(listdir(tmp), {"m.safetensors"})
end

-- ---- the reference layout, byte for byte --------------------------------------------------

TestSafetensorsLayout = with_tmp{}

-- The byte strings below are those of the reference implementation's own tests
-- (huggingface/safetensors, tensor.rs: test_empty, test_serialization_forced_alignement).
function TestSafetensorsLayout:testEmpty()
  local path = tmp .. "/e.safetensors"
  cn.save(path, {})
  lu.assertEquals(read_file(path), string.pack("<I8", 8) .. "{}      ")
  cn.save(path, {}, {framework = "pt"})
  lu.assertEquals(read_file(path), string.pack("<I8", 40) .. '{"__metadata__":{"framework":"pt"}}     ')
  local back, meta = cn.load(path)
  lu.assertEquals(next(back), nil)
  lu.assertEquals(meta, {framework = "pt"})
end

function TestSafetensorsLayout:testPaddedHeader()
  local path = tmp .. "/a.safetensors"
  cn.save(path, {attn0 = cn.arange(6):view{1, 1, 2, 3}})
  local header = '{"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}}       '
  lu.assertEquals(#header, 72)
  lu.assertEquals(read_file(path), string.pack("<I8", 72) .. header .. f32(0, 1, 2, 3, 4, 5))
end

function TestSafetensorsLayout:testSortedByName()
  local path = tmp .. "/s.safetensors"
  cn.save(path, {b = cn.tensor{2}, a = cn.tensor{1}, B = cn.tensor{3}}, {z = "1", a = "2"})
  local header = '{"__metadata__":{"a":"2","z":"1"},' .. entry("B", "F32", {1}, 0, 4) .. "," ..
    entry("a", "F32", {1}, 4, 8) .. "," .. entry("b", "F32", {1}, 8, 12) .. "}"
  header = header .. string.rep(" ", (8 - #header % 8) % 8)
  lu.assertEquals(read_file(path), st(header, f32(3, 1, 2)))
end

-- ---- the file PyTorch wrote ---------------------------------------------------------------

TestSafetensorsTorch = {}

function TestSafetensorsTorch:testTorchWrittenFile()
  local want = fx.load("io_torch_written")
  local back, meta = cn.load(root() .. "/tests/fixtures/torch_written.safetensors")
  lu.assertEquals(meta, want.metadata)
  local n = 0
  for name, spec in pairs(want.tensors) do
    n = n + 1
    lu.assertTrue(back[name] ~= nil, name)
    assert_values(back[name], spec.shape, spec.data, name .. " (" .. spec.dtype .. ")")
  end
  for _ in pairs(back) do n = n - 1 end
  lu.assertEquals(n, 0, "tensor count")
  -- spot checks that do not depend on the fixture: F16 max, the smallest F16 subnormal, BF16 bits
  lu.assertEquals(back.half:get{1, 1}, 65504)
  lu.assertEquals(back.half:get{1, 3}, 2 ^ -24)
  lu.assertEquals(back.double:get{2, 2, 1}, 16777216) -- 16777217 rounds to even
  lu.assertEquals(back.steps:get{4}, 2 ^ 40)
  lu.assertEquals(back.mask:totable(), {1, 0, 0, 1})
end

-- ---- writing F16 (cn.save's dtype option) -------------------------------------------------

TestSafetensorsF16 = with_tmp{}

-- torch's float32 -> float16 rounding (ties to even, subnormals, the edge of the range), stored
-- by cn.save{dtype = "F16"} and read back exactly
function TestSafetensorsF16:testRoundsAsTorch()
  local fx16 = fx.load("io_torch_written").f16_rounding
  local path = tmp .. "/h.safetensors"
  -- -65519 and 65519.99 round to +-65504, the edge: stored, not refused
  cn.save(path, {x = cn.tensor(fx16.input)}, nil, {dtype = "F16"})
  local back = cn.load(path)
  assert_values(back.x, {#fx16.input}, fx16.want, "F16 rounding")
  -- half the bytes of F32, and the header says F16
  local bytes = read_file(path)
  lu.assertStrContains(bytes, '"dtype":"F16"')
  local hlen = string.unpack("<I8", bytes)
  lu.assertEquals(#bytes, 8 + hlen + 2 * #fx16.input)
end

function TestSafetensorsF16:testLayoutAndViews()
  local path = tmp .. "/v.safetensors"
  local base = cn.arange(6):view{2, 3}
  cn.save(path, {t = base:transpose(1, 2), s = cn.tensor(-2.5), e = cn.zeros{0, 2}}, {k = "v"}, {dtype = "F16"})
  local header = '{"__metadata__":{"k":"v"},' .. entry("e", "F16", {0, 2}, 0, 0) .. "," ..
    entry("s", "F16", {}, 0, 2) .. "," .. entry("t", "F16", {3, 2}, 2, 14) .. "}"
  header = header .. string.rep(" ", (8 - #header % 8) % 8)
  -- F16 bits: -2.5 = 0xC100; 0, 3, 1, 4, 2, 5 (the transpose, row-major)
  local data = string.pack("<I2I2I2I2I2I2I2", 0xC100, 0x0000, 0x4200, 0x3C00, 0x4400, 0x4000, 0x4500)
  lu.assertEquals(read_file(path), st(header, data))
  local back, meta = cn.load(path)
  lu.assertEquals(meta, {k = "v"})
  assert_values(back.t, {3, 2}, {0, 3, 1, 4, 2, 5})
  -- the default and an explicit F32 write F32
  cn.save(path, {s = cn.tensor(-2.5)}, nil, {dtype = "F32"})
  lu.assertStrContains(read_file(path), '"dtype":"F32"')
end

function TestSafetensorsF16:testOverflowRefusedOldFileKept()
  local path = tmp .. "/o.safetensors"
  cn.save(path, {w = cn.ones{2}})
  local before = read_file(path)
  assert_error(function() cn.save(path, {w = cn.ones{2}, big = cn.tensor{{1, 2}, {3, 65520}}}, nil, {dtype = "F16"}) end,
    "tensor 'big' element [1, 1] is 65520, beyond F16's range")
  assert_error(function() cn.save(path, {w = cn.tensor{-1e6}}, nil, {dtype = "F16"}) end, "element [0] is -1e+06")
  lu.assertEquals(read_file(path), before)
  lu.assertEquals(listdir(tmp), {"o.safetensors"})
  -- infinities and NaN are values, not overflow: kept
  cn.save(path, {w = cn.tensor{1 / 0, -1 / 0, 0 / 0}}, nil, {dtype = "F16"})
  local w = cn.load(path).w
  lu.assertEquals(w:get{1}, 1 / 0)
  lu.assertEquals(w:get{2}, -1 / 0)
  lu.assertTrue(w:get{3} ~= w:get{3})
end

function TestSafetensorsF16:testOptions()
  assert_error(function() cn.save(tmp .. "/x", {}, nil, {dtype = "BF16"}) end, "dtype 'BF16' cannot be written (known: F32, F16)")
  assert_error(function() cn.save(tmp .. "/x", {}, nil, {dtyp = "F16"}) end, "unknown option 'dtyp' (known: dtype)")
  assert_error(function() cn.save(tmp .. "/x", {}, nil, {dtype = 16}) end, "dtype")
  lu.assertEquals(listdir(tmp), {})
end

-- ---- atomicity ----------------------------------------------------------------------------

TestSafetensorsAtomic = with_tmp{}

function TestSafetensorsAtomic:testMissingDirectory()
  local path = tmp .. "/no/such/dir/m.safetensors"
  assert_error(function() cn.save(path, {w = cn.ones{2}}) end, "cannot write '" .. path .. "'",
    "No such file or directory")
  lu.assertEquals(listdir(tmp), {})
end

function TestSafetensorsAtomic:testFailedSaveKeepsOldFile()
  local path = tmp .. "/m.safetensors"
  cn.save(path, {w = cn.tensor{1, 2, 3}}, {epoch = "1"})
  local before = read_file(path)
  assert_error(function() cn.save(path, {w = cn.ones{2}, b = 42}) end, "'b' is a number, not a tensor")
  assert_error(function() cn.save(path, {w = cn.ones{2}}, {epoch = 2}) end, "metadata value of 'epoch'",
    "not a string")
  assert_error(function() cn.save(path, {[1] = cn.ones{2}}) end, "tensor names must be strings")
  local freed = cn.ones{2}
  freed:free()
  assert_error(function() cn.save(path, {w = freed}) end, "'w' is a freed tensor")
  assert_error(function() cn.save(path, {__metadata__ = cn.ones{2}}) end, "reserved")
  assert_error(function() cn.save(path, {["\255bad"] = cn.ones{2}}) end, "not valid UTF-8")
  assert_error(function() cn.save(path, {w = cn.ones{2}}, {k = "\255"}) end, "not valid UTF-8")
  lu.assertEquals(read_file(path), before)
  lu.assertEquals(listdir(tmp), {"m.safetensors"})
end

function TestSafetensorsAtomic:testRenameFailureRemovesTempFile()
  -- the target is a directory: the temp file is written, the rename fails, the temp file goes
  local target = tmp .. "/dir.safetensors"
  assert(os.execute('mkdir "' .. target .. '"'))
  assert_error(function() cn.save(target, {w = cn.ones{2}}) end, "cannot replace '" .. target .. "'")
  lu.assertEquals(listdir(tmp), {"dir.safetensors"})
  lu.assertEquals(listdir(target), {})
end

function TestSafetensorsAtomic:testBadArguments()
  assert_error(function() cn.save(tmp .. "/x", "w") end, "bad argument #2 to 'save'")
  assert_error(function() cn.save(tmp .. "/x", {}, "meta") end, "bad argument #3 to 'save'")
  assert_error(function() cn.save("", {}) end, "path is empty")
  assert_error(function() cn.save(tmp .. "/a\0b", {}) end, "NUL byte")
  lu.assertEquals(listdir(tmp), {})
end

-- ---- file-system errors on load -----------------------------------------------------------

TestSafetensorsOpenErrors = with_tmp{}

function TestSafetensorsOpenErrors:testMissingFile()
  local path = tmp .. "/missing.safetensors"
  assert_error(function() return cn.load(path) end, "cannot open '" .. path .. "'", "No such file or directory")
end

function TestSafetensorsOpenErrors:testDirectory()
  assert_error(function() return cn.load(tmp) end, "cannot read '" .. tmp .. "'", "Is a directory")
end

-- ---- corrupt files ------------------------------------------------------------------------

TestSafetensorsCorrupt = with_tmp{}

function TestSafetensorsCorrupt:testTooShort()
  assert_corrupt("", "too short (0 bytes)")
  assert_corrupt("abc", "too short (3 bytes)")
  assert_corrupt("\8\0\0\0\0\0\0", "too short (7 bytes)")
end

function TestSafetensorsCorrupt:testHeaderLength()
  assert_corrupt(string.pack("<I8", 1000) .. "{}", "header length 1000 exceeds the 2 bytes")
  assert_corrupt(string.pack("<I8", 1 << 40) .. "{}", "header length 1099511627776 is absurd")
  assert_corrupt(string.pack("<I8", -1) .. "{}", "is absurd")
  assert_corrupt(string.pack("<I8", 100000001) .. "{}", "is absurd")
end

function TestSafetensorsCorrupt:testNotJson()
  assert_corrupt(st(""), "header is not valid JSON")
  assert_corrupt(st("{not json}"), "header is not valid JSON")
  assert_corrupt(st('{"a":'), "header is not valid JSON")
  assert_corrupt(st("{} trailing"), "header is not valid JSON")
  assert_corrupt(st("{}\0\0\0\0\0\0"), "NUL byte at header offset 2")
  assert_corrupt(st('{"\255":1}'), "not valid UTF-8 (byte 0xff at header offset 2)")
  assert_corrupt(st('{"\237\160\128":1}'), "not valid UTF-8") -- an encoded surrogate
  assert_corrupt(st('{"\192\175":1}'), "not valid UTF-8")     -- an overlong '/'
  assert_corrupt(st(string.rep("[", 5000) .. string.rep("]", 5000)), "not valid JSON") -- too deep
end

function TestSafetensorsCorrupt:testNotAnObject()
  assert_corrupt(st("[1,2]   "), "header is an array, not a JSON object")
  assert_corrupt(st('"text"  '), "header is a string, not a JSON object")
  assert_corrupt(st("42      "), "header is a number, not a JSON object")
end

function TestSafetensorsCorrupt:testMissingFields()
  local data = f32(1)
  assert_corrupt(st('{"a":{"shape":[1],"data_offsets":[0,4]}}', data), "tensor 'a' has no dtype")
  assert_corrupt(st('{"a":{"dtype":"F32","data_offsets":[0,4]}}', data), "tensor 'a' has no shape")
  assert_corrupt(st('{"a":{"dtype":"F32","shape":[1]}}', data), "tensor 'a' has no data_offsets")
  assert_corrupt(st('{"a":3}', data), "tensor 'a' is a number, not an object")
  assert_corrupt(st('{"a":[]}', data), "tensor 'a' is an array, not an object")
  assert_corrupt(st('{"a":{"dtype":"F32","dtype":"F16","shape":[1],"data_offsets":[0,4]}}', data),
    "tensor 'a' has two 'dtype' fields")
end

function TestSafetensorsCorrupt:testWrongTypes()
  local data = f32(1)
  assert_corrupt(st('{"a":{"dtype":7,"shape":[1],"data_offsets":[0,4]}}', data), "dtype that is a number")
  assert_corrupt(st('{"a":{"dtype":"F17","shape":[1],"data_offsets":[0,4]}}', data), "unknown dtype 'F17'")
  assert_corrupt(st('{"a":{"dtype":"F32","shape":"1","data_offsets":[0,4]}}', data),
    "shape that is a string, not an array")
  assert_corrupt(st('{"a":{"dtype":"F32","shape":{},"data_offsets":[0,4]}}', data),
    "shape that is an object, not an array")
  assert_corrupt(st('{"a":{"dtype":"F32","shape":[1],"data_offsets":"0,4"}}', data), "data_offsets that are not")
  assert_corrupt(st('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0]}}', data), "data_offsets that are not")
  assert_corrupt(st('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}', data), "data_offsets that are not")
  assert_corrupt(st('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,-4]}}', data), "data_offsets that are not")
  assert_corrupt(st('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4.5]}}', data), "data_offsets that are not")
  assert_corrupt(st('{"a":{"dtype":"F32","shape":[1],"data_offsets":[null,4]}}', data), "data_offsets that are not")
end

function TestSafetensorsCorrupt:testBadShapes()
  local data = f32(1)
  assert_corrupt(st('{"a":{"dtype":"F32","shape":[-3],"data_offsets":[0,4]}}', data),
    "tensor 'a' has shape entry 1 = -3, not a non-negative integer")
  assert_corrupt(st('{"a":{"dtype":"F32","shape":[1,2.5],"data_offsets":[0,4]}}', data),
    "shape entry 2 = 2.5, not a non-negative integer")
  assert_corrupt(st('{"a":{"dtype":"F32","shape":["1"],"data_offsets":[0,4]}}', data),
    "shape entry 1 = a string")
  assert_corrupt(st('{"a":{"dtype":"F32","shape":[1e300],"data_offsets":[0,4]}}', data),
    "not a non-negative integer")
  assert_corrupt(st('{"a":{"dtype":"F32","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,4]}}', data),
    "tensor 'a' has 9 dims; cunet supports at most 8")
  assert_corrupt(st('{"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,4]}}', data),
    "whose size overflows")
end

function TestSafetensorsCorrupt:testSizeMismatch()
  assert_corrupt(st("{" .. entry("conv.weight", "F32", {3, 3}, 0, 100) .. "}", string.rep("\0", 100)),
    "tensor 'conv.weight' has data_offsets [0, 100] but shape [3, 3] of F32 needs 36 bytes")
  assert_corrupt(st("{" .. entry("h", "F16", {3}, 0, 4) .. "}", string.rep("\0", 4)),
    "tensor 'h' has data_offsets [0, 4] but shape [3] of F16 needs 6 bytes")
  assert_corrupt(st("{" .. entry("s", "F64", {}, 0, 4) .. "}", string.rep("\0", 4)),
    "shape [] of F64 needs 8 bytes")
end

function TestSafetensorsCorrupt:testOffsets()
  assert_corrupt(st("{" .. entry("w", "F32", {3, 3}, 0, 36) .. "}", f32(1, 2)),
    "tensor 'w' has data_offsets [0, 36] past the end of the 8-byte data buffer")
  assert_corrupt(st("{" .. entry("w", "F32", {1}, 8, 4) .. "}", f32(1, 2)),
    "tensor 'w' has data_offsets [8, 4] with begin > end")
  assert_corrupt(st("{" .. entry("a", "F32", {2}, 0, 8) .. "," .. entry("b", "F32", {2}, 4, 12) .. "}", f32(1, 2, 3)),
    "tensors 'a' [0, 8] and 'b' [4, 12] overlap")
  assert_corrupt(st("{" .. entry("a", "F32", {1}, 0, 4) .. "," .. entry("b", "F32", {1}, 0, 4) .. "}", f32(1)),
    "overlap")
  assert_corrupt(st("{" .. entry("a", "F32", {1}, 0, 4) .. "," .. entry("b", "F32", {1}, 8, 12) .. "}", f32(1, 2, 3)),
    "bytes [4, 8) of the data buffer belong to no tensor (a gap before tensor 'b')")
  assert_corrupt(st("{" .. entry("a", "F32", {1}, 4, 8) .. "}", f32(1, 2)), "bytes [0, 4) of the data buffer")
  assert_corrupt(st("{" .. entry("a", "F32", {1}, 0, 4) .. "}", f32(1, 2)),
    "bytes [4, 8) at the end of the data buffer belong to no tensor")
  assert_corrupt(st("{}", f32(1)), "bytes [0, 4) at the end of the data buffer")
end

function TestSafetensorsCorrupt:testDuplicates()
  assert_corrupt(st("{" .. entry("a", "F32", {1}, 0, 4) .. "," .. entry("a", "F32", {1}, 4, 8) .. "}", f32(1, 2)),
    "duplicate tensor name 'a'")
  assert_corrupt(st('{"__metadata__":{},"__metadata__":{}}'), "two __metadata__ entries")
  assert_corrupt(st('{"__metadata__":{"k":"1","k":"2"}}'), "duplicate __metadata__ key 'k'")
end

function TestSafetensorsCorrupt:testMetadata()
  assert_corrupt(st('{"__metadata__":"pt"}'), "__metadata__ is a string, not an object of strings")
  assert_corrupt(st('{"__metadata__":{"epoch":3}}'), "__metadata__ entry 'epoch' is a number, not a string")
  assert_corrupt(st('{"__metadata__":{"a":null}}'), "entry 'a' is null")
end

function TestSafetensorsCorrupt:testDtypes()
  -- integer dtypes load when float32 holds every value exactly; other dtypes are refused by name
  local path = tmp .. "/ints.safetensors"
  write_file(path, st("{" .. entry("i", "I64", {2}, 0, 16) .. "," .. entry("u", "U16", {2}, 16, 20) .. "," ..
    entry("b", "I8", {2}, 20, 22) .. "}", string.pack("<i8i8I2I2i1i1", -16777216, 1 << 53, 65535, 7, -128, 127)))
  local back = cn.load(path)
  assert_values(back.i, {2}, {-16777216, 2 ^ 53})
  assert_values(back.u, {2}, {65535, 7})
  assert_values(back.b, {2}, {-128, 127})
  assert_corrupt(st("{" .. entry("step", "I64", {2}, 0, 16) .. "}", string.pack("<i8i8", 5, 16777217)),
    "tensor 'step' of I64 holds 16777217 at element 1, which float32 cannot represent exactly")
  assert_corrupt(st("{" .. entry("q", "I32", {1}, 0, 4) .. "}", string.pack("<i4", -16777219)),
    "holds -16777219 at element 0")
  assert_corrupt(st("{" .. entry("f8", "F8_E4M3", {2}, 0, 2) .. "}", "\1\2"),
    "tensor 'f8' has dtype F8_E4M3, which cunet cannot load")
end

-- ---- IDX ----------------------------------------------------------------------------------

TestIdx = with_tmp{}

-- issue 11: the header's claim is checked before any allocation; the cap is CUNET_IDX_MAX_BYTES
function TestIdx:testLoadLimits()
  local claim = tmp .. "/claim.idx"
  write_file(claim, "\0\0\8\2" .. string.pack(">I4I4", 75000, 70000) .. "\0\0\0")
  assert_error(function() return cn.load_idx(claim) end,
    "IDX shape [75000, 70000] of u8 is too large: 21000000000 bytes as float32, above the limit of 4294967296")
  assert_error(function() return cn.load_idx(root() .. "/tests/fuzz/crashes/idx/zero_dim_huge_strides.idx") end,
    "too many elements for its strides")
  assert_error(function() return cn.load_idx(root() .. "/tests/fuzz/crashes/idx/gzip_truncated_claims_1gb.idx.gz") end,
    "more than a 140-byte gzip file can hold")
  local path = tmp .. "/small.idx"
  cn.save_idx(path, cn.zeros{10, 10})
  local exe = os.getenv("CUNET_EXE") or (root() .. "/cunet")
  local function load_with(cap)
    local p = io.popen(string.format("CUNET_IDX_MAX_BYTES=%s '%s' -e 'print(require\"cunet\".load_idx(%q):numel())' 2>&1",
      cap, exe, path))
    local out = p:read("a")
    p:close()
    return out
  end
  lu.assertStrContains(load_with(399), "400 bytes as float32, above the limit of 399")
  lu.assertStrContains(load_with(400), "100")
end

local function pixel_tensor()
  local data = {}
  for i = 1, 60 do data[i] = (i * 37) % 256 end
  return cn.tensor(data, {3, 4, 5}), data
end

function TestIdx:testU8RoundTrip()
  local t, data = pixel_tensor()
  for _, name in ipairs{"u8.idx", "u8.idx.gz"} do
    local path = tmp .. "/" .. name
    cn.save_idx(path, t)
    assert_values(cn.load_idx(path), {3, 4, 5}, data, name)
  end
  local plain = read_file(tmp .. "/u8.idx")
  lu.assertEquals(#plain, 4 + 12 + 60)
  lu.assertEquals(plain:sub(1, 16), "\0\0\8\3" .. string.pack(">I4I4I4", 3, 4, 5))
  lu.assertEquals(read_file(tmp .. "/u8.idx.gz"):sub(1, 2), "\31\139") -- gzip magic
  lu.assertEquals(listdir(tmp), {"u8.idx", "u8.idx.gz"})
end

function TestIdx:testU8RoundingAndRange()
  local path = tmp .. "/r.idx"
  cn.save_idx(path, cn.tensor{0.4, 2.5, 254.6, 255.4, -0.4}, "u8")
  assert_values(cn.load_idx(path), {5}, {0, 3, 255, 255, 0})
  local before = read_file(path)
  assert_error(function() cn.save_idx(path, cn.tensor{1, 256}) end, "cannot save '" .. path .. "' as u8",
    "element 1 is 256, outside [0, 255]")
  assert_error(function() cn.save_idx(path, cn.tensor{-1}) end, "element 0 is -1")
  assert_error(function() cn.save_idx(path, cn.tensor{0 / 0}) end, "nan")
  assert_error(function() cn.save_idx(path, cn.tensor{1}, "u16") end, "bad argument #3 to 'save_idx'")
  lu.assertEquals(read_file(path), before)
  lu.assertEquals(listdir(tmp), {"r.idx"})
end

function TestIdx:testF32RoundTrip()
  cn.seed(3)
  local t = cn.randn{4, 6}
  local cases = {
    {"f.idx", t}, {"f.idx.gz", t}, {"view.idx", t:t()}, {"scalar.idx", cn.tensor(-1.25)},
    {"empty.idx.gz", cn.zeros{2, 0}}, {"special.idx", cn.tensor{1 / 0, -1 / 0, 0 / 0, -0.0, 1e-45}},
  }
  for _, case in ipairs(cases) do
    local path = tmp .. "/" .. case[1]
    cn.save_idx(path, case[2], "f32")
    assert_same_tensor(cn.load_idx(path), case[2], case[1])
  end
  lu.assertEquals(read_file(tmp .. "/scalar.idx"), "\0\0\13\0" .. string.pack(">f", -1.25))
end

function TestIdx:testOtherTypes()
  local t = cn.tensor{{-128, 0, 127}, {5, -6, 7}}
  for _, ty in ipairs{"i8", "i16", "i32", "f64"} do
    local path = tmp .. "/t." .. ty .. ".gz"
    cn.save_idx(path, t, ty)
    assert_same_tensor(cn.load_idx(path), t, ty)
  end
  assert_error(function() cn.save_idx(tmp .. "/x.idx", cn.tensor{128}, "i8") end, "outside [-128, 127]")
  -- big-endian decoding, crafted by hand
  local path = tmp .. "/be.idx"
  write_file(path, "\0\0\11\1" .. string.pack(">I4i2i2i2", 3, -2, 300, -32768))
  assert_values(cn.load_idx(path), {3}, {-2, 300, -32768})
  write_file(path, "\0\0\12\1" .. string.pack(">I4i4i4", 2, -16777216, 65536))
  assert_values(cn.load_idx(path), {2}, {-16777216, 65536})
  write_file(path, "\0\0\14\2" .. string.pack(">I4I4dd", 1, 2, 0.5, -1e300))
  assert_values(cn.load_idx(path), {1, 2}, {0.5, -1 / 0})
end

function TestIdx:testFashionMnist()
  lu.skipIf(not io.open(FASHION .. "t10k-images-idx3-ubyte.gz"), "Fashion-MNIST not installed")
  local images = cn.load_idx(FASHION .. "t10k-images-idx3-ubyte.gz")
  lu.assertEquals(images:shape(), {10000, 28, 28})
  lu.assertEquals(images:min():item(), 0)
  lu.assertEquals(images:max():item(), 255)
  lu.assertEquals((images - images:floor()):abs():max():item(), 0) -- whole numbers
  local labels = cn.load_idx(FASHION .. "t10k-labels-idx1-ubyte.gz")
  lu.assertEquals(labels:shape(), {10000})
  lu.assertEquals(labels:min():item(), 0)
  lu.assertEquals(labels:max():item(), 9)
  for k = 0, 9 do lu.assertEquals(labels:eq(k):sum():item(), 1000, "class " .. k) end
  lu.assertEquals(labels:get{1}, 9) -- the first test item is an ankle boot
  -- a u8 round trip of real data, as a conversion script would do it
  local some = images:narrow(1, 1, 100)
  cn.save_idx(tmp .. "/some.idx.gz", some)
  assert_same_tensor(cn.load_idx(tmp .. "/some.idx.gz"), some, "first 100 images")
end

function TestIdx:testCorrupt()
  local t = pixel_tensor()
  local good = tmp .. "/good.idx"
  cn.save_idx(good, t)
  local bytes = read_file(good)
  local path = tmp .. "/bad.idx"
  local function corrupt(b, ...)
    write_file(path, b)
    return assert_error(function() return cn.load_idx(path) end, path .. ":", ...)
  end
  corrupt(bytes:sub(1, 66), "truncated IDX data: shape [3, 4, 5] of u8 needs 60 bytes, the file has 50")
  corrupt(bytes .. "xx", "wrong length", "needs 60 bytes, the file has 62")
  corrupt("", "too short (0 bytes)")
  corrupt("\0\0", "too short (2 bytes)")
  corrupt("\1\0\8\1" .. bytes:sub(5), "bad magic number 0x01000801")
  corrupt("\0\0\10\1" .. bytes:sub(5), "bad magic number 0x00000a01")
  corrupt("\0\0\8\9" .. string.rep("\0\0\0\1", 9) .. "x", "9 dims; cunet supports at most 8")
  corrupt("\0\0\8\3\0\0\0\3\0\0", "truncated IDX header: 3 dims need 12 bytes of sizes, the file has 6")
  -- sizes that claim terabytes: refused from the file length, nothing allocated
  corrupt("\0\0\8\3" .. string.rep("\0\0\1\0", 3) .. "abc", "truncated IDX data", "needs 16777216 bytes",
    "the file has 3")
  corrupt("\0\0\8\3" .. string.rep("\0\1\0\0", 3) .. "abc", "IDX shape [65536, 65536, 65536] of u8 is too large",
    "too many elements")
  corrupt("\0\0\8\3" .. string.rep("\255\255\255\255", 3) .. "abc", "IDX shape [4294967295, 4294967295, 4294967295] of u8 is too large")
  corrupt("\0\0\14\8" .. string.rep("\255\255\255\255", 8), "too large")
  -- missing file, directory
  assert_error(function() return cn.load_idx(tmp .. "/none.idx") end, "cannot open '" .. tmp .. "/none.idx'",
    "No such file or directory")
  assert_error(function() return cn.load_idx(tmp) end, "Is a directory")
end

function TestIdx:testCorruptGzip()
  local t = pixel_tensor()
  local good = tmp .. "/good.idx.gz"
  cn.save_idx(good, t)
  local gz = read_file(good)
  local path = tmp .. "/bad.idx.gz"
  local function corrupt(b, ...)
    write_file(path, b)
    return assert_error(function() return cn.load_idx(path) end, path .. ":", ...)
  end
  corrupt(gz:sub(1, #gz - 12), "truncated IDX data: shape [3, 4, 5] of u8 needs 60 bytes")
  corrupt(gz:sub(1, 12))
  -- a wrong CRC in the gzip trailer
  local crc = string.unpack("<I4", gz, #gz - 7)
  corrupt(gz:sub(1, #gz - 8) .. string.pack("<I4", crc ~ 1) .. gz:sub(#gz - 3), "corrupt gzip data")
  -- a gzip stream that claims a big array (2^24 bytes): refused before inflating, since a file
  -- this small cannot hold it; one within reach of its size is refused once the data run out
  write_file(tmp .. "/claim.idx", "\0\0\8\3" .. string.rep("\0\0\1\0", 3) .. "abc")
  assert(os.execute('gzip -c "' .. tmp .. '/claim.idx" > "' .. path .. '"'))
  assert_error(function() return cn.load_idx(path) end, "truncated IDX data", "gzip file can hold")
  write_file(tmp .. "/claim.idx", "\0\0\8\3" .. string.rep("\0\0\0\16", 3) .. "abc")
  assert(os.execute('gzip -c "' .. tmp .. '/claim.idx" > "' .. path .. '"'))
  assert_error(function() return cn.load_idx(path) end, "truncated IDX data", "needs 4096 bytes, the file has 3")
end
