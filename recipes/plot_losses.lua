-- recipes/plot_losses.lua — training-loss curves of several runs in one plot: each run's loss.csv
-- (recipes/train_*.lua) averaged over a window of steps, against the step.
--
--   ./cunet recipes/plot_losses.lua --runs U-Net=runs/demo_unet,cU-Net=runs/cmp_cunet --out docs/images/loss_mnist.png

local cli = require "cunet.cli"
local plot = require "cunet.plot"

local args = cli.parse(arg, {
  name = "plot_losses",
  usage = "cunet recipes/plot_losses.lua --runs NAME=DIR[,NAME=DIR...] [--window N] [--out PNG]",
  description = "Training-loss curves (window means of each run's loss.csv) in one PNG plot.",
  options = {
    {"runs", nil, "the runs: NAME=DIR pairs, comma-separated; DIR holds loss.csv", type = "string"},
    {"window", 50, "steps per averaged point", integer = true, min = 1},
    {"from-step", 0, "only steps from this one on (leave out the first fall to see the ends apart)", integer = true, min = 0},
    {"max-step", 0, "only steps up to this one (0: all)", integer = true, min = 0},
    {"linear", false, "a linear loss axis (default: logarithmic)"},
    {"out", "runs/losses.png", "the plot (its points are written as CSV beside it)"},
  },
})

local function fail(msg)
  io.stderr:write("plot_losses: " .. msg .. "\n")
  os.exit(2)
end

if not args.runs then fail("--runs is required, e.g. --runs U-Net=runs/unet,cU-Net=runs/cunet") end
local window = math.tointeger(args.window)
if not window or window < 1 then fail("--window must be a positive integer, got " .. tostring(args.window)) end

-- What a run's loss is the MSE of: its config.lua's train.prediction (recipes/train_*.lua write it),
-- "eps" where the run has none (runs from before config.lua, whose trainer predicted ε).
local TARGET_NAME = { eps = "epsilon", v = "v", x0 = "x0" }
local function run_target(dir)
  local ok, cfg = pcall(dofile, dir .. "/config.lua")
  local prediction = ok and type(cfg) == "table" and type(cfg.train) == "table" and cfg.train.prediction or "eps"
  return TARGET_NAME[prediction] or tostring(prediction)
end

local series, targets = {}, {}
for pair in args.runs:gmatch("[^,]+") do
  local name, dir = pair:match("^([^=]+)=(.+)$")
  if not name then fail("--runs expects NAME=DIR pairs, got '" .. pair .. "'") end
  local path = dir .. "/loss.csv"
  local f = io.open(path, "r")
  if not f then fail("no " .. path) end
  local header = f:read("l")
  if not header or not header:match("^step,loss") then fail(path .. " is not a training loss CSV (step,loss,...)") end
  local xs, ys, sum, count, last = {}, {}, 0, 0, 0
  for line in f:lines() do
    local step, loss = line:match("^(%d+),([^,]+)")
    step, loss = tonumber(step), tonumber(loss)
    if not step or not loss then fail(string.format("%s: bad row '%s'", path, line)) end
    if args.max_step > 0 and step > args.max_step then break end
    if step >= args.from_step then sum, count, last = sum + loss, count + 1, step end
    if count == window then
      xs[#xs + 1], ys[#ys + 1] = last, sum / count
      sum, count = 0, 0
    end
  end
  f:close()
  if #xs == 0 then fail(string.format("%s has fewer than %d steps", path, window)) end
  series[#series + 1] = { name = name, x = xs, y = ys }
  targets[run_target(dir)] = true
  print(string.format("%s: %d steps, mean loss of the last %d: %.4f", name, last, window, ys[#ys]))
end

local names = {}
for target in pairs(targets) do names[#names + 1] = target end
table.sort(names)
local ylabel = table.concat(names, " / ") .. "-prediction MSE"
print("loss axis: " .. ylabel .. (args.linear and ", linear" or ", logarithmic"))
local png, err = plot.lines(args.out, {
  title = string.format("training loss (mean over %d steps)", window), xlabel = "training step",
  ylabel = ylabel, series = series, logy = not args.linear,
})
if png then print("wrote " .. png) else print(err) end
