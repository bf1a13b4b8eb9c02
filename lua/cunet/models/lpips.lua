-- models.lpips — LPIPS v0.1 (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as
-- a Perceptual Metric"; the lpips package of richzhang/PerceptualSimilarity) over the engine, with
-- an AlexNet or VGG16 trunk, loading user-supplied weights (docs/metrics.md, "Perceptual features").
--
--   local lpips = require "cunet.models.lpips"
--   if lpips.available() then                                -- checkpoints/lpips_alex.safetensors
--     local model = lpips.new{net = "alex"}                  -- or {net = "vgg", weights = path}
--     local d = model:distance(x, y)                         -- [N, C, H, W] in [-1, 1] -> [N]
--   end
--
-- distance: x and y are scaled by the lpips scaling layer ((x - shift) / scale), passed through
-- torchvision's alexnet.features (taps after relu1..relu5) or vgg16.features (relu1_2, relu2_2,
-- relu3_3, relu4_3, relu5_3); each tap is normalised over channels (x / (|x| + 1e-10)), the squared
-- difference of the two goes through the layer's 1x1 head (no bias), is averaged over space, and
-- the five are summed. One-channel images are repeated to three. It is differentiable (a loss).

local cn = require "cunet"
local options = require "cunet.options"
local class = require "cunet.class"
local pretrained = require "cunet.models.pretrained"

local M = {}

--- Options of new and their defaults (false: the default weights file of the net).
M.defaults = { net = "alex", weights = false }

--- The default weights file of each net, looked for with pretrained.find.
M.FILES = { alex = "lpips_alex.safetensors", vgg = "lpips_vgg.safetensors" }

-- The lpips scaling layer's constants (lpips/pretrained_networks.py, ScalingLayer).
local SHIFT = { -0.030, -0.088, -0.188 }
local SCALE = { 0.458, 0.448, 0.450 }

-- The trunks: torchvision's features indices of the convolutions (each followed by a ReLU), max
-- pools {kernel, stride} between them, and the taps (a slice of lpips ends after that ReLU).
local function conv(index, cin, cout, k, stride, pad)
  return { kind = "conv", name = "features." .. index, cin = cin, cout = cout, k = k, stride = stride, pad = pad }
end
local TAP, POOL3, POOL2 = { kind = "tap" }, { kind = "pool", k = 3, stride = 2 }, { kind = "pool", k = 2, stride = 2 }

M.TRUNKS = {
  alex = { min_side = 31, layers = {
    conv(0, 3, 64, 11, 4, 2), TAP, POOL3, conv(3, 64, 192, 5, 1, 2), TAP, POOL3,
    conv(6, 192, 384, 3, 1, 1), TAP, conv(8, 384, 256, 3, 1, 1), TAP, conv(10, 256, 256, 3, 1, 1), TAP } },
  vgg = { min_side = 16, layers = {
    conv(0, 3, 64, 3, 1, 1), conv(2, 64, 64, 3, 1, 1), TAP, POOL2,
    conv(5, 64, 128, 3, 1, 1), conv(7, 128, 128, 3, 1, 1), TAP, POOL2,
    conv(10, 128, 256, 3, 1, 1), conv(12, 256, 256, 3, 1, 1), conv(14, 256, 256, 3, 1, 1), TAP, POOL2,
    conv(17, 256, 512, 3, 1, 1), conv(19, 512, 512, 3, 1, 1), conv(21, 512, 512, 3, 1, 1), TAP, POOL2,
    conv(24, 512, 512, 3, 1, 1), conv(26, 512, 512, 3, 1, 1), conv(28, 512, 512, 3, 1, 1), TAP } },
}

local function check_net(net, who)
  if not M.TRUNKS[net] then
    error(string.format("%s: net must be \"alex\" or \"vgg\", got %s", who, tostring(net)), 4)
  end
end

