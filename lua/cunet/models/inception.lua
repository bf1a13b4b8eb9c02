-- models.inception — the Inception-v3 of pytorch-fid (mseitzer/pytorch-fid 0.3, after Szegedy et al.
-- 2016 and the TensorFlow FID network of Heusel et al. 2017) over the engine: its 2048-d pool3
-- features, loading user-supplied weights (docs/metrics.md, "Perceptual features").
--
--   local inception = require "cunet.models.inception"
--   local net = inception.new{}                   -- checkpoints/inception_fid.safetensors, or {weights = path}
--   local f = net:features(images)                -- [N, C, H, W] in [0, 1] -> [N, 2048]
--
-- The FID weights' architecture, not torchvision's: blocks Mixed_5b..5d, 6b..6e and 7b average-pool
-- their pool branch with count_include_pad = false, and Mixed_7c max-pools it (pytorch-fid's
-- FIDInceptionA, C, E_1, E_2). Input as pytorch-fid feeds it: bilinear resize to 299 x 299
-- (align_corners = false), then 2x - 1. Every BasicConv2d (conv without bias, BatchNorm eps 0.001
-- with running statistics, ReLU) runs as one convolution with the BatchNorm folded into its weight
-- and bias at load time. One-channel images are repeated to three.

local cn = require "cunet"
local options = require "cunet.options"
local class = require "cunet.class"
local pretrained = require "cunet.models.pretrained"

local M = {}

--- Options of new and their defaults (false: M.FILE looked for with pretrained.find).
M.defaults = { weights = false }
M.FILE = "inception_fid.safetensors"
M.FEATURES = 2048
M.SIZE = 299
local BN_EPS = 0.001

-- One BasicConv2d: name, channels in and out, kernel {kh, kw}, stride, padding {ph, pw}.
local function bc(name, cin, cout, k, stride, pad)
  if type(k) == "number" then k = { k, k } end
  if type(pad) == "number" then pad = { pad, pad } end
  return { name = name, cin = cin, cout = cout, k = k, stride = stride or 1, pad = pad or { 0, 0 } }
end

-- The blocks: each a list of BasicConv2d (names relative to the block) and a forward over them.
local function block_a(cin, pool_features)
  return { kind = "A", convs = {
    bc("branch1x1", cin, 64, 1), bc("branch5x5_1", cin, 48, 1), bc("branch5x5_2", 48, 64, 5, 1, 2),
    bc("branch3x3dbl_1", cin, 64, 1), bc("branch3x3dbl_2", 64, 96, 3, 1, 1), bc("branch3x3dbl_3", 96, 96, 3, 1, 1),
    bc("branch_pool", cin, pool_features, 1) } }
end
local function block_b(cin)
  return { kind = "B", convs = {
    bc("branch3x3", cin, 384, 3, 2), bc("branch3x3dbl_1", cin, 64, 1), bc("branch3x3dbl_2", 64, 96, 3, 1, 1),
    bc("branch3x3dbl_3", 96, 96, 3, 2) } }
end
local function block_c(cin, c7)
  return { kind = "C", convs = {
    bc("branch1x1", cin, 192, 1),
    bc("branch7x7_1", cin, c7, 1), bc("branch7x7_2", c7, c7, { 1, 7 }, 1, { 0, 3 }),
    bc("branch7x7_3", c7, 192, { 7, 1 }, 1, { 3, 0 }),
    bc("branch7x7dbl_1", cin, c7, 1), bc("branch7x7dbl_2", c7, c7, { 7, 1 }, 1, { 3, 0 }),
    bc("branch7x7dbl_3", c7, c7, { 1, 7 }, 1, { 0, 3 }), bc("branch7x7dbl_4", c7, c7, { 7, 1 }, 1, { 3, 0 }),
    bc("branch7x7dbl_5", c7, 192, { 1, 7 }, 1, { 0, 3 }),
    bc("branch_pool", cin, 192, 1) } }
end
local function block_d(cin)
  return { kind = "D", convs = {
    bc("branch3x3_1", cin, 192, 1), bc("branch3x3_2", 192, 320, 3, 2),
    bc("branch7x7x3_1", cin, 192, 1), bc("branch7x7x3_2", 192, 192, { 1, 7 }, 1, { 0, 3 }),
    bc("branch7x7x3_3", 192, 192, { 7, 1 }, 1, { 3, 0 }), bc("branch7x7x3_4", 192, 192, 3, 2) } }
