-- models/continuous_unet — the continuous U-Net (cU-Net) of "The Missing U for Efficient Diffusion
-- Models" (Calvo-Ordoñez et al., TMLR 2024): a U-shaped encoder/decoder whose blocks are
-- second-order neural ODEs, one class configured by options, with presets and the paper's ablations.
--
--   local cunet = require "cunet.models.continuous_unet"
--   local model = cunet.from_preset("mnist")                       -- or cunet.ContinuousUNet{...}
--   local eps = model(x_t, t)                                       -- x_t [N, C, H, W], t [N] in 1..T
--   local ablated = cunet.from_preset("notebook", {ablation = "no_attention"})
--   local again = cunet.from_config(model.config)                   -- the config rebuilds the model
--
-- The network (docs/cunet.md has every choice and why):
--   temb = time_embed(t)                          a frozen sinusoidal table [num_timesteps, time_dim]
--                                                 looked up by t (row t = the authors' 0-based t − 1)
--   s = stem(x)                                   the first ODE state, width w1 = (x0, v0) halves:
--       "velocity"           s = g(x)             (the authors' notebook: g makes the whole state)
--       "position_velocity"  x0 = 1×1 conv(x), s = cat(x0, g(x0))   (the textbook x'(0) = g(x(0)))
--   encoder level i:  s = ODE_i(s) [→ attention]  (a skip) → 1×1 conv → act → bilinear ×½
--   middle:           s = ODE_mid(s) [→ attention]
--   decoder level i:  bilinear up to the skip's size → cat(s, skip) → 1×1 conv → act → ODE_i(s) [→ attention]
--   head:             1×1 conv (w1 → out_channels)
-- Each ODE block is an nn.SecondOrderODEBlock over [t0, t1] whose state is the incoming features read
-- as halves (x, v): form "augmented" (the authors': one derivative for cat(x, v)) or "second_order"
-- (x' = v, v' = a(t, x, v)); its dynamics are a ConvSODEFunc (continuous_unet_blocks.lua) that
-- takes the time embedding through scale/shift when time_scale_shift is set. With time_add, an MLP
-- of the embedding is added to each ODE block's input instead (or as well).

local cn = require "cunet"
local nn = require "cunet.nn"
local class = require "cunet.class"
local util = require "cunet.nn.util"
local presets = require "cunet.models.presets"
local options = require "cunet.options"
local blocks = require "cunet.models.continuous_unet_blocks"

local M = {}
for name, block in pairs(blocks) do M[name] = block end


-- ---- options ---------------------------------------------------------------------------------------

--- The defaults, the one place they live: the authors' notebook network (3×64², 8,811,875
-- parameters). out_channels = false means in_channels.
M.defaults = {
  in_channels = 3, out_channels = false, resolution = 64,
  widths = { 32, 64, 128, 256 },  -- ODE state width of each encoder/decoder level (halves x, v)
  mid_width = 512,                -- the bottleneck's
  stem = "velocity",              -- "velocity" | "position_velocity"
  stem_width = 16,                -- g's hidden width (the authors' nf)
  velocity_act = "softplus",      -- g's nonlinearity (the paper's text: ReLU)
  act = "softplus",               -- the ODE functions' and the 1×1 convs' nonlinearity
  norm = "instance",              -- "instance" | "group" in the ODE functions
  norm_groups = 8,
  form = "augmented",             -- "augmented" | "second_order"
  residual = true,                -- residual ODE functions ("resblocks"); false: the plain ones
  num_timesteps = 1000, time_dim = 256,
  time_scale_shift = false,       -- scale/shift from the embedding inside every ODE function
  time_add = false,               -- an MLP of the embedding added to every ODE block's input
  attention_levels = { 4 },       -- levels whose encoder and decoder ODE blocks are followed by attention
  attention_mid = false,          -- attention after the bottleneck's ODE block too
  attention_heads = 4, attention_dim_head = 32,
  attention_residual = false,     -- x + attention(x) instead of attention(x)
  -- the solver of every ODE block: the authors' odeint(method="rk4") is torchdiffeq's 3/8 rule, one
  -- step over [0, 1] (docs/cunet.md); their tolerances, 1e-3, count only when an adaptive method is
  -- chosen. These differ from nn.ODEBlock's defaults (classic rk4, 1e-5) on purpose: docs/ode.md.
  method = "rk4_38", steps = 1, t0 = 0, t1 = 1, rtol = 1e-3, atol = 1e-3, adjoint = false,
  -- RNODE on every ODE block: {kinetic = λ1, jacobian = λ2[, noise =]} (nn.SecondOrderODEBlock's
  -- regularize, docs/ode.md); a training forward then leaves model:penalties() to add to the loss
  regularize = false,
  ablation = "none",              -- applied on top of the other options: see M.ablations
}

--- The paper's ablations (Appendix C, Table 5) as changes to a configuration; each sets absolute
-- values, so applying one twice (rebuilding from a config) changes nothing.
M.ablations = {
  none = function() end,
  -- "w/o attention": no attention block anywhere
  no_attention = function(c)
    c.attention_levels, c.attention_mid = {}, false
  end,
  -- "w/o resblocks": the plain ODE function of the authors' ablation (second conv 1×1, no residual),
  -- which takes the time through an MLP added to the block's input (the authors' count, 6,138,083)
  no_resblocks = function(c)
    c.residual, c.time_scale_shift, c.time_add = false, false, true
  end,
  no_attention_no_resblocks = function(c)
    M.ablations.no_attention(c)
    M.ablations.no_resblocks(c)
  end,
  -- "time embedding only": the time enters through the embedding added to each block's input,
  -- not through scale/shift inside the ODE functions
  time_embedding_only = function(c)
    c.time_scale_shift, c.time_add = false, true
  end,
}

