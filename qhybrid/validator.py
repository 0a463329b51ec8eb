"""The gradability validator: an image-quality classifier, independent of every generator.

The paper reports the share of generated fundus images that an external validator judges
*gradable*; qhybrid measures the same with a classifier that shares nothing with the generators:
its own architecture (a BatchNorm CNN; the generators use GroupNorm U-Nets), its own seed and its
own images.

Training data: with a labelled folder (EyeQ-style quality CSV: Good / Usable / Reject) it learns
from those labels (plus synthetically degraded copies of the gradable photographs). By default it
uses built-in synthetic retinas: clean or mildly imperfect ones are gradable, badly degraded ones
(:mod:`qhybrid.degrade`: blur, exposure, illumination, haze, noise, eyelashes, glare, field of view
cut off, no disc or vessels) are not. Colour, exposure-preserving gain/gamma, scale and crop jitter,
JPEG re-compression and resolution changes are applied to both classes so that the decision rests on
retinal visibility, not on colours or textures peculiar to the generator.
"""

from __future__ import annotations

import io as _io
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
from .degrade import DEGRADATIONS, GRADABLE_RANGE, UNGRADABLE_RANGE, degrade
from .errors import InputError
from .layers import FundusNormalize
from .synthetic import SyntheticFundus, render_fundus

#: The validator's own seed space, far from the generators' data seeds.
VALIDATOR_SEED_OFFSET = 7_919_000


@dataclass
class ValidatorConfig:
    size: int = 64
    width: int = 24
    threshold: float = 0.5


