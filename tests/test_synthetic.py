"""The built-in synthetic fundus generator: deterministic, and anatomically plausible."""

import numpy as np
import pytest

from qhybrid.data.synthetic import SyntheticFundus


def lum(image):
    return image.astype(float).mean(axis=2)


def to_px(point, size, eye):
    x, y = point
    if eye == "left":
        x = -x
    return int((y + 1) / 2 * size), int((x + 1) / 2 * size)


def test_deterministic_per_seed_and_index():
    a, b = SyntheticFundus(64, seed=5), SyntheticFundus(64, seed=5)
    np.testing.assert_array_equal(a[3][0], b[3][0])
    assert a[3][1] == b[3][1]
    assert not np.array_equal(a[3][0], a[4][0])
    assert not np.array_equal(a[3][0], SyntheticFundus(64, seed=6)[3][0])


@pytest.mark.parametrize("size", [32, 64, 100, 256])
def test_sizes(size):
    image, labels = SyntheticFundus(size, seed=0)[0]
    assert image.shape == (size, size, 3) and image.dtype == np.uint8
    assert labels.gradable is True and labels.grade in range(5) and labels.eye in ("left", "right")


@pytest.mark.parametrize("bad", [31, 257, 0, 64.5])
def test_bad_sizes(bad):
    with pytest.raises(ValueError, match="size"):
        SyntheticFundus(bad)


def test_field_of_view_disc_and_vessels():
    gen = SyntheticFundus(128, seed=1, grade=0)
    for i in range(6):
        image, labels, anatomy = gen.render(i)
        L = lum(image)
        # black surround, lit field of view
        assert L[:6, :6].mean() < 8 and L[-6:, -6:].mean() < 8
        assert L[54:74, 54:74].mean() > 60
        # the optic disc is brighter than the retina around it
        yy, xx = np.mgrid[0:128, 0:128]
        cy, cx = to_px(anatomy.disc, 128, labels.eye)
        r = np.hypot(yy - cy, xx - cx)
        rd = anatomy.disc_radius / 2 * 128
        assert L[r < 0.6 * rd].mean() > 1.3 * L[(r > 2.5 * rd) & (r < 3.5 * rd)].mean()
        # ... on the nasal side: image right for right eyes, left for left eyes
        assert (cx > 64) == (labels.eye == "right")
        # the widest vessels are darker than the retina beside them
        darker = []
        for points, widths, _ in anatomy.vessels:
            if widths[0] < 0.012:
                continue
            for p in points[15:40:5]:
                py, px = to_px(p, 128, labels.eye)
                if 8 <= py < 120 and 8 <= px < 120:
                    local = np.median(L[py - 6:py + 7, px - 6:px + 7])
                    darker.append(L[py, px] < local)
        assert np.mean(darker) > 0.7


def test_fovea_is_darker_than_the_retina_around_it():
    gen = SyntheticFundus(128, seed=2, grade=0)
    for i in range(4):
        image, labels, anatomy = gen.render(i)
        L = lum(image)
        cy, cx = to_px(anatomy.fovea, 128, labels.eye)
        ring = L[cy - 20:cy + 21, cx - 20:cx + 21]
        assert L[cy - 2:cy + 3, cx - 2:cx + 3].mean() < 0.9 * np.median(ring)


def test_more_lesions_at_higher_grade():
    totals = {}
    for grade in range(5):
        gen = SyntheticFundus(64, seed=3, grade=grade)
        totals[grade] = np.mean([sum(gen.render(i)[2].lesion_counts.values()) for i in range(12)])
    assert totals[0] == 0
    assert totals[0] < totals[1] < totals[2] < totals[3]
    assert totals[4] > totals[2]
    # and they are visible: grade 3 retinas hold far more yellow exudate-like pixels than grade 0
    def bright_spots(grade):
        gen = SyntheticFundus(128, seed=4, grade=grade)
        found = []
        for i in range(6):
            image, labels, anatomy = gen.render(i)
            yy, xx = np.mgrid[0:128, 0:128]
            cy, cx = to_px(anatomy.disc, 128, labels.eye)
            outside_disc = np.hypot(yy - cy, xx - cx) > 1.5 * anatomy.disc_radius / 2 * 128
            found.append(np.mean((image[..., 1] > 130) & outside_disc))
        return np.mean(found)
    assert bright_spots(3) > 3 * bright_spots(0) + 1e-4


def test_left_and_right_eyes_occur_and_grades_follow_the_mix():
    _, labels = SyntheticFundus(32, seed=0).sample(200)
    eyes = [lab.eye for lab in labels]
    assert 60 < eyes.count("right") < 140
    grades = np.bincount([lab.grade for lab in labels], minlength=5)
    assert grades[0] == grades.max()


def test_grain_free_renders_are_the_same_images_without_the_grain():
    """grain=False removes the sensor grain only: the same anatomy and labels, pixels within a few
    grey levels (the grain's sd is 1-2.5), the black surround untouched."""
    with_grain, without = SyntheticFundus(size=64, seed=3), SyntheticFundus(size=64, seed=3, grain=False)
    for i in range(3):
        a, labels_a, anatomy_a = with_grain.render(i)
        b, labels_b, anatomy_b = without.render(i)
        assert labels_a == labels_b and anatomy_a.lesion_counts == anatomy_b.lesion_counts
        assert len(anatomy_a.vessels) == len(anatomy_b.vessels)
        assert all(np.array_equal(p, q) for (p, _, _), (q, _, _) in zip(anatomy_a.vessels, anatomy_b.vessels))
        diff = np.abs(a.astype(int) - b)
        assert 0.3 < diff[b.max(axis=2) > 8].mean() < 3 and diff.max() <= 12
        assert (diff[b.max(axis=2) <= 0] == 0).all()
