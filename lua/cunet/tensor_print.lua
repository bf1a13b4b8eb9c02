-- tensor_print — PyTorch-style text for tensors:
--
--   tensor([[ 0.1940,  2.1614, -0.1721],
--           [ 0.8491, -1.9244,  0.6530]], shape=[2, 3])
--
-- Same rules as torch._tensor_str: integers print as "1.", fixed 4 decimals unless the range of
-- magnitudes calls for scientific notation, big tensors summarised with "..." (3 edge items).

local check_options = require("cunet.options").check

local M = {}

local options = { precision = 4, threshold = 1000, edgeitems = 3, linewidth = 80, sci_mode = nil }

--- Changes print options: precision, threshold, edgeitems, linewidth, sci_mode (true/false/nil).
function M.set_printoptions(opts)
  check_options(opts, {"precision", "threshold", "edgeitems", "linewidth", "sci_mode"}, "set_printoptions")
  for k, v in pairs(opts) do options[k] = v end
end

local function is_finite(v) return v == v and v ~= math.huge and v ~= -math.huge end

local function format_special(v)
  if v ~= v then return "nan" end
  if v == math.huge then return "inf" end
  if v == -math.huge then return "-inf" end
end

-- Chooses how to print the given values (torch._tensor_str._Formatter): returns a function
-- number -> string, already padded to the common width.
local function make_formatter(values)
  local int_mode, max_abs, min_abs, any = true, 0, math.huge, false
  for _, v in ipairs(values) do
    if is_finite(v) and v ~= 0 then
      any = true
      local a = math.abs(v)
      if a > max_abs then max_abs = a end
      if a < min_abs then min_abs = a end
      if v ~= math.floor(v) then int_mode = false end
    end
  end
  local precision = options.precision
  local sci = false
  if options.sci_mode ~= nil then
    sci = options.sci_mode
  elseif any then
    sci = max_abs / min_abs > 1000 or max_abs > 1e8 or (not int_mode and min_abs < 1e-4)
  end
  local raw
  if sci then
    local f = "%." .. precision .. "e"
    raw = function(v) return format_special(v) or string.format(f, v) end
  elseif int_mode then
    raw = function(v) return format_special(v) or string.format("%.0f.", v) end
  else
    local f = "%." .. precision .. "f"
    raw = function(v) return format_special(v) or string.format(f, v) end
  end
  -- the width comes from the finite non-zero values only, as in torch
  local width = 1
  for _, v in ipairs(values) do
    if is_finite(v) and v ~= 0 then width = math.max(width, #raw(v)) end
  end
  return function(v)
    local text = raw(v)
    return string.rep(" ", width - #text) .. text
  end, width
end

-- Indices kept along a dim of `size` (all, or the first and last edgeitems with a gap marker 0).
local function kept_indices(size, summarize)
  local e = options.edgeitems
  local idx = {}
  if summarize and size > 2 * e then
    for i = 1, e do idx[#idx + 1] = i end
    idx[#idx + 1] = 0
    for i = size - e + 1, size do idx[#idx + 1] = i end
  else
    for i = 1, size do idx[i] = i end
  end
  return idx
end

-- Gathers the printed values (summarised views) into a nested structure of numbers / "..." gaps.
local function gather(t, shape, summarize)
  local ndim = #shape
  local pos, values = {}, {}
  local function walk(d)
    local node = {}
    for _, i in ipairs(kept_indices(shape[d], summarize)) do
      if i == 0 then
        node[#node + 1] = false
      else
        pos[d] = i
        if d == ndim then
          local v = t:get(pos)
          values[#values + 1] = v
          node[#node + 1] = v
        else
          node[#node + 1] = walk(d + 1)
        end
      end
    end
    return node
  end
  return walk(1), values
end

local function render(node, depth, ndim, indent, fmt, width)
  if depth == ndim then
    local per_line = math.max(1, math.floor((options.linewidth - indent) / (width + 2)))
    local parts, line = {}, {}
    for _, v in ipairs(node) do
      line[#line + 1] = v == false and " ..." or fmt(v)
      if #line == per_line then
        parts[#parts + 1] = table.concat(line, ", ")
        line = {}
      end
    end
    if #line > 0 then parts[#parts + 1] = table.concat(line, ", ") end
    return "[" .. table.concat(parts, ",\n" .. string.rep(" ", indent + 1)) .. "]"
  end
  local rows = {}
  local sep = "," .. string.rep("\n", ndim - depth) .. string.rep(" ", indent + 1)
  for _, child in ipairs(node) do
    rows[#rows + 1] = child == false and "..." or render(child, depth + 1, ndim, indent + 1, fmt, width)
  end
  return "[" .. table.concat(rows, sep) .. "]"
end

local function shape_str(shape)
  return "[" .. table.concat(shape, ", ") .. "]"
end

--- tostring(t): PyTorch-style text with the shape appended.
function M.tostring(t)
  local ok, shape = pcall(t.shape, t)
  if not ok then return "tensor(<freed>)" end
  local prefix = "tensor("
  if #shape == 0 then
    local v = t:item()
    local fmt = make_formatter({ v })
    return prefix .. fmt(v) .. ")"
  end
  local numel = t:numel()
  if numel == 0 then return prefix .. "[], shape=" .. shape_str(shape) .. ")" end
  local summarize = numel > options.threshold
  local node, values = gather(t, shape, summarize)
  local fmt, width = make_formatter(values)
  return prefix .. render(node, 1, #shape, #prefix, fmt, width) .. ", shape=" .. shape_str(shape) .. ")"
end

return M