class GradabilityNet(nn.Module):
    """Small BatchNorm CNN -> one logit (gradable)."""

    def __init__(self, cfg: ValidatorConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.width

        def block(cin, cout, stride):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                                 nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

        self.features = nn.Sequential(
            block(3, w, 1), block(w, 2 * w, 2), block(2 * w, 2 * w, 1), block(2 * w, 4 * w, 2),
            block(4 * w, 4 * w, 1), block(4 * w, 6 * w, 2), block(6 * w, 8 * w, 2),
        )
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(16 * w, 1))
        self.normalize = FundusNormalize()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: float images in [0, 1], (B, 3, size, size) -> logits (B,)."""
        h = self.features(self.normalize(x))
        pooled = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)
        return self.head(pooled).squeeze(1)


# --- data ---------------------------------------------------------------------------------------
def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    buf = _io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def augment(img: np.ndarray, size: int, rng: np.random.Generator, flip: bool = True) -> np.ndarray:
    """Label-preserving jitter: colour, gain/gamma (mild), scale/crop, flips, resolution, JPEG."""
    h = img.shape[0]
    pil = Image.fromarray(img)
    scale = rng.uniform(0.85, 1.0)
    crop = int(round(h * scale))
    x0, y0 = rng.integers(0, h - crop + 1, 2)
    pil = pil.crop((x0, y0, x0 + crop, y0 + crop))
    if rng.random() < 0.3:  # a lower-resolution source
        small = int(size * rng.uniform(0.45, 0.9))
        pil = pil.resize((small, small), Image.Resampling.BILINEAR)
    pil = pil.resize((size, size), [Image.Resampling.BILINEAR, Image.Resampling.BICUBIC,
                                    Image.Resampling.LANCZOS][rng.integers(3)])
    if flip and rng.random() < 0.5:
        pil = pil.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if rng.random() < 0.3:
        pil = pil.rotate(rng.uniform(-20, 20), resample=Image.Resampling.BILINEAR)
    arr = np.asarray(pil).astype(np.float32) / 255
    gains = rng.uniform(0.85, 1.15, 3) * rng.uniform(0.85, 1.15)
    arr = np.clip(arr * gains, 0, 1) ** rng.uniform(0.85, 1.2)
    grey = arr.mean(axis=2, keepdims=True)
    arr = np.clip(grey + (arr - grey) * rng.uniform(0.75, 1.3), 0, 1)
    out = (arr * 255 + 0.5).astype(np.uint8)
    if rng.random() < 0.4:
        out = _jpeg(out, rng.integers(40, 96))
    return out


def _make_example(base: np.ndarray, blank: np.ndarray, gradable: bool, rng, size: int):
    """Returns (augmented image, degradation name or '')."""
    if gradable:
        img = base
        if rng.random() < 0.6:
            kind = DEGRADATIONS[rng.integers(len(DEGRADATIONS) - 1)]  # never 'no_structure'
            img = degrade(img, kind, rng.uniform(*GRADABLE_RANGE), rng)
        return augment(img, size, rng), ""
    kind = DEGRADATIONS[rng.integers(len(DEGRADATIONS))]
    if kind == "no_structure":
        img = blank if rng.random() < 0.7 else degrade(base, kind, 1.0, rng)
    else:
        img = degrade(base, kind, rng.uniform(*UNGRADABLE_RANGE), rng)
    return augment(img, size, rng), kind


def synthetic_bases(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Clean synthetic retinas and structure-less ones, from the validator's own seed space."""
    render = int(size * 1.25)
    gen = SyntheticFundus(render, seed=VALIDATOR_SEED_OFFSET + seed)
    bases, _ = gen.sample(n)
    blanks = np.stack([render_fundus(render, np.random.default_rng([VALIDATOR_SEED_OFFSET + seed, i, 7]),
                                     structure=False)[0] for i in range(max(8, n // 4))])
    return bases, blanks


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255


# --- metrics ------------------------------------------------------------------------------------
def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half)."""
    labels = np.asarray(labels).astype(bool)
    pos, neg = scores[labels], scores[~labels]
    if not len(pos) or not len(neg):
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    values = np.concatenate([pos, neg])[order]
    ranks[order] = np.arange(1, len(order) + 1)
    # average ranks over ties
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[i]:
            j += 1
        if j > i:
            ranks[order[i:j + 1]] = (i + j + 2) / 2
        i = j + 1
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


# --- training -----------------------------------------------------------------------------------
@dataclass
class ValidatorTrainConfig:
    data: str = "synthetic"
    n: int = 600
    epochs: int = 10
    batch: int = 64
    lr: float = 3e-3
    seed: int = 1234


def _real_folder(source: str, size: int, seed: int):
    from .data import load_dataset

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
                    progress: bool = True) -> dict:
    out = Path(out)
    if (out / ckpt.CONFIG_NAME).exists():
        raise InputError(f"{out} already holds a checkpoint; choose another --out")
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
        hold_x = np.stack([np.asarray(Image.fromarray(i).resize((size, size), Image.Resampling.LANCZOS)) for i in real[2]])
        hold_y, hold_k = real[3], np.array([""] * len(real[3]))

    model = GradabilityNet(model_cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    per_epoch = 2 * len(bases) if real is None else len(real[1]) + len(bases)
    steps = cfg.epochs * int(np.ceil(per_epoch / cfg.batch))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(2, steps), pct_start=0.15)
    bar = tqdm(total=steps, disable=not progress, desc="train gradability validator", unit="step")
    losses = []
    for epoch in range(cfg.epochs):
        xs, ys = [], []
        if real is None:
            for i, base in enumerate(bases):
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
        x, y = to_tensor(np.stack(xs)), torch.tensor(ys, dtype=torch.float32)
        order = torch.randperm(len(x))
        model.train()
        for k in range(0, len(x), cfg.batch):
            idx = order[k:k + cfg.batch]
            if len(idx) < 2:
                continue
            loss = F.binary_cross_entropy_with_logits(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if sched.last_epoch + 1 < sched.total_steps:
                sched.step()
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
    model.eval()
    probs = predict(model, hold_x)
    pred = probs >= model_cfg.threshold
    metrics = {
        "heldout_accuracy": float(np.mean(pred == hold_y)),
        "heldout_roc_auc": roc_auc(hold_y, probs),
        "heldout_images": int(len(hold_y)),
        "per_degradation_accuracy": {k: float(np.mean(~pred[hold_k == k])) for k in DEGRADATIONS if np.any(hold_k == k)},
        "gradable_accuracy": float(np.mean(pred[hold_y])),
        "data": cfg.data,
        "seconds": time.perf_counter() - t0,
    }
    ckpt.save_checkpoint(out, "validator", asdict(model_cfg), model.state_dict(),
                         extra={"metrics": metrics, "train": asdict(cfg)})
    from .plots import save_image_grid
    show = np.concatenate([hold_x[hold_y][:8], hold_x[~hold_y][:16]])
    titles = [f"gradable p={p:.2f}" for p in probs[hold_y][:8]] + [
        f"{k} p={p:.2f}" for k, p in zip(hold_k[~hold_y][:16], probs[~hold_y][:16])]
    save_image_grid(show, out / "heldout.png", ncols=8, titles=titles,
                    suptitle="validator held-out examples: p = probability gradable")
    return metrics


@torch.no_grad()
def predict(model: GradabilityNet, images: np.ndarray, batch: int = 128) -> np.ndarray:
    """Probability that each uint8 (N, S, S, 3) image is gradable (resized to the model's size)."""
    size = model.cfg.size
    if images.shape[1] != size or images.shape[2] != size:
        images = np.stack([np.asarray(Image.fromarray(i).resize((size, size), Image.Resampling.LANCZOS))
                           for i in images])
    model.eval()
    out = [torch.sigmoid(model(to_tensor(images[k:k + batch]))) for k in range(0, len(images), batch)]
    return torch.cat(out).numpy()


def load_validator(folder: str | Path) -> tuple[GradabilityNet, dict]:
    header, state = ckpt.load_checkpoint(folder, "validator")
    try:
        model = GradabilityNet(ValidatorConfig(**header["config"]))
        model.load_state_dict(state)
    except (TypeError, RuntimeError) as exc:
        raise ckpt.CheckpointError(f"{folder}: not a usable validator ({str(exc).splitlines()[0]})") from None
    model.eval()
    return model, header
