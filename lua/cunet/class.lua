-- class — the tiny class helper shared by the Lua library.
--
--   local class = require "cunet.class"
--   local Animal = class("Animal")
--   function Animal:__init(name) self.name = name end
--   function Animal:speak() return self.name .. " makes a sound" end
--
--   local Dog = class("Dog", Animal)            -- single inheritance
--   function Dog:__init(name) Animal.__init(self, name); self.tricks = {} end
--   local d = Dog("Rex")                        -- calling a class makes an instance
--   class.is_instance(d, Animal), class.name(d) --> true, "Dog"
--
-- An instance's metatable is its class; a class's metatable makes missing methods fall back to the
-- parent and makes the class callable. Metamethods (__index, __call, __tostring, ...) are not
-- inherited through __index by Lua itself, so a new class copies its parent's at creation: define
-- a parent's metamethods before deriving from it. A class that defines no __index of its own looks
-- its methods up in itself (the usual `Class.__index = Class`).

local class = {}

-- Metamethods Lua reads with a raw lookup in the metatable: copied from parent to child.
local METAMETHODS = {
  "__index", "__newindex", "__call", "__tostring", "__len", "__eq", "__lt", "__le", "__concat",
  "__unm", "__add", "__sub", "__mul", "__div", "__mod", "__pow", "__idiv", "__band", "__bor",
  "__bxor", "__shl", "__shr", "__bnot", "__close", "__pairs", "__gc",
}

local function construct(cls, ...)
  local self = setmetatable({}, cls)
  local init = cls.__init
  if init then init(self, ...) end
  return self
end

--- class(name [, parent]) -> a new class table. Instances are made by calling it: Class(...),
-- which runs Class.__init(self, ...) (inherited from the parent when the class has none).
local function new_class(_, name, parent)
  assert(type(name) == "string", "class: the first argument must be the class name")
  assert(parent == nil or class.is_class(parent), "class: the parent must be a class")
  local cls = { __name = name, super = parent, __is_class = true }
  if parent then
    for _, m in ipairs(METAMETHODS) do
      local v = rawget(parent, m)
      -- a parent's default `__index = parent` must become the child's own table, not the parent
      if v ~= nil and not (m == "__index" and v == parent) then cls[m] = v end
    end
  end
  if cls.__index == nil then cls.__index = cls end
  return setmetatable(cls, { __index = parent, __call = construct, __tostring = function() return "class " .. name end })
end

--- True when c is a class made by this helper.
function class.is_class(c)
  return type(c) == "table" and rawget(c, "__is_class") == true
end

--- The class of an instance (nil for anything else).
function class.of(obj)
  local mt = type(obj) == "table" and getmetatable(obj)
  if class.is_class(mt) then return mt end
  return nil
end

--- The class name of an instance ("Conv2d"), or nil.
function class.name(obj)
  local c = class.of(obj)
  return c and c.__name
end

--- True when obj is an instance of cls or of one of its subclasses.
function class.is_instance(obj, cls)
  local c = class.of(obj)
  while c do
    if c == cls then return true end
    c = rawget(c, "super")
  end
  return false
end

--- True when sub is cls or derives from it.
function class.is_subclass(sub, cls)
  local c = class.is_class(sub) and sub or nil
  while c do
    if c == cls then return true end
    c = rawget(c, "super")
  end
  return false
end

return setmetatable(class, { __call = new_class })
