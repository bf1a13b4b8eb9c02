-- bench/bench.lua — the cunet side of `make bench` (bench/run.sh runs it; bench/bench_torch.py is
-- the same work in PyTorch, case for case).
--
--   ./cunet bench/bench.lua [out.tsv]                      -- the lone-op rows (keys lone/...)
--   BENCH_PART=model ./cunet bench/bench.lua [out.tsv]     -- the whole models (keys model/..., bench/models.lua)
--
-- Lone ops: every case builds its inputs and parameters, runs a few warm-up iterations, then times
-- each of the next iterations: the forward pass alone (grad mode on, so the tape is recorded as in
-- training), then y:backward(g) alone with a fixed random g of y's shape. Gradients are dropped
-- and the Lua GC run between iterations, outside the timed regions. A case reports the median of
-- its timed iterations (at least BENCH_REPS, more for cases that take under ~0.3 s). Warm-up:
-- BENCH_WARMUP iterations (2), or one for a case whose iteration takes over 0.5 s. The lone-op
-- part runs on BENCH_THREADS threads.
--
-- Whole models: cunet as shipped (its own thread count and wait policy; no set_num_threads). First
-- the SGEMM peak (cn.matmul of two 2048² matrices, best of 5), then per model of bench/models.lua
-- its multiply-accumulates per sample (efficiency.count_ops) and its cases: "fwd" times
-- model(x, t) in eval mode under no_grad; "train" times, in train mode, loss = mse(model(x, t), ε)
-- (the forward) then loss:backward() and one Adam step (the backward); the row's time is the
-- median of their sums. x, ε and t (random in 1..T) are drawn once per case. Repetitions as for
-- the lone ops, except that a case whose iteration takes over 1 s gets BENCH_SLOW_REPS (3).
--
-- Output: one tab-separated line per case, "RESULT key op shape fwd_ms bwd_ms" ("-" for a part
-- a case does not time) for lone ops, "MODEL key label case shape ms fwd_ms bwd_ms macs params
-- trainable" for whole models, plus "INFO name value" lines; to the file named by the first
-- argument, stdout otherwise. Progress goes to stderr.
--
-- Environment: BENCH_PART (lone | model), BENCH_THREADS (2) threads for OpenMP and OpenBLAS in the
-- lone-op part, BENCH_REPS (5) minimum timed iterations, BENCH_SLOW_REPS (3) for cases over 1 s,
-- BENCH_WARMUP (2), BENCH_FILTER (only the cases whose key contains this string, or one of several
-- separated by commas), BENCH_MIN_TIME (0.3 s of timed work per case before it stops at BENCH_REPS).

local cn = require "cunet"
local nn = cn.nn

local THREADS = tonumber(os.getenv("BENCH_THREADS") or "") or 2
local REPS = tonumber(os.getenv("BENCH_REPS") or "") or 5
local WARMUP = tonumber(os.getenv("BENCH_WARMUP") or "") or 2
local MIN_TIME = tonumber(os.getenv("BENCH_MIN_TIME") or "") or 0.3
local SLOW_REPS = tonumber(os.getenv("BENCH_SLOW_REPS") or "") or 3
local MAX_REPS = 50
local SLOW = 0.5 -- seconds per iteration above which one warm-up iteration is enough
local VERY_SLOW = 1.0 -- seconds per iteration above which SLOW_REPS timed iterations are enough
local FILTER = os.getenv("BENCH_FILTER")
local PART = os.getenv("BENCH_PART") or "lone"
if PART ~= "lone" and PART ~= "model" then
  error(string.format("bench: BENCH_PART must be 'lone' or 'model', got '%s'", PART))
end

-- the lone ops run on BENCH_THREADS threads; the whole models as cunet ships (its own defaults)
if PART == "lone" then cn.set_num_threads(THREADS) end
cn.seed(0)

local out = io.stdout
if arg and arg[1] then out = assert(io.open(arg[1], "w")) end

local omp_threads, blas_threads = cn.num_threads()
out:write(string.format("INFO\tcunet_threads\tOpenMP %d, OpenBLAS %d\n", omp_threads, blas_threads))
out:write(string.format("INFO\tcunet_version\t%s\n", tostring(cn.version)))

