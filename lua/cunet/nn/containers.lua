-- nn containers: Sequential and ModuleList.
--
-- Children are named "0", "1", ... as in PyTorch, so state_dict keys ("0.weight") load from and
-- into PyTorch checkpoints unchanged; Lua indexing stays 1-based: seq[1] is the child named "0",
-- seq[-1] the last, #seq the count, and ipairs(seq) walks them in order.

local class = require "cunet.class"
local Module = require("cunet.nn.module").Module

local function check_module(m, who, i)
  if not class.is_instance(m, Module) then
    error(string.format("%s: entry %d is a %s, not a Module", who, i, type(m)), 3)
  end
end

-- The i-th (1-based, negative from the end) child's name, or nil.
local function name_at(self, i, who)
  local names = rawget(self, "_modules").names
  local k = math.tointeger(i)
  if not k then error(string.format("%s: index %s is not an integer", who, tostring(i)), 3) end
  if k < 0 then k = #names + k + 1 end
  return names[k]
end

local function container_index(self, key)
  if type(key) == "number" then
    local name = name_at(self, key, class.name(self))
    return name and rawget(self, "_modules").value[name]
  end
  return Module.__index(self, key)
end

local function container_newindex(self, key, value)
  if type(key) == "number" then
    local who = class.name(self)
    local name = name_at(self, key, who)
    if not name then error(string.format("%s: index %s out of range (%d modules)", who, tostring(key), #self), 2) end
    check_module(value, who, key)
    rawget(self, "_modules").value[name] = value
    return
  end
  return Module.__newindex(self, key, value)
end

local function container_len(self) return #rawget(self, "_modules").names end

-- ---- Sequential -----------------------------------------------------------------------------------

--- nn.Sequential(m1, m2, ...), nn.Sequential{m1, m2, ...} or, with names,
-- nn.Sequential{{"conv", m1}, {"act", m2}}: forward runs the children in order.
local Sequential = class("Sequential", Module)
Sequential.__index = container_index
Sequential.__newindex = container_newindex
Sequential.__len = container_len

function Sequential:__init(...)
  Module.__init(self)
  local args = table.pack(...)
  if args.n == 1 and type(args[1]) == "table" and not class.is_instance(args[1], Module) then
    for i, entry in ipairs(args[1]) do
      if class.is_instance(entry, Module) then
        self:add(entry)
      elseif type(entry) == "table" and type(entry[1]) == "string" and class.is_instance(entry[2], Module) then
        self:add_module(entry[1], entry[2])
      else
        error(string.format("Sequential: entry %d must be a Module or a {name, Module} pair", i), 2)
      end
    end
  else
    for i = 1, args.n do
      check_module(args[i], "Sequential", i)
      self:add(args[i])
    end
  end
end

--- Appends a child (named by its position, "0", "1", ...); returns self, for chaining.
function Sequential:add(module)
  check_module(module, "Sequential:add", #self + 1)
  self:add_module(tostring(#self), module)
  return self
end
Sequential.append = Sequential.add

--- Runs the children in order: the first gets every argument, each next one the previous output.
function Sequential:forward(...)
  local m = rawget(self, "_modules")
  if #m.names == 0 then return ... end
  local out = m.value[m.names[1]](...)
  for i = 2, #m.names do out = m.value[m.names[i]](out) end
  return out
end

-- ---- ModuleList -------------------------------------------------------------------------------------

--- nn.ModuleList([{m1, m2, ...}]): a list of children, registered (their parameters belong to the
-- parent) but not called: the parent's forward decides how to use them.
local ModuleList = class("ModuleList", Module)
ModuleList.__index = container_index
ModuleList.__newindex = container_newindex
ModuleList.__len = container_len

function ModuleList:__init(modules)
  Module.__init(self)
  if modules ~= nil then self:extend(modules) end
end

--- Appends one module; returns self.
function ModuleList:append(module)
  check_module(module, "ModuleList:append", #self + 1)
  self:add_module(tostring(#self), module)
  return self
end
ModuleList.add = ModuleList.append

--- Appends every module of a list (or of another ModuleList); returns self.
function ModuleList:extend(modules)
  if type(modules) ~= "table" then error("ModuleList:extend: expected a list of modules, got " .. type(modules), 2) end
  for i = 1, #modules do
    check_module(modules[i], "ModuleList", i)
    self:append(modules[i])
  end
  return self
end

function ModuleList:forward()
  error("ModuleList has no forward(): call its entries from the parent's forward", 2)
end

return { Sequential = Sequential, ModuleList = ModuleList }
