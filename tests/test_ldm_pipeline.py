"""Latent diffusion end to end on a tiny VAE: training, checkpoints, resume, sampling, bad input."""

import json

import numpy as np
import pytest
import torch

from qhybrid.diffusion.pipeline import LatentDiffusion
from qhybrid.models.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_training_state,
)
from qhybrid.models.denoiser import LatentDenoiser
from qhybrid.models.vae import VAEConfig
from qhybrid.training.diffusion import (
    DiffusionTrainConfig,
    TrainingError,
    train_diffusion,
)
from qhybrid.training.vae import VAETrainConfig, train_vae
from qhybrid.workflows.sampling import sample_images


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("ldm") / "vae"
    train_vae(out, VAEConfig(size=32), VAETrainConfig(n=24, epochs=2, batch=8), progress=False)
    return out


def cfg(steps=30, **kw):
    return DiffusionTrainConfig(n=24, steps=steps, batch=16, save_every=kw.pop("save_every", 10), **kw)


@pytest.mark.parametrize("kind", ["classical", pytest.param("classical-large", marks=pytest.mark.slow), "hybrid"])
def test_train_and_sample_each_denoiser(tmp_path, vae_dir, kind):
    out = tmp_path / f"ldm-{kind}"
    summary = train_diffusion(out, vae_dir, kind, cfg(40), num_qubits=4, reps=1, progress=False)
    assert summary["final_loss"] < summary["first_loss"]
    header = json.loads((out / "config.json").read_text())
    assert header["kind"] == "ldm" and header["config"]["denoiser"]["kind"] == kind
    assert header["config"]["vae_sha256"] == json.loads((vae_dir / "config.json").read_text())["weights_sha256"]
    if kind == "hybrid":
        assert header["config"]["denoiser"]["quantum"]["num_qubits"] == 4
    images, _ = sample_images(out, n=5, steps=8, seed=3, progress=False)
    assert images.shape == (5, 32, 32, 3) and images.dtype == np.uint8
    again, _ = sample_images(out, n=5, steps=8, seed=3, progress=False)
    other, _ = sample_images(out, n=5, steps=8, seed=4, progress=False)
    assert np.array_equal(images, again) and not np.array_equal(images, other)
    # the checkpoint holds the EMA weights; a reload samples the same images as the EMA model did
    loaded = LatentDiffusion.from_checkpoint(out)
    ema = LatentDenoiser(loaded.denoiser.cfg)
    ema.load_state_dict(load_training_state(out)["ema"])
    from_ema, _ = sample_images(out, n=5, steps=8, seed=3, progress=False, loaded=(ema, *loaded[1:]))
    assert np.array_equal(images, from_ema)


def test_resume_after_an_interruption_matches_an_uninterrupted_run(tmp_path, vae_dir, interrupt_at):
    full = tmp_path / "full"
    train_diffusion(full, vae_dir, "hybrid", cfg(30), num_qubits=3, reps=1, progress=False)
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        train_diffusion(part, vae_dir, "hybrid", cfg(30), num_qubits=3, reps=1, progress=False,
                        callbacks=[interrupt_at(step=25)])
    assert json.loads((part / "config.json").read_text())["extra"]["step"] == 20  # last save
    with pytest.raises(TrainingError, match="already holds a checkpoint"):
        train_diffusion(part, vae_dir, "hybrid", cfg(30), num_qubits=3, reps=1, progress=False)
    with pytest.raises(TrainingError, match="holds a hybrid denoiser .* needs the same denoiser"):
        train_diffusion(part, vae_dir, "classical", cfg(30), resume=True, progress=False)
    train_diffusion(part, vae_dir, "hybrid", cfg(30), num_qubits=3, reps=1, resume=True, progress=False)
    a, b = load_checkpoint(full, "ldm")[1], load_checkpoint(part, "ldm")[1]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    with pytest.raises(TrainingError, match="already trained 30 steps; pass a larger steps"):
        train_diffusion(part, vae_dir, "hybrid", cfg(30), resume=True, progress=False)


def test_bad_checkpoints(tmp_path, vae_dir):
    ldm = tmp_path / "ldm"
    train_diffusion(ldm, vae_dir, "classical", cfg(10), progress=False)
    with pytest.raises(CheckpointError, match="expected a vae checkpoint"):
        train_diffusion(tmp_path / "x", ldm, "classical", cfg(10), progress=False)
    with pytest.raises(CheckpointError, match="is a vae checkpoint; expected a ldm"):
        LatentDiffusion.from_checkpoint(vae_dir)
    with pytest.raises(CheckpointError, match="does not exist"):
        LatentDiffusion.from_checkpoint(tmp_path / "missing")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        LatentDiffusion.from_checkpoint(broken)


def test_a_changed_vae_is_detected(tmp_path, vae_dir):
    import shutil

    vae2 = tmp_path / "vae2"
    shutil.copytree(vae_dir, vae2)
    ldm = tmp_path / "ldm"
    train_diffusion(ldm, vae2, "classical", cfg(10), progress=False)
    train_vae(vae2, VAEConfig(size=32), VAETrainConfig(n=24, epochs=3, batch=8), resume=True, progress=False)
    with pytest.raises(CheckpointError, match="is not the one .* was trained on"):
        LatentDiffusion.from_checkpoint(ldm)
