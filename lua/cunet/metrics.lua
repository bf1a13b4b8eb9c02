-- metrics — image quality (SSIM, MS-SSIM, PSNR) and distribution distances (FID, KID) over the
-- C kernels of engine/metrics.h. See docs/metrics.md for the references each one matches.
--
--   local metrics = require "cunet.metrics"
--   local s = metrics.ssim(x, y, {data_range = 1})            -- [C, H, W]: a number
--   local v = metrics.ssim(xs, ys, {data_range = 2})          -- [N, C, H, W]: a tensor [N]
--   local real = metrics.FeatureStats.load("stats.safetensors", "mnist_train")
--   if not real then real = metrics.FeatureStats():add(feats):save("stats.safetensors", "mnist_train") end
--   local fid = metrics.fid(real, metrics.FeatureStats():add(fake_feats))
--   local kid, kid_std = metrics.kid(real_feats, fake_feats, {subsets = 100, subset_size = 1000})
--
-- Images are [N, C, H, W], or one image [C, H, W] (or [H, W]); data_range (max - min of the value
-- range: 1 for [0, 1], 2 for [-1, 1], 255 for 8-bit) is required, as a wrong guess silently
-- changes SSIM. Features are [N, D] tensors.

local core = require "cunet.core" -- not "cunet": that one may require this module
local class = require "cunet.class"
local option_rules = require "cunet.options"

local kernels = core.metrics
local M = {}

-- Every option with its default, in one place (nil: required or derived).
local DEFAULTS = {
  ssim = { data_range = false, sigma = 1.5, win_size = false, k1 = 0.01, k2 = 0.03, return_map = false },
  ms_ssim = { data_range = false, weights = false, scales = false, sigma = 1.5, win_size = 11, k1 = 0.01,
              k2 = 0.03 },
  psnr = { data_range = false },
  kid = { subsets = 100, subset_size = false },
}

local function shape_str(t)
  return "[" .. table.concat(t:shape(), ", ") .. "]"
end

-- opts merged over the defaults of fname; unknown names are errors (a typo never passes silently).
local function options(fname, opts)
  local o = option_rules.merge(opts, DEFAULTS[fname], fname, 4)
  for k, v in pairs(o) do if v == false and k ~= "return_map" then o[k] = nil end end
  return o
end

local function check_range(fname, o)
  local r = o.data_range
  if r == nil then
    error(fname .. ": data_range is required (1 for images in [0, 1], 2 for [-1, 1], 255 for 8-bit)", 3)
  end
  if type(r) ~= "number" or not (r > 0) or r == math.huge then
    error(("%s: data_range must be a positive number, got %s"):format(fname, tostring(r)), 3)
  end
end

-- a, b as [N, C, H, W]; single is true for one image ([C, H, W] or [H, W]).
local function images(fname, a, b)
  for i, t in ipairs{a, b} do
    if not core.is_tensor(t) then
      error(("%s: argument #%d must be a tensor, got %s"):format(fname, i, type(t)), 3)
    end
  end
  local d = a:dim()
  if d ~= b:dim() or d < 2 or d > 4 then
    error(("%s: images must have the same shape [N, C, H, W], [C, H, W] or [H, W], got %s and %s")
      :format(fname, shape_str(a), shape_str(b)), 3)
  end
  if d == 4 then return a, b, false end
  local function batch(t) return d == 3 and t:unsqueeze(1) or t:unsqueeze(1):unsqueeze(1) end
  return batch(a), batch(b), true
end

