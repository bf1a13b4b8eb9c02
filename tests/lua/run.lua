-- tests/lua/run.lua — runs the LuaUnit suites and prints "lua: N passed, N failed[, N skipped]".
--
--   ./cunet tests/lua/run.lua                      -- every tests/lua/test_*.lua
--   ./cunet tests/lua/run.lua tests/lua/test_x.lua [-p pattern] [-v]
--
-- Each test file defines global tables TestXxx with testYyy methods (LuaUnit's convention).
-- Exits non-zero when any test fails or errors.

local lu = require "luaunit"

local here = arg[0]:match("^(.*)/[^/]*$") or "."
package.path = here .. "/?.lua;" .. package.path -- shared test helpers (fixture_check)
local files, passthrough = {}, {}
local i = 1
while i <= #arg do
  local a = arg[i]
  if a:match("%.lua$") then
    files[#files + 1] = a
  else
    passthrough[#passthrough + 1] = a
    if a == "-p" or a == "--pattern" or a == "-x" or a == "--exclude" then
      passthrough[#passthrough + 1] = arg[i + 1]
      i = i + 1
    end
  end
  i = i + 1
end
if #files == 0 then
  local p = io.popen('ls "' .. here .. '"/test_*.lua 2>/dev/null')
  for f in p:lines() do files[#files + 1] = f end
  p:close()
end

-- Each file runs in its own environment, so two files may both define TestGradcheck: the
-- second one is registered as TestGradcheck_<file> instead of silently replacing the first.
for _, f in ipairs(files) do
  local env = setmetatable({}, { __index = _G })
  local chunk, err = loadfile(f, "t", env)
  if not chunk then
    io.stderr:write("cannot load ", f, ": ", err, "\n")
    print("lua: 0 passed, 1 failed")
    os.exit(1)
  end
  chunk()
  local base = f:match("([^/]+)%.lua$") or f
  for name, value in pairs(env) do
    if type(name) == "string" and name:lower():sub(1, 4) == "test" then
      local key = rawget(_G, name) == nil and name or (name .. "_" .. base)
      rawset(_G, key, value)
    end
  end
end

local runner = lu.LuaUnit.new()
-- explicit options: with none, LuaUnit would read the script's own arguments as test names
runner:runSuite("--output", "text", table.unpack(passthrough))
local r = runner.result
local failed = r.notSuccessCount
local passed = r.runCount - failed -- runCount already leaves skipped tests out
local line = string.format("lua: %d passed, %d failed", passed, failed)
if r.skippedCount > 0 then line = line .. string.format(", %d skipped", r.skippedCount) end
print(line)
os.exit(failed == 0 and 0 or 1)
