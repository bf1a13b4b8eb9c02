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
--     },
--   })
--   print(args.steps)            -- "--batch-size" is read as args.batch_size
--
-- Types come from the default (number, string, boolean) or `type`; booleans are flags
-- (--flip, --no-flip, --flip=false). --help prints the options and exits 0; a bad option
-- prints the problem and the usage and exits 2.

local M = {}

local function key_of(name) return (name:gsub("-", "_")) end

local function kind_of(spec)
  return spec.type or (spec[2] == nil and "string") or type(spec[2])
end

--- The help text of a spec.
function M.help(spec)
  local lines = {}
  if spec.usage then lines[#lines + 1] = "usage: " .. spec.usage end
  if spec.description then lines[#lines + 1] = "\n" .. spec.description end
  lines[#lines + 1] = "\noptions:"
  for _, o in ipairs(spec.options) do
    local kind = kind_of(o)
    local flag = "  --" .. o[1] .. (kind == "boolean" and "" or " " .. kind:upper())
    local default = o[2] == nil and "" or string.format(" (default: %s)", tostring(o[2]))
    lines[#lines + 1] = string.format("%-28s %s%s", flag, o[3] or "", default)
  end
  lines[#lines + 1] = string.format("%-28s %s", "  --help", "show this help and exit")
  if spec.epilog then lines[#lines + 1] = "\n" .. spec.epilog end
  return table.concat(lines, "\n")
end

local function fail(spec, msg)
  io.stderr:write((spec.name or "cunet") .. ": " .. msg .. "\n\n" .. M.help(spec) .. "\n")
  os.exit(2)
end

local function convert(spec, o, text)
  local kind = kind_of(o)
  if kind == "number" then
    local v = tonumber(text)
    if not v then fail(spec, string.format("--%s expects a number, got '%s'", o[1], text)) end
    return v
  elseif kind == "boolean" then
    if text == "true" or text == "1" or text == "yes" then return true end
    if text == "false" or text == "0" or text == "no" then return false end
    fail(spec, string.format("--%s expects true or false, got '%s'", o[1], text))
  end
  return text
end

--- Parses argv (the global `arg`) against spec; returns a table of values (defaults filled in)
-- and the list of positional arguments in args._positional.
function M.parse(argv, spec)
  local by_name, out = {}, { _positional = {} }
  for _, o in ipairs(spec.options) do
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
