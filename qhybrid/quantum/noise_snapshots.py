"""Noise-model snapshots: a fake backend's noise frozen into a JSON file in ``noise_models/``.

``qiskit-ibm-runtime`` updates its fake backends' calibration data between releases; a snapshot
keeps a noisy evaluation reproducible after such an update. It holds the backend name, qubit
count, basis gates, coupling map, calibration date, the Aer noise model (``NoiseModel.to_dict``,
complex arrays encoded) and the versions that made it.

Format version 2 (written now) also holds the backend's ``Target`` calibration
(:mod:`qhybrid.quantum.calibration`: per instruction and qargs the error and duration, per qubit
T1/T2/frequency and readout probabilities, ``dt``): a run from it transpiles with the rebuilt
Target, so it gets the same noise-aware layout as the live fake backend for the same seed, and
``circuits inspect`` can give durations and an error budget.

Format version 1 snapshots still load, with their old behaviour: they transpile with the coupling
map and basis gates only (no gate errors, no durations), so the layout may differ from a run
against the live fake backend, and they have no error budget. Write them again with
``qhybrid noise snapshot <backend>`` (from a qiskit-ibm-runtime that still has that calibration)
to get version 2.
"""

from __future__ import annotations

import datetime as dt
import json
from functools import lru_cache
from pathlib import Path

from qiskit.exceptions import QiskitError

from qhybrid import io
from qhybrid.errors import InputError, one_line
from qhybrid.quantum.calibration import target_from_calibration
from qhybrid.quantum.primitives.aer import (
    NoiseSource,
    decode_noise,
    encode_noise,
    noise_source_for_backend,
)

SNAPSHOT_FORMAT = "qhybrid-noise-snapshot"
SNAPSHOT_VERSION = 2
#: Versions this qhybrid reads (1: no Target calibration; the layout may differ from the live backend).
READABLE_VERSIONS = (1, 2)


def snapshot(backend: str) -> dict:
    import qiskit
    import qiskit_aer
    import qiskit_ibm_runtime

    source = noise_source_for_backend(backend)
    return {
        "format": SNAPSHOT_FORMAT,
        "format_version": SNAPSHOT_VERSION,
        "backend": source.name,
        "num_qubits": source.num_qubits,
        "basis_gates": source.basis_gates,
        "coupling_map": source.coupling_map,
        "calibration_date": source.calibration_date,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"qiskit": qiskit.__version__, "qiskit-aer": qiskit_aer.__version__,
                     "qiskit-ibm-runtime": qiskit_ibm_runtime.__version__},
        "calibration": source.calibration,
        "noise_model": encode_noise(source.noise),
    }


def write_snapshot(backend: str, out_dir: str | Path = "noise_models") -> Path:
    data = snapshot(backend)
    date = (data["calibration_date"] or data["created"])[:10].replace("-", "")
    path = Path(out_dir) / f"{data['backend']}-{date}.json"
    io.write_text(path, json.dumps(data) + "\n")
    return path


def load_snapshot(path: str | Path) -> NoiseSource:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"noise-model snapshot {path} not found; write one with 'qhybrid noise snapshot <backend>'")
    return _load(str(path.resolve()), path.stat().st_mtime_ns)


@lru_cache(maxsize=8)
def _load(path: str, _mtime: int) -> NoiseSource:
    try:
        data = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not a noise-model snapshot (not valid JSON: {one_line(exc)})") from None
    if not isinstance(data, dict) or data.get("format") != SNAPSHOT_FORMAT:
        raise InputError(f"{path} is not a noise-model snapshot (no 'format: {SNAPSHOT_FORMAT}'); "
                         "write one with 'qhybrid noise snapshot <backend>'")
    version = data.get("format_version")
    if version not in READABLE_VERSIONS:
        raise InputError(f"{path} has snapshot version {version}; this qhybrid reads "
                         f"{', '.join(map(str, READABLE_VERSIONS))}: update qhybrid or write the snapshot again "
                         "with 'qhybrid noise snapshot <backend>'")
    try:
        calibration = data["calibration"] if version >= 2 else None
        return NoiseSource(name=data["backend"], num_qubits=int(data["num_qubits"]),
                           basis_gates=list(data["basis_gates"]), coupling_map=[list(e) for e in data["coupling_map"]],
                           noise=decode_noise(data["noise_model"]), backend=None,
                           calibration_date=data.get("calibration_date"),
                           target=None if calibration is None else target_from_calibration(calibration),
                           calibration=calibration,
                           origin={"snapshot": path, "format_version": version, "created": data.get("created"),
                                   "versions": data.get("versions")})
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, QiskitError) as exc:
        raise InputError(f"{path} is a damaged noise-model snapshot ({one_line(exc, with_type=True)}); "
                         "write it again with 'qhybrid noise snapshot <backend>'") from None
