-- models/unet — the DDPM U-Net of Ho et al. (2020) and the U-Net the cDDPM paper compares against
-- (lucidrains' denoising-diffusion-pytorch v1.8.3 `Unet`), one class configured by options, with
-- presets for the data sets of this project.
--
--   local unet = require "cunet.models.unet"
--   local model = unet.from_preset("mnist_small")                 -- or unet.UNet{arch=, ch=, ...}
--   local eps = model(x_t, t)                                      -- x_t [N, C, H, W], t [N] in 1..T
--   local again = unet.from_config(model.config)                   -- the config rebuilds the model
--
-- Timesteps are 1-based (1..T) as in cunet.diffusion; the sinusoidal embedding receives t − 1, so
-- a model here and the 0-based PyTorch code embed the same step identically and a PyTorch
-- state_dict loads and gives the same outputs.
--
-- arch "ddpm" (Ho et al., diffusion_tf/models/unet.py; child names of pesser/pytorch_diffusion):
--   temb: sinusoid(ch) -> dense.0 -> swish -> dense.1 (4·ch);  conv_in 3×3 -> ch
--   down: per level i, num_res_blocks ResnetBlocks (ch·mult[i−1] -> ch·mult[i]), each followed
--         by an AttnBlock when the level's resolution is in attn_resolutions; every output is a
--         skip; a Downsample (also a skip) except at the last level
--   mid:  ResnetBlock, AttnBlock, ResnetBlock
--   up:   per level, num_res_blocks + 1 ResnetBlocks on cat(h, skip), attention as above, an
--         Upsample except at the first level;  out: GroupNorm -> swish -> conv 3×3
--   GroupNorm(32, eps 1e-6) everywhere, dropout inside the ResnetBlocks.
-- arch "lucidrains" (denoising_diffusion_pytorch.py v1.8.3, the copy vendored by the cDDPM authors):
--   init_conv 7×7 -> ch;  time_mlp: sinusoid(ch) -> Linear(ch, 4ch) -> GELU -> Linear(4ch, 4ch)
--   down: per level (dim_in -> dim_out), num_res_blocks scale/shift ResnetBlocks at dim_in (a skip
--         after each), attention + x after the last (full Attention where full_attn says so, else
--         LinearAttention), then PixelUnshuffle(2) + 1×1 conv to dim_out (a 3×3 conv at the last level)
--   mid:  ResnetBlock, Attention + x, ResnetBlock
--   up:   per level, num_res_blocks ResnetBlocks on cat(x, skip), attention + x, nearest ×2 + 3×3
--         conv (a 3×3 conv at the last level);  out: cat(x, init_conv output) -> ResnetBlock -> 1×1 conv
--   GroupNorm(8, eps 1e-5) in the ResnetBlocks, RMSNorm in the attentions; no dropout.

local cn = require "cunet"
local nn = require "cunet.nn"
local class = require "cunet.class"
local util = require "cunet.nn.util"
local presets = require "cunet.models.presets"
local blocks = require "cunet.models.unet_blocks"

local M = {}
for name, block in pairs(blocks) do M[name] = block end

-- ---- options ------------------------------------------------------------------------------------------

-- The defaults of each arch, the one place they live. out_channels = false means in_channels.
-- ddpm's are the CIFAR-10 model of Ho et al.; lucidrains' are Unet(dim=64) at 3×64².
M.defaults = {
  ddpm = {
    arch = "ddpm", in_channels = 3, out_channels = false, resolution = 32,
    ch = 128, ch_mult = { 1, 2, 2, 2 }, num_res_blocks = 2, attn_resolutions = { 16 },
    dropout = 0.1, resamp_with_conv = true, norm_groups = 32, norm_eps = 1e-6,
  },
  lucidrains = {
    arch = "lucidrains", in_channels = 3, out_channels = false, resolution = 64,
    ch = 64, ch_mult = { 1, 2, 4, 8 }, num_res_blocks = 2,
    full_attn = "last", -- "last", true, false, or one boolean per level
    attn_heads = 4, attn_dim_head = 32, norm_groups = 8, norm_eps = 1e-5,
  },
}

local copy_list = util.copy_list

local function is_list_of(t, kind)
  if type(t) ~= "table" or #t == 0 then return false end
  for _, v in ipairs(t) do
    if kind == "positive integer" and not (math.type(v) == "integer" and v > 0) then return false end
    if kind == "boolean" and type(v) ~= "boolean" then return false end
  end
  return true
end

-- Merges opts over the arch's defaults, checks them and returns the complete config (a plain table
-- of numbers, strings, booleans and lists: what a checkpoint stores to rebuild the model).
local function resolve(opts)
  local who = "UNet"
  if opts ~= nil and type(opts) ~= "table" then error(who .. ": options must be a table, got " .. type(opts), 3) end
  local arch = (opts or {}).arch or "ddpm"
  local defaults = M.defaults[arch]
  if not defaults then error(string.format("%s: arch must be 'ddpm' or 'lucidrains', got '%s'", who, tostring(arch)), 3) end
  local c = util.options(opts, defaults, who .. " (arch " .. arch .. ")")
  for _, key in ipairs { "in_channels", "resolution", "ch", "num_res_blocks", "norm_groups" } do
    if not (math.type(c[key]) == "integer" and c[key] > 0) then
      error(string.format("%s: %s must be a positive integer, got %s", who, key, tostring(c[key])), 3)
    end
  end
  c.out_channels = c.out_channels or c.in_channels
  if not (math.type(c.out_channels) == "integer" and c.out_channels > 0) then
    error(string.format("%s: out_channels must be a positive integer, got %s", who, tostring(c.out_channels)), 3)
  end
  if not is_list_of(c.ch_mult, "positive integer") then
    error(who .. ": ch_mult must be a non-empty list of positive integers", 3)
  end
  c.ch_mult = copy_list(c.ch_mult)
  local levels = #c.ch_mult
  local factor = 1 << (levels - 1)
  if c.resolution % factor ~= 0 then
    error(string.format("%s: resolution %d is not divisible by 2^%d (%d levels halve it %d times)", who,
      c.resolution, levels - 1, levels, levels - 1), 3)
  end
  -- every GroupNorm must divide its channels
  local widths = { c.ch }
  for _, m in ipairs(c.ch_mult) do widths[#widths + 1] = c.ch * m end
  for _, width in ipairs(widths) do
    if width % c.norm_groups ~= 0 then
      error(string.format("%s: %d channels are not divisible by norm_groups %d", who, width, c.norm_groups), 3)
    end
  end
  if arch == "ddpm" then
    if type(c.attn_resolutions) ~= "table" then error(who .. ": attn_resolutions must be a list of resolutions", 3) end
    c.attn_resolutions = copy_list(c.attn_resolutions)
    local at_level = {}
    for i = 1, levels do at_level[c.resolution >> (i - 1)] = true end
    for _, r in ipairs(c.attn_resolutions) do
      if not at_level[r] then
        local have = {}
        for i = 1, levels do have[i] = tostring(c.resolution >> (i - 1)) end
        error(string.format("%s: attention resolution %s is not a level's resolution (%s)", who, tostring(r),
          table.concat(have, ", ")), 3)
      end
    end
    if type(c.dropout) ~= "number" or c.dropout < 0 or c.dropout > 1 then
      error(who .. ": dropout must be in [0, 1], got " .. tostring(c.dropout), 3)
    end
  else
    local fa = c.full_attn
    if fa == "last" then
      fa = {}
      for i = 1, levels do fa[i] = i == levels end
    elseif type(fa) == "boolean" then
      local v = fa
      fa = {}
      for i = 1, levels do fa[i] = v end
    end
    if not is_list_of(fa, "boolean") or #fa ~= levels then
      error(string.format("%s: full_attn must be \"last\", a boolean or %d booleans (one per level)", who, levels), 3)
    end
    c.full_attn = copy_list(fa)
  end
  return c
end

M.resolve_config = resolve

-- ---- the model ----------------------------------------------------------------------------------------

local UNet = class("UNet", nn.Module)
M.UNet = UNet

local BUILD, FORWARD = {}, {}

-- Ho et al.: the channel count changes in a level's first ResnetBlock, the resamplers keep it.
function BUILD.ddpm(self, c)
  local temb_ch = 4 * c.ch
  local block_opts = { style = "ddpm", temb_channels = temb_ch, groups = c.norm_groups, eps = c.norm_eps, dropout = c.dropout }
  local attn_opts = { groups = c.norm_groups, eps = c.norm_eps }
  local attn_at = {}
  for _, r in ipairs(c.attn_resolutions) do attn_at[r] = true end
  local levels = #c.ch_mult
  local in_mult = { 1 }
  for i, m in ipairs(c.ch_mult) do in_mult[i + 1] = m end

  self.temb = blocks.TimestepEmbedding(c.ch, temb_ch)
  self.conv_in = nn.Conv2d(c.in_channels, c.ch, 3, { padding = 1 })
  local res = c.resolution
  local block_in
  self.down = nn.ModuleList()
  for i = 1, levels do
    local level, block, attn = nn.Module(), nn.ModuleList(), nn.ModuleList()
    block_in = c.ch * in_mult[i]
    local block_out = c.ch * c.ch_mult[i]
    for _ = 1, c.num_res_blocks do
      block:append(blocks.ResnetBlock(block_in, block_out, block_opts))
      block_in = block_out
      if attn_at[res] then attn:append(blocks.AttnBlock(block_in, attn_opts)) end
    end
    level.block = block
    level.attn = attn
    if i ~= levels then
      level.downsample = blocks.Downsample(block_in, { with_conv = c.resamp_with_conv })
      res = res // 2
    end
    self.down:append(level)
  end

  self.mid = nn.Module()
  self.mid.block_1 = blocks.ResnetBlock(block_in, block_in, block_opts)
  self.mid.attn_1 = blocks.AttnBlock(block_in, attn_opts)
  self.mid.block_2 = blocks.ResnetBlock(block_in, block_in, block_opts)

  -- built deepest first (block_in flows down the up path), stored by level as the reference does
  local up = {}
  for i = levels, 1, -1 do
    local level, block, attn = nn.Module(), nn.ModuleList(), nn.ModuleList()
    local block_out = c.ch * c.ch_mult[i]
    local skip_in = c.ch * c.ch_mult[i]
    for j = 1, c.num_res_blocks + 1 do
      if j == c.num_res_blocks + 1 then skip_in = c.ch * in_mult[i] end
      block:append(blocks.ResnetBlock(block_in + skip_in, block_out, block_opts))
      block_in = block_out
      if attn_at[res] then attn:append(blocks.AttnBlock(block_in, attn_opts)) end
    end
    level.block = block
    level.attn = attn
    if i ~= 1 then
      level.upsample = blocks.Upsample(block_in, { with_conv = c.resamp_with_conv })
      res = res * 2
    end
    up[i] = level
  end
  self.up = nn.ModuleList(up)

  self.norm_out = nn.GroupNorm(c.norm_groups, block_in, { eps = c.norm_eps })
  self.conv_out = nn.Conv2d(block_in, c.out_channels, 3, { padding = 1 })
end

function FORWARD.ddpm(self, x, t0)
  local c = self.config
  local temb = self.temb(t0)
  local hs = { self.conv_in(x) }
  for i = 1, #c.ch_mult do
    local level = self.down[i]
    local has_attn = #level.attn > 0
    for j = 1, c.num_res_blocks do
      local h = level.block[j](hs[#hs], temb)
      if has_attn then h = level.attn[j](h) end
      hs[#hs + 1] = h
    end
    if level.downsample then hs[#hs + 1] = level.downsample(hs[#hs]) end
  end
  local h = self.mid.block_1(hs[#hs], temb)
  h = self.mid.attn_1(h)
  h = self.mid.block_2(h, temb)
  for i = #c.ch_mult, 1, -1 do
    local level = self.up[i]
    local has_attn = #level.attn > 0
    for j = 1, c.num_res_blocks + 1 do
      h = level.block[j](cn.cat({ h, table.remove(hs) }, 2), temb)
      if has_attn then h = level.attn[j](h) end
    end
    if level.upsample then h = level.upsample(h) end
  end
  return self.conv_out(self.norm_out(h, "silu"))
end

-- lucidrains: the blocks keep a level's width; the resamplers change it. Each level is a
-- ModuleList {block_1 .. block_n, attention, resampler}: for n = 2 the keys are torch's
-- downs.i.0 .. downs.i.3.
function BUILD.lucidrains(self, c)
  local time_dim = 4 * c.ch
  local block_opts = { style = "scale_shift", temb_channels = time_dim, groups = c.norm_groups, eps = c.norm_eps }
  local attn_opts = { heads = c.attn_heads, dim_head = c.attn_dim_head }
  local levels = #c.ch_mult
  local dims = { c.ch }
  for i, m in ipairs(c.ch_mult) do dims[i + 1] = c.ch * m end
  local function attention(dim, full)
    return (full and blocks.Attention or blocks.LinearAttention)(dim, attn_opts)
  end

  self.init_conv = nn.Conv2d(c.in_channels, c.ch, 7, { padding = 3 })
  self.time_mlp = nn.Sequential(nn.SinusoidalTimeEmbedding(c.ch), nn.Linear(c.ch, time_dim), nn.GELU(),
    nn.Linear(time_dim, time_dim))

  -- both lists are registered before the middle blocks, as in torch: that is the state_dict order
  self.downs = nn.ModuleList()
  self.ups = nn.ModuleList()
  for i = 1, levels do
    local dim_in, dim_out = dims[i], dims[i + 1]
    local level = nn.ModuleList()
    for _ = 1, c.num_res_blocks do level:append(blocks.ResnetBlock(dim_in, dim_in, block_opts)) end
    level:append(attention(dim_in, c.full_attn[i]))
    if i < levels then
      level:append(nn.Sequential(blocks.PixelUnshuffle(2), nn.Conv2d(4 * dim_in, dim_out, 1)))
    else
      level:append(nn.Conv2d(dim_in, dim_out, 3, { padding = 1 }))
    end
    self.downs:append(level)
  end

  local mid_dim = dims[levels + 1]
  self.mid_block1 = blocks.ResnetBlock(mid_dim, mid_dim, block_opts)
  self.mid_attn = blocks.Attention(mid_dim, attn_opts)
  self.mid_block2 = blocks.ResnetBlock(mid_dim, mid_dim, block_opts)

  for i = levels, 1, -1 do
    local dim_in, dim_out = dims[i], dims[i + 1]
    local level = nn.ModuleList()
    for _ = 1, c.num_res_blocks do level:append(blocks.ResnetBlock(dim_out + dim_in, dim_out, block_opts)) end
    level:append(attention(dim_out, c.full_attn[i]))
    if i > 1 then
      level:append(nn.Sequential(nn.Upsample { scale_factor = 2, mode = "nearest" },
        nn.Conv2d(dim_out, dim_in, 3, { padding = 1 })))
    else
      level:append(nn.Conv2d(dim_out, dim_in, 3, { padding = 1 }))
    end
    self.ups:append(level)
  end

  self.final_res_block = blocks.ResnetBlock(2 * c.ch, c.ch, block_opts)
  self.final_conv = nn.Conv2d(c.ch, c.out_channels, 1)
end

function FORWARD.lucidrains(self, x, t0)
  local n = self.config.num_res_blocks
  x = self.init_conv(x)
  local r = x
  local t = self.time_mlp(t0)
  local hs = {}
  for _, level in ipairs(self.downs) do
    for j = 1, n do
      x = level[j](x, t)
      if j == n then x = level[n + 1](x) + x end
      hs[#hs + 1] = x
    end
    x = level[n + 2](x)
  end
  x = self.mid_block1(x, t)
  x = self.mid_attn(x) + x
  x = self.mid_block2(x, t)
  for _, level in ipairs(self.ups) do
    for j = 1, n do x = level[j](cn.cat({ x, table.remove(hs) }, 2), t) end
    x = level[n + 1](x) + x
    x = level[n + 2](x)
  end
  x = self.final_res_block(cn.cat({ x, r }, 2), t)
  return self.final_conv(x)
end

--- UNet(opts): opts.arch picks "ddpm" (default) or "lucidrains"; the other options and their
-- defaults are in unet.defaults[arch] (unknown ones are errors). model.config is the complete
-- configuration: UNet(model.config) builds the same architecture.
function UNet:__init(opts)
  nn.Module.__init(self)
  local c = resolve(opts)
  self.config = c
  BUILD[c.arch](self, c)
end

--- model(x, t) -> [N, out_channels, H, W]. x: [N, in_channels, H, W], H and W multiples of
-- 2^(levels−1); t: a tensor of N timesteps in 1..T (or one number for the whole batch). The
-- embedding sees t − 1, the 0-based step of the PyTorch code.
function UNet:forward(x, t)
  local c = self.config
  util.check_input(x, 4, "UNet", "[N, C, H, W]")
  local n, h, w = x:size(1), x:size(3), x:size(4)
  if x:size(2) ~= c.in_channels then
    error(string.format("UNet: expected %d input channels, got shape %s", c.in_channels, util.shape_str(x)), 2)
  end
  local factor = 1 << (#c.ch_mult - 1)
  if h % factor ~= 0 or w % factor ~= 0 then
    error(string.format("UNet: H and W must be multiples of %d for %d levels, got shape %s", factor,
      #c.ch_mult, util.shape_str(x)), 2)
  end
  if type(t) == "number" then
    t = cn.full({ n }, t)
  elseif not cn.is_tensor(t) or t:numel() ~= n then
    error(string.format("UNet: expected %d timesteps (a tensor [N] or a number), got %s", n,
      cn.is_tensor(t) and util.shape_str(t) or type(t)), 2)
  end
  return FORWARD[c.arch](self, x, t:reshape { n } - 1)
end

function UNet:extra_repr()
  local c = self.config
  return string.format("arch=%s, ch=%d, ch_mult=%s, num_res_blocks=%d, in_channels=%d, out_channels=%d",
    c.arch, c.ch, util.repr(c.ch_mult), c.num_res_blocks, c.in_channels, c.out_channels)
end

-- ---- presets ------------------------------------------------------------------------------------------

--- unet.presets[name]: option tables for UNet (parameter counts in docs/unet.md).
M.presets = {
  -- Ho et al.'s CIFAR-10 model: 35,746,307 parameters
  cifar10 = { arch = "ddpm", in_channels = 3, resolution = 32, ch = 128, ch_mult = { 1, 2, 2, 2 },
    num_res_blocks = 2, attn_resolutions = { 16 }, dropout = 0.1 },
  -- the cDDPM paper's baseline, lucidrains' Unet(dim=64, dim_mults=(1, 2, 4, 8)) at 3×64²: 35,710,339
  paper_baseline = { arch = "lucidrains", in_channels = 3, resolution = 64, ch = 64, ch_mult = { 1, 2, 4, 8 },
    num_res_blocks = 2, full_attn = { false, false, false, true } },
  -- 1×28² (MNIST, Fashion-MNIST): levels 28², 14², 7²
  mnist_small = { arch = "ddpm", in_channels = 1, resolution = 28, ch = 32, ch_mult = { 1, 2, 2 },
    num_res_blocks = 1, attn_resolutions = { 7 }, dropout = 0.1 },
  mnist = { arch = "ddpm", in_channels = 1, resolution = 28, ch = 64, ch_mult = { 1, 2, 2 },
    num_res_blocks = 2, attn_resolutions = { 14 }, dropout = 0.1 },
  -- matched with continuous_unet's presets of the same name, by trainable parameters and by MACs
  -- (within 4%: docs/unet.md): 280,177 parameters, 47.9 M MACs; 1,112,801 and 190.0 M (mnist_small's)
  mnist_028m = { arch = "ddpm", in_channels = 1, resolution = 28, ch = 16, ch_mult = { 1, 2, 2 },
    num_res_blocks = 1, attn_resolutions = { 7 }, dropout = 0.1, norm_groups = 8 },
  mnist_11m = { arch = "ddpm", in_channels = 1, resolution = 28, ch = 32, ch_mult = { 1, 2, 2 },
    num_res_blocks = 1, attn_resolutions = { 7 }, dropout = 0.1 },
  -- Ho et al.'s model by image size (RGB): the CIFAR-10 network at 32²; at 64² the same network
  -- (levels 64², 32², 16², 8², attention at 16²), the same 35,746,307 parameters
  ["32"] = { arch = "ddpm", in_channels = 3, resolution = 32, ch = 128, ch_mult = { 1, 2, 2, 2 },
    num_res_blocks = 2, attn_resolutions = { 16 }, dropout = 0.1 },
  ["64"] = { arch = "ddpm", in_channels = 3, resolution = 64, ch = 128, ch_mult = { 1, 2, 2, 2 },
    num_res_blocks = 2, attn_resolutions = { 16 }, dropout = 0.1 },
}

--- The preset's options with overrides applied on top (a new table; models/presets.lua).
function M.preset_config(name, overrides)
  return presets.config(M.presets, name, overrides, "unet")
end

--- unet.from_config(config) -> UNet(config): rebuilds a model from model.config (what
-- cunet.checkpoint stores and calls).
function M.from_config(config) return UNet(config) end

--- unet.from_preset(name [, overrides]) -> a UNet; overrides replace preset options
-- (e.g. {in_channels = 3, dropout = 0}).
function M.from_preset(name, overrides)
  return UNet(M.preset_config(name, overrides))
end

return M
