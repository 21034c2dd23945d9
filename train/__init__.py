"""cyclegan_deploy.train: reference-compatible generators/discriminators, data, CycleGAN and pix2pix training."""
