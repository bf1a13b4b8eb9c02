-- recipes/study_mnist.lua — the MNIST study of issue 12 (item 3), one command that drives it all and
-- continues where it stopped: train the ten runs below (recipes/train_unet.lua / train_cunet.lua as
-- subprocesses, resumed from their checkpoints), scan FID against sampling steps
-- (recipes/fid_vs_steps.lua), and write the tables and plots for docs/results.md. See docs/study.md.
--
--   ./cunet recipes/study_mnist.lua --list                       -- the matrix and where each run stands
--   ./cunet recipes/study_mnist.lua --train --max-minutes 170    -- train (or resume) in order; stop in time
--   ./cunet recipes/study_mnist.lua --train --only authors_unet_11m_s0
--   ./cunet recipes/study_mnist.lua --scan --max-minutes 170     -- FID scans of the finished runs (resumable)
--   ./cunet recipes/study_mnist.lua --report --plots docs/images/study --into docs/results.md
--                                                                -- results/study/report.md, the plots, docs/results.md's tables
--   ./cunet recipes/study_mnist.lua --dry-run                    -- every command it would run, run nothing
--
-- Everything goes under --out (results/study, tracked in git but for the checkpoints, logs and images:
-- results/study/.gitignore): <run>/ holds the training recipe's checkpoint.safetensors, loss.csv,
-- config.lua and sample grids, train.log / scan.log (the subprocesses' output) and scan/ (the
-- fid_vs_steps CSVs); study_state.json holds each run's wall and CPU seconds (written atomically).
-- A run with no checkpoint there whose EMA weights are committed (checkpoints/study/<run>.safetensors)
-- counts as trained and is scored from them, so a fresh clone re-scores the study without training.
-- A session may be killed at any moment: the checkpoints are written atomically every 250 steps, the
-- scans one step count at a time, so the next call loses at most what ran since.

local cn = require "cunet"
local cli = require "cunet.cli"
local fs = require "cunet.fs"
local fid = require "cunet.fid"
local plot = require "cunet.plot"
local json = require("cunet.checkpoint").json
local study = require "cunet.study"
local word, command_text, append = study.word, study.command_text, study.append

local M = {}

-- ---- the run matrix ------------------------------------------------------------------------------
-- Both setups share the optimizer settings of the earlier comparison (docs/results.md: Adam lr 1e-3,
-- 100 warmup steps, clipping 1.0, batch 64), so they differ only in what issue 12 names.
--
-- authors: the setup of the paper's code (lucidrains' denoising-diffusion-pytorch trainer): v-prediction,
--   the sigmoid schedule, Adam betas (0.9, 0.99), EMA 0.9999 every 10 steps (their trainer also flips
--   images horizontally: not here, see below).
--   Our trainer updates the EMA every step with decay min(d, (1 + n) / (10 + n)) (optim.EMA's warmup,
--   always on in the recipes): d = 0.99999 is 0.9999 per 10 steps as a per-step decay, but over 6,000
--   steps the warmup term governs (0.9985 at the end: the shadow weights the last ~10% of the steps),
--   where ema_pytorch's own warmup (power 2/3) would average over ~3,000. The recipes' --ema-every,
--   --ema-after and --ema-power run that schedule exactly, but they came after the first runs had
--   trained: all ten keep the per-step one (docs/study.md). No flips: the authors' trainer flips by
--   default, for faces and churches; MNIST digits are not mirror-symmetric, so a flipped model also
--   learns mirrored digits, which the classifier-feature FID would count against every run of this
--   setup and not against Ho's: a difference of data, not of the setup the issue compares.
-- ho: Ho et al. 2020: eps-prediction, the linear schedule, Adam betas (0.9, 0.999), EMA 0.9999 per step
--   (the same warmup-governed shadow over 6,000 steps), no flips.
M.STEPS, M.BATCH, M.CHECKPOINT_EVERY = 6000, 64, 250
-- the study's directory (tracked: results/study/.gitignore keeps the checkpoints and logs out of git),
-- and where the finished runs' EMA weights are committed (docs/study.md "Committed weights")
M.OUT, M.COMMITTED = "results/study", "checkpoints/study"

M.SETUPS = {
  authors = {"--prediction", "v", "--schedule", "sigmoid", "--betas", "0.9,0.99", "--no-flip", "--ema", "0.99999"},
  ho = {"--prediction", "eps", "--schedule", "linear", "--betas", "0.9,0.999", "--no-flip", "--ema", "0.9999"},
}
M.COMMON = {"--data", "mnist", "--batch", tostring(M.BATCH), "--lr", "1e-3", "--warmup", "100", "--clip", "1",
  "--sample-every", "1000", "--sample-steps", "50", "--log-every", "250"}

M.FAMILIES = {
  unet = {recipe = "recipes/train_unet.lua", label = "U-Net"},
  cunet = {recipe = "recipes/train_cunet.lua", label = "cU-Net"},
}
M.SIZES = {["028m"] = "mnist_028m", ["11m"] = "mnist_11m"} -- the matched presets (docs/unet.md, docs/cunet.md)
M.SIZE_LABEL = {["028m"] = "0.28 M", ["11m"] = "1.1 M"}

