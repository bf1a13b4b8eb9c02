-- examples/custom_schedule.lua — a noise schedule written in Lua, then a tiny diffusion model
-- trained with it on 2-D points and sampled with DDIM.   ./cunet examples/custom_schedule.lua
--
-- The data: a mixture of four Gaussians (std 0.1) centred on (±1, ±1). A good model's samples
-- have the data's mean and spread, and most of them land near one of the four centres. Runs in
-- a few seconds; see docs/diffusion.md for the conventions (t = 1..T, alpha_bar[0] = 1).
local cn = require "cunet"
local nn = require "cunet.nn"
local optim = require "cunet.optim"
local diffusion = require "cunet.diffusion"

cn.seed(2024)

-- 1. The schedule: a geometric (exponential) beta from 1e-3 to 0.2 over T = 200 steps,
--    beta(t) = beta_min · (beta_max / beta_min)^((t - 1) / (T - 1)). Any function of (t, T)
--    returning a number in (0, 1) will do; diffusion.schedule checks every value.
local BETA_MIN, BETA_MAX = 1e-3, 0.2
local function exponential_beta(t, T)
  return BETA_MIN * (BETA_MAX / BETA_MIN) ^ ((t - 1) / (T - 1))
end
local sched = diffusion.schedule(exponential_beta, {T = 200})
print(sched)
for _, t in ipairs{1, 50, 100, 150, 200} do
  print(string.format("  t = %3d   beta = %.5f   alpha_bar = %.5f", t, sched.beta[t], sched.alpha_bar[t]))
end
print(string.format("  alpha_bar_T = %.3e  (close to 0: x_T is almost pure noise)", sched.alpha_bar[sched.T]))

-- 2. The data.
local CENTRES = cn.tensor{{1, 1}, {1, -1}, {-1, 1}, {-1, -1}}
local function sample_data(n)
  local which = cn.randint(1, 5, {n})
  return CENTRES:index_select(1, which) + cn.randn{n, 2} * 0.1
end

-- 3. The model: eps = MLP([x_t, sinusoidal features of t / T]).
local FREQS = cn.tensor{1, 2, 4, 8, 16, 32, 64, 128}:view{1, 8} * math.pi
local function embed(t)
  local phase = (t / sched.T):view{-1, 1} * FREQS
  return cn.cat({phase:sin(), phase:cos()}, 2)
end
local net = nn.Sequential(nn.Linear(2 + 16, 128), nn.SiLU(), nn.Linear(128, 128), nn.SiLU(), nn.Linear(128, 2))
local function model(x_t, t)
  return net(cn.cat({x_t, embed(t)}, 2))
end
print(string.format("model: %d parameters", net:num_parameters()))

-- 4. Training: the eps-prediction loss at uniform random t (diffusion.loss), Adam.
local opt = optim.Adam(net, {lr = 2e-3})
local STEPS, BATCH = 1500, 256
local running
for step = 1, STEPS do
  opt:zero_grad()
  local loss = diffusion.loss(sched, model, sample_data(BATCH))
  loss:backward()
  opt:step()
  running = running and 0.98 * running + 0.02 * loss:item() or loss:item()
  if step % 300 == 0 then print(string.format("step %4d   loss %.4f", step, running)) end
end

-- 5. Sampling: 50 DDIM steps (eta = 0, "trailing" spacing: the first step at t = T).
local N = 2000
local samples = diffusion.sample_ddim(sched, model, {N, 2}, {steps = 50, spacing = "trailing", seed = 7})
local data = sample_data(N)

local function describe(name, x)
  local mean, std = x:mean(1), x:std(1)
  -- distance to the nearest centre
  local d = ((x:view{N, 1, 2} - CENTRES:view{1, 4, 2}) ^ 2):sum(3):sqrt():min(2)
  local near = d:lt(0.3):mean():item()
  print(string.format("%-8s mean (%+.3f, %+.3f)   std (%.3f, %.3f)   within 0.3 of a centre: %4.1f%%",
    name, mean[1]:item(), mean[2]:item(), std[1]:item(), std[2]:item(), 100 * near))
  return std, near
end
print(string.format("%d points each:", N))
local data_std = describe("data", data)
local sample_std, near = describe("samples", samples)
local ok = (sample_std - data_std):abs():max():item() < 0.1 and near > 0.8
print(ok and "OK: the samples match the data" or "the samples do not match the data yet: train longer")
