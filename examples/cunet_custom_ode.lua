-- examples/cunet_custom_ode.lua — the continuous U-Net with ODE dynamics written here: a model file
-- for the training recipes' --model option (docs/training.md spells out the contract).
--
--   cunet recipes/train_cunet.lua --model examples/cunet_custom_ode.lua --out runs/damped
--   cunet recipes/sample.lua --ckpt runs/damped/checkpoint.safetensors    -- rebuilt through this file
--
-- Every ODE block of the cU-Net (lua/cunet/models/continuous_unet.lua) gets a damped convolutional
-- oscillator as its acceleration, in place of the ConvSODEFunc:
--   x'' = conv(softplus(GroupNorm(x))) + W·temb − damping · x'
-- The file returns a module: from_config(config) builds the model, and model.config (the cU-Net's
-- config plus `damping`) is what the checkpoint stores to rebuild it; from_preset and presets let
-- --preset work as for the cU-Net. Needs the second-order form (the MNIST presets use it).

local nn = require "cunet.nn"
local cunet = require "cunet.models.continuous_unet"

local M = {}
M.presets = cunet.presets
M.defaults = {damping = 0.5}

local DampedConvODE = nn.class("DampedConvODE", nn.Module)
M.DampedConvODE = DampedConvODE

--- DampedConvODE(channels, time_dim, damping): accel(t, x, v, temb) for x and v of `channels` channels.
function DampedConvODE:__init(channels, time_dim, damping)
  nn.Module.__init(self)
  local groups = 1
  for _, g in ipairs{8, 4, 2} do
    if channels % g == 0 then groups = g break end
  end
  self.norm = nn.GroupNorm(groups, channels)
  self.conv = nn.Conv2d(channels, channels, 3, {padding = 1})
  self.time = nn.Linear(time_dim, channels)
  self.damping = damping
end

function DampedConvODE:forward(_, x, v, temb)
  local drive = self.time(temb):view{x:size(1), x:size(2), 1, 1}
  return self.conv(self.norm(x):softplus()) + drive - v * self.damping
end

--- The cU-Net of `config` (continuous_unet options plus damping) with DampedConvODE dynamics.
function M.from_config(config)
  local options = {}
  for k, v in pairs(config) do options[k] = v end
  local damping = options.damping or M.defaults.damping
  options.damping = nil
  local model = cunet.from_config(options)
  local c = model.config
  if c.form ~= "second_order" then
    error("cunet_custom_ode: the damped dynamics need form = 'second_order', got " .. tostring(c.form), 2)
  end
  local function swap(level, width) level.ode.accel = DampedConvODE(width // 2, c.time_dim, damping) end
  for i, level in ipairs(model.down) do swap(level, c.widths[i]) end
  swap(model.mid, c.mid_width)
  for i, level in ipairs(model.up) do swap(level, c.widths[i]) end
  c.damping = damping
  return model
end

function M.from_preset(name, overrides)
  return M.from_config(cunet.preset_config(name, overrides))
end

return M
