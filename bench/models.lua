-- bench/models.lua — the whole-model cases of `make bench`, in one place for both sides: the
-- committed presets, the input shapes, the batch sizes and the key of each row. bench/bench.lua
-- times them in cunet; bench/bench_torch.py reads them (with each model's resolved config and
-- parameter counts) from this file's JSON description and builds the same architectures in PyTorch.
--
--   local models = dofile("bench/models.lua")   -- the module: models.MODELS, models.cases(), ...
--   ./cunet bench/models.lua                    -- as a script: the JSON description on stdout
--
-- Case keys: model/<model>/<mode>/n<batch>, mode "fwd" (sampling forward: eval mode, no_grad) or
-- "train" (train mode: forward, MSE loss against an ε target, backward, one Adam step).

local cn = require "cunet"
local efficiency = require "cunet.efficiency"
local unet = require "cunet.models.unet"
local continuous_unet = require "cunet.models.continuous_unet"
local json = require("cunet.checkpoint").json

local M = {}

-- U-Nets take any t (their embedding is a sinusoid); cU-Nets look t up in a table of num_timesteps rows.
M.UNET_T = 1000

--- The models: name (the key's second part), family, preset, input shape [C, H, W] and the batch
-- sizes of each mode.
M.MODELS = {
  { name = "unet_mnist_small", family = "unet", preset = "mnist_small", shape = { 1, 28, 28 },
    fwd = { 1, 64 }, train = { 1, 64 } },
  { name = "unet_mnist", family = "unet", preset = "mnist", shape = { 1, 28, 28 }, fwd = { 1, 64 }, train = { 1, 64 } },
  { name = "cunet_mnist_small", family = "cunet", preset = "mnist_small", shape = { 1, 28, 28 },
    fwd = { 1, 64 }, train = { 1, 64 } },
  -- the study's matched pairs (recipes/study_mnist.lua; docs/study.md) at the batch they train and
  -- sample with; the U-Net `mnist_11m` is `mnist_small` above (the same config)
  { name = "unet_mnist_028m", family = "unet", preset = "mnist_028m", shape = { 1, 28, 28 }, fwd = { 64 }, train = { 64 } },
  { name = "cunet_mnist_028m", family = "cunet", preset = "mnist_028m", shape = { 1, 28, 28 }, fwd = { 64 }, train = { 64 } },
  { name = "cunet_mnist_11m", family = "cunet", preset = "mnist_11m", shape = { 1, 28, 28 }, fwd = { 64 }, train = { 64 } },
  { name = "cunet_notebook", family = "cunet", preset = "notebook", shape = { 3, 64, 64 }, fwd = { 1, 16 }, train = { 16 } },
  { name = "cunet_paper", family = "cunet", preset = "paper", shape = { 3, 64, 64 }, fwd = { 1, 16 }, train = { 16 } },
  { name = "unet_paper_baseline", family = "unet", preset = "paper_baseline", shape = { 3, 64, 64 },
    fwd = { 1, 16 }, train = { 16 } },
}

local FAMILY = {
  unet = { module = unet, label = "U-Net" },
  cunet = { module = continuous_unet, label = "cU-Net" },
}

--- M.label(entry) -> "U-Net `mnist_small`"
function M.label(entry) return string.format("%s `%s`", FAMILY[entry.family].label, entry.preset) end

--- M.key(entry, mode, batch) -> "model/unet_mnist_small/fwd/n1"
function M.key(entry, mode, batch) return string.format("model/%s/%s/n%d", entry.name, mode, batch) end

--- M.cases(entry) -> {{key=, mode=, batch=}, ...}: a model's cases in table order (forward, then
-- training step; small batch first).
function M.cases(entry)
  local list = {}
  for _, mode in ipairs { "fwd", "train" } do
    for _, batch in ipairs(entry[mode]) do
      list[#list + 1] = { key = M.key(entry, mode, batch), mode = mode, batch = batch }
    end
  end
  return list
end

--- M.build(entry) -> the cunet model of the preset (fresh random weights).
function M.build(entry) return FAMILY[entry.family].module.from_preset(entry.preset) end

--- M.num_timesteps(model) -> T, the range 1..T of the timesteps the model takes.
function M.num_timesteps(model) return model.config.num_timesteps or M.UNET_T end

--- M.macs_per_sample(model, entry) -> multiply-accumulates of one forward of one sample
-- (efficiency.count_ops at batch 1; every op of these models is per sample, so a batch of n costs n times
-- as much).
function M.macs_per_sample(model, entry)
  local c, h, w = table.unpack(entry.shape)
  local x = cn.randn { 1, c, h, w }
  local t = cn.randint(1, M.num_timesteps(model) + 1, { 1 })
  return efficiency.count_ops(model, { x, t }).macs
end

--- M.describe() -> the JSON text bench_torch.py builds its side from: every model with its resolved
-- config and parameter counts, and every case.
function M.describe()
  local models, cases = {}, {}
  for _, entry in ipairs(M.MODELS) do
    local model = M.build(entry)
    local count = efficiency.parameters(model)
    models[#models + 1] = {
      name = entry.name, family = entry.family, preset = entry.preset, label = M.label(entry), shape = entry.shape,
      config = model.config, num_timesteps = M.num_timesteps(model), params = count.total, trainable = count.trainable,
    }
    for _, c in ipairs(M.cases(entry)) do
      cases[#cases + 1] = { key = c.key, model = entry.name, mode = c.mode, batch = c.batch }
    end
    model = nil -- luacheck: ignore
    collectgarbage()
  end
  return json.encode { models = models, cases = cases }
end

-- As a script (./cunet bench/models.lua), print the description; as dofile, return the module.
if arg and arg[0] and arg[0]:match("models%.lua$") then
  io.write(M.describe(), "\n")
end

return M
