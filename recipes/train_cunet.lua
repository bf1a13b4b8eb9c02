-- recipes/train_cunet.lua — train the continuous U-Net (lua/cunet/models/continuous_unet.lua) as a DDPM
-- denoiser: the cU-Net of the MNIST comparison in docs/results.md (the paper's Table 1 protocol on
-- MNIST), with the optimizer, batch and learning-rate warmup of the U-Net it is compared with, so both
-- see the same images in the same order. The Appendix C ablations (recipes/ablation_*.lua) train with
-- these settings too. Every setting below stays an option on the command line (--help shows them);
-- the rest are train.defaults' (lua/cunet/train.lua). See docs/cunet.md.
--
--   ./cunet recipes/train_cunet.lua                                  -- MNIST, the mnist_small preset
--   ./cunet recipes/train_cunet.lua --adjoint --method dopri5        -- adjoint gradients, adaptive solver
--   ./cunet recipes/train_cunet.lua --method dopri5 --ode-rtol 1e-2 --ode-atol 1e-2 --kinetic 0.01 --jacobian 0.01
--                                                                    -- adaptive blocks with RNODE (docs/ode.md)
--   ./cunet recipes/train_cunet.lua --ablation no_attention          -- what the ablation recipes do

require("cunet.train_recipe").main(arg, {
  name = "train_cunet",
  description = "Train the continuous U-Net (second-order neural-ODE blocks) as a DDPM denoiser;\n"
    .. "checkpoints, loss.csv and sample grids go to --out.",
  model = "cunet.models.continuous_unet", continuous = true,
  -- no `ablation`: the full model (--ablation none), and a resume keeps a checkpoint's own ablation
  data = "mnist", preset = "mnist_small",
  steps = 6000,
  batch = 64, lr = 1e-3, warmup = 100, ema = 0.999,
  checkpoint_every = 500, sample_every = 1000,
  out = "runs/cunet",
})
