-- cunet.optim.ema — an exponential moving average of parameters (shadow copies), as used to
-- evaluate and sample diffusion models (DDPM; LitEma of latent diffusion).
--
--   local ema = optim.EMA(params, {decay = 0.9999})
--   ... opt:step(); ema:update()
--   ema:swap(params); evaluate(); ema:swap(params)    -- evaluate with the averaged weights
--
-- update(): n = n + 1; decay_n = warmup and min(decay, (1 + n) / (10 + n)) or decay;
-- shadow = shadow - (1 - decay_n) (shadow - param). The warmup lets early shadows follow the
-- parameters instead of staying near their random start.

local core = require "cunet.core"
local common = require "cunet.optim.common"
local fail, check_number, shape_str = common.fail, common.check_number, common.shape_str

local kernels = core.optim

local EMA = {}
EMA.__index = EMA

function EMA:__tostring()
  return string.format("EMA(decay=%s, warmup=%s, updates=%d; %d parameters)", tostring(self.decay),
    tostring(self.warmup), self.num_updates, #self.params)
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

--- Folds the current parameters into the shadows; returns the decay used.
function EMA:update()
  self.num_updates = self.num_updates + 1
  local n = self.num_updates
  local decay = self.decay
  if self.warmup then decay = math.min(decay, (1 + n) / (10 + n)) end
  for i, p in ipairs(self.params) do kernels.ema_update_(self.shadow[i], p, decay) end
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
                    warmup = str(self.warmup), num_updates = str(self.num_updates) }
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
end

--- optim.EMA(params, {decay = 0.9999, warmup = true}): shadows start as copies of params.
return function(params, opts)
  local fname = "EMA"
  local list = common.collect_params(params, fname, true)
  local o = common.with_defaults(fname, opts, {decay = 0.9999, warmup = true})
  check_number(fname, "decay", o.decay, function(v) return v >= 0 and v <= 1 end, "must be in [0, 1]")
  if type(o.warmup) ~= "boolean" then fail(fname, "warmup must be a boolean") end
  local shadow = {}
  for i, p in ipairs(list) do shadow[i] = p:detach():clone() end
  return setmetatable({ params = list, shadow = shadow, decay = o.decay, warmup = o.warmup, num_updates = 0 }, EMA)
end
