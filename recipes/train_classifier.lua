-- recipes/train_classifier.lua — a small CNN on Fashion-MNIST or MNIST (lua/cunet/models/classifier.lua).
-- It is also the feature network of "FID (classifier features)" (docs/metrics.md).
--
--   ./cunet recipes/train_classifier.lua                       -- Fashion-MNIST, 3 epochs
--   ./cunet recipes/train_classifier.lua --data mnist --out checkpoints/classifier_mnist.safetensors

local cn = require "cunet"
local cli = require "cunet.cli"
local data = require "cunet.data"
local clf = require "cunet.models.classifier"

local args = cli.parse(arg, {
  name = "train_classifier",
  usage = "cunet recipes/train_classifier.lua [options]",
  description = "Train the 28×28 CNN classifier and report its test accuracy.",
  options = {
    {"data", "fashion-mnist", "dataset: fashion-mnist | mnist", choices = {"fashion-mnist", "mnist"}},
    {"epochs", 3, "passes over the training set", integer = true, min = 1},
    {"batch", 64, "batch size", integer = true, min = 1},
    {"lr", 1e-3, "Adam learning rate", min = 0},
    {"cosine", false, "decay the learning rate to 0 along a cosine"},
    {"shift", 0, "augment with random translations of up to N pixels", integer = true, min = 0},
    {"limit", 0, "train on the first N images only (0: all)", integer = true, min = 0},
    {"test-limit", 0, "evaluate on the first N test images only (0: all)", integer = true, min = 0},
    {"seed", 0, "random seed", integer = true, min = 0},
    {"out", nil, "checkpoint to write (safetensors)", type = "string"},
    {"threads", 0, "threads (0: all cores)", integer = true, min = 0},
    {"dtype", "F32", "how --out stores the weights (F16: half the bytes; the accuracy recorded is the stored weights')",
      choices = {"F32", "F16"}},
  },
})

if args.threads > 0 then cn.set_num_threads(args.threads) end
cn.seed(args.seed)
local train, test = data.load(args.data, {split = "train"}), data.load(args.data, {split = "test"})
if args.limit > 0 then train = data.subset(train, math.min(args.limit, train.images:size(1))) end
if args.test_limit > 0 then test = data.subset(test, math.min(args.test_limit, test.images:size(1))) end
print(string.format("%s: %d training and %d test images", args.data, train.images:size(1), test.images:size(1)))

local model = clf.Classifier({classes = train.num_classes or 10})
print(model)
print(string.format("%d parameters", model:num_parameters()))
local t0 = cn.time()
local loss = clf.train(model, train, {epochs = args.epochs, batch = args.batch, lr = args.lr, seed = args.seed,
  cosine = args.cosine, shift = args.shift})
local seconds = cn.time() - t0
local acc = clf.accuracy(model, test)
print(string.format("final training loss %.4f, %.1f s; test accuracy %.2f%% on %s", loss, seconds, 100 * acc, args.data))
if args.out then
  local meta = {model = "classifier", dataset = args.data, test_accuracy = string.format("%.4f", acc),
    epochs = tostring(args.epochs), seed = tostring(args.seed), shift = tostring(args.shift),
    cosine = tostring(args.cosine)}
  if args.dtype ~= "F32" then
    -- round the weights as they will be stored, and record the accuracy of those
    cn.save(args.out, model:state_dict(), meta, {dtype = args.dtype})
    model:load_state_dict((cn.load(args.out)))
    acc = clf.accuracy(model, test)
    meta.test_accuracy = string.format("%.4f", acc)
    print(string.format("test accuracy %.2f%% with the weights stored in %s", 100 * acc, args.dtype))
  end
  cn.save(args.out, model:state_dict(), meta, {dtype = args.dtype})
  print("wrote " .. args.out)
end
return acc
