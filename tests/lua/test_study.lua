-- test_study.lua — recipes/study_mnist.lua, the driver of issue 12's MNIST study: its matrix is the one the
-- issue asks for (10 runs and their options), --dry-run prints commands the recipes accept, --train
-- trains a run for a few steps and resumes it from its checkpoint exactly (the losses of a 2 + 2-step
-- run are those of a straight 4-step one), the scan commands of every sampler run and are found again
-- (so --scan resumes), --report tables scan CSVs with seed spreads, a deadline sizes the training
-- chunks to whole checkpoint intervals, and two drivers on different runs keep each other's records in
-- the shared state file.

local lu = require "luaunit"
local cn = require "cunet"
local helpers = require "helpers"
local fs = require "cunet.fs"
local json = require("cunet.checkpoint").json

local EXE = os.getenv("CUNET_EXE") or "./cunet"
local study = dofile("recipes/study_mnist.lua")

local losses = helpers.csv_losses
-- the committed weights of the finished runs are not used: every test starts its runs afresh
local function run(args) return helpers.run_script("recipes/study_mnist.lua", "--committed '' " .. args) end

TestStudy = {}

function TestStudy:setUp()
  self.dir = helpers.temp_path()
end

function TestStudy:tearDown()
  helpers.remove_dir(self.dir)
end

