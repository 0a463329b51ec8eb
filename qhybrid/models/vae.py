"""Convolutional VAE for fundus images, classical or quantum-enhanced.

The VAE maps a (3, size, size) image in [-1, 1] to a small latent (``latent_channels`` x
``latent_size`` x ``latent_size``: by default 4 x 8 x 8 for 32 px images and 4 x 16 x 16 for 64 and
128 px), where the diffusion model works. The quantum-enhanced variant (``quantum`` set) makes the
encoder's and the decoder's middle blocks QResBlocks (:class:`~qhybrid.models.quantum_layers.QResBlock`,
placement ``qresblock``, as the paper does): the circuit runs at every ``quantum_patch`` x
``quantum_patch`` patch of the lowest-resolution feature map, on the blocks' only residual path.
The legacy layouts of qhybrid 0.1 and 0.2 (``bottleneck``: one gated global branch after the
encoder; ``gated-qresblock``) stay loadable. It trains end to end on the ``ideal`` target; its
weights run on any target.

After training, ``latent_scale`` (1 / std of the training latents) is computed and saved with the
model, as in Stable Diffusion, so diffusion sees latents of unit variance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from qhybrid.config import Config
from qhybrid.devices import module_device
from qhybrid.models import checkpoint as ckpt
from qhybrid.models.layers import ResBlock, group_norm
from qhybrid.models.quantum_layers import (
    ANGLE_SCALE,
    GatedQResBlock,
    QResBlock,
    QuantumBranch,
)
from qhybrid.quantum import CircuitSpec, QuantumBlock

VAE_SIZES = (32, 64, 128)
QUANTUM_PLACEMENTS = ("qresblock", "bottleneck", "gated-qresblock")


@dataclass(frozen=True)
class VAEConfig(Config):
    """Saved as JSON next to the weights. ``quantum`` is a CircuitSpec dict for the quantum VAE."""

    size: int = 64
    latent_channels: int = 4
    latent_size: int | None = None  # default: 8 for 32 px images, 16 otherwise
    base_channels: int = 16
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    kl_weight: float = 1e-3
    recon_loss: str = "l1"
    detail_weight: float = 16.0  # weight of the Laplacian-pyramid (fine detail) loss; configs without one: 0
    latent_scale: float = 1.0
    quantum: dict | None = None
    quantum_placement: str = "qresblock"
    quantum_patch: int = 4
    quantum_angle_scale: float = ANGLE_SCALE
    quantum_gate_init: float = 0.5  # legacy placements only
    notes: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.size not in VAE_SIZES:
            raise ValueError(f"VAE image size must be one of {', '.join(map(str, VAE_SIZES))}, got {self.size}")
        if self.latent_size is None:
            self._fill("latent_size", 8 if self.size == 32 else 16)
        if self.latent_size < 2 or self.size % self.latent_size or \
                (self.size // self.latent_size) & (self.size // self.latent_size - 1):
            raise ValueError(
                f"VAE latent_size must divide the image size by a power of two, got {self.latent_size} for {self.size}"
            )
        if self.recon_loss not in ("l1", "mse"):
            raise ValueError(f"VAE recon_loss must be 'l1' or 'mse', got {self.recon_loss!r}")
        if not (isinstance(self.detail_weight, (int, float)) and 0 <= self.detail_weight < 1e3):
            raise ValueError(f"VAE detail_weight must be a number in [0, 1000), got {self.detail_weight!r}")
        if self.latent_channels < 1 or self.base_channels < 1:
            raise ValueError("VAE latent_channels and base_channels must be positive")
        self._fill("channel_mult", tuple(int(m) for m in self.channel_mult))
        if self.quantum_placement not in QUANTUM_PLACEMENTS:
            raise ValueError(f"VAE quantum_placement must be one of {', '.join(QUANTUM_PLACEMENTS)}, "
                             f"got {self.quantum_placement!r}")
        if isinstance(self.quantum_patch, bool) or not isinstance(self.quantum_patch, int) \
                or self.quantum_patch < 1 or self.latent_size % self.quantum_patch:
            raise ValueError(f"VAE quantum_patch must be a positive integer dividing latent_size {self.latent_size}, "
                             f"got {self.quantum_patch!r}")
        if self.quantum is not None:
            CircuitSpec.from_dict(self.quantum)  # validate early

    @classmethod
    def from_dict(cls, data: Any) -> "VAEConfig":
        """Also reads older configs: qhybrid 0.1 and 0.2's default placement was ``bottleneck`` and
        their ``qresblock`` is today's ``gated-qresblock``; a config without ``detail_weight`` was
        trained without the detail loss."""
        if isinstance(data, dict) and "quantum_patch" not in data:
            old = data.get("quantum_placement", "bottleneck")
            data = {**data, "quantum_placement": "gated-qresblock" if old == "qresblock" else old}
        if isinstance(data, dict) and "detail_weight" not in data:  # trained before the detail loss existed
            data = {**data, "detail_weight": 0.0}
        return super().from_dict(data)

    @property
    def downsamples(self) -> int:
        return int(math.log2(self.size // self.latent_size))

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (self.latent_channels, self.latent_size, self.latent_size)

    def channels(self, level: int) -> int:
        return self.base_channels * self.channel_mult[min(level, len(self.channel_mult) - 1)]


def _mid_block(cfg: VAEConfig, channels: int, seed: int) -> nn.Module:
    """The middle residual block: a QResBlock in the (legacy or current) ``qresblock`` placements."""
    if cfg.quantum and cfg.quantum_placement == "qresblock":
        return QResBlock(channels, channels, 0, CircuitSpec.from_dict(cfg.quantum), "quantum",
                         cfg.quantum_patch, cfg.quantum_angle_scale, seed=seed)
    if cfg.quantum and cfg.quantum_placement == "gated-qresblock":
        return GatedQResBlock(channels, channels, 0, CircuitSpec.from_dict(cfg.quantum), "quantum",
                              cfg.quantum_gate_init, seed=seed)
    return ResBlock(channels, channels)


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.conv_in = nn.Conv2d(3, cfg.channels(0), 3, padding=1)
        levels = []
        for i in range(cfg.downsamples):
            levels.append(nn.Sequential(
                ResBlock(cfg.channels(i), cfg.channels(i)),
                nn.Conv2d(cfg.channels(i), cfg.channels(i + 1), 3, stride=2, padding=1),
            ))
        self.levels = nn.Sequential(*levels)
        c = cfg.channels(cfg.downsamples)
        self.mid = _mid_block(cfg, c, seed=0)
        self.quantum = (  # legacy: pooled features -> angles -> circuit -> features, gated, at every position
            QuantumBranch(c, 0, CircuitSpec.from_dict(cfg.quantum), "quantum", cfg.quantum_gate_init)
            if cfg.quantum and cfg.quantum_placement == "bottleneck" else None
        )
        self.norm_out = group_norm(c)
        self.conv_out = nn.Conv2d(c, 2 * cfg.latent_channels, 3, padding=1)

    def forward(self, x):
        h = self.mid(self.levels(self.conv_in(x)))
        if self.quantum is not None:
            h = self.quantum(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        c = cfg.channels(cfg.downsamples)
        self.conv_in = nn.Conv2d(cfg.latent_channels, c, 3, padding=1)
        self.mid = _mid_block(cfg, c, seed=1)
        levels = []
        for i in reversed(range(cfg.downsamples)):
            levels.append(nn.Sequential(
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(cfg.channels(i + 1), cfg.channels(i), 3, padding=1),
                ResBlock(cfg.channels(i), cfg.channels(i)),
            ))
        self.levels = nn.Sequential(*levels)
        self.norm_out = group_norm(cfg.channels(0))
        self.conv_out = nn.Conv2d(cfg.channels(0), 3, 3, padding=1)

    def forward(self, z):
        h = self.levels(self.mid(self.conv_in(z)))
        return self.conv_out(F.silu(self.norm_out(h)))


class VAE(ckpt.FromCheckpoint, nn.Module):
    """``encode`` -> (mu, logvar); ``decode`` latents -> images; ``*_latents`` apply the scale.
    ``VAE.from_checkpoint(folder)`` loads a trained one."""

    checkpoint_kind = "vae"
    config_class = VAEConfig

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    @property
    def quantum_blocks(self) -> list[QuantumBlock]:
        return [m for m in self.modules() if isinstance(m, QuantumBlock)]

    @property
    def is_quantum(self) -> bool:
        return bool(self.quantum_blocks)

    @property
    def quantum_block(self) -> QuantumBlock | None:
        """The encoder's block (the first one)."""
        return self.quantum_blocks[0] if self.is_quantum else None

    def _check(self, x: torch.Tensor) -> None:
        s = self.cfg.size
        if x.dim() != 4 or x.shape[1:] != (3, s, s):
            raise ValueError(f"VAE expects images of shape (batch, 3, {s}, {s}), got {tuple(x.shape)}")

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x)
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar.clamp(-20, 10)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor, sample: bool = True, noise: torch.Tensor | None = None):
        """``(reconstruction, mu, logvar)``; with ``sample`` the latent is ``mu + noise * std``, the
        noise drawn here unless given (the trainer draws it from the run's generator, so that
        data-parallel processes use the global batch's noise)."""
        mu, logvar = self.encode(x)
        if sample:
            noise = torch.randn_like(mu) if noise is None else noise
            z = mu + noise * torch.exp(0.5 * logvar)
        else:
            z = mu
        return self.decode(z), mu, logvar

    def loss(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """The training loss of a batch and the numbers to log."""
        return self.loss_of(x, *self(x, noise=noise))

    def loss_of(self, x: torch.Tensor, recon: torch.Tensor, mu: torch.Tensor,
                logvar: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """:meth:`loss` of a forward pass already made (for losses added on top of it)."""
        rec = F.l1_loss(recon, x) if self.cfg.recon_loss == "l1" else F.mse_loss(recon, x)
        kl = 0.5 * torch.mean(mu.pow(2) + logvar.exp() - 1 - logvar)
        total = rec + self.cfg.kl_weight * kl
        logs = {"recon": rec.item(), "kl": kl.item()}
        if self.cfg.detail_weight:
            detail = laplacian_l1(recon, x)
            total = total + self.cfg.detail_weight * detail
            logs["detail"] = detail.item()
        return total, {"loss": total.item(), **logs}

    @torch.no_grad()
    def encode_latents(self, x: torch.Tensor) -> torch.Tensor:
        """Scaled latent means (what diffusion trains on)."""
        return self.encode(x)[0] * self.cfg.latent_scale

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        return self.decode(z / self.cfg.latent_scale)

    def parameter_counts(self) -> dict:
        total = sum(p.numel() for p in self.parameters())
        quantum = sum(len(b.weight_params) for b in self.quantum_blocks)
        return {"total": total, "quantum_circuit_weights": quantum}


def laplacian_levels(x: torch.Tensor, levels: int = 3) -> list[torch.Tensor]:
    """Band-pass images of ``x`` (a Laplacian pyramid without its coarsest level): each level is the
    image minus its 2x2-averaged-and-upsampled self, then the average goes one octave down."""
    bands = []
    for _ in range(levels):
        if min(x.shape[-2:]) < 2:
            break
        low = F.avg_pool2d(x, 2)
        bands.append(x - F.interpolate(low, scale_factor=2, mode="bilinear", align_corners=False))
        x = low
    return bands


def laplacian_l1(recon: torch.Tensor, target: torch.Tensor, levels: int = 3) -> torch.Tensor:
    """L1 distance of the Laplacian pyramids' band-pass levels, summed over levels.

    A pixel L1 loss is dominated by the black surround and the smooth retina, so a thin vessel
    costs almost nothing to erase; the band-pass levels hold little besides vessels, the disc rim,
    lesions and the fundus edge, so the same vessel is a large share of this term (the Laplacian
    pyramid loss of Bojanowski et al. 2018 and of sharp autoencoders).
    """
    return sum(F.l1_loss(r, t) for r, t in zip(laplacian_levels(recon, levels), laplacian_levels(target, levels)))


@torch.no_grad()
def latent_scale(model: VAE, images: torch.Tensor, batch: int = 64) -> float:
    device = module_device(model)
    mus = [model.encode(images[i:i + batch].to(device))[0].cpu() for i in range(0, len(images), batch)]
    return float(1.0 / torch.cat(mus).std().clamp_min(1e-6))
