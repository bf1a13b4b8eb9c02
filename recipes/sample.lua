-- recipes/sample.lua — a grid of samples from a training checkpoint (recipes/train_unet.lua). The
-- model is rebuilt from the checkpoint's config; see docs/training.md.
--
--   cunet recipes/sample.lua --ckpt runs/unet/checkpoint.safetensors --out grid.png
--   cunet recipes/sample.lua --sampler ddpm --steps 1000 --n 64 --no-ema
--   cunet recipes/sample.lua --sampler ddim --spacing trailing --steps 10
--   cunet recipes/sample.lua --sampler dpmpp_2m --steps 10                 -- DPM-Solver++(2M), logSNR grid
--   cunet recipes/sample.lua --sampler ode --ode-method dopri5 --rtol 1e-3 -- the probability-flow ODE

local cn = require "cunet"
local cli = require "cunet.cli"
local train = require "cunet.train"
local checkpoint = require "cunet.checkpoint"
local image = require "cunet.image"

local spec = {
  name = "sample",
  usage = "cunet recipes/sample.lua [options]",
  description = "Sample images from a checkpoint (DDIM, DDPM, DPM-Solver++(2M) or the probability-flow ODE) and save them as one PNG grid.",
  options = {
    {"ckpt", "runs/unet/checkpoint.safetensors", "training checkpoint"},
    {"steps", 0, "sampling steps (0: the sampler's default: ddim 50, ddpm T (fewer respace the schedule), dpmpp_2m 20, "
      .. "ode with a fixed-step method 10)", integer = true, min = 0},
    {"n", 16, "number of samples", integer = true, min = 1},
    {"nrow", 0, "images per grid row (0: about sqrt(n))", integer = true, min = 0},
    {"seed", 0, "random seed", integer = true, min = 0},
    {"ema", true, "use the EMA weights (--no-ema: the trained ones)"},
    {"out", "samples.png", "PNG to write"},
    {"threads", 0, "threads (0: all cores)", integer = true, min = 0},
  },
}
for i, o in ipairs(train.sampler_cli_options()) do table.insert(spec.options, 1 + i, o) end
local args = cli.parse(arg, spec)
local function fail(msg) cli.fail(spec, msg) end
local gen = train.sampler_args(args, fail)
if args.sampler == "ode" and args.steps > 0 and (gen.rtol or gen.atol) then
  fail("--steps is for the fixed-step --ode-method (rk4, ...), not " .. args.ode_method .. " (it takes --rtol, --atol)")
end

if args.threads > 0 then cn.set_num_threads(args.threads) end
local ck = checkpoint.load(args.ckpt)
local model = checkpoint.build_model(ck, {ema = args.ema})
local sched = checkpoint.schedule(ck) -- its stored beta values: a Lua-made schedule too
local shape = ck.image_shape
if not shape then error("sample: " .. args.ckpt .. " does not record the image shape (image_shape)", 0) end

local t0 = cn.time()
gen.steps, gen.prediction, gen.seed = args.steps > 0 and args.steps or nil, ck.prediction, args.seed
local x, info = train.generate(model, sched, {args.n, shape[1], shape[2], shape[3]}, gen)
local seconds = cn.time() - t0
image.save_grid(x, args.out, {range = {-1, 1}, nrow = args.nrow > 0 and args.nrow or math.ceil(math.sqrt(args.n))})
local how = args.sampler
if gen.spacing then how = how .. " " .. gen.spacing end
if gen.variance then how = how .. " " .. gen.variance end
if gen.ode_method then how = how .. " " .. gen.ode_method .. (gen.rtol and string.format(" rtol %g atol %g", gen.rtol, gen.atol) or "") end
print(string.format("wrote %s: %d samples, %s, %d model evaluations, step %d %s weights; %.3f s per sample", args.out, args.n,
  how, info.nfe, ck.step, (args.ema and ck.ema) and "EMA" or "trained", seconds / args.n))
