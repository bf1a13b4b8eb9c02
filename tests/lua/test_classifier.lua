-- test_classifier.lua — the fast variant of recipes/train_classifier.lua: a short run on a
-- Fashion-MNIST subset must learn (well above the 10% of chance) and write a loadable checkpoint, here
-- in F16 (the committed Fashion-MNIST classifier's form), with the accuracy of the weights as stored.
local lu = require "luaunit"
local cn = require "cunet"

local EXE = os.getenv("CUNET_EXE") or "./cunet"

TestClassifierRecipe = {}

function TestClassifierRecipe:testShortRunLearnsAndSaves()
  local f = io.open("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz", "rb")
  if not f then lu.skip("dataset-fashion-mnist is not installed (make deps)") end
  f:close()
  local out = os.tmpname()
  local cmd = string.format("%s recipes/train_classifier.lua --limit 2000 --test-limit 1000 --epochs 2 --seed 3 --dtype F16 --out %s 2>&1",
    EXE, out)
  local p = io.popen(cmd)
  local text = p:read("a")
  local ok = p:close()
  lu.assertTrue(ok, text)
  local acc = tonumber(text:match("test accuracy ([%d.]+)%%"))
  lu.assertNotNil(acc, text)
  lu.assertTrue(acc > 65, string.format("a 2-epoch run on 2,000 images reached only %.2f%% (chance is 10%%)", acc))
  local stored = tonumber(text:match("test accuracy ([%d.]+)%% with the weights stored in F16"))
  lu.assertNotNil(stored, text)
  lu.assertTrue(math.abs(stored - acc) < 1, string.format("F16 rounding moved the accuracy from %.2f%% to %.2f%%", acc, stored))
  local f16 = io.open(out, "rb")
  local head = f16:read(4096)
  f16:close()
  lu.assertStrContains(head, '"dtype":"F16"')
  lu.assertNotStrContains(head, '"dtype":"F32"')
  local tensors, meta = cn.load(out)
  os.remove(out)
  lu.assertEquals(tonumber(meta.test_accuracy), math.floor(stored * 100 + 0.5) / 10000)
  lu.assertEquals(meta.dataset, "fashion-mnist")
  lu.assertEquals(tensors["conv1.weight"]:shape(), {32, 1, 3, 3})
  local clf = require "cunet.models.classifier"
  local model = clf.Classifier()
  model:load_state_dict(tensors)
  local x = cn.zeros{2, 1, 28, 28}
  model:eval()
  lu.assertEquals(cn.no_grad(function() return model:features(x) end):shape(), {2, 128})
end

function TestClassifierRecipe:testHelp()
  local p = io.popen(EXE .. " recipes/train_classifier.lua --help 2>&1")
  local text = p:read("a")
  lu.assertTrue(p:close())
  lu.assertStrContains(text, "--epochs")
  lu.assertStrContains(text, "fashion-mnist")
end
