-- test_ode_blocks.lua — nn.ODEBlock and nn.SecondOrderODEBlock (lua/cunet/nn/ode.lua).
local lu = require "luaunit"
local helpers = require "helpers"
local cn = require "cunet"
local nn = cn.nn

local max_diff = helpers.max_abs_diff

-- dynamics with a conditioning vector: tanh(conv(z) + lin(emb))
local Func = nn.class("TestFunc", nn.Module)
function Func:__init(c)
  nn.Module.__init(self)
  self.conv = nn.Conv2d(c, c, 3, {padding = 1})
  self.lin = nn.Linear(8, c)
end
function Func:forward(t, z, emb)
  return (self.conv(z) + self.lin(emb):view{-1, z:size(2), 1, 1}):tanh() * (1 + 0.1 * t)
end

TestODEBlock = {}

function TestODEBlock:testEqualsOdeint()
  cn.seed(1)
  local f = Func(3)
  local x, emb = cn.randn{2, 3, 5, 5}, cn.randn{2, 8}
  local block = nn.ODEBlock(f, {method = "rk4", steps = 2, t1 = 0.7})
  local y = cn.no_grad(function() return block(x, emb) end)
  local sol = cn.no_grad(cn.odeint, function(t, z) return f(t, z, emb) end, x, {0, 0.7}, {method = "rk4", steps = 2})
  lu.assertEquals(max_diff(y, sol[2]), 0)
  lu.assertEquals(block.stats.nfe, 8)
  -- the block owns the dynamics' parameters
  lu.assertEquals(#block:parameters(), #f:parameters())
end

function TestODEBlock:testAdjointMatchesDirectIncludingTheConditioning()
  cn.seed(2)
  local f = Func(3)
  local x, e0 = cn.randn{2, 3, 5, 5}, cn.randn{2, 8}
  local grads = {}
  for _, adjoint in ipairs{false, true} do
    local e = e0:clone():requires_grad(true)
    local block = nn.ODEBlock(f, {method = "rk4", steps = 8, adjoint = adjoint})
    local y = block(x, e * 2) -- a non-leaf conditioning tensor: its gradient must flow back to e
    grads[#grads + 1] = cn.autograd.grad((y * y):sum(), {e, f.conv.weight, f.lin.bias})
  end
  for k = 1, 3 do
    local scale = grads[1][k]:abs():max():item()
    lu.assertTrue(max_diff(grads[1][k], grads[2][k]) <= 2e-3 * scale,
      string.format("gradient %d: direct vs adjoint differ by %g (scale %g)", k, max_diff(grads[1][k], grads[2][k]), scale))
  end
end

function TestODEBlock:testFunctionDynamicsAndTrajectory()
  local block = nn.ODEBlock(function(t, z) return -z end, {method = "dopri5", rtol = 1e-6, atol = 1e-8, times = {0, 0.5, 1}, return_trajectory = true})
  local sol = block(cn.ones{1})
  lu.assertEquals(sol:shape(), {3, 1})
  lu.assertAlmostEquals(sol[3]:item(), math.exp(-1), 1e-5)
end

function TestODEBlock:testErrors()
  lu.assertErrorMsgContains("func must be a module or a function", function() nn.ODEBlock(3) end)
  lu.assertErrorMsgContains("unknown option 'stepz'", function() nn.ODEBlock(function(t, z) return z end, {stepz = 2}) end)
  local block = nn.ODEBlock(function(t, z) return z:sum() end)
  lu.assertErrorMsgContains("must have the state's shape", function() block(cn.ones{2, 2}) end)
end

TestSecondOrderODEBlock = {}

function TestSecondOrderODEBlock:testHarmonicOscillator()
  -- x'' = -x, x(0) = 1, v(0) = 0: x(t) = cos t, v(t) = -sin t
  local block = nn.SecondOrderODEBlock(function(t, x, v) return -x end, function(x) return cn.zeros_like(x) end,
    {method = "dopri5", rtol = 1e-7, atol = 1e-9, t1 = 2, return_velocity = true})
  local xv = block(cn.ones{1})
  lu.assertAlmostEquals(xv[1]:item(), math.cos(2), 1e-5)
  lu.assertAlmostEquals(xv[2]:item(), -math.sin(2), 1e-5)
end

function TestSecondOrderODEBlock:testAugmentedForm()
  -- the state cat(x, v) along channels; accel maps it to its derivative: here s' = [v, -x]
  local accel = function(t, s)
    local x, v = s:narrow(2, 1, 1), s:narrow(2, 2, 1)
    return cn.cat({v, -x}, 2)
  end
  local block = nn.SecondOrderODEBlock(accel, function(x) return cn.zeros_like(x) end,
    {form = "augmented", method = "rk4", steps = 50, t1 = 1})
  local y = block(cn.ones{1, 1})
  lu.assertEquals(y:shape(), {1, 1})
  lu.assertAlmostEquals(y:item(), math.cos(1), 1e-5)
end

function TestSecondOrderODEBlock:testSolveFromAGivenVelocity()
  -- x'' = -x from x(0) = 0, v(0) = 1: x(t) = sin t; init_velocity is not called by solve
  local block = nn.SecondOrderODEBlock(function(t, x, v) return -x end,
    function() error("init_velocity called") end, {method = "dopri5", rtol = 1e-7, atol = 1e-9, t1 = 2})
  lu.assertAlmostEquals(block:solve(cn.zeros{1}, cn.ones{1}):item(), math.sin(2), 1e-5)
  -- the same numbers as forward with an init_velocity returning that v0, gradients included
  cn.seed(5)
  local Acc = nn.class("TestSolveAcc", nn.Module)
  function Acc:__init() nn.Module.__init(self); self.conv = nn.Conv2d(4, 2, 3, {padding = 1}) end
  function Acc:forward(t, x, v) return self.conv(cn.cat({x, v}, 2)):tanh() end
  local accel = Acc()
  local x, v0 = cn.randn{2, 2, 5, 5}, cn.randn{2, 2, 5, 5}
  local given = nn.SecondOrderODEBlock(accel, nil, {steps = 2})
  local called = nn.SecondOrderODEBlock(accel, function() return v0 end, {steps = 2})
  local a = given:solve(x, v0)
  a:sum():backward()
  local ga = accel.conv.weight.grad:clone()
  accel:zero_grad()
  local b = called(x)
  b:sum():backward()
  lu.assertEquals(max_diff(a, b), 0)
  lu.assertEquals(max_diff(ga, accel.conv.weight.grad), 0)
  lu.assertErrorMsgContains("x and v0 must be tensors", function() given:solve(x, nil) end)
end

function TestSecondOrderODEBlock:testModulesTrainBothWays()
  cn.seed(3)
  local Acc = nn.class("TestAcc", nn.Module)
  function Acc:__init() nn.Module.__init(self); self.conv = nn.Conv2d(4, 2, 3, {padding = 1}) end
  function Acc:forward(t, x, v) return self.conv(cn.cat({x, v}, 2)):tanh() end
  for _, adjoint in ipairs{false, true} do
    local block = nn.SecondOrderODEBlock(Acc(), nn.Conv2d(2, 2, 1), {steps = 2, adjoint = adjoint})
    lu.assertEquals(#block:parameters(), 4)
    local x = cn.randn{2, 2, 6, 6}
    local target = cn.zeros{2, 2, 6, 6}
    local opt = cn.optim.Adam(block, {lr = 1e-2})
    local first, last
    for step = 1, 15 do
      local loss = cn.mse_loss(block(x), target)
      opt:zero_grad()
      loss:backward()
      opt:step()
      first = first or loss:item()
      last = loss:item()
    end
    lu.assertTrue(last < 0.8 * first, string.format("adjoint=%s: loss %g -> %g", tostring(adjoint), first, last))
  end
  lu.assertStrContains(tostring(nn.SecondOrderODEBlock(Acc(), nil, {form = "augmented"})), "form=augmented")
  lu.assertErrorMsgContains("form must be", function() nn.SecondOrderODEBlock(Acc(), nil, {form = "third"}) end)
end
