-- recipes/fid_vs_steps.lua — FID (classifier features) and KID against the number of sampling steps, for
-- a checkpoint written by recipes/train_unet.lua: the paper's Table 1 protocol (the best step count
-- and the time per sample) on our 28×28 data sets. See docs/efficiency.md.
--
--   ./cunet recipes/fid_vs_steps.lua --ckpt runs/unet/checkpoint.safetensors --sampler ddim --steps 1,2,5,10,20,50 --n 1000
--   ./cunet recipes/fid_vs_steps.lua --ckpt runs/cunet/checkpoint.safetensors --sampler ddpm --dataset fashion-mnist
--   ./cunet recipes/fid_vs_steps.lua --ckpt C --sampler ddim --spacing trailing --steps 1,2,3,5,10,20,50,100
--   ./cunet recipes/fid_vs_steps.lua --ckpt C --sampler dpmpp_2m --steps 5,10,20
--   ./cunet recipes/fid_vs_steps.lua --ckpt C --sampler ode --ode-method dopri5 --rtol 1e-2,1e-3,1e-4   -- FID against NFE
--
-- For every step count it draws --n samples (the same seeds for every count), scores them against
-- the cached statistics of the real split with the classifier features (lua/cunet/fid.lua: not
-- comparable with Inception-FID), and times the generation. Writes <out>/fid_vs_steps_<sampler>.csv
-- and .png (the name also carries a --spacing other than auto, --variance posterior and the ODE's
-- method: fid_vs_steps_ddim_trailing.csv, fid_vs_steps_ode_dopri5.csv), prints the table and the best
-- step count. The probability-flow ODE with an adaptive method scans --rtol instead of --steps; its
-- rows are keyed by the model evaluations (NFE) they took.

local cn = require "cunet"
local cli = require "cunet.cli"
local train = require "cunet.train"
local checkpoint = require "cunet.checkpoint"
local progress = require "cunet.progress"
local fid = require "cunet.fid"
local plot = require "cunet.plot"
local fs = require "cunet.fs"
local diffusion = require "cunet.diffusion"
local dist = require "cunet.distributed"
local block_solver = require "cunet.block_solver"
local print = dist.print -- under mpirun, rank 0 speaks, scores and writes

