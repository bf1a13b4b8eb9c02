-- recipes/train_unet.lua — train a DDPM denoiser (lua/cunet/train.lua) on MNIST, Fashion-MNIST or a
-- folder of PNGs; resumable. See docs/training.md; the options live in lua/cunet/train_recipe.lua.
--
--   cunet recipes/train_unet.lua                                   -- the small MNIST preset
--   cunet recipes/train_unet.lua --data folder:celeba --size 64 --preset 64 --out runs/celeba
--   cunet recipes/train_unet.lua --steps 20000 --resume runs/unet/checkpoint.safetensors

require("cunet.train_recipe").main(arg, {
  name = "train_unet",
  description = "Train a DDPM U-Net; checkpoints, loss.csv and sample grids go to --out.",
})
