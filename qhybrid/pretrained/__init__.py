"""Checkpoints shipped with qhybrid, pinned by hash: first stages and the two evaluators.

A VAE that keeps the vessels takes minutes of CPU training (150 epochs with the Laplacian-pyramid
detail loss: 7 minutes for ``fundus-vae-64-l32``, 10 for ``fundus-vae-64``), more than the demo's
time budget can give it, so the repository ships the one the demo uses (``fundus-vae-64-l32``,
250 kB), its predecessor (``fundus-vae-64``, 1 MB, which LDMs trained before it need) and a
128-px one (``fundus-vae-128-l32``, 1 MB, 35 minutes of training), each with the command that
made it. Loading one
checks the SHA-256 of its weights against the value pinned here: a changed or damaged file is
refused, never silently used.

The command reproduces the model, not the bytes: a second run on the same machine matched the
first step's loss exactly, then drifted by float rounding in the multi-threaded CPU kernels and
ended with other weights (largest difference 0.24) of the same quality (held-out vessel Dice 0.624
against 0.623, latent scale 0.926 both). A re-trained VAE therefore gets a new hash, and LDMs
trained on the shipped one refuse it, as they refuse any other VAE; a re-trained evaluator is given
by its folder (``compare --validator`` / ``--encoder``), not by the shipped name.

The evaluators are shipped for another reason: ``compare`` scores every run with the gradability
validator and the fundus feature encoder, and every run used to train both first: 2.8 minutes of a
``make demo`` stage of 3.1 on a slow day, and a ruler that could come out a little different on
another machine (this one rejects 98.0% of vessel-erased held-out images, the one trained by the
previous session's demo on another CPU 98.7%). Shipped, every run is measured with the same two
networks by construction, as FID measures every model with the same Inception weights, and the
time goes to the models. They are
what ``qhybrid validator train`` and ``qhybrid encoder train`` make with their defaults (the defaults
``compare`` trained with), on synthetic images from their own seed spaces, never on a model's output.

    from qhybrid.pretrained import pretrained_checkpoint
    vae = VAE.from_checkpoint(pretrained_checkpoint("fundus-vae-64-l32"))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from qhybrid.models import checkpoint as ckpt

FOLDER = Path(__file__).parent


@dataclass(frozen=True)
class Pretrained:
    """A shipped checkpoint: its kind, the pinned SHA-256 of ``model.safetensors`` and the command
    that trains it again (on the built-in synthetic data, CPU)."""

    name: str
    kind: str
    sha256: str
    command: str
    description: str


PRETRAINED: dict[str, Pretrained] = {
    p.name: p for p in (
        Pretrained(
            name="fundus-vae-64",
            kind="vae",
            sha256="e94dadece67192a223b1b3990a113b25a1fbe3e3107df36520dcde6c62a9e9df",
            command="qhybrid train vae --size 64 --epochs 150 --seed 0 --device cpu --out <folder>",
            description="classical VAE for 64 px fundus images, 4 x 16 x 16 latents, L1 + KL + "
                        "Laplacian-pyramid detail loss (weight 16), 150 epochs on 512 synthetic images",
        ),
        Pretrained(
            name="fundus-vae-64-l32",
            kind="vae",
            sha256="cff0244b1d77fa71b1431fe7872e59805131680062562a034d80dbc1ee54e221",
            command="qhybrid train vae --size 64 --latent-size 32 --epochs 150 --seed 0 --device cpu --out <folder>",
            description="classical VAE for 64 px fundus images, 4 x 32 x 32 latents (one downsampling: held-out "
                        "vessel-map Dice 0.85, where the 4 x 16 x 16 one stops at 0.62), the same loss and "
                        "training as fundus-vae-64; the demo's first stage",
        ),
        Pretrained(
            name="fundus-vae-128-l32",
            kind="vae",
            sha256="bb361d9ac44096f91b5645ed442dcb3c987c6c42e131cc8da76c048f7e787f57",
            command="qhybrid train vae --size 128 --latent-size 32 --epochs 150 --seed 0 --device cpu --out <folder>",
            description="classical VAE for 128 px fundus images, 4 x 32 x 32 latents (two downsamplings: held-out "
                        "vessel-map Dice 0.81, ceiling 0.90), the same loss and training; the paper-scale first stage",
        ),
        Pretrained(
            name="fundus-validator-64",
            kind="validator",
            sha256="5218a24f6a532486a65ba4e28e9c20430da925a1564262f08e60a3ab676daca4",
            command="qhybrid validator train --device cpu --out <folder>",
            description="the gradability validator every compare uses unless given another (--validator): 600 "
                        "synthetic retinas at 80 px, each shown gradable and degraded per epoch, 10 epochs, seed 1234; "
                        "scores images resized to 64 px",
        ),
        Pretrained(
            name="fundus-encoder-64",
            kind="feature-encoder",
            sha256="53d5756530f1b3ca975281f62fa01f55a04b4da6d4024781147298b9e62f571e",
            command="qhybrid encoder train --device cpu --out <folder>",
            description="the fundus feature encoder of FD, KID, precision and recall in every compare unless given "
                        "another (--encoder): 600 synthetic retinas, 8 epochs, seed 2024; images resized to 64 px",
        ),
    )
}


def pretrained_checkpoint(name: str) -> Path:
    """The folder of the shipped checkpoint ``name``, after checking its weights' hash."""
    if name not in PRETRAINED:
        raise ckpt.CheckpointError(f"no shipped checkpoint named {name!r}; available: {', '.join(PRETRAINED)}")
    entry = PRETRAINED[name]
    folder = FOLDER / name
    weights = folder / ckpt.WEIGHTS_NAME
    if not weights.is_file() or not (folder / ckpt.CONFIG_NAME).is_file():
        raise ckpt.CheckpointError(f"the shipped checkpoint {name} is missing from {folder}; reinstall qhybrid or "
                                   f"train it again with: {entry.command}")
    actual = ckpt.sha256_file(weights)
    if actual != entry.sha256:
        raise ckpt.CheckpointError(f"the shipped checkpoint {folder} does not match its pinned hash (sha256 {actual[:12]}… "
                                   f"instead of {entry.sha256[:12]}…); restore it from git, or train it again with: "
                                   f"{entry.command} (a new hash: give that folder instead of the name {name})")
    ckpt.read_header(folder, entry.kind)
    return folder


def copy_pretrained(name: str, dest: str | Path) -> Path:
    """Copy the shipped checkpoint ``name`` (hash checked) to the folder ``dest``, which must not
    exist yet: through a staging folder renamed at the end, so an interrupted copy leaves no half
    checkpoint behind."""
    import shutil

    source, dest = pretrained_checkpoint(name), Path(dest)
    staging = dest.with_name(dest.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging, ignore=shutil.ignore_patterns("__pycache__"))
    staging.rename(dest)
    return dest
