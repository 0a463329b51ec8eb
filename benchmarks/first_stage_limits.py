"""Why a 64-px first stage with 4x16x16 latents stops near vessel-map Dice 0.62, and what a 4x32x32
one costs: the measurements behind the README.

    python benchmarks/first_stage_limits.py [--vae DIR] [--n 128]            # ceiling, contrast bound, latent noise
    python benchmarks/first_stage_limits.py --adversarial 0.5,0 --epochs 20  # + fine-tunes (about 2 min each)
    python benchmarks/first_stage_limits.py --variants base,kl-1e-5,wide-top,latent-32 --epochs 30  # + from scratch

``--vae`` defaults to ``fundus-vae-64`` (4x16x16), the VAE items 2 and 3 were measured on. The
``--variants`` change the default recipe (``VAEConfig()``: 4x16x16 latents at 64 px) whatever
``--vae`` is: ``base`` is always that recipe.

1. **Ceiling.** The held-out images carry sensor grain that no autoencoder should reproduce. Dice
   between each image and its grain-free render (``SyntheticFundus(grain=False)``) is the best a
   perfect, grain-free reconstruction scores.
2. **Contrast bound.** The vessel map thresholds an absolute depth, so a reconstruction whose
   vessels are right but fainter loses them from the map. Thresholding the reconstruction's depth
   map at every level and keeping the best Dice bounds what restoring the contrast alone could give.
3. **Adversarial fine-tune** (``--adversarial w1,w2``; 0 is the control without a discriminator):
   the VAE continues from ``--vae`` for ``--epochs`` epochs (cosine LR from ``--lr``) with a
   PatchGAN hinge loss whose weight follows the LDM first stage (adaptive: ``w`` times the ratio of
   the reconstruction loss's and the adversarial loss's gradient norms at the decoder's last layer).
   A prototype for the measurement, not a training mode of qhybrid; it prints held-out Dice every
   5 epochs.
4. **Latent noise.** Dice of images decoded from their latents plus Gaussian noise (0.1, 0.2, 0.3
   on the scaled latents, std 1): sampled latents are never exactly on the data, so a decoder that
   turns small latent errors into speckle shows it in the samples.
5. **Variants** (``--variants``, names in :data:`VARIANTS`): VAEs trained from scratch with
   ``train_vae`` for ``--epochs`` epochs (batch 16, seed 0, the shipped recipe otherwise), each
   scored by held-out Dice: is the KL term the bottleneck, does width at full resolution help, or
   one downsampling fewer (``latent-32``)?
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from qhybrid.data.loaders import load_dataset
from qhybrid.data.synthetic import SyntheticFundus
from qhybrid.data.transforms import images_to_tensor, tensor_to_images
from qhybrid.evaluation.vessels import (
    VESSEL_DEPTH,
    map_dice,
    vessel_depth,
    vessel_dice,
    vessel_maps,
)
from qhybrid.models.vae import VAE

SHIPPED = Path(__file__).resolve().parents[1] / "qhybrid" / "pretrained" / "fundus-vae-64"
#: the generator seed of load_dataset's synthetic test split at seed 0 (seed * 10 + the split's id, 2)
TEST_SPLIT_SEED = 2
#: --variants: VAEConfig changes against the shipped recipe
VARIANTS = {"base": {}, "kl-1e-4": {"kl_weight": 1e-4}, "kl-1e-5": {"kl_weight": 1e-5},
            "wide-top": {"base_channels": 32, "channel_mult": (1, 2, 2, 2)}, "latent-8": {"latent_channels": 8},
            "latent-32": {"latent_size": 32}}


def reconstruct(vae: VAE, images: np.ndarray) -> np.ndarray:
    vae.eval()
    with torch.no_grad():
        return tensor_to_images(vae(images_to_tensor(images), sample=False)[0])


def decode_noisy(vae: VAE, images: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """The images decoded from their scaled latent means plus Gaussian noise of std ``sigma``: how
    robust the decoder is to latents a little off the data, which is what sampled latents are."""
    vae.eval()
    with torch.no_grad():
        z = vae.encode_latents(images_to_tensor(images))
        noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(seed))
        return tensor_to_images(vae.decode_latents(z + sigma * noise))


def contrast_bound(real: np.ndarray, recon: np.ndarray) -> tuple[float, float]:
    """(best Dice over thresholds of the reconstruction's depth map, that threshold)."""
    truth = vessel_maps(real)
    best = (0.0, VESSEL_DEPTH)
    for threshold in np.arange(0.02, 0.0601, 0.0025):
        dice = map_dice(truth, vessel_maps(recon, depth=float(threshold)))
        best = max(best, (float(dice.mean()), float(threshold)))
    return best


def patch_discriminator(channels: int = 32) -> nn.Module:
    """A PatchGAN (pix2pix / the LDM first stage) for 64 px, with group norms instead of batch norms."""
    c = channels
    return nn.Sequential(nn.Conv2d(3, c, 4, 2, 1), nn.LeakyReLU(0.2),
                         nn.Conv2d(c, 2 * c, 4, 2, 1), nn.GroupNorm(8, 2 * c), nn.LeakyReLU(0.2),
                         nn.Conv2d(2 * c, 4 * c, 4, 1, 1), nn.GroupNorm(8, 4 * c), nn.LeakyReLU(0.2),
                         nn.Conv2d(4 * c, 1, 4, 1, 1))


def adversarial_finetune(vae_dir: Path, weight: float, epochs: int, lr: float, real: np.ndarray) -> list[tuple[int, float]]:
    """Fine-tune the VAE in ``vae_dir`` with (weight > 0) or without a discriminator; returns
    (epoch, held-out Dice) every 5 epochs."""
    torch.manual_seed(0)
    vae = VAE.from_checkpoint(vae_dir)
    disc = patch_discriminator()
    x = load_dataset("synthetic", vae.cfg.size, "train", seed=0).tensor()
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=1e-4, betas=(0.5, 0.9))
    opt_d = torch.optim.AdamW(disc.parameters(), lr=lr, weight_decay=1e-4, betas=(0.5, 0.9))
    last = vae.decoder.conv_out.weight
    gen = torch.Generator().manual_seed(0)
    batch, total, step, out = 16, epochs * int(np.ceil(len(x) / 16)), 0, []
    for epoch in range(epochs):
        vae.train()
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch):
            b = x[order[i:i + batch]]
            recon, mu, logvar = vae(b, noise=torch.randn((len(b), *vae.cfg.latent_shape), generator=gen))
            loss, _ = vae.loss_of(b, recon, mu, logvar)
            if weight > 0:
                frozen = {k: p.detach() for k, p in disc.named_parameters()}
                adversarial = -functional_call(disc, frozen, (recon,)).mean()  # gradients reach the VAE only
                g_rec = torch.autograd.grad(loss, last, retain_graph=True)[0].norm()
                g_adv = torch.autograd.grad(adversarial, last, retain_graph=True)[0].norm()
                loss = loss + weight * (g_rec / (g_adv + 1e-4)).clamp(max=1e4).detach() * adversarial
            factor = 0.5 * (1 + np.cos(np.pi * step / total))
            for group in [*opt.param_groups, *opt_d.param_groups]:
                group["lr"] = lr * factor
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
            opt.step()
            if weight > 0:  # hinge loss; after the VAE's step, whose graph used these weights
                d_loss = 0.5 * (F.relu(1 - disc(b)).mean() + F.relu(1 + disc(recon.detach())).mean())
                opt_d.zero_grad()
                d_loss.backward()
                opt_d.step()
            step += 1
        if (epoch + 1) % 5 == 0 or epoch + 1 == epochs:
            out.append((epoch + 1, float(vessel_dice(real, reconstruct(vae, real)).mean())))
            print(f"    weight {weight:g}, epoch {epoch + 1}: held-out Dice {out[-1][1]:.3f}", flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vae", type=Path, default=SHIPPED)
    parser.add_argument("--n", type=int, default=128, help="held-out synthetic images (test split, seed 0)")
    parser.add_argument("--adversarial", default=None, help="comma-separated discriminator weights to fine-tune with")
    parser.add_argument("--variants", default=None, help=f"comma-separated, of: {', '.join(VARIANTS)}")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=5e-4)
    args = parser.parse_args()
    vae = VAE.from_checkpoint(args.vae)
    size = vae.cfg.size
    real = load_dataset("synthetic", size, "test", n=args.n, seed=0).images
    clean = SyntheticFundus(size=size, seed=TEST_SPLIT_SEED, grain=False).sample(args.n)[0]
    recon = reconstruct(vae, real)
    print(f"{args.n} held-out {size}-px images, VAE {args.vae}")
    print(f"  Dice(image, its grain-free render), the ceiling: {vessel_dice(real, clean).mean():.3f}")
    print(f"  Dice(image, reconstruction): {vessel_dice(real, recon).mean():.3f}; "
          f"(grain-free render, reconstruction): {vessel_dice(clean, recon).mean():.3f}")
    truth = vessel_depth(real) > VESSEL_DEPTH
    print(f"  vessel depth at the image's vessel pixels: image {vessel_depth(real)[truth].mean():.3f}, "
          f"reconstruction {vessel_depth(recon)[truth].mean():.3f} (green, 0-1)")
    best, threshold = contrast_bound(real, recon)
    print(f"  contrast bound: best Dice {best:.3f} with the reconstruction's map at depth {threshold:.4f} "
          f"(the map's own: {VESSEL_DEPTH})")
    print("  Dice under Gaussian noise on the scaled latents (std 1), as a denoiser's errors put it: " + ", ".join(
        f"{sigma:g}: {vessel_dice(real, decode_noisy(vae, real, sigma)).mean():.3f}" for sigma in (0.1, 0.2, 0.3)))
    for weight in ([float(w) for w in args.adversarial.split(",")] if args.adversarial else []):
        t0 = time.perf_counter()
        print(f"  fine-tune {args.epochs} epochs, discriminator weight {weight:g}:")
        adversarial_finetune(args.vae, weight, args.epochs, args.lr, real)
        print(f"    {time.perf_counter() - t0:.0f} s")
    for name in (args.variants.split(",") if args.variants else []):
        from tempfile import TemporaryDirectory

        from qhybrid.models.vae import VAEConfig
        from qhybrid.training.vae import VAETrainConfig, train_vae

        with TemporaryDirectory() as folder:
            result = train_vae(folder, VAEConfig(size=size, **VARIANTS[name]),
                               VAETrainConfig(epochs=args.epochs, batch=16, seed=0), progress=False, device="cpu")
            trained = VAE.from_checkpoint(folder)
        print(f"  variant {name}, {args.epochs} epochs: held-out Dice "
              f"{vessel_dice(real, reconstruct(trained, real)).mean():.3f} ({result['seconds']:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
