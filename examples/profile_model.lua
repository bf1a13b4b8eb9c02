-- examples/profile_model.lua — where a model's time goes, op by op (cn.profile; docs/benchmarks.md).
--
--   ./cunet examples/profile_model.lua --family cunet --preset mnist_small --batch 64 --mode train
--   ./cunet examples/profile_model.lua --family unet --preset paper_baseline --batch 16 --mode fwd
--
-- Builds a preset with fresh weights, runs two warm-up iterations, then profiles --iters more:
-- "fwd" is a sampling forward (eval mode, no grad), "train" one training step (forward, MSE against
-- an ε target, backward, Adam). The table lists every op with its calls, total and self time, share
-- of the run and GFLOP/s of its matrix products, forward and backward separately.

local cn = require "cunet"
local cli = require "cunet.cli"

local args = cli.parse(arg, {
  usage = "./cunet examples/profile_model.lua [options]",
  description = "Profile a U-Net or cU-Net preset, forward or training step, op by op.",
  options = {
    { "family", "cunet", "model family", choices = { "unet", "cunet" } },
    { "preset", "mnist_small", "preset of the family (lua/cunet/models/*.lua)" },
    { "batch", 64, "batch size", integer = true, min = 1 },
    { "mode", "train", "fwd: sampling forward; train: training step", choices = { "fwd", "train" } },
    { "iters", 3, "iterations profiled (after 2 warm-ups)", integer = true, min = 1 },
    { "threads", 0, "threads (0: as the engine starts)", integer = true, min = 0 },
    { "sort", "self", "table order", choices = { "self", "total", "calls", "name" } },
    { "limit", 30, "rows printed", integer = true, min = 1 },
    { "seed", 0, "seed of the weights and inputs", integer = true },
  },
})

if args.threads > 0 then cn.set_num_threads(args.threads) end
cn.seed(args.seed)
local family = args.family == "unet" and require "cunet.models.unet" or require "cunet.models.continuous_unet"
local model = family.from_preset(args.preset)
local c = model.config
local x = cn.randn { args.batch, c.in_channels, c.resolution, c.resolution }
local eps = cn.randn { args.batch, c.in_channels, c.resolution, c.resolution }
local t = cn.randint(1, (c.num_timesteps or 1000) + 1, { args.batch })
local params = {}
for _, p in ipairs(model:parameters()) do
  if p:requires_grad() then params[#params + 1] = p end
end
local opt = cn.optim.Adam(params, { lr = 1e-4 })

local function once()
  if args.mode == "fwd" then
    model:eval()
    cn.no_grad(function() return model(x, t) end)
  else
    model:train()
    local loss = cn.nn.functional.mse_loss(model(x, t), eps)
    loss:backward()
    opt:step()
    opt:zero_grad()
  end
end

once()
once()
collectgarbage()
local threads = cn.num_threads()
print(string.format("%s `%s`, %s, batch %d, %d iterations, %d threads", args.family == "unet" and "U-Net" or "cU-Net",
  args.preset, args.mode == "fwd" and "sampling forward" or "training step", args.batch, args.iters, threads))
local result = cn.profile(function()
  for _ = 1, args.iters do once() end
end, { sort = args.sort, limit = args.limit })
print(string.format("%.1f ms per iteration", result.wall_s / args.iters * 1e3))
