-- checkpoint — a training run in one safetensors file: model, EMA, optimiser, RNG, data position.
--
--   local checkpoint = require "cunet.checkpoint"
--   checkpoint.save("run/checkpoint.safetensors", {model = net, ema = ema, optimizer = opt,
--                   config = net.config, step = 1000, data = {seed = 0, epoch = 3, position = 1280}})
--   local ck = checkpoint.load("run/checkpoint.safetensors", {model = net, ema = ema, optimizer = opt})
--   print(ck.step, ck.config.channels)
--
-- Tensors: the model's state_dict under "model.<name>", the EMA shadows under "ema.<name>" (the same
-- names, so the averaged weights load like a state_dict), the optimiser state under "optim.<key>".
-- Metadata (strings): "format" = "cunet.checkpoint", "format_version", "step", "rng.seed",
-- "rng.counter", "model_config" (JSON), "model_module", "schedule", "T", "prediction",
-- "loss_tail" (JSON), "data.seed", "data.epoch", "data.position", "image_shape", "seconds",
-- "cpu_seconds" and "cpu_seconds_from" (the training process's CPU time, counted from that step), "ema.*" and
-- "optim.*" scalars, "train" (the trainer's options, JSON: what a resumed run restores),
-- "schedule.beta" (the schedule's β_1..β_T, JSON: any schedule, a Lua-made one included, rebuilds
-- from them) and "run" (the run's whole resolved configuration, JSON, as config.lua holds it). See
-- docs/training.md. Writing is atomic (cn.save writes a temporary file and renames it).

local cn = require "cunet"
local fs = require "cunet.fs"
local options = require "cunet.options"

local M = {}

M.FORMAT = "cunet.checkpoint"
M.VERSION = 1

-- ---- a small JSON for configs: canonical (sorted keys), exact numbers -----------------------------

local json = {}
M.json = json

local function encode_number(v)
  if v ~= v or v == math.huge or v == -math.huge then error("json: cannot encode " .. tostring(v), 0) end
  if math.type(v) == "integer" then return string.format("%d", v) end
  for digits = 15, 17 do -- the shortest form that reads back exactly; floats keep a '.' or exponent
    local s = string.format("%." .. digits .. "g", v)
    if tonumber(s) == v then
      if not s:find("[%.eEn]") then s = s .. ".0" end
      return s
    end
  end
end

local escapes = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }

local function encode_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c) return escapes[c] or string.format("\\u%04x", c:byte()) end) .. '"'
end

