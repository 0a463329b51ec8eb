"""Building blocks shared by the networks: normalisation, the time embedding, the residual block."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: Rough per-channel mean and spread of fundus photographs in [0, 1] (orange-red retina on black).
FUNDUS_MEAN = (0.45, 0.25, 0.13)
FUNDUS_STD = (0.3, 0.18, 0.1)


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with the largest of 8, 4, 2, 1 groups that divides ``channels``."""
    groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


class FundusNormalize(nn.Module):
    """Fixed (not per-image) standardisation, so exposure stays visible to the network."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(FUNDUS_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(FUNDUS_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps (as in DDPM / Transformer positions)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ResBlock(nn.Module):
    """The residual block of every network here: GroupNorm-SiLU-conv twice plus a (1x1 when the
    widths differ) skip, ``skip(x) + h``. With ``cond_dim`` > 0 a conditioning vector (the time
    embedding) scales and shifts the normalised features between the two convolutions (FiLM).

    :meth:`residual` is the block's own path alone and :meth:`features` that path before its second
    convolution, so a QResBlock can put its quantum layer there instead
    (:class:`qhybrid.models.quantum_layers.QResBlock`).
    """

    def __init__(self, cin: int, cout: int, cond_dim: int = 0):
        super().__init__()
        self.norm1 = group_norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.film = nn.Linear(cond_dim, 2 * cout) if cond_dim else None
        self.norm2 = group_norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def features(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """The path up to its second convolution: ``FiLM(norm2(conv1(silu(norm1(x)))))``."""
        h = self.norm2(self.conv1(F.silu(self.norm1(x))))
        if self.film is not None:
            scale, shift = self.film(cond).chunk(2, dim=1)
            h = h * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
        return h

    def residual(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv2(F.silu(self.features(x, cond)))

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.skip(x) + self.residual(x, cond)


class SelfAttention(nn.Module):
    """Multi-head self-attention over the positions of a feature map, as the U-Nets of DDPM and
    latent diffusion put at their lowest resolution: every position sees every other, which
    convolutions at 8 x 8 only do after several layers. ``x + proj(attention(norm(x)))``; the output
    projection starts at zero, so a new block is the identity and training decides what it adds."""

    def __init__(self, channels: int, heads: int):
        super().__init__()
        if heads < 1 or channels % heads:
            raise ValueError(f"self-attention needs a head count dividing the {channels} channels, got {heads}")
        self.heads = heads
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)  # (b, heads, h * w, c / heads)
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))
