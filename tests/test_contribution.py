"""Contribution metrics: 0 without a core, 100% where the core is the only path, exact for an affine
core, and the model left as it was after every measurement."""

import numpy as np
import pytest
import torch
from torch import nn

from qhybrid.diffusion.scheduler import NoiseScheduler
from qhybrid.evaluation.contribution import (
    ContributionConfig,
    affine_fit,
    measure_contributions,
    noise_share,
    public,
    reference_inputs,
    relative_change,
)
from qhybrid.models.denoiser import DenoiserConfig, LatentDenoiser
from qhybrid.models.quantum_layers import QuantumConv2d
from qhybrid.models.vae import VAE, VAEConfig
from qhybrid.quantum import CircuitSpec

CFG = ContributionConfig(n_latents=4, timesteps=(100, 500, 900), n_samples=3, sample_steps=3)


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    vae = VAE(VAEConfig(size=32, base_channels=4)).eval()
    scheduler = NoiseScheduler()
    images = torch.rand(4, 3, 32, 32) * 2 - 1
    return vae, scheduler, reference_inputs(vae, scheduler, images, CFG)


class CoreOnly(nn.Module):
    """A 'denoiser' whose output is its quantum layer's output: the core is the only path."""

    def __init__(self, patch: int, core: str = "quantum"):
        super().__init__()
        self.cfg = DenoiserConfig(kind="hybrid", latent_channels=4, latent_size=8)
        self.qconv = QuantumConv2d(4, 4, 0, CircuitSpec(num_qubits=3, reps=1), core=core, patch=patch, seed=2)

    def forward(self, z, t):
        return self.qconv(z)


def test_a_model_without_a_core_scores_zero(parts):
    vae, scheduler, reference = parts
    torch.manual_seed(0)
    classical = LatentDenoiser(DenoiserConfig.for_kind("classical", 4, 8)).eval()
    report = measure_contributions(classical, scheduler, vae, reference, CFG)
    assert report["core"] is None
    for name in ("knockout", "reset", "rerandomised", "affine"):
        assert report[name]["denoiser_change"] == 0 and report[name]["sample_image_change_grey"] == 0
    assert report["affine"]["r2"] is None


def test_the_knockout_of_a_core_that_is_the_only_path_removes_all_of_the_output(parts):
    """One patch over the whole latent: the knocked-out output is exactly the output's mean."""
    vae, scheduler, reference = parts
    model = CoreOnly(patch=8).eval()
    report = measure_contributions(model, scheduler, vae, reference, CFG)
    assert report["knockout"]["denoiser_change"] == pytest.approx(1.0, abs=1e-6)
    assert report["rerandomised"]["denoiser_change"] > 0.1
    # with 16 patches the mean is taken over patches too: still close to all of it
    many = measure_contributions(CoreOnly(patch=2).eval(), scheduler, vae, reference, CFG)
    assert 0.9 < many["knockout"]["denoiser_change"] < 1.1


def test_an_affine_core_is_fully_explained_by_its_affine_fit(parts):
    vae, scheduler, reference = parts
    report = measure_contributions(CoreOnly(patch=2, core="affine").eval(), scheduler, vae, reference, CFG)
    assert report["affine"]["r2"] == pytest.approx(1.0, abs=1e-9)
    assert report["affine"]["denoiser_change"] < 1e-5
    assert report["knockout"]["denoiser_change"] > 0.5


def test_a_circuit_is_not_affine_in_its_angles():
    torch.manual_seed(0)
    layer = QuantumConv2d(4, 4, 0, CircuitSpec(num_qubits=4, reps=2), patch=1, seed=0)
    rows = torch.randn(2000, 4) * 1.0
    with torch.no_grad():
        _, r2_wide = affine_fit(rows, layer.core(rows))
        _, r2_narrow = affine_fit(rows * 0.1, layer.core(rows * 0.1))
    assert r2_narrow > 0.95 and r2_wide < 0.6  # small angles: nearly linear; at 1 rad it is not


def test_reset_to_the_current_weights_changes_nothing_and_the_model_is_left_as_it_was(parts):
    vae, scheduler, reference = parts
    torch.manual_seed(0)
    model = LatentDenoiser(DenoiserConfig.for_kind("hybrid", 4, 8, num_qubits=3, reps=1)).eval()
    with torch.no_grad():
        before = model(*reference)
    state = {k: v.clone() for k, v in model.quantum_layer.core.state_dict().items()}
    report = measure_contributions(model, scheduler, vae, reference, CFG, initial_core=state)
    assert report["reset"]["denoiser_change"] == 0 and report["reset"]["sample_image_change_grey"] == 0
    with torch.no_grad():
        assert torch.equal(model(*reference), before)  # hooks removed, weights restored
    assert set(report["knockout"]["denoiser_change_by_t"]) == {"t < 333", "333 <= t < 667", "t >= 667"}
    clean = public(report)
    assert "_knockout_mean" not in clean and "_images" not in clean["knockout"]


def test_relative_change_and_noise_share():
    base = torch.tensor([[1.0], [-1.0]])
    assert relative_change(base, base) == 0
    assert relative_change(base, torch.zeros(2, 1)) == pytest.approx(1.0)
    a = np.zeros((1, 2, 2, 3), np.uint8)
    share = noise_share(a + 1, a, a + 4)
    assert share["noise_share_of_knockout"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="timesteps"):
        ContributionConfig(timesteps=(1000,))
