-- efficiency — what a model costs: parameters, multiply-accumulates (MACs) and FLOPs of one forward
-- pass, peak tensor memory and wall time. See docs/efficiency.md.
--
--   local efficiency = require "cunet.efficiency"
--   local x, t = cn.randn{1, 3, 64, 64}, cn.tensor{500}
--   local p = efficiency.parameters(model)            -- {total=, trainable=, frozen=, children={...}}
--   local thop = efficiency.thop_macs(model, {x, t})  -- thop 0.1.1's count: thop.total, thop.by_type
--   local full = efficiency.count_ops(model, {x, t})  -- every op: full.macs, full.flops, full.by_op
--   local mem = efficiency.peak_memory(model, {x, t}, {train = true})
--   local sec = efficiency.time_forward(model, {x, t}, {repeats = 5})
--
-- Two counts, reported separately:
--   * thop_macs follows thop (Lyken17/pytorch-OpCounter) 0.1.1, the counter behind the paper's
--     "GFLOPs" (which are MACs): forward hooks on registered module types only (convolutions, linear
--     layers, batch/instance/layer norms, pooling, upsampling, softmax, some activations), nothing for
--     GroupNorm, custom modules or functional ops (matmuls inside attention, F.interpolate, x + y).
--     Here the hooks are instance fields wrapping each leaf module's forward for the duration of the
--     count (rawset, then removed), so the nn library is never changed.
--   * count_ops counts every engine op the forward calls (convolutions, matmuls, attention,
--     elementwise ops, norms, reductions, resampling, ODE-solver updates) by intercepting the
--     engine's functions and tensor methods during one forward; M.FULL_RULES documents the cost of
--     each op.
--
-- inputs are the model's arguments as a list ({x, t}) or a function returning that list.

local cn = require "cunet"
local core = require "cunet.core"
local nn = require "cunet.nn"
local class = require "cunet.class"
local options = require "cunet.options"

local M = {}

--- The thop release whose rules give the paper's numbers exactly (lucidrains' U-Net at 3×64²:
-- 7,206,256,640; the authors' cU-Net: 2,830,983,168). See docs/efficiency.md.
M.THOP_VERSION = "0.1.1.post2209072238"

-- ---- helpers ----------------------------------------------------------------------------------------

local function args_of(inputs)
  if type(inputs) == "function" then inputs = inputs() end
  if core.is_tensor(inputs) then inputs = { inputs } end
  if type(inputs) ~= "table" then error("efficiency: inputs must be a list of arguments or a function returning one", 3) end
  return inputs, inputs.n or #inputs
end

local function numel(t) return core.is_tensor(t) and t:numel() or 0 end

local function prod(list)
  local p = 1
  for _, v in ipairs(list) do p = p * v end
  return p
end

-- Runs fn(model) in eval mode under no_grad (as thop does) and restores the training flags of
-- every module, even on error.
local function eval_no_grad(model, fn)
  local modes = {}
  for _, m in ipairs(model:modules()) do modes[m] = m.training end
  model:eval()
  local ok, err = pcall(core.no_grad, fn)
  for m, mode in pairs(modes) do rawset(m, "training", mode) end
  if not ok then error(err, 0) end
end

local function top_name(name)
  if name == "" then return "(self)" end
  return name:match("^[^.]+")
end

-- ---- parameters -------------------------------------------------------------------------------------

