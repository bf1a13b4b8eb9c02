-- recipes/ablation_noattn.lua — Appendix C ablation: the cU-Net without attention,
-- trained like recipes/train_cunet.lua for 3000 steps (lua/cunet/train_recipe.lua: ablation_recipes).
--
--   cunet recipes/ablation_noattn.lua                 -- MNIST, mnist_small, into runs/ablation_noattn

require("cunet.train_recipe").ablation(arg, "ablation_noattn")
