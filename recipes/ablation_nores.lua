-- recipes/ablation_nores.lua — the paper's Appendix C ablation: the cU-Net without residual ODE
-- functions, "resblocks" (Table 5's row "cU-Net w/o resblocks"; our measurements: docs/results.md,
-- "Appendix C"). The model: the mnist_small cU-Net with the plain ODE functions, the time entering
-- through an MLP added to each ODE block's input (continuous_unet.ablations.no_resblocks).
-- The training: recipes/train_cunet.lua's settings (the cU-Net comparison's optimizer, batch and
-- periods) for half its steps; tests/lua/test_cunet_recipes.lua checks that the ablations differ from
-- it only in the ablation, the steps and the output directory. Every setting below stays an option
-- on the command line (--help shows them); the rest are train.defaults' (lua/cunet/train.lua).
--
--   ./cunet recipes/ablation_nores.lua                   -- MNIST, 3000 steps, into runs/ablation_nores
--   ./cunet recipes/ablation_nores.lua --steps 1000      -- what docs/results.md measured

require("cunet.train_recipe").main(arg, {
  name = "ablation_nores",
  description = "Appendix C ablation: the cU-Net without residual ODE functions (resblocks);\ncheckpoints, loss.csv and sample grids go to --out.",
  model = "cunet.models.continuous_unet", continuous = true,
  ablation = "no_resblocks",
  data = "mnist", preset = "mnist_small",
  steps = 3000,                                 -- recipes/train_cunet.lua: 6000
  batch = 64, lr = 1e-3, warmup = 100, ema = 0.999,
  checkpoint_every = 500, sample_every = 1000,
  out = "runs/ablation_nores",
})
