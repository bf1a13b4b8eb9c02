-- study — the shared machinery of the study drivers (recipes/study_mnist.lua, recipes/ode_blocks_study.lua):
-- runs trained by a recipe as subprocesses, resumed from their checkpoints up to a step count, stopped
-- in time before a deadline, with each run's wall and CPU seconds in <out>/study_state.json (written
-- atomically, merged so that two drivers on different runs keep each other's records).
--
--   local study = require "cunet.study"
--   local Mine = setmetatable({}, {__index = study.Driver}); Mine.__index = Mine
--   function Mine:train_command(run, target) return {self.exe, "recipes/train_cunet.lua", ...} end
--   local s = study.new(Mine, "runs/mine", {exe = "./cunet", steps = 1500, checkpoint_every = 250})
--   s:train(runs)   -- runs: {name = ...} each; <out>/<name>/ holds checkpoint.safetensors and train.log

local cn = require "cunet"
local fs = require "cunet.fs"
local json = require("cunet.checkpoint").json
local check_options = require("cunet.options").check

local M = {}

--- A word as the shell needs it: plain words bare, others single-quoted.
function M.word(s)
  s = tostring(s)
  if s:match("^[%w%._/,:=+-]+$") then return s end
  return fs.shell_quote(s)
end

--- The shell text of a command list (cunet.study.word of each).
function M.command_text(list)
  local out = {}
  for i, w in ipairs(list) do out[i] = M.word(w) end
  return table.concat(out, " ")
end

