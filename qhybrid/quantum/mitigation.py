"""Error mitigation: what a user asks for, and how qiskit-ibm-runtime's executor runs it.

One setting, :class:`Mitigation`, for the ``fake:`` and ``ibm:`` targets, ``sample``,
``noisy-eval`` and ``jobs submit``:

============ ===================================================================================
``none``     the raw noisy estimate
``readout``  qhybrid's own readout-error inversion (``fake:`` target only: tensored per-qubit
             calibration, exact inversion of the counts; it costs two calibration circuits)
``trex``     the runtime's twirled readout error extinction (measurement twirling plus learned
             readout-noise rescaling); the readout mitigation of resilience level 1
``zne``      the runtime's zero-noise extrapolation by two-qubit gate folding, at ``noise_factors``
             (the circuit is run once per factor), extrapolated to zero noise by
             ``extrapolator`` (tried in order; the runtime keeps the first that fits)
``twirling`` Pauli twirling of gates and measurements, no mitigation: it turns coherent errors
             into stochastic ones and spreads the shots over random circuit instances
``trex+zne`` both: TREX for the readout, ZNE for the gates (resilience level 2 without its
             gate twirling)
============ ===================================================================================

``trex``, ``zne`` and ``twirling`` run through ``qiskit_ibm_runtime.executor_estimator.Estimator``,
the client-side Estimator that qiskit-ibm-runtime 0.50 introduced: its pre-processing (boxing,
twirling, folding, TREX calibration circuits) and post-processing (extrapolation, rescaling)
happen on the user's machine, and the circuits go out as one ``QuantumProgram`` through the
``Executor``. Given a local simulator (:func:`qhybrid.quantum.primitives.aer.local_simulator`) the same code path runs offline:
that is how the ``fake:`` target and ``ibm:fake_*`` rehearse what a mitigation would buy before
any QPU time is spent. :func:`program_cost` counts what a submission sends (circuit executions
and shots, from the runtime's own pre-processing), the figure the QPU bills.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from qhybrid.config import Config
from qhybrid.errors import InputError

#: What a user can ask for, in the order the mitigation sweep runs them.
KINDS = ("none", "readout", "trex", "zne", "twirling", "trex+zne")
#: Kinds that run through the runtime's executor-based Estimator.
EXECUTOR_KINDS = ("trex", "zne", "twirling", "trex+zne")
#: The runtime's ZNE extrapolators (``ZneOptions.extrapolator``).
EXTRAPOLATORS = ("exponential", "linear", "double_exponential", "polynomial_degree_1", "polynomial_degree_2",
                 "polynomial_degree_3", "polynomial_degree_4", "polynomial_degree_5", "polynomial_degree_6",
                 "polynomial_degree_7", "fallback")
#: The runtime's defaults (qiskit-ibm-runtime 0.51 ``ZneOptions``).
DEFAULT_NOISE_FACTORS = (1.0, 3.0, 5.0)
DEFAULT_EXTRAPOLATOR = ("exponential", "linear")


class MitigationError(InputError):
    """A mitigation that is unknown, malformed or not available on a target (a ValueError)."""


@dataclass(frozen=True)
class Mitigation(Config):
    """An error-mitigation setting (see the module docstring for the kinds)."""

    kind: str = "none"
    noise_factors: tuple[float, ...] = DEFAULT_NOISE_FACTORS  # zne and trex+zne only
    extrapolator: tuple[str, ...] = DEFAULT_EXTRAPOLATOR  # zne and trex+zne only, tried in order

    def __post_init__(self):
        if self.kind not in KINDS:
            raise MitigationError(f"unknown mitigation {self.kind!r}; allowed: {', '.join(KINDS)}")
        factors = self.noise_factors
        if isinstance(factors, (int, float)) or not all(isinstance(f, (int, float)) and not isinstance(f, bool)
                                                        for f in factors):
            raise MitigationError(f"ZNE noise factors must be numbers >= 1, got {factors!r}")
        self._fill("noise_factors", tuple(float(f) for f in factors))
        extrapolator = (self.extrapolator,) if isinstance(self.extrapolator, str) else tuple(self.extrapolator)
        self._fill("extrapolator", extrapolator)
        if len(self.noise_factors) < 2 or min(self.noise_factors) < 1 or len(set(self.noise_factors)) != len(self.noise_factors):
            raise MitigationError(f"ZNE needs at least two distinct noise factors >= 1 (e.g. 1,3,5), got "
                                  f"{', '.join(f'{f:g}' for f in self.noise_factors)}")
        unknown = [e for e in extrapolator if e not in EXTRAPOLATORS]
        if not extrapolator or unknown:
            raise MitigationError(f"unknown ZNE extrapolator {', '.join(unknown) or '(none)'}; allowed: "
                                  f"{', '.join(EXTRAPOLATORS)}")
        if self.uses_zne:
            needed = max(_parameters(e) for e in extrapolator)
            if len(self.noise_factors) < needed:
                raise MitigationError(f"the {'/'.join(extrapolator)} extrapolation needs at least {needed} noise "
                                      f"factors, got {len(self.noise_factors)}; add factors (e.g. 1,3,5,7) or choose "
                                      "a lower-order extrapolator")

    @classmethod
    def of(cls, value: Any) -> Mitigation:
        """A :class:`Mitigation` from what options carry: one already, a kind name, a dict (a saved
        config) or, as qhybrid 0.1's ``fake:`` option did, a bool (True: ``readout``)."""
        if isinstance(value, Mitigation):
            return value
        if value is None or value is False:
            return cls()
        if value is True:
            return cls("readout")
        if isinstance(value, str):
            return cls(value.strip().lower())
        if isinstance(value, dict):
            return cls.from_dict(value)
        raise MitigationError(f"mitigation must be one of {', '.join(KINDS)}, got {value!r}")

    @property
    def uses_zne(self) -> bool:
        return self.kind in ("zne", "trex+zne")

    @property
    def uses_executor(self) -> bool:
        """Whether it runs through the runtime's executor-based Estimator."""
        return self.kind in EXECUTOR_KINDS

    @property
    def label(self) -> str:
        """How reports name it: ``ZNE (1, 3, 5; exponential, linear)``."""
        if self.uses_zne:
            zne = f"ZNE ({', '.join(f'{f:g}' for f in self.noise_factors)}; {', '.join(self.extrapolator)})"
            return zne if self.kind == "zne" else f"TREX + {zne}"
        return {"none": "no mitigation", "readout": "readout inversion", "trex": "TREX",
                "twirling": "twirling"}[self.kind]

    @property
    def key(self) -> str:
        """A folder-safe name: ``zne-1-3-5-exponential-linear``."""
        if not self.uses_zne or (self.noise_factors, self.extrapolator) == (DEFAULT_NOISE_FACTORS, DEFAULT_EXTRAPOLATOR):
            return self.kind
        return "-".join([self.kind, *(f"{f:g}".replace(".", "p") for f in self.noise_factors), *self.extrapolator])

    def to_dict(self) -> dict:
        """Only the fields that matter for the kind (a ``trex`` setting does not list ZNE's)."""
        data = super().to_dict()
        return data if self.uses_zne else {"kind": self.kind}

    def estimator_options(self, shots: int, *, seed_simulator: int | None = None, tags=None) -> dict:
        """The options of ``qiskit_ibm_runtime.executor_estimator.Estimator`` for this setting:
        resilience level 0 with exactly the techniques asked for switched on (the level's own
        defaults would add TREX to everything)."""
        if self.kind == "readout":
            raise MitigationError("'readout' is qhybrid's own inversion on the fake: target; on IBM Quantum use "
                                  "'trex', the runtime's readout mitigation")
        opts: dict[str, Any] = {"default_shots": int(shots), "resilience_level": 0,
                                "resilience": {"measure_mitigation": self.kind in ("trex", "trex+zne"),
                                               "zne_mitigation": self.uses_zne},
                                "twirling": {"enable_gates": self.kind == "twirling",
                                             "enable_measure": self.kind in ("twirling", "trex", "trex+zne")}}
        if self.uses_zne:
            opts["resilience"]["zne"] = {"noise_factors": list(self.noise_factors),
                                         "extrapolator": list(self.extrapolator)}
        if seed_simulator is not None:
            opts["simulator"] = {"seed_simulator": int(seed_simulator)}
        if tags:
            opts["environment"] = {"job_tags": list(tags)}
        return opts

    def legacy_options(self) -> dict:
        """The same setting as options of the server-side ``EstimatorV2`` (the legacy path)."""
        if self.kind == "readout":
            raise MitigationError("'readout' is qhybrid's own inversion on the fake: target; on IBM Quantum use 'trex'")
        opts: dict[str, Any] = {"resilience_level": 0}
        if self.kind in ("trex", "trex+zne"):
            opts["resilience"] = {"measure_mitigation": True}
            opts["twirling"] = {"enable_measure": True}
        if self.uses_zne:
            opts.setdefault("resilience", {}).update({"zne_mitigation": True, "zne": {
                "noise_factors": list(self.noise_factors), "extrapolator": list(self.extrapolator)}})
        if self.kind == "twirling":
            opts["twirling"] = {"enable_gates": True, "enable_measure": True}
        return opts


