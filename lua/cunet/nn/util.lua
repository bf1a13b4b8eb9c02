-- nn.util — small helpers shared by the nn modules: option tables, (h, w) pairs, PyTorch-style
-- repr of values, shape strings.

local core = require "cunet.core"
local options = require "cunet.options"

local util = {}

--- Merges a user's options table over a module's defaults (one table per class, the single place
-- where its defaults live) and rejects unknown keys, naming the known ones. A default of `false`
-- stands for PyTorch's None where a nil could not be stored in the table. Errors point at the
-- caller's caller (level 3), or at `level` when a wrapper stands in between.
function util.options(opts, defaults, who, level)
  return options.merge(opts, defaults, who, (level or 3) + 1)
end

--- The number of NaN and infinite elements of t: one reduction when there are none (a sum in double
-- is finite exactly when every element is, unless it overflows float32, which the exact count
-- then sorts out). Outside any graph.
function util.count_nonfinite(t)
  return core.no_grad(function()
    local s = t:sum():item()
    if s == s and s ~= math.huge and s ~= -math.huge then return 0 end
    return math.tointeger(t:ne(t):sum():item() + t:abs():eq(math.huge):sum():item())
  end)
end

--- A number or a {h, w} table -> {h, w} (PyTorch's _pair).
function util.pair(v, what, who)
  if type(v) == "number" then return { v, v } end
  if type(v) == "table" and #v == 2 and type(v[1]) == "number" and type(v[2]) == "number" then
    return { v[1], v[2] }
  end
  error(string.format("%s: %s must be a number or a table of 2 numbers, got %s", who, what,
    type(v) == "table" and util.repr(v) or tostring(v)), 3)
end

--- Checks a positive integer argument.
function util.check_size(v, what, who)
  if math.type(v) ~= "integer" or v <= 0 then
    error(string.format("%s: %s must be a positive integer, got %s", who, what, tostring(v)), 3)
  end
  return v
end

--- A new list holding t's elements 1..#t (a config's lists are copied, never shared).
function util.copy_list(t)
  local out = {}
  for i, v in ipairs(t) do out[i] = v end
  return out
end

--- A value as Python's repr would print it inside PyTorch's extra_repr: True/False, 1e-05, 2.0,
-- tuples "(3, 3)" (a one-element tuple "(64,)"), strings bare (as str.format with {}).
function util.repr(v)
  local t = type(v)
  if t == "boolean" then return v and "True" or "False" end
  if v == nil then return "None" end
  if t == "number" then
    if math.type(v) == "integer" then return tostring(v) end
    if v ~= v then return "nan" end
    if v == math.huge then return "inf" end
    if v == -math.huge then return "-inf" end
    -- shortest digits that round-trip (C's %g), then Python's layout: scientific only when the
    -- decimal exponent is below -4 or from 16 on
    local s
    for digits = 1, 17 do
      s = string.format("%." .. digits .. "g", v)
      if tonumber(s) == v then break end
    end
    local mantissa, exponent = s:match("^(-?[%d.]+)e([-+]%d+)$")
    if mantissa then
      local e = tonumber(exponent)
      if e < -4 or e >= 16 then return s end
      local significant = #mantissa:gsub("[-.]", "")
      s = string.format("%." .. math.max(0, significant - 1 - e) .. "f", v)
    end
    if not s:find("[.]") then s = s .. ".0" end
    return s
  end
  if t == "table" then
    local parts = {}
    for i, e in ipairs(v) do parts[i] = util.repr(e) end
    if #parts == 1 then return "(" .. parts[1] .. ",)" end
    return "(" .. table.concat(parts, ", ") .. ")"
  end
  return tostring(v)
end

--- "[2, 3]" for a tensor or a shape table.
function util.shape_str(x)
  local shape = core.is_tensor(x) and x:shape() or x
  local parts = {}
  for i, s in ipairs(shape) do parts[i] = tostring(s) end
  return "[" .. table.concat(parts, ", ") .. "]"
end

--- Raises unless x is a tensor with ndim dims (ndim may be a table of allowed counts).
function util.check_input(x, ndim, who, what)
  if not core.is_tensor(x) then
    error(string.format("%s: expected a tensor input, got %s", who, type(x)), 3)
  end
  local ok = false
  if type(ndim) == "table" then
    for _, n in ipairs(ndim) do ok = ok or x:dim() == n end
  else
    ok = x:dim() == ndim
  end
  if not ok then
    local want = type(ndim) == "table" and table.concat(ndim, "-D or ") or tostring(ndim)
    error(string.format("%s: expected a %s-D input%s, got shape %s", who, want,
      what and (" (" .. what .. ")") or "", util.shape_str(x)), 3)
  end
end

return util
