-- test_profile.lua — cn.profile (lua/cunet/profile.lua, engine/profile.c, engine/lua/l_profile.c):
-- op names and call counts, forward and backward rows, GEMM FLOPs, self times that add up to the
-- wall time, nesting (an ODE solve's right-hand side), errors, options, and CUNET_PROFILE=1.
local lu = require "luaunit"
local helpers = require "helpers"
local cn = require "cunet"

local function row(result, name, phase)
  for _, r in ipairs(result.rows) do
    if r.name == name and r.phase == (phase or "forward") then return r end
  end
  return nil
end

local assert_error = helpers.assert_error

TestProfile = {}

function TestProfile:testNamesCountsAndPhases()
  cn.seed(1)
  local x = cn.randn { 4, 3, 8, 8 }:requires_grad(true)
  local w = cn.randn { 5, 3, 3, 3 }:requires_grad(true)
  local result = cn.profile(function()
    for _ = 1, 3 do
      local y = cn.conv2d(x, w, { padding = 1 })
      local loss = (y:relu() * 2):sum()
      loss:backward()
    end
  end, { print = false })
  lu.assertEquals(row(result, "conv2d").calls, 3)
  lu.assertEquals(row(result, "relu").calls, 3)
  lu.assertEquals(row(result, "mul").calls, 3) -- the metamethod __mul, named without "__"
  lu.assertEquals(row(result, "sum").calls, 3)
  lu.assertEquals(row(result, "backward").calls, 3)
  lu.assertEquals(row(result, "conv2d", "backward").calls, 3)
  lu.assertNotNil(row(result, "unary", "backward"))
  -- the conv's FLOPs: 2·N·O·C·kH·kW·H·W per forward, whichever route ran it
  lu.assertEquals(row(result, "conv2d").flops, 3 * 2 * 4 * 5 * 3 * 9 * 64)
  lu.assertTrue(row(result, "conv2d", "backward").flops > 0)
  for _, r in ipairs(result.rows) do
    lu.assertTrue(r.self_s >= 0 and r.self_s <= r.total_s + 1e-9, r.name)
  end
  x.grad, w.grad = nil, nil
end

-- Self times plus the time between ops add up to the wall time; with a workload of real ops the
-- ops' self times alone are within 10% of it.
function TestProfile:testTimesAddUpToTheWallTime()
  cn.seed(2)
  local a, b = cn.randn { 256, 256 }, cn.randn { 256, 256 }
  local t0 = cn.time()
  local result = cn.profile(function()
    local c
    for _ = 1, 20 do c = cn.matmul(a, b):tanh() + a end
    return c
  end, { print = false })
  local outside = cn.time() - t0
  local self = 0
  for _, r in ipairs(result.rows) do self = self + r.self_s end
  lu.assertTrue(result.wall_s <= outside)
  lu.assertAlmostEquals(self, result.ops_self_s, 1e-12)
  lu.assertTrue(self <= result.wall_s * 1.0001)
  lu.assertTrue(self >= 0.9 * result.wall_s, string.format("ops %.4f s of wall %.4f s", self, result.wall_s))
  lu.assertEquals(row(result, "matmul").calls, 20)
  lu.assertEquals(row(result, "matmul").flops, 20 * 2 * 256 ^ 3)
end

-- An op that calls back into Lua (odeint) holds its right-hand side's ops: total includes them,
-- self does not.
function TestProfile:testNesting()
  local z0 = cn.randn { 64, 64 }
  local m = cn.randn { 64, 64 } * 0.01
  local result = cn.profile(function()
    return cn.odeint(function(_, z) return cn.matmul(z, m):tanh() end, z0, { 0, 1 }, { method = "rk4", steps = 4 })
  end, { print = false })
  local ode, mm = row(result, "odeint"), row(result, "matmul")
  lu.assertEquals(ode.calls, 1)
  lu.assertEquals(mm.calls, 16)
  lu.assertTrue(ode.total_s >= ode.self_s + mm.total_s * 0.999)
  lu.assertEquals(ode.flops, 0) -- the products are the matmul rows' own
end

function TestProfile:testResultsAndReport()
  local out = {}
  local sink = { write = function(_, ...) for _, s in ipairs { ... } do out[#out + 1] = s end end }
  local result, a, b = cn.profile(function(p, q) return cn.ones { 3 } * p, q end, { out = sink, sort = "calls" }, 2, "x")
  lu.assertEquals(a:totable(), { 2, 2, 2 })
  lu.assertEquals(b, "x")
  local text = table.concat(out)
  lu.assertStrContains(text, "self ms")
  lu.assertStrContains(text, "ones")
  lu.assertStrContains(text, "lua and untimed")
  lu.assertStrContains(result:table(), "wall")
end

function TestProfile:testErrorsAndOptions()
  assert_error(function() cn.profile(function() end, { sortt = "self" }) end, "unknown option 'sortt'")
  assert_error(function() cn.profile(function() end, { sort = "flops" }) end, "sort must be")
  assert_error(function() cn.profile(42) end, "expected a function")
  assert_error(function() cn.profile(function() cn.profile(function() end) end, { print = false }) end,
    "already running")
  -- an error inside switches the profiler off and propagates; the next profile starts clean
  assert_error(function() cn.profile(function() return cn.zeros { 2 } + cn.zeros { 3 } end, { print = false }) end,
    "cannot broadcast")
  local result = cn.profile(function() cn.zeros { 2 } end, { print = false })
  lu.assertNil(row(result, "add"))
  lu.assertEquals(row(result, "zeros").calls, 1)
end

function TestProfile:testEnvironmentVariable()
  local exe = os.getenv("CUNET_EXE") or "./cunet"
  local script = os.tmpname()
  local f = assert(io.open(script, "w"))
  f:write('local cn = require "cunet"\nfor _ = 1, 5 do cn.ones{4} end\n')
  f:close()
  local p = io.popen("CUNET_PROFILE=1 " .. exe .. " " .. script .. " 2>&1")
  local text = p:read("a")
  p:close()
  os.remove(script)
  lu.assertStrContains(text, "CUNET_PROFILE")
  lu.assertTrue(text:match("ones%s+forward%s+5%s") ~= nil, text)
end

-- examples/profile_model.lua runs and prints the table of a model's ops.
function TestProfile:testProfileModelExample()
  local exe = os.getenv("CUNET_EXE") or "./cunet"
  local p = io.popen(exe .. " examples/profile_model.lua --batch 2 --iters 1 --mode train --limit 5 2>&1")
  local text = p:read("a")
  local ok = p:close()
  lu.assertTrue(ok, text)
  lu.assertStrContains(text, "cU-Net `mnist_small`, training step, batch 2")
  lu.assertTrue(text:match("conv2d%s+backward%s+%d+") ~= nil, text)
  lu.assertStrContains(text, "ms per iteration")
end
