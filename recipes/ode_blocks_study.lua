-- recipes/ode_blocks_study.lua — issue 14, item 5: the MNIST cU-Net with its ODE blocks solved by dopri5
-- (adaptive) instead of the authors' one fixed rk4_38 step, with and without the RNODE regulariser in
-- training, as one command that continues where it stopped: short training runs (train_cunet.lua as
-- subprocesses, resumed from their checkpoints), then every checkpoint scored at several block solvers
-- (fid_vs_steps.lua --block-method/--block-rtol: NFE per forward, seconds per sample at batch 64, FID
-- with classifier features), and --report writes the table and the plot of FID against NFE for
-- docs/ode.md ("Adaptive cU-Net blocks").
--
--   ./cunet recipes/ode_blocks_study.lua --list                      -- the matrix and where each run stands
--   ./cunet recipes/ode_blocks_study.lua --train --max-minutes 170   -- train (or resume) in order; stop in time
--   ./cunet recipes/ode_blocks_study.lua --eval --max-minutes 170    -- score the finished runs (resumable)
--   ./cunet recipes/ode_blocks_study.lua --report                    -- results/ode_blocks/report.md and the plot
--   ./cunet recipes/ode_blocks_study.lua --dry-run                   -- every command it would run, run nothing
--
-- Under --out (results/ode_blocks, tracked in git but for the checkpoints, logs and images: its
-- .gitignore): <run>/ holds the training recipe's checkpoint, loss.csv, train.log and eval.log,
-- <run>/eval/<solver>/ the fid_vs_steps CSV of each block solver; study_state.json holds each run's
-- wall and CPU seconds (cunet.study). A session may be killed at any moment: the checkpoints are
-- written atomically every 50 steps and every evaluation cell is its own CSV.

local cn = require "cunet"
local cli = require "cunet.cli"
local fs = require "cunet.fs"
local fid = require "cunet.fid"
local plot = require "cunet.plot"
local study = require "cunet.study"
local command_text, append = study.command_text, study.append

local M = {}

