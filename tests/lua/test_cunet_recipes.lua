-- test_cunet_recipes.lua — the cU-Net recipes end to end, a few steps each: recipes/train_cunet.lua and the
-- four Appendix C ablations train on 16 images of a folder, write checkpoints and a loss CSV, carry their
-- ablation into the checkpoint, resume, and sample through recipes/sample.lua; --help lists the cU-Net's
-- own options. The folder holds 28×28 PNGs so the mnist_small preset runs unchanged.

local lu = require "luaunit"
local helpers = require "helpers"
local cn = require "cunet"
local checkpoint = require "cunet.checkpoint"
local fs = require "cunet.fs"
local cunet = require "cunet.models.continuous_unet"

local shell_quote = helpers.shell_quote

local run = helpers.run_script

local function csv_rows(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local n = -1
  for _ in f:lines() do n = n + 1 end
  f:close()
  return n
end

local RECIPES = {
  { "recipes/train_cunet.lua", "none" },
  { "recipes/ablation_noattn.lua", "no_attention" },
  { "recipes/ablation_nores.lua", "no_resblocks" },
  { "recipes/ablation_noattn_nores.lua", "no_attention_no_resblocks" },
  { "recipes/ablation_timeonly.lua", "time_embedding_only" },
}

TestCunetRecipes = {}

function TestCunetRecipes:setUp()
  self.dir = helpers.temp_dir()
  assert(fs.mkdir_p(self.dir .. "/images"))
  cn.seed(11)
  for i = 1, 16 do cn.save_png(string.format("%s/images/%02d.png", self.dir, i), cn.rand { 1, 28, 28 }) end
end

function TestCunetRecipes:tearDown()
  helpers.remove_dir(self.dir)
end

function TestCunetRecipes:testHelp()
  for _, r in ipairs(RECIPES) do
    local code, out = run(r[1], "--help")
    lu.assertEquals(code, 0, r[1])
    lu.assertStrContains(out, "usage: cunet " .. r[1])
    for _, opt in ipairs { "--ablation", "--adjoint", "--method", "--ode-steps", "--steps", "--resume", "--out" } do
      lu.assertNotNil(out:find(opt, 1, true), r[1] .. " --help lacks " .. opt)
    end
    lu.assertNotNil(out:find("(default: " .. r[2] .. ")", 1, true), r[1] .. " has the wrong default ablation")
  end
end

-- The ablations train with train_cunet.lua's settings: their --help differs from its only in the
-- usage line, the description, and the defaults of --ablation, --steps and --out.
function TestCunetRecipes:testAblationsShareTheComparisonSettings()
  local function options(script)
    local code, out = run(script, "--help")
    lu.assertEquals(code, 0, out)
    local lines = {}
    for line in out:match("\noptions:\n(.*)$"):gmatch("[^\n]+") do
      local flag = line:match("^  %-%-([%w-]+)")
      if flag then lines[flag] = line end
    end
    return lines
  end
  local base = options(RECIPES[1][1])
  lu.assertStrContains(base.lr, "(default: 0.001)")
  for i = 2, #RECIPES do
    local lines = options(RECIPES[i][1])
    for flag, line in pairs(base) do
      if flag ~= "ablation" and flag ~= "steps" and flag ~= "out" then lu.assertEquals(lines[flag], line, RECIPES[i][1]) end
    end
    for flag in pairs(lines) do lu.assertNotNil(base[flag], RECIPES[i][1] .. " --" .. flag) end
    lu.assertStrContains(lines.steps, "(default: 3000)")
  end
end

-- Each recipe, two steps on the folder: the checkpoint holds the recipe's ablation, and rebuilding
-- the model from it gives the ablated network's parameter count.
function TestCunetRecipes:testEachRecipeTrains()
  for _, r in ipairs(RECIPES) do
    local out = self.dir .. "/" .. r[2]
    local code, log = run(r[1], string.format("--data folder:%s --batch 4 --steps 2 --warmup 1 --sample-every 0 " ..
      "--threads 1 --out %s", shell_quote(self.dir .. "/images"), shell_quote(out)))
    lu.assertEquals(code, 0, log)
    lu.assertStrContains(log, "16 images 1x28x28")
    lu.assertStrContains(log, "ablation " .. r[2])
    lu.assertEquals(csv_rows(out .. "/loss.csv"), 2, r[1])
    local ck = checkpoint.load(out .. "/checkpoint.safetensors")
    lu.assertEquals(ck.step, 2)
    lu.assertEquals(ck.model_module, "cunet.models.continuous_unet")
    lu.assertEquals(ck.config.ablation, r[2])
    local expected = cunet.from_preset("mnist_small", { ablation = r[2] }):num_parameters()
    lu.assertEquals(checkpoint.build_model(ck):num_parameters(), expected, r[1])
  end
end

-- The adjoint and a solver choice reach the model, a resumed run continues the count, and the
-- checkpoint samples through recipes/sample.lua.
function TestCunetRecipes:testAdjointResumeAndSample()
  local out = self.dir .. "/adjoint"
  local common = string.format("--data folder:%s --batch 4 --warmup 1 --sample-every 0 --threads 1 --adjoint " ..
    "--method midpoint --ode-steps 2 --out %s", shell_quote(self.dir .. "/images"), shell_quote(out))
  local code, log = run("recipes/train_cunet.lua", common .. " --steps 2")
  lu.assertEquals(code, 0, log)
  local ck = checkpoint.load(out .. "/checkpoint.safetensors")
  lu.assertEquals({ ck.config.adjoint, ck.config.method, ck.config.steps }, { true, "midpoint", 2 })
  code, log = run("recipes/train_cunet.lua", common .. " --steps 3 --resume " .. shell_quote(out .. "/checkpoint.safetensors"))
  lu.assertEquals(code, 0, log)
  lu.assertStrContains(log, "training (resumed): steps 3..3")
  lu.assertEquals(csv_rows(out .. "/loss.csv"), 3)
  local grid = self.dir .. "/grid.png"
  code, log = run("recipes/sample.lua", string.format("--ckpt %s --n 2 --steps 2 --out %s",
    shell_quote(out .. "/checkpoint.safetensors"), shell_quote(grid)))
  lu.assertEquals(code, 0, log)
  lu.assertStrContains(log, "wrote " .. grid)
  lu.assertEquals(cn.load_png(grid):size(1), 1)
end

function TestCunetRecipes:testBadAblationIsAClearError()
  local code, log = run("recipes/train_cunet.lua", string.format("--data folder:%s --ablation no_such --steps 1 --out %s",
    shell_quote(self.dir .. "/images"), shell_quote(self.dir .. "/bad")))
  lu.assertNotEquals(code, 0)
  lu.assertStrContains(log, "no_such")
end

-- recipes/table1.lua picks each curve's best step count and writes the combined plot's points.
function TestCunetRecipes:testTable1FromFidCsvs()
  local curves = { -- backbone dir, sampler, {steps, fid, seconds}
    { "u", "ddpm", { { 10, 40.5, 0.5 }, { 50, 12.25, 2.5 }, { 100, 13, 5 } } },
    { "u", "ddim", { { 5, 30, 0.2 }, { 20, 9.5, 0.8 } } },
    { "c", "ddpm", { { 10, 20, 0.3 }, { 50, 21, 1.5 } } },
    { "c", "ddim", { { 5, 7.75, 0.1 }, { 20, 8, 0.4 } } },
  }
  for _, c in ipairs(curves) do
    os.execute("mkdir -p " .. shell_quote(self.dir .. "/" .. c[1]))
    local f = assert(io.open(string.format("%s/%s/fid_vs_steps_%s.csv", self.dir, c[1], c[2]), "w"))
    f:write("steps,fid_classifier,kid_classifier,kid_std,seconds_per_sample,n,sampler,dataset,split,checkpoint\n")
    for _, r in ipairs(c[3]) do f:write(string.format("%d,%g,0.01,0.001,%g,500,%s,mnist,train,x\n", r[1], r[2], r[3], c[2])) end
    f:close()
  end
  local png = self.dir .. "/fid.png"
  local code, out = run("recipes/table1.lua", string.format("--unet %s --cunet %s --out %s",
    shell_quote(self.dir .. "/u"), shell_quote(self.dir .. "/c"), shell_quote(png)))
  lu.assertEquals(code, 0, out)
  lu.assertNotNil(out:find("| U-Net (DDPM) | 12.25 | 50 | 2.500 | 500 | 3.61 / 30 / 3.56 |", 1, true), out)
  lu.assertNotNil(out:find("| U-Net (DDIM) | 9.50 | 20 | 0.800 |", 1, true), out)
  lu.assertNotNil(out:find("| cU-Net (DDPM) | 20.00 | 10 | 0.300 |", 1, true), out)
  lu.assertNotNil(out:find("| cU-Net (DDIM) | 7.75 | 5 | 0.100 |", 1, true), out)
  local csv = assert(io.open(self.dir .. "/fid.csv")):read("a")
  lu.assertNotNil(csv:find("cU-Net (DDIM),20,8", 1, true), csv)
  code, out = run("recipes/table1.lua", "--unet " .. shell_quote(self.dir .. "/nothing"))
  lu.assertNotEquals(code, 0)
  lu.assertStrContains(out, "run recipes/fid_vs_steps.lua first")
end

-- recipes/plot_losses.lua averages each run's loss.csv over windows of steps.
function TestCunetRecipes:testPlotLosses()
  for _, run_dir in ipairs { "a", "b" } do
    os.execute("mkdir -p " .. shell_quote(self.dir .. "/" .. run_dir))
    local f = assert(io.open(string.format("%s/%s/loss.csv", self.dir, run_dir), "w"))
    f:write("step,loss,lr,seconds\n")
    for step = 1, 7 do f:write(string.format("%d,%g,0.001,%d\n", step, run_dir == "a" and step or 10 * step, step)) end
    f:close()
  end
  local png = self.dir .. "/loss.png"
  local code, out = run("recipes/plot_losses.lua", string.format("--runs A=%s,B=%s --window 3 --out %s",
    shell_quote(self.dir .. "/a"), shell_quote(self.dir .. "/b"), shell_quote(png)))
  lu.assertEquals(code, 0, out)
  lu.assertStrContains(out, "A: 7 steps, mean loss of the last 3: 5.0000") -- windows 1-3 and 4-6: 2 and 5
  lu.assertStrContains(out, "B: 7 steps, mean loss of the last 3: 50.0000")
  local csv = assert(io.open(self.dir .. "/loss.csv")):read("a")
  lu.assertStrContains(csv, "A,3,2\n")
  lu.assertStrContains(csv, "B,6,50\n")
  lu.assertStrContains(out, "loss axis: epsilon-prediction MSE, logarithmic") -- no config.lua: an ε run
  -- --from-step leaves out the steps before it (windows 2-4 and 5-7); config.lua names each run's target
  local f = assert(io.open(self.dir .. "/a/config.lua", "w"))
  f:write('return {train = {prediction = "v"}}\n')
  f:close()
  code, out = run("recipes/plot_losses.lua", string.format("--runs A=%s,B=%s --window 3 --from-step 2 --linear --out %s",
    shell_quote(self.dir .. "/a"), shell_quote(self.dir .. "/b"), shell_quote(png)))
  lu.assertEquals(code, 0, out)
  lu.assertStrContains(out, "A: 7 steps, mean loss of the last 3: 6.0000")
  lu.assertStrContains(out, "loss axis: epsilon / v-prediction MSE, linear")
  code, out = run("recipes/plot_losses.lua", "--runs A=" .. shell_quote(self.dir .. "/missing"))
  lu.assertNotEquals(code, 0)
  lu.assertStrContains(out, "no " .. self.dir .. "/missing/loss.csv")
end
