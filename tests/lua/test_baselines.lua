-- test_baselines.lua — the denoising baselines (lua/cunet/models/dncnn.lua, convae.lua): parameter
-- counts (669,312 for DnCNN on RGB, as the diffusion paper's authors' code), outputs against PyTorch
-- with the same weights in training and eval mode (tests/tools/fixtures_baselines.py), shapes at
-- odd sizes, option errors, and a few Adam steps that lower the denoising loss.
local lu = require "luaunit"
local cn = require "cunet"
local fx = require "fixture_check"
local dncnn = require "cunet.models.dncnn"
local convae = require "cunet.models.convae"

local CASES = fx.load("baselines")
local MODULES = {dncnn = dncnn, convae = convae}

TestBaselines = {}

function TestBaselines:testParameterCounts()
  local counts
  for _, c in ipairs(CASES) do if c.name == "counts" then counts = c end end
  lu.assertEquals(dncnn.from_preset("dncnn", {in_channels = 3}):num_parameters(), 669312) -- the authors' count
  lu.assertEquals(counts.dncnn_c3, 669312)
  lu.assertEquals(dncnn.from_preset("dncnn", {in_channels = 1}):num_parameters(), counts.dncnn_c1)
  lu.assertEquals(counts.dncnn_c1, 667008)
  lu.assertEquals(convae.from_preset("convae", {in_channels = 1}):num_parameters(), counts.convae_c1)
  lu.assertEquals(convae.from_preset("convae", {in_channels = 3}):num_parameters(), counts.convae_c3)
end

function TestBaselines:testMatchesTorch()
  local n = 0
  for _, c in ipairs(CASES) do
    if c.module then
      n = n + 1
      local model = MODULES[c.module].from_config(c.config)
      lu.assertEquals(model:num_parameters(), c.parameters, c.name)
      local sd = {}
      for _, pair in ipairs(c.state) do sd[pair[1]] = fx.tensor(pair[2]) end
      model:load_state_dict(sd)
      local x = fx.tensor(c.input)
      model:eval()
      fx.assert_close(cn.no_grad(function() return model(x) end), c.eval_output, {rtol = 1e-4, atol = 1e-5, label = c.name .. " eval"})
      model:train()
      fx.assert_close(cn.no_grad(function() return model(x) end), c.train_output, {rtol = 1e-4, atol = 1e-5, label = c.name .. " train"})
      -- the rebuilt model (what a checkpoint does) has the same config
      lu.assertEquals(MODULES[c.module].from_config(model.config).config, model.config)
    end
  end
  lu.assertEquals(n, 4)
end

function TestBaselines:testShapesAndErrors()
  local net = convae.from_preset("tiny", {in_channels = 1})
  for _, hw in ipairs{{28, 28}, {17, 33}, {16, 16}, {1, 5}} do
    lu.assertEquals(net(cn.rand{2, 1, hw[1], hw[2]}):shape(), {2, 1, hw[1], hw[2]})
  end
  lu.assertEquals(dncnn.from_preset("tiny", {in_channels = 3})(cn.rand{1, 3, 7, 9}):shape(), {1, 3, 7, 9})
  fx.assert_error(function() net(cn.rand{2, 3, 8, 8}) end, "ConvAE: expected images [N, 1, H, W], got [2, 3, 8, 8]")
  fx.assert_error(function() dncnn.from_config{depth = 2} end, "depth must be at least 3")
  fx.assert_error(function() dncnn.from_config{features = 0} end, "features must be a positive integer")
  fx.assert_error(function() dncnn.from_config{feature = 8} end, "feature")
  fx.assert_error(function() convae.from_config{widths = {}} end, "widths must be a non-empty list")
  fx.assert_error(function() convae.from_preset("big") end, 'unknown preset "big" (known: "convae", "tiny")')
end

-- A few Adam steps on one fixed noisy batch lower the loss of both (the training recipes' loss).
function TestBaselines:testFewStepsLowerTheLoss()
  for name, mod in pairs(MODULES) do
    cn.seed(3)
    local model = mod.from_preset("tiny", {in_channels = 1})
    local clean = (cn.rand{8, 1, 16, 16} * 0.5 + 0.25)
    local noisy = clean + cn.randn{8, 1, 16, 16} * 0.1
    local opt = cn.optim.Adam(model, {lr = 3e-3})
    model:train()
    local first, last
    for step = 1, 20 do
      local loss = cn.mse_loss(model(noisy), clean)
      opt:zero_grad()
      loss:backward()
      opt:step()
      if step == 1 then first = loss:item() end
      last = loss:item()
    end
    lu.assertTrue(last < 0.5 * first, string.format("%s: loss %.5f -> %.5f", name, first, last))
  end
end
