"""Execution targets: how a :class:`QuantumBlock`'s circuit is evaluated, and nothing else.

A target turns (circuit, observables, input/weight parameters) into an ``EstimatorQNN``. The
block's weights never depend on the target, so the same checkpoint runs on any of them.

=========== ==========================================================================
``ideal``   exact batched statevector (:mod:`qhybrid.quantum.primitives.exact`); training
            happens here. With the ``shots`` option: a noiseless device measured with that many
            shots, the shot-noise floor every noisy figure is set against
``fake:X``  Qiskit Aer with the noise model of ``qiskit_ibm_runtime.fake_provider`` backend X
            (:mod:`qhybrid.quantum.primitives.aer`), or of a noise snapshot
            (:mod:`qhybrid.quantum.noise_snapshots`); the ``mitigation`` option runs TREX, ZNE
            or twirling through the runtime's executor on that noise
            (:mod:`qhybrid.quantum.mitigation`)
``ibm:X``   ``qiskit-ibm-runtime``'s executor-based Estimator (or, selectable, the legacy
            EstimatorV2): IBM Quantum backend X, or for X = fake_* offline on the backend's
            noise (:mod:`qhybrid.quantum.primitives.runtime`); one job per QNN call. Sampling runs with job records go through
            :mod:`qhybrid.workflows.jobs`.
=========== ==========================================================================

The estimator modules import ``qiskit_aer`` and ``qiskit_ibm_runtime`` only when a target of
their kind is parsed or built, so importing this module stays cheap.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qiskit.circuit import QuantumCircuit
from qiskit_machine_learning.neural_networks import EstimatorQNN

from qhybrid.errors import InputError
from qhybrid.quantum.noise_snapshots import load_snapshot
from qhybrid.quantum.primitives.aer import (
    NoisyEstimator,
    fake_backend,
    noise_source_for_backend,
)
from qhybrid.quantum.primitives.exact import (
    MAX_IDEAL_QUBITS,
    ExactEstimator,
    ExactEstimatorGradient,
)
from qhybrid.quantum.primitives.runtime import RuntimeEstimator, RuntimeOptions
from qhybrid.versions import software_versions


class TargetError(InputError):
    """An unknown, malformed or unavailable execution target (a ValueError)."""

#: Target kinds and whether this build of qhybrid can execute them.
TARGET_KINDS = {"ideal": True, "fake": True, "ibm": True}
#: Options of the ideal target (see qhybrid.quantum.primitives.exact.ExactEstimator).
IDEAL_OPTIONS = ("fusion", "simulation_precision", "shots", "seed")
#: Options of the fake target (see qhybrid.quantum.primitives.aer.NoisyEstimator) and their defaults.
FAKE_OPTIONS = {"shots": 1024, "method": "counts", "mitigation": "none", "optimization_level": 2,
                "seed_transpiler": 0, "seed": None, "noise_model": None}
#: Options of the ibm target (see qhybrid.quantum.primitives.runtime.RuntimeOptions).
IBM_OPTIONS = ("shots", "resilience_level", "twirling", "dd", "optimization_level", "seed_transpiler",
               "primitive", "mitigation", "eager_transpile")


@dataclass(frozen=True)
class Target:
    """A parsed target string such as ``ideal``, ``fake:fake_torino`` or ``ibm:ibm_torino``."""

    kind: str
    backend: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.kind if self.backend is None else f"{self.kind}:{self.backend}"

    @property
    def max_qubits(self) -> int:
        return MAX_IDEAL_QUBITS if self.kind == "ideal" else 10_000  # a backend checks its own width

    def make_qnn(self, circuit: QuantumCircuit, observables, input_params, weight_params):
        """Build the ``EstimatorQNN`` that evaluates ``circuit`` on this target."""
        if circuit.num_qubits > self.max_qubits:
            raise TargetError(
                f"CircuitSpec.num_qubits={circuit.num_qubits} is too many for target "
                f"'{self}': at most {self.max_qubits} qubits (2^{self.max_qubits} amplitudes "
                "per sample); use fewer qubits or a fake:/ibm: target"
            )
        estimator = self.estimator()
        # ideal: qhybrid's exact adjoint gradient; fake and ibm: qiskit-machine-learning's default
        # (parameter shift through the estimator)
        gradient = ExactEstimatorGradient(estimator) if self.kind == "ideal" else None
        qnn = EstimatorQNN(
            circuit=circuit,
            estimator=estimator,
            observables=observables,
            input_params=input_params,
            weight_params=weight_params,
            gradient=gradient,
            input_gradients=True,
            default_precision=0.0,
        )
        # transpile now (the circuit object the QNN sends in its PUBs), so that a circuit too
        # wide for the backend fails here rather than in the middle of sampling
        if self.kind == "fake":
            estimator.program(qnn_pub_circuit(qnn))
        elif self.kind == "ibm" and self.options.get("eager_transpile", True):
            estimator.isa(qnn_pub_circuit(qnn), [])
        return qnn

    def estimator(self):
        """The primitive behind this target (fake: a NoisyEstimator, ibm: a RuntimeEstimator)."""
        if self.kind == "ideal":
            return ExactEstimator(**self.options)
        if self.kind == "ibm":
            options = {k: v for k, v in self.options.items() if k != "eager_transpile"}
            return RuntimeEstimator(self.backend, RuntimeOptions(**options))
        opts = {**FAKE_OPTIONS, **self.options}
        path = opts.pop("noise_model")
        source = load_snapshot(path) if path else noise_source_for_backend(self.backend)
        return NoisyEstimator(source, **opts)


def qnn_pub_circuit(qnn: EstimatorQNN) -> QuantumCircuit:
    """The circuit object ``qnn`` puts in its PUBs (forward) and gradient calls (backward).

    ``EstimatorQNN.__init__`` reparameterises the circuit it is given: ``assign_parameters`` onto
    new ``inputs``/``weights`` ``ParameterVector`` s, which makes a new circuit object with the same
    gates and parameter names, and every call sends that object. Its public ``circuit`` property
    returns ``copy()`` of the *original* circuit instead, a new object on each call, so nothing
    keyed by circuit object (the estimators' caches, ISA programs, job records) would match it.
    qiskit-machine-learning 0.9.1 has no public accessor for the reparameterised circuit, so this
    is qhybrid's one read of the private ``EstimatorQNN._circuit``; everything else goes through
    here (or :attr:`QuantumBlock.pub_circuit`).
    """
    return qnn._circuit  # private: no public accessor (see the docstring)


def parse_target(target: "str | Target", **options: Any) -> Target:
    """Parse ``ideal`` / ``fake:<backend>`` / ``ibm:<backend>``; fail with the allowed forms."""
    if isinstance(target, Target):
        return Target(target.kind, target.backend, {**target.options, **options})
    if not isinstance(target, str) or not target.strip():
        raise TargetError(f"target must be a string like 'ideal' or 'fake:fake_torino', got {target!r}")
    kind, _, backend = target.strip().partition(":")
    kind = kind.lower()
    if kind not in TARGET_KINDS:
        raise TargetError(
            f"unknown target {target!r}; allowed: ideal, fake:<fake backend>, ibm:<backend>"
        )
    if kind == "ideal":
        if backend:
            raise TargetError(f"target 'ideal' takes no backend, got {target!r}")
        unknown = sorted(set(options) - set(IDEAL_OPTIONS))
        if unknown:
            raise TargetError(f"unknown option(s) {', '.join(unknown)} for target 'ideal'; "
                              f"allowed: {', '.join(IDEAL_OPTIONS)}")
        return Target("ideal", None, dict(options))
    if not backend:
        raise TargetError(f"target {target!r} needs a backend name, e.g. '{kind}:fake_torino'")
    if not TARGET_KINDS[kind]:  # pragma: no cover - every kind is implemented
        raise TargetError(f"target {target!r} is not implemented in this version of qhybrid")
    if kind == "ibm":
        unknown = sorted(set(options) - set(IBM_OPTIONS))
        if unknown:
            raise TargetError(f"unknown option(s) {', '.join(unknown)} for target {target!r}; "
                              f"allowed: {', '.join(IBM_OPTIONS)}")
        if backend.lower().startswith("fake"):
            fake_backend(backend)  # unknown names fail here; IBM names are checked on connection
    if kind == "fake":
        unknown = sorted(set(options) - set(FAKE_OPTIONS))
        if unknown:
            raise TargetError(f"unknown option(s) {', '.join(unknown)} for target {target!r}; "
                              f"allowed: {', '.join(FAKE_OPTIONS)}")
        if not options.get("noise_model"):
            fake_backend(backend)  # unknown names fail here, listing the valid ones
        else:  # the target must name the noise that is simulated: the snapshot's own backend
            snapped = load_snapshot(options["noise_model"]).name
            if snapped != backend:
                raise TargetError(f"the noise-model snapshot {options['noise_model']} is of {snapped}, not {backend}; "
                                  f"use target 'fake:{snapped}' with it (a target names the noise it simulates)")
    return Target(kind, backend, dict(options))


# --- provenance: the noise a target simulates ------------------------------------------------------
def noise_source(target: str, options: dict | None = None) -> dict | None:
    """The noise a ``target`` string with ``options`` simulates: None for an exact target; for a
    shot-noise-only ``ideal`` target, that; for ``fake:``, the fake backend (with the installed
    ``qiskit-ibm-runtime``, whose release fixes its calibration) or the snapshot file (its path,
    SHA-256 and the calibration date it froze)."""
    options = options or {}
    kind, _, backend = target.partition(":")
    if kind == "ideal":
        return None if options.get("shots") is None else {"kind": "shot noise only", "shots": options["shots"]}
    if kind != "fake":
        return {"kind": "IBM Quantum" if not backend.startswith("fake") else "runtime local testing mode",
                "backend": backend}
    if options.get("noise_model"):
        path = Path(options["noise_model"])
        source = load_snapshot(path)
        return {"kind": "snapshot", "file": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                "backend": source.name, "calibration_date": source.calibration_date,
                "format_version": (source.origin or {}).get("format_version")}
    source = noise_source_for_backend(backend)
    return {"kind": "fake backend", "backend": source.name, "calibration_date": source.calibration_date,
            "qiskit-ibm-runtime": software_versions()["qiskit-ibm-runtime"]}


def describe_noise(source: dict | None) -> str:
    """One phrase for a :func:`noise_source` dict, for tables and log lines."""
    if source is None:
        return "exact"
    if source["kind"] == "shot noise only":
        return f"noiseless, {source['shots']:,} shots"
    date = (source.get("calibration_date") or "unknown date")[:10]
    if source["kind"] == "snapshot":
        return f"{source['backend']} snapshot {Path(source['file']).name} (calibrated {date})"
    if source["kind"] == "fake backend":
        return f"{source['backend']} (calibrated {date}, qiskit-ibm-runtime {source['qiskit-ibm-runtime']})"
    return f"{source['backend']} ({source['kind']})"
