-- recipes/fid_vs_steps.lua — FID (classifier features) and KID against the number of sampling steps, for
-- a checkpoint written by recipes/train_unet.lua: the paper's Table 1 protocol (the best step count
-- and the time per sample) on our 28×28 data sets. See docs/efficiency.md.
--
--   cunet recipes/fid_vs_steps.lua --ckpt runs/unet/checkpoint.safetensors --sampler ddim --steps 1,2,5,10,20,50 --n 1000
--   cunet recipes/fid_vs_steps.lua --ckpt runs/cunet/checkpoint.safetensors --sampler ddpm --dataset fashion-mnist
--
-- For every step count it draws --n samples (the same seeds for every count), scores them against
-- the cached statistics of the real split with the classifier features (lua/cunet/fid.lua: not
-- comparable with Inception-FID), and times the generation. Writes <out>/fid_vs_steps_<sampler>.csv
-- and .png, prints the table and the best step count.

local cn = require "cunet"
local cli = require "cunet.cli"
local train = require "cunet.train"
local checkpoint = require "cunet.checkpoint"
local progress = require "cunet.progress"
local fid = require "cunet.fid"
local plot = require "cunet.plot"
local fs = require "cunet.fs"

local args = cli.parse(arg, {
  name = "fid_vs_steps",
  usage = "cunet recipes/fid_vs_steps.lua --ckpt PATH [options]",
  description = "FID and KID (classifier features) and time per sample against the number of sampling steps.",
  options = {
    {"ckpt", "runs/unet/checkpoint.safetensors", "training checkpoint (recipes/train_unet.lua)"},
    {"sampler", "ddim", "ddim | ddpm (fewer ddpm steps than T run on the respaced schedule)", choices = {"ddim", "ddpm"}},
    {"steps", "1,2,5,10,20,50", "step counts, comma-separated"},
    {"n", 1000, "samples per step count", integer = true, min = 2},
    {"batch", 250, "samples generated at once", integer = true, min = 1},
    {"dataset", "mnist", "the data set the checkpoint was trained on: mnist | fashion-mnist (its classifier is the feature network)"},
    {"split", "train", "the real split the statistics come from (mnist: train 9,000 | test 1,000; fashion-mnist: train | test)"},
    {"eta", 0, "DDIM eta", min = 0},
    {"ema", true, "the EMA weights (--no-ema: the trained ones)"},
    {"seed", 0, "noise seed (the same for every step count)", integer = true, min = 0},
    {"out", "runs/fid_vs_steps", "output directory for the CSV and the plot"},
    {"append", false, "extend the CSV already in --out (same checkpoint, sampler and n): its rows are kept, these step counts added or replaced"},
    {"threads", 0, "threads (0: all cores)", integer = true, min = 0},
  },
})

local function fail(msg)
  io.stderr:write("fid_vs_steps: " .. msg .. "\n")
  os.exit(2)
end

