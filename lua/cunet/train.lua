-- train — the diffusion training loop: Adam/AdamW with warmup and clipping, EMA, a loss CSV,
-- checkpoints, sample grids, and exact resumption.
--
--   local train = require "cunet.train"
--   local ds = train.dataset("mnist", {size = 28})          -- images [N, 1, 28, 28] in [-1, 1]
--   local result = train.run{model = net, dataset = ds, steps = 2000, batch_size = 64, out = "runs/mnist",
--                            checkpoint_every = 500, sample_every = 500}
--   train.run{model = net, dataset = ds, steps = 4000, out = "runs/mnist", resume = "runs/mnist/checkpoint.safetensors"}
--
-- A resumed run is the same run: steps N+1..2N after resuming from step N give the losses and
-- parameters of an uninterrupted 2N-step run. That holds because every source of state is saved
-- (model, optimiser moments, EMA shadows, the engine RNG, the data position) and each step draws
-- its randomness in one fixed order: timesteps, noise, then whatever the model draws (dropout);
-- the batch order and flips depend only on (seed, epoch, batch) and draw nothing from the stream.
-- Sampling grids save and restore the RNG, so they change nothing. See docs/training.md.

local cn = require "cunet"
local optim = require "cunet.optim"
local diffusion = require "cunet.diffusion"
local data = require "cunet.data"
local image = require "cunet.image"
local progress = require "cunet.progress"
local checkpoint = require "cunet.checkpoint"
local fs = require "cunet.fs"
local options = require "cunet.options"
local distributed = require "cunet.distributed"

local M = {}

-- The training draws start this far into the seed's Philox stream, so they never reuse the
-- numbers of a model initialised after cn.seed(seed); sample grids use a second offset.
M.TRAIN_COUNTER = 1 << 40
M.SAMPLE_COUNTER = 1 << 41

