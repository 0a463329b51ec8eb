"""Noise studies a researcher can trust: the shot-noise floor, incremental and resumable noisy
evaluation, truthful provenance, portable run folders, and the small defects that misled users.

Runs on the tiny session models (a 3-qubit hybrid on a 32-px VAE) with Aer and real fake backends."""

import json
import shutil
import warnings

import numpy as np
import pytest
from cli_helpers import one_line_error, run

from qhybrid.errors import InputError
from qhybrid.quantum.circuits import CircuitSpec, build_circuit, build_observables
from qhybrid.quantum.primitives.aer import NoisyEstimator, noise_source_for_backend
from qhybrid.quantum.primitives.exact import ExactEstimator
from qhybrid.workflows import noisy_eval
from qhybrid.workflows.noisy_eval import NoisyEvalConfig, run_noisy_eval, strip_timings


def block_values(spec: CircuitSpec, rows: int, seed: int = 0):
    circuit, _, _ = build_circuit(spec)
    values = np.random.default_rng(seed).uniform(-np.pi, np.pi, (rows, circuit.num_parameters))
    return circuit, [[o] for o in build_observables(spec)], values


# --- the shot-noise floor ----------------------------------------------------------------------------
def test_the_noiseless_with_shots_target_measures_the_analytic_shot_noise_floor():
    """ideal + shots: its mean |error| against exact equals sqrt(2/pi) sqrt((1 - mu^2) / shots) on average."""
    circuit, observables, values = block_values(CircuitSpec(num_qubits=4, reps=2), rows=3000)
    exact = ExactEstimator().run([(circuit, observables, values)]).result()[0].data.evs
    for shots in (256, 4096):
        result = ExactEstimator(shots=shots, seed=1).run([(circuit, observables, values)]).result()[0]
        measured = np.abs(result.data.evs - exact).mean()
        floor = noisy_eval.shot_noise_floor(exact, shots).mean()
        assert measured == pytest.approx(floor, rel=0.04)
        assert result.metadata["shots"] == shots and not result.metadata["exact"]
        assert np.all(result.data.stds >= 0) and result.data.stds.mean() > 0


def test_the_noiseless_with_shots_target_is_seeded_and_bounded():
    circuit, observables, values = block_values(CircuitSpec(num_qubits=3, reps=1), rows=50)
    a = ExactEstimator(shots=64, seed=5).run([(circuit, observables, values)]).result()[0].data.evs
    b = ExactEstimator(shots=64, seed=5).run([(circuit, observables, values)]).result()[0].data.evs
    assert np.array_equal(a, b) and np.all(np.abs(a) <= 1)
    with pytest.raises(ValueError, match="shots must be None"):
        ExactEstimator(shots=0)


def test_readout_mitigated_outputs_are_clipped_to_the_observables_range():
    """At few shots the inverted readout matrix pushes estimates past +-1; the target clips them."""
    circuit, observables, values = block_values(CircuitSpec(num_qubits=3, reps=1), rows=200)
    est = NoisyEstimator(noise_source_for_backend("fake_athens"), shots=3, mitigation=True, seed=0)
    result = est.run([(circuit, observables, values)]).result()[0]
    assert np.all(np.abs(result.data.evs) <= 1.0)
    assert result.metadata["clipped_values"] > 0  # without the clip these would lie outside [-1, 1]


# --- small defects -----------------------------------------------------------------------------------
def test_a_small_share_is_printed_with_its_significant_digits():
    assert noisy_eval.percent(0.00034) == "0.034%"
    assert noisy_eval.percent(0.0921) == "9.2%"
    assert noisy_eval.percent(0.0) == "0%" and noisy_eval.percent(None) == "–"