--- spec(net) -> the list of {name=, shape=} a weights file for net holds (the official names:
-- torchvision's features.N.weight/bias and lpips' lin0..lin4.model.1.weight).
function M.spec(net)
  check_net(net, "lpips.spec")
  local list, taps = {}, 0
  local last = 3
  for _, l in ipairs(M.TRUNKS[net].layers) do
    if l.kind == "conv" then
      list[#list + 1] = { name = l.name .. ".weight", shape = { l.cout, l.cin, l.k, l.k } }
      list[#list + 1] = { name = l.name .. ".bias", shape = { l.cout } }
      last = l.cout
    elseif l.kind == "tap" then
      list[#list + 1] = { name = string.format("lin%d.model.1.weight", taps), shape = { 1, last, 1, 1 } }
      taps = taps + 1
    end
  end
  return list
end

--- available([weights [, net]]) -> true, path | false, "n/a (no weights: see docs)", where: whether
-- LPIPS can run with the weights file (nil: net's default file, net "alex" when nil).
function M.available(weights, net)
  net = net or M.defaults.net
  check_net(net, "lpips.available")
  return pretrained.available(weights, M.FILES[net])
end

local LPIPS = class("LPIPS")
M.LPIPS = LPIPS

--- new{net = "alex" | "vgg", weights = path}: the network with the weights of the file (default:
-- the net's file in ./checkpoints or the repository's, M.FILES). Raises naming the file and the
-- tensor when the weights are missing or do not fit.
function M.new(opts)
  local o = options.merge(opts, M.defaults, "lpips.new")
  check_net(o.net, "lpips.new")
  local path = o.weights or pretrained.default(M.FILES[o.net], "lpips.new")
  local self = setmetatable({}, LPIPS)
  self.net, self.path = o.net, path
  self.weights = pretrained.load(path, M.spec(o.net), "lpips.new")
  self.shift = cn.tensor(SHIFT, { 1, 3, 1, 1 })
  self.scale = cn.tensor(SCALE, { 1, 3, 1, 1 })
  return self
end

-- The five taps of the trunk for a batch z [B, 3, H, W] already scaled.
function LPIPS:taps(z)
  local w, out = self.weights, {}
  for _, l in ipairs(M.TRUNKS[self.net].layers) do
    if l.kind == "conv" then
      z = cn.conv2d(z, w[l.name .. ".weight"], w[l.name .. ".bias"], { stride = l.stride, padding = l.pad,
        activation = "relu" })
    elseif l.kind == "pool" then
      z = cn.max_pool2d(z, l.k, { stride = l.stride })
    else
      out[#out + 1] = z
    end
  end
  return out
end

local function check_images(x, who, what)
  if not cn.is_tensor(x) or x:dim() ~= 4 or (x:size(2) ~= 1 and x:size(2) ~= 3) then
    error(string.format("%s: %s must be a tensor [N, 1 or 3, H, W], got %s", who, what,
      cn.is_tensor(x) and "[" .. table.concat(x:shape(), ", ") .. "]" or type(x)), 3)
  end
end

--- model:distance(x, y) -> [N]: the LPIPS distance of each pair of images x[i], y[i], both
-- [N, C, H, W] in [-1, 1] with C = 1 (repeated to 3) or 3, H and W at least the trunk's minimum
-- (31 for alex, 16 for vgg). Differentiable with respect to x and y.
function LPIPS:distance(x, y)
  check_images(x, "lpips.distance", "x")
  check_images(y, "lpips.distance", "y")
  local sx, sy = x:shape(), y:shape()
  if sx[1] ~= sy[1] or sx[2] ~= sy[2] or sx[3] ~= sy[3] or sx[4] ~= sy[4] then
    error(string.format("lpips.distance: x [%s] and y [%s] must have the same shape", table.concat(sx, ", "),
      table.concat(sy, ", ")), 2)
  end
  local min_side = M.TRUNKS[self.net].min_side
  if sx[3] < min_side or sx[4] < min_side then
    error(string.format("lpips.distance: the %s trunk needs images of at least %d x %d, got %d x %d", self.net,
      min_side, min_side, sx[3], sx[4]), 2)
  end
  local n = sx[1]
  local z = cn.cat({ x, y }, 1)
  if sx[2] == 1 then z = z:expand { 2 * n, 3, sx[3], sx[4] } end
  local feats = self:taps((z - self.shift) / self.scale)
  local total
  for k, f in ipairs(feats) do
    local unit = f / (f:square():sum(2, true):sqrt() + 1e-10)
    local diff = (unit:narrow(1, 1, n) - unit:narrow(1, n + 1, n)):square()
    local head = self.weights[string.format("lin%d.model.1.weight", k - 1)]
    local layer = cn.conv2d(diff, head):mean({ 2, 3, 4 })
    total = total and total + layer or layer
  end
  return total
end

function LPIPS:__tostring()
  return string.format("LPIPS(net=%s, weights=%s)", self.net, self.path)
end

return M
