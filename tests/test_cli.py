"""The qhybrid command, invoked for real."""

import json
import subprocess
import sys
from pathlib import Path

QHYBRID = str(Path(sys.executable).parent / "qhybrid")


def run(*args, **kwargs):
    return subprocess.run([QHYBRID, *args], capture_output=True, text=True, timeout=600, **kwargs)


def test_demo_quick_end_to_end(tmp_path):
    out = tmp_path / "demo"
    proc = run("demo", "--quick", "--out", str(out), "--seed", "3")
    assert proc.returncode == 0, proc.stderr
    assert str(out) in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["max_abs_diff_vs_StatevectorEstimator"] < 1e-10
    assert summary["final_loss"] < summary["first_loss"]
    for name in ("loss.png", "circuit.png", "circuit.txt"):
        assert (out / name).stat().st_size > 0
    assert not list(out.glob(".*.tmp")), "atomic writes leave no temporary files"


def test_usage_errors_exit_2_with_one_line():
    for args in (["demo", "--steps", "0"], ["demo", "--bogus"], [], ["no-such-command"]):
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
