-- recipes/efficiency.lua — the paper's Table 5 (GFLOPs, memory) for our models: parameters, thop's MAC
-- count (the paper's "GFLOPs" are thop MACs at batch 1), our fuller count of every op, peak tensor
-- memory of an inference forward and of a training step, and the time per forward. See
-- docs/efficiency.md.
--
--   ./cunet recipes/efficiency.lua --model unet --preset paper_baseline
--   ./cunet recipes/efficiency.lua --model cunet --preset notebook --ablation no_attention --batch 8
--   ./cunet recipes/efficiency.lua --all                  -- U-Net, cU-Net and the three ablations at 3×64²
--   ./cunet recipes/efficiency.lua --all --unet-preset mnist_small --cunet-preset mnist_small   -- the MNIST models

local cn = require "cunet"
local cli = require "cunet.cli"
local efficiency = require "cunet.efficiency"
local presets = require "cunet.models.presets"

local args = cli.parse(arg, {
  name = "efficiency",
  usage = "cunet recipes/efficiency.lua [options]",
  description = "Parameters, MACs (thop 0.1.1's rules and a full count), peak memory and time of a model.",
  options = {
    {"model", "unet", "unet | cunet", choices = {"unet", "cunet"}},
    {"preset", nil, "a preset of the model (default: paper_baseline for unet, notebook for cunet)", type = "string"},
    {"ablation", "none", "cunet only: none | no_attention | no_resblocks | no_attention_no_resblocks | time_embedding_only"},
    {"size", nil, "input C,H,W (default: the preset's channels and resolution)", type = "string"},
    {"batch", 1, "batch size of the memory and time measurements (MACs are per image, at batch 1)", integer = true, min = 1},
    {"repeats", 5, "timed forwards (the median is reported)", integer = true, min = 1},
    {"all", false, "the table for U-Net, cU-Net and the three ablations (--unet-preset, --cunet-preset)"},
    {"unet-preset", "paper_baseline", "--all: the U-Net's preset (mnist_small: the committed MNIST U-Net's)"},
    {"cunet-preset", "notebook", "--all: the cU-Net's preset, ablated in the other rows"},
    {"ops", true, "print the full count op by op (single model)"},
    {"threads", 0, "threads (0: all cores)", integer = true, min = 0},
  },
})

if args.threads > 0 then cn.set_num_threads(args.threads) end

local MODULES = { unet = "cunet.models.unet", cunet = "cunet.models.continuous_unet" }
local DEFAULT_PRESET = { unet = "paper_baseline", cunet = "notebook" }
local MB = 2 ^ 20

-- The paper's Table 5 (GFLOPs = thop MACs, memory MB) and Fig. 6 / the authors' notebook parameters.
local PAPER = {
  ["U-Net"] = { gmacs = 7.21, mb = 545.5, params = 35710339 },
  ["cU-Net"] = { gmacs = 2.90, mb = 137.9, params = 8811875 },
  ["cU-Net w/o attention"] = { gmacs = 2.81, mb = 128.7, params = 8548707 },
  ["cU-Net w/o resblocks"] = { gmacs = 1.71, mb = 92.0, params = 6138083 },
  ["cU-Net w/o attention and resblocks"] = { gmacs = 1.62, mb = 88.4, params = 5874915 },
}

local function fail(msg)
  io.stderr:write("efficiency: " .. msg .. "\n")
  os.exit(2)
end

-- Builds a model (under no_grad: no graph for the initialisation) and its input maker.
local function build(kind, preset, ablation, size)
  local mod_name = MODULES[kind] or fail("--model must be unet or cunet, got " .. tostring(kind))
  local mod = require(mod_name)
  if not mod.presets[preset] then
    fail(string.format("unknown %s preset '%s' (known: %s)", kind, preset, table.concat(presets.names(mod.presets), ", ")))
  end
  local config = mod.preset_config(preset)
  local overrides = {}
  if kind == "cunet" and ablation ~= "none" then overrides.ablation = ablation end
  local c, h, w = config.in_channels or 3, config.resolution, config.resolution
  if size then
    c, h, w = size:match("^(%d+),(%d+),(%d+)$")
    if not c then fail("--size must be C,H,W, got " .. size) end
    c, h, w = math.tointeger(tonumber(c)), math.tointeger(tonumber(h)), math.tointeger(tonumber(w))
    if c ~= (config.in_channels or 3) then overrides.in_channels = c end
    if h ~= config.resolution then overrides.resolution = h end
  end
  local model = cn.no_grad(mod.from_preset, preset, overrides)
  local T = model.config.num_timesteps or 1000
  local function make_inputs(batch)
    return { cn.randn { batch, c, h, w }, cn.full({ batch }, math.min(500, T)) }
  end
  return model, make_inputs, { c, h, w }
end

-- paper_key: the PAPER entry this model reproduces (nil for other presets or sizes)
local function row(label, r, paper_key)
  local paper = PAPER[paper_key] or {}
  local p = r.params
  return {
    label, efficiency.commas(p.total), string.format("%.3f", r.thop.total / 1e9),
    paper.gmacs and string.format("%.2f", paper.gmacs) or "-",
    string.format("%.3f", r.full.macs / 1e9), string.format("%.3f", r.full.flops / 1e9),
    string.format("%.1f", r.memory.inference.peak / MB), string.format("%.1f", r.memory.train.peak / MB),
    string.format("%.1f", 16 * p.total / MB), paper.mb and string.format("%.1f", paper.mb) or "-",
    string.format("%.1f", 1000 * r.seconds),
  }
end

local HEADER = { "model", "params", "thop GMACs", "paper", "full GMACs", "GFLOPs", "infer MB", "train MB",
  "16 B/param MB", "paper MB", "ms/forward" }

local function legend(batch, shape)
  return table.concat({
    string.format("input %s; MACs per image (batch 1); memory and time at batch %d; MB = 2^20 bytes.",
      table.concat(shape, "x"), batch),
    "thop GMACs: thop " .. efficiency.THOP_VERSION .. "'s rules, the paper's \"GFLOPs\" (Table 5); full: every op (docs/efficiency.md).",
    "infer MB / train MB: peak tensor storage of a no_grad forward / a forward + backward, parameters included.",
    "16 B/param MB: weights + gradients + Adam's two moments; the paper's memory column tracks it (its protocol is not stated).",
  }, "\n")
end

local function measure(model, make_inputs)
  return efficiency.profile(model, make_inputs, { batch = args.batch, repeats = args.repeats })
end

if args.all then
  local list = {
    { "U-Net", "unet", args.unet_preset, "none" },
    { "cU-Net", "cunet", args.cunet_preset, "none" },
    { "cU-Net w/o attention", "cunet", args.cunet_preset, "no_attention" },
    { "cU-Net w/o resblocks", "cunet", args.cunet_preset, "no_resblocks" },
    { "cU-Net w/o attention and resblocks", "cunet", args.cunet_preset, "no_attention_no_resblocks" },
  }
  local rows, shape = {}, nil
  for _, e in ipairs(list) do
    local model, make_inputs, s = build(e[2], e[3], e[4], args.size)
    shape = s
    io.stderr:write(string.format("measuring %s ...\n", e[1]))
    local paper_key = table.concat(s, ",") == "3,64,64" and args.unet_preset == "paper_baseline"
      and args.cunet_preset == "notebook" and e[1] or nil
    rows[#rows + 1] = row(e[1], measure(model, make_inputs), paper_key)
    model = nil
    collectgarbage("collect")
  end
  print(efficiency.format_table(HEADER, rows))
  print(legend(args.batch, shape))
  return
end

local preset = args.preset or DEFAULT_PRESET[args.model]
local model, make_inputs, shape = build(args.model, preset, args.ablation, args.size)
local r = measure(model, make_inputs)
local label = args.model == "unet" and "U-Net" or "cU-Net"
local name = string.format("%s %s%s", label, preset, args.ablation ~= "none" and (" (" .. args.ablation .. ")") or "")
print(name .. ", input " .. table.concat(shape, "x"))

local p = r.params
print(string.format("parameters: %s (trainable %s, frozen %s)", efficiency.commas(p.total), efficiency.commas(p.trainable),
  efficiency.commas(p.frozen)))
local child_rows = {}
for _, ch in ipairs(p.children) do
  child_rows[#child_rows + 1] = { ch.name, efficiency.commas(ch.total), efficiency.commas(ch.trainable),
    efficiency.commas(r.thop.by_child[ch.name] or 0) }
end
if p.own.total > 0 then
  child_rows[#child_rows + 1] = { "(own)", efficiency.commas(p.own.total), efficiency.commas(p.own.trainable), "" }
end
print(efficiency.format_table({ "child", "params", "trainable", "thop MACs" }, child_rows))

print(string.format("\nthop %s MACs (batch 1): %s = %.3f GMACs", efficiency.THOP_VERSION, efficiency.commas(r.thop.total),
  r.thop.total / 1e9))
local types = {}
for k in pairs(r.thop.calls) do types[#types + 1] = k end
table.sort(types)
local type_rows = {}
for _, k in ipairs(types) do
  type_rows[#type_rows + 1] = { k, efficiency.commas(r.thop.calls[k]), efficiency.commas(r.thop.by_type[k] or 0) }
end
print(efficiency.format_table({ "type", "calls", "thop MACs" }, type_rows))
local uncounted = {}
for k, v in pairs(r.thop.uncounted) do uncounted[#uncounted + 1] = string.format("%s ×%d", k, v) end
table.sort(uncounted)
print("no thop rule (counted 0): " .. (#uncounted > 0 and table.concat(uncounted, ", ") or "none"))

print(string.format("\nfull count (batch 1): %.3f GMACs, %.3f GFLOPs", r.full.macs / 1e9, r.full.flops / 1e9))
if args.ops then print(efficiency.format_ops(r.full)) end

print(string.format("\npeak tensor memory at batch %d: inference %.1f MB (%.1f MB above what was live), training step %.1f MB (%.1f MB above)",
  args.batch, r.memory.inference.peak / MB, r.memory.inference.activations / MB, r.memory.train.peak / MB,
  r.memory.train.activations / MB))
print(string.format("time per forward at batch %d: %.1f ms (median of %d), %.2f ms per image", args.batch,
  1000 * r.seconds, args.repeats, 1000 * r.seconds / args.batch))
print("")
local ABLATION_NAMES = { none = "cU-Net", no_attention = "cU-Net w/o attention", no_resblocks = "cU-Net w/o resblocks",
  no_attention_no_resblocks = "cU-Net w/o attention and resblocks" }
local paper_key
if table.concat(shape, ",") == "3,64,64" then
  if args.model == "unet" and preset == "paper_baseline" then paper_key = "U-Net" end
  if args.model == "cunet" and preset == "notebook" then paper_key = ABLATION_NAMES[args.ablation] end
end
print(efficiency.format_table(HEADER, { row(name, r, paper_key) }))
print(legend(args.batch, shape))
