-- examples/schedule_logsnr_linear.lua — a noise schedule in a file, for the training recipes'
-- --schedule option (docs/training.md): the log signal-to-noise ratio falls linearly in t,
--   lambda(u) = 10 − 20·u,   alpha_bar(u) = sigmoid(lambda(u)),   u = t / T,
-- and beta_t = 1 − alpha_bar(t/T) / alpha_bar((t−1)/T). The file returns beta(t, T); a file may
-- also return a list of betas or a diffusion.schedule. The checkpoint stores the β values, so
-- recipes/sample.lua and recipes/fid_vs_steps.lua need nothing but the checkpoint.
--
--   cunet recipes/train_unet.lua --schedule examples/schedule_logsnr_linear.lua --T 500
--   cunet recipes/sample.lua --ckpt runs/unet/checkpoint.safetensors

local LOGSNR_START, LOGSNR_END = 10, -10

local function alpha_bar(u)
  return 1 / (1 + math.exp(-(LOGSNR_START + (LOGSNR_END - LOGSNR_START) * u)))
end

return function(t, T)
  return 1 - alpha_bar(t / T) / alpha_bar((t - 1) / T)
end
