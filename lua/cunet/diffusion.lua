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
local SPACINGS = { uniform = true, leading = true, trailing = true, linspace = true, quadratic = true, logsnr = true }
local SPACING_NAMES = "'leading', 'trailing', 'linspace', 'quadratic', 'logsnr' or 'uniform'"

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

local VARIANCES = { beta = true, posterior = true, none = true }

--- One DDPM ancestral step (paper Eq. 2) from x_t at the integer timestep t with the predicted
-- eps and the noise z: x_{t-1} = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t) + sigma_t z,
-- sigma_t^2 = beta_t ("beta", default) or the posterior variance ("posterior"), or no noise at all
-- ("none": the mean of the reverse step, as the diffusion paper's authors' denoising code runs it);
-- no noise at t = 1 (z may be nil there, and with "none").
function M.ddpm_step(sched, x_t, t, eps, z, variance)
  check_schedule(sched, "ddpm_step")
  check_t(sched, t, nil, "ddpm_step")
  if type(t) ~= "number" then error("ddpm_step: t must be one timestep (a number)", 2) end
  variance = variance or "beta"
  if not VARIANCES[variance] then error("ddpm_step: variance must be 'beta', 'posterior' or 'none', got " .. tostring(variance), 2) end
  local mean = (x_t - eps * (sched.beta[t] / math.sqrt(1 - sched.alpha_bar[t]))) / math.sqrt(sched.alpha[t])
  if t == 1 or variance == "none" then return mean end
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

-- numpy's np.round: halves to the even neighbour
local function round_half_even(v)
  local f = math.floor(v)
  local d = v - f
  if d > 0.5 or (d == 0.5 and f % 2 == 1) then f = f + 1 end
  return math.tointeger(f)
end

