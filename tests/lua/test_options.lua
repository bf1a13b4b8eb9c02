-- test_options.lua — one option policy everywhere (issue 11): every function that takes an options
-- table refuses a misspelt key, naming the function, the key and the known keys; every recipe
-- refuses a misspelt flag and an out-of-range number before loading anything, in one line; and the
-- numerical guards: NaN/inf weights are refused by load_state_dict (the one place weights load),
-- samplers stop at the first step that gives NaN or inf.
--
-- The typo table is checked for completeness against the sources: every public Lua function with an
-- `opts` parameter and every cnl_check_keys call in the binding must have a row, so a new entry point
-- without one fails here.

local lu = require "luaunit"
local helpers = require "helpers"
local cn = require "cunet"
local core = require "cunet.core"
local nn = cn.nn
local optim = cn.optim
local diffusion = require "cunet.diffusion"
local train = require "cunet.train"
local data = require "cunet.data"
local image = require "cunet.image"
local metrics = require "cunet.metrics"
local fid = require "cunet.fid"
local efficiency = require "cunet.efficiency"
local plot = require "cunet.plot"
local checkpoint = require "cunet.checkpoint"
local progress = require "cunet.progress"
local cli = require "cunet.cli"
local unet = require "cunet.models.unet"
local unet_blocks = require "cunet.models.unet_blocks"
local continuous_unet = require "cunet.models.continuous_unet"
local cunet_blocks = require "cunet.models.continuous_unet_blocks"
local classifier = require "cunet.models.classifier"
local lpips = require "cunet.models.lpips"
local inception = require "cunet.models.inception"
local denoise = require "cunet.denoise"
local fs = require "cunet.fs"

local EXE = os.getenv("CUNET_EXE") or "./cunet"
local shell_quote, exists = fs.shell_quote, fs.exists

-- Runs a command; returns its exit code and stdout + stderr.
local function run(command)
  local p = io.popen(command .. " 2>&1")
  local out = p:read("a")
  local ok, _, code = p:close()
  return ok and 0 or code, out
end

-- ---- fixtures -------------------------------------------------------------------------------------

local function x4() return cn.randn{2, 4, 8, 8} end
local function schedule10() return diffusion.schedule("linear", {T = 10}) end
local function zero_model(x) return cn.zeros_like(x) end
local function leaf() return cn.randn{3}:requires_grad(true) end

local TINY_SOURCE = [[
local cn = require "cunet"
local nn = cn.nn
local M = {}
local Tiny = nn.class("OptionsTiny", nn.Module)
function Tiny:__init(config)
  nn.Module.__init(self)
  self.config = config
  self.conv = nn.Conv2d(config.in_channels, config.in_channels, 3, {padding = 1})
end
function Tiny:forward(x, t) return self.conv(x) end
function M.from_config(config) return Tiny(config) end
return M
]]
package.preload["cunet_options_tiny"] = function() return assert(load(TINY_SOURCE, "=cunet_options_tiny"))() end
local tiny = require "cunet_options_tiny"

-- ---- the typo table -------------------------------------------------------------------------------
-- Each row: who (the function name the message must carry), typo (the misspelt key), call(opts)
-- (calls the entry point with opts), covers (the source entry points the row stands for:
-- "file:function" for Lua, "c:name" for a cnl_check_keys in the binding).

