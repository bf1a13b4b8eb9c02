-- recipes/train_dncnn.lua — train the DnCNN baseline (lua/cunet/models/dncnn.lua) of the diffusion
-- paper's Table 4 on noisy copies of the study's images, at the denoising protocol's noise levels;
-- resumable exactly like the diffusion recipes (lua/cunet/train_recipe.lua, train.run with the
-- denoising loss of lua/cunet/denoise.lua). See docs/denoising.md.
--
--   ./cunet recipes/train_dncnn.lua                                  -- MNIST, t:50,150,400 of the sigmoid schedule
--   ./cunet recipes/train_dncnn.lua --noise sigma:0.05,0.1,0.15,0.2 --out runs/dncnn_sigma
--   ./cunet recipes/train_dncnn.lua --steps 14000 --resume runs/dncnn/checkpoint.safetensors

require("cunet.train_recipe").main(arg, {
  name = "train_dncnn",
  description = "Train DnCNN (20 layers, 64 features, BatchNorm, residual) to denoise images with Gaussian noise at\n"
    .. "the given levels (each image draws one); checkpoints and loss.csv go to --out. The authors' settings:\n"
    .. "Adam 1e-3, batch 64, 50 epochs (MNIST's 9,000 training digits: about 7,000 steps).",
  model = "cunet.models.dncnn", preset = "dncnn", out = "runs/dncnn",
  steps = 7000, batch = 64, lr = 1e-3, warmup = 0, ema = 0, clip = 0, checkpoint_every = 1000,
  denoiser = {noise = "t:50,150,400"},
})
