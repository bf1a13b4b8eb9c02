-- nn.functional — the engine's functional ops under torch.nn.functional's names.
--
--   local F = require("cunet").nn.functional
--   local y = F.conv2d(x, w, b, {stride = 2, padding = 1})
--   local z = F.interpolate(y, {scale_factor = 2, mode = "nearest"})
--
-- A name resolves, when used, to the op of the same name in `require "cunet"` (cn.conv2d,
-- cn.group_norm, cn.scaled_dot_product_attention, ...); `interpolate` is cn.upsample. The
-- activations are the tensor methods; softplus takes torch's beta and threshold. Looking names up
-- when called (not when this file loads) lets Lua-side ops added to cn later appear here too, and
-- a missing op raises an error naming it rather than "attempt to call a nil value".

local core = require "cunet.core"

local F = {}

-- torch name -> cn name, where they differ
local ALIAS = { interpolate = "upsample" }

-- The cunet table once it has loaded (it may add Lua-side ops to the core's), else the core.
local function lib()
  local cn = package.loaded["cunet"]
  return type(cn) == "table" and cn or core
end

--- True when the op behind F[name] exists in this build.
function F.available(name)
  return rawget(F, name) ~= nil or type(lib()[ALIAS[name] or name]) == "function"
end

function F.relu(x) return x:relu() end
function F.silu(x) return x:silu() end
function F.tanh(x) return x:tanh() end
function F.sigmoid(x) return x:sigmoid() end

--- gelu(x [, approximate="none"|"tanh"]) as torch's F.gelu(x, approximate=...).
function F.gelu(x, approximate)
  if approximate == nil or approximate == "none" then return x:gelu() end
  return x:gelu { approximate = approximate }
end

--- softplus(x [, beta=1 [, threshold=20]]) = log(1 + exp(beta·x)) / beta, and x itself where
-- beta·x > threshold (torch's rule; the engine's own softplus is beta 1, threshold 20).
function F.softplus(x, beta, threshold)
  beta, threshold = beta or 1, threshold or 20
  if beta == 1 and threshold == 20 then return x:softplus() end
  local bx = x * beta
  return lib().where(bx:gt(threshold), x, bx:softplus() / beta)
end

--- flatten(x [, start_dim=1 [, end_dim=-1]]) with 1-based dims: merges dims start..end into one.
function F.flatten(x, start_dim, end_dim)
  local n = x:dim()
  start_dim, end_dim = start_dim or 1, end_dim or -1
  if start_dim < 0 then start_dim = n + start_dim + 1 end
  if end_dim < 0 then end_dim = n + end_dim + 1 end
  if n == 0 then return x:reshape { 1 } end
  if start_dim < 1 or end_dim > n or start_dim > end_dim then
    error(string.format("flatten: dims %d..%d out of range for a %d-D tensor", start_dim, end_dim, n), 2)
  end
  local shape, merged = {}, 1
  for d = 1, n do
    if d < start_dim or d > end_dim then
      shape[#shape + 1] = x:size(d)
    else
      merged = merged * x:size(d)
      if d == end_dim then shape[#shape + 1] = merged end
    end
  end
  return x:reshape(shape)
end

return setmetatable(F, {
  __index = function(_, name)
    local fn = lib()[ALIAS[name] or name]
    if type(fn) == "function" then return fn end
    return function()
      error(string.format("nn.functional.%s: cn.%s is not available in this build", name, ALIAS[name] or name), 2)
    end
  end,
})
