-- test_metrics.lua — the metrics (engine/metrics*.c, engine/lua/l_metrics.c, lua/cunet/metrics.lua)
-- against tests/fixtures/metrics.lua (tests/tools/fixtures_metrics.py): SSIM, its map and PSNR
-- against scikit-image, MS-SSIM against pytorch-msssim 1.0, FID against pytorch-fid's SciPy sqrtm
-- formula, KID against torchmetrics' definition on the fixture's subsets; then batched against
-- per-image values, feature statistics over uneven batches, the statistics cache file, and errors.
local lu = require "luaunit"
local helpers = require "helpers"
local cn = require "cunet"
local fx = require "fixture_check"
local metrics = require "cunet.metrics"

-- The engine computes in double from the same float32 inputs as the references, so it agrees to
-- ~1e-12; these bounds sit far inside the required ones (1e-4 for SSIM, PSNR and MS-SSIM, 1e-3
-- relative for FID) while still catching an off-by-one window or border.
local SSIM_TOL = 1e-7       -- absolute, SSIM and MS-SSIM values and the SSIM map (map: float32)
local PSNR_RTOL = 1e-9
local FID_RTOL, FID_ATOL = 1e-7, 1e-8
local KID_RTOL, KID_ATOL = 1e-9, 1e-12

local cases = fx.load("metrics")

local function close(got, want, rtol, atol, label)
  if want == math.huge then
    lu.assertEquals(got, math.huge, label)
    return
  end
  local ok = math.abs(got - want) <= atol + rtol * math.abs(want)
  lu.assertTrue(ok, string.format("%s: got %.12g, expected %.12g (rtol %g, atol %g)", label, got, want, rtol, atol))
end

local assert_error = helpers.assert_error

-- The fixture's images, as the reference saw them (8-bit values divided by 255 in float32 when
-- the data range is 1).
local function images(case)
  local a, b = fx.tensor(case.inputs[1]), fx.tensor(case.inputs[2])
  if case.u8 and case.data_range == 1 then a, b = a / 255, b / 255 end
  return a, b
end

-- The fixture generator's integer LCG features (fixtures_metrics.py, lcg_features): v the top 8
-- bits of a 64-bit LCG (Lua integers wrap as the mask does), x_j = (scale v_j + mix v_{j+1} +
-- shift (j mod 3)) / 64, exact in float32.
local function lcg_features(g)
  local state, data, k = g.seed, {}, 0
  for _ = 1, g.n do
    local v = {}
    for j = 1, g.d do
      state = state * 6364136223846793005 + 1442695040888963407
      v[j] = state >> 56
    end
    for j = 1, g.d do
      k = k + 1
      data[k] = (g.scale * v[j] + g.mix * v[j % g.d + 1] + g.shift * ((j - 1) % 3)) / 64
    end
  end
  return cn.tensor(data, {g.n, g.d})
end

-- Statistics of x added in uneven batches (1 row, 7, an empty batch, a third, 300, the rest).
local function stats_in_batches(x)
  local s, n, start = metrics.FeatureStats(), x:shape()[1], 1
  local sizes = {1, 7, 0, math.floor(n / 3), 300}
  for _, size in ipairs(sizes) do
    size = math.min(size, n - start + 1)
    s:add(x:narrow(1, start, size))
    start = start + size
  end
  if start <= n then s:add(x:narrow(1, start, n - start + 1)) end
  lu.assertEquals(s:count(), n)
  return s
end

local function ms_ssim_opts(case)
  return {data_range = case.data_range, weights = case.weights, scales = case.scales}
end

-- ---- fixtures: one test per case -------------------------------------------------------------------

TestMetricsFixtures = {}

