"""Noise schedules and DDPM / DDIM stepping: a plain object, not an ``nn.Module``.

Follows the split of diffusers' schedulers: the scheduler owns the noise schedule and the update
rule, the denoiser only predicts. ``prediction_type`` is ``epsilon`` (the noise) or
``v_prediction`` (v = sqrt(a) eps - sqrt(1 - a) x0, Salimans & Ho 2022). Notation: ``a_t`` is
the cumulative product of (1 - beta) up to step t ("alpha bar").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from qhybrid.config import Config
from qhybrid.errors import InputError

BETA_SCHEDULES = ("linear", "cosine")
PREDICTION_TYPES = ("epsilon", "v_prediction")


@dataclass(frozen=True)
class SchedulerConfig(Config):
    num_train_timesteps: int = 1000
    beta_schedule: str = "cosine"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    prediction_type: str = "epsilon"

    def __post_init__(self):
        if self.num_train_timesteps < 2:
            raise ValueError(f"SchedulerConfig.num_train_timesteps must be >= 2, got {self.num_train_timesteps}")
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"SchedulerConfig.beta_schedule: unknown {self.beta_schedule!r}; allowed: {', '.join(BETA_SCHEDULES)}")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"SchedulerConfig.prediction_type: unknown {self.prediction_type!r}; allowed: {', '.join(PREDICTION_TYPES)}")
        if not 0 < self.beta_start < self.beta_end < 1:
            raise ValueError("SchedulerConfig needs 0 < beta_start < beta_end < 1")


def _cosine_betas(steps: int, s: float = 0.008) -> torch.Tensor:
    """Nichol & Dhariwal (2021): a_t = cos^2(((t/T) + s) / (1 + s) * pi/2), betas capped at 0.999."""
    t = torch.arange(steps + 1, dtype=torch.float64) / steps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    abar = f / f[0]
    return (1 - abar[1:] / abar[:-1]).clamp(max=0.999)


class NoiseScheduler:
    """Forward noising, training targets, and the DDPM and DDIM reverse steps."""

    def __init__(self, config: SchedulerConfig | None = None):
        self.config = config or SchedulerConfig()
        T = self.config.num_train_timesteps
        if self.config.beta_schedule == "linear":
            betas = torch.linspace(self.config.beta_start, self.config.beta_end, T, dtype=torch.float64)
        else:
            betas = _cosine_betas(T)
        self.betas = betas
        self.alphas = 1 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        if not (torch.all(self.alphas_cumprod > 0) and torch.all(torch.isfinite(self.alphas_cumprod))):
            raise ValueError(
                f"this schedule drives the signal level (alphas_cumprod) to 0 before step {T} "
                f"(beta_end={self.config.beta_end}, num_train_timesteps={T}); lower beta_end or the number of "
                "timesteps")

    @property
    def num_train_timesteps(self) -> int:
        return self.config.num_train_timesteps

    def _abar(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.long).cpu()  # the tables live on the CPU
        if t.min() < 0 or t.max() >= self.num_train_timesteps:
            raise ValueError(f"timesteps must lie in [0, {self.num_train_timesteps - 1}]")
        a = self.alphas_cumprod[t].to(like.device, like.dtype)
        return a.view(-1, *([1] * (like.dim() - 1))) if a.dim() else a

    # -- training ---------------------------------------------------------------------------
    def add_noise(self, z0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """z_t = sqrt(a_t) z0 + sqrt(1 - a_t) eps."""
        a = self._abar(t, z0)
        return a.sqrt() * z0 + (1 - a).sqrt() * eps

    def velocity(self, z0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self._abar(t, z0)
        return a.sqrt() * eps - (1 - a).sqrt() * z0

    def target(self, z0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the denoiser learns to predict."""
        return eps if self.config.prediction_type == "epsilon" else self.velocity(z0, eps, t)

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """Signal-to-noise ratio a_t / (1 - a_t) at timesteps ``t`` (float64, on the CPU)."""
        a = self._abar(t, self.alphas_cumprod)  # range-checked, as for the forward process
        return a / (1 - a)

    def min_snr_weight(self, t: torch.Tensor, gamma: float) -> torch.Tensor:
        """Min-SNR-gamma loss weights (Hang et al. 2023) for this prediction type: the x0 loss
        weighted by min(SNR, gamma), expressed on the predicted quantity. The plain MSE on epsilon
        is the x0 loss weighted by SNR and on v by SNR + 1, so the weight is min(SNR, gamma) / SNR
        (epsilon) or min(SNR, gamma) / (SNR + 1) (v). Why: the low-noise timesteps, whose SNR is
        huge, otherwise dominate the gradient with detail the sampler barely uses, and the steps
        compete; clamping at gamma (5 in the paper) trains faster to a better FID."""
        snr = self.snr(t)
        clipped = snr.clamp(max=gamma)
        weight = clipped / snr if self.config.prediction_type == "epsilon" else clipped / (snr + 1)
        return weight.float()

    def predict_z0_eps(self, model_output: torch.Tensor, z_t: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """Turn a model output into (predicted z0, predicted noise)."""
        a = self._abar(t, z_t)
        if self.config.prediction_type == "epsilon":
            eps = model_output
            z0 = (z_t - (1 - a).sqrt() * eps) / a.sqrt()
        else:
            z0 = a.sqrt() * z_t - (1 - a).sqrt() * model_output
            eps = (1 - a).sqrt() * z_t + a.sqrt() * model_output
        return z0, eps

    # -- sampling ---------------------------------------------------------------------------
    def timesteps(self, num_inference_steps: int) -> list[int]:
        """Evenly spaced descending timesteps ('leading' spacing, as diffusers' DDIM default)."""
        T = self.num_train_timesteps
        if not 1 <= num_inference_steps <= T:
            raise InputError(f"the number of sampling steps must be between 1 and {T} (the model's training "
                             f"timesteps), got {num_inference_steps}")
        ratio = T // num_inference_steps
        return [int(k * ratio) for k in range(num_inference_steps)][::-1]

    def posterior_variance(self, t: int) -> float:
        """Variance of q(z_{t-1} | z_t, z0): beta_t (1 - a_{t-1}) / (1 - a_t)."""
        a_t = float(self.alphas_cumprod[t])
        a_prev = float(self.alphas_cumprod[t - 1]) if t > 0 else 1.0
        return float(self.betas[t]) * (1 - a_prev) / (1 - a_t)

    def ddpm_step(self, model_output: torch.Tensor, t: int, z_t: torch.Tensor,
                  generator: torch.Generator | None = None) -> torch.Tensor:
        """One ancestral DDPM step z_t -> z_{t-1} (Ho et al. 2020, posterior mean and variance)."""
        z0, _ = self.predict_z0_eps(model_output, z_t, torch.tensor(t))
        a_t = self.alphas_cumprod[t]
        a_prev = self.alphas_cumprod[t - 1] if t > 0 else torch.tensor(1.0, dtype=torch.float64)
        beta = self.betas[t]
        coef_z0 = (a_prev.sqrt() * beta / (1 - a_t)).to(z_t.dtype)
        coef_zt = ((1 - beta).sqrt() * (1 - a_prev) / (1 - a_t)).to(z_t.dtype)
        mean = coef_z0 * z0 + coef_zt * z_t
        if t == 0:
            return mean
        noise = torch.randn(z_t.shape, generator=generator, dtype=z_t.dtype).to(z_t.device)
        return mean + math.sqrt(self.posterior_variance(t)) * noise

    def ddim_step(self, model_output: torch.Tensor, t: int, t_prev: int, z_t: torch.Tensor,
                  eta: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """One DDIM step z_t -> z_{t_prev} (Song et al. 2021); eta=0 is deterministic, eta=1 ~ DDPM."""
        z0, eps = self.predict_z0_eps(model_output, z_t, torch.tensor(t))
        a_t = float(self.alphas_cumprod[t])
        a_prev = float(self.alphas_cumprod[t_prev]) if t_prev >= 0 else 1.0
        sigma = eta * math.sqrt((1 - a_prev) / (1 - a_t)) * math.sqrt(max(0.0, 1 - a_t / a_prev))
        direction = math.sqrt(max(0.0, 1 - a_prev - sigma**2)) * eps
        z_prev = math.sqrt(a_prev) * z0 + direction
        if sigma > 0:
            z_prev = z_prev + sigma * torch.randn(z_t.shape, generator=generator, dtype=z_t.dtype).to(z_t.device)
        return z_prev