end
local function block_e(cin, max_pool)
  return { kind = "E", max_pool = max_pool, convs = {
    bc("branch1x1", cin, 320, 1),
    bc("branch3x3_1", cin, 384, 1), bc("branch3x3_2a", 384, 384, { 1, 3 }, 1, { 0, 1 }),
    bc("branch3x3_2b", 384, 384, { 3, 1 }, 1, { 1, 0 }),
    bc("branch3x3dbl_1", cin, 448, 1), bc("branch3x3dbl_2", 448, 384, 3, 1, 1),
    bc("branch3x3dbl_3a", 384, 384, { 1, 3 }, 1, { 0, 1 }), bc("branch3x3dbl_3b", 384, 384, { 3, 1 }, 1, { 1, 0 }),
    bc("branch_pool", cin, 192, 1) } }
end

-- The network in order: stem convolutions (by name), "pool" (max pool 3, stride 2), and blocks.
M.LAYERS = {
  { name = "Conv2d_1a_3x3", conv = bc("", 3, 32, 3, 2) }, { name = "Conv2d_2a_3x3", conv = bc("", 32, 32, 3) },
  { name = "Conv2d_2b_3x3", conv = bc("", 32, 64, 3, 1, 1) }, { pool = true },
  { name = "Conv2d_3b_1x1", conv = bc("", 64, 80, 1) }, { name = "Conv2d_4a_3x3", conv = bc("", 80, 192, 3) },
  { pool = true },
  { name = "Mixed_5b", block = block_a(192, 32) }, { name = "Mixed_5c", block = block_a(256, 64) },
  { name = "Mixed_5d", block = block_a(288, 64) }, { name = "Mixed_6a", block = block_b(288) },
  { name = "Mixed_6b", block = block_c(768, 128) }, { name = "Mixed_6c", block = block_c(768, 160) },
  { name = "Mixed_6d", block = block_c(768, 160) }, { name = "Mixed_6e", block = block_c(768, 192) },
  { name = "Mixed_7a", block = block_d(768) }, { name = "Mixed_7b", block = block_e(1280, false) },
  { name = "Mixed_7c", block = block_e(2048, true) },
}

