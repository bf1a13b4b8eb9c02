-- models.pretrained — finding and loading the user-supplied weights of the feature networks
-- (LPIPS, pytorch-fid's Inception), whose trained values cannot ship with cunet: the user converts
-- the official PyTorch files with tools/convert_weights.py (docs/metrics.md, "Perceptual features").
--
--   local pretrained = require "cunet.models.pretrained"
--   local path = pretrained.find("inception_fid.safetensors")   -- ./checkpoints, then the repository's
--   local w = pretrained.load(path, {{name = "a.weight", shape = {8, 3, 3, 3}}, ...}, "inception")
--
-- load checks the file against the architecture's list of tensors: a missing file, a missing
-- tensor, a tensor of another shape or a tensor the architecture does not use is an error naming
-- the file and the tensor.

local cn = require "cunet"
local fs = require "cunet.fs"

local M = {}

--- Where the docs on obtaining the weights are, for error messages and "n/a" notes.
M.DOCS = "docs/metrics.md, section 'Perceptual features'"

-- The repository (or installation) root, written as lua/cunet/../.. as fid.lua always wrote it.
local function repo_root()
  local source = debug.getinfo(1, "S").source
  local dir = source:sub(1, 1) == "@" and source:sub(2):match("^(.*)/models/[^/]*$")
  return dir and dir .. "/../.." or "."
end

--- find(file) -> path, or nil and the list of places looked at (a string): the first of
-- ./checkpoints/<file> and the repository's (or installation's) checkpoints/<file> that exists.
function M.find(file)
  local candidates = { "checkpoints/" .. file, repo_root() .. "/checkpoints/" .. file }
  for _, p in ipairs(candidates) do
    if fs.exists(p) then return p end
  end
  return nil, table.concat(candidates, ", ")
end

--- The note a table column shows where the weights are missing.
M.NOT_AVAILABLE = "n/a (no weights: see docs)"

--- available(path, file) -> true, path | false, M.NOT_AVAILABLE, where: whether the weights file
-- path exists (nil: the default file, looked for with find); `where` says where it looked.
function M.available(path, file)
  local where = path
  if not path then path, where = M.find(file) end
  if path and fs.exists(path) then return true, path end
  return false, M.NOT_AVAILABLE, "looked for " .. tostring(where) .. "; see " .. M.DOCS
end

--- default(file, who) -> the path of the default weights file (find), or raises naming where it
-- looked and the docs.
function M.default(file, who)
  local path, where = M.find(file)
  if not path then
    error(string.format("%s: no weights (looked for %s); the trained weights are not shipped: see %s", who, where,
      M.DOCS), 3)
  end
  return path
end

local function shape_str(shape) return "[" .. table.concat(shape, ", ") .. "]" end

--- load(path, spec, who) -> {name = tensor}: the tensors of the safetensors file at path, which
-- must be exactly those of spec (a list of {name=, shape=}), with those shapes. Raises, naming the
-- file and the tensor, when the file is missing or unreadable, a tensor is missing or mis-shaped,
-- or the file holds tensors that spec does not list.
function M.load(path, spec, who)
  if type(path) ~= "string" then
    error(string.format("%s: the weights path must be a string, got %s (see %s)", who, type(path), M.DOCS), 3)
  end
  if not fs.exists(path) then
    error(string.format("%s: no weights file '%s' (the trained weights are not shipped: see %s)", who, path, M.DOCS), 3)
  end
  local ok, tensors = pcall(cn.load, path)
  if not ok then
    error(string.format("%s: cannot read the weights file '%s': %s", who, path, tostring(tensors)), 3)
  end
  local wanted = {}
  for _, s in ipairs(spec) do
    wanted[s.name] = true
    local t = tensors[s.name]
    if not t then
      error(string.format("%s: the weights file '%s' has no tensor '%s' (shape %s); convert the official " ..
        "file with tools/convert_weights.py (see %s)", who, path, s.name, shape_str(s.shape), M.DOCS), 3)
    end
    local got = t:shape()
    local same = #got == #s.shape
    for i = 1, #got do same = same and got[i] == s.shape[i] end
    if not same then
      error(string.format("%s: the weights file '%s' has tensor '%s' of shape %s, expected %s", who, path, s.name,
        shape_str(got), shape_str(s.shape)), 3)
    end
  end
  local extra = {}
  for name in pairs(tensors) do
    if not wanted[name] then extra[#extra + 1] = name end
  end
  if #extra > 0 then
    table.sort(extra)
    local shown = #extra > 5 and table.concat(extra, ", ", 1, 5) .. ", ..." or table.concat(extra, ", ")
    error(string.format("%s: the weights file '%s' holds %d tensor(s) this network does not use (%s): not " ..
      "weights for it?", who, path, #extra, shown), 3)
  end
  return tensors
end

return M
