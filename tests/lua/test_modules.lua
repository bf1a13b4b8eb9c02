-- test_modules.lua — the nn modules (lua/cunet/nn/): every module against PyTorch (outputs, input
-- and parameter gradients, state_dict keys and order, parameter counts, repr) from
-- tests/fixtures/nn_modules.lua (written by tests/tools/fixtures_modules.py; regenerate it there);
-- then the Module API, PyTorch's initialisation rules, state dicts, train/eval, printing and a
-- gradcheck of a small SelfAttention2d.

local lu = require "luaunit"
local helpers = require "helpers"
local cn = require "cunet"
local fx = require "fixture_check"

local nn = cn.nn
local class = nn.class

local function flat(t) return t:totable { flat = true } end

local assert_error = helpers.assert_error

local function names_of(iter_fn)
  local out = {}
  for name in iter_fn do out[#out + 1] = name end
  return out
end

-- ---- against PyTorch -------------------------------------------------------------------------------

-- Models made of several modules: the same trees as fixtures_modules.py builds in torch.
local BUILD = {
  sequential = function()
    return nn.Sequential(nn.Conv2d(3, 32, 3, { padding = 1 }), nn.GroupNorm(8, 32), nn.SiLU(),
      nn.SelfAttention2d(32, { heads = 2 }), nn.Conv2d(32, 3, 3, { padding = 1 }))
  end,
  named = function()
    return nn.Sequential {
      { "stem", nn.Sequential(nn.Conv2d(2, 8, 3, { padding = 1 }), nn.BatchNorm2d(8), nn.ReLU()) },
      { "down", nn.Sequential(nn.GroupNorm(4, 8), nn.Downsample(8)) },
      { "attn", nn.SelfAttention2d(8, { heads = 2, groups = 4 }) },
      { "up", nn.Upsample { scale_factor = 2 } },
      { "head", nn.Conv2d(8, 2, 1) },
    }
  end,
}

local function build(case)
  if case.build then return BUILD[case.build]() end
  return nn[case.module](table.unpack(case.args))
end

local function pair_names(pairs_list)
  local out = {}
  for i, p in ipairs(pairs_list) do out[i] = p[1] end
  return out
end

local function run_case(case)
  local m = build(case)
  local tol = { rtol = case.rtol or 1e-4, atol = case.atol or 1e-5 }
  -- the torch state_dict loads under its own key names, and our keys come in torch's order
  local sd = {}
  for _, kv in ipairs(case.state) do sd[kv[1]] = fx.tensor(kv[2]) end
  m:load_state_dict(sd)
  local _, keys = m:state_dict()
  lu.assertEquals(keys, pair_names(case.state), "state_dict keys")
  lu.assertEquals(names_of(m:named_parameters()), pair_names(case.param_grads), "named_parameters")
  lu.assertEquals(m:num_parameters(), case.num_params, "num_parameters")
  if case.repr then lu.assertEquals(tostring(m), table.concat(case.repr, "\n")) end
  m:train(case.training)

  local inputs = fx.inputs(case, true)
  local out = m(table.unpack(inputs))
  fx.assert_close(out, case.output, { rtol = tol.rtol, atol = tol.atol, label = case.name .. ": output" })
  out:backward(fx.tensor(case.grad_output))
  for i, g in ipairs(case.grads) do
    if g then
      fx.assert_close(inputs[i].grad, g, { rtol = tol.rtol, atol = tol.atol, label = case.name .. ": grad of input " .. i })
    end
  end
  local params = {}
  for name, p in m:named_parameters() do params[name] = p end
  for _, ng in ipairs(case.param_grads) do
    fx.assert_close(params[ng[1]].grad, ng[2], { rtol = tol.rtol, atol = tol.atol, label = case.name .. ": grad of " .. ng[1] })
  end
  if case.buffers_after then
    local after = m:state_dict()
    for _, kv in ipairs(case.buffers_after) do
      fx.assert_close(after[kv[1]], kv[2], { rtol = tol.rtol, atol = tol.atol, label = case.name .. ": buffer " .. kv[1] })
    end
  end
end

TestModulesTorch = {}
for _, case in ipairs(fx.load("nn_modules")) do
  TestModulesTorch["test_" .. case.name] = function() run_case(case) end
end

-- ---- the Module API --------------------------------------------------------------------------------

-- A user-defined model: children, a Parameter, a buffer, a non-persistent buffer, a plain field.
local Net = class("Net", nn.Module)

function Net:__init(ch)
  nn.Module.__init(self)
  self.conv = nn.Conv2d(2, ch, 3, { padding = 1 })
  self.scale = nn.Parameter(cn.ones { ch, 1, 1 })
  self:register_buffer("count", cn.zeros {})
  self:register_buffer("scratch", cn.zeros { 2 }, false)
  self.blocks = nn.ModuleList { nn.GroupNorm(2, ch), nn.SiLU() }
  self.drop = nn.Dropout(0.5)
  self.width = ch
end

function Net:forward(x)
  local h = self.conv(x) * self.scale
  for _, block in ipairs(self.blocks) do h = block(h) end
  return self.drop(h)
end

TestModuleAPI = {}

function TestModuleAPI:test_registration_order_and_names()
  local net = Net(4)
  lu.assertEquals(names_of(net:named_parameters()),
    { "scale", "conv.weight", "conv.bias", "blocks.0.weight", "blocks.0.bias" })
  lu.assertEquals(names_of(net:named_buffers()), { "count", "scratch" })
  local _, keys = net:state_dict()
  lu.assertEquals(keys, { "scale", "count", "conv.weight", "conv.bias", "blocks.0.weight", "blocks.0.bias" })
  lu.assertEquals(names_of(net:named_children()), { "conv", "blocks", "drop" })
  lu.assertEquals(names_of(net:named_modules()), { "", "conv", "blocks", "blocks.0", "blocks.1", "drop" })
  lu.assertEquals(#net:parameters(), 5)
  lu.assertEquals(#net:buffers(), 2)
  lu.assertEquals(#net:children(), 3)
  lu.assertEquals(#net:modules(), 6)
  lu.assertEquals(rawget(net, "width"), 4) -- a plain field stays in the instance
  lu.assertIs(net:get_submodule("blocks.0"), net.blocks[1])
  assert_error(function() net:get_submodule("blocks.7") end, "no submodule '7'")
  lu.assertEquals(class.name(net.conv), "Conv2d")
  lu.assertTrue(class.is_instance(net, nn.Module))
end

function TestModuleAPI:test_define_by_assignment()
  local net = Net(4)
  net.extra = nn.Linear(2, 3) -- a new child goes last
  lu.assertEquals(names_of(net:named_children()), { "conv", "blocks", "drop", "extra" })
  net.extra = nil -- removing a child
  lu.assertEquals(names_of(net:named_children()), { "conv", "blocks", "drop" })
  net.scale = cn.full({ 4, 1, 1 }, 2) -- a tensor assigned to a parameter's name replaces it
  lu.assertTrue(net.scale:requires_grad())
  lu.assertEquals(flat(net.scale), { 2, 2, 2, 2 })
  net.count = cn.full({}, 5) -- and to a buffer's name, the buffer
  lu.assertEquals(net:state_dict().count:item(), 5)
  net.plain = cn.zeros { 3 } -- a plain tensor is neither parameter nor buffer (PyTorch's rule)
  lu.assertEquals(#net:parameters(), 5)
  lu.assertEquals(#net:buffers(), 2)
  assert_error(function() net.conv = 3 end, "child module 'conv'")
  assert_error(function() net:register_parameter("a.b", cn.zeros { 1 }) end, "can't contain")
  assert_error(function() net:register_buffer("conv", cn.zeros { 1 }) end, "already exists")
  -- bias=false registers no tensor: absent from parameters and state_dict, reads as nil
  local conv = nn.Conv2d(2, 3, 1, { bias = false })
  lu.assertNil(conv.bias)
  lu.assertEquals(names_of(conv:named_parameters()), { "weight" })
end

function TestModuleAPI:test_init_must_come_first()
  local Bad = class("Bad", nn.Module)
  function Bad:__init() self.conv = nn.Conv2d(1, 1, 1) end
  assert_error(function() Bad() end, "call nn.Module.__init(self)")
  local NoForward = class("NoForward", nn.Module)
  function NoForward:__init() nn.Module.__init(self) end
  assert_error(function() NoForward()(cn.zeros { 1 }) end, "missing forward")
end

function TestModuleAPI:test_options_are_checked()
  assert_error(function() nn.Conv2d(3, 4, 3, { strde = 2 }) end, "unknown option 'strde'", "stride")
  assert_error(function() nn.GroupNorm(3, 8) end, "divisible")
  assert_error(function() nn.SelfAttention2d(16) end, "divisible by groups (32)")
  assert_error(function() nn.Linear(3, 4)(cn.zeros { 2, 5 }) end, "last dim is 3", "[2, 5]")
  assert_error(function() nn.Conv2d(3, 4, 3)(cn.zeros { 3, 5 }) end, "4-D input", "[3, 5]")
  assert_error(function() nn.Upsample {} end, "exactly one of size and scale_factor")
end

function TestModuleAPI:test_shared_parameters_counted_once()
  local lin = nn.Linear(3, 3)
  local seq = nn.Sequential(lin, nn.ReLU(), lin)
  lu.assertEquals(#seq:parameters(), 2)
  lu.assertEquals(seq:num_parameters(), 12)
  local _, keys = seq:state_dict()
  lu.assertEquals(keys, { "0.weight", "0.bias" }) -- the module itself is visited once, as torch
end

function TestModuleAPI:test_containers()
  local a, b, c = nn.ReLU(), nn.Tanh(), nn.SiLU()
  local seq = nn.Sequential(a, b)
  lu.assertEquals(#seq, 2)
  lu.assertIs(seq[1], a)
  lu.assertIs(seq[-1], b)
  lu.assertNil(seq[3])
  lu.assertIs(seq:add(c), seq)
  lu.assertIs(seq[3], c)
  lu.assertEquals(names_of(seq:named_children()), { "0", "1", "2" })
  local seen = {}
  for i, m in ipairs(seq) do seen[i] = m end
  lu.assertEquals(#seen, 3)
  seq[2] = nn.Identity() -- replacing keeps the name
  lu.assertEquals(class.name(seq[2]), "Identity")
  lu.assertEquals(names_of(seq:named_children()), { "0", "1", "2" })
  local x = cn.tensor { -1, 0.5, 2 }
  lu.assertEquals(flat(seq(x)), flat(x:relu():silu()))
  lu.assertIs(nn.Sequential()(x), x)
  local named = nn.Sequential { { "first", nn.ReLU() }, { "second", nn.Tanh() } }
  lu.assertEquals(names_of(named:named_children()), { "first", "second" })
  lu.assertIs(named[2], named.second)
  local list = nn.ModuleList { nn.Linear(2, 2) }
  list:append(nn.Linear(2, 3)):extend { nn.Linear(3, 1) }
  lu.assertEquals(#list, 3)
  lu.assertEquals(names_of(list:named_parameters()), { "0.weight", "0.bias", "1.weight", "1.bias", "2.weight", "2.bias" })
  assert_error(function() list(x) end, "no forward")
  assert_error(function() nn.Sequential(nn.ReLU(), 3) end, "entry 2")
end

function TestModuleAPI:test_train_eval_propagate()
  local net = Net(4)
  lu.assertTrue(net.training)
  lu.assertIs(net:eval(), net)
  for _, m in ipairs(net:modules()) do lu.assertFalse(m.training) end
  net:train()
  for _, m in ipairs(net:modules()) do lu.assertTrue(m.training) end
  net.blocks:train(false)
  lu.assertTrue(net.training)
  lu.assertFalse(net.blocks[2].training)
end

function TestModuleAPI:test_zero_grad_apply_requires_grad()
  local net = Net(4)
  net:eval()
  net(cn.randn { 1, 2, 3, 3 }):sum():backward()
  for _, p in ipairs(net:parameters()) do lu.assertNotNil(p.grad) end
  net:zero_grad()
  for _, p in ipairs(net:parameters()) do lu.assertNil(p.grad) end
  local visited = {}
  net:apply(function(m) visited[#visited + 1] = class.name(m) end)
  lu.assertEquals(visited, { "Conv2d", "GroupNorm", "SiLU", "ModuleList", "Dropout", "Net" }) -- children first
  net.conv:requires_grad_(false)
  lu.assertEquals(net:num_parameters(true), net:num_parameters() - net.conv:num_parameters())
  lu.assertEquals(net:num_parameters(), 4 + (4 * 2 * 9 + 4) + 8)
end

-- ---- state dicts ------------------------------------------------------------------------------------

TestStateDict = {}

function TestStateDict:test_round_trip()
  cn.seed(11)
  local a = BUILD.named()
  cn.seed(12)
  local b = BUILD.named()
  a:eval(); b:eval()
  local x = cn.randn { 2, 2, 4, 4 }
  local ya, yb = flat(a(x)), flat(b(x))
  lu.assertNotEquals(ya, yb)
  local sd, keys = a:state_dict()
  lu.assertEquals(#keys, 19)
  for _, k in ipairs(keys) do lu.assertFalse(sd[k]:requires_grad(), k .. " is detached") end
  local result = b:load_state_dict(sd)
  lu.assertEquals(result.missing_keys, {})
  lu.assertEquals(result.unexpected_keys, {})
  lu.assertEquals(flat(b(x)), ya)
  -- loaded values are copies: changing a's parameters later leaves b alone, and b's stay leaves
  cn.no_grad(function() a.head.weight:fill_(0) end)
  lu.assertEquals(flat(b(x)), ya)
  lu.assertTrue(b.head.weight.is_leaf)
  lu.assertTrue(b.head.weight:requires_grad())
  -- state_dict tensors share storage with the module (as torch's)
  cn.no_grad(function() sd["head.bias"]:fill_(7) end)
  lu.assertEquals(flat(a.head.bias), { 7, 7 })
end

function TestStateDict:test_through_safetensors()
  cn.seed(13)
  local a = BUILD.named()
  a(cn.randn { 2, 2, 4, 4 }) -- moves the BatchNorm running statistics off their initial values
  local path = os.tmpname()
  cn.save(path, (a:state_dict()))
  local b = BUILD.named()
  b:load_state_dict(cn.load(path))
  os.remove(path)
  local sa, sb = a:state_dict(), b:state_dict()
  for _, k in ipairs(select(2, a:state_dict())) do lu.assertEquals(flat(sb[k]), flat(sa[k]), k) end
end

function TestStateDict:test_errors_list_the_keys()
  local net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3))
  local sd = net:state_dict()
  local before = flat(net[1].weight)
  local bad = {}
  for k, v in pairs(sd) do bad[k] = v end
  bad["0.bias"] = nil
  bad["1.running_var"] = nil
  bad["2.weight"] = cn.zeros { 1 }
  bad["extra"] = cn.zeros { 1 }
  bad["0.weight"] = cn.zeros { 3, 2, 5, 5 }
  local err = assert_error(function() net:load_state_dict(bad) end,
    "state_dict for Sequential",
    'missing key(s): "0.bias", "1.running_var"',
    'unexpected key(s): "2.weight", "extra"',
    'size mismatch for "0.weight"', "[3, 2, 5, 5]", "[3, 2, 3, 3]")
  lu.assertNotNil(err)
  lu.assertEquals(flat(net[1].weight), before, "nothing is copied when loading fails")
  -- non-strict: missing and unexpected keys are reported, the rest loads; shapes must still match
  bad["0.weight"] = cn.full({ 3, 2, 3, 3 }, 0.25)
  local result = net:load_state_dict(bad, false)
  lu.assertEquals(result.missing_keys, { "0.bias", "1.running_var" })
  lu.assertEquals(result.unexpected_keys, { "2.weight", "extra" })
  lu.assertEquals(flat(net[1].weight)[1], 0.25)
  bad["1.weight"] = cn.zeros { 4 }
  assert_error(function() net:load_state_dict(bad, false) end, 'size mismatch for "1.weight"')
  assert_error(function() net:load_state_dict({ ["0.weight"] = 3 }, false) end, "expected a tensor")
end

-- ---- PyTorch's initialisation --------------------------------------------------------------------

TestInit = {}

-- values within ±bound, reaching near it, with U(-b, b)'s mean 0 and variance b²/3
local function assert_uniform(t, bound, label)
  local v = flat(t)
  local n, sum, sq, top = #v, 0, 0, 0
  for _, x in ipairs(v) do
    sum, sq, top = sum + x, sq + x * x, math.max(top, math.abs(x))
  end
  local mean, var = sum / n, sq / n - (sum / n) ^ 2
  lu.assertTrue(top <= bound * (1 + 1e-6), string.format("%s: |w| %.6g beyond bound %.6g", label, top, bound))
  lu.assertTrue(top >= bound * 0.97, string.format("%s: max |w| %.6g far below bound %.6g", label, top, bound))
  local sd = bound / math.sqrt(3)
  lu.assertTrue(math.abs(mean) < 4 * sd / math.sqrt(n), string.format("%s: mean %.4g", label, mean))
  lu.assertTrue(math.abs(var / (sd * sd) - 1) < 0.08, string.format("%s: variance %.4g vs %.4g", label, var, sd * sd))
end

function TestInit:test_conv_linear_kaiming_uniform()
  cn.seed(3)
  local conv = nn.Conv2d(64, 32, 3)
  assert_uniform(conv.weight, 1 / math.sqrt(64 * 9), "conv weight")
  assert_uniform(nn.Conv2d(512, 400, 1).bias, 1 / math.sqrt(512), "conv bias")
  local grouped = nn.Conv2d(64, 128, 3, { groups = 8 })
  assert_uniform(grouped.weight, 1 / math.sqrt(8 * 9), "grouped conv weight") -- fan_in = in/groups·kh·kw
  -- transposed: torch's fan_in is weight dim 2 (out/groups) times the kernel
  local up = nn.ConvTranspose2d(16, 64, 4, { groups = 2 })
  lu.assertEquals(up.weight:shape(), { 16, 32, 4, 4 })
  assert_uniform(up.weight, 1 / math.sqrt(32 * 16), "transposed conv weight")
  assert_uniform(nn.ConvTranspose2d(8, 512, 1).bias, 1 / math.sqrt(512), "transposed conv bias")
  local lin = nn.Linear(100, 300)
  assert_uniform(lin.weight, 0.1, "linear weight")
  assert_uniform(nn.Linear(400, 600).bias, 0.05, "linear bias")
end

function TestInit:test_norms_embedding_and_buffers()
  for _, m in ipairs { nn.GroupNorm(2, 6), nn.LayerNorm(6), nn.BatchNorm2d(6), nn.InstanceNorm2d(6, { affine = true }) } do
    lu.assertEquals(flat(m.weight), { 1, 1, 1, 1, 1, 1 })
    lu.assertEquals(flat(m.bias), { 0, 0, 0, 0, 0, 0 })
  end
  lu.assertNil(nn.InstanceNorm2d(6).weight) -- affine=false by default, as torch
  lu.assertEquals(select(2, nn.InstanceNorm2d(6):state_dict()), {})
  local bn = nn.BatchNorm2d(3)
  lu.assertEquals(flat(bn.running_mean), { 0, 0, 0 })
  lu.assertEquals(flat(bn.running_var), { 1, 1, 1 })
  lu.assertEquals(bn.num_batches_tracked:item(), 0)
  cn.seed(4)
  local v = flat(nn.Embedding(200, 50).weight)
  local sum, sq = 0, 0
  for _, x in ipairs(v) do sum, sq = sum + x, sq + x * x end
  local mean = sum / #v
  lu.assertTrue(math.abs(mean) < 0.04, "embedding mean " .. mean)
  lu.assertTrue(math.abs(math.sqrt(sq / #v - mean * mean) - 1) < 0.03, "embedding std")
end

function TestInit:test_seed_makes_models_reproducible()
  cn.seed(9)
  local a = flat(BUILD.sequential()[4].qkv.weight)
  cn.seed(9)
  local b = flat(BUILD.sequential()[4].qkv.weight)
  lu.assertEquals(a, b)
end

function TestInit:test_init_functions()
  local w = cn.empty { 30, 20 }
  nn.init.xavier_uniform_(w)
  assert_uniform(w, math.sqrt(6 / 50), "xavier_uniform_")
  local fan_in, fan_out = nn.init.calculate_fan_in_and_fan_out(cn.empty { 8, 3, 5, 5 })
  lu.assertEquals({ fan_in, fan_out }, { 75, 200 })
  local z = nn.Parameter(cn.ones { 4 })
  nn.init.zeros_(z) -- works on a parameter that requires grad (written outside autograd)
  lu.assertEquals(flat(z), { 0, 0, 0, 0 })
  lu.assertAlmostEquals(nn.init.calculate_gain("leaky_relu", math.sqrt(5)), math.sqrt(1 / 3), 1e-12)
end

-- ---- train / eval behaviour ----------------------------------------------------------------------

TestTrainEval = {}

function TestTrainEval:test_dropout()
  cn.seed(5)
  local drop = nn.Dropout(0.25)
  local x = cn.full({ 100, 100 }, 2)
  local v = flat(drop(x))
  local zeros = 0
  for _, e in ipairs(v) do
    if e == 0 then
      zeros = zeros + 1
    else
      lu.assertAlmostEquals(e, 2 / 0.75, 1e-6)
    end
  end
  lu.assertTrue(math.abs(zeros / #v - 0.25) < 0.02, "dropped fraction " .. zeros / #v)
  drop:eval()
  lu.assertIs(drop(x), x)
  -- through a container: eval() on the parent switches the child
  local seq = nn.Sequential(nn.Identity(), nn.Dropout(0.5))
  seq:eval()
  lu.assertEquals(flat(seq(x)), flat(x))
end

function TestTrainEval:test_batch_norm()
  cn.seed(6)
  local bn = nn.BatchNorm2d(2)
  local x = cn.randn { 4, 2, 3, 3 } * 2 + 1
  local y = bn(x) -- training: batch statistics, running stats move by momentum 0.1
  lu.assertEquals(bn.num_batches_tracked:item(), 1)
  local mean = flat(x:mean({ 1, 3, 4 }))
  local var = flat(x:var({ 1, 3, 4 }, false, 1))
  for c = 1, 2 do
    lu.assertAlmostEquals(flat(bn.running_mean)[c], 0.1 * mean[c], 1e-5)
    lu.assertAlmostEquals(flat(bn.running_var)[c], 0.9 + 0.1 * var[c], 1e-5)
  end
  lu.assertAlmostEquals(y:mean():item(), 0, 1e-5)
  bn:eval() -- evaluation: the running statistics, nothing updated
  local rm, rv = flat(bn.running_mean), flat(bn.running_var)
  local ye = flat(bn(x))
  lu.assertEquals(bn.num_batches_tracked:item(), 1)
  lu.assertEquals(flat(bn.running_mean), rm)
  local xv = flat(x)
  for i = 1, #xv do
    local c = ((i - 1) // 9) % 2 + 1
    lu.assertAlmostEquals(ye[i], (xv[i] - rm[c]) / math.sqrt(rv[c] + 1e-5), 1e-5)
  end
end

-- ---- printing ---------------------------------------------------------------------------------------

TestRepr = {}

function TestRepr:test_tree()
  local cases = {}
  for _, case in ipairs(fx.load("nn_modules")) do cases[case.name] = case end
  local want_seq = table.concat(cases.model_sequential.repr, "\n")
  lu.assertEquals(tostring(BUILD.sequential()), want_seq)
  lu.assertEquals(tostring(BUILD.named()), table.concat(cases.model_named.repr, "\n"))
  lu.assertStrContains(want_seq, "(3): SelfAttention2d(\n    32, heads=2\n    (norm): GroupNorm(32, 32")
end

function TestRepr:test_lua_conventions()
  lu.assertEquals(tostring(nn.Flatten()), "Flatten(start_dim=2, end_dim=-1)")
  lu.assertEquals(tostring(nn.Softmax(2)), "Softmax(dim=2)")
  lu.assertEquals(tostring(nn.BatchNorm2d(4, { momentum = false })),
    "BatchNorm2d(4, eps=1e-05, momentum=None, affine=True, track_running_stats=True)")
  lu.assertEquals(tostring(Net(4)), table.concat({
    "Net(",
    "  (conv): Conv2d(2, 4, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))",
    "  (blocks): ModuleList(",
    "    (0): GroupNorm(2, 4, eps=1e-05, affine=True)",
    "    (1): SiLU()",
    "  )",
    "  (drop): Dropout(p=0.5, inplace=False)",
    ")" }, "\n"))
end

-- ---- gradcheck and closed forms ------------------------------------------------------------------------

TestGradcheck = {}

function TestGradcheck:test_self_attention()
  cn.seed(8)
  local att = nn.SelfAttention2d(4, { heads = 2, groups = 2 })
  local x = cn.randn { 1, 4, 2, 3 }
  local inputs = { x }
  for _, p in ipairs(att:parameters()) do inputs[#inputs + 1] = p end
  lu.assertTrue(cn.gradcheck(function(input) return att(input) end, inputs, { eps = 1e-3, rtol = 2e-2, atol = 2e-3 }))
end

function TestGradcheck:test_sinusoidal_closed_form()
  local emb = nn.SinusoidalTimeEmbedding(10)
  local t = { 0, 1, 3.5, 42 }
  local got = flat(emb(cn.tensor(t)))
  for n, tn in ipairs(t) do
    for i = 0, 4 do
      local w = math.exp(-math.log(10000) * i / 4)
      lu.assertAlmostEquals(got[(n - 1) * 10 + i + 1], math.sin(tn * w), 2e-5)
      lu.assertAlmostEquals(got[(n - 1) * 10 + i + 6], math.cos(tn * w), 2e-5)
    end
  end
  lu.assertEquals(emb(7):shape(), { 1, 10 })
  lu.assertEquals(select(2, emb:state_dict()), {}) -- no parameters; the frequencies are not saved
  lu.assertEquals(#emb:buffers(), 1)
end

function TestGradcheck:test_functional_names()
  local F = nn.functional
  local x = cn.randn { 1, 2, 4, 4 }
  lu.assertEquals(flat(F.interpolate(x, { scale_factor = 2 })), flat(cn.upsample(x, { scale_factor = 2 })))
  lu.assertEquals(flat(F.softplus(x, 2, 5)), flat(nn.Softplus { beta = 2, threshold = 5 }(x)))
  lu.assertTrue(F.available("conv2d"))
  lu.assertFalse(F.available("no_such_op"))
  assert_error(function() F.no_such_op(x) end, "cn.no_such_op is not available")
end
