"""Fundus data: one entry point, :func:`load_dataset`, for the built-in generator and real files.

Sources:

* ``"synthetic"`` — :class:`qhybrid.data.synthetic.SyntheticFundus`, deterministic per seed and split;
* an image folder (jpg/png/tif/bmp, any size and aspect) with an optional labels CSV: each image is
  cropped to the fundus circle by thresholding the dark surround, padded square and resized;
* a MedMNIST-style ``.npz`` (``train_images`` / ``val_images`` / ``test_images`` and their
  ``_labels``; grayscale or RGB; any size).

Images come back as uint8 arrays (N, size, size, 3); :meth:`FundusDataset.tensor` gives the
float tensor in [-1, 1] that the models use. Unreadable images are skipped with a warning naming
the file; a source with no readable image is an error.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from qhybrid.data.synthetic import MAX_SIZE as MAX_SIZE_SYN
from qhybrid.data.synthetic import MIN_SIZE as MIN_SIZE_SYN
from qhybrid.data.synthetic import SyntheticFundus
from qhybrid.data.transforms import images_to_tensor, resize_images
from qhybrid.errors import InputError, param

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
SPLITS = ("train", "val", "test", "all")
MIN_LOAD_SIZE, MAX_LOAD_SIZE = 16, 512
#: Default number of synthetic images per split.
SYNTHETIC_DEFAULT_N = {"train": 512, "val": 64, "test": 128, "all": 704}
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2, "all": 3}
_FILE_COLUMNS = ("file", "filename", "image", "image_id", "id_code", "name", "path")
_GRADE_COLUMNS = ("grade", "level", "diagnosis", "dr_grade", "dr", "label")
_QUALITY_COLUMNS = ("quality", "gradable", "gradability")
#: EyeQ-style quality labels -> gradable?  (0 Good, 1 Usable, 2 Reject)
_QUALITY_WORDS = {"good": True, "usable": True, "reject": False, "0": True, "1": True, "2": False,
                  "true": True, "false": False, "yes": True, "no": False}


class DataWarning(UserWarning):
    """Something in the data was skipped or changed; the message names the file."""


class DataError(InputError):
    """The data source cannot be used; the message says why and what to do."""


@dataclass
class FundusDataset:
    """Images (N, size, size, 3) uint8 with one label dict per image."""

    images: np.ndarray
    labels: list[dict]
    source: str
    split: str
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def size(self) -> int:
        return int(self.images.shape[1])

    def tensor(self) -> torch.Tensor:
        """Float32 tensor (N, 3, size, size) scaled to [-1, 1]."""
        return images_to_tensor(self.images)

    def grades(self) -> np.ndarray:
        return np.array([lab.get("grade", -1) if lab.get("grade") is not None else -1
                         for lab in self.labels])






def _check_size(size) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise DataError(f"image size must be an integer number of pixels, got {size!r}")
    if not MIN_LOAD_SIZE <= size <= MAX_LOAD_SIZE:
        raise DataError(f"image size must be between {MIN_LOAD_SIZE} and {MAX_LOAD_SIZE} px, got {size}")
    return int(size)


#: Largest synthetic set kept in memory once drawn (bytes of uint8 pixels; 8 sets at most).
_SYNTHETIC_CACHE_BYTES = 32 * 2**20


@functools.lru_cache(maxsize=8)
def _synthetic_split(size: int, seed: int, n: int) -> tuple[np.ndarray, tuple[dict, ...]]:
    """The first ``n`` images of a synthetic split, rendered once per process: the demo's three
    denoisers train on the same 512 images, and drawing one takes 25-45 ms of pure Python (the
    vessel tree), 13-23 s per set. Callers get copies (``load_dataset``); the cached array is
    read-only."""
    images, labels = SyntheticFundus(size=size, seed=seed).sample(n)
    images.flags.writeable = False
    return images, tuple(lab.to_dict() for lab in labels)


def load_dataset(source: str | Path, size: int = 64, split: str = "train", n: int | None = None,
                 seed: int = 0, labels: str | Path | None = None) -> FundusDataset:
    """Load ``source`` (``"synthetic"``, an image folder or an ``.npz`` file) at ``size`` px.

    ``split`` is one of train/val/test/all. Folders without a ``split`` column in their labels
    CSV are split 80/10/10 by a hash of the file name (stable across runs and machines).
    ``n`` caps the number of images (synthetic: how many to draw).
    """
    size = _check_size(size)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    if n is not None and n <= 0:
        raise DataError(f"the number of images must be positive, got {n}")
    if str(source) == "synthetic":
        count = n if n is not None else SYNTHETIC_DEFAULT_N[split]
        if not MIN_SIZE_SYN <= size <= MAX_SIZE_SYN:
            raise DataError(
                f"the synthetic generator draws {MIN_SIZE_SYN} to {MAX_SIZE_SYN} px images, got {size}"
            )
        split_seed = seed * 10 + _SPLIT_IDS[split]
        if count * size * size * 3 <= _SYNTHETIC_CACHE_BYTES:
            images, labs = _synthetic_split(size, split_seed, count)
            images, labs = images.copy(), [dict(lab) for lab in labs]
        else:  # too large to keep: drawn for this caller alone
            images, drawn = SyntheticFundus(size=size, seed=split_seed).sample(count)
            labs = [lab.to_dict() for lab in drawn]
        return FundusDataset(images, labs, "synthetic", split,
                             ["synthetic fundus images (qhybrid.data.synthetic), not clinical data"])
    path = Path(source)
    if not path.exists():
        raise DataError(
            f"data source {str(source)!r} does not exist; give 'synthetic', an image folder or an .npz file"
        )
    if path.is_dir():
        if (path / "config.json").is_file() and (path / "model.safetensors").exists():
            raise DataError(f"{path} is a qhybrid checkpoint folder, not image data; give 'synthetic', an image "
                            "folder or an .npz file")
        return _load_folder(path, size, split, n, labels)
    if path.suffix.lower() == ".npz":
        return _load_npz(path, size, split, n)
    raise DataError(
        f"data source {str(source)!r} is a file but not an .npz; give 'synthetic', an image folder or an .npz file"
    )


# --- image folders -----------------------------------------------------------------------------
def _as_rgb(image: Image.Image) -> np.ndarray:
    """Float RGB in [0, 255]. 16-bit and 32-bit grey images are scaled, not clipped (Pillow's
    ``convert("RGB")`` clips them at 255, which turns a 16-bit photograph white)."""
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        grey = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(grey.max()), 1.0)
        if image.mode in ("I", "F") and top <= 255:
            top = 255.0
        grey = np.clip(grey / top * 255.0, 0, 255).astype(np.float32)
        return np.repeat(grey[:, :, None], 3, axis=2)
    return np.asarray(image.convert("RGB"), dtype=np.float32)


def crop_to_fundus(image: Image.Image, size: int, threshold: float = 0.08) -> np.ndarray:
    """Crop to the bright fundus disc (dark surround removed), pad square, resize.

    The threshold is a fraction of the image's 99th-percentile brightness, so underexposed
    photographs still find their field of view.
    """
    rgb = _as_rgb(image)
    lum = rgb.max(axis=2)
    ref = float(np.percentile(lum, 99)) if lum.size else 0.0
    mask = lum > max(threshold * ref, 4.0)
    rows = np.flatnonzero(mask.mean(axis=1) > 0.01)
    cols = np.flatnonzero(mask.mean(axis=0) > 0.01)
    if len(rows) >= 2 and len(cols) >= 2:
        rgb = rgb[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    h, w = rgb.shape[:2]
    side = max(h, w)
    square = np.zeros((side, side, 3), dtype=np.float32)
    top, left = (side - h) // 2, (side - w) // 2
    square[top:top + h, left:left + w] = rgb
    out = Image.fromarray(square.clip(0, 255).astype(np.uint8))
    if side > 2 * size:  # area reduction first: fast and alias-free
        out = out.reduce(max(1, side // (2 * size)))
    return np.asarray(out.resize((size, size), Image.Resampling.LANCZOS))


def _split_of(name: str) -> str:
    h = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "train" if h < 0.8 else ("val" if h < 0.9 else "test")


def _read_labels_csv(path: Path) -> tuple[dict[str, dict], list[str]]:
    notes = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            fields = [f.strip() for f in (reader.fieldnames or [])]
            lower = {f.lower(): f for f in fields}
            file_col = next((lower[c] for c in _FILE_COLUMNS if c in lower), None)
            if file_col is None:
                raise DataError(
                    f"labels CSV {path} has no file-name column; expected one of "
                    f"{', '.join(_FILE_COLUMNS)} (found: {', '.join(fields) or 'nothing'})"
                )
            grade_col = next((lower[c] for c in _GRADE_COLUMNS if c in lower), None)
            quality_col = next((lower[c] for c in _QUALITY_COLUMNS if c in lower), None)
            split_col = lower.get("split")
            table = {}
            for row in reader:
                row = {k.strip() if k else k: (v or "").strip() for k, v in row.items()}
                name = row.get(file_col, "")
                if not name:
                    continue
                entry: dict = {}
                if grade_col and row.get(grade_col, "") != "":
                    try:
                        entry["grade"] = int(float(row[grade_col]))
                    except ValueError:
                        notes.append(f"{path.name}: grade {row[grade_col]!r} of {name} is not a number")
                if quality_col and row.get(quality_col, "") != "":
                    word = row[quality_col].lower()
                    entry["quality"] = row[quality_col]
                    if word in _QUALITY_WORDS:
                        entry["gradable"] = _QUALITY_WORDS[word]
                if split_col and row.get(split_col):
                    entry["split"] = row[split_col].lower()
                table[name] = entry
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read labels CSV {path}: {exc}") from None
    return table, notes


def quality_labels(csv_path: str | Path) -> dict[str, bool]:
    """``{file name or stem: gradable}`` from a labels CSV's quality column (EyeQ-style Good / Usable
    / Reject, or 0/1/2, true/false, yes/no); images without a readable quality are left out."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataError(f"labels CSV {csv_path} does not exist")
    table, _ = _read_labels_csv(csv_path)
    labels: dict[str, bool] = {}
    for name, entry in table.items():
        if entry.get("gradable") is not None:
            labels[Path(name).name] = labels[Path(name).stem] = bool(entry["gradable"])
    if not labels:
        raise DataError(f"labels CSV {csv_path} has no usable quality labels: it needs a column named "
                        f"{' / '.join(_QUALITY_COLUMNS)} holding Good / Usable / Reject (or 0 / 1 / 2)")
    return labels


