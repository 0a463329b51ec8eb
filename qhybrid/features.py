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

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm import tqdm

from . import checkpoint as ckpt
from .degrade import DEGRADATIONS, UNGRADABLE_RANGE, degrade
from .errors import InputError
from .layers import FundusNormalize
from .synthetic import SyntheticFundus
from .validator import augment, to_tensor

ENCODER_SEED_OFFSET = 4_243_000
_KINDS = ("none",) + DEGRADATIONS


@dataclass
class EncoderConfig:
    size: int = 64
    width: int = 32
    dim: int = 64


class FundusEncoder(nn.Module):
    """ResNet-style BatchNorm CNN; ``embed`` gives the feature vector, heads are for training."""

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
        self.kind = nn.Linear(cfg.dim, len(_KINDS))
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


@dataclass
class EncoderTrainConfig:
    n: int = 600
    epochs: int = 8
    batch: int = 64
    lr: float = 3e-3
    seed: int = 2024


def _synthetic_set(n: int, size: int, seed: int):
    gen = SyntheticFundus(size, seed=ENCODER_SEED_OFFSET + seed)
    images, grades, eyes, points = [], [], [], []
    for i in range(n):
        img, lab, anat = gen.render(i)
        sign = -1.0 if lab.eye == "left" else 1.0
        images.append(img)
        grades.append(lab.grade)
        eyes.append(lab.eye == "right")
        points.append([sign * anat.disc[0], anat.disc[1], sign * anat.fovea[0], anat.fovea[1]])
    return np.stack(images), np.array(grades), np.array(eyes, dtype=np.int64), np.array(points, np.float32)


def train_encoder(out: str | Path, cfg: EncoderTrainConfig, model_cfg: EncoderConfig | None = None,
                  progress: bool = True) -> dict:
    out = Path(out)
    if (out / ckpt.CONFIG_NAME).exists():
        raise InputError(f"{out} already holds a checkpoint; choose another --out")
    model_cfg = model_cfg or EncoderConfig()
    size = model_cfg.size
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng([ENCODER_SEED_OFFSET, cfg.seed])
    t0 = time.perf_counter()
    images, grades, eyes, points = _synthetic_set(cfg.n, size, cfg.seed)
    model = FundusEncoder(model_cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    steps = cfg.epochs * int(np.ceil(len(images) / cfg.batch))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(2, steps), pct_start=0.15)
    bar = tqdm(total=steps, disable=not progress, desc="train feature encoder", unit="step")
    for _ in range(cfg.epochs):
        xs, kinds, flips = [], [], []
        for img in images:
            kind = 0
            if rng.random() < 0.35:
                kind = int(rng.integers(1, len(_KINDS) - 1))  # structure-less renders are the validator's business
                img = degrade(img, _KINDS[kind], rng.uniform(*UNGRADABLE_RANGE), rng)
            flip = rng.random() < 0.5
            if flip:
                img = img[:, ::-1]
            xs.append(augment(np.ascontiguousarray(img), size, rng, flip=False))
            kinds.append(kind)
            flips.append(flip)
        x = to_tensor(np.stack(xs))
        flips_t = torch.tensor(flips)
        eye_t = torch.as_tensor(eyes) ^ flips_t.long()
        pts = torch.as_tensor(points).clone()
        pts[flips_t, 0] *= -1
        pts[flips_t, 2] *= -1
        order = torch.randperm(len(x))
        model.train()
        for k in range(0, len(x), cfg.batch):
            idx = order[k:k + cfg.batch]
            g, e, p, kd = model(x[idx])
            clean = torch.as_tensor(kinds)[idx] == 0
            loss = (F.cross_entropy(g, torch.as_tensor(grades)[idx]) + F.cross_entropy(e, eye_t[idx])
                    + F.cross_entropy(kd, torch.as_tensor(kinds)[idx]))
            if clean.any():  # positions are only defined on undegraded images
                loss = loss + 5 * F.mse_loss(p[clean], pts[idx][clean])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if sched.last_epoch + 1 < sched.total_steps:
                sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
    # held-out check: the encoder must have learnt the anatomy it is meant to see
    model.eval()
    hx, hg, he, hp = _synthetic_set(128, size, cfg.seed + 1)
    with torch.no_grad():
        g, e, p, _ = model(to_tensor(hx))
    metrics = {
        "heldout_grade_accuracy": float((g.argmax(1).numpy() == hg).mean()),
        "heldout_eye_accuracy": float((e.argmax(1).numpy() == he).mean()),
        "heldout_disc_position_error": float(np.abs(p[:, :2].numpy() - hp[:, :2]).mean()),
        "seconds": time.perf_counter() - t0,
    }
    ckpt.save_checkpoint(out, "feature-encoder", asdict(model_cfg), model.state_dict(),
                         extra={"metrics": metrics, "train": asdict(cfg)})
    return metrics


def load_encoder(folder: str | Path) -> FundusEncoder:
    header, state = ckpt.load_checkpoint(folder, "feature-encoder")
    model = FundusEncoder(EncoderConfig(**header["config"]))
    model.load_state_dict(state)
    model.eval()
    return model


@torch.no_grad()
def encode(model: FundusEncoder, images: np.ndarray, batch: int = 128) -> np.ndarray:
    size = model.cfg.size
    if images.shape[1] != size:
        images = np.stack([np.asarray(Image.fromarray(i).resize((size, size), Image.Resampling.LANCZOS)) for i in images])
    return torch.cat([model.embed(to_tensor(images[k:k + batch])) for k in range(0, len(images), batch)]).double().numpy()


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
