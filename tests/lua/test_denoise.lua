-- test_denoise.lua — the denoising protocol (lua/cunet/denoise.lua, recipes/denoise.lua) and the
-- baselines' training recipes (recipes/train_dncnn.lua, train_convae.lua): noise levels and their σ,
-- the noisy images, the running best of each metric along a reverse process driven by an oracle, the
-- baselines' loss; the recipe end to end on 5 MNIST digits at two timesteps with the committed U-Net
-- (best PSNR above the noisy input's, the CSV columns, the cumulative seconds), a JPEG folder at a σ
-- level, its option errors; the training recipes' exact resumption.
local lu = require "luaunit"
local cn = require "cunet"
local fx = require "fixture_check"
local denoise = require "cunet.denoise"
local diffusion = require "cunet.diffusion"
local checkpoint = require "cunet.checkpoint"
local fs = require "cunet.fs"

local EXE = os.getenv("CUNET_EXE") or "./cunet"
local ROOT = fx.root()
local assert_error = fx.assert_error

local function run(args)
  local p = io.popen("cd " .. fs.shell_quote(ROOT) .. " && " .. EXE .. " " .. args .. " 2>&1")
  local out = p:read("a")
  local ok, _, code = p:close()
  return ok and 0 or code, out
end

-- A sanitizer build (make test-asan) runs 10x slower: the time bound is the plain build's.
local function sanitized()
  local p = io.popen("ldd " .. fs.shell_quote(EXE) .. " 2>/dev/null")
  local libs = p and p:read("a") or ""
  if p then p:close() end
  return libs:find("libasan", 1, true) ~= nil
end

local function csv(path)
  local rows, header = denoise.read_results(path)
  return header, rows
end

local function tmpdir()
  local d = os.tmpname()
  os.remove(d)
  assert(fs.mkdir_p(d))
  return d
end

TestDenoise = {}

function TestDenoise:testLevelsAndSigma()
  local s = diffusion.schedule("linear")
  -- x_t / sqrt(ab) on [-1, 1] is x0 + sqrt((1 - ab) / ab) eps: half that on [0, 1]
  local ab = s.alpha_bar[150]
  lu.assertAlmostEquals(denoise.equivalent_sigma(s, 150), 0.5 * math.sqrt((1 - ab) / ab), 1e-12)
  for _, t in ipairs{1, 50, 150, 400, 999} do lu.assertEquals(denoise.matched_timestep(s, denoise.equivalent_sigma(s, t)), t) end
  local levels = denoise.levels("t:50,400", "linear")
  lu.assertEquals(#levels, 2)
  lu.assertEquals(levels[2].kind, "t")
  lu.assertEquals(levels[2].value, 400)
  lu.assertAlmostEquals(levels[1].sigma, denoise.equivalent_sigma(s, 50), 1e-12)
  local sig = denoise.levels(" sigma: 0.05,0.2", s)
  lu.assertEquals({sig[1].kind, sig[1].sigma, sig[2].sigma}, {"sigma", 0.05, 0.2})
  lu.assertStrContains(denoise.levels_text(levels), "t=50 (sigma 0.08")
  assert_error(function() denoise.levels("t:0", s) end, "timestep 0 outside 1..1000")
  assert_error(function() denoise.levels("t:2.5", s) end, "timestep 2.5")
  assert_error(function() denoise.levels("sigma:-1", s) end, "sigma must be > 0")
  assert_error(function() denoise.levels("sigma:a", s) end, "comma-separated list of numbers")
  assert_error(function() denoise.levels("snr:3", s) end, "t:T1,T2,... or sigma:S1,S2,...")
end

function TestDenoise:testNoisy()
  local s = diffusion.schedule("linear")
  cn.seed(1)
  local clean = cn.rand{3, 1, 6, 6}
  local state = cn.rng_state()
  local n1 = denoise.noisy(clean, denoise.levels("t:100", s)[1], s, {seed = 4})
  lu.assertEquals(cn.rng_state(), state) -- the global generator untouched
  local n2 = denoise.noisy(clean, denoise.levels("t:100", s)[1], s, {seed = 4})
  lu.assertEquals((n1.x_t - n2.x_t):abs():max():item(), 0)
  lu.assertEquals(n1.t, 100)
  -- the baselines' image is x_t / sqrt(ab) on [0, 1]
  local ab = s.alpha_bar[100]
  lu.assertTrue(((n1.x_t / math.sqrt(ab) + 1) * 0.5 - n1.image):abs():max():item() < 1e-5)
  -- sigma levels: from t = 99 with the noisy image as it is, or from the matched timestep, scaled
  local level = denoise.levels("sigma:0.1", s)[1]
  local a = denoise.noisy(clean, level, s, {seed = 2})
  lu.assertEquals(a.t, 99)
  lu.assertTrue((a.x_t - (a.image * 2 - 1)):abs():max():item() < 1e-6)
  lu.assertAlmostEquals((a.image - clean):pow(2):mean():item(), 0.01, 0.005)
  local m = denoise.noisy(clean, level, s, {seed = 2, sigma_start = "matched"})
  lu.assertEquals(m.t, denoise.matched_timestep(s, 0.1))
  lu.assertTrue((m.x_t - (m.image * 2 - 1) * math.sqrt(s.alpha_bar[m.t])):abs():max():item() < 1e-6)
  assert_error(function() denoise.noisy(clean, level, s, {sigma_start = 0}) end, "sigma_start must be a timestep in 1..1000 or 'matched'")
  assert_error(function() denoise.noisy(clean, level, s, {seeds = 1}) end, "seeds")
end

-- An oracle that knows the clean images (x0 prediction): every x̂0 is exact, and the running
-- sample of the noise-free sampler walks to the clean image, so the best PSNR comes at the last step.
function TestDenoise:testReverseWithOracle()
  local s = diffusion.schedule("linear", {T = 40})
  cn.seed(2)
  local clean = cn.rand{1, 1, 12, 12}:expand{4, 1, 12, 12}:contiguous() -- one image 4 times: any chunk's oracle
  local oracle = function(x) return cn.zeros_like(x) + (clean:narrow(1, 1, x:size(1)) * 2 - 1) end
  local noisy = denoise.noisy(clean, denoise.levels("t:20", s)[1], s, {seed = 0})
  local r = denoise.reverse(oracle, s, noisy, clean, {prediction = "x0", sampler = "ddpm_mean", keep_best_images = true})
  lu.assertEquals(r.steps, 20)
  lu.assertEquals(r.best.psnr.step, 20)
  lu.assertTrue(r.best.psnr.mean > r.noisy.psnr + 10, string.format("%.2f vs noisy %.2f", r.best.psnr.mean, r.noisy.psnr))
  lu.assertAlmostEquals(r.best.psnr.mean, r.final.psnr, 1e-9)
  lu.assertTrue(r.best.ssim.mean > 0.99)
  lu.assertNil(r.best.lpips)
  for i = 2, r.steps do lu.assertTrue(r.step_seconds[i] >= r.step_seconds[i - 1]) end
  lu.assertAlmostEquals(r.best.psnr.seconds, r.step_seconds[20], 1e-6 * r.step_seconds[20]) -- float32 tensors
  lu.assertTrue((r.best_images - clean):abs():max():item() < 0.02)
  -- the same in two chunks: the same bests (the sampler adds no noise)
  local r2 = denoise.reverse(oracle, s, noisy, clean, {prediction = "x0", sampler = "ddpm_mean", batch = 3})
  lu.assertTrue(r2.best.psnr.mean > 60 and r.best.psnr.mean > 60) -- float rounding apart, exact
  lu.assertAlmostEquals(r2.curves.psnr[5], r.curves.psnr[5], 1e-3)
  lu.assertEquals(#r2.curves.ssim, 20)
  -- scoring x̂0: exact from the first step on
  local r3 = denoise.reverse(oracle, s, noisy, clean, {prediction = "x0", sampler = "ddim", use_x0 = true,
    lpips = function(a, b) return (a - b):abs():mean({2, 3, 4}) end})
  lu.assertEquals(r3.best.ssim.step, 1)
  lu.assertTrue(r3.best.lpips.mean < 1e-6) -- a distance: lower is better, tracked as a minimum
  lu.assertTrue(r3.noisy.lpips > 0.01)
  assert_error(function() denoise.reverse(oracle, s, noisy, clean, {sampler = "euler"}) end, "sampler must be ddpm, ddpm_mean or ddim")
  assert_error(function() denoise.reverse(oracle, s, noisy, clean, {use_x_0 = true}) end, "use_x_0")
end

function TestDenoise:testBaselineAndTrainingLoss()
  local s = diffusion.schedule("linear")
  cn.seed(3)
  local clean = cn.rand{3, 1, 12, 12}
  local noisy = denoise.noisy(clean, denoise.levels("sigma:0.2", s)[1], s, {seed = 1})
  local same = denoise.baseline(function(y) return y end, noisy, clean)
  lu.assertAlmostEquals(same.psnr, same.noisy.psnr, 1e-9) -- the identity changes nothing
  local perfect = denoise.baseline(function() return clean end, noisy, clean, {per_image = false})
  lu.assertEquals(perfect.psnr, math.huge)
  local each = denoise.baseline(function(y) lu.assertEquals(y:dim(), 3); return y * 0 + 0.5 end, noisy, clean, {per_image = true})
  lu.assertEquals(each.images:shape(), {3, 1, 12, 12})
  -- the training loss: level per image, then noise, from the global generator
  local levels = denoise.levels("sigma:0.1,0.3", s)
  local loss = denoise.training_loss(levels)
  local x0 = clean * 2 - 1
  local identity = function(y) return y end
  cn.seed(9)
  local value = loss(identity, x0):item()
  cn.seed(9)
  local pick = cn.randint(1, 3, {3})
  local sigma = cn.tensor{0.1, 0.3}:index_select(1, pick):view{3, 1, 1, 1}
  local want = (cn.randn_like(clean) * sigma):pow(2):mean():item()
  lu.assertAlmostEquals(value, want, 1e-7)
  assert_error(function() denoise.training_loss({}) end, "non-empty list of levels")
end

-- The tables of docs/denoising.md from denoise.csv rows (tools/denoise_tables.lua): best values per
-- level and method, n/a metrics said once, steps and seconds for the iterative methods only.
function TestDenoise:testMarkdownTables()
  local dir = tmpdir()
  local path = dir .. "/denoise.csv"
  local na = "n/a (no weights: see docs)"
  local lines = {"level,t_start,sigma,method,images,steps,noisy_psnr,best_psnr,step_psnr,seconds_psnr,final_psnr," ..
    "noisy_ssim,best_ssim,step_ssim,seconds_ssim,final_ssim,noisy_lpips,best_lpips,step_lpips,seconds_lpips,final_lpips"}
  local function row(level, t, sigma, method, steps, psnr, step, ssim)
    lines[#lines + 1] = table.concat({level, t, sigma, method, 300, steps, 20.5, psnr, step, 0.25 * step, psnr - 1,
      0.5, ssim, step, 0.25 * step, ssim - 0.1, na, na, na, na, na}, ",")
  end
  row("t50", 50, 0.066, "U", 50, 30.125, 48, 0.9612)
  row("t50", 50, 0.066, "BM3D", 1, 31.5, 1, 0.99)
  row("t400", 400, 0.5, "U", 400, 15.0, 299.25, 0.5)
  local f = assert(io.open(path, "w"))
  f:write(table.concat(lines, "\n") .. "\n")
  f:close()
  local rows = denoise.read_results(path)
  lu.assertEquals(#rows, 3)
  lu.assertEquals({rows[1].level, rows[1].method, rows[1].best_psnr, rows[1].best_lpips}, {"t50", "U", 30.125, na})
  local md = denoise.markdown(rows)
  lu.assertStrContains(md, "Best LPIPS: n/a for every method (" .. na .. ")")
  lu.assertStrContains(md, "| level | noisy | U | BM3D |")
  lu.assertStrContains(md, "| t50 (σ 0.066) | 0.5000 | 0.9612 | 0.9900 |")
  lu.assertStrContains(md, "| t400 (σ 0.500) | 20.50 | 15.00 | – |")
  lu.assertStrContains(md, "| level | U SSIM | U PSNR |\n")
  lu.assertStrContains(md, "| t50 (σ 0.066) | 48 / 50, 12.00 s | 48 / 50, 12.00 s |")
  lu.assertStrContains(md, "| t400 (σ 0.500) | 299.2 / 400, 74.81 s | 299.2 / 400, 74.81 s |") -- a mean step
  lu.assertNotStrContains(md, "BM3D SSIM")
  assert_error(function() denoise.read_results(dir .. "/none.csv") end, "cannot read")
  f = assert(io.open(dir .. "/other.csv", "w"))
  f:write("steps,fid\n1,2\n")
  f:close()
  assert_error(function() denoise.read_results(dir .. "/other.csv") end, "is not a denoise.csv")
  local code, text = run("tools/denoise_tables.lua " .. fs.shell_quote(path))
  lu.assertEquals(code, 0, text)
  lu.assertEquals(text, md)
  require("helpers").remove_dir(dir)
end

-- ---- the recipe ------------------------------------------------------------------------------------

local MNIST = ROOT .. "/data/mnist-images-idx3-ubyte.gz"

function TestDenoise:testRecipeFiveDigitsTwoTimesteps()
  lu.skipIf(not fs.exists(MNIST), "MNIST not fetched (sh tools/fetch_mnist.sh data)")
  local out = tmpdir()
  local t0 = cn.time()
  local code, text = run(string.format("recipes/denoise.lua --ckpt checkpoints/study/authors_unet_028m_s0.safetensors --n 5 "
    .. "--noise t:50,100 --batch 0 --strips 5 --out %s", fs.shell_quote(out)))
  local seconds = cn.time() - t0
  lu.assertEquals(code, 0, text)
  if not sanitized() then lu.assertTrue(seconds < 60, string.format("took %.1f s", seconds)) end
  lu.assertStrContains(text, "LPIPS n/a (no weights: see docs)")
  local header, rows = csv(out .. "/denoise.csv")
  lu.assertEquals(header, {"level", "t_start", "sigma", "method", "images", "steps", "noisy_psnr", "best_psnr", "step_psnr",
    "seconds_psnr", "final_psnr", "noisy_ssim", "best_ssim", "step_ssim", "seconds_ssim", "final_ssim", "noisy_lpips",
    "best_lpips", "step_lpips", "seconds_lpips", "final_lpips"})
  lu.assertEquals(#rows, 4) -- 2 levels x (the U-Net, BM3D)
  local unet50, bm3d50 = rows[1], rows[2]
  lu.assertEquals({unet50.level, unet50.method, unet50.t_start, unet50.steps, unet50.images}, {"t50", "authors_unet_028m_s0", 50, 50, 5})
  lu.assertEquals({bm3d50.method, bm3d50.steps, bm3d50.step_psnr}, {"BM3D", 1, 1})
  lu.assertTrue(unet50.best_psnr > unet50.noisy_psnr + 2, string.format("best %.2f, noisy %.2f", unet50.best_psnr, unet50.noisy_psnr))
  lu.assertTrue(unet50.best_ssim > unet50.noisy_ssim)
  lu.assertTrue(unet50.best_psnr >= unet50.final_psnr)
  lu.assertTrue(unet50.step_psnr >= 1 and unet50.step_psnr <= 50)
  lu.assertTrue(rows[3].noisy_psnr < unet50.noisy_psnr) -- t = 100 is noisier
  local sched = checkpoint.schedule(checkpoint.load(ROOT .. "/checkpoints/study/authors_unet_028m_s0.safetensors"))
  lu.assertAlmostEquals(unet50.sigma, denoise.equivalent_sigma(sched, 50), 1e-5)
  lu.assertEquals(unet50.best_lpips, "n/a (no weights: see docs)")
  local steps_header, steps = csv(out .. "/denoise_steps.csv")
  lu.assertEquals(steps_header, {"level", "method", "step", "t", "seconds", "psnr", "ssim", "lpips"})
  lu.assertEquals(#steps, 150)
  for i = 2, 50 do
    lu.assertEquals(steps[i].step, i)
    lu.assertEquals(steps[i].t, 50 - i)
    lu.assertTrue(steps[i].seconds >= steps[i - 1].seconds, "seconds not cumulative at step " .. i)
  end
  lu.assertAlmostEquals(steps[50].psnr, unet50.final_psnr, 1e-3)
  for _, f in ipairs{"denoise_psnr.png", "denoise_ssim.png", "strips_t50.png", "strips_t100.png"} do
    lu.assertTrue(fs.exists(out .. "/" .. f), f)
  end
  lu.assertFalse(fs.exists(out .. "/denoise_lpips.png"))
  -- strips: 5 rows of noisy | U-Net | BM3D | clean, 28 x 28 tiles with 2-pixel padding
  lu.assertEquals(cn.load_png(out .. "/strips_t50.png"):shape(), {1, 5 * 30 + 2, 4 * 30 + 2})
  os.execute("rm -rf " .. fs.shell_quote(out))
end

-- The LPIPS columns with a stand-in for cunet.models.lpips (the recipe run in this process with the
-- module replaced): a distance of its own, called on images upsampled to --lpips-size.
function TestDenoise:testRecipeLpipsColumns()
  lu.skipIf(not fs.exists(MNIST), "MNIST not fetched (sh tools/fetch_mnist.sh data)")
  local out = tmpdir()
  local seen = {}
  local saved = package.loaded["cunet.models.lpips"]
  package.loaded["cunet.models.lpips"] = {new = function(o)
    seen.net, seen.weights = o.net, o.weights
    return {distance = function(_, a, b)
      seen.size = a:size(3)
      lu.assertTrue(a:min():item() >= -1 and a:max():item() <= 1) -- LPIPS takes [-1, 1]
      return (a - b):abs():mean({2, 3, 4})
    end}
  end}
  local saved_arg, cli = _G.arg, require "cunet.cli"
  local saved_short = cli.short_errors -- cli.parse sets it for the executable
  _G.arg = {"--ckpt", ROOT .. "/checkpoints/study/authors_unet_028m_s0.safetensors", "--n", "3", "--noise", "t:20", "--strips", "0",
    "--lpips-weights", "/some/lpips_vgg.safetensors", "--lpips-net", "vgg", "--lpips-size", "32", "--out", out}
  local ok, err = pcall(dofile, ROOT .. "/recipes/denoise.lua")
  _G.arg, cli.short_errors = saved_arg, saved_short
  package.loaded["cunet.models.lpips"] = saved
  lu.assertTrue(ok, tostring(err))
  lu.assertEquals({seen.net, seen.weights, seen.size}, {"vgg", "/some/lpips_vgg.safetensors", 32})
  local _, rows = csv(out .. "/denoise.csv")
  for _, row in ipairs(rows) do
    lu.assertEquals(type(row.best_lpips), "number", row.method)
    lu.assertTrue(row.best_lpips < row.noisy_lpips, row.method)
  end
  lu.assertTrue(rows[1].step_lpips >= 1 and rows[1].step_lpips <= 20)
  lu.assertTrue(fs.exists(out .. "/denoise_lpips.png"))
  local _, steps = csv(out .. "/denoise_steps.csv")
  lu.assertEquals(type(steps[1].lpips), "number")
  os.execute("rm -rf " .. fs.shell_quote(out))
end

function TestDenoise:testRecipeJpegFolderAtSigma()
  local out, folder = tmpdir(), tmpdir()
  local jpeg = ROOT .. "/tests/fixtures/jpeg/"
  assert(os.execute(string.format("cp %s %s %s", fs.shell_quote(jpeg .. "grey_16x12.jpg"), fs.shell_quote(jpeg .. "rgb420_20x14.jpg"),
    fs.shell_quote(folder))))
  local code, text = run(string.format("recipes/denoise.lua --ckpt checkpoints/study/authors_unet_028m_s0.safetensors --data folder:%s "
    .. "--noise sigma:0.1 --sigma-start matched --sampler ddim --x0 --strips 0 --out %s", fs.shell_quote(folder), fs.shell_quote(out)))
  lu.assertEquals(code, 0, text)
  lu.assertStrContains(text, "2 images of folder:")
  local _, rows = csv(out .. "/denoise.csv")
  lu.assertEquals(#rows, 2)
  lu.assertEquals(rows[1].level, "sigma0.1")
  lu.assertAlmostEquals(rows[1].sigma, 0.1, 1e-9)
  local s = checkpoint.schedule(checkpoint.load(ROOT .. "/checkpoints/study/authors_unet_028m_s0.safetensors"))
  lu.assertEquals(rows[1].t_start, denoise.matched_timestep(s, 0.1))
  lu.assertEquals(rows[1].steps, rows[1].t_start)
  lu.assertFalse(fs.exists(out .. "/strips_sigma0.1.png"))
  os.execute("rm -rf " .. fs.shell_quote(out) .. " " .. fs.shell_quote(folder))
end

function TestDenoise:testRecipeOptions()
  local code, text = run("recipes/denoise.lua --help")
  lu.assertEquals(code, 0)
  lu.assertStrContains(text, "--lpips-weights")
  lu.assertStrContains(text, "--dncnn")
  code, text = run("recipes/denoise.lua --nosie t:50")
  lu.assertEquals(code, 2)
  lu.assertStrContains(text, "nosie")
  code, text = run("recipes/denoise.lua --sampler euler")
  lu.assertEquals(code, 2)
  lu.assertStrContains(text, "--sampler must be one of ddpm, ddpm_mean, ddim")
  code, text = run("recipes/denoise.lua --sigma-start soon --ckpt /nonexistent")
  lu.assertEquals(code, 2)
  lu.assertStrContains(text, "--sigma-start must be a timestep or 'matched', got 'soon'")
  -- LPIPS weights: without the module a clear error; with it, a missing weights file is named
  code, text = run("recipes/denoise.lua --lpips-weights /nonexistent/lpips.safetensors --ckpt checkpoints/study/authors_unet_028m_s0.safetensors")
  lu.assertNotEquals(code, 0)
  if pcall(require, "cunet.models.lpips") then
    lu.assertStrContains(text, "/nonexistent/lpips.safetensors")
  else
    lu.assertStrContains(text, "--lpips-weights needs the LPIPS module cunet.models.lpips")
  end
  code, text = run("recipes/denoise.lua --ckpt checkpoints/study/authors_unet_028m_s0.safetensors --dncnn checkpoints/study/authors_cunet_028m_s0.safetensors")
  lu.assertNotEquals(code, 0)
  lu.assertStrContains(text, "holds a cunet.models.continuous_unet model, not cunet.models.dncnn")
end

-- ---- the baselines' training recipes ---------------------------------------------------------------

-- 4 steps at once, or 2 then resumed to 4: the same losses and weights (running statistics too).
function TestDenoise:testTrainingRecipesResumeExactly()
  for _, recipe in ipairs{"train_dncnn", "train_convae"} do
    local a, b = tmpdir(), tmpdir()
    local common = "--preset tiny --data fashion-mnist --limit 32 --batch 8 --noise sigma:0.1,0.3 --log-every 0"
    local code, text = run(string.format("recipes/%s.lua %s --steps 4 --out %s", recipe, common, fs.shell_quote(a)))
    lu.assertEquals(code, 0, text)
    code, text = run(string.format("recipes/%s.lua %s --steps 2 --out %s", recipe, common, fs.shell_quote(b)))
    lu.assertEquals(code, 0, text)
    code, text = run(string.format("recipes/%s.lua --steps 4 --out %s --resume %s", recipe, fs.shell_quote(b),
      fs.shell_quote(b .. "/checkpoint.safetensors")))
    lu.assertEquals(code, 0, text)
    local ca, cb = checkpoint.load(a .. "/checkpoint.safetensors"), checkpoint.load(b .. "/checkpoint.safetensors")
    lu.assertEquals(cb.step, 4)
    lu.assertEquals(ca.model_module, "cunet.models." .. recipe:match("train_(.*)"))
    for k, v in pairs(ca.model) do lu.assertEquals((v - cb.model[k]):abs():max():item(), 0, recipe .. " " .. k) end
    lu.assertEquals(ca.losses, cb.losses)
    lu.assertEquals(ca.run.recipe.noise, "sigma:0.1,0.3")
    local model = checkpoint.build_model(ca)
    lu.assertEquals(model(cn.rand{1, 1, 28, 28}):shape(), {1, 1, 28, 28})
    -- the noise levels cannot change on resume
    code, text = run(string.format("recipes/%s.lua --steps 5 --out %s --resume %s --noise sigma:0.2", recipe, fs.shell_quote(b),
      fs.shell_quote(b .. "/checkpoint.safetensors")))
    lu.assertNotEquals(code, 0)
    lu.assertStrContains(text, "--noise sigma:0.2 differs from its sigma:0.1,0.3")
    os.execute("rm -rf " .. fs.shell_quote(a) .. " " .. fs.shell_quote(b))
  end
  -- the denoisers' command lines have no diffusion options
  local code, text = run("recipes/train_dncnn.lua --schedule linear")
  lu.assertEquals(code, 2)
  lu.assertStrContains(text, "schedule")
end
