-- nn.Embedding and nn.SinusoidalTimeEmbedding.
--
--   nn.Embedding(num_embeddings, embedding_dim)        -- weight ~ N(0, 1), as torch
--   nn.Embedding.from_pretrained(weight [, {freeze=true}])
--   emb(ids)                                            -- ids are 1-based (1..num_embeddings)
--
--   nn.SinusoidalTimeEmbedding(dim [, {max_period=10000, flip_sin_to_cos=false, freq_shift=1}])
--   temb(t)                                             -- t: [N] timesteps (or a number) -> [N, dim]
--
-- The sinusoidal embedding is Ho et al.'s get_timestep_embedding (DDPM, diffusion_utils.py),
-- itself the transformer's position encoding: with half = dim // 2 and i = 0 .. half-1,
--   ω_i = exp(-log(max_period) · i / (half - freq_shift)),   emb(t) = [sin(t·ω), cos(t·ω)]
-- and a zero column appended when dim is odd. The defaults are DDPM's (freq_shift = 1, sines
-- first). flip_sin_to_cos=true puts the cosines first and freq_shift=0 divides by half: together
-- they give the guided-diffusion / improved-diffusion variant (diffusers' get_timestep_embedding
-- names the same two switches). No parameters; the frequencies are a non-persistent buffer.

local core = require "cunet.core"
local class = require "cunet.class"
local Module = require("cunet.nn.module").Module
local F = require "cunet.nn.functional"
local init = require "cunet.nn.weight_init"
local util = require "cunet.nn.util"

-- ---- Embedding ------------------------------------------------------------------------------------

local Embedding = class("Embedding", Module)

function Embedding:__init(num_embeddings, embedding_dim)
  Module.__init(self)
  self.num_embeddings = util.check_size(num_embeddings, "num_embeddings", "Embedding")
  self.embedding_dim = util.check_size(embedding_dim, "embedding_dim", "Embedding")
  self:register_parameter("weight", core.empty { num_embeddings, embedding_dim })
  self:reset_parameters()
end

--- Redraws the table from N(0, 1), PyTorch's default.
function Embedding:reset_parameters() init.normal_(self.weight) end

--- An Embedding holding a copy of weight [num, dim]; frozen (no gradient) unless freeze=false.
function Embedding.from_pretrained(weight, opts)
  local o = util.options(opts, { freeze = true }, "Embedding.from_pretrained")
  if not core.is_tensor(weight) or weight:dim() ~= 2 then
    error("Embedding.from_pretrained: expected a 2-D weight tensor", 2)
  end
  local e = Embedding(weight:size(1), weight:size(2))
  core.no_grad(function() e.weight:copy_(weight) end)
  e.weight:requires_grad(not o.freeze)
  return e
end

function Embedding:forward(ids) return F.embedding(ids, self.weight) end

function Embedding:extra_repr() return string.format("%d, %d", self.num_embeddings, self.embedding_dim) end

-- ---- SinusoidalTimeEmbedding -------------------------------------------------------------------------

local SinusoidalTimeEmbedding = class("SinusoidalTimeEmbedding", Module)
SinusoidalTimeEmbedding.defaults = { max_period = 10000, flip_sin_to_cos = false, freq_shift = 1 }

function SinusoidalTimeEmbedding:__init(dim, opts)
  Module.__init(self)
  local who = "SinusoidalTimeEmbedding"
  local o = util.options(opts, SinusoidalTimeEmbedding.defaults, who)
  self.dim = util.check_size(dim, "dim", who)
  local half = dim // 2
  if half - o.freq_shift <= 0 then
    error(string.format("%s: dim %d is too small (half - freq_shift must be positive)", who, dim), 2)
  end
  self.max_period, self.flip_sin_to_cos, self.freq_shift = o.max_period, o.flip_sin_to_cos, o.freq_shift
  local freqs = {}
  for i = 0, half - 1 do freqs[i + 1] = math.exp(-math.log(o.max_period) * i / (half - o.freq_shift)) end
  self:register_buffer("freqs", core.tensor(freqs, { 1, half }), false)
end

function SinusoidalTimeEmbedding:forward(t)
  if type(t) == "number" then t = core.tensor({ t }, { 1 }) end
  if not core.is_tensor(t) or t:dim() > 1 then
    error("SinusoidalTimeEmbedding: expected timesteps [N] (or a number), got " ..
      (core.is_tensor(t) and util.shape_str(t) or type(t)), 2)
  end
  local n = t:numel()
  local args = t:reshape { n, 1 } * self.freqs -- [N, half]
  local sin, cos = args:sin(), args:cos()
  local parts = self.flip_sin_to_cos and { cos, sin } or { sin, cos }
  if self.dim % 2 == 1 then parts[3] = core.zeros { n, 1 } end
  return core.cat(parts, 2)
end

function SinusoidalTimeEmbedding:extra_repr()
  local s = string.format("%d, max_period=%s", self.dim, util.repr(self.max_period))
  if self.flip_sin_to_cos then s = s .. ", flip_sin_to_cos=True" end
  if self.freq_shift ~= 1 then s = s .. ", freq_shift=" .. util.repr(self.freq_shift) end
  return s
end

return { Embedding = Embedding, SinusoidalTimeEmbedding = SinusoidalTimeEmbedding }
