-- cunet.optim.ema — an exponential moving average of parameters (shadow copies), as used to
-- evaluate and sample diffusion models (DDPM; LitEma of latent diffusion).
--
--   local ema = optim.EMA(params, {decay = 0.9999})
--   ... opt:step(); ema:update()
--   ema:swap(params); evaluate(); ema:swap(params)    -- evaluate with the averaged weights
--
-- update() is call c = 0, 1, 2, ... (num_updates before it). It folds the parameters in only on every
-- `every`-th call (c % every == 0); on those, while c <= after and on the first one past it (where
-- ema_pytorch initialises its copy) it copies them (decay 0), and after that
-- shadow = shadow - (1 - decay_c) (shadow - param) with e = c - after (after = false: e = c + 1) and
--   warmup = true:  decay_c = min(decay, (1 + e) / (10 + e))               (LitEma of latent diffusion)
--   power = p:      decay_c = min(decay, 1 - (1 + e / inv_gamma)^-p)     (ema_pytorch's inverse decay)
--   neither:        decay_c = decay.
-- A warmup lets early shadows follow the parameters instead of staying near their random start. With
-- every = 10, after = 100, power = 2/3 and inv_gamma = 1 this is lucidrains' ema_pytorch (the trainer of
-- the paper's authors' code), the shadows here starting as copies of the parameters.

local core = require "cunet.core"
local common = require "cunet.optim.common"
local fail, check_number, shape_str = common.fail, common.check_number, common.shape_str

local kernels = core.optim

local EMA = {}
EMA.__index = EMA

-- The schedule's settings are valid (each named in the message), and power and warmup are not both on.
local function check_settings(fname, e)
  check_number(fname, "decay", e.decay, function(v) return v >= 0 and v <= 1 end, "must be in [0, 1]")
  if type(e.warmup) ~= "boolean" then fail(fname, "warmup must be a boolean") end
  if e.power ~= false then
    check_number(fname, "power", e.power, function(v) return v > 0 end, "must be > 0, or false for none")
    if e.warmup then fail(fname, "power (the inverse-decay warmup) and warmup (LitEma's) are two warmups: set warmup = false") end
  end
  check_number(fname, "inv_gamma", e.inv_gamma, function(v) return v > 0 end, "must be > 0")
  if math.type(e.every) ~= "integer" or e.every < 1 then fail(fname, "every must be an integer >= 1, got %s", tostring(e.every)) end
  if e.after ~= false and (math.type(e.after) ~= "integer" or e.after < 0) then
    fail(fname, "after must be an integer >= 0 or false, got %s", tostring(e.after))
  end
end

