"""Training: one loop with callbacks (resume, EMA, schedule, progress, interruption) and a recipe
per model (VAE, denoiser, gradability validator, feature encoder). Nothing outside workflows/ and
cli/ imports it: inference and evaluation never depend on training."""
