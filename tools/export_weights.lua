-- tools/export_weights.lua — a small, sampling-only copy of a training checkpoint: the model's
-- EMA weights (or its trained ones with --no-ema) as model.*, without the optimizer state or the
-- second set of weights, so it can be committed and read by recipes/sample.lua.
--
--   ./cunet tools/export_weights.lua runs/unet/checkpoint.safetensors checkpoints/unet_mnist.safetensors

local cn = require "cunet"

local src, dst, flag = arg[1], arg[2], arg[3]
if not src or not dst then
  io.stderr:write("usage: cunet tools/export_weights.lua CHECKPOINT OUT [--no-ema]\n")
  os.exit(2)
end
local use_ema = flag ~= "--no-ema"
local tensors, meta = cn.load(src)
if meta.format ~= require("cunet.checkpoint").FORMAT then error(src .. " is not a cunet training checkpoint") end
local out, out_meta = {}, {}
for name, t in pairs(tensors) do
  if name:match("^model%.") then out[name] = t end
end
local from_ema = 0
if use_ema then
  for name, t in pairs(tensors) do
    local rest = name:match("^ema%.(.+)$")
    if rest then
      out["model." .. rest] = t
      from_ema = from_ema + 1
    end
  end
end
for k, v in pairs(meta) do
  if not k:match("^optim%.") and not k:match("^ema%.") then out_meta[k] = v end
end
out_meta.weights = from_ema > 0 and "ema" or "trained"
out_meta.exported_from = src
cn.save(dst, out, out_meta)
print(string.format("%s: %d tensors (%s weights) from %s", dst, (function() local n = 0 for _ in pairs(out) do n = n + 1 end return n end)(), out_meta.weights, src))