--- Appends the items of more to list; returns list.
function M.append(list, more)
  for _, v in ipairs(more) do list[#list + 1] = v end
  return list
end

--- Writes text to path (temp file + rename), raising on failure.
function M.write_atomic(path, text)
  local ok, err = fs.write_atomic(path, text)
  if not ok then error(err, 0) end
end

--- The metadata of a checkpoint (string values; cn.load_meta), or nil when there is no file at path;
-- a corrupt checkpoint raises (a run must not silently start again from step 0 over it).
function M.checkpoint_meta(path)
  if not fs.exists(path) then return nil end
  return cn.load_meta(path)
end

--- The step of a checkpoint (M.checkpoint_meta), or nil.
function M.checkpoint_step(path)
  local meta = M.checkpoint_meta(path)
  return meta and math.tointeger(tonumber(meta.step)) or nil
end

--- CPU seconds of the waited-for children of this process (Linux: /proc/self/stat cutime + cstime).
local clock_ticks
function M.children_cpu()
  local f = io.open("/proc/self/stat", "r")
  if not f then return nil end
  local text = f:read("a")
  f:close()
  local fields = {}
  for v in text:match("%) (.*)$"):gmatch("%S+") do fields[#fields + 1] = v end
  if not clock_ticks then
    local p = io.popen("getconf CLK_TCK 2>/dev/null")
    clock_ticks = tonumber(p and p:read("l") or "") or 100
    if p then p:close() end
  end
  return (tonumber(fields[14]) + tonumber(fields[15])) / clock_ticks -- fields 16, 17 of stat(5)
end

--- The runs named in only (comma-separated, in that order) from the list runs ({name = ...} each);
-- nil and a message naming the unknown one and the known ones.
function M.select(runs, only)
  local by_name, picked, names = {}, {}, {}
  for _, run in ipairs(runs) do by_name[run.name] = run names[#names + 1] = run.name end
  for name in only:gmatch("[^,%s]+") do
    if not by_name[name] then
      return nil, string.format("--only: no run named '%s' (the runs: %s)", name, table.concat(names, ", "))
    end
    picked[#picked + 1] = by_name[name]
  end
  return picked
end

--- The command-line options every study driver shares (cunet.cli form): --only, --max-minutes, --out,
-- --steps-override, --limit, --n. d: {out = default directory, steps = the study's steps, n = samples
-- per cell, n_help = what n counts}.
function M.common_options(d)
  return {
    {"only", nil, "the runs to act on, comma-separated names (default: all, in the matrix's order)", type = "string"},
    {"max-minutes", 0, "stop before this many minutes, with the checkpoints on disk (0: no limit)", min = 0},
    {"out", d.out, "the study's directory"},
    {"steps-override", 0, string.format("tests only: train each run for N steps instead of %s, without sample grids "
      .. "(0: the study's)", tostring(d.steps):reverse():gsub("(%d%d%d)(%d)", "%1,%2"):reverse()), integer = true, min = 0},
    {"limit", 0, "tests only: train on the first N images (0: all)", integer = true, min = 0},
    {"n", d.n, d.n_help, integer = true, min = 2},
  }
end

--- From the parsed common options: the runs to act on (all, or --only's; fail(message) on an unknown
-- name) and the options of a driver (exe, steps, limit, n, dry, deadline from t0 + --max-minutes).
function M.from_args(args, all, t0, fail)
  local runs = all
  if args.only then
    local err
    runs, err = M.select(all, args.only)
    if not runs then fail(err) end
  end
  return runs, {exe = (arg and arg[-1]) or "./cunet", steps = args.steps_override > 0 and math.tointeger(args.steps_override) or nil,
    limit = math.tointeger(args.limit), n = math.tointeger(args.n), dry = args.dry_run,
    deadline = args.max_minutes > 0 and t0 + args.max_minutes * 60 or nil}
end

--- Runs what the parsed flags ask of driver on runs: --list (the default), --train, the driver's
-- own scoring action (args[action], driver[action]: "scan" or "eval"), --report; --dry-run alone is
-- all three. fail(message) when a run failed.
function M.run_actions(driver, runs, args, action, fail)
  local any = args.train or args[action] or args.report
  if args.dry_run and not any then args.train, args[action], args.report = true, true, true end
  if args.list or not (any or args.dry_run) then driver:list(runs) end
  if args.train then driver:train(runs) end
  if args[action] then driver[action](driver, runs) end
  if args.report then driver:report(runs) end
  if #driver.failed > 0 then fail("failed: " .. table.concat(driver.failed, ", ")) end
end

-- ---- the driver -----------------------------------------------------------------------------------

local Driver = {}
Driver.__index = Driver
M.Driver = Driver

--- A driver over the directory out, an object of class cls: a table whose __index chain reaches Driver,
-- naming the study (cls.NAME, for messages) and its defaults (cls.FULL_STEPS per run, cls.CHECKPOINT_EVERY,
-- cls.SCAN_N samples per cell), and defining cls:recipe(run) -> the training recipe's path and
-- cls:fresh_flags(run) -> the options of a run's first call. opts: exe (the cunet executable), steps
-- (total per run; nil: cls.FULL_STEPS), limit (training images, 0: all), n (samples per cell; nil:
-- cls.SCAN_N), dry (print, run nothing), deadline (cn.time()), committed (the directory of the finished
-- runs' committed weights; nil: cls.COMMITTED; false or "": none), and the keys of cls.OPTIONS, which
-- cls:init(opts) takes when the class defines it.
function M.new(cls, out, opts)
  local known = {"exe", "steps", "limit", "n", "dry", "deadline", "committed"}
  for _, k in ipairs(cls.OPTIONS or {}) do known[#known + 1] = k end
  check_options(opts, known, (cls.NAME or "study") .. ".new")
  local self = setmetatable({out = out, exe = opts.exe, steps = opts.steps or cls.FULL_STEPS, full_steps = cls.FULL_STEPS,
    limit = opts.limit or 0, n = opts.n or cls.SCAN_N, dry = opts.dry, deadline = opts.deadline or math.huge,
    failed = {}}, cls)
  self.checkpoint_every = math.min(cls.CHECKPOINT_EVERY, self.steps)
  self.committed_dir = opts.committed == nil and cls.COMMITTED or opts.committed or nil
  if self.committed_dir == "" then self.committed_dir = nil end
  self.state_path = out .. "/study_state.json"
  self.state = self:load_state()
  self.touched = {}
  if self.init then self:init(opts) end
  return self
end

-- The state file's contents ({runs = {}} when there is none yet); a file that does not parse raises
-- (written back, it would lose every run's records).
function Driver:load_state()
  local f = io.open(self.state_path, "r")
  if not f then return {runs = {}} end
  local text = f:read("a")
  f:close()
  local ok, s = pcall(json.decode, text)
  if not (ok and type(s) == "table" and type(s.runs) == "table") then
    error(string.format("%s: not a study state file (JSON with a 'runs' object); move it aside to start its "
      .. "records anew", self.state_path), 0)
  end
  return s
end

function Driver:dir(run) return self.out .. "/" .. run.name end
--- The training checkpoint of run (what --train writes and resumes).
function Driver:ckpt(run) return self:dir(run) .. "/checkpoint.safetensors" end

--- The committed EMA weights of a finished run (<cls.COMMITTED>/<name>.safetensors, written by
-- tools/export_weights.lua), or nil when the driver has no such directory, or the file is missing or
-- was trained for other than the study's steps (a test's --steps-override never finds them).
function Driver:committed(run)
  if not self.committed_dir then return nil end
  local path = string.format("%s/%s.safetensors", self.committed_dir, run.name)
  return M.checkpoint_step(path) == self.steps and path or nil
end

--- The weights the scores are taken from: the training checkpoint where there is one, else the committed
-- weights (a fresh clone scores the committed runs without training them again), else the checkpoint's path.
function Driver:weights(run)
  if fs.exists(self:ckpt(run)) then return self:ckpt(run) end
  return self:committed(run) or self:ckpt(run)
end

--- Steps done: the training checkpoint's, or the study's steps when only the committed weights are here.
function Driver:done_steps(run)
  local step = M.checkpoint_step(self:ckpt(run))
  if step then return step end
  return self:committed(run) and self.steps or 0
end

function Driver:record(run)
  local r = self.state.runs[run.name]
  if not r then
    r = {train_wall = 0, train_cpu = 0, train_steps = 0, scan_wall = 0, scan_cpu = 0, calls = 0}
    self.state.runs[run.name] = r
  end
  self.touched[run.name] = true
  return r
end

--- What training run has cost so far: {wall =, cpu = (seconds), cpu_how = "checkpoint" | "recorded" |
-- "estimated" | "unknown" (steps done, but neither a CPU count nor a record: cpu is 0)}. Wall: the
-- larger of the driver's record and the checkpoint's clock (a call killed with its session is missing
-- from the record, not from the clock). CPU: the checkpoint's count when it
-- covers the whole run (checkpoints record it since 2026-12-06); else the driver's record when that
-- covers every step; else the record's CPU per step times the steps done ("estimated").
function Driver:train_cost(run)
  local rec = self.state.runs[run.name] or {}
  local meta = M.checkpoint_meta(self:weights(run)) or {}
  local done = math.tointeger(tonumber(meta.step)) or 0
  local rec_wall, rec_cpu, rec_steps = rec.train_wall or 0, rec.train_cpu or 0, rec.train_steps or 0
  local wall = math.max(rec_wall, tonumber(meta.seconds) or 0)
  local ck_cpu, from = tonumber(meta.cpu_seconds), tonumber(meta.cpu_seconds_from)
  if ck_cpu and from == 0 then return {wall = wall, cpu = math.max(ck_cpu, rec_cpu), cpu_how = "checkpoint"} end
  if rec_steps == 0 and done > 0 then return {wall = wall, cpu = 0, cpu_how = "unknown"} end
  if rec_steps >= done then return {wall = wall, cpu = rec_cpu, cpu_how = "recorded"} end
  return {wall = wall, cpu = rec_cpu / rec_steps * done, cpu_how = "estimated"}
end

--- A train_cost's CPU hours as a table cell: "1.23", "≈ 1.23" (estimated) or "–" (unknown).
function M.cpu_hours_text(cost)
  if cost.cpu_how == "unknown" then return "–" end
  return string.format("%s%.2f", cost.cpu_how == "estimated" and "≈ " or "", cost.cpu / 3600)
end

-- Writes the records of the runs this driver touched over the file's current contents, so that two
-- drivers on different runs (--only) never drop each other's records.
function Driver:save_state()
  if self.dry then return end
  fs.mkdir_p(self.out)
  local merged = self:load_state()
  for name in pairs(self.touched) do merged.runs[name] = self.state.runs[name] end
  self.state = merged
  M.write_atomic(self.state_path, json.encode(self.state) .. "\n")
end

--- The training command of run: a fresh start (self:fresh_flags(run), then the steps, checkpoint
-- interval and directory), or (when a checkpoint exists) its resumption, up to target steps.
function Driver:train_command(run, target)
  local c = {self.exe, self:recipe(run)}
  if fs.exists(self:ckpt(run)) then
    return M.append(c, {"--resume", self:ckpt(run), "--steps", tostring(target)})
  end
  M.append(c, self:fresh_flags(run))
  M.append(c, {"--steps", tostring(target), "--checkpoint-every", tostring(self.checkpoint_every), "--out", self:dir(run)})
  if self.limit > 0 then M.append(c, {"--limit", tostring(self.limit)}) end
  if self.steps ~= self.full_steps then M.append(c, {"--sample-every", "0"}) end -- a test's few steps: no grids
  return c
end

--- Seconds left before the deadline (math.huge without one).
function Driver:remaining() return self.deadline - cn.time() end
local function remaining(self) return self:remaining() end

-- Runs a command with its output appended to log, killed at the deadline (the checkpoints on disk stay).
-- Returns ok, wall seconds, CPU seconds (nil where /proc is missing), timed_out.
function Driver:execute(cmd, log, limit)
  local text = M.command_text(cmd)
  local f = io.open(log, "a")
  if f then f:write(string.format("\n# %s  %s\n", os.date("!%Y-%m-%d %H:%M:%S UTC"), text)) f:close() end
  local wrapped = text .. " >> " .. M.word(log) .. " 2>&1"
  if limit < math.huge then wrapped = string.format("timeout -s TERM %d %s", math.max(1, math.floor(limit)), wrapped) end
  local cpu0, t0 = M.children_cpu(), cn.time()
  local ok, _, code = os.execute(wrapped)
  local wall, cpu1 = cn.time() - t0, M.children_cpu()
  return ok == true, wall, cpu0 and cpu1 and cpu1 - cpu0, code == 124
end

-- The steps run's next training call should reach before the deadline (nil: no time for one checkpoint).
function Driver:next_target(run, done)
  if self.deadline == math.huge then return self.steps end
  local rec = self.state.runs[run.name]
  local rate = rec and rec.train_steps > 0 and rec.train_wall / rec.train_steps
  local every = self.checkpoint_every
  if not rate then return math.min(self.steps, (done // every + 1) * every) end -- measure on one interval
  local fit = math.floor((remaining(self) - 30) / rate) -- 30 s: loading data and the model
  if done + fit >= self.steps then return self.steps end
  local target = (done + fit) // every * every
  return target > done and target or nil
end

--- Trains (or resumes) each run in order up to self.steps; stops before the deadline.
function Driver:train(runs)
  for _, run in ipairs(runs) do
    while true do
      local done = self:done_steps(run)
      if done >= self.steps then
        if self.dry then print(string.format("# %s: trained (%d/%d steps)", run.name, done, self.steps)) end
        break
      end
      local target = self:next_target(run, done)
      if not target or remaining(self) < 60 then
        print(string.format("study: stopping before the deadline (%s at step %d/%d)", run.name, done, self.steps))
        return false
      end
      local cmd = self:train_command(run, target)
      if self.dry then print(M.command_text(cmd)) break end
      fs.mkdir_p(self:dir(run))
      print(string.format("study: %s steps %d..%d (%s)", run.name, done + 1, target, os.date("!%H:%M UTC")))
      io.stdout:flush()
      local ok, wall, cpu, timed_out = self:execute(cmd, self:dir(run) .. "/train.log", remaining(self))
      local now = self:done_steps(run)
      local rec = self:record(run)
      rec.train_wall, rec.train_cpu = rec.train_wall + wall, rec.train_cpu + (cpu or 0)
      rec.train_steps, rec.calls = rec.train_steps + math.max(0, now - done), rec.calls + 1
      self:save_state()
      print(string.format("study: %s at step %d, %.0f s wall, %s CPU%s", run.name, now, wall,
        cpu and string.format("%.0f s", cpu) or "?", timed_out and " (stopped at the deadline)" or ""))
      if timed_out then return false end
      if not ok or now <= done then
        self.failed[#self.failed + 1] = run.name
        print(string.format("study: %s failed (see %s/train.log); going on with the next run", run.name, self:dir(run)))
        break
      end
    end
  end
  return true
end

--- Scores the runs whose training finished, one cell per subprocess, in the order opts.items(run) gives;
-- stops before the deadline. opts: items (run -> {{command = argv, ...}, ...}: the cells still missing),
-- label (item -> how the log names the cell), skip (optional: run, item -> why to pass the cell over
-- this time, or nil), what ("scan" | "eval": the log <dir>/<what>.log, and the word in messages). With
-- dry, prints the commands instead. Returns false when the deadline stopped it.
function Driver:score_cells(runs, opts)
  check_options(opts, {"items", "label", "skip", "what"}, "study.score_cells")
  for _, run in ipairs(runs) do
    local done = self:done_steps(run)
    if done < self.steps and self.dry then
      print(string.format("# %s: training not finished (%d/%d steps); once it is:", run.name, done, self.steps))
    end
    if done >= self.steps or self.dry then
      for _, item in ipairs(opts.items(run)) do
        if self.dry then
          print(M.command_text(item.command))
        elseif remaining(self) < 120 then
          print(string.format("study: stopping the %s before the deadline (%s)", opts.what, run.name))
          return false
        else
          local why = opts.skip and opts.skip(run, item)
          if why then
            print(string.format("study: %s %s skipped: %s", run.name, opts.label(item), why))
          else
            print(string.format("study: %s %s (%s)", run.name, opts.label(item), os.date("!%H:%M UTC")))
            io.stdout:flush()
            fs.mkdir_p(self:dir(run)) -- a run scored from its committed weights has no directory yet
            local log = string.format("%s/%s.log", self:dir(run), opts.what)
            local ok, wall, cpu, timed_out = self:execute(item.command, log, remaining(self))
            local rec = self:record(run)
            rec.scan_wall, rec.scan_cpu = (rec.scan_wall or 0) + wall, (rec.scan_cpu or 0) + (cpu or 0)
            self:save_state()
            if timed_out then return false end
            if not ok then
              self.failed[#self.failed + 1] = string.format("%s (%s)", run.name, opts.what)
              print(string.format("study: the %s of %s failed (see %s)", opts.what, run.name, log))
              break
            end
          end
        end
      end
    end
  end
  return true
end

return M
