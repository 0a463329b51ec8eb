import os

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """A tiny VAE (32 px) with a 3-qubit hybrid and a classical LDM on it, trained in seconds."""
    from qhybrid.models.vae import VAEConfig
    from qhybrid.training.diffusion import DiffusionTrainConfig, train_diffusion
    from qhybrid.training.vae import VAETrainConfig, train_vae

    root = tmp_path_factory.mktemp("tiny")
    train_vae(root / "vae", VAEConfig(size=32), VAETrainConfig(n=16, epochs=1, batch=8), progress=False)
    train_diffusion(root / "ldm-hybrid", root / "vae", "hybrid", DiffusionTrainConfig(n=16, steps=10, batch=8),
                    num_qubits=3, reps=1, progress=False)
    train_diffusion(root / "ldm-classical", root / "vae", "classical", DiffusionTrainConfig(n=16, steps=5, batch=8),
                    progress=False)
    return root
