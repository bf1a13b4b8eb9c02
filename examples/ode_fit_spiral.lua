-- examples/ode_fit_spiral.lua — learn the dynamics of a 2-D spiral from samples of its trajectory
-- (torchdiffeq's ode_demo.py, in cunet).
--   ./cunet examples/ode_fit_spiral.lua [iterations] [cubic]
--
-- The true system is the spiral z' = A z with A = [[-0.1, 2], [-2, -0.1]] from z(0) = (2, 0),
-- observed at 1000 times in [0, 25]. The model is dz/dt = MLP(z) (Linear 2→50, tanh, Linear
-- 50→2, cunet.nn, initialised as torchdiffeq: weights N(0, 0.1), biases 0). Each iteration draws
-- 20 random start points of the observed trajectory, solves the model over the next 10
-- observation times from each (rk4, one step per interval, the 20 windows as one batched [20, 2]
-- state) and takes an Adam step on the mean absolute error (learning rate 3e-3, cosine-annealed
-- to 1e-5); gradients flow back through the solver. Every 100 iterations the whole trajectory is
-- re-solved from z(0) with dopri5: its mean absolute error over the 1000 times is the loss that
-- must fall, and the ratio is printed at the end.
--
-- With `cubic`, the true system is torchdiffeq's z' = A z³ and the model MLP(z³). The windows fit
-- as well, but that spiral turns faster at larger radius, so the smallest amplitude error becomes
-- a phase error that grows along the 25 s: the whole-trajectory loss then falls less and jumps
-- between evaluations. The linear spiral turns at one rate and shows the fit cleanly.
local cn = require "cunet"
local nn, optim = cn.nn, cn.optim

local ITERATIONS = tonumber(arg and arg[1]) or 2000
local CUBIC = arg and arg[2] == "cubic"
local DATA_SIZE, BATCH_TIME, BATCH_SIZE = 1000, 10, 20
cn.seed(2018)

-- ---- data: the true trajectory ----------------------------------------------------------------
local A = cn.tensor{{-0.1, 2.0}, {-2.0, -0.1}}
local function features(z) return CUBIC and z ^ 3 or z end
local function true_dynamics(t, z) return features(z):matmul(A) end -- rows are states: z A = (A^T z^T)^T
local t_all = cn.linspace(0, 25, DATA_SIZE):totable()
local y_true = cn.no_grad(cn.odeint, true_dynamics, cn.tensor{{2.0, 0.0}}, t_all,
  {method = "dopri5", rtol = 1e-7, atol = 1e-9}) -- [1000, 1, 2]
local dt = t_all[2] - t_all[1]
local batch_ts = {}
for i = 0, BATCH_TIME - 1 do batch_ts[#batch_ts + 1] = i * dt end

-- BATCH_SIZE random windows of the trajectory: start states [B, 2] and targets [T, B, 2]
local function get_batch()
  local starts = cn.randperm(DATA_SIZE - BATCH_TIME):totable()
  local y0, windows = {}, {}
  for b = 1, BATCH_SIZE do
    y0[b] = y_true[starts[b]]
    windows[b] = y_true:narrow(1, starts[b], BATCH_TIME)
  end
  return cn.cat(y0, 1), cn.cat(windows, 2)
end

-- ---- the model --------------------------------------------------------------------------------
local net = nn.Sequential(nn.Linear(2, 50), nn.Tanh(), nn.Linear(50, 2))
cn.no_grad(function()
  for _, p in ipairs(net:parameters()) do
    if p:dim() == 2 then nn.init.normal_(p, 0, 0.1) else nn.init.zeros_(p) end
  end
end)
local function model(t, z) return net(features(z)) end
local opt = optim.Adam(net, {lr = 3e-3})
local schedule = optim.schedule.cosine(3e-3, ITERATIONS, {min_lr = 1e-5})

local function trajectory_loss()
  local pred = cn.no_grad(cn.odeint, model, cn.tensor{{2.0, 0.0}}, t_all, {method = "dopri5", rtol = 1e-5, atol = 1e-7})
  return (pred - y_true):abs():mean():item()
end

-- ---- training ---------------------------------------------------------------------------------
print(string.format("fitting the %s spiral: %d iterations of %d windows x %d times", CUBIC and "cubic" or "linear",
  ITERATIONS, BATCH_SIZE, BATCH_TIME))
local clock = os.clock()
local first = trajectory_loss()
print(string.format("iter %5d  trajectory loss %.5f", 0, first))
local last, batch_sum, batch_count = first, 0, 0
for it = 1, ITERATIONS do
  local y0, target = get_batch()
  optim.schedule.apply(opt, schedule, it)
  opt:zero_grad()
  local pred = cn.odeint(model, y0, batch_ts, {method = "rk4"})
  local loss = (pred - target):abs():mean()
  loss:backward()
  opt:step()
  batch_sum, batch_count = batch_sum + loss:item(), batch_count + 1
  if it % 100 == 0 or it == ITERATIONS then
    last = trajectory_loss()
    print(string.format("iter %5d  trajectory loss %.5f  mean batch loss %.5f  lr %.2e  (%.1f s)", it, last,
      batch_sum / batch_count, opt.lr, os.clock() - clock))
    batch_sum, batch_count = 0, 0
  end
end
print(string.format("trajectory loss fell %.1fx (%.5f -> %.5f) in %d iterations, %.1f s of CPU",
  first / last, first, last, ITERATIONS, os.clock() - clock))
