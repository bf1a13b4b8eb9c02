-- tests/lua/test_resume_config.lua — runs describe themselves and resume as they were (issue 11):
-- config.lua and the checkpoint's "run" hold the resolved configuration; --resume with no options
-- continues with the stored lr, EMA and schedule (loss.csv of N + resume + N = 2N straight); an
-- option given on resume is applied with a notice, or refused when it would change the model or
-- the run; a checkpoint of another model family is refused; a schedule from a Lua file and a model
-- from a Lua file (the U-Net stand-in below, and examples/cunet_custom_ode.lua) travel with the
-- checkpoint to recipes/sample.lua and recipes/fid_vs_steps.lua. On 8×8 and 28×28 folders of 16 PNGs.

local lu = require "luaunit"
local helpers = require "helpers"
local cn = require "cunet"
local fs = require "cunet.fs"
local train = require "cunet.train"
local checkpoint = require "cunet.checkpoint"
local diffusion = require "cunet.diffusion"

local EXE = os.getenv("CUNET_EXE") or "./cunet"
local q = fs.shell_quote

-- A model file in the form the contract allows: a function(config) -> model whose .config rebuilds it.
local MODEL_FILE = [[
local nn = require("cunet").nn
local Net = nn.class("ResumeTestNet", nn.Module)
function Net:__init(config)
  nn.Module.__init(self)
  self.config = config
  self.temb = nn.SinusoidalTimeEmbedding(8)
  self.tproj = nn.Linear(8, config.width)
  self.conv1 = nn.Conv2d(config.in_channels, config.width, 3, {padding = 1})
  self.conv2 = nn.Conv2d(config.width, config.in_channels, 3, {padding = 1})
end
function Net:forward(x, t)
  local e = self.tproj(self.temb(t)):view{x:size(1), -1, 1, 1}
  return self.conv2((self.conv1(x) + e):silu())
end
return function(config)
  return Net{in_channels = config.in_channels, resolution = config.resolution, width = config.width or 6}
end
]]

local function run(script, args, env)
  local p = io.popen(string.format("%s%s %s %s 2>&1", env or "", EXE, script, args))
  local out = p:read("a")
  local ok, _, code = p:close()
  return ok and 0 or code, out
end

