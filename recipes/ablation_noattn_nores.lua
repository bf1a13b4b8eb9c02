-- recipes/ablation_noattn_nores.lua — Appendix C ablation: the cU-Net without attention and without resblocks,
-- trained like recipes/train_cunet.lua for 3000 steps (lua/cunet/train_recipe.lua: ablation_recipes).
--
--   cunet recipes/ablation_noattn_nores.lua                 -- MNIST, mnist_small, into runs/ablation_noattn_nores

require("cunet.train_recipe").ablation(arg, "ablation_noattn_nores")
