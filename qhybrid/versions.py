"""The software versions behind a result, recorded in every result file that a quantum target or a
trained model produced (``samples.json``, ``noisy_eval.json``, job records): fake backends'
calibration data change between ``qiskit-ibm-runtime`` releases, and numbers move with Qiskit, Aer
and torch."""

from __future__ import annotations

import importlib.metadata
import platform

#: The distributions whose versions decide a result, beside qhybrid's and Python's.
DISTRIBUTIONS = ("qiskit", "qiskit-aer", "qiskit-ibm-runtime", "qiskit-machine-learning", "torch")


def software_versions() -> dict[str, str | None]:
    """qhybrid's, :data:`DISTRIBUTIONS`' and Python's versions (None: not installed)."""
    from qhybrid import __version__

    found: dict[str, str | None] = {"qhybrid": __version__}
    for dist in DISTRIBUTIONS:
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[dist] = None
    found["python"] = platform.python_version()
    return found
