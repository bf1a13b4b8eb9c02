-- test_efficiency.lua — lua/cunet/efficiency.lua: thop 0.1.1's MAC count and the fuller count against
-- tests/fixtures/thop.lua (written by tests/tools/fixtures_thop.py from the same models in PyTorch),
-- the paper's numbers for the paper-scale presets, parameter counts, the op rules, that every hook is
-- removed, memory, time and the recipe.
local lu = require "luaunit"
local cn = require "cunet"
local nn = cn.nn
local fx = require "fixture_check"
local efficiency = require "cunet.efficiency"

local EXE = os.getenv("CUNET_EXE") or "./cunet"

-- the paper's thop counts (MACs at batch 1, 3×64²)
local PAPER = { unet = 7206256640, cunet = 2830983168 }

local function case_by_name(name)
  for _, case in ipairs(fx.load("thop")) do
    if case.name == name then return case end
  end
  error("no fixture case " .. name)
end

-- A Sequential from the fixture's layer spec (the same layers fixtures_thop.py builds in torch).
local function build(spec)
  local layers = {}
  for _, l in ipairs(spec) do
    local args, o = l.args or {}, l.opts or {}
    local kind = l.type
    local m
    if kind == "Conv2d" or kind == "ConvTranspose2d" then
      m = nn[kind](args[1], args[2], args[3], o)
    elseif kind == "Linear" then
      m = nn.Linear(args[1], args[2], o)
    elseif kind == "GroupNorm" then
      m = nn.GroupNorm(args[1], args[2])
    elseif kind == "InstanceNorm2d" or kind == "BatchNorm2d" or kind == "LayerNorm" then
      m = nn[kind](args[1], o)
    elseif kind == "Upsample" then
      m = nn.Upsample(o)
    elseif kind == "AvgPool2d" or kind == "MaxPool2d" or kind == "Softmax" or kind == "Dropout" then
      m = nn[kind](args[1])
    elseif kind == "SelfAttention2d" then
      m = nn.SelfAttention2d(args[1], o)
    else
      m = nn[kind]()
    end
    layers[#layers + 1] = m
  end
  return nn.Sequential(table.unpack(layers))
end

local function inputs_of(case)
  local args = {}
  for i, shape in ipairs(case.input_shapes) do args[i] = cn.randn(shape) end
  if case.t then args[#args + 1] = cn.tensor(case.t) end
  return args
end

local function model_of(case)
  if case.spec then return build(case.spec) end
  local mod = require(case.family == "unet" and "cunet.models.unet" or "cunet.models.continuous_unet")
  return cn.no_grad(mod.from_config, case.config)
end

-- the MACs of the ops PyTorch's products cover (the solver's own axpys are not torch products)
local PRODUCT_OPS = { "conv2d", "conv_transpose2d", "linear", "matmul", "scaled_dot_product_attention" }
local function product_macs(full)
  local n = 0
  for _, op in ipairs(PRODUCT_OPS) do n = n + (full.by_op[op] and full.by_op[op].macs or 0) end
  return n
end

local function check_case(case, model)
  local inputs = inputs_of(case)
  local thop = efficiency.thop_macs(model, inputs)
  lu.assertEquals(thop.total, case.thop, case.name .. ": thop total")
  local by_type = {}
  for k, v in pairs(thop.by_type) do if v > 0 then by_type[k] = v end end
  lu.assertEquals(by_type, case.thop_by_type, case.name .. ": thop per type")
  -- containers count 0; the Lua U-Net calls its time MLP as a Sequential where the torch rewrite
  -- calls the layers one by one, so their calls are left out of the comparison
  local calls, expected = {}, {}
  for k, v in pairs(thop.calls) do if k ~= "Sequential" then calls[k] = v end end
  for k, v in pairs(case.thop_calls) do if k ~= "Sequential" then expected[k] = v end end
  lu.assertEquals(calls, expected, case.name .. ": thop calls per registered type")
  local full = efficiency.count_ops(model, inputs)
  lu.assertEquals(product_macs(full), case.macs, case.name .. ": MACs of the products")
  return thop, full
end

TestEfficiencyThop = {}

function TestEfficiencyThop:testSmallModelsMatchTorch()
  cn.seed(1)
  local n = 0
  for _, case in ipairs(fx.load("thop")) do
    if case.spec or case.name:match("_small$") then
      check_case(case, model_of(case))
      n = n + 1
    end
  end
  lu.assertEquals(n, 8)
end

function TestEfficiencyThop:testPaperBaselineUNet()
  -- built from the preset (not the fixture's config): the preset must be the paper's network
  local unet = require "cunet.models.unet"
  local model = cn.no_grad(unet.from_preset, "paper_baseline")
  local case = case_by_name("paper_baseline")
  lu.assertEquals(unet.preset_config("paper_baseline").resolution, 64)
  local thop, full = check_case(case, model)
  lu.assertTrue(math.abs(thop.total - PAPER.unet) <= 0.01 * PAPER.unet,
    string.format("paper_baseline: %d MACs, the paper's thop count is %d", thop.total, PAPER.unet))
  lu.assertEquals(thop.total, PAPER.unet)
  -- thop leaves out the attention products that the fuller count has
  lu.assertTrue(full.macs > thop.by_type.Conv2d + thop.by_type.Linear)
  lu.assertEquals(efficiency.parameters(model).total, 35710339)
end

function TestEfficiencyThop:testNotebookCUNet()
  local ok, cunet = pcall(require, "cunet.models.continuous_unet")
  if not ok or not cunet.presets.notebook then lu.skip("no cU-Net 'notebook' preset") end
  local model = cn.no_grad(cunet.from_preset, "notebook")
  local thop, full = check_case(case_by_name("cunet_notebook"), model)
  lu.assertTrue(math.abs(thop.total - PAPER.cunet) <= 0.01 * PAPER.cunet,
    string.format("notebook: %d MACs, the paper's thop count is %d", thop.total, PAPER.cunet))
  lu.assertEquals(thop.total, PAPER.cunet)
  -- one RK4 (3/8) step: each ODE function runs 4 times, and the solver's combinations are counted
  lu.assertTrue(full.by_op.odeint.macs > 0)
  local p = efficiency.parameters(model)
  lu.assertEquals(p.total, 8811875)
  lu.assertEquals(p.frozen, 256000) -- the frozen time table
  local sum = p.own.total
  for _, c in ipairs(p.children) do sum = sum + c.total end
  lu.assertEquals(sum, p.total)
end

TestEfficiencyRules = {}

function TestEfficiencyRules:testFullCountByHand()
  cn.seed(2)
  -- conv 3→4 (3×3, pad 1, bias) on 2×3×5×5, SiLU, + x, GroupNorm(2, 4) affine, mean-pool 5
  local Net = nn.class("Net", nn.Module)
  function Net:__init()
    nn.Module.__init(self)
    self.conv = nn.Conv2d(3, 4, 3, { padding = 1 })
    self.norm = nn.GroupNorm(2, 4)
  end
  function Net:forward(x)
    local h = self.conv(x):silu()
    h = self.norm(h + h)
    return cn.avg_pool2d(h, 5):softmax(2)
  end
  local full = efficiency.count_ops(Net(), { cn.randn { 2, 3, 5, 5 } })
  local out = 2 * 4 * 5 * 5
  local conv_macs = out * 3 * 9
  lu.assertEquals(full.by_op.conv2d, { calls = 1, macs = conv_macs, flops = 2 * conv_macs + out })
  lu.assertEquals(full.by_op.silu, { calls = 1, macs = 0, flops = 4 * out })
  lu.assertEquals(full.by_op.add, { calls = 1, macs = 0, flops = out })
  lu.assertEquals(full.by_op.group_norm, { calls = 1, macs = 0, flops = 7 * out })
  lu.assertEquals(full.by_op.avg_pool2d, { calls = 1, macs = 0, flops = 25 * 8 })
  lu.assertEquals(full.by_op.softmax, { calls = 1, macs = 0, flops = 5 * 8 })
  lu.assertEquals(full.macs, conv_macs)
  lu.assertEquals(full.flops, 2 * conv_macs + out + 4 * out + out + 7 * out + 25 * 8 + 5 * 8)
  -- GroupNorm with its SiLU fused counts both: 7 + 4 per element
  local fused = nn.GroupNorm(2, 4)
  fused.forward = function(self, x) return nn.GroupNorm.forward(self, x, "silu") end
  lu.assertEquals(efficiency.count_ops(fused, { cn.randn { 2, 4, 5, 5 } }).by_op.group_norm, { calls = 1, macs = 0, flops = 11 * out })
end

function TestEfficiencyRules:testAttentionAndSolver()
  -- attention: q [2, 3, 6, 4], k [2, 3, 5, 4], v [2, 3, 5, 7]: 36 query rows × 5 keys × (4 + 7)
  local q, k, v = cn.randn { 2, 3, 6, 4 }, cn.randn { 2, 3, 5, 4 }, cn.randn { 2, 3, 5, 7 }
  local m = nn.Module()
  m.forward = function() return cn.scaled_dot_product_attention(q, k, v) end
  local full = efficiency.count_ops(m, {})
  lu.assertEquals(full.by_op.scaled_dot_product_attention.macs, 36 * 5 * 11)
  -- one classic RK4 step on a 10-element state: 4 evaluations of -z (neg), 7 axpys per element
  local ode = nn.ODEBlock(function(_, z) return -z end, { method = "rk4" })
  full = efficiency.count_ops(ode, { cn.randn { 2, 5 } })
  lu.assertEquals(full.by_op.neg.calls, 4)
  lu.assertEquals(full.by_op.odeint.macs, 7 * 10)
end

function TestEfficiencyRules:testHooksAndPatchesAreRemoved()
  local core = require "cunet.core"
  local model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.SiLU(), nn.Linear(2, 2))
  local before = { cn.conv2d, core.conv2d, cn.Tensor.__add, cn.Tensor.__methods.silu, core.odeint }
  -- a forward that fails (Linear expects 2 features, gets 4) must still restore everything
  lu.assertErrorMsgContains("Linear", efficiency.thop_macs, model, { cn.randn { 1, 1, 6, 6 } })
  lu.assertErrorMsgContains("Linear", efficiency.count_ops, model, { cn.randn { 1, 1, 6, 6 } })
  for _, m in ipairs(model:modules()) do lu.assertNil(rawget(m, "forward")) end
  lu.assertEquals({ cn.conv2d, core.conv2d, cn.Tensor.__add, cn.Tensor.__methods.silu, core.odeint }, before)
  -- training flags come back too
  model:train()
  efficiency.thop_macs(model, { cn.randn { 1, 1, 4, 4 } })
  lu.assertTrue(model[1].training)
end

function TestEfficiencyRules:testParameters()
  local model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Linear(4, 3))
  model[2]:requires_grad_(false)
  local p = efficiency.parameters(model)
  lu.assertEquals(p.total, 20 + 15)
  lu.assertEquals(p.trainable, 20)
  lu.assertEquals(p.frozen, 15)
  lu.assertEquals(p.children, { { name = "0", total = 20, trainable = 20 }, { name = "1", total = 15, trainable = 0 } })
