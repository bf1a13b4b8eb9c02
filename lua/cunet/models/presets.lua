-- models/presets — the from_preset(name [, overrides]) of a model module with a presets table,
-- shared by the baselines (dncnn, convae).
--
--   M.from_preset = require("cunet.models.presets").from_preset("dncnn", M.presets, DnCNN)

local M = {}

--- A function(name, overrides) building ctor(config) from presets[name] with overrides on top;
-- an unknown name is an error listing the presets of module `who`.
function M.from_preset(who, presets, ctor)
  return function(name, overrides)
    local p = presets[name]
    if not p then
      local names = {}
      for k in pairs(presets) do names[#names + 1] = k end
      table.sort(names)
      error(string.format("%s: unknown preset %q (%s)", who, tostring(name), table.concat(names, ", ")), 2)
    end
    local config = {}
    for k, v in pairs(p) do config[k] = v end
    for k, v in pairs(overrides or {}) do config[k] = v end
    return ctor(config)
  end
end

return M
