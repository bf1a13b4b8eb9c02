-- test_bench.lua — bench/models.lua and the whole-model part of bench/bench.lua: the case keys are
-- the ones issue 10 asks for and the study's matched models, the models have the presets' published
-- parameter counts, one sample's MACs times the batch are the batch's (the rule the GFLOP/s column uses), and the rows
-- bench.lua writes (one iteration each, nothing about their times asserted) carry the right keys,
-- shapes, parameter counts and MACs.
local lu = require "luaunit"
local cn = require "cunet"
local efficiency = require "cunet.efficiency"

local EXE = os.getenv("CUNET_EXE") or "./cunet"
local models = dofile("bench/models.lua")

-- total and trainable parameters of each preset (totals: docs/cunet.md's table)
local PARAMS = {
  unet_mnist_small = { 1112801, 1112801 }, unet_mnist = { 6469889, 6469889 },
  cunet_mnist_small = { 282609, 250609 }, cunet_notebook = { 8811875, 8555875 },
  cunet_paper = { 7831139, 7575139 }, unet_paper_baseline = { 35710339, 35710339 },
  -- the study's matched models (totals and trainable: lua/cunet/models/unet.lua, continuous_unet.lua)
  unet_mnist_028m = { 280177, 280177 }, cunet_mnist_028m = { 317157, 285157 }, cunet_mnist_11m = { 1163597, 1115597 },
}

local function entry_named(name)
  for _, e in ipairs(models.MODELS) do
    if e.name == name then return e end
  end
  error("no model " .. name)
end

TestBenchModels = {}

function TestBenchModels:testCaseKeys()
  local keys = {}
  for _, e in ipairs(models.MODELS) do
    for _, c in ipairs(models.cases(e)) do keys[#keys + 1] = c.key end
  end
  local want = {}
  for _, m in ipairs { "unet_mnist_small", "unet_mnist", "cunet_mnist_small" } do
    for _, k in ipairs { "fwd/n1", "fwd/n64", "train/n1", "train/n64" } do want[#want + 1] = "model/" .. m .. "/" .. k end
  end
  for _, m in ipairs { "unet_mnist_028m", "cunet_mnist_028m", "cunet_mnist_11m" } do
    for _, k in ipairs { "fwd/n64", "train/n64" } do want[#want + 1] = "model/" .. m .. "/" .. k end
  end
  for _, m in ipairs { "cunet_notebook", "cunet_paper", "unet_paper_baseline" } do
    for _, k in ipairs { "fwd/n1", "fwd/n16", "train/n16" } do want[#want + 1] = "model/" .. m .. "/" .. k end
  end
  lu.assertEquals(keys, want)
end

function TestBenchModels:testDescriptionHasThePresetsParameterCounts()
  local desc = require("cunet.checkpoint").json.decode(models.describe())
  lu.assertEquals(#desc.models, #models.MODELS)
  lu.assertEquals(#desc.cases, 27)
  for _, m in ipairs(desc.models) do
    lu.assertEquals({ m.params, m.trainable }, PARAMS[m.name], m.name)
    lu.assertEquals(m.config.resolution, m.shape[2], m.name)
    lu.assertEquals(m.config.in_channels, m.shape[1], m.name)
  end
end

-- The bench counts one sample's MACs and multiplies by the batch: every op of these models is per sample.
function TestBenchModels:testMacsScaleWithTheBatch()
  for _, name in ipairs { "unet_mnist_small", "cunet_mnist_small" } do
    local entry = entry_named(name)
    local model = models.build(entry)
    local full = efficiency.count_ops(model, { cn.randn { 3, 1, 28, 28 }, cn.randint(1, models.num_timesteps(model) + 1, { 3 }) })
    lu.assertEquals(full.macs, 3 * models.macs_per_sample(model, entry),
      name .. ": MACs of a batch of 3 are not 3 × one sample's (an op whose cost depends on the batch or the data, "
      .. "e.g. an ODE solve whose number of evaluations varies?)")
  end
end

function TestBenchModels:testModelRowsFromBenchLua()
  local out = os.tmpname()
  local filter = "model/unet_mnist_small/fwd/n1,model/cunet_mnist_small/train/n1"
  local cmd = string.format("BENCH_PART=model BENCH_FILTER=%s BENCH_REPS=1 BENCH_WARMUP=1 BENCH_MIN_TIME=0 %s bench/bench.lua %s 2>&1",
    filter, EXE, out)
  local p = io.popen(cmd)
  local log = p:read("a")
  lu.assertTrue(p:close(), log)
  local rows, peak = {}, nil
  for line in io.lines(out) do
    local f = {}
    for field in (line .. "\t"):gmatch("([^\t]*)\t") do f[#f + 1] = field end
    if f[1] == "MODEL" then
      rows[#rows + 1] = { key = f[2], case = f[4], shape = f[5], macs = tonumber(f[9]), params = tonumber(f[10]),
        trainable = tonumber(f[11]) }
    elseif f[1] == "INFO" and f[2] == "sgemm_gflops" then
      peak = tonumber(f[3])
    end
  end
  os.remove(out)
  lu.assertNotNil(peak, "no SGEMM peak line")
  lu.assertEquals(#rows, 2, log)
  lu.assertEquals({ rows[1].key, rows[1].case, rows[1].shape }, { "model/unet_mnist_small/fwd/n1", "forward", "[1,1,28,28]" })
  lu.assertEquals({ rows[2].key, rows[2].case, rows[2].shape }, { "model/cunet_mnist_small/train/n1", "train step", "[1,1,28,28]" })
  lu.assertEquals({ rows[1].params, rows[1].trainable }, PARAMS.unet_mnist_small)
  lu.assertEquals({ rows[2].params, rows[2].trainable }, PARAMS.cunet_mnist_small)
  local entry = entry_named("unet_mnist_small")
  lu.assertEquals(rows[1].macs, models.macs_per_sample(models.build(entry), entry))
end