--- The timesteps a sampler visits, at most `steps` of them, descending; the last step goes to
-- t_prev = 0. In the 0-based tau of the Python code (t = tau + 1), with S = steps:
--   "leading"   tau_i = i·floor(T/S), i = 0..S-1 (diffusers' timestep_spacing "leading", steps_offset 0)
--   "trailing"  t_j = floor(j·T/S), j = S..1: starts at T (denoising-diffusion-pytorch's ddim_sample,
--               the paper authors' code). diffusers' "trailing" is tau = round(T - j·T/S) - 1,
--               j = 0..S-1: the same list when S divides T, otherwise at most 1 apart.
--   "linspace"  tau_i = round(i·(T-1)/(S-1)), i = 0..S-1, halves to even (diffusers' "linspace",
--               np.linspace(0, T - 1, S).round()): from t = T down to t = 1
--   "quadratic" tau_i = int((i·sqrt(0.8·T)/(S-1))^2) (the DDIM code's skip_type "quad"; repeats dropped)
--   "uniform"   tau_i = floor(i·T/S), i = 0..S-1 (the DDIM code's range(0, T, T // S) when S divides
--               T, exactly S steps when it does not): "leading" when S divides T.
--   "logsnr"    uniform in lambda = log(sqrt(alpha_bar) / sqrt(1 - alpha_bar)) from t = T to t = 1,
--               each point at the timestep of the nearest lambda (repeats dropped): the "logSNR"
--               grid Lu et al. recommend for DPM-Solver at low resolution (diffusers' use_lu_lambdas).
-- sched may be a schedule or anything with a field T (but "logsnr" needs the schedule; t_max, when
-- given, puts the grid over 1..t_max of that schedule).
function M.ddim_timesteps(sched, steps, spacing, t_max)
  spacing = spacing or "uniform"
  local T = type(sched) == "table" and sched.T
  if not is_integer(T) or T < 1 then error("ddim_timesteps: expected a schedule (or {T = n}) as argument #1", 2) end
  if t_max then T = t_max end
  if not is_integer(steps) or steps < 1 or steps > T then error(string.format("ddim: steps must be an integer in 1..%d, got %s", T, tostring(steps)), 2) end
  if not SPACINGS[spacing] then error("ddim: spacing must be " .. SPACING_NAMES .. ", got " .. tostring(spacing), 2) end
  if spacing == "logsnr" and not (type(sched.alpha_bar) == "table" and sched.alpha_bar[T]) then
    error("ddim_timesteps: spacing 'logsnr' needs a schedule (its alpha_bar) as argument #1", 2)
  end
  local ts, seen = {}, {}
  local function add(t)
    if not seen[t] then
      seen[t] = true
      ts[#ts + 1] = t
    end
  end
  if spacing == "uniform" then
    for i = 0, steps - 1 do add(1 + (i * T) // steps) end
  elseif spacing == "leading" then
    for i = 0, steps - 1 do add(1 + i * (T // steps)) end
  elseif spacing == "trailing" then
    for j = steps, 1, -1 do add((j * T) // steps) end
  elseif spacing == "logsnr" then
    local function lambda(t) return 0.5 * (math.log(sched.alpha_bar[t]) - math.log(1 - sched.alpha_bar[t])) end
    local lo, hi = lambda(T), lambda(1)
    local t = T -- lambda falls as t grows: walk t down as the targets rise
    for i = 0, steps - 1 do
      local target = steps > 1 and lo + (hi - lo) * i / (steps - 1) or lo
      while t > 1 and math.abs(lambda(t - 1) - target) <= math.abs(lambda(t) - target) do t = t - 1 end
      add(t)
    end
  elseif spacing == "linspace" then
    -- as np.linspace: i·step with step = (T-1)/(S-1) in double, the last point exactly T - 1
    local step = steps > 1 and (T - 1) / (steps - 1) or 0
    for i = 0, steps - 1 do
      local v = (i == steps - 1 and steps > 1) and T - 1 or i * step
      add(1 + round_half_even(v))
    end
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

-- The options every step-by-step sampler takes; each adds its own (sample_ddpm: variance, steps,
-- spacing; sample_ddim: steps, eta, spacing; sample_dpmpp_2m: steps, spacing). sample_ode has its own.
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

-- Shared driver of the step-by-step samplers: walks `ts` (descending), calls
-- step(x, i, t, eps, x0) -> x with the model's prediction at (x, t).
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
      x = step(x, i, t, eps, x0)
      if opts.check_finite ~= false then check_finite(x, fname, i, #ts, t) end
      if trajectory then trajectory[#trajectory + 1] = x end
      if x0s then x0s[#x0s + 1] = x0 end
      if opts.callback then opts.callback(i, t, x, x0) end
    end
    return x, trajectory, x0s
  end)
end

local function check_steps(steps, fname, default)
  steps = steps or default
  if not is_integer(steps) or steps < 1 then error(fname .. ": steps must be a positive integer, got " .. tostring(steps), 3) end
  return math.tointeger(steps)
end

local function check_spacing(spacing, fname)
  if spacing ~= nil and not SPACINGS[spacing] then
    error(fname .. ": spacing must be " .. SPACING_NAMES .. ", got " .. tostring(spacing), 3)
  end
  return spacing
end

--- The respaced schedule of Nichol & Dhariwal (2021, Sec. 4) over the timesteps ts (a list of
-- distinct t in 1..T, any order): betas recomputed from alpha_bar, beta'_i = 1 - alpha_bar[t_i] /
-- alpha_bar[t_{i-1}] over the ascending list, so that its alpha_bar'[i] = alpha_bar[t_i]. Returns the
-- new schedule and a tensor [#ts] mapping its timestep i to the original t_i.
function M.respace(sched, ts)
  check_schedule(sched, "respace")
  if type(ts) ~= "table" or #ts == 0 then error("respace: expected a non-empty list of timesteps as argument #2", 2) end
  local sorted = {}
  for i, t in ipairs(ts) do
    if not is_integer(t) or t < 1 or t > sched.T then error(string.format("respace: timestep %s outside 1..%d", tostring(t), sched.T), 2) end
    sorted[i] = math.tointeger(t)
  end
  table.sort(sorted)
  local betas, prev = {}, 1
  for i, t in ipairs(sorted) do
    if i > 1 and t == sorted[i - 1] then error(string.format("respace: timestep %d given twice", t), 2) end
    betas[i] = 1 - sched.alpha_bar[t] / prev
    prev = sched.alpha_bar[t]
  end
  return M.schedule(betas), cn.tensor(sorted)
end

--- Ancestral DDPM sampling. shape: the batch shape {N, C, H, W}. opts: x_t and t_start (start
-- from a given noisy batch at timestep t_start instead of pure noise at T), variance ("beta" |
-- "posterior" | "none": see ddpm_step), steps and spacing (fewer steps than T run on the respaced schedule of
-- ddim_timesteps(sched, steps, spacing): see respace; spacing "uniform" by default), prediction,
-- clip_x0, seed (draw every random number from this seed, leaving the global generator as it was),
-- return_trajectory, return_x0, callback(i, t, x_{t-1}, x0_pred) (t the original timestep),
-- check_finite (true: raise, naming the step and the count, when a step gives NaN or inf).
-- Returns x_0, and the trajectory (x after each step) and x0 predictions when asked.
function M.sample_ddpm(sched, model, shape, opts)
  opts = check_sampler_opts(sched, shape, opts, "sample_ddpm", {"variance", "steps", "spacing"})
  local variance = opts.variance or "beta"
  if not VARIANCES[variance] then error("sample_ddpm: variance must be 'beta', 'posterior' or 'none', got " .. tostring(variance), 2) end
  local steps = check_steps(opts.steps, "sample_ddpm", sched.T)
  check_spacing(opts.spacing, "sample_ddpm")
  if steps < sched.T then
    if opts.t_start then error("sample_ddpm: t_start works with every timestep only (steps = T), got steps = " .. steps, 2) end
    local kept = M.ddim_timesteps(sched, steps, opts.spacing)
    local respaced, original_t = M.respace(sched, kept)
    table.sort(kept)
    local inner = {}
    for k, v in pairs(opts) do inner[k] = v end
    inner.steps, inner.spacing = nil, nil
    if opts.callback then
      inner.callback = function(i, t, x, x0) return opts.callback(i, kept[t], x, x0) end
    end
    return M.sample_ddpm(respaced, function(x_t, t) return model(x_t, original_t:index_select(1, t)) end, shape, inner)
  end
  local ts = {}
  for t = opts.t_start or sched.T, 1, -1 do ts[#ts + 1] = t end
  return with_seed(opts.seed, function()
    local x = opts.x_t or cn.randn(shape)
    return run_sampler(sched, model, x, ts, opts, function(xt, _, t, eps)
      return M.ddpm_step(sched, xt, t, eps, t > 1 and variance ~= "none" and cn.randn_like(xt) or nil, variance)
    end, "sample_ddpm")
  end)
end

--- The timesteps sample_ddim visits (descending). Without t_start: ddim_timesteps(sched, steps,
-- spacing). With t_start, the first step is taken at t_start (the level x_t is at) and the others
-- follow the spacing over 1..t_start: the list for T = t_start when it starts there ("trailing",
-- "linspace"), else t_start followed by the list of steps - 1 for T = t_start.
function M.ddim_sampling_timesteps(sched, steps, spacing, t_start)
  if not t_start then return M.ddim_timesteps(sched, steps, spacing) end
  steps = math.min(steps, t_start)
  local ts = M.ddim_timesteps(sched, steps, spacing, t_start)
  if ts[1] == t_start then return ts end
  ts = steps > 1 and M.ddim_timesteps(sched, steps - 1, spacing, t_start) or {}
  table.insert(ts, 1, t_start)
  return ts
end

--- DDIM sampling with `steps` steps (opts.steps, default 50), eta (0: deterministic), spacing
-- ("uniform" by default; "leading" | "trailing" | "linspace" | "quadratic", see ddim_timesteps);
-- the other options as sample_ddpm. With t_start, the steps cover t_start..1, the first at t_start
-- (see ddim_sampling_timesteps).
function M.sample_ddim(sched, model, shape, opts)
  opts = check_sampler_opts(sched, shape, opts, "sample_ddim", {"steps", "eta", "spacing"})
  local eta = opts.eta or 0
  if type(eta) ~= "number" or eta < 0 or eta ~= eta then error("sample_ddim: eta must be a number >= 0, got " .. tostring(eta), 2) end
  local steps = check_steps(opts.steps, "sample_ddim", 50)
  check_spacing(opts.spacing, "sample_ddim")
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

--- One DPM-Solver++ step in its data-prediction form (Lu et al. 2022, "DPM-Solver++", Eq. 8 for
-- first order, Alg. 2 for the multistep second order) from x at t to t_next < t, with
-- alpha = sqrt(alpha_bar), sigma = sqrt(1 - alpha_bar), lambda = log(alpha / sigma), h = lambda_next - lambda_t:
--   x_next = sigma_next / sigma_t · x - alpha_next (e^-h - 1) D,
--   D = x0 (first order), or D = (1 + 1/(2r)) x0 - 1/(2r) x0_prev with r = h_prev / h (second order).
-- t_next = 0 (the data: sigma = 0) gives x0 itself. x0_prev and h_prev (the previous step's x0
-- prediction and h) select the second-order update; nil: first order. Returns x_next and h.
function M.dpmpp_2m_step(sched, x, t, t_next, x0, x0_prev, h_prev)
  check_schedule(sched, "dpmpp_2m_step")
  check_t(sched, t, nil, "dpmpp_2m_step")
  check_t(sched, t_next, nil, "dpmpp_2m_step", 0)
  if type(t) ~= "number" or type(t_next) ~= "number" then error("dpmpp_2m_step: t and t_next must be numbers", 2) end
  if t_next >= t then error(string.format("dpmpp_2m_step: t_next = %d must be below t = %d", t_next, t), 2) end
  if t_next == 0 then return x0, math.huge end
  local ab, ab_next = sched.alpha_bar[t], sched.alpha_bar[t_next]
  local alpha_next = math.sqrt(ab_next)
  local sigma, sigma_next = math.sqrt(1 - ab), math.sqrt(1 - ab_next)
  local h = 0.5 * (math.log(ab_next) - math.log(1 - ab_next)) - 0.5 * (math.log(ab) - math.log(1 - ab))
  local d = x0
  if x0_prev then
    local r = h_prev / h
    d = x0 * (1 + 1 / (2 * r)) - x0_prev * (1 / (2 * r))
  end
  return x * (sigma_next / sigma) + d * (alpha_next * (1 - math.exp(-h))), h
end

--- DPM-Solver++(2M) sampling (Lu et al. 2022): the multistep second-order solver of the diffusion
-- ODE in its data-prediction form, one model evaluation per step. The first step is first order
-- (no history yet) and so is the last, which lands on t = 0 and returns the x0 prediction there
-- (diffusers' lower_order_final with final_sigmas_type "zero"). opts: steps (20), spacing
-- ("logsnr" by default: uniform in log-SNR from T down to t = 1, Lu et al.'s grid for low
-- resolutions; on a grid uniform in t, such as diffusers' default "linspace", the last steps' ratio
-- r = h_prev / h is small and the second-order extrapolation overshoots: see docs/diffusion.md), and
-- the common options (prediction "eps" | "x0" | "v", x_t, t_start, clip_x0,
-- seed, return_trajectory, return_x0, callback, check_finite) as sample_ddim. Deterministic given x_T.
function M.sample_dpmpp_2m(sched, model, shape, opts)
  opts = check_sampler_opts(sched, shape, opts, "sample_dpmpp_2m", {"steps", "spacing"})
  local steps = check_steps(opts.steps, "sample_dpmpp_2m", 20)
  local spacing = check_spacing(opts.spacing, "sample_dpmpp_2m") or M.default_spacing.dpmpp_2m
  local ts = M.ddim_sampling_timesteps(sched, math.min(steps, opts.t_start or sched.T), spacing, opts.t_start)
  local x0_prev, h_prev
  return with_seed(opts.seed, function()
    local x = opts.x_t or cn.randn(shape)
    return run_sampler(sched, model, x, ts, opts, function(xt, i, t, _, x0)
      local out, h = M.dpmpp_2m_step(sched, xt, t, ts[i + 1] or 0, x0, x0_prev, h_prev)
      x0_prev, h_prev = x0, h
      return out
    end, "sample_dpmpp_2m")
  end)
end

--- The default timestep spacing of each sampler (docs/diffusion.md states them).
M.default_spacing = {ddpm = "uniform", ddim = "uniform", dpmpp_2m = "logsnr"}

-- ---- the probability-flow ODE ---------------------------------------------------------------------
-- Song et al. (2021, Eq. 13) for the VP process over a continuous time tau in [0, T] (tau = T·s,
-- s in [0, 1] in their notation), the discrete schedule read as a continuous one by interpolating
-- log alpha_bar linearly between the integer timesteps (alpha_bar(0) = 1):
--   log alpha_bar(tau) = (1 - w) log alpha_bar[k] + w log alpha_bar[k + 1],  k = floor(tau), w = tau - k,
--   beta(tau) = -d log alpha_bar / d tau = log alpha_bar[k - 1] - log alpha_bar[k] on (k - 1, k],
--   dx/dtau = -1/2 beta(tau) (x - eps(x, tau) / sigma(tau)),  sigma(tau) = sqrt(1 - alpha_bar(tau)).
-- beta(tau) is the exact rate of the interpolated schedule, so for the true eps this ODE carries the
-- marginals of q(x_tau) exactly (at the integers they are the discrete process's).

--- alpha_bar at a continuous time tau in [0, T] (log-linear between the integer timesteps; the
-- schedule's own values at integers).
function M.alpha_bar_at(sched, tau)
  local k = math.floor(tau)
  if k >= sched.T then return sched.alpha_bar[sched.T] end
  local w = tau - k
  if w == 0 then return sched.alpha_bar[k] end
  return math.exp((1 - w) * math.log(sched.alpha_bar[k]) + w * math.log(sched.alpha_bar[k + 1]))
end

local function beta_at(sched, tau)
  local k = math.min(math.max(math.ceil(tau), 1), sched.T)
  return math.log(sched.alpha_bar[k - 1]) - math.log(sched.alpha_bar[k])
end

local ODE_METHODS = {euler = "fixed", midpoint = "fixed", heun = "fixed", rk4 = "fixed", rk4_38 = "fixed",
  bosh3 = "adaptive", dopri5 = "adaptive"}
--- sample_ode's defaults, the one place they live (train.lua's --ode-method, --rtol read them). A
-- sampler's budget, not cn.odeint's accuracy (dopri5 at 1e-7): ten rk4 steps (40 model evaluations)
-- or 1e-3 tolerances (docs/ode.md, "Solver defaults, layer by layer").
local ODE_DEFAULTS = {method = "rk4", steps = 10, rtol = 1e-3, atol = 1e-3, t_end = 1, model_time = "nearest",
  max_steps = 10000}
M.sample_ode_defaults = ODE_DEFAULTS

--- Sampling by the probability-flow ODE (above), solved by cn.odeint from tau = T (or t_start with
-- x_t) down to t_end (1), then one model evaluation for the x0 prediction at t_end (the same last
-- step as DDIM's to t = 0). opts: method (cn.odeint's: "rk4" by default; "dopri5", "bosh3" adaptive),
-- steps (fixed-step methods: steps over the whole interval, 10), rtol, atol (adaptive methods:
-- 1e-3, 1e-3), max_steps (adaptive: 10000), t_end, model_time ("nearest": the model sees the
-- nearest integer timestep, which every model accepts; "continuous": tau itself, for models whose
-- time embedding takes real t, e.g. the U-Net), prediction, x_t, t_start, clip_x0, seed,
-- check_finite. Returns x_0 and stats {nfe = model evaluations (the solver's + 1), accepted =,
-- rejected =} (steps of the solver).
function M.sample_ode(sched, model, shape, opts)
  check_schedule(sched, "sample_ode")
  opts = options.check(opts, {"prediction", "x_t", "t_start", "clip_x0", "seed", "check_finite", "method", "steps",
    "rtol", "atol", "max_steps", "t_end", "model_time"}, "sample_ode")
  local o = {}
  for k, v in pairs(ODE_DEFAULTS) do o[k] = v end
  for k, v in pairs(opts) do o[k] = v end
  local prediction = o.prediction or "eps"
  if not PREDICTIONS[prediction] then error("sample_ode: prediction must be 'eps', 'x0' or 'v', got " .. tostring(prediction), 2) end
  local kind = ODE_METHODS[o.method]
  if not kind then error("sample_ode: method must be one of euler, midpoint, heun, rk4, rk4_38, bosh3, dopri5, got " .. tostring(o.method), 2) end
  if kind == "fixed" and (opts.rtol or opts.atol or opts.max_steps) then
    error(string.format("sample_ode: rtol, atol and max_steps are for the adaptive methods (bosh3, dopri5), not %s", o.method), 2)
  end
  if kind == "adaptive" and opts.steps then
    error(string.format("sample_ode: steps is for the fixed-step methods, not %s (give rtol and atol)", o.method), 2)
  end
  if o.x_t ~= nil and not cn.is_tensor(o.x_t) then error("sample_ode: x_t must be a tensor", 2) end
  if o.x_t == nil and type(shape) ~= "table" then error("sample_ode: expected a shape {N, C, H, W} (or opts.x_t)", 2) end
  local t_start = o.t_start or sched.T
  if not is_integer(t_start) or t_start < 1 or t_start > sched.T then
    error(string.format("sample_ode: t_start must be an integer in 1..%d, got %s", sched.T, tostring(o.t_start)), 2)
  end
  if type(o.t_end) ~= "number" or o.t_end < 1 or o.t_end >= t_start then
    error(string.format("sample_ode: t_end must be a number in [1, t_start = %d), got %s", t_start, tostring(o.t_end)), 2)
  end
  if o.model_time ~= "nearest" and o.model_time ~= "continuous" then
    error("sample_ode: model_time must be 'nearest' or 'continuous', got " .. tostring(o.model_time), 2)
  end
  for _, k in ipairs{"rtol", "atol"} do
    if type(o[k]) ~= "number" or not (o[k] > 0) then error(string.format("sample_ode: %s must be a number > 0, got %s", k, tostring(o[k])), 2) end
  end
  local steps = check_steps(o.steps, "sample_ode", ODE_DEFAULTS.steps)
  local nfe = 0
  -- eps and x0 at (x, tau) from the model, by the continuous alpha_bar(tau)
  local function predict(x, tau)
    local ab = M.alpha_bar_at(sched, tau)
    local a, s = math.sqrt(ab), math.sqrt(1 - ab)
    local t_model = o.model_time == "continuous" and tau or math.min(math.max(math.floor(tau + 0.5), 1), sched.T)
    nfe = nfe + 1
    local out = model(x, cn.full({x:size(1)}, t_model))
    local eps, x0
    if prediction == "eps" then eps, x0 = out, (x - out * s) / a
    elseif prediction == "x0" then eps, x0 = (x - out * a) / s, out
    else eps, x0 = out * a + x * s, x * a - out * s end
    if o.clip_x0 then
      x0 = x0:clamp(-1, 1)
      eps = (x - x0 * a) / s
    end
    return eps, x0, s
  end
  local function dynamics(tau, x)
    local eps, _, s = predict(x, tau)
    return (x - eps / s) * (-0.5 * beta_at(sched, tau))
  end
  local solver = {method = o.method}
  if kind == "fixed" then solver.steps = steps else solver.rtol, solver.atol, solver.max_steps = o.rtol, o.atol, o.max_steps end
  return with_seed(o.seed, function()
    local x = o.x_t or cn.randn(shape)
    return cn.no_grad(function()
      local sol, stats = cn.odeint(dynamics, x, {t_start, o.t_end}, solver)
      local _, x0 = predict(sol[2], o.t_end)
      if o.check_finite ~= false then check_finite(x0, "sample_ode", stats.accepted, stats.accepted, o.t_end) end
      return x0, {nfe = nfe, accepted = stats.accepted, rejected = stats.rejected}
    end)
  end)
end

return M
