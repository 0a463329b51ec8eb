"""The noise scheduler: forward process statistics, posterior variance, DDPM/DDIM steps."""

import math

import pytest
import torch

from qhybrid.diffusion.sampling import sample_latents
from qhybrid.diffusion.scheduler import NoiseScheduler, SchedulerConfig


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_add_noise_has_the_right_mean_and_variance(schedule):
    s = NoiseScheduler(SchedulerConfig(beta_schedule=schedule))
    gen = torch.Generator().manual_seed(0)
    z0 = torch.full((200_000,), 1.5, dtype=torch.float64)
    for t in (0, 100, 500, 999):
        eps = torch.randn(z0.shape, generator=gen, dtype=torch.float64)
        zt = s.add_noise(z0, eps, torch.full((len(z0),), t))
        a = float(s.alphas_cumprod[t])
        assert zt.mean().item() == pytest.approx(math.sqrt(a) * 1.5, abs=0.01)
        assert zt.var().item() == pytest.approx(1 - a, abs=0.01 + 0.01 * (1 - a))


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_schedule_shapes(schedule):
    s = NoiseScheduler(SchedulerConfig(beta_schedule=schedule))
    abar = s.alphas_cumprod
    assert torch.all(abar[1:] < abar[:-1]) and 0 < abar[-1] < 0.01 and abar[0] > 0.99
    assert torch.all((s.betas > 0) & (s.betas < 1))


def test_posterior_variance_matches_closed_form_and_ddpm_noise():
    s = NoiseScheduler(SchedulerConfig(beta_schedule="linear"))
    for t in (1, 10, 400, 999):
        b = float(s.betas[t])
        a_t, a_prev = float(s.alphas_cumprod[t]), float(s.alphas_cumprod[t - 1])
        assert s.posterior_variance(t) == pytest.approx(b * (1 - a_prev) / (1 - a_t), rel=1e-12)
    # the spread of ancestral samples around their mean is the posterior variance
    t = 400
    zt = torch.zeros(100_000, dtype=torch.float64)
    eps_hat = torch.zeros_like(zt)
    gen = torch.Generator().manual_seed(1)
    samples = s.ddpm_step(eps_hat, t, zt, generator=gen)
    assert samples.var().item() == pytest.approx(s.posterior_variance(t), rel=0.02)
    assert torch.equal(s.ddpm_step(eps_hat, 0, zt), s.ddpm_step(eps_hat, 0, zt))  # no noise at t=0


def test_posterior_mean_with_the_true_noise_is_the_true_posterior_mean():
    s = NoiseScheduler()
    gen = torch.Generator().manual_seed(2)
    z0 = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    eps = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    t = 250
    zt = s.add_noise(z0, eps, torch.full((5,), t))
    a_t, a_prev, b = s.alphas_cumprod[t], s.alphas_cumprod[t - 1], s.betas[t]
    expected = (a_prev.sqrt() * b / (1 - a_t)) * z0 + ((1 - b).sqrt() * (1 - a_prev) / (1 - a_t)) * zt
    got = s.ddpm_step(eps, t, zt, generator=torch.Generator().manual_seed(3))
    noise = torch.randn(zt.shape, generator=torch.Generator().manual_seed(3), dtype=zt.dtype)
    torch.testing.assert_close(got - math.sqrt(s.posterior_variance(t)) * noise, expected)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_predictions_invert_the_forward_process(prediction):
    s = NoiseScheduler(SchedulerConfig(prediction_type=prediction))
    gen = torch.Generator().manual_seed(4)
    z0 = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    eps = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    t = torch.tensor([0, 10, 200, 500, 800, 999])
    zt = s.add_noise(z0, eps, t)
    z0_hat, eps_hat = s.predict_z0_eps(s.target(z0, eps, t), zt, t)
    torch.testing.assert_close(z0_hat, z0)
    torch.testing.assert_close(eps_hat, eps)


def test_ddim_with_eta_zero_is_deterministic_and_eta_one_is_not():
    s = NoiseScheduler()
    z = torch.randn(3, 4, generator=torch.Generator().manual_seed(5))
    out = torch.randn(3, 4, generator=torch.Generator().manual_seed(6))
    a = s.ddim_step(out, 500, 480, z, eta=0.0, generator=torch.Generator().manual_seed(1))
    b = s.ddim_step(out, 500, 480, z, eta=0.0, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    c = s.ddim_step(out, 500, 480, z, eta=1.0, generator=torch.Generator().manual_seed(1))
    d = s.ddim_step(out, 500, 480, z, eta=1.0, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(c, d)


class Oracle(torch.nn.Module):
    """The exact noise predictor for a data distribution that is a single point ``c``."""

    def __init__(self, scheduler, c):
        super().__init__()
        self.s, self.c = scheduler, c
        self.cfg = type("cfg", (), {"latent_channels": c.shape[0], "latent_size": c.shape[1]})

    def forward(self, z, t):
        a = self.s.alphas_cumprod[t].to(z.dtype).view(-1, 1, 1, 1)
        return (z - a.sqrt() * self.c) / (1 - a).sqrt()


@pytest.mark.parametrize("sampler, steps", [("ddim", 10), ("ddim", 50), ("ddpm", None)])
def test_sampling_loop_reaches_the_data_with_an_exact_denoiser(sampler, steps):
    s = NoiseScheduler(SchedulerConfig(num_train_timesteps=200))
    c = torch.randn(2, 4, 4, generator=torch.Generator().manual_seed(7))
    z = sample_latents(Oracle(s, c), s, n=5, steps=steps or 200, sampler=sampler, seed=0, progress=False)
    torch.testing.assert_close(z, c.expand_as(z), atol=1e-4, rtol=0)


def test_timesteps_and_config():
    s = NoiseScheduler()
    ts = s.timesteps(50)
    assert len(ts) == 50 and ts[0] == 980 and ts[-1] == 0 and ts == sorted(ts, reverse=True)
    with pytest.raises(ValueError, match="between 1 and 1000"):
        s.timesteps(0)
    cfg = SchedulerConfig(beta_schedule="linear", prediction_type="v_prediction", num_train_timesteps=500)
    assert SchedulerConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="beta_schedule"):
        SchedulerConfig(beta_schedule="sigmoid")
    with pytest.raises(ValueError, match="timesteps must lie"):
        s.add_noise(torch.zeros(1), torch.zeros(1), torch.tensor([1000]))


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("gamma", [1.0, 5.0])
def test_min_snr_weight_turns_the_prediction_error_into_the_clamped_snr_weighted_x0_error(prediction, gamma):
    """Hang et al. 2023: the weighted loss on epsilon or v equals min(SNR, gamma) times the squared
    error of the z0 that prediction implies, at every timestep (low and high SNR)."""
    s = NoiseScheduler(SchedulerConfig(prediction_type=prediction))
    gen = torch.Generator().manual_seed(5)
    t = torch.tensor([0, 30, 200, 500, 800, 999])
    z0, eps, wrong = (torch.randn(6, 4, generator=gen, dtype=torch.float64) for _ in range(3))
    zt = s.add_noise(z0, eps, t)
    z0_wrong, _ = s.predict_z0_eps(wrong, zt, t)
    weighted = s.min_snr_weight(t, gamma).double() * ((wrong - s.target(z0, eps, t)) ** 2).mean(dim=1)
    expected = s.snr(t).clamp(max=gamma) * ((z0_wrong - z0) ** 2).mean(dim=1)
    torch.testing.assert_close(weighted, expected, rtol=1e-5, atol=1e-9)
    assert s.snr(t)[0] > gamma > s.snr(t)[-1]  # both sides of the clamp are covered
