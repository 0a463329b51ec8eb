"""Sampling from a trained latent diffusion model on any execution target.

DDIM (deterministic with ``eta=0``, default) or ancestral DDPM over ``steps`` timesteps, all chains
in one batch, then the VAE decodes. For a given seed the result on the ``ideal`` target is
bit-for-bit repeatable. The quantum block of a hybrid model is moved to ``target`` first.
"""

from __future__ import annotations

import io as _io
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from . import io
from .data import tensor_to_images
from .errors import InputError
from .plots import save_image_grid
from .train_diffusion import load_ldm

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


def sample_images(model_dir: str | Path, n: int = 64, steps: int = 50, target: str = "ideal",
                  seed: int = 0, sampler: str = "ddim", eta: float = 0.0, progress: bool = True,
                  loaded=None, target_options: dict | None = None) -> tuple[np.ndarray, dict]:
    """Sample ``n`` images (uint8, (n, S, S, 3)) from an LDM checkpoint folder."""
    model, scheduler, vae, header = loaded or load_ldm(model_dir)
    model.to_target(target, **(target_options or {}))
    t0 = time.perf_counter()
    z = sample_latents(model, scheduler, n, steps, sampler, eta, seed, progress=progress)
    with torch.no_grad():
        images = tensor_to_images(torch.cat([vae.decode_latents(z[i:i + 64]) for i in range(0, len(z), 64)]))
    seconds = time.perf_counter() - t0
    info = {"model": str(model_dir), "denoiser": model.cfg.kind, "n": n, "steps": steps, "sampler": sampler,
            "eta": eta, "target": target, "target_options": target_options or {}, "seed": seed, "seconds": seconds, "seconds_per_image": seconds / n}
    return images, info


def write_samples(images: np.ndarray, out: str | Path, info: dict) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # samples.json, written last, marks a finished folder: an earlier run's goes first, with its
    # samples beyond this run's count, so an interrupted rewrite never passes for a result
    (out / "samples.json").unlink(missing_ok=True)
    for stale in out.glob("sample_*.png"):
        index = stale.stem.removeprefix("sample_")
        if index.isdigit() and int(index) >= len(images):
            stale.unlink()
    for k, img in enumerate(images):
        buffer = _io.BytesIO()
        Image.fromarray(img).save(buffer, format="PNG")
        io.write_bytes(out / f"sample_{k:04d}.png", buffer.getvalue())
    save_image_grid(images[:64], out / "grid.png", ncols=8)
    io.write_json(out / "samples.json", info)
    return out
