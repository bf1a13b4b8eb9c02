-- nn.Module — the base of every layer: define-by-assignment registration of children,
-- parameters and buffers (PyTorch's model), traversal, train/eval, state dicts, and the tree
-- printed by tostring(m).
--
--   local Net = class("Net", nn.Module)
--   function Net:__init(ch)
--     nn.Module.__init(self)                       -- first: sets up the registries
--     self.conv = nn.Conv2d(3, ch, 3, {padding = 1}) -- a Module value registers a child
--     self.scale = nn.Parameter(cn.ones{ch, 1, 1})  -- a Parameter registers a parameter
--     self:register_buffer("count", cn.zeros{})     -- a buffer: saved, not trained
--     self.width = ch                               -- anything else is a plain field
--   end
--   function Net:forward(x) return self.conv(x) * self.scale end
--
-- Children, parameters and buffers live in three ordered registries (not in the instance table),
-- so `self.conv` goes through __index and `self.conv = m` through __newindex: registration order
-- is kept, and state_dict keys and parameters() come out in PyTorch's order (a module's own
-- parameters, then its buffers, then each child's, depth first).

local core = require "cunet.core"
local class = require "cunet.class"
local util = require "cunet.nn.util"

-- Tensors made parameters by nn.Parameter (weak keys: the mark goes with the tensor).
local parameter_marks = setmetatable({}, { __mode = "k" })

--- nn.Parameter(t [, requires_grad=true]) -> t, a leaf marked as a parameter: assigning it to a
-- module field registers it. A non-leaf t is detached first (its storage is shared).
local function Parameter(t, requires_grad)
  if not core.is_tensor(t) then error("nn.Parameter: expected a tensor, got " .. type(t), 2) end
  if not t.is_leaf then t = t:detach() end
  t:requires_grad(requires_grad ~= false)
  parameter_marks[t] = true
  return t
end

local function is_parameter(v) return parameter_marks[v] == true end

-- ---- ordered registries -------------------------------------------------------------------------
-- {names = {...} in order, has = {name = true}, value = {name = v}}; a name may map to nil
-- (PyTorch's `register_parameter("bias", None)`): present in the order, absent from value.

local function registry() return { names = {}, has = {}, value = {} } end

local function reg_set(r, name, v)
  if not r.has[name] then
    r.has[name] = true
    r.names[#r.names + 1] = name
  end
  r.value[name] = v
end

local function reg_remove(r, name)
  if not r.has[name] then return end
  r.has[name], r.value[name] = nil, nil
  for i, n in ipairs(r.names) do
    if n == name then
      table.remove(r.names, i)
      break
    end
  end
end

local Module = class("Module")

--- Sets up the registries; every subclass's __init calls it first.
function Module:__init()
  rawset(self, "_parameters", registry())
  rawset(self, "_buffers", registry())
  rawset(self, "_modules", registry())
  rawset(self, "_non_persistent", {})
  rawset(self, "training", true)
end

local function registries(self)
  local p = rawget(self, "_parameters")
  if not p then
    error(string.format("%s: call nn.Module.__init(self) in __init before assigning children, parameters or buffers",
      class.name(self) or "Module"), 3)
  end
  return p, rawget(self, "_buffers"), rawget(self, "_modules")
end

function Module.__index(self, key)
  local p = rawget(self, "_parameters")
  if p then
    local v = p.value[key]
    if v ~= nil then return v end
    v = rawget(self, "_buffers").value[key]
    if v ~= nil then return v end
    v = rawget(self, "_modules").value[key]
    if v ~= nil then return v end
  end
  return getmetatable(self)[key]
end

function Module.__newindex(self, key, value)
  if type(key) ~= "string" then
    rawset(self, key, value)
    return
  end
  if class.is_instance(value, Module) then
    local p, b, m = registries(self)
    reg_remove(p, key)
    reg_remove(b, key)
    reg_set(m, key, value)
  elseif is_parameter(value) then
    local p, b, m = registries(self)
    reg_remove(b, key)
    reg_remove(m, key)
    reg_set(p, key, value)
  else
    local p, b, m = rawget(self, "_parameters"), rawget(self, "_buffers"), rawget(self, "_modules")
    if p and p.has[key] then
      if value ~= nil and not core.is_tensor(value) then
        error(string.format("cannot assign a %s as parameter '%s' (a tensor or nil expected)", type(value), key), 2)
      end
      reg_set(p, key, value ~= nil and Parameter(value) or nil)
    elseif b and b.has[key] then
      if value ~= nil and not core.is_tensor(value) then
        error(string.format("cannot assign a %s as buffer '%s' (a tensor or nil expected)", type(value), key), 2)
      end
      reg_set(b, key, value)
    elseif m and m.has[key] then
      if value ~= nil then
        error(string.format("cannot assign a %s as child module '%s' (a Module or nil expected)", type(value), key), 2)
      end
      reg_remove(m, key)
    else
      rawset(self, key, value)
    end
  end
end

local function check_name(self, name, what)
  if type(name) ~= "string" then error(string.format("%s name must be a string, got %s", what, type(name)), 3) end
  if name == "" then error(what .. " name can't be empty", 3) end
  if name:find(".", 1, true) then error(string.format("%s name can't contain \".\", got \"%s\"", what, name), 3) end
  if rawget(self, name) ~= nil then error(string.format("attribute '%s' already exists", name), 3) end
end

--- Registers t (a tensor, made a Parameter; or nil for an absent optional parameter such as a
-- disabled bias) under name.
function Module:register_parameter(name, t)
  local p, b, m = registries(self)
  check_name(self, name, "parameter")
  if t ~= nil and not core.is_tensor(t) then
    error(string.format("register_parameter: cannot register a %s as parameter '%s'", type(t), name), 2)
  end
  if b.has[name] or m.has[name] then error(string.format("attribute '%s' already exists", name), 2) end
  if t ~= nil and not is_parameter(t) then t = Parameter(t) end
  reg_set(p, name, t)
end

--- Registers a buffer (state saved in state_dict but not trained: running statistics). With
-- persistent=false it is kept out of state_dict.
function Module:register_buffer(name, t, persistent)
  local p, b, m = registries(self)
  check_name(self, name, "buffer")
  if t ~= nil and not core.is_tensor(t) then
    error(string.format("register_buffer: cannot register a %s as buffer '%s'", type(t), name), 2)
  end
  if p.has[name] or m.has[name] then error(string.format("attribute '%s' already exists", name), 2) end
  reg_set(b, name, t)
  rawget(self, "_non_persistent")[name] = persistent == false or nil
end

--- Registers a child module under name (the same as `self[name] = module`).
function Module:add_module(name, module)
  local p, b, m = registries(self)
  check_name(self, name, "module")
  if module ~= nil and not class.is_instance(module, Module) then
    error(string.format("add_module: %s is not a Module", type(module)), 2)
  end
  if p.has[name] or b.has[name] then error(string.format("attribute '%s' already exists", name), 2) end
  reg_set(m, name, module)
  return self
end
Module.register_module = Module.add_module

--- The default forward: a subclass must define its own.
function Module:forward()
  error(string.format("%s: missing forward(); define %s:forward(...)", class.name(self), class.name(self)), 2)
end

--- m(...) is m:forward(...).
function Module:__call(...)
  return self:forward(...)
end

-- ---- traversal ----------------------------------------------------------------------------------

-- Array of {name, module} for self and its descendants, depth first, each module once.
local function collect_modules(self, prefix, out, seen)
  if seen[self] then return out end
  seen[self] = true
  out[#out + 1] = { prefix, self }
  local m = rawget(self, "_modules")
  for _, name in ipairs(m.names) do
    local child = m.value[name]
    if child then collect_modules(child, prefix == "" and name or prefix .. "." .. name, out, seen) end
  end
  return out
end

local function iterate(list)
  local i = 0
  return function()
    i = i + 1
    local e = list[i]
    if e then return e[1], e[2] end
  end
end

-- Array of {dotted name, tensor} over the parameters (which = "_parameters") or buffers, each
-- tensor once, in PyTorch's order.
local function collect_members(self, which, recurse)
  local out, seen = {}, {}
  local mods = recurse == false and { { "", self } } or collect_modules(self, "", {}, {})
  for _, entry in ipairs(mods) do
    local prefix, module = entry[1], entry[2]
    local r = rawget(module, which)
    for _, name in ipairs(r.names) do
      local t = r.value[name]
      if t ~= nil and not seen[t] then
        seen[t] = true
        out[#out + 1] = { prefix == "" and name or prefix .. "." .. name, t }
      end
    end
  end
  return out
end

--- for name, p in m:named_parameters() do ... end — dotted names ("down.1.conv.weight"), each
-- tensor once, in PyTorch's order. recurse=false: this module's own only.
function Module:named_parameters(recurse) return iterate(collect_members(self, "_parameters", recurse)) end

--- The list of parameters, in the order of named_parameters.
function Module:parameters(recurse)
  local out = {}
  for i, e in ipairs(collect_members(self, "_parameters", recurse)) do out[i] = e[2] end
  return out
end

function Module:named_buffers(recurse) return iterate(collect_members(self, "_buffers", recurse)) end

function Module:buffers(recurse)
  local out = {}
  for i, e in ipairs(collect_members(self, "_buffers", recurse)) do out[i] = e[2] end
  return out
end

--- for name, child in m:named_children() do ... end — the direct children in registration order.
function Module:named_children()
  local out, m = {}, rawget(self, "_modules")
  for _, name in ipairs(m.names) do
    if m.value[name] then out[#out + 1] = { name, m.value[name] } end
  end
  return iterate(out)
end

function Module:children()
  local out = {}
  for _, child in self:named_children() do out[#out + 1] = child end
  return out
end

--- for name, module in m:named_modules() do ... end — self (name "") and every descendant.
function Module:named_modules() return iterate(collect_modules(self, "", {}, {})) end

function Module:modules()
  local out = {}
  for i, e in ipairs(collect_modules(self, "", {}, {})) do out[i] = e[2] end
  return out
end

--- The descendant at a dotted path ("down.1.conv"); "" is self.
function Module:get_submodule(path)
  local m = self
  if path == "" then return m end
  for name in path:gmatch("[^.]+") do
    local r = rawget(m, "_modules")
    local child = r and r.value[name]
    if not child then error(string.format("get_submodule: %s has no submodule '%s' (in '%s')", class.name(m), name, path), 2) end
    m = child
  end
  return m
end

--- Calls fn(module) on every child (recursively) and then on self, as PyTorch; returns self.
function Module:apply(fn)
  for _, child in ipairs(self:children()) do child:apply(fn) end
  fn(self)
  return self
end

--- Sets training mode (default true) on self and every descendant; returns self.
function Module:train(mode)
  if mode == nil then mode = true end
  if type(mode) ~= "boolean" then error("train: mode must be a boolean, got " .. type(mode), 2) end
  for _, m in ipairs(self:modules()) do rawset(m, "training", mode) end
  return self
end

--- Evaluation mode: train(false).
function Module:eval() return self:train(false) end

--- Drops every parameter's accumulated gradient (PyTorch's set_to_none default).
function Module:zero_grad()
  for _, p in ipairs(self:parameters()) do p:zero_grad() end
end

--- Switches requires_grad on every parameter (freezing with false); returns self.
function Module:requires_grad_(flag)
  if flag == nil then flag = true end
  for _, p in ipairs(self:parameters()) do p:requires_grad(flag) end
  return self
end

--- The number of parameter elements (only those requiring grad with trainable_only).
function Module:num_parameters(trainable_only)
  local n = 0
  for _, p in ipairs(self:parameters()) do
    if not trainable_only or p:requires_grad() then n = n + p:numel() end
  end
  return n
end

-- ---- state dicts ----------------------------------------------------------------------------------

--- state_dict() -> sd, keys: sd maps dotted names to detached tensors that share the module's
-- storage (parameters, then persistent buffers, module by module as PyTorch); keys lists the
-- names in that order (a Lua table has none).
function Module:state_dict()
  local sd, keys = {}, {}
  for _, entry in ipairs(collect_modules(self, "", {}, {})) do
    local prefix, module = entry[1], entry[2]
    local function add(name, t)
      local key = prefix == "" and name or prefix .. "." .. name
      sd[key] = t:detach()
      keys[#keys + 1] = key
    end
    local p, b = rawget(module, "_parameters"), rawget(module, "_buffers")
    for _, name in ipairs(p.names) do
      if p.value[name] ~= nil then add(name, p.value[name]) end
    end
    local skip = rawget(module, "_non_persistent")
    for _, name in ipairs(b.names) do
      if b.value[name] ~= nil and not skip[name] then add(name, b.value[name]) end
    end
  end
  return sd, keys
end

local function quoted(list)
  local parts = {}
  for i, k in ipairs(list) do parts[i] = '"' .. k .. '"' end
  return table.concat(parts, ", ")
end

--- Copies the tensors of sd (name -> tensor) into this module's parameters and buffers, in place
-- and outside autograd. strict (default true): every key must match. Shapes must match always, and
-- values must be finite (NaN or inf weights are a corrupt or diverged checkpoint that would sample
-- black images). The second argument is strict or a table {strict = true, allow_nonfinite = false}.
-- Nothing is copied when anything is wrong; the error lists the missing, unexpected,
-- wrong-shaped and non-finite keys. Returns {missing_keys=, unexpected_keys=} (lists, sorted as found).
function Module:load_state_dict(sd, strict)
  if type(sd) ~= "table" then error("load_state_dict: expected a table of name -> tensor, got " .. type(sd), 2) end
  local allow_nonfinite = false
  if type(strict) == "table" then
    local o = util.options(strict, {strict = true, allow_nonfinite = false}, "load_state_dict")
    strict, allow_nonfinite = o.strict, o.allow_nonfinite
  end
  strict = strict ~= false
  local own, keys = self:state_dict()
  local missing, unexpected, mismatched, nonfinite = {}, {}, {}, {}
  for _, key in ipairs(keys) do
    local src = sd[key]
    if src == nil then
      missing[#missing + 1] = key
    elseif not core.is_tensor(src) then
      mismatched[#mismatched + 1] = string.format('"%s": expected a tensor, got a %s', key, type(src))
    elseif util.shape_str(src) ~= util.shape_str(own[key]) then
      mismatched[#mismatched + 1] = string.format('"%s": copying a tensor of shape %s from the checkpoint, the shape in the current model is %s',
        key, util.shape_str(src), util.shape_str(own[key]))
    elseif not allow_nonfinite then
      local bad = util.count_nonfinite(src)
      if bad > 0 then
        nonfinite[#nonfinite + 1] = string.format('"%s": %d of %d values are NaN or infinite', key, bad, src:numel())
      end
    end
  end
  for key in pairs(sd) do
    if own[key] == nil then unexpected[#unexpected + 1] = tostring(key) end
  end
  table.sort(unexpected)
  if #mismatched > 0 or #nonfinite > 0 or (strict and (#missing > 0 or #unexpected > 0)) then
    local lines = { string.format("load_state_dict: error(s) in loading state_dict for %s:", class.name(self)) }
    if strict and #missing > 0 then lines[#lines + 1] = "  missing key(s): " .. quoted(missing) end
    if strict and #unexpected > 0 then lines[#lines + 1] = "  unexpected key(s): " .. quoted(unexpected) end
    for _, m in ipairs(mismatched) do lines[#lines + 1] = "  size mismatch for " .. m end
    for _, m in ipairs(nonfinite) do lines[#lines + 1] = "  non-finite values in " .. m end
    if #nonfinite > 0 then
      lines[#lines + 1] = "  (a corrupt or diverged checkpoint; load_state_dict(sd, {allow_nonfinite = true}) loads it anyway)"
    end
    error(table.concat(lines, "\n"), 2)
  end
  core.no_grad(function()
    for _, key in ipairs(keys) do
      if sd[key] ~= nil then own[key]:copy_(sd[key]) end
    end
  end)
  return { missing_keys = missing, unexpected_keys = unexpected }
end

-- ---- printing --------------------------------------------------------------------------------------

--- The module's own settings for tostring, e.g. "3, 64, kernel_size=(3, 3)"; "" by default.
function Module:extra_repr() return "" end

local function add_indent(s, spaces)
  return (s:gsub("\n", "\n" .. string.rep(" ", spaces)))
end

--- PyTorch's repr: the class name, extra_repr, and each child as "(name): ..." indented.
function Module:__tostring()
  local extra = self:extra_repr()
  local extra_lines = {}
  if extra ~= "" then
    for line in (extra .. "\n"):gmatch("(.-)\n") do extra_lines[#extra_lines + 1] = line end
  end
  local child_lines = {}
  local m = rawget(self, "_modules")
  for _, name in ipairs(m.names) do
    local child = m.value[name]
    child_lines[#child_lines + 1] = "(" .. name .. "): " .. (child and add_indent(tostring(child), 2) or "None")
  end
  local s = class.name(self) .. "("
  if #extra_lines == 1 and #child_lines == 0 then
    s = s .. extra_lines[1]
  elseif #extra_lines + #child_lines > 0 then
    local lines = {}
    for _, l in ipairs(extra_lines) do lines[#lines + 1] = l end
    for _, l in ipairs(child_lines) do lines[#lines + 1] = l end
    s = s .. "\n  " .. table.concat(lines, "\n  ") .. "\n"
  end
  return s .. ")"
end

return { Module = Module, Parameter = Parameter, is_parameter = is_parameter }
