-- gradcheck — compares autograd gradients with central finite differences.
--
--   cn.gradcheck(function(x, w) return (x:matmul(w)):tanh() end, {x, w}, {eps = 1e-3})
--
-- The function's output y is reduced to L = sum(y * v) with a fixed random v, so one backward
-- gives every input's gradient; each checked element is perturbed by ±eps and
-- (L(x+eps) - L(x-eps)) / 2eps compared with the analytic value: |a - n| <= atol + rtol * |n|.
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

--- Returns true, or raises an error naming the input, the element and both values.
-- opts: eps, rtol, atol, max_elements (per input; a seeded random subset beyond it), seed.
local function gradcheck(fn, inputs, opts)
  opts = options.check(opts, {"eps", "rtol", "atol", "max_elements", "seed"}, "gradcheck")
  local eps, rtol, atol = opts.eps or 1e-3, opts.rtol or 1e-2, opts.atol or 1e-3
  local max_elements = opts.max_elements or 64
  local saved_rng = core.rng_state()
  core.seed(opts.seed or 1234)
  for _, x in ipairs(inputs) do x:requires_grad(true) end
  local y = fn(table.unpack(inputs))
  assert(core.is_tensor(y), "gradcheck: the function must return a tensor")
  local v = core.randn_like(y)
  local vflat = flat(v)
  local loss = (y * v):sum()
  local grads = core.autograd_grad(loss, inputs, nil, {allow_unused = true})
  local function numeric_loss()
    local out = core.no_grad(fn, table.unpack(inputs))
    return dot(flat(out), vflat)
  end
  local worst = 0
  for k, x in ipairs(inputs) do
    local analytic = flat(grads[k])
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
      local plus = numeric_loss()
      base:set(idx, orig - eps)
      local minus = numeric_loss()
      base:set(idx, orig)
      local numeric = (plus - minus) / (2 * eps)
      local err = math.abs(analytic[i] - numeric)
      worst = math.max(worst, err / (atol + rtol * math.abs(numeric)))
      if err > atol + rtol * math.abs(numeric) then
        core.set_rng_state(saved_rng)
        error(string.format("gradcheck: input %d, element {%s}: analytic %.6g vs numeric %.6g (|diff| %.3g > atol %g + rtol %g * |numeric|)",
          k, table.concat(idx, ", "), analytic[i], numeric, err, atol, rtol), 2)
      end
    end
  end
  core.set_rng_state(saved_rng)
  return true, worst
end

return gradcheck
