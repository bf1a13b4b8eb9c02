-- train_recipe — the command line shared by every training recipe (train_unet.lua, train_cunet.lua and
-- the cU-Net ablations): options, dataset, model from a preset or a checkpoint, train.run.
--
--   require("cunet.train_recipe").main(arg, {
--     name = "ablation_noattn", description = "The cU-Net without attention (Appendix C).",
--     model = "cunet.models.continuous_unet", continuous = true, ablation = "no_attention",
--     steps = 3000, lr = 1e-3, warmup = 100, ema = 0.999, out = "runs/ablation_noattn",
--   })
--
-- The spec is the recipe's experiment: what it sets is that option's default; every other training
-- option defaults to train.defaults (lua/cunet/train.lua), the one table of training defaults. Every
-- one stays an option on the command line, and --help shows the value a run gets.
--
-- --resume continues the run as it was: the options not on the command line come from the
-- checkpoint (the trainer's from its "train" record, the recipe's own from its "run"); one given
-- that differs is applied with a notice ("resume: lr 0.0002 -> 0.0001 (given on resume)"), except
-- what makes the model (its module, preset, image size, the cU-Net's ablation and solver) and what
-- defines the run (schedule, T, prediction, seed, optimizer): those are refused. A checkpoint of
-- another model family is refused too. --model and --schedule also take Lua files (docs/training.md).

local cn = require "cunet"
local cli = require "cunet.cli"
local train = require "cunet.train"
local checkpoint = require "cunet.checkpoint"
local diffusion = require "cunet.diffusion"
local check_options = require("cunet.options").check
local distributed = require "cunet.distributed"
local print = distributed.print -- under mpirun, rank 0 speaks for the job

local M = {}

M.DEFAULT_MODEL = "cunet.models.unet"

-- The keys of a recipe's spec (a misspelt one, say `ablaton`, would train another experiment).
local SPEC_KEYS = {"name", "description", "epilog", "continuous", "data", "preset", "model", "steps", "batch", "lr",
  "warmup", "ema", "clip", "out", "checkpoint_every", "sample_every", "ablation", "denoiser"}

-- The options of diffusion training only: a denoiser recipe (spec.denoiser) has none of them.
local DIFFUSION_ONLY = {schedule = true, T = true, prediction = true, ["sample-every"] = true, ["sample-steps"] = true}

--- The option table of a recipe: each option's default is the spec's value when it sets one, else
-- train.defaults' (the one table of training defaults), so --help shows what a run gets.
function M.options(spec)
  check_options(spec, SPEC_KEYS, "train_recipe")
  local continuous = spec.continuous
  local D = train.defaults
  local function default(key, train_key)
    if spec[key] ~= nil then return spec[key] end
    return D[train_key or key]
  end
  local opts = {
    {"data", spec.data or "mnist", "dataset: mnist | fashion-mnist | folder:PATH"},
    {"size", 0, "image size (0: the preset's resolution)", integer = true, min = 0},
    {"limit", 0, "train on the first N images only (0: all)", integer = true, min = 0},
    {"preset", spec.preset or "mnist_small", "model preset (the model module's presets: mnist_small, mnist, ...)"},
    {"model", spec.model or M.DEFAULT_MODEL, "the network: a Lua module name or a .lua file (from_config(config), optional from_preset and presets)"},
    {"steps", default("steps"), "total training steps (a resumed run continues up to it)", integer = true, min = 1},
    {"batch", default("batch", "batch_size"), "batch size", integer = true, min = 1},
    {"lr", default("lr"), "learning rate", min = 0},
    {"optimizer", D.optimizer, "adam | adamw", choices = {"adam", "adamw"}},
    {"betas", table.concat(D.betas, ","), "Adam betas beta1,beta2"},
    {"weight-decay", D.weight_decay, "weight decay", min = 0},
    {"warmup", default("warmup"), "linear learning-rate warmup steps", integer = true, min = 0},
    {"ema", default("ema"), "EMA decay (0: no EMA)", min = 0, max = 1},
    {"ema-every", D.ema_every, "fold the weights into the EMA every N steps", integer = true, min = 1},
    {"ema-after", -1, "ema_pytorch's update_after_step: the EMA copies the weights up to this step instead (-1: never)",
      integer = true, min = -1},
    {"ema-power", 0, "the EMA's warmup: 0 LitEma's min(decay, (1+n)/(10+n)); p > 0 ema_pytorch's min(decay, 1-(1+n)^-p) "
      .. "(the authors' trainer: --ema-every 10 --ema-after 100 --ema-power 0.6667)", min = 0},
    {"clip", default("clip"), "gradient-norm clipping (0: none)", min = 0},
    {"schedule", nil, "beta schedule: linear | cosine | sigmoid | scaled_linear | FILE.lua returning beta(t, T) or a list of betas (default "
      .. D.schedule .. ")", type = "string"},
    {"T", 0, string.format("diffusion steps (0: %d; on --resume the checkpoint's)", D.T), integer = true, min = 0},
    {"prediction", nil, "eps | x0 | v (default " .. D.prediction .. "; on --resume the checkpoint's)", type = "string", choices = {"eps", "x0", "v"}},
    {"flip", D.flip, "random horizontal flips"},
    {"out", spec.out or ("runs/" .. spec.name), "output directory"},
    {"resume", nil, "checkpoint to continue from", type = "string"},
    {"init", nil, "a new run from these weights (a checkpoint's EMA ones when it has them, or an exported file): fine-tuning, docs/training.md", type = "string"},
    {"checkpoint-every", default("checkpoint_every"), "checkpoint every N steps (the last step always is)", integer = true, min = 0},
    {"keep", D.keep_checkpoints, "also keep checkpoint_step<N>.safetensors at each checkpoint"},
    {"sample-every", default("sample_every"), "sample grid every N steps (0: none)", integer = true, min = 0},
    {"sample-steps", D.sample_steps, "DDIM steps for the sample grids", integer = true, min = 1},
    {"log-every", D.log_every, "log line every N steps (when not on a terminal)", integer = true, min = 0},
    {"seed", D.seed, "random seed (model initialisation, data order, training draws)", integer = true, min = 0},
    {"threads", 0, "threads (0: all cores)", integer = true, min = 0},
  }
  if spec.denoiser then -- a denoising baseline: noise levels instead of the diffusion options
    local kept = {}
    for _, o in ipairs(opts) do if not DIFFUSION_ONLY[o[1]] then kept[#kept + 1] = o end end
    opts = kept
    opts[#opts + 1] = {"noise", spec.denoiser.noise or "t:50,150,400", "noise levels, each training image draws one: "
      .. "sigma:S1,S2,... (Gaussian sigma on [0, 1] images) or t:T1,T2,... (the sigma equivalent to forward-process timestep t)"}
    opts[#opts + 1] = {"noise-schedule", "sigmoid", "the diffusion schedule (T = 1000) that maps t:... levels to sigma",
      choices = {"linear", "cosine", "sigmoid", "scaled_linear"}}
  end
  if continuous then -- the cU-Net's own switches (continuous_unet.defaults documents each)
    local more = {
      {"ablation", spec.ablation or "none", "none | no_attention | no_resblocks | no_attention_no_resblocks | time_embedding_only", choices = {"none", "no_attention", "no_resblocks", "no_attention_no_resblocks", "time_embedding_only"}},
      {"method", nil, "ODE solver: euler | midpoint | heun | rk4 | rk4_38 | bosh3 | dopri5 (default: the preset's)", type = "string", choices = {"euler", "midpoint", "heun", "rk4", "rk4_38", "bosh3", "dopri5"}},
      {"ode-steps", 0, "fixed solver steps per ODE block (0: the preset's)", integer = true, min = 0},
      {"ode-rtol", 0, "relative tolerance of an adaptive solver (0: the preset's)", min = 0},
      {"ode-atol", 0, "absolute tolerance of an adaptive solver (0: the preset's)", min = 0},
      {"kinetic", 0, "RNODE kinetic-energy weight λ1 on every ODE block, added to the loss (docs/ode.md)", min = 0},
      {"jacobian", 0, "RNODE Jacobian-norm weight λ2 on every ODE block, added to the loss (docs/ode.md)", min = 0},
      {"adjoint", false, "gradients through the adjoint ODE instead of backpropagation through the solver"},
      {"form", nil, "second_order | augmented (default: the preset's)", type = "string", choices = {"second_order", "augmented"}},
    }
    for _, o in ipairs(more) do opts[#opts + 1] = o end
  end
  return opts
end

--- The cU-Net's regularize config from --kinetic and --jacobian: {kinetic=, jacobian=}, or false
-- when both are 0.
function M.regularize(args)
  if args.kinetic == 0 and args.jacobian == 0 then return false end
  return {kinetic = args.kinetic, jacobian = args.jacobian}
end

-- Options that become model overrides (a fresh model only; a resumed one keeps its checkpoint's config).
local function model_overrides(args, spec, size, in_channels, models)
  if spec.denoiser then return {in_channels = in_channels} end -- fully convolutional: any size
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
    overrides.rtol = args.ode_rtol > 0 and args.ode_rtol or nil
    overrides.atol = args.ode_atol > 0 and args.ode_atol or nil
    overrides.regularize = M.regularize(args) or nil
  end
  return overrides
end

-- The options the command line gave (argv parsed again against the same options without defaults).
local function given_options(argv, cli_spec)
  local bare = {}
  for i, o in ipairs(cli_spec.options) do
    bare[i] = {o[1], nil, o[3], type = o.type or (o[2] == nil and "string") or type(o[2])}
  end
  local given = {}
  for k in pairs(cli.parse(argv, {name = cli_spec.name, options = bare})) do
    if k ~= "_positional" then given[k] = true end
  end
  return given
end

-- A model file's path made absolute, so a checkpoint finds it from any directory; module names as they are.
local function module_path(name)
  if not name:match("%.lua$") or name:sub(1, 1) == "/" then return name end
  local p = io.popen("pwd")
  local cwd = p and p:read("l")
  if p then p:close() end
  return cwd and (cwd .. "/" .. name:gsub("^%./", "")) or name
end

local function show(v) return type(v) == "table" and checkpoint.json.encode(v) or tostring(v) end

-- The cU-Net options that are model config keys (recipe option -> config key).
local MODEL_KEYS = {ablation = "ablation", method = "method", ode_steps = "steps", adjoint = "adjoint", form = "form",
  ode_rtol = "rtol", ode_atol = "atol"}
-- The model keys whose option value 0 means "the preset's" (not given).
local ZERO_IS_PRESET = {ode_steps = true, ode_rtol = true, ode_atol = true}
-- Recipe options a resumed run takes back from the checkpoint, or applies with a notice when given.
local APPLIED = {"data", "limit", "threads"}
-- Recipe options a resumed run takes back from the checkpoint and refuses to change (a denoiser's noise).
local FIXED = {"noise", "noise_schedule"}

-- On --resume: checks the checkpoint against the recipe and the command line, fills the recipe's own
-- options from it, and returns the model module and the notices (raises for what cannot change).
local function resume_recipe(name, spec, args, given, ck)
  local stored = ck.run and ck.run.recipe or {}
  local function refuse(fmt, ...)
    error(string.format("%s: cannot resume '%s': ", name, ck.path) .. string.format(fmt, ...), 0)
  end
  local expected
  if given.model then expected = module_path(args.model)
  elseif stored.name == name and stored.model then expected = stored.model
  else expected = spec.model or M.DEFAULT_MODEL end
  if ck.model_module ~= expected and given.model then
    refuse("it holds a %s model, not %s (--model: the model cannot change on resume)", tostring(ck.model_module), expected)
  elseif ck.model_module ~= expected then
    refuse("it holds a %s model%s, and %s trains %s (--model %s continues it here)", tostring(ck.model_module),
      stored.name and (" (written by " .. stored.name .. ")") or "", name, expected, tostring(ck.model_module))
  end
  local notices = {}
  if given.preset and stored.preset and args.preset ~= stored.preset then
    refuse("--preset %s differs from its preset %s (the model cannot change on resume)", args.preset, stored.preset)
  elseif given.preset and not stored.preset then
    notices[#notices + 1] = "resume: --preset " .. args.preset .. " is not checked: the checkpoint records no preset; the model is its config"
  end
  args.preset = stored.preset or args.preset
  local size = ck.image_shape and ck.image_shape[2] or ck.config.resolution
  if given.size and args.size > 0 and args.size ~= size then
    refuse("--size %s differs from its image size %s (the model cannot change on resume)", show(args.size), show(size))
  end
  args.size = size
  if spec.continuous then
    if spec.ablation and not given.ablation and ck.config.ablation ~= spec.ablation then
      refuse("%s trains the %s ablation, it holds %s", name, spec.ablation, tostring(ck.config.ablation))
    end
    for opt, key in pairs(MODEL_KEYS) do
      local value = args[opt]
      if ZERO_IS_PRESET[opt] and value == 0 then value = nil end
      if given[opt] and value ~= nil and not train.same(value, ck.config[key]) then
        refuse("--%s %s differs from its model config (%s = %s; the model cannot change on resume)", opt:gsub("_", "-"),
          show(value), key, show(ck.config[key]))
      end
    end
    local stored_reg = ck.config.regularize or {}
    for _, k in ipairs{"kinetic", "jacobian"} do
      local had = stored_reg[k] or 0
      if given[k] and args[k] ~= had then
        refuse("--%s %s differs from its model config (regularize.%s = %s; the model cannot change on resume)", k,
          show(args[k]), k, show(had))
      end
      args[k] = had
    end
    args.ablation = ck.config.ablation
  end
  for _, k in ipairs(FIXED) do
    if stored[k] ~= nil and args[k] ~= nil then
      if given[k] and not train.same(args[k], stored[k]) then
        refuse("--%s %s differs from its %s (the noise levels cannot change on resume)", k:gsub("_", "-"), show(args[k]), show(stored[k]))
      end
      args[k] = stored[k]
    end
  end
  for _, k in ipairs(APPLIED) do
    if stored[k] ~= nil then
      if not given[k] then args[k] = stored[k]
      elseif not train.same(args[k], stored[k]) then
        notices[#notices + 1] = string.format("resume: %s %s -> %s (given on resume)", k, show(stored[k]), show(args[k]))
      end
    end
  end
  return expected, notices
end

-- --schedule: a diffusion.schedule name, or a Lua file returning beta(t, T), a list of betas or a
-- schedule. Returns what train.run takes as schedule, and the name for schedule_name.
local function schedule_option(name, value, T)
  if not value then return train.defaults.schedule end
  if not value:match("%.lua$") then return value end
  local chunk, err = loadfile(value)
  if not chunk then error(string.format("%s: cannot load the schedule file %s", name, err), 0) end
  local ok, made = pcall(chunk)
  if ok then ok, made = pcall(diffusion.schedule, made, type(made) == "function" and {T = T} or nil) end
  if not ok then error(string.format("%s: the schedule file '%s' does not make a schedule: %s", name, value, tostring(made)), 0) end
  return made, value
end

-- --betas into t.betas (a new run, given on resume, or not recorded); returns t.
local function with_betas(name, args, given, record, resuming, t)
  if not resuming or given.betas or record.betas == nil then
    local beta1, beta2 = args.betas:match("^%s*([%d.eE+-]+)%s*,%s*([%d.eE+-]+)%s*$")
    if not tonumber(beta1) or not tonumber(beta2) then
      error(string.format("%s: --betas expects two numbers like 0.9,0.999, got %s", name, args.betas), 0)
    end
    t.betas = {tonumber(beta1), tonumber(beta2)}
  end
  return t
end

-- The train.run options from the command line: all of them for a new run; on resume the given ones,
-- and the recipe's defaults for what the checkpoint does not record (one written by an older cunet).
local function train_options(name, args, given, ck, spec)
  local t, record = {}, ck and ck.train or {}
  local resuming = ck ~= nil
  local function put(key, option, value)
    if not resuming or given[key] or record[option] == nil then t[option] = value end
  end
  for _, k in ipairs{"steps", "lr", "optimizer", "warmup", "ema", "clip", "flip", "out", "seed", "checkpoint_every",
                     "sample_every", "sample_steps", "log_every", "weight_decay"} do
    put(k, k, args[k])
  end
  put("batch", "batch_size", args.batch)
  put("keep", "keep_checkpoints", args.keep)
  put("ema_every", "ema_every", args.ema_every)
  put("ema_after", "ema_after", args.ema_after >= 0 and math.tointeger(args.ema_after) or false)
  put("ema_power", "ema_power", args.ema_power > 0 and args.ema_power or false)
  put("ema_power", "ema_warmup", args.ema_power == 0) -- one warmup or the other
  if spec.denoiser then -- no diffusion options, no sample grids
    t.sample_every, t.sample_steps = 0, nil
    return with_betas(name, args, given, record, resuming, t)
  end
  local D = train.defaults
  if not resuming or given.prediction then t.prediction = args.prediction or D.prediction end -- else the checkpoint's
  if not resuming or (given.T and args.T > 0) then t.T = args.T > 0 and math.tointeger(args.T) or D.T end
  if not resuming or given.schedule then
    t.schedule, t.schedule_name = schedule_option(name, args.schedule, t.T or args.T > 0 and args.T or D.T)
  end
  return with_betas(name, args, given, record, resuming, t)
end


-- --init: the diffusion setup of a new run started from a file's weights. The schedule (its β values),
-- T and prediction the command line does not give are the file's, so the weights keep meaning what they
-- were trained for; given ones win. Returns the notices that say which came from where.
local function init_diffusion(init, options, given, spec)
  local notices = {}
  if spec.denoiser then return notices end
  if not given.prediction and init.prediction then
    options.prediction = init.prediction
    notices[#notices + 1] = "init: prediction " .. init.prediction .. " (the weights' own)"
  elseif init.prediction and options.prediction ~= init.prediction then
    notices[#notices + 1] = string.format("init: prediction %s, the weights were trained for %s (given)", options.prediction, init.prediction)
  end
  if not given.schedule and not given.T and (init.schedule_beta or init.schedule) then
    options.schedule, options.schedule_name = checkpoint.schedule(init), init.schedule or "custom"
    options.T = init.T or options.T
    notices[#notices + 1] = string.format("init: schedule %s, T = %s (the weights' own)", tostring(init.schedule), tostring(init.T))
  elseif given.schedule or given.T then
    notices[#notices + 1] = string.format("init: schedule and T as given; the weights were trained with %s, T = %s",
      tostring(init.schedule), tostring(init.T))
  end
  return notices
end

-- --init: copies the file's weights (its EMA weights when it holds them) into the new model, whose
-- tensors must be the same names and shapes; a model of another module is refused, and every config
-- key that differs from the file's (a solver option, say) is added to the notices.
local function init_weights(name, init, model, module_name, notices)
  if init.model_module and init.model_module ~= module_name then
    error(string.format("%s: --init '%s' holds a %s model, not %s (give --model %s)", name, init.path, init.model_module,
      module_name, init.model_module), 0)
  end
  local ok, err = pcall(model.load_state_dict, model, checkpoint.weights(init))
  if not ok then error(string.format("%s: --init '%s' does not fit the model: %s", name, init.path, tostring(err)), 0) end
  for _, d in ipairs(checkpoint.config_diff(checkpoint.current_config(init), model.config or {})) do
    notices[#notices + 1] = "init: " .. d:gsub(" in the model$", " in this run")
  end
  notices[#notices + 1] = string.format("init: %s weights of '%s' (step %d); optimizer, EMA and step start afresh",
    init.ema and "EMA" or "model", init.path, init.step or 0)
end

local function main(argv, spec)
  local name = spec.name
  local cli_spec = {
    name = name,
    usage = "cunet recipes/" .. name .. ".lua [options]",
    description = spec.description,
    options = M.options(spec),
    epilog = spec.epilog,
  }
  local args = cli.parse(argv, cli_spec)
  local given = given_options(argv, cli_spec)
  local ck = args.resume and checkpoint.load(args.resume) -- read only; train.run restores the state
  if args.resume and args.init then
    error(string.format("%s: --init starts a new run from weights and --resume continues a run: give one of them", name), 0)
  end
  local init = args.init and checkpoint.load(args.init)
  local module_name, notices
  if ck then module_name, notices = resume_recipe(name, spec, args, given, ck)
  else module_name, notices = module_path(args.model), {} end
  if args.threads > 0 then cn.set_num_threads(math.tointeger(args.threads)) end
  local models = checkpoint.model_module(module_name)
  local size = args.size
  if size == 0 then
    size = models.presets and models.presets[args.preset] and models.presets[args.preset].resolution or 28
  end
  local options = train_options(name, args, given, ck, spec)
  if init then notices = init_diffusion(init, options, given, spec) end
  local ds = train.dataset(args.data, {size = size, limit = args.limit})
  print(string.format("%s: %d images %s", args.data, ds.images:size(1), table.concat(ds.images:shape(), "x", 2)))
  local model, config
  if ck then
    model = checkpoint.build_model(ck, {module = module_name, ema = false})
  else
    cn.seed(math.tointeger(args.seed) or 0)
    local overrides = model_overrides(args, spec, size, ds.images:size(2), models)
    if models.from_preset then
      model = models.from_preset(args.preset, overrides)
    else -- a module with from_config only: the preset's options (when it has presets) and the overrides
      config = {}
      for k, v in pairs(models.presets and models.presets[args.preset] or {}) do config[k] = v end
      for k, v in pairs(overrides) do config[k] = v end
      model = models.from_config(config)
    end
    config = model.config or config
    if type(config) ~= "table" then
      error(string.format("%s: the model from %s has no .config, so no checkpoint could rebuild it (docs/training.md)",
        name, module_name), 0)
    end
  end
  if init then init_weights(name, init, model, module_name, notices) end
  print(string.format("model %s: %d parameters%s", ck and "from " .. args.resume or args.preset .. (init and ", weights from " .. args.init or ""),
    model:num_parameters(), spec.continuous and ", ablation " .. args.ablation or ""))
  for _, notice in ipairs(notices) do print(notice) end

  options.model, options.model_module, options.config, options.dataset = model, module_name, config, ds
  options.resume = args.resume
  if spec.continuous and type(model.config) == "table" and model.config.regularize then -- RNODE: the blocks' penalties join the loss
    options.penalty = function(m) return m:penalties().total end
    print(string.format("RNODE: kinetic %s, jacobian %s on every ODE block, added to the loss",
      show(model.config.regularize.kinetic or 0), show(model.config.regularize.jacobian or 0)))
  end
  options.recipe = {name = name, model = module_name, preset = args.preset, data = args.data, size = size,
                    limit = args.limit, threads = args.threads, init = args.init, command = table.concat(argv, " ")}
  if spec.denoiser then
    local denoise = require "cunet.denoise"
    local levels = denoise.levels(args.noise, args.noise_schedule)
    options.loss = denoise.training_loss(levels)
    options.recipe.noise, options.recipe.noise_schedule = args.noise, args.noise_schedule
    print(string.format("noise levels (sigma on [0, 1] images): %s", denoise.levels_text(levels)))
  end
  local result = train.run(options)
  print(string.format("step %d: loss %s, %.1f s; checkpoint %s", result.step,
    result.loss and string.format("%.4f", result.loss) or "-", result.seconds, tostring(result.checkpoint)))
  return result
end

--- Parses argv with the recipe's spec, trains, and prints the final line; returns train.run's result.
-- Started by mpirun or srun, it trains data-parallel (docs/distributed.md): MPI starts first, and
-- an error on any rank then ends the whole job at once with that rank's message.
function M.main(argv, spec)
  distributed.setup()
  return distributed.main(main, argv, spec)
end

return M
