"""Latent diffusion: the noise scheduler (a plain object), the one sampling loop every target uses,
and the loaded pipeline (denoiser + scheduler + VAE)."""
