"""Devices and data-parallel training on the CPU: ``--device`` resolves and refuses what is not
there, training and sampling run with an explicit device, and a 2-process ``torchrun`` run (gloo)
writes one checkpoint whose weights equal the single-process run's."""

import json
import os
import shutil
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


def _torchrun(*cli, timeout=600):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "qhybrid", "--", *cli], capture_output=True, text=True, env=env, timeout=timeout)


@pytest.mark.slow
def test_two_gloo_processes_train_the_same_vae_as_one(tmp_path):
    """torchrun with 2 CPU processes: the 10-image batches are split 5 + 5, gradients averaged; the
    checkpoint rank 0 writes must hold the weights of the 1-process run (float32, Adam: within 1e-4)."""
    single = run(*_vae_cli(tmp_path / "one"))
    assert single.returncode == 0, single.stderr
    proc = _torchrun(*_vae_cli(tmp_path / "two"))
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


@pytest.mark.slow
def test_a_torchrun_run_resumes_as_a_one_process_run_does(tmp_path):
    """One epoch, then --resume to two, under torchrun (2 gloo processes) and in one process: the
    resumed data-parallel run restores the optimiser, generator and step on every rank, so both end
    with the same weights (within 1e-4) and the same loss history, one checkpoint, rank 0 reporting."""
    first_epoch = {}
    for epochs, extra in (("1", ()), ("2", ("--resume",))):
        cli = [*_vae_cli(tmp_path / "one", extra)]
        cli[cli.index("--epochs") + 1] = epochs
        single = run(*cli)
        assert single.returncode == 0, single.stderr
        cli[cli.index("--out") + 1] = str(tmp_path / "two")
        proc = _torchrun(*cli)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout.count("trained classical VAE") == 1
        if epochs == "1":
            first_epoch = torch.load(tmp_path / "two" / "training_state.pt", weights_only=False)["history"]["loss"]
    one, two = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    assert max(float((one[k] - two[k]).abs().max()) for k in one) < 1e-4
    state_one = torch.load(tmp_path / "one" / "training_state.pt", weights_only=False)
    state_two = torch.load(tmp_path / "two" / "training_state.pt", weights_only=False)
    assert state_one["epoch"] == state_two["epoch"] == 2 and state_one["step"] == state_two["step"] == 4
    assert np.allclose(state_one["history"]["loss"], state_two["history"]["loss"], rtol=1e-4)
    assert state_two["history"]["loss"][:2] == first_epoch  # continued from the saved epoch, not retrained

# --- the commands that sample or evaluate with noisy targets: noisy-eval, jobs, noise surrogate, the
# --- noise-aware study and comparison, the sweep. Explicit --device cpu must equal the default run, and
# --- the device is recorded but is no part of what a resumed evaluation or job run must match.
QUIET = {"progress": False, "log": lambda *_: None}


def _arrays(path):
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def _same_arrays(a, b) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_noisy_eval_on_an_explicit_device_equals_the_default_and_resumes_on_another(tiny_models, tmp_path):
    from qhybrid.workflows.noisy_eval import (
        NoisyEvalConfig,
        run_noisy_eval,
        strip_timings,
    )

    model = tiny_models / "ldm-hybrid"
    cfg = NoisyEvalConfig(backends=("fake_athens",), shots=(256,), n=2, steps=2)
    default = run_noisy_eval(model, tmp_path / "default", cfg, **QUIET)
    cpu = run_noisy_eval(model, tmp_path / "cpu", cfg, device="cpu", **QUIET)
    assert cpu["device"] == "cpu" and {e["device"] for e in cpu["targets"].values()} == {"cpu"}
    assert "networks on cpu" in (tmp_path / "cpu" / "noisy_eval.md").read_text()
    assert strip_timings(cpu) == strip_timings(default)
    for key in cpu["targets"]:
        assert _same_arrays(_arrays(tmp_path / "cpu" / "targets" / f"{key}.npz"),
                            _arrays(tmp_path / "default" / "targets" / f"{key}.npz")), key
    assert "device" not in (tmp_path / "cpu" / "config.json").read_text()  # not part of the identity
    # as if a GPU had run the first targets: the resume on the CPU keeps them and finishes the last
    targets = tmp_path / "cpu" / "targets"
    for key in ("ideal", "shots-256"):
        entry = json.loads((targets / f"{key}.json").read_text())
        (targets / f"{key}.json").write_text(json.dumps({**entry, "device": "cuda:0"}))
    (targets / "fake_athens-256.json").unlink()
    lines = []
    resumed = run_noisy_eval(model, tmp_path / "cpu", cfg, resume=True, device="cpu", progress=False, log=lines.append)
    assert any(line.startswith("kept ideal") for line in lines)
    assert resumed["complete"] and resumed["device"] == "cuda:0, cpu"
    assert resumed["targets"]["fake_athens-256"]["device"] == "cpu"
    assert _same_arrays(_arrays(targets / "fake_athens-256.npz"),
                        _arrays(tmp_path / "default" / "targets" / "fake_athens-256.npz"))


