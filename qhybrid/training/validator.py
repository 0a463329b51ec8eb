"""Training the gradability validator on synthetic retinas and degradations (or a labelled folder)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from qhybrid.config import Config
from qhybrid.data.degrade import (
    DEGRADATIONS,
    GRADABLE_MAX,
    UNGRADABLE_MIN,
    VESSEL_ERASING,
    degrade,
)
from qhybrid.data.synthetic import SyntheticFundus, render_fundus
from qhybrid.data.transforms import augment, images_to_tensor, resize_images
from qhybrid.devices import resolve_device
from qhybrid.errors import InputError
from qhybrid.evaluation.validator import (
    VALIDATOR_SEED_OFFSET,
    GradabilityNet,
    ValidatorConfig,
    predict,
    roc_auc,
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
class ValidatorTrainConfig(Config):
    """``data``: 'synthetic' (``n`` clean base retinas, each shown gradable and degraded per epoch)
    or an image folder with quality labels."""

    data: str = "synthetic"
    n: int = 600
    epochs: int = 10
    batch: int = 64
    lr: float = 3e-3
    seed: int = 1234

    def __post_init__(self):
        if not isinstance(self.data, str) or not self.data:
            raise ValueError(f"ValidatorTrainConfig.data must be 'synthetic' or a folder, got {self.data!r}")
        check_positive_int(self, "n", "epochs", "batch")
        check_lr(self)
        check_seed(self)


#: Degradations a gradable image may carry mildly (severity up to ``GRADABLE_MAX``).
MILD = tuple(kind for kind in DEGRADATIONS if GRADABLE_MAX[kind] > 0)
#: Ungradable examples: every degradation, the vessel-erasing ones three times as often (a grader's
#: first reason to reject, and the generators' commonest failure).
_UNGRADABLE_DRAW = DEGRADATIONS + 2 * VESSEL_ERASING


def _make_example(base: np.ndarray, blank: np.ndarray, gradable: bool, rng, size: int):
    """Returns (augmented image, degradation name or ''). A gradable example is clean or mildly
    imperfect with its vessels kept; an ungradable one is degraded from its kind's
    ``UNGRADABLE_MIN`` severity on, more often near it (see :mod:`qhybrid.data.degrade`)."""
    if gradable:
        img = base
        if rng.random() < 0.6:
            kind = MILD[rng.integers(len(MILD))]
            img = degrade(img, kind, rng.uniform(0, GRADABLE_MAX[kind]), rng)
        return augment(img, size, rng), ""
    kind = _UNGRADABLE_DRAW[rng.integers(len(_UNGRADABLE_DRAW))]
    if kind == "no_structure" and rng.random() < 0.5:
        img = blank
    else:  # severities crowd towards the edge of gradable, where the decision is hard
        low = UNGRADABLE_MIN[kind]
        img = degrade(base, kind, low + (1 - low) * rng.random() ** 3, rng)
    return augment(img, size, rng), kind


def boundary_acceptance(model: GradabilityNet, bases: np.ndarray, size: int, seed: int) -> dict:
    """Per degradation, the share of images accepted at the edge of each class: at the largest
    gradable severity (should be accepted) and at the smallest ungradable one (should be rejected).
    These are the hardest cases the validator was trained to separate."""
    out = {}
    for kind in DEGRADATIONS:
        rng = np.random.default_rng([VALIDATOR_SEED_OFFSET, seed, 5])
        row = {}
        for edge, severity in (("gradable_max", GRADABLE_MAX[kind]), ("ungradable_min", UNGRADABLE_MIN[kind])):
            if edge == "gradable_max" and severity == 0:
                continue
            images = np.stack([degrade(b, kind, severity, rng) for b in bases])
            row[edge] = {"severity": severity,
                         "accepted": float(np.mean(predict(model, resize_images(images, size)) >= model.cfg.threshold))}
        out[kind] = row
    return out


def calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: the bin-weighted gap between the predicted probability of
    'gradable' and the observed share of gradable images, over ``bins`` equal-width bins."""
    labels, probs = np.asarray(labels, float), np.asarray(probs, float)
    which = np.minimum((probs * bins).astype(int), bins - 1)
    return float(sum(abs(probs[which == b].mean() - labels[which == b].mean()) * np.mean(which == b)
                     for b in range(bins) if np.any(which == b)))