end

function TestEfficiencyRules:testMemoryAndTime()
  cn.seed(3)
  -- 1×1 convolutions (no im2col workspace) around elementwise layers: activations dominate
  local model = nn.Sequential(nn.Conv2d(1, 8, 1), nn.SiLU(), nn.SiLU(), nn.SiLU(), nn.Conv2d(8, 1, 1))
  local x = cn.randn { 4, 1, 16, 16 }
  local infer = efficiency.peak_memory(model, { x })
  local train = efficiency.peak_memory(model, { x }, { train = true })
  local out_bytes = 4 * 16 * 16 * 4
  -- at least one hidden [4, 8, 16, 16] activation and the output
  lu.assertTrue(infer.activations >= 8 * out_bytes + out_bytes, tostring(infer.activations))
  -- training keeps activations for backward and adds gradients
  lu.assertTrue(train.activations > infer.activations, string.format("%d vs %d", train.activations, infer.activations))
  for _, p in ipairs(model:parameters()) do lu.assertNil(p.grad) end
  local median, times = efficiency.time_forward(model, { x }, { repeats = 3 })
  lu.assertEquals(#times, 3)
  lu.assertTrue(median > 0)
end

function TestEfficiencyRules:testCommas()
  lu.assertEquals(efficiency.commas(7206256640), "7,206,256,640")
  lu.assertEquals(efficiency.commas(12), "12")
  lu.assertEquals(efficiency.commas(-1234), "-1,234")
end

TestEfficiencyRecipe = {}

function TestEfficiencyRecipe:testSmallPreset()
  local p = io.popen(EXE .. " recipes/efficiency.lua --model unet --preset mnist_small --batch 2 --repeats 1 2>&1")
  local text = p:read("a")
  lu.assertTrue(p:close(), text)
  lu.assertStrContains(text, "GMACs")
  lu.assertStrContains(text, "mnist_small")
  lu.assertStrContains(text, "conv2d")
end