def test_jobs_on_an_explicit_device_equal_the_default_and_a_step_from_another_device_resumes(tiny_models, tmp_path):
    from qhybrid.workflows import jobs

    model, kw = tiny_models / "ldm-hybrid", {"n": 2, "steps": 2, "seeds": [3], **QUIET}
    (default,) = jobs.submit(model, "fake_manila", jobs_dir=tmp_path / "default", **kw)

    def stop_after_first_submission(event, record, k):
        if event == "submitted":
            raise KeyboardInterrupt

    with pytest.raises(jobs.Interrupted):
        jobs.submit(model, "fake_manila", jobs_dir=tmp_path / "cpu", device="cpu", on_event=stop_after_first_submission,
                    **kw)
    (path,) = (tmp_path / "cpu").glob("*.json")
    record = jobs.JobRecord.load(tmp_path / "cpu", path.stem)
    step = record.steps[0]
    assert step["status"] == "submitted" and step["device"] == "cpu"
    assert record.data["provenance"][0]["device"] == "cpu"
    # step 0's block inputs as a GPU computed them: beyond float differences refused, within resumed
    rows = record.read_array(step["values_file"])
    step["device"] = "cuda:0"
    record.write_array(step["values_file"], rows + 0.1)
    record.save()
    with pytest.raises(jobs.JobRecordError, match="inputs computed now differ"):
        jobs.resume(path.stem, tmp_path / "cpu", device="cpu", **QUIET)
    record.write_array(step["values_file"], rows + 1e-4)
    resumed = jobs.resume(path.stem, tmp_path / "cpu", device="cpu", **QUIET)
    assert resumed.data["status"] == "completed"
    for k in range(2):
        assert np.array_equal(resumed.read_array(resumed.steps[k]["latents_file"]),
                              default.read_array(default.steps[k]["latents_file"]))
    info = json.loads((resumed.folder / "samples" / "samples.json").read_text())
    assert info["device"] == "cpu"
    assert any("networks on cpu" in line for line in jobs.status_lines(resumed))


def test_noise_surrogate_inputs_on_an_explicit_device_equal_the_default(tiny_models):
    from qhybrid.devices import module_device
    from qhybrid.workflows.noise_aware import _model_inputs

    _, default = _model_inputs(tiny_models / "ldm-hybrid", None, 0)
    loaded, cpu = _model_inputs(tiny_models / "ldm-hybrid", None, 0, torch.device("cpu"))
    assert module_device(loaded.denoiser) == module_device(loaded.vae) == torch.device("cpu")
    assert cpu.device.type == "cpu" and torch.equal(cpu, default)