-- The issue's matrix: the authors' setup at both sizes, both families, 2 seeds; Ho's at 1.1 M, one seed.
function TestStudy:testMatrix()
  lu.assertEquals(#study.RUNS, 10)
  local count, names = {}, {}
  for _, r in ipairs(study.RUNS) do
    local key = string.format("%s %s %s", r.setup, r.family, r.preset)
    count[key] = (count[key] or 0) + 1
    lu.assertNil(names[r.name], "duplicate run name " .. r.name)
    names[r.name] = true
  end
  lu.assertEquals(count, {
    ["authors unet mnist_028m"] = 2, ["authors cunet mnist_028m"] = 2,
    ["authors unet mnist_11m"] = 2, ["authors cunet mnist_11m"] = 2,
    ["ho unet mnist_11m"] = 1, ["ho cunet mnist_11m"] = 1,
  })
  local function opts(list)
    local t = {}
    for i = 1, #list do
      if list[i]:match("^%-%-") then t[list[i]] = (list[i + 1] and not list[i + 1]:match("^%-%-")) and list[i + 1] or true end
    end
    return t
  end
  local a, h, c = opts(study.SETUPS.authors), opts(study.SETUPS.ho), opts(study.COMMON)
  lu.assertEquals({a["--prediction"], a["--schedule"], a["--betas"], a["--no-flip"]}, {"v", "sigmoid", "0.9,0.99", true})
  lu.assertEquals({h["--prediction"], h["--schedule"], h["--betas"], h["--no-flip"]}, {"eps", "linear", "0.9,0.999", true})
  lu.assertEquals({c["--batch"], c["--data"]}, {"64", "mnist"})
  lu.assertEquals({study.STEPS, study.CHECKPOINT_EVERY}, {6000, 250})
  lu.assertEquals(study.SCAN_STEPS, {1, 2, 3, 5, 10, 20, 50, 100})
  lu.assertTrue(study.SCAN_N >= 1000)
end

-- --dry-run writes nothing and prints, per run, the fresh training command with the study's options.
function TestStudy:testDryRun()
  local code, out = run("--dry-run --only authors_cunet_11m_s1,ho_unet_11m_s0 --out " .. self.dir)
  lu.assertEquals(code, 0, out)
  lu.assertFalse(fs.exists(self.dir), "--dry-run wrote " .. self.dir)
  lu.assertStrContains(out, "recipes/train_cunet.lua --preset mnist_11m --seed 1 --prediction v --schedule sigmoid " ..
    "--betas 0.9,0.99 --no-flip --ema 0.99999 --data mnist --batch 64")
  lu.assertStrContains(out, "--steps 6000 --checkpoint-every 250 --out " .. self.dir .. "/authors_cunet_11m_s1")
  lu.assertStrContains(out, "recipes/train_unet.lua --preset mnist_11m --seed 0 --prediction eps --schedule linear")
  lu.assertStrContains(out, "recipes/fid_vs_steps.lua --ckpt " .. self.dir .. "/ho_unet_11m_s0/checkpoint.safetensors " ..
    "--sampler ddim --spacing trailing --steps 100 --n 1024 --batch 64")
  lu.assertStrContains(out, "--sampler ode --ode-method dopri5 --rtol 0.0001")
  local _, scans = out:gsub("fid_vs_steps.lua", "")
  lu.assertEquals(scans, 2 * (3 * 8 + 4))
  local code2, out2 = run("--train --only nosuchrun --out " .. self.dir)
  lu.assertEquals(code2, 2)
  lu.assertStrContains(out2, "no run named 'nosuchrun'")
end

-- 2 steps, then resumed to 4 from the checkpoint: the same losses as 4 steps in one go; the state
-- file counts both calls; the scan commands of every sampler run and are then no longer missing.
function TestStudy:testTrainResumeScan()
  local name, base = "authors_unet_028m_s0", "--only authors_unet_028m_s0 --limit 64 "
  local code, out = run("--train " .. base .. "--steps-override 2 --out " .. self.dir .. "/a")
  lu.assertEquals(code, 0, out)
  lu.assertStrContains(out, name .. " at step 2")
  code, out = run("--train " .. base .. "--steps-override 4 --out " .. self.dir .. "/a")
  lu.assertEquals(code, 0, out)
  lu.assertStrContains(out, name .. " steps 3..4")
  local log = io.open(self.dir .. "/a/" .. name .. "/train.log"):read("a")
  lu.assertStrContains(log, "--resume " .. self.dir .. "/a/" .. name .. "/checkpoint.safetensors --steps 4")
  lu.assertStrContains(log, "training (resumed): steps 3..4")
  code, out = run("--train " .. base .. "--steps-override 4 --out " .. self.dir .. "/b")
  lu.assertEquals(code, 0, out)
  local chunked, straight = losses(self.dir .. "/a/" .. name .. "/loss.csv"), losses(self.dir .. "/b/" .. name .. "/loss.csv")
  lu.assertEquals(#straight, 4)
  lu.assertEquals(chunked, straight)
  local state = json.decode(io.open(self.dir .. "/a/study_state.json"):read("a"))
  lu.assertEquals({state.runs[name].calls, state.runs[name].train_steps}, {2, 4})
  lu.assertTrue(state.runs[name].train_cpu > 0)
  code, out = run("--list " .. base .. "--steps-override 4 --out " .. self.dir .. "/a")
  lu.assertStrContains(out, "4/4")

  -- one scan command per sampler, as --scan runs them (n = 4 samples here)
  local s = study.new(self.dir .. "/a", {exe = EXE, steps = 4, n = 4, committed = false})
  local r = study.RUNS[1]
  lu.assertEquals(r.name, name)
  local items = s:scan_items(r)
  lu.assertEquals(#items, 28)
  local seen = {}
  for _, item in ipairs(items) do
    if not seen[item.sampler.variant] and (item.value == 1 or item.value == 0.1) then
      seen[item.sampler.variant] = true
      local cmd = {}
      for i, w in ipairs(item.command) do cmd[i] = fs.shell_quote(w) end
      local p = io.popen(table.concat(cmd, " ") .. " 2>&1")
      local text = p:read("a")
      lu.assertTrue(p:close(), text)
    end
  end
  local left = s:scan_items(r)
  lu.assertEquals(#left, 24)
  local guess = s:cell_seconds(r, left[#left]) -- --scan skips a cell that would outlast the deadline
  lu.assertTrue(guess and guess > 30, tostring(guess))

  -- --time: one row per finished run in timing.csv (a run not finished is skipped), replaced when timed again
  code, out = run("--time --only authors_unet_028m_s0,authors_cunet_028m_s0 --steps-override 4 --out " .. self.dir .. "/a")
  lu.assertEquals(code, 0, out)
  lu.assertStrContains(out, "study: " .. name .. " ")
  local timing = s:read_timing()
  lu.assertEquals({timing[name].step, timing[name].steps, timing[name].batch}, {4, study.TIME_STEPS, study.TIME_BATCH})
  lu.assertTrue(timing[name].seconds_per_sample > 0)
  lu.assertAlmostEquals(timing[name].seconds_per_eval, timing[name].seconds_per_sample / study.TIME_STEPS, 1e-6)
  lu.assertNil(timing.authors_cunet_028m_s0)
  lu.assertFalse(fs.exists(self.dir .. "/a/" .. name .. "/time_samples.png"))
  code, out = run("--time --train " .. base .. "--steps-override 4 --out " .. self.dir .. "/a")
  lu.assertNotEquals(code, 0)
  lu.assertStrContains(out, "run it on its own")
end

-- With a deadline, a chunk ends on a checkpoint that fits: the first one measures one interval.
function TestStudy:testChunks()
  local s = study.new(self.dir, {exe = EXE, deadline = cn.time() + 3600, committed = false})
  local r = study.RUNS[1]
  lu.assertEquals(s:next_target(r, 0), 250)
  lu.assertEquals(s:next_target(r, 260), 500)
  s.state.runs[r.name] = {train_wall = 500, train_steps = 250, train_cpu = 0, calls = 1} -- 2 s a step
  lu.assertEquals(s:next_target(r, 250), 2000) -- (3600 - 30) / 2 = 1785 steps fit: up to 2035
  lu.assertEquals(s:next_target(r, 5000), 6000)
  s.deadline = cn.time() + 200
  lu.assertNil(s:next_target(r, 250)) -- 85 steps fit: no checkpoint before the deadline
end

-- Two drivers on different runs (--only) share study_state.json: each writes its own runs' records over
-- the file's current contents, so neither drops the other's.
function TestStudy:testTwoDriversKeepEachOthersRecords()
  local a, b = study.new(self.dir, {exe = EXE, committed = false}), study.new(self.dir, {exe = EXE, committed = false})
  local ra, rb = study.RUNS[1], study.RUNS[2]
  a:record(ra).train_steps = 250
  a:save_state()
  b:record(rb).train_steps = 500
  b:save_state()
  a:record(ra).calls = 3
  a:save_state()
  local state = study.new(self.dir, {exe = EXE, committed = false}).state
  lu.assertEquals(state.runs[ra.name].train_steps, 250)
  lu.assertEquals(state.runs[ra.name].calls, 3)
  lu.assertEquals(state.runs[rb.name].train_steps, 500)
end

-- A run's step comes from its checkpoint's metadata: none without a file, and a corrupt checkpoint raises
-- rather than reading as step 0 (the run would start again over it).
function TestStudy:testCheckpointStep()
  local s = study.new(self.dir, {exe = EXE, committed = false})
  local r = study.RUNS[1]
  lu.assertEquals(s:done_steps(r), 0)
  assert(fs.mkdir_p(s:dir(r)))
  cn.save(s:ckpt(r), {w = cn.ones{2}}, {step = "750"})
  lu.assertEquals(s:done_steps(r), 750)
  local f = assert(io.open(s:ckpt(r), "wb"))
  f:write("not a checkpoint")
  f:close()
  lu.assertErrorMsgContains("checkpoint.safetensors", s.done_steps, s, r)
end

-- --scan's loop over the cells of a finished run: a cell whose guessed time does not fit before the
-- deadline is skipped (named, with the guess), and a cell that fails stops that run's scan with the
-- failure recorded and its log named.
function TestStudy:testScanSkipsAndFailures()
  local s = study.new(self.dir, {exe = EXE, deadline = cn.time() + 3600, committed = false})
  local r = study.RUNS[1]
  assert(fs.mkdir_p(s:dir(r)))
  cn.save(s:ckpt(r), {w = cn.ones{2}}, {step = tostring(study.STEPS)})
  local cells = {}
  for i = 1, 3 do cells[i] = {sampler = study.SAMPLERS[1], value = i, command = {"false"}} end
  s.scan_items = function() return cells end
  s.cell_seconds = function() return 1e6 end
  local said, print0 = {}, _G.print
  _G.print = function(...) said[#said + 1] = table.concat({...}, " ") end
  local ok1, r1 = pcall(s.scan, s, {r})
  s.cell_seconds = function() return nil end
  local ok2, r2 = pcall(s.scan, s, {r})
  _G.print = print0
  lu.assertTrue(ok1, r1)
  lu.assertTrue(ok2, r2)
  lu.assertTrue(r1 and r2)
  lu.assertEquals(#said, 5, table.concat(said, "\n"))
  lu.assertStrContains(said[1], r.name .. " ddim_trailing 1 steps skipped: it needs ~16667 min")
  lu.assertStrContains(said[4], r.name .. " ddim_trailing 1 steps (")
  lu.assertStrContains(said[5], "the scan of " .. r.name .. " failed (see " .. s:dir(r) .. "/scan.log)")
  lu.assertEquals(s.failed, {r.name .. " (scan)"})
  lu.assertEquals(s.state.runs[r.name].calls, 0)
end

-- study_state.json holds every run's CPU records: one that does not parse raises instead of being
-- replaced by an empty record set on the next save.
function TestStudy:testCorruptStateRaises()
  assert(fs.mkdir_p(self.dir))
  local f = assert(io.open(self.dir .. "/study_state.json", "w"))
  f:write('{"runs": {"a": {"train_cpu": 12')
  f:close()
  lu.assertErrorMsgContains("study_state.json: not a study state file", study.new, self.dir, {exe = EXE})
end

-- --report on scan CSVs alone (two seeds of one model, one of another, no checkpoints): each sampler's
-- table gives mean ± half the range over the seeds, the best, the fewest steps within 10% of it and the
-- time there (from timing.csv, else the scan's, marked); the probability-flow ODE's cells carry their
-- NFE; a summary table gives each model's best over all samplers; the plot scripts are written under --plots.
function TestStudy:testReportTables()
  local header = "steps,fid_classifier,kid_classifier,kid_std,seconds_per_sample,n,sampler,dataset,split,checkpoint,nfe," ..
    "spacing,variance,ode_method,rtol,atol"
  local function scan(run, variant, lines)
    local dir = string.format("%s/%s/scan", self.dir, run)
    assert(fs.mkdir_p(dir))
    helpers.write_file(string.format("%s/fid_vs_steps_%s.csv", dir, variant), header .. "\n" .. table.concat(lines, "\n") .. "\n")
  end
  local function row(steps, fid, seconds, nfe, rtol)
    return string.format("%d,%g,1,0.1,%g,4,ddim,mnist,train,x,%d,trailing,-,-,%s,%s", steps, fid, seconds, nfe or steps,
      rtol or "-", rtol or "-")
  end
  scan("authors_unet_028m_s0", "ddim_trailing", {row(1, 400, 0.01), row(2, 100, 0.02), row(3, 52, 0.03), row(5, 50, 0.05)})
  scan("authors_unet_028m_s1", "ddim_trailing", {row(1, 600, 0.01), row(2, 120, 0.02), row(3, 58, 0.03), row(5, 50, 0.05)})
  scan("authors_unet_028m_s0", "dpmpp_2m_trailing", {row(1, 800, 0.01), row(2, 700, 0.02)})
  scan("authors_unet_028m_s1", "dpmpp_2m_trailing", {row(1, 900, 0.01)}) -- its 2 steps not scored yet
  scan("authors_cunet_028m_s0", "ddim_trailing", {row(1, 700, 0.02), row(2, 300, 0.04)})
  scan("authors_cunet_028m_s0", "ode_dopri5", {row(1, 90, 0.5, 40, "0.1"), row(1, 60, 0.9, 80, "0.01")})
  helpers.write_file(self.dir .. "/timing.csv", "run,step,sampler,steps,batch,threads,seconds_per_sample,seconds_per_eval," ..
    "load_before,date\nauthors_unet_028m_s0,6000,ddim_trailing,20,64,2,0.02,0.001,0.1,x\n" ..
    "authors_unet_028m_s1,6000,ddim_trailing,20,64,2,0.06,0.003,0.1,x\n")
  local code, out = run("--report --n 4 --out " .. helpers.shell_quote(self.dir) .. " --plots " .. helpers.shell_quote(self.dir .. "/figs"))
  lu.assertEquals(code, 0, out)
  local md = helpers.read_file(self.dir .. "/report.md")
  -- steps 1, 2, 3, 5 then "–" for 10, 20, 50, 100; best 50 at 5 steps; 55 (3 steps) is within 10% of it
  lu.assertStrContains(md, "| authors' U-Net 0.28 M | 2 | 500.00 ± 100.00 | 110.00 ± 10.00 | 55.00 ± 3.00 | 50.00 ± 0.00 | – | – | – | – | 50.00 | 3 | 0.0060 |") -- 0.002 s per evaluation x 3
  lu.assertStrContains(md, "| authors' cU-Net 0.28 M | 1 | 700.00 | 300.00 | – |")
  lu.assertStrContains(md, "| authors' cU-Net 0.28 M | 1 | 90.00 (40) | 60.00 (80) | – | – | 60.00 | 80 | 0.9000 (scan) |")
  lu.assertStrContains(md, "| authors' U-Net 0.28 M | 2 | 850.00 ± 50.00 | 700.00 ¹ | – |") -- ¹: fewer seeds than the row
  -- the summary: each model's best over all samplers and its cheapest cell within 10% of it; ¹ where a cell
  -- has fewer seeds than the model has runs (the cU-Net: 1 of 2)
  lu.assertStrContains(md, "| authors' U-Net 0.28 M | 50.00 ± 0.00 | DDIM (trailing), 5 steps | 3 | DDIM (trailing), 3 steps | "
    .. "55.00 ± 3.00 | 0.0060 |")
  lu.assertStrContains(md, "| authors' cU-Net 0.28 M | 60.00 ¹ | PF-ODE (dopri5), rtol 0.01 | 80 | PF-ODE (dopri5), rtol 0.01 | "
    .. "60.00 ¹ | 0.9000 (scan) |")
  lu.assertStrContains(md, "| Ho U-Net 1.1 M | – | – | – | – | – | – |")
  -- the time per evaluation of each model from timing.csv: 1 and 3 ms over the two seeds
  lu.assertStrContains(md, "| authors' U-Net 0.28 M | 2 | 2.000 ± 1.000 | 0.10 |")
  lu.assertStrContains(md, "| authors' cU-Net 0.28 M | 0 | – | – |")
  lu.assertTrue(md:find("## Each model's best over all samplers", 1, true) < md:find("## DDIM (trailing)", 1, true))
  lu.assertTrue(fs.exists(self.dir .. "/figs/fid_vs_steps_ddim_trailing.gp")) -- under --plots
  lu.assertTrue(fs.exists(self.dir .. "/figs/fid_vs_steps_ode_dopri5.gp"))
  lu.assertFalse(fs.exists(self.dir .. "/plots"))
end

-- What a run cost: the checkpoint's complete CPU count when it has one; the driver's record when it
-- covers every step; else the record's CPU per step scaled to the steps done ("estimated", a call
-- killed with its session); wall time never below the checkpoint's own clock.
-- A scan cell's time is guessed from the row with the most evaluations (a 1-step row's per-sample time
-- is mostly scoring, and would overstate a long cell 3-4x); an ODE cell's NFE as 1.25 x what any run
-- took at that tolerance, else twice the largest this run took, else 300.
function TestStudy:testCellSecondsGuess()
  local s = study.new(self.dir, {exe = EXE, n = 100, committed = false})
  local r = study.RUNS[1]
  local dir = s:dir(r) .. "/scan"
  assert(fs.mkdir_p(dir))
  local head = "steps,fid_classifier,kid_classifier,kid_std,seconds_per_sample,n,sampler,dataset,split,checkpoint,nfe\n"
  helpers.write_file(dir .. "/fid_vs_steps_ddim_trailing.csv", head .. "1,900,1,0.1,0.01,100,ddim,mnist,train,x,1\n"
    .. "50,30,1,0.1,0.05,100,ddim,mnist,train,x,50\n")
  local items = s:scan_items(r)
  local function item(variant, value)
    for _, it in ipairs(items) do if it.sampler.variant == variant and it.value == value then return it end end
  end
  lu.assertAlmostEquals(s:cell_seconds(r, item("ddim_trailing", 100)), 30 + 100 * 100 * 0.001, 1e-9)
  lu.assertAlmostEquals(s:cell_seconds(r, item("ode_dopri5", 0.1)), 30 + 100 * 300 * 0.001, 1e-9) -- no ODE row yet
  helpers.write_file(dir .. "/fid_vs_steps_ode_dopri5.csv", head .. "70,30,1,0.1,0.07,100,ode,mnist,train,x,70\n")
  lu.assertAlmostEquals(s:cell_seconds(r, item("ode_dopri5", 0.01)), 30 + 100 * 140 * 0.001, 1e-9)
  -- another run of the study scored rtol 0.01 and 0.001: their NFE, with a margin, wins
  local other = s:dir(study.RUNS[2]) .. "/scan"
  assert(fs.mkdir_p(other))
  local ode_head = "steps,fid_classifier,kid_classifier,kid_std,seconds_per_sample,n,sampler,dataset,split,checkpoint,nfe,"
    .. "spacing,variance,ode_method,rtol,atol\n"
  helpers.write_file(other .. "/fid_vs_steps_ode_dopri5.csv", ode_head
    .. "82,31,1,0.1,0.08,100,ode,mnist,train,y,82,-,-,dopri5,0.01,0.01\n"
    .. "134,32,1,0.1,0.13,100,ode,mnist,train,y,134,-,-,dopri5,0.001,0.001\n")
  lu.assertAlmostEquals(s:cell_seconds(r, item("ode_dopri5", 0.01)), 30 + 100 * 1.25 * 82 * 0.001, 1e-9)
  lu.assertAlmostEquals(s:cell_seconds(r, item("ode_dopri5", 0.001)), 30 + 100 * 1.25 * 134 * 0.001, 1e-9)
  lu.assertAlmostEquals(s:cell_seconds(r, item("ode_dopri5", 0.0001)), 30 + 100 * 140 * 0.001, 1e-9) -- none at 1e-4
end

function TestStudy:testTrainCost()
  local s = study.new(self.dir, {exe = EXE, committed = false})
  local r = study.RUNS[1]
  assert(fs.mkdir_p(s:dir(r)))
  local function ckpt(meta) cn.save(s:ckpt(r), {["model.w"] = cn.zeros{1}}, meta) end
  s.state.runs[r.name] = {train_wall = 900, train_cpu = 800, train_steps = 250, calls = 1}
  ckpt({step = "250", seconds = "1000"})
  lu.assertEquals(s:train_cost(r), {wall = 1000, cpu = 800, cpu_how = "recorded"})
  s.state.runs[r.name] = nil -- steps done, no record and no count (the records lost): not a cost of 0
  lu.assertEquals(s:train_cost(r), {wall = 1000, cpu = 0, cpu_how = "unknown"})
  s.state.runs[r.name] = {train_wall = 900, train_cpu = 800, train_steps = 250, calls = 1}
  ckpt({step = "1000", seconds = "4000"}) -- three quarters of the calls went unrecorded
  lu.assertEquals(s:train_cost(r), {wall = 4000, cpu = 3200, cpu_how = "estimated"})
  ckpt({step = "1000", seconds = "4000", cpu_seconds = "3500", cpu_seconds_from = "0"})
  lu.assertEquals(s:train_cost(r), {wall = 4000, cpu = 3500, cpu_how = "checkpoint"})
  ckpt({step = "1000", seconds = "4000", cpu_seconds = "2000", cpu_seconds_from = "500"}) -- partial count
  lu.assertEquals(s:train_cost(r).cpu_how, "estimated")
  s.state.runs[r.name] = nil
  os.remove(s:ckpt(r))
  lu.assertEquals(s:train_cost(r), {wall = 0, cpu = 0, cpu_how = "recorded"})
end

-- A fresh clone has no training checkpoints, only the committed EMA weights of the finished runs: the
-- driver counts such a run as trained (--train leaves it alone), scores it from those weights and takes
-- its cost from their clock; a training checkpoint under --out wins over them, and a committed file
-- of other than the study's steps is not taken for a finished run.
function TestStudy:testCommittedWeights()
  local committed = self.dir .. "/committed"
  assert(fs.mkdir_p(committed))
  local s = study.new(self.dir .. "/out", {exe = EXE, committed = committed})
  local r, r2 = study.RUNS[1], study.RUNS[2]
  local path = committed .. "/" .. r.name .. ".safetensors"
  cn.save(path, {["model.w"] = cn.zeros{1}}, {step = "6000", seconds = "7200", cpu_seconds = "3600", cpu_seconds_from = "0"})
  cn.save(committed .. "/" .. r2.name .. ".safetensors", {["model.w"] = cn.zeros{1}}, {step = "3000"})
  lu.assertEquals({s:done_steps(r), s:weights(r), s:committed(r)}, {6000, path, path})
  lu.assertEquals({s:done_steps(r2), s:committed(r2)}, {0, nil})
  lu.assertEquals(s:train_cost(r), {wall = 7200, cpu = 3600, cpu_how = "checkpoint"})
  lu.assertTrue(s:train({r}))
  lu.assertFalse(fs.exists(s:dir(r)), "--train started a run whose weights are committed")
  local items = s:scan_items(r)
  lu.assertEquals(#items, 28)
  lu.assertEquals({items[1].command[3], items[1].command[4]}, {"--ckpt", path})
  -- a cell of it runs with its log in the run's directory, which nothing has made yet
  s.scan_items = function() return {{sampler = study.SAMPLERS[1], value = 1, command = {"echo", "scored"}}} end
  local said, print0 = {}, _G.print
  _G.print = function(...) said[#said + 1] = table.concat({...}, " ") end
  local ok, done = pcall(s.scan, s, {r})
  _G.print = print0
  lu.assertTrue(ok and done, tostring(done))
  lu.assertEquals(s.failed, {}, table.concat(said, "\n"))
  lu.assertStrContains(helpers.read_file(s:dir(r) .. "/scan.log"), "scored")
  s.scan_items = nil
  helpers.remove_dir(s:dir(r))
  assert(fs.mkdir_p(s:dir(r)))
  cn.save(s:ckpt(r), {["model.w"] = cn.zeros{1}}, {step = "250"})
  lu.assertEquals({s:done_steps(r), s:weights(r)}, {250, s:ckpt(r)})
  -- none: the default directory switched off ("" from the command line, false from Lua)
  lu.assertNil(study.new(self.dir .. "/out", {exe = EXE, committed = ""}).committed_dir)
  lu.assertEquals(study.new(self.dir .. "/out", {exe = EXE}).committed_dir, study.COMMITTED)
  lu.assertEquals(study.new(self.dir .. "/out", {exe = EXE, steps = 4}):done_steps(r2), 0)
end

-- --report --into: the tables go between the file's two markers (title dropped, headings one level
-- deeper, image links relative to the file), the rest of the file is kept; a file without the markers
-- raises and is left as it was.
function TestStudy:testSpliceIntoMarkdown()
  assert(fs.mkdir_p(self.dir .. "/docs"))
  local path = self.dir .. "/docs/results.md"
  helpers.write_file(path, "# Results\n\nhand-written\n\n" .. study.BEGIN_MARK .. "\nold tables\n" .. study.END_MARK .. "\n\n## After\n")
  study.splice(path, {"# The MNIST study: tables", "", "intro", "## DDIM (trailing): FID by steps", "",
    "![DDIM](" .. self.dir .. "/docs/images/study/x.png)"})
  lu.assertEquals(helpers.read_file(path), "# Results\n\nhand-written\n\n" .. study.BEGIN_MARK .. "\n\nintro\n"
    .. "### DDIM (trailing): FID by steps\n\n![DDIM](images/study/x.png)\n" .. study.END_MARK .. "\n\n## After\n")
  study.splice(path, {"# t", "", "again"}) -- a second run replaces the first one's tables
  lu.assertEquals(helpers.read_file(path), "# Results\n\nhand-written\n\n" .. study.BEGIN_MARK .. "\n\nagain\n"
    .. study.END_MARK .. "\n\n## After\n")
  helpers.write_file(path, "no markers\n")
  lu.assertErrorMsgContains("lacks the two marker lines", study.splice, path, {"# t"})
  lu.assertEquals(helpers.read_file(path), "no markers\n")
  local code, out = run("--into " .. helpers.shell_quote(path) .. " --out " .. helpers.shell_quote(self.dir))
  lu.assertEquals(code, 2)
  lu.assertStrContains(out, "--into goes with --report")
  -- docs/results.md, which the documented command writes into, has each marker once, in order
  local doc = helpers.read_file("docs/results.md")
  local b, e = doc:find(study.BEGIN_MARK, 1, true), doc:find(study.END_MARK, 1, true)
  lu.assertTrue(b and e and b < e, "docs/results.md lacks the report's markers")
  lu.assertNil(doc:find(study.BEGIN_MARK, b + 1, true))
  lu.assertNil(doc:find(study.END_MARK, e + 1, true))
end
