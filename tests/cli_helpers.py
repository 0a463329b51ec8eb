"""Running the installed ``qhybrid`` command from tests, and checking its one-line errors."""

import subprocess
import sys
from pathlib import Path

QHYBRID = str(Path(sys.executable).parent / "qhybrid")


def run(*args, **kwargs):
    return subprocess.run([QHYBRID, *args], capture_output=True, text=True, timeout=900, **kwargs)


def one_line_error(proc, code=2):
    """Assert the command failed with ``code`` and exactly one 'qhybrid: error' line, no traceback."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("qhybrid: error")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]
