-- models/classifier — a small CNN for 28×28 images (MNIST, Fashion-MNIST): the classifier of the
-- train_classifier recipe, and the feature network of "FID (classifier features)".
--
--   conv 3×3 (1→32) · ReLU · max-pool 2  →  conv 3×3 (32→64) · ReLU · max-pool 2  →  flatten
--   →  linear (64·7·7 → 128) · ReLU  [the 128-d features]  →  dropout  →  linear (128 → classes)

local cn = require "cunet"
local nn = require "cunet.nn"
local class = require "cunet.class"
local progress = require "cunet.progress"
local data = require "cunet.data"
local options = require "cunet.options"

local M = {}

local Classifier = class("Classifier", nn.Module)
M.Classifier = Classifier

--- opts: channels (1), classes (10), width (32), features (128), dropout (0.25), size (28).
function Classifier:__init(opts)
  nn.Module.__init(self)
  opts = options.check(opts, {"channels", "classes", "width", "features", "dropout", "size"}, "Classifier", 4)
  local c, w, f = opts.channels or 1, opts.width or 32, opts.features or 128
  local size = opts.size or 28
  self.options = {channels = c, classes = opts.classes or 10, width = w, features = f, dropout = opts.dropout or 0.25, size = size}
  self.conv1 = nn.Conv2d(c, w, 3, {padding = 1})
  self.conv2 = nn.Conv2d(w, 2 * w, 3, {padding = 1})
  self.fc1 = nn.Linear(2 * w * (size // 4) * (size // 4), f)
  self.drop = nn.Dropout(self.options.dropout)
  self.fc2 = nn.Linear(f, self.options.classes)
end

--- The penultimate activations [N, features] (the FID feature space).
function Classifier:features(x)
  local h = cn.max_pool2d(self.conv1(x):relu(), 2)
  h = cn.max_pool2d(self.conv2(h):relu(), 2)
  return self.fc1(h:reshape{h:size(1), -1}):relu()
end

function Classifier:forward(x)
  return self.fc2(self.drop(self:features(x)))
end

--- Fraction of correct predictions over a dataset {images=, labels=} (batched, no grad).
function M.accuracy(model, ds, batch)
  batch = batch or 500
  local was_training = model.training
  model:eval()
  local correct, n = 0, ds.images:size(1)
  cn.no_grad(function()
    for first = 1, n, batch do
      local size = math.min(batch, n - first + 1)
      local logits = model(ds.images:narrow(1, first, size))
      local pred = logits:argmax(2)
      correct = correct + pred:eq(ds.labels:narrow(1, first, size)):sum():item()
    end
  end)
  model:train(was_training)
  return correct / n
end

--- Shifts each image by up to `max_shift` pixels in each direction (zero fill), a fresh offset
-- per image: the usual translation augmentation for digits.
function M.random_shift(images, max_shift)
  local n, _, h, w = table.unpack(images:shape())
  local padded = cn.pad(images, {max_shift, max_shift, max_shift, max_shift})
  local offsets = cn.randint(0, 2 * max_shift + 1, {n, 2}):totable()
  local out = {}
  for i = 1, n do
    out[i] = padded[i]:narrow(2, offsets[i][1] + 1, h):narrow(3, offsets[i][2] + 1, w)
  end
  return cn.stack(out)
end

--- Trains with Adam on cross-entropy. opts: epochs (2), batch (64), lr (1e-3), seed (0),
-- cosine (false: cosine decay of the rate to 0 over the run), shift (0: random translations
-- of up to that many pixels), log (function(step, loss) or nil), progress (true).
-- Returns the last epoch's mean loss.
function M.train(model, ds, opts)
  opts = options.check(opts, {"epochs", "batch", "lr", "seed", "cosine", "shift", "log", "progress"}, "classifier.train")
  local loader = data.DataLoader(ds, {batch_size = opts.batch or 64, shuffle = true, seed = opts.seed or 0})
  local lr = opts.lr or 1e-3
  local opt = cn.optim.Adam(model, {lr = lr})
  model:train()
  local epochs, step, mean = opts.epochs or 2, 0, 0
  local total = epochs * #loader
  local schedule = opts.cosine and cn.optim.schedule.cosine(lr, total) or cn.optim.schedule.constant(lr)
  for epoch = 1, epochs do
    local bar = opts.progress ~= false and progress.new(#loader, {label = string.format("epoch %d/%d", epoch, epochs), unit = "batch"})
    local sum, count = 0, 0
    for batch in loader:epoch(epoch) do
      cn.optim.schedule.apply(opt, schedule, step + 1)
      local x = (opts.shift or 0) > 0 and M.random_shift(batch.images, opts.shift) or batch.images
      local loss = cn.cross_entropy(model(x), batch.labels)
      opt:zero_grad()
      loss:backward()
      opt:step()
      step = step + 1
      local l = loss:item()
      if l ~= l then error(string.format("train_classifier: loss is NaN at step %d", step)) end
      sum, count = sum + l, count + 1
      if opts.log then opts.log(step, l) end
      if bar then bar:update(count, {loss = sum / count}) end
    end
    if bar then bar:finish({loss = sum / count}) end
    mean = sum / count
  end
  return mean
end

return M
