-- test_ode_seminorm_trace.lua — the adjoint's seminorm (cn.odeint adjoint_norm = "seminorm",
-- Kidger et al. 2021), the error norm over leading state tensors (norm_states), and Hutchinson's
-- trace estimator (cn.ode.trace_estimate). Dense output and the solvers: test_ode.lua.

local lu = require "luaunit"
local cn = require "cunet"

-- max |a - b| / max |b|
local function rel_diff(a, b)
  return (a - b):abs():max():item() / math.max(b:abs():max():item(), 1e-30)
end

-- ---- the seminorm -----------------------------------------------------------------------------

TestOdeSeminorm = {}

-- An MLP dynamics (2 -> 64 -> 2, 322 parameters against 32 state elements) solved by dopri5 with
-- the adjoint, over one and several output intervals: the seminorm's gradients equal the full
-- norm's and the direct ones (measured <= 1.3e-4 relative at rtol 1e-4, <= 1e-6 at 1e-6; asserted
-- 1e-3), the forward solve is untouched, and the backward solve takes fewer evaluations: measured
-- full -> seminorm 68 -> 32 and 122 -> 62 over [0, 1], 120 -> 78 and 228 -> 144 over {0, .5, 1, 2}
-- (rtol 1e-4 and 1e-6): 35-53% fewer; asserted at most 80% of the full norm's.
function TestOdeSeminorm:testSameGradientsFewerBackwardEvaluations()
  cn.seed(31)
  local W1 = (cn.randn{2, 64} * 0.6):requires_grad(true)
  local b1 = (cn.randn{64} * 0.1):requires_grad(true)
  local W2 = (cn.randn{64, 2} * 0.3):requires_grad(true)
  local z0 = cn.randn{16, 2}:requires_grad(true)
  local f = function(t, z) return (z:matmul(W1) + b1):tanh():matmul(W2) end
  local wrt = {z0, W1, b1, W2}
  for _, ts in ipairs{{0, 1}, {0, 0.5, 1, 2}} do
    for _, rtol in ipairs{1e-4, 1e-6} do
      local solver = {method = "dopri5", rtol = rtol, atol = rtol / 100}
      local direct = cn.autograd.grad(cn.odeint(f, z0, ts, solver):square():sum(), wrt)
      local runs = {}
      for _, norm in ipairs{"full", "seminorm"} do
        local opts = {adjoint = true, params = {W1, b1, W2}, adjoint_norm = norm}
        for k, v in pairs(solver) do opts[k] = v end
        local sol, stats = cn.odeint(f, z0, ts, opts)
        lu.assertNil(stats.backward) -- filled in by the backward pass
        runs[norm] = {grads = cn.autograd.grad(sol:square():sum(), wrt), stats = stats}
      end
      local full, semi = runs.full.stats, runs.seminorm.stats
      local label = string.format("%d times rtol %g: backward nfe full %d, seminorm %d", #ts, rtol, full.backward.nfe,
        semi.backward.nfe)
      lu.assertEquals({semi.nfe, semi.accepted}, {full.nfe, full.accepted}, label)
      lu.assertTrue(semi.backward.nfe <= 0.8 * full.backward.nfe, label)
      lu.assertTrue(semi.backward.accepted < full.backward.accepted, label)
      for i = 1, #wrt do
        local d1, d2 = rel_diff(runs.seminorm.grads[i], runs.full.grads[i]), rel_diff(runs.seminorm.grads[i], direct[i])
        lu.assertTrue(d1 <= 1e-3 and d2 <= 1e-3,
          string.format("%s: gradient %d seminorm vs full %.3g, vs direct %.3g", label, i, d1, d2))
      end
    end
  end
end

-- A table state {x, v} (second order): the seminorm covers x, v, a_x, a_v; gradients agree.
function TestOdeSeminorm:testTableState()
  cn.seed(32)
  local K = (cn.randn{3, 3} * 0.5):requires_grad(true)
  local x0, v0 = cn.randn{4, 3}:requires_grad(true), cn.randn{4, 3}:requires_grad(true)
  local f = cn.ode.second_order(function(t, x, v) return (x:matmul(K)):tanh() - x - v * 0.2 end)
  local grads, nfe = {}, {}
  for _, norm in ipairs{"full", "seminorm"} do
    local sol, stats = cn.odeint(f, {x0, v0}, {0, 1, 2}, {method = "dopri5", rtol = 1e-5, atol = 1e-7, adjoint = true,
      params = {K}, adjoint_norm = norm})
    grads[norm] = cn.autograd.grad(sol[1]:square():sum() + sol[2]:sum(), {x0, v0, K})
    nfe[norm] = stats.backward.nfe
  end
  for i = 1, 3 do lu.assertTrue(rel_diff(grads.seminorm[i], grads.full[i]) <= 1e-3, "gradient " .. i) end
  lu.assertTrue(nfe.seminorm <= nfe.full, string.format("backward nfe %d vs %d", nfe.seminorm, nfe.full))
