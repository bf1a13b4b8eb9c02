-- seeded_weights — the random weights of tests/tools/fixtures_perceptual.py, restated bit for bit:
-- a 64-bit LCG (Knuth's MMIX constants) seeded with the FNV-1a hash of the tensor's name; the top
-- 24 bits u of each state give w = center + half * (u - 2^23) / 2^23 in double (exact IEEE
-- operations, the same in both languages), rounded once to float32 when the tensor is made.
-- Lua integers wrap modulo 2^64 and `>>` is a logical shift, as the generator's masking.
--
--   local seeded = require "seeded_weights"
--   local t = seeded.tensor("features.0.weight", {64, 3, 11, 11})
--   seeded.save(path, {{name=, shape=}, ...})          -- all of them, as one safetensors file

local cn = require "cunet"

local M = {}

local LCG_A, LCG_C = 6364136223846793005, 1442695040888963407

local function fnv1a64(name)
  local h = 0xcbf29ce484222325
  for i = 1, #name do h = (h ~ name:byte(i)) * 0x100000001b3 end
  return h
end

--- (center, half) of a tensor's uniform draw, by name and shape (the generator's init_rule).
function M.rule(name, shape)
  if #shape == 4 then
    if name:sub(1, 3) == "lin" then return 0.5, 0.5 end
    return 0.0, math.sqrt(6 / (shape[2] * shape[3] * shape[4]))
  end
  if name:match("weight$") or name:match("running_var$") then return 1.0, 0.25 end
  return 0.0, 0.125
end

--- The tensor `name` of shape `shape`, drawn as the generator draws it.
function M.tensor(name, shape)
  local center, half = M.rule(name, shape)
  local n = 1
  for _, s in ipairs(shape) do n = n * s end
  local x, data = fnv1a64(name), {}
  for i = 1, n do
    x = x * LCG_A + LCG_C
    data[i] = center + half * (((x >> 40) - 8388608) / 8388608)
  end
  return cn.tensor(data, shape)
end

--- Writes every tensor of specs ({name=, shape=} entries) to a safetensors file at path.
function M.save(path, specs)
  local tensors = {}
  for _, s in ipairs(specs) do tensors[s.name] = M.tensor(s.name, s.shape) end
  cn.save(path, tensors)
  return tensors
end

return M