-- Every BasicConv2d with its full name ("Mixed_5b.branch1x1"), in order.
local function all_convs()
  local list = {}
  for _, l in ipairs(M.LAYERS) do
    if l.conv then
      list[#list + 1] = { full = l.name, conv = l.conv }
    elseif l.block then
      for _, c in ipairs(l.block.convs) do list[#list + 1] = { full = l.name .. "." .. c.name, conv = c } end
    end
  end
  return list
end

--- spec() -> the list of {name=, shape=} the weights file holds: for every BasicConv2d P,
-- P.conv.weight and P.bn.weight, .bias, .running_mean, .running_var (pytorch-fid's names; its fc.*
-- and num_batches_tracked are left out by tools/convert_weights.py).
function M.spec()
  local list = {}
  for _, e in ipairs(all_convs()) do
    local c = e.conv
    list[#list + 1] = { name = e.full .. ".conv.weight", shape = { c.cout, c.cin, c.k[1], c.k[2] } }
    for _, p in ipairs { "weight", "bias", "running_mean", "running_var" } do
      list[#list + 1] = { name = e.full .. ".bn." .. p, shape = { c.cout } }
    end
  end
  return list
end

--- available([weights]) -> true, path | false, "n/a (no weights: see docs)", where: whether the
-- network can run with the weights file (nil: the default file).
function M.available(weights) return pretrained.available(weights, M.FILE) end

local Inception = class("InceptionV3FID")
M.Inception = Inception

--- new{weights = path} -> the network (default weights: M.FILE in ./checkpoints or the
-- repository's). Raises naming the file and the tensor when the weights are missing or do not fit.
function M.new(opts)
  local o = options.merge(opts, M.defaults, "inception.new")
  local path = o.weights or pretrained.default(M.FILE, "inception.new")
  local w = pretrained.load(path, M.spec(), "inception.new")
  local self = setmetatable({ path = path, convs = {} }, Inception)
  -- fold BatchNorm (eval) into the convolution: y = (conv(x) - mean) * g / sqrt(var + eps) + b
  cn.no_grad(function()
    for _, e in ipairs(all_convs()) do
      local p = e.full
      local scale = w[p .. ".bn.weight"] / (w[p .. ".bn.running_var"] + BN_EPS):sqrt()
      self.convs[p] = {
        weight = (w[p .. ".conv.weight"] * scale:view { -1, 1, 1, 1 }):contiguous(),
        bias = w[p .. ".bn.bias"] - w[p .. ".bn.running_mean"] * scale,
        opts = { stride = e.conv.stride, padding = e.conv.pad, activation = "relu" },
      }
    end
  end)
  return self
end

--- net:tensors() -> {name = tensor}: the folded weights ("<conv>.weight", "<conv>.bias"), e.g. to
-- fingerprint the network.
function Inception:tensors()
  local out = {}
  for name, c in pairs(self.convs) do
    out[name .. ".weight"], out[name .. ".bias"] = c.weight, c.bias
  end
  return out
end

-- BasicConv2d `name` on x.
function Inception:conv(name, x)
  local c = self.convs[name]
  return cn.conv2d(x, c.weight, c.bias, c.opts)
end

local function avg_pool3(x) return cn.avg_pool2d(x, 3, { stride = 1, padding = 1, count_include_pad = false }) end

function Inception:block(name, b, x)
  local function c(branch, z) return self:conv(name .. "." .. branch, z) end
  if b.kind == "A" then
    return cn.cat({ c("branch1x1", x), c("branch5x5_2", c("branch5x5_1", x)),
      c("branch3x3dbl_3", c("branch3x3dbl_2", c("branch3x3dbl_1", x))), c("branch_pool", avg_pool3(x)) }, 2)
  elseif b.kind == "B" then
    return cn.cat({ c("branch3x3", x), c("branch3x3dbl_3", c("branch3x3dbl_2", c("branch3x3dbl_1", x))),
      cn.max_pool2d(x, 3, { stride = 2 }) }, 2)
  elseif b.kind == "C" then
    local d = x
    for i = 1, 5 do d = c("branch7x7dbl_" .. i, d) end
    return cn.cat({ c("branch1x1", x), c("branch7x7_3", c("branch7x7_2", c("branch7x7_1", x))), d,
      c("branch_pool", avg_pool3(x)) }, 2)
  elseif b.kind == "D" then
    return cn.cat({ c("branch3x3_2", c("branch3x3_1", x)),
      c("branch7x7x3_4", c("branch7x7x3_3", c("branch7x7x3_2", c("branch7x7x3_1", x)))),
      cn.max_pool2d(x, 3, { stride = 2 }) }, 2)
  end
  local b3 = c("branch3x3_1", x)
  local bd = c("branch3x3dbl_2", c("branch3x3dbl_1", x))
  local pool = b.max_pool and cn.max_pool2d(x, 3, { stride = 1, padding = 1 }) or avg_pool3(x)
  return cn.cat({ c("branch1x1", x), c("branch3x3_2a", b3), c("branch3x3_2b", b3), c("branch3x3dbl_3a", bd),
    c("branch3x3dbl_3b", bd), c("branch_pool", pool) }, 2)
end

--- net:features(images) -> [N, 2048]: the pool3 features of images [N, C, H, W] in [0, 1]
-- (pytorch-fid's input range), C = 1 (repeated to 3) or 3, any H and W (resized to 299).
function Inception:features(images)
  if not cn.is_tensor(images) or images:dim() ~= 4 or (images:size(2) ~= 1 and images:size(2) ~= 3) then
    error(string.format("inception.features: images must be a tensor [N, 1 or 3, H, W], got %s",
      cn.is_tensor(images) and "[" .. table.concat(images:shape(), ", ") .. "]" or type(images)), 2)
  end
  local n = images:size(1)
  local x = images
  if x:size(2) == 1 then x = x:expand { n, 3, x:size(3), x:size(4) } end
  x = cn.upsample(x, { size = { M.SIZE, M.SIZE }, mode = "bilinear", align_corners = false }) * 2 - 1
  for _, l in ipairs(M.LAYERS) do
    if l.conv then
      x = self:conv(l.name, x)
    elseif l.pool then
      x = cn.max_pool2d(x, 3, { stride = 2 })
    else
      x = self:block(l.name, l.block, x)
    end
  end
  return cn.adaptive_avg_pool2d(x, 1):view { n, M.FEATURES }
end

function Inception:__tostring()
  return string.format("InceptionV3FID(pool3 %d features, weights=%s)", M.FEATURES, self.path)
end

return M
