"""Checkpoints written by qhybrid 0.1 (before the subpackages) load with today's code.

The files in ``tests/data/legacy-0.1`` were written by the old flat-module code (see the README
there). Loading must give the very weights stored in the files, under today's module names.
"""

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from qhybrid.diffusion.pipeline import LatentDiffusion
from qhybrid.models.checkpoint import CheckpointError, read_header
from qhybrid.models.vae import VAE

LEGACY = Path(__file__).parent / "data" / "legacy-0.1"


def test_a_quantum_vae_with_the_old_bottleneck_loads_its_own_weights():
    vae = VAE.from_checkpoint(LEGACY / "qvae")
    stored = load_file(str(LEGACY / "qvae" / "model.safetensors"))
    assert "encoder.quantum.block.connector.weight" in stored  # the old name
    state = vae.state_dict()
    torch.testing.assert_close(state["encoder.quantum.core.connector.weight"],
                               stored["encoder.quantum.block.connector.weight"], rtol=0, atol=0)
    torch.testing.assert_close(state["encoder.quantum.back.weight"], stored["encoder.quantum.from_block.weight"],
                               rtol=0, atol=0)
    assert vae.is_quantum
    x = torch.zeros(1, 3, 32, 32)
    assert torch.isfinite(vae.decode_latents(vae.encode_latents(x))).all()


@pytest.mark.parametrize("kind", ["hybrid", "classical"])
def test_old_latent_diffusion_checkpoints_load_with_their_vae(kind):
    ldm = LatentDiffusion.from_checkpoint(LEGACY / f"ldm-{kind}")
    stored = load_file(str(LEGACY / f"ldm-{kind}" / "model.safetensors"))
    state = ldm.denoiser.state_dict()
    assert set(state) == set(stored)
    for key, value in stored.items():
        assert torch.equal(state[key], value), key
    assert ldm.denoiser.cfg.kind == kind and ldm.vae.cfg.size == 32
    assert (ldm.denoiser.quantum_block is not None) == (kind == "hybrid")


def test_an_unknown_checkpoint_format_version_is_refused_with_the_version(tmp_path):
    folder = tmp_path / "vae"
    shutil.copytree(LEGACY / "vae", folder)
    config = folder / "config.json"
    config.write_text(config.read_text().replace('"format_version": 1', '"format_version": 99'))
    with pytest.raises(CheckpointError, match="format version 99; this qhybrid reads version 1"):
        read_header(folder, "vae")

