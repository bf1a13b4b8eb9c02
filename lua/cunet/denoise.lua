-- denoise — the denoising protocol of "The Missing U for Efficient Diffusion Models" (Tables 2–4):
-- noise clean images, run a diffusion model's reverse process from the noise level, and track SSIM,
-- PSNR (and LPIPS) of the prediction at every reverse step; the baselines (BM3D, DnCNN, Conv AE)
-- on the same noisy images. recipes/denoise.lua drives it; docs/denoising.md describes it.
--
--   local denoise = require "cunet.denoise"
--   local level = denoise.levels("t:50", sched)[1]                  -- or "sigma:0.1"
--   local noisy = denoise.noisy(clean, level, sched, {seed = 0})    -- clean [N, C, H, W] in [0, 1]
--   local r = denoise.reverse(model, sched, noisy, clean, {prediction = "v"})
--   print(r.best.psnr.mean, r.best.psnr.step, r.best.psnr.seconds)   -- means over the images
--   local b = denoise.baseline(function(y) return cn.bm3d(y, noisy.sigma) end, noisy, clean, {per_image = true})
--
-- Images are [N, C, H, W] in [0, 1]; the diffusion models work on [-1, 1] (x = 2·image − 1).
-- A noise level is a forward-process timestep t (x_t = sqrt(ᾱ_t) x_0 + sqrt(1 − ᾱ_t) ε, the paper's
-- protocol), or a Gaussian σ on [0, 1] images (the authors' code). The two meet through the σ
-- equivalent to t: x_t / sqrt(ᾱ_t) = x_0 + sqrt((1 − ᾱ_t) / ᾱ_t) ε on [-1, 1], i.e. the clean image
-- plus σ_t = sqrt((1 − ᾱ_t) / ᾱ_t) / 2 times ε on [0, 1]: that image is what the baselines see.

local cn = require "cunet"
local diffusion = require "cunet.diffusion"
local metrics = require "cunet.metrics"
local fs = require "cunet.fs"
local options = require "cunet.options"

local M = {}

--- Every option of reverse and its default (the protocol's: the DDPM ancestral sampler of the
-- paper's Eq. 2, the running sample as the prediction, x̂0 clipped to [-1, 1] inside the sampler).
M.reverse_defaults = {prediction = "eps", sampler = "ddpm", use_x0 = false, clip_x0 = true, seed = 0, lpips = false,
  keep_best_images = false, batch = 0}

--- The samplers reverse runs: every timestep from t down to 1 with each.
M.SAMPLERS = {
  ddpm = "DDPM ancestral steps, sigma_t^2 = beta_t (the paper's Eq. 2)",
  ddpm_mean = "the mean of each DDPM step, no noise added (the authors' denoising code)",
  ddim = "DDIM with eta = 0 at every timestep (deterministic)",
}

--- The σ on [0, 1] images equivalent to timestep t of sched (see the header).
function M.equivalent_sigma(sched, t)
  local ab = sched.alpha_bar[t]
  return math.sqrt((1 - ab) / ab) / 2
end

--- The timestep of sched whose equivalent σ is nearest to sigma.
function M.matched_timestep(sched, sigma)
  local best, best_gap = 1, math.huge
  for t = 1, sched.T do
    local gap = math.abs(M.equivalent_sigma(sched, t) - sigma)
    if gap < best_gap then best, best_gap = t, gap end
  end
  return best
end

local function number_list(text, what)
  local out = {}
  for item in (text .. ","):gmatch("([^,]*),") do
    local v = tonumber(item)
    if not v then error(string.format("denoise: %s must be a comma-separated list of numbers, got '%s'", what, text), 3) end
    out[#out + 1] = v
  end
  return out
end

--- Noise levels from text: "t:50,150,400" (timesteps of sched, integers in 1..T) or
-- "sigma:0.05,0.1" (σ on [0, 1] images, > 0). sched: a schedule (diffusion.schedule) or a schedule
-- name (T = 1000). Returns a list of {kind = "t" | "sigma", value =, sigma =} (sigma: the σ on
-- [0, 1], equivalent for timesteps).
function M.levels(text, sched)
  if type(sched) == "string" then sched = diffusion.schedule(sched) end
  if type(text) ~= "string" then error("denoise.levels: expected a text like 't:50,150' or 'sigma:0.1', got " .. type(text), 2) end
  local kind, list = text:match("^%s*(%a+)%s*:%s*(.-)%s*$")
  if kind ~= "t" and kind ~= "sigma" then
    error(string.format("denoise: noise levels must read t:T1,T2,... or sigma:S1,S2,..., got '%s'", text), 2)
  end
  local levels = {}
  for _, v in ipairs(number_list(list, kind == "t" and "the timesteps" or "the sigmas")) do
    if kind == "t" then
      if math.type(v) ~= "integer" or v < 1 or v > sched.T then
        error(string.format("denoise: timestep %s outside 1..%d (integers)", tostring(v), sched.T), 2)
      end
      levels[#levels + 1] = {kind = "t", value = v, sigma = M.equivalent_sigma(sched, v)}
    else
      if not (v > 0 and v < math.huge) then error(string.format("denoise: sigma must be > 0, got %s", tostring(v)), 2) end
      levels[#levels + 1] = {kind = "sigma", value = v, sigma = v}
    end
  end
  return levels
end

--- "t=50 (sigma 0.088), ..." for a list of levels.
function M.levels_text(levels)
  local parts = {}
  for i, l in ipairs(levels) do
    parts[i] = l.kind == "t" and string.format("t=%d (sigma %.4g)", l.value, l.sigma) or string.format("sigma %.4g", l.sigma)
  end
  return table.concat(parts, ", ")
end

--- The baselines' training loss over levels: for a batch x0 in [-1, 1] (train.run's dataset), the
-- clean images c = (x0 + 1) / 2, each given a level drawn uniformly from the list and Gaussian
-- noise: MSE(model(c + σ·z), c). Draws from the global generator (level indices, then the noise),
-- so train.run's saved generator state resumes it exactly.
function M.training_loss(levels)
  if type(levels) ~= "table" or #levels == 0 then error("denoise.training_loss: expected a non-empty list of levels", 2) end
  local sigmas = {}
  for i, l in ipairs(levels) do sigmas[i] = l.sigma end
  local table_t = cn.tensor(sigmas)
  return function(model, x0)
    local n = x0:size(1)
    local clean = (x0 + 1) * 0.5
    local pick = cn.randint(1, #sigmas + 1, {n})
    local sigma = table_t:index_select(1, pick):view{n, 1, 1, 1}
    local noisy = clean + cn.randn_like(clean) * sigma
    return cn.mse_loss(model(noisy), clean)
  end
end

--- The noisy version of clean ([N, C, H, W] in [0, 1]) at a level (from M.levels). opts: seed (0:
-- the noise is drawn from this seed; the global generator is left as it was), sigma_start (for σ
-- levels: the timestep the reverse process starts from, 99 as the authors' code, with x_t the
-- noisy image on [-1, 1] as it is; or "matched": the timestep of the nearest equivalent σ, with x_t
-- scaled by sqrt(ᾱ_t) so it has the forward process's distribution). Returns {x_t = [-1, 1] scale,
-- t = the start timestep, image = the noisy image on [0, 1] (not clipped; what the baselines see),
-- sigma =, level =}.
function M.noisy(clean, level, sched, opts)
  opts = options.check(opts, {"seed", "sigma_start"}, "denoise.noisy")
  local saved = cn.rng_state()
  cn.seed(opts.seed or 0)
  local z = cn.randn_like(clean)
  cn.set_rng_state(saved)
  if level.kind == "t" then
    local ab = sched.alpha_bar[level.value]
    local x_t = (clean * 2 - 1) * math.sqrt(ab) + z * math.sqrt(1 - ab)
    return {x_t = x_t, t = level.value, image = clean + z * level.sigma, sigma = level.sigma, level = level}
  end
  local image = clean + z * level.sigma
  local start = opts.sigma_start or 99
  if start == "matched" then
    local t = M.matched_timestep(sched, level.sigma)
    return {x_t = (image * 2 - 1) * math.sqrt(sched.alpha_bar[t]), t = t, image = image, sigma = level.sigma, level = level}
  end
  if math.type(start) ~= "integer" or start < 1 or start > sched.T then
    error(string.format("denoise.noisy: sigma_start must be a timestep in 1..%d or 'matched', got %s", sched.T, tostring(start)), 2)
  end
  return {x_t = image * 2 - 1, t = start, image = image, sigma = level.sigma, level = level}
end

-- The running best of one metric per image: value, the step reached, the seconds at that step.
local function tracker(n, higher)
  return {higher = higher, value = cn.full({n}, higher and -math.huge or math.huge), step = cn.zeros{n}, seconds = cn.zeros{n},
    curve = {}}
end

-- Folds step i's values [N] into the tracker; returns the mask of images improved.
local function track(tr, values, i, seconds)
  local better = tr.higher and values:gt(tr.value) or values:lt(tr.value)
  tr.value = cn.where(better, values, tr.value)
  tr.step = cn.where(better, cn.full(values:shape(), i), tr.step)
  tr.seconds = cn.where(better, cn.full(values:shape(), seconds), tr.seconds)
  tr.curve[i] = values:mean():item()
  return better
end

local function summary(tr)
  return {mean = tr.value:mean():item(), step = tr.step:mean():item(), seconds = tr.seconds:mean():item(),
    values = tr.value, steps = tr.step}
end

-- SSIM, PSNR (and LPIPS) [N] of images in [0, 1] against clean.
local function scores(images, clean, lpips)
  local s = {ssim = metrics.ssim(images, clean, {data_range = 1}), psnr = metrics.psnr(images, clean, {data_range = 1})}
  if lpips then s.lpips = lpips(images, clean) end
  return s
end

local function to_unit(x) return (x:clamp(-1, 1) + 1) * 0.5 end

-- One chunk of images through the reverse process (see M.reverse): its trackers, the sampling
-- seconds after each step (the chunk's own), the last step's scores, the best images.
local function reverse_chunk(model, sched, x_t, t_start, image, clean, o)
  local n = clean:size(1)
  local trackers = {ssim = tracker(n, true), psnr = tracker(n, true), lpips = o.lpips and tracker(n, false) or nil}
  local best_images = o.keep_best_images and image:clamp(0, 1) or nil
  local step_seconds, last = {}, nil
  local sampling, mark = 0, nil
  local function callback(i, _, x, x0)
    sampling = sampling + (cn.time() - mark)
    step_seconds[i] = sampling
    local pred = to_unit(o.use_x0 and x0 or x)
    local s = scores(pred, clean, o.lpips or nil)
    for name, tr in pairs(trackers) do
      local better = track(tr, s[name], i, sampling / n)
      if name == "ssim" and best_images then best_images = cn.where(better:view{n, 1, 1, 1}, pred, best_images) end
    end
    last = s
    mark = cn.time()
  end
  local sampler_opts = {x_t = x_t, t_start = t_start, prediction = o.prediction, clip_x0 = o.clip_x0, seed = o.seed,
    callback = callback}
  local fn = function(x, t) return model(x, t) end
  mark = cn.time()
  if o.sampler == "ddim" then
    sampler_opts.steps, sampler_opts.eta = t_start, 0
    diffusion.sample_ddim(sched, fn, nil, sampler_opts)
  else
    sampler_opts.variance = o.sampler == "ddpm_mean" and "none" or "beta"
    diffusion.sample_ddpm(sched, fn, nil, sampler_opts)
  end
  return trackers, step_seconds, last, best_images
end

--- Runs the reverse process of model (a callable model(x_t, t) -> its prediction) under sched from
-- noisy (M.noisy) down to t = 1, scoring the prediction at every step against clean. opts: see
-- M.reverse_defaults — prediction ("eps" | "x0" | "v": what the model outputs), sampler (a key of
-- M.SAMPLERS), use_x0 (score the x̂0 predicted at each step instead of the running sample),
-- clip_x0, seed (the DDPM sampler's noise; chunk k uses seed + k - 1), lpips (function(a, b) -> [N]
-- distances of [0, 1] images, or false), keep_best_images (also return each image's best-SSIM
-- prediction), batch (images per reverse run; 0: all at once).
-- Returns {steps = number of reverse steps, seconds = sampling seconds per image (model and sampler
-- only, scoring excluded: the runs' time divided by N), noisy = scores of the noisy image (means),
-- best = {ssim =, psnr =, lpips =} each {mean = best value averaged over the images, step = mean step
-- reaching it (1 = the first reverse step), seconds = mean seconds per image to reach it, values,
-- steps (per image)}, final = the last step's means, curves = {metric = {mean at step i}},
-- step_seconds = {seconds per image after step i}, best_images = [N, C, H, W] when asked}.
function M.reverse(model, sched, noisy, clean, opts)
  local o = options.merge(opts, M.reverse_defaults, "denoise.reverse")
  if not M.SAMPLERS[o.sampler] then
    error(string.format("denoise.reverse: sampler must be ddpm, ddpm_mean or ddim, got %s", tostring(o.sampler)), 2)
  end
  if o.lpips and type(o.lpips) ~= "function" then error("denoise.reverse: lpips must be a function(a, b) -> [N] or false", 2) end
  if math.type(o.batch) ~= "integer" or o.batch < 0 then error("denoise.reverse: batch must be an integer >= 0, got " .. tostring(o.batch), 2) end
  local n = clean:size(1)
  local size = o.batch > 0 and o.batch or n
  local noisy_scores = scores(noisy.image:clamp(0, 1), clean, o.lpips or nil)
  local parts = {}
  for first = 1, n, size do
    local len = math.min(size, n - first + 1)
    local chunk = {}
    for k, v in pairs(o) do chunk[k] = v end
    chunk.seed = o.seed + #parts
    local trackers, seconds, last, best = reverse_chunk(model, sched, noisy.x_t:narrow(1, first, len), noisy.t,
      noisy.image:narrow(1, first, len), clean:narrow(1, first, len), chunk)
    parts[#parts + 1] = {n = len, trackers = trackers, seconds = seconds, last = last, best = best}
  end
  local steps = #parts[1].seconds
  local step_seconds = {}
  for i = 1, steps do
    local total = 0
    for _, p in ipairs(parts) do total = total + p.seconds[i] end
    step_seconds[i] = total / n
  end
  local result = {steps = steps, seconds = step_seconds[steps], noisy = {}, best = {}, final = {}, curves = {},
    step_seconds = step_seconds}
  if o.keep_best_images then
    local images = {}
    for k, p in ipairs(parts) do images[k] = p.best end
    result.best_images = cn.cat(images, 1)
  end
  for name in pairs(parts[1].trackers) do
    local cat = {value = {}, step = {}, seconds = {}}
    local curve, final = {}, 0
    for _, p in ipairs(parts) do
      local tr = p.trackers[name]
      for field, list in pairs(cat) do list[#list + 1] = tr[field] end
      for i = 1, steps do curve[i] = (curve[i] or 0) + tr.curve[i] * p.n / n end
      final = final + p.last[name]:mean():item() * p.n / n
    end
    result.best[name] = summary{value = cn.cat(cat.value, 1), step = cn.cat(cat.step, 1), seconds = cn.cat(cat.seconds, 1)}
    result.final[name] = final
    result.noisy[name] = noisy_scores[name]:mean():item()
    result.curves[name] = curve
  end
  return result
end

--- Scores a baseline denoiser fn on noisy.image (M.noisy): fn(y) -> the denoised image(s), given
-- the whole batch [N, C, H, W], or each image [C, H, W] in turn with opts.per_image (BM3D). The
-- outputs are clipped to [0, 1] before scoring. opts: per_image, lpips (as M.reverse's).
-- Returns {ssim =, psnr =, lpips = (means), seconds = per image, images = [N, C, H, W], noisy = the
-- noisy image's scores (means)}.
function M.baseline(fn, noisy, clean, opts)
  opts = options.check(opts, {"per_image", "lpips"}, "denoise.baseline")
  local n = clean:size(1)
  local t0 = cn.time()
  local out = cn.no_grad(function()
    if not opts.per_image then return fn(noisy.image) end
    local each = {}
    for i = 1, n do each[i] = fn(noisy.image[i]) end
    return cn.stack(each)
  end)
  local seconds = (cn.time() - t0) / n
  out = out:clamp(0, 1)
  local s = scores(out, clean, opts.lpips or nil)
  local result = {seconds = seconds, images = out, noisy = {}}
  for name, v in pairs(s) do result[name] = v:mean():item() end
  for name, v in pairs(scores(noisy.image:clamp(0, 1), clean, opts.lpips or nil)) do result.noisy[name] = v:mean():item() end
  return result
end

-- ---- the tables of docs/denoising.md ----------------------------------------------------------------

local METRICS = {{key = "ssim", label = "SSIM", fmt = "%.4f"}, {key = "psnr", label = "PSNR (dB)", fmt = "%.2f"},
  {key = "lpips", label = "LPIPS", fmt = "%.4f"}}

--- The rows of a CSV that recipes/denoise.lua wrote (denoise.csv, denoise_steps.csv): a list of
-- {column = value} (numbers where the text is one, "n/a ..." texts kept), and the header's names.
-- Raises naming the file when it is missing or not one of those.
function M.read_results(path)
  local rows, header = fs.read_csv(path)
  if not rows then error("denoise.read_results: " .. header, 2) end
  if header[1] ~= "level" or not (header[2] == "method" or header[4] == "method") then
    error(string.format("denoise.read_results: '%s' is not a denoise.csv (its header starts %s)", path,
      table.concat(header, ","):sub(1, 40)), 2)
  end
  return rows, header
end

local function cell(v, fmt) return type(v) == "number" and string.format(fmt, v) or "n/a" end

--- Markdown tables of results rows (M.read_results, several files' rows may be joined): for each
-- metric the best value per noise level (rows) and method (columns) with the noisy input's beside
-- it, and for the methods that run several steps (the diffusion models) the step (a mean over the
-- images, one decimal when not whole) and the seconds per image at which each reached its best. Levels and methods keep their first-seen order.
function M.markdown(rows)
  local levels, methods, by, seen_l, seen_m, iterative = {}, {}, {}, {}, {}, {}
  for _, r in ipairs(rows) do
    if not seen_l[r.level] then seen_l[r.level] = true levels[#levels + 1] = r end
    if not seen_m[r.method] then seen_m[r.method] = true methods[#methods + 1] = r.method end
    if type(r.steps) == "number" and r.steps > 1 then iterative[r.method] = true end
    by[r.level .. "\0" .. r.method] = r
  end
  local shown, out = {}, {}
  for _, m in ipairs(METRICS) do
    for _, r in ipairs(rows) do if type(r["best_" .. m.key]) == "number" then shown[#shown + 1] = m break end end
    if shown[#shown] ~= m then
      out[#out + 1] = string.format("Best %s: n/a for every method (%s)\n", m.label,
        tostring(rows[1] and rows[1]["best_" .. m.key] or "no rows"))
    end
  end
  local function level_name(l)
    return string.format("%s (σ %.3f)", l.level, l.sigma)
  end
  for _, m in ipairs(shown) do
    out[#out + 1] = string.format("Best %s (mean over the images):\n", m.label)
    local head, rule = {"| level | noisy |"}, {"|---|---:|"}
    for _, name in ipairs(methods) do head[#head + 1] = " " .. name .. " |" rule[#rule + 1] = "---:|" end
    out[#out + 1] = table.concat(head) .. "\n" .. table.concat(rule)
    for _, l in ipairs(levels) do
      local line = {string.format("| %s | %s |", level_name(l), cell(l["noisy_" .. m.key], m.fmt))}
      for _, name in ipairs(methods) do
        local r = by[l.level .. "\0" .. name]
        line[#line + 1] = " " .. (r and cell(r["best_" .. m.key], m.fmt) or "–") .. " |"
      end
      out[#out + 1] = table.concat(line)
    end
    out[#out + 1] = ""
  end
  local its = {}
  for _, name in ipairs(methods) do if iterative[name] then its[#its + 1] = name end end
  if #its > 0 then
    out[#out + 1] = "Reverse steps to the best value (of the level's steps) and seconds per image to reach it:\n"
    local head, rule = {"| level |"}, {"|---|"}
    for _, name in ipairs(its) do
      for _, m in ipairs(shown) do
        head[#head + 1] = string.format(" %s %s |", name, m.label:match("^%S+"))
        rule[#rule + 1] = "---:|"
      end
    end
    out[#out + 1] = table.concat(head) .. "\n" .. table.concat(rule)
    for _, l in ipairs(levels) do
      local line = {string.format("| %s |", level_name(l))}
      for _, name in ipairs(its) do
        local r = by[l.level .. "\0" .. name]
        for _, m in ipairs(shown) do
          local step, sec = r and r["step_" .. m.key], r and r["seconds_" .. m.key]
          line[#line + 1] = type(step) == "number" and string.format(" %s / %d, %.2f s |",
            math.tointeger(step) and string.format("%d", step) or string.format("%.1f", step), r.steps, sec) or " n/a |"
        end
      end
      out[#out + 1] = table.concat(line)
    end
    out[#out + 1] = ""
  end
  return table.concat(out, "\n")
end

return M