end

-- norm_states = k: the error norm covers the first k state tensors only. With {a, b} decoupled,
-- a' = -a and b' = -50 b, the steps are those of a alone.
function TestOdeSeminorm:testNormStates()
  local f = function(t, s) return {-s[1], s[2] * -50} end
  local _, both = cn.odeint(f, {cn.tensor{1.0}, cn.tensor{1.0}}, {0, 2}, {rtol = 1e-5, atol = 1e-8})
  local _, first = cn.odeint(f, {cn.tensor{1.0}, cn.tensor{1.0}}, {0, 2}, {rtol = 1e-5, atol = 1e-8, norm_states = 1})
  local _, alone = cn.odeint(function(t, a) return -a end, cn.tensor{1.0}, {0, 2}, {rtol = 1e-5, atol = 1e-8})
  lu.assertEquals({first.accepted, first.rejected, first.nfe}, {alone.accepted, alone.rejected, alone.nfe})
  lu.assertTrue(both.accepted > 2 * alone.accepted)
  lu.assertErrorMsgContains("norm_states must be in [0, 2]", function()
    cn.odeint(f, {cn.tensor{1.0}, cn.tensor{1.0}}, {0, 1}, {norm_states = 3})
  end)
end

function TestOdeSeminorm:testBadOption()
  lu.assertErrorMsgContains('adjoint_norm must be "full" or "seminorm", got semi', function()
    cn.odeint(function(t, z) return -z end, cn.tensor{1.0}, {0, 1}, {adjoint = true, adjoint_norm = "semi"})
  end)
  lu.assertErrorMsgContains("unknown option 'adjoint_nrom'", function()
    cn.odeint(function(t, z) return -z end, cn.tensor{1.0}, {0, 1}, {adjoint = true, adjoint_nrom = "seminorm"})
  end)
end

-- ---- Hutchinson's trace estimator -------------------------------------------------------------

TestOdeTraceEstimate = {}

local A_VALUES = {{0.5, -1.2, 0.3, 2.0}, {0.7, -0.4, 1.1, -0.6}, {-1.5, 0.2, 0.9, 0.4}, {0.1, 0.8, -0.3, 1.3}}

-- f(z) = z Aᵀ row by row for z [B, 4]: ∂f/∂z is block diagonal, tr = B · tr A.
local function linear_map(batch)
  local A = cn.tensor(A_VALUES)
  local z = cn.randn{batch, 4}:requires_grad(true)
  return z:matmul(A:transpose(1, 2)), z
end

local function trace_and_variances()
  local tr, frob, offdiag = 0, 0, 0
  for i = 1, 4 do
    tr = tr + A_VALUES[i][i]
    for j = 1, 4 do
      local s = (A_VALUES[i][j] + A_VALUES[j][i]) / 2
      frob = frob + s * s
      if i ~= j then offdiag = offdiag + s * s end
    end
  end
  -- per sample of v: Var[vᵀAv] = 2 Σ_{i≠j} S_ij² (Rademacher), 2 ‖S‖_F² (Gaussian), S = (A + Aᵀ)/2
  return tr, {rademacher = 2 * offdiag, gaussian = 2 * frob}
end