local spec = {
  name = "fid_vs_steps",
  usage = "cunet recipes/fid_vs_steps.lua --ckpt PATH [options]",
  description = "FID and KID (classifier features) and time per sample against the number of sampling steps.",
  options = {
    {"ckpt", "runs/unet/checkpoint.safetensors", "training checkpoint (recipes/train_unet.lua)"},
    {"steps", nil, "step counts, comma-separated (default 1,2,5,10,20,50; fewer ddpm steps than T run on the respaced "
      .. "schedule; ode: the fixed-step solver's steps)", type = "string"},
    {"n", 1000, "samples per step count", integer = true, min = 2},
    {"batch", 250, "samples generated at once", integer = true, min = 1},
    {"dataset", "mnist", "the data set the checkpoint was trained on: mnist | fashion-mnist (its classifier is the feature network)"},
    {"split", "train", "the real split the statistics come from (mnist: train 9,000 | test 1,000; fashion-mnist: train | test)"},
    {"ema", true, "the EMA weights (--no-ema: the trained ones)"},
    {"seed", 0, "noise seed (the same for every step count)", integer = true, min = 0},
    {"out", "runs/fid_vs_steps", "output directory for the CSV and the plot"},
    {"append", false, "extend the CSV already in --out (same checkpoint, sampler and n): its rows are kept, these step counts added or replaced"},
    {"threads", 0, "threads (0: all cores)", integer = true, min = 0},
  },
}
for i, o in ipairs(train.sampler_cli_options(true)) do table.insert(spec.options, 1 + i, o) end
for _, o in ipairs(block_solver.cli_options()) do spec.options[#spec.options + 1] = o end
local args = cli.parse(arg, spec)

local function fail(msg)
  io.stderr:write("fid_vs_steps: " .. msg .. "\n")
  os.exit(2)
end

dist.setup()
if args.threads > 0 then cn.set_num_threads(args.threads) end
local gen = train.sampler_args(args, fail)

-- a comma-separated list of numbers (integers >= 1 when `integer`)
local function numbers(flag, text, integer)
  local out = {}
  for item in text:gmatch("[^,]+") do
    local v = tonumber(item)
    if integer then v = math.tointeger(v) end
    if not v or not (v > 0) or (integer and v < 1) then
      fail(string.format("--%s must be %s separated by commas, got %s", flag, integer and "positive integers" or "numbers > 0", text))
    end
    out[#out + 1] = v
  end
  if #out == 0 then fail("--" .. flag .. " is empty") end
  return out
end

-- the rows to measure: {steps =} each, or {rtol =, atol =} for the ODE with an adaptive method
local runs = {}
if gen.rtol then
  if args.steps then fail("--steps is for the fixed-step --ode-method (rk4, ...), not " .. gen.ode_method .. ": it scans --rtol") end
  local rtols = numbers("rtol", tostring(gen.rtol))
  local atols = numbers("atol", tostring(gen.atol))
  if #atols ~= 1 and #atols ~= #rtols then fail(string.format("--atol gives %d values for %d of --rtol (give one, or one each)", #atols, #rtols)) end
  for i, r in ipairs(rtols) do runs[i] = { rtol = r, atol = atols[#atols == 1 and 1 or i] } end
else
  for i, v in ipairs(numbers("steps", args.steps or "1,2,5,10,20,50", true)) do runs[i] = { steps = v } end
end

local ck = checkpoint.load(args.ckpt)
local model = checkpoint.build_model(ck, { ema = args.ema })
block_solver.apply(model, args, fail) -- --block-*: a cU-Net's ODE blocks solved otherwise than in training
local blocks = block_solver.describe(model)
local meter = block_solver.meter(model)
local sched = checkpoint.schedule(ck) -- its stored beta values: a Lua-made schedule too
local shape = ck.image_shape or fail(args.ckpt .. " does not record the image shape (image_shape)")
local net_path = fid.checkpoint_path(args.dataset)
if not net_path then fail(select(2, fid.checkpoint_path(args.dataset))) end

-- the real statistics first (computed once, then cached), so the timings below are generation only
if dist.rank() == 0 then
  local _, _, real = fid.real_stats(args.dataset, { split = args.split })
  print(string.format("%s: %s split, %d real images (%s %s)", fid.NAME, args.split, real.count,
    real.cached and "cached in" or "computed and cached in", real.cache))
end
print(string.format("checkpoint %s: step %d, %s weights, %s, T = %d, %s prediction; %d samples per step count%s",
  args.ckpt, ck.step, (args.ema and ck.ema) and "EMA" or "trained", ck.schedule or "linear", sched.T, ck.prediction or "eps",
  args.n, blocks and "; ODE blocks: " .. blocks or ""))

-- --append reads the earlier scan first, so a mismatch is refused before any sampling
local variant = args.sampler .. (gen.spacing and "_" .. gen.spacing or "") .. (gen.variance == "posterior" and "_posterior" or "")
  .. (gen.ode_method and "_" .. gen.ode_method or "")
local base = string.format("%s/fid_vs_steps_%s", args.out, variant)
local spacing = gen.spacing or (args.sampler == "ode" and "-") or diffusion.default_spacing[args.sampler]
local earlier = {}
local block_field = blocks and (blocks:gsub(" ", "_")) or "-" -- the CSV's block_solver
if args.append and fs.exists(base .. ".csv") then
  local err
  earlier, err = fid.read_scan(base .. ".csv")
  if not earlier then fail(err) end
  for _, r in ipairs(earlier) do
    if r.sampler ~= args.sampler or r.n ~= args.n or r.checkpoint ~= args.ckpt or (r.spacing and r.spacing ~= spacing)
      or (r.block_solver and r.block_solver ~= block_field) then
      fail(string.format("%s.csv holds another scan (%s %s, n = %s, %s, blocks %s); --append needs the same sampler, spacing, "
        .. "--n, --ckpt and block solver", base, r.sampler, r.spacing or "", r.n, r.checkpoint, r.block_solver or "-"))
    end
  end
end

local rows = {}
for _, run in ipairs(runs) do
  local count = run.steps
  if count and count > sched.T and args.sampler ~= "ode" then fail(string.format("%d steps is more than T = %d", count, sched.T)) end
  local label = count and string.format("%s %d steps", variant, count) or string.format("%s rtol %g", variant, run.rtol)
  local bar = dist.rank() == 0 and progress.new(args.n, { label = label, unit = "img" }) or nil
  -- batch c is drawn from seed + c - 1; under mpirun rank r draws batches r + 1, r + 1 + N, ... and
  -- rank 0 gathers them (docs/distributed.md): the same samples, and so the same scores, as one process
  local sizes = {}
  for first = 1, args.n, args.batch do sizes[#sizes + 1] = math.min(args.batch, args.n - first + 1) end
  local parts, done, nfe = {}, 0, 0
  if meter then meter:reset() end
  local t0 = cn.time()
  for _, c in ipairs(dist.my_chunks(#sizes)) do
    local opts = {}
    for k, v in pairs(gen) do opts[k] = v end
    opts.steps, opts.rtol, opts.atol = count, run.rtol, run.atol
    opts.prediction, opts.seed = ck.prediction, args.seed + c - 1
    local x, info = train.generate(model, sched, { sizes[c], shape[1], shape[2], shape[3] }, opts)
    nfe = nfe + info.nfe * sizes[c]
    parts[#parts + 1] = x
    done = done + sizes[c] * dist.world_size() -- about: the other ranks keep pace
    if bar then bar:update(math.min(done, args.n)) end
  end
  local samples = dist.gather_chunks(parts, sizes, shape)
  local seconds = cn.time() - t0 -- wall time: with N ranks, N batches at once
  if dist.world_size() > 1 then nfe = dist.all_reduce(cn.tensor{nfe}, "sum"):item() end
  if bar then bar:finish() end
  nfe = nfe / args.n -- an adaptive solver's count may differ from batch to batch: the mean per sample
  if dist.rank() == 0 then
    local r = fid.score(samples, args.dataset, { split = args.split })
    rows[#rows + 1] = { steps = count or math.floor(nfe + 0.5), fid = r.fid, kid = r.kid, kid_std = r.kid_std,
      seconds = seconds / args.n, nfe = nfe, rtol = run.rtol, atol = run.atol, block_solver = blocks,
      block_nfe = meter and meter:per_forward() }
  end
  samples, parts = nil, nil
  collectgarbage("collect")
end
if dist.rank() > 0 then return end

-- --append: the earlier rows of the same scan, for the step counts not measured again, in step order
if args.append then
  local measured = {}
  for _, r in ipairs(rows) do measured[r.steps] = true end
  for _, r in ipairs(earlier) do
    if not measured[r.steps] then rows[#rows + 1] = r end
  end
  table.sort(rows, function(a, b) return a.steps < b.steps end)
end

local best = rows[1]
for _, r in ipairs(rows) do
  if r.fid < best.fid then best = r end
end

fs.mkdir_p(args.out)
local csv = {fid.SCAN_HEADER}
for _, r in ipairs(rows) do
  csv[#csv + 1] = string.format("%d,%.9g,%.9g,%.9g,%.9g,%d,%s,%s,%s,%s,%.9g,%s,%s,%s,%s,%s,%s,%s", r.steps, r.fid, r.kid, r.kid_std, r.seconds, args.n,
    args.sampler, args.dataset, args.split, args.ckpt, r.nfe or r.steps, spacing, gen.variance or "-", gen.ode_method or "-",
    r.rtol and string.format("%g", r.rtol) or "-", r.atol and string.format("%g", r.atol) or "-",
    block_field, r.block_nfe and string.format("%.9g", r.block_nfe) or "-")
end
assert(fs.write_atomic(base .. ".csv", table.concat(csv, "\n") .. "\n"))

local xs, ys = {}, {}
local by_nfe = args.sampler == "ode"
for i, r in ipairs(rows) do xs[i], ys[i] = by_nfe and (r.nfe or r.steps) or r.steps, r.fid end
local png, err = plot.lines(base .. ".png", {
  title = string.format("%s vs %s (%s, %s, n = %d)", fid.NAME, by_nfe and "model evaluations" or "sampling steps",
    variant:upper(), args.dataset, args.n),
  xlabel = by_nfe and "model evaluations (NFE)" or "sampling steps", ylabel = fid.NAME .. " (lower is better)",
  series = { { name = variant:upper(), x = xs, y = ys } },
  logx = #rows > 1 and rows[#rows].steps / rows[1].steps >= 10, csv = false,
})

print("")
print(string.format("%8s  %8s  %26s  %26s  %14s%s%s", "steps", "NFE", fid.NAME, fid.KID_NAME, "s per sample",
  meter and "  block NFE/forward" or "", gen.rtol and "  rtol / atol" or ""))
for _, r in ipairs(rows) do
  print(string.format("%8d  %8.1f  %26.3f  %17.4f ± %6.4f  %14.4f%s%s%s", r.steps, r.nfe or r.steps, r.fid, r.kid, r.kid_std, r.seconds,
    r.block_nfe and string.format("  %18.1f", r.block_nfe) or "",
    r.rtol and string.format("  %g / %g", r.rtol, r.atol) or "", r == best and "  <- best" or ""))
end
print(string.format("best: %d steps, %s %.3f, %.4f s per sample (%s, %d samples)", best.steps, fid.NAME, best.fid,
  best.seconds, variant, args.n))
print(string.format("%s is not comparable with Inception-FID (the paper's Table 1).", fid.NAME))
print("wrote " .. base .. ".csv")
if png then print("wrote " .. png) else print(err) end
