"""``qhybrid backends``: one summary line per fake backend, cached in the user's cache folder.

Building every fake backend's ``Target`` and properties takes seconds (67 backends in
qiskit-ibm-runtime 0.51), and the data only change with a new qiskit-ibm-runtime, so the
summaries (:func:`qhybrid.quantum.calibration.backend_summary`) are cached in
``$QHYBRID_CACHE_DIR`` (default ``$XDG_CACHE_HOME/qhybrid``, else ``~/.cache/qhybrid``), keyed by
the qiskit-ibm-runtime version. The cache is written atomically and a damaged or stale one is
rebuilt silently: it is only ever a copy of what the fake backends say.

Why here and not in :mod:`qhybrid.quantum`: importing anything in that package loads torch
(about 2 s), most of a cached run, while this module imports the quantum side only to rebuild.
"""

from __future__ import annotations

import json
import os
from importlib.metadata import version
from pathlib import Path

from qhybrid import io

CACHE_FORMAT = "qhybrid-backends-cache"
CACHE_VERSION = 1
CACHE_NAME = "backends.json"
#: The fields of one backend's summary (a cache entry without them is rebuilt).
FIELDS = ("name", "qubits", "two_qubit_gate", "median_two_qubit_error", "median_readout_error",
          "median_t1_us", "calibration_date")


def cache_dir() -> Path:
    """Where qhybrid keeps caches: ``$QHYBRID_CACHE_DIR``, ``$XDG_CACHE_HOME/qhybrid`` or ``~/.cache/qhybrid``."""
    if os.environ.get("QHYBRID_CACHE_DIR"):
        return Path(os.environ["QHYBRID_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "qhybrid"


def backend_summaries() -> list[dict]:
    """One summary per fake backend (:data:`FIELDS`), from the cache when it matches the installed
    qiskit-ibm-runtime, else built and cached."""
    runtime = version("qiskit-ibm-runtime")
    path = cache_dir() / CACHE_NAME
    cached = _read_cache(path, runtime)
    if cached is not None:
        return cached
    rows = build_summaries()
    try:
        io.write_json(path, {"format": CACHE_FORMAT, "format_version": CACHE_VERSION,
                             "qiskit-ibm-runtime": runtime, "backends": rows})
    except OSError:  # a read-only or missing home: answer anyway, uncached
        pass
    return rows


def _read_cache(path: Path, runtime: str) -> list[dict] | None:
    """The cached rows, or None when the file is missing, damaged or from another version."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not (isinstance(data, dict) and data.get("format") == CACHE_FORMAT
            and data.get("format_version") == CACHE_VERSION and data.get("qiskit-ibm-runtime") == runtime):
        return None
    rows = data.get("backends")
    if not isinstance(rows, list) or not rows or not all(_valid(r) for r in rows):
        return None
    return rows


def _valid(row) -> bool:
    return (isinstance(row, dict) and set(FIELDS) <= set(row) and isinstance(row["name"], str)
            and isinstance(row["qubits"], int) and all(
                row[k] is None or isinstance(row[k], (int, float)) for k in FIELDS[3:6]))


def build_summaries() -> list[dict]:
    """Every fake backend's summary, from its Target and properties (seconds: the slow part)."""
    from qhybrid.quantum.calibration import backend_summary
    from qhybrid.quantum.primitives.aer import fake_backend, fake_backend_names

    return [backend_summary(fake_backend(name)) for name in fake_backend_names()]


def format_table(rows: list[dict], needed_qubits: int | None = None) -> str:
    """The rows as a table; with ``needed_qubits`` a column says whether the circuit fits."""
    head = (f"{'backend':<20} {'qubits':>6}  {'2q gate':<8} {'2q error':>8} {'readout':>8} {'T1 (us)':>8}  "
            f"{'calibrated':<10}" + (f"  fits {needed_qubits}q" if needed_qubits else ""))
    lines = [head]
    for r in rows:
        line = (f"{r['name']:<20} {r['qubits']:>6}  {r['two_qubit_gate'] or '-':<8} "
                f"{_pct(r['median_two_qubit_error']):>8} {_pct(r['median_readout_error']):>8} "
                f"{_num(r['median_t1_us']):>8}  {(r['calibration_date'] or '-')[:10]:<10}")
        if needed_qubits:
            line += "  " + ("yes" if r["qubits"] >= needed_qubits else "no")
        lines.append(line)
    return "\n".join(lines)


def with_fit(rows: list[dict], needed_qubits: int | None) -> list[dict]:
    """The rows with ``fits`` (enough qubits for the circuit) when a circuit size is given."""
    return rows if not needed_qubits else [{**r, "fits": r["qubits"] >= needed_qubits} for r in rows]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f}%"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"
