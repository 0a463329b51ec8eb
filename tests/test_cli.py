"""The qhybrid command: its main() in-process, and the whole demo as a real command."""

import json

import pytest
from cli_helpers import one_line_error, run


def test_usage_errors_exit_2_with_one_line():
    for args in (["data", "synth", "--out", "x", "--n", "0"], ["demo", "--bogus"], [], ["no-such-command"]):
        proc = run(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("qhybrid: error:"), proc.stderr
        assert "Traceback" not in proc.stderr


def test_runtime_failure_exits_1_with_one_line_and_debug_shows_traceback(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    proc = run("demo", "--quick", "--out", str(blocker / "sub"))
    assert proc.returncode == 1
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    proc = run("--debug", "demo", "--quick", "--out", str(blocker / "sub"))
    assert proc.returncode == 1 and "Traceback" in proc.stderr


def test_version():
    proc = run("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("qhybrid ")




def test_data_synth_and_show(tmp_path):
    out = tmp_path / "syn"
    proc = run("data", "synth", "--out", str(out), "--n", "6", "--size", "48", "--seed", "2")
    assert proc.returncode == 0, proc.stderr
    assert len(list(out.glob("fundus_*.png"))) == 6
    lines = (out / "labels.csv").read_text().splitlines()
    assert lines[0] == "file,grade,eye,gradable,source" and len(lines) == 7
    proc = run("data", "show", str(out), "--out", str(tmp_path / "grid.png"), "--split", "all", "--size", "48")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "grid.png").stat().st_size > 0
    proc = run("data", "show", "synthetic", "--out", str(tmp_path / "g2.png"), "--n", "4")
    assert proc.returncode == 0 and "g2.png" in proc.stdout


def test_data_bad_input(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "contains no images" in one_line_error(run("data", "show", str(empty), "--out", str(tmp_path / "x.png")))
    import numpy as np

    np.savez(tmp_path / "bad.npz", pictures=np.zeros((2, 4, 4)))
    line = one_line_error(run("data", "show", str(tmp_path / "bad.npz"), "--out", str(tmp_path / "x.png")))
    assert "found: pictures" in line
    assert "between 32 and 256" in one_line_error(run("data", "synth", "--out", str(tmp_path / "s"), "--size", "20"))
    assert "does not exist" in one_line_error(run("data", "show", str(tmp_path / "nope"), "--out", str(tmp_path / "x.png")))


def test_train_vae_cli(tmp_path):
    out = tmp_path / "run" / "vae"
    args = ["train", "vae", "--size", "32", "--n", "16", "--epochs", "1", "--batch", "8", "--out", str(out)]
    proc = run(*args)
    assert proc.returncode == 0, proc.stderr
    assert (out / "model.safetensors").exists() and str(out) in proc.stdout
    assert "already holds a checkpoint" in one_line_error(run(*args))
    proc = run(*args[:-4], "--epochs", "2", "--batch", "8", "--out", str(out), "--resume")
    assert proc.returncode == 0, proc.stderr
    assert "one of 32, 64, 128" in one_line_error(run("train", "vae", "--size", "48", "--out", str(tmp_path / "v")))
    assert "does not exist" in one_line_error(
        run("train", "vae", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "v2")))
    assert "CircuitSpec.num_qubits" in one_line_error(
        run("train", "vae", "--quantum", "--qubits", "70", "--out", str(tmp_path / "v3")))


def test_a_vae_with_32x32_latents_and_a_hybrid_denoiser_on_them_from_the_cli(tmp_path):
    """--latent-size 32 (fundus-vae-64-l32's shape): the VAE, a hybrid denoiser with its outer level
    and samples from it; a --patch that does not divide the 8x8 bottleneck, and a latent side that
    is not the image size over a power of two, are one-line usage errors."""
    vae = tmp_path / "vae"
    proc = run("train", "vae", "--size", "64", "--latent-size", "32", "--n", "16", "--epochs", "1", "--batch", "8",
               "--out", str(vae))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((vae / "config.json").read_text())["config"]["latent_size"] == 32
    proc = run("train", "vae", "--size", "64", "--latent-size", "24", "--out", str(tmp_path / "v24"))
    assert proc.returncode == 2 and "--latent-size must divide the image size by a power of two" in one_line_error(proc)
    base = ["train", "diffusion", "--vae", str(vae), "--denoiser", "hybrid", "--steps", "4", "--batch", "8", "--n", "16",
            "--qubits", "3", "--reps", "1"]
    proc = run(*base, "--patch", "3", "--out", str(tmp_path / "bad"))
    assert proc.returncode == 2 and "does not divide the 8x8 bottleneck of this VAE's 32x32 latents" in one_line_error(proc)
    ldm = tmp_path / "ldm-hybrid"
    proc = run(*base, "--out", str(ldm))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((ldm / "config.json").read_text())["config"]["denoiser"]["outer_levels"] == 1
    proc = run("sample", "--model", str(ldm), "--n", "2", "--steps", "3", "--out", str(tmp_path / "samples"))
    assert proc.returncode == 0, proc.stderr
    assert len(list((tmp_path / "samples").glob("sample_*.png"))) == 2


@pytest.mark.slow  # the whole demo at toy sizes, as a real command
def test_demo_quick_end_to_end(tmp_path):
    out = tmp_path / "demo"
    proc = run("demo", "--quick", "--out", str(out), "--seed", "1")
    assert proc.returncode == 0, proc.stderr
    assert f"{out}/report.md" in proc.stdout
    for name in ("vae", "ldm-classical", "ldm-classical-large", "ldm-hybrid"):
        assert (out / name / "model.safetensors").exists()
    for name in ("report.md", "data.png", "samples.png", "losses.png", "samples/hybrid/grid.png"):
        assert (out / name).stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "| hybrid |" in report and "StatevectorEstimator" in report
    demo = json.loads((out / "demo.json").read_text())
    assert demo["block_check"]["max_abs_diff"] < 1e-10
    assert "already holds a demo run" in one_line_error(run("demo", "--quick", "--out", str(out)))
    assert (out / "comparison.md").exists() and "| hybrid | classical |" in report
    comparison = json.loads((out / "comparison.json").read_text())
    assert set(comparison["models"]) == {"classical", "classical-large", "hybrid"}
    assert comparison["models"]["hybrid"]["parameters"]["denoiser_quantum"] == 12
    # --resume on a finished run redoes no training
    proc = run("demo", "--quick", "--out", str(out), "--resume")
    assert proc.returncode == 0 and "denoiser (" not in proc.stdout
    # compare re-samples every model with the run's validator and encoder
    proc = run("compare", str(out), "--n", "8", "--n-real", "16", "--bootstrap", "10", "--k", "3")
    assert proc.returncode == 0, proc.stderr
    assert "| classical-large |" in proc.stdout and "training the" not in proc.stdout
    assert "holds no latent diffusion checkpoints" in one_line_error(run("compare", str(out / "vae")))


def test_train_diffusion_and_sample_cli(tmp_path):
    vae = tmp_path / "vae"
    assert run("train", "vae", "--size", "32", "--n", "16", "--epochs", "1", "--out", str(vae)).returncode == 0
    ldm = tmp_path / "ldm-hybrid"
    proc = run("train", "diffusion", "--vae", str(vae), "--denoiser", "hybrid", "--steps", "15", "--batch", "8",
               "--n", "16", "--qubits", "3", "--reps", "1", "--out", str(ldm))
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "samples"
    proc = run("sample", "--model", str(ldm), "--n", "4", "--steps", "5", "--seed", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert len(list(out.glob("sample_*.png"))) == 4 and (out / "grid.png").exists()
    assert "is a vae checkpoint; expected a ldm" in one_line_error(run("sample", "--model", str(vae), "--out", str(out)))
    assert "expected a vae checkpoint" in one_line_error(
        run("train", "diffusion", "--vae", str(ldm), "--denoiser", "classical", "--out", str(tmp_path / "z")))
    assert "does not exist" in one_line_error(
        run("train", "diffusion", "--vae", str(tmp_path / "none"), "--denoiser", "classical", "--out", str(tmp_path / "z")))
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "config.json").write_text("{oops")
    assert "not valid JSON" in one_line_error(run("sample", "--model", str(tmp_path / "fake"), "--out", str(out)))
    assert "invalid choice" in one_line_error(
        run("train", "diffusion", "--vae", str(vae), "--denoiser", "quantum", "--out", str(tmp_path / "z")))
    assert "unknown fake backend 'fake_nowhere'" in one_line_error(
        run("sample", "--model", str(ldm), "--target", "ibm:fake_nowhere", "--out", str(out)))
