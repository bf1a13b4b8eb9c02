-- test_unet.lua — the U-Nets of lua/cunet/models/unet.lua: the published parameter counts, every
-- preset's output shape, gradients on every parameter, equality with PyTorch implementations of
-- both architectures (tests/fixtures/unet.lua, written by tests/tools/fixtures_unet.py; regenerate
-- it there), the timestep convention, configs, presets and checkpoints.

local lu = require "luaunit"
local helpers = require "helpers"
local cn = require "cunet"
local fx = require "fixture_check"
local unet = require "cunet.models.unet"

local assert_error = helpers.assert_error

local function build(name_or_config, overrides)
  return cn.no_grad(function()
    if type(name_or_config) == "string" then return unet.from_preset(name_or_config, overrides) end
    return unet.UNet(name_or_config)
  end)
end

local function free_model(m)
  for _, p in ipairs(m:parameters()) do p:free() end
  collectgarbage()
end

-- ---- published sizes ------------------------------------------------------------------------------------

TestUNetCounts = {}

-- Ho et al.'s CIFAR-10 U-Net (ch 128, (1, 2, 2, 2), 2 res blocks, attention at 16²)
function TestUNetCounts:test_cifar10_is_ho_et_al()
  local m = build("cifar10")
  lu.assertEquals(m:num_parameters(), 35746307)
  free_model(m)
end

-- lucidrains' Unet(dim=64, dim_mults=(1, 2, 4, 8)) v1.8.3 at 3×64², the cDDPM paper's baseline
function TestUNetCounts:test_paper_baseline_is_lucidrains_v1_8_3()
  local m = build("paper_baseline")
  lu.assertEquals(m:num_parameters(), 35710339)
  free_model(m)
end

function TestUNetCounts:test_small_presets()
  lu.assertEquals(build("mnist_small"):num_parameters(), 1112801)
  lu.assertEquals(build("mnist"):num_parameters(), 6469889)
end

-- ---- shapes -----------------------------------------------------------------------------------------------

TestUNetShapes = {}

local PRESETS = { "mnist_small", "mnist", "cifar10", "32", "64", "paper_baseline" }

function TestUNetShapes:test_every_preset_on_a_batch_of_2()
  cn.seed(1)
  for _, name in ipairs(PRESETS) do
    local m = build(name):eval()
    local c = m.config
    local x = cn.randn { 2, c.in_channels, c.resolution, c.resolution }
    local y = cn.no_grad(function() return m(x, cn.tensor({ 1, 1000 }, { 2 })) end)
    lu.assertEquals(y:shape(), { 2, c.out_channels, c.resolution, c.resolution }, name)
    local total = y:abs():sum():item()
    lu.assertTrue(total == total and total > 0 and total < math.huge, name .. ": finite, non-zero output")
    free_model(m)
  end
end

function TestUNetShapes:test_out_channels_and_overrides()
  local m = build("mnist_small", { in_channels = 3, out_channels = 6, dropout = 0 })
  lu.assertEquals(m.config.in_channels, 3)
  local y = cn.no_grad(function() return m(cn.randn { 1, 3, 28, 28 }, 5) end) -- one number: the whole batch
  lu.assertEquals(y:shape(), { 1, 6, 28, 28 })
  -- a fully convolutional net: another size that the levels divide
  lu.assertEquals(cn.no_grad(function() return m(cn.randn { 1, 3, 12, 20 }, 5) end):shape(), { 1, 6, 12, 20 })
end

-- ---- gradients ---------------------------------------------------------------------------------------------

TestUNetGrad = {}

