"""Distribution metrics on cases with known answers."""

import numpy as np
import pytest
from scipy import linalg

from qhybrid.errors import InputError
from qhybrid.evaluation.metrics import (
    bootstrap,
    colour_stats,
    compare_features,
    frechet_distance,
    kid,
    mmd2_unbiased,
    prdc,
    wilson_interval,
)


def test_identical_sets_give_zero_fd_and_kid():
    x = np.random.default_rng(0).normal(size=(300, 8))
    assert frechet_distance(x, x) == pytest.approx(0, abs=1e-8)
    # identical sets share points, so the cross term holds self-pairs: KID is ~0 up to O(1/n)
    same = kid(x, x)
    shifted = kid(x, x + 0.5)
    assert abs(same) < 0.08 * shifted


def test_fd_matches_the_closed_form_for_gaussians():
    rng = np.random.default_rng(1)
    d = 4
    a_ = rng.normal(size=(d, d))
    b_ = rng.normal(size=(d, d))
    s1, s2 = a_ @ a_.T + np.eye(d), b_ @ b_.T + 0.5 * np.eye(d)
    m1, m2 = rng.normal(size=d), rng.normal(size=d)
    x = rng.multivariate_normal(m1, s1, size=200_000)
    y = rng.multivariate_normal(m2, s2, size=200_000)
    closed = np.sum((m1 - m2) ** 2) + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(x, y) == pytest.approx(closed, rel=0.02)
    # 1-D sanity: N(0, 1) vs N(3, 4): 9 + 1 + 4 - 2*2 = 10
    z = np.random.default_rng(2)
    assert frechet_distance(z.normal(0, 1, (400_000, 1)), z.normal(3, 2, (400_000, 1))) == pytest.approx(10, rel=0.01)


def test_kid_is_unbiased_on_equal_distributions():
    rng = np.random.default_rng(3)
    vals = [mmd2_unbiased(rng.normal(size=(40, 6)), rng.normal(size=(40, 6))) for _ in range(400)]
    se = np.std(vals) / np.sqrt(len(vals))
    assert abs(np.mean(vals)) < 3 * se
    assert min(vals) < 0  # an unbiased estimator goes negative; a biased one would not
    shifted = [mmd2_unbiased(rng.normal(size=(40, 6)), rng.normal(0.5, 1, size=(40, 6))) for _ in range(50)]
    assert np.mean(shifted) > 10 * se


def test_precision_recall_of_a_set_against_itself_is_one():
    x = np.random.default_rng(4).normal(size=(100, 5))
    r = prdc(x, x, k=5)
    assert r["precision"] == 1 and r["recall"] == 1 and r["coverage"] == 1
    assert r["density"] == pytest.approx(1.0, abs=0.3)
    far = prdc(x, x + 100, k=5)
    assert far["precision"] == 0 and far["recall"] == 0 and far["coverage"] == 0


def test_collapsed_generator_has_high_precision_low_recall():
    rng = np.random.default_rng(5)
    real = rng.normal(size=(300, 4))
    collapsed = rng.normal(scale=0.1, size=(300, 4))  # everything near the mode
    r = prdc(real, collapsed, k=5)
    assert r["precision"] > 0.9 and r["recall"] < 0.3


def test_too_few_images_for_k():
    x = np.zeros((4, 3))
    with pytest.raises(InputError, match="needs more than 5"):
        prdc(x, x, k=5)
    with pytest.raises(InputError, match="needs more than 5"):
        compare_features(x, x, k=5)


def test_bootstrap_intervals_cover_the_point_estimate():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(120, 4)), rng.normal(0.3, 1, size=(120, 4))
    out = compare_features(a, b, k=5, n_boot=40)
    for key in ("fd", "kid", "precision", "recall", "density", "coverage"):
        lo, hi = out[key]["ci"]
        assert lo <= hi
    assert out["fd"]["ci"][0] <= out["fd"]["value"] <= out["fd"]["ci"][1]
    simple = bootstrap(lambda x, y: float(x.mean() - y.mean()), a[:, 0], b[:, 0], n=200)
    assert simple["ci"][0] < -0.3 + 0.35 and simple["ci"][1] > -0.3 - 0.35


@pytest.mark.parametrize("successes, n, expected", [
    (81, 263, (0.2553, 0.3662)), (15, 148, (0.0624, 0.1605)), (0, 20, (0.0, 0.1611)), (1, 29, (0.0061, 0.1718)),
])
def test_wilson_interval_matches_newcombes_published_values(successes, n, expected):
    """Newcombe (1998), Statistics in Medicine 17:857, Table II, method 3 (Wilson score, z = 1.96)."""
    assert wilson_interval(successes, n) == pytest.approx(expected, abs=5e-5)


def test_colour_stats():
    img = np.zeros((2, 10, 10, 3), np.uint8)
    img[:, 2:8, 2:8] = [200, 100, 50]
    st = colour_stats(img)
    assert st["fov_fraction"] == pytest.approx(0.36)
    assert st["mean_R"] == pytest.approx(200 / 255)
