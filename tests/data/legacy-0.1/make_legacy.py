"""Checkpoints and a job record written by qhybrid 0.1 before the restructuring (old flat modules)."""
import shutil
import sys
from pathlib import Path

import torch

out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
from qhybrid.denoiser import DenoiserConfig, LatentDenoiser
from qhybrid.train_vae import VAETrainConfig, train_vae
from qhybrid.vae import VAEConfig

from qhybrid import checkpoint as ckpt
from qhybrid.diffusion import SchedulerConfig
from qhybrid.quantum import CircuitSpec

spec = CircuitSpec(num_qubits=3, reps=1).to_dict()
# a quantum VAE with the old bottleneck (keys encoder.quantum.block / from_block)
train_vae(out / "qvae", VAEConfig(size=32, base_channels=4, channel_mult=(1, 1, 1, 1), quantum=spec),
          VAETrainConfig(n=8, epochs=1, batch=8), progress=False)
# a classical VAE and a hybrid LDM on it (bottleneck placement), written the way train_diffusion writes it
train_vae(out / "vae", VAEConfig(size=32, base_channels=4, channel_mult=(1, 1, 1, 1)),
          VAETrainConfig(n=8, epochs=1, batch=8), progress=False)
vae_header = ckpt.read_header(out / "vae", "vae")
torch.manual_seed(0)
for kind in ("hybrid", "classical"):
    dcfg = DenoiserConfig(kind=kind, latent_channels=4, latent_size=8, channels=8, time_dim=16, quantum=spec)
    model = LatentDenoiser(dcfg)
    config = {"denoiser": dcfg.to_dict(), "scheduler": SchedulerConfig().to_dict(), "vae_path": "../vae",
              "vae_sha256": vae_header["weights_sha256"], "latent_shape": [4, 8, 8], "image_size": 32}
    extra = {"step": 0, "train": {"data": "synthetic"}, "parameters": model.parameter_counts(), "weights": "ema"}
    ckpt.save_checkpoint(out / f"ldm-{kind}", "ldm", config, model.state_dict(), extra=extra)


# a VAE to resume (its training_state.pt is kept)
train_vae(out / "vae-resumable", VAEConfig(size=32, base_channels=4, channel_mult=(1, 1, 1, 1)),
          VAETrainConfig(n=8, epochs=1, batch=8), progress=False)

# a job record interrupted after step 0, and the final latents of the same run uninterrupted
import numpy as np  # noqa: E402
from qhybrid.jobs import Interrupted, submit  # noqa: E402

try:
    submit(out / "ldm-hybrid", "fake_manila", n=2, steps=3, seeds=[0], jobs_dir=out / "jobs", progress=False,
           interrupt_after_step=0)
except Interrupted:
    pass
full = submit(out / "ldm-hybrid", "fake_manila", n=2, steps=3, seeds=[0], jobs_dir=out / "full-jobs", progress=False)
np.save(out / "expected_final_latents_fake_manila_n2_steps3_seed0.npy", full[0].latents_before(3).numpy())
shutil.rmtree(out / "full-jobs")
for pattern in ("jobs/*.lock", "*/*.png", "vae/training_state.pt", "qvae/training_state.pt"):
    for path in out.glob(pattern):
        path.unlink()
