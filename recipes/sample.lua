-- recipes/sample.lua — a grid of samples from a training checkpoint (recipes/train_unet.lua). The
-- model is rebuilt from the checkpoint's config; see docs/training.md.
--
--   ./cunet recipes/sample.lua --ckpt runs/unet/checkpoint.safetensors --out grid.png
--   ./cunet recipes/sample.lua --sampler ddpm --steps 1000 --n 64 --no-ema
--   ./cunet recipes/sample.lua --sampler ddim --spacing trailing --steps 10
--   ./cunet recipes/sample.lua --sampler dpmpp_2m --steps 10                 -- DPM-Solver++(2M), logSNR grid
--   ./cunet recipes/sample.lua --sampler ode --ode-method dopri5 --rtol 1e-3 -- the probability-flow ODE

local cn = require "cunet"
local cli = require "cunet.cli"
local train = require "cunet.train"
local checkpoint = require "cunet.checkpoint"
local image = require "cunet.image"
local dist = require "cunet.distributed"
local block_solver = require "cunet.block_solver"

local spec = {
  name = "sample",
  usage = "cunet recipes/sample.lua [options]",
  description = "Sample images from a checkpoint (DDIM, DDPM, DPM-Solver++(2M) or the probability-flow ODE) and save them as one PNG grid.",
  options = {
    {"ckpt", "runs/unet/checkpoint.safetensors", "training checkpoint"},
    {"steps", 0, "sampling steps (0: the sampler's default: ddim 50, ddpm T (fewer respace the schedule), dpmpp_2m 20, "
      .. "ode with a fixed-step method 10)", integer = true, min = 0},
    {"n", 16, "number of samples", integer = true, min = 1},
    {"batch", 64, "samples drawn at once: chunk c from seed + c - 1 (under mpirun the ranks share the chunks)", integer = true, min = 1},
    {"tensor", nil, "also save the samples [n, C, H, W] in [-1, 1] to this safetensors file (key 'samples')", type = "string"},
    {"nrow", 0, "images per grid row (0: about sqrt(n))", integer = true, min = 0},
    {"seed", 0, "random seed", integer = true, min = 0},
    {"ema", true, "use the EMA weights (--no-ema: the trained ones)"},
    {"out", "samples.png", "PNG to write"},
    {"threads", 0, "threads (0: all cores)", integer = true, min = 0},
  },
}
for i, o in ipairs(train.sampler_cli_options()) do table.insert(spec.options, 1 + i, o) end
for _, o in ipairs(block_solver.cli_options()) do spec.options[#spec.options + 1] = o end
local args = cli.parse(arg, spec)
local function fail(msg) cli.fail(spec, msg) end
local gen = train.sampler_args(args, fail)
if args.sampler == "ode" and args.steps > 0 and (gen.rtol or gen.atol) then
  fail("--steps is for the fixed-step --ode-method (rk4, ...), not " .. args.ode_method .. " (it takes --rtol, --atol)")
end

dist.setup()
if args.threads > 0 then cn.set_num_threads(args.threads) end
local ck = checkpoint.load(args.ckpt)
local model = checkpoint.build_model(ck, {ema = args.ema})
block_solver.apply(model, args, fail) -- --block-*: a cU-Net's ODE blocks solved otherwise than in training
local meter = block_solver.meter(model)
local sched = checkpoint.schedule(ck) -- its stored beta values: a Lua-made schedule too
local shape = ck.image_shape
if not shape then error("sample: " .. args.ckpt .. " does not record the image shape (image_shape)", 0) end

local t0 = cn.time()
gen.steps, gen.prediction = args.steps > 0 and args.steps or nil, ck.prediction
-- chunks of --batch samples, chunk c drawn from seed + c - 1; under mpirun rank r draws chunks
-- r + 1, r + 1 + N, ... and rank 0 gathers them: the same samples as one process (docs/distributed.md)
local sizes = {}
for first = 1, args.n, args.batch do sizes[#sizes + 1] = math.min(args.batch, args.n - first + 1) end
if dist.world_size() > #sizes then
  dist.print(string.format("sample: %d chunks of --batch %d for %d ranks: %d ranks idle (a smaller --batch shares the work)",
    #sizes, args.batch, dist.world_size(), dist.world_size() - #sizes))
end
local parts, info = {}, {nfe = 0}
for _, c in ipairs(dist.my_chunks(#sizes)) do
  gen.seed = args.seed + c - 1
  parts[#parts + 1], info = train.generate(model, sched, {sizes[c], shape[1], shape[2], shape[3]}, gen)
end
local x = dist.gather_chunks(parts, sizes, shape)
local seconds = cn.time() - t0
if dist.rank() > 0 then return end
image.save_grid(x, args.out, {range = {-1, 1}, nrow = args.nrow > 0 and args.nrow or math.ceil(math.sqrt(args.n))})
if args.tensor then cn.save(args.tensor, {samples = x}) end
local how = args.sampler
if gen.spacing then how = how .. " " .. gen.spacing end
if gen.variance then how = how .. " " .. gen.variance end
if gen.ode_method then how = how .. " " .. gen.ode_method .. (gen.rtol and string.format(" rtol %g atol %g", gen.rtol, gen.atol) or "") end
print(string.format("wrote %s: %d samples, %s, %d model evaluations, step %d %s weights; %.4g s per sample", args.out, args.n,
  how, info.nfe, ck.step, (args.ema and ck.ema) and "EMA" or "trained", seconds / args.n))
if meter and meter:per_forward() then
  print(string.format("ODE blocks: %s, %.1f function evaluations per forward (all blocks)", block_solver.describe(model),
    meter:per_forward()))
end