local CHOICES = {
  stem = { velocity = true, position_velocity = true },
  norm = { instance = true, group = true },
  form = { augmented = true, second_order = true },
  method = { euler = true, midpoint = true, heun = true, rk4 = true, rk4_38 = true, bosh3 = true, dopri5 = true },
}

local copy_list = util.copy_list

local function positive_integer(v) return math.type(v) == "integer" and v > 0 end

-- Merges opts over the defaults, applies the ablation, checks everything and returns the complete
-- config (numbers, strings, booleans and lists: what a checkpoint stores to rebuild the model).
local function resolve(opts)
  local who = "ContinuousUNet"
  local c = util.options(opts, M.defaults, who)
  local function fail(fmt, ...) error(who .. ": " .. string.format(fmt, ...), 4) end
  for _, key in ipairs { "widths", "attention_levels" } do
    if type(c[key]) ~= "table" then fail("%s must be a list, got %s", key, type(c[key])) end
    c[key] = copy_list(c[key])
  end
  local ablate = M.ablations[c.ablation]
  if not ablate then
    local names = {}
    for k in pairs(M.ablations) do names[#names + 1] = k end
    table.sort(names)
    fail("unknown ablation '%s' (known: %s)", tostring(c.ablation), table.concat(names, ", "))
  end
  ablate(c)
  for key, allowed in pairs(CHOICES) do
    if not allowed[c[key]] then
      local names = {}
      for k in pairs(allowed) do names[#names + 1] = k end
      table.sort(names)
      fail("%s must be one of %s, got %s", key, table.concat(names, ", "), tostring(c[key]))
    end
  end
  for _, key in ipairs { "velocity_act", "act" } do
    if not blocks.ACTIVATIONS[c[key]] then fail("%s must be 'softplus', 'relu' or 'silu', got %s", key, tostring(c[key])) end
  end
  for _, key in ipairs { "in_channels", "resolution", "mid_width", "stem_width", "norm_groups", "num_timesteps",
    "time_dim", "attention_heads", "attention_dim_head", "steps" } do
    if not positive_integer(c[key]) then fail("%s must be a positive integer, got %s", key, tostring(c[key])) end
  end
  c.out_channels = c.out_channels or c.in_channels
  if not positive_integer(c.out_channels) then
    fail("out_channels must be a positive integer, got %s", tostring(c.out_channels))
  end
  if #c.widths == 0 then fail("widths must list at least one level") end
  local all = copy_list(c.widths)
  all[#all + 1] = c.mid_width
  for _, w in ipairs(all) do
    if not positive_integer(w) or w % 2 ~= 0 then
      fail("every width must be an even positive integer (halves x, v), got %s", tostring(w))
    end
    if c.norm == "group" and w % c.norm_groups ~= 0 then
      fail("width %d is not divisible by norm_groups %d", w, c.norm_groups)
    end
  end
  if c.time_dim % 2 ~= 0 then fail("time_dim must be even, got %d", c.time_dim) end
  local seen = {}
  for _, l in ipairs(c.attention_levels) do
    if not (positive_integer(l) and l <= #c.widths) or seen[l] then
      fail("attention_levels must list distinct levels in 1..%d, got %s", #c.widths, util.repr(c.attention_levels))
    end
    seen[l] = true
  end
  table.sort(c.attention_levels)
  for _, key in ipairs { "residual", "time_scale_shift", "time_add", "attention_mid", "attention_residual", "adjoint" } do
    if type(c[key]) ~= "boolean" then fail("%s must be a boolean, got %s", key, tostring(c[key])) end
  end
  for _, key in ipairs { "t0", "t1", "rtol", "atol" } do
    if type(c[key]) ~= "number" then fail("%s must be a number, got %s", key, tostring(c[key])) end
  end
  if c.regularize then -- the blocks check its keys and values when they are built
    if type(c.regularize) ~= "table" then
      fail("regularize must be false or a table {kinetic=, jacobian=}, got %s", tostring(c.regularize))
    end
    local r = {}
    for k, v in pairs(c.regularize) do r[k] = v end
    c.regularize = r
  end
  return c
end

M.resolve_config = resolve

-- ---- the model ---------------------------------------------------------------------------------------

local ContinuousUNet = class("ContinuousUNet", nn.Module)
M.ContinuousUNet = ContinuousUNet

local function solver_options(c)
  return { form = c.form, method = c.method, steps = c.steps, t0 = c.t0, t1 = c.t1, rtol = c.rtol, atol = c.atol,
    adjoint = c.adjoint, return_velocity = true, regularize = c.regularize }
end

-- One ODE block of state width w, with its optional time MLP, in the container `level` (children
-- time_mlp, ode). The block has no init_velocity: its initial velocity is the second half of the
-- incoming features, which run_ode passes to it (SecondOrderODEBlock:solve(x, v0, temb)).
local function add_ode(self, level, w)
  local c = self.config
  local func = blocks.ConvSODEFunc(w, { form = c.form, residual = c.residual, norm = c.norm, groups = c.norm_groups,
    act = c.act, time_dim = c.time_scale_shift and c.time_dim or false })
  if c.time_add then
    level.time_mlp = nn.Sequential(nn.Linear(c.time_dim, w), nn.SiLU(), nn.Linear(w, w))
  end
  level.ode = nn.SecondOrderODEBlock(func, nil, solver_options(c))
end

local function add_attention(self, level, w)
  local c = self.config
  level.attention = blocks.Attention(w, { heads = c.attention_heads, dim_head = c.attention_dim_head })
end

--- ContinuousUNet(opts): options and defaults in continuous_unet.defaults (unknown ones are errors);
-- opts.ablation applies one of continuous_unet.ablations. model.config is the complete
-- configuration: ContinuousUNet(model.config) builds the same architecture.
function ContinuousUNet:__init(opts)
  nn.Module.__init(self)
  local c = resolve(opts)
  self.config = c
  local widths, levels = c.widths, #c.widths
  local attention_at = {}
  for _, l in ipairs(c.attention_levels) do attention_at[l] = true end

  self.time_embed = nn.Embedding.from_pretrained(blocks.sinusoidal_table(c.num_timesteps, c.time_dim))
  local w1 = widths[1]
  if c.stem == "velocity" then
    self.initial_velocity = blocks.InitialVelocity(c.in_channels, c.stem_width, w1, { act = c.velocity_act })
  else
    self.input_conv = nn.Conv2d(c.in_channels, w1 // 2, 1)
    self.initial_velocity = blocks.InitialVelocity(w1 // 2, c.stem_width, w1 // 2, { act = c.velocity_act })
  end

  self.down = nn.ModuleList()
  for i = 1, levels do
    local level = nn.Module()
    add_ode(self, level, widths[i])
    if attention_at[i] then add_attention(self, level, widths[i]) end
    level.conv = nn.Conv2d(widths[i], widths[i + 1] or c.mid_width, 1)
    self.down:append(level)
  end

  self.mid = nn.Module()
  add_ode(self, self.mid, c.mid_width)
  if c.attention_mid then add_attention(self, self.mid, c.mid_width) end

  -- stored by level (up[i] mirrors down[i]), run deepest first
  local up = {}
  for i = levels, 1, -1 do
    local level = nn.Module()
    level.conv = nn.Conv2d((widths[i + 1] or c.mid_width) + widths[i], widths[i], 1)
    add_ode(self, level, widths[i])
    if attention_at[i] then add_attention(self, level, widths[i]) end
    up[i] = level
  end
  self.up = nn.ModuleList(up)

  self.head = nn.Conv2d(w1, c.out_channels, 1)
end

-- The ODE block of `level` on the features h (the state cat(x, v)); returns the final state.
local function run_ode(self, level, h, temb)
  local n, w = h:size(1), h:size(2)
  if level.time_mlp then h = h + level.time_mlp(temb):reshape { n, w, 1, 1 } end
  local half = w // 2
  local v0 = h:narrow(2, half + 1, half)
  local out = level.ode:solve(h:narrow(2, 1, half), v0, temb)
  if self.config.form == "second_order" then out = cn.cat(out, 2) end
  if level.attention then
    local a = level.attention(out)
    out = self.config.attention_residual and out + a or a
  end
  return out
end

--- model(x, t) -> [N, out_channels, H, W]. x: [N, in_channels, H, W] (any H, W: the bilinear
-- resampling handles odd sizes); t: a tensor of N timesteps in 1..num_timesteps, or one number.
function ContinuousUNet:forward(x, t)
  local c = self.config
  util.check_input(x, 4, "ContinuousUNet", "[N, C, H, W]")
  local n = x:size(1)
  if x:size(2) ~= c.in_channels then
    error(string.format("ContinuousUNet: expected %d input channels, got shape %s", c.in_channels, util.shape_str(x)), 2)
  end
  local temb = self:time_embedding(t, n)

  local h
  if c.stem == "velocity" then
    h = self.initial_velocity(x)
  else
    local x0 = self.input_conv(x)
    h = cn.cat({ x0, self.initial_velocity(x0) }, 2)
  end
  local skips = {}
  for i, level in ipairs(self.down) do
    h = run_ode(self, level, h, temb)
    skips[i] = h
    h = blocks.conv_act(level.conv, h, c.act)
    h = cn.upsample(h, { scale_factor = 0.5, mode = "bilinear", align_corners = false })
  end
  h = run_ode(self, self.mid, h, temb)
  for i = #self.up, 1, -1 do
    local level, skip = self.up[i], skips[i]
    h = cn.upsample(h, { size = { skip:size(3), skip:size(4) }, mode = "bilinear", align_corners = false })
    h = blocks.conv_act(level.conv, cn.cat({ h, skip }, 2), c.act)
    h = run_ode(self, level, h, temb)
  end
  return self.head(h)
end

--- The time embedding [N, time_dim] of timesteps t (a tensor [N] in 1..num_timesteps, or a number
-- for all n): rows of the frozen table, row t being the authors' 0-based step t − 1.
function ContinuousUNet:time_embedding(t, n)
  local T = self.config.num_timesteps
  if type(t) == "number" then
    n = n or 1
    t = cn.full({ n }, t)
  elseif not cn.is_tensor(t) or (n and t:numel() ~= n) then
    error(string.format("ContinuousUNet: expected %s timesteps (a tensor [N] or a number), got %s", tostring(n or "N"),
      cn.is_tensor(t) and util.shape_str(t) or type(t)), 3)
  end
  t = t:reshape { t:numel() }
  local lo, hi = t:min():item(), t:max():item()
  if lo < 1 or hi > T or lo ~= math.floor(lo) or hi ~= math.floor(hi) then
    error(string.format("ContinuousUNet: timesteps must be integers in 1..%d, got values in [%g, %g]", T, lo, hi), 3)
  end
  return self.time_embed(t)
end

--- The ODE blocks in order of execution: a list of {name, level} (level.ode the SecondOrderODEBlock,
-- level.ode.accel its ConvSODEFunc), e.g. for tests and for timing each block.
function ContinuousUNet:ode_levels()
  local out = {}
  for i, level in ipairs(self.down) do out[#out + 1] = { "down." .. (i - 1), level } end
  out[#out + 1] = { "mid", self.mid }
  for i = #self.up, 1, -1 do out[#out + 1] = { "up." .. (i - 1), self.up[i] } end
  return out
end

--- model:penalties() -> {kinetic=, jacobian=, total=}: the sums over the ODE blocks of their
-- block:penalties() after the last forward (weighted by λ; total = 0 when none were computed: no
-- regularize, eval mode or no_grad), so `loss + model:penalties().total` always works.
function ContinuousUNet:penalties()
  local out = { total = 0 }
  for _, entry in ipairs(self:ode_levels()) do
    for k, v in pairs(entry[2].ode:penalties()) do
      out[k] = out[k] and out[k] + v or v
    end
  end
  return out
end

--- model:nfe() -> the function evaluations of the last forward, summed over the ODE blocks
-- (each block's stats.nfe); raises before any forward.
function ContinuousUNet:nfe()
  local n = 0
  for _, entry in ipairs(self:ode_levels()) do
    local stats = entry[2].ode.stats
    if not stats then error("ContinuousUNet:nfe: no forward has run (block " .. entry[1] .. " has no stats)", 2) end
    n = n + stats.nfe
  end
  return n
end

--- Changes the solver of every ODE block (and model.config): opts among method, steps, t0, t1, rtol,
-- atol, adjoint. Returns the model.
function ContinuousUNet:set_solver(opts)
  local c = self.config
  options.check(opts, {"method", "steps", "t0", "t1", "rtol", "atol", "adjoint"}, "set_solver")
  for k, v in pairs(opts) do
    if k == "method" and not CHOICES.method[v] then error("set_solver: unknown method '" .. tostring(v) .. "'", 2) end
    c[k] = v
  end
  for _, entry in ipairs(self:ode_levels()) do
    for k, v in pairs(opts) do entry[2].ode.options[k] = v end
  end
  return self
end

function ContinuousUNet:extra_repr()
  local c = self.config
  return string.format("widths=%s, mid_width=%d, form=%s, stem=%s, residual=%s, time=%s, attention=%s, solver=%s×%d",
    util.repr(c.widths), c.mid_width, c.form, c.stem, util.repr(c.residual),
    (c.time_scale_shift and "scale_shift" or "") .. (c.time_scale_shift and c.time_add and "+" or "") ..
    (c.time_add and "add" or "") .. ((c.time_scale_shift or c.time_add) and "" or "none"),
    util.repr(c.attention_levels), c.method, c.steps)
end

-- ---- presets -----------------------------------------------------------------------------------------

--- continuous_unet.presets[name]: option tables for ContinuousUNet (parameter counts in docs/cunet.md).
M.presets = {
  -- the authors' notebook network at 3×64², exactly: 8,811,875 parameters (256,000 of them the
  -- frozen table); the time embedding never reaches the network, as in their code
  notebook = { resolution = 64 },
  -- the paper's text where the code departs from it: the time embedding into every ODE function,
  -- GroupNorm, the textbook second-order form and x'(0) = g(x(0)), ReLU in g, attention + x
  paper = { resolution = 64, form = "second_order", stem = "position_velocity", velocity_act = "relu", norm = "group",
    time_scale_shift = true, attention_residual = true },
  -- 1×28² (MNIST, Fashion-MNIST): levels 28², 14², 7², the bottleneck at 3²; the paper's settings
  mnist = { in_channels = 1, resolution = 28, widths = { 32, 64, 128 }, mid_width = 192, stem_width = 16,
    time_dim = 64, attention_levels = { 3 }, form = "second_order", stem = "position_velocity",
    velocity_act = "relu", norm = "group", time_scale_shift = true, attention_residual = true },
  mnist_small = { in_channels = 1, resolution = 28, widths = { 16, 32, 48 }, mid_width = 80, stem_width = 8,
    time_dim = 32, attention_levels = { 3 }, attention_heads = 2, form = "second_order", stem = "position_velocity",
    velocity_act = "relu", norm = "group", time_scale_shift = true, attention_residual = true },
}

-- The matched presets: mnist_small's settings with the widths moved from the 28² level (where the
-- MACs are) to the bottleneck (where the parameters are), so that each matches unet's preset of the
-- same name within 4% in trainable parameters and in MACs (docs/cunet.md): mnist_028m 285,157
-- trainable, 49.7 M MACs; mnist_11m 1,115,597 and 185.2 M. The _augmented ones match the same U-Nets
-- in the authors' augmented form, whose second conv makes the whole derivative (--form augmented on
-- the others adds 22-24% of parameters): 277,125 and 47.7 M; 1,140,113 and 189.1 M.
for name, changes in pairs {
  mnist_028m = { widths = { 8, 32, 48 }, mid_width = 96 },
  mnist_11m = { widths = { 24, 48, 96 }, mid_width = 208, time_dim = 48 },
  mnist_028m_augmented = { widths = { 8, 24, 48 }, mid_width = 80, form = "augmented" },
  mnist_11m_augmented = { widths = { 16, 48, 96 }, mid_width = 176, time_dim = 48, form = "augmented" },
} do
  local preset = {}
  for k, v in pairs(M.presets.mnist_small) do preset[k] = v end
  for k, v in pairs(changes) do preset[k] = v end
  M.presets[name] = preset
end

--- The preset's options with overrides applied on top (a new table; models/presets.lua).
function M.preset_config(name, overrides)
  return presets.config(M.presets, name, overrides, "continuous_unet")
end

--- continuous_unet.from_preset(name [, overrides]) -> a ContinuousUNet; overrides replace preset
-- options (e.g. {ablation = "no_attention", adjoint = true}).
function M.from_preset(name, overrides)
  return ContinuousUNet(M.preset_config(name, overrides))
end

--- continuous_unet.from_config(config) -> a ContinuousUNet (what checkpoint.build_model calls).
function M.from_config(config)
  return ContinuousUNet(config)
end

return M
