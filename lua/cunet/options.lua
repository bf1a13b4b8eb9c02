-- options — the one option-table policy of the Lua library (the binding's is engine/lua/l_options.c):
-- every function that takes an options table rejects a key it does not know, naming the function,
-- the key and the known keys, so a typo can never run a different experiment.
--
--   local options = require "cunet.options"
--   local DEFAULTS = {steps = 50, eta = 0}
--   function M.sample(x, opts)
--     local o = options.merge(opts, DEFAULTS, "sample")     -- a copy with the defaults filled in
--     ...
--   function M.loss(x, opts)
--     opts = options.check(opts, {"prediction", "t", "noise"}, "loss")   -- keys only; returns opts or {}
--
-- Errors point at the caller of the function that checks (level 3), or at `level`.

local M = {}

-- The names of `known`: the values of its array part and its string keys (a list of names, a set,
-- or a defaults table all work).
local function names_of(known)
  local names = {}
  for _, v in ipairs(known) do names[#names + 1] = v end
  for k in pairs(known) do
    if type(k) == "string" then names[#names + 1] = k end
  end
  table.sort(names)
  return names
end

local function is_known(known, k)
  if type(k) ~= "string" then return false end
  if known[k] ~= nil then return true end
  for _, v in ipairs(known) do
    if v == k then return true end
  end
  return false
end

--- Raises "who: unknown option 'k' (known: a, b, c)" for a key of opts not in known (a list of
-- names, or a table whose string keys are the names, such as a defaults table), and "who: options
-- must be a table" when opts is neither nil nor a table. Returns opts, or a new empty table for nil.
function M.check(opts, known, who, level)
  level = level or 3
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    error(string.format("%s: options must be a table, got %s", who, type(opts)), level)
  end
  for k in pairs(opts) do
    if not is_known(known, k) then
      error(string.format("%s: unknown option '%s' (known: %s)", who, tostring(k),
        table.concat(names_of(known), ", ")), level)
    end
  end
  return opts
end

--- Checks opts against the keys of defaults (one table per function: the single place where its
-- defaults live) and returns a new table of defaults overridden by opts. A default of `false` may
-- stand for "none" where nil cannot be stored in the table.
function M.merge(opts, defaults, who, level)
  level = level or 3
  M.check(opts, defaults, who, level > 0 and level + 1 or 0)
  local merged = {}
  for k, v in pairs(defaults) do merged[k] = v end
  for k, v in pairs(opts or {}) do merged[k] = v end
  return merged
end

return M
