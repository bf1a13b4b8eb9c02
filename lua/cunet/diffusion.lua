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
-- tensor [N] of timesteps (it may also predict x0 or v: opts.prediction).

local cn = require "cunet"

local M = {}

local function sigmoid(x) return 1 / (1 + math.exp(-x)) end

--- Beta makers: each returns a Lua array of T betas (computed in double).
M.betas = {}

--- Ho et al. (2020): linear from 1e-4 to 0.02.
function M.betas.linear(T, opts)
  local b0, b1 = opts.beta_start or 1e-4, opts.beta_end or 0.02
  local betas = {}
  for i = 1, T do betas[i] = T == 1 and b0 or b0 + (b1 - b0) * (i - 1) / (T - 1) end
  return betas
end

--- Stable Diffusion's "scaled linear": linear in sqrt(beta) (defaults 0.00085 -> 0.012).
function M.betas.scaled_linear(T, opts)
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
  local s = opts.s or 0.008
  return from_alpha_bar(T, function(u) return math.cos((u + s) / (1 + s) * math.pi / 2) ^ 2 end, opts.max_beta or 0.999)
end

--- The sigmoid schedule of Jabri et al. (2022) as in denoising-diffusion-pytorch (the paper
-- authors' code): start -3, end 3, tau 1, beta <= 0.999.
function M.betas.sigmoid(T, opts)
  local start, stop, tau = opts.start or -3, opts["end"] or 3, opts.tau or 1
  local v_start, v_end = sigmoid(start / tau), sigmoid(stop / tau)
  return from_alpha_bar(T, function(u)
    return (-sigmoid((u * (stop - start) + start) / tau) + v_end) / (v_end - v_start)
  end, opts.max_beta or 0.999)
end

local Schedule = {}
Schedule.__index = Schedule

--- A schedule from a name (see M.betas), a function beta(t, T) for t = 1..T, or a table of betas.
-- opts: T (1000), and the maker's options (beta_start, beta_end, s, ...). Everything derived is
-- computed once, in double precision, and kept both as Lua arrays and as 1-D tensors.
function M.schedule(kind, opts)
  opts = opts or {}
  local T = opts.T or (type(kind) == "table" and #kind) or 1000
  local betas
  if type(kind) == "string" then
    local maker = M.betas[kind]
    if not maker then error("schedule: unknown kind '" .. kind .. "' (linear, scaled_linear, cosine, sigmoid, a function or a table)", 2) end
    betas = maker(T, opts)
  elseif type(kind) == "function" then
    betas = {}
    for t = 1, T do betas[t] = kind(t, T) end
  elseif type(kind) == "table" then
    betas = {}
    for t = 1, #kind do betas[t] = kind[t] end
    if opts.T and opts.T ~= #kind then error(string.format("schedule: %d betas given for T = %d", #kind, opts.T), 2) end
  else
    error("schedule: expected a name, a function or a table of betas, got " .. type(kind), 2)
  end
  if #betas ~= T or T < 1 then error(string.format("schedule: %d betas for T = %d", #betas, T), 2) end
  for t, b in ipairs(betas) do
    if type(b) ~= "number" or b ~= b or b <= 0 or b >= 1 then
      error(string.format("schedule: beta[%d] = %s is outside (0, 1)", t, tostring(b)), 2)
    end
  end
  local s = setmetatable({T = T, beta = betas, alpha = {}, alpha_bar = {[0] = 1}, posterior_variance = {}}, Schedule)
  for t = 1, T do
    s.alpha[t] = 1 - betas[t]
    s.alpha_bar[t] = s.alpha_bar[t - 1] * s.alpha[t]
    -- posterior q(x_{t-1} | x_t, x_0): variance beta~_t and mean coef_x0 * x0 + coef_xt * x_t
    s.posterior_variance[t] = betas[t] * (1 - s.alpha_bar[t - 1]) / (1 - s.alpha_bar[t])
  end
  local ab = {}
  for t = 1, T do ab[t] = s.alpha_bar[t] end
  s.alpha_bar_tensor = cn.tensor(ab)
  return s
end

--- Per-example coefficients f(alpha_bar[t]) as a tensor [N, 1, ..., 1] matching x's rank.
local function coef(sched, t, x, f)
  local n = x:size(1)
  local shape = {n}
  for _ = 2, x:dim() do shape[#shape + 1] = 1 end
  if type(t) == "number" then return f(sched.alpha_bar[t]) end
  local ab = sched.alpha_bar_tensor:index_select(1, t)
  return f(ab):view(shape)
end

local function check_t(sched, t, fname)
  if type(t) == "number" then
    if t < 1 or t > sched.T or t ~= math.floor(t) then error(string.format("%s: timestep %s outside 1..%d", fname, tostring(t), sched.T), 3) end
  elseif not cn.is_tensor(t) then
    error(fname .. ": t must be a timestep or a tensor [N] of timesteps", 3)
  end
end

--- The forward process: x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise (t a number or a tensor [N]).
function M.q_sample(sched, x0, t, noise)
  check_t(sched, t, "q_sample")
  noise = noise or cn.randn_like(x0)
  local a = coef(sched, t, x0, function(ab) return type(ab) == "number" and math.sqrt(ab) or ab:sqrt() end)
  local b = coef(sched, t, x0, function(ab) return type(ab) == "number" and math.sqrt(1 - ab) or (1 - ab):sqrt() end)
  return x0 * a + noise * b
end

--- Converts a model output to (eps, x0) under a parameterisation: "eps", "x0" or "v"
-- (v = sqrt(ab) eps - sqrt(1 - ab) x0, Salimans & Ho 2022).
function M.split_prediction(sched, x_t, t, out, prediction)
  local sa = coef(sched, t, x_t, function(ab) return type(ab) == "number" and math.sqrt(ab) or ab:sqrt() end)
  local sb = coef(sched, t, x_t, function(ab) return type(ab) == "number" and math.sqrt(1 - ab) or (1 - ab):sqrt() end)
  prediction = prediction or "eps"
  if prediction == "eps" then
    return out, (x_t - out * sb) / sa
  elseif prediction == "x0" then
    return (x_t - out * sa) / sb, out
  elseif prediction == "v" then
    return out * sa + x_t * sb, x_t * sa - out * sb
  end
  error("prediction must be 'eps', 'x0' or 'v', got " .. tostring(prediction), 2)
end

--- Uniform timesteps in 1..T, a tensor [n].
function M.sample_timesteps(sched, n)
  return cn.randint(1, sched.T + 1, {n})
end

--- The training loss: MSE between the model output and its target (eps, x0 or v) at random
-- timesteps. opts: prediction ("eps"), t (tensor [N]), noise. Returns loss, and the t used.
function M.loss(sched, model, x0, opts)
  opts = opts or {}
  local t = opts.t or M.sample_timesteps(sched, x0:size(1))
  local noise = opts.noise or cn.randn_like(x0)
  local x_t = M.q_sample(sched, x0, t, noise)
  local out = model(x_t, t)
  local prediction = opts.prediction or "eps"
  local target
  if prediction == "eps" then
    target = noise
  elseif prediction == "x0" then
    target = x0
  elseif prediction == "v" then
    local sa = coef(sched, t, x0, function(ab) return ab:sqrt() end)
    local sb = coef(sched, t, x0, function(ab) return (1 - ab):sqrt() end)
    target = noise * sa - x0 * sb
  else
    error("loss: prediction must be 'eps', 'x0' or 'v', got " .. tostring(prediction), 2)
  end
  return cn.mse_loss(out, target), t
end

--- One DDPM ancestral step (paper Eq. 2) from x_t at the integer timestep t with the predicted
-- eps and the noise z: x_{t-1} = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t) + sigma_t z,
-- sigma_t^2 = beta_t ("beta", default) or the posterior variance ("posterior"); no noise at t = 1.
function M.ddpm_step(sched, x_t, t, eps, z, variance)
  local mean = (x_t - eps * (sched.beta[t] / math.sqrt(1 - sched.alpha_bar[t]))) / math.sqrt(sched.alpha[t])
  if t == 1 then return mean end
  local var = (variance or "beta") == "posterior" and sched.posterior_variance[t] or sched.beta[t]
  return mean + z * math.sqrt(var)
end

--- One DDIM step (Song et al. 2021, Eq. 12) from timestep t to t_prev (0 = the data) with eta.
function M.ddim_step(sched, x_t, t, t_prev, eps, z, eta)
  local ab, ab_prev = sched.alpha_bar[t], sched.alpha_bar[t_prev]
  local x0 = (x_t - eps * math.sqrt(1 - ab)) / math.sqrt(ab)
  local sigma = (eta or 0) * math.sqrt((1 - ab_prev) / (1 - ab)) * math.sqrt(1 - ab / ab_prev)
  local out = x0 * math.sqrt(ab_prev) + eps * math.sqrt(math.max(0, 1 - ab_prev - sigma * sigma))
  if sigma > 0 and z then out = out + z * sigma end
  return out, x0
end

--- The DDIM timesteps, S of them, descending: "uniform" (t = 1 + floor(i·T/S)) or "quadratic".
function M.ddim_timesteps(sched, steps, spacing)
  if steps < 1 or steps > sched.T then error(string.format("ddim: steps must be in 1..%d, got %s", sched.T, tostring(steps)), 2) end
  local ts, seen = {}, {}
  for i = 0, steps - 1 do
    local t
    if (spacing or "uniform") == "uniform" then
      t = 1 + (i * sched.T) // steps
    elseif spacing == "quadratic" then
      t = 1 + math.floor((math.sqrt(sched.T * 0.8) * i / math.max(steps - 1, 1)) ^ 2)
    else
      error("ddim: spacing must be 'uniform' or 'quadratic', got " .. tostring(spacing), 2)
    end
    t = math.min(t, sched.T)
    if not seen[t] then
      seen[t] = true
      ts[#ts + 1] = t
    end
  end
  table.sort(ts, function(a, b) return a > b end)
  return ts
end

-- Shared driver for both samplers: walks `ts` (descending), calls step(x, i) -> x, x0_pred.
local function run_sampler(sched, model, x, ts, opts, step)
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
      if trajectory then trajectory[#trajectory + 1] = x end
      if x0s then x0s[#x0s + 1] = x0 end
      if opts.callback then opts.callback(i, t, x, x0) end
    end
    return x, trajectory, x0s
  end)
end

--- Ancestral DDPM sampling. shape: the batch shape {N, C, H, W}. opts: x_t and t_start (start
-- from a given noisy batch at timestep t_start instead of pure noise at T), variance ("beta" |
-- "posterior"), prediction, clip_x0, return_trajectory, return_x0, callback(i, t, x, x0).
-- Returns x_0, and the trajectory and x0 predictions when asked for.
function M.sample_ddpm(sched, model, shape, opts)
  opts = opts or {}
  local t_start = opts.t_start or sched.T
  local x = opts.x_t or cn.randn(shape)
  local ts = {}
  for t = t_start, 1, -1 do ts[#ts + 1] = t end
  return run_sampler(sched, model, x, ts, opts, function(xt, _, t, eps)
    return M.ddpm_step(sched, xt, t, eps, t > 1 and cn.randn_like(xt) or nil, opts.variance)
  end)
end

--- DDIM sampling with `steps` steps (opts.steps, default 50), eta (0: deterministic), spacing
-- ("uniform" | "quadratic"); the other options as sample_ddpm. With t_start, the steps cover
-- t_start..1.
function M.sample_ddim(sched, model, shape, opts)
  opts = opts or {}
  local x = opts.x_t or cn.randn(shape)
  local sub = opts.t_start and M.schedule(function(t) return sched.beta[t] end, {T = opts.t_start}) or sched
  local ts = M.ddim_timesteps(sub, math.min(opts.steps or 50, sub.T), opts.spacing)
  return run_sampler(sched, model, x, ts, opts, function(xt, i, t, eps)
    local t_prev = ts[i + 1] or 0
    local z = (opts.eta or 0) > 0 and t_prev > 0 and cn.randn_like(xt) or nil
    return (M.ddim_step(sched, xt, t, t_prev, eps, z, opts.eta))
  end)
end

return M
