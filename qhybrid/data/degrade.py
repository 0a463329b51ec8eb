"""Realistic ways a fundus photograph becomes ungradable, for training the gradability validator.

Each degradation takes a uint8 (H, W, 3) image, a severity in [0, 1] and a random generator. At
high severity the image is ungradable (a grader could not assess the retina); at low severity the
same operation is a harmless imperfection, and the validator is trained to tell the two apart, so
it learns *how much* blur or darkness makes an image useless rather than *whether* any is present.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

DEGRADATIONS = (
    "defocus", "motion_blur", "underexposure", "overexposure", "uneven_illumination", "haze",
    "noise", "eyelashes", "edge_glare", "fov_cut", "no_structure",
)
#: Severity above which a degradation makes the image ungradable, below which it stays gradable.
UNGRADABLE_RANGE = (0.6, 1.0)
GRADABLE_RANGE = (0.0, 0.25)


def _f(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float32) / 255.0


def _u8(arr: np.ndarray) -> np.ndarray:
    return np.clip(arr * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _fov(img: np.ndarray) -> np.ndarray:
    return (img.max(axis=2) > 12).astype(np.float32)[..., None]


def defocus(img, s, rng):
    sigma = (0.2 + 3.8 * s) * img.shape[0] / 64
    return np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(sigma)))


def motion_blur(img, s, rng):
    length = max(1, int(round((1 + 13 * s) * img.shape[0] / 64)))
    angle = rng.uniform(0, math.pi)
    dx, dy = math.cos(angle), math.sin(angle)
    out = np.zeros(img.shape, np.float32)
    for k in range(length):
        off = k - (length - 1) / 2
        out += np.roll(np.roll(img.astype(np.float32), int(round(off * dy)), 0), int(round(off * dx)), 1)
    return np.clip(out / length, 0, 255).astype(np.uint8)


def underexposure(img, s, rng):
    gain = 1.0 - 0.88 * s
    arr = _f(img) * gain
    arr += rng.normal(0, 0.01 + 0.02 * s, arr.shape) * _fov(img)
    return _u8(arr)


def overexposure(img, s, rng):
    arr = _f(img)
    gain = 1.0 + 2.8 * s
    washed = 1 - (1 - np.clip(arr * gain, 0, 1)) * (1 - 0.5 * s)
    return _u8(washed * _fov(img))


def uneven_illumination(img, s, rng):
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w) * 2 - 1
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (xx * math.cos(angle) + yy * math.sin(angle) + 1) / 2  # 0..1 across the image
    shade = 1 - min(1.0, 1.25 * s) * np.clip((ramp - 0.25) / 0.5, 0, 1) ** 1.2
    return _u8(_f(img) * shade[..., None])


def haze(img, s, rng):
    arr = _f(defocus(img, 0.35 * s, rng))
    veil = np.array([0.78, 0.72, 0.66]) * rng.uniform(0.85, 1.05)
    alpha = 0.75 * s
    return _u8((arr * (1 - alpha) + veil * alpha) * _fov(img))


def noise(img, s, rng):
    arr = _f(img) + rng.normal(0, 0.01 + 0.25 * s**2, img.shape)
    speckle = rng.random(img.shape[:2]) < 0.06 * s**2
    arr[speckle] = rng.random((int(speckle.sum()), 1))
    return _u8(arr)


def eyelashes(img, s, rng):
    h, w = img.shape[:2]
    scale = 4
    layer = Image.new("L", (w * scale, h * scale), 0)
    draw = ImageDraw.Draw(layer)
    top = rng.random() < 0.6
    for _ in range(int(2 + 14 * s)):
        x0 = rng.uniform(-0.1, 1.1) * w * scale
        y0 = (rng.uniform(-0.1, 0.15) if top else rng.uniform(0.85, 1.1)) * h * scale
        length = rng.uniform(0.3, 0.5 + 0.5 * s) * h * scale
        angle = (math.pi / 2 if top else -math.pi / 2) + rng.normal(0, 0.5)
        pts = []
        for k in range(12):
            bend = 0.15 * math.sin(k / 11 * math.pi) * rng.uniform(-1, 1)
            pts.append((x0 + k / 11 * length * math.cos(angle + bend), y0 + k / 11 * length * math.sin(angle + bend)))
        draw.line(pts, fill=255, width=int(scale * rng.uniform(1.0, 2.5 + 3 * s) * w / 64))
    mask = np.asarray(layer.resize((w, h), Image.Resampling.BOX).filter(ImageFilter.GaussianBlur(1.2 * w / 64)),
                      np.float32)[..., None] / 255
    return _u8(_f(img) * (1 - 0.9 * mask) + 0.03 * mask)


def edge_glare(img, s, rng):
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w) * 2 - 1
    angle = rng.uniform(0, 2 * math.pi)
    cx, cy = 0.85 * math.cos(angle), 0.85 * math.sin(angle)
    d = np.hypot(xx - cx, yy - cy)
    glare = np.exp(-((d / (0.25 + 0.55 * s)) ** 2)) * (0.3 + 0.7 * s)
    colour = np.array([1.0, 0.95, 0.85])
    arr = _f(img)
    return _u8((arr * (1 - glare[..., None]) + colour * glare[..., None]) * _fov(img))


def fov_cut(img, s, rng):
    h, w = img.shape[:2]
    shift = int(round((0.05 + 0.5 * s) * w))
    angle = rng.uniform(0, 2 * math.pi)
    dy, dx = int(round(shift * math.sin(angle))), int(round(shift * math.cos(angle)))
    out = np.zeros_like(img)
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = img[ys, xs]
    return out


def no_structure(img, s, rng):
    """A retina without disc and vessels: re-rendered by the caller (see ``degrade``); for a real
    photograph, a strong median smoothing that erases vessels and blends the disc in."""
    k = 2 * int(1 + 4 * s * img.shape[0] / 64) + 1
    smooth = Image.fromarray(img).filter(ImageFilter.MedianFilter(min(k, 15)))
    return np.asarray(smooth.filter(ImageFilter.GaussianBlur(1.5 * s * img.shape[0] / 64)))


_FUNCTIONS = {
    "defocus": defocus, "motion_blur": motion_blur, "underexposure": underexposure,
    "overexposure": overexposure, "uneven_illumination": uneven_illumination, "haze": haze,
    "noise": noise, "eyelashes": eyelashes, "edge_glare": edge_glare, "fov_cut": fov_cut,
    "no_structure": no_structure,
}


def degrade(img: np.ndarray, kind: str, severity: float, rng: np.random.Generator) -> np.ndarray:
    """Apply one named degradation at ``severity`` in [0, 1]."""
    if kind not in _FUNCTIONS:
        raise ValueError(f"unknown degradation {kind!r}; allowed: {', '.join(DEGRADATIONS)}")
    if not 0 <= severity <= 1:
        raise ValueError(f"severity must be in [0, 1], got {severity}")
    return _FUNCTIONS[kind](np.ascontiguousarray(img), float(severity), rng)