if args.threads > 0 then cn.set_num_threads(args.threads) end
local steps = {}
for s in args.steps:gmatch("[^,]+") do
  local v = math.tointeger(tonumber(s))
  if not v or v < 1 then fail("--steps must be positive integers separated by commas, got " .. args.steps) end
  steps[#steps + 1] = v
end
if #steps == 0 then fail("--steps is empty") end

local ck = checkpoint.load(args.ckpt)
local model = checkpoint.build_model(ck, { ema = args.ema })
local sched = checkpoint.schedule(ck) -- its stored beta values: a Lua-made schedule too
local shape = ck.image_shape or fail(args.ckpt .. " does not record the image shape (image_shape)")
local net_path = fid.checkpoint_path(args.dataset)
if not net_path then fail(select(2, fid.checkpoint_path(args.dataset))) end

-- the real statistics first (computed once, then cached), so the timings below are generation only
local _, _, real = fid.real_stats(args.dataset, { split = args.split })
print(string.format("%s: %s split, %d real images (%s %s)", fid.NAME, args.split, real.count,
  real.cached and "cached in" or "computed and cached in", real.cache))
print(string.format("checkpoint %s: step %d, %s weights, %s, T = %d, %s prediction; %d samples per step count",
  args.ckpt, ck.step, (args.ema and ck.ema) and "EMA" or "trained", ck.schedule or "linear", sched.T, ck.prediction or "eps",
  args.n))

-- --append reads the earlier scan first, so a mismatch is refused before any sampling
local base = string.format("%s/fid_vs_steps_%s", args.out, args.sampler)
local earlier = {}
if args.append and fs.exists(base .. ".csv") then
  local err
  earlier, err = fid.read_scan(base .. ".csv")
  if not earlier then fail(err) end
  for _, r in ipairs(earlier) do
    if r.sampler ~= args.sampler or r.n ~= args.n or r.checkpoint ~= args.ckpt then
      fail(string.format("%s.csv holds another scan (%s, n = %s, %s); --append needs the same sampler, --n and --ckpt",
        base, r.sampler, r.n, r.checkpoint))
    end
  end
end

local rows = {}
for _, count in ipairs(steps) do
  if count > sched.T then fail(string.format("%d steps is more than T = %d", count, sched.T)) end
  local bar = progress.new(args.n, { label = string.format("%s %d steps", args.sampler, count), unit = "img" })
  local parts, done, seconds = {}, 0, 0
  local batch_index = 0
  while done < args.n do
    local b = math.min(args.batch, args.n - done)
    local t0 = cn.time()
    local x = train.generate(model, sched, { b, shape[1], shape[2], shape[3] }, { sampler = args.sampler, steps = count,
      eta = args.eta, prediction = ck.prediction, seed = args.seed + batch_index })
    seconds = seconds + (cn.time() - t0)
    parts[#parts + 1] = x
    done, batch_index = done + b, batch_index + 1
    bar:update(done)
  end
  bar:finish()
  local samples = #parts == 1 and parts[1] or cn.cat(parts, 1)
  local r = fid.score(samples, args.dataset, { split = args.split })
  rows[#rows + 1] = { steps = count, fid = r.fid, kid = r.kid, kid_std = r.kid_std, seconds = seconds / args.n }
  samples, parts = nil, nil
  collectgarbage("collect")
end

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
local f = assert(io.open(base .. ".csv", "w"))
f:write(fid.SCAN_HEADER, "\n")
for _, r in ipairs(rows) do
  f:write(string.format("%d,%.9g,%.9g,%.9g,%.9g,%d,%s,%s,%s,%s\n", r.steps, r.fid, r.kid, r.kid_std, r.seconds, args.n,
    args.sampler, args.dataset, args.split, args.ckpt))
end
f:close()

local xs, ys = {}, {}
for i, r in ipairs(rows) do xs[i], ys[i] = r.steps, r.fid end
local png, err = plot.lines(base .. ".png", {
  title = string.format("%s vs sampling steps (%s, %s, n = %d)", fid.NAME, args.sampler:upper(), args.dataset, args.n),
  xlabel = "sampling steps", ylabel = fid.NAME .. " (lower is better)",
  series = { { name = args.sampler:upper(), x = xs, y = ys } },
  logx = #rows > 1 and rows[#rows].steps / rows[1].steps >= 10, csv = false,
})

print("")
print(string.format("%8s  %26s  %26s  %14s", "steps", fid.NAME, fid.KID_NAME, "s per sample"))
for _, r in ipairs(rows) do
  print(string.format("%8d  %26.3f  %17.4f ± %6.4f  %14.4f%s", r.steps, r.fid, r.kid, r.kid_std, r.seconds,
    r == best and "  <- best" or ""))
end
print(string.format("best: %d steps, %s %.3f, %.4f s per sample (%s, %d samples)", best.steps, fid.NAME, best.fid,
  best.seconds, args.sampler, args.n))
print(string.format("%s is not comparable with Inception-FID (the paper's Table 1).", fid.NAME))
print("wrote " .. base .. ".csv")
if png then print("wrote " .. png) else print(err) end
