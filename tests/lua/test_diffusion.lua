-- test_diffusion.lua — cunet.diffusion against float64 references (tests/fixtures/diffusion.lua,
-- from tests/tools/fixtures_diffusion.py): the four named schedules, q_sample, the v / x0
-- conversions, one DDPM and one DDIM step, the DDIM timestep lists; then schedule validation,
-- custom schedules, seeding, the samplers' options, and an "oracle" model on a one-point dataset
-- that both samplers must turn back into that point.
local lu = require "luaunit"
local helpers = require "helpers"
local cn = require "cunet"
local fx = require "fixture_check"
local diffusion = require "cunet.diffusion"

local CASES = fx.load("diffusion")
local RTOL, ATOL = 1e-5, 1e-6 -- float32 tensors against the float64 reference

local schedules = {}
local function named(kind, T)
  T = T or 1000
  local key = kind .. "/" .. T
  schedules[key] = schedules[key] or diffusion.schedule(kind, {T = T})
  return schedules[key]
end

local function cases(op)
  local out = {}
  for _, c in ipairs(CASES) do
    if c.op == op then out[#out + 1] = c end
  end
  lu.assertTrue(#out > 0, "no fixture cases for " .. op)
  return out
end

local function t_arg(t)
  return type(t) == "table" and cn.tensor(t) or t
end

local assert_error = helpers.assert_error

local max_abs_diff = helpers.max_abs_diff

local function assert_equal_tensors(a, b, label)
  lu.assertEquals(a:shape(), b:shape(), label)
  lu.assertEquals(max_abs_diff(a, b), 0, label)
end

-- |got - want| <= rtol |want| + atol for numbers (the schedules are doubles: 9-digit fixtures)
local function assert_close_number(got, want, rtol, atol, label)
  if math.abs(got - want) > rtol * math.abs(want) + atol then
    lu.fail(string.format("%s: %.12g, expected %.12g", label, got, want))
  end
end

-- ---- against the reference --------------------------------------------------------------------------

TestDiffusionReference = {}

function TestDiffusionReference:testSchedules()
  for _, c in ipairs(cases("schedule")) do
    local s = diffusion.schedule(c.args.kind, {T = c.args.T})
    lu.assertEquals(s.T, c.args.T)
    lu.assertEquals(#s.beta, c.args.T)
    lu.assertEquals(s.alpha_bar[0], 1)
    for t = 1, s.T do
      -- the fixture holds 9 significant digits, the schedule doubles
      assert_close_number(s.beta[t], c.beta[t], 1e-8, 0, c.name .. " beta[" .. t .. "]")
      assert_close_number(s.alpha_bar[t], c.alpha_bar[t], 1e-8, 1e-300, c.name .. " alpha_bar[" .. t .. "]")
      assert_close_number(s.alpha[t], 1 - c.beta[t], 1e-8, 1e-12, c.name .. " alpha[" .. t .. "]")
      assert_close_number(s.posterior_variance[t], c.posterior_variance[t], 1e-8, 1e-300, c.name .. " posterior_variance[" .. t .. "]")
    end
    assert_close_number(s.alpha_bar[s.T], c.alpha_bar_T, 1e-8, 1e-300, c.name .. " alpha_bar_T")
    lu.assertEquals(s.posterior_variance[1], 0)
    fx.assert_close(s.alpha_bar_tensor, {shape = {s.T}, data = c.alpha_bar}, {rtol = RTOL, atol = 0, label = c.name .. " alpha_bar_tensor"})
  end
end

function TestDiffusionReference:testNamedScheduleLandmarks()
  -- a few values worth knowing by heart (also in docs/diffusion.md)
  local lin = named("linear")
  lu.assertAlmostEquals(lin.beta[1], 1e-4, 1e-15)
  lu.assertAlmostEquals(lin.beta[1000], 0.02, 1e-15)
  lu.assertAlmostEquals(lin.alpha_bar[1000], 4.035829e-05, 1e-10)
  local cos = named("cosine")
  lu.assertEquals(cos.beta[1000], 0.999) -- clipped
  local sig = named("sigmoid")
  lu.assertEquals(sig.beta[1000], 0.999) -- alpha_bar(1) = 0 before clipping
end

function TestDiffusionReference:testQSample()
  for _, c in ipairs(cases("q_sample")) do
    local x0, noise = fx.tensor(c.inputs[1]), fx.tensor(c.inputs[2])
    local got = diffusion.q_sample(named(c.args.schedule), x0, t_arg(c.args.t), noise)
    fx.assert_close(got, c.output, {rtol = RTOL, atol = ATOL, label = c.name})
  end
end

function TestDiffusionReference:testVTarget()
  for _, c in ipairs(cases("v_target")) do
    local x0, noise = fx.tensor(c.inputs[1]), fx.tensor(c.inputs[2])
    local got = diffusion.target(named(c.args.schedule), x0, noise, t_arg(c.args.t), "v")
    fx.assert_close(got, c.output, {rtol = RTOL, atol = ATOL, label = c.name})
  end
end

function TestDiffusionReference:testSplitPrediction()
  for _, c in ipairs(cases("split_prediction")) do
    local x_t, out = fx.tensor(c.inputs[1]), fx.tensor(c.inputs[2])
    local eps, x0 = diffusion.split_prediction(named(c.args.schedule), x_t, t_arg(c.args.t), out, c.args.prediction)
    fx.assert_close(eps, c.outputs[1], {rtol = RTOL, atol = ATOL, label = c.name .. " eps"})
    fx.assert_close(x0, c.outputs[2], {rtol = RTOL, atol = ATOL, label = c.name .. " x0"})
  end
end

function TestDiffusionReference:testDdpmStep()
  for _, c in ipairs(cases("ddpm_step")) do
    local x_t, eps, z = fx.tensor(c.inputs[1]), fx.tensor(c.inputs[2]), fx.tensor(c.inputs[3])
    local got = diffusion.ddpm_step(named(c.args.schedule), x_t, c.args.t, eps, z, c.args.variance)
    fx.assert_close(got, c.output, {rtol = RTOL, atol = ATOL, label = c.name})
    if c.args.t == 1 then -- no noise at t = 1: z may be left out
      fx.assert_close(diffusion.ddpm_step(named(c.args.schedule), x_t, 1, eps, nil, c.args.variance), c.output,
        {rtol = RTOL, atol = ATOL, label = c.name .. " (z = nil)"})
    end
  end
end

function TestDiffusionReference:testDdimStep()
  for _, c in ipairs(cases("ddim_step")) do
    local x_t, eps, z = fx.tensor(c.inputs[1]), fx.tensor(c.inputs[2]), fx.tensor(c.inputs[3])
    local x_prev, x0 = diffusion.ddim_step(named(c.args.schedule), x_t, c.args.t, c.args.t_prev, eps, z, c.args.eta)
    fx.assert_close(x_prev, c.outputs[1], {rtol = RTOL, atol = ATOL, label = c.name .. " x_prev"})
    fx.assert_close(x0, c.outputs[2], {rtol = RTOL, atol = ATOL, label = c.name .. " x0"})
    if c.args.t_prev == 0 then -- the last step lands on the x0 prediction, whatever eta
      lu.assertEquals(max_abs_diff(x_prev, x0), 0, c.name)
    end
  end
end

function TestDiffusionReference:testDdimTimesteps()
  local n = 0
  for _, c in ipairs(cases("ddim_timesteps")) do
    local s = named("linear", c.args.T)
    local ts = diffusion.ddim_timesteps(s, c.args.steps, c.args.spacing)
    lu.assertEquals(ts, c.timesteps, c.name)
    lu.assertTrue(#ts <= c.args.steps, c.name)
    if c.args.spacing ~= "quadratic" then lu.assertEquals(#ts, c.args.steps, c.name) end
    n = n + 1
  end
  lu.assertTrue(n >= 60)
  -- the DDIM paper's 50 steps over T = 1000: 0-based tau = 0, 20, ..., 980 is t = 1, 21, ..., 981
  local ts = diffusion.ddim_timesteps(named("linear"), 50)
  lu.assertEquals({ts[1], ts[2], ts[50]}, {981, 961, 1})
  lu.assertEquals(diffusion.ddim_timesteps({T = 1000}, 4, "trailing"), {1000, 750, 500, 250})
end

-- ---- schedules: validation and custom --------------------------------------------------------------------

TestDiffusionSchedule = {}

function TestDiffusionSchedule:testInvalidBetas()
  assert_error(function() diffusion.schedule({0.1, 1.0, 0.2}) end, "beta[2] = 1.0", "outside (0, 1)")
  assert_error(function() diffusion.schedule({0.1, 0.2, 1.5}) end, "beta[3] = 1.5")
  assert_error(function() diffusion.schedule({0.1, 0, 0.2}) end, "beta[2] = 0")
  assert_error(function() diffusion.schedule({-0.1}) end, "beta[1] = -0.1")
  assert_error(function() diffusion.schedule({0.1, 0 / 0}) end, "beta[2]", "nan")
  assert_error(function() diffusion.schedule({0.1, 1 / 0}) end, "beta[2] = inf")
  assert_error(function() diffusion.schedule({0.1, "x"}) end, "beta[2] = x")
  assert_error(function() diffusion.schedule(function(t) return t < 5 and 0.01 or 2 end, {T = 10}) end, "beta[5] = 2")
  assert_error(function() diffusion.schedule(function(t) return t < 7 and 0.01 or nil end, {T = 10}) end, "beta[7] = nil")
  assert_error(function() diffusion.schedule("linear", {T = 10, beta_end = 1}) end, "beta[10] = 1")
  assert_error(function() diffusion.schedule("cosine", {T = 10, max_beta = 1}) end, "beta[10] = 1")
end

function TestDiffusionSchedule:testInvalidShape()
  assert_error(function() diffusion.schedule({0.1, 0.2, 0.3}, {T = 4}) end, "3 betas given for T = 4")
  assert_error(function() diffusion.schedule({}) end, "T must be a positive integer", "got 0")
  assert_error(function() diffusion.schedule("linear", {T = 0}) end, "T must be a positive integer")
  assert_error(function() diffusion.schedule("linear", {T = 2.5}) end, "T must be a positive integer", "2.5")
  assert_error(function() diffusion.schedule("linear", {T = "1000"}) end, "T must be a positive integer")
  assert_error(function() diffusion.schedule("quadratic") end, "unknown kind 'quadratic'", "cosine, linear, scaled_linear, sigmoid")
  assert_error(function() diffusion.schedule(42) end, "expected a name, a function or a table of betas, got number")
end

function TestDiffusionSchedule:testCustomFunction()
  -- an exponential schedule: beta(t) = 1e-3 * 50^((t - 1) / (T - 1))
  local s = diffusion.schedule(function(t, T) return 1e-3 * 50 ^ ((t - 1) / (T - 1)) end, {T = 100})
  lu.assertEquals(s.T, 100)
  lu.assertAlmostEquals(s.beta[1], 1e-3, 1e-15)
  lu.assertAlmostEquals(s.beta[100], 0.05, 1e-15)
  local ab = 1
  for t = 1, 100 do
    ab = ab * (1 - 1e-3 * 50 ^ ((t - 1) / 99))
    lu.assertAlmostEquals(s.alpha_bar[t], ab, 1e-14)
  end
  lu.assertEquals(s.alpha_bar_tensor:shape(), {100})
  -- the function is called with T; the default T is 1000
  local seen_T
  diffusion.schedule(function(_, T) seen_T = T; return 0.01 end)
  lu.assertEquals(seen_T, 1000)
end

function TestDiffusionSchedule:testTableOfBetas()
  local s = diffusion.schedule({0.1, 0.2, 0.5})
  lu.assertEquals(s.T, 3)
  lu.assertAlmostEquals(s.alpha_bar[3], 0.9 * 0.8 * 0.5, 1e-15)
  lu.assertAlmostEquals(s.posterior_variance[2], 0.2 * 0.1 / (1 - 0.72), 1e-15)
  lu.assertAlmostEquals(s.posterior_variance[3], 0.5 * (1 - 0.72) / (1 - 0.36), 1e-15)
  lu.assertIs(diffusion.schedule(s), s) -- a schedule passes through
  lu.assertStrContains(tostring(s), "T = 3")
end

function TestDiffusionSchedule:testMakerOptions()
  local s = diffusion.schedule("linear", {T = 5, beta_start = 0.1, beta_end = 0.5})
  for t = 1, 5 do lu.assertAlmostEquals(s.beta[t], 0.1 * t, 1e-15) end
  local one = diffusion.schedule("linear", {T = 1})
  lu.assertEquals(one.beta[1], 1e-4)
end

-- ---- argument checking --------------------------------------------------------------------------

TestDiffusionArguments = {}

-- variance "none": the reverse step's mean (the authors' denoising code), deterministic whatever the seed
function TestDiffusionArguments:testVarianceNone()
  local s = named("linear")
  cn.seed(5)
  local x, eps = cn.randn{2, 3}, cn.randn{2, 3}
  local mean = (x - eps * (s.beta[7] / math.sqrt(1 - s.alpha_bar[7]))) / math.sqrt(s.alpha[7])
  lu.assertTrue((diffusion.ddpm_step(s, x, 7, eps, nil, "none") - mean):abs():max():item() < 1e-6)
  lu.assertTrue((diffusion.ddpm_step(s, x, 7, eps, cn.ones{2, 3}, "beta") - mean):abs():max():item() > 1e-3)
  local model = function(xt) return xt * 0.1 end
  local x_t = cn.randn{2, 1, 2, 2}
  local a = diffusion.sample_ddpm(s, model, nil, {x_t = x_t, t_start = 20, variance = "none", seed = 1})
  local b = diffusion.sample_ddpm(s, model, nil, {x_t = x_t, t_start = 20, variance = "none", seed = 2})
  local c = diffusion.sample_ddpm(s, model, nil, {x_t = x_t, t_start = 20, seed = 2})
  lu.assertEquals((a - b):abs():max():item(), 0)
  lu.assertTrue((a - c):abs():max():item() > 1e-3)
end

function TestDiffusionArguments:testTimesteps()
  local s = named("linear")
  local x = cn.zeros{2, 3}
  assert_error(function() diffusion.q_sample(s, x, 0) end, "q_sample: timestep 0 outside 1..1000")
  assert_error(function() diffusion.q_sample(s, x, 1001) end, "timestep 1001 outside 1..1000")
  assert_error(function() diffusion.q_sample(s, x, 2.5) end, "timestep 2.5")
  assert_error(function() diffusion.q_sample(s, x, cn.tensor{0, 5}) end, "timesteps in 0..5, outside 1..1000")
  assert_error(function() diffusion.q_sample(s, x, cn.tensor{1, 2, 3}) end, "tensor [N] of timesteps (N = 2)", "[3]")
  assert_error(function() diffusion.q_sample(s, x, "5") end, "t must be a timestep")
  assert_error(function() diffusion.q_sample({T = 10}, x, 5) end, "q_sample: expected a schedule")
  assert_error(function() diffusion.ddpm_step(s, x, 0, x, x) end, "ddpm_step: timestep 0")
  assert_error(function() diffusion.ddpm_step(s, x, 5, x, nil) end, "noise z", "t = 5")
  assert_error(function() diffusion.ddpm_step(s, x, 5, x, x, "posterir") end, "variance must be 'beta', 'posterior' or 'none'")
  assert_error(function() diffusion.ddim_step(s, x, 5, 5, x, x, 0) end, "t_prev = 5 must be below t = 5")
  assert_error(function() diffusion.ddim_step(s, x, 5, -1, x, x, 0) end, "timestep -1 outside 0..1000")
  assert_error(function() diffusion.ddim_step(s, x, 5, 3, x, nil, 1) end, "needs the noise z")
  assert_error(function() diffusion.ddim_step(s, x, 5, 3, x, x, -1) end, "eta must be")
  assert_error(function() diffusion.split_prediction(s, x, 5, x, "score") end, "prediction must be 'eps', 'x0' or 'v', got score")
  assert_error(function() diffusion.ddim_timesteps(s, 0) end, "steps must be an integer in 1..1000")
  assert_error(function() diffusion.ddim_timesteps(s, 1001) end, "1..1000")
  assert_error(function() diffusion.ddim_timesteps(s, 10, "cubic") end, "spacing must be")
end

function TestDiffusionArguments:testSamplerOptions()
  local s = named("linear", 10)
  local model = function(x) return x * 0 end
  assert_error(function() diffusion.sample_ddpm(s, model, {1, 2}, {t_start = 11}) end, "t_start must be an integer in 1..10")
  assert_error(function() diffusion.sample_ddpm(s, model, {1, 2}, {variance = "fixed"}) end, "variance must be")
  assert_error(function() diffusion.sample_ddim(s, model, {1, 2}, {prediction = "score"}) end, "prediction must be")
  assert_error(function() diffusion.sample_ddim(s, model, {1, 2}, {steps = 0}) end, "steps must be a positive integer")
  assert_error(function() diffusion.sample_ddim(s, model, {1, 2}, {eta = -1}) end, "eta must be")
  assert_error(function() diffusion.sample_ddim(s, model, nil, {}) end, "expected a shape")
  assert_error(function() diffusion.loss(s, model, cn.zeros{2, 2}, {prediction = "score"}) end, "loss: prediction must be")
  -- more steps than timesteps: every timestep once
  local _, traj = diffusion.sample_ddim(s, model, {1, 2}, {steps = 50, return_trajectory = true})
  lu.assertEquals(#traj, 10)
end

-- ---- seeding and sampler options ------------------------------------------------------------------

TestDiffusionSampler = {}

local function toy_model(x, t)
  return x * 0.3 + (t:view{-1, 1} / 1000)
end

function TestDiffusionSampler:testSameSeedSameSamples()
  local s = named("linear", 50)
  for _, sample in ipairs{
    function(o) return diffusion.sample_ddpm(s, toy_model, {3, 4}, o) end,
    function(o) return diffusion.sample_ddpm(s, toy_model, {3, 4}, setmetatable({variance = "posterior"}, {__index = o})) end,
    function(o) return diffusion.sample_ddim(s, toy_model, {3, 4}, setmetatable({steps = 10, eta = 1}, {__index = o})) end,
    function(o) return diffusion.sample_ddim(s, toy_model, {3, 4}, setmetatable({steps = 10}, {__index = o})) end,
  } do
    cn.seed(7)
    local a = sample({})
    cn.seed(7)
    local b = sample({})
    assert_equal_tensors(a, b, "same global seed")
    cn.seed(8)
    lu.assertTrue(max_abs_diff(a, sample({})) > 1e-3, "another seed, other samples")
    -- opts.seed: the same samples whatever the global state, which is left as it was
    cn.seed(1)
    local c = sample({seed = 99})
    local after = cn.rand{4}
    cn.seed(2)
    local d = sample({seed = 99})
    assert_equal_tensors(c, d, "opts.seed")
    cn.seed(1)
    assert_equal_tensors(cn.rand{4}, after, "global generator untouched by opts.seed")
  end
end

function TestDiffusionSampler:testDdpmTrajectoryAndCallback()
  local s = named("linear", 20)
  local seen = {}
  local x, traj, x0s = diffusion.sample_ddpm(s, toy_model, {2, 3}, {
    seed = 3, return_trajectory = true, return_x0 = true,
    callback = function(i, t, xt, x0) seen[#seen + 1] = {i = i, t = t, x = xt, x0 = x0} end,
  })
  lu.assertEquals(#traj, 20)
  lu.assertEquals(#x0s, 20)
  lu.assertEquals(#seen, 20)
  for i, r in ipairs(seen) do
    lu.assertEquals(r.i, i)
    lu.assertEquals(r.t, 21 - i)
    lu.assertIs(r.x, traj[i])
    lu.assertIs(r.x0, x0s[i])
  end
  assert_equal_tensors(traj[20], x, "the last trajectory entry is the sample")
  -- without the options only the sample comes back
  local y, t2, x2 = diffusion.sample_ddpm(s, toy_model, {2, 3}, {seed = 3})
  assert_equal_tensors(y, x, "same seed")
  lu.assertNil(t2)
  lu.assertNil(x2)
end

function TestDiffusionSampler:testDdpmFromTStart()
  local s = named("linear", 100)
  local x_t = cn.randn{2, 3}
  local ts = {}
  local _, traj = diffusion.sample_ddpm(s, toy_model, nil, {x_t = x_t, t_start = 30, seed = 1, return_trajectory = true,
    callback = function(_, t) ts[#ts + 1] = t end})
  lu.assertEquals(#traj, 30)
  lu.assertEquals(ts[1], 30)
  lu.assertEquals(ts[30], 1)
  -- the first step is the DDPM step at t = 30 from the given x_t
  local expected = cn.no_grad(function()
    local saved = cn.rng_state()
    cn.seed(1)
    local z = cn.randn_like(x_t)
    cn.set_rng_state(saved)
    return diffusion.ddpm_step(s, x_t, 30, toy_model(x_t, cn.full({2}, 30)), z)
  end)
  lu.assertTrue(max_abs_diff(traj[1], expected) < 1e-6)
end

function TestDiffusionSampler:testDdimSteps()
  local s = named("linear")
  for _, o in ipairs{
    {steps = 50, n = 50, first = 981},
    {steps = 10, spacing = "quadratic", n = 10, first = 801},
    {steps = 10, spacing = "trailing", n = 10, first = 1000},
    {steps = 1, n = 1, first = 1},
    {steps = 7, spacing = "trailing", t_start = 300, n = 7, first = 300},
    {steps = 7, t_start = 300, n = 7, first = 300},
    {steps = 7, spacing = "quadratic", t_start = 300, n = 7, first = 300},
    {steps = 1, t_start = 300, n = 1, first = 300},
    {steps = 20, t_start = 5, n = 5, first = 5},
  } do
    local ts = {}
    local x_t = o.t_start and cn.randn{2, 2} or nil
    local x, traj, x0s = diffusion.sample_ddim(s, toy_model, {2, 2}, {
      steps = o.steps, spacing = o.spacing, t_start = o.t_start, x_t = x_t, seed = 4,
      return_trajectory = true, return_x0 = true, callback = function(_, t) ts[#ts + 1] = t end,
    })
    local label = string.format("steps %d %s t_start %s", o.steps, o.spacing or "uniform", tostring(o.t_start))
    lu.assertEquals(#traj, o.n, label)
    lu.assertEquals(#x0s, o.n, label)
    lu.assertEquals(ts[1], o.first, label)
    for i = 2, #ts do lu.assertTrue(ts[i] < ts[i - 1], label) end
    assert_equal_tensors(traj[#traj], x, label)
    -- the last DDIM step lands on its own x0 prediction
    assert_equal_tensors(x0s[#x0s], x, label)
    lu.assertEquals(diffusion.ddim_sampling_timesteps(s, o.steps, o.spacing, o.t_start), ts, label)
  end
  lu.assertEquals(diffusion.ddim_sampling_timesteps(s, 4, "uniform", 100), {100, 67, 34, 1})
  lu.assertEquals(diffusion.ddim_sampling_timesteps(s, 4, "trailing", 100), {100, 75, 50, 25})
end

function TestDiffusionSampler:testDdimEtaZeroIsDeterministic()
  local s = named("cosine", 100)
  local x_T = cn.randn{3, 2}
  cn.seed(1)
  local a = diffusion.sample_ddim(s, toy_model, nil, {x_t = x_T, steps = 10})
  cn.seed(2)
  local b = diffusion.sample_ddim(s, toy_model, nil, {x_t = x_T, steps = 10})
  assert_equal_tensors(a, b, "eta = 0 draws no noise")
  local c = diffusion.sample_ddim(s, toy_model, nil, {x_t = x_T, steps = 10, eta = 1, seed = 1})
  lu.assertTrue(max_abs_diff(a, c) > 1e-3)
end

function TestDiffusionSampler:testClipX0()
  local s = named("linear", 20)
  local big = function(x) return x * 0 - 50 end -- predicts a huge x0 through eps
  local _, _, x0s = diffusion.sample_ddim(s, big, {2, 3}, {steps = 5, clip_x0 = true, return_x0 = true, seed = 2})
  for _, x0 in ipairs(x0s) do
    lu.assertTrue(x0:max():item() <= 1 and x0:min():item() >= -1)
  end
end

function TestDiffusionSampler:testSamplingRunsWithoutGraph()
  local s = named("linear", 5)
  local w = cn.tensor{0.5}:requires_grad(true)
  local x = diffusion.sample_ddim(s, function(x) return x * w end, {2, 2}, {steps = 5, seed = 1})
  lu.assertFalse(x:requires_grad())
end

-- ---- the oracle ---------------------------------------------------------------------------------------------
-- On a one-point dataset {x0} the optimal denoiser is known in closed form:
--   eps*(x_t, t) = (x_t - sqrt(ab_t) x0) / sqrt(1 - ab_t);  x0* = x0;  v* = sqrt(ab_t) eps* - sqrt(1 - ab_t) x0.
-- Every sampler must then end exactly on x0, and every training loss must be 0.

local function oracle(sched, point, prediction)
  return function(x_t, t)
    local n = x_t:size(1)
    local shape = {n}
    for _ = 2, x_t:dim() do shape[#shape + 1] = 1 end
    local ab = sched.alpha_bar_tensor:index_select(1, t):view(shape)
    -- in double where it matters: 1 - ab from the schedule's exact values
    local sa = sched.sqrt_alpha_bar_tensor:index_select(1, t):view(shape)
    local sb = sched.sqrt_one_minus_alpha_bar_tensor:index_select(1, t):view(shape)
    local x0 = point:expand(x_t:shape())
    local eps = (x_t - x0 * sa) / sb
    lu.assertEquals(ab:shape(), shape)
    if prediction == "x0" then return x0:contiguous() end
    if prediction == "v" then return eps * sa - x0 * sb end
    return eps
  end
end

local function one_point()
  local saved = cn.rng_state()
  cn.seed(11)
  local point = cn.rand{1, 2, 5, 5} * 2 - 1
  cn.set_rng_state(saved)
  return point
end

TestDiffusionOracle = {}

function TestDiffusionOracle:testSamplersRecoverThePoint()
  local point = one_point()
  local shape = {4, 2, 5, 5}
  for _, kind in ipairs{"linear", "cosine", "sigmoid"} do
    local s = named(kind)
    for _, prediction in ipairs{"eps", "x0", "v"} do
      local model = oracle(s, point, prediction)
      local runs = {
        {"ddpm beta", function() return diffusion.sample_ddpm(s, model, shape, {prediction = prediction, seed = 1}) end},
        {"ddpm posterior", function() return diffusion.sample_ddpm(s, model, shape, {prediction = prediction, variance = "posterior", seed = 1}) end},
        {"ddim eta 0", function() return diffusion.sample_ddim(s, model, shape, {prediction = prediction, steps = 20, seed = 1}) end},
        {"ddim eta 1 quadratic", function() return diffusion.sample_ddim(s, model, shape, {prediction = prediction, steps = 20, eta = 1, spacing = "quadratic", seed = 1}) end},
        {"ddim trailing 2 steps", function() return diffusion.sample_ddim(s, model, shape, {prediction = prediction, steps = 2, spacing = "trailing", seed = 1}) end},
      }
      for _, run in ipairs(runs) do
        local x = run[2]()
        local err = max_abs_diff(x, point:expand(shape))
        lu.assertTrue(err < 1e-4, string.format("%s %s %s: max |x - x0| = %g", kind, prediction, run[1], err))
      end
    end
  end
end

function TestDiffusionOracle:testStartMidway()
  local point = one_point()
  local s = named("linear")
  local model = oracle(s, point, "eps")
  local x0 = point:expand{3, 2, 5, 5}:contiguous()
  for _, t_start in ipairs{1, 50, 400} do
    local x_t = diffusion.q_sample(s, x0, t_start)
    local a, traj = diffusion.sample_ddpm(s, model, nil, {x_t = x_t, t_start = t_start, seed = 2, return_trajectory = true})
    lu.assertEquals(#traj, t_start)
    lu.assertTrue(max_abs_diff(a, x0) < 1e-4, "ddpm from " .. t_start)
    local b, traj2 = diffusion.sample_ddim(s, model, nil, {x_t = x_t, t_start = t_start, steps = 10, return_trajectory = true})
    lu.assertEquals(#traj2, math.min(10, t_start))
    lu.assertTrue(max_abs_diff(b, x0) < 1e-4, "ddim from " .. t_start)
  end
end

function TestDiffusionOracle:testOracleLossIsZero()
  local point = one_point()
  local x0 = point:expand{6, 2, 5, 5}:contiguous()
  for _, kind in ipairs{"linear", "cosine", "scaled_linear", "sigmoid"} do
    local s = named(kind)
    for _, prediction in ipairs{"eps", "x0", "v"} do
      local loss, t = diffusion.loss(s, oracle(s, point, prediction), x0, {prediction = prediction,
        t = cn.tensor{1, 2, 10, 500, 999, 1000}})
      lu.assertEquals(t:shape(), {6})
      lu.assertTrue(loss:item() < 1e-9, string.format("%s %s: oracle loss %g", kind, prediction, loss:item()))
      -- and random timesteps, and one number for the whole batch
      lu.assertTrue(diffusion.loss(s, oracle(s, point, prediction), x0, {prediction = prediction}):item() < 1e-9)
      local l3, t3 = diffusion.loss(s, oracle(s, point, prediction), x0, {prediction = prediction, t = 7})
      lu.assertTrue(l3:item() < 1e-9)
      lu.assertEquals(t3:totable(), {7, 7, 7, 7, 7, 7})
    end
    -- a wrong model gives a positive loss: the target is not trivially matched
    local wrong = diffusion.loss(s, function(x) return x * 0 end, x0, {prediction = "eps"})
    lu.assertTrue(wrong:item() > 0.1)
  end
end

-- ---- the noise levels of the samplers -----------------------------------------------------------------------
-- For Gaussian data x0 ~ N(0, s^2 I) the optimal eps is also known:
--   eps*(x_t, t) = sqrt(1 - ab) x_t / (ab s^2 + 1 - ab).
-- Samples must then have standard deviation close to s (exactly s only as the steps shrink: with
-- T = 1000 steps the discretisation costs under 1.5%): this checks the noise the samplers add.

TestDiffusionGaussian = {}

local function gaussian_oracle(s, sd)
  return function(x_t, t)
    local ab = s.alpha_bar_tensor:index_select(1, t):view{-1, 1}
    return x_t * ((1 - ab):sqrt() / (ab * sd * sd + 1 - ab))
  end
end

function TestDiffusionGaussian:testSampleStd()
  local sd = 0.5
  local s = named("linear")
  local model = gaussian_oracle(s, sd)
  local shape = {4000, 4} -- the standard error of the std is 0.003
  for _, run in ipairs{
    {"ddpm beta", function() return diffusion.sample_ddpm(s, model, shape, {seed = 5}) end},
    {"ddpm posterior", function() return diffusion.sample_ddpm(s, model, shape, {seed = 5, variance = "posterior"}) end},
    {"ddim eta 0", function() return diffusion.sample_ddim(s, model, shape, {seed = 5, steps = 1000}) end},
  } do
    local x = run[2]()
    local std, mean = x:std():item(), x:mean():item()
    lu.assertTrue(math.abs(std - sd) < 0.015 and math.abs(mean) < 0.01,
      string.format("%s: mean %.4f std %.4f, expected 0 and %g", run[1], mean, std, sd))
  end
  -- fewer DDIM steps: a larger but bounded discretisation error
  local x = diffusion.sample_ddim(s, model, shape, {seed = 5, steps = 100})
  lu.assertTrue(math.abs(x:std():item() - sd) < 0.03)
end

function TestDiffusionGaussian:testDdimEtaOneIsDdpmPosterior()
  -- with every timestep, DDIM's eta = 1 is DDPM with the posterior variance, noise draw for draw
  local s = named("cosine", 50)
  local model = gaussian_oracle(s, 0.7)
  local a = diffusion.sample_ddim(s, model, {64, 3}, {seed = 9, steps = 50, eta = 1})
  local b = diffusion.sample_ddpm(s, model, {64, 3}, {seed = 9, variance = "posterior"})
  lu.assertTrue(max_abs_diff(a, b) < 1e-5, "max diff " .. max_abs_diff(a, b))
end