-- In training order: one seed of every authors' model first, then the second seed, then Ho's.
M.RUNS = {}
local function add(setup, family, size, seed)
  M.RUNS[#M.RUNS + 1] = {name = string.format("%s_%s_%s_s%d", setup, family, size, seed), setup = setup,
    family = family, size = size, preset = M.SIZES[size], seed = seed}
end
for _, seed in ipairs{0, 1} do
  for _, size in ipairs{"028m", "11m"} do
    for _, family in ipairs{"unet", "cunet"} do add("authors", family, size, seed) end
  end
end
for _, family in ipairs{"unet", "cunet"} do add("ho", family, "11m", 0) end

-- ---- the scan -------------------------------------------------------------------------------------
-- n = 1,024 samples (16 batches of 64, so the time per sample is at batch 64), noise seed 0 for every
-- run; DDIM, DPM-Solver++(2M) and DDPM on the trailing grid (it starts at T: issue 12; the three differ
-- only in their update), the probability-flow ODE with dopri5 at four tolerances (rows keyed by their
-- NFE). DPM-Solver++'s own default, the logSNR grid, is not scanned: under the sigmoid schedule its
-- 2–5 step grids keep every point but the last at very low SNR (measured on authors_unet_028m_s0,
-- n = 1,024: FID 1,551 / 686 / 228 at 2 / 3 / 5 steps against 464 / 200 / 78 on the trailing grid).
M.SCAN_N, M.SCAN_BATCH, M.SCAN_SEED = 1024, 64, 0
M.SCAN_STEPS = {1, 2, 3, 5, 10, 20, 50, 100}
M.SCAN_RTOLS = {1e-1, 1e-2, 1e-3, 1e-4}
M.SAMPLERS = {
  {variant = "ddim_trailing", label = "DDIM (trailing)", flags = {"--sampler", "ddim", "--spacing", "trailing"}},
  {variant = "dpmpp_2m_trailing", label = "DPM-Solver++(2M) (trailing)", flags = {"--sampler", "dpmpp_2m", "--spacing", "trailing"}},
  {variant = "ddpm_trailing", label = "DDPM (trailing)", flags = {"--sampler", "ddpm", "--spacing", "trailing"}},
  {variant = "ode_dopri5", label = "PF-ODE (dopri5)", flags = {"--sampler", "ode", "--ode-method", "dopri5"}, rtol = true},
}
-- The time per sample at batch 64, measured apart from the scans (whose wall times depend on what else
-- the machine ran): --time samples one batch of 64 with DDIM (trailing, 20 steps) from each finished
-- run's checkpoint, TIME_REPEATS times with all cores, keeps the fastest, and records the 1-minute load
-- average before each; --report divides by the 20 evaluations and multiplies by each cell's NFE.
M.TIME_STEPS, M.TIME_REPEATS, M.TIME_BATCH = 20, 5, 64
-- ε-MSE bands (timesteps, inclusive) for the paired eval-mode comparison in --report
M.BANDS = {{1, 100}, {101, 300}, {301, 600}, {601, 1000}}

-- ---- helpers --------------------------------------------------------------------------------------

local function fail(msg)
  io.stderr:write("study_mnist: " .. msg .. "\n")
  os.exit(2)
end

local write_atomic = study.write_atomic

-- ---- the driver (cunet.study's, with this study's training and scan commands) -----------------------

local Study = setmetatable({NAME = "study_mnist", FULL_STEPS = M.STEPS, CHECKPOINT_EVERY = M.CHECKPOINT_EVERY,
  SCAN_N = M.SCAN_N, COMMITTED = M.COMMITTED, OPTIONS = {"plots", "into"}}, {__index = study.Driver})
Study.__index = Study

--- cunet.study's new: opts.plots is --report's plot directory (default <out>/plots), opts.into the
-- markdown file whose generated part --report replaces (M.splice; nil: none).
function Study:init(opts) self.plots, self.into = opts.plots or (self.out .. "/plots"), opts.into end