def _load_folder(folder: Path, size: int, split: str, n: int | None, labels_path) -> FundusDataset:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(
            f"folder {folder} contains no images ({', '.join(IMAGE_SUFFIXES)}); point to the folder "
            "that holds the fundus photographs"
        )
    notes: list[str] = []
    table: dict[str, dict] = {}
    csv_path = Path(labels_path) if labels_path else folder / "labels.csv"
    if labels_path and not csv_path.exists():
        raise DataError(f"labels CSV {csv_path} does not exist")
    lookup: dict[str, dict] = {}
    if csv_path.exists():
        table, csv_notes = _read_labels_csv(csv_path)
        notes += csv_notes
        file_names = {p.name for p in files}
        file_stems = {p.stem for p in files}
        missing = [name for name in table
                   if Path(name).name not in file_names and Path(name).stem not in file_stems]
        if missing:
            msg = (f"{csv_path.name} names {len(missing)} file(s) not in {folder} "
                   f"(e.g. {missing[0]}); their labels are ignored")
            warnings.warn(msg, DataWarning, stacklevel=2)
            notes.append(msg)
        for name, entry in table.items():
            lookup[Path(name).name] = entry
            lookup.setdefault(Path(name).stem, entry)
    images, labs = [], []
    for path in files:
        rel = str(path.relative_to(folder))
        entry = lookup.get(path.name) or lookup.get(path.stem) or {}
        item_split = entry.get("split") or _split_of(rel)
        if split != "all" and item_split != split:
            continue
        try:
            with Image.open(path) as img:
                img.load()
                arr = crop_to_fundus(img, size)
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
            msg = f"skipping unreadable image {path}: {exc}"
            warnings.warn(msg, DataWarning, stacklevel=2)
            notes.append(msg)
            continue
        images.append(arr)
        labs.append({"file": rel, "grade": entry.get("grade"), "gradable": entry.get("gradable"),
                     "quality": entry.get("quality"), "source": "folder"})
        if n is not None and len(images) >= n:
            break
    if not images:
        raise DataError(
            f"no readable images for split '{split}' in {folder} ({len(files)} file(s) found); "
            f"use {param('split', 'all')} for small folders, or check the files"
        )
    return FundusDataset(np.stack(images), labs, str(folder), split, notes)


