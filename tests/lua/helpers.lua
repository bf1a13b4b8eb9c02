-- tests/lua/helpers.lua — the helpers the Lua test files share (tests/lua/run.lua puts tests/lua on
-- package.path, as for fixture_check):
--
--   local helpers = require "helpers"
--   local assert_error, max_abs_diff = helpers.assert_error, helpers.max_abs_diff
--   local err = assert_error(function() cn.zeros{-1} end, "zeros", "-1")   -- the message, checked
--   local dir = helpers.temp_dir()   ...   helpers.remove_dir(dir)          -- in setUp / tearDown

local lu = require "luaunit"
local fs = require "cunet.fs"

local M = {}

--- The repository root ($CUNET_ROOT, else found from this file's path: tests/lua/../..).
function M.root()
  local env = os.getenv("CUNET_ROOT")
  if env and env ~= "" then return env end
  local source = debug.getinfo(1, "S").source
  local dir = source:sub(1, 1) == "@" and source:sub(2):match("^(.*)[/\\]") or "."
  return dir .. "/../.."
end

--- assert_error([label,] fn, fragment...): calls fn and asserts that it raises an error whose message
-- holds every fragment (plain text, case sensitive); the label (a string before fn) names the case in
-- a failure. Returns the message as a string.
function M.assert_error(label, fn, ...)
  local fragments
  if type(label) == "string" then
    fragments = { ... }
  else
    label, fn, fragments = nil, label, { fn, ... }
  end
  local ok, err = pcall(fn)
  lu.assertFalse(ok, (label and label .. ": " or "") .. "expected an error")
  err = tostring(err)
  for _, piece in ipairs(fragments) do
    lu.assertStrContains(err, piece, false, label)
  end
  return err
end

--- The largest absolute difference between two tensors of the same shape.
function M.max_abs_diff(a, b)
  return (a - b):abs():max():item()
end

--- The bytes of the file at path. A missing or unreadable file raises, unless a default is given
-- (then that is returned instead, e.g. "" for a log that may not exist).
function M.read_file(path, default)
  local f, err = io.open(path, "rb")
  if not f then
    if default ~= nil then return default end
    error("cannot read " .. tostring(err), 2)
  end
  local s = f:read("a")
  f:close()
  return s
end

--- Writes bytes to the file at path (a test's input; raises on failure).
function M.write_file(path, bytes)
  local f = assert(io.open(path, "wb"))
  f:write(bytes)
  f:close()
end

--- A fresh name under /tmp (os.tmpname's) for a file or a directory a test makes; nothing is there.
function M.temp_path()
  local path = os.tmpname()
  os.remove(path)
  return path
end

--- A new empty directory under /tmp; remove it with remove_dir.
function M.temp_dir()
  local path = M.temp_path()
  assert(fs.mkdir_p(path))
  return path
end

--- Removes path and everything under it; only a path under /tmp (what temp_path made), so a test
-- that went wrong cannot remove anything else. Nil is ignored (a setUp that failed early).
function M.remove_dir(path)
  if path == nil then return end
  if type(path) ~= "string" or not path:match("^/tmp/.") then
    error("helpers.remove_dir: refusing a path outside /tmp: " .. tostring(path), 2)
  end
  os.execute("rm -rf " .. fs.shell_quote(path))
end

--- s quoted for sh (fs.shell_quote).
M.shell_quote = fs.shell_quote

--- run_script(script, args) -> exit code (0 on success), output: `$CUNET_EXE script args` (default
-- ./cunet) with stderr joined to stdout; args is shell text.
function M.run_script(script, args)
  local p = io.popen(string.format("%s %s %s 2>&1", os.getenv("CUNET_EXE") or "./cunet", script, args))
  local out = p:read("a")
  local ok, _, code = p:close()
  return ok and 0 or code, out
end

--- The losses of a training run's loss.csv: {step -> loss}.
function M.csv_losses(path)
  local out = {}
  for line in io.lines(path) do
    local step, loss = line:match("^(%d+),([^,]+),")
    if step then out[tonumber(step)] = tonumber(loss) end
  end
  return out
end

return M
