-- test_samplers.lua — the timestep spacings against diffusers' published definitions
-- (tests/fixtures/spacing.lua, from tests/tools/fixtures_spacing.py), and every sampler against an
-- exact oracle: Gaussian data N(mu, s^2 I), whose optimal predictor is known in closed form,
--   eps*(x_t, t) = (x_t - sqrt(ab_t) mu) sqrt(1 - ab_t) / (ab_t s^2 + 1 - ab_t).
-- Under it every deterministic sampler is an affine map x_T -> A x_T + B (the same for every
-- element), so one run on x_T = {0, 1} gives B and A exactly, and the samples' law N(B, A^2)
-- without Monte Carlo. The exact probability-flow ODE from x_T ~ N(0, I) at T down to t = 1,
-- followed by the x0 prediction there (the last step of DDIM, DPM-Solver++ and sample_ode), gives
--   A* = sqrt(ab_1) s^2 / sqrt(v_1 v_T),  B* = mu - A* sqrt(ab_T) mu,  v_t = ab_t s^2 + 1 - ab_t,
-- which differ from (s, mu) only by the x0 prediction at t = 1 and x_T's missing sqrt(ab_T) mu
-- (|A* - s| = 5e-5, |B* - mu| = 1.6e-3 here). The samplers must converge to (A*, B*) at their order.

local lu = require "luaunit"
local cn = require "cunet"
local fx = require "fixture_check"
local diffusion = require "cunet.diffusion"

local CASES = fx.load("spacing")
local MU, SD = 0.5, 0.5

local sched = diffusion.schedule("linear")