--- parameters(model) -> {total=, trainable=, frozen=, own = {total=, trainable=}, children = {{name=,
-- total=, trainable=}, ...}}: element counts (shared tensors once), per top-level child in
-- registration order; own counts the model's direct parameters.
function M.parameters(model)
  local function count(list)
    local total, trainable = 0, 0
    for _, p in ipairs(list) do
      total = total + p:numel()
      if p:requires_grad() then trainable = trainable + p:numel() end
    end
    return total, trainable
  end
  local out = { children = {} }
  out.total, out.trainable = count(model:parameters())
  out.frozen = out.total - out.trainable
  local own_total, own_trainable = count(model:parameters(false))
  out.own = { total = own_total, trainable = own_trainable }
  for name, child in model:named_children() do
    local total, trainable = count(child:parameters())
    out.children[#out.children + 1] = { name = name, total = total, trainable = trainable }
  end
  return out
end

-- ---- thop's rules -----------------------------------------------------------------------------------
-- thop 0.1.1 (profile.py register_hooks, vision/basic_hooks.py, vision/calc_func.py). A rule is
-- fn(module, input, output) -> ops, called after every forward of a module of exactly that class
-- (thop looks up type(m), not isinstance). Modules of other classes count nothing; their children
-- are still counted.

local function thop_conv(m, x, y)
  -- calculate_conv2d_flops: output elements × (C_in / groups) × kernel area; the bias is not counted.
  -- ConvTranspose goes through the same function in thop 0.1.1 (output elements × C_in / groups × k²).
  return y:numel() * (x:size(2) // m.groups) * m.kernel_size[1] * m.kernel_size[2]
end

local function thop_norm(m, x)
  -- count_normalization: 2 per input element, twice that with an affine transform
  local affine = m.affine or m.elementwise_affine
  return 2 * x:numel() * (affine and 2 or 1)
end

local UPSAMPLE_OPS = { nearest = 1, linear = 5, bilinear = 11, bicubic = 259, trilinear = 31 }

--- {class, name, rule} for every nn class thop 0.1.1 registers (the others count 0).
M.THOP_RULES = {
  { nn.Conv2d, "Conv2d", thop_conv },
  { nn.ConvTranspose2d, "ConvTranspose2d", thop_conv },
  { nn.BatchNorm2d, "BatchNorm2d", thop_norm },
  { nn.InstanceNorm2d, "InstanceNorm2d", thop_norm },
  { nn.LayerNorm, "LayerNorm", thop_norm },
  -- count_linear: in_features per output element
  { nn.Linear, "Linear", function(m, _, y) return m.in_features * y:numel() end },
  -- count_softmax: per row of nfeatures, nf exps + (nf - 1) adds + nf divisions
  { nn.Softmax, "Softmax", function(m, x)
    local nf = x:size(m.dim)
    return (x:numel() // nf) * (3 * nf - 1)
  end },
  -- count_avgpool: one per output element
  { nn.AvgPool2d, "AvgPool2d", function(_, _, y) return y:numel() end },
  -- calculate_upsample: output elements × 1 (nearest), 5 (linear), 11 (bilinear), ...
  { nn.Upsample, "Upsample", function(m, _, y) return y:numel() * (UPSAMPLE_OPS[m.mode] or 0) end },
  -- zero_ops
  { nn.ReLU, "ReLU", function() return 0 end },
  { nn.MaxPool2d, "MaxPool2d", function() return 0 end },
  { nn.Dropout, "Dropout", function() return 0 end },
  { nn.Sequential, "Sequential", function() return 0 end },
}

local thop_rule_of = {}
for _, r in ipairs(M.THOP_RULES) do thop_rule_of[r[1]] = r end

local function is_leaf(m)
  return #m:children() == 0
end

--- thop_macs(model, inputs) -> {total=, by_type = {Conv2d = n, ...}, by_child = {name = n},
-- calls = {Conv2d = k, ...}, uncounted = {SiLU = k, ...}, version=}: thop 0.1.1's count of one
-- forward (eval mode, no_grad). Every call of a registered module adds (a module called 4 times,
-- as in an RK4 step, counts 4 times, as thop's hooks do). uncounted lists the leaf classes thop has
-- no rule for, with their call counts.
function M.thop_macs(model, inputs)
  local args, n = args_of(inputs)
  local res = { total = 0, by_type = {}, by_child = {}, calls = {}, uncounted = {}, version = M.THOP_VERSION }
  local wrapped = {}
  for name, m in model:named_modules() do
    local rule = thop_rule_of[class.of(m)]
    if rule or is_leaf(m) then
      local original, own = m.forward, rawget(m, "forward")
      local type_name = rule and rule[2] or class.name(m)
      local child = top_name(name)
      rawset(m, "forward", function(self, x, ...)
        local y = original(self, x, ...)
        if rule then
          local ops = rule[3](self, x, y)
          res.total = res.total + ops
          res.by_type[type_name] = (res.by_type[type_name] or 0) + ops
          res.by_child[child] = (res.by_child[child] or 0) + ops
          res.calls[type_name] = (res.calls[type_name] or 0) + 1
        else
          res.uncounted[type_name] = (res.uncounted[type_name] or 0) + 1
        end
        return y
      end)
      wrapped[#wrapped + 1] = { m, own }
    end
  end
  local ok, err = pcall(eval_no_grad, model, function() model(table.unpack(args, 1, n)) end)
  for _, w in ipairs(wrapped) do rawset(w[1], "forward", w[2]) end
  if not ok then error(err, 0) end
  return res
end

-- ---- the fuller count -------------------------------------------------------------------------------
-- A rule is fn(out, a1, a2, ...) -> macs, flops for an engine op called as op(a1, a2, ...) (a
-- method call passes the tensor as a1). A MAC is one multiply-add and counts 2 FLOPs; other
-- elementwise work counts per element as listed in docs/efficiency.md; a transcendental function
-- (exp, log, sqrt, sin, tanh, ...) counts 1.

local function elementwise(per_element)
  return function(out) return 0, per_element * numel(out) end
end

local function inplace(per_element)
  return function(_, self) return 0, per_element * numel(self) end
end

local function per_input(per_element)
  return function(_, x) return 0, per_element * numel(x) end
end

local function zero() return 0, 0 end

-- a norm: statistics 3 per element (Σx, Σx²), normalising 2 (subtract, scale), affine 2
local function norm_cost(x, weight)
  return 0, (5 + (core.is_tensor(weight) and 2 or 0)) * numel(x)
end

-- stage-combination MACs per state element and step of each solver: the nonzero Butcher
-- coefficients a_ij and b_i (and the error estimate's e_i for the adaptive ones)
M.SOLVER_MACS = { euler = 1, midpoint = 2, heun = 3, rk4 = 7, rk4_38 = 10, bosh3 = 9, dopri5 = 26 }

local function state_numel(z)
  if core.is_tensor(z) then return z:numel() end
  local s = 0
  for _, t in ipairs(z) do s = s + numel(t) end
  return s
end

--- The fuller count's rules, by op name (engine functions and tensor methods of that name).
M.FULL_RULES = {
  conv2d = function(out, _, w, b)
    local macs = numel(out) * w:size(2) * w:size(3) * w:size(4)
    return macs, 2 * macs + (core.is_tensor(b) and numel(out) or 0)
  end,
  conv_transpose2d = function(out, x, w, b)
    local macs = numel(x) * w:size(2) * w:size(3) * w:size(4)
    return macs, 2 * macs + (core.is_tensor(b) and numel(out) or 0)
  end,
  linear = function(out, _, w, b)
    local macs = numel(out) * w:size(2)
    return macs, 2 * macs + (core.is_tensor(b) and numel(out) or 0)
  end,
  matmul = function(out, a)
    local macs = math.max(numel(out), 1) * a:size(-1)
    return macs, 2 * macs
  end,
  scaled_dot_product_attention = function(_, q, k, v, opts)
    local L, d, S, dv = q:size(-2), q:size(-1), k:size(-2), v:size(-1)
    local batch = q:numel() // (L * d)
    local scores = batch * L * S
    local macs = scores * (d + dv)
    -- scaling 1, (mask 1), softmax 5 per score
    return macs, 2 * macs + scores * (6 + ((opts and opts.mask) and 1 or 0))
  end,
  -- elementwise, per output element
  add = elementwise(1), sub = elementwise(1), mul = elementwise(1), div = elementwise(1),
  pow = elementwise(1), maximum = elementwise(1), minimum = elementwise(1), where = elementwise(1),
  eq = elementwise(1), ne = elementwise(1), lt = elementwise(1), le = elementwise(1), gt = elementwise(1),
  ge = elementwise(1), neg = elementwise(1), abs = elementwise(1), sign = elementwise(1),
  square = elementwise(1), reciprocal = elementwise(1), floor = elementwise(1), ceil = elementwise(1),
  round = elementwise(1), clamp = elementwise(1), relu = elementwise(1),
  exp = elementwise(1), log = elementwise(1), sqrt = elementwise(1), rsqrt = elementwise(1),
  sin = elementwise(1), cos = elementwise(1), tanh = elementwise(1),
  sigmoid = elementwise(3),  -- 1 / (1 + exp(-x))
  silu = elementwise(4),     -- x / (1 + exp(-x))
  softplus = elementwise(3), -- log(1 + exp(x))
  gelu = elementwise(5),     -- x · (1 + erf(x / √2)) / 2
  add_ = inplace(1), sub_ = inplace(1), mul_ = inplace(1), div_ = inplace(1),
  dropout = function(out, _, _, training) return 0, training and numel(out) or 0 end,
  -- norms, per input element
  group_norm = function(_, x, _, w, _, _, activation) -- fused "silu": its 4 per element too
    local macs, flops = norm_cost(x, w)
    return macs, flops + (activation == "silu" and 4 * numel(x) or 0)
  end,
  instance_norm = function(_, x, w) return norm_cost(x, w) end,
  layer_norm = function(_, x, _, w) return norm_cost(x, w) end,
  batch_norm = function(_, x, _, _, w, _, opts)
    if opts and opts.training then return norm_cost(x, w) end
    return 0, (2 + (core.is_tensor(w) and 2 or 0)) * numel(x) -- running statistics: subtract, scale
  end,
  -- softmax: max, subtract, exp, sum, divide per element
  softmax = per_input(5), log_softmax = per_input(5),
  -- reductions, per input element
  sum = per_input(1), mean = per_input(1), var = per_input(3), std = per_input(3), norm = per_input(2),
  max = per_input(1), min = per_input(1), argmax = per_input(1), argmin = per_input(1),
  -- pooling and resampling, per output element
  avg_pool2d = function(out, _, kernel)
    local k = type(kernel) == "table" and kernel[1] * kernel[2] or kernel * kernel
    return 0, k * numel(out)
  end,
  max_pool2d = function(out, _, kernel)
    local k = type(kernel) == "table" and kernel[1] * kernel[2] or kernel * kernel
    return 0, (k - 1) * numel(out)
  end,
  adaptive_avg_pool2d = function(out, x) return 0, numel(x) + numel(out) end,
  upsample = function(out, _, opts)
    -- nearest copies; bilinear weighs 4 neighbours: 4 multiplies + 3 adds
    if opts and opts.mode == "bilinear" then return 0, 7 * numel(out) end
    return 0, 0
  end,
  -- data movement: no arithmetic (listed so that the report shows the calls)
  cat = zero, stack = zero, pad = zero, index_select = zero, embedding = zero, clone = zero,
  contiguous = zero, copy_ = zero,
}
M.FULL_RULES.interpolate = M.FULL_RULES.upsample

-- operators: the tensor metatable's arithmetic metamethods
local OPERATORS = { __add = "add", __sub = "sub", __mul = "mul", __div = "div", __pow = "pow", __unm = "neg" }

--- count_ops(model, inputs) -> {macs=, flops=, by_op = {name = {calls=, macs=, flops=}}}: every
-- engine op one forward calls (eval mode, no_grad), by op name; op "odeint" holds the solvers'
-- stage combinations (the dynamics' own ops are counted under their names).
function M.count_ops(model, inputs)
  local args, n = args_of(inputs)
  local res = { macs = 0, flops = 0, by_op = {} }
  local depth = 0
  local function record(name, macs, flops)
    local e = res.by_op[name]
    if not e then
      e = { calls = 0, macs = 0, flops = 0 }
      res.by_op[name] = e
    end
    e.calls, e.macs, e.flops = e.calls + 1, e.macs + macs, e.flops + flops
    res.macs, res.flops = res.macs + macs, res.flops + flops
  end
  local function wrap(name, fn, rule)
    return function(...)
      if depth > 0 then return fn(...) end
      depth = depth + 1
      local r = table.pack(pcall(fn, ...))
      depth = depth - 1
      if not r[1] then error(r[2], 0) end
      record(name, rule(r[2], ...))
      return table.unpack(r, 2, r.n)
    end
  end
  -- odeint calls back into Lua: transparent (the dynamics' ops count), plus the stage combinations
  local function wrap_odeint(fn)
    return function(f, z0, ts, opts)
      local sol, stats = fn(f, z0, ts, opts)
      local method = (opts and opts.method) or "dopri5"
      local steps = stats and ((stats.accepted or 0) + (stats.rejected or 0)) or 0
      local macs = steps * state_numel(z0) * (M.SOLVER_MACS[method] or 0)
      record("odeint", macs, 2 * macs)
      return sol, stats
    end
  end
  local saved = {}
  local function patch(tbl, key, value)
    saved[#saved + 1] = { tbl, key, rawget(tbl, key) }
    rawset(tbl, key, value)
  end
  local Tensor = core.Tensor
  local methods = Tensor.__methods
  for _, tbl in ipairs { cn, core, methods } do
    for name, rule in pairs(M.FULL_RULES) do
      local fn = rawget(tbl, name)
      if type(fn) == "function" then patch(tbl, name, wrap(name, fn, rule)) end
    end
  end
  patch(core, "odeint", wrap_odeint(core.odeint))
  for meta, name in pairs(OPERATORS) do
    local fn = rawget(Tensor, meta)
    if fn then patch(Tensor, meta, wrap(name, fn, M.FULL_RULES[name])) end
  end
  local ok, err = pcall(eval_no_grad, model, function() model(table.unpack(args, 1, n)) end)
  for i = #saved, 1, -1 do rawset(saved[i][1], saved[i][2], saved[i][3]) end
  if not ok then error(err, 0) end
  return res
end

-- ---- memory and time --------------------------------------------------------------------------------

local function collect()
  collectgarbage("collect")
  collectgarbage("collect")
end

--- peak_memory(model, inputs [, {train=false}]) -> {peak=, base=, activations=} in bytes of tensor
-- storage (cn.memory): inference is one forward under no_grad in eval mode; train = true is one
-- training step's forward and backward (train mode, loss = mean(out²)), gradients included.
-- base is what was live before (parameters, inputs, anything else alive); activations = peak − base.
-- The parameters' gradients are dropped before and after.
function M.peak_memory(model, inputs, opts)
  opts = options.check(opts, {"train"}, "peak_memory")
  local args, n = args_of(inputs)
  local was_training = {}
  for _, m in ipairs(model:modules()) do was_training[m] = m.training end
  model:zero_grad()
  collect()
  local base = core.memory().live
  core.reset_peak()
  local ok, err = pcall(function()
    if opts.train then
      model:train()
      local out = model(table.unpack(args, 1, n))
      local loss = out:square():mean()
      loss:backward()
    else
      model:eval()
      core.no_grad(function() return model(table.unpack(args, 1, n)) end)
    end
  end)
  local peak = core.memory().peak
  for m, mode in pairs(was_training) do rawset(m, "training", mode) end
  model:zero_grad()
  collect()
  if not ok then error(err, 0) end
  return { peak = peak, base = base, activations = peak - base }
end

--- time_forward(model, inputs [, {repeats=5, warmup=1}]) -> median seconds of one forward (eval mode,
-- no_grad), and the list of all timings.
function M.time_forward(model, inputs, opts)
  opts = options.check(opts, {"repeats", "warmup"}, "time_forward")
  local args, n = args_of(inputs)
  local repeats, warmup = opts.repeats or 5, opts.warmup or 1
  local times = {}
  eval_no_grad(model, function()
    for i = 1, warmup + repeats do
      local t0 = core.time()
      model(table.unpack(args, 1, n))
      if i > warmup then times[#times + 1] = core.time() - t0 end
    end
  end)
  local sorted = { table.unpack(times) }
  table.sort(sorted)
  local k = #sorted
  local median = k == 0 and 0 / 0 or (k % 2 == 1 and sorted[(k + 1) // 2] or (sorted[k // 2] + sorted[k // 2 + 1]) / 2)
  return median, times
end

-- ---- one model, everything --------------------------------------------------------------------------

--- profile(model, make_inputs [, opts]) -> {params=, thop=, full=, memory = {inference=, train=},
-- seconds=}. make_inputs(batch) returns the argument list; the MAC counts use batch 1 (as the
-- paper's thop count), memory and time opts.batch (1). opts: batch, repeats (5), memory (true),
-- time (true), full (true).
function M.profile(model, make_inputs, opts)
  opts = options.check(opts, {"batch", "repeats", "memory", "time", "full"}, "efficiency.profile")
  local batch = opts.batch or 1
  local out = { params = M.parameters(model), batch = batch }
  out.thop = M.thop_macs(model, make_inputs(1))
  if opts.full ~= false then out.full = M.count_ops(model, make_inputs(1)) end
  if opts.memory ~= false then
    out.memory = {
      inference = M.peak_memory(model, make_inputs(batch)),
      train = M.peak_memory(model, make_inputs(batch), { train = true }),
    }
  end
  if opts.time ~= false then out.seconds = M.time_forward(model, make_inputs(batch), { repeats = opts.repeats or 5 }) end
  return out
end

-- ---- formatting -------------------------------------------------------------------------------------

--- "7,206,256,640"
function M.commas(n)
  local s = string.format("%d", math.floor(n + 0.5))
  local sign, digits = s:match("^(-?)(%d+)$")
  return sign .. digits:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", "")
end

--- A table of rows (lists of strings) with a header, columns right-aligned except the first.
function M.format_table(header, rows)
  local widths = {}
  for _, row in ipairs { header, table.unpack(rows) } do
    for i, cell in ipairs(row) do widths[i] = math.max(widths[i] or 0, utf8.len(cell) or #cell) end
  end
  local function line(row)
    local cells = {}
    for i, cell in ipairs(row) do
      local pad = string.rep(" ", widths[i] - (utf8.len(cell) or #cell))
      cells[i] = i == 1 and cell .. pad or pad .. cell
    end
    return table.concat(cells, "  ")
  end
  local out = { line(header) }
  local rule = {}
  for i, w in ipairs(widths) do rule[i] = string.rep("-", w) end
  out[#out + 1] = table.concat(rule, "  ")
  for _, row in ipairs(rows) do out[#out + 1] = line(row) end
  return table.concat(out, "\n")
end

--- The fuller count as a table: op, calls, MACs, FLOPs, share of the FLOPs; biggest first.
function M.format_ops(full)
  local names = {}
  for name in pairs(full.by_op) do names[#names + 1] = name end
  table.sort(names, function(a, b)
    local fa, fb = full.by_op[a].flops, full.by_op[b].flops
    if fa ~= fb then return fa > fb end
    return a < b
  end)
  local rows = {}
  for _, name in ipairs(names) do
    local e = full.by_op[name]
    rows[#rows + 1] = { name, M.commas(e.calls), M.commas(e.macs), M.commas(e.flops),
      string.format("%.2f%%", full.flops > 0 and 100 * e.flops / full.flops or 0) }
  end
  rows[#rows + 1] = { "total", "", M.commas(full.macs), M.commas(full.flops), "100.00%" }
  return M.format_table({ "op", "calls", "MACs", "FLOPs", "share" }, rows)
end

return M
