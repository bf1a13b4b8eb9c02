-- train_recipe — the command line shared by every training recipe (train_unet.lua, train_cunet.lua and
-- the cU-Net ablations): options, dataset, model from a preset or a checkpoint, train.run.
--
--   require("cunet.train_recipe").main(arg, {
--     name = "ablation_noattn", model = "cunet.models.continuous_unet", ablation = "no_attention",
--     out = "runs/ablation_noattn", description = "The cU-Net without attention (Appendix C).",
--   })
--
-- The spec sets the recipe's defaults; every one stays an option on the command line (--help lists them).

local cn = require "cunet"
local cli = require "cunet.cli"
local train = require "cunet.train"
local checkpoint = require "cunet.checkpoint"

local M = {}

--- The option table of a recipe whose defaults come from spec (model, preset, out, ablation, steps, lr...).
function M.options(spec)
  local continuous = spec.continuous
  local opts = {
    {"data", spec.data or "mnist", "dataset: mnist | fashion-mnist | folder:PATH"},
    {"size", 0, "image size (0: the preset's resolution)"},
    {"limit", 0, "train on the first N images only (0: all)"},
    {"preset", spec.preset or "mnist_small", "model preset (the model module's presets: mnist_small, mnist, ...)"},
    {"model", spec.model or "cunet.models.unet", "Lua module of the network: from_preset(name, overrides) and from_config or UNet(config)"},
    {"steps", spec.steps or 5000, "total training steps (a resumed run continues up to it)"},
    {"batch", spec.batch or 64, "batch size"},
    {"lr", spec.lr or 2e-4, "learning rate"},
    {"optimizer", "adam", "adam | adamw"},
    {"betas", "0.9,0.999", "Adam betas beta1,beta2"},
    {"weight-decay", 0, "weight decay"},
    {"warmup", spec.warmup or 200, "linear learning-rate warmup steps"},
    {"ema", spec.ema or 0.9995, "EMA decay (0: no EMA)"},
    {"clip", 1.0, "gradient-norm clipping (0: none)"},
    {"schedule", nil, "beta schedule: linear | cosine | sigmoid | scaled_linear (default linear; on --resume the checkpoint's)"},
    {"T", 0, "diffusion steps (0: 1000; on --resume the checkpoint's)"},
    {"prediction", nil, "eps | x0 | v (default eps; on --resume the checkpoint's)", type = "string"},
    {"flip", false, "random horizontal flips"},
    {"out", spec.out or "runs/unet", "output directory"},
    {"resume", nil, "checkpoint to continue from", type = "string"},
    {"checkpoint-every", spec.checkpoint_every or 1000, "checkpoint every N steps (the last step always is)"},
    {"keep", false, "also keep checkpoint_step<N>.safetensors at each checkpoint"},
    {"sample-every", spec.sample_every or 1000, "sample grid every N steps (0: none)"},
    {"sample-steps", 50, "DDIM steps for the sample grids"},
    {"log-every", 100, "log line every N steps (when not on a terminal)"},
    {"seed", 0, "random seed (model initialisation, data order, training draws)"},
    {"threads", 0, "threads (0: all cores)"},
  }
  if continuous then -- the cU-Net's own switches (continuous_unet.defaults documents each)
    local more = {
      {"ablation", spec.ablation or "none", "none | no_attention | no_resblocks | no_attention_no_resblocks | time_embedding_only"},
      {"method", nil, "ODE solver: euler | midpoint | heun | rk4 | rk4_38 | bosh3 | dopri5 (default: the preset's)", type = "string"},
      {"ode-steps", 0, "fixed solver steps per ODE block (0: the preset's)"},
      {"adjoint", false, "gradients through the adjoint ODE instead of backpropagation through the solver"},
      {"form", nil, "second_order | augmented (default: the preset's)", type = "string"},
    }
    for _, o in ipairs(more) do opts[#opts + 1] = o end
  end
  return opts
end

-- Options that become model overrides (a fresh model only; a resumed one keeps its checkpoint's config).
local function model_overrides(args, spec, size, in_channels, models)
  local overrides = {resolution = size, in_channels = in_channels}
  local preset = models.presets and models.presets[args.preset]
  if preset and preset.attn_resolutions and preset.resolution ~= size then -- keep attention at the same levels
    overrides.attn_resolutions = {}
    for i, r in ipairs(preset.attn_resolutions) do overrides.attn_resolutions[i] = r * size // preset.resolution end
  end
  if spec.continuous then
    overrides.ablation = args.ablation
    overrides.method = args.method
    overrides.steps = args.ode_steps > 0 and math.tointeger(args.ode_steps) or nil
    overrides.adjoint = args.adjoint or nil
    overrides.form = args.form
  end
  return overrides
end

--- Parses argv with the recipe's spec, trains, and prints the final line; returns train.run's result.
function M.main(argv, spec)
  local name = spec.name
  local args = cli.parse(argv, {
    name = name,
    usage = "cunet recipes/" .. name .. ".lua [options]",
    description = spec.description,
    options = M.options(spec),
    epilog = spec.epilog,
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
    model = models.from_preset(args.preset, model_overrides(args, spec, size, ds.images:size(2), models))
  end
  print(string.format("model %s: %d parameters%s", ck and "from " .. args.resume or args.preset, model:num_parameters(),
    spec.continuous and not ck and ", ablation " .. args.ablation or ""))

  local beta1, beta2 = args.betas:match("^%s*([%d.eE+-]+)%s*,%s*([%d.eE+-]+)%s*$")
  if not tonumber(beta1) or not tonumber(beta2) then
    error(string.format("%s: --betas expects two numbers like 0.9,0.999, got %s", name, args.betas), 0)
  end
  local result = train.run{
    model = model, model_module = module_name, dataset = ds, steps = args.steps, batch_size = args.batch,
    lr = args.lr, betas = {tonumber(beta1), tonumber(beta2)}, optimizer = args.optimizer, weight_decay = args.weight_decay,
    warmup = args.warmup, ema = args.ema, clip = args.clip, flip = args.flip, seed = args.seed,
    schedule = args.schedule or (ck and ck.schedule) or "linear",
    T = args.T > 0 and args.T or (ck and ck.T) or 1000,
    prediction = args.prediction or (ck and ck.prediction) or "eps",
    out = args.out, resume = args.resume, checkpoint_every = args.checkpoint_every, keep_checkpoints = args.keep,
    sample_every = args.sample_every, sample_steps = args.sample_steps, log_every = args.log_every,
  }
  print(string.format("step %d: loss %s, %.1f s; checkpoint %s", result.step,
    result.loss and string.format("%.4f", result.loss) or "-", result.seconds, tostring(result.checkpoint)))
  return result
end

--- The cU-Net comparison's training settings (docs/results.md): the same optimizer, batch and
-- learning-rate schedule as the U-Net it is compared with. Recipes copy and adjust them.
M.cunet_defaults = {
  continuous = true, model = "cunet.models.continuous_unet", out = "runs/cunet",
  steps = 6000, lr = 1e-3, warmup = 100, ema = 0.999, checkpoint_every = 500,
}

--- The Appendix C ablations: recipe name → the ablation it trains and what it removes.
M.ablation_recipes = {
  ablation_noattn = { "no_attention", "without attention" },
  ablation_nores = { "no_resblocks", "without residual ODE functions (resblocks)" },
  ablation_noattn_nores = { "no_attention_no_resblocks", "without attention and without resblocks" },
  ablation_timeonly = { "time_embedding_only",
    "with the diffusion time entering only through an embedding added to each block's input" },
}

--- A cU-Net recipe's spec: cunet_defaults with `fields` on top (a new table).
function M.cunet_spec(fields)
  local spec = {}
  for k, v in pairs(M.cunet_defaults) do spec[k] = v end
  for k, v in pairs(fields) do spec[k] = v end
  return spec
end

--- Runs the ablation recipe `name` (a key of ablation_recipes): the cU-Net defaults, 3000 steps.
function M.ablation(argv, name)
  local a = M.ablation_recipes[name]
  if not a then error(string.format("train_recipe.ablation: unknown recipe %q", tostring(name)), 2) end
  return M.main(argv, M.cunet_spec {
    name = name, ablation = a[1], out = "runs/" .. name, steps = 3000,
    description = "Appendix C ablation: the cU-Net " .. a[2] .. ";\ncheckpoints, loss.csv and sample grids go to --out.",
  })
end

return M
