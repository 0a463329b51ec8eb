"""Figures people look at: image grids and loss curves (matplotlib, Agg backend, atomic saves)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from qhybrid import io
from qhybrid.io import pyplot as _plt


def grid_array(images: np.ndarray, ncols: int | None = None, pad: int = 2, upscale: int = 1) -> np.ndarray:
    """(N, H, W, 3) uint8 -> one (rows*H, cols*W, 3) mosaic with dark padding."""
    n, h, w, _ = images.shape
    ncols = ncols or int(np.ceil(np.sqrt(n)))
    nrows = int(np.ceil(n / ncols))
    out = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, 3), 24, dtype=np.uint8)
    for k, img in enumerate(images):
        r, c = divmod(k, ncols)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = img
    if upscale > 1:
        out = np.asarray(Image.fromarray(out).resize((out.shape[1] * upscale, out.shape[0] * upscale),
                                                     Image.Resampling.NEAREST))
    return out


def save_image_grid(images: np.ndarray, path: str | Path, ncols: int | None = None,
                    titles: Sequence[str] | None = None, suptitle: str | None = None) -> Path:
    """Save a grid of images; with ``titles`` each image gets a caption (matplotlib)."""
    path = Path(path)
    if titles is None and suptitle is None:
        upscale = 2 if images.shape[1] <= 64 else 1
        with io.atomic_path(path) as tmp:
            Image.fromarray(grid_array(images, ncols, upscale=upscale)).save(tmp, format="PNG")
        return path
    plt = _plt()
    n = len(images)
    ncols = ncols or int(np.ceil(np.sqrt(n)))
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.6 * ncols, 1.75 * nrows + (0.4 if suptitle else 0)),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, img in enumerate(images):
        ax = axes.flat[k]
        ax.imshow(img, interpolation="nearest" if img.shape[0] <= 64 else "antialiased")
        if titles is not None:
            ax.set_title(titles[k], fontsize=7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    io.save_figure(fig, path)
    plt.close(fig)
    return path


def save_loss_curves(curves: dict[str, Sequence[float]], path: str | Path, title: str,
                     xlabel: str = "step", smooth: int = 0, log: bool = True) -> Path:
    """Plot the curves into ``path`` and write the plotted numbers beside it (same name, ``.json``:
    title, x label and each curve under its legend label), for re-plotting or comparing runs."""
    io.write_json(Path(path).with_suffix(".json"), {"title": title, "xlabel": xlabel, "curves": {
        name: [float(v) for v in values] for name, values in curves.items()}})
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for name, values in curves.items():
        values = np.asarray(values, dtype=float)
        if not len(values):
            continue
        ax.plot(values, lw=0.6, alpha=0.35 if smooth else 1.0)
        if smooth and len(values) > smooth:
            kernel = np.ones(smooth) / smooth
            ax.plot(np.arange(smooth - 1, len(values)), np.convolve(values, kernel, "valid"), lw=1.5,
                    label=f"{name} (moving mean of {smooth})", color=ax.lines[-1].get_color())
        else:
            ax.lines[-1].set_label(name)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    io.save_figure(fig, path)
    plt.close(fig)
    return Path(path)


def save_side_by_side(path: str | Path, real: np.ndarray, sets: dict[str, np.ndarray], first: str = "real") -> Path:
    """One panel per set (up to 4x4 images each), the reference set first (titled ``first``)."""
    plt = _plt()
    panels = [(first, real)] + [(f"{k}", v) for k, v in sets.items()]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.8), squeeze=False)
    for ax, (title, imgs) in zip(axes[0], panels):
        ax.imshow(grid_array(imgs[:16], ncols=4))
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    io.save_figure(fig, path)
    plt.close(fig)
    return Path(path)
