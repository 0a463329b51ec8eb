"""Training: one loop with callbacks (resume, EMA, schedule, progress, interruption) and a recipe
per model (VAE, denoiser, gradability validator, feature encoder). Nothing outside workflows/ and
cli/ imports it: inference and evaluation never depend on training."""

from qhybrid.training.diffusion import DiffusionTrainConfig, train_diffusion
from qhybrid.training.loop import Callback, Trainer, TrainingError
from qhybrid.training.vae import VAETrainConfig, train_vae

__all__ = ["Callback", "DiffusionTrainConfig", "Trainer", "TrainingError", "VAETrainConfig", "train_diffusion", "train_vae"]
