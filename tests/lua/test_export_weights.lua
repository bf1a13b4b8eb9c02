-- tests/lua/test_export_weights.lua — tools/export_weights.lua: a training checkpoint's EMA (or
-- trained) weights as model.*, without optimizer state, in F32 or F16 (half the bytes, the rounding
-- error printed), and its option errors.

local lu = require "luaunit"
local helpers = require "helpers"
local cn = require "cunet"
local nn = cn.nn
local optim = require "cunet.optim"
local checkpoint = require "cunet.checkpoint"

local q = helpers.shell_quote

TestExportWeights = {}

function TestExportWeights:setUp()
  self.dir = helpers.temp_dir()
  cn.seed(3)
  local model = nn.Linear(5, 4)
  local ema = optim.EMA(model:parameters(), {decay = 0.5, warmup = false})
  local opt = optim.Adam(model:parameters(), {lr = 1e-3})
  cn.no_grad(function() -- the trained weights move away from the EMA
    for _, p in ipairs(model:parameters()) do p:copy_(p * 3) end
  end)
  self.model, self.ema = model, ema
  self.ckpt = self.dir .. "/checkpoint.safetensors"
  checkpoint.save(self.ckpt, {model = model, ema = ema, optimizer = opt, step = 7, model_module = "cunet.nn"})
end

function TestExportWeights:tearDown() helpers.remove_dir(self.dir) end

local function size_of(path)
  local f = assert(io.open(path, "rb"))
  local n = f:seek("end")
  f:close()
  return n
end

function TestExportWeights:testEmaF32AndF16()
  local out32, out16 = self.dir .. "/w32.safetensors", self.dir .. "/w16.safetensors"
  local code, text = helpers.run_script("tools/export_weights.lua", q(self.ckpt) .. " " .. q(out32))
  lu.assertEquals(code, 0, text)
  lu.assertStrContains(text, "2 tensors (ema weights)")
  local w, meta = cn.load(out32)
  lu.assertEquals(meta.weights, "ema")
  lu.assertEquals(meta.step, "7")
  lu.assertNil(meta["optim.step"])
  local shadows = self.ema:shadows()
  local by_name = {}
  for name, p in self.model:named_parameters() do by_name[name] = p end
  local compared = 0
  for i, p in ipairs(self.ema.params) do
    for name, q2 in pairs(by_name) do
      if q2 == p then
        lu.assertEquals(helpers.max_abs_diff(w["model." .. name], shadows[i]), 0, name)
        lu.assertTrue(helpers.max_abs_diff(w["model." .. name], p) > 0, name .. ": the EMA, not the trained weights")
        compared = compared + 1
      end
    end
  end
  lu.assertEquals(compared, 2)
  for name in pairs(w) do lu.assertStrContains(name, "model.") end

  code, text = helpers.run_script("tools/export_weights.lua", "--dtype F16 " .. q(self.ckpt) .. " " .. q(out16))
  lu.assertEquals(code, 0, text)
  lu.assertStrContains(text, "F16: largest rounding error")
  local h = cn.load(out16)
  for name, t in pairs(w) do
    local d = helpers.max_abs_diff(h[name], t)
    lu.assertTrue(d <= t:abs():max():item() * 2 ^ -11, name .. " " .. d)
  end
  lu.assertTrue(size_of(out16) < size_of(out32))
  -- an F32 export exported again in F16: the same weights as from the checkpoint, still "ema" and
  -- still naming the training checkpoint they came from
  local again = self.dir .. "/again16.safetensors"
  code, text = helpers.run_script("tools/export_weights.lua", "--dtype F16 " .. q(out32) .. " " .. q(again))
  lu.assertEquals(code, 0, text)
  lu.assertStrContains(text, "2 tensors (ema weights)")
  local a, ameta = cn.load(again)
  for name, t in pairs(h) do lu.assertEquals(helpers.max_abs_diff(a[name], t), 0, name) end
  lu.assertEquals({ameta.weights, ameta.exported_from, ameta.step}, {"ema", self.ckpt, "7"})

  code, text = helpers.run_script("tools/export_weights.lua", "--no-ema " .. q(self.ckpt) .. " " .. q(out32))
  lu.assertEquals(code, 0, text)
  lu.assertStrContains(text, "(trained weights)")
  lu.assertEquals(helpers.max_abs_diff(cn.load(out32)["model.weight"], self.model.weight), 0)
end

function TestExportWeights:testErrors()
  local code, text = helpers.run_script("tools/export_weights.lua", "--dtype BF16 a b")
  lu.assertEquals(code, 2)
  lu.assertStrContains(text, "--dtype must be one of F32, F16")
  code, text = helpers.run_script("tools/export_weights.lua", q(self.ckpt))
  lu.assertEquals(code, 2)
  lu.assertStrContains(text, "usage:")
  code, text = helpers.run_script("tools/export_weights.lua", q(self.dir .. "/missing") .. " " .. q(self.dir .. "/o"))
  lu.assertTrue(code ~= 0)
  lu.assertStrContains(text, "cannot open")
end
