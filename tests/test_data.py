"""Data loaders: image folders (crop to the fundus circle), labels CSVs, MedMNIST-style .npz."""

import warnings

import numpy as np
import pytest
from PIL import Image

from qhybrid.data.loaders import DataError, DataWarning, crop_to_fundus, load_dataset
from qhybrid.data.synthetic import SyntheticFundus


def write_folder(folder, with_corrupt=True, with_csv=True):
    folder.mkdir(parents=True, exist_ok=True)
    gen = SyntheticFundus(96, seed=9)
    names = []
    canvases = [(96, 96), (160, 110), (100, 180), (300, 200)]
    for i, (w, h) in enumerate(canvases):
        img, _ = gen[i]
        canvas = np.zeros((h, w, 3), np.uint8)
        top, left = (h - 96) // 2, (w - 96) // 2
        canvas[top:top + 96, left:left + 96] = img
        ext = [".png", ".jpg", ".tif", ".png"][i]
        Image.fromarray(canvas).save(folder / f"img{i}{ext}")
        names.append(f"img{i}{ext}")
    Image.fromarray(gen[5][0]).convert("L").save(folder / "gray.png")
    names.append("gray.png")
    if with_corrupt:
        (folder / "broken.png").write_bytes(b"\x89PNG not really an image")
    if with_csv:
        (folder / "labels.csv").write_text(
            "image,level,quality\nimg0.png,2,Good\nimg1,0,Reject\nmissing.png,3,Good\n"
        )
    (folder / "notes.txt").write_text("not an image")
    return names


def test_folder_loader_crops_resizes_and_reads_labels(tmp_path):
    write_folder(tmp_path / "imgs")
    with pytest.warns(DataWarning) as record:
        data = load_dataset(tmp_path / "imgs", size=48, split="all")
    messages = [str(w.message) for w in record]
    assert any("broken.png" in m and "skipping unreadable image" in m for m in messages)
    assert any("missing.png" in m for m in messages)
    assert data.images.shape == (5, 48, 48, 3)
    by_file = {lab["file"]: lab for lab in data.labels}
    assert by_file["img0.png"]["grade"] == 2 and by_file["img0.png"]["gradable"] is True
    assert by_file["img1.jpg"]["grade"] == 0 and by_file["img1.jpg"]["gradable"] is False
    assert by_file["img2.tif"]["grade"] is None
    gray = data.images[[lab["file"] for lab in data.labels].index("gray.png")]
    assert np.array_equal(gray[..., 0], gray[..., 1])
    # cropping: the fundus fills the square whatever the canvas (dark corners, lit edge midpoints)
    for img in data.images:
        L = img.astype(float).mean(axis=2)
        assert L[:3, :3].mean() < 20
        assert L[24, 2:6].mean() > 25 and L[24, -6:-2].mean() > 25


def test_folder_splits_are_stable_and_disjoint(tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    gen = SyntheticFundus(32, seed=1)
    for i in range(40):
        Image.fromarray(gen[i][0]).save(folder / f"f{i:02d}.png")
    parts = {s: {lab["file"] for lab in load_dataset(folder, 32, s).labels} for s in ("train", "val", "test")}
    assert not (parts["train"] & parts["val"]) and not (parts["train"] & parts["test"])
    assert sum(map(len, parts.values())) == 40 and len(parts["train"]) > 20
    again = {lab["file"] for lab in load_dataset(folder, 32, "train").labels}
    assert again == parts["train"]


def test_folder_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="contains no images"):
        load_dataset(empty)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"nope")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        with pytest.raises(DataError, match="no readable images"):
            load_dataset(bad, split="all")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "nowhere")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DataError, match="not an .npz"):
        load_dataset(tmp_path / "file.txt")
    with pytest.raises(DataError, match="between 16 and 512"):
        load_dataset("synthetic", size=8)
    with pytest.raises(DataError, match="unknown split"):
        load_dataset("synthetic", split="training")


def test_npz_loader(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "retina.npz"
    np.savez(path, train_images=rng.integers(0, 255, (10, 28, 28, 3), dtype=np.uint8),
             train_labels=rng.integers(0, 5, (10, 1)),
             val_images=rng.integers(0, 255, (3, 28, 28, 3), dtype=np.uint8), val_labels=np.zeros((3, 1)),
             test_images=rng.integers(0, 255, (4, 28, 28, 3), dtype=np.uint8), test_labels=np.ones((4, 1)))
    train = load_dataset(path, size=32, split="train")
    assert train.images.shape == (10, 32, 32, 3)
    assert any("resized 28x28" in note for note in train.notes)
    assert [lab["grade"] for lab in load_dataset(path, 32, "test").labels] == [1, 1, 1, 1]
    assert len(load_dataset(path, 32, "all")) == 17
    gray = tmp_path / "gray.npz"
    np.savez(gray, train_images=rng.integers(0, 255, (5, 64, 64), dtype=np.uint8), train_labels=np.zeros(5))
    g = load_dataset(gray, size=64, split="train")
    assert g.images.shape == (5, 64, 64, 3) and not g.notes
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros(3), images=np.zeros((2, 8, 8)))
    with pytest.raises(DataError, match="found: x, images"):
        load_dataset(wrong)


def test_crop_handles_a_dark_photograph():
    img, _ = SyntheticFundus(64, seed=2)[0]
    dim = (img.astype(float) * 0.25).astype(np.uint8)
    canvas = np.zeros((64, 140, 3), np.uint8)
    canvas[:, 38:102] = dim
    out = crop_to_fundus(Image.fromarray(canvas), 64)
    assert out.shape == (64, 64, 3)
    assert out[32, :8].mean() > 3 * out[:3, :3].mean() + 1


def test_synthetic_source_is_deterministic_and_split_dependent():
    a = load_dataset("synthetic", 32, "train", n=4, seed=1)
    b = load_dataset("synthetic", 32, "train", n=4, seed=1)
    c = load_dataset("synthetic", 32, "val", n=4, seed=1)
    assert np.array_equal(a.images, b.images) and not np.array_equal(a.images, c.images)
    t = a.tensor()
    assert t.shape == (4, 3, 32, 32) and t.min() >= -1 and t.max() <= 1


def test_a_synthetic_split_drawn_twice_is_the_same_and_callers_cannot_change_it_for_others():
    """load_dataset keeps small synthetic sets it has drawn (the demo's three denoisers train on the same
    512 images); every caller gets its own copy."""
    from qhybrid.data.loaders import _synthetic_split

    first = load_dataset("synthetic", 32, "train", n=6, seed=5)
    hits = _synthetic_split.cache_info().hits
    first.images[:] = 0
    first.labels[0]["grade"] = 99
    again = load_dataset("synthetic", 32, "train", n=6, seed=5)
    assert _synthetic_split.cache_info().hits == hits + 1  # not drawn again
    fresh = SyntheticFundus(size=32, seed=5 * 10).sample(6)[0]  # what the generator draws for that split
    assert np.array_equal(again.images, fresh) and again.images.flags.writeable
    assert again.labels[0]["grade"] != 99