local ROWS = {
  -- engine binding (engine/lua/*.c)
  {who = "conv2d", typo = "strid", covers = {"c:conv2d"},
    call = function(o) cn.conv2d(x4(), cn.randn{4, 4, 3, 3}, o) end},
  {who = "conv_transpose2d", typo = "outptu_padding", covers = {"c:conv_transpose2d"},
    call = function(o) cn.conv_transpose2d(x4(), cn.randn{4, 4, 3, 3}, o) end},
  {who = "upsample", typo = "mdoe", base = {size = 16}, covers = {"c:upsample"},
    call = function(o) cn.upsample(x4(), o) end},
  {who = "upsample", typo = "scale", covers = {},
    call = function(o) cn.interpolate(x4(), o) end},
  {who = "avg_pool2d", typo = "strdie", covers = {"c:avg_pool2d"},
    call = function(o) cn.avg_pool2d(x4(), 2, o) end},
  {who = "max_pool2d", typo = "dilatoin", covers = {"c:max_pool2d"},
    call = function(o) cn.max_pool2d(x4(), 2, o) end},
  {who = "pad", typo = "vaule", covers = {"c:pad"},
    call = function(o) cn.pad(x4(), {1, 1, 1, 1}, o) end},
  {who = "batch_norm", typo = "trainig", covers = {"c:batch_norm"},
    call = function(o) cn.batch_norm(x4(), cn.zeros{4}, cn.ones{4}, nil, nil, o) end},
  {who = "gelu", typo = "approximat", covers = {"c:gelu"},
    call = function(o) x4():gelu(o) end},
  {who = "scaled_dot_product_attention", typo = "maks", covers = {"c:scaled_dot_product_attention"},
    call = function(o) local q = cn.randn{1, 2, 4, 8}; cn.scaled_dot_product_attention(q, q, q, o) end},
  {who = "mse_loss", typo = "reducton", covers = {"c:mse_loss"},
    call = function(o) cn.mse_loss(cn.randn{3}, cn.randn{3}, o) end},
  {who = "l1_loss", typo = "reducton", covers = {"c:l1_loss"},
    call = function(o) cn.l1_loss(cn.randn{3}, cn.randn{3}, o) end},
  {who = "cross_entropy", typo = "label_smothing", covers = {"c:cross_entropy"},
    call = function(o) cn.cross_entropy(cn.randn{2, 3}, cn.tensor{1, 2}, o) end},
  {who = "odeint", typo = "adjoint", covers = {"c:odeint"}, -- the engine's solver knows no adjoint: cn.odeint's
    call = function(o) core.odeint(function(_, z) return -z end, cn.ones{2}, {0, 1}, o) end},
  {who = "grad", typo = "retian_graph", covers = {"c:grad"},
    call = function(o) local x = leaf(); cn.autograd.grad((x * x):sum(), x, nil, o) end},
  {who = "backward", typo = "create_grpah", covers = {"c:backward"},
    call = function(o) local x = leaf(); (x * x):sum():backward(nil, o) end},
  {who = "set_rng_state", typo = "countr", base = {seed = 1, counter = 0}, covers = {"c:set_rng_state"},
    call = function(o) local saved = cn.rng_state(); local ok, err = pcall(cn.set_rng_state, o); cn.set_rng_state(saved); if not ok then error(err, 0) end end},
  {who = "totable", typo = "flt", covers = {"c:totable"},
    call = function(o) cn.randn{2}:totable(o) end},
  {who = "bm3d", typo = "ht_blocksize", covers = {"c:bm3d"},
    call = function(o) cn.bm3d(cn.rand{16, 16}, 0.1, o) end},
  {who = "save", typo = "dtyp", covers = {"c:save"}, -- refused before any file is written
    call = function(o) cn.save("/nonexistent-dir/x.safetensors", {w = cn.zeros{1}}, nil, o) end},

  -- nn modules and functions (lua/cunet/nn)
  {who = "Conv2d", typo = "strde", covers = {"nn/conv.lua:Conv2d:__init"},
    call = function(o) nn.Conv2d(3, 4, 3, o) end},
  {who = "ConvTranspose2d", typo = "output_pading", covers = {"nn/conv.lua:ConvTranspose2d:__init"},
    call = function(o) nn.ConvTranspose2d(3, 4, 3, o) end},
  {who = "Linear", typo = "bais", covers = {"nn/linear.lua:Linear:__init"},
    call = function(o) nn.Linear(3, 4, o) end},
  {who = "Flatten", typo = "start", covers = {"nn/linear.lua:Flatten:__init"},
    call = function(o) nn.Flatten(o) end},
  {who = "Softplus", typo = "betta", covers = {"nn/activation.lua:Softplus:__init"},
    call = function(o) nn.Softplus(o) end},
  {who = "GELU", typo = "approx", covers = {"nn/activation.lua:GELU:__init"},
    call = function(o) nn.GELU(o) end},
  {who = "Embedding.from_pretrained", typo = "frozen", covers = {"nn/embedding.lua:Embedding.from_pretrained"},
    call = function(o) nn.Embedding.from_pretrained(cn.randn{5, 3}, o) end},
  {who = "SinusoidalTimeEmbedding", typo = "max_period_", covers = {"nn/embedding.lua:SinusoidalTimeEmbedding:__init"},
    call = function(o) nn.SinusoidalTimeEmbedding(8, o) end},
  {who = "Upsample", typo = "scale", covers = {"nn/resample.lua:Upsample:__init"},
    call = function(o) nn.Upsample(o) end},
  {who = "Downsample", typo = "use_conv", covers = {"nn/resample.lua:Downsample:__init"},
    call = function(o) nn.Downsample(4, o) end},
  {who = "MaxPool2d", typo = "strid", covers = {"nn/resample.lua:cls:__init"},
    call = function(o) nn.MaxPool2d(2, o) end},
  {who = "AvgPool2d", typo = "strid", covers = {},
    call = function(o) nn.AvgPool2d(2, o) end},
  {who = "GroupNorm", typo = "epsilon", covers = {"nn/norm.lua:GroupNorm:__init"},
    call = function(o) nn.GroupNorm(2, 4, o) end},
  {who = "BatchNorm2d", typo = "momentun", covers = {"nn/norm.lua:BatchNorm2d:__init"},
    call = function(o) nn.BatchNorm2d(4, o) end},
  {who = "InstanceNorm2d", typo = "affin", covers = {"nn/norm.lua:InstanceNorm2d:__init"},
    call = function(o) nn.InstanceNorm2d(4, o) end},
  {who = "LayerNorm", typo = "elementwise", covers = {"nn/norm.lua:LayerNorm:__init"},
    call = function(o) nn.LayerNorm(4, o) end},
  {who = "SelfAttention2d", typo = "head", covers = {"nn/attention.lua:SelfAttention2d:__init"},
    call = function(o) nn.SelfAttention2d(4, o) end},
  {who = "ODEBlock", typo = "stepz", covers = {"nn/ode.lua:ODEBlock:__init"},
    call = function(o) nn.ODEBlock(function(_, z) return z end, o) end},
  {who = "SecondOrderODEBlock", typo = "metod", covers = {"nn/ode.lua:SecondOrderODEBlock:__init"},
    call = function(o) nn.SecondOrderODEBlock(function(_, x) return x end, nil, o) end},
  {who = "load_state_dict", typo = "strcit", covers = {},
    call = function(o) local m = nn.Linear(2, 2); m:load_state_dict(m:state_dict(), o) end},
  {who = "kaiming_uniform_", typo = "nonlinearty", covers = {"nn/weight_init.lua:init.kaiming_uniform_"},
    call = function(o) nn.init.kaiming_uniform_(cn.empty{4, 3}, o) end},
  {who = "kaiming_normal_", typo = "mod", covers = {"nn/weight_init.lua:init.kaiming_normal_"},
    call = function(o) nn.init.kaiming_normal_(cn.empty{4, 3}, o) end},

  -- models
  {who = "UNet", typo = "full_attn", covers = {"models/unet.lua:UNet:__init"},
    call = function(o) unet.UNet(o) end},
  {who = "UNet", typo = "dropuot", covers = {},
    call = function(o) unet.from_preset("mnist_small", o) end},
  {who = "ContinuousUNet", typo = "colour", covers = {"models/continuous_unet.lua:ContinuousUNet:__init"},
    call = function(o) continuous_unet.ContinuousUNet(o) end},
  {who = "ContinuousUNet", typo = "ablaton", covers = {},
    call = function(o) continuous_unet.from_preset("mnist_small", o) end},
  {who = "set_solver", typo = "stpes", covers = {"models/continuous_unet.lua:ContinuousUNet:set_solver"},
    call = function(o) continuous_unet.from_preset("mnist_small"):set_solver(o) end},
  {who = "Classifier", typo = "widht", covers = {"models/classifier.lua:Classifier:__init"},
    call = function(o) classifier.Classifier(o) end},
  {who = "classifier.train", typo = "epoch", covers = {"models/classifier.lua:M.train"},
    call = function(o) classifier.train(classifier.Classifier(), {images = cn.rand{4, 1, 28, 28}, labels = cn.ones{4}}, o) end},
  {who = "ResnetBlock", typo = "temb", covers = {"models/unet_blocks.lua:ResnetBlock:__init"},
    call = function(o) unet_blocks.ResnetBlock(8, 8, o) end},
  {who = "AttnBlock", typo = "group", covers = {"models/unet_blocks.lua:AttnBlock:__init"},
    call = function(o) unet_blocks.AttnBlock(8, o) end},
  {who = "Attention", typo = "head", covers = {"models/unet_blocks.lua:Attention:__init"},
    call = function(o) unet_blocks.Attention(8, o) end},
  {who = "LinearAttention", typo = "dim_heads", covers = {"models/unet_blocks.lua:LinearAttention:__init"},
    call = function(o) unet_blocks.LinearAttention(8, o) end},
  {who = "Downsample", typo = "with_conv_", covers = {"models/unet_blocks.lua:Downsample:__init"},
    call = function(o) unet_blocks.Downsample(8, o) end},
  {who = "Upsample", typo = "with_conv_", covers = {"models/unet_blocks.lua:Upsample:__init"},
    call = function(o) unet_blocks.Upsample(8, o) end},
  {who = "ConvSODEFunc", typo = "activaton", covers = {"models/continuous_unet_blocks.lua:ConvSODEFunc:__init"},
    call = function(o) cunet_blocks.ConvSODEFunc(8, o) end},
  {who = "InitialVelocity", typo = "activaton", covers = {"models/continuous_unet_blocks.lua:InitialVelocity:__init"},
    call = function(o) cunet_blocks.InitialVelocity(1, 8, 8, o) end},

  -- optim
  {who = "SGD", typo = "momentun", covers = {"optim/init.lua:optim.SGD"},
    call = function(o) optim.SGD({leaf()}, o) end},
  {who = "Adam", typo = "learning_rate", covers = {"optim/init.lua:optim.Adam"},
    call = function(o) optim.Adam({leaf()}, o) end},
  {who = "AdamW", typo = "weightdecay", covers = {"optim/init.lua:optim.AdamW"},
    call = function(o) optim.AdamW({leaf()}, o) end},
  {who = "EMA", typo = "beta", covers = {"optim/ema.lua:(anonymous)"},
    call = function(o) optim.EMA({leaf()}, o) end},
  {who = "schedule.cosine", typo = "warm", covers = {"optim/schedule.lua:schedule.cosine"},
    call = function(o) optim.schedule.cosine(1, 5, o) end},

  -- ode
  {who = "odeint", typo = "metod", covers = {"ode.lua:M.odeint"},
    call = function(o) cn.odeint(function(_, z) return -z end, cn.ones{2}, {0, 1}, o) end},
  {who = "trace_estimate", typo = "sample", covers = {"ode.lua:M.trace_estimate"},
    call = function(o) local z = leaf(); cn.ode.trace_estimate(z * 2, z, o) end},

  -- diffusion
  {who = "schedule", typo = "beta_strat", covers = {"diffusion.lua:M.schedule"},
    call = function(o) diffusion.schedule("linear", o) end},
  {who = "schedule", typo = "tau_", covers = {},
    call = function(o) diffusion.schedule("sigmoid", o) end},
  {who = "schedule", typo = "T_", covers = {},
    call = function(o) diffusion.schedule(function() return 0.01 end, o) end},
  {who = "betas.linear", typo = "beta_strat", covers = {"diffusion.lua:M.betas.linear"},
    call = function(o) diffusion.betas.linear(10, o) end},
  {who = "betas.scaled_linear", typo = "T", covers = {"diffusion.lua:M.betas.scaled_linear"},
    call = function(o) diffusion.betas.scaled_linear(10, o) end},
  {who = "betas.cosine", typo = "max_bet", covers = {"diffusion.lua:M.betas.cosine"},
    call = function(o) diffusion.betas.cosine(10, o) end},
  {who = "betas.sigmoid", typo = "temperature", covers = {"diffusion.lua:M.betas.sigmoid"},
    call = function(o) diffusion.betas.sigmoid(10, o) end},
  {who = "loss", typo = "predicton", covers = {"diffusion.lua:M.loss"},
    call = function(o) diffusion.loss(schedule10(), zero_model, cn.randn{2, 1, 4, 4}, o) end},
  {who = "sample_ddpm", typo = "varaince", covers = {"diffusion.lua:M.sample_ddpm"},
    call = function(o) diffusion.sample_ddpm(schedule10(), zero_model, {1, 1, 4, 4}, o) end},
  {who = "sample_ddim", typo = "step", covers = {"diffusion.lua:M.sample_ddim"},
    call = function(o) diffusion.sample_ddim(schedule10(), zero_model, {1, 1, 4, 4}, o) end},
  {who = "sample_dpmpp_2m", typo = "eta", covers = {"diffusion.lua:M.sample_dpmpp_2m"},
    call = function(o) diffusion.sample_dpmpp_2m(schedule10(), zero_model, {1, 1, 4, 4}, o) end},
  {who = "sample_ode", typo = "tol", covers = {"diffusion.lua:M.sample_ode"},
    call = function(o) diffusion.sample_ode(schedule10(), zero_model, {1, 1, 4, 4}, o) end},

  -- train
  {who = "train", typo = "step", covers = {"train.lua:M.run"},
    call = function(o) train.run(o) end},
  {who = "train.dataset", typo = "limt", covers = {"train.lua:M.dataset"},
    call = function(o) train.dataset("mnist", o) end},
  {who = "train.generate", typo = "samplr", covers = {"train.lua:M.generate"},
    call = function(o) train.generate(tiny.from_config{in_channels = 1}, schedule10(), {1, 1, 4, 4}, o) end},
  {who = "train.sample", typo = "steps_", covers = {"train.lua:M.sample"},
    call = function(o) train.sample(tiny.from_config{in_channels = 1}, schedule10(), {1, 1, 4, 4}, o) end},

  -- data
  {who = "load_idx_pair", typo = "hnt", covers = {"data.lua:M.load_idx_pair"},
    call = function(o) data.load_idx_pair("/nonexistent/a", "/nonexistent/b", o) end},
  {who = "fashion_mnist", typo = "rot", covers = {"data.lua:M.fashion_mnist"},
    call = function(o) data.fashion_mnist("train", o) end},
  {who = "mnist", typo = "rot", covers = {"data.lua:M.mnist"},
    call = function(o) data.mnist("train", o) end},
  {who = "image_folder", typo = "limt", covers = {"data.lua:M.image_folder"},
    call = function(o) data.image_folder("/nonexistent", o) end},
  {who = "random_hflip", typo = "prob", covers = {"data.lua:M.random_hflip"},
    call = function(o) data.random_hflip(o) end},
  {who = "data.load", typo = "splt", covers = {"data.lua:M.load"},
    call = function(o) data.load("mnist", o) end},
  {who = "data.load", typo = "root", covers = {}, -- a folder has no root: size, channels, limit
    call = function(o) data.load("folder:/nonexistent", o) end},
  {who = "DataLoader", typo = "batchsize", covers = {"data.lua:M.DataLoader"},
    call = function(o) data.DataLoader({images = cn.zeros{4, 1}}, o) end},

  -- image
  {who = "make_grid", typo = "nrows", covers = {"image.lua:M.make_grid"},
    call = function(o) image.make_grid(cn.rand{2, 1, 4, 4}, o) end},
  {who = "save_grid", typo = "nrows", covers = {"image.lua:M.save_grid"},
    call = function(o) image.save_grid(cn.rand{2, 1, 4, 4}, "/nonexistent/grid.png", o) end},
  {who = "save_strips", typo = "padd", covers = {"image.lua:M.save_strips"},
    call = function(o) image.save_strips({cn.rand{2, 1, 4, 4}}, "/nonexistent/strip.png", o) end},

  -- metrics, fid, efficiency, plot
  {who = "ssim", typo = "datarange", covers = {"metrics.lua:M.ssim"},
    call = function(o) local a = cn.rand{1, 1, 16, 16}; metrics.ssim(a, a, o) end},
  {who = "ms_ssim", typo = "scale", covers = {"metrics.lua:M.ms_ssim"},
    call = function(o) local a = cn.rand{1, 1, 16, 16}; metrics.ms_ssim(a, a, o) end},
  {who = "ms_ssim", typo = "wieghts", covers = {"metrics.lua:M.ms_ssim_weights"},
    call = function(o) metrics.ms_ssim_weights(176, 176, o) end},
  {who = "psnr", typo = "range", covers = {"metrics.lua:M.psnr"},
    call = function(o) local a = cn.rand{1, 1, 4, 4}; metrics.psnr(a, a, o) end},
  {who = "kid", typo = "subset", covers = {"metrics.lua:M.kid"},
    call = function(o) local a = cn.randn{8, 2}; metrics.kid(a, a, o) end},
  {who = "study.new", typo = "step", covers = {"study.lua:M.new"},
    base = {exe = "./cunet", steps = 2},
    call = function(o)
      local study = require "cunet.study"
      study.new(setmetatable({FULL_STEPS = 2, CHECKPOINT_EVERY = 1}, {__index = study.Driver}), "/nonexistent/study", o)
    end},
  {who = "study.score_cells", typo = "item", covers = {"study.lua:Driver:score_cells"},
    base = {what = "scan", items = function() return {} end, label = tostring},
    call = function(o)
      local study = require "cunet.study"
      local cls = setmetatable({FULL_STEPS = 2, CHECKPOINT_EVERY = 1}, {__index = study.Driver})
      cls.__index = cls
      local d = study.new(cls, "/nonexistent/study", {exe = "./cunet"})
      d:score_cells({}, o)
    end},
  {who = "study_mnist.new", typo = "plot", covers = {"recipes/study_mnist.lua:M.new"},
    call = function(o) dofile("recipes/study_mnist.lua").new("/nonexistent/study", o) end},
  {who = "ode_blocks_study.new", typo = "ode_steps", covers = {"recipes/ode_blocks_study.lua:M.new"},
    call = function(o) dofile("recipes/ode_blocks_study.lua").new("/nonexistent/ode_blocks", o) end},
  {who = "fid.feature_net", typo = "ckpt", covers = {"fid.lua:M.feature_net"},
    call = function(o) fid.feature_net("mnist", o) end},
  {who = "fid.features", typo = "batch_size", covers = {"fid.lua:M.features"},
    call = function(o) fid.features(classifier.Classifier(), cn.rand{2, 1, 28, 28}, o) end},
  {who = "fid.real_stats", typo = "splits", covers = {"fid.lua:M.real_stats"},
    call = function(o) fid.real_stats("mnist", o) end},
  {who = "fid.score", typo = "splits", covers = {"fid.lua:M.score"},
    call = function(o) fid.score(cn.zeros{2, 1, 28, 28}, "mnist", o) end},
  {who = "lpips.new", typo = "network", covers = {"models/lpips.lua:M.new"},
    call = function(o) lpips.new(o) end},
  {who = "inception.new", typo = "weight", covers = {"models/inception.lua:M.new"},
    call = function(o) inception.new(o) end},
  {who = "peak_memory", typo = "training", covers = {"efficiency.lua:M.peak_memory"},
    call = function(o) efficiency.peak_memory(nn.Linear(2, 2), {cn.randn{1, 2}}, o) end},
  {who = "time_forward", typo = "repeat", covers = {"efficiency.lua:M.time_forward"},
    call = function(o) efficiency.time_forward(nn.Linear(2, 2), {cn.randn{1, 2}}, o) end},
  {who = "efficiency.profile", typo = "batches", covers = {"efficiency.lua:M.profile"},
    call = function(o) efficiency.profile(nn.Linear(2, 2), function(b) return {cn.randn{b, 2}} end, o) end},
  {who = "plot.lines", typo = "colour", base = {series = {{name = "a", x = {1}, y = {1}}}}, covers = {"plot.lua:M.lines"},
    call = function(o) plot.lines("/nonexistent/plot.png", o) end},

  -- the denoising protocol
  {who = "denoise.noisy", typo = "sed", covers = {"denoise.lua:M.noisy"},
    call = function(o) denoise.noisy(cn.rand{1, 1, 12, 12}, denoise.levels("t:5", schedule10())[1], schedule10(), o) end},
  {who = "denoise.reverse", typo = "use_x_0", covers = {"denoise.lua:M.reverse"},
    call = function(o)
      local s, clean = schedule10(), cn.rand{1, 1, 12, 12}
      denoise.reverse(zero_model, s, denoise.noisy(clean, denoise.levels("t:2", s)[1], s), clean, o)
    end},
  {who = "denoise.baseline", typo = "per_imag", covers = {"denoise.lua:M.baseline"},
    call = function(o)
      local s, clean = schedule10(), cn.rand{1, 1, 12, 12}
      denoise.baseline(function(y) return y end, denoise.noisy(clean, denoise.levels("t:2", s)[1], s), clean, o)
    end},

  -- checkpoints, progress, gradcheck, profile, printing, cli
  {who = "checkpoint.load", typo = "allow_nan", covers = {"checkpoint.lua:M.load"},
    call = function(o) checkpoint.load("/nonexistent.safetensors", o) end},
  {who = "checkpoint.restore", typo = "optimiser", covers = {"checkpoint.lua:M.restore"},
    call = function(o) checkpoint.restore({path = "x", config = {}, model = {}}, o) end},
  {who = "checkpoint.build_model", typo = "modul", covers = {"checkpoint.lua:M.build_model"},
    call = function(o) checkpoint.build_model({path = "x", config = {}, model = {}}, o) end},
  {who = "lua_text", typo = "abbrev", covers = {"checkpoint.lua:M.lua_text"},
    call = function(o) checkpoint.lua_text({1, 2}, o) end},
  {who = "progress.new", typo = "lable", covers = {"progress.lua:M.new"},
    call = function(o) progress.new(10, o) end},
  {who = "gradcheck", typo = "tol", covers = {"gradcheck.lua:gradcheck"},
    call = function(o) cn.gradcheck(function(x) return x * 2 end, {cn.randn{2}}, o) end},
  {who = "gradgradcheck", typo = "tol", covers = {"gradcheck.lua:gradgradcheck"},
    call = function(o) cn.gradgradcheck(function(x) return x * x end, {cn.randn{2}}, o) end},
  {who = "profile", typo = "sortby", covers = {"profile.lua:M.profile"},
    call = function(o) cn.profile(function() end, o) end},
  {who = "set_printoptions", typo = "precison", covers = {"tensor_print.lua:M.set_printoptions"},
    call = function(o) cn.set_printoptions(o) end},
  {who = "train_recipe", typo = "ablaton", base = {name = "x"}, covers = {},
    call = function(o) require("cunet.train_recipe").options(o) end},
  {who = "cli.parse", typo = "option", base = {options = {}}, covers = {},
    call = function(o) cli.parse({}, o) end},
}

-- Source entry points without a row of their own, and why.
local NOT_OPTION_TABLES = {
  ["options.lua:M.check"] = "the checker itself (tested below through every row)",
  ["options.lua:M.merge"] = "the checker itself",
  ["nn/util.lua:util.options"] = "the nn modules' name for options.merge",
  ["recipes/study_mnist.lua:Study:init"] = "study.new's hook, called with the keys it has checked (the study_mnist.new row)",
}

-- The public functions of lua/cunet and recipes/ with a parameter named opts, as "file:name": named functions that
-- are not local, and a module that is one function ("return function"); other anonymous functions are
-- callbacks and hooks, not entry points.
local function lua_entry_points()
  local out = {}
  -- the library, and the recipes' own modules (a recipe that returns M for its tests: recipes/<name>)
  local p = io.popen("((cd lua/cunet && find . -name '*.lua'); ls recipes/*.lua) | LC_ALL=C sort")
  for file in p:lines() do
    file = file:gsub("^%./", "")
    local path = file:match("^recipes/") and file or "lua/cunet/" .. file
    local n = 0
    for line in io.lines(path) do
      n = n + 1
      local name, params = line:match("function%s*([%w_.:]*)%s*%(([^)]*)%)")
      local entry = name and (name ~= "" or line:match("^return function"))
      if entry and not line:match("local%s+function") and not line:match("^%s*%-%-") then
        for param in params:gmatch("[%w_]+") do
          if param == "opts" then out[#out + 1] = file .. ":" .. (name ~= "" and name or "(anonymous)") end
        end
      end
    end
  end
  p:close()
  return out
end

-- The names the binding's cnl_check_keys calls report, as "c:name".
local function c_entry_points()
  local out = {}
  local p = io.popen("cat engine/lua/*.c")
  local source = p:read("a")
  p:close()
  for call in source:gmatch("cnl_check_keys%(L,[^;]-%);") do
    local fname = call:match("^cnl_check_keys%(L,[^,]+,[^,]+,(.*)%);$")
    for name in fname:gmatch('"([%w_]+)"') do out[#out + 1] = "c:" .. name end
  end
  return out
end

local function merged(base, typo)
  local o = {}
  for k, v in pairs(base or {}) do o[k] = v end
  o[typo] = 1
  return o
end

-- The rows build models (megabytes of tensors) and drop them: collect them here, so a later suite
-- that measures cn.memory().live does not see them freed in the middle of its measurement.
local function collect() collectgarbage("collect") end

TestTypoTable = {}
TestTypoTable.tearDown = collect

function TestTypoTable:testEveryRowRefusesItsTypo()
  lu.assertTrue(#ROWS >= 100, "rows: " .. #ROWS)
  for i, row in ipairs(ROWS) do
    local ok, err = pcall(row.call, merged(row.base, row.typo))
    local label = string.format("row %d (%s, %s)", i, row.who, row.typo)
    lu.assertFalse(ok, label .. " accepted the typo")
    err = tostring(err)
    lu.assertStrContains(err, "unknown option '" .. row.typo .. "'", false, label .. ": " .. err)
    lu.assertStrContains(err, row.who, false, label .. ": " .. err)
    lu.assertStrContains(err, "(known: ", false, label .. ": " .. err)
  end
end

-- The rows' known-key lists are right: the same calls without the typo do not complain about options.
function TestTypoTable:testKnownKeysAreAccepted()
  local checks = {
    function() cn.batch_norm(x4(), cn.zeros{4}, cn.ones{4}, nil, nil, {training = true, momentum = 0.1, eps = 1e-5}) end,
    function() cn.conv_transpose2d(x4(), cn.randn{4, 4, 3, 3}, {stride = 2, padding = 1, output_padding = 1, dilation = 1, groups = 1}) end,
    function() cn.odeint(function(_, z) return -z end, cn.ones{2}, {0, 1}, {method = "rk4", steps = 2, max_steps = 10}) end,
    function() cn.odeint(function(_, z) return -z end, cn.ones{2}, {0, 1}, {method = "euler", steps = 2, adjoint = false, params = {}}) end,
    function() diffusion.sample_ddim(schedule10(), zero_model, {1, 1, 4, 4}, {steps = 3, eta = 0, spacing = "trailing", seed = 1}) end,
    function() diffusion.schedule("sigmoid", {T = 10, start = -3, ["end"] = 3, tau = 1, max_beta = 0.999}) end,
    function() image.make_grid(cn.rand{2, 1, 4, 4}, {nrow = 2, padding = 1, pad_value = 0, range = {0, 1}}) end,
    function() local x = leaf(); cn.autograd.grad((x * x):sum(), x, nil, {retain_graph = false, allow_unused = false, create_graph = false}) end,
    function() dofile("recipes/study_mnist.lua").new("/nonexistent/study", {exe = "./cunet", steps = 2, limit = 0, n = 2, dry = true,
      deadline = cn.time() + 60, plots = "/nonexistent/plots"}) end,
    function() dofile("recipes/ode_blocks_study.lua").new("/nonexistent/ode_blocks", {exe = "./cunet", steps = 2, limit = 0, n = 2,
      dry = true, deadline = cn.time() + 60}) end,
  }
  for i, check in ipairs(checks) do
    local ok, err = pcall(check)
    lu.assertTrue(ok, "check " .. i .. ": " .. tostring(err))
  end
end

function TestTypoTable:testEveryLuaEntryPointHasARow()
  local covered = {}
  for _, row in ipairs(ROWS) do
    for _, c in ipairs(row.covers) do covered[c] = true end
  end
  local found = lua_entry_points()
  lu.assertTrue(#found >= 60, "entry points found: " .. #found)
  local in_recipes = 0
  for _, entry in ipairs(found) do if entry:match("^recipes/") then in_recipes = in_recipes + 1 end end
  lu.assertTrue(in_recipes >= 2, "recipe entry points found: " .. in_recipes)
  for _, entry in ipairs(found) do
    lu.assertTrue(covered[entry] or NOT_OPTION_TABLES[entry] ~= nil, "no typo-table row for " .. entry)
  end
end

function TestTypoTable:testEveryBindingOptionTableHasARow()
  local covered = {}
  for _, row in ipairs(ROWS) do
    for _, c in ipairs(row.covers) do covered[c] = true end
  end
  local found = c_entry_points()
  lu.assertTrue(#found >= 17, "binding option tables found: " .. #found)
  for _, entry in ipairs(found) do lu.assertTrue(covered[entry], "no typo-table row for the binding's " .. entry) end
end

-- The recipes' command lines: every recipe refuses a misspelt flag, in one line, exit status 2.
function TestTypoTable:testEveryRecipeRefusesAMisspeltFlag()
  local p = io.popen("ls recipes/*.lua")
  local count = 0
  for script in p:lines() do
    count = count + 1
    local code, out = run(string.format("%s %s --stepz 3", EXE, script))
    lu.assertEquals(code, 2, script .. ": " .. out)
    lu.assertStrContains(out, "unknown option --stepz", false, script)
    lu.assertNotStrContains(out, "traceback", false, script)
    lu.assertEquals(select(2, out:gsub("\n", "")), 1, script .. " printed more than one line: " .. out)
  end
  p:close()
  lu.assertTrue(count >= 12, "recipes found: " .. count)
end

-- ---- the silent cases of the issue, each now an error ----------------------------------------------

TestSilentCases = {}
TestSilentCases.tearDown = collect

function TestSilentCases:testOdeintMethodTypo()
  local f = function(_, z) return -z end
  lu.assertErrorMsgContains("odeint: unknown option 'metod'", cn.odeint, f, cn.ones{2}, {0, 1}, {metod = "euler"})
  -- the right spelling is taken: one Euler step of z' = -z from 1 gives 0
  local sol = cn.odeint(f, cn.ones{2}, {0, 1}, {method = "euler"})
  lu.assertEquals(sol[2]:totable(), {0, 0})
end

function TestSilentCases:testSampleDdimStepTypo()
  local calls = 0
  local model = function(x) calls = calls + 1; return cn.zeros_like(x) end
  lu.assertErrorMsgContains("sample_ddim: unknown option 'step'", diffusion.sample_ddim, schedule10(), model, {1, 1, 2, 2}, {step = 3})
  lu.assertEquals(calls, 0)
  diffusion.sample_ddim(schedule10(), model, {1, 1, 2, 2}, {steps = 3})
  lu.assertEquals(calls, 3)
end

function TestSilentCases:testLossPredictionTypo()
  lu.assertErrorMsgContains("loss: unknown option 'predicton'", diffusion.loss, schedule10(), zero_model,
    cn.randn{2, 1, 4, 4}, {predicton = "v"})
end

function TestSilentCases:testTrainGenerateAndDatasetTypos()
  local model = tiny.from_config{in_channels = 1}
  lu.assertErrorMsgContains("train.generate: unknown option 'samplr'", train.generate, model, schedule10(), {1, 1, 4, 4},
    {samplr = "ddpm"})
  lu.assertErrorMsgContains("train.dataset: unknown option 'limt'", train.dataset, "mnist", {limt = 10})
end

function TestSilentCases:testSaveGridTypo()
  lu.assertErrorMsgContains("save_grid: unknown option 'nrows'", image.save_grid, cn.rand{4, 1, 2, 2}, "/nonexistent/g.png", {nrows = 2})
end

function TestSilentCases:testScheduleTypo()
  lu.assertErrorMsgContains("schedule: unknown option 'beta_strat'", diffusion.schedule, "linear", {T = 10, beta_strat = 0.1})
  -- options put where the betas go are not taken for an empty table of betas
  lu.assertErrorMsgContains("holds the key 'beta_strat' (options go in argument #2)", diffusion.schedule, {beta_strat = 0.1})
  lu.assertErrorMsgContains("(known: T, beta_end, beta_start)", diffusion.schedule, "linear", {beta_strat = 0.1})
end

function TestSilentCases:testBatchNormTrainingTypo()
  local x = cn.randn{8, 3, 4, 4} + 5
  local mean, var = cn.zeros{3}, cn.ones{3}
  lu.assertErrorMsgContains("batch_norm: unknown option 'trainig' (known: training, momentum, eps)", cn.batch_norm, x, mean, var,
    nil, nil, {trainig = true})
  lu.assertEquals(mean:totable(), {0, 0, 0}) -- nothing ran
  cn.batch_norm(x, mean, var, nil, nil, {training = true})
  lu.assertTrue(mean:min():item() > 0.3, "running mean updated in training mode")
  lu.assertErrorMsgContains("option 'training' must be a boolean", cn.batch_norm, x, mean, var, nil, nil, {training = 1})
end

function TestSilentCases:testCreateGraphRefusedByOpsWithoutADifferentiableBackward()
  local x = leaf()
  lu.assertErrorMsgContains("create_graph is not supported through 'cross_entropy'", cn.autograd.grad,
    cn.cross_entropy(x:view{1, 3}, cn.tensor{2}), x,
    nil, {create_graph = true})
end

-- ---- numerical guards -------------------------------------------------------------------------------

TestNumericalGuards = {}
TestNumericalGuards.tearDown = collect

function TestNumericalGuards:testCountNonfinite()
  lu.assertEquals(cn.count_nonfinite(cn.randn{100}), 0)
  lu.assertEquals(cn.count_nonfinite(cn.tensor{1, 0 / 0, math.huge, -math.huge, 2, 0 / 0}), 4)
  -- finite values whose sum overflows float32 are no false alarm
  lu.assertEquals(cn.count_nonfinite(cn.tensor{3e38, 3e38, 3e38}), 0)
  local w = leaf()
  lu.assertEquals(cn.count_nonfinite(w), 0)
  lu.assertNil(w.grad_fn) -- no graph recorded
end

function TestNumericalGuards:testLoadStateDictRefusesNonFinite()
  local m = nn.Linear(3, 2)
  local before = m.weight:clone()
  local sd = m:state_dict()
  local w = sd.weight:clone()
  w:view{-1}[2] = 0 / 0
  w:view{-1}[5] = math.huge
  local ok, err = pcall(m.load_state_dict, m, {weight = w, bias = sd.bias:clone():fill_(1)})
  lu.assertFalse(ok)
  lu.assertStrContains(err, 'non-finite values in "weight": 2 of 6 values are NaN or infinite')
  lu.assertStrContains(err, "allow_nonfinite = true")
  lu.assertNotStrContains(err, '"bias"')
  lu.assertEquals(m.weight:totable(), before:totable()) -- nothing copied
  lu.assertEquals(m.bias:totable()[1] == 1, false)
  m:load_state_dict({weight = w, bias = sd.bias}, {allow_nonfinite = true})
  lu.assertEquals(cn.count_nonfinite(m.weight), 2)
  -- strict as a boolean or in the table
  m:load_state_dict({weight = before}, {strict = false})
  lu.assertEquals(m.weight:totable(), before:totable())
end

-- A model whose output turns NaN at one timestep.
local function poisoned_model(bad_t)
  return function(x, t)
    local out = cn.zeros_like(x)
    if t[1]:item() == bad_t then out:view{-1}[1] = 0 / 0 end
    return out
  end
end

function TestNumericalGuards:testSamplersStopAtTheFirstNonFiniteStep()
  local sched = schedule10()
  -- DDIM over 5 steps (t = 9, 7, 5, 3, 1 under "uniform"... whichever: the third step's t is poisoned)
  local ts = diffusion.ddim_timesteps(sched, 5)
  local ok, err = pcall(diffusion.sample_ddim, sched, poisoned_model(ts[3]), {2, 1, 3, 3}, {steps = 5})
  lu.assertFalse(ok)
  lu.assertStrContains(err, string.format("sample_ddim: 1 of 18 sample values are NaN or infinite after step 3 of 5 (t = %d)", ts[3]))
  ok, err = pcall(diffusion.sample_ddpm, sched, poisoned_model(4), {1, 1, 2, 2})
  lu.assertFalse(ok)
  lu.assertStrContains(err, "sample_ddpm: 1 of 4 sample values are NaN or infinite after step 7 of 10 (t = 4)")
  -- the opt-out lets them through
  local x = diffusion.sample_ddim(sched, poisoned_model(ts[3]), {2, 1, 3, 3}, {steps = 5, check_finite = false})
  lu.assertEquals(cn.count_nonfinite(x), 1)
  -- train.generate (what sample.lua runs) too
  lu.assertErrorMsgContains("NaN or infinite", train.generate,
    setmetatable({training = false, eval = function() end, train = function() end}, {__call = function(_, xt, t) return poisoned_model(10)(xt, t) end}),
    sched, {1, 1, 2, 2}, {sampler = "ddpm"})
end

-- ---- recipes: numbers checked before anything loads, errors in one line ---------------------------------

TestRecipeGuards = {}

function TestRecipeGuards:setUp()
  self.dir = helpers.temp_dir()
  local f = assert(io.open(self.dir .. "/cunet_options_tiny.lua", "w"))
  f:write(TINY_SOURCE)
  f:close()
end

function TestRecipeGuards:tearDown()
  helpers.remove_dir(self.dir)
  collect()
end

local function run_recipe(dir, script, args)
  return run(string.format("LUA_PATH=%s %s %s %s", shell_quote(dir .. "/?.lua;;"), EXE, script, args))
end

local function assert_one_line_refusal(code, out, status, text)
  lu.assertEquals(code, status, out)
  lu.assertStrContains(out, text)
  lu.assertNotStrContains(out, "traceback")
  lu.assertEquals(select(2, out:gsub("\n", "")), 1, "more than one line: " .. out)
end

function TestRecipeGuards:testNumbersAreCheckedFirst()
  -- each would have loaded a data set or a checkpoint first (none exists here)
  local cases = {
    {"recipes/train_cunet.lua", "--ode-steps -1 --data /nonexistent", "--ode-steps must be an integer >= 0, got -1"},
    {"recipes/sample.lua", "--steps -3 --ckpt /nonexistent", "--steps must be an integer >= 0, got -3"},
    {"recipes/sample.lua", "--n 0 --ckpt /nonexistent", "--n must be an integer >= 1, got 0"},
    {"recipes/sample.lua", "--sampler ddmp --ckpt /nonexistent", "--sampler must be one of ddim, ddpm, dpmpp_2m, ode, got 'ddmp'"},
    {"recipes/fid_vs_steps.lua", "--batch 0 --ckpt /nonexistent", "--batch must be an integer >= 1, got 0"},
    {"recipes/fid_vs_steps.lua", "--n 1 --ckpt /nonexistent", "--n must be an integer >= 2, got 1"},
    {"recipes/train_unet.lua", "--batch 2.5 --data /nonexistent", "--batch must be an integer >= 1, got 2.5"},
    {"recipes/train_unet.lua", "--ema 1.5 --data /nonexistent", "--ema must be a number in 0..1, got 1.5"},
    {"recipes/train_classifier.lua", "--epochs 0", "--epochs must be an integer >= 1, got 0"},
    {"recipes/efficiency.lua", "--repeats -1", "--repeats must be an integer >= 1, got -1"},
    {"recipes/plot_losses.lua", "--window 0", "--window must be an integer >= 1, got 0"},
  }
  for _, c in ipairs(cases) do
    local code, out = run_recipe(self.dir, c[1], c[2])
    assert_one_line_refusal(code, out, 2, c[3])
  end
end

function TestRecipeGuards:testUserErrorsPrintOneLine()
  local code, out = run_recipe(self.dir, "recipes/sample.lua", "--ckpt " .. shell_quote(self.dir .. "/nope.safetensors"))
  assert_one_line_refusal(code, out, 1, "no checkpoint at")
  -- CUNET_TRACEBACK=1 brings the traceback back
  code, out = run("CUNET_TRACEBACK=1 " .. EXE .. " recipes/sample.lua --ckpt " .. shell_quote(self.dir .. "/nope.safetensors"))
  lu.assertEquals(code, 1)
  lu.assertStrContains(out, "stack traceback:")
end

-- A checkpoint with one NaN weight: refused by name (it sampled an all-black grid and exited 0).
function TestRecipeGuards:testNanCheckpointIsRefused()
  local out_dir = self.dir .. "/run"
  cn.seed(5)
  local model = tiny.from_config{in_channels = 1}
  train.run{model = model, model_module = "cunet_options_tiny", dataset = cn.rand{4, 1, 4, 4} * 2 - 1, steps = 1,
    batch_size = 2, T = 10, out = out_dir, progress = "none"}
  local path = out_dir .. "/checkpoint.safetensors"
  local tensors, meta = cn.load(path)
  for _, name in ipairs{"model.conv.weight", "ema.conv.weight"} do
    if tensors[name] then tensors[name]:view{-1}[3] = 0 / 0 end
  end
  cn.save(path, tensors, meta)
  local ok, err = pcall(checkpoint.build_model, path)
  lu.assertFalse(ok)
  lu.assertStrContains(err, path)
  lu.assertStrContains(err, 'non-finite values in "conv.weight": 1 of 9 values are NaN or infinite')
  local built = checkpoint.build_model(path, {allow_nonfinite = true})
  lu.assertEquals(cn.count_nonfinite(built.conv.weight), 1)
  -- through the recipe: no grid, a non-zero status, the tensor named, no traceback
  local grid = self.dir .. "/grid.png"
  local code, out = run_recipe(self.dir, "recipes/sample.lua", string.format("--ckpt %s --n 2 --steps 2 --out %s",
    shell_quote(path), shell_quote(grid)))
  lu.assertEquals(code, 1, out)
  lu.assertStrContains(out, '"conv.weight": 1 of 9 values are NaN or infinite')
  lu.assertNotStrContains(out, "traceback")
  lu.assertFalse(exists(grid))
  -- loading the training state refuses it too, naming the checkpoint; the EMA shadows as well
  ok, err = pcall(checkpoint.load, path, {model = tiny.from_config{in_channels = 1}})
  lu.assertFalse(ok)
  lu.assertStrContains(err, "conv.weight")
  local clean = tiny.from_config{in_channels = 1}
  local ema = optim.EMA(clean)
  ok, err = pcall(checkpoint.load, path, {model = clean, ema = ema, allow_nonfinite = false})
  lu.assertFalse(ok)
  checkpoint.load(path, {model = clean, ema = ema, allow_nonfinite = true})
  tensors["model.conv.weight"]:view{-1}[3] = 0.5
  cn.save(path, tensors, meta)
  ok, err = pcall(checkpoint.load, path, {model = tiny.from_config{in_channels = 1}, ema = optim.EMA(clean)})
  lu.assertFalse(ok)
  lu.assertStrContains(err, "the EMA tensor 'ema.conv.weight' holds 1 NaN or infinite values of 9")
end
