"""A checkpoint folder in, a samples folder out: what ``qhybrid sample`` and ``compare`` do.

:mod:`qhybrid.diffusion.sampling` is the loop on latents; this module loads the model
(:class:`~qhybrid.diffusion.pipeline.LatentDiffusion`), moves its quantum block to the execution
target, samples, decodes with the VAE, and writes ``sample_*.png``, ``grid.png`` and, last, the
``samples.json`` that marks a finished folder."""

from __future__ import annotations

import io as _io
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from qhybrid import io
from qhybrid.data.transforms import tensor_to_images
from qhybrid.devices import module_device, resolve_device
from qhybrid.diffusion.pipeline import LatentDiffusion
from qhybrid.diffusion.sampling import sample_latents
from qhybrid.plots import save_image_grid


def sample_images(model_dir: str | Path, n: int = 64, steps: int = 50, target: str = "ideal",
                  seed: int = 0, sampler: str = "ddim", eta: float = 0.0, progress: bool = True,
                  loaded=None, target_options: dict | None = None,
                  device: str | torch.device | None = None, vae: str | Path | None = None) -> tuple[np.ndarray, dict]:
    """Sample ``n`` images (uint8, (n, S, S, 3)) from an LDM checkpoint folder; the denoiser and
    the VAE move to ``device`` first (see :mod:`qhybrid.devices`; None: they stay where they are,
    on the CPU when loaded here). ``vae``: the VAE folder when it is not where the checkpoint says.
    The returned info records what ran: the target, the noise it simulated (backend or snapshot
    file and its calibration date), the VAE used and the software versions."""
    from qhybrid.quantum.targets import noise_source
    from qhybrid.versions import software_versions

    model, scheduler, vae, header = loaded or LatentDiffusion.from_checkpoint(model_dir, vae=vae)
    if device is not None:
        device = resolve_device(device)
        model.to(device)
        vae.to(device)
    device = module_device(model)
    model.to_target(target, **(target_options or {}))
    t0 = time.perf_counter()
    z = sample_latents(model, scheduler, n, steps, sampler, eta, seed, progress=progress)
    images = decode_images(vae, z)
    seconds = time.perf_counter() - t0
    info = {"model": str(model_dir), "denoiser": model.cfg.kind, "n": n, "steps": steps, "sampler": sampler,
            "eta": eta, "target": str(target), "target_options": target_options or {},
            "noise_source": noise_source(str(target), target_options), "seed": seed, "device": str(device),
            "vae": header.get("vae_used"), "vae_sha256": vae.checkpoint_header.get("weights_sha256"),
            "versions": software_versions(), "seconds": seconds, "seconds_per_image": seconds / n}
    return images, info


@torch.no_grad()
def decode_images(vae, z: torch.Tensor, batch: int = 64) -> np.ndarray:
    """Scaled latents -> uint8 images (N, S, S, 3), decoded ``batch`` at a time (memory stays flat)
    on the VAE's device."""
    device = module_device(vae)
    return tensor_to_images(torch.cat([vae.decode_latents(z[i:i + batch].to(device)).cpu()
                                       for i in range(0, len(z), batch)]))


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
