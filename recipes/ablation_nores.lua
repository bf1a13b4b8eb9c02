-- recipes/ablation_nores.lua — Appendix C ablation: the cU-Net without residual ODE functions (resblocks),
-- trained like recipes/train_cunet.lua for 3000 steps (lua/cunet/train_recipe.lua: ablation_recipes).
--
--   cunet recipes/ablation_nores.lua                 -- MNIST, mnist_small, into runs/ablation_nores

require("cunet.train_recipe").ablation(arg, "ablation_nores")