-- Unbiased: the mean over 4000 samples is within 4 standard errors (sqrt(Var / 4000), from the
-- variance formula above; per batch row) of the exact trace, for both distributions, for the
-- whole Jacobian (B · tr A) and per sample (tr A for each row).
function TestOdeTraceEstimate:testMeanMatchesExactTrace()
  cn.seed(41)
  local tr, var = trace_and_variances()
  local batch, samples = 3, 4000
  for _, dist in ipairs{"rademacher", "gaussian"} do
    local y, z = linear_map(batch)
    local whole = cn.ode.trace_estimate(y, z, {samples = samples, distribution = dist})
    lu.assertEquals(whole:shape(), {})
    lu.assertFalse(whole:requires_grad())
    local bound = 4 * math.sqrt(batch * var[dist] / samples)
    lu.assertTrue(math.abs(whole:item() - batch * tr) <= bound,
      string.format("%s: estimate %.4f, exact %.4f, bound %.4f", dist, whole:item(), batch * tr, bound))
    local rows = cn.ode.trace_estimate(y, z, {samples = samples, distribution = dist, per_sample = true})
    lu.assertEquals(rows:shape(), {batch})
    for b, v in ipairs(rows:totable()) do
      lu.assertTrue(math.abs(v - tr) <= 4 * math.sqrt(var[dist] / samples),
        string.format("%s row %d: %.4f vs %.4f", dist, b, v, tr))
    end
  end
end

-- A Rademacher v has vᵢ² = 1, so for a diagonal Jacobian one sample is exact; and a nonlinear
-- f(z) = tanh(z) has the diagonal Jacobian 1 - tanh², so its trace is exact from one sample.
function TestOdeTraceEstimate:testRademacherExactOnDiagonal()
  cn.seed(42)
  local z = cn.randn{2, 5}:requires_grad(true)
  local y = z:tanh()
  local exact = (1 - y:detach():square()):sum():item()
  lu.assertAlmostEquals(cn.ode.trace_estimate(y, z):item(), exact, 1e-5)
  -- the graph survives for the caller
  local g = cn.autograd.grad(y:sum(), {z})[1]
  lu.assertAlmostEquals(g:sum():item(), exact, 1e-5)
end

-- With create_graph the estimate is differentiable: for f(z) = a ⊙ z the Jacobian is diag(a), one
-- Rademacher sample gives Σ aᵢ exactly, so d estimate / d a is all ones (and d/dz is zero); without
-- create_graph the estimate has no graph.
function TestOdeTraceEstimate:testCreateGraphGivesADifferentiableEstimate()
  cn.seed(7)
  local a = cn.randn{2, 4}:requires_grad(true)
  local z = cn.randn{2, 4}:requires_grad(true)
  local est = cn.ode.trace_estimate(a * z, z, {create_graph = true})
  lu.assertAlmostEquals(est:item(), a:detach():sum():item(), 1e-5)
  lu.assertTrue(est:requires_grad())
  local ga = cn.autograd.grad({est}, {a})[1]
  lu.assertAlmostEquals((ga - 1):abs():max():item(), 0, 1e-6)
  -- a nonlinear f: tr J of tanh(a ⊙ z) is Σ aᵢ (1 - tanh²(aᵢ zᵢ)); its gradient in a against central differences
  local function tr(av) return (av * (1 - (av * z:detach()):tanh():square())):sum():item() end
  local est2 = cn.ode.trace_estimate((a * z):tanh(), z, {create_graph = true})
  lu.assertAlmostEquals(est2:item(), tr(a:detach()), 1e-5)
  local g = cn.autograd.grad({est2}, {a})[1]
  local h, av = 1e-2, a:detach():clone()
  for _, idx in ipairs{{1, 1}, {2, 3}} do
    local plus, minus = av:clone(), av:clone()
    plus[idx] = av[idx] + h
    minus[idx] = av[idx] - h
    lu.assertAlmostEquals(g[idx], (tr(plus) - tr(minus)) / (2 * h), 2e-3)
  end
  lu.assertFalse(cn.ode.trace_estimate(a * z, z):requires_grad())
end

function TestOdeTraceEstimate:testErrors()
  local z = cn.randn{2, 3}:requires_grad(true)
  local y = z * 2
  lu.assertErrorMsgContains("unknown option 'sample'", function() cn.ode.trace_estimate(y, z, {sample = 3}) end)
  lu.assertErrorMsgContains('distribution must be "rademacher" or "gaussian", got normal', function()
    cn.ode.trace_estimate(y, z, {distribution = "normal"})
  end)
  lu.assertErrorMsgContains("samples must be an integer >= 1", function() cn.ode.trace_estimate(y, z, {samples = 0}) end)
  lu.assertErrorMsgContains("must have z's shape [2, 3]", function() cn.ode.trace_estimate(y:sum(1), z) end)
  lu.assertErrorMsgContains("f_out has no graph", function() cn.ode.trace_estimate(y:detach(), z) end)
end
