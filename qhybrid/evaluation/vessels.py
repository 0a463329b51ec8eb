"""Vessel maps of fundus photographs, and the vessel measurements a grader's judgement rests on.

Why: a human grader (EyeQ-style) rejects a fundus photograph whose vessels cannot be seen. Pixel
metrics do not see them: a reconstruction that erases every vessel still scores ~33 dB PSNR,
because the black surround and the smooth retina dominate the pixels. These measurements look at
the vessels only.

The vessel map is the morphological **black top-hat** of the green channel (vessels are darkest
and most contrasted there) inside the field of view: how far each pixel lies below the closing of
the image with a disc wider than a vessel, thresholded at a fixed depth. The depth is absolute (in
green intensity, 0-1), so a blurred or smoothed image loses its vessels from the map instead of
having its faint remains rescaled into one. Against the built-in generator's ground-truth vessel
masks (:func:`qhybrid.data.synthetic.vessel_mask`, 24 images) this map reaches Dice 0.67 at 64 and
128 px, where scikit-image's Frangi and Sato vesselness filters reach 0.55/0.49 and 0.51/0.49 at
their best thresholds; a Gaussian blur of 1 px (at 64 px) removes 96% of the map
(``tests/test_vessels.py`` checks both).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: Vessel depth below the surround (green channel, 0-1) from which a pixel is a vessel pixel;
#: the best threshold against the generator's ground truth at 64 and 128 px (0.047-0.051).
VESSEL_DEPTH = 0.05
#: Field of view: brighter than this (max channel, 0-1), eroded by 2 px per 64 px of image size
#: so that the dark rim's edge does not read as a vessel.
FOV_LEVEL = 25 / 255


def _scale(size: int) -> float:
    return size / 64


def field_of_view(images: np.ndarray) -> np.ndarray:
    """Boolean (N, H, W) masks of the illuminated disc, eroded away from its rim."""
    images = _as_batch(images)
    erosion = max(1, round(2 * _scale(images.shape[2])))
    bright = images.max(axis=3) > FOV_LEVEL * 255
    return np.stack([ndimage.binary_erosion(m, iterations=erosion) for m in bright])


def vessel_depth(images: np.ndarray) -> np.ndarray:
    """Per pixel, how far the green channel lies below its surround (black top-hat with a disc of
    radius 2 px per 64 px), 0 outside the field of view: float (N, H, W) in [0, 1]."""
    return _depth_and_fov(_as_batch(images))[0]


def _depth_and_fov(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    radius = max(2, round(2 * _scale(images.shape[2])))
    footprint = _disc(radius)
    green = images[..., 1].astype(np.float64) / 255
    depth = np.stack([ndimage.grey_closing(g, footprint=footprint) - g for g in green])
    fov = field_of_view(images)
    return depth * fov, fov


def vessel_maps(images: np.ndarray, depth: float = VESSEL_DEPTH) -> np.ndarray:
    """Boolean (N, H, W) vessel maps."""
    return vessel_depth(images) > depth


def vessel_dice(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per image pair, the Dice overlap of the vessel maps of ``a`` and ``b`` (1 when neither
    shows a vessel)."""
    a, b = _as_batch(a), _as_batch(b)
    if a.shape != b.shape:
        raise ValueError(f"vessel_dice needs two image sets of one shape, got {a.shape} and {b.shape}")
    return map_dice(vessel_maps(a), vessel_maps(b))


def map_dice(ma: np.ndarray, mb: np.ndarray) -> np.ndarray:
    """Per pair of boolean (N, H, W) maps, their Dice overlap (1 when both are empty)."""
    overlap = (ma & mb).sum(axis=(1, 2))
    total = ma.sum(axis=(1, 2)) + mb.sum(axis=(1, 2))
    return np.where(total > 0, 2 * overlap / np.maximum(total, 1), 1.0)


def vessel_measures(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image: vessel density (share of the field of view in the vessel map) and depth (mean
    depth of the map's pixels below their surround, green 0-1; 0 for an image without vessels)."""
    depth, fov = _depth_and_fov(_as_batch(images))
    maps = depth > VESSEL_DEPTH
    density = maps.sum(axis=(1, 2)) / np.maximum(fov.sum(axis=(1, 2)), 1)
    mean_depth = np.array([depth[i][maps[i]].mean() if maps[i].any() else 0.0 for i in range(len(images))])
    return density, mean_depth


def vessel_stats(images: np.ndarray) -> dict:
    """Mean vessel density and depth of a set with 95% intervals (``{"value", "ci"}`` entries, like
    the other evaluation figures), and the share of images without vessels (density < 0.5%)."""
    density, depth = vessel_measures(images)
    return {"vessel_density": _mean_interval(density), "vessel_depth": _mean_interval(depth),
            "without_vessels": float(np.mean(density < 0.005))}


def compare_vessels(real: np.ndarray, generated: np.ndarray) -> dict:
    """The generated set's vessel statistics, with the real set's under ``"real"``."""
    return {**vessel_stats(generated), "real": vessel_stats(real)}


def _mean_interval(values: np.ndarray) -> dict:
    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    half = 1.96 * float(values.std(ddof=1)) / np.sqrt(len(values)) if len(values) > 1 else float("nan")
    return {"value": mean, "ci": [mean - half, mean + half]}


def _disc(radius: int) -> np.ndarray:
    y, x = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return x * x + y * y <= radius * radius


def _as_batch(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"vessel measurements need RGB images (N, H, W, 3) or (H, W, 3), got shape {images.shape}")
    return images
