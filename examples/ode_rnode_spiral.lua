-- examples/ode_rnode_spiral.lua — regularised neural ODEs (RNODE, Finlay et al. 2020): the same
-- small neural ODE trained with and without the kinetic and Jacobian penalties, then compared on
-- task loss and on the evaluations dopri5 needs to solve it.
--   ./cunet examples/ode_rnode_spiral.lua [iterations] [kinetic] [jacobian]
--
-- The spiral of examples/ode_fit_spiral.lua (z' = z A, A = [[-0.1, 2], [-2, -0.1]], from (2, 0),
-- observed at 1000 times in [0, 25]); the task here is its flow over a horizon H: from a point
-- z(t) of the observed trajectory, predict z(t + H). Only the end point is supervised, so many
-- vector fields fit, and the penalties choose among them the one of least kinetic energy and
-- smallest Jacobian: straighter, gentler paths that an adaptive solver crosses in fewer steps.
-- The model is nn.ODEBlock over [0, 1] of dz/dt = MLP(z, t) (Linear 3→50, tanh, Linear 50→2; t
-- an input, so a path may bend in time, as RNODE's models), its weights drawn N(0, 1): a rough
-- initial field, where torchdiffeq's N(0, 0.1) starts nearly flat and gives the penalties little to
-- remove. Training: dopri5 at rtol 1e-4 / atol 1e-5, Adam (1e-2, cosine to 1e-4) on the mean
-- absolute error of BATCH_SIZE random pairs plus block:penalties().total, gradients through the
-- solver. Both runs start from the same seed and take the same steps. After training, in eval
-- mode (no penalty): the task loss over all pairs and dopri5's evaluations for that forward.
-- At 1000 iterations (the default): NFE 62 -> 44, task loss 0.152 -> 0.022 (docs/ode.md, "RNODE").
local cn = require "cunet"
local nn, optim = cn.nn, cn.optim

local ITERATIONS = tonumber(arg and arg[1]) or 300
local KINETIC = tonumber(arg and arg[2]) or 0.01
local JACOBIAN = tonumber(arg and arg[3]) or 0.01
local INIT_STD = 1 -- weights N(0, 1): a rough initial field (torchdiffeq's 0.1 starts nearly flat)
local DATA_SIZE, HORIZON, BATCH_SIZE = 1000, 40, 32 -- HORIZON in observation steps: H = 40 · 25/999 ≈ 1 s
local SOLVER = {method = "dopri5", rtol = 1e-4, atol = 1e-5}

-- ---- data: the true trajectory and its (z(t), z(t + H)) pairs ---------------------------------
local A = cn.tensor{{-0.1, 2.0}, {-2.0, -0.1}}
local t_all = cn.linspace(0, 25, DATA_SIZE):totable()
local y_true = cn.no_grad(cn.odeint, function(t, z) return z:matmul(A) end, cn.tensor{{2.0, 0.0}}, t_all,
  {method = "dopri5", rtol = 1e-7, atol = 1e-9}):view{DATA_SIZE, 2}
local inputs = y_true:narrow(1, 1, DATA_SIZE - HORIZON)
local targets = y_true:narrow(1, 1 + HORIZON, DATA_SIZE - HORIZON)

-- ---- one training run -------------------------------------------------------------------------
local function train(regularize)
  cn.seed(2018)
  local net = nn.Sequential(nn.Linear(3, 50), nn.Tanh(), nn.Linear(50, 2))
  cn.no_grad(function()
    for _, p in ipairs(net:parameters()) do
      if p:dim() == 2 then nn.init.normal_(p, 0, INIT_STD) else nn.init.zeros_(p) end
    end
  end)
  local opts = {regularize = regularize}
  for k, v in pairs(SOLVER) do opts[k] = v end
  local block = nn.ODEBlock(function(t, z) return net(cn.cat({z, cn.full({z:size(1), 1}, t)}, 2)) end, opts)
  local opt = optim.Adam(net, {lr = 1e-2})
  local schedule = optim.schedule.cosine(1e-2, ITERATIONS, {min_lr = 1e-4})
  local train_nfe = 0
  for it = 1, ITERATIONS do
    local idx = cn.randperm(DATA_SIZE - HORIZON):narrow(1, 1, BATCH_SIZE)
    optim.schedule.apply(opt, schedule, it)
    opt:zero_grad()
    local loss = (block(inputs:index_select(1, idx)) - targets:index_select(1, idx)):abs():mean()
    train_nfe = train_nfe + block.stats.nfe
    local total = loss + block:penalties().total
    total:backward()
    opt:step()
  end
  block:eval()
  local pred = cn.no_grad(function() return block(inputs) end)
  return {loss = (pred - targets):abs():mean():item(), nfe = block.stats.nfe, train_nfe = train_nfe / ITERATIONS}
end

local clock = os.clock()
print(string.format("flow of the spiral over H = %.2f s: %d iterations of %d pairs, dopri5 rtol %g atol %g",
  t_all[1 + HORIZON], ITERATIONS, BATCH_SIZE, SOLVER.rtol, SOLVER.atol))
local plain = train(false)
print(string.format("plain      task loss %.5f  dopri5 NFE per forward %d  (training: %.1f)", plain.loss, plain.nfe, plain.train_nfe))
local rnode = train({kinetic = KINETIC, jacobian = JACOBIAN})
print(string.format("RNODE      task loss %.5f  dopri5 NFE per forward %d  (training: %.1f)  kinetic %g jacobian %g",
  rnode.loss, rnode.nfe, rnode.train_nfe, KINETIC, JACOBIAN))
print(string.format("NFE %d -> %d (%.2fx fewer), task loss %.5f -> %.5f (ratio %.2f), %.1f s of CPU", plain.nfe, rnode.nfe,
  plain.nfe / rnode.nfe, plain.loss, rnode.loss, rnode.loss / plain.loss, os.clock() - clock))
