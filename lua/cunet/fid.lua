-- fid — "FID (classifier features)": the Fréchet distance and KID between generated and real images in
-- the 128-d feature space of the small CNN classifier trained on the same data set
-- (lua/cunet/models/classifier.lua, recipes/train_classifier.lua), for 28×28 data sets where the
-- Inception network of the usual FID does not apply. Its values are NOT comparable with
-- Inception-FID numbers (the paper's Table 1): they only rank models and settings against each other.
--
--   local fid = require "cunet.fid"
--   local r = fid.score(samples, "mnist")       -- samples [N, 1, 28, 28] in [-1, 1] (the samplers' range)
--   print(r.fid, r.kid, r.name)                 -- r.name = "FID (classifier features)"
--   fid.score(images01, "mnist", {range = "01"})  -- images in [0, 1]
--
-- The feature network is checkpoints/classifier_<dataset>.safetensors (looked for in ./checkpoints,
-- then the repository's). The real data's statistics (mean and covariance of the features of a split,
-- plus a fixed subset of the features for KID) are computed once and cached in
-- <cache>/fid_stats_<dataset>_<net>.safetensors, <net> being "classifier" and the cache directory
-- $CUNET_CACHE or runs/cache; each entry records a fingerprint of the classifier's weights, and a
-- retrained classifier makes the entry stale (recomputed).
--
-- With {features = "inception"} the feature space is instead pytorch-fid's Inception-v3 pool3
-- (lua/cunet/models/inception.lua) with user-supplied weights ({weights = path}, default
-- checkpoints/inception_fid.safetensors; how to get them: docs/metrics.md, "Perceptual features"):
-- the usual FID, named "FID (Inception)", cached as fid_stats_<dataset>_inception.safetensors.
-- Without the weights it raises, pointing at the docs; it never reports a number from other weights.

local cn = require "cunet"
local data = require "cunet.data"
local fs = require "cunet.fs"
local util = require "cunet.nn.util"
local metrics = require "cunet.metrics"
local classifier = require "cunet.models.classifier"
local inception = require "cunet.models.inception"
local pretrained = require "cunet.models.pretrained"

local M = {}

M.NAME = "FID (classifier features)"
M.KID_NAME = "KID (classifier features)"
M.NET = "classifier"
M.INCEPTION_NAME = "FID (Inception)"
M.INCEPTION_KID_NAME = "KID (Inception)"

--- Options of score and real_stats with their defaults, the one place they live.
M.defaults = {
  range = "pm1",          -- the samples' range: "pm1" ([-1, 1]) or "01" ([0, 1])
  split = "train",        -- the real split the statistics come from
  batch = 500,            -- images per feature batch
  kid_features = 2000,    -- real feature rows kept for KID
  kid_subsets = 100, kid_subset_size = false, kid_seed = 0,
  cache = false,          -- the statistics file (default: <cache dir>/fid_stats_<dataset>_classifier.safetensors)
  checkpoint = false,     -- the classifier checkpoint (default: checkpoints/classifier_<dataset>.safetensors)
  refresh = false,        -- recompute the real statistics even when cached
  features = "classifier", -- the feature network: "classifier" or "inception" (pytorch-fid's Inception-v3 pool3)
  weights = false,        -- the Inception weights file (default: inception_fid.safetensors in ./checkpoints or the repository's)
  inception_batch = 32,   -- images per Inception forward (at 299 x 299, about 40 MB of activations per image)
}

local function options(opts, fname)
  local o = util.options(opts, M.defaults, fname, 4)
  if o.range ~= "pm1" and o.range ~= "01" then
    error(string.format("%s: range must be 'pm1' ([-1, 1]) or '01' ([0, 1]), got %s", fname, tostring(o.range)), 3)
  end
  if o.features ~= "classifier" and o.features ~= "inception" then
    error(string.format("%s: features must be 'classifier' or 'inception', got %s", fname, tostring(o.features)), 3)
  end
  return o
end


local function canonical(dataset)
  if type(dataset) ~= "string" then error("fid: expected a dataset name, got " .. type(dataset), 3) end
  if dataset == "fashion_mnist" then return "fashion-mnist" end
  return dataset
end

--- The classifier checkpoint of a data set: the first of ./checkpoints/classifier_<dataset>.safetensors
-- and the repository's that exists; or nil and a message.
function M.checkpoint_path(dataset)
  dataset = canonical(dataset)
  local name = "classifier_" .. dataset .. ".safetensors"
  local path, where = pretrained.find(name)
  if path then return path end
  return nil, string.format("fid: no classifier checkpoint for '%s' (looked for %s; train one with " ..
    "cunet recipes/train_classifier.lua --data %s --out checkpoints/%s)", dataset, where, dataset, name)
end

-- A fingerprint of a state dict: the sum of |w| of every tensor, in key order, and the key count.
local function fingerprint(sd)
  local keys = {}
  for k in pairs(sd) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do parts[#parts + 1] = string.format("%s:%.9g", k, sd[k]:abs():sum():item()) end
  local h = 2166136261 -- FNV-1a over the text, 32 bits
  local text = table.concat(parts, ";")
  for i = 1, #text do h = ((h ~ text:byte(i)) * 16777619) & 0xffffffff end
  return string.format("%08x", h)
end

-- The Inception network and its info (see M.feature_net); raises, pointing at the docs, without weights.
local function inception_net(dataset, weights)
  local ok, path, where = inception.available(weights or nil)
  if not ok then
    error(string.format("fid: features = 'inception' needs the Inception weights, %s (%s)", tostring(where),
      "the trained weights are not shipped"), 3)
  end
  local net = inception.new { weights = path }
  return net, { path = path, dataset = dataset, name = "inception", fingerprint = fingerprint(net:tensors()),
    meta = {}, size = inception.SIZE, channels = 3 }
end

--- feature_net(dataset [, {checkpoint=, features=, weights=}]) -> model (eval mode), info {path, dataset,
-- name, fingerprint, test_accuracy, meta}: the classifier rebuilt from its checkpoint (sizes read from
-- the weights), or with features = "inception" the Inception network of the weights file.
-- Raises when there is no checkpoint (no weights file).
function M.feature_net(dataset, opts)
  dataset = canonical(dataset)
  opts = util.options(opts, {checkpoint = M.defaults.checkpoint, features = M.defaults.features,
    weights = M.defaults.weights}, "fid.feature_net")
  if opts.features == "inception" then return inception_net(dataset, opts.weights) end
  if opts.features ~= "classifier" then
    error("fid.feature_net: features must be 'classifier' or 'inception', got " .. tostring(opts.features), 2)
  end
  local path = opts.checkpoint
  if not path or path == false then
    local err
    path, err = M.checkpoint_path(dataset)
    if not path then error(err, 2) end
  end
  local sd, meta = cn.load(path)
  local conv1, fc1, fc2 = sd["conv1.weight"], sd["fc1.weight"], sd["fc2.weight"]
  if not (conv1 and fc1 and fc2) then
    error(string.format("fid: '%s' is not a classifier checkpoint (no conv1/fc1/fc2 weights)", path), 2)
  end
  local width = conv1:size(1)
  local side = math.tointeger(math.sqrt(fc1:size(2) // (2 * width)) + 0.5) or 7
  -- the initialisation draws from the engine RNG; the weights are replaced, so leave the RNG as it was
  local rng = cn.rng_state()
  local model = classifier.Classifier({ channels = conv1:size(2), width = width, features = fc1:size(1),
    classes = fc2:size(1), size = 4 * side })
  cn.set_rng_state(rng)
  model:load_state_dict(sd)
  model:eval()
  return model, {
    path = path, dataset = dataset, name = M.NET, fingerprint = fingerprint(sd), meta = meta,
    test_accuracy = tonumber(meta.test_accuracy or ""), size = 4 * side, channels = conv1:size(2),
  }
end

--- features(net, images [, {range="pm1", batch=500, inception_batch=32}]) -> [N, D]: the classifier's
-- penultimate activations of images [N, C, H, W] (mapped from [-1, 1] to the classifier's [0, 1] and
-- clamped when range = "pm1"), or with an Inception net (M.feature_net with features = "inception")
-- its 2048-d pool3 features of the images mapped the same way to [0, 1] (any size; one channel is
-- repeated to three).
function M.features(net, images, opts)
  local o = options(opts, "fid.features")
  if not cn.is_tensor(images) or images:dim() ~= 4 then
    error("fid.features: images must be a tensor [N, C, H, W]", 2)
  end
  local is_inception = getmetatable(net) == inception.Inception
  if not is_inception then
    local size = net.options and net.options.size or 28
    local channels = net.options and net.options.channels or 1
    if images:size(2) ~= channels or images:size(3) ~= size or images:size(4) ~= size then
      error(string.format("fid.features: the classifier takes [N, %d, %d, %d] images, got [%s]", channels, size, size,
        table.concat(images:shape(), ", ")), 2)
    end
  end
  local n, batch = images:size(1), is_inception and o.inception_batch or o.batch
  local parts = {}
  local was_training = net.training -- the classifier is an nn module; Inception has no training mode
  if not is_inception then net:eval() end
  cn.no_grad(function()
    for first = 1, n, batch do
      local x = images:narrow(1, first, math.min(batch, n - first + 1))
      if o.range == "pm1" then x = (x + 1) * 0.5 end
      parts[#parts + 1] = net:features(x:clamp(0, 1))
    end
  end)
  if not is_inception then net:train(was_training) end
  return #parts == 1 and parts[1] or cn.cat(parts, 1)
end

local function cache_path(dataset, o, net_name)
  if o.cache then return o.cache end
  local dir = os.getenv("CUNET_CACHE")
  if not dir or dir == "" then dir = "runs/cache" end
  return string.format("%s/fid_stats_%s_%s.safetensors", dir, dataset, net_name)
end

-- evenly spread row indices (1-based) of n rows, at most k of them
local function spread(n, k)
  local idx = {}
  if n <= k then
    for i = 1, n do idx[i] = i end
  else
    for i = 1, k do idx[i] = 1 + (i - 1) * n // k end
  end
  return cn.tensor(idx)
end

-- The real split's statistics with the feature network already loaded (see M.real_stats).
local function real_stats(dataset, o, net, info)
  local path = cache_path(dataset, o, info.name)
  local key = o.split
  if not o.refresh and fs.exists(path) then
    local tensors, meta = cn.load(path)
    if meta[key .. ".fingerprint"] == info.fingerprint and tensors[key .. ".kid"] then
      local stats = metrics.FeatureStats.load(path, key)
      if stats then
        return stats, tensors[key .. ".kid"], { cache = path, cached = true, count = stats:count(),
          fingerprint = info.fingerprint, split = key }
      end
    end
  end
  local ds = data.load(dataset, { split = o.split })
  local feats = M.features(net, ds.images, { range = "01", batch = o.batch, inception_batch = o.inception_batch })
  local stats = metrics.FeatureStats():add(feats)
  local kid = feats:index_select(1, spread(feats:size(1), o.kid_features)):contiguous()
  local dir = path:match("^(.*)/[^/]*$")
  if dir then fs.mkdir_p(dir) end
  stats:save(path, key)
  local tensors, meta = cn.load(path)
  tensors[key .. ".kid"] = kid
  meta[key .. ".fingerprint"] = info.fingerprint
  meta[key .. ".checkpoint"] = info.path
  meta[key .. ".dataset"] = dataset
  meta[key .. ".net"] = info.name
  meta[key .. ".count"] = tostring(stats:count())
  cn.save(path, tensors, meta)
  return stats, kid, { cache = path, cached = false, count = stats:count(), fingerprint = info.fingerprint, split = key }
end

--- real_stats(dataset [, {split="train", cache=, refresh=, checkpoint=, kid_features=2000, features=,
-- weights=}]) -> stats (metrics.FeatureStats), kid_features [k, D], info {cache, cached (true when read
-- from the cache), count, fingerprint, split}: the classifier (or Inception) features of the real
-- split, cached.
function M.real_stats(dataset, opts)
  dataset = canonical(dataset)
  local o = options(opts, "fid.real_stats")
  local net, info = M.feature_net(dataset, { checkpoint = o.checkpoint, features = o.features, weights = o.weights })
  return real_stats(dataset, o, net, info)
end

--- score(samples, dataset [, opts]) -> {fid=, kid=, kid_std=, n=, name = "FID (classifier features)",
-- kid_name=, dataset=, split=, real_count=}: FID and KID with classifier features between samples
-- [N, C, 28, 28] (range opts.range: "pm1" = [-1, 1], the default, or "01") and the real split's
-- cached statistics. KID draws its subsets from a fixed seed (opts.kid_seed) and leaves the engine
-- RNG as it was. With features = "inception" (and the weights), the same in Inception's pool3 space,
-- named "FID (Inception)" / "KID (Inception)". opts: see fid.defaults.
function M.score(samples, dataset, opts)
  dataset = canonical(dataset)
  local o = options(opts, "fid.score")
  local net, net_info = M.feature_net(dataset, { checkpoint = o.checkpoint, features = o.features, weights = o.weights })
  local real, real_kid, info = real_stats(dataset, o, net, net_info)
  local feats = M.features(net, samples, { range = o.range, batch = o.batch, inception_batch = o.inception_batch })
  local n = feats:size(1)
  if n < 2 then error("fid.score: needs at least 2 samples (a covariance), got " .. n, 2) end
  local value = metrics.fid(real, metrics.FeatureStats():add(feats))
  local saved = cn.rng_state()
  cn.seed(o.kid_seed)
  local size = o.kid_subset_size or math.min(1000, n, real_kid:size(1))
  local ok, kid, kid_std = pcall(metrics.kid, real_kid, feats, { subsets = o.kid_subsets, subset_size = size })
  cn.set_rng_state(saved)
  if not ok then error(kid, 0) end
  local inc = o.features == "inception"
  return { fid = value, kid = kid, kid_std = kid_std, n = n, name = inc and M.INCEPTION_NAME or M.NAME,
    kid_name = inc and M.INCEPTION_KID_NAME or M.KID_NAME, dataset = dataset, split = info.split, real_count = info.count }
end

--- The header of the CSV recipes/fid_vs_steps.lua writes, one row per step count.
-- The columns after checkpoint (nfe: model evaluations per sample; spacing, variance, ode_method, rtol,
-- atol: "-" where the sampler has none) came with the DPM-Solver++ and ODE samplers; older CSVs lack them.
M.SCAN_HEADER = "steps,fid_classifier,kid_classifier,kid_std,seconds_per_sample,n,sampler,dataset,split,checkpoint,"
  .. "nfe,spacing,variance,ode_method,rtol,atol,block_solver,block_nfe"

-- A CSV field that is a number, else nil (fs.read_csv keeps "-" and empty fields as strings).
local function num(v) return type(v) == "number" and v or nil end

--- read_scan(path) -> rows {steps=, fid=, kid=, kid_std=, seconds=, n=, sampler=, dataset=, split=, checkpoint=,
-- and where the CSV has them nfe=, spacing=, variance=, ode_method=, rtol=, atol=, block_solver= (a cU-Net's
-- ODE blocks' solver, "-" for other models), block_nfe= (the blocks' evaluations per forward)} of a fid_vs_steps CSV,
-- or nil and a message naming the file (unreadable, another header, a bad row).
function M.read_scan(path)
  local rows, header = fs.read_csv(path)
  if not rows then return nil, header end
  if header[1] ~= "steps" or header[2] ~= "fid_classifier" then return nil, path .. " is not a fid_vs_steps CSV" end
  local out = {}
  for i, r in ipairs(rows) do
    local steps = math.tointeger(r.steps)
    if not (steps and type(r.fid_classifier) == "number" and type(r.seconds_per_sample) == "number" and type(r.n) == "number") then
      return nil, string.format("%s: bad row %d (steps %s, fid %s)", path, i, tostring(r.steps), tostring(r.fid_classifier))
    end
    out[i] = { steps = steps, fid = r.fid_classifier, kid = num(r.kid_classifier), kid_std = num(r.kid_std),
      seconds = r.seconds_per_sample, n = r.n, sampler = r.sampler, dataset = r.dataset, split = r.split,
      checkpoint = r.checkpoint, nfe = num(r.nfe), spacing = r.spacing, variance = r.variance, ode_method = r.ode_method,
      rtol = num(r.rtol), atol = num(r.atol), block_solver = r.block_solver, block_nfe = num(r.block_nfe) }
  end
  return out
end

return M
