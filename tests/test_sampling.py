"""The one sampling loop (qhybrid.diffusion.sampling): bit-identical to the loop it replaced, and
steppable one step at a time from saved latents, which is how IBM Quantum job runs use it."""

import hashlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from qhybrid.diffusion.sampling import (
    denoise,
    denoise_step,
    sample_latents,
    sampling_timesteps,
)
from qhybrid.diffusion.scheduler import NoiseScheduler, SchedulerConfig
from qhybrid.errors import InputError


class TinyDenoiser(torch.nn.Module):
    """A fixed, weightless stand-in for a denoiser: elementwise and shift operations only, so its
    output does not depend on how a library initialises layers."""

    cfg = SimpleNamespace(latent_channels=2, latent_size=4)

    def forward(self, z, t):
        shift = (t.to(z.dtype) / 100.0).view(-1, 1, 1, 1)
        return torch.tanh(0.7 * z.roll(1, dims=-1) - 0.2 * z.flip(1) + shift)


#: sha256 of the float32 latents that the sampling loop of commit 17b6714 (before the loop was
#: shared with the job runner) returned for these settings, with torch 2.13 on x86-64. Two chunks
#: (batch=3) check that one generator feeds every chunk in order.
GOLDEN = {
    "ddim-eta0": ({"num_train_timesteps": 100, "beta_schedule": "linear"},
                  {"n": 5, "steps": 7, "sampler": "ddim", "eta": 0.0, "seed": 11, "batch": 3},
                  "1f457557469a2b8cf441a0210cc12ae40c478fc81fa1b18c20459485e9c09840"),
    "ddim-eta0.6-v": ({"num_train_timesteps": 100, "prediction_type": "v_prediction"},
                      {"n": 5, "steps": 9, "sampler": "ddim", "eta": 0.6, "seed": 4, "batch": 3},
                      "3556d075fe9bc80b1104aa2e909f1041155703ae9440a247b6a8d19dbaccfe8c"),
    "ddpm": ({"num_train_timesteps": 30, "beta_schedule": "linear"},
             {"n": 4, "steps": 1, "sampler": "ddpm", "seed": 2, "batch": 3},
             "0bc248642c613463a9e2d64624e15f66e98afdaa12be5959eec910439586dd00"),
}


@pytest.mark.parametrize("case", sorted(GOLDEN))
def test_sample_latents_is_bit_identical_to_the_loop_it_replaced(case):
    scheduler_cfg, kwargs, digest = GOLDEN[case]
    z = sample_latents(TinyDenoiser(), NoiseScheduler(SchedulerConfig(**scheduler_cfg)), progress=False, **kwargs)
    assert z.dtype == torch.float32 and len(z) == kwargs["n"]
    assert hashlib.sha256(z.numpy().tobytes()).hexdigest() == digest, z.flatten()[:4].tolist()


@pytest.mark.parametrize("sampler, eta", [("ddim", 0.0), ("ddim", 0.5), ("ddpm", 0.0)])
def test_denoise_from_the_seeds_noise_is_sample_latents(sampler, eta):
    model, scheduler = TinyDenoiser(), NoiseScheduler(SchedulerConfig(num_train_timesteps=40))
    gen = torch.Generator().manual_seed(9)
    z = torch.randn((3, 2, 4, 4), generator=gen)
    timesteps = sampling_timesteps(scheduler, 8, sampler)
    ours = denoise(model, scheduler, z, timesteps, sampler, eta, gen)
    theirs = sample_latents(model, scheduler, n=3, steps=8, sampler=sampler, eta=eta, seed=9, progress=False)
    assert torch.equal(ours, theirs)


def test_deterministic_ddim_draws_no_random_numbers():
    """What lets a job run stop after any step and go on from the saved latents alone."""
    model, scheduler = TinyDenoiser(), NoiseScheduler()
    gen = torch.Generator().manual_seed(3)
    state = gen.get_state()
    z = torch.randn((2, 2, 4, 4), generator=torch.Generator().manual_seed(1))
    timesteps = sampling_timesteps(scheduler, 5)
    denoise(model, scheduler, z, timesteps, "ddim", 0.0, gen)
    assert torch.equal(gen.get_state(), state)


def test_steps_taken_one_by_one_from_saved_latents_equal_the_whole_loop(tmp_path):
    model, scheduler = TinyDenoiser(), NoiseScheduler()
    z0 = torch.randn((4, 2, 4, 4), generator=torch.Generator().manual_seed(5))
    timesteps = sampling_timesteps(scheduler, 6)
    whole = denoise(model, scheduler, z0, timesteps)
    z = z0
    for k in range(len(timesteps)):  # each step in a "new process": from the latents on disk
        np.save(tmp_path / "z.npy", z.numpy())
        z = denoise_step(model, scheduler, torch.from_numpy(np.load(tmp_path / "z.npy")), k, timesteps)
    assert torch.equal(z, whole)


def test_denoise_reports_every_step_and_keeps_no_graph():
    model, scheduler = TinyDenoiser(), NoiseScheduler()
    z = torch.randn((1, 2, 4, 4), requires_grad=True)
    seen = []
    out = denoise(model, scheduler, z, sampling_timesteps(scheduler, 4), on_step=seen.append)
    assert seen == [0, 1, 2, 3] and not out.requires_grad


def test_an_unknown_sampler_is_named_with_the_allowed_ones():
    with pytest.raises(InputError, match="unknown sampler 'euler'; allowed: ddim, ddpm"):
        sample_latents(TinyDenoiser(), NoiseScheduler(), n=1, sampler="euler", progress=False)