-- loss.csv as rows {step, loss, lr} (the texts, compared exactly)
local function csv(path)
  local rows = {}
  for line in io.lines(path) do
    local step, loss, lr = line:match("^(%d+),([^,]+),([^,]+),")
    if step then rows[#rows + 1] = {tonumber(step), loss, lr} end
  end
  return rows
end

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

-- Each case {recipe, options, message}: resuming ckpt with them fails with "cannot resume" and message.
local function assert_refused(cases, ckpt)
  for _, c in ipairs(cases) do
    local code, log = run(c[1], c[2] .. " --steps 4 --resume " .. ckpt)
    lu.assertNotEquals(code, 0, c[1] .. " " .. c[2])
    lu.assertStrContains(log, "cannot resume")
    lu.assertStrContains(log, c[3])
  end
end

local function png_folder(dir, size)
  assert(fs.mkdir_p(dir))
  cn.seed(5)
  for i = 1, 16 do cn.save_png(string.format("%s/%02d.png", dir, i), cn.rand{1, size, size}) end
end

TestResumeConfig = {}

function TestResumeConfig:setUp()
  self.dir = helpers.temp_path()
  png_folder(self.dir .. "/images", 8)
  self.model = self.dir .. "/resume_test_net.lua"
  write(self.model, MODEL_FILE)
  -- non-default lr, warmup, EMA, clip, batch and schedule: a resume that forgot any of them would differ
  self.common = string.format("--model %s --size 8 --data folder:%s --batch 4 --lr 7e-4 --warmup 2 --ema 0.9 " ..
    "--clip 0.5 --schedule cosine --T 60 --sample-every 0 --checkpoint-every 3 --threads 1",
    q(self.model), q(self.dir .. "/images"))
end

function TestResumeConfig:tearDown()
  helpers.remove_dir(self.dir)
end

function TestResumeConfig:testResumeWithNoOptionsIsTheSameRun()
  local straight, split = self.dir .. "/straight", self.dir .. "/split"
  local code, log = run("recipes/train_unet.lua", self.common .. " --steps 6 --out " .. q(straight))
  lu.assertEquals(code, 0, log)
  code, log = run("recipes/train_unet.lua", self.common .. " --steps 3 --out " .. q(split))
  lu.assertEquals(code, 0, log)
  -- only the checkpoint and the new total: everything else comes back from the checkpoint
  code, log = run("recipes/train_unet.lua", "--steps 6 --resume " .. q(split .. "/checkpoint.safetensors"))
  lu.assertEquals(code, 0, log)
  lu.assertStrContains(log, "training (resumed): steps 4..6")
  lu.assertStrContains(log, "resume: steps 3 -> 6 (given on resume)")
  lu.assertNil(log:find("resume: lr", 1, true), log)
  local a, b = csv(straight .. "/loss.csv"), csv(split .. "/loss.csv")
  lu.assertEquals(#a, 6)
  lu.assertEquals(b, a)
  lu.assertEquals(b[6][3], "0.0007") -- lr: 7e-4 after the 2 warmup steps, not the default 2e-4
  local ca, cb = checkpoint.load(straight .. "/checkpoint.safetensors"), checkpoint.load(split .. "/checkpoint.safetensors")
  lu.assertEquals(cb.ema_scalars.decay, ca.ema_scalars.decay)
  for k, v in pairs(ca.ema) do lu.assertEquals((v - cb.ema[k]):abs():max():item(), 0, k) end
  lu.assertEquals(cb.schedule_beta, diffusion.schedule("cosine", {T = 60}).beta)
  lu.assertEquals(cb.train.lr, 7e-4)
  lu.assertEquals(cb.train.clip, 0.5)
end

-- The authors' EMA schedule (ema_pytorch: every N steps, copies up to a step, inverse-decay warmup) is
-- recorded and comes back on a resume with no options: the split run's EMA equals the straight one's.
function TestResumeConfig:testEmaScheduleResumes()
  local ema = " --ema-every 2 --ema-after 1 --ema-power 0.6667"
  local straight, split = self.dir .. "/straight", self.dir .. "/split"
  local code, log = run("recipes/train_unet.lua", self.common .. ema .. " --steps 6 --out " .. q(straight))
  lu.assertEquals(code, 0, log)
  code, log = run("recipes/train_unet.lua", self.common .. ema .. " --steps 3 --out " .. q(split))
  lu.assertEquals(code, 0, log)
  code, log = run("recipes/train_unet.lua", "--steps 6 --resume " .. q(split .. "/checkpoint.safetensors"))
  lu.assertEquals(code, 0, log)
  lu.assertNil(log:find("resume: ema", 1, true), log)
  local ca, cb = checkpoint.load(straight .. "/checkpoint.safetensors"), checkpoint.load(split .. "/checkpoint.safetensors")
  lu.assertEquals({cb.train.ema_every, cb.train.ema_after, cb.train.ema_power, cb.train.ema_warmup}, {2, 1, 0.6667, false})
  lu.assertEquals({cb.ema_scalars.every, cb.ema_scalars.after, cb.ema_scalars.power, cb.ema_scalars.num_updates},
    {"2", "1", "0.6667", "6"})
  for k, v in pairs(ca.ema) do lu.assertEquals((v - cb.ema[k]):abs():max():item(), 0, k) end
  -- the default run keeps LitEma's warmup, every step, no copies
  local plain = self.dir .. "/plain"
  code, log = run("recipes/train_unet.lua", self.common .. " --steps 1 --out " .. q(plain))
  lu.assertEquals(code, 0, log)
  local cp = checkpoint.load(plain .. "/checkpoint.safetensors")
  lu.assertEquals({cp.train.ema_every, cp.train.ema_after, cp.train.ema_power, cp.train.ema_warmup}, {1, false, false, true})
end

function TestResumeConfig:testChangedOptionIsAppliedWithANotice()
  local out = self.dir .. "/run"
  local code, log = run("recipes/train_unet.lua", self.common .. " --steps 3 --out " .. q(out))
  lu.assertEquals(code, 0, log)
  code, log = run("recipes/train_unet.lua", "--steps 5 --lr 1e-4 --ema 0.5 --resume " .. q(out .. "/checkpoint.safetensors"))
  lu.assertEquals(code, 0, log)
  lu.assertStrContains(log, "resume: lr 0.0007 -> 0.0001 (given on resume)")
  lu.assertStrContains(log, "resume: ema 0.9 -> 0.5 (given on resume)")
  local rows = csv(out .. "/loss.csv")
  lu.assertEquals(#rows, 5)
  lu.assertEquals({rows[3][3], rows[4][3], rows[5][3]}, {"0.0007", "0.0001", "0.0001"})
  local ck = checkpoint.load(out .. "/checkpoint.safetensors")
  lu.assertEquals({ck.train.lr, ck.train.ema, ck.train.clip, ck.train.batch_size}, {1e-4, 0.5, 0.5, 4})
  lu.assertEquals(tonumber(ck.ema_scalars.decay), 0.5) -- the EMA runs with the new decay, not the stored one
  lu.assertEquals(dofile(out .. "/config.lua").train.lr, 1e-4)
end

function TestResumeConfig:testWhatCannotChangeIsRefused()
  local out = self.dir .. "/run"
  local code, log = run("recipes/train_unet.lua", self.common .. " --steps 2 --out " .. q(out))
  lu.assertEquals(code, 0, log)
  local ckpt = q(out .. "/checkpoint.safetensors")
  local before = io.open(out .. "/checkpoint.safetensors", "rb"):read("a")
  local cases = {
    {"recipes/train_cunet.lua", "", "and train_cunet trains cunet.models.continuous_unet"},
    {"recipes/ablation_nores.lua", "", "and ablation_nores trains cunet.models.continuous_unet"},
    {"recipes/train_unet.lua", "--model cunet.models.unet", "not cunet.models.unet (--model"},
    {"recipes/train_unet.lua", "--preset mnist", "--preset mnist differs from its preset mnist_small"},
    {"recipes/train_unet.lua", "--size 16", "--size 16 differs from its image size 8"},
    {"recipes/train_unet.lua", "--schedule linear", "trained with the cosine schedule, not linear"},
    {"recipes/train_unet.lua", "--T 100", "trained with T = 60, not 100"},
    {"recipes/train_unet.lua", "--seed 3", "seed = 0, not 3 (seed cannot change on resume)"},
    {"recipes/train_unet.lua", "--prediction v", "it predicts eps, not v"},
    {"recipes/train_unet.lua", "--optimizer adamw", "optimizer = adam, not adamw"},
  }
  assert_refused(cases, ckpt)
  lu.assertEquals(io.open(out .. "/checkpoint.safetensors", "rb"):read("a"), before)
  lu.assertEquals(#csv(out .. "/loss.csv"), 2)
end

-- The resolved configuration: printed at the start, in out/config.lua and the checkpoint's "run".
function TestResumeConfig:testConfigFile()
  local out = self.dir .. "/run"
  local code, log = run("recipes/train_unet.lua", self.common .. " --steps 2 --out " .. q(out))
  lu.assertEquals(code, 0, log)
  lu.assertStrContains(log, "run configuration (" .. out .. "/config.lua):")
  lu.assertStrContains(log, "lr = 0.0007,")
  local cfg = dofile(out .. "/config.lua")
  local ck = checkpoint.load(out .. "/checkpoint.safetensors")
  lu.assertEquals(ck.run, cfg)
  lu.assertEquals(cfg.model.module, self.model) -- a model file is stored by its absolute path
  lu.assertEquals(cfg.model.config, {in_channels = 1, resolution = 8, width = 6})
  lu.assertEquals(cfg.model.parameters, checkpoint.build_model(ck):num_parameters())
  lu.assertEquals(cfg.schedule.name, "cosine")
  lu.assertEquals(cfg.schedule.beta, diffusion.schedule("cosine", {T = 60}).beta)
  lu.assertEquals({cfg.train.lr, cfg.train.warmup, cfg.train.ema, cfg.train.batch_size, cfg.train.prediction, cfg.train.seed},
    {7e-4, 2, 0.9, 4, "eps", 0})
  lu.assertEquals({cfg.recipe.name, cfg.recipe.data, cfg.recipe.size}, {"train_unet", "folder:" .. self.dir .. "/images", 8})
  lu.assertEquals(cfg.data.shape, {16, 1, 8, 8})
  local p = io.popen("git rev-parse HEAD 2>/dev/null")
  local head = p:read("l")
  p:close()
  if head then lu.assertEquals(cfg.commit:sub(1, #head), head) end
  -- the text reads back exactly: numbers, nested tables, odd keys and strings
  local value = {a = {1, 2.5, 1e-300}, ["odd key"] = "x\n\"y\"", list = {}, nested = {{b = true}, {c = false}}}
  lu.assertEquals(load(train.config_text(value))(), value)
end

-- A schedule from a Lua file: its β values are in the checkpoint, so sample.lua and a resume need
-- nothing else (before: "unknown kind").
function TestResumeConfig:testScheduleFromAFileTravels()
  local out = self.dir .. "/run"
  local example = "examples/schedule_logsnr_linear.lua"
  local args = self.common:gsub("%-%-schedule cosine %-%-T 60", "--schedule " .. example .. " --T 40")
  local code, log = run("recipes/train_unet.lua", args .. " --steps 2 --out " .. q(out))
  lu.assertEquals(code, 0, log)
  local ck = checkpoint.load(out .. "/checkpoint.safetensors")
  lu.assertEquals(ck.schedule, example)
  lu.assertEquals(ck.schedule_beta, diffusion.schedule(dofile(example), {T = 40}).beta)
  lu.assertEquals(checkpoint.schedule(ck).alpha_bar[40], diffusion.schedule(dofile(example), {T = 40}).alpha_bar[40])
  local grid = self.dir .. "/grid.png"
  code, log = run("recipes/sample.lua", string.format("--ckpt %s --n 2 --steps 3 --out %s", q(out .. "/checkpoint.safetensors"), q(grid)))
  lu.assertEquals(code, 0, log)
  lu.assertEquals(cn.load_png(grid):size(1), 1)
  code, log = run("recipes/train_unet.lua", "--steps 3 --resume " .. q(out .. "/checkpoint.safetensors"))
  lu.assertEquals(code, 0, log)
  lu.assertStrContains(log, "training (resumed): steps 3..3")
  -- a checkpoint that names a Lua-made schedule but holds no β values says what is missing
  ck.schedule_beta, ck.schedule = nil, "logsnr_linear"
  local ok, err = pcall(checkpoint.schedule, ck)
  lu.assertFalse(ok)
  lu.assertStrContains(err, "names its schedule 'logsnr_linear' but holds no")
end

-- The library resumes the same way: options not given come from the checkpoint, given ones are noticed.
function TestResumeConfig:testTrainRunResumes()
  local net = checkpoint.model_module(self.model)
  local images = train.dataset("folder:" .. self.dir .. "/images", {size = 8}).images
  local function fresh() cn.seed(1) return net.from_config({in_channels = 1, resolution = 8}) end
  local opts = {dataset = images, batch_size = 4, lr = 5e-4, warmup = 1, ema = 0.8, schedule = "sigmoid", T = 30,
                progress = "none", model_module = self.model}
  local function with(extra)
    local o = {}
    for k, v in pairs(opts) do o[k] = v end
    for k, v in pairs(extra) do o[k] = v end
    return o
  end
  local straight = train.run(with{model = fresh(), steps = 4, out = self.dir .. "/a"})
  train.run(with{model = fresh(), steps = 2, out = self.dir .. "/b"})
  local resumed = train.run{model = fresh(), dataset = images, progress = "none", steps = 4,
                            resume = self.dir .. "/b/checkpoint.safetensors"}
  lu.assertEquals(resumed.notices, {"resume: steps 2 -> 4 (given on resume)"})
  for s = 3, 4 do lu.assertEquals(resumed.losses[s], straight.losses[s], "step " .. s) end
  lu.assertEquals(resumed.config.train.out, self.dir .. "/b") -- written where the run was
  lu.assertEquals(csv(self.dir .. "/b/loss.csv"), csv(self.dir .. "/a/loss.csv"))
  lu.assertEquals(resumed.ema.decay, 0.8)
  lu.assertEquals(checkpoint.load(self.dir .. "/b/checkpoint.safetensors").model_module, self.model)
end

-- examples/cunet_custom_ode.lua: a cU-Net with its own ODE dynamics, trained by train_cunet.lua
-- through --model, rebuilt by sample.lua from the checkpoint alone.
function TestResumeConfig:testCustomOdeModelFile()
  png_folder(self.dir .. "/digits", 28)
  local out = self.dir .. "/damped"
  local code, log = run("recipes/train_cunet.lua", string.format("--model examples/cunet_custom_ode.lua --data folder:%s " ..
    "--batch 2 --steps 2 --warmup 1 --sample-every 0 --threads 1 --out %s", q(self.dir .. "/digits"), q(out)))
  lu.assertEquals(code, 0, log)
  local ck = checkpoint.load(out .. "/checkpoint.safetensors")
  lu.assertStrContains(ck.model_module, "/examples/cunet_custom_ode.lua")
  lu.assertEquals(ck.config.damping, 0.5)
  lu.assertNotNil(ck.model["mid.ode.accel.conv.weight"])
  lu.assertNil(ck.model["mid.ode.accel.conv1.weight"]) -- the ConvSODEFunc is gone
  local model = checkpoint.build_model(ck)
  lu.assertEquals(model:num_parameters(), dofile("examples/cunet_custom_ode.lua").from_preset("mnist_small"):num_parameters())
  local grid = self.dir .. "/grid.png"
  code, log = run("recipes/sample.lua", string.format("--ckpt %s --n 2 --steps 2 --out %s", q(out .. "/checkpoint.safetensors"), q(grid)))
  lu.assertEquals(code, 0, log)
  code, log = run("recipes/train_cunet.lua", "--steps 3 --resume " .. q(out .. "/checkpoint.safetensors"))
  lu.assertEquals(code, 0, log)
  lu.assertStrContains(log, "training (resumed): steps 3..3")
  code, log = run("recipes/train_cunet.lua", "--steps 4 --ode-steps 3 --resume " .. q(out .. "/checkpoint.safetensors"))
  lu.assertNotEquals(code, 0)
  lu.assertStrContains(log, "--ode-steps 3 differs from its model config (steps = 1")
end

-- The cU-Net recipes: an ablation recipe resumes only its own ablation, train_cunet keeps the
-- checkpoint's, and the cU-Net's model options cannot change on resume.
function TestResumeConfig:testCunetAblationIsPartOfTheModel()
  png_folder(self.dir .. "/digits", 28)
  local out = self.dir .. "/noattn"
  local code, log = run("recipes/ablation_noattn.lua", string.format("--data folder:%s --batch 2 --steps 1 --warmup 1 --lr 3e-4 " ..
    "--sample-every 0 --threads 1 --out %s", q(self.dir .. "/digits"), q(out)))
  lu.assertEquals(code, 0, log)
  local ckpt = q(out .. "/checkpoint.safetensors")
  assert_refused({
    {"recipes/ablation_nores.lua", "", "ablation_nores trains the no_resblocks ablation, it holds no_attention"},
    {"recipes/train_cunet.lua", "--ablation none", "--ablation none differs from its model config (ablation = no_attention;"},
    {"recipes/train_cunet.lua", "--method euler", "--method euler differs from its model config (method = rk4_38;"},
  }, ckpt)
  code, log = run("recipes/train_cunet.lua", "--steps 2 --resume " .. ckpt)
  lu.assertEquals(code, 0, log)
  lu.assertStrContains(log, "ablation no_attention")
  local ck = checkpoint.load(out .. "/checkpoint.safetensors")
  lu.assertEquals({ck.step, ck.config.ablation, ck.run.recipe.name}, {2, "no_attention", "train_cunet"})
  lu.assertEquals(ck.train.lr, 3e-4) -- restored, not train_cunet's default 1e-3
end

-- recipes/fid_vs_steps.lua on a checkpoint of a schedule from a Lua file (28×28: the classifier's size).
function TestResumeConfig:testFidVsStepsOnAScheduleFromAFile()
  local fid = require "cunet.fid"
  local ok, why = pcall(require("cunet.data").load, "fashion-mnist", {split = "test"})
  if ok then ok, why = fid.checkpoint_path("fashion-mnist") end
  if not ok then lu.skip("no Fashion-MNIST test split with its classifier: " .. tostring(why)) end
  png_folder(self.dir .. "/digits", 28)
  local out = self.dir .. "/run"
  local code, log = run("recipes/train_unet.lua", string.format("--model %s --size 28 --data folder:%s --batch 4 --steps 2 " ..
    "--schedule examples/schedule_logsnr_linear.lua --T 20 --sample-every 0 --threads 1 --out %s", q(self.model),
    q(self.dir .. "/digits"), q(out)))
  lu.assertEquals(code, 0, log)
  code, log = run("recipes/fid_vs_steps.lua", string.format("--ckpt %s --n 4 --batch 4 --steps 2 --dataset fashion-mnist " ..
    "--split test --out %s", q(out .. "/checkpoint.safetensors"), q(self.dir .. "/fid")), "CUNET_CACHE=" .. q(self.dir .. "/cache") .. " ")
  lu.assertEquals(code, 0, log)
  lu.assertStrContains(log, "examples/schedule_logsnr_linear.lua, T = 20")
  lu.assertStrContains(log, "best: 2 steps")
end

-- A checkpoint written before a model option existed (its model_config lacks the key) restores into
-- a model built today: the absent option takes the module's default (cU-Net `regularize`, added
-- after the study's first checkpoints, is the case that broke a resume); a real difference is
-- still refused, and so is an absent option whose model value is not the default.
function TestResumeConfig:testOptionAddedSinceTheCheckpointTakesItsDefault()
  local continuous_unet = require "cunet.models.continuous_unet"
  local config = {in_channels = 1, resolution = 8, widths = {4, 8}, mid_width = 8, stem_width = 4, time_dim = 8,
    attention_levels = {}, norm = "group", norm_groups = 2}
  cn.seed(3)
  local model = continuous_unet.ContinuousUNet(config)
  local old = {}
  for k, v in pairs(model.config) do old[k] = v end
  old.regularize = nil -- as the older code wrote it
  local path = self.dir .. "/old.safetensors"
  checkpoint.save(path, {model = model, config = old, model_module = "cunet.models.continuous_unet"})
  local ck = checkpoint.load(path)
  lu.assertNil(ck.config.regularize)
  local fresh = continuous_unet.ContinuousUNet(config)
  checkpoint.restore(ck, {model = fresh})
  for name, t in pairs(model:state_dict()) do
    lu.assertEquals(helpers.max_abs_diff(t, fresh:state_dict()[name]), 0, name)
  end
  local function with(k, v)
    local c = {}
    for key, value in pairs(config) do c[key] = value end
    c[k] = v
    return c
  end
  local regularized = continuous_unet.ContinuousUNet(with("regularize", {kinetic = 0.01}))
  local ok, err = pcall(checkpoint.restore, ck, {model = regularized})
  lu.assertFalse(ok)
  lu.assertStrContains(err, "model config mismatch")
  lu.assertStrContains(err, "regularize")
  local wider = continuous_unet.ContinuousUNet(with("mid_width", 16))
  ok, err = pcall(checkpoint.restore, ck, {model = wider})
  lu.assertFalse(ok)
  lu.assertStrContains(err, "mid_width = 8 in the checkpoint, 16 in the model")
end

-- --init: a new run from a file's weights (its EMA weights), its schedule, T and prediction unless
-- given; with lr 0 the first checkpoint holds exactly the weights it started from. --init with
-- --resume, a model of another module and a model whose tensors differ are refused by name.
function TestResumeConfig:testInitStartsANewRunFromWeights()
  local src = self.dir .. "/src"
  local code, log = run("recipes/train_unet.lua", self.common .. " --prediction v --steps 3 --out " .. q(src))
  lu.assertEquals(code, 0, log)
  local from = src .. "/checkpoint.safetensors"
  local dst = self.dir .. "/dst"
  local bare = string.format("--model %s --size 8 --data folder:%s --batch 4 --sample-every 0 --threads 1",
    q(self.model), q(self.dir .. "/images"))
  code, log = run("recipes/train_unet.lua", bare .. " --lr 0 --warmup 0 --steps 1 --init " .. q(from) .. " --out " .. q(dst))
  lu.assertEquals(code, 0, log)
  lu.assertStrContains(log, "init: prediction v (the weights' own)")
  lu.assertStrContains(log, "init: schedule cosine, T = 60 (the weights' own)")
  lu.assertStrContains(log, "init: EMA weights of '" .. from .. "' (step 3); optimizer, EMA and step start afresh")
  local a, b = checkpoint.load(from), checkpoint.load(dst .. "/checkpoint.safetensors")
  lu.assertEquals(b.step, 1)
  lu.assertEquals({b.prediction, b.T}, {"v", 60})
  lu.assertEquals(b.schedule_beta, a.schedule_beta)
  for name, t in pairs(a.ema) do lu.assertEquals(helpers.max_abs_diff(t, b.model[name]), 0, name) end
  lu.assertNotEquals(helpers.max_abs_diff(a.ema["conv1.weight"], a.model["conv1.weight"]), 0) -- EMA, not the trained ones
  lu.assertEquals(dofile(dst .. "/config.lua").recipe.init, from)
  -- a given option wins, and says so
  code, log = run("recipes/train_unet.lua", bare .. " --steps 1 --prediction eps --schedule linear --T 40 --init " .. q(from) ..
    " --out " .. q(self.dir .. "/given"))
  lu.assertEquals(code, 0, log)
  lu.assertStrContains(log, "init: prediction eps, the weights were trained for v (given)")
  lu.assertStrContains(log, "init: schedule and T as given; the weights were trained with cosine, T = 60")
  lu.assertEquals(checkpoint.load(self.dir .. "/given/checkpoint.safetensors").T, 40)
  -- refusals
  code, log = run("recipes/train_unet.lua", "--steps 4 --init " .. q(from) .. " --resume " .. q(from))
  lu.assertNotEquals(code, 0)
  lu.assertStrContains(log, "--init starts a new run from weights and --resume continues a run: give one of them")
  code, log = run("recipes/train_unet.lua", string.format("--preset mnist_028m --size 8 --data folder:%s --batch 2 " ..
    "--sample-every 0 --threads 1 --steps 1 --init %s --out %s", q(self.dir .. "/images"), q(from), q(self.dir .. "/other")))
  lu.assertNotEquals(code, 0)
  lu.assertStrContains(log, "holds a " .. self.model .. " model, not cunet.models.unet")
  code, log = run("recipes/train_unet.lua", string.format("--preset mnist_028m --size 8 --data folder:%s --batch 2 " ..
    "--sample-every 0 --threads 1 --steps 1 --out %s", q(self.dir .. "/images"), q(self.dir .. "/u028")))
  lu.assertEquals(code, 0, log)
  code, log = run("recipes/train_unet.lua", string.format("--preset mnist_small --size 8 --data folder:%s --batch 2 " ..
    "--sample-every 0 --threads 1 --steps 1 --init %s --out %s", q(self.dir .. "/images"),
    q(self.dir .. "/u028/checkpoint.safetensors"), q(self.dir .. "/usmall")))
  lu.assertNotEquals(code, 0)
  lu.assertStrContains(log, "does not fit the model")
  lu.assertStrContains(log, "copying a tensor of shape")
end
