-- progress — progress bars for long work: items done / total, rate, ETA, and live values.
--
--   local bar = progress.new(total, {label = "train"})
--   for i = 1, total do ...; bar:update(i, {loss = l}) end
--   bar:finish()
--
-- On a terminal the bar redraws one line (at most 10 times a second); elsewhere (logs, CI) it
-- prints a plain line every `every` seconds (default 10) and at the end.

local core = require "cunet.core"
local options = require "cunet.options"

local M = {}

local Bar = {}
Bar.__index = Bar

local function duration(s)
  if s ~= s or s == math.huge then return "?" end
  s = math.floor(s + 0.5)
  if s >= 3600 then return string.format("%d:%02d:%02d", s // 3600, s % 3600 // 60, s % 60) end
  return string.format("%d:%02d", s // 60, s % 60)
end

--- A new bar for `total` items. opts: label, unit ("it"), stream (io.stderr), every (seconds
-- between plain lines), tty (override terminal detection).
function M.new(total, opts)
  opts = options.check(opts, {"label", "unit", "stream", "every", "tty"}, "progress.new")
  local stream = opts.stream or io.stderr
  local tty = opts.tty
  if tty == nil then tty = core.isatty(stream) end
  return setmetatable({
    total = total, label = opts.label or "", unit = opts.unit or "it", stream = stream, tty = tty,
    every = opts.every or 10, start = core.time(), last_draw = -math.huge, done = 0,
  }, Bar)
end

local function format_values(values)
  if not values then return "" end
  local keys = {}
  for k in pairs(values) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do
    local v = values[k]
    parts[#parts + 1] = type(v) == "number" and string.format("%s %.4g", k, v) or (k .. " " .. tostring(v))
  end
  return table.concat(parts, "  ")
end

--- The status text: "label  37/100  [#####.....]  12.3 it/s  0:05 < 0:10  loss 0.1".
function Bar:text(values)
  local elapsed = core.time() - self.start
  local rate = self.done / math.max(elapsed, 1e-9)
  local eta = self.total and rate > 0 and (self.total - self.done) / rate or math.huge
  local bar = ""
  if self.total and self.total > 0 then
    local width = 20
    local filled = math.floor(width * math.min(self.done / self.total, 1) + 0.5)
    bar = "[" .. string.rep("#", filled) .. string.rep(".", width - filled) .. "]  "
  end
  local count = self.total and string.format("%d/%d", self.done, self.total) or tostring(self.done)
  return string.format("%s%s  %s%.3g %s/s  %s < %s  %s", self.label ~= "" and self.label .. "  " or "",
    count, bar, rate, self.unit, duration(elapsed), duration(eta), format_values(values))
end

--- Sets the count of items done (and values to show); draws when due.
function Bar:update(done, values)
  self.done = done
  self.values = values or self.values
  local now = core.time()
  if self.tty then
    if now - self.last_draw >= 0.1 then
      self.stream:write("\r" .. self:text(self.values) .. "\27[K")
      self.stream:flush()
      self.last_draw = now
    end
  elseif now - self.last_draw >= self.every then
    if self.last_draw > -math.huge then self.stream:write(self:text(self.values) .. "\n") end
    self.last_draw = now
  end
end

--- Final line.
function Bar:finish(values)
  self.values = values or self.values
  if self.tty then
    self.stream:write("\r" .. self:text(self.values) .. "\27[K\n")
  else
    self.stream:write(self:text(self.values) .. "\n")
  end
  self.stream:flush()
  return core.time() - self.start
end

return M
