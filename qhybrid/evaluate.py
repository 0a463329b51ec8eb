"""Evaluate generated images against real ones: validator, feature metrics, colour statistics.

``evaluate_sets`` is the one place where the numbers of the comparison are computed, for the
``qhybrid evaluate`` command, ``qhybrid compare`` and the demo report alike.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from .data import DataError, DataWarning, load_dataset
from .errors import InputError
from .metrics import colour_stats, compare_features, wilson_interval


def load_images(paths, size: int | None = None) -> tuple[np.ndarray, list[str], list[str]]:
    """Images from files and folders (PNG/JPEG/...); returns (uint8 array, names, notes).

    Images of different sizes are resized to ``size`` (default: the most common size), with a note.
    """
    from .data import IMAGE_SUFFIXES

    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
            if (p / "samples.json").is_file():  # a 'qhybrid sample' folder: grid.png only shows the samples
                found = sorted(p.glob("sample_*.png"))
            if not found:
                raise DataError(f"folder {p} contains no images ({', '.join(IMAGE_SUFFIXES)})")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(f"{p} does not exist")
    images, names, notes = [], [], []
    for f in files:
        try:
            with Image.open(f) as img:
                images.append(np.asarray(img.convert("RGB")))
                names.append(str(f))
        except (OSError, ValueError) as exc:
            msg = f"skipping unreadable image {f}: {exc}"
            warnings.warn(msg, DataWarning, stacklevel=2)
            notes.append(msg)
    if not images:
        raise DataError("no readable images among " + ", ".join(map(str, paths)))
    sizes = [im.shape[:2] for im in images]
    if size is None:
        common = max(set(sizes), key=sizes.count)
        size = common[0]
    if any(s != (size, size) for s in sizes):
        n_diff = sum(s != (size, size) for s in sizes)
        notes.append(f"resized {n_diff} image(s) of other sizes to {size}x{size}")
        images = [im if im.shape[:2] == (size, size) else
                  np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.LANCZOS)) for im in images]
    return np.stack(images), names, notes


def evaluate_sets(real: np.ndarray, generated: np.ndarray, encoder=None, validator=None,
                  inception: str | None = None, k: int = 5, n_boot: int = 100, seed: int = 0) -> dict:
    """All figures for one generated set against one real set."""
    from .features import encode, inception_features
    from .validator import predict

    if len(generated) <= k or len(real) <= k:
        raise InputError(f"the k-NN metrics (k={k}) need more than {k} real and {k} generated images, "
                         f"got {len(real)} real and {len(generated)} generated; add images or lower --k")
    result: dict = {"n_real": int(len(real)), "n_generated": int(len(generated))}
    if validator is not None:
        p_gen = predict(validator, generated)
        p_real = predict(validator, real)
        ok = int((p_gen >= validator.cfg.threshold).sum())
        ok_real = int((p_real >= validator.cfg.threshold).sum())
        result["gradable"] = {"value": ok / len(generated), "ci": list(wilson_interval(ok, len(generated))),
                              "mean_probability": float(p_gen.mean())}
        result["gradable_real"] = {"value": ok_real / len(real), "ci": list(wilson_interval(ok_real, len(real)))}
    if encoder is not None:
        result["fundus_features"] = compare_features(encode(encoder, real), encode(encoder, generated),
                                                     k=k, n_boot=n_boot, seed=seed)
    if inception:
        result["inception"] = compare_features(inception_features(inception, real),
                                               inception_features(inception, generated), k=k, n_boot=n_boot, seed=seed)
    result["colour_real"] = colour_stats(real)
    result["colour_generated"] = colour_stats(generated)
    return result


def real_reference(source: str, size: int, n: int | None, seed: int = 0, split: str = "test") -> np.ndarray:
    """The real set: the test split of the source (held out from every model's training)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        try:
            return load_dataset(source, size=size, split=split, n=n, seed=seed).images
        except DataError:
            if split != "test":
                raise
            return load_dataset(source, size=size, split="all", n=n, seed=seed).images


def fmt(entry, scale: float = 1.0, digits: int = 3) -> str:
    if entry is None:
        return "–"
    v, (lo, hi) = entry["value"] * scale, entry["ci"]
    return f"{v:.{digits}f} [{lo * scale:.{digits}f}, {hi * scale:.{digits}f}]"