def _parameters(extrapolator: str) -> int:
    """Noise factors an extrapolator needs (its free parameters)."""
    if extrapolator.startswith("polynomial_degree_"):
        return int(extrapolator.rsplit("_", 1)[1]) + 1
    return {"double_exponential": 4}.get(extrapolator, 2)


def parse_mitigation(kind: str | None, noise_factors: str | None = None, extrapolator: str | None = None) -> Mitigation:
    """The command line's ``--mitigation KIND [--zne-factors 1,3,5] [--zne-extrapolator linear]``."""
    fields: dict[str, Any] = {"kind": (kind or "none").strip().lower()}
    if noise_factors is not None:
        try:
            fields["noise_factors"] = tuple(float(v) for v in noise_factors.split(",") if v.strip())
        except ValueError:
            raise MitigationError(f"ZNE noise factors must be comma-separated numbers (1,3,5), got {noise_factors!r}") from None
    if extrapolator is not None:
        fields["extrapolator"] = tuple(v.strip() for v in extrapolator.split(",") if v.strip())
    if fields["kind"] not in ("zne", "trex+zne") and len(fields) > 1:
        raise MitigationError("--zne-factors and --zne-extrapolator only apply with --mitigation zne (or trex+zne)")
    return Mitigation(**fields)


# --- the executor path ------------------------------------------------------------------------------
def submit(mode, options: dict, pub: tuple):
    """Submit one PUB through ``qiskit_ibm_runtime.executor_estimator.Estimator`` on ``mode`` (an
    IBM backend, Session or Batch; offline, a local ``BackendV2`` such as
    :func:`qhybrid.quantum.primitives.aer.local_simulator`'s) with ``options``
    (:meth:`Mitigation.estimator_options`); returns the job."""
    from qiskit_ibm_runtime.executor_estimator import Estimator

    estimator = Estimator(mode=mode, options=options)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*no effect in local testing mode.*")
        return estimator.run([pub])


