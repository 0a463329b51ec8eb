"""Sampling from a trained latent diffusion model on any execution target.

DDIM (deterministic with ``eta=0``, default) or ancestral DDPM over ``steps`` timesteps, all chains
in one batch, then the VAE decodes. For a given seed the result on the ``ideal`` target is
bit-for-bit repeatable. The quantum block of a hybrid model is moved to ``target`` first.
"""

from __future__ import annotations

import torch
from tqdm import tqdm

from qhybrid.errors import InputError

SAMPLERS = ("ddim", "ddpm")


@torch.no_grad()
def sample_latents(model, scheduler, n: int, steps: int = 50, sampler: str = "ddim", eta: float = 0.0,
                   seed: int = 0, batch: int = 64, progress: bool = True) -> torch.Tensor:
    if n <= 0:
        raise InputError(f"the number of samples must be positive, got {n}")
    if sampler not in SAMPLERS:
        raise InputError(f"unknown sampler {sampler!r}; allowed: {', '.join(SAMPLERS)}")
    shape = (model.cfg.latent_channels, model.cfg.latent_size, model.cfg.latent_size)
    gen = torch.Generator().manual_seed(seed)
    timesteps = scheduler.timesteps(steps) if sampler == "ddim" else list(range(scheduler.num_train_timesteps))[::-1]
    out = []
    chunks = [min(batch, n - i) for i in range(0, n, batch)]
    bar = tqdm(total=len(timesteps) * len(chunks), disable=not progress, unit="step", desc="sample")
    for size in chunks:
        z = torch.randn((size, *shape), generator=gen)
        for k, t in enumerate(timesteps):
            tt = torch.full((size,), t, dtype=torch.long)
            pred = model(z, tt)
            if sampler == "ddim":
                t_prev = timesteps[k + 1] if k + 1 < len(timesteps) else -1
                z = scheduler.ddim_step(pred, t, t_prev, z, eta=eta, generator=gen)
            else:
                z = scheduler.ddpm_step(pred, t, z, generator=gen)
            bar.update(1)
        out.append(z)
    bar.close()
    return torch.cat(out)




