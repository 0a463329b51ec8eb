"""Running the ``qhybrid`` command from tests, and checking its one-line errors.

``run`` calls the command's ``main()`` in this process with stdout and stderr captured: the same
code path as the installed command from argument parsing to the exit code, without paying for a
new interpreter and its imports on every call. ``run_process`` starts the installed command for
the tests that need a process boundary: signals and kills, another environment or working folder,
state that must not outlive the process (local testing-mode jobs)."""

import contextlib
import io
import subprocess
import sys
from pathlib import Path

from qhybrid.cli import main

QHYBRID = str(Path(sys.executable).parent / "qhybrid")


def run(*args) -> subprocess.CompletedProcess:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse's --help and --version end the process
            code = exc.code
    return subprocess.CompletedProcess(["qhybrid", *map(str, args)], code, out.getvalue(), err.getvalue())


def run_process(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([QHYBRID, *map(str, args)], capture_output=True, text=True, timeout=900, **kwargs)


def one_line_error(proc, code=2):
    """Assert the command failed with ``code`` and exactly one 'qhybrid: error' line, no traceback."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("qhybrid: error")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]
