-- test_double_backward.lua — higher-order autograd (create_graph) against PyTorch and against
-- second-order central differences.
--
-- Fixtures: every case of tests/fixtures/double_backward.lua (written by
-- tests/tools/fixtures_double_backward.py; regenerate it there, never edit it) becomes one test:
-- the first-order gradients g_i of <f(x), u>, taken with create_graph, then the Hessian-vector
-- products d (sum_i <g_i, v_i>) / d x, both compared with torch's float64 answer. Then
-- cn.gradgradcheck (finite differences of gradients) on small compositions, the options and
-- errors of create_graph, and the ops that refuse it by name.

local lu = require "luaunit"
local cn = require "cunet"
local fx = require "fixture_check"

-- float32 through two backward passes against a float64 reference
local RTOL, ATOL = 1e-4, 1e-5

local function square(t) return t * t end
local function pow2(t) return t ^ 2 end

-- op -> function(inputs, args) returning the output tensor (the generator's lambdas, in Lua)
local dispatch = {
  add = function(x) return x[1] + x[2] end,
  sub = function(x) return x[1] - x[2] end,
  mul = function(x) return x[1] * x[2] end,
  mul_self = function(x) return x[1] * x[1] end,
  div = function(x) return x[1] / x[2] end,
  pow = function(x) return x[1] ^ x[2] end,
  maximum = function(x) return cn.maximum(x[1], x[2]) end,
  minimum = function(x) return cn.minimum(x[1], x[2]) end,
  where = function(x) return cn.where(x[1], x[2], x[3]) end,
  clamp = function(x, a) return x[1]:clamp(a.lo, a.hi) end,
  linear = function(x) return cn.linear(x[1], x[2], x[3]) end,
  matmul = function(x) return x[1]:matmul(x[2]) end,
  mlp = function(x) return cn.linear(cn.linear(x[1], x[2], x[3]):tanh(), x[4]) end,
  mse_loss = function(x, a) return cn.mse_loss(x[1], x[2], {reduction = a.reduction}) end,
  l1_loss = function(x, a) return cn.l1_loss(x[1], x[2], {reduction = a.reduction}) end,
  sum_sq = function(x, a)
    if a.dims then return square(x[1]):sum(a.dims, a.keepdim) end
    return square(x[1]):sum()
  end,
  mean_sq = function(x, a) return square(x[1]):mean(a.dims) end,
  reshape_sq = function(x, a) return pow2(square(x[1]):reshape(a.shape)) end,
  permute_sq = function(x, a) return pow2(square(x[1]):permute(a.dims)) end,
  transpose_sq = function(x) return pow2(square(x[1]):t():contiguous()) end,
  narrow_sq = function(x, a) return pow2(square(x[1]):narrow(a.dim, a.start, a.length)) end,
  select_sq = function(x, a) return pow2(square(x[1]):select(a.dim, a.index)) end,
  expand_sq = function(x, a) return pow2(square(x[1]):expand(a.shape)) end,
  unsqueeze_sq = function(x) return pow2(square(x[1]):unsqueeze(2)):squeeze(2) end,
  cat_sq = function(x, a) return pow2(cn.cat({x[1] * x[2]:narrow(2, 1, 1), x[2] * x[2]}, a.dim)) end,
  stack_sq = function(x, a) return pow2(cn.stack({x[1] * x[2], x[2]}, a.dim)) end,
  pad_sq = function(x, a) return pow2(cn.pad(square(x[1]), a.pads, "constant", a.value)) end,
  conv2d = function(x, a)
    local y = cn.conv2d(x[1], x[2], x[3], {stride = a.stride, padding = a.padding, dilation = a.dilation,
      groups = a.groups, activation = a.activation})
    if a.square then return y:square() end
    if a.activation then return y end
    return a.sin and y:sin() or y:tanh()
  end,
  conv_transpose2d = function(x, a)
    return cn.conv_transpose2d(x[1], x[2], x[3], {stride = a.stride, padding = a.padding,
      output_padding = a.output_padding}):tanh()
  end,
  group_norm = function(x, a)
    local y = cn.group_norm(x[1], a.groups, x[2], x[3])
    return x[2] and y:tanh() or y:sin()
  end,
  instance_norm = function(x) return cn.instance_norm(x[1], x[2], x[3]):tanh() end,
  layer_norm = function(x, a) return cn.layer_norm(x[1], a.shape, x[2], x[3]):tanh() end,
  var = function(x, a) return x[1]:var(a.dims) end,
  std = function(x, a) return x[1]:std(nil, false, a.correction) end,
  rms = function(x, a) return x[1] / x[1]:norm(2, a.dim, true):clamp(1e-12) end,
  norm = function(x, a)
    local y = x[1]:norm(a.p, a.dims)
    return a.square and y:square() or y
  end,
  max = function(x, a)
    if a.square_first then return square(square(x[1]):max()) end
    return square((x[1]:max(a.dim, a.keepdim)))
  end,
  min = function(x, a) return square((x[1]:min(a.dim, a.keepdim))) end,
  avg_pool2d = function(x, a)
    return square(cn.avg_pool2d(x[1], a.kernel, {stride = a.stride, padding = a.padding, ceil_mode = a.ceil_mode,
      count_include_pad = a.count_include_pad}))
  end,
  adaptive_avg_pool2d = function(x, a) return square(cn.adaptive_avg_pool2d(x[1], a.size)) end,
  softmax = function(x, a) return cn.softmax(x[1], a.dim) end,
  log_softmax = function(x, a) return cn.log_softmax(x[1], a.dim) end,
  sdpa = function(x) return cn.scaled_dot_product_attention(x[1], x[2], x[3], {mask = x[4]}) end,
  embedding = function(x) return pow2(cn.embedding(x[1] + 1, x[2]):tanh()) end, -- ids 1-based in Lua
  upsample = function(x, a)
    local y = cn.upsample(x[1], {size = a.size, scale_factor = a.scale_factor, mode = a.mode,
      align_corners = a.align_corners})
    return a.tanh and y:tanh() or y:square()
  end,
}
for _, op in ipairs { "neg", "exp", "log", "sqrt", "rsqrt", "abs", "sin", "cos", "tanh", "sigmoid", "relu",
  "silu", "softplus", "square", "reciprocal" } do
  dispatch[op] = function(x) return x[1][op](x[1]) end
end
local OPERATOR = {
  add = function(a, b) return a + b end, sub = function(a, b) return a - b end,
  mul = function(a, b) return a * b end, div = function(a, b) return a / b end,
  pow = function(a, b) return a ^ b end,
}
for op, operator in pairs(OPERATOR) do
  dispatch[op .. "_scalar"] = function(x, a)
    if a.scalar_first then return operator(a.scalar, x[1]) end
    return operator(x[1], a.scalar)
  end
end

TestDoubleBackwardTorch = {}

for _, case in ipairs(fx.load("double_backward")) do
  TestDoubleBackwardTorch["test_" .. case.name] = function()
    local run = assert(dispatch[case.op], "no dispatch for op " .. case.op)
    local inputs, wrt, at = {}, {}, {}
    for i, spec in ipairs(case.inputs) do
      inputs[i] = fx.tensor(spec)
      if case.requires_grad[i] then
        inputs[i]:requires_grad(true)
        wrt[#wrt + 1] = inputs[i]
        at[#wrt] = i
      end
    end
    local out = run(inputs, case.args)
    local grads = cn.autograd.grad(out, wrt, fx.tensor(case.grad_output), {create_graph = true, allow_unused = true})
    local total
    for k, g in ipairs(grads) do
      fx.assert_close(g, case.grads[at[k]], {rtol = RTOL, atol = ATOL, label = case.name .. ": grad " .. at[k]})
      local term = (g * fx.tensor(case.directions[at[k]])):sum()
      total = total and total + term or term
    end
    -- gradients that are constants (of a linear or piecewise-linear op) carry no graph: then
    -- torch's products are zeros too, and checked as such
    local hvps = {}
    if total:requires_grad() then
      hvps = cn.autograd.grad(total, wrt, nil, {allow_unused = true})
    else
      for k, x in ipairs(wrt) do hvps[k] = cn.zeros(x:shape()) end
    end
    for k, h in ipairs(hvps) do
      fx.assert_close(h, case.hvps[at[k]], {rtol = RTOL, atol = ATOL, label = case.name .. ": hvp " .. at[k]})
    end
  end
end

-- ---- second-order central differences ---------------------------------------------------------

TestGradGradCheck = {}

local function gradgradcheck(fn, inputs, opts)
  local ok, worst = cn.gradgradcheck(fn, inputs, opts)
  lu.assertTrue(ok)
  lu.assertTrue(worst <= 1, "gradgradcheck reported a worst ratio of " .. tostring(worst))
end

function TestGradGradCheck.test_unary_chain()
  cn.seed(1)
  local x = cn.rand{2, 3} + 0.5
  gradgradcheck(function(t)
    return t:exp():sin() + t:log():tanh() + t:sqrt():sigmoid() + t:rsqrt():silu() + t:softplus():square()
  end, {x})
  gradgradcheck(function(t) return t:reciprocal():cos() * t:relu() + t:abs():clamp(0.2, 1.2) * t end, {cn.randn{2, 3}})
end

function TestGradGradCheck.test_binary_mixed()
  cn.seed(2)
  local a, b = cn.rand{3, 2} + 0.5, cn.rand{3, 2} + 0.5
  gradgradcheck(function(u, v) return u * v + u / v - v ^ u + (u - v):square() + 2 ^ u + u ^ 2.5 + 3 / v end, {a, b})
  gradgradcheck(function(u, v) return cn.maximum(u, v * 1.3) * u + cn.minimum(u * 0.7, v) * v end, {a, b})
end

function TestGradGradCheck.test_mlp_layers()
  cn.seed(3)
  gradgradcheck(function(x, w, b, w2)
    return cn.linear(cn.linear(x, w, b):silu(), w2):softplus()
  end, {cn.randn{3, 4}, cn.randn{5, 4} * 0.5, cn.randn{5}, cn.randn{2, 5} * 0.5})
  gradgradcheck(function(a, b) return a:matmul(b):tanh():sum(2):exp() end, {cn.randn{2, 3, 4} * 0.5, cn.randn{4, 2} * 0.5})
end

function TestGradGradCheck.test_shapes_and_losses()
  cn.seed(4)
  local x, y = cn.randn{2, 3, 4}, cn.randn{2, 3, 4}
  gradgradcheck(function(u, v)
    local joined = cn.cat({u:narrow(3, 1, 2), v:select(1, 2):unsqueeze(1):expand{2, 3, 4}:narrow(3, 2, 2)}, 3)
    local moved = cn.stack({joined:permute{3, 1, 2}:contiguous(), joined:transpose(2, 3):reshape{4, 2, 3}}, 1)
    return cn.mse_loss(moved:tanh(), cn.pad(u * v, {0, 0, 1, -1}):reshape{4, 2, 3})
  end, {x, y})
end

-- the pattern of RNODE's regularisers: a penalty on the gradient of the output, trained by backward
function TestGradGradCheck.test_gradient_penalty_backward()
  cn.seed(5)
  local w = cn.randn{3, 3}:requires_grad(true)
  local x = cn.randn{4, 3}:requires_grad(true)
  local y = cn.linear(x, w):tanh():sum()
  local gx = cn.autograd.grad(y, x, nil, {create_graph = true})[1]
  local penalty = (gx * gx):sum()
  penalty:backward()
  -- d penalty / dw by central differences of the penalty itself
  local base, eps = w:detach(), 1e-3
  local function value()
    local xx = x:detach():requires_grad(true)
    local g = cn.autograd.grad(cn.linear(xx, base):tanh():sum(), xx)[1]
    return (g * g):sum():item()
  end
  local analytic = w.grad:totable{flat = true}
  for i = 1, 3 do
    for j = 1, 3 do
      local orig = base:get{i, j}
      base:set({i, j}, orig + eps)
      local plus = value()
      base:set({i, j}, orig - eps)
      local minus = value()
      base:set({i, j}, orig)
      local numeric = (plus - minus) / (2 * eps)
      lu.assertAlmostEquals(analytic[(i - 1) * 3 + j], numeric, 2e-3 + 1e-2 * math.abs(numeric))
    end
  end
end

-- ---- options and errors -----------------------------------------------------------------------

TestCreateGraph = {}

function TestCreateGraph.test_backward_create_graph_accumulates_a_graph()
  local x = cn.tensor{0.5, -1.0, 2.0}:requires_grad(true)
  local y = (x * x * x):sum()
  y:backward{create_graph = true}
  lu.assertEquals(x.grad.grad_fn ~= nil, true)
  lu.assertEquals(x.grad:totable(), {0.75, 3.0, 12.0})
  local gx = x.grad
  x.grad = nil -- break the cycle x -> grad -> graph -> x, as in torch
  local h = cn.autograd.grad(gx:sum(), x)[1] -- 6x
  lu.assertEquals(h:totable(), {3.0, -6.0, 12.0})
  -- the first-order gradient and an existing .grad: accumulated out of place, with a graph
  x.grad = cn.tensor{1, 1, 1}
  local z = (x * x):sum()
  z:backward{create_graph = true}
  lu.assertEquals(x.grad:totable(), {2.0, -1.0, 5.0})
  lu.assertEquals(x.grad.grad_fn, "binary")
  x.grad = nil
end

function TestCreateGraph.test_retain_graph_defaults_to_create_graph()
  local x = cn.tensor{1.0, 2.0}:requires_grad(true)
  local y = (x:exp()):sum()
  cn.autograd.grad(y, x, nil, {create_graph = true})
  cn.autograd.grad(y, x) -- the graph was kept
  lu.assertErrorMsgContains("second time", function() cn.autograd.grad(y, x) end)
  local z = (x:exp()):sum()
  local g = cn.autograd.grad(z, x, nil, {create_graph = true, retain_graph = false})[1]
  lu.assertErrorMsgContains("second time", function() cn.autograd.grad(z, x) end)
  lu.assertEquals(g.grad_fn ~= nil, true) -- the gradient's own graph is separate and alive
end

function TestCreateGraph.test_options_are_checked()
  local x = cn.tensor{1.0}:requires_grad(true)
  local y = x * 2
  lu.assertErrorMsgContains("create_grpah", function() y:backward{create_grpah = true} end)
  lu.assertErrorMsgContains("create_graph", function() y:backward{create_grpah = true} end)
  lu.assertErrorMsgContains("create_grpah", function() cn.autograd.grad(y, x, nil, {create_grpah = true}) end)
  lu.assertErrorMsgContains("boolean retain_graph", function() y:backward(nil, 3) end)
  y:backward(nil, {retain_graph = true})
  y:backward(cn.tensor{1.0}, true)
  lu.assertEquals(x.grad:totable(), {4.0})
end

function TestCreateGraph.test_ops_without_a_differentiable_backward_refuse_by_name()
  local x = cn.randn{2, 3}:requires_grad(true)
  for _, case in ipairs {
    {"max_pool2d", function() return cn.max_pool2d(x:view{1, 1, 2, 3}, 2) end},
    {"max-norm", function() return x:norm(math.huge) end},
    {"gelu", function() return x:gelu() end},
    {"cross_entropy", function() return cn.cross_entropy(x, cn.tensor{1, 3}) end},
  } do
    local y = case[2]():sum()
    lu.assertErrorMsgContains(case[1], function() cn.autograd.grad(y, x, nil, {create_graph = true}) end)
    lu.assertErrorMsgContains("create_graph", function() cn.autograd.grad(y, x, nil, {create_graph = true}) end)
    -- the fast path is untouched
    lu.assertEquals(cn.autograd.grad(y, x)[1]:shape(), {2, 3})
  end
end

-- ---- odeint: direct backpropagation composes; the adjoint refuses ------------------------------

TestCreateGraphOde = {}

-- an MLP neural ODE: the solver's stages are lincombs of f's outputs, all recorded
function TestCreateGraphOde.test_odeint_second_order_by_central_differences()
  cn.seed(6)
  for _, method in ipairs { "rk4", "euler" } do
    gradgradcheck(function(z0, w1, w2)
      local function f(_, z) return cn.linear(cn.linear(z, w1):tanh(), w2) end
      return cn.odeint(f, z0, cn.tensor{0, 0.5}, {method = method}):select(1, 2)
    end, {cn.randn{2, 3}, cn.randn{4, 3} * 0.5, cn.randn{3, 4} * 0.5})
  end
end

function TestCreateGraphOde.test_odeint_adjoint_refuses_create_graph()
  local w = (cn.randn{3, 3} * 0.5):requires_grad(true)
  local z0 = cn.randn{2, 3}:requires_grad(true)
  local zs = cn.odeint(function(_, z) return cn.linear(z, w):tanh() end, z0, cn.tensor{0, 1},
    {method = "rk4", adjoint = true, params = {w}})
  lu.assertErrorMsgContains("adjoint=true", function() cn.autograd.grad(zs:sum(), z0, nil, {create_graph = true}) end)
end

-- ---- whole models: Hessian-vector products of a U-Net's and a cU-Net's loss ---------------------

TestCreateGraphModels = {}

local unet = require "cunet.models.unet"
local continuous_unet = require "cunet.models.continuous_unet"

-- d/dx and d/dw of <grad of the ε-prediction loss, v> against central differences of gradients,
-- w one of the model's trainable tensors, on tiny configs with the presets' structure: the
-- ddpm U-Net with attention; the cU-Net's second-order ODE blocks (rk4_38 stages: lincombs),
-- group norm, attention and the time embedding
local function check_model(model)
  model:eval() -- no dropout: every evaluation is the same function
  local params = {}
  for _, p in ipairs(model:parameters()) do if p:requires_grad() then params[#params + 1] = p end end
  local t, eps = cn.tensor{10, 500}, cn.randn{2, 1, 8, 8}
  gradgradcheck(function(x) return cn.mse_loss(model(x, t), eps) end, {cn.randn{2, 1, 8, 8}, params[3]},
    {eps = 1e-2, rtol = 5e-2, atol = 1e-3, max_elements = 6})
end

function TestCreateGraphModels.test_unet_hvp()
  cn.seed(11)
  check_model(unet.UNet{arch = "ddpm", in_channels = 1, resolution = 8, ch = 8, ch_mult = {1, 2}, num_res_blocks = 1,
    attn_resolutions = {4}, dropout = 0, norm_groups = 4})
end

function TestCreateGraphModels.test_cunet_hvp()
  cn.seed(11)
  check_model(continuous_unet.ContinuousUNet{in_channels = 1, resolution = 8, widths = {4, 8}, mid_width = 8,
    stem_width = 4, time_dim = 8, attention_levels = {2}, attention_heads = 1, form = "second_order",
    stem = "position_velocity", norm = "group", norm_groups = 2, time_scale_shift = true, attention_residual = true})
end
