-- diffusion — noise schedules, the forward process, training losses, DDPM and DDIM samplers.
--
--   local diffusion = require "cunet.diffusion"
--   local sched = diffusion.schedule("linear")                 -- or "cosine", "scaled_linear",
--                                                               -- "sigmoid", a function, a table of betas
--   local loss = diffusion.loss(sched, model, x0)              -- eps-prediction MSE, t ~ U{1..T}
--   local x = diffusion.sample_ddim(sched, model, {16, 1, 28, 28}, {steps = 50, eta = 0})
--
-- Timesteps are 1-based like every index in cunet: t = 1..T, beta[t] is the noise added by step t,
-- alpha_bar[0] = 1 is the clean data. A model is any callable eps = model(x_t, t) where t is a
-- tensor [N] of timesteps (it may also predict x0 or v: opts.prediction). See docs/diffusion.md.

local cn = require "cunet"
local options = require "cunet.options"

local M = {}

local PREDICTIONS = { eps = true, x0 = true, v = true }
local SPACINGS = { uniform = true, quadratic = true, trailing = true }

local function sigmoid(x) return 1 / (1 + math.exp(-x)) end

local function is_integer(v) return math.type(v) == "integer" or (type(v) == "number" and v == math.floor(v) and v == v and math.abs(v) < 2^53) end

--- Beta makers: each returns a Lua array of T betas (computed in double). A maker added here
-- lists the options it reads in M.beta_options[name] (schedule refuses any other).
M.betas = {}
M.beta_options = {
  linear = {"beta_start", "beta_end"}, scaled_linear = {"beta_start", "beta_end"},
  cosine = {"s", "max_beta"}, sigmoid = {"start", "end", "tau", "max_beta"},
}

--- Ho et al. (2020): linear from 1e-4 to 0.02.
function M.betas.linear(T, opts)
  opts = options.check(opts, M.beta_options.linear, "betas.linear")
  local b0, b1 = opts.beta_start or 1e-4, opts.beta_end or 0.02
  local betas = {}
  for i = 1, T do betas[i] = T == 1 and b0 or b0 + (b1 - b0) * (i - 1) / (T - 1) end
  return betas
end

--- Stable Diffusion's "scaled linear": linear in sqrt(beta) (defaults 0.00085 -> 0.012).
function M.betas.scaled_linear(T, opts)
  opts = options.check(opts, M.beta_options.scaled_linear, "betas.scaled_linear")
  local b0, b1 = math.sqrt(opts.beta_start or 0.00085), math.sqrt(opts.beta_end or 0.012)
  local betas = {}
  for i = 1, T do
    local s = T == 1 and b0 or b0 + (b1 - b0) * (i - 1) / (T - 1)
    betas[i] = s * s
  end
  return betas
end

-- betas from a cumulative-product function f(u), u in [0, 1], normalised by f(0), clipped at max_beta
local function from_alpha_bar(T, f, max_beta)
  local betas, f0 = {}, f(0)
  for i = 1, T do
    betas[i] = math.min(1 - (f(i / T) / f0) / (f((i - 1) / T) / f0), max_beta)
  end
  return betas
end

--- Nichol & Dhariwal (2021): alpha_bar(u) = cos((u + s) / (1 + s) * pi / 2)^2, s = 0.008, beta <= 0.999.
function M.betas.cosine(T, opts)
  opts = options.check(opts, M.beta_options.cosine, "betas.cosine")
  local s = opts.s or 0.008
  return from_alpha_bar(T, function(u) return math.cos((u + s) / (1 + s) * math.pi / 2) ^ 2 end, opts.max_beta or 0.999)
end

--- The sigmoid schedule of Jabri et al. (2022) as in denoising-diffusion-pytorch (the paper
-- authors' code): start -3, end 3, tau 1, beta <= 0.999. (That code rounds sigmoid(±3) to float32;
-- we keep double: betas differ by up to 1.3e-5 relative near t = T.)
function M.betas.sigmoid(T, opts)
  opts = options.check(opts, M.beta_options.sigmoid, "betas.sigmoid")
  local start, stop, tau = opts.start or -3, opts["end"] or 3, opts.tau or 1
  local v_start, v_end = sigmoid(start / tau), sigmoid(stop / tau)
  return from_alpha_bar(T, function(u)
    return (-sigmoid((u * (stop - start) + start) / tau) + v_end) / (v_end - v_start)
  end, opts.max_beta or 0.999)
