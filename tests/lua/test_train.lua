-- tests/lua/test_train.lua — the trainer (lua/cunet/train.lua), checkpoints (lua/cunet/checkpoint.lua)
-- and the recipes train_unet.lua / sample.lua, on a tiny stand-in denoiser and 8×8 images.

local lu = require "luaunit"
local helpers = require "helpers"
local cn = require "cunet"
local train = require "cunet.train"
local checkpoint = require "cunet.checkpoint"
local diffusion = require "cunet.diffusion"

local EXE = os.getenv("CUNET_EXE") or "./cunet"

-- ---- fixtures ------------------------------------------------------------------------------------

local shell_quote = helpers.shell_quote

local function read_bytes(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function exists(path) return read_bytes(path) ~= nil end

-- The stand-in denoiser, as a module on package.path (the recipes load it by name in a subprocess):
-- conv 3×3 → + a projection of the sinusoidal time embedding → SiLU → conv 3×3; optional dropout.
local TINY_SOURCE = [[
local cn = require "cunet"
local nn = cn.nn
local M = {}
local Tiny = nn.class("TinyDenoiser", nn.Module)
M.TinyDenoiser = Tiny
function Tiny:__init(config)
  nn.Module.__init(self)
  self.config = config
  local c, w = config.in_channels, config.width
  self.temb = nn.SinusoidalTimeEmbedding(16)
  self.tproj = nn.Linear(16, w)
  self.conv1 = nn.Conv2d(c, w, 3, {padding = 1})
  self.conv2 = nn.Conv2d(w, c, 3, {padding = 1})
  if (config.dropout or 0) > 0 then self.drop = nn.Dropout(config.dropout) end
end
function Tiny:forward(x, t)
  local e = self.tproj(self.temb(t)):view{x:size(1), -1, 1, 1}
  local h = (self.conv1(x) + e):silu()
  if self.drop then h = self.drop(h) end
  return self.conv2(h)
end
function M.from_config(config) return Tiny(config) end
function M.from_preset(name, overrides)
  local presets = {tiny = {in_channels = 1, width = 8, resolution = 8}}
  local p = presets[name]
  if not p then error("unknown preset " .. tostring(name)) end
  local config = {}
  for k, v in pairs(p) do config[k] = v end
  for k, v in pairs(overrides or {}) do config[k] = v end
  return Tiny(config)
end
return M
]]

package.preload["cunet_test_tiny"] = function() return assert(load(TINY_SOURCE, "=cunet_test_tiny"))() end
local tiny = require "cunet_test_tiny"

-- Writes the stand-in as dir/cunet_test_tiny.lua, for subprocesses (LUA_PATH).
local function write_tiny_module(dir)
  local f = assert(io.open(dir .. "/cunet_test_tiny.lua", "w"))
  f:write(TINY_SOURCE)
  f:close()
end

local function new_model(seed, config)
  cn.seed(seed or 1)
  return tiny.from_config(config or {in_channels = 1, width = 8, resolution = 8})
end

local function dataset(n, size)
  local saved = cn.rng_state()
  cn.seed(42)
  local x = cn.rand{n or 20, 1, size or 8, size or 8} * 2 - 1
  cn.set_rng_state(saved)
  return {images = x}
end

-- Options for train.run over the defaults of these tests.
local function options(extra)
  local o = {dataset = dataset(), batch_size = 8, T = 100, warmup = 3, progress = "none", ema = 0.99, clip = 1.0,
             model_module = "cunet_test_tiny"}
  for k, v in pairs(extra) do o[k] = v end
  return o
end

local max_diff = helpers.max_abs_diff

local function read_csv(path)
  local rows, header = {}, nil
  for line in io.lines(path) do
    if not header then header = line else
      local step, loss, lr, seconds = line:match("^([^,]+),([^,]+),([^,]+),([^,]+)$")
      rows[#rows + 1] = {step = tonumber(step), loss = tonumber(loss), lr = tonumber(lr), seconds = tonumber(seconds), line = line}
    end
  end
  return header, rows
end

-- A model that wraps another and poisons step `bad_step` of training: "loss" makes the output NaN,
-- "grad" leaves the loss finite but makes a gradient NaN (d sqrt(z)/dz at z = 0 times 0).
local function poisoned(model, bad_step, kind)
  local nn = cn.nn
  local Poisoned = nn.class("Poisoned", nn.Module)
  function Poisoned:__init()
    nn.Module.__init(self)
    self.inner = model
    self.zero = nn.Parameter(cn.zeros{1})
    self.config = model.config
    self.calls = 0
  end
  function Poisoned:forward(x, t)
    local out = self.inner(x, t)
    if self.training then
      self.calls = self.calls + 1
      if self.calls == bad_step then
        if kind == "grad" then return out + self.zero:sqrt() * 0 end
        return out * (0 / 0)
      end
    end
    return out
  end
  return Poisoned()
end

-- ---- resuming ------------------------------------------------------------------------------------

TestTrainResume = {}

function TestTrainResume:setUp() self.dir = helpers.temp_dir() end
function TestTrainResume:tearDown() helpers.remove_dir(self.dir) end

function TestTrainResume:test_resume_equals_uninterrupted_run()
  -- 20 images, batch 8: an epoch is 2 batches, so the 6-step halves cross epoch boundaries and the
  -- checkpoint sits in the middle of an epoch; flips, warmup, clipping, EMA and dropout all draw or
  -- carry state.
  local config = {in_channels = 1, width = 8, resolution = 8, dropout = 0.1}
  local N = 6
  local straight = train.run(options{model = new_model(1, config), steps = 2 * N, out = self.dir .. "/a", flip = true})
  local first = train.run(options{model = new_model(1, config), steps = N, out = self.dir .. "/b", flip = true})
  cn.seed(12345) -- whatever the generator holds when resuming must not matter
  cn.randn{77}
  local model = new_model(7, config) -- other initial weights: the checkpoint replaces them
  local second = train.run(options{model = model, steps = 2 * N, out = self.dir .. "/b", flip = true,
                                   resume = self.dir .. "/b/checkpoint.safetensors"})
  lu.assertEquals(second.start_step, N)
  lu.assertEquals(second.step, 2 * N)
  for s = 1, N do lu.assertEquals(first.losses[s], straight.losses[s], "step " .. s) end
  for s = N + 1, 2 * N do
    lu.assertNotNil(second.losses[s])
    lu.assertEquals(second.losses[s], straight.losses[s], "step " .. s)
  end
  lu.assertNil(second.losses[N]) -- only the steps run here
  -- the comparison has teeth: the second half's losses are not the first half's
  local same = 0
  for s = 1, N do if straight.losses[s] == straight.losses[N + s] then same = same + 1 end end
  lu.assertEquals(same, 0)
  -- identical final parameters, EMA shadows and optimiser moments
  local pa, pb = straight.model:parameters(), model:parameters()
  lu.assertEquals(#pa, #pb)
  for i = 1, #pa do lu.assertEquals(max_diff(pa[i], pb[i]), 0, "parameter " .. i) end
  local sa, sb = straight.ema:shadows(), second.ema:shadows()
  for i = 1, #sa do lu.assertEquals(max_diff(sa[i], sb[i]), 0, "EMA shadow " .. i) end
  lu.assertEquals(second.ema.num_updates, 2 * N)
  local ta, tb = straight.optimizer:state_dict(), second.optimizer:state_dict()
  for k, v in pairs(ta) do lu.assertEquals(max_diff(v, tb[k]), 0, k) end
  -- the resumed CSV holds steps 1..2N with the uninterrupted run's losses and rates
  local _, ra = read_csv(self.dir .. "/a/loss.csv")
  local _, rb = read_csv(self.dir .. "/b/loss.csv")
  lu.assertEquals(#rb, 2 * N)
  for i = 1, 2 * N do
    lu.assertEquals(rb[i].step, i)
    lu.assertEquals(rb[i].loss, ra[i].loss)
    lu.assertEquals(rb[i].lr, ra[i].lr)
  end
  -- and the final checkpoints hold the same tensors
  local ca, cb = checkpoint.load(self.dir .. "/a/checkpoint.safetensors"), checkpoint.load(self.dir .. "/b/checkpoint.safetensors")
  lu.assertEquals(cb.step, 2 * N)
  lu.assertEquals(cb.rng, ca.rng)
  lu.assertEquals(cb.data, ca.data)
  for k, v in pairs(ca.model) do lu.assertEquals(max_diff(v, cb.model[k]), 0, k) end
end

-- The checkpoint carries the training's CPU seconds over resumes; a checkpoint written before they
-- were recorded starts the count at its step (cpu_seconds_from), so a report can say it is partial.
function TestTrainResume:test_cpu_seconds_add_up_over_resumes()
  local dir = self.dir .. "/cpu"
  local path = dir .. "/checkpoint.safetensors"
  local first = train.run(options{model = new_model(1), steps = 3, out = dir})
  local c1 = checkpoint.load(path)
  lu.assertTrue(c1.cpu_seconds > 0)
  lu.assertEquals(c1.cpu_seconds_from, 0)
  lu.assertEquals(first.cpu_seconds_from, 0)
  lu.assertTrue(math.abs(first.cpu_seconds - c1.cpu_seconds) < 0.5)
  train.run(options{model = new_model(1), steps = 6, out = dir, resume = path})
  local c2 = checkpoint.load(path)
  lu.assertTrue(c2.cpu_seconds > c1.cpu_seconds)
  lu.assertEquals(c2.cpu_seconds_from, 0)
  -- an older checkpoint: no CPU record
  local tensors, meta = cn.load(path)
  meta.cpu_seconds, meta.cpu_seconds_from = nil, nil
  cn.save(path, tensors, meta)
  lu.assertNil(checkpoint.load(path).cpu_seconds)
  local third = train.run(options{model = new_model(1), steps = 8, out = dir, resume = path})
  local c3 = checkpoint.load(path)
  lu.assertEquals(c3.cpu_seconds_from, 6)
  lu.assertEquals(third.cpu_seconds_from, 6)
  lu.assertTrue(c3.cpu_seconds > 0 and c3.cpu_seconds < c2.cpu_seconds + 60)
end

function TestTrainResume:test_resume_drops_csv_rows_past_the_checkpoint()
  -- a run that went on past its last checkpoint (killed at step 5, checkpoint at 4): the resumed
  -- run rewrites steps 5.. and the CSV has each step once
  local dir = self.dir .. "/r"
  train.run(options{model = new_model(1), steps = 4, out = dir})
  local f = assert(io.open(dir .. "/loss.csv", "a"))
  f:write("5,0.5,0.0002,1.0\n")
  f:close()
  local straight = train.run(options{model = new_model(1), steps = 6, out = self.dir .. "/s"})
  train.run(options{model = new_model(1), steps = 6, out = dir, resume = dir .. "/checkpoint.safetensors"})
  local _, rows = read_csv(dir .. "/loss.csv")
  lu.assertEquals(#rows, 6)
  for i, r in ipairs(rows) do
    lu.assertEquals(r.step, i)
    lu.assertEquals(r.loss, tonumber(string.format("%.9g", straight.losses[i])))
  end
end

function TestTrainResume:test_resume_checks_the_run()
  local path = self.dir .. "/c/checkpoint.safetensors"
  train.run(options{model = new_model(1), steps = 2, out = self.dir .. "/c"})
  local ok, err = pcall(train.run, options{model = new_model(1), steps = 4, schedule = "cosine", resume = path})
  lu.assertFalse(ok)
  lu.assertStrContains(err, "linear schedule, not cosine")
  ok, err = pcall(train.run, options{model = new_model(1), steps = 4, prediction = "v", resume = path})
  lu.assertFalse(ok)
  lu.assertStrContains(err, "predicts eps, not v")
  ok, err = pcall(train.run, options{model = new_model(1, {in_channels = 1, width = 4, resolution = 8}), steps = 4, resume = path})
  lu.assertFalse(ok)
  lu.assertStrContains(err, "model config mismatch")
  lu.assertStrContains(err, "width = 8 in the checkpoint, 4 in the model")
  -- at or past the requested steps: nothing happens
  local before = read_bytes(path)
  local r = train.run(options{model = new_model(1), steps = 2, out = self.dir .. "/c", resume = path})
  lu.assertEquals(r.step, 2)
  lu.assertNil(next(r.losses))
  lu.assertEquals(read_bytes(path), before)
end

-- ---- NaN -------------------------------------------------------------------------------------------

TestTrainNaN = {}

function TestTrainNaN:setUp() self.dir = helpers.temp_dir() end
function TestTrainNaN:tearDown() helpers.remove_dir(self.dir) end

local function check_stops(self, kind)
  local dir = self.dir .. "/" .. kind
  local model = poisoned(new_model(1), 5, kind)
  local saved_bytes
  local ok, err = pcall(train.run, options{model = model, steps = 10, out = dir, checkpoint_every = 2, keep_checkpoints = true,
    on_step = function(step) if step == 4 then saved_bytes = read_bytes(dir .. "/checkpoint.safetensors") end end})
  lu.assertFalse(ok)
  lu.assertStrContains(err, "at step 5")
  lu.assertStrContains(err, "stopped before the optimizer step")
  lu.assertStrContains(err, "checkpoint.safetensors', is untouched")
  lu.assertStrContains(err, kind == "grad" and "gradient norm is NaN" or "loss is NaN")
  -- the checkpoint of step 4 is byte for byte what it was; nothing was written for step 5
  lu.assertNotNil(saved_bytes)
  lu.assertEquals(read_bytes(dir .. "/checkpoint.safetensors"), saved_bytes)
  lu.assertEquals(read_bytes(dir .. "/checkpoint_step4.safetensors"), saved_bytes)
  lu.assertFalse(exists(dir .. "/checkpoint_step5.safetensors"))
  lu.assertFalse(exists(dir .. "/checkpoint_step6.safetensors"))
  local _, rows = read_csv(dir .. "/loss.csv")
  lu.assertEquals(#rows, 4)
  lu.assertEquals(rows[4].step, 4)
  -- the optimizer did not step: the weights are still those of the checkpoint, all finite
  local ck = checkpoint.load(dir .. "/checkpoint.safetensors")
  lu.assertEquals(ck.step, 4)
  for name, p in model:named_parameters() do
    lu.assertEquals(max_diff(p, ck.model[name]), 0, name)
  end
end

function TestTrainNaN:test_nan_loss_stops_before_the_step() check_stops(self, "loss") end
function TestTrainNaN:test_nan_gradient_stops_before_the_step() check_stops(self, "grad") end

-- ---- the CSV, the learning rate, sampling ----------------------------------------------------------

TestTrainLog = {}

function TestTrainLog:setUp() self.dir = helpers.temp_dir() end
function TestTrainLog:tearDown() helpers.remove_dir(self.dir) end

function TestTrainLog:test_csv_contents()
  local r = train.run(options{model = new_model(1), steps = 5, out = self.dir, lr = 1e-3, warmup = 4})
  local header, rows = read_csv(self.dir .. "/loss.csv")
  lu.assertEquals(header, "step,loss,lr,seconds")
  lu.assertEquals(#rows, 5)
  local expected_lr = {2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3}
  local last = 0
  for i, row in ipairs(rows) do
    lu.assertEquals(row.step, i)
    lu.assertEquals(row.loss, tonumber(string.format("%.9g", r.losses[i])))
    lu.assertAlmostEquals(row.lr, expected_lr[i], 1e-12)
    lu.assertTrue(row.seconds >= last)
    last = row.seconds
  end
  lu.assertEquals(r.loss, r.losses[5])
  lu.assertTrue(r.losses[1] > 0 and r.losses[1] < 10)
end

function TestTrainLog:test_plain_log_lines()
  local path = self.dir .. "/log.txt"
  local stream = assert(io.open(path, "w"))
  train.run(options{model = new_model(1), steps = 4, progress = "lines", log_every = 2, stream = stream})
  stream:close()
  local text = read_bytes(path)
  lu.assertStrContains(text, "training: steps 1..4, batch 8")
  lu.assertStrMatches(text, ".*step 2/4  loss [%d.]+  lr [%d.e-]+  [%d.]+ img/s.*")
  lu.assertStrContains(text, "step 4/4")
end

function TestTrainLog:test_sample_grids_change_nothing()
  local plain = train.run(options{model = new_model(1), steps = 4})
  local sampled = train.run(options{model = new_model(1), steps = 4, out = self.dir, sample_every = 2, sample_n = 4, sample_steps = 3})
  for s = 1, 4 do lu.assertEquals(sampled.losses[s], plain.losses[s]) end
  for i, p in ipairs(plain.model:parameters()) do lu.assertEquals(max_diff(p, sampled.model:parameters()[i]), 0) end
  local grid = cn.load_png(self.dir .. "/samples_step4.png")
  lu.assertEquals(grid:shape(), {1, 2 * (8 + 2) + 2, 2 * (8 + 2) + 2})
  lu.assertTrue(exists(self.dir .. "/samples_step2.png"))
end

function TestTrainLog:test_generate_samplers()
  local model = new_model(3)
  local sched = diffusion.schedule("linear", {T = 20})
  local before = cn.rng_state()
  local a = train.generate(model, sched, {2, 1, 8, 8}, {sampler = "ddpm", steps = 5, seed = 9})
  local b = train.generate(model, sched, {2, 1, 8, 8}, {sampler = "ddpm", steps = 5, seed = 9})
  lu.assertEquals(cn.rng_state(), before)
  lu.assertEquals(a:shape(), {2, 1, 8, 8})
  lu.assertEquals(max_diff(a, b), 0)
  lu.assertTrue(a:abs():max():item() <= 1 + 1e-6) -- clipped x0 predictions keep samples in range
  -- respacing with every step is plain DDPM
  local full = train.generate(model, sched, {2, 1, 8, 8}, {sampler = "ddpm", seed = 9})
  local direct = diffusion.sample_ddpm(sched, model, {2, 1, 8, 8}, {seed = 9, clip_x0 = true})
  lu.assertEquals(max_diff(full, direct), 0)
  local d = train.generate(model, sched, {2, 1, 8, 8}, {sampler = "ddim", steps = 4, eta = 0.5, seed = 9})
  lu.assertEquals(d:shape(), {2, 1, 8, 8})
  lu.assertTrue(model.training) -- the mode is restored
  local ok, err = pcall(train.generate, model, sched, {1, 1, 8, 8}, {sampler = "euler"})
  lu.assertFalse(ok)
  lu.assertStrContains(err, "sampler must be one of ddim, ddpm, dpmpp_2m, ode")
end

function TestTrainLog:test_bad_options()
  local ok, err = pcall(train.run, options{model = new_model(1), steps = 2, step = 3})
  lu.assertFalse(ok)
  lu.assertStrContains(err, "unknown option 'step'")
  ok, err = pcall(train.run, options{model = new_model(1), steps = 2, batch_size = 64})
  lu.assertFalse(ok)
  lu.assertStrContains(err, "holds 20 images, fewer than the batch size 64")
  ok, err = pcall(train.run, options{model = new_model(1), steps = 0})
  lu.assertFalse(ok)
  lu.assertStrContains(err, "steps must be an integer >= 1")
end

-- ---- checkpoints -------------------------------------------------------------------------------------

TestTrainCheckpoint = {}

function TestTrainCheckpoint:setUp() self.dir = helpers.temp_dir() end
function TestTrainCheckpoint:tearDown() helpers.remove_dir(self.dir) end

-- A model, an Adam and an EMA after three steps of plain training.
local function trained_state()
  local model = new_model(5)
  local opt = cn.optim.Adam(model, {lr = 1e-2})
  local ema = cn.optim.EMA(model, {decay = 0.9})
  local sched = diffusion.schedule("linear", {T = 50})
  local x0 = dataset(8).images
  for _ = 1, 3 do
    opt:zero_grad()
    diffusion.loss(sched, model, x0):backward()
    opt:step()
    ema:update()
  end
  return model, opt, ema
end

function TestTrainCheckpoint:test_round_trip()
  local model, opt, ema = trained_state()
  local path = self.dir .. "/ck.safetensors"
  local rng = cn.rng_state()
  checkpoint.save(path, {model = model, ema = ema, optimizer = opt, step = 3, schedule = "cosine", T = 50, prediction = "v",
    losses = {0.5, 0.25, 0.125}, data = {seed = 4, epoch = 2, position = 16}, seconds = 1.5, image_shape = {1, 8, 8},
    model_module = "cunet_test_tiny", meta = {note = "hello"}})
  -- the file's layout
  local tensors, meta = cn.load(path)
  lu.assertEquals(meta.format, "cunet.checkpoint")
  lu.assertEquals(meta.format_version, "1")
  lu.assertEquals(meta.step, "3")
  lu.assertEquals(meta.model_config, '{"in_channels":1,"resolution":8,"width":8}')
  lu.assertEquals(meta["optim.type"], "Adam")
  lu.assertEquals(meta["ema.num_updates"], "3")
  lu.assertEquals(meta.note, "hello")
  for name in model:named_parameters() do
    lu.assertNotNil(tensors["model." .. name], name)
    lu.assertNotNil(tensors["ema." .. name], name)
  end
  lu.assertNotNil(tensors["optim.state.1.exp_avg"])
  -- loading into fresh objects restores everything
  local model2 = new_model(6)
  local opt2 = cn.optim.Adam(model2, {lr = 1})
  local ema2 = cn.optim.EMA(model2, {decay = 0.5})
  cn.seed(99)
  local ck = checkpoint.load(path, {model = model2, ema = ema2, optimizer = opt2, rng = true})
  lu.assertEquals(cn.rng_state(), rng)
  lu.assertEquals(ck.step, 3)
  lu.assertEquals(ck.schedule, "cosine")
  lu.assertEquals(ck.T, 50)
  lu.assertEquals(ck.prediction, "v")
  lu.assertEquals(ck.losses, {0.5, 0.25, 0.125})
  lu.assertEquals(ck.data, {seed = 4, epoch = 2, position = 16})
  lu.assertEquals(ck.image_shape, {1, 8, 8})
  lu.assertEquals(ck.seconds, 1.5)
  lu.assertEquals(ck.config, model.config)
  lu.assertEquals(math.type(ck.config.width), "integer")
  local p1, p2 = model:parameters(), model2:parameters()
  for i = 1, #p1 do lu.assertEquals(max_diff(p1[i], p2[i]), 0) end
  for i, s in ipairs(ema:shadows()) do lu.assertEquals(max_diff(s, ema2:shadows()[i]), 0) end
  lu.assertEquals(ema2.num_updates, 3)
  lu.assertEquals(ema2.decay, 0.9)
  lu.assertEquals(opt2.lr, 1e-2)
  local t1, s1 = opt:state_dict()
  local t2, s2 = opt2:state_dict()
  lu.assertEquals(s2, s1)
  for k, v in pairs(t1) do lu.assertEquals(max_diff(v, t2[k]), 0, k) end
  -- the model rebuilt from the file: EMA weights by default, the trained ones on request
  local rebuilt = checkpoint.build_model(path)
  for i, s in ipairs(ema:shadows()) do lu.assertEquals(max_diff(rebuilt:parameters()[i], s), 0) end
  rebuilt = checkpoint.build_model(ck, {ema = false})
  for i = 1, #p1 do lu.assertEquals(max_diff(rebuilt:parameters()[i], p1[i]), 0) end
end

function TestTrainCheckpoint:test_errors()
  local model, opt, ema = trained_state()
  local path = self.dir .. "/ck.safetensors"
  checkpoint.save(path, {model = model, step = 3})
  local ok, err = pcall(checkpoint.load, self.dir .. "/missing.safetensors")
  lu.assertFalse(ok)
  lu.assertStrContains(err, "no checkpoint at '" .. self.dir .. "/missing.safetensors' (no such file)")
  -- a plain state_dict is a safetensors file but not a checkpoint
  cn.save(self.dir .. "/plain.safetensors", (model:state_dict()))
  ok, err = pcall(checkpoint.load, self.dir .. "/plain.safetensors")
  lu.assertFalse(ok)
  lu.assertStrContains(err, "is not a cunet training checkpoint")
  local f = assert(io.open(self.dir .. "/junk.safetensors", "wb"))
  f:write("not a safetensors file at all")
  f:close()
  ok, err = pcall(checkpoint.load, self.dir .. "/junk.safetensors")
  lu.assertFalse(ok)
  lu.assertStrContains(err, "is not a readable safetensors file")
  -- the config is compared before anything is loaded
  local other = new_model(2, {in_channels = 1, width = 4, resolution = 8})
  local before = other:parameters()[1]:clone()
  ok, err = pcall(checkpoint.load, path, {model = other})
  lu.assertFalse(ok)
  lu.assertStrContains(err, "model config mismatch")
  lu.assertStrContains(err, "width = 8 in the checkpoint, 4 in the model")
  lu.assertEquals(max_diff(other:parameters()[1], before), 0)
  -- same config claimed, other shapes: the state_dict check names the tensor
  ok, err = pcall(checkpoint.load, path, {model = other, config = model.config})
  lu.assertFalse(ok)
  lu.assertStrContains(err, "does not fit the model")
  lu.assertStrContains(err, "size mismatch")
  -- no EMA or optimizer state saved, but asked for
  ok, err = pcall(checkpoint.load, path, {model = new_model(1), ema = ema})
  lu.assertFalse(ok)
  lu.assertStrContains(err, "holds no EMA weights")
  ok, err = pcall(checkpoint.load, path, {model = new_model(1), optimizer = opt})
  lu.assertFalse(ok)
  lu.assertStrContains(err, "holds no optimizer state")
end

function TestTrainCheckpoint:test_unet_rebuilds_from_its_config()
  local ok, unet = pcall(require, "cunet.models.unet")
  if not ok then lu.skip("cunet.models.unet is not available: " .. tostring(unet)) end
  cn.seed(4)
  local model = unet.from_preset("mnist_small", {resolution = 16, attn_resolutions = {4}})
  local ema = cn.optim.EMA(model, {decay = 0.5})
  for _, p in ipairs(model:parameters()) do cn.no_grad(function() p:add_(0.25) end) end
  ema:update()
  local path = self.dir .. "/unet.safetensors"
  checkpoint.save(path, {model = model, ema = ema, step = 1, image_shape = {1, 16, 16}})
  local rebuilt, ck = checkpoint.build_model(path)
  lu.assertEquals(ck.model_module, "cunet.models.unet")
  lu.assertEquals(rebuilt.config, model.config)
  local shadows = ema:shadows()
  local params = rebuilt:parameters()
  lu.assertEquals(#params, #shadows)
  for i = 1, #params do lu.assertEquals(max_diff(params[i], shadows[i]), 0) end
  rebuilt = checkpoint.build_model(ck, {ema = false})
  for i, p in ipairs(model:parameters()) do lu.assertEquals(max_diff(rebuilt:parameters()[i], p), 0) end
end

function TestTrainCheckpoint:test_json()
  local json = checkpoint.json
  local v = {channels = 64, mult = {1, 2, 2, 2}, dropout = 0.1, attn = {16}, name = "a \"q\"\n\\", flag = false, zero = 2.0,
             nested = {x = {}, y = {-1.5e-7, 3}}}
  local text = json.encode(v)
  lu.assertEquals(text, '{"attn":[16],"channels":64,"dropout":0.1,"flag":false,"mult":[1,2,2,2],"name":"a \\"q\\"\\n\\\\",' ..
    '"nested":{"x":[],"y":[-1.5e-07,3]},"zero":2.0}')
  local back = json.decode(text)
  lu.assertEquals(back, v)
  lu.assertEquals(math.type(back.zero), "float")
  lu.assertEquals(math.type(back.channels), "integer")
  lu.assertEquals(json.decode(json.encode(1 / 3)), 1 / 3)
  local ok, err = pcall(json.decode, '{"a": [1, 2}')
  lu.assertFalse(ok)
  lu.assertStrContains(err, "expected ',' or ']'")
end

-- ---- the recipes, as subprocesses -------------------------------------------------------------------

TestTrainRecipes = {}

function TestTrainRecipes:setUp()
  self.dir = helpers.temp_dir()
  write_tiny_module(self.dir)
end
function TestTrainRecipes:tearDown() helpers.remove_dir(self.dir) end

local function run_recipe(dir, script, args)
  local cmd = string.format("LUA_PATH=%s %s %s %s 2>&1", shell_quote(dir .. "/?.lua;;"), EXE, script, args)
  local p = io.popen(cmd)
  local out = p:read("a")
  local ok, _, code = p:close()
  return ok and 0 or code, out
end

function TestTrainRecipes:test_help()
  local code, out = run_recipe(self.dir, "recipes/train_unet.lua", "--help")
  lu.assertEquals(code, 0)
  for _, opt in ipairs{"--data", "--size", "--preset", "--steps", "--batch", "--lr", "--warmup", "--ema", "--clip",
                       "--schedule", "--prediction", "--out", "--resume", "--seed", "--threads"} do
    lu.assertStrContains(out, opt)
  end
  code, out = run_recipe(self.dir, "recipes/sample.lua", "--help")
  lu.assertEquals(code, 0)
  for _, opt in ipairs{"--ckpt", "--sampler", "--steps", "--eta", "--n", "--seed", "--ema", "--out"} do
    lu.assertStrContains(out, opt)
  end
end

function TestTrainRecipes:test_train_resume_and_sample()
  -- a folder of 16 grey 8×8 PNGs
  local images = self.dir .. "/images"
  os.execute("mkdir -p " .. shell_quote(images))
  cn.seed(3)
  for i = 1, 16 do cn.save_png(string.format("%s/%02d.png", images, i), cn.rand{1, 8, 8}) end
  local out = self.dir .. "/run"
  local common = string.format("--model cunet_test_tiny --preset tiny --data folder:%s --size 8 --batch 4 --T 50 " ..
    "--warmup 2 --checkpoint-every 2 --sample-every 0 --threads 1 --out %s", shell_quote(images), shell_quote(out))
  local code, log = run_recipe(self.dir, "recipes/train_unet.lua", common .. " --steps 3")
  lu.assertEquals(code, 0, log)
  lu.assertStrContains(log, "16 images")
  local _, rows = read_csv(out .. "/loss.csv")
  lu.assertEquals(#rows, 3)
  lu.assertEquals(checkpoint.load(out .. "/checkpoint.safetensors").step, 3)
  code, log = run_recipe(self.dir, "recipes/train_unet.lua", common .. " --steps 5 --resume " .. shell_quote(out .. "/checkpoint.safetensors"))
  lu.assertEquals(code, 0, log)
  lu.assertStrContains(log, "training (resumed): steps 4..5")
  _, rows = read_csv(out .. "/loss.csv")
  lu.assertEquals(#rows, 5)
  -- the same 5 steps in one go give the same losses
  local straight = self.dir .. "/straight"
  code, log = run_recipe(self.dir, "recipes/train_unet.lua", common:gsub("%-%-out .*$", "--out " .. shell_quote(straight)) .. " --steps 5")
  lu.assertEquals(code, 0, log)
  local _, rows2 = read_csv(straight .. "/loss.csv")
  for i = 1, 5 do lu.assertEquals(rows[i].loss, rows2[i].loss, "step " .. i) end
  local ck = checkpoint.load(out .. "/checkpoint.safetensors")
  lu.assertEquals(ck.step, 5)
  lu.assertEquals(ck.model_module, "cunet_test_tiny")
  lu.assertEquals(ck.image_shape, {1, 8, 8})

  local grid = self.dir .. "/grid.png"
  code, log = run_recipe(self.dir, "recipes/sample.lua", string.format("--ckpt %s --n 6 --nrow 3 --steps 4 --seed 1 --out %s",
    shell_quote(out .. "/checkpoint.safetensors"), shell_quote(grid)))
  lu.assertEquals(code, 0, log)
  lu.assertStrContains(log, "wrote " .. grid)
  lu.assertStrMatches(log, ".*[%d.]+ s per sample.*")
  local png = cn.load_png(grid)
  lu.assertEquals(png:shape(), {1, 2 * 10 + 2, 3 * 10 + 2})
  -- DDPM with the trained weights, and a clear failure for a missing checkpoint
  code, log = run_recipe(self.dir, "recipes/sample.lua", string.format("--ckpt %s --sampler ddpm --steps 5 --no-ema --n 2 --out %s",
    shell_quote(out .. "/checkpoint.safetensors"), shell_quote(self.dir .. "/ddpm.png")))
  lu.assertEquals(code, 0, log)
  lu.assertStrContains(log, "trained weights")
  lu.assertTrue(exists(self.dir .. "/ddpm.png"))
  code, log = run_recipe(self.dir, "recipes/sample.lua", "--ckpt " .. shell_quote(self.dir .. "/nope.safetensors"))
  lu.assertNotEquals(code, 0)
  lu.assertStrContains(log, "no checkpoint at")
end
