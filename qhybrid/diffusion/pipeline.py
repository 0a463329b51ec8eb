"""A trained latent diffusion model loaded back: denoiser (EMA weights), scheduler and VAE.

``LatentDiffusion.from_checkpoint(folder)`` is what sampling, comparison, noisy evaluation and IBM
runs load; it depends on models only, never on training. An LDM checkpoint names the VAE it was
trained on (path and weights hash): a missing or changed VAE is refused, since the denoiser's
latents mean nothing to another VAE.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from qhybrid.diffusion.scheduler import NoiseScheduler, SchedulerConfig
from qhybrid.errors import one_line
from qhybrid.models import checkpoint as ckpt
from qhybrid.models.denoiser import LatentDenoiser
from qhybrid.models.vae import VAE


class LatentDiffusion(NamedTuple):
    """The parts of a trained LDM; unpacks as ``denoiser, scheduler, vae, header``."""

    denoiser: LatentDenoiser
    scheduler: NoiseScheduler
    vae: VAE
    header: dict

    @classmethod
    def from_checkpoint(cls, folder: str | Path, check_vae: bool = True) -> "LatentDiffusion":
        folder = Path(folder)
        denoiser = LatentDenoiser.from_checkpoint(folder)
        header = denoiser.checkpoint_header
        cfg = header["config"]
        try:
            scheduler = NoiseScheduler(SchedulerConfig.from_dict(cfg["scheduler"]))
            vae_path = Path(cfg["vae_path"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ckpt.CheckpointError(f"{folder}: the LDM config in config.json is invalid ({one_line(exc)})") from None
        if not vae_path.is_absolute():
            vae_path = (folder / vae_path).resolve()
        if not (vae_path / ckpt.CONFIG_NAME).exists():
            raise ckpt.CheckpointError(
                f"{folder} was trained on the VAE at {vae_path}, which is missing; restore it (the LDM "
                "cannot decode without it)")
        if check_vae and ckpt.read_header(vae_path, "vae").get("weights_sha256") != cfg.get("vae_sha256"):
            raise ckpt.CheckpointError(
                f"the VAE at {vae_path} has changed since {folder} was trained on it (hash mismatch); "
                "retrain the LDM or restore that VAE")
        return cls(denoiser, scheduler, VAE.from_checkpoint(vae_path), header)
