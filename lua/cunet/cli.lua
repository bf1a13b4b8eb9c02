-- cli — command-line options for recipes, with --help.
--
--   local args = cli.parse(arg, {
--     usage = "cunet recipes/train_unet.lua [options]",
--     description = "Train a DDPM U-Net.",
--     options = {
--       {"data", "mnist", "dataset: mnist | fashion-mnist | folder:PATH"},
--       {"steps", 2000, "training steps"},
--       {"resume", nil, "checkpoint to resume from", type = "string"},
--       {"flip", false, "random horizontal flips"},
--       {"n", 16, "number of samples", integer = true, min = 1},
--       {"sampler", "ddim", "ddim | ddpm", choices = {"ddim", "ddpm"}},
--     },
--   })
--   print(args.steps)            -- "--batch-size" is read as args.batch_size
--
-- Types come from the default (number, string, boolean) or `type`; booleans are flags
-- (--flip, --no-flip, --flip=false). Constraints on an option: integer = true, min, max (numbers),
-- choices (strings); they are checked as the command line is read, before a recipe loads anything.
-- --help prints the options and exits 0; a bad option prints one line naming the problem and exits 2.
-- After parse, an error of the recipe prints as one line too, without the Lua traceback
-- (M.short_errors, read by the cunet executable; CUNET_TRACEBACK=1 brings the traceback back).

local options = require "cunet.options"

local M = {}

local SPEC_KEYS = {"type", "integer", "min", "max", "choices"}

local function key_of(name) return (name:gsub("-", "_")) end

local function kind_of(spec)
  return spec.type or (spec[2] == nil and "string") or type(spec[2])
end

-- "integer >= 1", "one of ddim, ddpm": an option's constraints for --help and messages ("" when none).
local function constraint_text(o, with_choices)
  local parts = {}
  if o.choices and with_choices ~= false then parts[#parts + 1] = "one of " .. table.concat(o.choices, ", ") end
  local what = o.integer and "integer" or "number"
  if o.min and o.max then parts[#parts + 1] = string.format("%s in %s..%s", what, tostring(o.min), tostring(o.max))
  elseif o.min then parts[#parts + 1] = string.format("%s >= %s", what, tostring(o.min))
  elseif o.max then parts[#parts + 1] = string.format("%s <= %s", what, tostring(o.max))
  elseif o.integer then parts[#parts + 1] = "integer" end
  return table.concat(parts, "; ")
end

--- The help text of a spec.
function M.help(spec)
  local lines = {}
  if spec.usage then lines[#lines + 1] = "usage: " .. spec.usage end
  if spec.description then lines[#lines + 1] = "\n" .. spec.description end
  lines[#lines + 1] = "\noptions:"
  for _, o in ipairs(spec.options) do
    local kind = kind_of(o)
    local flag = "  --" .. o[1] .. (kind == "boolean" and "" or " " .. (o.integer and "INTEGER" or kind:upper()))
    local default = o[2] == nil and "" or string.format(" (default: %s)", tostring(o[2]))
    local rule = constraint_text(o, false) -- the choices are in the description already
    lines[#lines + 1] = string.format("%-28s %s%s%s", flag, o[3] or "", default, rule ~= "" and " [" .. rule .. "]" or "")
  end
  lines[#lines + 1] = string.format("%-28s %s", "  --help", "show this help and exit")
  if spec.epilog then lines[#lines + 1] = "\n" .. spec.epilog end
  return table.concat(lines, "\n")
end

--- Reports a command-line error of the recipe described by spec as one line on stderr and exits 2.
function M.fail(spec, msg)
  io.stderr:write((spec.name or "cunet") .. ": " .. msg .. " (--help lists the options)\n")
  os.exit(2)
end
local fail = M.fail

-- Checks the constraints of option o on its value v (a converted command-line value).
local function check_value(spec, o, v)
  if o.choices then
    local ok = false
    for _, c in ipairs(o.choices) do ok = ok or c == v end
    if not ok then fail(spec, string.format("--%s must be one of %s, got '%s'", o[1], table.concat(o.choices, ", "), tostring(v))) end
  end
  if type(v) ~= "number" then return v end
  if v ~= v or (o.integer and not math.tointeger(v)) or (o.min and v < o.min) or (o.max and v > o.max) then
    local rule = constraint_text(o)
    rule = rule == "" and "number" or rule
    fail(spec, string.format("--%s must be %s %s, got %s", o[1], rule:match("^[aeiou]") and "an" or "a", rule, tostring(v)))
  end
  return o.integer and math.tointeger(v) or v
end

-- Raises (a programming error in the recipe) for a malformed option spec.
local function check_spec(o)
  if type(o) ~= "table" or type(o[1]) ~= "string" then error("cli: an option spec is {name, default, help, ...}", 4) end
  for k in pairs(o) do
    local known = math.type(k) == "integer" and k >= 1 and k <= 3
    for _, name in ipairs(SPEC_KEYS) do known = known or k == name end
    if not known then
      error(string.format("cli: option --%s has an unknown field '%s' (known: %s)", o[1], tostring(k),
        table.concat(SPEC_KEYS, ", ")), 4)
    end
  end
  local kind = kind_of(o)
  if (o.integer or o.min or o.max) and kind ~= "number" then error("cli: --" .. o[1] .. ": integer/min/max need a number option", 4) end
  if o.choices and kind ~= "string" then error("cli: --" .. o[1] .. ": choices need a string option", 4) end
end

local function convert(spec, o, text)
  local kind = kind_of(o)
  if kind == "number" then
    local v = tonumber(text)
    if not v then fail(spec, string.format("--%s expects a number, got '%s'", o[1], text)) end
    return check_value(spec, o, v)
  elseif kind == "boolean" then
    if text == "true" or text == "1" or text == "yes" then return true end
    if text == "false" or text == "0" or text == "no" then return false end
    fail(spec, string.format("--%s expects true or false, got '%s'", o[1], text))
  end
  return check_value(spec, o, text)
end

--- Parses argv (the global `arg`) against spec; returns a table of values (defaults filled in)
-- and the list of positional arguments in args._positional.
function M.parse(argv, spec)
  options.check(spec, {"name", "usage", "description", "options", "epilog", "positional"}, "cli.parse")
  local by_name, out = {}, { _positional = {} }
  M.short_errors = true
  for _, o in ipairs(spec.options) do
    check_spec(o)
    by_name[o[1]] = o
    out[key_of(o[1])] = o[2]
  end
  local i = 1
  while argv and i <= #argv do
    local a = argv[i]
    if a == "--help" or a == "-h" then
      print(M.help(spec))
      os.exit(0)
    end
    local name, value = a:match("^%-%-([%w%-_]+)=(.*)$")
    if not name then name = a:match("^%-%-([%w%-_]+)$") end
    if name then
      local o = by_name[name]
      local negated = false
      if not o and name:sub(1, 3) == "no-" and by_name[name:sub(4)] and kind_of(by_name[name:sub(4)]) == "boolean" then
        o, negated = by_name[name:sub(4)], true
      end
      if not o then fail(spec, "unknown option --" .. name) end
      if kind_of(o) == "boolean" and value == nil then
        out[key_of(o[1])] = not negated
      else
        if value == nil then
          i = i + 1
          value = argv[i]
          if value == nil then fail(spec, "--" .. name .. " needs a value") end
        end
        out[key_of(o[1])] = convert(spec, o, value)
      end
    else
      out._positional[#out._positional + 1] = a
    end
    i = i + 1
  end
  if #out._positional > 0 and not spec.positional then
    fail(spec, "unexpected argument '" .. out._positional[1] .. "'")
  end
  return out
end

return M
