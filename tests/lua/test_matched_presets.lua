-- test_matched_presets.lua — the matched U-Net / cU-Net presets at 1×28² (docs/unet.md, docs/cunet.md):
-- each pair of the same name agrees within 4% in trainable parameters and in MACs per image (the
-- fuller count, efficiency.count_ops, and thop 0.1.1's rules), and every count is the documented one.

local lu = require "luaunit"
local cn = require "cunet"
local efficiency = require "cunet.efficiency"
local unet = require "cunet.models.unet"
local continuous_unet = require "cunet.models.continuous_unet"

-- {module, preset, trainable, total, count_ops MACs, thop MACs}
local COUNTS = {
  { unet, "mnist_028m", 280177, 280177, 47930112, 47315456 },
  { continuous_unet, "mnist_028m", 285157, 317157, 49662016, 48759616 },
  { continuous_unet, "mnist_028m_augmented", 277125, 309125, 47705888, 46836288 },
  { unet, "mnist_11m", 1112801, 1112801, 190039552, 188810240 },
  { continuous_unet, "mnist_11m", 1115597, 1163597, 185151712, 183891136 },
  { continuous_unet, "mnist_11m_augmented", 1140113, 1188113, 189083360, 187944832 },
}

local function measure(module, preset)
  local model = cn.no_grad(module.from_preset, preset)
  local inputs = { cn.randn { 1, 1, 28, 28 }, cn.full({ 1 }, 500) }
  local p = efficiency.parameters(model)
  return { p.trainable, p.total, efficiency.count_ops(model, inputs).macs, efficiency.thop_macs(model, inputs).total }
end

TestMatchedPresets = {}

function TestMatchedPresets:testCounts()
  local got = {}
  for _, c in ipairs(COUNTS) do
    local m = measure(c[1], c[2])
    local name = (c[1] == unet and "unet " or "cunet ") .. c[2]
    lu.assertEquals(m, { c[3], c[4], c[5], c[6] }, name)
    got[name] = m
  end
  -- the pairs: trainable parameters, and both MAC counts, within 4%
  for _, pair in ipairs {
    { "unet mnist_028m", "cunet mnist_028m" }, { "unet mnist_028m", "cunet mnist_028m_augmented" },
    { "unet mnist_11m", "cunet mnist_11m" }, { "unet mnist_11m", "cunet mnist_11m_augmented" },
  } do
    local a, b = got[pair[1]], got[pair[2]]
    for _, k in ipairs { 1, 3, 4 } do
      local ratio = b[k] / a[k]
      lu.assertTrue(ratio > 0.96 and ratio < 1.04, string.format("%s / %s, count %d: %.3f", pair[2], pair[1], k, ratio))
    end
  end
end

-- mnist_11m is the U-Net the earlier MNIST comparison used (mnist_small), under a name that says its size
function TestMatchedPresets:testUnetMnist11mIsMnistSmall()
  lu.assertEquals(unet.preset_config("mnist_11m"), unet.preset_config("mnist_small"))
end

function TestMatchedPresets:testForms()
  lu.assertEquals(continuous_unet.presets.mnist_028m.form, "second_order")
  lu.assertEquals(continuous_unet.presets.mnist_11m_augmented.form, "augmented")
end
