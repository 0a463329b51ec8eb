"""Devices and data-parallel training on the CPU: ``--device`` resolves and refuses what is not
there, training and sampling run with an explicit device, and a 2-process ``torchrun`` run (gloo)
writes one checkpoint whose weights equal the single-process run's."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from qhybrid.devices import resolve_device, to_device
from qhybrid.errors import InputError
from qhybrid.training.distributed import DataParallel, shard
from tests.cli_helpers import run


def test_auto_is_the_cpu_without_a_gpu_and_cpu_is_always_there():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device(None).type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_a_missing_gpu_is_refused_with_the_fix():
    with pytest.raises(InputError, match="PyTorch sees no CUDA GPU.*device=cpu"):
        resolve_device("cuda")
    with pytest.raises(InputError, match="not one of auto, cpu, cuda"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_cli_device_cuda_without_a_gpu_exits_2_with_one_line(tmp_path):
    proc = run("validator", "train", "--out", str(tmp_path / "v"), "--n", "8", "--epochs", "1", "--device", "cuda")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--device cuda: PyTorch sees no CUDA GPU" in lines[0] and "--device cpu" in lines[0]
    assert not (tmp_path / "v").exists()


def test_to_device_moves_nested_batches():
    batch = (torch.zeros(2), [torch.ones(1)], {"t": torch.arange(3)}, 5)
    moved = to_device(batch, torch.device("cpu"))
    assert moved[3] == 5 and torch.equal(moved[2]["t"], torch.arange(3)) and isinstance(moved[1], list)


@pytest.mark.parametrize("total, world", [(8, 2), (10, 3), (3, 2)])
def test_shards_cover_the_batch_and_their_weights_make_the_batch_mean(total, world):
    x = torch.arange(total, dtype=torch.float64)
    parts = [shard((x, {"y": x * 2}), DataParallel(rank, world, rank)) for rank in range(world)]
    assert torch.equal(torch.cat([p[0][0] for p in parts]), x)
    assert torch.equal(torch.cat([p[0][1]["y"] for p in parts]), 2 * x)
    # the mean over processes of weight * (slice mean) is the batch mean
    weighted = sum(w * s[0].mean() for s, w in parts) / world
    assert torch.isclose(weighted, x.mean())


@pytest.mark.slow
def test_training_and_sampling_take_an_explicit_device(tmp_path):
    from qhybrid.models.vae import VAEConfig
    from qhybrid.training.diffusion import DiffusionTrainConfig, train_diffusion
    from qhybrid.training.vae import VAETrainConfig, train_vae
    from qhybrid.workflows.sampling import sample_images

    summary = train_vae(tmp_path / "vae", VAEConfig(size=32, base_channels=8), VAETrainConfig(n=16, epochs=1, batch=8),
                        progress=False, device="cpu")
    assert summary["device"] == "cpu" and summary["processes"] == 1
    s = train_diffusion(tmp_path / "ldm", tmp_path / "vae", "classical", DiffusionTrainConfig(n=16, steps=3, batch=8),
                        progress=False, device="cpu")
    assert s["device"] == "cpu"
    images, info = sample_images(tmp_path / "ldm", n=2, steps=2, progress=False, device="cpu")
    assert images.shape == (2, 32, 32, 3) and info["device"] == "cpu"


def _vae_cli(out, extra=()):
    return ["train", "vae", "--size", "32", "--n", "20", "--epochs", "2", "--batch", "10", "--seed", "3",
            "--out", str(out), "--device", "cpu", *extra]


@pytest.mark.slow
def test_two_gloo_processes_train_the_same_vae_as_one(tmp_path):
    """torchrun with 2 CPU processes: the 10-image batches are split 5 + 5, gradients averaged; the
    checkpoint rank 0 writes must hold the weights of the 1-process run (float32, Adam: within 1e-4)."""
    single = run(*_vae_cli(tmp_path / "one"))
    assert single.returncode == 0, single.stderr
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "qhybrid", "--", *_vae_cli(tmp_path / "two")],
        capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("trained classical VAE") == 1  # rank 0 alone reports
    one, two = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    assert one.keys() == two.keys()
    worst = max(float((one[k] - two[k]).abs().max()) for k in one)
    assert worst < 1e-4, worst
    # and the run did train (4 steps): the weights moved from their initialisation by 20x that
    from qhybrid.models.vae import VAE, VAEConfig

    torch.manual_seed(3)  # as train_vae seeds before building the model
    init = VAE(VAEConfig(size=32)).state_dict()
    assert max(float((one[k] - init[k]).abs().max()) for k in one if k in init) > 2e-3
    history_one = torch.load(tmp_path / "one" / "training_state.pt", weights_only=False)["history"]["loss"]
    history_two = torch.load(tmp_path / "two" / "training_state.pt", weights_only=False)["history"]["loss"]
    assert np.allclose(history_one, history_two, rtol=1e-4)
