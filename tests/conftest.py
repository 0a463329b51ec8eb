import os

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def interrupt_at():
    """A training callback that presses Ctrl-C (raises KeyboardInterrupt) once a run has completed
    ``step`` optimiser steps or ``epoch`` epochs: after that step's or epoch's checkpoint, as a
    user's Ctrl-C would come between two steps. Pass it as ``callbacks=[interrupt_at(epoch=1)]``."""
    from qhybrid.training.loop import Callback

    class InterruptAt(Callback):
        def __init__(self, step: int | None = None, epoch: int | None = None):
            self.step, self.epoch = step, epoch

        def on_step_end(self, trainer):
            if self.step is not None and trainer.step >= self.step:
                raise KeyboardInterrupt

        def on_epoch_end(self, trainer):
            if self.epoch is not None and trainer.epoch >= self.epoch:
                raise KeyboardInterrupt

    return InterruptAt


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
