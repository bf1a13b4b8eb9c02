-- test_image.lua — PNG through Lua (cn.save_png / cn.load_png, also cunet.image's): round trips
-- for 1..4 channels at odd sizes, the committed 16-bit / palette / low-bit / interlaced files of
-- tests/fixtures/png, errors naming the file, atomic writes (a failed write, also one failing
-- mid-write, leaves the old file); make_grid's geometry and value mapping; save_grid; save_strips.
local lu = require "luaunit"
local helpers = require "helpers"
local read_file, write_file = helpers.read_file, helpers.write_file
local cn = require "cunet"
local image = require "cunet.image"

local root = require("helpers").root

local FIXTURES = root() .. "/tests/fixtures/png/"

local assert_error = helpers.assert_error

local max_abs_diff = helpers.max_abs_diff

local function listdir(dir)
  local names = {}
  local p = io.popen('ls -A "' .. dir .. '"')
  for name in p:lines() do names[#names + 1] = name end
  p:close()
  table.sort(names)
  return names
end

-- bytes / 255: survives the 8-bit round trip exactly (up to float rounding)
local function byte_image(c, h, w, offset)
  local t = cn.empty{c, h, w}
  for k = 1, c do
    for y = 1, h do
      for x = 1, w do t[{k, y, x}] = ((37 * k + 11 * y + 3 * x + (offset or 0)) % 256) / 255 end
    end
  end
  return t
end

local tmp
local function setup_tmp()
  tmp = helpers.temp_dir()
end
local function teardown_tmp()
  helpers.remove_dir(tmp)
  tmp = nil
end

-- ---- PNG files -------------------------------------------------------------------------------

TestImagePng = {setUp = setup_tmp, tearDown = teardown_tmp}

function TestImagePng:testRoundTrips()
  for c = 1, 4 do
    for _, hw in ipairs{{1, 1}, {3, 5}, {17, 9}, {2, 31}} do
      local t = byte_image(c, hw[1], hw[2], c)
      local path = tmp .. "/rt.png"
      image.save_png(path, t)
      local r = image.load_png(path)
      lu.assertEquals(r:shape(), {c, hw[1], hw[2]})
      lu.assertTrue(max_abs_diff(r, t) < 1e-7, string.format("C = %d, %d x %d", c, hw[1], hw[2]))
    end
  end
  -- [H, W] is grey; values are clamped, rounded to the nearest of 256 levels
  cn.save_png(tmp .. "/g.png", cn.tensor{{-1, 0.5}, {2, 0.1}})
  local g = cn.load_png(tmp .. "/g.png")
  lu.assertEquals(g:shape(), {1, 2, 2})
  lu.assertTrue(max_abs_diff(g, cn.tensor{{{0, 128 / 255}, {1, 26 / 255}}}) < 1e-7)
  lu.assertEquals(listdir(tmp), {"g.png", "rt.png"})
end

function TestImagePng:testFixtures()
  local g16 = cn.load_png(FIXTURES .. "grey16_5x3.png")
  lu.assertEquals(g16:shape(), {1, 3, 5})
  for y = 0, 2 do
    for x = 0, 4 do lu.assertAlmostEquals(g16[{1, y + 1, x + 1}], (0x1111 * (5 * y + x) + 1) / 65535, 1e-7) end
  end
  local rgb16 = cn.load_png(FIXTURES .. "rgb16_4x3.png")
  lu.assertEquals(rgb16:shape(), {3, 3, 4})
  lu.assertAlmostEquals(rgb16[{3, 3, 4}], ((1777 * (12 * 2 + 4 * 2 + 3) + 3) % 65536) / 65535, 1e-7)
  local rgba16 = cn.load_png(FIXTURES .. "rgba16_3x2.png")
  lu.assertEquals(rgba16:shape(), {4, 2, 3})
  lu.assertAlmostEquals(rgba16[{4, 2, 3}], ((1777 * (6 * 3 + 3 + 2) + 3) % 65536) / 65535, 1e-7)
  local palette = {{255, 0, 0}, {0, 128, 255}, {10, 20, 30}, {255, 255, 255}}
  local alphas = {255, 128, 0, 64}
  local p = cn.load_png(FIXTURES .. "palette2_5x4.png")
  local q = cn.load_png(FIXTURES .. "palette_trns_5x4.png")
  lu.assertEquals(p:shape(), {3, 4, 5})
  lu.assertEquals(q:shape(), {4, 4, 5})
  for y = 0, 3 do
    for x = 0, 4 do
      local k = (x + 2 * y) % 4 + 1
      for c = 1, 3 do
        lu.assertAlmostEquals(p[{c, y + 1, x + 1}], palette[k][c] / 255, 1e-7)
        lu.assertAlmostEquals(q[{c, y + 1, x + 1}], palette[k][c] / 255, 1e-7)
      end
      lu.assertAlmostEquals(q[{4, y + 1, x + 1}], alphas[k] / 255, 1e-7)
    end
  end
  local g1 = cn.load_png(FIXTURES .. "grey1_9x2.png")
  lu.assertEquals(g1:totable(), {{{0, 1, 0, 1, 0, 1, 0, 1, 0}, {1, 0, 1, 0, 1, 0, 1, 0, 1}}})
  local g4 = cn.load_png(FIXTURES .. "grey4_5x3.png")
  lu.assertAlmostEquals(g4[{1, 3, 5}], 14 / 15, 1e-7)
  local gt = cn.load_png(FIXTURES .. "grey_trns_4x2.png")
  lu.assertEquals(gt:shape(), {2, 2, 4})
  lu.assertEquals(gt[2]:totable(), {{1, 1, 1, 0}, {1, 1, 1, 1}})
  local a7 = cn.load_png(FIXTURES .. "adam7_rgb_7x5.png")
  lu.assertEquals(a7:shape(), {3, 5, 7})
  for c = 0, 2 do
    for y = 0, 4 do
      for x = 0, 6 do lu.assertAlmostEquals(a7[{c + 1, y + 1, x + 1}], 2 * (35 * c + 7 * y + x) / 255, 1e-7) end
    end
  end
end

function TestImagePng:testErrorsNameTheFile()
  assert_error(function() cn.load_png(tmp .. "/missing.png") end, "load_png: cannot open " .. tmp .. "/missing.png", "No such file")
  write_file(tmp .. "/text.png", "just some text")
  assert_error(function() cn.load_png(tmp .. "/text.png") end, tmp .. "/text.png is not a PNG file")
  write_file(tmp .. "/empty.png", "")
  assert_error(function() cn.load_png(tmp .. "/empty.png") end, tmp .. "/empty.png is not a PNG file (empty)")
  cn.save_png(tmp .. "/good.png", byte_image(3, 9, 7))
  local bytes = read_file(tmp .. "/good.png")
  for _, len in ipairs{8, 16, 33, 40, #bytes // 2, #bytes - 12, #bytes - 1} do
    write_file(tmp .. "/cut.png", bytes:sub(1, len))
    assert_error(function() cn.load_png(tmp .. "/cut.png") end, tmp .. "/cut.png", "corrupt or truncated PNG")
  end
  -- a byte changed inside the image data: the chunk's CRC no longer matches
  local i = #bytes - 20
  write_file(tmp .. "/flip.png", bytes:sub(1, i - 1) .. string.char(bytes:byte(i) ~ 0x10) .. bytes:sub(i + 1))
  assert_error(function() cn.load_png(tmp .. "/flip.png") end, tmp .. "/flip.png", "corrupt or truncated PNG", "libpng")
  assert_error(function() cn.load_png(tmp) end, tmp, "Is a directory")
  assert_error(function() cn.load_png() end, "bad argument #1")
end

function TestImagePng:testSaveErrors()
  assert_error(function() cn.save_png(tmp .. "/x.png", cn.zeros{5, 2, 2}) end, "save_png", tmp .. "/x.png", "[5, 2, 2]")
  assert_error(function() cn.save_png(tmp .. "/x.png", cn.zeros{1, 1, 2, 2}) end, "[1, 1, 2, 2]")
  assert_error(function() cn.save_png(tmp .. "/x.png", cn.zeros{1, 0, 2}) end, "[1, 0, 2]")
  assert_error(function() cn.save_png(tmp .. "/no/dir/x.png", cn.zeros{1, 2, 2}) end, tmp .. "/no/dir/x.png", "No such file")
  assert_error(function() cn.save_png(tmp .. "/x.png", "not a tensor") end, "bad argument #2")
  lu.assertEquals(listdir(tmp), {})
end

function TestImagePng:testAtomicWrite()
  local path = tmp .. "/keep.png"
  cn.save_png(path, byte_image(1, 4, 4))
  local before = read_file(path)
  -- refused up front
  pcall(cn.save_png, path, cn.zeros{7, 2, 2})
  lu.assertEquals(read_file(path), before)
  -- failing at the rename: the target is a directory
  os.execute('mkdir "' .. tmp .. '/dir.png"')
  assert_error(function() cn.save_png(tmp .. "/dir.png", byte_image(1, 2, 2)) end, tmp .. "/dir.png")
  lu.assertEquals(listdir(tmp), {"dir.png", "keep.png"})
  -- failing mid-write: another process with a 1 KiB file-size limit (SIGXFSZ ignored, so write
  -- fails with EFBIG) saves 3 x 64 x 64 of noise, ~12 KiB of PNG, over the file
  local exe = os.getenv("CUNET_EXE") or (root() .. "/cunet")
  local script = tmp .. "/big.lua"
  write_file(script, string.format([[
    local cn = require "cunet"
    cn.seed(1)
    local ok, err = pcall(cn.save_png, %q, cn.rand{3, 64, 64})
    io.write(ok and "saved" or err)
  ]], path))
  local p = io.popen("trap '' XFSZ; ulimit -f 2; exec '" .. exe .. "' '" .. script .. "' 2>&1")
  local out = p:read("a")
  p:close()
  lu.assertStrContains(out, "save_png")
  lu.assertStrContains(out, path)
  lu.assertStrContains(out, "File too large")
  lu.assertEquals(read_file(path), before)
  lu.assertEquals(listdir(tmp), {"big.lua", "dir.png", "keep.png"})
  -- and without the limit it replaces the file
  cn.seed(1)
  cn.save_png(path, cn.rand{3, 64, 64})
  lu.assertNotEquals(read_file(path), before)
end

-- issue 11: reading bounds memory by what the file holds; the sample cap is CUNET_PNG_MAX_SAMPLES
function TestImagePng:testLoadLimits()
  assert_error(function() return cn.load_png(root() .. "/tests/fuzz/crashes/png/bomb_8200x8200_grey.png") end,
    "image of 8200 x 8200 x 1 samples is too large (limit 67108864 samples; set CUNET_PNG_MAX_SAMPLES")
  assert_error(function() return cn.load_png(root() .. "/tests/fuzz/crashes/png/header_65535x65535_rgba16.png") end,
    "image too large for the file")
  local path = tmp .. "/wide.png"
  cn.save_png(path, cn.zeros{1, 30, 100})
  local exe = os.getenv("CUNET_EXE") or (root() .. "/cunet")
  local function load_with(cap)
    local p = io.popen(string.format("CUNET_PNG_MAX_SAMPLES=%s '%s' -e 'print(require\"cunet\".load_png(%q):numel())' 2>&1",
      cap, exe, path))
    local out = p:read("a")
    p:close()
    return out
  end
  lu.assertStrContains(load_with(2999), "image of 100 x 30 x 1 samples is too large (limit 2999 samples")
  lu.assertStrContains(load_with(3000), "3000")
end

-- ---- grids and strips ----------------------------------------------------------------------------

TestImageGrid = {setUp = setup_tmp, tearDown = teardown_tmp}

function TestImageGrid:testGeometry()
  -- 5 images 3 x 4, 3 per row, padding 2: 2 rows; [C, 2·(3+2)+2, 3·(4+2)+2]
  local n, c, h, w = 5, 2, 3, 4
  local x = cn.empty{n, c, h, w}
  for i = 1, n do x[i] = i / 10 end
  local grid = image.make_grid(x, {nrow = 3})
  lu.assertEquals(grid:shape(), {2, 12, 20})
  for i = 1, n do
    local r, col = (i - 1) // 3, (i - 1) % 3
    local tile = grid:narrow(2, r * (h + 2) + 3, h):narrow(3, col * (w + 2) + 3, w)
    lu.assertTrue(max_abs_diff(tile, cn.full({c, h, w}, i / 10)) < 1e-7, "tile " .. i)
  end
  -- padding (and the empty sixth slot) hold pad_value, 1 by default
  lu.assertEquals(grid[{1, 1, 1}], 1)
  lu.assertEquals(grid[{2, 5, 7}], 1) -- the gap between columns 1 and 2 (x = 7, 8)
  lu.assertEquals(grid[{1, 6, 3}], 1) -- the gap between rows 1 and 2 (y = 6, 7)
  lu.assertEquals(grid[{1, 10, 16}], 1) -- the sixth slot
  local total = grid:sum():item()
  local tiles = 0
  for i = 1, n do tiles = tiles + c * h * w * i / 10 end
  lu.assertAlmostEquals(total, tiles + (grid:numel() - n * c * h * w), 1e-3)
  -- pad_value, padding 0, nrow larger than n
  local tight = image.make_grid(x, {nrow = 8, padding = 0, pad_value = 0})
  lu.assertEquals(tight:shape(), {2, 3, 20})
  lu.assertTrue(max_abs_diff(tight:narrow(3, 17, 4), cn.full({2, 3, 4}, 0.5)) < 1e-7)
  -- the default nrow is 8
  lu.assertEquals(image.make_grid(cn.zeros{9, 1, 2, 2}):shape(), {1, 10, 34})
end

function TestImageGrid:testValueMapping()
  local x = cn.tensor{-2, -1, 0, 0.5, 1, 3}:view{6, 1, 1, 1}
  local grid = image.make_grid(x, {range = {-1, 1}, padding = 0})
  lu.assertEquals(grid:shape(), {1, 1, 6})
  lu.assertEquals(grid:view{-1}:totable(), {0, 0, 0.5, 0.75, 1, 1})
  local plain = image.make_grid(x, {padding = 0}) -- default range {0, 1}: clamp only
  lu.assertEquals(plain:view{-1}:totable(), {0, 0, 0, 0.5, 1, 1})
  assert_error(function() image.make_grid(x, {range = {1, 1}}) end, "range", "lo < hi")
  assert_error(function() image.make_grid(cn.zeros{2, 3}) end, "make_grid: expected images [N, C, H, W], got shape [2, 3]")
  assert_error(function() image.make_grid("x") end, "got string")
  -- a batch that requires grad is fine
  local y = cn.rand{2, 1, 2, 2}:requires_grad(true)
  lu.assertEquals(image.make_grid(y):shape(), {1, 6, 10})
end

function TestImageGrid:testSaveGrid()
  local x = cn.empty{3, 3, 5, 5}
  for i = 1, 3 do x[i] = (i - 2) / 2 end -- -0.5, 0, 0.5 in [-1, 1]
  local path = image.save_grid(x, tmp .. "/grid.png", {nrow = 2, range = {-1, 1}})
  lu.assertEquals(path, tmp .. "/grid.png")
  local back = cn.load_png(path)
  lu.assertEquals(back:shape(), {3, 16, 16})
  lu.assertAlmostEquals(back[{1, 3, 3}], 64 / 255, 1e-7) -- 0.25 -> 63.75 -> 64
  lu.assertAlmostEquals(back[{2, 3, 10}], 128 / 255, 1e-7) -- 0.5 -> 127.5 -> 128
  lu.assertAlmostEquals(back[{3, 10, 3}], 191 / 255, 1e-7) -- 0.75 -> 191.25 -> 191
  lu.assertEquals(back[{1, 10, 10}], 1) -- the empty slot
  assert_error(function() image.save_grid(cn.zeros{3, 5, 5}, tmp .. "/bad.png") end, "save_grid: expected images [N, C, H, W]")
end

function TestImageGrid:testSaveStrips()
  -- 3 examples, 4 columns (clean, noisy, two predictions): one row per example
  local cols = {}
  for k = 1, 4 do
    local b = cn.empty{3, 1, 2, 3}
    for i = 1, 3 do b[i] = (10 * i + k) / 40 end
    cols[k] = b
  end
  local path = image.save_strips(cols, tmp .. "/strips.png", {padding = 1})
  lu.assertEquals(path, tmp .. "/strips.png")
  local back = cn.load_png(path)
  lu.assertEquals(back:shape(), {1, 3 * 3 + 1, 4 * 4 + 1})
  for i = 1, 3 do
    for k = 1, 4 do
      local v = back[{1, (i - 1) * 3 + 2, (k - 1) * 4 + 2}]
      lu.assertAlmostEquals(v, math.floor((10 * i + k) / 40 * 255 + 0.5) / 255, 1e-7)
    end
  end
  -- opts.nrow is respected when given; other options pass through
  image.save_strips(cols, tmp .. "/two.png", {nrow = 2, padding = 0})
  lu.assertEquals(cn.load_png(tmp .. "/two.png"):shape(), {1, 6 * 2, 2 * 3})
  assert_error(function() image.save_strips({}, tmp .. "/x.png") end, "expected a list of image batches")
  assert_error(function() image.save_strips({cols[1], cn.zeros{2, 1, 2, 3}}, tmp .. "/x.png") end, "batch 2 has 2 images, batch 1 has 3")
  assert_error(function() image.save_strips({cols[1], cn.zeros{3, 1, 4, 3}}, tmp .. "/x.png") end, "batch 2", "[3, 1, 4, 3]", "[3, 1, 2, 3]")
  assert_error(function() image.save_strips({cols[1], cn.zeros{3, 2}}, tmp .. "/x.png") end, "save_strips: expected images [N, C, H, W]")
end