end

local Schedule = {}
Schedule.__index = Schedule

function Schedule:__tostring()
  return string.format("Schedule(T = %d, beta[1] = %.4g, beta[T] = %.4g, alpha_bar[T] = %.4g)", self.T,
    self.beta[1], self.beta[self.T], self.alpha_bar[self.T])
end

local function kinds_list()
  local names = {}
  for name in pairs(M.betas) do names[#names + 1] = name end
  table.sort(names)
  return table.concat(names, ", ")
end

--- A schedule from a name (see M.betas), a function beta(t, T) for t = 1..T, or a table of betas.
-- opts: T (1000), and the maker's options (beta_start, beta_end, s, max_beta, start, end, tau).
-- Everything derived is computed once, in double precision, kept as Lua arrays (beta, alpha,
-- alpha_bar with alpha_bar[0] = 1, posterior_variance) and, for per-example lookups, as 1-D
-- float32 tensors (alpha_bar_tensor, sqrt_alpha_bar_tensor, sqrt_one_minus_alpha_bar_tensor).
-- A schedule given as `kind` is returned as it is.
function M.schedule(kind, opts)
  if getmetatable(kind) == Schedule then return kind end
  local known = {"T"}
  if type(kind) == "string" then
    for _, name in ipairs(M.beta_options[kind] or {}) do known[#known + 1] = name end
  elseif type(kind) == "table" then
    for k in pairs(kind) do
      if math.type(k) ~= "integer" then
        error(string.format("schedule: a table of betas holds the key '%s' (options go in argument #2)", tostring(k)), 2)
      end
    end
  end
  if not (type(kind) == "string" and not M.betas[kind]) then -- an unknown kind is reported below
    opts = options.check(opts, known, "schedule")
  end
  opts = opts or {}
  local T = opts.T or (type(kind) == "table" and #kind) or 1000
  if not is_integer(T) or T < 1 then error("schedule: T must be a positive integer, got " .. tostring(T), 2) end
  T = math.tointeger(T)
  local betas
  if type(kind) == "string" then
    local maker = M.betas[kind]
    if not maker then error("schedule: unknown kind '" .. kind .. "' (" .. kinds_list() .. ", a function or a table of betas)", 2) end
    local maker_opts = {}
    for k, v in pairs(opts) do
      if k ~= "T" then maker_opts[k] = v end
    end
    betas = maker(T, maker_opts)
  elseif type(kind) == "function" then
    betas = {}
    for t = 1, T do betas[t] = kind(t, T) end
  elseif type(kind) == "table" then
    if opts.T and opts.T ~= #kind then error(string.format("schedule: %d betas given for T = %d", #kind, opts.T), 2) end
    betas = {}
    for t = 1, #kind do betas[t] = kind[t] end
  else
    error("schedule: expected a name, a function or a table of betas, got " .. type(kind), 2)
  end
  for t = 1, T do
    local b = betas[t]
    if type(b) ~= "number" or b ~= b or b <= 0 or b >= 1 then
      error(string.format("schedule: beta[%d] = %s is outside (0, 1) (T = %d)", t, tostring(b), T), 2)
    end
  end
  local s = setmetatable({T = T, beta = betas, alpha = {}, alpha_bar = {[0] = 1}, posterior_variance = {}}, Schedule)
  local ab, sqrt_ab, sqrt_1mab = {}, {}, {}
  for t = 1, T do
    s.alpha[t] = 1 - betas[t]
    s.alpha_bar[t] = s.alpha_bar[t - 1] * s.alpha[t]
    -- posterior q(x_{t-1} | x_t, x_0) has variance beta~_t (Ho et al. Eq. 7)
    s.posterior_variance[t] = betas[t] * (1 - s.alpha_bar[t - 1]) / (1 - s.alpha_bar[t])
    ab[t] = s.alpha_bar[t]
    sqrt_ab[t] = math.sqrt(ab[t])
    -- 1 - alpha_bar as 1 - prod(1 - beta) in double: in float32 it would lose ~4 digits at t = 1
    sqrt_1mab[t] = math.sqrt(1 - ab[t])
  end
  s.alpha_bar_tensor = cn.tensor(ab)
  s.sqrt_alpha_bar_tensor = cn.tensor(sqrt_ab)
  s.sqrt_one_minus_alpha_bar_tensor = cn.tensor(sqrt_1mab)
  return s
end

local function check_schedule(sched, fname)
  if getmetatable(sched) ~= Schedule then
    error(string.format("%s: expected a schedule (diffusion.schedule(...)) as argument #1, got %s", fname, type(sched)), 3)
  end
end

-- Validates a timestep (an integer in lo..T, lo = 1 unless given) or a tensor [N] of them.
local function check_t(sched, t, x, fname, lo)
  lo = lo or 1
  if type(t) == "number" then
    if not is_integer(t) or t < lo or t > sched.T then
      error(string.format("%s: timestep %s outside %d..%d", fname, tostring(t), lo, sched.T), 3)
    end
  elseif cn.is_tensor(t) then
    if t:dim() ~= 1 or (x and t:size(1) ~= x:size(1)) then
      error(string.format("%s: t must be a tensor [N] of timesteps (N = %s), got shape [%s]", fname,
        x and tostring(x:size(1)) or "batch size", table.concat(t:shape(), ", ")), 3)
    end
    local tmin, tmax = t:min():item(), t:max():item()
    if tmin < lo or tmax > sched.T then
      error(string.format("%s: timesteps in %g..%g, outside %d..%d", fname, tmin, tmax, lo, sched.T), 3)
    end
  else
    error(fname .. ": t must be a timestep or a tensor [N] of timesteps, got " .. type(t), 3)
  end
end

--- sqrt(alpha_bar_t) and sqrt(1 - alpha_bar_t): numbers for a number t, or tensors [N, 1, ..., 1]
-- matching x's rank for a tensor t of N timesteps.
local function coefs(sched, t, x)
  if type(t) == "number" then return math.sqrt(sched.alpha_bar[t]), math.sqrt(1 - sched.alpha_bar[t]) end
  local shape = {x:size(1)}
  for _ = 2, x:dim() do shape[#shape + 1] = 1 end
  return sched.sqrt_alpha_bar_tensor:index_select(1, t):view(shape),
    sched.sqrt_one_minus_alpha_bar_tensor:index_select(1, t):view(shape)
end

--- The forward process (Ho et al. Eq. 4): x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise,
-- t a number or a tensor [N] (one timestep per example). noise defaults to a fresh N(0, I) draw.
function M.q_sample(sched, x0, t, noise)
  check_schedule(sched, "q_sample")
  check_t(sched, t, x0, "q_sample")
  noise = noise or cn.randn_like(x0)
  local sa, sb = coefs(sched, t, x0)
  return x0 * sa + noise * sb
end

--- The regression target of a parameterisation: "eps" (the noise), "x0", or "v" =
-- sqrt(alpha_bar_t) noise - sqrt(1 - alpha_bar_t) x0 (Salimans & Ho 2022).
function M.target(sched, x0, noise, t, prediction)
  check_schedule(sched, "target")
  prediction = prediction or "eps"
  if not PREDICTIONS[prediction] then error("target: prediction must be 'eps', 'x0' or 'v', got " .. tostring(prediction), 2) end
  if prediction == "eps" then return noise end
  if prediction == "x0" then return x0 end
  check_t(sched, t, x0, "target")
  local sa, sb = coefs(sched, t, x0)
  return noise * sa - x0 * sb
end

--- Converts a model output to (eps, x0) under a parameterisation: "eps", "x0" or "v"
-- (v = sqrt(ab) eps - sqrt(1 - ab) x0, Salimans & Ho 2022).
function M.split_prediction(sched, x_t, t, out, prediction)
  check_schedule(sched, "split_prediction")
  prediction = prediction or "eps"
  if not PREDICTIONS[prediction] then error("split_prediction: prediction must be 'eps', 'x0' or 'v', got " .. tostring(prediction), 2) end
  check_t(sched, t, x_t, "split_prediction")
  local sa, sb = coefs(sched, t, x_t)
  if prediction == "eps" then
    return out, (x_t - out * sb) / sa
  elseif prediction == "x0" then
    return (x_t - out * sa) / sb, out
  end
  return out * sa + x_t * sb, x_t * sa - out * sb
end

--- Uniform timesteps in 1..T, a tensor [n].
function M.sample_timesteps(sched, n)
  return cn.randint(1, sched.T + 1, {n})
end

--- The training loss: MSE between the model output and its target (eps, x0 or v) at random
-- timesteps. opts: prediction ("eps"), t (tensor [N] or one number for all), noise.
-- Returns loss, and the t used (a tensor [N]).
function M.loss(sched, model, x0, opts)
  check_schedule(sched, "loss")
  opts = options.check(opts, {"prediction", "t", "noise"}, "loss")
  local prediction = opts.prediction or "eps"
  if not PREDICTIONS[prediction] then error("loss: prediction must be 'eps', 'x0' or 'v', got " .. tostring(prediction), 2) end
  local t = opts.t or M.sample_timesteps(sched, x0:size(1))
  check_t(sched, t, x0, "loss")
  if type(t) == "number" then t = cn.full({x0:size(1)}, t) end
  local noise = opts.noise or cn.randn_like(x0)
  local x_t = M.q_sample(sched, x0, t, noise)
  local out = model(x_t, t)
  return cn.mse_loss(out, M.target(sched, x0, noise, t, prediction)), t
end

--- One DDPM ancestral step (paper Eq. 2) from x_t at the integer timestep t with the predicted
-- eps and the noise z: x_{t-1} = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t) + sigma_t z,
-- sigma_t^2 = beta_t ("beta", default) or the posterior variance ("posterior"); no noise at t = 1
-- (z may be nil there).
function M.ddpm_step(sched, x_t, t, eps, z, variance)
  check_schedule(sched, "ddpm_step")
  check_t(sched, t, nil, "ddpm_step")
  if type(t) ~= "number" then error("ddpm_step: t must be one timestep (a number)", 2) end
  variance = variance or "beta"
  if variance ~= "beta" and variance ~= "posterior" then error("ddpm_step: variance must be 'beta' or 'posterior', got " .. tostring(variance), 2) end
  local mean = (x_t - eps * (sched.beta[t] / math.sqrt(1 - sched.alpha_bar[t]))) / math.sqrt(sched.alpha[t])
  if t == 1 then return mean end
  if not cn.is_tensor(z) then error(string.format("ddpm_step: the noise z (a tensor) is needed at t = %d > 1", t), 2) end
  local var = variance == "posterior" and sched.posterior_variance[t] or sched.beta[t]
  return mean + z * math.sqrt(var)
end

--- One DDIM step (Song et al. 2021, Eq. 12) from timestep t to t_prev < t (0 = the data) with eta
-- (0: deterministic; 1: DDPM's posterior variance). z, the noise, is needed when eta > 0 and
-- t_prev > 0. Returns x_{t_prev} and the x0 predicted on the way.
function M.ddim_step(sched, x_t, t, t_prev, eps, z, eta)
  check_schedule(sched, "ddim_step")
  check_t(sched, t, nil, "ddim_step")
  check_t(sched, t_prev, nil, "ddim_step", 0)
  if type(t) ~= "number" or type(t_prev) ~= "number" then error("ddim_step: t and t_prev must be numbers", 2) end
  if t_prev >= t then error(string.format("ddim_step: t_prev = %d must be below t = %d", t_prev, t), 2) end
  eta = eta or 0
  if type(eta) ~= "number" or eta < 0 or eta ~= eta then error("ddim_step: eta must be a number >= 0, got " .. tostring(eta), 2) end
  local ab, ab_prev = sched.alpha_bar[t], sched.alpha_bar[t_prev]
  local x0 = (x_t - eps * math.sqrt(1 - ab)) / math.sqrt(ab)
  local sigma = eta * math.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev))
  local out = x0 * math.sqrt(ab_prev) + eps * math.sqrt(math.max(0, 1 - ab_prev - sigma * sigma))
  if sigma > 0 then
    if not cn.is_tensor(z) then error(string.format("ddim_step: eta = %g needs the noise z (a tensor) from t = %d to %d", eta, t, t_prev), 2) end
    out = out + z * sigma
  end
  return out, x0
end

--- The DDIM timesteps, at most `steps` of them, descending; the last step goes to t_prev = 0.
-- In the DDIM code's 0-based tau (t = tau + 1):
--   "uniform"   tau_i = floor(i·T/S), i = 0..S-1 (the DDIM code's range(0, T, T // S) when S divides T)
--   "quadratic" tau_i = int((i·sqrt(0.8·T)/(S-1))^2) (its skip_type "quad"; repeats dropped)
--   "trailing"  t_j = floor(j·T/S), j = S..1: starts at T (denoising-diffusion-pytorch's ddim_sample,
--               the paper authors' code; diffusers' "trailing" when S divides T). Best for few steps.
-- sched may be a schedule or anything with a field T.
function M.ddim_timesteps(sched, steps, spacing)
  spacing = spacing or "uniform"
  local T = type(sched) == "table" and sched.T
  if not is_integer(T) or T < 1 then error("ddim_timesteps: expected a schedule (or {T = n}) as argument #1", 2) end
  if not is_integer(steps) or steps < 1 or steps > T then error(string.format("ddim: steps must be an integer in 1..%d, got %s", T, tostring(steps)), 2) end
  if not SPACINGS[spacing] then error("ddim: spacing must be 'uniform', 'quadratic' or 'trailing', got " .. tostring(spacing), 2) end
  local ts, seen = {}, {}
  local function add(t)
    if not seen[t] then
      seen[t] = true
      ts[#ts + 1] = t
    end
  end
  if spacing == "uniform" then
    for i = 0, steps - 1 do add(1 + (i * T) // steps) end
  elseif spacing == "trailing" then
    for j = steps, 1, -1 do add((j * T) // steps) end
  else
    -- as np.linspace(0, stop, S) ** 2: i·step with step = stop/(S-1), the last point exactly stop
    local stop = math.sqrt(T * 0.8)
    local step = steps > 1 and stop / (steps - 1) or 0
    for i = 0, steps - 1 do
      local v = (i == steps - 1 and steps > 1) and stop or i * step
      add(1 + math.floor(v * v))
    end
  end
  table.sort(ts, function(a, b) return a > b end)
  return ts
end

-- Runs fn with the global generator seeded by `seed` and restores its state afterwards (also on
-- error); with no seed, just runs fn.
local function with_seed(seed, fn)
  if seed == nil then return fn() end
  local saved = cn.rng_state()
  cn.seed(seed)
  local results = table.pack(pcall(fn))
  cn.set_rng_state(saved)
  if not results[1] then error(results[2], 0) end
  return table.unpack(results, 2, results.n)
end

-- The options every sampler takes; each adds its own (sample_ddpm: variance; sample_ddim: steps,
-- eta, spacing).
M.sampler_options = {"prediction", "x_t", "t_start", "clip_x0", "seed", "return_trajectory", "return_x0",
  "callback", "check_finite"}

-- Checks a sampler's opts (unknown keys among them too); returns opts, {} for nil.
local function check_sampler_opts(sched, shape, opts, fname, own)
  check_schedule(sched, fname)
  local known = {table.unpack(M.sampler_options)}
  for _, name in ipairs(own) do known[#known + 1] = name end
  opts = options.check(opts, known, fname, 4)
  local prediction = opts.prediction or "eps"
  if not PREDICTIONS[prediction] then error(fname .. ": prediction must be 'eps', 'x0' or 'v', got " .. tostring(prediction), 3) end
  if opts.x_t ~= nil and not cn.is_tensor(opts.x_t) then error(fname .. ": x_t must be a tensor", 3) end
  if opts.x_t == nil and type(shape) ~= "table" then error(fname .. ": expected a shape {N, C, H, W} (or opts.x_t)", 3) end
  if opts.t_start ~= nil and (not is_integer(opts.t_start) or opts.t_start < 1 or opts.t_start > sched.T) then
    error(string.format("%s: t_start must be an integer in 1..%d, got %s", fname, sched.T, tostring(opts.t_start)), 3)
  end
  if opts.callback ~= nil and type(opts.callback) ~= "function" then error(fname .. ": callback must be a function", 3) end
  return opts
end

-- Raises when x holds NaN or infinite values after step i (timestep t) of n: a broken model or
-- checkpoint would otherwise give a black image and no error. One reduction per step.
local function check_finite(x, fname, i, n, t)
  local bad = cn.count_nonfinite(x)
  if bad > 0 then
    error(string.format("%s: %d of %d sample values are NaN or infinite after step %d of %d (t = %d): the model "
      .. "output is not finite (check the weights; check_finite = false lets it through)", fname, bad, x:numel(), i, n, t), 0)
  end
end

-- Shared driver for both samplers: walks `ts` (descending), calls step(x, i, t, eps) -> x.
local function run_sampler(sched, model, x, ts, opts, step, fname)
  local trajectory, x0s = opts.return_trajectory and {} or nil, opts.return_x0 and {} or nil
  return cn.no_grad(function()
    for i, t in ipairs(ts) do
      local tt = cn.full({x:size(1)}, t)
      local eps, x0 = M.split_prediction(sched, x, t, model(x, tt), opts.prediction)
      if opts.clip_x0 then
        x0 = x0:clamp(-1, 1)
        eps = (x - x0 * math.sqrt(sched.alpha_bar[t])) / math.sqrt(1 - sched.alpha_bar[t])
      end
      x = step(x, i, t, eps)
      if opts.check_finite ~= false then check_finite(x, fname, i, #ts, t) end
      if trajectory then trajectory[#trajectory + 1] = x end
      if x0s then x0s[#x0s + 1] = x0 end
      if opts.callback then opts.callback(i, t, x, x0) end
    end
    return x, trajectory, x0s
  end)
end

--- Ancestral DDPM sampling. shape: the batch shape {N, C, H, W}. opts: x_t and t_start (start
-- from a given noisy batch at timestep t_start instead of pure noise at T), variance ("beta" |
-- "posterior"), prediction, clip_x0, seed (draw every random number from this seed, leaving the
-- global generator as it was), return_trajectory, return_x0, callback(i, t, x_{t-1}, x0_pred),
-- check_finite (true: raise, naming the step and the count, when a step gives NaN or inf).
-- Returns x_0, and the trajectory (x after each of the t_start steps) and x0 predictions when asked.
function M.sample_ddpm(sched, model, shape, opts)
  opts = check_sampler_opts(sched, shape, opts, "sample_ddpm", {"variance"})
  local variance = opts.variance or "beta"
  if variance ~= "beta" and variance ~= "posterior" then error("sample_ddpm: variance must be 'beta' or 'posterior', got " .. tostring(variance), 2) end
  local ts = {}
  for t = opts.t_start or sched.T, 1, -1 do ts[#ts + 1] = t end
  return with_seed(opts.seed, function()
    local x = opts.x_t or cn.randn(shape)
    return run_sampler(sched, model, x, ts, opts, function(xt, _, t, eps)
      return M.ddpm_step(sched, xt, t, eps, t > 1 and cn.randn_like(xt) or nil, variance)
    end, "sample_ddpm")
  end)
end

--- The timesteps sample_ddim visits (descending). Without t_start: ddim_timesteps(sched, steps,
-- spacing). With t_start, the first step is taken at t_start (the level x_t is at) and the others
-- follow the spacing over 1..t_start: the list for T = t_start when it starts there ("trailing"),
-- else t_start followed by the list of steps - 1 for T = t_start.
function M.ddim_sampling_timesteps(sched, steps, spacing, t_start)
  if not t_start then return M.ddim_timesteps(sched, steps, spacing) end
  steps = math.min(steps, t_start)
  local ts = M.ddim_timesteps({T = t_start}, steps, spacing)
  if ts[1] == t_start then return ts end
  ts = steps > 1 and M.ddim_timesteps({T = t_start}, steps - 1, spacing) or {}
  table.insert(ts, 1, t_start)
  return ts
end

--- DDIM sampling with `steps` steps (opts.steps, default 50), eta (0: deterministic), spacing
-- ("uniform" | "quadratic" | "trailing", see ddim_timesteps); the other options as sample_ddpm.
-- With t_start, the steps cover t_start..1, the first at t_start (see ddim_sampling_timesteps).
function M.sample_ddim(sched, model, shape, opts)
  opts = check_sampler_opts(sched, shape, opts, "sample_ddim", {"steps", "eta", "spacing"})
  local eta = opts.eta or 0
  if type(eta) ~= "number" or eta < 0 or eta ~= eta then error("sample_ddim: eta must be a number >= 0, got " .. tostring(eta), 2) end
  local steps = opts.steps or 50
  if not is_integer(steps) or steps < 1 then error("sample_ddim: steps must be a positive integer, got " .. tostring(steps), 2) end
  local ts = M.ddim_sampling_timesteps(sched, math.min(steps, opts.t_start or sched.T), opts.spacing, opts.t_start)
  return with_seed(opts.seed, function()
    local x = opts.x_t or cn.randn(shape)
    return run_sampler(sched, model, x, ts, opts, function(xt, i, t, eps)
      local t_prev = ts[i + 1] or 0
      local z = eta > 0 and t_prev > 0 and cn.randn_like(xt) or nil
      return (M.ddim_step(sched, xt, t, t_prev, eps, z, eta))
    end, "sample_ddim")
  end)
end

return M
