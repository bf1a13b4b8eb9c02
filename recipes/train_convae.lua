-- recipes/train_convae.lua — train the convolutional autoencoder baseline (lua/cunet/models/convae.lua)
-- of the diffusion paper's Table 4 on noisy copies of the study's images, at the denoising
-- protocol's noise levels; resumable exactly like the diffusion recipes (lua/cunet/train_recipe.lua).
-- See docs/denoising.md.
--
--   ./cunet recipes/train_convae.lua                                 -- MNIST, t:50,150,400 of the sigmoid schedule
--   ./cunet recipes/train_convae.lua --noise sigma:0.1 --out runs/convae_sigma   -- the authors' single sigma

require("cunet.train_recipe").main(arg, {
  name = "train_convae",
  description = "Train the conv autoencoder (4 stride-2 convs 64..512, 4 transposed convs) to denoise images with\n"
    .. "Gaussian noise at the given levels (each image draws one); checkpoints and loss.csv go to --out. The\n"
    .. "authors' settings: Adam 1e-3, batch 64, 10 epochs (MNIST's 9,000 training digits: about 1,400 steps), sigma 0.1.",
  model = "cunet.models.convae", preset = "convae", out = "runs/convae",
  steps = 1400, batch = 64, lr = 1e-3, warmup = 0, ema = 0, clip = 0, checkpoint_every = 500,
  denoiser = {noise = "t:50,150,400"},
})
