-- test_optim.lua — cunet.optim against PyTorch (tests/fixtures/optim.lua, made by
-- tests/tools/fixtures_optim.py): 20 training steps of SGD / Adam / AdamW (momentum, Nesterov,
-- weight decay, AMSGrad, gradient clipping) on a two-layer tanh model, clip_grad_norm, schedules
-- and EMA; plus state_dict round trips and errors.
--
-- Tolerance of the training runs: rtol 1e-4, atol 1e-6 on parameters. Both runs are float32 with
-- different summation orders in matmul and mean (and FMA contraction in torch's kernels), so they
-- differ by float32 noise that the 20 steps carry along; the generator measures torch's own float32
-- run against float64 at up to ~5e-5 relative, below the rtol.
local lu = require "luaunit"
local helpers = require "helpers"
local cn = require "cunet"
local fx = require "fixture_check"
local optim = require "cunet.optim"

local RTOL, ATOL = 1e-4, 1e-6

local cases = fx.load("optim")
local by_name = {}
for _, c in ipairs(cases) do by_name[c.name] = c end

local assert_error = helpers.assert_error

local function flat(t) return t:totable{flat = true} end

-- ---- the model of the fixture ----------------------------------------------------------------

local function model_params()
  local m = by_name.model
  local ps = {}
  for i, spec in ipairs(m.params) do ps[i] = fx.tensor(spec):requires_grad(true) end
  return ps, fx.tensor(m.x), fx.tensor(m.y)
end

local function loss_of(x, y, p)
  local d = (x:matmul(p[1]) + p[2]):tanh():matmul(p[3]) + p[4] - y
  return (d * d):mean()
end

local function make_optimizer(case, params)
  return optim[case.optimizer](params, case.options)
end

-- One training step: returns the loss (before the update) and the clip norm (or nil).
local function train_step(opt, params, x, y, clip)
  opt:zero_grad()
  local loss = loss_of(x, y, params)
  loss:backward()
  local norm
  if clip then norm = optim.clip_grad_norm(params, clip.max_norm, clip.norm_type) end
  opt:step()
  return loss:item(), norm
end

-- ---- against PyTorch -------------------------------------------------------------------------

TestOptimTorch = {}

local function check_training(case)
  local params, x, y = model_params()
  local opt = make_optimizer(case, params)
  local snap = 1
  for step = 1, #case.losses do
    local loss, norm = train_step(opt, params, x, y, case.clip)
    lu.assertAlmostEquals(loss, case.losses[step], RTOL * math.abs(case.losses[step]),
      case.name .. ": loss of step " .. step)
    if case.clip then
      lu.assertAlmostEquals(norm, case.norms[step], RTOL * case.norms[step] + ATOL,
        case.name .. ": grad norm of step " .. step)
    end
    local s = case.snapshots[snap]
    if s and s.step == step then
      for i, spec in ipairs(s.params) do
        fx.assert_close(params[i], spec, {rtol = RTOL, atol = ATOL,
          label = string.format("%s: %s after step %d", case.name, by_name.model.names[i], step)})
      end
      snap = snap + 1
    end
  end
  lu.assertEquals(snap, #case.snapshots + 1, case.name .. ": every snapshot checked")
  lu.assertNil(params[5].grad, "the unused parameter never gets a gradient")
end

for _, case in ipairs(cases) do
  if case.kind == "train" then
    TestOptimTorch["test_" .. case.name] = function() check_training(case) end
  end
end

function TestOptimTorch:testUnusedParameterIsSkipped()
  local params, x, y = model_params()
  local before = flat(params[5])
  local opt = optim.Adam(params, {lr = 0.1})
  for _ = 1, 3 do train_step(opt, params, x, y) end
  lu.assertEquals(flat(params[5]), before)
  lu.assertNil(opt.state[5], "no state for a parameter that never had a gradient")
  lu.assertEquals(opt.state[1].step, 3)
end

-- ---- clip_grad_norm --------------------------------------------------------------------------

TestClipGradNorm = {}

for _, case in ipairs(cases) do
  if case.kind == "clip" then
    TestClipGradNorm["test_" .. case.name] = function()
      local ps = {}
      for i, spec in ipairs(case.grads) do
        ps[i] = cn.zeros(spec.shape):requires_grad(true)
        ps[i].grad = fx.tensor(spec)
      end
      local total = optim.clip_grad_norm(ps, case.max_norm, case.norm_type)
      lu.assertAlmostEquals(total, case.total_norm, 1e-6 * case.total_norm)
      for i, spec in ipairs(case.clipped) do
        fx.assert_close(ps[i].grad, spec, {rtol = 1e-6, atol = 1e-7, label = case.name .. ": grad " .. i})
      end
    end
  end
end

function TestClipGradNorm:testSkipsMissingGradsAndDefaultsToTwo()
  local a = cn.zeros{3}:requires_grad(true)
  local b = cn.zeros{2}:requires_grad(true)
  a.grad = cn.tensor{3, 0, 4}
  lu.assertEquals(optim.clip_grad_norm({a, b}, 10), 5)
  lu.assertEquals(flat(a.grad), {3, 0, 4})
  lu.assertNil(b.grad)
  lu.assertEquals(optim.clip_grad_norm({b}, 1), 0)
  local total = optim.clip_grad_norm({a, b}, 1)
  lu.assertEquals(total, 5)
  local g = flat(a.grad)
  lu.assertAlmostEquals(g[1], 3 / (5 + 1e-6), 1e-7)
  lu.assertAlmostEquals(g[3], 4 / (5 + 1e-6), 1e-7)
  lu.assertAlmostEquals(optim.grad_norm({a, b}), 1, 1e-6)
  lu.assertEquals(optim.grad_norm(a, math.huge), g[3])
end

function TestClipGradNorm:testStridedGradient()
  local a = cn.zeros{3, 2}:requires_grad(true)
  a.grad = cn.tensor{{1, 2, 3}, {4, 5, 6}}:t() -- a transposed (non-contiguous) view
  local total = optim.clip_grad_norm(a, 1)
  lu.assertAlmostEquals(total, math.sqrt(91), 1e-12)
  lu.assertAlmostEquals(a.grad[{3, 2}], 6 / math.sqrt(91), 1e-6)
end

function TestClipGradNorm:testErrors()
  local a = cn.zeros{3}:requires_grad(true)
  a.grad = cn.ones{3}
  assert_error(function() optim.clip_grad_norm(a, "x") end, "max_norm")
  assert_error(function() optim.clip_grad_norm(a, 1, -1) end, "norm_type")
  assert_error(function() optim.clip_grad_norm({a, 3}, 1) end, "parameter 2 is a number")
end

-- ---- schedules -------------------------------------------------------------------------------

TestSchedule = {}

local function schedule_of(case)
  if case.schedule == "linear_warmup" then return optim.schedule.linear_warmup(case.lr, case.warmup) end
  return optim.schedule.cosine(case.lr, case.total, {warmup = case.warmup, min_lr = case.min_lr})
end

for _, case in ipairs(cases) do
  if case.kind == "schedule" then
    TestSchedule["test_" .. case.name] = function()
      local sched = schedule_of(case)
      for step, want in ipairs(case.lrs) do
        -- the fixture holds %.9g decimals
        lu.assertAlmostEquals(sched(step), want, 1e-8 * want + 1e-15, case.name .. ": step " .. step)
      end
    end
  end
end

function TestSchedule:testCosineEnds()
  local sched = optim.schedule.cosine(1.0, 10, {warmup = 2, min_lr = 0.1})
  lu.assertEquals(sched(1), 0.5)
  lu.assertEquals(sched(2), 1.0)
  lu.assertEquals(sched(3), 1.0) -- the first step after warmup runs at the full rate
  lu.assertEquals(sched(100), 0.1) -- clamped at min_lr after total_steps
  lu.assertTrue(sched(10) > 0.1 and sched(10) < 0.15)
end

function TestSchedule:testConstantAndApply()
  local params = {cn.zeros{2}:requires_grad(true)}
  local opt = optim.SGD(params, {lr = 1})
  lu.assertEquals(optim.schedule.apply(opt, optim.schedule.constant(0.25), 7), 0.25)
  lu.assertEquals(opt.lr, 0.25)
  -- any function is a schedule; the new rate drives the next step
  optim.schedule.apply(opt, function(step) return 0.5 / step end, 5)
  lu.assertEquals(opt.lr, 0.1)
  params[1].grad = cn.tensor{1, -2}
  opt:step()
  lu.assertAlmostEquals(params[1][{1}], -0.1, 1e-7)
  lu.assertAlmostEquals(params[1][{2}], 0.2, 1e-7)
end

function TestSchedule:testErrors()
  local opt = optim.SGD({cn.zeros{2}:requires_grad(true)}, {lr = 1})
  assert_error(function() optim.schedule.apply(opt, function() return -1 end, 1) end, "learning rate", "-1")
  assert_error(function() optim.schedule.apply(opt, 3, 1) end, "schedule must be a function")
  assert_error(function() optim.schedule.cosine(1, 5, {warmup = 5}) end, "total_steps")
  assert_error(function() optim.schedule.cosine(1, 5, {warm = 1}) end, "unknown option 'warm'")
  assert_error(function() optim.schedule.linear_warmup(-1, 5) end, "learning rate")
  assert_error(function() optim.schedule.constant("fast") end, "learning rate")
end

-- ---- EMA ---------------------------------------------------------------------------------------

TestEMA = {}

for _, case in ipairs(cases) do
  if case.kind == "ema" then
    TestEMA["test_" .. case.name] = function()
      local w = fx.tensor(case.weights[1]):requires_grad(true)
      local b = fx.tensor(case.biases[1]):requires_grad(true)
      local ema = optim.EMA({w, b}, {decay = case.decay, warmup = case.warmup, power = case.power or false,
        inv_gamma = case.inv_gamma, every = case.every, after = case.after or false})
      for k = 2, #case.weights do
        cn.no_grad(function()
          w:copy_(fx.tensor(case.weights[k]))
          b:copy_(fx.tensor(case.biases[k]))
        end)
        local d = ema:update()
        local n = k - 1
        if case.decays then -- ema_pytorch's schedule: -1 where the call does not fold
          local want = case.decays[n]
          if want < 0 then lu.assertNil(d, "call " .. n) else lu.assertAlmostEquals(d, want, 1e-8) end -- 9 digits stored
        else
          lu.assertAlmostEquals(d, case.warmup and math.min(case.decay, (1 + n) / (10 + n)) or case.decay, 1e-15)
        end
        local want = case.shadows[k - 1]
        fx.assert_close(ema:shadows()[1], want[1], {rtol = 1e-6, atol = 1e-7, label = case.name .. " w " .. n})
        fx.assert_close(ema:shadows()[2], want[2], {rtol = 1e-6, atol = 1e-7, label = case.name .. " b " .. n})
      end
    end
  end
end

function TestEMA:testSwapCopyToAndState()
  local p = cn.tensor{1, 2, 3}:requires_grad(true)
  local ema = optim.EMA({p}, {decay = 0.5, warmup = false})
  cn.no_grad(function() p:fill_(3) end)
  ema:update() -- shadow = 1,2,3 -> 2, 2.5, 3
  lu.assertEquals(flat(ema:shadows()[1]), {2, 2.5, 3})
  ema:swap({p})
  lu.assertEquals(flat(p), {2, 2.5, 3})
  lu.assertEquals(flat(ema:shadows()[1]), {3, 3, 3})
  ema:swap() -- defaults to the tracked parameters
  lu.assertEquals(flat(p), {3, 3, 3})
  local q = cn.zeros{3}
  ema:copy_to({q})
  lu.assertEquals(flat(q), {2, 2.5, 3})
  local tensors, scalars = ema:state_dict()
  lu.assertEquals(scalars.num_updates, "1")
  lu.assertEquals(scalars.decay, "0.5")
  local other = optim.EMA({cn.zeros{3}}, {decay = 0.9})
  other:load_state_dict(tensors, scalars)
  lu.assertEquals(other.decay, 0.5)
  lu.assertEquals(other.num_updates, 1)
  lu.assertFalse(other.warmup)
  lu.assertEquals(flat(other:shadows()[1]), {2, 2.5, 3})
  tensors["shadow.1"]:fill_(0) -- a loaded state is a copy
  lu.assertEquals(flat(other:shadows()[1]), {2, 2.5, 3})
end

function TestEMA:testSwapNonContiguous()
  local base = cn.tensor{{1, 2}, {3, 4}}
  local p = base:t():requires_grad(true)
  local ema = optim.EMA(p, {decay = 0, warmup = false})
  cn.no_grad(function() base:fill_(7) end)
  ema:swap(p)
  lu.assertEquals(p:totable(), {{1, 3}, {2, 4}})
  lu.assertEquals(ema:shadows()[1]:totable(), {{7, 7}, {7, 7}})
  ema:update()
  lu.assertEquals(ema:shadows()[1]:totable(), {{1, 3}, {2, 4}})
end

-- The schedule's settings travel with the state (an EMA resumed from a checkpoint folds on the same
-- calls with the same decays); a state written before they existed loads with the defaults.
function TestEMA:testScheduleState()
  local p = cn.tensor{0, 0}:requires_grad(true)
  local ema = optim.EMA({p}, {decay = 0.9, warmup = false, power = 0.75, inv_gamma = 2, every = 4, after = 8})
  for _ = 1, 5 do ema:update() end
  local tensors, scalars = ema:state_dict()
  local other = optim.EMA({cn.zeros{2}})
  other:load_state_dict(tensors, scalars)
  lu.assertEquals({other.power, other.inv_gamma, other.every, other.after, other.warmup, other.num_updates},
    {0.75, 2, 4, 8, false, 5})
  for c = 5, 40 do lu.assertEquals(other:decay_at(c), ema:decay_at(c), "call " .. c) end
  lu.assertNil(ema:decay_at(13))                  -- not a multiple of every
  lu.assertEquals(ema:decay_at(12), 0)            -- the first fold past after: a copy
  lu.assertAlmostEquals(ema:decay_at(16), 1 - (1 + 8 / 2) ^ -0.75, 1e-15)
  for _, key in ipairs{"power", "inv_gamma", "every", "after"} do scalars[key] = nil end
  local old = optim.EMA({cn.zeros{2}}, {warmup = false, power = 0.5, every = 3})
  old:load_state_dict(tensors, scalars)
  lu.assertEquals({old.power, old.inv_gamma, old.every, old.after}, {false, 1, 1, false})
end

function TestEMA:testErrors()
  local p = cn.zeros{3}:requires_grad(true)
  assert_error(function() optim.EMA({p}, {decay = 1.5}) end, "decay")
  assert_error(function() optim.EMA({p}, {beta = 0.9}) end, "unknown option 'beta'")
  assert_error(function() optim.EMA({p}, {power = 0.7}) end, "two warmups")
  assert_error(function() optim.EMA({p}, {warmup = false, power = -1}) end, "invalid power -1")
  assert_error(function() optim.EMA({p}, {every = 0}) end, "every must be an integer >= 1, got 0")
  assert_error(function() optim.EMA({p}, {after = 1.5}) end, "after must be an integer >= 0 or false, got 1.5")
  assert_error(function() optim.EMA({p}, {inv_gamma = 0}) end, "invalid inv_gamma 0")
  local ema = optim.EMA({p})
  assert_error(function() ema:copy_to({cn.zeros{4}}) end, "parameter 1 has shape [4], its shadow [3]")
  assert_error(function() ema:swap({p, cn.zeros{3}}) end, "got 2 parameters, the EMA tracks 1")
  local tensors, scalars = ema:state_dict()
  tensors["shadow.1"] = cn.zeros{2}
  assert_error(function() ema:load_state_dict(tensors, scalars) end, "'shadow.1' has shape [2]")
  tensors["shadow.1"] = nil
  assert_error(function() ema:load_state_dict(tensors, scalars) end, "missing tensor 'shadow.1'")
  assert_error(function() ema:load_state_dict({}, {type = "Adam"}) end, "from Adam")
end

-- ---- state_dict --------------------------------------------------------------------------------

TestStateDict = {}

local function clone_params(ps)
  local out = {}
  for i, p in ipairs(ps) do out[i] = p:detach():clone():requires_grad(true) end
  return out
end

local function check_round_trip(name, opts, clip)
  local params, x, y = model_params()
  local opt = optim[name](params, opts)
  for _ = 1, 7 do train_step(opt, params, x, y, clip) end
  local tensors, scalars = opt:state_dict()
  for _, v in pairs(scalars) do lu.assertEquals(type(v), "string") end
  local params2 = clone_params(params)
  -- a fresh optimiser with other hyperparameters: load_state_dict restores them
  local opt2 = optim[name](params2, {lr = 123})
  opt2:load_state_dict(tensors, scalars)
  lu.assertEquals(opt2.lr, opt.lr)
  for _ = 1, 6 do
    local l1 = train_step(opt, params, x, y, clip)
    local l2 = train_step(opt2, params2, x, y, clip)
    lu.assertEquals(l2, l1)
  end
  for i = 1, #params do lu.assertEquals(flat(params2[i]), flat(params[i]), name .. ": parameter " .. i) end
end

function TestStateDict:testSGDRoundTrip()
  check_round_trip("SGD", {lr = 0.05, momentum = 0.9, nesterov = true, weight_decay = 1e-3})
end

function TestStateDict:testAdamRoundTrip()
  check_round_trip("Adam", {lr = 0.01, betas = {0.8, 0.99}, weight_decay = 0.05, amsgrad = true},
    {max_norm = 0.5, norm_type = 2})
end

function TestStateDict:testAdamWRoundTrip()
  check_round_trip("AdamW", {lr = 0.01, weight_decay = 0.1})
end

function TestStateDict:testThroughSafetensors()
  lu.skipIf(not (cn.save and cn.load), "cn.save / cn.load not built")
  local params, x, y = model_params()
  local opt = optim.AdamW(params, {lr = 0.01, amsgrad = true})
  local ema = optim.EMA(params, {decay = 0.9})
  for _ = 1, 4 do train_step(opt, params, x, y); ema:update() end
  local path, epath = os.tmpname(), os.tmpname()
  cn.save(path, opt:state_dict())
  cn.save(epath, ema:state_dict())
  local params2 = clone_params(params)
  local opt2 = optim.AdamW(params2)
  opt2:load_state_dict(cn.load(path))
  local ema2 = optim.EMA(params2)
  ema2:load_state_dict(cn.load(epath))
  os.remove(path)
  os.remove(epath)
  for _ = 1, 3 do
    lu.assertEquals(train_step(opt2, params2, x, y), train_step(opt, params, x, y))
    ema:update()
    ema2:update()
  end
  for i = 1, #params do
    lu.assertEquals(flat(params2[i]), flat(params[i]))
    lu.assertEquals(flat(ema2:shadows()[i]), flat(ema:shadows()[i]))
  end
end

function TestStateDict:testContents()
  local params, x, y = model_params()
  local opt = optim.Adam(params, {lr = 0.1, amsgrad = true})
  train_step(opt, params, x, y)
  train_step(opt, params, x, y)
  local tensors, scalars = opt:state_dict()
  lu.assertEquals(scalars.type, "Adam")
  lu.assertEquals(scalars.n_params, "5")
  lu.assertEquals(scalars.lr, "0.1")
  lu.assertEquals(scalars.beta1, "0.9")
  lu.assertEquals(scalars.amsgrad, "true")
  lu.assertEquals(scalars["state.1.step"], "2")
  lu.assertNil(scalars["state.5.step"])
  lu.assertEquals(tensors["state.3.exp_avg_sq"]:shape(), {8, 3})
  lu.assertNotNil(tensors["state.4.max_exp_avg_sq"])
  lu.assertNil(tensors["state.5.exp_avg"])
  -- a snapshot: stepping on does not change it
  local before = flat(tensors["state.1.exp_avg"])
  train_step(opt, params, x, y)
  lu.assertEquals(flat(tensors["state.1.exp_avg"]), before)
  -- numbers are accepted in place of the strings
  local sgd = optim.SGD(params, {lr = 1})
  sgd:load_state_dict({}, {type = "SGD", n_params = 5, lr = 0.5, momentum = 0, dampening = 0,
                           weight_decay = 0, nesterov = false})
  lu.assertEquals(sgd.lr, 0.5)
end

function TestStateDict:testErrors()
  local params, x, y = model_params()
  local opt = optim.Adam(params, {lr = 0.1})
  train_step(opt, params, x, y)
  local tensors, scalars = opt:state_dict()
  local sgd = optim.SGD(params, {lr = 0.1})
  assert_error(function() sgd:load_state_dict(tensors, scalars) end, "the state is from Adam, not SGD")
  local fewer = optim.Adam({params[1], params[2]})
  assert_error(function() fewer:load_state_dict(tensors, scalars) end, "for 5 parameters", "has 2")
  local adam = optim.Adam(params)
  local bad = {}
  for k, v in pairs(tensors) do bad[k] = v end
  bad["state.3.exp_avg"] = cn.zeros{3, 8}
  assert_error(function() adam:load_state_dict(bad, scalars) end,
    "'state.3.exp_avg' has shape [3, 8] but parameter 3 has shape [8, 3]")
  bad["state.3.exp_avg"] = tensors["state.3.exp_avg"]
  bad["state.3.momentum"] = cn.zeros{8, 3}
  assert_error(function() adam:load_state_dict(bad, scalars) end, "unexpected tensor 'state.3.momentum'")
  bad["state.3.momentum"] = nil
  bad["state.2.exp_avg_sq"] = nil
  assert_error(function() adam:load_state_dict(bad, scalars) end, "parameter 2 lacks exp_avg or exp_avg_sq")
  local amsgrad = optim.Adam(params)
  local s2 = {}
  for k, v in pairs(scalars) do s2[k] = v end
  s2.amsgrad = "true"
  assert_error(function() amsgrad:load_state_dict(tensors, s2) end, "lacks max_exp_avg_sq")
  s2.amsgrad, s2.lr = "false", "fast"
  assert_error(function() amsgrad:load_state_dict(tensors, s2) end, "scalar 'lr' should be a number")
  s2.lr = "-1"
  assert_error(function() amsgrad:load_state_dict(tensors, s2) end, "invalid learning rate -1")
  lu.assertEquals(amsgrad.lr, 1e-3)
  assert_error(function() adam:load_state_dict(tensors) end, "expected (tensors, scalars)")
  -- a failed load changes nothing
  lu.assertEquals(adam.lr, 1e-3)
  lu.assertEquals(next(adam.state), nil)
end

-- ---- construction, zero_grad, lr, errors ---------------------------------------------------------

TestOptimizer = {}

function TestOptimizer:testZeroGradAndModuleParams()
  local w = cn.ones{2}:requires_grad(true)
  local module = { parameters = function() return {w} end }
  local opt = optim.SGD(module, {lr = 0.5})
  w.grad = cn.tensor{1, 2}
  opt:step()
  lu.assertEquals(flat(w), {0.5, 0})
  opt:zero_grad()
  lu.assertNil(w.grad)
  opt:step() -- nothing to do
  lu.assertEquals(flat(w), {0.5, 0})
  lu.assertStrContains(tostring(opt), "SGD(lr=0.5")
  -- a single tensor, and a name -> tensor table
  lu.assertEquals(#optim.Adam(w).params, 1)
  local named = optim.Adam({ parameters = function() return { b = w, a = cn.zeros{1}:requires_grad(true) } end })
  lu.assertEquals(named.params[2], w)
end

function TestOptimizer:testLrIsSettable()
  local w = cn.zeros{1}:requires_grad(true)
  local opt = optim.SGD({w}, {lr = 1})
  opt.lr = 0.25
  w.grad = cn.ones{1}
  opt:step()
  lu.assertEquals(w:item(), -0.25)
  opt.lr = -1
  assert_error(function() opt:step() end, "SGD: invalid learning rate -1")
end

function TestOptimizer:testStepRunsWithGradModeOn()
  local w = cn.ones{3}:requires_grad(true)
  local opt = optim.Adam({w}, {lr = 0.1})
  lu.assertTrue(cn.is_grad_enabled())
  w.grad = cn.ones{3}
  opt:step()
  lu.assertTrue(cn.is_grad_enabled(), "grad mode restored")
  lu.assertAlmostEquals(w[{1}], 0.9, 1e-6)
  lu.assertTrue(w:requires_grad())
  lu.assertTrue(w.is_leaf)
end

function TestOptimizer:testStridedGradient()
  local w = cn.zeros{3, 2}:requires_grad(true)
  local opt = optim.SGD({w}, {lr = 1, momentum = 0.5})
  w.grad = cn.tensor{{1, 2, 3}, {4, 5, 6}}:t()
  opt:step()
  lu.assertEquals(w:totable(), {{-1, -4}, {-2, -5}, {-3, -6}})
end

function TestOptimizer:testErrors()
  local w = cn.zeros{2}:requires_grad(true)
  assert_error(function() optim.SGD({w}) end, "SGD: the learning rate is required")
  assert_error(function() optim.SGD({w}, {lr = -0.1}) end, "invalid learning rate -0.1")
  assert_error(function() optim.Adam({w}, {lr = "big"}) end, "invalid learning rate big")
  assert_error(function() optim.Adam({w}, {lr = 0 / 0}) end, "invalid learning rate")
  assert_error(function() optim.SGD({w}, {lr = 1, momentum = -1}) end, "momentum")
  assert_error(function() optim.SGD({w}, {lr = 1, nesterov = true}) end, "Nesterov momentum requires")
  assert_error(function() optim.SGD({w}, {lr = 1, momentum = 0.9, dampening = 0.1, nesterov = true}) end,
    "zero dampening")
  assert_error(function() optim.Adam({w}, {betas = {0.9, 1.0}}) end, "invalid beta2 1")
  assert_error(function() optim.Adam({w}, {betas = 0.9}) end, "betas must be a table")
  assert_error(function() optim.AdamW({w}, {eps = -1}) end, "invalid eps")
  assert_error(function() optim.AdamW({w}, {weight_decay = -1}) end, "invalid weight_decay")
  assert_error(function() optim.Adam({w}, {learning_rate = 1}) end, "unknown option 'learning_rate'")
  assert_error(function() optim.Adam({w}, 0.1) end, "options must be a table")
  assert_error(function() optim.Adam({cn.zeros{2, 3}}) end, "parameter 1 (shape [2, 3]) does not require grad")
  assert_error(function() optim.Adam({w, w * 2}) end, "parameter 2 (shape [2]) is not a leaf")
  assert_error(function() optim.Adam({w, w}) end, "parameter 2 appears twice")
  assert_error(function() optim.Adam({}) end, "empty parameter list")
  assert_error(function() optim.Adam(42) end, "params must be")
  assert_error(function() optim.Adam({w, "x"}) end, "parameter 2 is a string")
end

function TestOptimizer:testKernelsRefuseGradMode()
  local w = cn.zeros{2}:requires_grad(true)
  local g = cn.ones{2}
  assert_error(function() require("cunet.core").optim.sgd_step(w, g, nil, 1, 0, 0, 0, false, false) end,
    "sgd_step: in-place operation on a tensor that requires grad")
  assert_error(function()
    cn.no_grad(function() require("cunet.core").optim.sgd_step(w, cn.ones{3}, nil, 1, 0, 0, 0, false, false) end)
  end, "sgd_step: gradient has shape [3] but the parameter has shape [2]")
  assert_error(function()
    cn.no_grad(function()
      require("cunet.core").optim.adam_step(w, g, cn.zeros{2}, cn.zeros{2}, nil, 0, 1, 0.9, 0.99, 1e-8, 0, false)
    end)
  end, "adam_step: step must be at least 1")
end