def test_fd_of_a_small_set_computes_without_leaking_a_library_warning():
    from qhybrid.evaluation.metrics import frechet_distance

    rng = np.random.default_rng(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        value = frechet_distance(rng.normal(size=(8, 64)), rng.normal(size=(200, 64)))
    assert np.isfinite(value)


def test_small_n_carries_a_warning_and_enough_samples_do_not():
    assert noisy_eval._warnings(NoisyEvalConfig(backends=("fake_athens",), n=8))[0].startswith("n=8 samples")
    assert noisy_eval._warnings(NoisyEvalConfig(backends=("fake_athens",), n=64)) == []


def test_the_sample_panels_name_the_ideal_reference_not_real_images(tmp_path):
    images = np.zeros((4, 8, 8, 3), np.uint8)
    entry = {"label": "fake_athens, 1,024 shots", "source": "fake_athens", "shots": 1024, "noise_image_change_grey": 0.5}
    titles = noisy_eval.save_sample_panels(tmp_path / "p.png", images, [(entry, images)])
    assert titles[0].startswith("ideal") and not any("real" in t for t in titles)


def test_shots_outside_the_accepted_range_are_a_usage_error(tiny_models, tmp_path):
    model = tiny_models / "ldm-hybrid"
    for shots in ("1", "0", "2000000"):
        assert "shot count from 32 to 1,000,000" in one_line_error(
            run("sample", "--model", model, "--out", tmp_path / "s", "--target", "fake:fake_athens", "--shots", shots))
    assert "shot count" in one_line_error(
        run("noisy-eval", "--model", model, "--backends", "fake_athens", "--shots", "1024,8"))


# --- incremental, resumable, one folder per evaluation -------------------------------------------
CFG = NoisyEvalConfig(backends=("fake_athens", "fake_lima"), shots=(256, 1024), n=4, steps=3)


class StopAt(Exception):
    pass


def test_noisy_eval_writes_floor_sweep_and_per_observable_errors(tiny_models, tmp_path):
    summary = run_noisy_eval(tiny_models / "ldm-hybrid", tmp_path / "ne", CFG, progress=False, log=lambda *_: None)
    keys = ["ideal", "shots-256", "shots-1024", "fake_athens-256", "fake_athens-1024", "fake_lima-256", "fake_lima-1024"]
    assert list(summary["targets"]) == keys and summary["complete"]
    athens = summary["targets"]["fake_athens-256"]
    # one execution per sampling step holds every chain x patch (4 chains x 4 patches of the 4x4 bottleneck)
    assert athens["executions"] == 3 and athens["bindings_per_execution"] == 16
    assert athens["shots_per_image"] == 256 * 4 * 3
    assert len(athens["block_error_per_observable"]) == 3
    assert athens["error_over_floor"] == pytest.approx(athens["block_error_mean"] / athens["shot_noise_floor"])
    # the floor halves from 256 to 1,024 shots, and the noiseless-with-shots rows sit on it
    floors = [summary["targets"][f"shots-{s}"]["shot_noise_floor"] for s in (256, 1024)]
    assert floors[0] / floors[1] == pytest.approx(2.0, rel=1e-9)
    for s in (256, 1024):
        assert 0.5 < summary["targets"][f"shots-{s}"]["error_over_floor"] < 2.0
    assert athens["noise_source"]["kind"] == "fake backend" and athens["noise_source"]["backend"] == "fake_athens"
    assert "calibration_date" in athens["noise_source"] and summary["versions"]["qiskit-aer"]
    assert athens["noise_share_of_knockout"] == pytest.approx(
        athens["noise_image_change_grey"] / summary["knockout_image_change_grey"])
    assert summary["warnings"]  # n = 4
    for name in ("noisy_eval.md", "samples.png", "backends.png"):
        assert (tmp_path / "ne" / name).exists()
    assert "shot-noise floor" in (tmp_path / "ne" / "noisy_eval.md").read_text()


@pytest.mark.slow  # keeps make test-fast near 3 min; make test runs it
def test_noisy_eval_killed_after_its_first_backend_resumes_without_recomputing_it(tiny_models, tmp_path):
    model = tiny_models / "ldm-hybrid"
    straight = run_noisy_eval(model, tmp_path / "straight", CFG, progress=False, log=lambda *_: None)

    def stop_at_second_backend(line: str):
        if line.startswith("sampling") and "fake:fake_lima" in line:
            raise StopAt

    with pytest.raises(StopAt):
        run_noisy_eval(model, tmp_path / "ne", CFG, progress=False, log=stop_at_second_backend)
    partial = json.loads((tmp_path / "ne" / "noisy_eval.json").read_text())
    assert not partial["complete"] and "fake_athens-1024" in partial["targets"]  # written as it went
    kept = (tmp_path / "ne" / "targets" / "fake_athens-256.npz").stat().st_mtime_ns
    lines: list[str] = []
    resumed = run_noisy_eval(model, tmp_path / "ne", CFG, resume=True, progress=False, log=lines.append)
    assert not any(line.startswith("sampling") and "fake_athens" in line for line in lines)
    assert any(line.startswith("kept fake_athens, 256 shots") for line in lines)
    assert (tmp_path / "ne" / "targets" / "fake_athens-256.npz").stat().st_mtime_ns == kept
    assert strip_timings(resumed) == strip_timings(straight)
    for key in straight["targets"]:
        a = np.load(tmp_path / "straight" / "targets" / f"{key}.npz")
        b = np.load(tmp_path / "ne" / "targets" / f"{key}.npz")
        assert all(np.array_equal(a[k], b[k]) for k in a.files), key


def test_an_existing_evaluation_is_never_overwritten_and_resume_needs_the_same_settings(tiny_models, tmp_path):
    model = tiny_models / "ldm-hybrid"
    cfg = NoisyEvalConfig(backends=("fake_athens",), shots=(256,), n=3, steps=2)
    out = noisy_eval.default_out(model, cfg)
    assert out.parent == model.parent / "noisy-eval" and "fake_athens" in out.name and "256" in out.name
    other = noisy_eval.default_out(model, cfg.replace(backends=("fake_lima",)))
    assert other != out  # another evaluation goes to another folder
    run_noisy_eval(model, tmp_path / "ne", cfg, progress=False, log=lambda *_: None)
    args = ["noisy-eval", "--model", model, "--backends", "fake_athens", "--shots", "256", "--n", "3", "--steps", "2",
            "--out", tmp_path / "ne"]
    assert "already holds a noisy evaluation; continue it with --resume" in one_line_error(run(*args))
    assert "config.shots differ" in one_line_error(run(*args[:-4], "--shots", "512", "--n", "3", "--steps", "2", "--out",
                                                       tmp_path / "ne", "--resume"))
    proc = run(*args, "--resume")
    assert proc.returncode == 0, proc.stderr
    assert "block error" in proc.stdout and "shot-noise floor" in proc.stdout


def test_noisy_eval_cli_refuses_what_it_cannot_evaluate(tiny_models, tmp_path):
    assert "without a quantum block" in one_line_error(
        run("noisy-eval", "--model", tiny_models / "ldm-classical", "--backends", "fake_athens", "--out", tmp_path / "a"))
    assert "valid names" in one_line_error(
        run("noisy-eval", "--model", tiny_models / "ldm-hybrid", "--backends", "fake_mars", "--out", tmp_path / "b"))
    assert "give --backends" in one_line_error(run("noisy-eval", "--model", tiny_models / "ldm-hybrid"))


# --- provenance ------------------------------------------------------------------------------------
def test_a_snapshot_of_another_backend_is_refused_and_a_matching_one_is_recorded(tiny_models, tmp_path):
    from qhybrid.quantum.noise_snapshots import write_snapshot

    snap = write_snapshot("fake_lima", tmp_path)
    model = tiny_models / "ldm-hybrid"
    error = one_line_error(run("sample", "--model", model, "--n", "2", "--steps", "2", "--out", tmp_path / "s",
                               "--target", "fake:fake_athens", "--noise-model", snap))
    assert "is of fake_lima, not fake_athens" in error and "fake:fake_lima" in error
    proc = run("sample", "--model", model, "--n", "2", "--steps", "2", "--out", tmp_path / "s", "--target",
               "fake:fake_lima", "--noise-model", snap, "--shots", "256")
    assert proc.returncode == 0, proc.stderr
    info = json.loads((tmp_path / "s" / "samples.json").read_text())
    source = info["noise_source"]
    assert info["target"] == "fake:fake_lima" and source["kind"] == "snapshot" and source["file"] == str(snap)
    assert source["backend"] == "fake_lima" and "calibration_date" in source and len(source["sha256"]) == 64
    assert info["versions"]["qiskit-ibm-runtime"] and info["vae_sha256"]


def test_sample_on_ideal_with_shots_is_the_shot_noise_only_target(tiny_models, tmp_path):
    proc = run("sample", "--model", tiny_models / "ldm-hybrid", "--n", "2", "--steps", "2", "--shots", "512",
               "--out", tmp_path / "s")
    assert proc.returncode == 0, proc.stderr
    info = json.loads((tmp_path / "s" / "samples.json").read_text())
    assert info["noise_source"] == {"kind": "shot noise only", "shots": 512}
    assert "noiseless, 512 shots" in proc.stdout


# --- portable runs ---------------------------------------------------------------------------------
def _samples(folder, **kw):
    from qhybrid.workflows.sampling import sample_images

    images, info = sample_images(folder, n=2, steps=2, seed=3, progress=False, **kw)
    return images, info


def test_a_run_folder_moved_or_copied_samples_bit_identically_with_its_own_vae(tiny_models, tmp_path):
    from qhybrid.models.checkpoint import CheckpointError

    run_dir = tmp_path / "run"
    for name in ("vae", "ldm-hybrid"):
        shutil.copytree(tiny_models / name, run_dir / name)
    reference, info = _samples(tiny_models / "ldm-hybrid")
    copied, info_copy = _samples(run_dir / "ldm-hybrid")
    assert np.array_equal(copied, reference)
    assert info_copy["vae"] == str((run_dir / "vae").resolve())  # its own VAE, not the original's
    moved = tmp_path / "elsewhere" / "run"
    shutil.move(run_dir, moved)
    images, info_moved = _samples(moved / "ldm-hybrid")
    assert np.array_equal(images, reference) and info_moved["vae"] == str((moved / "vae").resolve())
    # the copy's own VAE changed: refused, never replaced by the original folder's VAE
    header = json.loads((moved / "vae" / "config.json").read_text())
    header["weights_sha256"] = "0" * 64
    (moved / "vae" / "config.json").write_text(json.dumps(header))
    with pytest.raises(CheckpointError, match="is not the one .* was trained on"):
        _samples(moved / "ldm-hybrid")
    # --vae points at a VAE kept elsewhere (hash-checked)
    images, info_override = _samples(moved / "ldm-hybrid", vae=tiny_models / "vae")
    assert np.array_equal(images, reference) and info_override["vae"] == str((tiny_models / "vae").resolve())
    # its own VAE gone: the absolute path of training time is the fallback (hash-checked), and
    # without that either the error says what to do
    shutil.rmtree(moved / "vae")
    assert _samples(moved / "ldm-hybrid")[1]["vae"] == str((tiny_models / "vae").resolve())
    config = json.loads((moved / "ldm-hybrid" / "config.json").read_text())
    config["config"]["vae_path"] = str(tmp_path / "gone" / "vae")
    (moved / "ldm-hybrid" / "config.json").write_text(json.dumps(config))
    proc = run("sample", "--model", moved / "ldm-hybrid", "--n", "2", "--steps", "2", "--out", tmp_path / "s")
    assert "keep the run's vae/ folder beside the LDM folder or give it with --vae" in one_line_error(proc, code=2)
    proc = run("sample", "--model", moved / "ldm-hybrid", "--n", "2", "--steps", "2", "--out", tmp_path / "s",
               "--vae", tiny_models / "vae")
    assert proc.returncode == 0, proc.stderr


def test_a_checkpoint_names_its_vae_relative_to_itself(tiny_models):
    cfg = json.loads((tiny_models / "ldm-hybrid" / "config.json").read_text())["config"]
    assert cfg["vae_relative_path"] == "../vae" and cfg["vae_path"].endswith("vae")


def test_jobs_submit_and_noisy_eval_take_a_vae_kept_elsewhere(tiny_models, tmp_path):
    from qhybrid.workflows import jobs

    shutil.copytree(tiny_models / "ldm-hybrid", tmp_path / "run" / "ldm-hybrid")
    config = json.loads((tmp_path / "run" / "ldm-hybrid" / "config.json").read_text())
    config["config"]["vae_path"] = str(tmp_path / "gone" / "vae")  # no VAE where the checkpoint says
    (tmp_path / "run" / "ldm-hybrid" / "config.json").write_text(json.dumps(config))
    model = tmp_path / "run" / "ldm-hybrid"
    records = jobs.submit(model, "fake_manila", n=2, steps=2, jobs_dir=tmp_path / "jobs", progress=False,
                          log=lambda *_: None, vae=tiny_models / "vae")
    assert records[0].data["status"] == "completed"
    assert records[0].data["model"]["vae"] == str((tiny_models / "vae").resolve())
    cfg = NoisyEvalConfig(backends=("fake_athens",), shots=(256,), n=2, steps=2)
    summary = run_noisy_eval(model, tmp_path / "ne", cfg, vae=tiny_models / "vae", progress=False, log=lambda *_: None)
    assert summary["complete"]


def test_the_shots_target_clips_gaussian_estimates_of_non_z_observables():
    """X-type observables are not read from Z counts: Gaussian noise, clipped to [-1, 1] as a measurement is."""
    from qiskit.quantum_info import SparsePauliOp

    circuit, _, values = block_values(CircuitSpec(num_qubits=3, reps=1), rows=400)
    observables = [[SparsePauliOp("IIX")], [SparsePauliOp("XII")]]
    result = ExactEstimator(shots=32, seed=2).run([(circuit, observables, values)]).result()[0]
    exact = ExactEstimator().run([(circuit, observables, values)]).result()[0].data.evs
    assert np.all(np.abs(result.data.evs) <= 1.0) and not np.allclose(result.data.evs, exact)


def test_the_estimator_methods_floor_is_its_gaussian_noise():
    ideal = np.array([[0.0, 0.9, -1.0]])
    assert np.allclose(noisy_eval.shot_noise_floor(ideal, 100, "estimator"), np.sqrt(2 / np.pi) / 10)
    assert noisy_eval.shot_noise_floor(ideal, 100)[0, 2] == 0  # counts: an output at -1 has no shot noise


def test_every_setting_gets_its_own_default_folder_and_repeated_sources_are_refused(tiny_models):
    model = tiny_models / "ldm-hybrid"
    cfg = NoisyEvalConfig(backends=("fake_athens",), shots=(256,), n=3, steps=2)
    folders = {noisy_eval.default_out(model, c) for c in
               (cfg, cfg.replace(n=4), cfg.replace(steps=3), cfg.replace(seed=1), cfg.replace(method="estimator"))}
    assert len(folders) == 5
    with pytest.raises(ValueError, match="repeats an entry"):
        NoisyEvalConfig(backends=("fake_athens", "fake_athens"))
    assert "--backends repeats an entry" in one_line_error(
        run("noisy-eval", "--model", model, "--backends", "fake_athens,fake_athens"))
    assert "at least 2 samples" in one_line_error(run("noisy-eval", "--model", model, "--backends", "fake_athens",
                                                      "--n", "1"))


@pytest.mark.slow  # keeps make test-fast under 3 min; make test runs it
def test_a_target_whose_arrays_are_missing_is_computed_again_on_resume(tiny_models, tmp_path):
    cfg = NoisyEvalConfig(backends=("fake_athens",), shots=(256,), n=3, steps=2)
    model = tiny_models / "ldm-hybrid"
    first = run_noisy_eval(model, tmp_path / "ne", cfg, progress=False, log=lambda *_: None)
    (tmp_path / "ne" / "targets" / "fake_athens-256.npz").unlink()  # as if killed between its two files
    lines: list[str] = []
    again = run_noisy_eval(model, tmp_path / "ne", cfg, resume=True, progress=False, log=lines.append)
    assert any(line.startswith("sampling") and "fake_athens" in line for line in lines)
    assert strip_timings(again) == strip_timings(first)


def test_a_legacy_checkpoint_passes_over_another_vae_beside_it_for_its_recorded_one(tiny_models, tmp_path):
    """Older checkpoints name only an absolute VAE path: a sibling with that folder name is a guess,
    used when its hash matches and passed over (not refused) when it does not."""
    shutil.copytree(tiny_models / "ldm-hybrid", tmp_path / "run" / "ldm-hybrid")
    shutil.copytree(tiny_models / "vae", tmp_path / "run" / "vae")
    header = json.loads((tmp_path / "run" / "vae" / "config.json").read_text())
    header["weights_sha256"] = "0" * 64  # some other VAE
    (tmp_path / "run" / "vae" / "config.json").write_text(json.dumps(header))
    config = json.loads((tmp_path / "run" / "ldm-hybrid" / "config.json").read_text())
    del config["config"]["vae_relative_path"]  # as written before relative paths
    (tmp_path / "run" / "ldm-hybrid" / "config.json").write_text(json.dumps(config))
    _, info = _samples(tmp_path / "run" / "ldm-hybrid")
    assert info["vae"] == str((tiny_models / "vae").resolve())


def test_resume_refuses_an_evaluation_made_with_another_noise_model(tiny_models, tmp_path):
    """The noise model's hash is part of what an evaluation is; a saved one that differs (another
    qiskit-ibm-runtime calibration, or another way of building the model) is not mixed in."""
    cfg = NoisyEvalConfig(backends=("fake_athens",), shots=(256,), n=3, steps=2)
    model = tiny_models / "ldm-hybrid"
    run_noisy_eval(model, tmp_path / "ne", cfg, progress=False, log=lambda *_: None)
    saved = json.loads((tmp_path / "ne" / "config.json").read_text())
    assert set(saved["noise_sha256"]) == {"fake_athens"}
    saved["noise_sha256"]["fake_athens"] = "0" * 64
    (tmp_path / "ne" / "config.json").write_text(json.dumps(saved))
    with pytest.raises(InputError, match="noise_sha256 differ"):
        run_noisy_eval(model, tmp_path / "ne", cfg, resume=True, progress=False, log=lambda *_: None)


@pytest.mark.slow  # keeps make test-fast near 3 min; make test runs it
def test_the_noise_models_hash_is_the_same_in_every_process():
    """Aer gives each error a random id and lists errors in string-hash order; neither may change the
    hash, or a resumed evaluation (a new process) would be refused."""
    import os
    import subprocess
    import sys

    code = "from qhybrid.workflows.noisy_eval import _noise_sha256; print(_noise_sha256('fake_athens'))"
    hashes = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": seed}).stdout.strip() for seed in ("1", "2")}
    assert len(hashes) == 1 and len(hashes.pop()) == 64


# --- issue 17: the mitigation sweep --------------------------------------------------------------------
@pytest.mark.slow  # keeps make test-fast under 3 min; make test runs it
def test_the_mitigation_sweep_reports_error_cost_and_a_recommendation_per_backend(tiny_models, tmp_path):
    """Every mitigation on one backend: block error against ideal, its change against none, the
    circuits and shots a device would run (ZNE: three times the shots; TREX: more than none), a
    recommendation and the error-against-cost plot, from the CLI's --mitigation-sweep."""
    out = tmp_path / "sweep"
    done = run("noisy-eval", "--model", tiny_models / "ldm-hybrid", "--backends", "fake_athens", "--mitigation-sweep",
               "--n", "3", "--steps", "2", "--shots", "512", "--out", out)
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "noisy_eval.json").read_text())
    assert [m["kind"] for m in summary["mitigations"]] == ["none", "readout", "trex", "zne", "twirling"]
    rows = {r["mitigation"]: r for r in summary["mitigation_sweep"]["rows"]}
    assert set(rows) == {"no mitigation", "readout inversion", "TREX", "ZNE (1, 3, 5; exponential, linear)", "twirling"}
    none, zne, trex = rows["no mitigation"], rows["ZNE (1, 3, 5; exponential, linear)"], rows["TREX"]
    assert none["error_vs_none"] == 0 and none["shots_vs_none"] == 1
    assert zne["shots_per_image"] == 3 * none["shots_per_image"] and trex["shots_per_image"] > none["shots_per_image"]
    assert none["circuits_per_image"] == 2 * 4  # 2 steps x 4 patches per image, one circuit each
    for r in rows.values():
        assert r["block_error"] > 0 and r["image_change_grey"] >= 0
    (line,) = summary["recommendations"]
    assert line.startswith("fake_athens at 512 shots: ") and f"recommended: {line}" in done.stdout
    assert summary["mitigation_sweep"]["recommendations"][0]["mitigation"] in rows
    assert (out / "mitigation.png").exists() and "## Mitigation sweep" in (out / "noisy_eval.md").read_text()
    # the device's own error (no mitigation) is what the backend plot shows
    assert (out / "backends.png").exists()


def test_a_recommendation_needs_a_meaningful_gain_and_prefers_the_cheaper_of_two_close_options():
    def entry(label, error, shots):
        return {"source": "fake_x", "shots": 1000, "mitigation": label, "block_error_mean": error,
                "shots_per_image": shots, "transpiled": {"depth": 1}}

    def pick(*entries):
        return noisy_eval.mitigation_sweep({e["mitigation"]: e for e in entries})["recommendations"][0]["mitigation"]

    assert pick(entry("no mitigation", 0.050, 100), entry("TREX", 0.047, 110)) == "no mitigation"  # 6%: not enough
    assert pick(entry("no mitigation", 0.050, 100), entry("TREX", 0.020, 110)) == "TREX"
    # ZNE a little better than TREX but at three times the shots: TREX is within 10% and cheaper
    assert pick(entry("no mitigation", 0.050, 100), entry("TREX", 0.021, 110), entry("ZNE", 0.020, 300)) == "TREX"
