-- image — PNG files and sample grids.
--
--   local image = require "cunet.image"
--   image.save_grid(samples, "grid.png", {nrow = 8, range = {-1, 1}})   -- samples [N, C, H, W]
--   image.save_strips({clean, noisy, pred1, pred2}, "strip.png")         -- one row per example
--
-- Values are mapped from `range` (default {0, 1}) to [0, 1] and clamped, as torchvision's
-- make_grid(normalize=True, value_range=...) does.

local cn = require "cunet"
local options = require "cunet.options"

local M = {}

local GRID_OPTIONS = {"nrow", "padding", "pad_value", "range"}

M.save_png = cn.save_png
M.load_png = cn.load_png

local function check_batch(x, fname)
  if not cn.is_tensor(x) or x:dim() ~= 4 then
    error(string.format("%s: expected images [N, C, H, W], got %s", fname,
      cn.is_tensor(x) and ("shape [" .. table.concat(x:shape(), ", ") .. "]") or type(x)), 3)
  end
end

--- Arranges images [N, C, H, W] into one image [C, rows·(H+p)+p, nrow·(W+p)+p].
-- opts: nrow (8), padding (2), pad_value (1: white), range ({0, 1}: the values shown as black..white).
function M.make_grid(x, opts)
  check_batch(x, "make_grid")
  opts = options.check(opts, GRID_OPTIONS, "make_grid")
  local nrow, pad = opts.nrow or 8, opts.padding or 2
  local lo, hi = table.unpack(opts.range or {0, 1})
  if type(lo) ~= "number" or type(hi) ~= "number" or not (lo < hi) then
    error(string.format("make_grid: range must be {lo, hi} with lo < hi, got {%s, %s}", tostring(lo), tostring(hi)), 2)
  end
  local n, c, h, w = table.unpack(x:shape())
  local cols = math.min(nrow, n)
  local rows = (n + cols - 1) // cols
  local grid = cn.full({c, rows * (h + pad) + pad, cols * (w + pad) + pad}, opts.pad_value or 1)
  local scaled = cn.no_grad(function() return ((x - lo) / (hi - lo)):clamp(0, 1) end)
  for i = 1, n do
    local r, col = (i - 1) // cols, (i - 1) % cols
    grid:narrow(2, r * (h + pad) + pad + 1, h):narrow(3, col * (w + pad) + pad + 1, w):copy_(scaled[i])
  end
  return grid
end

--- Writes images [N, C, H, W] as a grid PNG (see make_grid for opts).
function M.save_grid(x, path, opts)
  check_batch(x, "save_grid")
  options.check(opts, GRID_OPTIONS, "save_grid")
  cn.save_png(path, M.make_grid(x, opts))
  return path
end

--- Writes one row per example from a list of batches [N, C, H, W] (e.g. clean, noisy, then the
-- predictions along the reverse process), as the paper's denoising figures.
function M.save_strips(columns, path, opts)
  opts = options.check(opts, GRID_OPTIONS, "save_strips")
  if type(columns) ~= "table" or #columns == 0 then error("save_strips: expected a list of image batches", 2) end
  for k, col in ipairs(columns) do
    check_batch(col, "save_strips")
    if col:size(1) ~= columns[1]:size(1) then error(string.format("save_strips: batch %d has %d images, batch 1 has %d", k, col:size(1), columns[1]:size(1)), 2) end
    for d = 2, 4 do
      if col:size(d) ~= columns[1]:size(d) then
        error(string.format("save_strips: batch %d has shape [%s], batch 1 has [%s]", k, table.concat(col:shape(), ", "),
          table.concat(columns[1]:shape(), ", ")), 2)
      end
    end
  end
  -- interleave: example i's row holds columns[1][i], columns[2][i], ...
  local n = columns[1]:size(1)
  local tiles = {}
  for i = 1, n do
    for _, col in ipairs(columns) do tiles[#tiles + 1] = col[i] end
  end
  local merged = opts.nrow and opts or setmetatable({nrow = #columns}, {__index = opts})
  cn.save_png(path, M.make_grid(cn.stack(tiles), merged))
  return path
end

return M
