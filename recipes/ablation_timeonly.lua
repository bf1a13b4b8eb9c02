-- recipes/ablation_timeonly.lua — the paper's Appendix C ablation: the cU-Net with the diffusion time
-- entering only through an embedding added to each block's input (Appendix C's time-embedding study,
-- not a row of Table 5; our measurements: docs/results.md, "Appendix C"). The model: the mnist_small
-- cU-Net with the time through an MLP added to each ODE block's input instead of scale/shift inside
-- the ODE functions (continuous_unet.ablations.time_embedding_only).
-- The training: recipes/train_cunet.lua's settings (the cU-Net comparison's optimizer, batch and
-- periods) for half its steps; tests/lua/test_cunet_recipes.lua checks that the ablations differ from
-- it only in the ablation, the steps and the output directory. Every setting below stays an option
-- on the command line (--help shows them); the rest are train.defaults' (lua/cunet/train.lua).
--
--   ./cunet recipes/ablation_timeonly.lua                   -- MNIST, 3000 steps, into runs/ablation_timeonly
--   ./cunet recipes/ablation_timeonly.lua --steps 1000      -- what docs/results.md measured

require("cunet.train_recipe").main(arg, {
  name = "ablation_timeonly",
  description = "Appendix C ablation: the cU-Net with the diffusion time entering only through an embedding added to each block's input;\ncheckpoints, loss.csv and sample grids go to --out.",
  model = "cunet.models.continuous_unet", continuous = true,
  ablation = "time_embedding_only",
  data = "mnist", preset = "mnist_small",
  steps = 3000,                                 -- recipes/train_cunet.lua: 6000
  batch = 64, lr = 1e-3, warmup = 100, ema = 0.999,
  checkpoint_every = 500, sample_every = 1000,
  out = "runs/ablation_timeonly",
})