-- ---- measurement -------------------------------------------------------------------------------

local function median(xs)
  local s = {}
  for i, x in ipairs(xs) do s[i] = x end
  table.sort(s)
  local n = #s
  if n == 0 then return nil end
  if n % 2 == 1 then return s[(n + 1) // 2] end
  return (s[n // 2] + s[n // 2 + 1]) / 2
end

local function drop_grads(tensors)
  for _, t in ipairs(tensors) do t.grad = nil end
end

-- Runs one case. spec.forward() returns the output (or a loss); spec.backward(y) runs its
-- backward (default y:backward(g) with a fixed g); spec.after() runs untimed after each iteration
-- (default: drop the gradients of spec.grads); with spec.slow_reps, a case whose iteration takes
-- over 1 s gets SLOW_REPS timed iterations. Returns median fwd, bwd in ms (bwd nil when
-- spec.forward_only) and the median of the iterations' fwd + bwd.
local function measure(spec)
  local g
  local function backward(y)
    if spec.backward then return spec.backward(y) end
    g = g or cn.randn_like(y)
    y:backward(g)
  end
  local function after()
    if spec.after then spec.after() else drop_grads(spec.grads or {}) end
    collectgarbage()
  end
  local function once()
    local t0 = cn.time()
    local y = spec.forward()
    local t1 = cn.time()
    local tb = 0
    if not spec.forward_only then
      backward(y)
      tb = cn.time() - t1
    end
    y = nil -- luacheck: ignore
    after()
    return t1 - t0, tb
  end
  -- warm-up: one iteration, and the rest of WARMUP only for cases faster than SLOW seconds
  local f0, b0 = once()
  if f0 + b0 < SLOW then
    for _ = 2, WARMUP do once() end
  end
  -- whole models over VERY_SLOW seconds an iteration: SLOW_REPS timed iterations (the median of 3)
  local reps = (spec.slow_reps and f0 + b0 > VERY_SLOW) and math.min(REPS, SLOW_REPS) or REPS
  local fwd, bwd, total, spent = {}, {}, {}, 0
  while #fwd < MAX_REPS and (#fwd < reps or spent < MIN_TIME) do
    local f, b = once()
    fwd[#fwd + 1], bwd[#bwd + 1], total[#total + 1] = f, b, f + b
    spent = spent + f + b
  end
  return median(fwd) * 1e3, (not spec.forward_only) and median(bwd) * 1e3 or nil, median(total) * 1e3
end

local function fmt(v) return v and string.format("%.4f", v) or "-" end

local function report(key, op, shape, fwd_ms, bwd_ms)
  out:write(string.format("RESULT\t%s\t%s\t%s\t%s\t%s\n", key, op, shape, fmt(fwd_ms), fmt(bwd_ms)))
  out:flush()
  io.stderr:write(string.format("  cunet  %-36s %-24s fwd %9s ms  bwd %9s ms\n", key, shape, fmt(fwd_ms), fmt(bwd_ms)))
end

local cases = {}
local function case(key, fn) cases[#cases + 1] = {key = key, fn = fn} end

-- BENCH_FILTER: a substring of the key, or several separated by commas (any one selects a case)
local function wanted(key)
  if not FILTER or FILTER == "" then return true end
  for term in FILTER:gmatch("[^,]+") do
    if key:find(term, 1, true) then return true end
  end
  return false
end

-- ---- single ops ---------------------------------------------------------------------------------

for _, c in ipairs({32, 64, 128}) do
  for _, hw in ipairs({28, 14}) do
    for _, n in ipairs({1, 64}) do
      local key = string.format("lone/conv3x3/c%d/%d/n%d", c, hw, n)
      case(key, function()
        local conv = nn.Conv2d(c, c, 3, {padding = 1})
        local x = cn.randn{n, c, hw, hw}:requires_grad(true)
        local grads = conv:parameters()
        grads[#grads + 1] = x
        local f, b = measure{forward = function() return conv(x) end, grads = grads}
        report(key, "conv2d 3x3 pad 1", string.format("[%d,%d,%d,%d] %d->%d", n, c, hw, hw, c, c), f, b)
      end)
    end
  end
end

for _, s in ipairs({{64, 64, 28}, {64, 128, 14}}) do
  local n, c, hw = s[1], s[2], s[3]
  local key = string.format("lone/groupnorm/c%d/%d/n%d", c, hw, n)
  case(key, function()
    local gn = nn.GroupNorm(32, c)
    local x = cn.randn{n, c, hw, hw}:requires_grad(true)
    local grads = gn:parameters()
    grads[#grads + 1] = x
    local f, b = measure{forward = function() return gn(x) end, grads = grads}
    report(key, "GroupNorm(32)", string.format("[%d,%d,%d,%d]", n, c, hw, hw), f, b)
  end)
end

for _, hw in ipairs({14, 7}) do
  local key = string.format("lone/attention/c64/%d/n64", hw)
  case(key, function()
    local attn = nn.SelfAttention2d(64)
    local x = cn.randn{64, 64, hw, hw}:requires_grad(true)
    local grads = attn:parameters()
    grads[#grads + 1] = x
    local f, b = measure{forward = function() return attn(x) end, grads = grads}
    report(key, "SelfAttention2d", string.format("[64,64,%d,%d] 1 head", hw, hw), f, b)
  end)
end

case("lone/linear/512/n64", function()
  local lin = nn.Linear(512, 512)
  local x = cn.randn{64, 512}:requires_grad(true)
  local grads = lin:parameters()
  grads[#grads + 1] = x
  local f, b = measure{forward = function() return lin(x) end, grads = grads}
  report("lone/linear/512/n64", "Linear 512->512", "[64,512]", f, b)
end)

-- ---- one training step of a small U-Net ---------------------------------------------------------
-- 1×28² -> conv(1->32) -> [conv-GN-SiLU]×2 (32, 28²) -> down conv s2 (32->64, 14²) ->
-- [conv-GN-SiLU]×2 (64, 14²) -> down conv s2 (64->64, 7²) -> SelfAttention2d(64) at 7² ->
-- up ×2 + conv (64->64, 14²) -> cat skip (128) -> conv-GN-SiLU (128->64) -> up ×2 + conv
-- (64->32, 28²) -> cat skip (64) -> conv-GN-SiLU (64->32) -> conv (32->1); MSE loss; Adam.
-- GroupNorm with 8 groups. The same architecture is written out in bench/bench_torch.py.

local class = nn.class

local ConvGNAct = class("ConvGNAct", nn.Module)
function ConvGNAct:__init(cin, cout)
  nn.Module.__init(self)
  self.conv = nn.Conv2d(cin, cout, 3, {padding = 1})
  self.norm = nn.GroupNorm(8, cout)
end
function ConvGNAct:forward(x) return self.norm(self.conv(x)):silu() end

local SmallUNet = class("SmallUNet", nn.Module)
function SmallUNet:__init()
  nn.Module.__init(self)
  self.inc = nn.Conv2d(1, 32, 3, {padding = 1})
  self.enc1 = nn.Sequential(ConvGNAct(32, 32), ConvGNAct(32, 32))
  self.down1 = nn.Conv2d(32, 64, 3, {stride = 2, padding = 1})
  self.enc2 = nn.Sequential(ConvGNAct(64, 64), ConvGNAct(64, 64))
  self.down2 = nn.Conv2d(64, 64, 3, {stride = 2, padding = 1})
  self.mid = nn.SelfAttention2d(64)
  self.up2 = nn.Sequential(nn.Upsample{scale_factor = 2}, nn.Conv2d(64, 64, 3, {padding = 1}))
  self.dec2 = ConvGNAct(128, 64)
  self.up1 = nn.Sequential(nn.Upsample{scale_factor = 2}, nn.Conv2d(64, 32, 3, {padding = 1}))
  self.dec1 = ConvGNAct(64, 32)
  self.out = nn.Conv2d(32, 1, 3, {padding = 1})
end
function SmallUNet:forward(x)
  local h1 = self.enc1(self.inc(x))              -- 32 × 28²
  local h2 = self.enc2(self.down1(h1))           -- 64 × 14²
  local m = self.mid(self.down2(h2))             -- 64 × 7²
  local u2 = self.dec2(cn.cat({self.up2(m), h2}, 2))
  local u1 = self.dec1(cn.cat({self.up1(u2), h1}, 2))
  return self.out(u1)
end

case("lone/unet_step/n64", function()
  local net = SmallUNet()
  local opt = cn.optim.Adam(net, {lr = 1e-3})
  local x = cn.randn{64, 1, 28, 28}
  local target = cn.randn{64, 1, 28, 28}
  local f, b = measure{
    forward = function() return nn.functional.mse_loss(net(x), target) end,
    backward = function(loss)
      loss:backward()
      opt:step()
    end,
    after = function() opt:zero_grad() end,
  }
  report("lone/unet_step/n64", "U-Net train step (fwd; bwd+Adam)", "[64,1,28,28]", f, b)
end)

-- ---- ODE: RK4 over a conv block -----------------------------------------------------------------
-- dz/dt = softplus(GroupNorm(32, 64)(conv3x3(z))), z [16, 64, 14, 14], t from 0 to 1 in 4 RK4
-- steps (16 evaluations). cn.odeint against the same RK4 written by hand (in Lua here, as tensor
-- ops in PyTorch): k1 = f(t, z), k2 = f(t + h/2, z + h/2 k1), k3 = f(t + h/2, z + h/2 k2),
-- k4 = f(t + h, z + h k3), z += h/6 (k1 + 2 k2 + 2 k3 + k4).

local ODE_STEPS = 4

local function ode_setup()
  local conv = nn.Conv2d(64, 64, 3, {padding = 1})
  local gn = nn.GroupNorm(32, 64)
  local function f(_, z) return cn.softplus(gn(conv(z))) end
  local z0 = cn.randn{16, 64, 14, 14}:requires_grad(true)
  local grads = conv:parameters()
  for _, p in ipairs(gn:parameters()) do grads[#grads + 1] = p end
  grads[#grads + 1] = z0
  return f, z0, grads
end

local function rk4_by_hand(f, z, t0, t1, steps)
  local h = (t1 - t0) / steps
  local t = t0
  for _ = 1, steps do
    local k1 = f(t, z)
    local k2 = f(t + h / 2, z + k1 * (h / 2))
    local k3 = f(t + h / 2, z + k2 * (h / 2))
    local k4 = f(t + h, z + k3 * h)
    z = z + (k1 + k2 * 2 + k3 * 2 + k4) * (h / 6)
    t = t + h
  end
  return z
end

case("lone/ode_rk4/odeint", function()
  local f, z0, grads = ode_setup()
  local fwd, bwd = measure{
    forward = function()
      local sol = cn.odeint(f, z0, {0, 1}, {method = "rk4", steps = ODE_STEPS})
      return sol[2]
    end,
    grads = grads,
  }
  report("lone/ode_rk4/odeint", "RK4 ODE, cn.odeint", "[16,64,14,14] 4 steps", fwd, bwd)
end)

case("lone/ode_rk4/by_hand", function()
  local f, z0, grads = ode_setup()
  local fwd, bwd = measure{forward = function() return rk4_by_hand(f, z0, 0, 1, ODE_STEPS) end, grads = grads}
  report("lone/ode_rk4/by_hand", "RK4 ODE, loop by hand", "[16,64,14,14] 4 steps", fwd, bwd)
end)

case("lone/ode_rk4/odeint_nograd", function()
  local f, z0 = ode_setup()
  local fwd = measure{
    forward = function()
      return cn.no_grad(function() return cn.odeint(f, z0, {0, 1}, {method = "rk4", steps = ODE_STEPS})[2] end)
    end,
    forward_only = true,
  }
  report("lone/ode_rk4/odeint_nograd", "RK4 ODE, cn.odeint, no_grad", "[16,64,14,14] 4 steps", fwd, nil)
end)

case("lone/ode_rk4/by_hand_nograd", function()
  local f, z0 = ode_setup()
  local fwd = measure{
    forward = function() return cn.no_grad(rk4_by_hand, f, z0, 0, 1, ODE_STEPS) end,
    forward_only = true,
  }
  report("lone/ode_rk4/by_hand_nograd", "RK4 ODE, loop by hand, no_grad", "[16,64,14,14] 4 steps", fwd, nil)
end)

-- ---- whole models (bench/models.lua) -----------------------------------------------------------------

-- bench/models.lua sits beside this file
local models = dofile(((arg and arg[0] or ""):match("^(.*)/[^/]*$") or ".") .. "/models.lua")

-- The SGEMM peak the model rows are measured against: cn.matmul (cblas_sgemm) of two 2048²
-- matrices, best of 5, on every thread cunet uses.
local function sgemm_peak()
  local n = 2048
  local a, b = cn.randn { n, n }, cn.randn { n, n }
  local best = math.huge
  for _ = 1, 6 do -- the first run pays for the page faults of the output
    local t0 = cn.time()
    local c = cn.matmul(a, b)
    best = math.min(best, cn.time() - t0)
    c = nil -- luacheck: ignore
    collectgarbage()
  end
  return 2 * n ^ 3 / best / 1e9
end

local function shape_str(batch, shape) return string.format("[%d,%s]", batch, table.concat(shape, ",")) end

-- The cases of one model: the model is built once; its MACs per sample are counted once.
local function model_cases(entry, selected)
  local model = models.build(entry)
  local count = require("cunet.efficiency").parameters(model)
  local macs = models.macs_per_sample(model, entry)
  local T = models.num_timesteps(model)
  local c, h, w = table.unpack(entry.shape)
  for _, cs in ipairs(selected) do
    local n = cs.batch
    local x, target = cn.randn { n, c, h, w }, cn.randn { n, c, h, w }
    local t = cn.randint(1, T + 1, { n })
    local f, b, total
    if cs.mode == "fwd" then
      model:eval()
      f, b, total = measure {
        forward = function() return cn.no_grad(function() return model(x, t) end) end,
        forward_only = true,
        slow_reps = true,
      }
    else
      model:train()
      local params = {}
      for _, p in ipairs(model:parameters()) do
        if p:requires_grad() then params[#params + 1] = p end
      end
      local opt = cn.optim.Adam(params, { lr = 1e-3 })
      f, b, total = measure {
        forward = function() return cn.mse_loss(model(x, t), target) end,
        backward = function(loss)
          loss:backward()
          opt:step()
        end,
        after = function() opt:zero_grad() end,
        slow_reps = true,
      }
    end
    local what = cs.mode == "fwd" and "forward" or "train step"
    out:write(string.format("MODEL\t%s\t%s\t%s\t%s\t%.4f\t%.4f\t%s\t%d\t%d\t%d\n", cs.key, models.label(entry), what,
      shape_str(n, entry.shape), total, f, fmt(b), macs * n, count.total, count.trainable))
    out:flush()
    io.stderr:write(string.format("  cunet  %-36s %-16s %10.2f ms\n", cs.key, shape_str(n, entry.shape), total))
  end
  model = nil -- luacheck: ignore
  collectgarbage()
end

-- ---- run ----------------------------------------------------------------------------------------

if PART == "lone" then
  for _, c in ipairs(cases) do
    if wanted(c.key) then c.fn() end
  end
else
  local todo = {}
  for _, entry in ipairs(models.MODELS) do
    local selected = {}
    for _, cs in ipairs(models.cases(entry)) do
      if wanted(cs.key) then selected[#selected + 1] = cs end
    end
    if #selected > 0 then todo[#todo + 1] = { entry, selected } end
  end
  if #todo > 0 then
    local peak = sgemm_peak()
    out:write(string.format("INFO\tsgemm_gflops\t%.1f\n", peak))
    io.stderr:write(string.format("  cunet  SGEMM 2048^3: %.1f GFLOP/s\n", peak))
    for _, item in ipairs(todo) do model_cases(item[1], item[2]) end
  end
end

if out ~= io.stdout then out:close() end
