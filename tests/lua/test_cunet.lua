-- test_cunet.lua — the continuous U-Net (lua/cunet/models/continuous_unet.lua): the authors'
-- parameter counts, output shapes of every preset, the module tree of each ablation, equality with
-- PyTorch (tests/fixtures/cunet.lua, written by tests/tools/fixtures_cunet.py; regenerate it there),
-- gradients reaching every parameter, the time embedding reaching every ODE function, and a few Adam
-- steps lowering the ε-prediction loss with direct backprop and with the adjoint.

local lu = require "luaunit"
local helpers = require "helpers"
local assert_error = helpers.assert_error
local cn = require "cunet"
local fx = require "fixture_check"
local cunet = require "cunet.models.continuous_unet"
local diffusion = require "cunet.diffusion"

local function build(name, overrides)
  return cn.no_grad(function() return cunet.from_preset(name, overrides) end)
end

local function count(name, overrides) return build(name, overrides):num_parameters() end

local function trainable(model)
  local out = {}
  for _, p in ipairs(model:parameters()) do
    if p:requires_grad() then out[#out + 1] = p end
  end
  return out
end

local function has_key(model, pattern)
  local _, keys = model:state_dict()
  for _, k in ipairs(keys) do
    if k:find(pattern) then return true end
  end
  return false
end

-- ---- parameter counts -------------------------------------------------------------------------------

TestCunetCounts = {}

-- The authors' notebook (3×64²): their printed count, and the three ablation counts.
function TestCunetCounts:testNotebook()
  lu.assertEquals(count("notebook"), 8811875)
  lu.assertEquals(build("notebook"):num_parameters(true), 8811875 - 256000) -- the frozen 1000 × 256 table
  lu.assertEquals(count("notebook", { ablation = "no_attention" }), 8548707)
  lu.assertEquals(count("notebook", { ablation = "no_resblocks" }), 6138083)
  lu.assertEquals(count("notebook", { ablation = "no_attention_no_resblocks" }), 5874915)
end

-- Our own presets (docs/cunet.md lists them next to the U-Net's).
function TestCunetCounts:testPaperAndMnist()
  lu.assertEquals(count("paper"), 7831139)
  lu.assertEquals(count("paper", { ablation = "no_attention" }), 7567971)
  lu.assertEquals(count("paper", { ablation = "no_resblocks" }), 5926787)
  lu.assertEquals(count("paper", { ablation = "time_embedding_only" }), 7890531)
  lu.assertEquals(count("mnist"), 1495233)
  lu.assertEquals(count("mnist_small"), 282609)
  -- about a quarter of the DDPM U-Net preset of the same name
  local ok, unet = pcall(require, "cunet.models.unet")
  if ok and unet.presets and unet.presets.mnist then
    for _, name in ipairs { "mnist", "mnist_small" } do
      local ratio = count(name) / cn.no_grad(function() return unet.from_preset(name):num_parameters() end)
      lu.assertTrue(ratio > 0.2 and ratio < 0.3, string.format("%s: ratio to the U-Net %.3f", name, ratio))
    end
  end
end

-- ---- shapes, config, ablation trees -------------------------------------------------------------------

TestCunetModel = {}

function TestCunetModel:testShapes()
  for _, name in ipairs { "notebook", "paper", "mnist", "mnist_small" } do
    cn.seed(1)
    local model = build(name)
    local c = model.config
    local x = cn.randn { 2, c.in_channels, c.resolution, c.resolution }
    local y = cn.no_grad(function() return model(x, cn.tensor({ 1, c.num_timesteps }, { 2 })) end)
    lu.assertEquals(y:shape(), { 2, c.out_channels, c.resolution, c.resolution }, name)
    lu.assertTrue(y:abs():max():item() < math.huge, name)
  end
  -- odd sizes through the bilinear resampling, a number as t
  local model = build("mnist_small")
  local y = cn.no_grad(function() return model(cn.randn { 1, 1, 27, 21 }, 5) end)
  lu.assertEquals(y:shape(), { 1, 1, 27, 21 })
end

function TestCunetModel:testConfigRebuilds()
  cn.seed(3)
  local model = build("mnist_small", { ablation = "no_attention", adjoint = true })
  local again = cunet.from_config(model.config)
  lu.assertEquals(again.config, model.config)
  lu.assertEquals(again:num_parameters(), model:num_parameters())
  local json = require("cunet.checkpoint").json
  lu.assertEquals(json.decode(json.encode(model.config)), model.config)
  again:load_state_dict((model:state_dict()))
  local x = cn.randn { 1, 1, 28, 28 }
  local a = cn.no_grad(function() return model(x, 7) end)
  local b = cn.no_grad(function() return again(x, 7) end)
  lu.assertEquals(a:totable { flat = true }, b:totable { flat = true })
end

function TestCunetModel:testErrors()
  assert_error(function() cunet.ContinuousUNet { widths = { 30, 63 } } end, "even positive integer")
  assert_error(function() cunet.ContinuousUNet { form = "third_order" } end, "form must be one of")
  assert_error(function() cunet.ContinuousUNet { ablation = "no_everything" } end, "unknown ablation")
  assert_error(function() cunet.ContinuousUNet { attention_levels = { 5 } } end, "attention_levels")
  assert_error(function() cunet.ContinuousUNet { colour = 1 } end, "unknown option 'colour'")
  assert_error(function() cunet.from_preset("huge") end, "unknown preset")
  local model = build("mnist_small")
  assert_error(function() model(cn.randn { 1, 3, 28, 28 }, 1) end, "expected 1 input channels")
  assert_error(function() model(cn.randn { 1, 1, 28, 28 }, 0) end, "timesteps must be integers in 1..1000")
  assert_error(function() model(cn.randn { 2, 1, 28, 28 }, cn.tensor { 1, 2, 3 }) end, "expected 2 timesteps")
end

-- Each ablation changes the module tree as intended, and still runs.
function TestCunetModel:testAblations()
  local base = { widths = { 8, 16 }, mid_width = 16, in_channels = 1, resolution = 16, stem_width = 4,
    time_dim = 16, num_timesteps = 50, attention_levels = { 2 }, attention_mid = true, attention_heads = 2,
    attention_dim_head = 4, time_scale_shift = true, norm = "group", norm_groups = 4 }
  local function variant(ablation, extra)
    local o = {}
    for k, v in pairs(base) do o[k] = v end
    for k, v in pairs(extra or {}) do o[k] = v end
    o.ablation = ablation
    cn.seed(5)
    return cn.no_grad(function() return cunet.ContinuousUNet(o) end)
  end
  local full = variant("none")
  lu.assertTrue(has_key(full, "^down%.1%.attention%.to_qkv") and has_key(full, "^up%.1%.attention")
    and has_key(full, "^mid%.attention"))
  lu.assertTrue(has_key(full, "accel%.mlp%.1%.weight"))
  lu.assertFalse(has_key(full, "time_mlp"))
  lu.assertEquals(full.down[1].ode.accel.conv2.weight:shape(), { 8, 8, 3, 3 })

  local no_attn = variant("no_attention")
  lu.assertFalse(has_key(no_attn, "attention"))
  lu.assertTrue(has_key(no_attn, "accel%.mlp"))

  local plain = variant("no_resblocks")
  lu.assertTrue(has_key(plain, "attention"))
  lu.assertFalse(has_key(plain, "accel%.mlp"))
  lu.assertTrue(has_key(plain, "^down%.0%.time_mlp%.0%.weight") and has_key(plain, "^mid%.time_mlp%.2%.weight"))
  lu.assertEquals(plain.down[1].ode.accel.conv2.weight:shape(), { 8, 8, 1, 1 }) -- second conv 1×1
  lu.assertFalse(plain.down[1].ode.accel.residual)

  local neither = variant("no_attention_no_resblocks")
  lu.assertFalse(has_key(neither, "attention") or has_key(neither, "accel%.mlp"))

  local temb_only = variant("time_embedding_only")
  lu.assertTrue(temb_only.down[1].ode.accel.residual)
  lu.assertEquals(temb_only.down[1].ode.accel.conv2.weight:shape(), { 8, 8, 3, 3 })
  lu.assertFalse(has_key(temb_only, "accel%.mlp"))
  lu.assertTrue(has_key(temb_only, "time_mlp"))

  local second = variant("none", { form = "second_order" })
  lu.assertEquals(second.down[1].ode.options.form, "second_order")
  lu.assertEquals(second.down[1].ode.accel.conv2.weight:shape(), { 4, 8, 3, 3 }) -- the acceleration: half
  lu.assertEquals(second.down[1].ode.accel.res_conv.weight:shape(), { 4, 8, 1, 1 })

  for _, m in ipairs { full, no_attn, plain, neither, temb_only, second } do
    local y = cn.no_grad(function() return m(cn.randn { 2, 1, 16, 16 }, cn.tensor({ 1, 50 }, { 2 })) end)
    lu.assertEquals(y:shape(), { 2, 1, 16, 16 })
  end

  -- the solver and interval are options: dopri5 agrees with a fine fixed-step solve
  local x = cn.randn { 2, 1, 16, 16 }
  local adaptive = variant("none", { form = "second_order", method = "dopri5", rtol = 1e-5, atol = 1e-5, t1 = 0.5 })
  local a = cn.no_grad(function() return adaptive(x, 7) end)
  lu.assertTrue(adaptive.mid.ode.stats.nfe > 6)
  adaptive:set_solver { method = "rk4", steps = 8 }
  lu.assertEquals(adaptive.config.method, "rk4")
  local b = cn.no_grad(function() return adaptive(x, 7) end)
  lu.assertTrue((a - b):abs():max():item() < 1e-3 * b:abs():max():item())
end

-- Changing t changes the output of every ODE block's dynamics (scale/shift), or, in the
-- "time embedding only" variant, every block's input; in the notebook network it changes nothing.
function TestCunetModel:testTimeReachesEveryOdeFunction()
  for _, name in ipairs { "paper", "mnist" } do
    cn.seed(11)
    local model = build(name)
    local e1 = model:time_embedding(cn.tensor({ 10, 10 }, { 2 }))
    local e2 = model:time_embedding(cn.tensor({ 900, 900 }, { 2 }))
    local levels = model:ode_levels()
    lu.assertEquals(#levels, 2 * #model.config.widths + 1)
    for _, entry in ipairs(levels) do
      local label, level = entry[1], entry[2]
      local f = level.ode.accel
      local half = f.width // 2
      local x, v = cn.randn { 2, half, 4, 4 }, cn.randn { 2, half, 4, 4 }
      local d = cn.no_grad(function() return (f(0, x, v, e1) - f(0, x, v, e2)):abs():max():item() end)
      lu.assertTrue(d > 1e-4, string.format("%s %s: the dynamics ignore t (max change %g)", name, label, d))
    end
  end
  -- time embedding only: the time MLP of every block moves its input
  local model = build("mnist_small", { ablation = "time_embedding_only" })
  local e1 = model:time_embedding(1, 1)
  local e2 = model:time_embedding(1000, 1)
  for _, entry in ipairs(model:ode_levels()) do
    local d = cn.no_grad(function() return (entry[2].time_mlp(e1) - entry[2].time_mlp(e2)):abs():max():item() end)
    lu.assertTrue(d > 1e-4, entry[1])
  end
  -- the authors' notebook: t never reaches the network
  cn.seed(12)
  local nb = build("notebook", { widths = { 8, 16 }, mid_width = 32, stem_width = 4, time_dim = 16, num_timesteps = 50,
    attention_levels = { 2 } })
  local x = cn.randn { 1, 3, 16, 16 }
  local a = cn.no_grad(function() return nb(x, 1) end)
  local b = cn.no_grad(function() return nb(x, 50) end)
  lu.assertEquals(a:totable { flat = true }, b:totable { flat = true })
end

-- Gradients reach every parameter except the frozen table, with direct backprop and the adjoint.
function TestCunetModel:testGradientsReachEveryParameter()
  for _, adjoint in ipairs { false, true } do
    cn.seed(21)
    local model = build("mnist_small", { adjoint = adjoint, attention_mid = true })
    local loss = model(cn.randn { 2, 1, 28, 28 }, cn.tensor({ 4, 800 }, { 2 })):square():mean()
    loss:backward()
    for name, p in model:named_parameters() do
      if name == "time_embed.weight" then
        lu.assertNil(p.grad, name)
      else
        lu.assertNotNil(p.grad, string.format("adjoint=%s: %s has no gradient", tostring(adjoint), name))
        lu.assertTrue(p.grad:abs():sum():item() > 0,
          string.format("adjoint=%s: %s has a zero gradient", tostring(adjoint), name))
      end
    end
  end
end

-- ---- against PyTorch ------------------------------------------------------------------------------------

TestCunetTorch = {}

local function load_case(case)
  local model = cn.no_grad(function() return cunet.ContinuousUNet(case.config) end)
  local sd = {}
  for _, pair in ipairs(case.state) do sd[pair[1]] = fx.tensor(pair[2]) end
  local r = model:load_state_dict(sd, false)
  lu.assertEquals(r.missing_keys, { "time_embed.weight" }, case.name)
  lu.assertEquals(r.unexpected_keys, {}, case.name)
  lu.assertEquals(model:num_parameters(), case.num_parameters, case.name)
  return model
end

function TestCunetTorch:testTable()
  local case = fx.load("cunet")[1]
  local model = load_case(case)
  fx.assert_close(model.time_embed.weight, case.table, { rtol = 1e-6, atol = 2e-6, label = "sinusoidal table" })
end

-- Outputs at rtol 1e-4, atol 1e-5; gradients of sum(g · output) likewise, with atol scaled to each
-- tensor's largest entry. The reference is float64. The notebook case is ill-conditioned in float32
-- (see fixtures_cunet.py: torch's own float32 gradients are off by up to 2%), so its gradients are
-- compared norm-wise.
local function check_case(case, model, x, out)
  fx.assert_close(out, case.output, { label = case.name .. " output" })
  local loss = (out * fx.tensor(case.grad_output)):sum()
  loss:backward()
  local params = {}
  for name, p in model:named_parameters() do params[name] = p end
  local pairs_list = { { "input", x } }
  for _, pair in ipairs(case.param_grads) do
    lu.assertNotNil(params[pair[1]].grad, case.name .. ": no gradient for " .. pair[1])
    pairs_list[#pairs_list + 1] = { pair[1], params[pair[1]], pair[2] }
  end
  pairs_list[1][3] = case.input_grad
  for _, entry in ipairs(pairs_list) do
    local got, spec = entry[2].grad, entry[3]
    local want = fx.tensor(spec)
    local label = case.name .. " grad " .. entry[1]
    if case.conditioned then
      fx.assert_close(got, spec, { atol = 1e-5 + 1e-4 * want:abs():max():item(), label = label })
    else
      local rel = (got - want):norm():item() / want:norm():item()
      lu.assertTrue(rel < 5e-2, string.format("%s: off by %.3g (norm-wise)", label, rel))
    end
  end
end

function TestCunetTorch:testCases()
  for _, case in ipairs(fx.load("cunet")) do
    local model = load_case(case)
    local x = fx.tensor(case.input):requires_grad(true)
    check_case(case, model, x, model(x, cn.tensor(case.t, { #case.t })))
  end
end

-- The adjoint runs the same forward solve; its gradients solve the adjoint ODE backwards with the
-- same fixed-step solver, so they match the discrete gradients up to the solver's error: with four
-- times the steps (a 4th-order method) they come at least 8 times closer.
function TestCunetTorch:testAdjoint()
  for _, case in ipairs(fx.load("cunet")) do
    local errors = {}
    for _, factor in ipairs { 1, 4 } do
      local grads = {}
      for _, adjoint in ipairs { false, true } do
        local model = load_case(case)
        model:set_solver { adjoint = adjoint, steps = factor * case.config.steps }
        lu.assertEquals(model.mid.ode.options.adjoint, adjoint)
        local x = fx.tensor(case.input):requires_grad(true)
        local out = model(x, cn.tensor(case.t, { #case.t }))
        if factor == 1 then
          fx.assert_close(out, case.output, { label = case.name .. " output, adjoint=" .. tostring(adjoint) })
        end
        local loss = (out * fx.tensor(case.grad_output)):sum()
        loss:backward()
        grads[adjoint] = { x.grad, model.down[1].ode.accel.conv1.weight.grad }
      end
      local worst = 0
      for i = 1, 2 do
        worst = math.max(worst, (grads[true][i] - grads[false][i]):norm():item() / grads[false][i]:norm():item())
      end
      errors[factor] = worst
    end
    lu.assertTrue(errors[4] < 5e-2 and errors[4] < errors[1] / 8, string.format(
      "%s: adjoint vs direct gradients %.3g (1×steps) -> %.3g (4×steps)", case.name, errors[1], errors[4]))
  end
end

-- ---- training --------------------------------------------------------------------------------------------

TestCunetTraining = {}

-- A few Adam steps on one tiny batch of MNIST-sized data (fixed t and noise) lower the ε-prediction
-- loss, with direct backprop and with the adjoint.
function TestCunetTraining:testAdamLowersTheLoss()
  local sched = diffusion.schedule("linear")
  for _, adjoint in ipairs { false, true } do
    cn.seed(31)
    local model = build("mnist_small", { adjoint = adjoint })
    local x0 = (cn.rand { 4, 1, 28, 28 } - 0.5) * 2
    local t = cn.tensor({ 50, 200, 400, 700 }, { 4 })
    local noise = cn.randn { 4, 1, 28, 28 }
    local opt = cn.optim.Adam(trainable(model), { lr = 2e-3 })
    local losses = {}
    for step = 1, 6 do
      opt:zero_grad()
      local loss = diffusion.loss(sched, model, x0, { t = t, noise = noise })
      losses[step] = loss:item()
      loss:backward()
      opt:step()
    end
    lu.assertTrue(losses[6] < 0.8 * losses[1], string.format("adjoint=%s: loss %.4f -> %.4f", tostring(adjoint),
      losses[1], losses[6]))
  end
end
