"""Realistic ways a fundus photograph becomes ungradable, for training the gradability validator.

Each degradation takes a uint8 (H, W, 3) image, a severity in [0, 1] and a random generator. At
high severity the image is ungradable (a grader could not assess the retina); at low severity the
same operation is a harmless imperfection, and the validator is trained to tell the two apart, so
it learns *how much* blur or darkness makes an image useless rather than *whether* any is present.

Where "harmless" ends is calibrated on the vessels, because a grader rejects an image whose vessels
cannot be seen: :data:`GRADABLE_MAX` is, per degradation, the largest severity after which the
built-in retinas' vessel maps still overlap the clean image's with Dice >= 0.7 (64 px), and
:data:`UNGRADABLE_MIN` the severity from which the vessel-erasing ones (blur, haze, noise, low-pass,
smoothing) leave Dice <= 0.35 (``tests/test_degrade.py`` checks both). The last three
are what generators and autoencoders do to a fundus image: a low-pass (an image decoded from too
small a latent), edge-preserving smoothing (the smooth, blotchy retina of an under-trained VAE) and
heavy JPEG blocking.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

DEGRADATIONS = (
    "defocus", "motion_blur", "underexposure", "overexposure", "uneven_illumination", "haze",
    "noise", "eyelashes", "edge_glare", "fov_cut", "low_pass", "smoothing", "jpeg", "no_structure",
)
#: The degradations that erase or smear the vessels first (what a grader notices first).
VESSEL_ERASING = ("defocus", "motion_blur", "haze", "noise", "low_pass", "smoothing", "no_structure")
#: Severity range that makes an image ungradable, by default (the feature encoder's training uses it).
UNGRADABLE_RANGE = (0.6, 1.0)
#: Per degradation, the largest severity that leaves the image gradable (vessels kept: Dice >= 0.7).
GRADABLE_MAX = {
    "defocus": 0.06, "motion_blur": 0.05, "underexposure": 0.15, "overexposure": 0.2,
    "uneven_illumination": 0.3, "haze": 0.12, "noise": 0.1, "eyelashes": 0.3, "edge_glare": 0.4,
    "fov_cut": 0.1, "low_pass": 0.0, "smoothing": 0.1, "jpeg": 0.1, "no_structure": 0.0,
}
#: Per degradation, the smallest severity that makes the image ungradable: the vessel-erasing ones
#: as soon as the vessels are gone (Dice <= 0.35; motion blur and smoothing from Dice <= 0.15, since
#: below that they keep the thickest vessels sharp, a borderline a grader may accept), the others at 0.6.
UNGRADABLE_MIN = {
    **{kind: UNGRADABLE_RANGE[0] for kind in DEGRADATIONS},
    "defocus": 0.2, "motion_blur": 0.5, "haze": 0.4, "noise": 0.4,
    "low_pass": 0.4, "smoothing": 0.6, "no_structure": 0.3,
}


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


def low_pass(img, s, rng):
    """Down- and up-sampled: the detail a decoder from a small latent cannot put back."""
    h, w = img.shape[:2]
    factor = 1.0 + 3.0 * s
    small = (max(4, round(w / factor)), max(4, round(h / factor)))
    down = Image.fromarray(img).resize(small, Image.Resampling.BOX)
    return np.asarray(down.resize((w, h), Image.Resampling.BILINEAR))


def smoothing(img, s, rng):
    """Edge-preserving smoothing (a median then a light blur): flat, blotchy retina, vessels gone.
    Done at 64 px whatever the image size (a median's kernel cannot shrink below 3 px), so a
    severity means the same on an 80-px training base and on a 64-px image."""
    h, w = img.shape[:2]
    out = Image.fromarray(img)
    if (h, w) != (64, 64):
        out = out.resize((64, 64), Image.Resampling.LANCZOS)
    k = 2 * int(round(2.5 * s)) + 1
    if k > 1:
        out = out.filter(ImageFilter.MedianFilter(k))
    out = out.filter(ImageFilter.GaussianBlur(0.8 * s))
    if (h, w) != (64, 64):
        out = out.resize((w, h), Image.Resampling.LANCZOS)
    return np.asarray(out)


def recompress(img: np.ndarray, quality: int) -> np.ndarray:
    """The image saved as JPEG at ``quality`` and read back (the one JPEG round trip of qhybrid)."""
    import io

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def jpeg(img, s, rng):
    """JPEG compression from quality 92 (s = 0) through 16 (s = 0.6) to 2 (s = 1): 8x8 blocks and
    ringing that break thin vessels into fragments."""
    return recompress(img, int(round(90 * (1 - s) ** 2)) + 2)


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
    "low_pass": low_pass, "smoothing": smoothing, "jpeg": jpeg, "no_structure": no_structure,
}


def degrade(img: np.ndarray, kind: str, severity: float, rng: np.random.Generator) -> np.ndarray:
    """Apply one named degradation at ``severity`` in [0, 1]."""
    if kind not in _FUNCTIONS:
        raise ValueError(f"unknown degradation {kind!r}; allowed: {', '.join(DEGRADATIONS)}")
    if not 0 <= severity <= 1:
        raise ValueError(f"severity must be in [0, 1], got {severity}")
    return _FUNCTIONS[kind](np.ascontiguousarray(img), float(severity), rng)
