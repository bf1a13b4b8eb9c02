-- test_perceptual.lua — LPIPS (lua/cunet/models/lpips.lua) and pytorch-fid's Inception-v3
-- (lua/cunet/models/inception.lua) against PyTorch with random weights (tests/fixtures/perceptual.lua,
-- from tests/tools/fixtures_perceptual.py): the weights are regenerated bit for bit here
-- (seeded_weights.lua), written to a safetensors file and loaded through the real loader; the
-- names and shapes the loader requires are those tools/convert_weights.py wrote from the official
-- .pth layouts. Also: the loader's errors (missing file, missing tensor, wrong shape, extra
-- tensor), available(), and fid with features = "inception".

local lu = require "luaunit"
local cn = require "cunet"
local fx = require "fixture_check"
local seeded = require "seeded_weights"
local lpips = require "cunet.models.lpips"
local inception = require "cunet.models.inception"
local metrics = require "cunet.metrics"
local fid = require "cunet.fid"

local CASES = {}
for _, c in ipairs(fx.load("perceptual")) do CASES[c.name] = c end

local function tmpfile()
  local p = os.tmpname()
  os.remove(p)
  return p .. ".safetensors"
end

-- The loader's spec equals the converter's names and shapes; the regenerated weights equal the
-- generator's at the stored positions, bit for bit.
local function check_weights(spec, entries, tensors, label)
  lu.assertEquals(#spec, #entries, label .. ": tensor count")
  local by_name = {}
  for _, s in ipairs(spec) do by_name[s.name] = s.shape end
  for _, e in ipairs(entries) do
    lu.assertEquals(by_name[e.name], e.shape, label .. ": " .. e.name .. " (converter vs loader)")
    local flat = tensors[e.name]:view(-1)
    for i, at in ipairs(e.at) do
      local want = string.unpack("<f", string.pack("<f", e.values[i]))
      lu.assertEquals(flat[at]:item(), want, string.format("%s: %s[%d]", label, e.name, at))
    end
  end
end

-- Writes net's seeded weights to a temporary file; returns its path and the tensors.
local function lpips_weights(net)
  local path = tmpfile()
  return path, seeded.save(path, lpips.spec(net))
end

TestLpips = {}

function TestLpips:testMatchesPyTorch()
  for _, net in ipairs { "alex", "vgg" } do
    local path, tensors = lpips_weights(net)
    local ok, err = pcall(function()
      local model = lpips.new { net = net, weights = path }
      for _, kind in ipairs { "rgb", "grey" } do
        local case = CASES["lpips_" .. net .. "_" .. kind]
        if case then
          if case.weights then check_weights(lpips.spec(net), case.weights, tensors, case.name) end
          local x, y = fx.tensor(case.inputs[1]), fx.tensor(case.inputs[2])
          fx.assert_close(model:distance(x, y), case.output, { rtol = 1e-4, atol = 1e-5, label = case.name })
        end
      end
    end)
    os.remove(path)
    if not ok then error(err, 0) end
  end
end

function TestLpips:testIdenticalIsZeroAndDifferentiable()
  local path = lpips_weights("alex")
  local ok, err = pcall(function()
    local model = lpips.new { net = "alex", weights = path }
    local x = fx.tensor(CASES.lpips_alex_rgb.inputs[1])
    lu.assertEquals(model:distance(x, x):totable(), { 0, 0 })
    local y = fx.tensor(CASES.lpips_alex_rgb.inputs[2]):requires_grad(true)
    model:distance(x, y):sum():backward()
    lu.assertEquals(y.grad:shape(), y:shape())
    -- a step against the gradient lowers the distance
    local d0 = model:distance(x, y:detach()):sum():item()
    local d1 = model:distance(x, y:detach() - y.grad * 1e-3):sum():item()
    lu.assertTrue(d1 < d0, string.format("%g -> %g", d0, d1))
  end)
  os.remove(path)
  if not ok then error(err, 0) end
end

function TestLpips:testWeightFileErrors()
  local spec = lpips.spec("alex")
  lu.assertErrorMsgContains("no weights file '/nonexistent/lpips.safetensors'", lpips.new,
    { net = "alex", weights = "/nonexistent/lpips.safetensors" })
  lu.assertErrorMsgContains("docs/metrics.md", lpips.new, { net = "alex", weights = "/nonexistent/lpips.safetensors" })
  local path = tmpfile()
  -- a missing tensor
  local tensors = {}
  for i = 1, #spec - 1 do tensors[spec[i].name] = cn.zeros(spec[i].shape) end
  cn.save(path, tensors)
  lu.assertErrorMsgContains(string.format("the weights file '%s' has no tensor 'lin4.model.1.weight' (shape [1, 256, 1, 1])",
    path), lpips.new, { net = "alex", weights = path })
  -- a wrong shape
  tensors["lin4.model.1.weight"] = cn.zeros { 1, 255, 1, 1 }
  cn.save(path, tensors)
  lu.assertErrorMsgContains(string.format("the weights file '%s' has tensor 'lin4.model.1.weight' of shape " ..
    "[1, 255, 1, 1], expected [1, 256, 1, 1]", path), lpips.new, { net = "alex", weights = path })
  -- an extra tensor (vgg weights are not alex weights)
  tensors["lin4.model.1.weight"] = cn.zeros { 1, 256, 1, 1 }
  tensors["classifier.1.weight"] = cn.zeros { 2 }
  cn.save(path, tensors)
  lu.assertErrorMsgContains("holds 1 tensor(s) this network does not use (classifier.1.weight)", lpips.new,
    { net = "alex", weights = path })
  -- not a safetensors file
  local f = assert(io.open(path, "wb"))
  f:write("not safetensors")
  f:close()
  lu.assertErrorMsgContains("cannot read the weights file '" .. path .. "'", lpips.new, { net = "alex", weights = path })
  os.remove(path)
end

function TestLpips:testOptionsAndInputs()
  lu.assertErrorMsgContains("lpips.new: unknown option 'nets'", lpips.new, { nets = "alex" })
  lu.assertErrorMsgContains('net must be "alex" or "vgg", got squeeze', lpips.new, { net = "squeeze" })
  local path = lpips_weights("alex")
  local ok, err = pcall(function()
    local model = lpips.new { net = "alex", weights = path }
    lu.assertErrorMsgContains("needs images of at least 31 x 31, got 30 x 30", model.distance, model,
      cn.zeros { 1, 3, 30, 30 }, cn.zeros { 1, 3, 30, 30 })
    lu.assertErrorMsgContains("must have the same shape", model.distance, model, cn.zeros { 1, 3, 32, 32 },
      cn.zeros { 2, 3, 32, 32 })
    lu.assertErrorMsgContains("x must be a tensor [N, 1 or 3, H, W], got [1, 2, 32, 32]", model.distance, model,
      cn.zeros { 1, 2, 32, 32 }, cn.zeros { 1, 2, 32, 32 })
  end)
  os.remove(path)
  if not ok then error(err, 0) end
end

function TestLpips:testAvailable()
  local ok, note, where = lpips.available("/nonexistent/lpips.safetensors")
  lu.assertFalse(ok)
  lu.assertEquals(note, "n/a (no weights: see docs)")
  lu.assertStrContains(where, "/nonexistent/lpips.safetensors")
  local path = tmpfile()
  cn.save(path, { a = cn.zeros { 1 } })
  lu.assertEquals({ lpips.available(path) }, { true, path })
  os.remove(path)
  -- no weights given and no default file: new names where it looked
  if not lpips.available(nil, "vgg") then
    lu.assertErrorMsgContains("lpips.new: no weights (looked for checkpoints/lpips_vgg.safetensors, ", lpips.new,
      { net = "vgg" })
  end
  if not inception.available() then
    lu.assertErrorMsgContains("inception.new: no weights (looked for checkpoints/inception_fid.safetensors, ",
      inception.new, {})
  end
end

TestInception = {}

function TestInception:testMatchesPyTorch()
  local case = CASES.inception_pool3
  local path = tmpfile()
  local tensors = seeded.save(path, inception.spec())
  local ok, err = pcall(function()
    check_weights(inception.spec(), case.weights, tensors, case.name)
    tensors = nil
    local net = inception.new { weights = path }
    local x = fx.tensor(case.inputs[1])
    local f = cn.no_grad(function() return net:features(x) end)
    fx.assert_close(f, case.output, { rtol = 1e-4, atol = 1e-5, label = case.name })

    -- fid with features = "inception": the same features (range "01" as given, "pm1" mapped), and
    -- score over a cache entry of the real images' Inception statistics equals metrics.fid of the features
    local fnet, info = fid.feature_net("mnist", { features = "inception", weights = path })
    lu.assertEquals(info.name, "inception")
    fx.assert_close(fid.features(fnet, x, { range = "01", inception_batch = 1 }), case.output,
      { rtol = 1e-4, atol = 1e-5, label = "fid.features" })
    local real01, fake01 = x, (x * 0.5 + 0.25)
    local freal = fid.features(fnet, real01 * 2 - 1, { inception_batch = 2 })
    fx.assert_close(freal, case.output, { rtol = 1e-4, atol = 1e-5, label = "fid.features pm1" })
    local ffake = fid.features(fnet, fake01, { range = "01" })
    local cache = tmpfile()
    local stats = metrics.FeatureStats():add(freal)
    stats:save(cache, "train")
    local t, meta = cn.load(cache)
    t["train.kid"] = freal
    meta["train.fingerprint"] = info.fingerprint
    cn.save(cache, t, meta)
    local r = fid.score(fake01, "mnist", { features = "inception", weights = path, cache = cache, range = "01",
      kid_subsets = 2 })
    os.remove(cache)
    lu.assertEquals(r.name, "FID (Inception)")
    lu.assertEquals(r.kid_name, "KID (Inception)")
    local want = metrics.fid(stats, metrics.FeatureStats():add(ffake))
    lu.assertAlmostEquals(r.fid, want, 1e-6 * math.abs(want))
    lu.assertTrue(r.fid > 0)
  end)
  os.remove(path)
  if not ok then error(err, 0) end
end

function TestInception:testErrors()
  lu.assertErrorMsgContains("inception.new: unknown option 'weight'", inception.new, { weight = "x" })
  lu.assertErrorMsgContains("no weights file '/nonexistent/inception.safetensors'", inception.new,
    { weights = "/nonexistent/inception.safetensors" })
  local path = tmpfile()
  cn.save(path, { ["Conv2d_1a_3x3.conv.weight"] = cn.zeros { 32, 3, 3, 3 } })
  lu.assertErrorMsgContains(string.format("the weights file '%s' has no tensor 'Conv2d_1a_3x3.bn.weight' (shape [32])",
    path), inception.new, { weights = path })
  cn.save(path, { ["Conv2d_1a_3x3.conv.weight"] = cn.zeros { 32, 3, 5, 5 } })
  lu.assertErrorMsgContains(string.format("the weights file '%s' has tensor 'Conv2d_1a_3x3.conv.weight' of shape " ..
    "[32, 3, 5, 5], expected [32, 3, 3, 3]", path), inception.new, { weights = path })
  os.remove(path)
  local ok, note = inception.available("/nonexistent/inception.safetensors")
  lu.assertFalse(ok)
  lu.assertEquals(note, "n/a (no weights: see docs)")
  -- fid without the weights: a clear error pointing at the docs, never a number
  lu.assertErrorMsgContains("fid: features = 'inception' needs the Inception weights, looked for " ..
    "/nonexistent/inception.safetensors; see docs/metrics.md", fid.score, cn.zeros { 2, 1, 28, 28 }, "mnist",
    { features = "inception", weights = "/nonexistent/inception.safetensors" })
  lu.assertErrorMsgContains("features must be 'classifier' or 'inception', got alex", fid.score,
    cn.zeros { 2, 1, 28, 28 }, "mnist", { features = "alex" })
end
