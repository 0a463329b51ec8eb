"""Image array <-> tensor conversions, resizing and label-preserving augmentation."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from qhybrid.data.degrade import recompress


def augment(img: np.ndarray, size: int, rng: np.random.Generator, flip: bool = True) -> np.ndarray:
    """Label-preserving jitter: colour, gain/gamma (mild), scale/crop, flips, resolution, JPEG.

    Every jitter keeps the vessels visible (a lower-resolution source at most 25% smaller, JPEG
    quality from 70): a grader's verdict rests on them, so jitter that erased them would teach the
    validator that vessel-less images are gradable."""
    h = img.shape[0]
    pil = Image.fromarray(img)
    scale = rng.uniform(0.85, 1.0)
    crop = int(round(h * scale))
    x0, y0 = rng.integers(0, h - crop + 1, 2)
    pil = pil.crop((x0, y0, x0 + crop, y0 + crop))
    if rng.random() < 0.3:  # a lower-resolution source
        small = int(size * rng.uniform(0.75, 0.95))
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
        out = recompress(out, rng.integers(70, 96))
    return out


# --- data ---------------------------------------------------------------------------------------
#: The two value ranges the networks take: the generators [-1, 1], the evaluators [0, 1].
VALUE_RANGES = ((-1.0, 1.0), (0.0, 1.0))


def images_to_tensor(images: np.ndarray, value_range: tuple[float, float] = (-1.0, 1.0)) -> torch.Tensor:
    """uint8 images (N, H, W, 3) -> float32 (N, 3, H, W) in ``value_range``: (-1, 1) for the VAE and the
    denoisers, (0, 1) for the validator and the feature encoder (whose normalisation is fixed)."""
    if tuple(value_range) not in VALUE_RANGES:
        raise ValueError(f"value_range must be one of {VALUE_RANGES}, got {value_range}")
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return x / 255 if value_range[0] == 0 else x / 127.5 - 1


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 images (N, H, W, 3) -> (N, size, size, 3) with Lanczos (unchanged when already that size)."""
    if images.shape[1:3] == (size, size):
        return images
    return np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.LANCZOS)) for im in images])


def tensor_to_images(tensor: torch.Tensor) -> np.ndarray:
    """Inverse of :func:`images_to_tensor` (clipped): uint8 (N, H, W, 3)."""
    arr = ((tensor.detach().clamp(-1, 1) + 1) * 127.5).round().byte()
    return arr.permute(0, 2, 3, 1).cpu().numpy()
