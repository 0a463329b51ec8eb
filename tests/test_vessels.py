"""Vessel measurements on synthetic images whose vessels are known: the map finds the drawn
vessels, agrees with scikit-image's top-hat, beats its Frangi filter, gives Dice 1 on itself and
loses the vessels as blur grows."""

import numpy as np
import pytest
from scipy import ndimage

from qhybrid.data.synthetic import SyntheticFundus, render_fundus, vessel_mask
from qhybrid.evaluation.vessels import (
    VESSEL_DEPTH,
    compare_vessels,
    field_of_view,
    vessel_depth,
    vessel_dice,
    vessel_maps,
    vessel_stats,
)


@pytest.fixture(scope="module", params=[64, 128])
def fundus(request):
    size = request.param
    rendered = [SyntheticFundus(size=size, seed=3).render(i) for i in range(12)]
    images = np.stack([r[0] for r in rendered])
    truth = np.stack([vessel_mask(r[2], size) for r in rendered]) & field_of_view(images)
    return size, images, truth


def dice(a, b):
    return float(np.mean([2 * (x & y).sum() / (x.sum() + y.sum()) for x, y in zip(a, b)]))


def blur(images, sigma_at_64):
    sigma = sigma_at_64 * images.shape[1] / 64
    return np.stack([np.clip(ndimage.gaussian_filter(im.astype(float), (sigma, sigma, 0)), 0, 255).astype(np.uint8)
                     for im in images])


def test_the_map_finds_the_drawn_vessels_better_than_frangi(fundus):
    from skimage.filters import frangi

    size, images, truth = fundus
    ours = dice(vessel_maps(images), truth)
    assert ours > 0.6
    # scikit-image's Frangi vesselness at its best threshold on these very images
    fov = field_of_view(images)
    scale = size / 64
    response = np.stack([frangi(im[..., 1] / 255, sigmas=[scale, 1.5 * scale], black_ridges=True, gamma=0.05)
                         for im in images]) * fov
    best_frangi = max(dice(response > t, truth) for t in np.quantile(response[fov], [0.8, 0.85, 0.9, 0.93, 0.95]))
    assert ours > best_frangi


def test_depth_is_scikit_images_black_top_hat_in_the_field_of_view(fundus):
    from skimage.morphology import black_tophat, disk

    size, images, _ = fundus
    radius = max(2, round(2 * size / 64))
    expected = np.stack([black_tophat(im[..., 1] / 255, disk(radius)) for im in images]) * field_of_view(images)
    np.testing.assert_allclose(vessel_depth(images), expected, atol=1e-12)


def test_dice_is_one_on_itself_and_falls_with_blur(fundus):
    _, images, _ = fundus
    assert np.all(vessel_dice(images, images) == 1.0)
    falling = [vessel_dice(images, blur(images, s)).mean() for s in (0.5, 1.0, 2.0)]
    assert falling[0] > 0.5 and falling[0] > falling[1] > falling[2] and falling[2] < 0.05


def test_stats_see_erased_vessels_and_ignore_the_rim(fundus):
    _, images, _ = fundus
    real = vessel_stats(images)
    assert 0.03 < real["vessel_density"]["value"] < 0.15 and real["without_vessels"] == 0
    assert real["vessel_depth"]["value"] > VESSEL_DEPTH
    erased = compare_vessels(images, blur(images, 2.0))
    assert erased["without_vessels"] == 1.0 and erased["vessel_density"]["value"] == 0
    assert erased["real"]["vessel_density"] == real["vessel_density"]
    # a featureless retina (no vessels drawn): nothing is found, not even at the rim
    plain = np.stack([render_fundus(64, np.random.default_rng(i), structure=False)[0] for i in range(4)])
    assert vessel_stats(plain)["vessel_density"]["value"] < 0.005


def test_bad_shapes_say_what_is_needed():
    with pytest.raises(ValueError, match=r"RGB images \(N, H, W, 3\)"):
        vessel_maps(np.zeros((4, 8, 8)))
    with pytest.raises(ValueError, match="one shape"):
        vessel_dice(np.zeros((2, 8, 8, 3), np.uint8), np.zeros((3, 8, 8, 3), np.uint8))
