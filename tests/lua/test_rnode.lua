-- test_rnode.lua — the regularize option of nn.ODEBlock / nn.SecondOrderODEBlock (RNODE: kinetic
-- energy and Jacobian Frobenius penalties, lua/cunet/nn/ode.lua) against closed forms for linear
-- dynamics, its gradients against finite differences, and its refusals.
local lu = require "luaunit"
local cn = require "cunet"
local nn = cn.nn

-- dz/dt = z A (rows are states) with A = -a I + w J: A Aᵀ = (a² + w²) I, so ‖z A‖² = (a² + w²) ‖z‖²
-- and ‖z(t)‖ = e^{-a t} ‖z(0)‖.
local a, w = 0.1, 2.0
local A = cn.tensor{{-a, w}, {-w, -a}}
local function linear(t, z) return z:matmul(A) end

TestRNODE = {}

-- ∫₀ᵀ ‖f‖² dt / d = (a² + w²) ‖z0‖² (1 - e^{-2aT}) / (2a) / d, per sample, then the batch mean.
function TestRNODE:testKineticEqualsClosedForm()
  local T = 1.5
  local z0 = cn.tensor{{2, 0}, {0.5, -1}, {-1, 1}}
  local block = nn.ODEBlock(linear, {method = "dopri5", rtol = 1e-7, atol = 1e-9, t1 = T, regularize = {kinetic = 3}})
  local y = block(z0)
  local expected = 0
  for _, row in ipairs(z0:totable()) do
    expected = expected + (a * a + w * w) * (row[1] ^ 2 + row[2] ^ 2) * (1 - math.exp(-2 * a * T)) / (2 * a) / 2
  end
  expected = expected / 3
  local p = block:penalties()
  lu.assertAlmostEquals(p.kinetic:item(), 3 * expected, 1e-4 * 3 * expected)
  lu.assertNil(p.jacobian)
  lu.assertAlmostEquals(p.total:item(), p.kinetic:item(), 0)
  -- the state's solution is the unregularised one
  local plain = cn.no_grad(cn.odeint, linear, z0, {0, T}, {method = "dopri5", rtol = 1e-7, atol = 1e-9})
  lu.assertTrue((y - plain[2]):abs():max():item() < 1e-5)
end

-- E‖εᵀ ∂f/∂z‖² = ‖A‖²_F for E[ε εᵀ] = I; per sample ∂f/∂z = Aᵀ is constant, so the penalty is
-- T ‖εᵀAᵀ‖²/d: Gaussian ε averaged over a large batch approaches T ‖A‖²_F / d, and with the
-- basis vectors (here the Rademacher ±1 with A Aᵀ = c I: ‖εAᵀ‖² = c ‖ε‖² = c d) it is exact.
function TestRNODE:testJacobianExpectationIsFrobenius()
  cn.seed(3)
  local B, T = 20000, 0.5
  local M = cn.tensor{{0.3, -1.2}, {0.5, 0.2}} -- not normal: MᵀM ≠ c I
  local frob = 0.3 ^ 2 + 1.2 ^ 2 + 0.5 ^ 2 + 0.2 ^ 2
  local block = nn.ODEBlock(function(t, z) return z:matmul(M) end,
    {method = "rk4", steps = 4, t1 = T, regularize = {jacobian = 1}})
  block(cn.randn{B, 2} * 0.1)
  local got = block:penalties().jacobian:item()
  local expected = T * frob / 2
  lu.assertTrue(math.abs(got - expected) < 0.03 * expected, string.format("Gaussian: %g vs %g", got, expected))
  local exact = nn.ODEBlock(linear, {method = "rk4", steps = 4, t1 = T, regularize = {jacobian = 2, noise = "rademacher"}})
  exact(cn.randn{5, 2})
  lu.assertAlmostEquals(exact:penalties().jacobian:item(), 2 * T * 2 * (a * a + w * w) / 2, 1e-4)
end

-- d(penalty)/dθ through the solver and the create_graph vector-Jacobian product, against central
-- differences (the same ε each evaluation: the seed is reset). Not cn.gradcheck: it evaluates
-- under no_grad, where the block computes no penalty.
function TestRNODE:testPenaltyGradientsMatchFiniteDifferences()
  cn.seed(5)
  local x, w0 = cn.randn{4, 3}, cn.randn{3, 3} * 0.5
  local function penalty(weight, reg)
    cn.seed(11)
    local block = nn.ODEBlock(function(t, z) return z:matmul(weight):tanh() end, {method = "rk4", steps = 3, regularize = reg})
    block(x)
    return block:penalties().total
  end
  local eps = 1e-2
  for _, reg in ipairs{{kinetic = 1}, {jacobian = 1}, {kinetic = 0.5, jacobian = 2}} do
    local weight = w0:clone():requires_grad(true)
    local analytic = cn.autograd.grad(penalty(weight, reg), {weight})[1]:totable{flat = true}
    local base = w0:totable{flat = true}
    for i = 1, #base do
      local plus, minus = {table.unpack(base)}, {table.unpack(base)}
      plus[i], minus[i] = base[i] + eps, base[i] - eps
      local numeric = (penalty(cn.tensor(plus):view{3, 3}, reg):item() - penalty(cn.tensor(minus):view{3, 3}, reg):item()) / (2 * eps)
      lu.assertTrue(math.abs(analytic[i] - numeric) <= 2e-3 + 2e-2 * math.abs(numeric),
        string.format("kinetic=%s jacobian=%s, weight element %d: autograd %g, finite differences %g",
          tostring(reg.kinetic), tostring(reg.jacobian), i, analytic[i], numeric))
    end
  end