-- ---- the matrix ----------------------------------------------------------------------------------
-- Short runs that fine-tune one trained model rather than train from scratch (an RNODE step from
-- scratch, with its Hutchinson Jacobian term, costs ~5x a plain dopri5 step: 1,500 steps each would
-- have cost ~6 CPU hours a run): every run starts from the EMA weights of the MNIST study's cU-Net
-- authors_cunet_028m_s0 (0.28 M preset, the authors' setup, 6,000 steps with the authors' one rk4_38
-- step per block; committed) and trains 300 more steps of batch 64 with its blocks solved as the run
-- says, at lr 1e-4 (a tenth of the study's) after 20 warmup steps, EMA 0.995, the study's betas,
-- clipping and data, seed 0. The schedule and the v-prediction are the weights' own (--init).
M.INIT = "checkpoints/study/authors_cunet_028m_s0.safetensors"
M.STEPS, M.CHECKPOINT_EVERY, M.PRESET, M.SEED = 300, 50, "mnist_028m", 0
M.FINETUNE = {"--data", "mnist", "--batch", "64", "--lr", "1e-4", "--warmup", "20", "--clip", "1", "--ema", "0.995",
  "--betas", "0.9,0.99", "--no-flip", "--sample-every", "0", "--log-every", "25"}

-- RNODE's weights: λ1 = λ2 = 0.01, the value of Finlay et al. (ICML 2020) for their MNIST and CIFAR
-- models. The penalties are per element of the block's state (docs/ode.md), so λ does not scale with
-- the features' size; every one of the cU-Net's 7 blocks adds its own. At rtol 0.01 a tenth of it too
-- (M.RNODE_LIGHT): 0.01 cost the fine-tuned model most of its quality (docs/ode.md), so the trade-off
-- needs a second point.
M.RNODE = {kinetic = 0.01, jacobian = 0.01}
M.RNODE_LIGHT = {kinetic = 0.001, jacobian = 0.001}

-- (a) the authors' blocks: rk4_38, one step (the control: the same 300 steps of fine-tuning); (b) dopri5
-- at two tolerances; (c) the same with RNODE, and at rtol 0.01 with the lighter λ.
M.RUNS = {
  {name = "rk4_38", label = "rk4_38, 1 step (authors)", flags = {"--method", "rk4_38", "--ode-steps", "1"}},
}
local function rnode_run(tol, solver, lambda, suffix)
  return {name = "dopri5_" .. tol .. "_rnode" .. suffix, label = string.format("dopri5 rtol %s + RNODE λ %g", tol, lambda.kinetic),
    rnode = lambda, flags = append(append({}, solver), {"--kinetic", string.format("%g", lambda.kinetic),
      "--jacobian", string.format("%g", lambda.jacobian)})}
end
for _, rtol in ipairs{1e-2, 1e-3} do
  local tol = string.format("%g", rtol)
  local solver = {"--method", "dopri5", "--ode-rtol", tol, "--ode-atol", tol}
  M.RUNS[#M.RUNS + 1] = {name = "dopri5_" .. tol, label = "dopri5 rtol " .. tol, flags = solver}
  M.RUNS[#M.RUNS + 1] = rnode_run(tol, solver, M.RNODE, "")
  if rtol == 1e-2 then M.RUNS[#M.RUNS + 1] = rnode_run(tol, solver, M.RNODE_LIGHT, "_light") end
end

-- ---- the evaluation --------------------------------------------------------------------------------
-- Every checkpoint at each block solver (atol = rtol): DDIM on the trailing grid at 20 steps, n = 1,024
-- samples in batches of 64 (the time per sample is at batch 64), noise seed 0, FID with classifier features.
M.EVAL_N, M.EVAL_BATCH, M.EVAL_SEED, M.EVAL_STEPS = 1024, 64, 0, 20
M.EVAL_SOLVERS = {
  {key = "rk4_38", label = "rk4_38 1 step", flags = {"--block-method", "rk4_38", "--block-steps", "1"}},
}
for _, rtol in ipairs{1e-1, 1e-2, 1e-3} do
  local tol = string.format("%g", rtol)
  M.EVAL_SOLVERS[#M.EVAL_SOLVERS + 1] = {key = "dopri5_" .. tol, label = "dopri5 rtol " .. tol,
    flags = {"--block-method", "dopri5", "--block-rtol", tol, "--block-atol", tol}}
end

local function fail(msg)
  io.stderr:write("ode_blocks_study: " .. msg .. "\n")
  os.exit(2)
end

-- ---- the driver (cunet.study's) ----------------------------------------------------------------------

local Study = setmetatable({NAME = "ode_blocks_study", FULL_STEPS = M.STEPS, CHECKPOINT_EVERY = M.CHECKPOINT_EVERY,
  SCAN_N = M.EVAL_N}, {__index = study.Driver})
Study.__index = Study

--- A study over the directory out (cunet.study's new: exe, steps, limit, n samples per evaluation cell,
-- dry, deadline).
function M.new(out, opts) return study.new(Study, out, opts) end

--- The training recipe of run, and the options of its first call (cunet.study's Driver:train_command).
function Study:recipe() return "recipes/train_cunet.lua" end
function Study:fresh_flags(run)
  return append(append({"--init", M.INIT, "--preset", M.PRESET, "--seed", tostring(M.SEED)}, M.FINETUNE), run.flags)
end

function Study:eval_dir(run, solver) return string.format("%s/eval/%s", self:dir(run), solver.key) end
function Study:eval_csv(run, solver)
  return string.format("%s/fid_vs_steps_ddim_trailing.csv", self:eval_dir(run, solver))
end

--- The row of an evaluation cell (fid.read_scan's, with block_nfe), or nil when it has not run at this n.
function Study:eval_row(run, solver)
  for _, r in ipairs(fid.read_scan(self:eval_csv(run, solver)) or {}) do
    if r.n == self.n and r.steps == M.EVAL_STEPS then return r end
  end
  return nil
end

--- The evaluation cells of run still missing: {solver =, command =}.
function Study:eval_items(run)
  local items = {}
  for _, s in ipairs(M.EVAL_SOLVERS) do
    if not self:eval_row(run, s) then
      local c = {self.exe, "recipes/fid_vs_steps.lua", "--ckpt", self:ckpt(run), "--sampler", "ddim", "--spacing", "trailing",
        "--steps", tostring(M.EVAL_STEPS)}
      append(c, s.flags)
      append(c, {"--n", tostring(self.n), "--batch", tostring(M.EVAL_BATCH), "--seed", tostring(M.EVAL_SEED),
        "--out", self:eval_dir(run, s)})
      items[#items + 1] = {solver = s, command = c}
    end
  end
  return items
end

--- Scores the runs whose training finished, one cell per call; stops before the deadline. Each cell
-- has its own CSV, so another process may score one while this driver runs: it is skipped then.
function Study:eval(runs)
  return self:score_cells(runs, {what = "eval",
    items = function(run) return self:eval_items(run) end,
    label = function(item) return "at " .. item.solver.label end,
    skip = function(run, item) return self:eval_row(run, item.solver) and "scored meanwhile" or nil end})
end

function Study:list(runs)
  print(string.format("%-24s %-34s %11s  %8s  %8s  %8s", "run", "training blocks", "steps", "train h", "CPU h", "eval"))
  for _, run in ipairs(runs) do
    local rec, cost = self.state.runs[run.name] or {}, self:train_cost(run)
    print(string.format("%-24s %-34s %5d/%-5d  %8.2f  %7.2f%s  %4d/%-3d", run.name, run.label, self:done_steps(run), self.steps,
      cost.wall / 3600, (cost.cpu + (rec.scan_cpu or 0)) / 3600, cost.cpu_how == "estimated" and "~" or " ",
      #M.EVAL_SOLVERS - #self:eval_items(run), #M.EVAL_SOLVERS))
  end
  print(string.format("(every run: train_cunet.lua --init %s --preset %s --seed %d %s; state in %s)", M.INIT, M.PRESET, M.SEED,
    command_text(M.FINETUNE), self.state_path))
end

--- Writes <out>/report.md (the table for docs/ode.md) and <out>/fid_vs_nfe.png (gnuplot).
function Study:report(runs)
  local md = {"# Adaptive cU-Net blocks: the table (recipes/ode_blocks_study.lua --report)", "",
    string.format("The cU-Net at %s fine-tuned from %s for %d steps of batch 64 with its blocks solved as 'trained with' " ..
      "says (lr 1e-4, EMA 0.995), each checkpoint's EMA weights " ..
      "sampled by DDIM (trailing, %d steps) with its ODE blocks solved by each solver below; n = %d samples (batch %d, " ..
      "seed %d), %s against the 9,000 training digits. NFE: the blocks' function evaluations per network forward " ..
      "(all 7 blocks, adaptive: the mean over the forwards); s/sample: wall time at batch %d on the machine the " ..
      "evaluation ran on. RNODE λ: the kinetic and the Jacobian weight (equal).", M.PRESET, M.INIT, self.steps, M.EVAL_STEPS, self.n, M.EVAL_BATCH,
      M.EVAL_SEED, fid.NAME, M.EVAL_BATCH), "",
    "| trained with | steps | train CPU h | evaluated with | NFE / forward | s / sample | " .. fid.NAME .. " |",
    "|---|---:|---:|---|---:|---:|---:|"}
  local series = {}
  for _, run in ipairs(runs) do
    local cost = self:train_cost(run)
    local xs, ys = {}, {}
    for _, s in ipairs(M.EVAL_SOLVERS) do
      local r = self:eval_row(run, s)
      md[#md + 1] = string.format("| %s | %d | %s | %s | %s | %s | %s |", run.label, self:done_steps(run),
        study.cpu_hours_text(cost), s.label, r and r.block_nfe and string.format("%.1f", r.block_nfe) or "–",
        r and string.format("%.4f", r.seconds) or "–", r and string.format("%.2f", r.fid) or "–")
      if r and r.block_nfe then xs[#xs + 1], ys[#ys + 1] = r.block_nfe, r.fid end
    end
    if #xs > 0 then series[#series + 1] = {name = run.label, x = xs, y = ys} end
  end
  md[#md + 1] = ""
  local png = self.out .. "/fid_vs_nfe.png"
  if self.dry then
    print(string.format("# report: reads %s/<run>/eval/*/fid_vs_steps_ddim_trailing.csv, writes %s/report.md and %s (gnuplot)",
      self.out, self.out, png))
    return
  end
  fs.mkdir_p(self.out)
  if #series > 0 then
    -- each run's points in the order of the solvers: a line through them, sorted by NFE
    for _, s in ipairs(series) do
      local idx = {}
      for i = 1, #s.x do idx[i] = i end
      table.sort(idx, function(a, b) return s.x[a] < s.x[b] end)
      local x, y = {}, {}
      for i, j in ipairs(idx) do x[i], y[i] = s.x[j], s.y[j] end
      s.x, s.y = x, y
    end
    local ok, err = plot.lines(png, {title = string.format("cU-Net blocks: %s vs NFE per forward (%s, DDIM %d steps, n = %d)",
      fid.NAME, M.PRESET, M.EVAL_STEPS, self.n), xlabel = "ODE-block function evaluations per forward (NFE)",
      ylabel = fid.NAME .. " (lower is better)", series = series, logx = true, key = "outside right", width = 1000, csv = self.out .. "/fid_vs_nfe.csv"})
    md[#md + 1] = ok and string.format("![%s against NFE per forward](%s)", fid.NAME, png) or ("(no plot: " .. tostring(err) .. ")")
    md[#md + 1] = ""
  end
  study.write_atomic(self.out .. "/report.md", table.concat(md, "\n") .. "\n")
  print("wrote " .. self.out .. "/report.md")
end

-- ---- the command line -----------------------------------------------------------------------------

function M.main(argv)
  local t0 = cn.time()
  local args = cli.parse(argv, {
    name = "ode_blocks_study",
    usage = "cunet recipes/ode_blocks_study.lua [--list | --train | --eval | --report] [--only NAME,...] [--max-minutes M] [--dry-run]",
    description = "Issue 14 item 5: the cU-Net with adaptive (dopri5) ODE blocks, with and without RNODE: " .. #M.RUNS
      .. " short training runs,\nFID / NFE / time per sample of each at several block solvers, the report. Re-run it at any "
      .. "time: it continues from the checkpoints and CSVs under --out.",
    options = {
      {"list", false, "the matrix with each run's steps (from its checkpoint), hours and evaluation cells (the default)"},
      {"train", false, "start or resume the runs in order (recipes/train_cunet.lua)"},
      {"eval", false, "score the runs whose training finished (recipes/fid_vs_steps.lua, one block solver per call)"},
      {"report", false, "write <out>/report.md and <out>/fid_vs_nfe.png from the evaluations"},
      {"dry-run", false, "print the commands --train / --eval / --report would run (all three when none is given)"},
      table.unpack(study.common_options{out = "results/ode_blocks", steps = M.STEPS, n = M.EVAL_N,
        n_help = "samples per evaluation cell"}),
    },
  })
  local runs, opts = study.from_args(args, M.RUNS, t0, fail)
  study.run_actions(M.new(args.out, opts), runs, args, "eval", fail)
end

if arg and arg[0] and arg[0]:match("ode_blocks_study%.lua$") then M.main(arg) end
return M