# --- MedMNIST-style npz ------------------------------------------------------------------------
def _load_npz(path: Path, size: int, split: str, n: int | None) -> FundusDataset:
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path} as an .npz archive: {exc}") from None
    with archive:
        keys = list(archive.keys())
        splits = ["train", "val", "test"] if split == "all" else [split]
        wanted = [f"{s}_images" for s in splits]
        if not all(k in keys for k in wanted):
            raise DataError(
                f"{path} has no {' / '.join(k for k in wanted if k not in keys)}; expected "
                f"MedMNIST-style keys train_images, val_images, test_images (+ _labels); found: "
                f"{', '.join(keys) or 'no arrays'}"
            )
        parts, label_parts = [], []
        for s in splits:
            imgs = np.asarray(archive[f"{s}_images"])
            lab_key = f"{s}_labels"
            labs = np.asarray(archive[lab_key]).reshape(len(imgs), -1)[:, 0] if lab_key in keys else None
            parts.append(imgs)
            label_parts.append(labs if labs is not None else np.full(len(imgs), -1))
    images = np.concatenate(parts)
    grades = np.concatenate(label_parts)
    if n is not None:
        images, grades = images[:n], grades[:n]
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim == 3:
        images = np.repeat(images[..., None], 3, axis=-1)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise DataError(f"{path}: images have shape {images.shape}; expected (N, H, W) or (N, H, W, 1 or 3)")
    if images.dtype != np.uint8:
        scale = 255.0 if images.max() <= 1.0 else 1.0
        images = np.clip(images * scale, 0, 255).astype(np.uint8)
    notes = []
    if images.shape[1] != size or images.shape[2] != size:
        notes.append(f"resized {images.shape[1]}x{images.shape[2]} images to {size}x{size}")
        images = resize_images(images, size)
    labels = [{"grade": int(g) if g >= 0 else None, "gradable": None, "source": "npz"} for g in grades]
    if not len(images):
        raise DataError(f"{path}: split '{split}' holds no images")
    return FundusDataset(images, labels, str(path), split, notes)




def load_images(paths, size: int | None = None) -> tuple[np.ndarray, list[str], list[str]]:
    """Images from files and folders (PNG/JPEG/...); returns (uint8 array, names, notes).

    Images of different sizes are resized to ``size`` (default: the most common size), with a note.
    """

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
        images = [resize_images(im[None], size)[0] for im in images]
    return np.stack(images), names, notes
