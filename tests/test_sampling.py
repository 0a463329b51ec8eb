"""The one sampling loop (qhybrid.diffusion.sampling): bit-identical to the loop it replaced, and
steppable one step at a time from saved latents, which is how IBM Quantum job runs use it."""

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


def loop_it_replaced(model, scheduler, n, steps, sampler="ddim", eta=0.0, seed=0, batch=64):
    """The sampling loop of commit 17b6714 (before the loop was shared with the job runner), verbatim but
    for its progress bar. The test used to pin the sha256 of this loop's output, recorded on one machine;
    another CPU's vectorised kernels round the last bit differently, so the loop itself is the reference."""
    shape = (model.cfg.latent_channels, model.cfg.latent_size, model.cfg.latent_size)
    gen = torch.Generator().manual_seed(seed)
    timesteps = scheduler.timesteps(steps) if sampler == "ddim" else list(range(scheduler.num_train_timesteps))[::-1]
    out = []
    chunks = [min(batch, n - i) for i in range(0, n, batch)]
    for size in chunks:
        z = torch.randn((size, *shape), generator=gen)
        for k, t in enumerate(timesteps):
            tt = torch.full((size,), t, dtype=torch.long)
            pred = model(z, tt)
            if sampler == "ddim":
                t_prev = timesteps[k + 1] if k + 1 < len(timesteps) else -1
                z = scheduler.ddim_step(pred, t, t_prev, z, eta=eta, generator=gen)
            else:
                z = scheduler.ddpm_step(pred, t, z, generator=gen)
        out.append(z)
    return torch.cat(out)


#: Scheduler and sampling settings; two chunks (batch=3) check that one generator feeds every chunk in order.
CASES = {
    "ddim-eta0": ({"num_train_timesteps": 100, "beta_schedule": "linear"},
                  {"n": 5, "steps": 7, "sampler": "ddim", "eta": 0.0, "seed": 11, "batch": 3}),
    "ddim-eta0.6-v": ({"num_train_timesteps": 100, "prediction_type": "v_prediction"},
                      {"n": 5, "steps": 9, "sampler": "ddim", "eta": 0.6, "seed": 4, "batch": 3}),
    "ddpm": ({"num_train_timesteps": 30, "beta_schedule": "linear"},
             {"n": 4, "steps": 1, "sampler": "ddpm", "seed": 2, "batch": 3}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_sample_latents_is_bit_identical_to_the_loop_it_replaced(case):
    scheduler_cfg, kwargs = CASES[case]
    scheduler = NoiseScheduler(SchedulerConfig(**scheduler_cfg))
    with torch.no_grad():
        z = sample_latents(TinyDenoiser(), scheduler, progress=False, **kwargs)
        reference = loop_it_replaced(TinyDenoiser(), scheduler, **kwargs)
    assert z.dtype == torch.float32 and len(z) == kwargs["n"]
    assert torch.equal(z, reference), (z - reference).abs().max()


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