@pytest.mark.slow  # two surrogate fits in Aer, about 10 s each
def test_noise_surrogate_command_records_the_device_and_fits_as_the_default(tiny_models, tmp_path):
    from qhybrid.workflows.noise_aware import fit_surrogates

    fit_surrogates(tiny_models / "ldm-hybrid", ["fake_athens"], out=tmp_path / "default", log=lambda *_: None)
    proc = run("noise", "surrogate", "--model", tiny_models / "ldm-hybrid", "--backends", "fake_athens",
               "--out", tmp_path / "cpu", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    name = "ldm-hybrid-fake_athens-surrogate.json"
    cpu, default = (json.loads((tmp_path / d / name).read_text()) for d in ("cpu", "default"))
    assert cpu["device"] == default["device"] == "cpu"
    assert {k: v for k, v in cpu.items() if k != "fitted"} == {k: v for k, v in default.items() if k != "fitted"}
    assert "block inputs on cpu" in (tmp_path / "cpu" / "ldm-hybrid-surrogates.md").read_text()


@pytest.mark.slow
def test_the_plain_against_noise_aware_comparison_on_an_explicit_device_equals_the_default(tiny_models, tmp_path):
    from qhybrid.workflows.noise_aware import compare_noise_aware

    results = {}
    for name, device in (("default", None), ("cpu", "cpu")):
        run_dir = tmp_path / name
        for part in ("vae", "ldm-hybrid"):  # each comparison evaluates its own copy
            shutil.copytree(tiny_models / part, run_dir / part)
        model = run_dir / "ldm-hybrid"
        results[name] = compare_noise_aware([model], [model], ["fake_athens"], shots=256, n=2, steps=2,
                                            out=run_dir / "cmp", device=device, **QUIET)
    assert results["cpu"]["device"] == "cpu"
    assert results["cpu"]["summary"] == results["default"]["summary"]


@pytest.mark.slow  # trains a plain and a noise-aware model twice (a surrogate fit each) and evaluates them
def test_the_noise_aware_study_on_an_explicit_device_equals_the_default(tiny_models, tmp_path):
    from qhybrid.workflows.noise_aware import NoiseAwareStudyConfig, noise_aware_study

    cfg = NoiseAwareStudyConfig(backend="fake_lagos", unseen=("fake_jakarta",), seeds=(0,), steps=2, n_train=16,
                                batch=8, n=2, sample_steps=1, noise_shots=1024)
    cpu = noise_aware_study(tmp_path / "cpu", tiny_models / "vae", cfg, device="cpu", **QUIET)
    assert cpu["device"] == "cpu"
    assert json.loads((tmp_path / "cpu" / "study.json").read_text())["device"] == "cpu"
    if not torch.cuda.is_available():  # the default is auto: the CPU here
        default = noise_aware_study(tmp_path / "default", tiny_models / "vae", cfg, **QUIET)
        assert cpu["summary"] == default["summary"]


@pytest.mark.slow  # trains the evaluators once and a denoiser twice (about a minute)
def test_the_sweep_on_an_explicit_device_equals_the_default(tiny_models, tmp_path, monkeypatch):
    import functools

    from qhybrid.workflows import sweep

    # the contribution measurements run on the CPU whatever the device: left out, they take half the time
    monkeypatch.setattr(sweep, "run_compare", functools.partial(sweep.run_compare, contribution=None))
    args = {"kinds": ["hybrid"], "steps": 2, "batch": 8, "n": 8, "sample_steps": 2, "real_n": 16, "n_boot": 5,
            "num_qubits": 3, "reps": 1, "quick_evaluators": True, **QUIET}
    shutil.copytree(tiny_models / "vae", tmp_path / "cpu" / "vae")
    cpu = sweep.run_sweep(tmp_path / "cpu", [16], device="cpu", **args)
    assert cpu["device"] == "cpu"
    sampled = json.loads((tmp_path / "cpu" / "sweep" / "n16" / "samples" / "hybrid" / "samples.json").read_text())
    assert sampled["device"] == "cpu"
    if not torch.cuda.is_available():  # the default is auto: the CPU here
        for part in ("vae", "validator", "encoder"):  # the same evaluators, trained once
            shutil.copytree(tmp_path / "cpu" / part, tmp_path / "default" / part)
        default = sweep.run_sweep(tmp_path / "default", [16], **args)
        assert cpu["results"] == default["results"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
@pytest.mark.parametrize("command", [
    ["noisy-eval", "--model", "{hybrid}", "--backends", "fake_athens", "--out", "{out}"],
    ["noisy-eval", "--plain", "{hybrid}", "--noise-aware", "{hybrid}", "--backends", "fake_athens", "--out", "{out}"],
    ["noise-aware", "--vae", "{vae}", "--out", "{out}"],
    ["noise", "surrogate", "--model", "{hybrid}", "--backends", "fake_athens", "--out", "{out}"],
    ["jobs", "submit", "--model", "{hybrid}", "--backend", "fake_manila", "--jobs-dir", "{out}"],
    ["jobs", "resume", "some-run", "--jobs-dir", "{out}"],
    ["jobs", "fetch", "some-run", "--jobs-dir", "{out}"],
    ["compare", "{out}", "--train-sizes", "16"],
], ids=lambda c: " ".join(c[:2]) if c[0] in ("noise", "jobs") else c[0] + (" --plain" if "--plain" in c else ""))
def test_new_device_flags_refuse_a_missing_gpu_in_one_line_and_write_nothing(tiny_models, tmp_path, command):
    from tests.cli_helpers import one_line_error

    paths = {"hybrid": tiny_models / "ldm-hybrid", "vae": tiny_models / "vae", "out": tmp_path / "out"}
    line = one_line_error(run(*[a.format(**paths) for a in command], "--device", "cuda"))
    assert "--device cuda: PyTorch sees no CUDA GPU" in line and "--device cpu" in line
    assert not (tmp_path / "out").exists()
