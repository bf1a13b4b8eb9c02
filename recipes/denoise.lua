-- recipes/denoise.lua — the denoising protocol of the diffusion paper (Tables 2–4) for U-Net and
-- cU-Net checkpoints, with the baselines (BM3D always; DnCNN and the conv autoencoder when their
-- checkpoints are given) on the same noisy images: one command per table. lua/cunet/denoise.lua does
-- the work; docs/denoising.md describes the protocol and the outputs.
--
--   ./cunet recipes/denoise.lua --ckpt runs/unet/checkpoint.safetensors,runs/cunet/checkpoint.safetensors
--   ./cunet recipes/denoise.lua --ckpt C --noise t:50,150,400 --dncnn runs/dncnn/checkpoint.safetensors \
--     --convae runs/convae/checkpoint.safetensors                       -- Table 4
--   ./cunet recipes/denoise.lua --ckpt C --noise sigma:0.05,0.1,0.15,0.2 --sampler ddpm_mean   -- the authors' code
--
-- Writes to --out: denoise.csv (one row per level and method: the noisy input's scores, the best
-- value of each metric over the reverse steps, the mean step reaching it and the seconds per image to
-- reach it; a baseline's one output counts as step 1), denoise_steps.csv (the mean scores and the
-- cumulative seconds per image after every reverse step), denoise_<metric>.png (the curves) and
-- strips_<level>.png (rows of noisy | each model's best-SSIM prediction | baselines | clean).

local cn = require "cunet"
local cli = require "cunet.cli"
local checkpoint = require "cunet.checkpoint"
local data = require "cunet.data"
local denoise = require "cunet.denoise"
local image = require "cunet.image"
local plot = require "cunet.plot"
local fs = require "cunet.fs"
local train = require "cunet.train"

local NO_LPIPS = "n/a (no weights: see docs)"

local spec = {
  name = "denoise",
  usage = "cunet recipes/denoise.lua --ckpt PATH[,PATH] [options]",
  description = "Denoising by the reverse process of diffusion checkpoints (SSIM, PSNR, LPIPS at every step; the best\n"
    .. "value, the step and the seconds to reach it), with BM3D, DnCNN and Conv AE on the same noisy images.",
  options = {
    {"ckpt", "runs/unet/checkpoint.safetensors", "diffusion checkpoints, comma-separated (U-Net, cU-Net: the same schedule)"},
    {"noise", "t:50,100,150,200,250,400,600,800", "noise levels: t:T1,T2,... (forward-process timesteps, the paper's "
      .. "Tables 2-4) or sigma:S1,S2,... (Gaussian sigma on [0, 1] images, the authors' code: sigma:0.05,0.1,0.15,0.2)"},
    {"sigma-start", "99", "sigma levels: the timestep the reverse process starts from (99, the authors' code: the noisy "
      .. "image itself is x_t) or 'matched' (the timestep of equal noise, x_t scaled by sqrt(alpha_bar))"},
    {"sampler", "ddpm", "ddpm (ancestral, the paper's Eq. 2) | ddpm_mean (no noise added, the authors' code) | ddim (eta 0)",
      choices = {"ddpm", "ddpm_mean", "ddim"}},
    {"x0", false, "score the x0 predicted at each step instead of the running sample"},
    {"data", "mnist", "clean images: mnist | fashion-mnist | folder:PATH (PNG/JPEG, resized and centre-cropped to the checkpoint's size)"},
    {"split", "test", "split of mnist / fashion-mnist", choices = {"train", "test"}},
    {"n", 300, "clean images (the first N of the split or folder; the paper: 300)", integer = true, min = 1},
    {"batch", 100, "images per reverse-process run (0: all at once)", integer = true, min = 0},
    {"dncnn", nil, "DnCNN checkpoint (recipes/train_dncnn.lua)", type = "string"},
    {"convae", nil, "conv autoencoder checkpoint (recipes/train_convae.lua)", type = "string"},
    {"lpips-weights", nil, "LPIPS weights (safetensors converted by tools/convert_weights.py: docs/metrics.md); without them the LPIPS columns read '"
      .. NO_LPIPS .. "'", type = "string"},
    {"lpips-net", "alex", "LPIPS trunk of those weights", choices = {"alex", "vgg"}},
    {"lpips-size", 0, "upsample both images (bilinear) to this size before LPIPS (0: as they are; 28x28 MNIST is below "
      .. "AlexNet's smallest input, 31: give 64)", integer = true, min = 0},
    {"ema", true, "the diffusion checkpoints' EMA weights (--no-ema: the trained ones)"},
    {"strips", 8, "images per strip PNG (0: none)", integer = true, min = 0},
    {"seed", 0, "noise seed (level k uses seed + k - 1; the sampler's noise too)", integer = true, min = 0},
    {"out", "runs/denoise", "output directory"},
    {"threads", 0, "threads (0: all cores)", integer = true, min = 0},
  },
}
local args = cli.parse(arg, spec)
local function fail(msg) cli.fail(spec, msg) end
if args.threads > 0 then cn.set_num_threads(args.threads) end
local sigma_start = args.sigma_start == "matched" and "matched" or math.tointeger(tonumber(args.sigma_start))
if not sigma_start then fail("--sigma-start must be a timestep or 'matched', got '" .. args.sigma_start .. "'") end

-- LPIPS through the perceptual-features module, when weights are given.
local lpips_fn
if args.lpips_weights then
  local lpips = require "cunet.models.lpips"
  local net = lpips.new{net = args.lpips_net, weights = args.lpips_weights}
  local size = args.lpips_size
  lpips_fn = function(a, b) -- [0, 1] images; LPIPS takes [-1, 1]
    return cn.no_grad(function()
      if size > 0 then
        a = cn.upsample(a, {size = {size, size}, mode = "bilinear"})
        b = cn.upsample(b, {size = {size, size}, mode = "bilinear"})
      end
      return net:distance(a * 2 - 1, b * 2 - 1)
    end)
  end
end

-- The diffusion models, which must share one schedule (the noisy images are the same for all).
local models, sched = {}, nil
for path in args.ckpt:gmatch("[^,]+") do
  local ck = checkpoint.load(path)
  if not ck.image_shape then fail(path .. " does not record the image shape (image_shape): not a training checkpoint?") end
  local model = checkpoint.build_model(ck, {ema = args.ema})
  model:eval()
  local s = checkpoint.schedule(ck)
  if sched and not train.same(s.beta, sched.beta) then
    fail(string.format("%s was trained with another schedule (%s) than %s (%s): the noisy images would differ", path,
      tostring(ck.schedule), models[1].path, tostring(models[1].ck.schedule)))
  end
  sched = sched or s
  if models[1] and not train.same(ck.image_shape, models[1].ck.image_shape) then
    fail(string.format("%s works on images %s, %s on %s", path, table.concat(ck.image_shape, "x"), models[1].path,
      table.concat(models[1].ck.image_shape, "x")))
  end
  local label = path:match("([^/]+)%.safetensors$") or path
  if label == "checkpoint" then label = path:match("([^/]+)/[^/]+$") or label end
  models[#models + 1] = {path = path, ck = ck, model = model, label = label}
end
if #models == 0 then fail("--ckpt names no checkpoint") end
local shape = models[1].ck.image_shape

local function baseline_model(path, module)
  local ck = checkpoint.load(path)
  if ck.model_module ~= module then fail(string.format("%s holds a %s model, not %s", path, tostring(ck.model_module), module)) end
  local model = checkpoint.build_model(ck, {ema = false})
  model:eval()
  return model
end
local baselines = {{name = "BM3D", per_image = true}}
if args.dncnn then baselines[#baselines + 1] = {name = "DnCNN", model = baseline_model(args.dncnn, "cunet.models.dncnn")} end
if args.convae then baselines[#baselines + 1] = {name = "ConvAE", model = baseline_model(args.convae, "cunet.models.convae")} end

-- The clean images, on the checkpoints' size and channels.
local ds
if args.data:match("^folder:") then
  ds = data.image_folder(args.data:sub(8), {size = {shape[2], shape[3]}, channels = shape[1], limit = args.n})
else
  ds = data.load(args.data, {split = args.split})
end
local clean = ds.images:narrow(1, 1, math.min(args.n, ds.images:size(1))):contiguous()
if clean:size(2) ~= shape[1] or clean:size(3) ~= shape[2] or clean:size(4) ~= shape[3] then
  fail(string.format("%s gives images %s, the checkpoints take %s", args.data, table.concat(clean:shape(), "x", 2),
    table.concat(shape, "x")))
end
local n = clean:size(1)
local levels = denoise.levels(args.noise, sched)
print(string.format("denoise: %d images of %s, levels %s, sampler %s (%s), %s", n, args.data, denoise.levels_text(levels),
  args.sampler, args.x0 and "x0 predictions" or "running sample", lpips_fn and "LPIPS " .. args.lpips_net or "no LPIPS weights"))

assert(fs.mkdir_p(args.out))
local METRICS = {"psnr", "ssim", "lpips"}
local rows, step_rows, curves = {}, {}, {psnr = {}, ssim = {}, lpips = {}}
local function level_name(level) return level.kind == "t" and ("t" .. level.value) or string.format("sigma%g", level.value) end
local function fmt(v, f) return v == nil and NO_LPIPS or string.format(f, v) end

for k, level in ipairs(levels) do
  local noisy = denoise.noisy(clean, level, sched, {seed = args.seed + k - 1, sigma_start = sigma_start})
  local strip = {noisy.image}
  local function add_row(method, r, steps)
    local row = {level = level_name(level), t_start = noisy.t, sigma = noisy.sigma, method = method, images = n, steps = steps}
    for _, m in ipairs(METRICS) do
      row["noisy_" .. m] = r.noisy[m]
      row["best_" .. m], row["step_" .. m], row["seconds_" .. m] = r.best[m] and r.best[m].mean, r.best[m] and r.best[m].step,
        r.best[m] and r.best[m].seconds
      row["final_" .. m] = r.final[m]
    end
    rows[#rows + 1] = row
    print(string.format("%-10s %-22s PSNR %6.2f (noisy %6.2f) step %7.2f %8.3f s | SSIM %.4f (noisy %.4f) step %7.2f %8.3f s | LPIPS %s",
      row.level, method, row.best_psnr, row.noisy_psnr, row.step_psnr, row.seconds_psnr, row.best_ssim, row.noisy_ssim,
      row.step_ssim, row.seconds_ssim, row.best_lpips and string.format("%.4f step %.2f %.3f s", row.best_lpips,
      row.step_lpips, row.seconds_lpips) or NO_LPIPS))
  end
  for _, m in ipairs(models) do
    local r = denoise.reverse(m.model, sched, noisy, clean, {prediction = m.ck.prediction or "eps", sampler = args.sampler,
      use_x0 = args.x0, seed = args.seed + k - 1, lpips = lpips_fn or false, keep_best_images = args.strips > 0,
      batch = args.batch})
    add_row(m.label, r, r.steps)
    strip[#strip + 1] = r.best_images
    for i = 1, r.steps do
      step_rows[#step_rows + 1] = {level_name(level), m.label, i, noisy.t - i, r.step_seconds[i], r.curves.psnr[i],
        r.curves.ssim[i], r.curves.lpips and r.curves.lpips[i]}
    end
    for _, metric in ipairs(METRICS) do
      if r.curves[metric] then
        local x = {}
        for i = 1, r.steps do x[i] = i end
        curves[metric][#curves[metric] + 1] = {name = level_name(level) .. " " .. m.label, x = x, y = r.curves[metric]}
      end
    end
  end
  for _, b in ipairs(baselines) do
    local fn = b.model and function(y) return b.model(y) end or function(y) return cn.bm3d(y, noisy.sigma) end
    local r = denoise.baseline(fn, noisy, clean, {per_image = b.per_image, lpips = lpips_fn or false})
    local as_reverse = {noisy = r.noisy, best = {}, final = {}}
    for _, metric in ipairs(METRICS) do
      if r[metric] then as_reverse.best[metric] = {mean = r[metric], step = 1, seconds = r.seconds} end
      as_reverse.final[metric] = r[metric]
    end
    add_row(b.name, as_reverse, 1)
    strip[#strip + 1] = r.images
  end
  if args.strips > 0 then
    local count = math.min(args.strips, n)
    local columns = {}
    for i, batch in ipairs(strip) do columns[i] = batch:narrow(1, 1, count) end
    columns[#columns + 1] = clean:narrow(1, 1, count)
    image.save_strips(columns, string.format("%s/strips_%s.png", args.out, level_name(level)))
  end
end

-- denoise.csv and denoise_steps.csv
local header = {"level", "t_start", "sigma", "method", "images", "steps"}
for _, m in ipairs(METRICS) do
  for _, what in ipairs{"noisy", "best", "step", "seconds", "final"} do header[#header + 1] = what .. "_" .. m end
end
local lines = {table.concat(header, ",")}
for _, row in ipairs(rows) do
  local fields = {}
  for i, h in ipairs(header) do
    local v = row[h]
    if v == nil then fields[i] = h:match("lpips$") and NO_LPIPS or ""
    elseif type(v) == "number" then fields[i] = math.type(v) == "integer" and tostring(v) or string.format("%.6g", v)
    else fields[i] = tostring(v) end
  end
  lines[#lines + 1] = table.concat(fields, ",")
end
assert(fs.write_atomic(args.out .. "/denoise.csv", table.concat(lines, "\n") .. "\n"))
local step_lines = {"level,method,step,t,seconds,psnr,ssim,lpips"}
for _, r in ipairs(step_rows) do
  step_lines[#step_lines + 1] = string.format("%s,%s,%d,%d,%.6g,%.6g,%.6g,%s", r[1], r[2], r[3], r[4], r[5], r[6], r[7],
    fmt(r[8], "%.6g"))
end
assert(fs.write_atomic(args.out .. "/denoise_steps.csv", table.concat(step_lines, "\n") .. "\n"))

-- one plot per metric (LPIPS only with weights)
local LABELS = {psnr = "PSNR (dB)", ssim = "SSIM", lpips = "LPIPS"}
for _, metric in ipairs(METRICS) do
  if #curves[metric] > 0 then
    local ok, err = plot.lines(string.format("%s/denoise_%s.png", args.out, metric), {
      title = string.format("%s of the prediction along the reverse process (%s, %d images)", LABELS[metric], args.data, n),
      xlabel = "reverse steps", ylabel = LABELS[metric], series = curves[metric], key = "outside right top", width = 1000})
    if not ok then print("denoise: no plot: " .. tostring(err)) end
  end
end
print(string.format("wrote %s/denoise.csv, %s/denoise_steps.csv and the plots%s", args.out, args.out,
  args.strips > 0 and " and strips" or ""))
