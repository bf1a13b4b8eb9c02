-- test_jpeg.lua — cn.load_jpeg against the pixels Pillow decodes from the committed files of
-- tests/fixtures/jpeg (greyscale, 4:2:0, progressive 4:4:4; tests/tools/fixtures_jpeg.py), the
-- refusals (CMYK, truncated, not a JPEG, missing), and JPEG files in data.image_folder.
local lu = require "luaunit"
local cn = require "cunet"
local data = require "cunet.data"

local fx = require "fixture_check"

local root, assert_error = fx.root, fx.assert_error
local DIR = root() .. "/tests/fixtures/jpeg/"
local EXPECTED = dofile(root() .. "/tests/fixtures/jpeg.lua")

TestJpeg = {}

function TestJpeg:testMatchesPillow()
  local names = {}
  for name in pairs(EXPECTED) do names[#names + 1] = name end
  table.sort(names)
  lu.assertEquals(#names, 3)
  for _, name in ipairs(names) do
    local want = EXPECTED[name]
    local img = cn.load_jpeg(DIR .. name)
    lu.assertEquals(img:shape(), want.shape, name)
    -- the same libjpeg-turbo decodes both: equal bytes (1 level is 3.9e-3; the bound is float rounding)
    local expected = cn.tensor(want.bytes):view(want.shape) / 255
    lu.assertTrue((img - expected):abs():max():item() < 1e-6, name)
    lu.assertTrue(img:min():item() >= 0 and img:max():item() <= 1)
  end
  -- orientation: the grey gradient is (13x + 9y) mod 256 before coding; JPEG keeps it within a few levels
  local grey = cn.load_jpeg(DIR .. "grey_16x12.jpg")
  lu.assertAlmostEquals(grey[{1, 1, 2}] * 255, 13, 4)
  lu.assertAlmostEquals(grey[{1, 2, 1}] * 255, 9, 4)
end

function TestJpeg:testRefusals()
  assert_error(function() cn.load_jpeg(DIR .. "cmyk_8x8.jpg") end, "load_jpeg: ", "cmyk_8x8.jpg", "CMYK")
  assert_error(function() cn.load_jpeg(DIR .. "truncated_rgb.jpg") end, "truncated_rgb.jpg",
    "corrupt or truncated JPEG", "Premature end")
  assert_error(function() cn.load_jpeg(DIR .. "missing.jpg") end, "cannot open", "missing.jpg")
  local png = root() .. "/tests/fixtures/cameraman.png"
  assert_error(function() cn.load_jpeg(png) end, "cameraman.png is not a JPEG file")
  local empty = os.tmpname()
  assert_error(function() cn.load_jpeg(empty) end, "is not a JPEG file (empty)")
  os.remove(empty)
  -- a frame header claiming more than the file can hold, and more than the sample cap
  assert_error(function() cn.load_jpeg(root() .. "/tests/fuzz/crashes/jpeg/sof_claims_2000x2000.jpg") end,
    "image too large for the file")
  assert_error(function() cn.load_jpeg(root() .. "/tests/fuzz/crashes/jpeg/sof_claims_65500x65500.jpg") end,
    "too large (limit")
  -- a progressive header claiming 4000 x 4000 in a 1 kB file: refused before the coefficient buffer
  assert_error(function() cn.load_jpeg(root() .. "/tests/fuzz/crashes/jpeg/progressive_claims_4000x4000.jpg") end,
    "image too large for the file", "progressive")
  -- a progressive file that keeps starting scans
  assert_error(function() cn.load_jpeg(root() .. "/tests/fuzz/crashes/jpeg/scans_600.jpg") end, "more than 500 scans")
end

function TestJpeg:testImageFolder()
  local tmp = os.tmpname()
  os.remove(tmp)
  assert(os.execute("mkdir -p " .. tmp .. "/sub"))
  assert(os.execute(string.format("cp %srgb420_20x14.jpg %s/a.jpg && cp %sgrey_16x12.jpg %s/sub/b.JPEG",
    DIR, tmp, DIR, tmp)))
  cn.save_png(tmp .. "/c.png", cn.full({3, 10, 10}, 0.5))
  local ds = data.image_folder(tmp, {size = 10})
  lu.assertEquals(ds.paths, {tmp .. "/a.jpg", tmp .. "/c.png", tmp .. "/sub/b.JPEG"})
  lu.assertEquals(ds.images:shape(), {3, 3, 10, 10}) -- the first (a.jpg) is RGB
  -- a.jpg 14 x 20 -> shorter side 10: bilinear to 10 x 14 (no integer shrink), centre crop of columns 3..12
  local a = cn.load_jpeg(tmp .. "/a.jpg"):unsqueeze(1)
  local want = cn.upsample(a, {size = {10, 14}, mode = "bilinear"}):clamp(0, 1):narrow(4, 3, 10)[1]
  lu.assertTrue((ds.images[1] - want):abs():max():item() < 1e-6)
  lu.assertTrue((ds.images[2] - 128 / 255):abs():max():item() < 1e-6)
  -- the grey JPEG repeated into RGB
  lu.assertTrue((ds.images[3][1] - ds.images[3][2]):abs():max():item() == 0)
  -- a bad JPEG in the folder is an error naming it
  assert(os.execute(string.format("cp %struncated_rgb.jpg %s/sub/d.jpeg", DIR, tmp)))
  assert_error(function() data.image_folder(tmp, {size = 10}) end, "image_folder: ", tmp .. "/sub/d.jpeg", "Premature end")
  os.execute("rm -rf " .. tmp)
end
