-- test_ode_blocks_study.lua — issue 14 item 5: the cU-Net with adaptive (dopri5) ODE blocks and RNODE.
-- The model takes `regularize` and sums its blocks' penalties (model:penalties(), with a gradient to the
-- parameters) and their evaluations (model:nfe(): dopri5 takes more than the authors' one rk4_38 step);
-- train_cunet.lua --kinetic/--jacobian adds the penalty to the loss (the step-2 loss differs from λ = 0
-- on the same seed), keeps it in the checkpoint and refuses to change it on resume; and
-- recipes/ode_blocks_study.lua has the matrix the issue asks for, prints its commands on --dry-run,
-- trains and resumes a run exactly, evaluates it at every block solver and reports NFE per forward.

local lu = require "luaunit"
local helpers = require "helpers"
local cn = require "cunet"
local fs = require "cunet.fs"
local checkpoint = require "cunet.checkpoint"
local cunet = require "cunet.models.continuous_unet"
local block_solver = require "cunet.block_solver"
local json = checkpoint.json

local EXE = os.getenv("CUNET_EXE") or "./cunet"
local study = dofile("recipes/ode_blocks_study.lua")
local shell_quote, run, losses = helpers.shell_quote, helpers.run_script, helpers.csv_losses

-- a small cU-Net on 8×8 images, its blocks solved by `method`
local function small(method, regularize)
  cn.seed(3)
  return cunet.from_preset("mnist_028m", {resolution = 8, in_channels = 1, method = method, rtol = 1e-2, atol = 1e-2,
    regularize = regularize})
end

TestOdeBlocks = {}

function TestOdeBlocks:setUp()
  self.dir = helpers.temp_dir()
end

function TestOdeBlocks:tearDown()
  helpers.remove_dir(self.dir)
end

-- The penalties of the 7 blocks, summed, with a gradient to the parameters; none in eval mode; the
-- config keeps regularize (a checkpoint rebuilds it); a bad one is a clear error.
function TestOdeBlocks:testModelPenalties()
  local m = small("dopri5", {kinetic = 0.1, jacobian = 0.1})
  lu.assertEquals(m.config.regularize, {kinetic = 0.1, jacobian = 0.1})
  local x = cn.randn{2, 1, 8, 8}
  m:train()
  m(x, 5)
  local p = m:penalties()
  local sum = 0
  for _, entry in ipairs(m:ode_levels()) do sum = sum + entry[2].ode:penalties().total:item() end
  lu.assertTrue(p.total:item() > 0)
  lu.assertAlmostEquals(p.total:item(), sum, 1e-5 * sum)
  lu.assertAlmostEquals(p.total:item(), p.kinetic:item() + p.jacobian:item(), 1e-5 * sum)
  p.total:backward()
  local reached = 0
  for _, param in ipairs(m:parameters()) do
    if param.grad and param.grad:abs():sum():item() > 0 then reached = reached + 1 end
  end
  lu.assertTrue(reached > 10, "the penalty's gradient reached " .. reached .. " parameters")
  m:eval()
  m(x, 5)
  lu.assertEquals(m:penalties().total, 0)
  lu.assertErrorMsgContains("regularize must be false or a table", function() small("dopri5", 0.1) end)
  lu.assertErrorMsgContains("kinetic", function() small("dopri5", {kinetic = -1}) end)
end

-- NFE per forward: 4 evaluations per block for the authors' one rk4_38 step (7 blocks), more for
-- dopri5; the meter of the sampling recipes counts the same per forward.
function TestOdeBlocks:testNfe()
  local x = cn.randn{2, 1, 8, 8}
  local fixed, adaptive = small("rk4_38"), small("dopri5")
  lu.assertErrorMsgContains("no forward has run", function() fixed:nfe() end)
  cn.no_grad(function() fixed(x, 5) adaptive(x, 5) end)
  lu.assertEquals(fixed:nfe(), 28)
  lu.assertTrue(adaptive:nfe() > fixed:nfe(), tostring(adaptive:nfe()))
  local meter = block_solver.meter(fixed)
  lu.assertNil(meter:per_forward())
  block_solver.apply(fixed, {block_steps = 2, block_rtol = 0, block_atol = 0}, error)
  cn.no_grad(function() fixed(x, 5) fixed(x, 7) end)
  lu.assertEquals(meter:per_forward(), 56)
  lu.assertEquals(block_solver.describe(fixed), "rk4_38 2 steps")
  lu.assertNil(block_solver.apply(fixed, {block_steps = 0, block_rtol = 0, block_atol = 0}, error))
  lu.assertErrorMsgContains("for a cU-Net checkpoint", function()
    block_solver.apply(cn.nn.Linear(2, 2), {block_method = "dopri5", block_steps = 0, block_rtol = 0, block_atol = 0}, error)
  end)
end

-- train_cunet.lua --kinetic: the penalty joins the loss, is logged, kept in the checkpoint and refused
-- as a change on resume. With the fixed rk4_38 step and the kinetic term alone (no noise drawn), the
-- penalty changes nothing of the solve, so step 1's task loss is that of λ = 0, and step 2's differs
-- only through the update that saw the penalty's gradient.
function TestOdeBlocks:testRecipePenalty()
  assert(fs.mkdir_p(self.dir .. "/images"))
  cn.seed(11)
  for i = 1, 8 do cn.save_png(string.format("%s/images/%02d.png", self.dir, i), cn.rand{1, 8, 8}) end
  local function train(name, extra)
    local out = self.dir .. "/" .. name
    local code, log = run("recipes/train_cunet.lua", string.format("--data folder:%s --preset mnist_028m --size 8 --batch 4 "
      .. "--warmup 0 --sample-every 0 --threads 1 --log-every 1 --method rk4_38 --ode-steps 1 --steps 2 "
      .. "--out %s %s", shell_quote(self.dir .. "/images"), shell_quote(out), extra))
    lu.assertEquals(code, 0, log)
    return losses(out .. "/loss.csv"), log, out
  end
  local plain, plain_log = train("plain", "")
  local reg, reg_log, out = train("rnode", "--kinetic 1")
  lu.assertNotStrContains(plain_log, "penalty")
  lu.assertStrContains(reg_log, "RNODE: kinetic 1, jacobian 0")
  local penalty = tonumber(reg_log:match("step 1/2  loss [%d.]+  penalty ([%d.e+-]+)"))
  lu.assertTrue(penalty and penalty > 0, reg_log)
  lu.assertEquals(reg[1], plain[1])
  lu.assertNotEquals(reg[2], plain[2])
  local ck = checkpoint.load(out .. "/checkpoint.safetensors")
  lu.assertEquals({ck.config.method, ck.config.steps, ck.config.regularize}, {"rk4_38", 1, {kinetic = 1, jacobian = 0}})
  lu.assertEquals(checkpoint.build_model(ck).config.regularize, {kinetic = 1, jacobian = 0})
  local code, log = run("recipes/train_cunet.lua", string.format("--resume %s --steps 3 --kinetic 2",
    shell_quote(out .. "/checkpoint.safetensors")))
  lu.assertNotEquals(code, 0)
  lu.assertStrContains(log, "--kinetic 2 differs from its model config (regularize.kinetic = 1")
  code, log = run("recipes/train_cunet.lua", string.format("--resume %s --steps 3 --log-every 1",
    shell_quote(out .. "/checkpoint.safetensors")))
  lu.assertEquals(code, 0, log)
  lu.assertStrContains(log, "RNODE: kinetic 1, jacobian 0")
  lu.assertStrContains(log, "penalty")
end

-- The matrix: the authors' blocks, dopri5 at two tolerances, each with and without RNODE (and a lighter
-- λ at rtol 0.01); 300 steps
-- fine-tuning the committed 0.28 M cU-Net of the study; every checkpoint at several block solvers, n >= 1,000.
function TestOdeBlocks:testMatrix()
  lu.assertEquals(#study.RUNS, 6)
  local function opts(list)
    local t = {}
    for i = 1, #list do
      if list[i]:match("^%-%-") then t[list[i]] = (list[i + 1] and not list[i + 1]:match("^%-%-")) and list[i + 1] or true end
    end
    return t
  end
  local base = opts(study.RUNS[1].flags)
  lu.assertEquals({base["--method"], base["--ode-steps"], base["--kinetic"]}, {"rk4_38", "1", nil})
  local seen = {}
  for i = 2, 6 do
    local f = opts(study.RUNS[i].flags)
    lu.assertEquals(f["--method"], "dopri5")
    lu.assertEquals(f["--ode-rtol"], f["--ode-atol"])
    local lambda = study.RUNS[i].rnode
    lu.assertEquals(f["--kinetic"] ~= nil, lambda ~= nil)
    if lambda then lu.assertEquals({f["--kinetic"], f["--jacobian"]}, {string.format("%g", lambda.kinetic), string.format("%g", lambda.jacobian)}) end
    seen[f["--ode-rtol"] .. (f["--kinetic"] and "+rnode" .. f["--kinetic"] or "")] = true
  end
  lu.assertEquals(seen, {["0.01"] = true, ["0.001"] = true, ["0.01+rnode0.01"] = true, ["0.001+rnode0.01"] = true,
    ["0.01+rnode0.001"] = true})
  lu.assertTrue(study.RNODE.kinetic > 0 and study.RNODE.jacobian > 0)
  lu.assertTrue(study.RNODE_LIGHT.kinetic < study.RNODE.kinetic)
  local f = opts(study.FINETUNE)
  lu.assertEquals({f["--batch"], f["--lr"], f["--sample-every"]}, {"64", "1e-4", "0"})
  lu.assertEquals({study.STEPS, study.PRESET}, {300, "mnist_028m"})
  lu.assertTrue(fs.exists(study.INIT), study.INIT) -- the committed weights every run starts from
  lu.assertTrue(study.EVAL_N >= 1000)
  lu.assertEquals(study.EVAL_STEPS, 20)
  lu.assertTrue(#study.EVAL_SOLVERS >= 3)
end

-- --dry-run writes nothing and prints the 6 training and 24 evaluation commands.
function TestOdeBlocks:testDryRun()
  local out_dir = self.dir .. "/dry"
  local code, out = run("recipes/ode_blocks_study.lua", "--dry-run --out " .. out_dir)
  lu.assertEquals(code, 0, out)
  lu.assertFalse(fs.exists(out_dir), "--dry-run wrote " .. out_dir)
  lu.assertStrContains(out, "recipes/train_cunet.lua --init checkpoints/study/authors_cunet_028m_s0.safetensors --preset mnist_028m --seed 0")
  lu.assertStrContains(out, "--method dopri5 --ode-rtol 0.001 --ode-atol 0.001 --kinetic 0.01 --jacobian 0.01 --steps 300 "
    .. "--checkpoint-every 50 --out " .. out_dir .. "/dopri5_0.001_rnode")
  lu.assertStrContains(out, "--method dopri5 --ode-rtol 0.01 --ode-atol 0.01 --kinetic 0.001 --jacobian 0.001 --steps 300 "
    .. "--checkpoint-every 50 --out " .. out_dir .. "/dopri5_0.01_rnode_light")
  lu.assertStrContains(out, "recipes/fid_vs_steps.lua --ckpt " .. out_dir .. "/rk4_38/checkpoint.safetensors --sampler ddim "
    .. "--spacing trailing --steps 20 --block-method dopri5 --block-rtol 0.1 --block-atol 0.1 --n 1024 --batch 64")
  local _, trains = out:gsub("recipes/train_cunet.lua", "")
  local _, evals = out:gsub("recipes/fid_vs_steps.lua", "")
  lu.assertEquals({trains, evals}, {6, 6 * #study.EVAL_SOLVERS})
  code, out = run("recipes/ode_blocks_study.lua", "--train --only nosuchrun --out " .. out_dir)
  lu.assertEquals(code, 2)
  lu.assertStrContains(out, "no run named 'nosuchrun'")
end

-- The baseline run: 2 steps resumed to 4 gives the losses of 4 in one go; the state counts CPU time;
-- --eval scores every block solver (so it resumes with nothing left) and --report tables NFE per
-- forward, the authors' 28 below dopri5's.
function TestOdeBlocks:testTrainResumeEvalReport()
  local base = "--only rk4_38 --limit 64 "
  local a, b = self.dir .. "/a", self.dir .. "/b"
  local code, out = run("recipes/ode_blocks_study.lua", "--train " .. base .. "--steps-override 2 --out " .. a)
  lu.assertEquals(code, 0, out)
  code, out = run("recipes/ode_blocks_study.lua", "--train " .. base .. "--steps-override 4 --out " .. a)
  lu.assertEquals(code, 0, out)
  lu.assertStrContains(out, "rk4_38 steps 3..4")
  code, out = run("recipes/ode_blocks_study.lua", "--train " .. base .. "--steps-override 4 --out " .. b)
  lu.assertEquals(code, 0, out)
  local chunked, straight = losses(a .. "/rk4_38/loss.csv"), losses(b .. "/rk4_38/loss.csv")
  lu.assertEquals(#straight, 4)
  lu.assertEquals(chunked, straight)
  local state = json.decode(io.open(a .. "/study_state.json"):read("a"))
  lu.assertEquals({state.runs.rk4_38.calls, state.runs.rk4_38.train_steps}, {2, 4})
  lu.assertTrue(state.runs.rk4_38.train_cpu > 0)

  code, out = run("recipes/ode_blocks_study.lua", "--eval " .. base .. "--steps-override 4 --n 4 --out " .. a)
  lu.assertEquals(code, 0, out)
  local s = study.new(a, {exe = EXE, steps = 4, n = 4})
  lu.assertEquals(#s:eval_items(study.RUNS[1]), 0)
  -- a cell scored by another process after this driver listed its work is skipped, not run again
  local stale = {}
  for _, sv in ipairs(study.EVAL_SOLVERS) do stale[#stale + 1] = {solver = sv, command = {"false"}} end
  s.eval_items = function() return stale end
  local said, print0 = {}, _G.print
  _G.print = function(...) said[#said + 1] = table.concat({...}, " ") end
  local ran, ok = pcall(s.eval, s, {study.RUNS[1]})
  _G.print = print0
  lu.assertTrue(ran, ok)
  lu.assertTrue(ok)
  lu.assertEquals(#said, #study.EVAL_SOLVERS)
  lu.assertStrContains(said[1], "skipped: scored meanwhile")
  lu.assertEquals(#s.failed, 0)
  local fixed = s:eval_row(study.RUNS[1], study.EVAL_SOLVERS[1])
  lu.assertEquals(fixed.block_nfe, 28)
  for i = 2, #study.EVAL_SOLVERS do
    local r = s:eval_row(study.RUNS[1], study.EVAL_SOLVERS[i])
    lu.assertTrue(r.block_nfe > 28, study.EVAL_SOLVERS[i].key)
    lu.assertTrue(r.seconds > 0 and r.fid > 0)
  end
  code, out = run("recipes/ode_blocks_study.lua", "--report " .. base .. "--steps-override 4 --n 4 --out " .. a)
  lu.assertEquals(code, 0, out)
  local md = io.open(a .. "/report.md"):read("a")
  lu.assertStrContains(md, "| rk4_38, 1 step (authors) | 4 |")
  lu.assertStrContains(md, "| rk4_38 1 step | 28.0 |")
  lu.assertTrue(fs.exists(a .. "/fid_vs_nfe.csv"))
end