--- Every option and its default (nil: required or off).
M.defaults = {
  model = false,              -- the network: eps (or x0, v) = model(x_t, t), t a tensor [N] in 1..T
  config = false,             -- the model config stored in checkpoints (default model.config)
  model_module = "cunet.models.unet", -- the module whose from_config(config) rebuilds the model
  dataset = false,            -- {images = [N, C, H, W] in [-1, 1]} or that tensor
  schedule = "linear",        -- a diffusion.schedule name (or a schedule object with schedule_name)
  schedule_name = false,      -- the name stored for a schedule object
  T = 1000,                   -- diffusion steps
  prediction = "eps",         -- "eps" | "x0" | "v"
  optimizer = "adam",         -- "adam" | "adamw"
  lr = 2e-4,
  betas = {0.9, 0.999},
  eps = 1e-8,
  weight_decay = 0,
  warmup = 0,                 -- linear learning-rate warmup steps
  lr_schedule = "constant",   -- "constant" | "cosine" (after warmup, down to min_lr at `steps`)
  min_lr = 0,
  clip = 1.0,                 -- max gradient norm (0 or false: no clipping)
  ema = 0.9999,               -- EMA decay (0 or false: no EMA)
  ema_warmup = true,          -- decay_n = min(decay, (1 + n) / (10 + n)) (LitEma)
  ema_power = false,          -- instead: ema_pytorch's inverse-decay warmup of this power (with ema_warmup = false)
  ema_inv_gamma = 1,          --   and its inv_gamma
  ema_every = 1,              -- fold the weights into the EMA every N steps (optim.EMA's every)
  ema_after = false,          -- copy them instead up to step N (optim.EMA's after; false: never)
  batch_size = 64,
  steps = 1000,               -- the total number of steps (a resumed run continues up to it)
  seed = 0,                   -- data order and training draws
  flip = false,               -- random horizontal flips
  out = false,                -- output directory (nil: write nothing)
  checkpoint_every = 0,       -- also checkpoint every N steps (the last step always is)
  keep_checkpoints = false,   -- also write checkpoint_step<N>.safetensors at each checkpoint
  sample_every = 0,           -- write samples_step<N>.png every N steps (EMA model, DDIM)
  sample_n = 16,
  sample_steps = 50,          -- DDIM steps for the grids
  log_every = 100,            -- plain log lines (when not on a terminal) every N steps
  progress = "auto",          -- "auto" (a bar on a terminal, lines elsewhere) | "bar" | "lines" | "none"
  stream = false,             -- where the bar and lines go (default io.stderr / io.stdout)
  resume = false,             -- a checkpoint to continue from (the options not given come from it)
  recipe = false,             -- the caller's own resolved options (a recipe's), recorded in the run's config
  loss_tail = 1000,           -- losses kept in the checkpoint
  on_step = false,            -- fn(step, info) after each step (info: loss, penalty, lr, grad_norm, seconds, state)
  loss = false,               -- fn(model, x0) -> loss tensor in place of the diffusion loss (the denoising
                              -- baselines); one process only, no sample grids
  penalty = false,            -- fn(model) -> a 0-d tensor (or 0) added to the loss after each training
                              -- forward, e.g. the cU-Net's RNODE penalties (model:penalties().total);
                              -- loss.csv keeps the task loss, the log lines and on_step's info the penalty
}

local function fail(fmt, ...) error("train: " .. string.format(fmt, ...), 0) end

-- Returns the options over the defaults, and the set of keys the caller gave.
local function with_defaults(opts)
  if type(opts) ~= "table" then fail("expected an options table, got %s", type(opts)) end
  options.check(opts, M.defaults, "train", 0)
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  for k, v in pairs(M.defaults) do
    if o[k] == nil and v ~= false then o[k] = v end
  end
  local given = {}
  for k in pairs(opts) do given[k] = true end
  return o, given
end

local function finite_or_name(v)
  if v ~= v then return "NaN" end
  if v == math.huge then return "+inf" elseif v == -math.huge then return "-inf" end
  return nil
end

local function is_int(v, min) return math.type(v) == "integer" and v >= (min or 0) end

local function check(o)
  if type(o.model) ~= "table" or type(o.model.parameters) ~= "function" then fail("opts.model must be a module") end
  if not (is_int(o.steps, 1)) then fail("steps must be an integer >= 1, got %s", tostring(o.steps)) end
  if not (is_int(o.batch_size, 1)) then fail("batch_size must be an integer >= 1, got %s", tostring(o.batch_size)) end
  for _, k in ipairs{"warmup", "checkpoint_every", "sample_every", "log_every", "loss_tail"} do
    if not is_int(o[k], 0) then fail("%s must be an integer >= 0, got %s", k, tostring(o[k])) end
  end
  if not is_int(o.seed, 0) then fail("seed must be an integer >= 0, got %s", tostring(o.seed)) end
  if o.optimizer ~= "adam" and o.optimizer ~= "adamw" then fail("optimizer must be 'adam' or 'adamw', got %s", tostring(o.optimizer)) end
  if o.lr_schedule ~= "constant" and o.lr_schedule ~= "cosine" then fail("lr_schedule must be 'constant' or 'cosine', got %s", tostring(o.lr_schedule)) end
  if o.prediction ~= "eps" and o.prediction ~= "x0" and o.prediction ~= "v" then fail("prediction must be 'eps', 'x0' or 'v', got %s", tostring(o.prediction)) end
  local modes = {auto = true, bar = true, lines = true, none = true}
  if not modes[o.progress] then fail("progress must be auto, bar, lines or none, got %s", tostring(o.progress)) end
  if o.clip and (type(o.clip) ~= "number" or o.clip < 0) then fail("clip must be a number >= 0 or false") end
  if o.ema and (type(o.ema) ~= "number" or o.ema < 0 or o.ema > 1) then fail("ema must be a decay in [0, 1] or false") end
  if o.loss and type(o.loss) ~= "function" then fail("loss must be a function(model, x0) -> loss, got %s", type(o.loss)) end
  if o.penalty and type(o.penalty) ~= "function" then fail("penalty must be a function(model) -> tensor, got %s", type(o.penalty)) end
  if o.loss and o.sample_every > 0 then fail("sample_every must be 0 with a loss of your own (the model is no diffusion denoiser)") end
  if o.loss and distributed.world_size() > 1 then fail("a loss of your own trains in one process only, not over %d ranks", distributed.world_size()) end
end

-- ---- data -----------------------------------------------------------------------------------------

--- Images in [0, 1] ([N, C, H, W]) → resized to size × size (area averaging down, bilinear up) and
-- mapped to [-1, 1]; done in chunks. Returns a new tensor.
function M.prepare_images(images, size)
  local n, c, h, w = table.unpack(images:shape())
  size = size or h
  local out = cn.empty{n, c, size, size}
  cn.no_grad(function()
    for first = 1, n, 4096 do
      local len = math.min(4096, n - first + 1)
      local x = images:narrow(1, first, len)
      if size < h or size < w then x = cn.adaptive_avg_pool2d(x, {size, size}) end
      if x:size(3) ~= size or x:size(4) ~= size then x = cn.upsample(x, {size = {size, size}, mode = "bilinear"}) end
      out:narrow(1, first, len):copy_(x * 2 - 1)
    end
  end)
  return out
end

--- A dataset for diffusion training by name: "mnist", "fashion-mnist" or "folder:PATH" (data.load),
-- opts: split ("train"), size (resize to size², default the dataset's own), limit (the first N
-- images only). Returns {images = [N, C, size, size] in [-1, 1], name =}.
function M.dataset(name, opts)
  opts = options.check(opts, {"split", "size", "limit"}, "train.dataset")
  local load_opts = {split = opts.split or "train"}
  if type(name) == "string" and name:match("^folder:") then
    load_opts.size, load_opts.limit = opts.size or 64, opts.limit and opts.limit > 0 and opts.limit or nil
  end
  local ds
  if data.load then
    ds = data.load(name, load_opts)
  elseif name == "fashion-mnist" then
    ds = data.fashion_mnist(load_opts.split)
  else
    fail("dataset '%s' needs data.load, which this build lacks (fashion-mnist works)", tostring(name))
  end
  local images = ds.images
  if opts.limit and opts.limit > 0 and opts.limit < images:size(1) then images = images:narrow(1, 1, opts.limit) end
  return {images = M.prepare_images(images, opts.size), name = name}
end

-- The batch stream: epoch e's order is DataLoader:order(e) (a function of (seed, e) only);
-- `position` examples of the current epoch are used; a batch that would not fit starts the next
-- epoch (drop_last), so every batch has batch_size examples. Flips (data.random_hflip) depend on
-- (seed, epoch, batch index) only. With shard = {first, count} (data parallelism) the stream keeps
-- the global order and position, and returns this rank's rows of each global batch only.
local function batch_stream(images, batch_size, seed, epoch, position, flip, shard)
  local n = images:size(1)
  if n < batch_size then fail("the dataset holds %d images, fewer than the batch size %d", n, batch_size) end
  local loader = data.DataLoader({images = images}, {batch_size = batch_size, shuffle = true, seed = seed})
  local flipper = flip and data.random_hflip{seed = seed} or nil
  local s = {epoch = epoch, position = position}
  local order
  function s.next()
    if s.position + batch_size > n then s.epoch, s.position, order = s.epoch + 1, 0, nil end
    order = order or loader:order(s.epoch)
    local idx = order:narrow(1, s.position + 1, batch_size)
    s.position = s.position + batch_size
    if shard and not flipper then idx = idx:narrow(1, shard.first, shard.count) end
    local x = images:index_select(1, idx)
    if flipper then x = flipper(x, {epoch = s.epoch, index = (s.position + batch_size - 1) // batch_size}) end
    if shard and flipper then x = x:narrow(1, shard.first, shard.count) end -- the flips draw for the whole batch
    return x
  end
  return s
end

-- ---- files ----------------------------------------------------------------------------------------


local function mkdir(path)
  if not fs.mkdir_p(path) then fail("cannot create the output directory '%s'", path) end
end

-- Writes text to path atomically: a temporary file renamed over it.
local function write_atomic(path, text)
  local ok, err = fs.write_atomic(path, text)
  if not ok then fail("%s", err) end
end

-- Opens out/loss.csv for appending; on resume keeps the rows of steps <= start_step only.
local function open_csv(path, start_step)
  local kept = {"step,loss,lr,seconds"}
  if start_step > 0 and fs.exists(path) then
    local f = assert(io.open(path, "r"))
    for line in f:lines() do
      local step = math.tointeger(tonumber(line:match("^(%d+),")))
      if step and step <= start_step then kept[#kept + 1] = line end
    end
    f:close()
  end
  write_atomic(path, table.concat(kept, "\n") .. "\n")
  return assert(io.open(path, "a"))
end

local function format_duration(s)
  s = math.floor(s + 0.5)
  if s >= 3600 then return string.format("%d:%02d:%02d", s // 3600, s % 3600 // 60, s % 60) end
  return string.format("%d:%02d", s // 60, s % 60)
end

-- ---- sampling --------------------------------------------------------------------------------------

--- The samplers train.generate runs, and the options each takes from generate's opts.
M.SAMPLERS = {"ddim", "ddpm", "dpmpp_2m", "ode"}
local SAMPLER_OPTIONS = {
  ddim = {"steps", "eta", "spacing"},
  ddpm = {"steps", "spacing", "variance"},
  dpmpp_2m = {"steps", "spacing"},
  ode = {"steps", "ode_method", "rtol", "atol"},
}

--- Samples images [shape] from model under sched, in eval mode with grad off. opts: sampler
-- ("ddim" | "ddpm" | "dpmpp_2m" | "ode"; diffusion.sample_* of that name), steps (ddim: 50;
-- ddpm: T — fewer run DDPM on the respaced schedule; dpmpp_2m: 20; ode: the fixed-step solver's
-- steps, 10), spacing (ddim, ddpm, dpmpp_2m: diffusion.ddim_timesteps' spacings; the sampler's
-- default when nil), eta (ddim), variance (ddpm: "beta" | "posterior"), ode_method, rtol, atol
-- (ode: cn.odeint's method, "rk4" by default; tolerances of an adaptive one), prediction, clip_x0
-- (true), seed (draw from this seed; the global RNG is left as it was). An option the chosen
-- sampler does not read is an error. Returns the samples and {nfe = model evaluations}.
function M.generate(model, sched, shape, opts)
  opts = options.check(opts, {"sampler", "steps", "eta", "spacing", "variance", "ode_method", "rtol", "atol",
    "prediction", "clip_x0", "seed"}, "train.generate")
  local sampler = opts.sampler or "ddim"
  local own = SAMPLER_OPTIONS[sampler]
  if not own then error("generate: sampler must be one of " .. table.concat(M.SAMPLERS, ", ") .. ", got " .. tostring(sampler), 0) end
  local reads = {}
  for _, k in ipairs(own) do reads[k] = true end
  for _, k in ipairs{"eta", "spacing", "variance", "ode_method", "rtol", "atol"} do
    if opts[k] ~= nil and not reads[k] then
      error(string.format("generate: option '%s' does not apply to the %s sampler (it reads %s)", k, sampler,
        table.concat(own, ", ")), 0)
    end
  end
  local sopts = {prediction = opts.prediction, clip_x0 = opts.clip_x0 ~= false, seed = opts.seed}
  local was_training = model.training
  model:eval()
  local ok, x, nfe = pcall(function()
    if sampler == "ddim" then
      sopts.steps, sopts.eta, sopts.spacing = math.min(opts.steps or 50, sched.T), opts.eta, opts.spacing
      local x = diffusion.sample_ddim(sched, model, shape, sopts)
      return x, #diffusion.ddim_timesteps(sched, sopts.steps, opts.spacing)
    elseif sampler == "ddpm" then
      sopts.steps, sopts.spacing, sopts.variance = math.min(opts.steps or sched.T, sched.T), opts.spacing, opts.variance
      local x = diffusion.sample_ddpm(sched, model, shape, sopts)
      return x, #diffusion.ddim_timesteps(sched, sopts.steps, opts.spacing)
    elseif sampler == "dpmpp_2m" then
      sopts.steps, sopts.spacing = math.min(opts.steps or 20, sched.T), opts.spacing
      local x = diffusion.sample_dpmpp_2m(sched, model, shape, sopts)
      return x, #diffusion.ddim_timesteps(sched, sopts.steps, opts.spacing or diffusion.default_spacing.dpmpp_2m)
    end
    sopts.method, sopts.steps, sopts.rtol, sopts.atol = opts.ode_method, opts.steps, opts.rtol, opts.atol
    local x, stats = diffusion.sample_ode(sched, model, shape, sopts)
    return x, stats.nfe
  end)
  model:train(was_training)
  if not ok then error(x, 0) end
  return x, {nfe = nfe}
end

--- The samplers' command-line options (recipes/sample.lua, recipes/fid_vs_steps.lua), as cli.parse
-- specs; with `tolerance_lists`, --rtol and --atol take comma-separated lists (one scan row each).
-- M.sampler_args turns the parsed values into generate's options.
M.SPACING_CHOICES = {"auto", "leading", "trailing", "linspace", "quadratic", "logsnr", "uniform"}
M.ODE_METHODS = {"euler", "midpoint", "heun", "rk4", "rk4_38", "bosh3", "dopri5"}
local ODE = diffusion.sample_ode_defaults -- --ode-method and --rtol default to sample_ode's
function M.sampler_cli_options(tolerance_lists)
  local tol_type = tolerance_lists and "string" or "number"
  local list = tolerance_lists and ", comma-separated: one row each" or ""
  return {
    {"sampler", "ddim", "ddim | ddpm | dpmpp_2m (DPM-Solver++(2M)) | ode (the probability-flow ODE, cn.odeint)", choices = M.SAMPLERS},
    {"spacing", "auto", "timesteps of ddim, ddpm, dpmpp_2m: auto (the sampler's default: uniform for ddim and ddpm, "
      .. "logsnr for dpmpp_2m) | leading | trailing | linspace | quadratic | logsnr | uniform (docs/diffusion.md)", choices = M.SPACING_CHOICES},
    {"eta", 0, "ddim: eta (0: deterministic, 1: DDPM-like noise)", min = 0},
    {"variance", "beta", "ddpm: the noise variance, beta | posterior", choices = {"beta", "posterior"}},
    {"ode-method", ODE.method, "ode: the solver, euler | midpoint | heun | rk4 | rk4_38 (fixed: --steps) | bosh3 | dopri5 (adaptive: --rtol, --atol)",
      choices = M.ODE_METHODS},
    {"rtol", nil, "ode with bosh3 or dopri5: relative tolerance (default " .. tostring(ODE.rtol) .. list .. ")", type = tol_type},
    {"atol", nil, "ode with bosh3 or dopri5: absolute tolerance (default: --rtol's" .. list .. ")", type = tol_type},
  }
end

local ADAPTIVE = {bosh3 = true, dopri5 = true}

--- generate's options from the parsed sampler flags (M.sampler_cli_options), refusing a flag the
-- chosen sampler would ignore through fail(message). Tolerances stay as given (numbers, or the
-- strings of tolerance_lists).
function M.sampler_args(args, fail)
  local s = args.sampler
  local o = {sampler = s}
  if args.eta ~= 0 and s ~= "ddim" then fail("--eta is for --sampler ddim, not " .. s) end
  if args.variance ~= "beta" and s ~= "ddpm" then fail("--variance is for --sampler ddpm, not " .. s) end
  if args.spacing ~= "auto" and s == "ode" then fail("--spacing is for ddim, ddpm and dpmpp_2m (the ODE has no timestep grid)") end
  if s ~= "ode" and (args.ode_method ~= ODE.method or args.rtol or args.atol) then
    fail("--ode-method, --rtol and --atol are for --sampler ode, not " .. s)
  end
  if s == "ode" and not ADAPTIVE[args.ode_method] and (args.rtol or args.atol) then
    fail(string.format("--rtol and --atol are for the adaptive --ode-method bosh3 or dopri5, not %s (it takes --steps)", args.ode_method))
  end
  if s == "ddim" then o.eta = args.eta end
  if s == "ddpm" then o.variance = args.variance end
  if s ~= "ode" and args.spacing ~= "auto" then o.spacing = args.spacing end
  if s == "ode" then
    o.ode_method = args.ode_method
    if ADAPTIVE[args.ode_method] then
      o.rtol = args.rtol or ODE.rtol
      o.atol = args.atol or o.rtol
    end
  end
  return o
end

--- The training grids: M.generate with DDIM from the EMA weights (when given) and a fixed seed,
-- without disturbing the training (RNG, weights and mode are restored).
function M.sample(model, sched, shape, opts)
  opts = options.check(opts, {"seed", "ema", "steps", "prediction"}, "train.sample")
  local saved = cn.rng_state()
  cn.set_rng_state{seed = opts.seed or 0, counter = M.SAMPLE_COUNTER}
  if opts.ema then opts.ema:swap(model) end
  local ok, x = pcall(M.generate, model, sched, shape, {sampler = "ddim", steps = opts.steps, prediction = opts.prediction})
  if opts.ema then opts.ema:swap(model) end
  cn.set_rng_state(saved)
  if not ok then error(x, 0) end
  return x
end

-- ---- the loop --------------------------------------------------------------------------------------

local function make_schedule(o)
  if type(o.schedule) == "string" then
    return diffusion.schedule(o.schedule, {T = o.T}), o.schedule
  end
  if type(o.schedule) == "table" and o.schedule.T then
    return o.schedule, o.schedule_name or "custom"
  end
  fail("schedule must be a name or a diffusion.schedule, got %s", type(o.schedule))
end

local function make_lr_schedule(o)
  if o.lr_schedule == "cosine" then
    return optim.schedule.cosine(o.lr, math.max(o.steps, o.warmup + 1), {warmup = o.warmup, min_lr = o.min_lr})
  end
  return optim.schedule.linear_warmup(o.lr, o.warmup)
end

-- ---- the run's configuration, and resuming it ----------------------------------------------------

--- The options a checkpoint records ("train") and a resumed run takes back unless they are given.
-- A given one that differs from the record is applied with a notice ("resume: lr 0.0002 -> 0.0001
-- (given on resume)"), except those in FIXED_ON_RESUME, which define the model's task or the run's
-- random stream and are refused. The schedule and T are the checkpoint's β values (resolve_schedule).
M.RESTORED = {"prediction", "optimizer", "lr", "betas", "eps", "weight_decay", "warmup", "lr_schedule", "min_lr",
  "clip", "ema", "ema_warmup", "ema_power", "ema_inv_gamma", "ema_every", "ema_after", "batch_size", "steps", "seed",
  "flip", "out", "checkpoint_every", "keep_checkpoints", "sample_every", "sample_n", "sample_steps", "log_every",
  "loss_tail"}
M.FIXED_ON_RESUME = {schedule = true, T = true, prediction = true, optimizer = true, seed = true}

local function same(a, b)
  if type(a) == "table" and type(b) == "table" then
    if #a ~= #b then return false end
    for k, v in pairs(a) do if not same(v, b[k]) then return false end end
    for k in pairs(b) do if a[k] == nil then return false end end
    return true
  end
  return a == b
end
M.same = same

local function show(v)
  if type(v) == "table" or type(v) == "number" then return checkpoint.json.encode(v) end
  return tostring(v)
end

-- The options stored in checkpoints ("train"): what a resumed run restores.
local function recorded(o, schedule_name, T)
  local r = {schedule = schedule_name, T = T}
  for _, k in ipairs(M.RESTORED) do r[k] = o[k] end
  return r
end

-- On resume: fills the options not given from the checkpoint's record; returns the notices for the
-- given ones that differ (and raises for those that cannot change).
local function resume_options(o, given, ck)
  local rec, notices = ck.train or {}, {}
  for _, k in ipairs(M.RESTORED) do
    local stored = rec[k]
    if k == "prediction" then stored = ck.prediction or stored end
    if stored ~= nil then
      if not given[k] then
        o[k] = stored
      elseif not same(o[k], stored) then
        if k == "prediction" then fail("cannot resume '%s': it predicts %s, not %s", o.resume, stored, tostring(o[k])) end
        if M.FIXED_ON_RESUME[k] then
          fail("cannot resume '%s': it was trained with %s = %s, not %s (%s cannot change on resume)", o.resume, k,
            show(stored), show(o[k]), k)
        end
        notices[#notices + 1] = string.format("resume: %s %s -> %s (given on resume)", k, show(stored), show(o[k]))
      end
    end
  end
  if not given.recipe and ck.run and ck.run.recipe then o.recipe = ck.run.recipe end
  if not given.model_module and ck.model_module then o.model_module = ck.model_module end
  return notices
end

-- The run's schedule and its name: from the options, or on resume the checkpoint's (rebuilt from
-- its β values); a given schedule or T must equal the checkpoint's.
local function resolve_schedule(o, given, ck)
  if ck and ck.T and given.schedule and not given.T then o.T = ck.T end -- a named schedule over the run's T
  if ck and ck.T and given.T and o.T ~= ck.T and not (given.schedule and type(o.schedule) == "table") then
    fail("cannot resume '%s': it was trained with T = %d, not %s", o.resume, ck.T, tostring(o.T))
  end
  if ck and not given.schedule then
    local ok, sched = pcall(checkpoint.schedule, ck)
    if not ok then fail("cannot resume '%s': %s", o.resume, tostring(sched)) end
    return sched, ck.schedule or "linear"
  end
  local sched, name = make_schedule(o)
  if ck then
    if ck.T and sched.T ~= ck.T then fail("cannot resume '%s': it was trained with T = %d, not %d", o.resume, ck.T, sched.T) end
    local differs = (ck.schedule_beta and not same(sched.beta, ck.schedule_beta)) or (not ck.schedule_beta and ck.schedule and ck.schedule ~= name)
    if differs then
      fail("cannot resume '%s': it was trained with the %s schedule, not %s%s", o.resume, tostring(ck.schedule), name,
        ck.schedule == name and " (their beta values differ)" or "")
    end
  end
  return sched, name
end

-- The commit of the cunet sources ("+dirty" when tracked files changed), nil outside a git
-- checkout; asked once per process.
local source_commit
local function commit()
  if source_commit == nil then
    source_commit = false
    local dir = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$")
    local p = dir and io.popen("git -C " .. fs.shell_quote(dir) .. " rev-parse HEAD 2>/dev/null")
    local head = p and p:read("l")
    if p then p:close() end
    if head and head:match("^%x+$") then
      p = io.popen("git -C " .. fs.shell_quote(dir) .. " status --porcelain --untracked-files=no 2>/dev/null")
      local changes = p and p:read("a") or ""
      if p then p:close() end
      source_commit = head .. (changes ~= "" and "+dirty" or "")
    end
  end
  return source_commit or nil
end

-- The run's whole resolved configuration: what config.lua holds and the checkpoint's "run".
local function run_config(o, model, config, sched, schedule_name, images, data_seed, start_step)
  local beta = {}
  for t = 1, sched.T do beta[t] = sched.beta[t] end
  return {
    commit = commit(),
    model = {module = o.model_module, config = config, parameters = model:num_parameters()},
    schedule = {name = schedule_name, T = sched.T, beta = beta},
    data = {name = type(o.dataset) == "table" and o.dataset.name or nil, shape = images:shape(), seed = data_seed},
    train = recorded(o, schedule_name, sched.T),
    recipe = o.recipe or nil,
    resumed = o.resume and {from = o.resume, step = start_step} or nil,
    ranks = distributed.world_size() > 1 and distributed.world_size() or nil,
  }
end

--- The text of config.lua for a run configuration (a Lua chunk returning it; dofile reads it back).
function M.config_text(cfg)
  return "-- the resolved configuration of a cunet training run (lua/cunet/train.lua); dofile() reads it\nreturn "
    .. checkpoint.lua_text(cfg) .. "\n"
end

--- Trains; see M.defaults for the options. Returns {step, start_step, losses (step -> loss for
-- the steps run here), loss (the last), seconds, cpu_seconds and cpu_seconds_from (as the checkpoint
-- holds them), checkpoint (the last path written), model, ema,
-- optimizer, schedule, config (the resolved configuration, as out/config.lua holds it), notices
-- (the "resume: ..." lines of options changed on resume)}. A NaN or infinite loss or gradient norm raises before the optimiser step
-- and writes nothing more (the last checkpoint stays as it was).
function M.run(opts)
  local o, given = with_defaults(opts)
  local ck = o.resume and checkpoint.load(o.resume) -- read only: restored below, once everything is checked
  local notices = ck and resume_options(o, given, ck) or {}
  check(o)
  local model = o.model
  local images = cn.is_tensor(o.dataset) and o.dataset or (type(o.dataset) == "table" and o.dataset.images)
  if not cn.is_tensor(images) or images:dim() ~= 4 then fail("dataset must be {images = [N, C, H, W]} or such a tensor") end
  local sched, schedule_name = resolve_schedule(o, given, ck)
  local T = sched.T
  local config = o.config or model.config or {}

  local params = {}
  for _, p in ipairs(model:parameters()) do
    if p:requires_grad() then params[#params + 1] = p end
  end
  -- Data parallelism (docs/distributed.md): under mpirun each of the N ranks trains on its
  -- batch_size / N rows of every global batch, from parameters broadcast by rank 0; the gradients
  -- are averaged in buckets before clipping, so every rank takes the same optimizer step.
  local world, rank = distributed.world_size(), distributed.rank()
  local shard, buckets
  if world > 1 then
    if o.batch_size % world ~= 0 then
      fail("batch_size %d does not split over %d ranks (make it a multiple of %d)", o.batch_size, world, world)
    end
    shard = {first = rank * (o.batch_size // world) + 1, count = o.batch_size // world}
    buckets = distributed.Buckets(params)
    buckets:broadcast(0)
  end
  local opt_args = {lr = o.lr, betas = o.betas, eps = o.eps, weight_decay = o.weight_decay}
  local opt = o.optimizer == "adamw" and optim.AdamW(params, opt_args) or optim.Adam(params, opt_args)
  local ema_opts = {decay = o.ema, warmup = o.ema_warmup, power = o.ema_power or false, inv_gamma = o.ema_inv_gamma,
    every = o.ema_every, after = o.ema_after or false} -- (o holds no false defaults: with_defaults)
  local ema = o.ema and o.ema > 0 and optim.EMA(model, ema_opts) or nil
  local lr_at = make_lr_schedule(o)

  -- start or resume
  local start_step, epoch, position, seed, seconds0, history = 0, 1, 0, o.seed, 0, {}
  -- CPU seconds of the training processes so far, counted from step cpu_from (0 unless resumed
  -- from a checkpoint written before they were recorded)
  local cpu0, cpu_from = 0, 0
  local last_checkpoint
  if ck then
    if ema and not ck.ema then fail("cannot resume '%s': it holds no EMA weights (run with ema = false)", o.resume) end
    checkpoint.restore(ck, {model = model, config = config, ema = ema, optimizer = opt})
    -- the optimiser and the EMA come back with their stored hyperparameters: the run's options win
    opt.beta1, opt.beta2, opt.eps, opt.weight_decay = o.betas[1], o.betas[2], o.eps, o.weight_decay
    if ema then -- the run's schedule (checked when the EMA was built above; the options are its fields)
      for k, v in pairs(ema_opts) do ema[k] = v end
    end
    cn.set_rng_state(ck.rng)
    start_step, seconds0, history = ck.step, ck.seconds, ck.losses
    cpu0, cpu_from = ck.cpu_seconds or 0, ck.cpu_seconds and ck.cpu_seconds_from or ck.step
    epoch, position, seed = ck.data.epoch or 1, ck.data.position or 0, ck.data.seed or o.seed
    last_checkpoint = o.resume
  else
    cn.set_rng_state{seed = o.seed, counter = M.TRAIN_COUNTER}
  end
  local stream = batch_stream(images, o.batch_size, seed, epoch, position, o.flip, shard)
  local sample_shape = {o.sample_n, images:size(2), images:size(3), images:size(4)}

  local out = rank == 0 and o.out or nil -- rank 0 alone writes
  local csv
  local cfg = run_config(o, model, config, sched, schedule_name, images, seed, start_step)
  if out then
    mkdir(out)
    csv = open_csv(out .. "/loss.csv", start_step)
    write_atomic(out .. "/config.lua", M.config_text(cfg))
  end

  local mode = o.progress
  if mode == "auto" then mode = cn.isatty(o.stream or io.stderr) and "bar" or "lines" end
  if rank > 0 then mode = "none" end
  local bar = mode == "bar" and progress.new(o.steps - start_step, {label = "train", unit = "step", stream = o.stream or io.stderr, tty = true}) or nil
  local log_stream = o.stream or io.stdout
  local function say(text)
    if mode == "none" then return end
    if bar then (o.stream or io.stderr):write("\r\27[K") end
    log_stream:write(text, "\n")
    log_stream:flush()
  end

  local step, last_loss = start_step, nil
  local losses = {}
  local t0 = cn.time()
  local window_loss, window_n, window_t = 0, 0, t0
  local window_penalty = 0

  local c0 = os.clock() -- this process's CPU time, every thread's
  local function elapsed() return seconds0 + cn.time() - t0 end
  local function cpu_elapsed() return cpu0 + os.clock() - c0 end

  local function save_checkpoint()
    local tail = {}
    for i = math.max(1, #history - o.loss_tail + 1), #history do tail[#tail + 1] = history[i] end
    local state = {
      model = model, config = config, model_module = o.model_module, ema = ema, optimizer = opt, step = step,
      rng = cn.rng_state(), schedule = schedule_name, schedule_beta = cfg.schedule.beta, T = T,
      prediction = o.prediction, losses = tail, data = {seed = seed, epoch = stream.epoch, position = stream.position},
      seconds = elapsed(), cpu_seconds = cpu_elapsed(), cpu_seconds_from = cpu_from,
      image_shape = {images:size(2), images:size(3), images:size(4)}, train = cfg.train, run = cfg,
    }
    if csv then csv:flush() end
    local path = out .. "/checkpoint.safetensors"
    checkpoint.save(path, state)
    last_checkpoint = path
    if o.keep_checkpoints then
      checkpoint.save(string.format("%s/checkpoint_step%d.safetensors", out, step), state)
    end
    say(string.format("step %d: checkpoint %s", step, path))
  end

  -- The loss of this rank's rows. With several ranks, each draws the timesteps and noise of the
  -- whole global batch, as one rank would, and keeps its rows: the N-rank run sees the numbers of
  -- the 1-rank run. What the model draws (dropout) comes from a stream of its own per (seed, step,
  -- rank), and the shared stream is put back after, so every rank's generator stays the same.
  local function shard_loss(x0)
    if o.loss then return o.loss(model, x0) end
    if not shard then return (diffusion.loss(sched, model, x0, {prediction = o.prediction})) end
    local t = diffusion.sample_timesteps(sched, o.batch_size)
    local noise = cn.randn{o.batch_size, x0:size(2), x0:size(3), x0:size(4)}
    local shared = cn.rng_state()
    cn.set_rng_state{seed = (seed * 0x9E3779B97F4A7C15) ~ (step * 0xBF58476D1CE4E5B9) ~ (rank + 1), counter = M.TRAIN_COUNTER}
    local ok, loss = pcall(diffusion.loss, sched, model, x0, {prediction = o.prediction,
      t = t:narrow(1, shard.first, shard.count), noise = noise:narrow(1, shard.first, shard.count)})
    cn.set_rng_state(shared)
    if not ok then error(loss, 0) end
    local mean = cn.tensor{loss:item()}
    distributed.all_reduce(mean, "mean") -- the global batch's loss, the same on every rank
    return loss, mean:item()
  end

  local function one_step()
    step = step + 1
    local lr = optim.schedule.apply(opt, lr_at, step)
    model:train()
    local x0 = stream.next()
    local loss, global_value = shard_loss(x0)
    local value = global_value or loss:item()
    local penalty_value
    if o.penalty then
      local p = o.penalty(model)
      if cn.is_tensor(p) then
        penalty_value = p:item()
        loss = loss + p
      elseif p == 0 then
        penalty_value = 0
      else
        fail("penalty must return a 0-d tensor or 0, got %s", tostring(p))
      end
      if finite_or_name(penalty_value) then
        fail("the penalty is %s at step %d; stopped before the optimizer step", finite_or_name(penalty_value), step)
      end
      window_penalty = window_penalty + penalty_value
    end
    if finite_or_name(value) then
      fail("the loss is %s at step %d; stopped before the optimizer step%s", finite_or_name(value), step,
        last_checkpoint and string.format(" (the last checkpoint, '%s', is untouched)", last_checkpoint) or "")
    end
    opt:zero_grad()
    loss:backward()
    if buckets then buckets:average_grads() end
    local grad_norm = o.clip and o.clip > 0 and optim.clip_grad_norm(params, o.clip) or optim.grad_norm(params)
    if finite_or_name(grad_norm) then
      fail("the gradient norm is %s at step %d (loss %.6g); stopped before the optimizer step%s", finite_or_name(grad_norm),
        step, value, last_checkpoint and string.format(" (the last checkpoint, '%s', is untouched)", last_checkpoint) or "")
    end
    opt:step()
    opt:zero_grad()
    if ema then ema:update() end
    loss, x0 = nil, nil

    losses[step], last_loss = value, value
    history[#history + 1] = value
    if #history > 2 * o.loss_tail then history = table.move(history, #history - o.loss_tail + 1, #history, 1, {}) end
    local now = elapsed()
    if csv then csv:write(string.format("%d,%.9g,%.9g,%.3f\n", step, value, lr, now)) end
    window_loss, window_n = window_loss + value, window_n + 1

    local clock = cn.time()
    local rate = (step - start_step) * o.batch_size / math.max(clock - t0, 1e-9)
    if bar then
      bar:update(step - start_step, {loss = value, ["img/s"] = rate})
    elseif mode == "lines" and o.log_every > 0 and (step % o.log_every == 0 or step == o.steps) then
      local eta = (o.steps - step) * (clock - t0) / (step - start_step)
      say(string.format("step %d/%d  loss %.4f%s  lr %.3g  %.1f img/s  %s < %s", step, o.steps, window_loss / window_n,
        o.penalty and string.format("  penalty %.4g", window_penalty / window_n) or "",
        lr, window_n * o.batch_size / math.max(clock - window_t, 1e-9), format_duration(now), format_duration(eta)))
      window_loss, window_n, window_t, window_penalty = 0, 0, clock, 0
    end

    if out and (step == o.steps or (o.checkpoint_every > 0 and step % o.checkpoint_every == 0)) then save_checkpoint() end
    if out and o.sample_every > 0 and (step % o.sample_every == 0 or step == o.steps) then
      local x = M.sample(model, sched, sample_shape, {ema = ema, steps = o.sample_steps, prediction = o.prediction, seed = seed})
      local path = string.format("%s/samples_step%d.png", out, step)
      image.save_grid(x, path, {range = {-1, 1}, nrow = math.ceil(math.sqrt(o.sample_n))})
      say(string.format("step %d: samples %s", step, path))
    end
    if o.on_step then
      o.on_step(step, {loss = value, penalty = penalty_value, lr = lr, grad_norm = grad_norm, seconds = now, epoch = stream.epoch,
        position = stream.position})
    end
  end

  say("run configuration" .. (out and (" (" .. out .. "/config.lua)") or "") .. ":\n"
    .. checkpoint.lua_text(cfg, {abbreviate = 8}))
  for _, notice in ipairs(notices) do say(notice) end
  if start_step >= o.steps then
    say(string.format("the checkpoint is at step %d already (steps = %d): nothing to do", start_step, o.steps))
  else
    say(string.format("training%s: steps %d..%d, batch %d%s, %d parameters%s", o.resume and " (resumed)" or "",
      start_step + 1, o.steps, o.batch_size, world > 1 and string.format(" over %d ranks", world) or "",
      model:num_parameters(), out and (", writing to " .. out) or ""))
  end
  local ok, err = pcall(function()
    while step < o.steps do
      one_step()
      if (step - start_step) % 8 == 0 then collectgarbage("step", 0) end
    end
  end)
  if csv then csv:close() end
  if bar then bar:finish() end
  if not ok then error(err, 0) end

  return {
    step = step, start_step = start_step, losses = losses, loss = last_loss, seconds = elapsed(),
    cpu_seconds = cpu_elapsed(), cpu_seconds_from = cpu_from,
    checkpoint = last_checkpoint, model = model, ema = ema, optimizer = opt, schedule = sched,
    config = cfg, notices = notices,
  }
end

return M
