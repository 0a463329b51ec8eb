"""The gradability validator: an image-quality classifier, independent of every generator.

The paper reports the share of generated fundus images that an external validator judges
*gradable*; qhybrid measures the same with a classifier that shares nothing with the generators:
its own architecture (a BatchNorm CNN; the generators use GroupNorm U-Nets), its own seed and its
own images.

Training data: with a labelled folder (EyeQ-style quality CSV: Good / Usable / Reject) it learns
from those labels (plus synthetically degraded copies of the gradable photographs). By default it
uses built-in synthetic retinas: clean or mildly imperfect ones are gradable, badly degraded ones
(:mod:`qhybrid.data.degrade`: blur, exposure, illumination, haze, noise, eyelashes, glare, field of view
cut off, no disc or vessels) are not. Colour, exposure-preserving gain/gamma, scale and crop jitter,
JPEG re-compression and resolution changes are applied to both classes so that the decision rests on
retinal visibility, not on colours or textures peculiar to the generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from qhybrid.config import Config
from qhybrid.data.transforms import images_to_tensor, resize_images
from qhybrid.devices import module_device
from qhybrid.models import checkpoint as ckpt
from qhybrid.models.layers import FundusNormalize

#: The validator's own seed space, far from the generators' data seeds.
VALIDATOR_SEED_OFFSET = 7_919_000


@dataclass(frozen=True)
class ValidatorConfig(Config):
    """Input size (images are resized to it), network width, and the probability that counts as gradable."""

    size: int = 64
    width: int = 24
    threshold: float = 0.5

    def __post_init__(self):
        if not 16 <= self.size <= 512:
            raise ValueError(f"ValidatorConfig.size must be between 16 and 512 px, got {self.size}")
        if self.width < 1:
            raise ValueError(f"ValidatorConfig.width must be positive, got {self.width}")
        if not 0 < self.threshold < 1:
            raise ValueError(f"ValidatorConfig.threshold must lie strictly between 0 and 1, got {self.threshold}")


class GradabilityNet(ckpt.FromCheckpoint, nn.Module):
    """Small BatchNorm CNN -> one logit (gradable). ``GradabilityNet.from_checkpoint(folder)`` loads a
    trained one (its held-out metrics are in ``checkpoint_header["extra"]["metrics"]``)."""

    checkpoint_kind = "validator"
    config_class = ValidatorConfig

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


@torch.no_grad()
def predict(model: GradabilityNet, images: np.ndarray, batch: int = 128) -> np.ndarray:
    """Probability that each uint8 (N, S, S, 3) image is gradable (resized to the model's size)."""
    size = model.cfg.size
    if images.shape[1] != size or images.shape[2] != size:
        images = resize_images(images, size)
    model.eval()
    device = module_device(model)
    out = [torch.sigmoid(model(images_to_tensor(images[k:k + batch], (0.0, 1.0)).to(device))).cpu()
           for k in range(0, len(images), batch)]
    return torch.cat(out).numpy()


def label_agreement(names: list[str], probs: np.ndarray, labels: dict[str, bool], threshold: float) -> dict:
    """How the validator's verdicts agree with a user's quality labels (``labels`` from
    :func:`qhybrid.data.loaders.quality_labels`, matched by file name or stem): accuracy, ROC AUC,
    and the share accepted among images labelled gradable and ungradable."""
    from pathlib import Path

    truth, scores = [], []
    for name, p in zip(names, probs):
        key = Path(name).name if Path(name).name in labels else Path(name).stem
        if key in labels:
            truth.append(labels[key])
            scores.append(float(p))
    truth, scores = np.array(truth, bool), np.array(scores)
    accepted = scores >= threshold
    return {
        "labelled": int(len(truth)), "unlabelled": int(len(names) - len(truth)),
        "accuracy": float(np.mean(accepted == truth)) if len(truth) else float("nan"),
        "roc_auc": roc_auc(truth, scores) if len(truth) else float("nan"),
        "accepted_gradable": float(np.mean(accepted[truth])) if truth.any() else float("nan"),
        "accepted_ungradable": float(np.mean(accepted[~truth])) if (~truth).any() else float("nan"),
        "gradable": int(truth.sum()), "ungradable": int((~truth).sum()),
    }


def score_files(model: GradabilityNet, paths) -> tuple[list[str], np.ndarray, list[str]]:
    """``(names, p_gradable, notes)`` for image files and folders: each photograph is cropped to its
    fundus disc and resized as training images are (:func:`qhybrid.data.loaders.crop_to_fundus`)."""
    from PIL import Image

    from qhybrid.data.loaders import crop_to_fundus, load_images

    images, names, notes = load_images(paths, size=None)
    cropped = np.stack([crop_to_fundus(Image.fromarray(im), model.cfg.size) for im in images])
    return names, predict(model, cropped), notes
