"""The degradations' calibration on the vessels, which is what the validator learns: a mild
(gradable) degradation keeps the vessel map, a vessel-erasing one at its ungradable severity
removes it, and the validator's label-preserving jitter keeps the vessels too."""

import numpy as np
import pytest

from qhybrid.data.degrade import (
    DEGRADATIONS,
    GRADABLE_MAX,
    UNGRADABLE_MIN,
    VESSEL_ERASING,
    degrade,
)
from qhybrid.data.synthetic import SyntheticFundus
from qhybrid.data.transforms import augment, resize_images
from qhybrid.evaluation.vessels import vessel_dice, vessel_measures


@pytest.fixture(scope="module")
def retinas():
    return SyntheticFundus(64, seed=11).sample(24)[0]


@pytest.fixture(scope="module", params=[64, 80])
def rendered(request):
    """Retinas rendered at 64 px, and at 80 px as the validator's training bases are (degraded there,
    then resized to 64 px): the calibration must hold at both scales."""
    return SyntheticFundus(request.param, seed=11).sample(24)[0]


def degraded(images, kind, severity, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([degrade(im, kind, severity, rng) for im in images])


def dice_after(images, kind, severity):
    return vessel_dice(resize_images(images, 64), resize_images(degraded(images, kind, severity), 64)).mean()


# fov_cut moves the retina, so a pixel-wise overlap does not measure it
@pytest.mark.parametrize("kind", [k for k in DEGRADATIONS if k != "fov_cut" and GRADABLE_MAX[k] > 0])
def test_a_gradable_degradation_keeps_the_vessels(rendered, kind):
    assert dice_after(rendered, kind, GRADABLE_MAX[kind]) >= 0.7


@pytest.mark.parametrize("kind", VESSEL_ERASING)
def test_a_vessel_erasing_degradation_at_its_ungradable_severity_erases_them(rendered, kind):
    assert dice_after(rendered, kind, UNGRADABLE_MIN[kind]) <= 0.35


def test_severity_zero_of_the_new_degradations_changes_little(retinas):
    for kind in ("low_pass", "smoothing"):
        assert np.array_equal(degraded(retinas, kind, 0.0), retinas), kind
    assert vessel_dice(retinas, degraded(retinas, "jpeg", 0.0)).mean() >= 0.75


def test_the_label_preserving_jitter_keeps_most_vessels_and_blur_does_not(retinas):
    """augment() resamples, rotates, jitters colour and re-compresses; the vessel density it
    keeps (thresholded depth, so lower contrast counts as loss) must stay far above what a
    vessel-erasing blur keeps."""
    rendered = SyntheticFundus(80, seed=11).sample(24)[0]
    rng = np.random.default_rng(3)
    clean = vessel_measures(resize_images(rendered, 64))[0].mean()
    jittered = vessel_measures(np.stack([augment(im, 64, rng) for im in rendered]))[0].mean()
    blurred = vessel_measures(degraded(retinas, "defocus", UNGRADABLE_MIN["defocus"]))[0].mean()
    assert jittered >= 0.5 * clean
    assert blurred <= 0.2 * vessel_measures(retinas)[0].mean()


def test_unknown_degradation_and_severity_are_refused(retinas):
    with pytest.raises(ValueError, match="unknown degradation 'sepia'; allowed: defocus"):
        degrade(retinas[0], "sepia", 0.5, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"severity must be in \[0, 1\]"):
        degrade(retinas[0], "jpeg", 1.5, np.random.default_rng(0))