function TestUNetGrad:test_mnist_small_gives_every_parameter_a_gradient()
  cn.seed(2)
  local m = unet.from_preset("mnist_small")
  m:train()
  local x, t = cn.randn { 2, 1, 28, 28 }, cn.tensor({ 3, 900 }, { 2 })
  local loss = cn.mse_loss(m(x, t), cn.randn { 2, 1, 28, 28 })
  loss:backward()
  local count = 0
  for name, p in m:named_parameters() do
    count = count + 1
    lu.assertNotNil(p.grad, name .. ": no gradient")
    lu.assertEquals(p.grad:shape(), p:shape(), name)
    local norm = p.grad:norm():item()
    lu.assertTrue(norm == norm and norm > 0 and norm < math.huge, name .. ": gradient norm " .. norm)
  end
  lu.assertEquals(count, #m:parameters())
end

-- ---- against PyTorch ------------------------------------------------------------------------------------

-- The fixture's hashed weights (see fixtures_unet.py): entry k of the state_dict holds
-- offset + amp · (2u − 1), u = (mix(mix(k · 0x9E3779B9) + i) >> 8) / 2^24, mix = lowbias32.
local M32 = 0xFFFFFFFF
local function mix(x)
  x = x & M32
  x = x ~ (x >> 16)
  x = (x * 0x7FEB352D) & M32
  x = x ~ (x >> 15)
  x = (x * 0x846CA68B) & M32
  x = x ~ (x >> 16)
  return x
end

local function hashed_tensor(recipe)
  local key, shape, offset, amp, salt, want_sum = table.unpack(recipe)
  local n = 1
  for _, s in ipairs(shape) do n = n * s end
  local base, data = mix(salt * 0x9E3779B9), {}
  for i = 0, n - 1 do data[i + 1] = offset + amp * (2.0 * ((mix(base + i) >> 8) / 16777216.0) - 1.0) end
  local t = cn.tensor(data, shape)
  local sum = 0
  for _, v in ipairs(t:totable { flat = true }) do sum = sum + v end
  lu.assertAlmostEquals(sum, want_sum, 1e-6 * (1 + math.abs(want_sum)), key .. ": hashed weights")
  return t
end

local function check_case(case)
  local m = build(case.config)
  local sd, keys = {}, {}
  for i, recipe in ipairs(case.params) do
    sd[recipe[1]], keys[i] = hashed_tensor(recipe), recipe[1]
  end
  m:load_state_dict(sd) -- strict: every key and shape of torch's state_dict
  local _, ours = m:state_dict()
  lu.assertEquals(ours, keys, case.name .. ": state_dict keys in torch's order")
  lu.assertEquals(m:num_parameters(), case.num_params, case.name .. ": parameters")
  m:eval()

  local tol = { rtol = case.rtol, atol = case.atol }
  local x = fx.tensor(case.x):requires_grad(true)
  local y = m(x, cn.tensor(case.t, { #case.t }))
  fx.assert_close(y, case.output, { rtol = tol.rtol, atol = tol.atol, label = case.name .. ": output" })
  y:backward(fx.tensor(case.grad_output))
  fx.assert_close(x.grad, case.grad_x, { rtol = tol.rtol, atol = tol.atol, label = case.name .. ": grad x" })
  local params = {}
  for name, p in m:named_parameters() do params[name] = p end
  lu.assertTrue(#case.param_grads > 20, "the fixture checks many parameter gradients")
  for _, pair in ipairs(case.param_grads) do
    fx.assert_close(params[pair[1]].grad, pair[2],
      { rtol = tol.rtol, atol = tol.atol, label = case.name .. ": grad " .. pair[1] })
  end
end

TestUNetTorch = {}

function TestUNetTorch:test_ddpm_matches_pytorch()
  for _, case in ipairs(fx.load("unet")) do
    if case.config.arch == "ddpm" then check_case(case) end
  end
end

function TestUNetTorch:test_lucidrains_matches_pytorch()
  for _, case in ipairs(fx.load("unet")) do
    if case.config.arch == "lucidrains" then check_case(case) end
  end
end

-- ---- conventions, configs, checkpoints -------------------------------------------------------------------

TestUNetAPI = {}

-- t is 1-based; the embedding sees t − 1 (at t = 1: sines 0, cosines 1), as the 0-based torch code
function TestUNetAPI:test_timestep_enters_the_embedding_as_t_minus_1()
  local m = build("mnist_small")
  local seen
  local sinusoid = m.temb.sinusoid
  local original = sinusoid.forward
  sinusoid.forward = function(self, t)
    seen = t:totable()
    return original(self, t)
  end
  cn.no_grad(function() m(cn.zeros { 2, 1, 28, 28 }, cn.tensor({ 1, 1000 }, { 2 })) end)
  sinusoid.forward = nil
  lu.assertEquals(seen, { 0, 999 })
  local e = sinusoid(cn.tensor({ 0 }, { 1 })):totable()[1]
  lu.assertEquals(e[1], 0)
  lu.assertEquals(e[#e], 1)
end

function TestUNetAPI:test_config_rebuilds_the_model_and_a_checkpoint_loads()
  cn.seed(3)
  local m = build("mnist_small", { dropout = 0 }):eval()
  local path = os.tmpname() .. ".safetensors"
  cn.save(path, (m:state_dict()))
  local again = cn.no_grad(function() return unet.from_config(m.config) end):eval()
  again:load_state_dict(cn.load(path))
  os.remove(path)
  local x, t = cn.randn { 2, 1, 28, 28 }, cn.tensor({ 7, 300 }, { 2 })
  local a = cn.no_grad(function() return m(x, t) end)
  local b = cn.no_grad(function() return again(x, t) end)
  lu.assertEquals(b:totable { flat = true }, a:totable { flat = true })
  lu.assertEquals(again.config, m.config)
end

function TestUNetAPI:test_keys_follow_the_published_code()
  local _, ddpm = build("mnist_small"):state_dict()
  lu.assertEquals({ ddpm[1], ddpm[5], ddpm[7] }, { "temb.dense.0.weight", "conv_in.weight", "down.0.block.0.norm1.weight" })
  local _, lucid = build { arch = "lucidrains", in_channels = 1, resolution = 8, ch = 16, ch_mult = { 1, 2 } }:state_dict()
  lu.assertEquals({ lucid[1], lucid[3], lucid[7] }, { "init_conv.weight", "time_mlp.1.weight", "downs.0.0.mlp.1.weight" })
  lu.assertEquals(lucid[#lucid], "final_conv.bias")
end

function TestUNetAPI:test_bad_options_are_named()
  assert_error(function() unet.UNet { arch = "vit" } end, "arch must be 'ddpm' or 'lucidrains'")
  assert_error(function() unet.UNet { arch = "ddpm", full_attn = true } end, "unknown option 'full_attn'")
  assert_error(function() unet.UNet { attn_resolutions = { 7 } } end, "attention resolution 7", "32, 16, 8, 4")
  assert_error(function() unet.UNet { resolution = 28 } end, "resolution 28 is not divisible by 2^3")
  assert_error(function() unet.UNet { ch = 48 } end, "not divisible by norm_groups 32")
  assert_error(function() unet.from_preset("cifar100") end, 'unknown preset "cifar100"', '"mnist_small"')
  local m = build("mnist_small")
  assert_error(function() m(cn.zeros { 1, 3, 28, 28 }, 1) end, "expected 1 input channels")
  assert_error(function() m(cn.zeros { 1, 1, 30, 30 }, 1) end, "multiples of 4")
  assert_error(function() m(cn.zeros { 2, 1, 28, 28 }, cn.ones { 3 }) end, "expected 2 timesteps")
end