def synthetic_bases(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Clean synthetic retinas and structure-less ones, from the validator's own seed space."""
    render = int(size * 1.25)
    gen = SyntheticFundus(render, seed=VALIDATOR_SEED_OFFSET + seed)
    bases, _ = gen.sample(n)
    blanks = np.stack([render_fundus(render, np.random.default_rng([VALIDATOR_SEED_OFFSET + seed, i, 7]),
                                     structure=False)[0] for i in range(max(8, n // 4))])
    return bases, blanks


def _real_folder(source: str, size: int, seed: int):
    from qhybrid.data.loaders import load_dataset

    train = load_dataset(source, size=int(size * 1.25), split="train")
    val = load_dataset(source, size=int(size * 1.25), split="val")
    def labelled(ds):
        keep = [i for i, lab in enumerate(ds.labels) if lab.get("gradable") is not None]
        return ds.images[keep], np.array([bool(ds.labels[i]["gradable"]) for i in keep])
    (xt, yt), (xv, yv) = labelled(train), labelled(val)
    if len(yt) < 10 or yt.all() or not yt.any():
        raise InputError(
            f"{source}: need quality labels for both gradable and ungradable images to train the validator "
            "(a labels.csv with a 'quality' column: Good / Usable / Reject)"
        )
    return xt, yt, xv, yv


def train_validator(out: str | Path, cfg: ValidatorTrainConfig, model_cfg: ValidatorConfig | None = None,
                    progress: bool = True, *, callbacks: tuple[Callback, ...] = (),
                    device: str | torch.device | None = "auto") -> dict:
    """Train a validator into ``out`` (a new folder) on ``device`` and return its held-out metrics."""
    out = Path(out)
    device = resolve_device(device)
    check_new_folder(out, resumable=False)
    model_cfg = model_cfg or ValidatorConfig()
    size = model_cfg.size
    rng = np.random.default_rng([VALIDATOR_SEED_OFFSET, cfg.seed])
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    real = None
    if cfg.data == "synthetic":
        bases, blanks = synthetic_bases(cfg.n, size, cfg.seed)
        hold_bases, hold_blanks = synthetic_bases(max(60, cfg.n // 4), size, cfg.seed + 1)
    else:
        real = _real_folder(cfg.data, size, cfg.seed)
        bases = real[0][real[1]]
        blanks = synthetic_bases(16, size, cfg.seed)[1]
        hold_bases, hold_blanks = None, None

    # fixed held-out set (own images, fixed degradations)
    hold_rng = np.random.default_rng([VALIDATOR_SEED_OFFSET, cfg.seed, 99])
    if real is None:
        hx, hy, hk = [], [], []
        for i, base in enumerate(hold_bases):
            for gradable in (True, False):
                img, kind = _make_example(base, hold_blanks[i % len(hold_blanks)], gradable, hold_rng, size)
                hx.append(img)
                hy.append(gradable)
                hk.append(kind)
        hold_x, hold_y, hold_k = np.stack(hx), np.array(hy), np.array(hk)
    else:
        hold_x = resize_images(real[2], size)
        hold_y, hold_k = real[3], np.array([""] * len(real[3]))

    model = GradabilityNet(model_cfg)
    per_epoch = 2 * len(bases) if real is None else len(real[1]) + len(bases)

    def batches(epoch: int):
        """A fresh draw of augmented examples every epoch, in a random order."""
        xs, ys = [], []
        if real is None:
            for base in bases:
                for gradable in (True, False):
                    xs.append(_make_example(base, blanks[rng.integers(len(blanks))], gradable, rng, size)[0])
                    ys.append(gradable)
        else:
            for img, lab in zip(real[0], real[1]):
                xs.append(augment(img, size, rng))
                ys.append(bool(lab))
            for base in bases:  # extra negatives: degraded copies of gradable photographs
                xs.append(_make_example(base, blanks[rng.integers(len(blanks))], False, rng, size)[0])
                ys.append(False)
        x, y = images_to_tensor(np.stack(xs), (0.0, 1.0)), torch.tensor(ys, dtype=torch.float32)
        order = torch.randperm(len(x))
        for k in range(0, len(x), cfg.batch):
            idx = order[k:k + cfg.batch]
            if len(idx) >= 2:  # BatchNorm needs two
                yield x[idx], y[idx]

    def loss_fn(batch):
        x, y = batch
        loss = F.binary_cross_entropy_with_logits(model(x), y)
        return loss, {"loss": loss.item()}

    trainer = Trainer(model, lr=cfg.lr, total_steps=cfg.epochs * int(np.ceil(per_epoch / cfg.batch)),
                      schedule=OneCycle(pct_start=0.15), callbacks=callbacks, progress=progress,
                      desc="train gradability validator", postfix=("loss",), device=device)
    trainer.fit(loss_fn, batches, epochs=cfg.epochs)
    model.eval()
    probs = predict(model, hold_x)
    pred = probs >= model_cfg.threshold
    metrics = {
        "heldout_accuracy": float(np.mean(pred == hold_y)),
        "heldout_roc_auc": roc_auc(hold_y, probs),
        "heldout_calibration_error": calibration_error(hold_y, probs),
        "heldout_images": len(hold_y),
        "per_degradation_accuracy": {k: float(np.mean(~pred[hold_k == k])) for k in DEGRADATIONS if np.any(hold_k == k)},
        "gradable_accuracy": float(np.mean(pred[hold_y])),
        "data": cfg.data,
    }
    if real is None:  # clean held-out retinas, and the severity edges on them
        clean = hold_bases[:48]
        metrics["clean_accepted"] = float(np.mean(predict(model, resize_images(clean, size)) >= model_cfg.threshold))
        edges = metrics["boundary_acceptance"] = boundary_acceptance(model, clean, size, cfg.seed)
        metrics["vessel_erased_rejected"] = float(np.mean([1 - edges[k]["ungradable_min"]["accepted"]
                                                           for k in VESSEL_ERASING]))
    metrics["seconds"] = time.perf_counter() - t0
    ckpt.save_checkpoint(out, "validator", model_cfg.to_dict(), model.state_dict(),
                         extra={"metrics": metrics, "train": cfg.to_dict()})
    from qhybrid.plots import save_image_grid
    show = np.concatenate([hold_x[hold_y][:8], hold_x[~hold_y][:16]])
    titles = [f"gradable p={p:.2f}" for p in probs[hold_y][:8]] + [
        f"{k} p={p:.2f}" for k, p in zip(hold_k[~hold_y][:16], probs[~hold_y][:16])]
    save_image_grid(show, out / "heldout.png", ncols=8, titles=titles,
                    suptitle="validator held-out examples: p = probability gradable")
    return metrics
