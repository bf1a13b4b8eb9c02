-- test_bm3d.lua — cn.bm3d (engine/bm3d.c, engine/lua/l_bm3d.c) against the published PSNR of
-- Dabov et al. (2007), Table II: the 256 x 256 grey "cameraman" (tests/fixtures/cameraman.png,
-- copied from Debian's libvigraimpex-dev by tests/tools/fixtures_cameraman.py) with Gaussian
-- noise sigma = 25 (0..255 scale) drawn by cn.seed(0); cn.randn, not clipped; the paper reports
-- 29.45 dB and this implementation must land within 0.3 dB (docs/denoising.md has sigma 15 and 50).
-- Then colour/batched planes, options and errors. The C side (transforms, flat images, thread
-- independence) is tests/c/test_bm3d.c.
local lu = require "luaunit"
local helpers = require "helpers"
local cn = require "cunet"

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local CAMERAMAN = here .. "/../fixtures/cameraman.png"
local PAPER_PSNR = { [15] = 31.91, [25] = 29.45, [50] = 26.13 } -- Table II, Cameraman
local TOLERANCE_DB = 0.3

local function psnr(a, b)
  local mse = ((a - b) ^ 2):mean():item()
  return 10 * math.log(1 / mse, 10)
end

local assert_error = helpers.assert_error

TestBm3d = {}

function TestBm3d:testCameramanPublishedPsnr()
  local f = io.open(CAMERAMAN, "rb")
  if not f then lu.skip("no " .. CAMERAMAN .. " (python3 tests/tools/fixtures_cameraman.py)") end
  f:close()
  local clean = cn.load_png(CAMERAMAN)
  lu.assertEquals(clean:shape(), { 1, 256, 256 })
  local sigma = 25
  cn.seed(0)
  local noisy = clean + cn.randn { 1, 256, 256 } * (sigma / 255)
  lu.assertAlmostEquals(psnr(noisy, clean), 20.17, 0.05) -- the paper's noisy PSNR for sigma 25
  local t0 = cn.time()
  local denoised = cn.bm3d(noisy, sigma / 255)
  local seconds = cn.time() - t0
  lu.assertEquals(denoised:shape(), { 1, 256, 256 })
  local got = psnr(denoised, clean)
  local msg = string.format("cameraman sigma %d: %.2f dB, the paper %.2f dB (%.2f s)", sigma, got, PAPER_PSNR[sigma], seconds)
  lu.assertTrue(math.abs(got - PAPER_PSNR[sigma]) <= TOLERANCE_DB, msg)
  -- the basic estimate alone is worse than the final one, better than the noisy image
  local basic = psnr(cn.bm3d(noisy, sigma / 255, { stages = 1 }), clean)
  lu.assertTrue(basic < got and basic > got - 1.5, string.format("basic estimate %.2f dB", basic))
end

function TestBm3d:testPlanesAreIndependent()
  cn.seed(4)
  local x = cn.rand { 2, 3, 24, 20 }
  local y = cn.bm3d(x, 0.1)
  lu.assertEquals(y:shape(), { 2, 3, 24, 20 })
  local one = cn.bm3d(x:select(1, 2):select(1, 3), 0.1)
  lu.assertEquals((y:select(1, 2):select(1, 3) - one):abs():max():item(), 0)
  -- a non-contiguous view gives the same as its copy
  local t = x:select(1, 1):transpose(2, 3)
  lu.assertEquals((cn.bm3d(t, 0.1) - cn.bm3d(t:contiguous(), 0.1)):abs():max():item(), 0)
end

function TestBm3d:testOptions()
  cn.seed(5)
  local x = cn.rand { 32, 32 }
  local a = cn.bm3d(x, 0.1)
  -- the defaults, spelled out, change nothing
  local same = cn.bm3d(x, 0.1, {
    ht_block_size = 8, ht_group_max = 16, ht_step = 3, ht_search = 39, ht_tau_match = 2500, ht_lambda_2d = 0,
    ht_lambda_3d = 2.7, ht_beta = 2, ht_transform = "bior1.5", wiener_block_size = 8, wiener_group_max = 32,
    wiener_step = 3, wiener_search = 39, wiener_tau_match = 400, wiener_beta = 2, wiener_transform = "dct",
    transform_3d = "haar", stages = 2,
  })
  lu.assertEquals((a - same):abs():max():item(), 0)
  local b = cn.bm3d(x, 0.1, { ht_transform = "dct", transform_3d = "wht", wiener_block_size = 6 })
  lu.assertTrue((a - b):abs():max():item() > 0)
  assert_error(function() cn.bm3d(x, 0.1, { ht_blocksize = 8 }) end,
    "bm3d: unknown option 'ht_blocksize'", "ht_block_size", "wiener_tau_match", "stages")
  assert_error(function() cn.bm3d(x, 0.1, { ht_transform = "haar" }) end, "\"bior1.5\" or \"dct\"")
  assert_error(function() cn.bm3d(x, 0.1, { transform_3d = "dct" }) end, "\"haar\" or \"wht\"")
  assert_error(function() cn.bm3d(x, 0.1, { wiener_search = 20 }) end, "wiener search must be odd")
  assert_error(function() cn.bm3d(x, 0.1, { ht_block_size = 12 }) end, "ht transform bior1.5 needs a power-of-two")
  assert_error(function() cn.bm3d(x, 0.1, { stages = 0 }) end, "stages must be 1 or 2")
  assert_error(function() cn.bm3d(x, 0.1, { ht_step = "3" }) end, "ht_step")
end

function TestBm3d:testErrors()
  assert_error(function() cn.bm3d(cn.rand { 16 }, 0.1) end, "bad argument #1 to 'bm3d'", "got [16]")
  assert_error(function() cn.bm3d(cn.rand { 16, 16 }, 0) end, "bad argument #2 to 'bm3d'", "sigma must be positive")
  assert_error(function() cn.bm3d(cn.rand { 16, 16 }, 0.1, 3) end, "bad argument #3 to 'bm3d'")
  assert_error(function() cn.bm3d(cn.rand { 5, 16 }, 0.1) end, "image 5x16 is smaller than the 8x8 blocks")
  assert_error(function() cn.bm3d(cn.rand { 10, 16 }, 0.5) end, "image 10x16 is smaller than the 12x12 blocks") -- sigma > 40/255
  assert_error(function() cn.bm3d("x", 0.1) end, "tensor expected")
end
