"""Noise-aware training: the noise surrogate against Aer, training with it, and the comparison.

The surrogate is checked against real noisy executions (Aer with the fake backends' noise), never
against itself; the training and comparison tests run the real training loop and noisy-eval on the
session's tiny models."""

import json

import numpy as np
import pytest
import torch

from qhybrid.quantum import CircuitSpec, QuantumBlock
from qhybrid.quantum.noise_surrogate import (
    FILE_NAME,
    NoiseSurrogate,
    SurrogateError,
    fit_surrogate,
)
from tests.cli_helpers import one_line_error, run


def _surrogate(n=3, a=0.9, b=0.02, s=0.0, shots=1000, circuit=None):
    info = {"backend": "fake_torino", "circuit": circuit or {}}
    return NoiseSurrogate(np.eye(n) * a, [b] * n, [s] * n, shots=shots, info=info)


# --- the surrogate against Aer ---------------------------------------------------------------------
@pytest.mark.slow  # 8-15 s each; the fast suite fits a surrogate through `qhybrid noise surrogate`
@pytest.mark.parametrize("backend", ["fake_torino", "fake_fez", "fake_kyiv"])
def test_surrogate_reproduces_aer_within_shot_noise_on_held_out_inputs(backend):
    """Fitted on one set of inputs and weights, the surrogate's mean is off Aer's noisy outputs on other
    inputs by about the shot-noise floor (error / floor < 1.3), where the exact outputs are off by far
    more; and the spread it draws has the size of the real one (z spread near 1)."""
    block = QuantumBlock(CircuitSpec(num_qubits=4, reps=2, encoding="reuploading"), seed=3)
    inputs = torch.randn(512, 4, generator=torch.Generator().manual_seed(0))
    surrogate = fit_surrogate(block, backend, inputs, shots=4096, fit_rows=256, held_out_rows=192, seed=0)
    q = surrogate.info["quality"]
    assert q["held_out_rows"] == 192 and q["shots"] == 4096
    assert q["error_over_floor"] < 1.3, q
    assert q["ideal_error_over_floor"] > q["error_over_floor"] + 0.4, q
    assert 0.8 < q["z_sd"] < 1.3, q
    attenuation = np.diag(surrogate.matrix.numpy())
    assert np.all((attenuation > 0.7) & (attenuation < 1.0)), attenuation  # noise shrinks <Z> towards 0
    assert surrogate.info["backend"] == backend and surrogate.info["calibration_date"]
    assert surrogate.info["circuit"] == block.spec.to_dict() and len(surrogate.info["layout"]) == 4


def test_surrogate_file_round_trip_and_refusals(tmp_path):
    """Saved and read back, the surrogate predicts the same; a file for another circuit or backend is
    refused with a line naming the fix; a damaged file, one of another format version and a file that
    is not a surrogate say so."""
    spec = CircuitSpec(num_qubits=3, reps=1).to_dict()
    s = _surrogate(circuit=spec)
    s.save(tmp_path / "s.json")
    back = NoiseSurrogate.from_file(tmp_path / "s.json")
    mu = torch.rand(5, 3) * 2 - 1
    assert torch.equal(back.mean(mu), s.mean(mu)) and back.shots == s.shots and back.backend == "fake_torino"
    back.check_fits(spec, "fake:fake_torino")
    with pytest.raises(SurrogateError, match="fake_torino, not fake:fake_fez"):
        back.check_fits(spec, "fake:fake_fez")
    with pytest.raises(SurrogateError, match="another circuit"):
        back.check_fits(CircuitSpec(num_qubits=3, reps=2).to_dict())
    damaged = {k: v for k, v in s.to_dict().items() if k != "matrix"}
    (tmp_path / "damaged.json").write_text(json.dumps(damaged))
    with pytest.raises(SurrogateError, match="damaged"):
        NoiseSurrogate.from_file(tmp_path / "damaged.json")
    (tmp_path / "future.json").write_text(json.dumps({**s.to_dict(), "format_version": 99}))
    with pytest.raises(SurrogateError, match="format 99"):
        NoiseSurrogate.from_file(tmp_path / "future.json")
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(SurrogateError, match="not a noise surrogate"):
        NoiseSurrogate.from_file(tmp_path / "bad.json")
    with pytest.raises(SurrogateError, match="no noise surrogate"):
        NoiseSurrogate.from_file(tmp_path / "missing.json")


