-- cunet.repl — how the REPL (cli/main.c) shows a value: a plain table as Lua source, not as an
-- address.
--
--   local pretty = require("cunet.repl").pretty
--   pretty({2, 3})                          --> {2, 3}
--   pretty({peak = 2048, live = 1024})      --> {live = 1024, peak = 2048}
--   pretty({a = {b = {c = {d = 1}}}})       --> {a = {b = {c = {…}}}}
--
-- A value with a __tostring (a tensor, a module: the tree) prints through it, as print would; a
-- string at the top prints as it is, and quoted inside a table. Keys come sorted: the list part
-- first, then numbers, then names. Tables deeper than `depth` (3), and entries beyond `items` (50)
-- in one table or beyond `total` (100) in the whole value, are cut with `…`; a table inside itself
-- prints as `<cycle>`. A result wider than `width` (100) goes on several lines, indented. The
-- limits are `M.settings`.

local M = {}

M.settings = { depth = 3, items = 50, total = 100, width = 100 }

local function is_identifier(k)
  return type(k) == "string" and k:match("^[%a_][%w_]*$") ~= nil and not ({
    ["and"] = 1, ["break"] = 1, ["do"] = 1, ["else"] = 1, ["elseif"] = 1, ["end"] = 1, ["false"] = 1,
    ["for"] = 1, ["function"] = 1, ["goto"] = 1, ["if"] = 1, ["in"] = 1, ["local"] = 1, ["nil"] = 1,
    ["not"] = 1, ["or"] = 1, ["repeat"] = 1, ["return"] = 1, ["then"] = 1, ["true"] = 1, ["until"] = 1,
    ["while"] = 1,
  })[k]
end

local function quote(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    local named = { ["\n"] = "\\n", ["\t"] = "\\t", ["\r"] = "\\r", ['"'] = '\\"', ["\\"] = "\\\\" }
    return named[c] or string.format("\\%03d", c:byte())
  end) .. '"'
end

-- The metatable's __tostring, read raw (getmetatable may be guarded by __metatable).
local function has_tostring(v)
  local mt = debug.getmetatable(v)
  return mt ~= nil and rawget(mt, "__tostring") ~= nil
end

-- Keys in a stable order: numbers before strings before the rest, each group sorted.
local function key_less(a, b)
  local ta, tb = type(a), type(b)
  local ra = ta == "number" and 1 or ta == "string" and 2 or 3
  local rb = tb == "number" and 1 or tb == "string" and 2 or 3
  if ra ~= rb then return ra < rb end
  if ra == 3 then return tostring(a) < tostring(b) end
  return a < b
end

local format

-- A short form of a value that prints on several lines (a tensor, a module tree) inside a table.
local function inline(v)
  local s = tostring(v)
  local first = s:match("^[^\n]*")
  if first == s then return s end
  local shape = s:match("shape=%[[^%]]*%]")
  if shape then return "tensor(" .. shape .. ")" end
  return first:gsub("%($", "") .. "(…)"
end

local function format_table(t, o, level, seen, indent)
  if seen[t] then return "<cycle>" end
  if level > o.depth then return next(t) == nil and "{}" or "{…}" end
  seen[t] = true
  local n = #t
  local keys = {}
  for i = 1, n do keys[i] = i end
  local named = {}
  for k in next, t do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then named[#named + 1] = k end
  end
  table.sort(named, key_less)
  for _, k in ipairs(named) do keys[#keys + 1] = k end
  -- at most `items` entries here, and `total` in the whole value
  local shown = math.min(#keys, o.items, math.max(o.left, 0))
  o.left = o.left - shown
  local parts = {}
  for i = 1, shown do
    local k = keys[i]
    local value = format(rawget(t, k), o, level + 1, seen, indent .. "  ")
    if i <= n then
      parts[i] = value
    else
      local name = is_identifier(k) and k or "[" .. format(k, o, o.depth + 1, seen, indent) .. "]"
      parts[i] = name .. " = " .. value
    end
  end
  seen[t] = nil
  if shown < #keys then parts[#parts + 1] = string.format("… (%d more)", #keys - shown) end
  local mt = debug.getmetatable(t)
  local prefix = mt and type(rawget(mt, "__name")) == "string" and rawget(mt, "__name") .. " " or ""
  local one = prefix .. "{" .. table.concat(parts, ", ") .. "}"
  if #one + #indent <= o.width and not one:find("\n") then return one end
  -- several lines: entries filled up to the width, a multi-line entry on lines of its own
  local lines, line = {}, nil
  for i, part in ipairs(parts) do
    local item = part .. (i < #parts and "," or "")
    if line and not part:find("\n") and not line:find("\n") and #indent + 2 + #line + 1 + #item <= o.width then
      line = line .. " " .. item
    else
      lines[#lines + 1] = line
      line = item
    end
  end
  lines[#lines + 1] = line
  return prefix .. "{\n" .. indent .. "  " .. table.concat(lines, "\n" .. indent .. "  ") .. "\n" .. indent .. "}"
end

function format(v, o, level, seen, indent)
  local tv = type(v)
  if tv == "string" then return quote(v) end
  if tv == "table" and not has_tostring(v) then return format_table(v, o, level, seen, indent) end
  return inline(v)
end

--- pretty(v) -> the string the REPL prints for v, cut at M.settings (depth, items, total, width),
-- which a session may change: require("cunet.repl").settings.depth = 5.
function M.pretty(v)
  local o = {}
  for k, x in pairs(M.settings) do o[k] = x end
  o.left = o.total
  if type(v) == "table" and not has_tostring(v) then return format_table(v, o, 1, {}, "") end
  return tostring(v)
end

return M
