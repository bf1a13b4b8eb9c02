-- examples/bm3d_cameraman.lua — cn.bm3d on the 256 x 256 grey cameraman against the published PSNR
-- of Dabov et al. (2007), Table II: the numbers of docs/denoising.md.
--
--   cunet examples/bm3d_cameraman.lua [seeds [threads]]      -- default: 1 seed (0), all threads
--
-- Noise: cn.seed(s); clean + cn.randn{1, 256, 256} * sigma / 255 (not clipped), s = 0, 1, ...
-- Prints, per sigma (0..255 scale), the noisy, basic-estimate and final PSNR for seed 0, the mean
-- over the seeds, the paper's value, and the seconds of one cn.bm3d call (both stages; the fastest
-- of the seeds): wall clock, and process CPU time (os.clock, all threads together), which a busy
-- machine inflates less.

local cn = require "cunet"

local seeds = tonumber(arg[1] or "1")
if arg[2] then cn.set_num_threads(tonumber(arg[2])) end
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local clean = cn.load_png(here .. "/../tests/fixtures/cameraman.png")
local paper = { [15] = 31.91, [25] = 29.45, [50] = 26.13 }

local function psnr(a) return 10 * math.log(1 / ((a - clean) ^ 2):mean():item(), 10) end

print(string.format("threads %d; seeds 0..%d", cn.num_threads(), seeds - 1))
print(" sigma | noisy | basic | final (seed 0) | final (mean) | paper | diff  | wall s | CPU s")
for _, sigma in ipairs { 15, 25, 50 } do
  local first, sum, noisy0, basic0, best_time, best_cpu = nil, 0, nil, nil, math.huge, math.huge
  for seed = 0, seeds - 1 do
    cn.seed(seed)
    local noisy = clean + cn.randn { 1, 256, 256 } * (sigma / 255)
    local t0, c0 = cn.time(), os.clock()
    local final = psnr(cn.bm3d(noisy, sigma / 255))
    best_time, best_cpu = math.min(best_time, cn.time() - t0), math.min(best_cpu, os.clock() - c0)
    if seed == 0 then
      first, noisy0 = final, psnr(noisy)
      basic0 = psnr(cn.bm3d(noisy, sigma / 255, { stages = 1 }))
    end
    sum = sum + final
  end
  local mean = sum / seeds
  print(string.format(" %5d | %5.2f | %5.2f | %14.2f | %12.2f | %5.2f | %+5.2f | %6.2f | %5.2f", sigma, noisy0,
    basic0, first, mean, paper[sigma], first - paper[sigma], best_time, best_cpu))
end