# --- the surrogate as a layer ----------------------------------------------------------------------
def test_surrogate_draws_the_binomial_spread_around_the_affine_mean():
    """In training mode the draws average to A mu + b and spread by sqrt((1 - y^2) / shots + s^2)."""
    torch.manual_seed(0)
    s = _surrogate(a=0.8, b=0.05, s=0.01, shots=256).train()
    mu = torch.tensor([[0.5, -0.2, 0.0]]).repeat(20000, 1)
    y = s(mu)
    expected = torch.tensor([0.45, -0.11, 0.05])
    assert torch.allclose(y.mean(0), expected, atol=3e-3)
    sd = torch.sqrt((1 - expected**2) / 256 + 0.01**2)
    assert torch.allclose(y.std(0), sd, rtol=0.05)


def test_surrogate_is_exact_in_eval_mode():
    """Eval mode returns the exact outputs (a model carrying it samples exactly on ideal); training
    mode draws anew on every call."""
    s = _surrogate(a=0.5, b=0.3)
    mu = torch.rand(64, 3) * 2 - 1
    assert torch.equal(s.eval()(mu), mu)
    s.train()
    assert not torch.equal(s(mu), s(mu))


def test_forward_pair_runs_the_circuit_once_and_differs_only_through_the_surrogate(tiny_models):
    """The noise-aware step's two predictions: the circuit is evaluated once; the exact one equals the
    plain forward; with a surrogate that changes nothing (A = I, b = 0, no noise) the noisy one does
    too, and with a real surrogate it equals a plain forward whose core outputs are mapped by it
    (checked with the surrogate's noiseless mean), and the gradient of their gap reaches the circuit."""
    from qhybrid.models.denoiser import LatentDenoiser

    model = LatentDenoiser.from_checkpoint(tiny_models / "ldm-hybrid").train()
    block = model.quantum_block
    n = block.spec.num_outputs
    c, size = model.cfg.latent_channels, model.cfg.latent_size
    z, t = torch.randn(3, c, size, size), torch.tensor([3, 40, 400])
    calls = []
    handle = block.register_forward_hook(lambda *a: calls.append(1))
    identity = NoiseSurrogate(np.eye(n), [0.0] * n, [0.0] * n, shots=10**12)
    exact, noisy = model.forward_pair(z, t, identity.train())
    handle.remove()
    assert len(calls) == 1
    with torch.no_grad():
        plain = model(z, t)
    assert torch.allclose(exact, plain, atol=1e-5) and torch.allclose(noisy, plain, atol=1e-4)
    surrogate = _surrogate(n=n, a=0.6, b=0.1)
    exact, noisy = model.forward_pair(z, t, surrogate.eval().mean)  # the map without its random draw
    handle = block.register_forward_hook(lambda module, inputs, output: surrogate.mean(output))
    with torch.no_grad():
        mapped = model(z, t)
    handle.remove()
    assert torch.allclose(noisy, mapped, atol=1e-5) and not torch.allclose(noisy, exact, atol=1e-3)
    gap = torch.mean((noisy - exact) ** 2)
    gap.backward()
    assert block.weight.grad is not None and block.weight.grad.abs().sum() > 0


def test_forward_pair_is_refused_without_a_per_patch_circuit(tiny_models):
    from qhybrid.errors import InputError
    from qhybrid.models.denoiser import LatentDenoiser

    model = LatentDenoiser.from_checkpoint(tiny_models / "ldm-classical")
    c, size = model.cfg.latent_channels, model.cfg.latent_size
    with pytest.raises(InputError, match="qresblock placement"):
        model.forward_pair(torch.randn(1, c, size, size), torch.tensor([1]), _surrogate())


