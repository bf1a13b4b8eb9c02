-- models/presets — the preset lookup shared by the model modules (unet.lua, continuous_unet.lua):
-- a preset's options with overrides on top, and the error that lists the known presets; and the
-- from_preset of the baselines (dncnn.lua, convae.lua) built on it.
--
--   local presets = require "cunet.models.presets"
--   M.preset_config = function(name, overrides) return presets.config(M.presets, name, overrides, "unet") end

local copy_list = require("cunet.nn.util").copy_list

local M = {}

--- The names of a presets table (name -> options), sorted.
function M.names(presets)
  local names = {}
  for k in pairs(presets) do names[#names + 1] = k end
  table.sort(names)
  return names
end

--- presets[name]'s options with `overrides` on top: a new table whose list values are copies. An
-- unknown name raises `<who>: unknown preset "x" (known: "a", "b", ...)` at the caller's caller.
function M.config(presets, name, overrides, who)
  local p = presets[name]
  if not p then
    local quoted = {}
    for i, k in ipairs(M.names(presets)) do quoted[i] = string.format("%q", k) end
    error(string.format("%s: unknown preset %q (known: %s)", who, tostring(name), table.concat(quoted, ", ")), 3)
  end
  local opts = {}
  for k, v in pairs(p) do opts[k] = type(v) == "table" and copy_list(v) or v end
  for k, v in pairs(overrides or {}) do opts[k] = v end
  return opts
end

--- A function(name, overrides) building ctor(config) from presets[name] with overrides on top (config);
-- an unknown name is an error listing the presets of module `who`.
--   M.from_preset = require("cunet.models.presets").from_preset("dncnn", M.presets, DnCNN)
function M.from_preset(who, presets, ctor)
  return function(name, overrides)
    return ctor(M.config(presets, name, overrides, who))
  end
end

return M