-- per-image values: a number for one image, a 1-D tensor otherwise
local function result(values, single)
  if single then return values[1] end
  return core.tensor(values, {#values})
end

--- SSIM as scikit-image's structural_similarity(gaussian_weights=True, sigma=1.5,
-- use_sample_covariance=False, data_range=R, channel_axis=<C>): per image, the mean over channels.
-- opts: data_range (required), sigma=1.5, win_size (default from sigma, 11 taps), k1=0.01, k2=0.03,
-- return_map=false (then also the full SSIM map, shaped as the input).
function M.ssim(a, b, opts)
  local o = options("ssim", opts)
  check_range("ssim", o)
  local a4, b4, single = images("ssim", a, b)
  local shape = a:shape()
  local values, map = kernels.ssim(a4, b4, o.data_range, o.sigma, o.win_size or 0, o.k1, o.k2, o.return_map)
  if not o.return_map then return result(values, single) end
  if single then map = map:reshape(shape) end
  return result(values, single), map
end

--- The weights MS-SSIM uses for images of h x w with opts (see M.ms_ssim), and the window size.
function M.ms_ssim_weights(h, w, opts)
  local o = options("ms_ssim", opts)
  local win = o.win_size
  if o.weights then
    if type(o.weights) ~= "table" or #o.weights < 1 then
      error("ms_ssim: weights must be a non-empty list of numbers", 2)
    end
    if o.scales and o.scales ~= #o.weights then
      error(("ms_ssim: scales = %s but %d weights given"):format(tostring(o.scales), #o.weights), 2)
    end
    return { table.unpack(o.weights) }, win
  end
  local wang = kernels.ms_ssim_weights()
  local scales = o.scales
  if scales == nil then
    scales = kernels.ms_ssim_max_scales(h, w, win, #wang)
    if scales < 1 then
      error(("ms_ssim: images of %dx%d are smaller than the %d-tap window"):format(h, w, win), 2)
    end
  elseif math.type(scales) ~= "integer" or scales < 1 or scales > #wang then
    error(("ms_ssim: scales must be an integer in 1..%d without weights, got %s"):format(#wang, tostring(scales)), 2)
  end
  if scales == #wang then return wang, win end
  local used, sum = {}, 0
  for l = 1, scales do sum = sum + wang[l] end
  for l = 1, scales do used[l] = wang[l] / sum end -- a weighted geometric mean again: exponents sum to 1
  return used, win
end

--- MS-SSIM as pytorch-msssim 1.0's ms_ssim (Wang et al. 2003 weights, 11-tap window of sigma 1.5,
-- 2x2 average pooling between scales). opts: data_range (required), weights (default: Wang's five),
-- scales (use only the first of Wang's weights, renormalised), win_size=11, sigma=1.5, k1, k2.
-- Without weights or scales, images too small for five scales (min(H, W) <= 160 with 11 taps) use
-- the most scales that fit, with the first weights renormalised to sum 1: 2 scales for 28 x 28.
function M.ms_ssim(a, b, opts)
  local o = options("ms_ssim", opts)
  check_range("ms_ssim", o)
  local a4, b4, single = images("ms_ssim", a, b)
  local shape = a4:shape()
  local weights, win = M.ms_ssim_weights(shape[3], shape[4], opts)
  local values = kernels.ms_ssim(a4, b4, o.data_range, o.sigma, win, o.k1, o.k2, weights)
  return result(values, single)
end

--- PSNR as scikit-image's peak_signal_noise_ratio: 10 log10(R^2 / MSE) per image (MSE over C x H x W);
-- +inf for identical images. opts: data_range (required).
function M.psnr(a, b, opts)
  local o = options("psnr", opts)
  check_range("psnr", o)
  local a4, b4, single = images("psnr", a, b)
  return result(kernels.psnr(a4, b4, o.data_range), single)
end

-- ---- feature statistics ------------------------------------------------------------------------

--- FeatureStats([dim]): count, mean and covariance of feature vectors in double, added batch by
-- batch (any batch sizes give the same statistics up to rounding).
local FeatureStats = class("FeatureStats")
M.FeatureStats = FeatureStats

function FeatureStats:__init(dim)
  if dim ~= nil and math.type(dim) ~= "integer" then
    error("FeatureStats: the dimension must be an integer, got " .. tostring(dim), 3)
  end
  self._stats = kernels.feature_stats(dim or 0)
end

local function wrap(stats)
  local s = FeatureStats()
  s._stats:free()
  s._stats = stats
  return s
end

--- Adds the rows of features [N, D]; returns self.
function FeatureStats:add(features)
  if not core.is_tensor(features) then
    error("FeatureStats:add: features must be a tensor [N, D], got " .. type(features), 2)
  end
  self._stats:add(features)
  return self
end

--- Adds everything other has seen; returns self.
function FeatureStats:merge(other)
  if not class.is_instance(other, FeatureStats) then error("FeatureStats:merge: a FeatureStats expected", 2) end
  self._stats:merge(other._stats)
  return self
end

function FeatureStats:count() return self._stats:count() end
function FeatureStats:dim() return self._stats:dim() end
--- The mean [D] as float32.
function FeatureStats:mean() return self._stats:mean() end
--- The unbiased covariance [D, D] (divided by count - 1, as np.cov) as float32.
function FeatureStats:cov() return self._stats:cov() end
--- Releases the C-side memory now (the object is unusable afterwards).
function FeatureStats:free() self._stats:free() end
function FeatureStats:__tostring() return tostring(self._stats) end

local PARTS = { "mean", "mean_lo", "cov", "cov_lo" }

local function check_name(fname, name)
  if type(name) ~= "string" or name == "" or name:find("\0", 1, true) then
    error(fname .. ": the statistics need a non-empty name (a string)", 3)
  end
end

--- Saves the statistics into the safetensors file at path under name, keeping other names already
-- in the file (which is rewritten, atomically). Tensors <name>.mean, <name>.cov hold the float32
-- value and <name>.mean_lo, <name>.cov_lo the rest of the double (mean = mean + mean_lo in
-- float64); metadata <name>.count and <name>.dim. Returns self.
function FeatureStats:save(path, name)
  check_name("FeatureStats:save", name)
  if type(path) ~= "string" then error("FeatureStats:save: path must be a string", 2) end
  local mean, mean_lo, cov, cov_lo = self._stats:parts()
  local tensors, meta = {}, {}
  local f = io.open(path, "rb")
  if f then
    f:close()
    tensors, meta = core.load(path)
  end
  local new = { mean = mean, mean_lo = mean_lo, cov = cov, cov_lo = cov_lo }
  for _, p in ipairs(PARTS) do tensors[name .. "." .. p] = new[p] end
  meta[name .. ".count"] = tostring(self:count())
  meta[name .. ".dim"] = tostring(self:dim())
  meta[name .. ".format"] = "cunet.FeatureStats 1"
  core.save(path, tensors, meta)
  return self
end

--- FeatureStats.load(path, name) -> statistics saved by :save, or nil and a message when the file
-- does not exist or holds no statistics of that name (a corrupt file raises).
function FeatureStats.load(path, name)
  check_name("FeatureStats.load", name)
  if type(path) ~= "string" then error("FeatureStats.load: path must be a string", 2) end
  local f, msg = io.open(path, "rb")
  if not f then return nil, "FeatureStats.load: " .. msg end
  f:close()
  local tensors, meta = core.load(path)
  local count = math.tointeger(tonumber(meta[name .. ".count"]))
  if not count or not tensors[name .. ".mean"] or not tensors[name .. ".cov"] then
    return nil, ("FeatureStats.load: '%s' holds no statistics named '%s'"):format(path, name)
  end
  local t = tensors
  return wrap(kernels.feature_stats_from(count, t[name .. ".mean"], t[name .. ".mean_lo"], t[name .. ".cov"],
    t[name .. ".cov_lo"]))
end

-- ---- FID, KID --------------------------------------------------------------------------------------

local function stats_of(fname, x, arg)
  if class.is_instance(x, FeatureStats) then return x._stats end
  if core.is_tensor(x) then return kernels.feature_stats(0):add(x) end
  error(("%s: argument #%d must be a FeatureStats or a feature tensor [N, D], got %s"):format(fname, arg,
    class.name(x) or type(x)), 3)
end

--- Fréchet distance between two sets of features (FeatureStats or tensors [N, D]), as pytorch-fid's
-- calculate_frechet_distance on their means and unbiased covariances.
function M.fid(a, b)
  return kernels.fid(stats_of("fid", a, 1), stats_of("fid", b, 2))
end

local function features(fname, x, arg)
  if not core.is_tensor(x) then
    error(("%s: argument #%d must be a feature tensor [N, D], got %s"):format(fname, arg, type(x)), 3)
  end
  return x
end

--- Unbiased MMD^2 between all rows of a [m, D] and b [n, D] with the kernel (x.y / D + 1)^3.
function M.mmd2(a, b)
  return kernels.mmd2(features("mmd2", a, 1), features("mmd2", b, 2))
end

--- KID as torchmetrics' KernelInceptionDistance: MMD^2 (M.mmd2) on `subsets` random subsets of
-- `subset_size` rows of each set (default min(1000, N_a, N_b)), drawn without replacement from the
-- engine RNG (cn.seed makes it repeatable). Returns the mean, the population std and the list of
-- per-subset values.
function M.kid(a, b, opts)
  local o = options("kid", opts)
  features("kid", a, 1)
  features("kid", b, 2)
  local size = o.subset_size
  if size == nil then
    size = math.min(1000, a:dim() >= 1 and a:shape()[1] or 0, b:dim() >= 1 and b:shape()[1] or 0)
  end
  for k, v in pairs{ subsets = o.subsets, subset_size = size } do
    if math.type(v) ~= "integer" then error(("kid: %s must be an integer, got %s"):format(k, tostring(v)), 2) end
  end
  return kernels.kid(a, b, o.subsets, size)
end

return M