-- the oracle at a continuous time (the ODE sampler's model_time = "continuous" asks between integers)
local function oracle(prediction)
  return function(x, t)
    local ab = diffusion.alpha_bar_at(sched, t[1]:item())
    local a, s = math.sqrt(ab), math.sqrt(1 - ab)
    local eps = (x - a * MU) * (s / (ab * SD * SD + 1 - ab))
    if prediction == "x0" then return (x - eps * s) / a end
    if prediction == "v" then return eps * a - ((x - eps * s) / a) * s end
    return eps
  end
end

local function limit()
  local abT, ab1 = sched.alpha_bar[sched.T], sched.alpha_bar[1]
  local vT, v1 = abT * SD * SD + 1 - abT, ab1 * SD * SD + 1 - ab1
  local A = math.sqrt(ab1) * SD * SD / math.sqrt(v1 * vT)
  return A, MU - A * math.sqrt(abT) * MU
end
local A_STAR, B_STAR = limit()

local X_T = cn.tensor({ 0, 1 }, { 2, 1 })

-- (A, B) of a sampler's affine map
local function affine(x)
  local v = x:totable()
  return v[2][1] - v[1][1], v[1][1]
end

-- |A - A*| of the sampler run with opts (x_t = {0, 1}), and |B - B*|
local function errors(sampler, opts, prediction)
  opts.x_t = X_T
  local x, stats = diffusion[sampler](sched, oracle(prediction), nil, opts)
  local a, b = affine(x)
  return math.abs(a - A_STAR), math.abs(b - B_STAR), stats
end

-- ---- spacings ---------------------------------------------------------------------------------------

TestSamplerSpacing = {}

function TestSamplerSpacing:testDiffusersDefinitions()
  local n = 0
  for _, c in ipairs(CASES) do
    if c.op == "timesteps" then
      local ts = diffusion.ddim_timesteps({ T = c.T }, c.steps, c.spacing)
      lu.assertEquals(#ts, c.steps, c.name)
      if c.spacing ~= "trailing" or c.divides then
        lu.assertEquals(ts, c.timesteps, c.name)
      else
        -- cunet's trailing is the authors' floor(j T / S); diffusers rounds: at most 1 apart
        for i = 1, #ts do lu.assertTrue(math.abs(ts[i] - c.timesteps[i]) <= 1, c.name) end
      end
      n = n + 1
    end
  end
  lu.assertTrue(n >= 80)
  -- "uniform" (the DDIM code's, the default) is "leading" when S divides T
  lu.assertEquals(diffusion.ddim_timesteps(sched, 10, "uniform"), diffusion.ddim_timesteps(sched, 10, "leading"))
  lu.assertEquals(diffusion.ddim_timesteps(sched, 4, "linspace"), { 1000, 667, 334, 1 })
end

function TestSamplerSpacing:testLogSnr()
  local function lambda(t) return 0.5 * math.log(sched.alpha_bar[t] / (1 - sched.alpha_bar[t])) end
  local ts = diffusion.ddim_timesteps(sched, 10, "logsnr")
  lu.assertEquals(#ts, 10)
  lu.assertEquals({ ts[1], ts[10] }, { 1000, 1 })
  local step = (lambda(1) - lambda(1000)) / 9
  for i = 2, #ts do
    lu.assertTrue(ts[i] < ts[i - 1])
    -- each point is the timestep of the nearest lambda on the uniform grid
    lu.assertTrue(math.abs(lambda(ts[i]) - (lambda(1000) + (i - 1) * step)) < 0.05, "t = " .. ts[i])
  end
  -- with t_start, over 1..t_start of the same schedule
  local sub = diffusion.ddim_sampling_timesteps(sched, 5, "logsnr", 300)
  lu.assertEquals({ sub[1], sub[5], #sub }, { 300, 1, 5 })
  lu.assertErrorMsgContains("needs a schedule", diffusion.ddim_timesteps, { T = 10 }, 3, "logsnr")
  lu.assertErrorMsgContains("spacing must be 'leading', 'trailing', 'linspace', 'quadratic', 'logsnr' or 'uniform'",
    diffusion.sample_ddim, sched, oracle(), { 1, 1 }, { spacing = "trail" })
end

-- ---- DPM-Solver++(2M) against a float64 run of the published algorithm ----------------------------------

TestSamplerDpmpp = {}

function TestSamplerDpmpp:testMatchesFloat64Reference()
  local n = 0
  for _, c in ipairs(CASES) do
    if c.op == "dpmpp_2m" then
      local seen = {}
      local x = diffusion.sample_dpmpp_2m(sched, oracle(), nil, { x_t = cn.tensor(c.x_T, { 2, 1 }), steps = c.steps,
        spacing = "linspace", callback = function(_, t) seen[#seen + 1] = t end })
      lu.assertEquals(seen, c.timesteps, c.name)
      local v = x:totable()
      for i = 1, 2 do
        lu.assertTrue(math.abs(v[i][1] - c.x0[i]) < 2e-5, string.format("%s: %.7f, expected %.7f", c.name, v[i][1], c.x0[i]))
      end
      n = n + 1
    end
  end
  lu.assertEquals(n, 4)
end

-- ---- the Gaussian oracle -------------------------------------------------------------------------------

TestSamplerOracle = {}

function TestSamplerOracle:testLimitIsTheData()
  lu.assertTrue(math.abs(A_STAR - SD) < 1e-4 and math.abs(B_STAR - MU) < 2e-3)
end

-- DDIM is first order: the error halves as the steps double
function TestSamplerOracle:testDdimFirstOrder()
  local prev
  for _, steps in ipairs { 10, 20, 40, 80 } do
    local ea, eb = errors("sample_ddim", { steps = steps, spacing = "linspace" })
    lu.assertTrue(eb < 1e-3, "B at " .. steps)
    if prev then
      local ratio = prev / ea
      lu.assertTrue(ratio > 1.8 and ratio < 2.2, string.format("ddim %d steps: error ratio %.3f", steps, ratio))
    end
    prev = ea
  end
  lu.assertTrue(prev < 0.02)
end

-- DPM-Solver++(2M) on its default logSNR grid: second order (the error falls 4x per doubling), and
-- at 10 steps as close as DDIM at 40, at 20 twice as close as DDIM at 80
function TestSamplerOracle:testDpmppSecondOrder()
  local errs = {}
  for _, steps in ipairs { 10, 20, 40, 80 } do
    local ea, eb = errors("sample_dpmpp_2m", { steps = steps })
    lu.assertTrue(eb < 1e-4, "B at " .. steps)
    errs[steps] = ea
  end
  lu.assertTrue(errs[20] / errs[40] > 3.5 and errs[40] / errs[80] > 3.5,
    string.format("errors %.2e %.2e %.2e", errs[20], errs[40], errs[80]))
  -- the variance s^2 within 7% at 10 steps, 3% at 20
  local a10 = A_STAR + errs[10]
  lu.assertTrue(errs[10] < 0.017 and math.abs(a10 * a10 - SD * SD) / (SD * SD) < 0.07, "10 steps: " .. errs[10])
  lu.assertTrue(errs[20] < 0.008, "20 steps: " .. errs[20])
  local ddim40, ddim80 = errors("sample_ddim", { steps = 40, spacing = "logsnr" }), errors("sample_ddim", { steps = 80, spacing = "logsnr" })
  lu.assertTrue(errs[10] < ddim40 and errs[20] < ddim80 / 2,
    string.format("dpm++ 10, 20 steps %.2e %.2e; ddim 40, 80 steps %.2e %.2e", errs[10], errs[20], ddim40, ddim80))
end

-- every parameterisation gives the same samples (the solver sees x0 through split_prediction)
function TestSamplerOracle:testPredictions()
  for _, sampler in ipairs { "sample_ddim", "sample_dpmpp_2m", "sample_ode" } do
    local base = diffusion[sampler](sched, oracle("eps"), nil, { x_t = X_T, steps = 10 })
    for _, prediction in ipairs { "x0", "v" } do
      local x = diffusion[sampler](sched, oracle(prediction), nil, { x_t = X_T, steps = 10, prediction = prediction })
      local diff = (x - base):abs():max():item()
      -- float32: eps from x0 divides by sigma, 0.01 at t = 1; the ODE divides by it twice
      lu.assertTrue(diff < (sampler == "sample_ode" and 5e-4 or 2e-4), string.format("%s %s: %.2e", sampler, prediction, diff))
    end
  end
end

-- The probability-flow ODE: rk4 at a fixed number of steps (4 evaluations each, + 1 for the final
-- x0 prediction), dopri5 at tolerances; errors fall with the steps / tolerance down to a floor of
-- about 1e-5 (float32, and the kinks of the piecewise-linear log alpha_bar).
function TestSamplerOracle:testOdeRk4()
  local limits = { [5] = 5e-3, [10] = 2e-3, [40] = 3e-4, [80] = 5e-5 }
  for _, steps in ipairs { 5, 10, 40, 80 } do
    local ea, eb, stats = errors("sample_ode", { steps = steps, model_time = "continuous" })
    lu.assertEquals(stats.nfe, 4 * steps + 1)
    lu.assertTrue(ea < limits[steps] and eb < 1e-3, string.format("rk4 %d steps: %.2e %.2e", steps, ea, eb))
  end
end

function TestSamplerOracle:testOdeDopri5()
  local prev_nfe = 0
  for _, c in ipairs { { 1e-2, 0.05 }, { 1e-3, 1e-2 }, { 1e-4, 1e-3 } } do
    local ea, eb, stats = errors("sample_ode", { method = "dopri5", rtol = c[1], atol = c[1], model_time = "continuous" })
    lu.assertTrue(ea < c[2] and eb < 2e-3, string.format("dopri5 tol %g: %.2e %.2e", c[1], ea, eb))
    lu.assertTrue(stats.nfe > prev_nfe and stats.nfe < 200, "nfe " .. stats.nfe)
    lu.assertTrue(stats.nfe >= 6 * stats.accepted + 1)
    prev_nfe = stats.nfe
  end
  -- the model at the nearest integer timestep (what every model accepts): close to the same answer;
  -- nfe counts every model evaluation
  local calls, inner = 0, oracle()
  local x, stats = diffusion.sample_ode(sched, function(...) calls = calls + 1; return inner(...) end, nil,
    { x_t = X_T, method = "dopri5", rtol = 1e-4, atol = 1e-4 })
  lu.assertEquals(stats.nfe, calls)
  local a = affine(x)
  lu.assertTrue(math.abs(a - A_STAR) < 2e-3, string.format("nearest: %.2e", a - A_STAR))
end

-- Monte Carlo: the samples themselves have the oracle's law
function TestSamplerOracle:testSampledMoments()
  local n = 20000
  local x = diffusion.sample_dpmpp_2m(sched, oracle(), { n, 1 }, { steps = 20, seed = 7 })
  local mean, std = x:mean():item(), x:std():item()
  lu.assertTrue(math.abs(mean - MU) < 4 * SD / math.sqrt(n) + 2e-3, "mean " .. mean)
  lu.assertTrue(math.abs(std - SD) < 4 * SD / math.sqrt(2 * n) + 4e-3, "std " .. std)
end

-- Respaced DDPM (stochastic): the variance error shrinks with the steps, for both variances
function TestSamplerOracle:testRespacedDdpm()
  local n = 20000
  local function moments(steps, variance)
    local x = diffusion.sample_ddpm(sched, oracle(), { n, 1 }, { steps = steps, spacing = "linspace", variance = variance, seed = 3 })
    return x:mean():item(), x:var():item()
  end
  local se_var = SD * SD * math.sqrt(2 / n) -- 0.0025
  local errs = {}
  for _, steps in ipairs { 10, 50, 250 } do
    local mean, var = moments(steps, "posterior")
    lu.assertTrue(math.abs(mean - MU) < 0.02, "mean " .. mean)
    errs[#errs + 1] = math.abs(var - SD * SD)
  end
  -- the posterior variance under-disperses at few steps: 0.14, 0.05, 0.014 of 0.25
  lu.assertTrue(errs[1] > 2 * errs[2] and errs[2] > 2 * errs[3], string.format("%.4f %.4f %.4f", errs[1], errs[2], errs[3]))
  local _, var = moments(250, "beta")
  lu.assertTrue(math.abs(var - SD * SD) < 0.008 + 4 * se_var, "beta, 250 steps: var " .. var)
end

-- ---- options ----------------------------------------------------------------------------------------

TestSamplerOptions = {}

function TestSamplerOptions:testRefused()
  local m = oracle()
  lu.assertErrorMsgContains("sample_dpmpp_2m: unknown option 'eta'", diffusion.sample_dpmpp_2m, sched, m, { 1, 1 }, { eta = 1 })
  lu.assertErrorMsgContains("sample_ode: unknown option 'spacing'", diffusion.sample_ode, sched, m, { 1, 1 }, { spacing = "trailing" })
  lu.assertErrorMsgContains("rtol, atol and max_steps are for the adaptive methods", diffusion.sample_ode, sched, m, { 1, 1 },
    { method = "rk4", rtol = 1e-3 })
  lu.assertErrorMsgContains("steps is for the fixed-step methods", diffusion.sample_ode, sched, m, { 1, 1 },
    { method = "dopri5", steps = 4 })
  lu.assertErrorMsgContains("method must be one of", diffusion.sample_ode, sched, m, { 1, 1 }, { method = "rk5" })
  lu.assertErrorMsgContains("model_time must be", diffusion.sample_ode, sched, m, { 1, 1 }, { model_time = "round" })
  lu.assertErrorMsgContains("t_start works with every timestep only", diffusion.sample_ddpm, sched, m, nil,
    { x_t = X_T, t_start = 10, steps = 5 })
  lu.assertErrorMsgContains("sample_ddpm: unknown option 'eta'", diffusion.sample_ddpm, sched, m, { 1, 1 }, { eta = 0 })
end

-- the respaced DDPM reports the original timesteps, and its model sees them
function TestSamplerOptions:testRespacedTimesteps()
  local seen, model_t = {}, {}
  diffusion.sample_ddpm(sched, function(x, t) model_t[#model_t + 1] = t[1]:item(); return x * 0 end, { 1, 1 },
    { steps = 4, spacing = "trailing", seed = 1, callback = function(_, t) seen[#seen + 1] = t end })
  lu.assertEquals(seen, { 1000, 750, 500, 250 })
  lu.assertEquals(model_t, { 1000, 750, 500, 250 })
end

-- train.generate (what the recipes run) reaches every sampler, reports the model evaluations, and
-- refuses an option the chosen sampler would ignore
function TestSamplerOptions:testGenerate()
  local train = require "cunet.train"
  local model = setmetatable({ training = true, eval = function(self) self.training = false end,
    train = function(self, mode) self.training = mode ~= false end }, { __call = function(_, x, t) return oracle()(x, t) end })
  local shape = { 2, 1 }
  for _, c in ipairs {
    { { sampler = "ddim", steps = 10, spacing = "trailing" }, 10 },
    { { sampler = "ddpm", steps = 10, spacing = "linspace", variance = "posterior" }, 10 },
    { { sampler = "dpmpp_2m", steps = 12 }, 12 },
    { { sampler = "ode", steps = 3 }, 13 },
    { { sampler = "ode", ode_method = "dopri5", rtol = 1e-2, atol = 1e-2 }, nil },
  } do
    c[1].seed, c[1].clip_x0 = 1, false
    local x, info = train.generate(model, sched, shape, c[1])
    lu.assertEquals(x:shape(), shape)
    if c[2] then lu.assertEquals(info.nfe, c[2], c[1].sampler) else lu.assertTrue(info.nfe > 6) end
    lu.assertTrue(model.training, "the mode is restored")
  end
  -- the same as the library call it stands for
  local a = train.generate(model, sched, shape, { sampler = "dpmpp_2m", steps = 8, seed = 2, clip_x0 = false })
  local b = diffusion.sample_dpmpp_2m(sched, model, shape, { steps = 8, seed = 2 })
  lu.assertEquals((a - b):abs():max():item(), 0)
  lu.assertErrorMsgContains("option 'variance' does not apply to the ddim sampler", train.generate, model, sched, shape,
    { sampler = "ddim", variance = "posterior" })
  lu.assertErrorMsgContains("option 'spacing' does not apply to the ode sampler", train.generate, model, sched, shape,
    { sampler = "ode", spacing = "trailing" })
end
