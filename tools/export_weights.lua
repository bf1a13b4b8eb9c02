-- tools/export_weights.lua — a small, sampling-only copy of a training checkpoint: the model's
-- EMA weights (or its trained ones with --no-ema) as model.*, without the optimizer state or the
-- second set of weights, so it can be committed and read by recipes/sample.lua. --dtype F16 stores
-- them in half precision (half the bytes; the largest rounding error is printed).
--
--   ./cunet tools/export_weights.lua runs/unet/checkpoint.safetensors checkpoints/unet_mnist.safetensors
--   ./cunet tools/export_weights.lua --dtype F16 results/study/authors_unet_11m_s0/checkpoint.safetensors OUT
--   ./cunet tools/export_weights.lua --dtype F16 checkpoints/unet_mnist.safetensors OUT   -- an export, in F16

local cn = require "cunet"
local cli = require "cunet.cli"

local args = cli.parse(arg, {
  usage = "cunet tools/export_weights.lua [--no-ema] [--dtype F32|F16] CHECKPOINT OUT",
  description = "The model's weights from a training checkpoint, for sampling (EMA weights unless --no-ema).",
  positional = true,
  options = {
    {"ema", true, "take the EMA weights when the checkpoint has them (--no-ema: the trained weights)"},
    {"dtype", "F32", "how the weights are stored", choices = {"F32", "F16"}},
  },
})
local src, dst = args._positional[1], args._positional[2]
if not src or not dst or args._positional[3] then
  io.stderr:write("usage: cunet tools/export_weights.lua [--no-ema] [--dtype F32|F16] CHECKPOINT OUT\n")
  os.exit(2)
end
local tensors, meta = cn.load(src)
if meta.format ~= require("cunet.checkpoint").FORMAT then error(src .. " is not a cunet training checkpoint") end
local out, out_meta = {}, {}
for name, t in pairs(tensors) do
  if name:match("^model%.") then out[name] = t end
end
local from_ema = 0
if args.ema then
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
-- an export exported again (say into F16) keeps what its weights are and where they came from
out_meta.weights = from_ema > 0 and "ema" or meta.weights or "trained"
out_meta.exported_from = meta.exported_from or src
cn.save(dst, out, out_meta, {dtype = args.dtype})
local count = 0
for _ in pairs(out) do count = count + 1 end
local note = ""
if args.dtype ~= "F32" then
  local back, worst, rel = cn.load(dst), 0, 0
  for name, t in pairs(out) do
    local d = (back[name] - t):abs():max():item()
    if d > worst then worst = d end
    local scale = t:abs():max():item()
    if scale > 0 and d / scale > rel then rel = d / scale end
  end
  note = string.format(", %s: largest rounding error %.3g (%.3g of its tensor's largest weight)", args.dtype, worst, rel)
end
print(string.format("%s: %d tensors (%s weights) from %s%s", dst, count, out_meta.weights, src, note))