def post_processor(job) -> dict:
    """Which client-side post-processor an executor job's result needs (``{"version": "v0.1"}``):
    ``service.job(id).result()`` re-runs it with the installed qiskit-ibm-runtime, so a record
    keeps it. Empty when the job does not say."""
    try:
        inputs = job.inputs
    except Exception:  # noqa: BLE001 - a remote job whose inputs cannot be read now
        return {}
    passthrough = getattr(inputs, "passthrough_data", None)
    if passthrough is None and isinstance(inputs, dict):
        passthrough = _find_key(inputs, "passthrough_data") or {}
    info = (passthrough or {}).get("post_processor") or {}
    return {"version": info.get("version")} if info.get("version") else {}


def _find_key(data, key: str):
    if isinstance(data, dict):
        if key in data:
            return data[key]
        for value in data.values():
            found = _find_key(value, key)
            if found is not None:
                return found
    return None


def program_cost(job) -> dict:
    """Circuit executions and shots of a local executor job's ``QuantumProgram`` (what a QPU
    would run: every randomisation, noise factor and TREX calibration circuit)."""
    program = getattr(job, "inputs", None)
    return _counts(program) if getattr(program, "items", None) is not None else {}


def _counts(program) -> dict:
    """Circuit executions (every item's bindings x randomisations) and shots of a ``QuantumProgram``."""
    executions = int(sum(item.size() for item in program.items))
    return {"circuit_executions": executions, "shots": int(program.shots) * executions}


def program_counts(options: dict, pub: tuple) -> dict:
    """Circuit executions and shots the executor-based Estimator would send for ``pub`` with
    ``options``, from the runtime's own pre-processing (no submission, no simulation): every
    twirling randomisation, ZNE noise factor and TREX calibration circuit, shots rounded up to
    whole randomisations. qiskit-ibm-runtime 0.51 has no public call for this (the Estimator's
    ``dry_run`` is a server-side job), so this calls ``executor_estimator.prepare.prepare``, the
    function ``Estimator.run`` itself calls first."""
    from qiskit_ibm_runtime.executor_estimator.prepare import prepare
    from qiskit_ibm_runtime.options_models.estimator import EstimatorOptions

    program, _ = prepare([pub], EstimatorOptions(**options))
    return _counts(program)
