"""VAEs: shapes, a training run whose loss falls, checkpoint round trip, resume, damaged files."""

import json

import numpy as np
import pytest
import torch

from qhybrid.models.checkpoint import CheckpointError, load_checkpoint
from qhybrid.models.vae import VAE, VAEConfig
from qhybrid.quantum import CircuitSpec
from qhybrid.training.vae import TrainingError, VAETrainConfig, train_vae

QSPEC = CircuitSpec(num_qubits=4, reps=1).to_dict()


@pytest.mark.parametrize("size, latent", [(32, 8), (64, 16), (128, 16)])
@pytest.mark.parametrize("quantum", [None, QSPEC])
def test_shapes(size, latent, quantum):
    vae = VAE(VAEConfig(size=size, quantum=quantum))
    x = torch.rand(2, 3, size, size) * 2 - 1
    mu, logvar = vae.encode(x)
    assert mu.shape == logvar.shape == (2, 4, latent, latent)
    assert vae.decode(mu).shape == x.shape
    assert vae.is_quantum == (quantum is not None)
    if quantum:  # QResBlocks in the encoder's and the decoder's middle: two circuits of 8 weights
        assert vae.parameter_counts()["quantum_circuit_weights"] == 2 * 8


def test_config_validation():
    with pytest.raises(ValueError, match="one of 32, 64, 128"):
        VAEConfig(size=48)
    with pytest.raises(ValueError, match="latent_size"):
        VAEConfig(size=64, latent_size=12)
    with pytest.raises(ValueError, match="CircuitSpec.ansatz"):
        VAEConfig(size=32, quantum={"num_qubits": 3, "ansatz": "nope"})
    with pytest.raises(ValueError, match="expects images of shape"):
        VAE(VAEConfig(size=32)).encode(torch.zeros(1, 3, 64, 64))


@pytest.mark.slow
def test_the_detail_loss_is_the_laplacian_pyramid_distance_and_it_trains_down(tmp_path):
    """laplacian_l1 is zero for identical images, blind to a constant shift (no band-pass content),
    and weighs a thin line several times more than L1 does; training with it logs and lowers it."""
    from qhybrid.models.vae import laplacian_l1

    x = torch.zeros(1, 3, 32, 32)
    line = x.clone()
    line[..., 16, 4:28] = -1.0  # a dark one-pixel 'vessel'
    assert laplacian_l1(x, x) == 0
    assert laplacian_l1(x + 0.3, x) < 1e-6
    # the line costs the detail term several times what it costs L1 (a smooth change: nothing)
    assert laplacian_l1(x, line) > 3 * torch.nn.functional.l1_loss(x, line)
    train_vae(tmp_path / "vae", VAEConfig(size=32), small(epochs=4), progress=False)
    curves = json.loads((tmp_path / "vae" / "loss.json").read_text())["curves"]
    detail = curves["train detail (Laplacian L1)"]
    assert np.mean(detail[-3:]) < 0.8 * np.mean(detail[:3])


def small(**kw):
    return VAETrainConfig(n=24, epochs=kw.pop("epochs", 3), batch=8, lr=3e-3, seed=kw.pop("seed", 0), **kw)


@pytest.mark.parametrize("quantum", [None, QSPEC], ids=["classical", "quantum"])
def test_training_reduces_reconstruction_loss_and_round_trips(tmp_path, quantum):
    out = tmp_path / "vae"
    # L1 + KL alone (detail_weight 0): the detail term has a test of its own below
    summary = train_vae(out, VAEConfig(size=32, quantum=quantum, detail_weight=0.0), small(epochs=4), progress=False)
    assert summary["last_recon"] < 0.5 * summary["first_recon"]
    for name in ("config.json", "model.safetensors", "training_state.pt", "loss.png", "reconstructions.png"):
        assert (out / name).stat().st_size > 0
    # the loss plot names the reconstruction loss the VAE trains with (L1 by default, not MSE)
    curves = json.loads((out / "loss.json").read_text())["curves"]
    assert list(curves) == ["train loss", "train recon (L1)"]
    assert len(curves["train recon (L1)"]) == len(curves["train loss"]) > 0
    model = VAE.from_checkpoint(out)
    assert model.cfg.latent_scale == pytest.approx(summary["latent_scale"])
    assert model.is_quantum == (quantum is not None)
    # a fresh load gives identical outputs
    again = VAE.from_checkpoint(out)
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(model(x, sample=False)[0], again(x, sample=False)[0])
        assert torch.equal(model.encode_latents(x), again.encode_latents(x))


def test_interrupted_training_resumes_to_the_same_weights(tmp_path, interrupt_at):
    full = tmp_path / "full"
    train_vae(full, VAEConfig(size=32), small(epochs=2), progress=False)
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        train_vae(part, VAEConfig(size=32), small(epochs=2), progress=False, callbacks=[interrupt_at(epoch=1)])
    assert json.loads((part / "config.json").read_text())["extra"]["epoch"] == 1
    VAE.from_checkpoint(part)  # the checkpoint of the completed epoch is intact
    with pytest.raises(TrainingError, match=r"already holds a checkpoint; continue it with resume=True"):
        train_vae(part, VAEConfig(size=32), small(epochs=2), progress=False)
    with pytest.raises(TrainingError, match="classical VAE for 32 px; resuming it needs the same size"):
        train_vae(part, VAEConfig(size=64), small(epochs=2), resume=True, progress=False)
    train_vae(part, VAEConfig(size=32), small(epochs=2), resume=True, progress=False)
    a, b = load_checkpoint(full, "vae")[1], load_checkpoint(part, "vae")[1]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    with pytest.raises(TrainingError, match="already trained 2 epochs; pass a larger epochs"):
        train_vae(part, VAEConfig(size=32), small(epochs=2), resume=True, progress=False)


def test_damaged_and_wrong_checkpoints_are_refused(tmp_path):
    out = tmp_path / "vae"
    train_vae(out, VAEConfig(size=32), small(epochs=1), progress=False)
    with pytest.raises(CheckpointError, match="expected a ldm checkpoint"):
        load_checkpoint(out, "ldm")
    weights = out / "model.safetensors"
    blob = weights.read_bytes()
    weights.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="does not match the hash"):
        VAE.from_checkpoint(out)
    weights.write_bytes(blob)
    VAE.from_checkpoint(out)
    (out / "config.json").write_text("{broken")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        VAE.from_checkpoint(out)
    with pytest.raises(CheckpointError, match="does not exist"):
        VAE.from_checkpoint(tmp_path / "nothing")
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(CheckpointError, match="has no config.json"):
        VAE.from_checkpoint(plain)
    with pytest.raises(TrainingError, match="nothing to resume: .* start without resume"):
        train_vae(plain, VAEConfig(size=32), small(epochs=1), resume=True, progress=False)
