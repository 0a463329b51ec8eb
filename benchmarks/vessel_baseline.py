"""Vessel figures of a demo run: what issue 15 measures before and after each change.

For a run folder (``make demo`` writes ``runs/demo``): the VAE's held-out vessel-map Dice, vessel
density and depth of real images, reconstructions and each model's samples, and the share of real,
reconstructed and vessel-erased (Gaussian-blurred) images the run's validator accepts.

    python benchmarks/vessel_baseline.py runs/demo [--n 128] [--vae DIR] [--validator DIR]

``--vae`` / ``--validator`` measure another VAE or validator than the run's (e.g. an earlier run's
VAE under today's validator). "Vessel-erased" images are the held-out images under each
vessel-erasing degradation at the smallest severity that erases the vessels
(:data:`qhybrid.data.degrade.UNGRADABLE_MIN`), and under a 1-px Gaussian blur.
"""

from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from qhybrid.data.degrade import UNGRADABLE_MIN, VESSEL_ERASING, degrade
from qhybrid.data.loaders import load_dataset
from qhybrid.data.transforms import images_to_tensor, tensor_to_images
from qhybrid.evaluation.validator import GradabilityNet, predict
from qhybrid.evaluation.vessels import vessel_dice, vessel_stats
from qhybrid.models.vae import VAE


def blurred(images: np.ndarray, sigma: float) -> np.ndarray:
    return np.clip(np.stack([ndimage.gaussian_filter(im.astype(float), (sigma, sigma, 0)) for im in images]),
                   0, 255).astype(np.uint8)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--n", type=int, default=128, help="held-out synthetic images (test split, seed 0)")
    parser.add_argument("--vae", type=Path, default=None, help="VAE folder (default RUN/vae)")
    parser.add_argument("--validator", type=Path, default=None, help="validator folder (default RUN/validator)")
    args = parser.parse_args()
    vae = VAE.from_checkpoint(args.vae or args.run / "vae").eval()
    size = vae.cfg.size
    held = load_dataset("synthetic", size, "test", n=args.n, seed=0)
    real = held.images
    with torch.no_grad():
        recon = tensor_to_images(vae(images_to_tensor(real), sample=False)[0])
    dice = vessel_dice(real, recon)
    print(f"{len(real)} held-out {size}-px images: VAE vessel-map Dice {dice.mean():.3f} (median {np.median(dice):.3f})")
    sets = {"real": real, "reconstructions": recon}
    for folder in sorted(glob.glob(str(args.run / "samples" / "*"))):
        files = sorted(glob.glob(f"{folder}/sample_*.png"))
        if files:
            sets[f"samples {Path(folder).name}"] = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    for name, images in sets.items():
        s = vessel_stats(images)
        print(f"  {name:<28} vessel density {100 * s['vessel_density']['value']:.2f}%  depth "
              f"{255 * s['vessel_depth']['value']:.1f} grey levels  without vessels {100 * s['without_vessels']:.0f}%")
    vdir = args.validator or args.run / "validator"
    if vdir.exists():
        validator = GradabilityNet.from_checkpoint(vdir).eval()
        scale = size / 64
        rng = np.random.default_rng(0)
        erased = {f"{kind} at {UNGRADABLE_MIN[kind]}": np.stack([degrade(im, kind, UNGRADABLE_MIN[kind], rng)
                                                                 for im in real]) for kind in VESSEL_ERASING}
        erased["Gaussian blur 1 px per 64"] = blurred(real, scale)
        print(f"validator {vdir}:")
        for name, images in (("real", real), ("reconstructions", recon), *erased.items(),
                             ("blurred 2 px per 64", blurred(real, 2 * scale))):
            accepted = (predict(validator, images) >= validator.cfg.threshold).mean()
            print(f"  accepts {name}: {100 * accepted:.1f}%")
        rejected = np.mean([(predict(validator, im) < validator.cfg.threshold).mean() for im in erased.values()])
        print(f"  rejects vessel-erased images (mean over the {len(erased)} kinds above): {100 * rejected:.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
