"""A fundus-domain feature encoder for distribution metrics (FD, KID, precision/recall, ...).

FID's Inception network was trained on ImageNet and cannot be downloaded here; qhybrid trains its
own small encoder for fundus images instead, never one of the generators. By default it learns on
built-in synthetic retinas (its own seed space) to predict what a fundus reader looks at: the DR
grade, which eye, where the optic disc and the fovea are, and whether and how the image is
degraded. Its 64-d penultimate activations are the features. With a graded image folder it learns
the grades (and quality labels when present) of those photographs instead.

Optional: Inception features for the usual FID/KID when the user has the TorchScript Inception
file used by FID implementations (``pt_inception-2015-12-05-*.pth``) on disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from qhybrid.config import Config
from qhybrid.data.degrade import DEGRADATIONS
from qhybrid.data.transforms import images_to_tensor, resize_images
from qhybrid.devices import module_device
from qhybrid.errors import InputError
from qhybrid.models import checkpoint as ckpt
from qhybrid.models.layers import FundusNormalize

ENCODER_SEED_OFFSET = 4_243_000
ENCODER_KINDS = ("none",) + DEGRADATIONS


@dataclass(frozen=True)
class EncoderConfig(Config):
    """Input size (images are resized to it), network width and feature dimension."""

    size: int = 64
    width: int = 32
    dim: int = 64

    def __post_init__(self):
        if not 16 <= self.size <= 512:
            raise ValueError(f"EncoderConfig.size must be between 16 and 512 px, got {self.size}")
        if self.width < 1 or self.dim < 1:
            raise ValueError(f"EncoderConfig.width and dim must be positive, got {self.width} and {self.dim}")


class FundusEncoder(ckpt.FromCheckpoint, nn.Module):
    """ResNet-style BatchNorm CNN; ``embed`` gives the feature vector, heads are for training.
    ``FundusEncoder.from_checkpoint(folder)`` loads a trained one."""

    checkpoint_kind = "feature-encoder"
    config_class = EncoderConfig

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.width

        def res(cin, cout, stride):
            return _Res(cin, cout, stride)

        self.body = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
            res(w, w, 2), res(w, 2 * w, 2), res(2 * w, 4 * w, 2), res(4 * w, 4 * w, 2),
        )
        self.proj = nn.Linear(4 * w, cfg.dim)
        self.grade = nn.Linear(cfg.dim, 5)
        self.eye = nn.Linear(cfg.dim, 2)
        self.points = nn.Linear(cfg.dim, 4)  # disc x, y, fovea x, y (image coordinates)
        self.kind = nn.Linear(cfg.dim, len(ENCODER_KINDS))
        self.normalize = FundusNormalize()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(self.normalize(x)).mean(dim=(2, 3))
        return self.proj(h)

    def forward(self, x):
        e = F.relu(self.embed(x))
        return self.grade(e), self.eye(e), self.points(e), self.kind(e)


class _Res(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                               nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return F.relu(self.a(x) + self.skip(x))


@torch.no_grad()
def encode(model: FundusEncoder, images: np.ndarray, batch: int = 128) -> np.ndarray:
    size = model.cfg.size
    if images.shape[1] != size:
        images = resize_images(images, size)
    device = module_device(model)
    return torch.cat([model.embed(images_to_tensor(images[k:k + batch], (0.0, 1.0)).to(device)).cpu()
                      for k in range(0, len(images), batch)]).double().numpy()


@torch.no_grad()
def inception_features(path: str | Path, images: np.ndarray, batch: int = 32) -> np.ndarray:
    """2048-d pool features from a local TorchScript Inception (the FID reference network)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Inception weights {path} not found; give the TorchScript file used for FID "
                         "(e.g. pt_inception-2015-12-05-6726825d.pth); nothing is downloaded")
    try:
        net = torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{path} is not a TorchScript Inception network ({exc})") from None
    feats = []
    for k in range(0, len(images), batch):
        x = torch.from_numpy(np.ascontiguousarray(images[k:k + batch])).permute(0, 3, 1, 2)
        x = F.interpolate(x.float(), size=(299, 299), mode="bilinear", align_corners=False).to(torch.uint8)
        try:
            out = net(x, return_features=True)
        except (RuntimeError, TypeError):
            out = net(x)
        feats.append(out.reshape(len(x), -1).double())
    return torch.cat(feats).numpy()