# --- training with it ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_surrogate(tiny_models, tmp_path_factory):
    """A small fit of fake_torino's surrogate for the tiny hybrid, saved as a file."""
    from qhybrid.models.denoiser import LatentDenoiser

    block = LatentDenoiser.from_checkpoint(tiny_models / "ldm-hybrid").quantum_block
    inputs = torch.randn(96, block.spec.num_inputs, generator=torch.Generator().manual_seed(0))
    surrogate = fit_surrogate(block, "fake_torino", inputs, fit_rows=64, held_out_rows=32, fit_shots=4096)
    return surrogate.save(tmp_path_factory.mktemp("surrogates") / "tiny-fake_torino.json")


@pytest.mark.slow  # 10 s: it encodes the model's training images and fits on 768 rows
def test_noise_surrogate_command_writes_the_fit_and_its_quality(tiny_models, tmp_path):
    """``qhybrid noise surrogate``: one file per backend with its calibration date, versions and held-out
    quality, and the table."""
    proc = run("noise", "surrogate", "--model", tiny_models / "ldm-hybrid", "--backends", "fake_torino",
               "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "ldm-hybrid-surrogates.md" in proc.stdout and "held-out |Aer - surrogate|" in proc.stdout
    data = json.loads((tmp_path / "ldm-hybrid-fake_torino-surrogate.json").read_text())
    assert data["format"] == "qhybrid-noise-surrogate" and data["backend"] == "fake_torino"
    assert data["calibration_date"] and data["versions"]["qiskit-aer"]
    q = data["quality"]
    assert q["shots"] == 4096 and q["held_out_rows"] == 256 and q["fit_rows"] == 512 and q["error_over_floor"] > 0
    assert "| fake_torino |" in (tmp_path / "ldm-hybrid-surrogates.md").read_text()


def test_noise_aware_fine_tune_saves_the_surrogate_and_loads_as_a_plain_model(tiny_models, tiny_surrogate, tmp_path):
    """``train diffusion --noise-aware --surrogate --init-from``: the checkpoint says what it was trained
    for and keeps the surrogate next to it; its weights are an ordinary checkpoint's (the same keys as
    the model it started from) and moved from that model's by a fine-tune's few steps."""
    from qhybrid.models.denoiser import LatentDenoiser

    out = tmp_path / "na"
    proc = run("train", "diffusion", "--vae", tiny_models / "vae", "--denoiser", "hybrid", "--n", 16, "--steps", 6,
               "--batch", 8, "--noise-aware", "fake:fake_torino", "--surrogate", tiny_surrogate,
               "--init-from", tiny_models / "ldm-hybrid", "--noise-consistency", 2, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "noise-aware for fake:fake_torino at 4,096 shots (consistency weight 2)" in proc.stdout
    saved = NoiseSurrogate.from_file(out / FILE_NAME)
    assert saved.backend == "fake_torino" and saved.info["quality"] == json.loads(tiny_surrogate.read_text())["quality"]
    header = json.loads((out / "config.json").read_text())
    assert header["extra"]["noise_aware"]["target"] == "fake:fake_torino"
    assert header["extra"]["train"]["init_from"] == str(tiny_models / "ldm-hybrid")
    tuned, start = LatentDenoiser.from_checkpoint(out), LatentDenoiser.from_checkpoint(tiny_models / "ldm-hybrid")
    assert set(tuned.state_dict()) == set(start.state_dict())  # an ordinary checkpoint: no surrogate inside
    # it started from the checkpoint: a few steps away from it, far from a fresh initialisation
    torch.manual_seed(5)
    fresh = LatentDenoiser(start.cfg).state_dict()
    tuned_w, start_w = tuned.state_dict(), start.state_dict()
    to_start = np.mean([(tuned_w[k] - start_w[k]).abs().mean().item() for k in start_w])
    to_fresh = np.mean([(tuned_w[k] - fresh[k]).abs().mean().item() for k in start_w])
    assert 0 < to_start < 0.2 * to_fresh, (to_start, to_fresh)


def test_noise_aware_training_changes_what_the_model_learns_and_resumes_with_its_surrogate(tiny_models, tiny_surrogate,
                                                                                         tmp_path):
    """Same seed, same data order: noise-aware weights differ from plain ones (the surrogate is on
    the training path: every step logs the consistency term), and a resumed noise-aware run keeps the
    surrogate it started with and goes on logging that term; asking a resume for another target is
    refused."""
    from safetensors.torch import load_file

    from qhybrid.models.checkpoint import STATE_NAME
    from qhybrid.training.diffusion import (
        DiffusionTrainConfig,
        TrainingError,
        train_diffusion,
    )

    def train(folder, steps, resume=False, **extra):
        return train_diffusion(folder, tiny_models / "vae", "hybrid",
                               DiffusionTrainConfig(n=16, steps=steps, batch=8, save_every=4, **extra),
                               num_qubits=3, reps=1, resume=resume, progress=False)

    train(tmp_path / "plain", 4)
    aware = train(tmp_path / "aware", 4, noise_aware="fake:fake_torino", surrogate=str(tiny_surrogate))
    assert aware["noise_aware"]["quality"] == json.loads(tiny_surrogate.read_text())["quality"]
    plain_w = load_file(tmp_path / "plain" / "model.safetensors")
    aware_w = load_file(tmp_path / "aware" / "model.safetensors")
    assert set(plain_w) == set(aware_w) and any(not torch.equal(plain_w[k], aware_w[k]) for k in plain_w)
    history = torch.load(tmp_path / "aware" / STATE_NAME, weights_only=False)["history"]
    # 0 at the first step only: the denoiser's output layer starts at zero, so both predictions are 0
    assert len(history["consistency"]) == 4 and all(v > 0 for v in history["consistency"][1:])
    before = (tmp_path / "aware" / FILE_NAME).read_text()
    with pytest.raises(TrainingError, match="noise_aware='fake:fake_torino'"):
        train(tmp_path / "aware", 8, resume=True, noise_aware="fake:fake_fez")
    resumed = train(tmp_path / "aware", 8, resume=True)
    assert resumed["steps"] == 8 and (tmp_path / "aware" / FILE_NAME).read_text() == before
    assert resumed["noise_aware"]["target"] == "fake:fake_torino"
    history = torch.load(tmp_path / "aware" / STATE_NAME, weights_only=False)["history"]
    assert len(history["consistency"]) == 8


def test_noise_aware_usage_errors(tiny_models, tiny_surrogate, tmp_path):
    vae = tiny_models / "vae"
    base = ("train", "diffusion", "--vae", vae, "--steps", 2, "--out", tmp_path / "x")
    assert "has none to train" in one_line_error(run(*base, "--denoiser", "classical", "--noise-aware", "fake:fake_torino"))
    assert "takes a fake target" in one_line_error(run(*base, "--denoiser", "hybrid", "--noise-aware", "ibm:ibm_torino"))
    assert "unknown fake backend" in one_line_error(run(*base, "--denoiser", "hybrid", "--noise-aware", "fake:fake_nope"))
    assert "only with --noise-aware" in one_line_error(run(*base, "--denoiser", "hybrid", "--surrogate",
                                                                  tiny_surrogate))
    line = one_line_error(run(*base, "--denoiser", "hybrid", "--noise-aware", "fake:fake_fez", "--surrogate",
                              tiny_surrogate, "--n", 16, "--batch", 8, "--qubits", 3, "--reps", 1), code=2)
    assert "is of fake_torino, not fake:fake_fez" in line
    line = one_line_error(run(*base, "--denoiser", "classical", "--init-from", tiny_models / "ldm-hybrid"), code=2)
    assert "holds a hybrid denoiser, not classical" in line
    assert "go together" in one_line_error(run("noisy-eval", "--plain", "a", "--backends", "fake_torino"))


# --- the comparison --------------------------------------------------------------------------------
@pytest.mark.slow
def test_comparison_evaluates_each_model_and_aggregates_over_seeds(tiny_models, tiny_surrogate, tmp_path):
    """``noisy-eval --plain A,B --noise-aware C,D``: one noisy evaluation per model (kept for the next
    call), and per group and backend the mean, lowest and highest of each model's own figures."""
    from qhybrid.training.diffusion import DiffusionTrainConfig, train_diffusion

    plain, aware = [], []
    for seed in (0, 1):
        for folder, extra, bucket in ((tmp_path / f"plain-s{seed}", {}, plain),
                                      (tmp_path / f"na-s{seed}", {"noise_aware": "fake:fake_torino",
                                                                  "surrogate": str(tiny_surrogate)}, aware)):
            train_diffusion(folder, tiny_models / "vae", "hybrid",
                            DiffusionTrainConfig(n=16, steps=4, batch=8, seed=seed, **extra), num_qubits=3, reps=1,
                            progress=False)
            bucket.append(folder)
    out = tmp_path / "cmp"
    proc = run("noisy-eval", "--plain", ",".join(map(str, plain)), "--noise-aware", ",".join(map(str, aware)),
               "--backends", "fake_torino,fake_fez", "--shots", 1024, "--n", 2, "--steps", 2, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "fake_torino" in proc.stdout and "image change" in proc.stdout
    result = json.loads((out / "noise_aware.json").read_text())
    assert result["trained_for"] == ["fake:fake_torino"]
    for group, models in (("plain", plain), ("noise-aware", aware)):
        rows = result["models"][group]
        assert [r["model"] for r in rows] == [str(m) for m in models]
        for backend in ("fake_torino", "fake_fez"):
            values = [r["targets"][backend]["noise_image_change_grey"] for r in rows]
            stat = result["summary"][group][backend]["noise_image_change_grey"]
            assert stat["values"] == values and stat["mean"] == pytest.approx(np.mean(values))
            assert stat["min"] == min(values) and stat["max"] == max(values)
    ratio = result["summary"]["ratio"]["fake_torino"]["block_error_mean"]
    assert ratio == pytest.approx(result["summary"]["noise-aware"]["fake_torino"]["block_error_mean"]["mean"]
                                  / result["summary"]["plain"]["fake_torino"]["block_error_mean"]["mean"])
    md = (out / "noise_aware.md").read_text()
    assert "fake_torino (trained for)" in md and "fake_fez (unseen)" in md
    assert (out / "noise_aware.png").stat().st_size > 0


@pytest.mark.slow
def test_the_study_trains_what_is_missing_and_keeps_it_on_a_second_call(tiny_models, tmp_path):
    """``qhybrid noise-aware``: plain and noise-aware models per seed, then the comparison; a second
    call trains nothing, keeps the stage times of the first and writes the same comparison."""
    out = tmp_path / "study"
    args = ("noise-aware", "--vae", tiny_models / "vae", "--backend", "fake_torino", "--unseen", "fake_fez",
            "--seeds", "0", "--steps", 2, "--n-train", 16, "--n", 2, "--sample-steps", 1, "--shots", 1024,
            "--out", out)
    first = run(*args)
    assert first.returncode == 0, first.stderr
    assert "stage times:" in first.stdout and "image change" in first.stdout
    for name in ("ldm-hybrid-s0", "ldm-hybrid-na-fake_torino-s0"):
        assert json.loads((out / name / "config.json").read_text())["extra"]["step"] == 2
    assert (out / "ldm-hybrid-na-fake_torino-s0" / FILE_NAME).exists()
    assert not (out / "ldm-hybrid-s0" / FILE_NAME).exists()
    before = json.loads((out / "comparison" / "noise_aware.json").read_text())
    timings = json.loads((out / "study.json").read_text())["timings_seconds"]
    second = run(*args)
    assert second.returncode == 0, second.stderr
    assert "kept " in second.stdout and "training " not in second.stdout
    after = json.loads((out / "study.json").read_text())["timings_seconds"]
    assert after["ldm-hybrid-s0"] == timings["ldm-hybrid-s0"]
    assert json.loads((out / "comparison" / "noise_aware.json").read_text())["summary"] == before["summary"]
