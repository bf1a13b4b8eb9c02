-- nn.SelfAttention2d — the self-attention block of the DDPM U-Net (Ho et al. 2020, AttnBlock),
-- multi-head:
--
--   nn.SelfAttention2d(channels [, {heads=1, groups=32, eps=1e-5, residual=true, bias=true}])
--
--   h = GroupNorm(groups, C)(x)
--   q, k, v = split(Conv1x1(C -> 3C)(h))            -- channels [0,C) q, [C,2C) k, [2C,3C) v;
--                                                   -- head j takes channels [j·d, (j+1)·d), d = C/heads
--   o = softmax(q kᵀ / √d) v                        -- over the H·W positions, per head
--   y = x + Conv1x1(C -> C)(o)                      -- residual=false drops "x +" (the cDDPM variant)
--
-- Children: norm (GroupNorm), qkv (Conv2d C -> 3C, 1×1), proj (Conv2d C -> C, 1×1), so the
-- state_dict keys are norm.weight, norm.bias, qkv.weight, qkv.bias, proj.weight, proj.bias.
-- Ho et al.'s code zero-initialises the output projection; this block keeps PyTorch's default
-- init (zero it with nn.init.zeros_(block.proj.weight) if wanted).

local class = require "cunet.class"
local Module = require("cunet.nn.module").Module
local F = require "cunet.nn.functional"
local util = require "cunet.nn.util"
local Conv2d = require("cunet.nn.conv").Conv2d
local GroupNorm = require("cunet.nn.norm").GroupNorm

local SelfAttention2d = class("SelfAttention2d", Module)
SelfAttention2d.defaults = { heads = 1, groups = 32, eps = 1e-5, residual = true, bias = true }

function SelfAttention2d:__init(channels, opts)
  Module.__init(self)
  local who = "SelfAttention2d"
  local o = util.options(opts, SelfAttention2d.defaults, who)
  self.channels = util.check_size(channels, "channels", who)
  self.heads = util.check_size(o.heads, "heads", who)
  if channels % o.heads ~= 0 then
    error(string.format("SelfAttention2d: channels (%d) must be divisible by heads (%d)", channels, o.heads), 2)
  end
  if channels % o.groups ~= 0 then
    error(string.format("SelfAttention2d: channels (%d) must be divisible by groups (%d); pass {groups=...}",
      channels, o.groups), 2)
  end
  self.residual = o.residual
  self.norm = GroupNorm(o.groups, channels, { eps = o.eps })
  self.qkv = Conv2d(channels, 3 * channels, 1, { bias = o.bias })
  self.proj = Conv2d(channels, channels, 1, { bias = o.bias })
end

function SelfAttention2d:forward(x)
  util.check_input(x, 4, "SelfAttention2d", "[N, C, H, W]")
  local n, c, h, w = x:size(1), x:size(2), x:size(3), x:size(4)
  if c ~= self.channels then
    error(string.format("SelfAttention2d: expected %d channels, got shape %s", self.channels, util.shape_str(x)), 2)
  end
  local heads = self.heads
  local d = c // heads
  local qkv = self.qkv(self.norm(x)):reshape { n, 3, heads, d, h * w }
  -- [N, heads, d, HW] -> [N, heads, HW, d]: a sequence of H·W tokens of size d per head
  local q = qkv:select(2, 1):transpose(3, 4)
  local k = qkv:select(2, 2):transpose(3, 4)
  local v = qkv:select(2, 3):transpose(3, 4)
  local o = F.scaled_dot_product_attention(q, k, v, { scale = 1 / math.sqrt(d) })
  o = o:transpose(3, 4):reshape { n, c, h, w }
  local out = self.proj(o)
  if self.residual then out = x + out end
  return out
end

function SelfAttention2d:extra_repr()
  local s = string.format("%d, heads=%d", self.channels, self.heads)
  if not self.residual then s = s .. ", residual=False" end
  return s
end

return { SelfAttention2d = SelfAttention2d }
