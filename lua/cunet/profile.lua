-- cunet.profile — where a run's time goes, op by op (docs/benchmarks.md, "Profiling").
--
--   local result = cn.profile(function() model(x, t) end)            -- prints the table
--   local result = cn.profile(fn, {print = false, sort = "total"})   -- result.rows, result:table()
--   CUNET_PROFILE=1 ./cunet script.lua                                -- the whole script, on stderr
--
-- Every op of the engine is timed as it is called from Lua (its name as in Lua: conv2d, group_norm,
-- mul, ...), and every backward step of the autograd tape under the op's name with phase
-- "backward". A row: calls, total ms (with the ops nested inside it: an ODE solve's right-hand
-- side), self ms (without), % of the run's wall time (self), and GFLOP/s of its matrix products
-- (2·m·n·k for every GEMM the op runs: convolutions, linear layers, attention, matmul) over its
-- self time. Self times add up to the wall time less the time spent in Lua between ops, which the
-- last row ("lua and untimed") shows, so the column of % sums to 100. Like torch.profiler's
-- key_averages().

local core = require "cunet.core"
local util = require "cunet.nn.util"

local M = {}

M.defaults = { print = true, sort = "self", limit = 40, out = false }
local SORT_KEYS = { self = "self_s", total = "total_s", calls = "calls", name = "name" }

local Result = {}
Result.__index = Result

local function ms(s) return string.format("%.2f", s * 1e3) end

--- result:table([limit]) -> the report as text: one row per op and phase, the biggest first.
function Result:table(limit)
  limit = limit or #self.rows
  local lines = {}
  local header = string.format("%-28s %-8s %8s %11s %11s %7s %9s", "op", "phase", "calls", "total ms", "self ms",
    "self %", "GFLOP/s")
  lines[#lines + 1] = header
  lines[#lines + 1] = string.rep("-", #header)
  local shown_self = 0
  for i, r in ipairs(self.rows) do
    if i > limit then break end
    shown_self = shown_self + r.self_s
    local gf = (r.flops > 0 and r.self_s > 0) and string.format("%.1f", r.flops / r.self_s * 1e-9) or ""
    lines[#lines + 1] = string.format("%-28s %-8s %8d %11s %11s %6.1f%% %9s", r.name, r.phase, r.calls, ms(r.total_s),
      ms(r.self_s), 100 * r.self_s / self.wall_s, gf)
  end
  local rest = self.ops_self_s - shown_self
  if #self.rows > limit then
    lines[#lines + 1] = string.format("%-28s %-8s %8s %11s %11s %6.1f%%", string.format("(%d more ops)", #self.rows - limit),
      "", "", "", ms(rest), 100 * rest / self.wall_s)
  end
  local lua = self.wall_s - self.ops_self_s
  lines[#lines + 1] = string.format("%-28s %-8s %8s %11s %11s %6.1f%%", "lua and untimed", "", "", "", ms(lua),
    100 * lua / self.wall_s)
  lines[#lines + 1] = string.rep("-", #header)
  local flops = 0
  for _, r in ipairs(self.rows) do flops = flops + r.flops end
  lines[#lines + 1] = string.format("wall %s ms; ops %s ms (self); %.2f GFLOP in matrix products, %.1f GFLOP/s over the wall time",
    ms(self.wall_s), ms(self.ops_self_s), flops * 1e-9, flops * 1e-9 / self.wall_s)
  return table.concat(lines, "\n")
end

local function sorted_rows(sort)
  local key = SORT_KEYS[sort]
  local rows = core.profile_entries()
  table.sort(rows, function(a, b)
    if key == "name" then
      if a.name ~= b.name then return a.name < b.name end
      return a.phase > b.phase
    end
    if a[key] ~= b[key] then return a[key] > b[key] end
    if a.name ~= b.name then return a.name < b.name end
    return a.phase > b.phase
  end)
  return rows
end

local function make_result(wall_s, sort)
  local rows = sorted_rows(sort)
  local ops_self = 0
  for _, r in ipairs(rows) do ops_self = ops_self + r.self_s end
  return setmetatable({ rows = rows, wall_s = wall_s, ops_self_s = ops_self }, Result)
end

local function check(opts, who)
  local o = util.options(opts, M.defaults, who, 4)
  if not SORT_KEYS[o.sort] then
    error(string.format("%s: sort must be 'self', 'total', 'calls' or 'name', got %s", who, tostring(o.sort)), 4)
  end
  if math.type(o.limit) ~= "integer" or o.limit < 1 then
    error(string.format("%s: limit must be a positive integer, got %s", who, tostring(o.limit)), 4)
  end
  return o
end

local active = false

--- cn.profile(fn [, opts], ...) -> result, fn's results...: runs fn(...) with the profiler on.
-- opts (M.defaults): print (the table to opts.out or stdout), sort ("self" | "total" | "calls" |
-- "name"), limit (rows printed), out (a file handle, default io.stdout). result.rows: {name,
-- phase, calls, total_s, self_s, flops}; result.wall_s; result:table([limit]). An error in fn
-- switches the profiler off and propagates. Profiles do not nest.
function M.profile(fn, opts, ...)
  if type(fn) ~= "function" and not (type(fn) == "table" and getmetatable(fn) and getmetatable(fn).__call) then
    error("profile: expected a function to run, got " .. type(fn), 2)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error("profile: options must be a table, got " .. type(opts), 2)
  end
  local o = check(opts, "profile")
  if active then error("profile: a profile is already running (profiles do not nest)", 2) end
  active = true
  core.profile_reset()
  core.profile_enable(true)
  local t0 = core.time()
  local packed = table.pack(pcall(fn, ...))
  local wall = core.time() - t0
  core.profile_enable(false)
  active = false
  if not packed[1] then error(packed[2], 0) end
  local result = make_result(wall, o.sort)
  core.profile_reset()
  if o.print then
    local out = o.out or io.stdout
    out:write(result:table(o.limit), "\n")
  end
  return result, table.unpack(packed, 2, packed.n)
end

-- CUNET_PROFILE=1 ./cunet script.lua: ./cunet calls start() before the script and finish() after
-- it (also when it fails), which prints the table on stderr.
local env_start

function M.start()
  if active then return end
  active = true
  core.profile_reset()
  core.profile_enable(true)
  env_start = core.time()
end

function M.finish()
  if not env_start then return end
  local wall = core.time() - env_start
  core.profile_enable(false)
  active, env_start = false, nil
  local result = make_result(wall, "self")
  core.profile_reset()
  io.stderr:write("CUNET_PROFILE: the whole script\n", result:table(M.defaults.limit), "\n")
  return result
end

return M