function EMA:__tostring()
  return string.format("EMA(decay=%s, warmup=%s, power=%s, every=%d, after=%s, updates=%d; %d parameters)",
    tostring(self.decay), tostring(self.warmup), tostring(self.power), self.every, tostring(self.after),
    self.num_updates, #self.params)
end

-- params (default: the tracked ones) as a list matching the shadows in count and shapes.
local function matching(self, params, fname)
  if params == nil then return self.params end
  local list = common.collect_params(params, fname, true)
  if #list ~= #self.shadow then
    fail(fname, "got %d parameters, the EMA tracks %d", #list, #self.shadow)
  end
  for i, p in ipairs(list) do
    local a, b = shape_str(p:shape()), shape_str(self.shadow[i]:shape())
    if a ~= b then fail(fname, "parameter %d has shape %s, its shadow %s", i, a, b) end
  end
  return list
end

--- The decay call c (0-based) folds with, 0 for a copy, or nil when the call does not fold.
function EMA:decay_at(c)
  if c % self.every ~= 0 then return nil end
  if self.after and c - self.every <= self.after then return 0 end
  local e = self.after and c - self.after or c + 1
  if self.power then return math.min(self.decay, 1 - (1 + e / self.inv_gamma) ^ -self.power) end
  if self.warmup then return math.min(self.decay, (1 + e) / (10 + e)) end
  return self.decay
end

--- Folds the current parameters into the shadows (on the calls that fold); returns the decay used,
-- or nil when this call does not fold.
function EMA:update()
  local decay = self:decay_at(self.num_updates)
  self.num_updates = self.num_updates + 1
  if decay then
    for i, p in ipairs(self.params) do kernels.ema_update_(self.shadow[i], p, decay) end
  end
  return decay
end

--- Copies the shadows into params (default: the tracked parameters).
function EMA:copy_to(params)
  local list = matching(self, params, "EMA:copy_to")
  core.no_grad(function()
    for i, p in ipairs(list) do p:copy_(self.shadow[i]) end
  end)
end

--- Exchanges params' values with the shadows; a second swap restores both.
function EMA:swap(params)
  local list = matching(self, params, "EMA:swap")
  core.no_grad(function()
    for i, p in ipairs(list) do
      if p:is_contiguous() then
        kernels.swap_(p, self.shadow[i])
      else
        local keep = p:clone()
        p:copy_(self.shadow[i])
        self.shadow[i]:copy_(keep)
      end
    end
  end)
end

--- The shadow tensors, in order (live references).
function EMA:shadows() return self.shadow end

--- tensors ("shadow.<i>" -> a copy) and scalars (strings), ready for cn.save.
function EMA:state_dict()
  local tensors = {}
  for i, s in ipairs(self.shadow) do tensors["shadow." .. i] = s:clone() end
  local str = common.to_scalar_string
  return tensors, { type = "EMA", n_params = str(#self.shadow), decay = str(self.decay),
                    warmup = str(self.warmup), num_updates = str(self.num_updates), power = str(self.power),
                    inv_gamma = str(self.inv_gamma), every = str(self.every), after = str(self.after) }
end

--- Restores a state_dict (tensors copied), checking the count and every shape first.
function EMA:load_state_dict(tensors, scalars)
  local fname = "EMA:load_state_dict"
  if type(tensors) ~= "table" or type(scalars) ~= "table" then
    fail(fname, "expected (tensors, scalars) as returned by state_dict(), got (%s, %s)", type(tensors), type(scalars))
  end
  if scalars.type ~= "EMA" then fail(fname, "the state is from %s, not EMA", tostring(scalars.type)) end
  local n = common.from_scalar(fname, scalars, "n_params", "integer")
  if n ~= #self.shadow then fail(fname, "the state is for %d parameters, the EMA tracks %d", n, #self.shadow) end
  local decay = common.from_scalar(fname, scalars, "decay", "number")
  local warmup = common.from_scalar(fname, scalars, "warmup", "boolean")
  local num_updates = common.from_scalar(fname, scalars, "num_updates", "integer")
  -- the schedule's other settings (states written before they existed lack them: the defaults)
  local function optional(key, kind, default)
    local v = scalars[key]
    if v == nil then return default end
    if v == false or v == "false" then return false end
    return common.from_scalar(fname, scalars, key, kind)
  end
  local power, inv_gamma = optional("power", "number", false), optional("inv_gamma", "number", 1)
  local every, after = optional("every", "integer", 1), optional("after", "integer", false)
  local shadow = {}
  for key, t in pairs(tensors) do
    local i = tonumber(tostring(key):match("^shadow%.(%d+)$"))
    if not i or i < 1 or i > n then fail(fname, "unexpected tensor '%s'", tostring(key)) end
    if not core.is_tensor(t) then fail(fname, "'%s' is a %s, not a tensor", key, type(t)) end
    local a, b = shape_str(t:shape()), shape_str(self.shadow[i]:shape())
    if a ~= b then fail(fname, "'%s' has shape %s but parameter %d has shape %s", key, a, i, b) end
    shadow[i] = t:detach():clone()
  end
  for i = 1, n do
    if not shadow[i] then fail(fname, "missing tensor 'shadow.%d'", i) end
  end
  self.shadow, self.decay, self.warmup, self.num_updates = shadow, decay, warmup, num_updates
  self.power, self.inv_gamma, self.every, self.after = power, inv_gamma, every, after
  check_settings(fname, self)
end

--- optim.EMA(params, {decay = 0.9999, warmup = true, power = false, inv_gamma = 1, every = 1, after = false}):
-- shadows start as copies of params; the options are the schedule of update() (above).
local DEFAULTS = {decay = 0.9999, warmup = true, power = false, inv_gamma = 1, every = 1, after = false}
return function(params, opts)
  local fname = "EMA"
  local list = common.collect_params(params, fname, true)
  local o = common.with_defaults(fname, opts, DEFAULTS)
  local shadow = {}
  for i, p in ipairs(list) do shadow[i] = p:detach():clone() end
  local ema = setmetatable({ params = list, shadow = shadow, decay = o.decay, warmup = o.warmup, power = o.power,
                             inv_gamma = o.inv_gamma, every = o.every, after = o.after, num_updates = 0 }, EMA)
  check_settings(fname, ema)
  return ema
end
