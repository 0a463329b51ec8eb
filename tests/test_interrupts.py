"""Interrupted work, with the real command in a subprocess: Ctrl-C (SIGINT) or a kill (SIGKILL) once
it has written something leaves nothing half-written that a later run would trust, and ``--resume``
(training) or running the same command again (sample, noisy-eval: they have no --resume) completes."""

import json
import os
import signal
import subprocess
import time

import pytest
from cli_helpers import QHYBRID, run
from PIL import Image

from qhybrid.models import checkpoint as ckpt
from qhybrid.workflows.noisy_eval import strip_timings

#: Real processes, interrupted: run by `make test` (CI), skipped by `make test-fast`.
pytestmark = pytest.mark.slow


def _default_sigint() -> None:
    """In the child: Ctrl-C's default disposition. A shell starts background jobs with SIGINT ignored,
    the ignore survives exec, and Python then installs no KeyboardInterrupt handler at all, so run
    from ``make test &`` or ``nohup`` these tests would see commands shrug off Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(*args):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # stdout lines arrive as printed
    return subprocess.Popen([QHYBRID, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, preexec_fn=_default_sigint)


def interrupt_when(proc, ready, sig, timeout=120):
    """Send ``sig`` as soon as ``ready()`` holds; fails if the command ends first."""
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, f"the command ended before it was interrupted: {proc.communicate()}"
        assert time.time() < deadline, "the command wrote nothing in time"
        time.sleep(0.005)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def header_value(folder, key):
    """``extra[key]`` of the checkpoint's config.json (0 while there is none); a torn file fails here."""
    path = folder / ckpt.CONFIG_NAME
    return json.loads(path.read_text())["extra"][key] if path.exists() else 0


def assert_nothing_half_written(folder):
    for path in folder.rglob("*.json"):
        json.loads(path.read_text())
    for path in folder.rglob("*.png"):
        with Image.open(path) as image:
            image.load()
    # a write killed mid-way leaves only a hidden temporary file, never a file under a name a run reads
    assert all(p.name.startswith(".") and p.name.endswith(".tmp")
               for p in folder.rglob("*") if p.is_file() and ".tmp" in p.name)


def assert_interrupted(code, err):
    assert code == 130 and "qhybrid: interrupted" in err.splitlines() and "Traceback" not in err, (code, err)


def test_train_vae_ctrl_c_keeps_the_last_epoch_and_resume_finishes(tmp_path):
    from qhybrid.models.vae import VAE

    out = tmp_path / "vae"
    args = ["train", "vae", "--size", "32", "--n", "16", "--batch", "8", "--epochs", "8", "--out", out]
    code, err = interrupt_when(start(*args), lambda: header_value(out, "epoch") >= 1, signal.SIGINT)
    assert_interrupted(code, err)
    saved = header_value(out, "epoch")
    assert 1 <= saved < 8, "interrupted too late"
    assert_nothing_half_written(out)
    VAE.from_checkpoint(out)  # the checkpoint of the last complete epoch loads
    assert ckpt.load_training_state(out)["epoch"] >= saved
    proc = run(*args, "--resume")
    assert proc.returncode == 0, proc.stderr
    assert header_value(out, "epoch") == 8 and (out / "loss.png").exists()
    VAE.from_checkpoint(out)


def test_train_diffusion_killed_keeps_the_last_save_and_resume_finishes(tiny_models, tmp_path):
    from qhybrid.diffusion.pipeline import LatentDiffusion

    out = tmp_path / "ldm"
    # the trainer saves every 500 steps (and at the end): kill it between the save at 500 and the end
    args = ["train", "diffusion", "--vae", tiny_models / "vae", "--denoiser", "classical", "--n", "16",
            "--batch", "8", "--steps", "600", "--out", out]
    code, _ = interrupt_when(start(*args), lambda: header_value(out, "step") >= 500, signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert header_value(out, "step") == 500
    assert_nothing_half_written(out)
    LatentDiffusion.from_checkpoint(out)
    assert ckpt.load_training_state(out)["step"] == 500
    proc = run(*args, "--resume")
    assert proc.returncode == 0, proc.stderr
    assert header_value(out, "step") == 600 and (out / "loss.png").exists()
    LatentDiffusion.from_checkpoint(out)


def test_sample_ctrl_c_while_writing_leaves_no_finished_looking_folder(tiny_models, tmp_path):
    base = ["sample", "--model", tiny_models / "ldm-hybrid", "--n", "1000", "--steps", "2"]
    ref, out = tmp_path / "ref", tmp_path / "out"
    assert run(*base, "--seed", "1", "--out", ref).returncode == 0
    assert run(*base, "--seed", "0", "--out", out).returncode == 0  # an earlier, finished run in the folder
    first = out / "sample_0000.png"
    before = first.stat().st_mtime_ns
    code, err = interrupt_when(start(*base, "--seed", "1", "--out", out),
                               lambda: first.stat().st_mtime_ns != before, signal.SIGINT)
    assert_interrupted(code, err)
    assert_nothing_half_written(out)
    same = [(out / p.name).read_bytes() == p.read_bytes() for p in sorted(ref.glob("sample_*.png"))]
    assert same[0] and not all(same), "interrupted too late (or too early)"
    # the folder now mixes two runs: it must not keep a samples.json that calls it a finished result
    assert not (out / "samples.json").exists()
    proc = run(*base, "--seed", "1", "--out", out)  # sample has no --resume; the same command again
    assert proc.returncode == 0, proc.stderr
    assert all((out / p.name).read_bytes() == p.read_bytes() for p in ref.glob("sample_*.png"))
    assert json.loads((out / "samples.json").read_text())["seed"] == 1
    # fewer images into the same folder: no sample of the earlier run stays behind
    assert run(*base[:3], "--n", "3", "--steps", "2", "--out", out).returncode == 0
    assert sorted(p.name for p in out.glob("sample_*.png")) == [f"sample_{k:04d}.png" for k in range(3)]


def test_noisy_eval_interrupted_then_resumed_keeps_finished_targets_and_is_idempotent(tiny_models, tmp_path):
    out = tmp_path / "noisy"
    args = ["noisy-eval", "--model", tiny_models / "ldm-hybrid", "--backends", "fake_manila", "--n", "4",
            "--steps", "3", "--shots", "64", "--out", out]
    # Ctrl-C while the noisy target samples: the finished targets are on disk, the report says
    # what is pending, and every file is whole
    proc = start(*args)
    for line in proc.stdout:
        if "on fake:fake_manila" in line:
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert_interrupted(proc.returncode, err)
    partial = json.loads((out / "noisy_eval.json").read_text())
    assert not partial["complete"] and partial["pending"] == ["fake_manila, 64 shots"]
    assert_nothing_half_written(out)
    # the same command without --resume refuses to overwrite; killed again while writing the
    # last target's results, what is there is whole, and --resume completes
    assert "continue it with --resume" in run(*args).stderr
    arrays = out / "targets" / "fake_manila-64.npz"  # written first; the target's .json follows it
    code, _ = interrupt_when(start(*args, "--resume"), arrays.exists, signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert_nothing_half_written(out)
    resumed = run(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a = json.loads((out / "noisy_eval.json").read_text())
    # the interrupted, killed and resumed evaluation equals a straight one (seeded shots per target)
    straight = run(*args[:-1], tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr
    b = json.loads((tmp_path / "straight" / "noisy_eval.json").read_text())
    assert a["complete"] and strip_timings(a) == strip_timings(b)
