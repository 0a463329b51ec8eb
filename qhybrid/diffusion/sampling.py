"""Sampling from a trained latent diffusion model on any execution target.

DDIM (deterministic with ``eta=0``, default) or ancestral DDPM over ``steps`` timesteps, all chains
in one batch, then the VAE decodes. For a given seed the result on the ``ideal`` target is
bit-for-bit repeatable. The quantum block of a hybrid model is moved to ``target`` first.

There is one reverse step, :func:`denoise_step`, and one loop over it, :func:`denoise`. Both
:func:`sample_latents` and the IBM Quantum job runner (:mod:`qhybrid.workflows.jobs`, which takes
one step per runtime job and saves the latents in between) call :func:`denoise_step`, so the two
cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm import tqdm

from qhybrid.devices import module_device
from qhybrid.errors import InputError

SAMPLERS = ("ddim", "ddpm")


def sampling_timesteps(scheduler, steps: int, sampler: str = "ddim") -> list[int]:
    """The descending timesteps a sampler visits: ``steps`` evenly spaced ones for DDIM, every
    training timestep for DDPM (an ancestral step only goes from t to t - 1)."""
    if sampler not in SAMPLERS:
        raise InputError(f"unknown sampler {sampler!r}; allowed: {', '.join(SAMPLERS)}")
    return scheduler.timesteps(steps) if sampler == "ddim" else list(range(scheduler.num_train_timesteps))[::-1]


@torch.no_grad()
def predict(model, z: torch.Tensor, t: int) -> torch.Tensor:
    """The denoiser's output for latents ``z`` (every chain) at timestep ``t``."""
    return model(z, torch.full((len(z),), t, dtype=torch.long, device=z.device))


@torch.no_grad()
def denoise_step(model, scheduler, z: torch.Tensor, k: int, timesteps: list[int], sampler: str = "ddim",
                 eta: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Step ``k`` of the reverse process: latents at ``timesteps[k]`` -> latents at the next one
    (``-1``, the data, after the last). Draws from ``generator`` only for DDPM and DDIM with
    ``eta > 0``; deterministic DDIM draws nothing, which is what lets a job run stop after any
    step and resume from the saved latents."""
    t = timesteps[k]
    pred = predict(model, z, t)
    if sampler == "ddim":
        t_prev = timesteps[k + 1] if k + 1 < len(timesteps) else -1
        return scheduler.ddim_step(pred, t, t_prev, z, eta=eta, generator=generator)
    return scheduler.ddpm_step(pred, t, z, generator=generator)


@torch.no_grad()
def denoise(model, scheduler, z: torch.Tensor, timesteps: list[int], sampler: str = "ddim", eta: float = 0.0,
            generator: torch.Generator | None = None, on_step: Callable[[int], None] | None = None) -> torch.Tensor:
    """Every step of :func:`denoise_step` from ``z`` (noise at ``timesteps[0]``) to the data;
    ``on_step(k)`` is called after each step (progress bars)."""
    for k in range(len(timesteps)):
        z = denoise_step(model, scheduler, z, k, timesteps, sampler, eta, generator)
        if on_step is not None:
            on_step(k)
    return z


@torch.no_grad()
def sample_latents(model, scheduler, n: int, steps: int = 50, sampler: str = "ddim", eta: float = 0.0,
                   seed: int = 0, batch: int = 64, progress: bool = True) -> torch.Tensor:
    """``n`` latents from noise drawn with ``seed``, ``batch`` chains at a time (one generator
    for all chunks, so a chunk's noise depends on the chunks before it). The noise is drawn on the
    CPU and the chains run on the model's device, so a seed gives the same start on any device;
    the latents come back on the CPU."""
    if n <= 0:
        raise InputError(f"the number of samples must be positive, got {n}")
    timesteps = sampling_timesteps(scheduler, steps, sampler)
    shape = (model.cfg.latent_channels, model.cfg.latent_size, model.cfg.latent_size)
    gen = torch.Generator().manual_seed(seed)
    device = module_device(model)
    out = []
    chunks = [min(batch, n - i) for i in range(0, n, batch)]
    bar = tqdm(total=len(timesteps) * len(chunks), disable=not progress, unit="step", desc="sample")
    for size in chunks:
        z = torch.randn((size, *shape), generator=gen).to(device)
        out.append(denoise(model, scheduler, z, timesteps, sampler, eta, gen, on_step=lambda _: bar.update(1)).cpu())
    bar.close()
    return torch.cat(out)
