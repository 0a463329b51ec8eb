"""A trained latent diffusion model loaded back: denoiser (EMA weights), scheduler and VAE.

``LatentDiffusion.from_checkpoint(folder)`` is what sampling, comparison, noisy evaluation and IBM
runs load; it depends on models only, never on training. An LDM checkpoint names the VAE it was
trained on by its weights hash, and where to find it: relative to the LDM folder (so a run folder
moved or copied with its ``vae/`` beside it finds *its own* VAE), with the absolute path of
training time as a fallback. Every candidate is hash-checked: a missing or changed VAE is refused,
since the denoiser's latents mean nothing to another VAE. ``vae=`` overrides the search (a VAE kept
elsewhere), hash-checked too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from qhybrid.diffusion.scheduler import NoiseScheduler, SchedulerConfig
from qhybrid.errors import one_line, param
from qhybrid.models import checkpoint as ckpt
from qhybrid.models.denoiser import LatentDenoiser
from qhybrid.models.vae import VAE


def vae_reference(ldm_folder: str | Path, vae_folder: str | Path, vae_header: dict) -> dict:
    """How an LDM checkpoint in ``ldm_folder`` names the VAE it is trained on: the path relative to
    the LDM folder, the absolute path (fallback) and the weights hash."""
    ldm_folder, vae_folder = Path(ldm_folder).resolve(), Path(vae_folder).resolve()
    try:
        relative = os.path.relpath(vae_folder, ldm_folder)
    except ValueError:  # another drive (Windows): no relative path, the absolute one only
        relative = None
    return {"vae_relative_path": relative, "vae_path": str(vae_folder), "vae_sha256": vae_header.get("weights_sha256")}


def find_vae(folder: str | Path, cfg: dict, override: str | Path | None = None, check: bool = True) -> Path:
    """The VAE folder an LDM checkpoint's config ``cfg`` refers to (see the module docstring).

    ``override`` (``--vae``) is the only candidate when given. Otherwise, in order: the relative
    path; for older checkpoints, which stored only an absolute path, a sibling of the LDM folder
    with the recorded folder name (a moved or copied run keeps its VAE beside it); the absolute
    path. The recorded candidates decide when they exist: used if their weights hash matches,
    refused if not. The guessed sibling is used only if its hash matches, else passed over."""
    folder = Path(folder)
    expected = cfg.get("vae_sha256")
    recorded = Path(cfg["vae_path"])

    def matches(path: Path) -> bool:
        return not check or ckpt.read_header(path, "vae").get("weights_sha256") == expected

    def refuse(path: Path):
        return ckpt.CheckpointError(
            f"the VAE at {path} is not the one {folder} was trained on (weights hash differs); restore that "
            f"VAE, retrain the LDM, or give the right one with {param('vae')}")

    if override is not None:
        path = Path(override).resolve()
        if not (path / ckpt.CONFIG_NAME).exists():
            raise ckpt.CheckpointError(f"{path} is not a VAE checkpoint folder (no {ckpt.CONFIG_NAME}); give the "
                                       f"folder of the VAE {folder} was trained on with {param('vae')}")
        if not matches(path):
            raise refuse(path)
        return path
    candidates: list[tuple[Path, bool]] = []  # (path, whether it was recorded rather than guessed)
    if cfg.get("vae_relative_path"):
        candidates.append((folder / cfg["vae_relative_path"], True))
    else:
        candidates.append((folder.parent / recorded.name, False))
    candidates.append((recorded if recorded.is_absolute() else folder / recorded, True))
    merged: dict[Path, bool] = {}  # a guess that is also the recorded path counts as recorded
    for path, was_recorded in candidates:
        merged[path.resolve()] = merged.get(path.resolve(), False) or was_recorded
    seen = list(merged)
    for path, was_recorded in merged.items():
        if not (path / ckpt.CONFIG_NAME).exists():
            continue
        if matches(path):
            return path
        if was_recorded:  # another folder's VAE never stands in for a changed one
            raise refuse(path)
    raise ckpt.CheckpointError(
        f"{folder} was trained on the VAE at {recorded}, which is missing (looked in "
        f"{', '.join(map(str, seen))}); keep the run's vae/ folder beside the LDM folder or give it with {param('vae')}")


class LatentDiffusion(NamedTuple):
    """The parts of a trained LDM; unpacks as ``denoiser, scheduler, vae, header``."""

    denoiser: LatentDenoiser
    scheduler: NoiseScheduler
    vae: VAE
    header: dict

    @classmethod
    def from_checkpoint(cls, folder: str | Path, check_vae: bool = True, vae: str | Path | None = None
                        ) -> "LatentDiffusion":
        """The LDM in ``folder`` with the VAE it was trained on (``vae``: that VAE's folder, when it is
        not where the checkpoint says; see :func:`find_vae`)."""
        folder = Path(folder)
        denoiser = LatentDenoiser.from_checkpoint(folder)
        header = denoiser.checkpoint_header
        cfg = header["config"]
        try:
            scheduler = NoiseScheduler(SchedulerConfig.from_dict(cfg["scheduler"]))
            str(cfg["vae_path"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ckpt.CheckpointError(f"{folder}: the LDM config in config.json is invalid ({one_line(exc)})") from None
        vae_path = find_vae(folder, cfg, vae, check=check_vae)
        header["vae_used"] = str(vae_path)
        return cls(denoiser, scheduler, VAE.from_checkpoint(vae_path), header)
