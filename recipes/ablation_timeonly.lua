-- recipes/ablation_timeonly.lua — Appendix C ablation: the cU-Net with the diffusion time entering only through an embedding added to each block's input,
-- trained like recipes/train_cunet.lua for 3000 steps (lua/cunet/train_recipe.lua: ablation_recipes).
--
--   cunet recipes/ablation_timeonly.lua                 -- MNIST, mnist_small, into runs/ablation_timeonly

require("cunet.train_recipe").ablation(arg, "ablation_timeonly")
