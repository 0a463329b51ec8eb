"""Training the fundus feature encoder on synthetic retinas (grade, eye, disc and fovea, degradation)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from qhybrid.config import Config
from qhybrid.data.degrade import UNGRADABLE_RANGE, degrade
from qhybrid.data.synthetic import SyntheticFundus
from qhybrid.data.transforms import augment, images_to_tensor
from qhybrid.devices import resolve_device
from qhybrid.evaluation.features import (
    ENCODER_KINDS,
    ENCODER_SEED_OFFSET,
    EncoderConfig,
    FundusEncoder,
)
from qhybrid.models import checkpoint as ckpt
from qhybrid.training.loop import (
    Callback,
    OneCycle,
    Trainer,
    check_lr,
    check_new_folder,
    check_positive_int,
    check_seed,
)


@dataclass(frozen=True)
class EncoderTrainConfig(Config):
    """``n`` synthetic retinas, re-augmented (and a third of them degraded) every epoch."""

    n: int = 600
    epochs: int = 8
    batch: int = 64
    lr: float = 3e-3
    seed: int = 2024

    def __post_init__(self):
        check_positive_int(self, "n", "epochs", "batch")
        check_lr(self)
        check_seed(self)


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
                  progress: bool = True, *, callbacks: tuple[Callback, ...] = (),
                  device: str | torch.device | None = "auto") -> dict:
    """Train a feature encoder into ``out`` (a new folder) on ``device`` and return its held-out metrics."""
    out = Path(out)
    device = resolve_device(device)
    check_new_folder(out, resumable=False)
    model_cfg = model_cfg or EncoderConfig()
    size = model_cfg.size
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng([ENCODER_SEED_OFFSET, cfg.seed])
    t0 = time.perf_counter()
    images, grades, eyes, points = _synthetic_set(cfg.n, size, cfg.seed)
    model = FundusEncoder(model_cfg)

    def batches(epoch: int):
        """Every image once per epoch, freshly augmented; a third degraded, half mirrored (which
        swaps the eye and mirrors the disc and fovea positions)."""
        xs, kinds, flips = [], [], []
        for img in images:
            kind = 0
            if rng.random() < 0.35:
                kind = int(rng.integers(1, len(ENCODER_KINDS) - 1))  # structure-less renders are the validator's business
                img = degrade(img, ENCODER_KINDS[kind], rng.uniform(*UNGRADABLE_RANGE), rng)
            flip = rng.random() < 0.5
            if flip:
                img = img[:, ::-1]
            xs.append(augment(np.ascontiguousarray(img), size, rng, flip=False))
            kinds.append(kind)
            flips.append(flip)
        x = images_to_tensor(np.stack(xs), (0.0, 1.0))
        flips_t = torch.tensor(flips)
        eye_t = torch.as_tensor(eyes) ^ flips_t.long()
        pts = torch.as_tensor(points).clone()
        pts[flips_t, 0] *= -1
        pts[flips_t, 2] *= -1
        kinds_t = torch.as_tensor(kinds)
        order = torch.randperm(len(x))
        for k in range(0, len(x), cfg.batch):
            idx = order[k:k + cfg.batch]
            yield x[idx], torch.as_tensor(grades)[idx], eye_t[idx], kinds_t[idx], pts[idx]

    def loss_fn(batch):
        x, grade, eye, kind, pts = batch
        g, e, p, kd = model(x)
        clean = kind == 0
        loss = F.cross_entropy(g, grade) + F.cross_entropy(e, eye) + F.cross_entropy(kd, kind)
        if clean.any():  # positions are only defined on undegraded images
            loss = loss + 5 * F.mse_loss(p[clean], pts[clean])
        return loss, {"loss": loss.item()}

    trainer = Trainer(model, lr=cfg.lr, total_steps=cfg.epochs * int(np.ceil(len(images) / cfg.batch)),
                      schedule=OneCycle(pct_start=0.15), callbacks=callbacks, progress=progress,
                      desc="train feature encoder", postfix=("loss",), device=device)
    trainer.fit(loss_fn, batches, epochs=cfg.epochs)
    # held-out check: the encoder must have learnt the anatomy it is meant to see
    model.eval()
    hx, hg, he, hp = _synthetic_set(128, size, cfg.seed + 1)
    with torch.no_grad():
        g, e, p, _ = (t.cpu() for t in model(images_to_tensor(hx, (0.0, 1.0)).to(device)))
    metrics = {
        "heldout_grade_accuracy": float((g.argmax(1).numpy() == hg).mean()),
        "heldout_eye_accuracy": float((e.argmax(1).numpy() == he).mean()),
        "heldout_disc_position_error": float(np.abs(p[:, :2].numpy() - hp[:, :2]).mean()),
        "seconds": time.perf_counter() - t0,
    }
    ckpt.save_checkpoint(out, "feature-encoder", model_cfg.to_dict(), model.state_dict(),
                         extra={"metrics": metrics, "train": cfg.to_dict()})
    return metrics
