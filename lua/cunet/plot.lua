-- plot — line plots as PNG files through gnuplot (Debian's gnuplot-nox), for every recipe that
-- reports curves. The data are written as CSV beside the PNG, then piped to gnuplot.
--
--   local plot = require "cunet.plot"
--   local ok, err = plot.lines("runs/fid_vs_steps.png", {
--     title = "FID (classifier features) vs sampling steps", xlabel = "steps", ylabel = "FID",
--     series = {{name = "DDIM", x = {1, 2, 5, 10}, y = {210, 120, 40, 12}}},
--     logx = true,
--   })
--   if not ok then print(err) end                 -- e.g. gnuplot is not installed
--
-- The CSV (default: the PNG's path with .csv) has the header "series,x,y" and one row per point, so
-- curves with different x values share one file. A missing gnuplot or a gnuplot error returns nil
-- and a message (the CSV is written first, so the numbers are kept); wrong arguments raise.

local options = require "cunet.options"
local fs = require "cunet.fs"

local M = {}

--- Options of plot.lines with their defaults (title, xlabel, ylabel, series, csv, xrange and yrange
-- have none).
M.defaults = { logx = false, logy = false, width = 800, height = 500, key = "top right" }

local KNOWN = { title = true, xlabel = true, ylabel = true, series = true, csv = true, xrange = true, yrange = true }
for k in pairs(M.defaults) do KNOWN[k] = true end

-- a gnuplot string literal: single quotes, ' doubled (no escapes are interpreted inside)
local function quote(s)
  return "'" .. tostring(s):gsub("'", "''") .. "'"
end

local function number(v)
  if v ~= v then return "NaN" end
  if v == math.huge then return "Inf" end
  if v == -math.huge then return "-Inf" end
  if math.type(v) == "integer" then return string.format("%d", v) end
  return string.format("%.17g", v)
end

local function csv_field(s)
  s = tostring(s)
  if s:find('[,"\n]') then return '"' .. s:gsub('"', '""') .. '"' end
  return s
end

local function check(path, opts)
  if type(path) ~= "string" or path == "" then error("plot.lines: expected a PNG path, got " .. type(path), 3) end
  if type(opts) ~= "table" then error("plot.lines: expected an options table, got " .. type(opts), 3) end
  options.check(opts, KNOWN, "plot.lines", 4)
  if type(opts.series) ~= "table" or #opts.series == 0 then
    error("plot.lines: opts.series must be a non-empty list of {name=, x={...}, y={...}}", 3)
  end
  for i, s in ipairs(opts.series) do
    if type(s) ~= "table" or type(s.x) ~= "table" or type(s.y) ~= "table" then
      error(string.format("plot.lines: series %d needs x and y lists", i), 3)
    end
    if #s.x ~= #s.y then
      error(string.format("plot.lines: series %d ('%s') has %d x values and %d y values", i, tostring(s.name), #s.x, #s.y), 3)
    end
    for j = 1, #s.x do
      if type(s.x[j]) ~= "number" or type(s.y[j]) ~= "number" then
        error(string.format("plot.lines: series %d ('%s') point %d is not a pair of numbers", i, tostring(s.name), j), 3)
      end
    end
  end
end

--- The program run as gnuplot (a name looked up in PATH, or a path).
M.command = "gnuplot"

--- The gnuplot executable's path, or nil and a message saying how to install it.
function M.gnuplot()
  local p = io.popen(string.format("command -v %q 2>/dev/null", M.command))
  local found = p and p:read("l")
  if p then p:close() end
  if found and found ~= "" then return found end
  return nil, string.format("plot: gnuplot is not installed (no '%s' in PATH; Debian: apt-get install gnuplot-nox, or make deps)",
    M.command)
end

--- Writes series as CSV ("series,x,y", one row per point). Returns path, or nil and a message.
function M.write_csv(path, series)
  local lines = {"series,x,y"}
  for i, s in ipairs(series) do
    local name = csv_field(s.name or ("series " .. i))
    for j = 1, #s.x do lines[#lines + 1] = name .. "," .. number(s.x[j]) .. "," .. number(s.y[j]) end
  end
  local ok, err = fs.write_atomic(path, table.concat(lines, "\n") .. "\n")
  if not ok then return nil, "plot: " .. err end
  return path
end

-- The gnuplot script: settings, then one inline data block per series.
local function script(path, o, terminal)
  local lines = {
    string.format("set terminal %s size %d,%d noenhanced font 'sans,10'", terminal, o.width, o.height),
    "set output " .. quote(path),
    "set grid",
    "set key " .. o.key .. " box opaque width 2 height 0.5",
    -- the x axis ends at the data (not the next tic), with a small margin at both ends
    "set autoscale xfix",
    "set offsets graph 0.03, graph 0.03, graph 0.05, graph 0.05",
    "set datafile missing 'NaN'",
  }
  if o.title then lines[#lines + 1] = "set title " .. quote(o.title) end
  if o.xlabel then lines[#lines + 1] = "set xlabel " .. quote(o.xlabel) end
  if o.ylabel then lines[#lines + 1] = "set ylabel " .. quote(o.ylabel) end
  if o.logx then lines[#lines + 1] = "set logscale x" end
  if o.logy then lines[#lines + 1] = "set logscale y" end
  if o.xrange then lines[#lines + 1] = string.format("set xrange [%s:%s]", number(o.xrange[1]), number(o.xrange[2])) end
  if o.yrange then lines[#lines + 1] = string.format("set yrange [%s:%s]", number(o.yrange[1]), number(o.yrange[2])) end
  local plots = {}
  for i, s in ipairs(o.series) do
    plots[i] = string.format("'-' using 1:2 with linespoints linewidth 2 pointtype 7 pointsize 0.8 title %s",
      quote(s.name or ("series " .. i)))
  end
  lines[#lines + 1] = "plot " .. table.concat(plots, ", \\\n  ")
  for _, s in ipairs(o.series) do
    for j = 1, #s.x do lines[#lines + 1] = number(s.x[j]) .. " " .. number(s.y[j]) end
    lines[#lines + 1] = "e"
  end
  lines[#lines + 1] = "unset output"
  return table.concat(lines, "\n") .. "\n"
end

local function run_gnuplot(exe, text)
  local log = os.tmpname()
  local p = io.popen(string.format("%q > %q 2>&1", exe, log), "w")
  if not p then
    os.remove(log)
    return false, "plot: cannot start gnuplot"
  end
  p:write(text)
  local ok = p:close()
  local f = io.open(log, "r")
  local out = f and f:read("a") or ""
  if f then f:close() end
  os.remove(log)
  return ok and not out:find("error", 1, true), out
end

--- plot.lines(path_png, opts) -> path_png, csv_path; or nil and a message. opts: series (a list of
-- {name=, x={...}, y={...}}), title, xlabel, ylabel (put the units in the labels), logx, logy,
-- xrange / yrange ({lo, hi}), key (gnuplot's legend position, "top right"), width, height (pixels,
-- 800×500), csv (the CSV's path; default the PNG's with .csv; false: none, the caller keeps the data).
function M.lines(path, opts)
  check(path, opts)
  local o = {}
  for k, v in pairs(M.defaults) do o[k] = v end
  for k, v in pairs(opts) do o[k] = v end
  local csv = o.csv
  if csv == nil then csv = path:gsub("%.png$", "") .. ".csv" end
  if csv then
    local okc, errc = M.write_csv(csv, o.series)
    if not okc then return nil, errc end
  end
  local exe, err = M.gnuplot()
  if not exe then return nil, err .. (csv and "; the data are in " .. csv or "") end
  local ok, out = run_gnuplot(exe, script(path, o, "pngcairo"))
  if not ok and out:find("unknown or ambiguous terminal", 1, true) then
    ok, out = run_gnuplot(exe, script(path, o, "png"))
  end
  if not ok then return nil, "plot: gnuplot failed on " .. path .. ": " .. out:gsub("%s+$", "") end
  return path, csv
end

return M
