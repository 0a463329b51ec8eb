"""How a denoiser should meet 4 x 32 x 32 latents: the measurement behind ``DenoiserConfig.outer_levels``.

    python benchmarks/latent32_denoisers.py RUN [--variants stem,level,patchify] [--steps 1200]

``RUN`` is a demo run on ``fundus-vae-64-l32`` (``make demo`` writes ``runs/demo``): its ``vae``,
``encoder`` and ``validator`` are used. Each variant trains a classical denoiser with the demo's
recipe (512 images, 1,200 steps at batch 64, v-prediction, seed 0; channels-last activations in
training, as qhybrid's denoiser) into ``RUN/latent32/<variant>`` and is scored as ``qhybrid
compare`` scores the demo (64 samples, seed 1, 200 held-out images):

* ``stem`` (qhybrid's, ``outer_levels`` 1): the two-level U-Net at 16 x 16 behind a convolutional
  stem at 32 x 32 of half its width (strided convolution down, transposed convolution up, the skip
  joined by one convolution);
* ``level``: a full U-Net level at 32 x 32 instead of the stem (a residual block down, nearest
  upsampling + convolution and a residual block up), as a third level of a classic U-Net would be;
* ``patchify``: no 32 x 32 level at all: 2 x 2 latent patches folded into channels before the
  16 x 16 U-Net and unfolded after it (pixel unshuffle, as DiT patchifies its latents).

The variants other than ``stem`` exist only here: the script swaps ``LatentDenoiser``'s constructor
and forward for its run, so training, checkpoints and ``compare`` run unchanged. Training time is
printed per variant (seconds, the same machine, one after another).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import qhybrid.models.denoiser as denoiser_module
from qhybrid.models.layers import ResBlock, timestep_embedding

STEM_INIT, STEM_FORWARD = denoiser_module.LatentDenoiser.__init__, denoiser_module.LatentDenoiser.forward


def level_init(self, cfg):
    """The stem's modules replaced by a full level: residual blocks at 32 x 32."""
    STEM_INIT(self, cfg)
    w, tdim = cfg.channels // 2, cfg.time_dim
    self.level_down = ResBlock(w, w, tdim)
    self.level_upsample = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(2 * w, w, 3, padding=1))
    self.level_up = ResBlock(2 * w, w, tdim)
    del self.outer_up


def level_forward(self, z, t):
    z = z.contiguous(memory_format=self.memory_format) if self.training else z  # as LatentDenoiser trains
    temb = self.time_mlp(timestep_embedding(t, self.cfg.time_dim))
    skip = self.level_down(self.conv_in(z), temb)
    h0 = self.down1(self.outer_down[0](skip), temb)
    h = self.mid(self.down2(self.downsample(h0), temb), temb)
    h = self.up1(torch.cat([self.upsample(self.mid2(h, temb)), h0], dim=1), temb)
    h = self.level_up(torch.cat([self.level_upsample(h), skip], dim=1), temb)
    return self.conv_out(F.silu(self.norm_out(h)))


def patchify_init(self, cfg):
    """The 16 x 16 U-Net on 16-channel latents: 2 x 2 patches of the 4 channels."""
    STEM_INIT(self, cfg.replace(outer_levels=0, latent_size=cfg.latent_size // 2,
                                latent_channels=4 * cfg.latent_channels))
    self.cfg = cfg


def patchify_forward(self, z, t):
    temb = self.time_mlp(timestep_embedding(t, self.cfg.time_dim))
    folded = F.pixel_unshuffle(z, 2)
    folded = folded.contiguous(memory_format=self.memory_format) if self.training else folded
    h0 = self.down1(self.conv_in(folded), temb)
    h = self.mid(self.down2(self.downsample(h0), temb), temb)
    h = self.up1(torch.cat([self.upsample(self.mid2(h, temb)), h0], dim=1), temb)
    return F.pixel_shuffle(self.conv_out(F.silu(self.norm_out(h))), 2)


VARIANTS = {"stem": (STEM_INIT, STEM_FORWARD), "level": (level_init, level_forward),
            "patchify": (patchify_init, patchify_forward)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--variants", default="stem,level,patchify")
    parser.add_argument("--steps", type=int, default=1200)
    args = parser.parse_args()
    from qhybrid.models.checkpoint import read_header
    from qhybrid.training.diffusion import DiffusionTrainConfig, train_diffusion
    from qhybrid.workflows.compare import run_compare

    if read_header(args.run / "vae", "vae")["config"].get("latent_size") != 32:
        print(f"{args.run}/vae does not make 32 x 32 latents; give a demo run on fundus-vae-64-l32", file=sys.stderr)
        return 2
    rows = []
    for name in args.variants.split(","):
        denoiser_module.LatentDenoiser.__init__, denoiser_module.LatentDenoiser.forward = VARIANTS[name]
        folder = args.run / "latent32" / name
        folder.mkdir(parents=True, exist_ok=True)
        for part in ("vae", "encoder", "validator"):
            if not (folder / part).exists():
                shutil.copytree(args.run / part, folder / part)
        cfg = denoiser_module.DenoiserConfig.for_kind("classical", 4, 32)
        seconds = None  # trained by an earlier run of this script: not timed
        if not (folder / "ldm-classical" / "config.json").exists():
            t0 = time.perf_counter()
            train_diffusion(folder / "ldm-classical", folder / "vae", "classical",
                            DiffusionTrainConfig(n=512, steps=args.steps, batch=64, seed=0), config=cfg,
                            progress=False, device="cpu")
            seconds = time.perf_counter() - t0
        result = run_compare(folder, n=64, steps=50, seed=1, real_n=200, progress=False, contribution=None)
        rows.append((name, seconds, result["models"]["classical"]["metrics"]))
    print_table(rows, "variant")
    return 0


def print_table(rows, first: str = "model") -> None:
    """One markdown row per (name, training seconds or None, compare's metrics of the model)."""
    print(f"| {first} | training s | gradable % | FD [95% interval] | precision | recall | vessel density % |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, seconds, m in rows:
        features = m["fundus_features"]
        fd = features["fd"]
        interval = f" [{fd['ci'][0]:.1f}, {fd['ci'][1]:.1f}]" if "ci" in fd else ""
        print(f"| {name} | {'–' if seconds is None else f'{seconds:.0f}'} | {100 * m['gradable']['value']:.1f} | "
              f"{fd['value']:.1f}{interval} | {features['precision']['value']:.2f} | {features['recall']['value']:.2f} | "
              f"{100 * m['vessels']['vessel_density']['value']:.1f} |")


if __name__ == "__main__":
    sys.exit(main())
