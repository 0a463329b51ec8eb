"""Training the fundus feature encoder on synthetic retinas."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from qhybrid.data.degrade import UNGRADABLE_RANGE, degrade
from qhybrid.data.synthetic import SyntheticFundus
from qhybrid.data.transforms import augment, to_tensor
from qhybrid.errors import InputError
from qhybrid.evaluation.features import (
    _KINDS,
    ENCODER_SEED_OFFSET,
    EncoderConfig,
    FundusEncoder,
)
from qhybrid.models import checkpoint as ckpt


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
