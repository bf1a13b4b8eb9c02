-- cunet.optim.schedule — learning-rate schedules as plain functions step -> lr.
--
--   local sched = optim.schedule.cosine(3e-4, 10000, {warmup = 500, min_lr = 1e-5})
--   for step = 1, 10000 do optim.schedule.apply(opt, sched, step); ...; opt:step() end
--
-- `step` is the 1-based number of the optimiser step the rate is for (torch's scheduler epoch
-- step - 1). Any function of the step (or callable table) is a schedule too.

local common = require "cunet.optim.common"
local fail, check_number = common.fail, common.check_number

local schedule = {}

local function check_lr(fname, lr) check_number(fname, "learning rate", lr, common.nonneg, "must be >= 0") end

local function check_count(fname, what, n, min)
  if math.type(n) ~= "integer" or n < min then fail(fname, "%s must be an integer >= %d, got %s", what, min, tostring(n)) end
end

local function check_step(fname, step)
  if type(step) ~= "number" or step ~= step then fail(fname, "step must be a number, got %s", tostring(step)) end
end

--- The same rate at every step.
function schedule.constant(lr)
  check_lr("schedule.constant", lr)
  return function() return lr end
end

--- lr * step / warmup_steps for the first warmup_steps steps, then lr (torch's
-- LambdaLR(lambda e: min(1, (e + 1) / warmup_steps))).
function schedule.linear_warmup(lr, warmup_steps)
  check_lr("schedule.linear_warmup", lr)
  check_count("schedule.linear_warmup", "warmup_steps", warmup_steps, 0)
  return function(step)
    check_step("linear_warmup", step)
    if step < warmup_steps then return lr * math.max(step, 0) / warmup_steps end
    return lr
  end
end

--- Linear warmup over opts.warmup steps (default 0), then half a cosine from lr down to opts.min_lr
-- (default 0) over the remaining total_steps - warmup steps; min_lr after total_steps. The cosine
-- part is torch's CosineAnnealingLR(T_max = total_steps - warmup, eta_min = min_lr):
-- lr_s = min_lr + (lr - min_lr) (1 + cos(pi (s - warmup - 1) / (total_steps - warmup))) / 2.
function schedule.cosine(lr, total_steps, opts)
  local fname = "schedule.cosine"
  check_lr(fname, lr)
  opts = common.with_defaults(fname, opts, {warmup = 0, min_lr = 0})
  local warmup, min_lr = opts.warmup, opts.min_lr
  check_count(fname, "warmup", warmup, 0)
  check_count(fname, "total_steps", total_steps, warmup + 1)
  check_number(fname, "min_lr", min_lr, function(v) return v >= 0 and v <= lr end, "must be in [0, lr]")
  local span = total_steps - warmup
  return function(step)
    check_step("cosine", step)
    if warmup > 0 and step <= warmup then return lr * math.max(step, 0) / warmup end
    local progress = math.max(0.0, math.min((step - warmup - 1) / span, 1.0))
    return min_lr + (lr - min_lr) * (1 + math.cos(math.pi * progress)) / 2
  end
end

--- Sets optimizer.lr to sched(step) and returns it.
function schedule.apply(optimizer, sched, step)
  local callable = type(sched) == "function" or (getmetatable(sched) or {}).__call ~= nil
  if not callable then fail("schedule.apply", "schedule must be a function step -> lr, got %s", type(sched)) end
  if type(optimizer) ~= "table" or optimizer.lr == nil then
    fail("schedule.apply", "the first argument must be an optimiser (with an lr field)")
  end
  local lr = sched(step)
  check_number("schedule.apply", "learning rate from the schedule at step " .. tostring(step), lr, common.nonneg,
    "must be a number >= 0")
  optimizer.lr = lr
  return lr
end

return schedule
