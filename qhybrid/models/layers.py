"""Small building blocks shared by the networks."""

from __future__ import annotations

import torch
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
