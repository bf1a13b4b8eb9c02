-- test_fid.lua — lua/cunet/fid.lua, "FID (classifier features)": two halves of the real data are close,
-- real data and noise are far apart; the statistics cache (hit, and a stale entry recomputed); the
-- [-1, 1] and [0, 1] ranges agree; clear errors. And recipes/fid_vs_steps.lua end to end on a
-- checkpoint trained here for a few steps by recipes/train_unet.lua. Uses MNIST when its digits and
-- classifier are there, else Fashion-MNIST; skips (saying why) when neither is.
local lu = require "luaunit"
local helpers = require "helpers"
local read = helpers.read_file
local cn = require "cunet"
local data = require "cunet.data"
local metrics = require "cunet.metrics"
local fid = require "cunet.fid"

local EXE = os.getenv("CUNET_EXE") or "./cunet"

-- the data set to test with, its real split and a temporary cache; or nil and why not
local function setup()
  local why = {}
  for _, e in ipairs { { "mnist", "train" }, { "fashion-mnist", "test" } } do
    local name, split = e[1], e[2]
    local ok, ds = pcall(data.load, name, { split = split })
    local ckpt, msg = fid.checkpoint_path(name)
    if ok and ckpt then return { name = name, split = split, ds = ds } end
    why[#why + 1] = ok and msg or (name .. ": " .. tostring(ds))
  end
  return nil, table.concat(why, "; ")
end

TestFid = {}

function TestFid:setUp()
  local env, why = setup()
  if not env then lu.skip("no data set with a classifier checkpoint: " .. why) end
  self.env = env
  self.cache = os.tmpname() .. ".safetensors"
end

function TestFid:tearDown()
  if self.cache then os.remove(self.cache) end
end

function TestFid:testHalvesCloseNoiseFar()
  local env = self.env
  local net = fid.feature_net(env.name)
  local images = env.ds.images
  local half = images:size(1) // 2
  local a = fid.features(net, images:narrow(1, 1, half), { range = "01" })
  local b = fid.features(net, images:narrow(1, half + 1, half), { range = "01" })
  lu.assertEquals(a:shape(), { half, 128 })
  local halves = metrics.fid(a, b)
  cn.seed(5)
  local noise = fid.features(net, cn.rand { half, 1, 28, 28 }, { range = "01" })
  local far = metrics.fid(a, noise)
  local msg = string.format("%s %s split, %d vs %d images: FID (classifier features) halves %.3f, real vs noise %.3f",
    env.name, env.split, half, half, halves, far)
  print("\n  " .. msg)
  lu.assertTrue(halves < 10, msg)
  lu.assertTrue(far > 100, msg)
  lu.assertTrue(far > 20 * halves, msg)
end

function TestFid:testScoreAndCache()
  local env = self.env
  local opts = { split = env.split, cache = self.cache }
  local stats, kid_feats, info = fid.real_stats(env.name, opts)
  lu.assertFalse(info.cached)
  lu.assertEquals(info.count, env.ds.images:size(1))
  lu.assertEquals(kid_feats:size(2), 128)
  local again, _, info2 = fid.real_stats(env.name, opts)
  lu.assertTrue(info2.cached)
  lu.assertEquals(again:mean():totable(), stats:mean():totable())
  -- a retrained classifier (here: a forged fingerprint) makes the entry stale
  local tensors, meta = cn.load(self.cache)
  meta[env.split .. ".fingerprint"] = "00000000"
  cn.save(self.cache, tensors, meta)
  local _, _, info3 = fid.real_stats(env.name, opts)
  lu.assertFalse(info3.cached)

  -- real images scored against their own split: FID 0 up to the covariance's rounding; [-1, 1] = [0, 1]
  local n = math.min(1000, env.ds.images:size(1))
  local real01 = env.ds.images:narrow(1, 1, n)
  local rng = cn.rng_state()
  local r01 = fid.score(real01, env.name, { range = "01", split = env.split, cache = self.cache })
  lu.assertEquals(cn.rng_state(), rng) -- KID's draws leave the engine RNG alone
  local rpm = fid.score(real01 * 2 - 1, env.name, { split = env.split, cache = self.cache })
  lu.assertAlmostEquals(rpm.fid, r01.fid, 1e-4 * (1 + r01.fid))
  lu.assertEquals(r01.name, "FID (classifier features)")
  lu.assertEquals(r01.n, n)
  cn.seed(6)
  local noise = fid.score(cn.rand { n, 1, 28, 28 } * 2 - 1, env.name, { split = env.split, cache = self.cache })
  local msg = string.format("%s: FID (classifier features) of %d real images %.3f (KID %.4f), of noise %.3f (KID %.4f)",
    env.name, n, r01.fid, r01.kid, noise.fid, noise.kid)
  print("\n  " .. msg)
  lu.assertTrue(r01.fid < 10, msg)
  lu.assertTrue(noise.fid > 100, msg)
  lu.assertTrue(noise.kid > r01.kid, msg)
end

function TestFid:testErrors()
  local ok, msg = fid.checkpoint_path("no-such-data")
  lu.assertNil(ok)
  lu.assertStrContains(msg, "train_classifier.lua --data no-such-data")
  lu.assertErrorMsgContains("no classifier checkpoint", fid.feature_net, "no-such-data")
  local net = fid.feature_net(self.env.name)
  lu.assertErrorMsgContains("takes [N, 1, 28, 28] images, got [2, 3, 32, 32]", fid.features, net, cn.zeros { 2, 3, 32, 32 })
  lu.assertErrorMsgContains("range must be", fid.features, net, cn.zeros { 2, 1, 28, 28 }, { range = "0-255" })
  lu.assertErrorMsgContains("unknown option 'splits'", fid.score, cn.zeros { 2, 1, 28, 28 }, self.env.name, { splits = 1 })
end

TestFidVsSteps = {}

function TestFidVsSteps:testTinyCheckpoint()
  local env, why = setup()
  if not env then lu.skip("no data set with a classifier checkpoint: " .. why) end
  local dir = helpers.temp_path()
  local function run(cmd)
    local p = io.popen(cmd .. " 2>&1")
    local text = p:read("a")
    local ok = p:close()
    lu.assertTrue(ok, cmd .. "\n" .. text)
    return text
  end
  run(string.format("%s recipes/train_unet.lua --data %s --preset mnist_small --steps 2 --batch 8 --limit 32 --warmup 0 " ..
    "--sample-every 0 --out %s/run", EXE, env.name, dir))
  -- the real statistics of the small split, cached in a temporary directory
  local text = run(string.format("CUNET_CACHE=%s/cache %s recipes/fid_vs_steps.lua --ckpt %s/run/checkpoint.safetensors " ..
    "--sampler ddpm --steps 1,3 --n 12 --batch 8 --dataset %s --split test --out %s/out", dir, EXE, dir, env.name, dir))
  lu.assertStrContains(text, "FID (classifier features)")
  lu.assertStrContains(text, "<- best")
  lu.assertStrContains(text, "not comparable with Inception-FID")
  local csv = read(dir .. "/out/fid_vs_steps_ddpm.csv")
  local lines = {}
  for line in csv:gmatch("[^\n]+") do lines[#lines + 1] = line end
  lu.assertEquals(#lines, 3)
  lu.assertStrContains(lines[1], "steps,fid_classifier,kid_classifier")
  local best_steps = tonumber(text:match("best: (%d+) steps"))
  local fids = {}
  for i = 2, 3 do
    local steps, value, _, _, seconds, n = lines[i]:match("^(%d+),([^,]+),([^,]+),([^,]+),([^,]+),(%d+),")
    lu.assertEquals(tonumber(n), 12)
    lu.assertTrue(tonumber(value) > 0 and tonumber(seconds) > 0, lines[i])
    fids[tonumber(steps)] = tonumber(value)
  end
  lu.assertNotNil(fids[1])
  lu.assertNotNil(fids[3])
  lu.assertEquals(fids[best_steps], math.min(fids[1], fids[3]))
  local plot = require "cunet.plot"
  if plot.gnuplot() then
    lu.assertEquals(read(dir .. "/out/fid_vs_steps_ddpm.png"):sub(1, 4), "\137PNG")
  end
  -- --append extends the scan: the earlier rows stay, the new step count joins them in order
  local scan = string.format("CUNET_CACHE=%s/cache %s recipes/fid_vs_steps.lua --ckpt %s/run/checkpoint.safetensors " ..
    "--sampler ddpm --batch 8 --dataset %s --split test --out %s/out --append", dir, EXE, dir, env.name, dir)
  run(scan .. " --steps 2 --n 12")
  local merged = {}
  for line in read(dir .. "/out/fid_vs_steps_ddpm.csv"):gmatch("[^\n]+") do merged[#merged + 1] = line end
  lu.assertEquals(#merged, 4)
  lu.assertEquals({ merged[2]:match("^%d+"), merged[3]:match("^%d+"), merged[4]:match("^%d+") }, { "1", "2", "3" })
  lu.assertEquals(merged[2], lines[2])
  lu.assertEquals(merged[4], lines[3])
  -- another n is another scan: refused, and the CSV is left as it was
  local p = io.popen(scan .. " --steps 4 --n 10 2>&1")
  local refused = p:read("a")
  lu.assertNil((p:close()))
  lu.assertStrContains(refused, "another scan")
  local _, newlines = read(dir .. "/out/fid_vs_steps_ddpm.csv"):gsub("\n", "")
  lu.assertEquals(newlines, 4)
  helpers.remove_dir(dir)
end
