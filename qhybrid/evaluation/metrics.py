"""Distribution metrics between real and generated images, with bootstrap intervals.

* Fréchet distance (FD) between Gaussian fits of two feature sets (FID's formula);
* kernel inception distance (KID): the unbiased MMD^2 with the cubic polynomial kernel,
  averaged over random subsets (Binkowski et al. 2018);
* precision / recall (Kynkäänniemi et al. 2019) and density / coverage (Naeem et al. 2020),
  from k-nearest-neighbour balls;
* colour and intensity statistics inside the field of view;
* the share of images a gradability validator accepts (Wilson interval).

Every figure comes with a percentile bootstrap interval (resampling both sets).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import linalg

from qhybrid.errors import InputError, param


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))."""
    a, b = np.asarray(a, float).reshape(len(a), -1), np.asarray(b, float).reshape(len(b), -1)
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    # fewer images than feature dimensions make both covariances singular: scipy then warns (with
    # its source line) and may return non-finite values; regularise as pytorch-fid does, quietly
    # (the caller reports small sets as such)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        covmean = linalg.sqrtm(s_a @ s_b)
    if caught or not np.all(np.isfinite(covmean)):
        eps = np.eye(len(s_a)) * 1e-6
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            covmean = linalg.sqrtm((s_a + eps) @ (s_b + eps))
    covmean = np.real(covmean)
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(covmean))


def _poly_kernel(x, y):
    return (x @ y.T / x.shape[1] + 1) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    m, n = len(x), len(y)
    kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


def kid(a: np.ndarray, b: np.ndarray, subsets: int = 50, subset_size: int = 100,
        rng: np.random.Generator | None = None) -> float:
    """Mean unbiased MMD^2 over random subsets of both sets."""
    rng = rng or np.random.default_rng(0)
    size = min(subset_size, len(a), len(b))
    vals = [mmd2_unbiased(a[rng.choice(len(a), size, replace=False)], b[rng.choice(len(b), size, replace=False)])
            for _ in range(subsets)]
    return float(np.mean(vals))


def _knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    d = _pairwise(x, x)
    return np.sort(d, axis=1)[:, k]  # column 0 is the point itself


def _pairwise(x, y):
    sq = (x**2).sum(1)[:, None] + (y**2).sum(1)[None, :] - 2 * x @ y.T
    return np.sqrt(np.maximum(sq, 0))


def prdc(real: np.ndarray, fake: np.ndarray, k: int = 5) -> dict:
    """Precision, recall, density, coverage with k-NN balls."""
    if len(real) <= k or len(fake) <= k:
        raise InputError(f"precision/recall with k={k} needs more than {k} real and {k} generated images "
                         f"(got {len(real)} and {len(fake)}); lower {param('k')} or add images")
    r_real, r_fake = _knn_radii(real, k), _knn_radii(fake, k)
    d = _pairwise(real, fake)  # (real, fake)
    inside = d <= r_real[:, None]
    return {
        "precision": float(inside.any(axis=0).mean()),
        "recall": float((d <= r_fake[None, :]).any(axis=1).mean()),
        "density": float(inside.sum(axis=0).mean() / k),
        "coverage": float((d.min(axis=1) <= r_real).mean()),
    }


def colour_stats(images: np.ndarray) -> dict:
    """Mean R, G, B and luminance spread inside the field of view, and the field-of-view share."""
    arr = images.astype(np.float64) / 255
    fov = arr.max(axis=3) > 0.06
    lum = arr.mean(axis=3)
    stats = {"fov_fraction": float(fov.mean())}
    for c, name in enumerate("RGB"):
        stats[f"mean_{name}"] = float(arr[..., c][fov].mean()) if fov.any() else 0.0
    stats["luminance_std"] = float(np.mean([lum[i][fov[i]].std() if fov[i].any() else 0 for i in range(len(arr))]))
    return stats


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (float("nan"), float("nan"))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def bootstrap(fn, real: np.ndarray, fake: np.ndarray, n: int = 100, seed: int = 0, level: float = 0.95,
              distinct: bool = False):
    """Percentile bootstrap of ``fn(real, fake)`` (a float or a dict of floats).

    ``distinct=True`` keeps each resampled point once (k-NN metrics break on duplicated points);
    that is a subsampling interval over about 63% of each set.
    """
    rng = np.random.default_rng(seed)
    point = fn(real, fake)
    draws = []
    for _ in range(n):
        ri = rng.integers(0, len(real), len(real))
        fi = rng.integers(0, len(fake), len(fake))
        if distinct:
            ri, fi = np.unique(ri), np.unique(fi)
        try:
            draws.append(fn(real[ri], fake[fi]))
        except InputError:  # a subsample too small for the k-NN metrics: skip it
            continue
    if not draws:
        raise InputError(f"too few images for bootstrap intervals; add images or lower {param('k')}")
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100

    def interval(value, samples):
        samples = np.asarray(samples, dtype=float)
        a, b = np.percentile(samples, lo), np.percentile(samples, hi)
        if distinct:  # subsamples are smaller than the full sets, which shifts k-NN metrics: keep the
            shift = value - np.median(samples)  # spread, centred on the full-set value
            a, b = a + shift, b + shift
        return [float(a), float(b)]

    if isinstance(point, dict):
        return {k: {"value": v, "ci": interval(v, [d[k] for d in draws])} for k, v in point.items()}
    return {"value": point, "ci": interval(point, draws)}


def compare_features(real: np.ndarray, fake: np.ndarray, k: int = 5, n_boot: int = 100, seed: int = 0,
                     standardise: bool = True) -> dict:
    """FD, KID and PRDC of two feature sets, each with a bootstrap interval.

    ``standardise`` z-scores both sets with the real set's per-feature mean and spread first, so
    that figures do not depend on the arbitrary scale of a learnt encoder's features.
    """
    if len(real) < 2 or len(fake) < 2:
        raise InputError(f"need at least 2 real and 2 generated images, got {len(real)} and {len(fake)}")
    if standardise:
        mu, sd = real.mean(0), real.std(0) + 1e-8
        real, fake = (real - mu) / sd, (fake - mu) / sd
    prdc(real, fake, k)  # fails early with a clear message if there are too few images
    out = {
        "fd": bootstrap(frechet_distance, real, fake, n_boot, seed),
        "kid": bootstrap(lambda a, b: kid(a, b, subsets=10, subset_size=50, rng=np.random.default_rng(seed)),
                         real, fake, n_boot, seed),
    }
    out.update(bootstrap(lambda a, b: prdc(a, b, k), real, fake, n_boot, seed, distinct=True))
    for key in ("precision", "recall", "coverage"):  # shares: keep the centred interval inside [0, 1]
        out[key]["ci"] = [max(0.0, out[key]["ci"][0]), min(1.0, out[key]["ci"][1])]
    return out
