-- recipes/train_cunet.lua — train the continuous U-Net (lua/cunet/models/continuous_unet.lua) as a DDPM
-- denoiser. The defaults are those of the MNIST comparison in docs/results.md (same optimizer, batch and
-- learning rate as the U-Net it is compared with: train_recipe.cunet_defaults). See docs/cunet.md.
--
--   cunet recipes/train_cunet.lua                                  -- MNIST, the mnist_small preset
--   cunet recipes/train_cunet.lua --adjoint --method dopri5        -- adjoint gradients, adaptive solver
--   cunet recipes/train_cunet.lua --ablation no_attention          -- what the ablation recipes do

local recipe = require "cunet.train_recipe"
recipe.main(arg, recipe.cunet_spec {
  name = "train_cunet",
  description = "Train the continuous U-Net (second-order neural-ODE blocks) as a DDPM denoiser;\n"
    .. "checkpoints, loss.csv and sample grids go to --out.",
})
