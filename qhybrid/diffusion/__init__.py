"""Latent diffusion: the noise scheduler (a plain object), the one sampling loop every target uses,
and the loaded pipeline (denoiser + scheduler + VAE)."""

from qhybrid.diffusion.pipeline import LatentDiffusion
from qhybrid.diffusion.sampling import denoise_step, sample_latents
from qhybrid.diffusion.scheduler import NoiseScheduler, SchedulerConfig

__all__ = ["LatentDiffusion", "NoiseScheduler", "SchedulerConfig", "denoise_step", "sample_latents"]
