-- tools/denoise_tables.lua — the Markdown tables of docs/denoising.md from the CSVs that
-- recipes/denoise.lua wrote (denoise.markdown: best SSIM / PSNR / LPIPS per level and method, and the
-- steps and seconds to reach them):
--
--   ./cunet tools/denoise_tables.lua runs/denoise_table4/denoise.csv [more.csv ...]

local denoise = require "cunet.denoise"

if #arg == 0 or arg[1] == "--help" then
  io.stderr:write("usage: cunet tools/denoise_tables.lua DENOISE.CSV [DENOISE.CSV ...]\n")
  os.exit(arg[1] == "--help" and 0 or 2)
end
local rows = {}
for _, path in ipairs(arg) do
  local ok, got = pcall(denoise.read_results, path)
  if not ok then
    io.stderr:write("denoise_tables: " .. tostring(got) .. "\n")
    os.exit(1)
  end
  for _, r in ipairs(got) do rows[#rows + 1] = r end
end
io.write(denoise.markdown(rows))
