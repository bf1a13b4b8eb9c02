-- recipes/table1.lua — the paper's Table 1 (MNIST column) from two recipes/fid_vs_steps.lua runs per
-- backbone (--sampler ddpm and --sampler ddim): the best step count, its FID (classifier features) and the
-- mean time per sample, beside the paper's numbers, and one plot of FID against steps for both backbones
-- and both samplers. See docs/results.md.
--
--   ./cunet recipes/fid_vs_steps.lua --ckpt U.safetensors --sampler ddim --steps 5,10,20,50 --n 500 --out runs/fid_unet
--   (the same with --sampler ddpm, and both for the cU-Net into runs/fid_cunet), then
--   ./cunet recipes/table1.lua --unet runs/fid_unet --cunet runs/fid_cunet --out docs/images/fid_vs_steps.png

local cli = require "cunet.cli"
local plot = require "cunet.plot"
local fid = require "cunet.fid"
local fs = require "cunet.fs"

local args = cli.parse(arg, {
  name = "table1",
  usage = "cunet recipes/table1.lua --unet DIR --cunet DIR [--out PNG]",
  description = "Table 1 (MNIST) from the fid_vs_steps CSVs of both backbones, with a combined plot.",
  options = {
    {"unet", "runs/fid_unet", "the U-Net's fid_vs_steps output directory (fid_vs_steps_ddpm.csv, fid_vs_steps_ddim.csv)"},
    {"cunet", "runs/fid_cunet", "the cU-Net's"},
    {"out", "runs/fid_vs_steps.png", "the combined plot (a CSV of its points is written beside it)"},
  },
})

-- The paper's Table 1, MNIST column: Inception-FID / best steps / seconds per sample (CPU).
local PAPER = {
  ["U-Net (DDPM)"] = { 3.61, 30, 3.56 }, ["U-Net (DDIM)"] = { 3.73, 11, 1.12 },
  ["cU-Net (DDPM)"] = { 2.98, 5, 0.54 }, ["cU-Net (DDIM)"] = { 2.55, 2, 0.18 },
}

local function fail(msg)
  io.stderr:write("table1: " .. msg .. "\n")
  os.exit(2)
end

-- The rows of a fid_vs_steps CSV (fid.read_scan), refusing a missing or empty one.
local function read_csv(path)
  if not fs.exists(path) then fail("no " .. path .. " (run recipes/fid_vs_steps.lua first)") end
  local rows, err = fid.read_scan(path)
  if not rows then fail(err) end
  if #rows == 0 then fail(path .. " has no rows") end
  return rows
end

local lines = {
  "| backbone | FID (classifier features) | best steps | s / sample | samples | paper: Inception-FID / steps / s |",
  "|---|---|---|---|---|---|",
}
local series = {}
for _, backbone in ipairs { { "U-Net", args.unet }, { "cU-Net", args.cunet } } do
  for _, sampler in ipairs { "ddpm", "ddim" } do
    local rows = read_csv(string.format("%s/fid_vs_steps_%s.csv", backbone[2], sampler))
    local best = rows[1]
    local xs, ys = {}, {}
    for i, r in ipairs(rows) do
      if r.fid < best.fid then best = r end
      xs[i], ys[i] = r.steps, r.fid
    end
    local name = string.format("%s (%s)", backbone[1], sampler:upper())
    local p = PAPER[name]
    lines[#lines + 1] = string.format("| %s | %.2f | %d | %.3f | %d | %.2f / %d / %.2f |", name, best.fid, best.steps,
      best.seconds, best.n, p[1], p[2], p[3])
    series[#series + 1] = { name = name, x = xs, y = ys }
  end
end
print(table.concat(lines, "\n"))
print("FID (classifier features) is not comparable with the paper's Inception-FID; compare the ranking.")

local png, err = plot.lines(args.out, {
  title = "MNIST: FID (classifier features) vs sampling steps", xlabel = "sampling steps",
  ylabel = "FID (classifier features), lower is better", series = series, logx = true, logy = true,
})
if png then print("wrote " .. png) else print(err) end
