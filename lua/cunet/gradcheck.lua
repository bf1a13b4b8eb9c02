-- gradcheck — compares autograd gradients with central finite differences, to first and second
-- order.
--
--   cn.gradcheck(function(x, w) return (x:matmul(w)):tanh() end, {x, w}, {eps = 1e-3})
--   cn.gradgradcheck(function(x, w) return (x:matmul(w)):tanh() end, {x, w})
--
-- gradcheck: the function's output y is reduced to L = sum(y * v) with a fixed random v, so one
-- backward gives every input's gradient; each checked element is perturbed by ±eps and
-- (L(x+eps) - L(x-eps)) / 2eps compared with the analytic value: |a - n| <= atol + rtol * |n|.
-- gradgradcheck: the same for the second order. With G(x) = d sum(y * u) / dx (first-order
-- gradients) and fixed random directions w, the Hessian-vector product d sum_j <G_j, w_j> / dx
-- that create_graph gives is compared with (<G(x+eps), w> - <G(x-eps), w>) / 2eps.
-- Everything is float32, so the defaults (eps 1e-3, rtol 1e-2, atol 1e-3) are looser than
-- PyTorch's float64 gradcheck; exactness is the job of the PyTorch fixture tests.

local core = require "cunet.core"
local options = require "cunet.options"

local function flat(t) return t:totable{flat = true} end

local function dot(y, v)
  local s = 0
  for i = 1, #y do s = s + y[i] * v[i] end
  return s
end

local KEYS = {"eps", "rtol", "atol", "max_elements", "seed"}

-- The shared comparison: for each input k and picked element i, analytic[k][i] against
-- (value() at x + eps - value() at x - eps) / 2eps. Raises naming `who`, the input and element.
local function compare(who, inputs, analytic, value, opts)
  local eps, rtol, atol = opts.eps or 1e-3, opts.rtol or 1e-2, opts.atol or 1e-3
  local max_elements = opts.max_elements or 64
  local worst = 0
  for k, x in ipairs(inputs) do
    local n = x:numel()
    local picks = {}
    if n <= max_elements then
      for i = 1, n do picks[i] = i end
    else
      local perm = flat(core.randperm(n))
      for i = 1, max_elements do picks[i] = perm[i] end
    end
    local base = x:detach() -- shares storage: perturb the input in place, outside the graph
    local shape = x:shape()
    for _, i in ipairs(picks) do
      local idx, rem = {}, i - 1
      for d = #shape, 1, -1 do
        idx[d] = rem % shape[d] + 1
        rem = rem // shape[d]
      end
      local orig = base:get(idx)
      base:set(idx, orig + eps)
      local plus = value()
      base:set(idx, orig - eps)
      local minus = value()
      base:set(idx, orig)
      local numeric = (plus - minus) / (2 * eps)
      local err = math.abs(analytic[k][i] - numeric)
      worst = math.max(worst, err / (atol + rtol * math.abs(numeric)))
      if err > atol + rtol * math.abs(numeric) then
        error(string.format("%s: input %d, element {%s}: analytic %.6g vs numeric %.6g (|diff| %.3g > atol %g + rtol %g * |numeric|)",
          who, k, table.concat(idx, ", "), analytic[k][i], numeric, err, atol, rtol), 0)
      end
    end
  end
  return worst
end

-- Runs body() with the rng seeded by opts.seed, restoring the caller's rng state afterwards
-- (also when body raises); an error is raised again at the caller's caller (level 3).
local function seeded(opts, body)
  local saved_rng = core.rng_state()
  core.seed(opts.seed or 1234)
  local ok, a, b = pcall(body)
  core.set_rng_state(saved_rng)
  if not ok then error(a, 3) end
  return a, b
end

--- Returns true and the worst error ratio, or raises an error naming the input, the element and
-- both values. opts: eps, rtol, atol, max_elements (per input; a seeded random subset beyond it), seed.
local function gradcheck(fn, inputs, opts)
  opts = options.check(opts, KEYS, "gradcheck")
  return seeded(opts, function()
    for _, x in ipairs(inputs) do x:requires_grad(true) end
    local y = fn(table.unpack(inputs))
    assert(core.is_tensor(y), "gradcheck: the function must return a tensor")
    local v = core.randn_like(y)
    local vflat = flat(v)
    local grads = core.autograd_grad((y * v):sum(), inputs, nil, {allow_unused = true})
    local analytic = {}
    for k, g in ipairs(grads) do analytic[k] = flat(g) end
    local worst = compare("gradcheck", inputs, analytic, function()
      return dot(flat(core.no_grad(fn, table.unpack(inputs))), vflat)
    end, opts)
    return true, worst
  end)
end

--- The second-order check (create_graph): as gradcheck, with the same options.
local function gradgradcheck(fn, inputs, opts)
  opts = options.check(opts, KEYS, "gradgradcheck")
  return seeded(opts, function()
    for _, x in ipairs(inputs) do x:requires_grad(true) end
    local y = fn(table.unpack(inputs))
    assert(core.is_tensor(y), "gradgradcheck: the function must return a tensor")
    local u = core.randn_like(y)
    local grads = core.autograd_grad(y, inputs, u, {create_graph = true, allow_unused = true})
    local directions, wflat, total = {}, {}, nil
    for k, g in ipairs(grads) do
      directions[k] = core.randn_like(g)
      wflat[k] = flat(directions[k])
      local term = (g * directions[k]):sum()
      total = total and total + term or term
    end
    local hvps = core.autograd_grad(total, inputs, nil, {allow_unused = true})
    local analytic = {}
    for k, h in ipairs(hvps) do analytic[k] = flat(h) end
    local worst = compare("gradgradcheck", inputs, analytic, function()
      local out = fn(table.unpack(inputs))
      local gs = core.autograd_grad(out, inputs, u, {allow_unused = true})
      local s = 0
      for k, g in ipairs(gs) do s = s + dot(flat(g), wflat[k]) end
      return s
    end, opts)
    return true, worst
  end)
end

return {gradcheck = gradcheck, gradgradcheck = gradgradcheck}
