"""Evaluate generated images against real ones: validator, feature metrics, colour statistics.

``evaluate_sets`` is the one place where the numbers of the comparison are computed, for the
``qhybrid evaluate`` command, ``qhybrid compare`` and the demo report alike.
"""

from __future__ import annotations

import warnings

import numpy as np

from qhybrid.data.loaders import DataError, DataWarning, load_dataset
from qhybrid.errors import InputError, param
from qhybrid.evaluation.metrics import colour_stats, compare_features, wilson_interval


def evaluate_sets(real: np.ndarray, generated: np.ndarray, encoder=None, validator=None,
                  inception: str | None = None, k: int = 5, n_boot: int = 100, seed: int = 0) -> dict:
    """All figures for one generated set against one real set."""
    from qhybrid.evaluation.features import encode, inception_features
    from qhybrid.evaluation.validator import predict
    from qhybrid.evaluation.vessels import compare_vessels

    if len(generated) <= k or len(real) <= k:
        raise InputError(f"the k-NN metrics (k={k}) need more than {k} real and {k} generated images, "
                         f"got {len(real)} real and {len(generated)} generated; add images or lower {param('k')}")
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
    result["vessels"] = compare_vessels(real, generated)
    result["colour_real"] = colour_stats(real)
    result["colour_generated"] = colour_stats(generated)
    return result


def evaluate_folders(generated_paths, real: str, *, split: str = "test", n_real: int | None = None,
                     size: int | None = None, encoder=None, validator=None, inception: str | None = None,
                     k: int = 5, n_boot: int = 100, seed: int = 0) -> dict:
    """:func:`evaluate_sets` for generated image files/folders against the ``split`` of a real source
    (``synthetic``, a folder or an .npz), compared at ``size`` px (default: the generated images'
    size). ``result["notes"]`` says what was resized or skipped."""
    from qhybrid.data.loaders import load_images

    generated, _, notes = load_images(generated_paths, size=None)
    size = size or generated.shape[1]
    reference = load_dataset(real, size=size, split=split, n=n_real, seed=0).images
    if generated.shape[1] != size:
        generated, _, more = load_images(generated_paths, size=size)
        notes = list(dict.fromkeys(notes + more))
    result = evaluate_sets(reference, generated, encoder=encoder, validator=validator, inception=inception,
                           k=k, n_boot=n_boot, seed=seed)
    result["notes"] = notes
    result["size"] = size
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