--- Encodes nil/booleans/numbers/strings and tables (arrays 1..n, or string-keyed objects, keys sorted).
function json.encode(v)
  local kind = type(v)
  if v == nil then return "null"
  elseif kind == "boolean" then return tostring(v)
  elseif kind == "number" then return encode_number(v)
  elseif kind == "string" then return encode_string(v)
  elseif kind == "table" then
    local n, count = #v, 0
    for _ in pairs(v) do count = count + 1 end
    if count == n and (n > 0 or next(v) == nil) then
      local parts = {}
      for i = 1, n do parts[i] = json.encode(v[i]) end
      return "[" .. table.concat(parts, ",") .. "]"
    end
    local keys = {}
    for k in pairs(v) do
      if type(k) ~= "string" then error("json: object keys must be strings, got " .. type(k), 0) end
      keys[#keys + 1] = k
    end
    table.sort(keys)
    local parts = {}
    for i, k in ipairs(keys) do parts[i] = encode_string(k) .. ":" .. json.encode(v[k]) end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  error("json: cannot encode a " .. kind, 0)
end

--- Decodes what json.encode writes (and ordinary JSON); integers stay integers. Raises on bad text.
function json.decode(text)
  local pos = 1
  local function fail(what) error(string.format("json: %s at character %d", what, pos), 0) end
  local function skip() pos = text:find("[^ \t\r\n]", pos) or #text + 1 end
  local value
  local function str()
    local out = {}
    pos = pos + 1
    while true do
      local c = text:sub(pos, pos)
      if c == "" then fail("unterminated string") end
      if c == '"' then pos = pos + 1 return table.concat(out) end
      if c == "\\" then
        local e = text:sub(pos + 1, pos + 1)
        local map = { b = "\b", f = "\f", n = "\n", r = "\r", t = "\t", ['"'] = '"', ["\\"] = "\\", ["/"] = "/" }
        if map[e] then out[#out + 1], pos = map[e], pos + 2
        elseif e == "u" then
          local hex = text:sub(pos + 2, pos + 5)
          if not hex:match("^%x%x%x%x$") then fail("bad \\u escape") end
          out[#out + 1], pos = utf8.char(tonumber(hex, 16)), pos + 6
        else fail("bad escape") end
      else
        out[#out + 1], pos = c, pos + 1
      end
    end
  end
  function value()
    skip()
    local c = text:sub(pos, pos)
    if c == "{" then
      local obj = {}
      pos = pos + 1
      skip()
      if text:sub(pos, pos) == "}" then pos = pos + 1 return obj end
      while true do
        skip()
        if text:sub(pos, pos) ~= '"' then fail("expected a key") end
        local k = str()
        skip()
        if text:sub(pos, pos) ~= ":" then fail("expected ':'") end
        pos = pos + 1
        obj[k] = value()
        skip()
        local d = text:sub(pos, pos)
        pos = pos + 1
        if d == "}" then return obj end
        if d ~= "," then fail("expected ',' or '}'") end
      end
    elseif c == "[" then
      local arr = {}
      pos = pos + 1
      skip()
      if text:sub(pos, pos) == "]" then pos = pos + 1 return arr end
      while true do
        arr[#arr + 1] = value()
        skip()
        local d = text:sub(pos, pos)
        pos = pos + 1
        if d == "]" then return arr end
        if d ~= "," then fail("expected ',' or ']'") end
      end
    elseif c == '"' then return str()
    elseif text:sub(pos, pos + 3) == "true" then pos = pos + 4 return true
    elseif text:sub(pos, pos + 4) == "false" then pos = pos + 5 return false
    elseif text:sub(pos, pos + 3) == "null" then pos = pos + 4 return nil
    end
    local num = text:match("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
    if not num or num == "" or num == "-" then fail("unexpected '" .. c .. "'") end
    pos = pos + #num
    local v = num:find("[%.eE]") and tonumber(num) or math.tointeger(tonumber(num))
    if v == nil then fail("bad number '" .. num .. "'") end
    return v
  end
  local v = value()
  skip()
  if pos <= #text then fail("trailing characters") end
  return v
end

-- ---- saving ---------------------------------------------------------------------------------------

local function scalar_string(v)
  if type(v) == "string" then return v end
  if type(v) == "number" then return encode_number(v) end
  if type(v) == "boolean" then return tostring(v) end
  error("checkpoint: cannot store a " .. type(v) .. " as metadata", 3)
end

-- EMA shadow i <-> parameter name: the EMA tracks model:parameters() (or a subset), matched by identity.
local function ema_names(model, ema)
  local index = {}
  for i, p in ipairs(ema.params) do index[p] = i end
  local names = {}
  for name, p in model:named_parameters() do
    local i = index[p]
    if i then names[i] = name end
  end
  for i = 1, #ema.params do
    if not names[i] then error(string.format("checkpoint: EMA parameter %d is not a parameter of the model", i), 3) end
  end
  return names
end

--- Writes a checkpoint. state: model (required), config (default model.config), model_module
-- (the Lua module that rebuilds it, default "cunet.models.unet"), ema, optimizer, step, rng
-- (default cn.rng_state()), schedule (a name), schedule_beta (its β list), T, prediction, losses
-- (a list: the loss tail), data ({seed=, epoch=, position=}), image_shape ({C, H, W} of the
-- training images), seconds, cpu_seconds and cpu_seconds_from (the training process's CPU seconds,
-- counted from step cpu_seconds_from: 0 when they cover the whole run), train (a table of the trainer's options), run (the resolved
-- configuration), meta (extra string metadata). Returns path.
function M.save(path, state)
  if type(path) ~= "string" then error("checkpoint.save: expected a path, got " .. type(path), 2) end
  if type(state) ~= "table" or type(state.model) ~= "table" or not state.model.state_dict then
    error("checkpoint.save: state.model must be a module", 2)
  end
  local tensors, meta = {}, {}
  for k, v in pairs(state.meta or {}) do meta[k] = scalar_string(v) end
  local model = state.model
  local sd = model:state_dict()
  for name, t in pairs(sd) do tensors["model." .. name] = t end
  if state.ema then
    local names = ema_names(model, state.ema)
    local _, scalars = state.ema:state_dict()
    for i, s in ipairs(state.ema:shadows()) do tensors["ema." .. names[i]] = s end
    for k, v in pairs(scalars) do meta["ema." .. k] = v end
  end
  if state.optimizer then
    local t, scalars = state.optimizer:state_dict()
    for k, v in pairs(t) do tensors["optim." .. k] = v end
    for k, v in pairs(scalars) do meta["optim." .. k] = v end
  end
  local rng = state.rng or cn.rng_state()
  meta.format = M.FORMAT
  meta.format_version = tostring(M.VERSION)
  meta.step = string.format("%d", state.step or 0)
  meta["rng.seed"] = string.format("%d", rng.seed)
  meta["rng.counter"] = string.format("%d", rng.counter)
  meta.model_config = json.encode(state.config or model.config or {})
  meta.model_module = state.model_module or "cunet.models.unet"
  if state.schedule then meta.schedule = scalar_string(state.schedule) end
  if state.T then meta.T = string.format("%d", state.T) end
  if state.prediction then meta.prediction = state.prediction end
  if state.losses then meta.loss_tail = json.encode(state.losses) end
  if state.data then
    for _, k in ipairs{"seed", "epoch", "position"} do
      if state.data[k] then meta["data." .. k] = scalar_string(state.data[k]) end
    end
  end
  if state.image_shape then meta.image_shape = json.encode(state.image_shape) end
  if state.seconds then meta.seconds = scalar_string(state.seconds) end
  if state.cpu_seconds then
    meta.cpu_seconds = scalar_string(state.cpu_seconds)
    meta.cpu_seconds_from = string.format("%d", state.cpu_seconds_from or 0)
  end
  if state.train then meta.train = json.encode(state.train) end
  if state.schedule_beta then meta["schedule.beta"] = json.encode(state.schedule_beta) end
  if state.run then meta.run = json.encode(state.run) end
  cn.save(path, tensors, meta)
  return path
end

-- ---- loading --------------------------------------------------------------------------------------


local function integer_meta(path, meta, key, required)
  local v = meta[key]
  if v == nil then
    if required then error(string.format("checkpoint.load: '%s' lacks the metadata '%s'", path, key), 3) end
    return nil
  end
  local n = math.tointeger(tonumber(v))
  if not n then error(string.format("checkpoint.load: '%s' has a bad '%s' (%s)", path, key, v), 3) end
  return n
end

-- The differences between two configs, as "key: a vs b" strings (keys at any depth, dotted).
local function config_diff(a, b, prefix, out)
  out = out or {}
  local keys, seen = {}, {}
  for k in pairs(type(a) == "table" and a or {}) do if not seen[k] then seen[k] = true keys[#keys + 1] = k end end
  for k in pairs(type(b) == "table" and b or {}) do if not seen[k] then seen[k] = true keys[#keys + 1] = k end end
  table.sort(keys, function(x, y) return tostring(x) < tostring(y) end)
  for _, k in ipairs(keys) do
    local name = prefix and (prefix .. "." .. tostring(k)) or tostring(k)
    local x, y = a[k], b[k]
    if type(x) == "table" and type(y) == "table" then
      config_diff(x, y, name, out)
    elseif type(x) == "function" or type(y) == "function" then -- not part of a config
    elseif json.encode(x) ~= json.encode(y) then
      out[#out + 1] = string.format("%s = %s in the checkpoint, %s in the model", name,
        x == nil and "(absent)" or json.encode(x), y == nil and "(absent)" or json.encode(y))
    end
  end
  return out
end
M.config_diff = config_diff

-- The options of load and restore (allow_nonfinite: load NaN or inf weights instead of refusing them).
local RESTORE_OPTIONS = {"model", "ema", "optimizer", "rng", "config", "allow_nonfinite"}

local function json_meta(path, meta, key)
  if meta[key] == nil then return nil end
  local ok, v = pcall(json.decode, meta[key])
  if not ok then error(string.format("checkpoint.load: '%s' has an unreadable '%s' (%s)", path, key, v), 3) end
  return v
end

--- Reads and validates a checkpoint; with opts.model / opts.ema / opts.optimizer, restores their
-- state (after checking everything that can be checked first; see M.restore). Returns ck: {path,
-- step, config, model_module, model (name -> tensor), ema (name -> tensor, or nil), optim_tensors,
-- optim_scalars, ema_scalars, rng {seed, counter}, schedule, schedule_beta (β list, or nil), T,
-- prediction, losses, data {seed, epoch, position}, image_shape, seconds, cpu_seconds and
-- cpu_seconds_from (nil in checkpoints written before they were recorded), train, run, meta (all
-- metadata strings)}.
function M.load(path, opts)
  options.check(opts, RESTORE_OPTIONS, "checkpoint.load")
  if type(path) ~= "string" then error("checkpoint.load: expected a path, got " .. type(path), 2) end
  if not fs.exists(path) then error(string.format("checkpoint.load: no checkpoint at '%s' (no such file)", path), 2) end
  local ok, tensors, meta = pcall(cn.load, path)
  if not ok then error(string.format("checkpoint.load: '%s' is not a readable safetensors file: %s", path, tostring(tensors)), 2) end
  if meta.format ~= M.FORMAT then
    error(string.format("checkpoint.load: '%s' is not a cunet training checkpoint (its metadata has no format = %q;" ..
      " a plain state_dict loads with cn.load)", path, M.FORMAT), 2)
  end
  local version = math.tointeger(tonumber(meta.format_version or ""))
  if version ~= M.VERSION then
    error(string.format("checkpoint.load: '%s' has format version %s, this cunet reads version %d", path,
      tostring(meta.format_version), M.VERSION), 2)
  end
  local ck = { path = path, meta = meta, model = {}, optim_tensors = {}, optim_scalars = {}, ema_scalars = {} }
  local ema, has_ema = {}, false
  for name, t in pairs(tensors) do
    local group, rest = name:match("^(%a+)%.(.+)$")
    if group == "model" then ck.model[rest] = t
    elseif group == "ema" then ema[rest], has_ema = t, true
    elseif group == "optim" then ck.optim_tensors[rest] = t
    else error(string.format("checkpoint.load: '%s' holds an unexpected tensor '%s'", path, name), 2) end
  end
  if has_ema then ck.ema = ema end
  for k, v in pairs(meta) do
    local rest = k:match("^optim%.(.+)$")
    if rest then ck.optim_scalars[rest] = v end
    rest = k:match("^ema%.(.+)$")
    if rest then ck.ema_scalars[rest] = v end
  end
  ck.step = integer_meta(path, meta, "step", true)
  ck.rng = { seed = integer_meta(path, meta, "rng.seed", true), counter = integer_meta(path, meta, "rng.counter", true) }
  local okc, config = pcall(json.decode, meta.model_config or "")
  if not okc then error(string.format("checkpoint.load: '%s' has an unreadable model_config (%s)", path, config), 2) end
  ck.config = config
  ck.model_module = meta.model_module
  ck.schedule, ck.prediction = meta.schedule, meta.prediction
  ck.T = integer_meta(path, meta, "T")
  ck.losses = meta.loss_tail and json.decode(meta.loss_tail) or {}
  ck.data = { seed = integer_meta(path, meta, "data.seed"), epoch = integer_meta(path, meta, "data.epoch"),
              position = integer_meta(path, meta, "data.position") }
  ck.seconds = tonumber(meta.seconds or "0") or 0
  ck.cpu_seconds = tonumber(meta.cpu_seconds or "")
  if ck.cpu_seconds then ck.cpu_seconds_from = integer_meta(path, meta, "cpu_seconds_from") or 0 end
  if meta.image_shape then
    local oki, shape = pcall(json.decode, meta.image_shape)
    ck.image_shape = oki and type(shape) == "table" and shape or nil
  end
  if meta.train then
    local okt, t = pcall(json.decode, meta.train)
    ck.train = okt and t or nil
  end
  ck.schedule_beta = json_meta(path, meta, "schedule.beta")
  ck.run = json_meta(path, meta, "run")
  if opts then M.restore(ck, opts) end
  return ck
end

--- The checkpoint's model config as this cunet reads it: options added to the model since the
-- checkpoint was written are absent from it and take their defaults, through the model module's
-- resolve_config (a config it refuses, or a module without one, is compared as stored).
function M.current_config(ck)
  local okm, mod = pcall(M.model_module, ck.model_module or "cunet.models.unet")
  if not okm or type(mod) ~= "table" or type(mod.resolve_config) ~= "function" or type(ck.config) ~= "table" then
    return ck.config
  end
  local okr, resolved = pcall(mod.resolve_config, ck.config)
  return okr and type(resolved) == "table" and resolved or ck.config
end

--- Restores what opts names from a loaded ck: opts.model (weights), opts.ema, opts.optimizer, and the
-- engine RNG with opts.rng = true. opts.config (default opts.model.config) must equal the
-- checkpoint's model config; NaN or inf weights are refused unless opts.allow_nonfinite; everything
-- is checked before anything is touched. Returns ck.
function M.restore(ck, opts)
  options.check(opts, RESTORE_OPTIONS, "checkpoint.restore")
  local path, config = ck.path, ck.config
  local model = opts.model
  local want = opts.config or (model and model.config)
  if want then
    local diff = config_diff(M.current_config(ck), want)
    if #diff > 0 then
      error(string.format("checkpoint.load: model config mismatch between '%s' and the model:\n  %s", path,
        table.concat(diff, "\n  ")), 2)
    end
  end
  if opts.ema and not ck.ema then error(string.format("checkpoint.load: '%s' holds no EMA weights", path), 2) end
  if opts.ema and not opts.allow_nonfinite then -- the shadows are weights too (the sample grids use them)
    local names = {}
    for name in pairs(ck.ema) do names[#names + 1] = name end
    table.sort(names)
    for _, name in ipairs(names) do
      local bad = cn.count_nonfinite(ck.ema[name])
      if bad > 0 then
        error(string.format("checkpoint.load: '%s': the EMA tensor 'ema.%s' holds %d NaN or infinite values of %d"
          .. " (opts.allow_nonfinite = true loads it anyway)", path, name, bad, ck.ema[name]:numel()), 2)
      end
    end
  end
  if opts.optimizer and not ck.optim_scalars.type then
    error(string.format("checkpoint.load: '%s' holds no optimizer state", path), 2)
  end
  if model then
    local okl, err = pcall(model.load_state_dict, model, ck.model, {allow_nonfinite = opts.allow_nonfinite == true})
    if not okl then error(string.format("checkpoint.load: '%s' does not fit the model: %s", path, tostring(err)), 2) end
  end
  if opts.ema then
    if not model then error("checkpoint.load: restoring the EMA needs opts.model (shadows are stored by parameter name)", 2) end
    local names = ema_names(model, opts.ema)
    local shadows = {}
    for i, name in ipairs(names) do
      if not ck.ema[name] then error(string.format("checkpoint.load: '%s' lacks the EMA tensor 'ema.%s'", path, name), 2) end
      shadows["shadow." .. i] = ck.ema[name]
    end
    opts.ema:load_state_dict(shadows, ck.ema_scalars)
  end
  if opts.optimizer then opts.optimizer:load_state_dict(ck.optim_tensors, ck.optim_scalars) end
  if opts.rng then cn.set_rng_state(ck.rng) end
  return ck
end

--- The model's weights as a state_dict: the EMA's (default when present) or the trained ones
-- (ema = false). Buffers come from "model.*" either way.
function M.weights(ck, ema)
  local sd = {}
  for k, v in pairs(ck.model) do sd[k] = v end
  if ema ~= false and ck.ema then
    for k, v in pairs(ck.ema) do sd[k] = v end
  end
  return sd
end

-- Model files loaded so far (path -> module), so a file is run once per process.
local model_files = {}

--- The model module `name`: a module name on package.path (require), or a Lua file (a path ending
-- in ".lua") that returns either a module table or a function(config) -> model (taken as
-- {from_config = fn}). The table must have from_config(config) (or, for module names, UNet or new);
-- from_preset(name, overrides) and presets are optional. Raises with the reason otherwise.
function M.model_module(name)
  if type(name) ~= "string" or name == "" then
    error("checkpoint.model_module: expected a module name or a .lua file, got " .. tostring(name), 2)
  end
  local mod
  if name:match("%.lua$") then
    if model_files[name] then return model_files[name] end
    local chunk, err = loadfile(name)
    if not chunk then error(string.format("checkpoint.model_module: cannot load the model file '%s': %s", name, err), 2) end
    local ok, value = pcall(chunk, name)
    if not ok then error(string.format("checkpoint.model_module: the model file '%s' failed: %s", name, tostring(value)), 2) end
    mod = type(value) == "function" and {from_config = value} or value
    if type(mod) ~= "table" or type(mod.from_config) ~= "function" then
      error(string.format("checkpoint.model_module: the model file '%s' must return a function(config) -> model or a" ..
        " table with from_config(config), got %s", name, type(value)), 2)
    end
    model_files[name] = mod
    return mod
  end
  local okr
  okr, mod = pcall(require, name)
  if not okr then error(string.format("checkpoint.model_module: cannot load the model module '%s': %s", name, tostring(mod)), 2) end
  if type(mod) ~= "table" or not (mod.from_config or mod.UNet or mod.new) then
    error(string.format("checkpoint.model_module: module '%s' has no from_config(config) or UNet(config)", name), 2)
  end
  return mod
end

--- Rebuilds the model from a checkpoint (a path or a loaded ck) with its config, through the
-- module named in its metadata (or opts.module; see M.model_module), and loads its weights (EMA
-- unless opts.ema == false; NaN or inf weights are refused unless opts.allow_nonfinite). Returns model, ck.
function M.build_model(ck, opts)
  opts = options.check(opts, {"module", "ema", "allow_nonfinite"}, "checkpoint.build_model")
  if type(ck) == "string" then ck = M.load(ck) end
  local mod = M.model_module(opts.module or ck.model_module)
  local build = mod.from_config or mod.UNet or mod.new
  local model = build(ck.config)
  local ok, err = pcall(model.load_state_dict, model, M.weights(ck, opts.ema), {allow_nonfinite = opts.allow_nonfinite == true})
  if not ok then error(string.format("checkpoint.build_model: '%s': %s", ck.path, tostring(err)), 2) end
  return model, ck
end

--- The diffusion schedule a checkpoint was trained with: from its stored β values (any schedule,
-- one made by a Lua function included), else by name and T (checkpoints from before the β values
-- were stored; a custom name then is an error that says so).
function M.schedule(ck)
  local diffusion = require "cunet.diffusion"
  if ck.schedule_beta then return diffusion.schedule(ck.schedule_beta) end
  local name = ck.schedule or "linear"
  if not diffusion.betas[name] then
    error(string.format("checkpoint.schedule: '%s' names its schedule '%s' but holds no β values (schedule.beta);" ..
      " it predates stored schedules: rebuild it with diffusion.schedule and the code that made it", ck.path, name), 2)
  end
  return diffusion.schedule(name, {T = ck.T or 1000})
end

-- ---- config.lua: a value as readable Lua --------------------------------------------------------

local RESERVED = {}
for w in ([[and break do else elseif end false for function goto if in local nil not or repeat return
  then true until while]]):gmatch("%a+") do RESERVED[w] = true end

local function lua_key(k)
  if type(k) == "string" and k:match("^[%a_][%w_]*$") and not RESERVED[k] then return k end
  return "[" .. (type(k) == "string" and string.format("%q", k) or encode_number(k)) .. "]"
end

--- A value (nil, booleans, numbers, strings, tables of them) as Lua source that reads back equal:
-- keys sorted, numbers exact, nested tables indented, lists of numbers 8 to a line. opts.abbreviate
-- = n shows lists longer than n as their first and last few items and a count (for printing).
function M.lua_text(value, opts)
  local abbreviate = options.check(opts, {"abbreviate"}, "lua_text").abbreviate
  local out = {}
  local function emit(v, indent)
    local kind = type(v)
    if kind == "number" then out[#out + 1] = encode_number(v)
    elseif kind == "string" then out[#out + 1] = string.format("%q", v)
    elseif kind == "boolean" or kind == "nil" then out[#out + 1] = tostring(v)
    elseif kind ~= "table" then error("lua_text: cannot write a " .. kind, 0)
    else
      local n, count = #v, 0
      for _ in pairs(v) do count = count + 1 end
      if count == 0 then out[#out + 1] = "{}" return end
      local inner = indent .. "  "
      if count == n then -- a list
        local scalars = true
        for i = 1, n do scalars = scalars and type(v[i]) ~= "table" end
        if scalars and abbreviate and n > abbreviate then
          local parts = {}
          for i = 1, 3 do parts[#parts + 1] = M.lua_text(v[i]) end
          parts[#parts + 1] = string.format("--[[ %d more ]]", n - 5)
          for i = n - 1, n do parts[#parts + 1] = M.lua_text(v[i]) end
          out[#out + 1] = "{" .. table.concat(parts, ", ") .. "}"
        elseif scalars and n <= 8 then
          local parts = {}
          for i = 1, n do parts[i] = M.lua_text(v[i]) end
          out[#out + 1] = "{" .. table.concat(parts, ", ") .. "}"
        else
          out[#out + 1] = "{\n"
          for i = 1, n do
            if not scalars or (i - 1) % 8 == 0 then out[#out + 1] = inner end
            emit(v[i], inner)
            out[#out + 1] = (scalars and i % 8 ~= 0 and i < n) and ", " or ",\n"
          end
          out[#out + 1] = indent .. "}"
        end
        return
      end
      local keys = {}
      for k in pairs(v) do keys[#keys + 1] = k end
      table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
      out[#out + 1] = "{\n"
      for _, k in ipairs(keys) do
        out[#out + 1] = inner .. lua_key(k) .. " = "
        emit(v[k], inner)
        out[#out + 1] = ",\n"
      end
      out[#out + 1] = indent .. "}"
    end
  end
  emit(value, "")
  return table.concat(out)
end

return M
