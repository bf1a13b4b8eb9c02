-- fs — the few file-system helpers the library shares (Lua's io/os have no stat or mkdir).
--
--   local fs = require "cunet.fs"
--   if fs.exists(path) then ... end
--   local ok, err = fs.mkdir_p("runs/a b/c")        -- like `mkdir -p`, with the path shell-quoted
--   assert(fs.write_atomic("runs/table.csv", text))  -- a temp file renamed over the path
--   local rows, header = fs.read_csv("runs/table.csv") -- {{steps = 10, fid = 41.6, ...}, ...}

local M = {}

--- exists(path) -> true when path can be opened for reading (a file, or a directory on Linux).
function M.exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

--- shell_quote(s) -> s in single quotes, safe as one word in a POSIX shell command.
function M.shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

--- mkdir_p(path) -> true, or nil and a message: creates path and its parents (`mkdir -p`).
function M.mkdir_p(path)
  if M.exists(path .. "/.") then return true end
  local p = io.popen("mkdir -p " .. M.shell_quote(path) .. " 2>&1") -- mkdir's reason goes into the message
  local said = p:read("a")
  if p:close() then return true end
  local why = said:match("[^\n]*: ([^:\n]+)\n?$")
  return nil, string.format("cannot create the directory '%s'%s", path, why and (": " .. why) or "")
end

--- write_atomic(path, text) -> true, or nil and a message: writes text to path.tmp and renames it
-- over path, so a reader never sees half a file.
function M.write_atomic(path, text)
  local tmp = path .. ".tmp"
  local f, err = io.open(tmp, "w")
  if not f then return nil, string.format("cannot write '%s': %s", tmp, tostring(err)) end
  local ok, werr = f:write(text)
  f:close()
  if not ok then
    os.remove(tmp)
    return nil, string.format("cannot write '%s': %s", tmp, tostring(werr))
  end
  local renamed, rerr = os.rename(tmp, path)
  if not renamed then
    os.remove(tmp)
    return nil, string.format("cannot write '%s': %s", path, tostring(rerr))
  end
  return true
end

--- read_csv(path) -> rows, header, or nil and a message: a CSV with a header line and plain fields
-- (commas separate, no quoting: what the recipes write) as rows keyed by the header's names, a field
-- a number when tonumber reads it and the string otherwise (empty fields are ""); blank lines are
-- skipped. The message names the file: unreadable, empty, a repeated column, or a row whose number of
-- fields is not the header's (with its line number).
function M.read_csv(path)
  local f, err = io.open(path, "r")
  if not f then return nil, string.format("cannot read '%s': %s", path, tostring(err)) end
  local header, rows, n = nil, {}, 0
  local function fail(msg)
    f:close()
    return nil, string.format("%s: %s", path, msg)
  end
  for line in f:lines() do
    n = n + 1
    line = line:gsub("\r$", "")
    if line ~= "" then
      local fields = {}
      for field in (line .. ","):gmatch("([^,]*),") do fields[#fields + 1] = field end
      if not header then
        header = fields
        local seen = {}
        for _, name in ipairs(header) do
          if seen[name] then return fail(string.format("column '%s' appears twice in the header", name)) end
          seen[name] = true
        end
      elseif #fields ~= #header then
        return fail(string.format("line %d has %d fields, the header %d", n, #fields, #header))
      else
        local row = {}
        for i, name in ipairs(header) do row[name] = tonumber(fields[i]) or fields[i] end
        rows[#rows + 1] = row
      end
    end
  end
  f:close()
  if not header then return nil, string.format("%s: empty (no header line)", path) end
  return rows, header
end

return M
