-- recipes/train_unet.lua — train a DDPM denoiser (lua/cunet/train.lua) on MNIST, Fashion-MNIST or a
-- folder of PNGs; resumable. See docs/training.md.
--
--   cunet recipes/train_unet.lua                                   -- the small MNIST preset
--   cunet recipes/train_unet.lua --data folder:celeba --size 64 --preset 64 --out runs/celeba
--   cunet recipes/train_unet.lua --steps 20000 --resume runs/unet/checkpoint.safetensors

local cn = require "cunet"
local cli = require "cunet.cli"
local train = require "cunet.train"
local checkpoint = require "cunet.checkpoint"

local args = cli.parse(arg, {
  name = "train_unet",
  usage = "cunet recipes/train_unet.lua [options]",
  description = "Train a DDPM U-Net; checkpoints, loss.csv and sample grids go to --out.",
  options = {
    {"data", "mnist", "dataset: mnist | fashion-mnist | folder:PATH"},
    {"size", 0, "image size (0: the preset's resolution)"},
    {"limit", 0, "train on the first N images only (0: all)"},
    {"preset", "mnist_small", "model preset (unet.presets: mnist_small, mnist, cifar10, 32, 64, ...)"},
    {"model", "cunet.models.unet", "Lua module of the network: from_preset(name, overrides) and from_config or UNet(config)"},
    {"steps", 5000, "total training steps (a resumed run continues up to it)"},
    {"batch", 64, "batch size"},
    {"lr", 2e-4, "learning rate"},
    {"optimizer", "adam", "adam | adamw"},
    {"betas", "0.9,0.999", "Adam betas beta1,beta2"},
    {"weight-decay", 0, "weight decay"},
    {"warmup", 200, "linear learning-rate warmup steps"},
    {"ema", 0.9995, "EMA decay (0: no EMA)"},
    {"clip", 1.0, "gradient-norm clipping (0: none)"},
    {"schedule", nil, "beta schedule: linear | cosine | sigmoid | scaled_linear (default linear; on --resume the checkpoint's)"},
    {"T", 0, "diffusion steps (0: 1000; on --resume the checkpoint's)"},
    {"prediction", nil, "eps | x0 | v (default eps; on --resume the checkpoint's)", type = "string"},
    {"flip", false, "random horizontal flips"},
    {"out", "runs/unet", "output directory"},
    {"resume", nil, "checkpoint to continue from", type = "string"},
    {"checkpoint-every", 1000, "checkpoint every N steps (the last step always is)"},
    {"keep", false, "also keep checkpoint_step<N>.safetensors at each checkpoint"},
    {"sample-every", 1000, "sample grid every N steps (0: none)"},
    {"sample-steps", 50, "DDIM steps for the sample grids"},
    {"log-every", 100, "log line every N steps (when not on a terminal)"},
    {"seed", 0, "random seed (model initialisation, data order, training draws)"},
    {"threads", 0, "threads (0: all cores)"},
  },
})

if args.threads > 0 then cn.set_num_threads(args.threads) end
local ck = args.resume and checkpoint.load(args.resume) -- on resume the model, schedule and prediction are the checkpoint's
local module_name = ck and ck.model_module or args.model
local models = require(module_name)
local size = args.size
if ck then
  size = ck.image_shape and ck.image_shape[2] or ck.config.resolution
elseif size == 0 then
  size = models.presets and models.presets[args.preset] and models.presets[args.preset].resolution or 28
end
local ds = train.dataset(args.data, {size = size, limit = args.limit})
print(string.format("%s: %d images %s", args.data, ds.images:size(1), table.concat(ds.images:shape(), "x", 2)))
local model
if ck then
  model = checkpoint.build_model(ck, {module = module_name, ema = false})
else
  cn.seed(args.seed)
  local overrides, preset = {resolution = size, in_channels = ds.images:size(2)}, models.presets and models.presets[args.preset]
  if preset and preset.attn_resolutions and preset.resolution ~= size then -- keep attention at the same levels
    overrides.attn_resolutions = {}
    for i, r in ipairs(preset.attn_resolutions) do overrides.attn_resolutions[i] = r * size // preset.resolution end
  end
  model = models.from_preset(args.preset, overrides)
end
print(string.format("model %s: %d parameters", ck and "from " .. args.resume or args.preset, model:num_parameters()))

local beta1, beta2 = args.betas:match("^%s*([%d.eE+-]+)%s*,%s*([%d.eE+-]+)%s*$")
if not tonumber(beta1) or not tonumber(beta2) then error("train_unet: --betas expects two numbers like 0.9,0.999, got " .. args.betas, 0) end
local result = train.run{
  model = model, model_module = module_name, dataset = ds, steps = args.steps, batch_size = args.batch,
  lr = args.lr, betas = {tonumber(beta1), tonumber(beta2)}, optimizer = args.optimizer, weight_decay = args.weight_decay, warmup = args.warmup,
  ema = args.ema, clip = args.clip, flip = args.flip, seed = args.seed,
  schedule = args.schedule or (ck and ck.schedule) or "linear",
  T = args.T > 0 and args.T or (ck and ck.T) or 1000,
  prediction = args.prediction or (ck and ck.prediction) or "eps",
  out = args.out, resume = args.resume, checkpoint_every = args.checkpoint_every, keep_checkpoints = args.keep,
  sample_every = args.sample_every, sample_steps = args.sample_steps, log_every = args.log_every,
}
print(string.format("step %d: loss %s, %.1f s; checkpoint %s", result.step, result.loss and string.format("%.4f", result.loss) or "-",
  result.seconds, tostring(result.checkpoint)))
