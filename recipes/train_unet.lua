-- recipes/train_unet.lua — train a DDPM denoiser (lua/cunet/train.lua) on MNIST, Fashion-MNIST or a
-- folder of PNGs; resumable. By default the small MNIST U-Net (unet.presets.mnist_small) with the
-- settings below; every one stays an option on the command line (--help shows them), the rest are
-- train.defaults' (lua/cunet/train.lua). The options live in
-- lua/cunet/train_recipe.lua; see docs/training.md.
--
--   ./cunet recipes/train_unet.lua                                   -- the small MNIST preset
--   ./cunet recipes/train_unet.lua --data folder:celeba --size 64 --preset 64 --out runs/celeba
--   ./cunet recipes/train_unet.lua --steps 20000 --resume runs/unet/checkpoint.safetensors

require("cunet.train_recipe").main(arg, {
  name = "train_unet",
  description = "Train a DDPM U-Net; checkpoints, loss.csv and sample grids go to --out.",
  model = "cunet.models.unet",
  data = "mnist", preset = "mnist_small",
  steps = 5000,
  warmup = 200, ema = 0.9995,
  checkpoint_every = 1000, sample_every = 1000,
  out = "runs/unet",
})
