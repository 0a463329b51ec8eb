"""A trained latent diffusion model loaded back: denoiser, scheduler and VAE."""

from __future__ import annotations

from pathlib import Path

from qhybrid.diffusion.scheduler import NoiseScheduler, SchedulerConfig
from qhybrid.models import checkpoint as ckpt
from qhybrid.models.denoiser import DenoiserConfig, LatentDenoiser
from qhybrid.models.vae import load_vae


def load_ldm(folder: str | Path, check_vae: bool = True):
    """Load an LDM checkpoint: ``(denoiser with EMA weights, scheduler, vae, header)``."""
    header, state = ckpt.load_checkpoint(folder, "ldm")
    cfg = header["config"]
    try:
        dcfg = DenoiserConfig.from_dict(cfg["denoiser"])
        scheduler = NoiseScheduler(SchedulerConfig.from_dict(cfg["scheduler"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ckpt.CheckpointError(f"{folder}: the LDM config in config.json is invalid ({exc})") from None
    model = LatentDenoiser(dcfg)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ckpt.CheckpointError(f"{folder}: weights do not fit the denoiser config ({str(exc).splitlines()[0]})") from None
    model.eval()
    vae_path = Path(cfg["vae_path"])
    if not vae_path.is_absolute():
        vae_path = (Path(folder) / vae_path).resolve()
    if not (vae_path / ckpt.CONFIG_NAME).exists():
        raise ckpt.CheckpointError(
            f"{folder} was trained on the VAE at {vae_path}, which is missing; restore it (the LDM "
            "cannot decode without it)"
        )
    if check_vae and ckpt.read_header(vae_path, "vae").get("weights_sha256") != cfg.get("vae_sha256"):
        raise ckpt.CheckpointError(
            f"the VAE at {vae_path} has changed since {folder} was trained on it (hash mismatch); "
            "retrain the LDM or restore that VAE"
        )
    return model, scheduler, load_vae(vae_path), header