for _, case in ipairs(cases) do
  if case.kind == "image" then
    TestMetricsFixtures["test_" .. case.name] = function()
      local a, b = images(case)
      local opts = {data_range = case.data_range}
      local ssim, psnr = metrics.ssim(a, b, opts), metrics.psnr(a, b, opts)
      local n = a:shape()[1]
      lu.assertEquals(ssim:shape(), {n})
      lu.assertEquals(psnr:shape(), {n})
      for i = 1, n do
        -- one image [C, H, W] gives a number in double; the batch the same value in float32
        local s1, p1 = metrics.ssim(a[i], b[i], opts), metrics.psnr(a[i], b[i], opts)
        lu.assertEquals(math.type(s1), "float")
        close(s1, case.ssim[i], 0, SSIM_TOL, case.name .. ": ssim of image " .. i)
        close(p1, case.psnr[i], PSNR_RTOL, 0, case.name .. ": psnr of image " .. i)
        close(ssim[i]:item(), s1, 1e-7, 1e-7, case.name .. ": batched ssim of image " .. i)
        close(psnr[i]:item(), p1, 1e-7, 0, case.name .. ": batched psnr of image " .. i)
      end
      if case.ssim_map then
        local v, map = metrics.ssim(a, b, {data_range = case.data_range, return_map = true})
        fx.assert_close(map, case.ssim_map, {rtol = 0, atol = SSIM_TOL, label = case.name .. ": ssim map"})
        lu.assertEquals(v[1]:item(), ssim[1]:item())
      end
    end
  elseif case.kind == "ms_ssim" then
    TestMetricsFixtures["test_" .. case.name] = function()
      local a, b = images(case)
      local shape = a:shape()
      local used = metrics.ms_ssim_weights(shape[3], shape[4], ms_ssim_opts(case))
      lu.assertEquals(#used, #case.weights_used)
      for l = 1, #used do close(used[l], case.weights_used[l], 1e-15, 0, case.name .. ": weight " .. l) end
      local v = metrics.ms_ssim(a, b, ms_ssim_opts(case))
      for i = 1, shape[1] do
        local one = metrics.ms_ssim(a[i], b[i], ms_ssim_opts(case))
        close(one, case.ms_ssim[i], 0, SSIM_TOL, case.name .. ": ms_ssim of image " .. i)
        close(v[i]:item(), one, 1e-7, 1e-7, case.name .. ": batched ms_ssim of image " .. i)
      end
    end
  elseif case.kind == "fid" then
    TestMetricsFixtures["test_" .. case.name] = function()
      local a, b = lcg_features(case.gen_a), lcg_features(case.gen_b)
      local sa, sb = stats_in_batches(a), stats_in_batches(b)
      close(metrics.fid(sa, sb), case.fid, FID_RTOL, FID_ATOL, case.name .. ": fid of statistics")
      close(metrics.fid(a, b), case.fid, FID_RTOL, FID_ATOL, case.name .. ": fid of tensors")
      if case.mean_a then
        fx.assert_close(sa:mean(), case.mean_a, {rtol = 1e-7, atol = 1e-7, label = case.name .. ": mean"})
        fx.assert_close(sa:cov(), case.cov_a, {rtol = 1e-6, atol = 1e-7, label = case.name .. ": cov"})
      end
    end
  elseif case.kind == "kid" then
    TestMetricsFixtures["test_" .. case.name] = function()
      local a, b = lcg_features(case.gen_a), lcg_features(case.gen_b)
      local sum, values = 0, {}
      for k = 1, #case.values do
        values[k] = metrics.mmd2(a:index_select(1, case.indices_a[k]), b:index_select(1, case.indices_b[k]))
        close(values[k], case.values[k], KID_RTOL, KID_ATOL, case.name .. ": mmd2 of subset " .. k)
        sum = sum + values[k]
      end
      local mean, sq = sum / #values, 0
      for k = 1, #values do sq = sq + (values[k] - mean) ^ 2 end
      close(mean, case.mean, KID_RTOL, KID_ATOL, case.name .. ": kid mean")
      close(math.sqrt(sq / #values), case.std, 1e-7, KID_ATOL, case.name .. ": kid std")
      close(metrics.mmd2(a, b), case.mmd2_all, KID_RTOL, KID_ATOL, case.name .. ": mmd2 of the whole sets")
      if case.mmd2_all_torchmetrics then -- subsets of every row: each is the whole sets' MMD^2
        local n = a:shape()[1]
        local m, std, each = metrics.kid(a, b, {subsets = 3, subset_size = n})
        close(m, case.mmd2_all_torchmetrics, KID_RTOL, KID_ATOL, case.name .. ": kid with subset = set")
        lu.assertTrue(std <= 1e-12 * math.abs(m), "std " .. std) -- round-off of a reordered sum
        lu.assertEquals(#each, 3)
      end
    end
  end
end

-- ---- behaviour --------------------------------------------------------------------------------------

TestMetrics = {}

function TestMetrics:testSingleImageShapes()
  cn.seed(3)
  local a, b = cn.rand{3, 20, 24}, cn.rand{3, 20, 24}
  local v, map = metrics.ssim(a, b, {data_range = 1, return_map = true})
  lu.assertEquals(math.type(v), "float")
  lu.assertEquals(map:shape(), {3, 20, 24})
  local g, gmap = metrics.ssim(a[1], b[1], {data_range = 1, return_map = true}) -- [H, W]
  lu.assertEquals(gmap:shape(), {20, 24})
  close(g, metrics.ssim(a:narrow(1, 1, 1), b:narrow(1, 1, 1), {data_range = 1}), 0, 0, "[H, W] = [1, H, W]")
  lu.assertEquals(math.type(metrics.psnr(a, b, {data_range = 1})), "float")
  lu.assertEquals(metrics.psnr(a, a, {data_range = 1}), math.huge)
  close(metrics.ssim(a, a, {data_range = 1}), 1, 0, 1e-12, "identical")
end

function TestMetrics:testBatchedEqualsPerImage()
  cn.seed(4)
  local a = cn.rand{5, 3, 48, 40}
  local b = (a + cn.randn{5, 3, 48, 40} * 0.1):clamp(0, 1)
  local opts = {data_range = 1}
  local s, p, m = metrics.ssim(a, b, opts), metrics.psnr(a, b, opts), metrics.ms_ssim(a, b, opts)
  for i = 1, 5 do
    close(s[i]:item(), metrics.ssim(a[i], b[i], opts), 1e-7, 0, "ssim " .. i)
    close(p[i]:item(), metrics.psnr(a[i], b[i], opts), 1e-7, 0, "psnr " .. i)
    close(m[i]:item(), metrics.ms_ssim(a[i], b[i], opts), 1e-7, 0, "ms_ssim " .. i)
  end
end

function TestMetrics:testStridedInputsEqualContiguous()
  cn.seed(5)
  local a, b = cn.rand{2, 1, 30, 26}, cn.rand{2, 1, 30, 26}
  local v = a:transpose(3, 4):contiguous():transpose(3, 4) -- the same values, strided
  lu.assertFalse(v:is_contiguous())
  local opts = {data_range = 1}
  for _, f in ipairs{metrics.ssim, metrics.psnr, metrics.ms_ssim} do
    lu.assertEquals(f(v, b, opts):totable(), f(a, b, opts):totable())
  end
  local x = cn.randn{40, 6}
  local xt = x:t():contiguous():t()
  close(metrics.mmd2(xt, x + 0.5), metrics.mmd2(x, x + 0.5), 1e-12, 0, "mmd2 of a view")
end

function TestMetrics:testMsSsimScalesAndWeights()
  local w2 = metrics.ms_ssim_weights(28, 28)
  lu.assertEquals(#w2, 2)
  close(w2[1] + w2[2], 1, 1e-15, 0, "renormalised")
  close(w2[1], 0.0448 / (0.0448 + 0.2856), 1e-15, 0, "first weight")
  local w5 = metrics.ms_ssim_weights(161, 200)
  lu.assertEquals(w5, {0.0448, 0.2856, 0.3001, 0.2363, 0.1333}) -- as pytorch-msssim, not renormalised
  lu.assertEquals(#metrics.ms_ssim_weights(160, 200), 4)
  lu.assertEquals(metrics.ms_ssim_weights(64, 64, {weights = {1, 2}}), {1, 2})
  lu.assertEquals(#metrics.ms_ssim_weights(64, 64, {scales = 1}), 1)
end

function TestMetrics:testFeatureStatsBatchesEqualOnePass()
  cn.seed(6)
  local x = cn.randn{1000, 24} * 3 + 50 -- a mean far from 0
  local one = metrics.FeatureStats():add(x)
  local parts = stats_in_batches(x)
  lu.assertEquals(parts:count(), 1000)
  lu.assertEquals(parts:dim(), 24)
  fx.assert_close(parts:mean(), {shape = {24}, data = one:mean():totable()}, {rtol = 1e-7, atol = 0})
  fx.assert_close(parts:cov(), {shape = {24, 24}, data = one:cov():totable{flat = true}}, {rtol = 1e-6, atol = 1e-7})
  lu.assertTrue(math.abs(metrics.fid(one, parts)) < 1e-9)
  -- merged halves
  local half = metrics.FeatureStats():add(x:narrow(1, 334, 667))
  local merged = metrics.FeatureStats():add(x:narrow(1, 1, 333)):merge(half)
  lu.assertEquals(merged:count(), 1000)
  lu.assertTrue(math.abs(metrics.fid(one, merged)) < 1e-9)
  -- against the definition, from the tensor ops
  local mean = x:mean(1)
  fx.assert_close(one:mean(), {shape = {24}, data = mean:totable()}, {rtol = 1e-6, atol = 0})
  local xc = x - mean
  local cov = xc:t():matmul(xc) / 999
  fx.assert_close(one:cov(), {shape = {24, 24}, data = cov:totable{flat = true}}, {rtol = 1e-4, atol = 1e-4})
end

function TestMetrics:testIdenticalSetsFidNearZero()
  local x = lcg_features{seed = 31, n = 600, d = 64, scale = 1, mix = 2, shift = 1}
  local f = metrics.fid(x, x)
  lu.assertTrue(math.abs(f) < 1e-3, "fid of identical sets: " .. f)
  local s = metrics.FeatureStats():add(x)
  lu.assertTrue(math.abs(metrics.fid(s, s)) < 1e-9)
  -- fewer vectors than dimensions: singular covariances still work
  local few = lcg_features{seed = 32, n = 20, d = 64, scale = 1, mix = 0, shift = 0}
  lu.assertTrue(math.abs(metrics.fid(few, few)) < 1e-6)
  lu.assertTrue(metrics.fid(few, x) > 0)
end

function TestMetrics:testSaveAndLoadStatistics()
  local path = helpers.temp_path()
  local a = metrics.FeatureStats():add(lcg_features{seed = 41, n = 300, d = 16, scale = 1, mix = 2, shift = 0})
  local b = metrics.FeatureStats():add(lcg_features{seed = 42, n = 200, d = 16, scale = 2, mix = 0, shift = 3})
  local none, msg = metrics.FeatureStats.load(path, "a")
  lu.assertNil(none)
  lu.assertStrContains(msg, "No such file")
  lu.assertIs(a:save(path, "a"), a)
  b:save(path, "b")
  local a2, b2 = metrics.FeatureStats.load(path, "a"), metrics.FeatureStats.load(path, "b")
  lu.assertEquals(a2:count(), 300)
  lu.assertEquals(b2:dim(), 16)
  -- hi + lo float32 pairs keep the doubles to ~1e-14: the distance to the original is round-off
  lu.assertTrue(math.abs(metrics.fid(a, a2)) < 1e-9)
  lu.assertTrue(math.abs(metrics.fid(b, b2)) < 1e-9)
  close(metrics.fid(a2, b2), metrics.fid(a, b), 1e-10, 0, "fid after a round trip")
  b:save(path, "a") -- replaces a, keeps b
  close(metrics.fid(metrics.FeatureStats.load(path, "a"), b), 0, 0, 1e-9, "replaced")
  lu.assertEquals(metrics.FeatureStats.load(path, "b"):count(), 200)
  local t, meta = cn.load(path) -- plain safetensors: PyTorch reads it
  lu.assertEquals(t["a.cov"]:shape(), {16, 16})
  lu.assertEquals(meta["b.count"], "200")
  local missing, why = metrics.FeatureStats.load(path, "c")
  lu.assertNil(missing)
  lu.assertStrContains(why, "holds no statistics named 'c'")
  os.remove(path)
end

function TestMetrics:testKidSeededAndDefaults()
  local a = lcg_features{seed = 51, n = 150, d = 32, scale = 1, mix = 1, shift = 0}
  local b = lcg_features{seed = 52, n = 120, d = 32, scale = 1, mix = 2, shift = 0}
  cn.seed(7)
  local m1, s1, v1 = metrics.kid(a, b, {subsets = 6, subset_size = 50})
  cn.seed(7)
  local m2, s2, v2 = metrics.kid(a, b, {subsets = 6, subset_size = 50})
  lu.assertEquals(m1, m2)
  lu.assertEquals(s1, s2)
  lu.assertEquals(v1, v2)
  lu.assertEquals(#v1, 6)
  lu.assertNotEquals(v1[1], v1[2])
  lu.assertTrue(s1 > 0)
  -- default subset_size: min(1000, N_a, N_b) = 120, every subset the whole of b
  local m3 = metrics.kid(a, b, {subsets = 2})
  lu.assertTrue(m3 > 0)
  -- the unbiased estimate for one set against itself is not 0 (k(x, x) counts in the cross term
  -- only), but it is the whole-set MMD^2 and below the distance to the other set
  local same = metrics.kid(a, a, {subsets = 4, subset_size = 150})
  close(same, metrics.mmd2(a, a), 1e-10, 0, "kid(a, a)")
  lu.assertTrue(same < metrics.kid(a, b, {subsets = 4, subset_size = 120}))
end

-- ---- errors ------------------------------------------------------------------------------------------

TestMetricsErrors = {}

-- issue 11: non-positive sizes once returned 0 scales instead of an error
function TestMetricsErrors:testMaxScalesSizes()
  local max_scales = require("cunet.core").metrics.ms_ssim_max_scales
  lu.assertEquals(max_scales(161, 161, 11, 5), 5)
  lu.assertEquals(max_scales(160, 400, 11, 5), 4)
  assert_error(function() return max_scales(-1, -1, 11, 5) end, "image height must be positive")
  assert_error(function() return max_scales(16, 0, 11, 5) end, "image width must be positive")
  assert_error(function() return max_scales(16, 16, 0, 5) end, "window size out of range")
end

function TestMetricsErrors:testImages()
  local a, b = cn.rand{1, 1, 16, 16}, cn.rand{1, 1, 16, 15}
  assert_error(function() metrics.ssim(a, b, {data_range = 1}) end,
    "ssim: images must have the same shape, got [1, 1, 16, 16] and [1, 1, 16, 15]")
  assert_error(function() metrics.psnr(a, a[1], {data_range = 1}) end, "psnr: images must have the same shape")
  assert_error(function() metrics.ssim(cn.rand{2, 1, 1, 16, 16}, cn.rand{2, 1, 1, 16, 16}, {data_range = 1}) end,
    "[N, C, H, W], [C, H, W] or [H, W]")
  assert_error(function() metrics.ssim(a, a) end, "ssim: data_range is required")
  assert_error(function() metrics.psnr(a, a, {data_range = -1}) end, "data_range must be a positive number")
  assert_error(function() metrics.ssim(a, a, {data_range = 1, datarange = 1}) end, "unknown option 'datarange'")
  assert_error(function() metrics.ssim(a, "b", {data_range = 1}) end, "argument #2 must be a tensor")
  assert_error(function() metrics.ssim(cn.rand{1, 1, 8, 30}, cn.rand{1, 1, 8, 30}, {data_range = 1}) end,
    "8x30 are smaller than the 11x11 Gaussian window")
  local m = cn.rand{1, 1, 28, 28}
  assert_error(function() metrics.ms_ssim(m, m, {data_range = 1, scales = 5}) end,
    "28x28 are too small for 5 scales with a 11-tap window (need min(H, W) > 160); at most 2 scales fit")
  assert_error(function() metrics.ms_ssim(m, m, {data_range = 1, scales = 2, weights = {1, 2, 3}}) end,
    "scales = 2 but 3 weights given")
  assert_error(function() metrics.ms_ssim(cn.rand{1, 1, 9, 9}, cn.rand{1, 1, 9, 9}, {data_range = 1}) end,
    "smaller than the 11-tap window")
end

function TestMetricsErrors:testFeatures()
  local s = metrics.FeatureStats():add(cn.randn{10, 4})
  assert_error(function() s:add(cn.randn{10, 5}) end, "features [10, 5] have dimension 5, the statistics 4")
  assert_error(function() s:add(cn.randn{10}) end, "features must be 2-D [N, D], got [10]")
  assert_error(function() s:add({1, 2}) end, "features must be a tensor")
  assert_error(function() metrics.fid(s, cn.randn{10, 5}) end, "fid: feature dimensions differ: 4 and 5")
  assert_error(function() metrics.fid(s, metrics.FeatureStats():add(cn.randn{1, 4})) end, "at least 2")
  assert_error(function() metrics.fid(s, 3) end, "argument #2 must be a FeatureStats or a feature tensor")
  assert_error(function() metrics.FeatureStats():save(os.tmpname(), "x") end, "at least 2")
  assert_error(function() s:save("/tmp/x.safetensors", "") end, "non-empty name")
  assert_error(function() metrics.mmd2(cn.randn{10, 4}, cn.randn{10, 5}) end,
    "mmd2: feature dimensions differ: [10, 4] and [10, 5]")
  assert_error(function() metrics.kid(cn.randn{10, 4}, cn.randn{8, 4}, {subset_size = 9}) end,
    "kid: subset_size must be in 2..min(N) = 8")
  assert_error(function() metrics.kid(cn.randn{10, 4}, cn.randn{8, 4}, {subsets = 0, subset_size = 4}) end,
    "number of subsets")
end