--- A study over the directory out (cunet.study's new: exe, steps, limit, n, dry, deadline, plots).
function M.new(out, opts) return study.new(Study, out, opts) end

--- The training recipe of run, and the options of its first call (cunet.study's Driver:train_command).
function Study:recipe(run) return M.FAMILIES[run.family].recipe end
function Study:fresh_flags(run)
  return append(append({"--preset", run.preset, "--seed", tostring(run.seed)}, M.SETUPS[run.setup]), M.COMMON)
end

-- The scan's rows of run that exist: variant -> set of step counts (or "rtol:<r>").
function Study:scanned(run)
  local have = {}
  for _, s in ipairs(M.SAMPLERS) do
    have[s.variant] = {}
    local rows = fid.read_scan(string.format("%s/scan/fid_vs_steps_%s.csv", self:dir(run), s.variant)) or {}
    for _, r in ipairs(rows) do
      if r.n == self.n then have[s.variant][s.rtol and ("rtol:" .. string.format("%g", r.rtol or -1)) or r.steps] = true end
    end
  end
  return have
end

--- The scan items of run still missing: {sampler =, steps = or rtol =, command =}.
function Study:scan_items(run)
  local have, items = self:scanned(run), {}
  for _, s in ipairs(M.SAMPLERS) do
    for _, v in ipairs(s.rtol and M.SCAN_RTOLS or M.SCAN_STEPS) do
      local key = s.rtol and ("rtol:" .. string.format("%g", v)) or v
      if not have[s.variant][key] then
        local c = append({self.exe, "recipes/fid_vs_steps.lua", "--ckpt", self:weights(run)}, s.flags)
        append(c, s.rtol and {"--rtol", string.format("%g", v)} or {"--steps", tostring(v)})
        append(c, {"--n", tostring(self.n), "--batch", tostring(M.SCAN_BATCH), "--seed", tostring(M.SCAN_SEED),
          "--out", self:dir(run) .. "/scan", "--append"})
        items[#items + 1] = {sampler = s, value = v, command = c}
      end
    end
  end
  return items
end

-- A guess of a scan cell's seconds from the run's rows so far (seconds per sample per model evaluation
-- from the row with the most evaluations, where the per-sample fixed costs weigh least: a 1-step row's
-- time is mostly scoring), plus the recipe's start; nil before any row. An ODE cell's NFE: 1.25 × the
-- largest NFE any run of the study took at that tolerance (the models' step-size needs are alike:
-- 68-200 at rtol 0.1-1e-4), else twice the largest this run took at any tolerance, else 300.
function Study:cell_seconds(run, item)
  local function rows(r, s)
    return fid.read_scan(string.format("%s/scan/fid_vs_steps_%s.csv", self:dir(r), s.variant)) or {}
  end
  local per_eval, most, ode_nfe = nil, 0, nil
  for _, s in ipairs(M.SAMPLERS) do
    for _, r in ipairs(rows(run, s)) do
      local nfe = r.nfe or r.steps
      if nfe and nfe > 0 and r.seconds and (nfe > most or (nfe == most and r.seconds / nfe > per_eval)) then
        per_eval, most = r.seconds / nfe, nfe
      end
      if s.rtol and nfe then ode_nfe = math.max(ode_nfe or 0, nfe) end
    end
  end
  if not per_eval then return nil end
  local nfe = item.value
  if item.sampler.rtol then
    local same = nil
    for _, other in ipairs(M.RUNS) do
      for _, r in ipairs(rows(other, item.sampler)) do
        if r.nfe and r.rtol and math.abs(r.rtol - item.value) <= 1e-12 * item.value then same = math.max(same or 0, r.nfe) end
      end
    end
    nfe = same and 1.25 * same or ode_nfe and 2 * ode_nfe or 300
  end
  return 30 + self.n * nfe * per_eval
end

--- Scans the runs whose training finished, one step count (or tolerance) per call; stops before the
-- deadline, skipping the cells that would not fit (a later call runs them).
function Study:scan(runs)
  return self:score_cells(runs, {what = "scan",
    items = function(run) return self:scan_items(run) end,
    label = function(item)
      return item.sampler.variant .. " " .. (item.sampler.rtol and ("rtol " .. item.value) or (item.value .. " steps"))
    end,
    skip = function(run, item)
      local guess = self:cell_seconds(run, item)
      return guess and guess > self:remaining() - 60 and string.format("it needs ~%.0f min", guess / 60) or nil
    end})
end

function Study:list(runs)
  print(string.format("%-22s %-7s %-6s %-11s %4s  %11s  %8s  %8s  %10s", "run", "setup", "model", "preset", "seed",
    "steps", "train h", "CPU h", "scan rows"))
  local total_items = #M.SCAN_STEPS * (#M.SAMPLERS - 1) + #M.SCAN_RTOLS
  for _, run in ipairs(runs) do
    local rec, cost = self.state.runs[run.name] or {}, self:train_cost(run)
    local missing = #self:scan_items(run)
    print(string.format("%-22s %-7s %-6s %-11s %4d  %5d/%-5d  %8.2f  %7.2f%s  %4d/%-5d", run.name, run.setup, run.family,
      run.preset, run.seed, self:done_steps(run), self.steps, cost.wall / 3600,
      (cost.cpu + (rec.scan_cpu or 0)) / 3600, cost.cpu_how == "estimated" and "~" or cost.cpu_how == "unknown" and "?" or " ",
      total_items - missing, total_items))
  end
  print(string.format("(options of every run: %s; %s: see recipes/study_mnist.lua; state in %s)",
    command_text(M.COMMON), "authors / ho", self.state_path))
end

-- ---- the report -----------------------------------------------------------------------------------

local function model_key(run) return run.setup .. "_" .. run.family .. "_" .. run.size end
local function model_label(run)
  return string.format("%s %s %s", run.setup == "ho" and "Ho" or "authors'", M.FAMILIES[run.family].label, M.SIZE_LABEL[run.size])
end

-- mean and half the range (the spread of 2 seeds) of a list
local function stats(xs)
  if #xs == 0 then return nil end
  local sum, lo, hi = 0, math.huge, -math.huge
  for _, x in ipairs(xs) do sum, lo, hi = sum + x, math.min(lo, x), math.max(hi, x) end
  return sum / #xs, (hi - lo) / 2, lo, hi
end

local function show(xs, fmt)
  local mean, spread = stats(xs)
  if not mean then return "–" end
  if #xs == 1 then return string.format(fmt, mean) end
  return string.format(fmt .. " ± " .. fmt, mean, spread)
end

-- s/sample of a scan cell ({nfe=, seconds=} lists over the seeds): the quiet --time measurement (s per
-- evaluation, a list over the model's runs) times the cell's NFE where there is one, else the scan's own time
local function seconds_there(per_eval, cell)
  if #per_eval > 0 then return string.format("%.4f", stats(per_eval) * stats(cell.nfe)) end
  return string.format("%.4f (scan)", (stats(cell.seconds)))
end

-- Paired eval-mode ε-MSE by timestep band on the 1,000 held-out digits (the same images, timesteps and
-- noise for every run; EMA weights), cached in <run>/eps_mse_step<N>.csv. Returns {band -> mse}.
function Study:eps_mse(run)
  local path = string.format("%s/eps_mse_step%d.csv", self:dir(run), self:done_steps(run))
  local cached = {}
  local f = io.open(path, "r")
  if f then
    for line in f:lines() do
      local i, v = line:match("^(%d+),%d+,%d+,([%d.eE+-]+)$")
      if i then cached[tonumber(i)] = tonumber(v) end
    end
    f:close()
    if #cached == #M.BANDS then return cached end
  end
  local checkpoint, diffusion, train = require "cunet.checkpoint", require "cunet.diffusion", require "cunet.train"
  local ck = checkpoint.load(self:weights(run))
  local model = checkpoint.build_model(ck, {ema = true})
  model:eval()
  local sched = checkpoint.schedule(ck)
  local x0 = train.dataset("mnist", {split = "test", size = 28}).images
  local n, out = x0:size(1), {}
  local lines = {"band,t_min,t_max,eps_mse"}
  for b, band in ipairs(M.BANDS) do
    cn.seed(1000 + b) -- the same draws for every run
    local t = cn.randint(band[1], band[2] + 1, {n})
    local noise = cn.randn_like(x0)
    local sum = 0
    cn.no_grad(function()
      for first = 1, n, 250 do
        local len = math.min(250, n - first + 1)
        local xs, ts, es = x0:narrow(1, first, len), t:narrow(1, first, len), noise:narrow(1, first, len)
        local x_t = diffusion.q_sample(sched, xs, ts, es)
        local eps = diffusion.split_prediction(sched, x_t, ts, model(x_t, ts), ck.prediction or "eps")
        sum = sum + ((eps - es) * (eps - es)):mean():item() * len
      end
    end)
    out[b] = sum / n
    lines[#lines + 1] = string.format("%d,%d,%d,%.9g", b, band[1], band[2], out[b])
  end
  fs.mkdir_p(self:dir(run))
  write_atomic(path, table.concat(lines, "\n") .. "\n")
  return out
end

-- gnuplot: FID against steps per model, the seed band (min..max) shaded, one PNG per sampler.
local function band_plot(png, title, xlabel, models, gnuplot)
  local dat = png:gsub("%.png$", "") .. ".dat"
  local data, plots = {}, {}
  for i, m in ipairs(models) do
    data[#data + 1] = string.format("# %s\n", m.label)
    for _, p in ipairs(m.points) do data[#data + 1] = string.format("%g %g %g %g\n", p.x, p.mean, p.lo, p.hi) end
    data[#data + 1] = "\n\n"
    plots[#plots + 1] = string.format("'%s' index %d using 1:3:4 with filledcurves fs transparent solid 0.2 lc %d notitle", dat, i - 1, i)
    plots[#plots + 1] = string.format("'%s' index %d using 1:2 with linespoints lc %d lw 2 title \"%s\"", dat, i - 1, i, m.label)
  end
  write_atomic(dat, table.concat(data))
  local script = table.concat({
    "set terminal pngcairo size 900,560", string.format("set output '%s'", png), string.format("set title \"%s\"", title),
    string.format("set xlabel '%s'", xlabel), string.format("set ylabel '%s (lower is better)'", fid.NAME),
    "set logscale x", "set logscale y", "set key top right", "set grid", "plot " .. table.concat(plots, ", \\\n  "),
  }, "\n") .. "\n"
  local gp = png:gsub("%.png$", "") .. ".gp"
  write_atomic(gp, script)
  return gp, gnuplot and os.execute(gnuplot .. " " .. word(gp) .. " 2>/dev/null")
end

local TIME_HEADER = "run,step,sampler,steps,batch,threads,seconds_per_sample,seconds_per_eval,load_before,date"

local function load_average()
  local f = io.open("/proc/loadavg", "r")
  local text = f and f:read("l")
  if f then f:close() end
  return text and tonumber(text:match("^(%S+)")) or nil
end

--- <out>/timing.csv as {run -> row} (rows as numbers and texts), {} when absent.
function Study:read_timing()
  local path = self.out .. "/timing.csv"
  local out = {}
  if not fs.exists(path) then return out end
  local rows, err = fs.read_csv(path)
  if not rows then error("study: " .. err, 0) end
  for _, r in ipairs(rows) do out[r.run] = r end
  return out
end

--- Times sampling from each finished run (M.TIME_*), into <out>/timing.csv (a run's row replaced).
function Study:time(runs)
  local p = io.popen("nproc 2>/dev/null")
  local threads = math.tointeger(tonumber(p and p:read("l") or "")) or 1
  if p then p:close() end
  local rows = self:read_timing()
  for _, run in ipairs(runs) do
    local done = self:done_steps(run)
    local png = string.format("%s/time_samples.png", self:dir(run))
    local c = {self.exe, "recipes/sample.lua", "--ckpt", self:weights(run), "--sampler", "ddim", "--spacing", "trailing",
      "--steps", tostring(M.TIME_STEPS), "--n", tostring(M.TIME_BATCH), "--batch", tostring(M.TIME_BATCH), "--seed", "0",
      "--threads", tostring(threads), "--out", png}
    if self.dry then
      print(string.format("%s  # x%d, the fastest kept%s", command_text(c), M.TIME_REPEATS,
        done < self.steps and string.format(" (once %s has finished training)", run.name) or ""))
    elseif done >= self.steps then
      local best, load
      for _ = 1, M.TIME_REPEATS do
        local before = load_average()
        local h = io.popen(command_text(c) .. " 2>&1")
        local text = h:read("a")
        local ok = h:close()
        local sps = ok and tonumber(text:match("([%d.]+[eE]?[-+]?%d*) s per sample"))
        if not sps then
          self.failed[#self.failed + 1] = run.name .. " (time)"
          print(string.format("study: timing %s failed:\n%s", run.name, text))
          break
        end
        if not best or sps < best then best, load = sps, before end
      end
      os.remove(png)
      if best then
        rows[run.name] = {run = run.name, step = done, sampler = "ddim_trailing", steps = M.TIME_STEPS, batch = M.TIME_BATCH,
          threads = threads, seconds_per_sample = best, seconds_per_eval = best / M.TIME_STEPS, load_before = load or "-",
          date = os.date("!%Y-%m-%dT%H:%MZ")}
        print(string.format("study: %s %.4f s per sample (DDIM %d steps, batch %d, %d threads; load before %s)", run.name, best,
          M.TIME_STEPS, M.TIME_BATCH, threads, tostring(load)))
      end
    end
  end
  if self.dry then return end
  local names = {}
  for name in pairs(rows) do names[#names + 1] = name end
  table.sort(names)
  local lines = {TIME_HEADER}
  for _, name in ipairs(names) do
    local r, cells = rows[name], {}
    for h in TIME_HEADER:gmatch("[^,]+") do cells[#cells + 1] = type(r[h]) == "number" and string.format("%.6g", r[h]) or tostring(r[h]) end
    lines[#lines + 1] = table.concat(cells, ",")
  end
  fs.mkdir_p(self.out)
  write_atomic(self.out .. "/timing.csv", table.concat(lines, "\n") .. "\n")
end

--- Writes <out>/report.md (the tables for docs/results.md) and the plots under self.plots (--plots,
-- default <out>/plots; docs/results.md's are in docs/images/study).
function Study:report(runs)
  local groups, order = {}, {}
  for _, run in ipairs(runs) do
    local k = model_key(run)
    if not groups[k] then groups[k] = {label = model_label(run), runs = {}} order[#order + 1] = k end
    table.insert(groups[k].runs, run)
  end
  local timing = self:read_timing()
  local md = {"# The MNIST study: tables (recipes/study_mnist.lua --report)", "",
    string.format("%s, n = %d samples per cell (batch %d), against the 9,000 training digits; mean ± half the " ..
      "range over the seeds (one seed: the value). s/sample: the seconds per model evaluation that --time measured " ..
      "(batch %d, all cores, the fastest of %d; %s) times the cell's NFE; marked (scan) where --time has not run, the " ..
      "scan's own wall time on whatever else the machine was doing.", fid.NAME, self.n, M.SCAN_BATCH, M.TIME_BATCH,
      M.TIME_REPEATS, "the load before each in timing.csv"), ""}
  if self.dry then
    print("# report: reads " .. self.out .. "/<run>/scan/fid_vs_steps_*.csv, writes " .. self.out
      .. "/report.md and " .. self.plots .. "/*.png (gnuplot), then:")
  end
  -- the floor: the 1,000 held-out digits against the same statistics
  if not self.dry then
    local train = require "cunet.train"
    local real = train.dataset("mnist", {split = "test", size = 28}).images
    local r = fid.score(real, "mnist", {split = "train"})
    md[#md + 1] = string.format("Floor: the 1,000 held-out test digits (the real images a perfect model would match) " ..
      "score %.3f against the same statistics.", r.fid)
    md[#md + 1] = ""
  end
  if not self.dry then fs.mkdir_p(self.plots) end
  -- each model's s per evaluation from the quiet --time measurements of its runs; its cells for the summary
  local per_eval, summary = {}, {}
  for _, k in ipairs(order) do
    local list = {}
    for _, run in ipairs(groups[k].runs) do
      local t = timing[run.name]
      if t and type(t.seconds_per_eval) == "number" then list[#list + 1] = t.seconds_per_eval end
    end
    per_eval[k], summary[k] = list, {label = groups[k].label, cells = {}}
  end
  local summary_at = #md + 1 -- the summary goes here once every sampler's cells are known
  local gnuplot = plot.gnuplot()
  for _, s in ipairs(M.SAMPLERS) do
    local values = s.rtol and M.SCAN_RTOLS or M.SCAN_STEPS
    local head = {"| model | seeds |"}
    local rule = {"|---|---:|"}
    for _, v in ipairs(values) do
      head[#head + 1] = string.format(" %s |", s.rtol and string.format("rtol %g (NFE)", v) or tostring(v))
      rule[#rule + 1] = "---:|"
    end
    head[#head + 1] = s.rtol and " best | fewest NFE ≤ 1.1 × best | s/sample there |" or " best | fewest steps ≤ 1.1 × best | s/sample there |"
    rule[#rule + 1] = "---:|---:|---:|"
    md[#md + 1] = "## " .. s.label .. (s.rtol and ": FID by tolerance (mean NFE in brackets)" or ": FID by steps")
    md[#md + 1] = ""
    md[#md + 1] = table.concat(head)
    md[#md + 1] = table.concat(rule)
    local models = {}
    for _, k in ipairs(order) do
      local g = groups[k]
      local cells, seeds, points = {}, 0, {}
      local per = {} -- value index -> {fids, nfes, seconds}
      for _, run in ipairs(g.runs) do
        local rows = fid.read_scan(string.format("%s/scan/fid_vs_steps_%s.csv", self:dir(run), s.variant))
        if rows then
          seeds = seeds + 1
          for i, v in ipairs(values) do
            for _, r in ipairs(rows) do
              if r.n == self.n and ((s.rtol and r.rtol and math.abs(r.rtol - v) <= 1e-12 * v) or (not s.rtol and r.steps == v)) then
                per[i] = per[i] or {fid = {}, nfe = {}, seconds = {}}
                table.insert(per[i].fid, r.fid)
                table.insert(per[i].nfe, r.nfe or r.steps)
                table.insert(per[i].seconds, r.seconds)
              end
            end
          end
        end
      end
      local best, best_i
      for i in ipairs(values) do
        local p = per[i]
        cells[i] = p and (show(p.fid, "%.2f") .. (s.rtol and string.format(" (%.0f)", (stats(p.nfe))) or "")
          .. (#p.fid < seeds and " ¹" or "")) or "–"
        local mean = p and stats(p.fid)
        if mean then
          local _, _, lo, hi = stats(p.fid)
          points[#points + 1] = {x = s.rtol and stats(p.nfe) or values[i], mean = mean, lo = lo, hi = hi}
          if not best or mean < best then best, best_i = mean, i end
        end
      end
      local fewest, fewest_i
      for i in ipairs(values) do
        local mean = per[i] and stats(per[i].fid)
        local x = per[i] and (s.rtol and stats(per[i].nfe) or values[i])
        if mean and mean <= 1.1 * best and (not fewest or x < fewest) then fewest, fewest_i = x, i end
      end
      local there = fewest_i and seconds_there(per_eval[k], per[fewest_i]) or "–"
      for i, v in ipairs(values) do
        if per[i] then
          local cell = summary[k].cells
          cell[#cell + 1] = {sampler = s, value = v, p = per[i], fid = (stats(per[i].fid)), nfe = (stats(per[i].nfe))}
        end
      end
      md[#md + 1] = string.format("| %s | %d | %s | %s | %s | %s |", g.label, seeds, table.concat(cells, " | "),
        best and string.format("%.2f", best) or "–", fewest and string.format("%.0f", fewest) or "–", there)
      if #points > 0 then table.sort(points, function(a, b) return a.x < b.x end) models[#models + 1] = {label = g.label, points = points} end
    end
    md[#md + 1] = ""
    local png = string.format("%s/fid_vs_steps_%s.png", self.plots, s.variant)
    if self.dry then
      print(string.format("gnuplot %s  # FID vs %s, seed bands", png:gsub("%.png$", ".gp"), s.rtol and "NFE" or "steps"))
    elseif #models > 0 then
      local gp, ok = band_plot(png, s.label .. ": FID vs " .. (s.rtol and "NFE" or "steps") .. " (seed range shaded)",
        s.rtol and "model evaluations (NFE)" or "sampling steps", models, gnuplot)
      md[#md + 1] = ok and string.format("![%s](%s)", s.label, png) or ("(plot: gnuplot " .. gp .. ")")
      md[#md + 1] = ""
    end
  end
  -- the summary: each model's best cell over all samplers, and its cheapest cell within 10% of that
  if not self.dry then
    local lines = {"## Each model's best over all samplers", "",
      "The best FID of any sampler and step count, and the cell with the fewest model evaluations (NFE) whose " ..
      "FID is within 10% of that best, with its time per sample. ¹: a cell scored for fewer seeds than the model has.", "",
      "| model | best FID | where | fewest NFE ≤ 1.1 × best | where | its FID | s/sample there |",
      "|---|---:|---|---:|---|---:|---:|"}
    local function where(c)
      if c.sampler.rtol then return string.format("%s, rtol %g", c.sampler.label, c.value) end
      return string.format("%s, %d step%s", c.sampler.label, c.value, c.value == 1 and "" or "s")
    end
    for _, k in ipairs(order) do
      local cells, best, cheap = summary[k].cells, nil, nil
      for _, c in ipairs(cells) do if not best or c.fid < best.fid then best = c end end
      for _, c in ipairs(cells) do
        if c.fid <= 1.1 * best.fid and (not cheap or c.nfe < cheap.nfe) then cheap = c end
      end
      if best then
        local function fids(c) return show(c.p.fid, "%.2f") .. (#c.p.fid < #groups[k].runs and " ¹" or "") end
        lines[#lines + 1] = string.format("| %s | %s | %s | %.0f | %s | %s | %s |", summary[k].label, fids(best),
          where(best), cheap.nfe, where(cheap), fids(cheap), seconds_there(per_eval[k], cheap.p))
      else
        lines[#lines + 1] = string.format("| %s | – | – | – | – | – | – |", summary[k].label)
      end
    end
    lines[#lines + 1] = ""
    for i, line in ipairs(lines) do table.insert(md, summary_at + i - 1, line) end
  end
  -- loss curves, one plot per setup and size (each setup's loss is the MSE of its own target), window
  -- means of loss.csv from step 500 on a linear axis, where the runs' ends can be told apart
  for _, group in ipairs{{"authors", "028m"}, {"authors", "11m"}, {"ho", "11m"}} do
    local setup, size = group[1], group[2]
    local pairs_, lost = {}, {}
    for _, run in ipairs(runs) do
      if run.setup == setup and run.size == size then
        if self.dry or fs.exists(self:dir(run) .. "/loss.csv") then
          pairs_[#pairs_ + 1] = run.name .. "=" .. self:dir(run)
        elseif self:done_steps(run) > 0 then
          lost[#lost + 1] = run.name
        end
      end
    end
    local png = string.format("%s/loss_%s_%s.png", self.plots, setup, size)
    if #lost > 0 then
      -- a run scored from its committed weights has no loss.csv here: the plot is left as it was drawn
      print(string.format("study: %s not redrawn: no loss.csv for %s", png, table.concat(lost, ", ")))
      if fs.exists(png) then
        md[#md + 1] = string.format("![training loss, %s setup, %s](%s) (drawn earlier: no loss.csv here for %s)",
          setup == "ho" and "Ho's" or "the authors'", M.SIZE_LABEL[size], png, table.concat(lost, ", "))
        md[#md + 1] = ""
      end
    elseif #pairs_ > 0 then
      local long = self.steps >= 1000
      local cmd = {self.exe, "recipes/plot_losses.lua", "--runs", table.concat(pairs_, ","), "--window", long and "100" or "1",
        "--from-step", long and "500" or "0", "--out", png}
      if long then cmd[#cmd + 1] = "--linear" end
      if self.dry then print(command_text(cmd))
      elseif os.execute(command_text(cmd) .. " > /dev/null 2>&1") then
        md[#md + 1] = string.format("![training loss, %s setup, %s](%s)", setup == "ho" and "Ho's" or "the authors'",
          M.SIZE_LABEL[size], png)
        md[#md + 1] = ""
      end
    end
  end
  -- paired ε-MSE by band, finished runs only
  if self.dry then
    print("# report: eval-mode ε-MSE by timestep band of each finished run (in-process, cached in <run>/eps_mse_step<N>.csv)")
    return
  end
  md[#md + 1] = "## Paired eval-mode ε-MSE by timestep band"
  md[#md + 1] = ""
  md[#md + 1] = "The 1,000 held-out digits, the same timesteps and noise for every run, EMA weights, dropout off; "
    .. "a v-prediction converted to ε. The setups' schedules differ, so compare within a setup."
  md[#md + 1] = ""
  local head, rule = {"| model | seeds |"}, {"|---|---:|"}
  for _, b in ipairs(M.BANDS) do head[#head + 1] = string.format(" t %d–%d |", b[1], b[2]) rule[#rule + 1] = "---:|" end
  md[#md + 1] = table.concat(head)
  md[#md + 1] = table.concat(rule)
  for _, k in ipairs(order) do
    local g, per, seeds = groups[k], {}, 0
    for _, run in ipairs(g.runs) do
      if self:done_steps(run) >= self.steps then
        seeds = seeds + 1
        for b, v in ipairs(self:eps_mse(run)) do per[b] = per[b] or {} table.insert(per[b], v) end
        collectgarbage("collect")
      end
    end
    local cells = {}
    for b in ipairs(M.BANDS) do cells[b] = per[b] and show(per[b], "%.5f") or "–" end
    md[#md + 1] = string.format("| %s | %d | %s |", g.label, seeds, table.concat(cells, " | "))
  end
  md[#md + 1] = ""
  -- the time per model evaluation of each model (--time), the clock the s/sample columns use
  md[#md + 1] = "## Time per model evaluation"
  md[#md + 1] = ""
  md[#md + 1] = string.format("--time: one batch of %d sampled with DDIM (trailing, %d steps) on all cores, the fastest of %d, " ..
    "divided by the batch and the %d evaluations; mean ± half the range over the runs timed; the highest 1-minute load average before " ..
    "a measurement of the model.", M.TIME_BATCH, M.TIME_STEPS, M.TIME_REPEATS, M.TIME_STEPS)
  md[#md + 1] = ""
  md[#md + 1] = "| model | runs timed | ms per sample and evaluation (batch 64) | load before |"
  md[#md + 1] = "|---|---:|---:|---:|"
  for _, k in ipairs(order) do
    local ms, load = {}, nil
    for _, run in ipairs(groups[k].runs) do
      local t = timing[run.name]
      if t and type(t.seconds_per_eval) == "number" then
        ms[#ms + 1] = 1000 * t.seconds_per_eval
        if type(t.load_before) == "number" then load = math.max(load or 0, t.load_before) end
      end
    end
    md[#md + 1] = string.format("| %s | %d | %s | %s |", groups[k].label, #ms, show(ms, "%.3f"), load and string.format("%.2f", load) or "–")
  end
  md[#md + 1] = ""
  md[#md + 1] = "## Training cost"
  md[#md + 1] = ""
  md[#md + 1] = "Train wall h: the larger of the driver's record and the checkpoint's own clock. Train CPU h: the " ..
    "checkpoint's count of the training processes' CPU where it covers the whole run, else the driver's record of " ..
    "its training calls; ≈ where a call was killed with its session before the driver could record it, so the " ..
    "recorded CPU per step is scaled to the steps done. Scan CPU h: the driver's record of the FID scans."
  md[#md + 1] = ""
  md[#md + 1] = "| run | steps | train wall h | train CPU h | scan CPU h |"
  md[#md + 1] = "|---|---:|---:|---:|---:|"
  for _, run in ipairs(runs) do
    local rec, cost = self.state.runs[run.name] or {}, self:train_cost(run)
    md[#md + 1] = string.format("| %s | %d | %.2f | %s | %.2f |", run.name, self:done_steps(run), cost.wall / 3600,
      study.cpu_hours_text(cost), (rec.scan_cpu or 0) / 3600)
  end
  fs.mkdir_p(self.out)
  write_atomic(self.out .. "/report.md", table.concat(md, "\n") .. "\n")
  print("wrote " .. self.out .. "/report.md")
  if self.into then M.splice(self.into, md) end
end

M.BEGIN_MARK = "<!-- recipes/study_mnist.lua --report --into: the tables from here on are generated -->"
M.END_MARK = "<!-- recipes/study_mnist.lua --report --into: generated up to here -->"

--- Replaces the text between M.BEGIN_MARK and M.END_MARK in the markdown file path by the report's
-- lines md (its title dropped, each heading one level deeper, image links relative to path's
-- directory); the rest of the file is kept. Written atomically; raises when the markers are missing.
function M.splice(path, md)
  local f = io.open(path, "r")
  if not f then error(string.format("study_mnist --into: cannot read %s", path), 0) end
  local text = f:read("a")
  f:close()
  local b, b_end = text:find(M.BEGIN_MARK, 1, true)
  local e = b and text:find(M.END_MARK, b_end, true)
  if not (b and e) then
    error(string.format("study_mnist --into: %s lacks the two marker lines between which the tables go:\n%s\n%s",
      path, M.BEGIN_MARK, M.END_MARK), 0)
  end
  local dir = path:match("^(.*)/[^/]*$")
  local body = {}
  for i = 2, #md do
    local line = md[i]
    if not (i == 2 and line == "") then
      line = line:gsub("^(#+ )", "#%1")
      if dir then line = line:gsub("(%]%()" .. dir:gsub("%p", "%%%0") .. "/", "%1") end
      body[#body + 1] = line
    end
  end
  write_atomic(path, text:sub(1, b_end) .. "\n\n" .. table.concat(body, "\n") .. "\n" .. text:sub(e))
  print("wrote the tables into " .. path)
end

-- ---- the command line -----------------------------------------------------------------------------

function M.main(argv)
  local t0 = cn.time()
  local args = cli.parse(argv, {
    name = "study_mnist",
    usage = "cunet recipes/study_mnist.lua [--list | --train | --scan | --time | --report] [--only NAME,...] [--max-minutes M] [--dry-run]",
    description = "The MNIST study of issue 12: 10 training runs (the matrix is in this file), FID scans, the report.\n"
      .. "Re-run it at any time: it continues from the checkpoints and the scan CSVs under --out.",
    options = {
      {"list", false, "the matrix with each run's steps (from its checkpoint), hours and scan rows (the default)"},
      {"train", false, "start or resume the runs in order (recipes/train_unet.lua, train_cunet.lua)"},
      {"scan", false, "FID scans of the runs whose training finished (recipes/fid_vs_steps.lua, one row per call)"},
      {"time", false, "time sampling at batch 64 from each finished run, all cores (run it on a quiet machine): <out>/timing.csv"},
      {"report", false, "write <out>/report.md and the plots (--plots) from the scans"},
      {"plots", "", "the directory of --report's plots (default: <out>/plots; docs/results.md's: docs/images/study)"},
      {"into", "", "--report also writes its tables between the two marker lines of this markdown file (docs/results.md)"},
      {"dry-run", false, "print the commands --train / --scan / --report would run (all three when none is given)"},
      {"committed", M.COMMITTED, "the finished runs' committed EMA weights (<dir>/<run>.safetensors), scored where a run has "
        .. "no training checkpoint under --out ('': none)"},
      table.unpack(study.common_options{out = M.OUT, steps = M.STEPS, n = M.SCAN_N, n_help = "samples per scan cell"}),
    },
  })
  local runs, opts = study.from_args(args, M.RUNS, t0, fail)
  opts.plots = args.plots ~= "" and args.plots or nil
  opts.committed = args.committed
  opts.into = args.into ~= "" and args.into or nil
  if opts.into and not args.report then fail("--into goes with --report") end
  local driver = M.new(args.out, opts)
  if args.time then
    if args.train or args.scan then fail("--time measures on a quiet machine: run it on its own, not with --train or --scan") end
    driver:time(runs)
    if not args.report then
      if #driver.failed > 0 then fail("failed: " .. table.concat(driver.failed, ", ")) end
      return
    end
  end
  study.run_actions(driver, runs, args, "scan", fail)
end

if arg and arg[0] and arg[0]:match("study_mnist%.lua$") then M.main(arg) end
return M
