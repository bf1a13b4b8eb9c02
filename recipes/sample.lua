-- recipes/sample.lua — a grid of samples from a training checkpoint (recipes/train_unet.lua). The
-- model is rebuilt from the checkpoint's config; see docs/training.md.
--
--   cunet recipes/sample.lua --ckpt runs/unet/checkpoint.safetensors --out grid.png
--   cunet recipes/sample.lua --sampler ddpm --steps 1000 --n 64 --no-ema

local cn = require "cunet"
local cli = require "cunet.cli"
local train = require "cunet.train"
local checkpoint = require "cunet.checkpoint"
local image = require "cunet.image"

local args = cli.parse(arg, {
  name = "sample",
  usage = "cunet recipes/sample.lua [options]",
  description = "Sample images from a checkpoint with DDPM or DDIM and save them as one PNG grid.",
  options = {
    {"ckpt", "runs/unet/checkpoint.safetensors", "training checkpoint"},
    {"sampler", "ddim", "ddim | ddpm", choices = {"ddim", "ddpm"}},
    {"steps", 0, "sampling steps (0: 50 for ddim, T for ddpm; fewer ddpm steps respace the schedule)", integer = true, min = 0},
    {"eta", 0, "DDIM eta (0: deterministic, 1: DDPM-like noise)", min = 0},
    {"n", 16, "number of samples", integer = true, min = 1},
    {"nrow", 0, "images per grid row (0: about sqrt(n))", integer = true, min = 0},
    {"seed", 0, "random seed", integer = true, min = 0},
    {"ema", true, "use the EMA weights (--no-ema: the trained ones)"},
    {"out", "samples.png", "PNG to write"},
    {"threads", 0, "threads (0: all cores)", integer = true, min = 0},
  },
})

if args.threads > 0 then cn.set_num_threads(args.threads) end
local ck = checkpoint.load(args.ckpt)
local model = checkpoint.build_model(ck, {ema = args.ema})
local sched = checkpoint.schedule(ck) -- its stored beta values: a Lua-made schedule too
local shape = ck.image_shape
if not shape then error("sample: " .. args.ckpt .. " does not record the image shape (image_shape)", 0) end

local t0 = cn.time()
local x = train.generate(model, sched, {args.n, shape[1], shape[2], shape[3]}, {sampler = args.sampler, steps = args.steps > 0 and args.steps or nil,
  eta = args.eta, prediction = ck.prediction, seed = args.seed})
local seconds = cn.time() - t0
image.save_grid(x, args.out, {range = {-1, 1}, nrow = args.nrow > 0 and args.nrow or math.ceil(math.sqrt(args.n))})
print(string.format("wrote %s: %d samples, %s %s, step %d %s weights; %.3f s per sample", args.out, args.n, args.sampler,
  args.steps > 0 and (args.steps .. " steps") or "default steps", ck.step, (args.ema and ck.ema) and "EMA" or "trained",
  seconds / args.n))
