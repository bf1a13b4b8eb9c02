-- data — datasets held as tensors, and a seeded mini-batch loader.
--
--   local data = require "cunet.data"
--   local train = data.fashion_mnist("train")            -- {images=[60000,1,28,28] in [0,1], labels=[60000]}
--   local loader = data.DataLoader(train, {batch_size = 64, shuffle = true, seed = 1})
--   for batch in loader:epoch() do local x, y = batch.images, batch.labels ... end
--
-- Labels are 1-based class ids, like every index in cunet (digit d has label d + 1), so they go
-- straight into cn.cross_entropy.

local cn = require "cunet"

local M = {}

local FASHION_ROOT = "/usr/share/datasets/fashion-mnist"

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

--- Loads an IDX image/label pair: images [N, 1, H, W] scaled to [0, 1], labels [N] 1-based.
function M.load_idx_pair(images_path, labels_path, opts)
  opts = opts or {}
  for _, p in ipairs{images_path, labels_path} do
    if not exists(p) then error("data: missing file " .. p .. (opts.hint and (" (" .. opts.hint .. ")") or ""), 2) end
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
function M.fashion_mnist(split, opts)
  opts = opts or {}
  local root = opts.root or FASHION_ROOT
  local prefix = split == "test" and "t10k" or split == "train" and "train"
  if not prefix then error("fashion_mnist: split must be 'train' or 'test', got " .. tostring(split), 2) end
  local ds = M.load_idx_pair(root .. "/" .. prefix .. "-images-idx3-ubyte.gz", root .. "/" .. prefix .. "-labels-idx1-ubyte.gz",
    { hint = "install the Debian package dataset-fashion-mnist: make deps" })
  ds.name = "fashion-mnist"
  return ds
end

--- The first n examples of a dataset (views, no copy).
function M.subset(ds, n, first)
  first = first or 1
  local out = {}
  for k, v in pairs(ds) do
    out[k] = cn.is_tensor(v) and v:narrow(1, first, n) or v
  end
  return out
end

local DataLoader = {}
DataLoader.__index = DataLoader

--- A loader over a dataset table of same-length tensors (e.g. {images=, labels=}).
-- opts: batch_size (64), shuffle (true), seed (0), drop_last (false), transform (fn(batch) -> batch).
-- Each epoch's order depends only on (seed, epoch), never on the global generator's state, so a
-- resumed run sees the same batches as an uninterrupted one.
function M.DataLoader(ds, opts)
  opts = opts or {}
  local n
  for k, v in pairs(ds) do
    if cn.is_tensor(v) then
      if n and v:size(1) ~= n then error(string.format("DataLoader: field '%s' has %d rows, others %d", k, v:size(1), n), 2) end
      n = v:size(1)
    end
  end
  if not n then error("DataLoader: the dataset holds no tensors", 2) end
  local self = setmetatable({
    ds = ds, n = n,
    batch_size = opts.batch_size or 64,
    shuffle = opts.shuffle ~= false,
    seed = opts.seed or 0,
    drop_last = opts.drop_last or false,
    transform = opts.transform,
    epoch_count = 0,
  }, DataLoader)
  if self.batch_size < 1 then error("DataLoader: batch_size must be positive", 2) end
  return self
end

--- Number of batches per epoch.
function DataLoader:__len()
  return self.drop_last and self.n // self.batch_size or (self.n + self.batch_size - 1) // self.batch_size
end

--- The order of examples in epoch e (a tensor of 1-based positions).
function DataLoader:order(e)
  if not self.shuffle then return cn.arange(1, self.n + 1) end
  local saved = cn.rng_state()
  cn.seed(self.seed * 1000003 + e)
  local perm = cn.randperm(self.n)
  cn.set_rng_state(saved)
  return perm
end

--- Iterates the batches of epoch e (default: the next one): for batch in loader:epoch() do ... end,
-- each batch a table with the dataset's fields (rows gathered with index_select).
function DataLoader:epoch(e)
  if not e then
    self.epoch_count = self.epoch_count + 1
    e = self.epoch_count
  end
  local order = self:order(e)
  local i, count = 0, #self
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
    if self.transform then batch = self.transform(batch) end
    return batch
  end
end

return M
