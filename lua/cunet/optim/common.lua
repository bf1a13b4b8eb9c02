-- cunet.optim.common — helpers shared by the optimisers, the EMA and clipping: parameter lists,
-- option tables with defaults, argument checks, and scalars serialised for safetensors headers.

local core = require "cunet.core"
local options = require "cunet.options"

local M = {}

local is_tensor = core.is_tensor

local function shape_str(shape) return "[" .. table.concat(shape, ", ") .. "]" end

local function fail(fname, fmt, ...)
  error(fname .. ": " .. string.format(fmt, ...), 0)
end

--- The parameters of `params` as a list: a tensor, a list of tensors, or anything with a
-- :parameters() method (a list, or a name -> tensor table, taken in name order).
local function collect_params(params, fname, allow_frozen)
  if is_tensor(params) then params = {params} end
  if type(params) == "table" and type(params.parameters) == "function" then params = params:parameters() end
  if type(params) ~= "table" then
    fail(fname, "params must be a tensor, a list of tensors or an object with :parameters(), got %s", type(params))
  end
  local list = {}
  if #params > 0 then
    for i = 1, #params do list[i] = params[i] end
  else
    local names = {}
    for name in pairs(params) do names[#names + 1] = name end
    table.sort(names, function(a, b) return tostring(a) < tostring(b) end)
    for i, name in ipairs(names) do list[i] = params[name] end
  end
  if #list == 0 then fail(fname, "got an empty parameter list") end
  local seen = {}
  for i, p in ipairs(list) do
    if not is_tensor(p) then fail(fname, "parameter %d is a %s, not a tensor", i, type(p)) end
    if not allow_frozen then
      if not p:requires_grad() then
        fail(fname, "parameter %d (shape %s) does not require grad; call p:requires_grad(true) or leave it out",
          i, shape_str(p:shape()))
      end
      if not p.is_leaf then
        fail(fname, "parameter %d (shape %s) is not a leaf (it was computed by '%s'); optimise the leaf it came from",
          i, shape_str(p:shape()), p.grad_fn)
      end
    end
    if seen[p] then fail(fname, "parameter %d appears twice in the list", i) end
    seen[p] = true
  end
  return list
end

-- Options: every key must be known; defaults fill the rest.
local function with_defaults(fname, opts, defaults)
  return options.merge(opts, defaults, fname, 0)
end

local function check_number(fname, what, v, ok, rule)
  if type(v) ~= "number" or v ~= v or not ok(v) then
    fail(fname, "invalid %s %s (%s)", what, tostring(v), rule)
  end
end
local function nonneg(v) return v >= 0 end

-- Serialises scalars as strings, so the table can go straight into a safetensors header.
local function to_scalar_string(v)
  if type(v) == "boolean" then return tostring(v) end
  if math.type(v) == "integer" then return string.format("%d", v) end
  for digits = 15, 16 do -- the shortest form that reads back exactly
    local s = string.format("%." .. digits .. "g", v)
    if tonumber(s) == v then return s end
  end
  return string.format("%.17g", v)
end

local function from_scalar(fname, scalars, key, kind)
  local v = scalars[key]
  if v == nil then fail(fname, "scalars lack '%s'", key) end
  if kind == "boolean" then
    if type(v) == "boolean" then return v end
    if v == "true" then return true elseif v == "false" then return false end
    fail(fname, "scalar '%s' should be a boolean, got %s", key, tostring(v))
  end
  local n = tonumber(v)
  if not n then fail(fname, "scalar '%s' should be a number, got %s", key, tostring(v)) end
  if kind == "integer" then
    n = math.tointeger(n)
    if not n then fail(fname, "scalar '%s' should be an integer, got %s", key, tostring(v)) end
  end
  return n
end

M.collect_params, M.with_defaults, M.check_number, M.nonneg = collect_params, with_defaults, check_number, nonneg
M.fail, M.shape_str, M.to_scalar_string, M.from_scalar = fail, shape_str, to_scalar_string, from_scalar

return M
