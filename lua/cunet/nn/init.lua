-- cunet.nn — layers as Lua modules over the engine's functional ops, in the manner of PyTorch's
-- torch.nn (and Torch7's print(model)). See docs/nn.md.
--
--   local cn = require "cunet"
--   local nn = cn.nn
--   local net = nn.Sequential(nn.Conv2d(3, 64, 3, {padding = 1}), nn.GroupNorm(32, 64), nn.SiLU())
--   print(net)                       -- the tree, as PyTorch prints it
--   local y = net(cn.randn{8, 3, 32, 32})

local module = require "cunet.nn.module"

local nn = {
  Module = module.Module,
  Parameter = module.Parameter,
  is_parameter = module.is_parameter,
  class = require "cunet.class",
  functional = require "cunet.nn.functional",
  init = require "cunet.nn.weight_init",
}

for _, family in ipairs { "containers", "conv", "linear", "norm", "activation", "attention", "embedding", "resample", "ode" } do
  for name, cls in pairs(require("cunet.nn." .. family)) do
    assert(nn[name] == nil, "cunet.nn: " .. name .. " defined twice")
    nn[name] = cls
  end
end

return nn