end

-- Both forms of the second-order block: the penalties of x'' = -k x equal those of the first-order
-- system (v, -k x) solved by ODEBlock on cat(x, v).
function TestRNODE:testSecondOrderForms()
  local k = 4
  local x, v0 = cn.tensor{{1, 0.5}, {-0.2, 0.3}}, cn.tensor{{0, 1}, {0.5, 0}}
  local opts = {method = "dopri5", rtol = 1e-7, atol = 1e-9, regularize = {kinetic = 1, jacobian = 1, noise = "rademacher"}}
  local results = {}
  cn.seed(9)
  local second = nn.SecondOrderODEBlock(function(t, p, v) return -k * p end, nil, opts)
  second:solve(x, v0)
  results[1] = second:penalties()
  local augmented_opts = {}
  for key, value in pairs(opts) do augmented_opts[key] = value end
  augmented_opts.form = "augmented"
  local aug = nn.SecondOrderODEBlock(function(t, s)
    return cn.cat({s:narrow(2, 3, 2), -k * s:narrow(2, 1, 2)}, 2)
  end, nil, augmented_opts)
  aug:solve(x, v0)
  results[2] = aug:penalties()
  -- ‖f‖² = ‖v‖² + k²‖x‖²; with Rademacher ε, ‖εᵀJ‖² = ε_v² k² + ε_x² summed: (k² + 1)·2 per sample
  lu.assertAlmostEquals(results[1].jacobian:item(), (k * k + 1) * 2 / 4, 1e-5)
  lu.assertAlmostEquals(results[2].jacobian:item(), (k * k + 1) * 2 / 4, 1e-5)
  lu.assertAlmostEquals(results[1].kinetic:item(), results[2].kinetic:item(), 1e-5)
  -- energy (k x² + v²)/2 is conserved: ‖v‖² + k² ‖x‖² integrates to a positive finite value
  lu.assertTrue(results[1].kinetic:item() > 0)
end

-- eval mode and no_grad compute no penalty and solve with the plain state (the same evaluations).
function TestRNODE:testNoPenaltyInEvalOrNoGrad()
  local block = nn.ODEBlock(linear, {method = "dopri5", rtol = 1e-5, atol = 1e-6, regularize = {kinetic = 1, jacobian = 1}})
  local plain = nn.ODEBlock(linear, {method = "dopri5", rtol = 1e-5, atol = 1e-6})
  local z0 = cn.tensor{{2, 0}}
  plain(z0)
  cn.no_grad(function() block(z0) end)
  lu.assertEquals(block:penalties(), {total = 0})
  lu.assertEquals(block.stats.nfe, plain.stats.nfe)
  block:eval()
  block(z0)
  lu.assertEquals(block:penalties(), {total = 0})
  block:train()
  block(z0)
  lu.assertNotNil(block:penalties().kinetic)
end

function TestRNODE:testErrors()
  local f = function(t, z) return z end
  lu.assertErrorMsgContains("ODEBlock regularize: unknown option 'kinectic' (known: jacobian, kinetic, noise)",
    function() nn.ODEBlock(f, {regularize = {kinectic = 1}}) end)
  lu.assertErrorMsgContains("regularize.jacobian must be a number >= 0, got -1",
    function() nn.ODEBlock(f, {regularize = {jacobian = -1}}) end)
  lu.assertErrorMsgContains("regularize.noise must be", function() nn.ODEBlock(f, {regularize = {jacobian = 1, noise = "uniform"}}) end)
  lu.assertErrorMsgContains("regularize must be a table", function() nn.ODEBlock(f, {regularize = 1}) end)
  lu.assertErrorMsgContains("SecondOrderODEBlock: regularize is not supported with adjoint = true",
    function() nn.SecondOrderODEBlock(f, nil, {adjoint = true, regularize = {kinetic = 1}}) end)
end

TestRNODEExample = {}

-- examples/ode_rnode_spiral.lua at 300 iterations (a few seconds): the regularised model needs
-- fewer dopri5 evaluations per forward than the plain one, at a task loss at most 1.5x the plain
-- one's (at this size it is lower: 0.156 against 0.436, 50 evaluations against 80).
function TestRNODEExample:testFewerEvaluationsAtTheSameTaskLoss()
  local exe = os.getenv("CUNET_EXE") or "./cunet"
  local pipe = assert(io.popen(exe .. " examples/ode_rnode_spiral.lua 300 2>&1"))
  local output = pipe:read("a")
  lu.assertTrue(pipe:close(), output)
  local plain_nfe, rnode_nfe, plain_loss, rnode_loss =
    output:match("NFE (%d+) %-> (%d+) %b(), task loss ([%d.]+) %-> ([%d.]+)")
  lu.assertNotNil(rnode_loss, output)
  lu.assertTrue(tonumber(rnode_nfe) < tonumber(plain_nfe), output)
  lu.assertTrue(tonumber(rnode_loss) <= 1.5 * tonumber(plain_loss), output)
end
