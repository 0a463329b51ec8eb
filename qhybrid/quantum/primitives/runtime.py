"""The ``ibm:<backend>`` target: qiskit-ibm-runtime's Estimator on IBM Quantum hardware, or, for
``fake_*`` backend names, offline on the fake backend's noise (see below for how).

The circuit is transpiled once for the backend into an ISA circuit (``generate_preset_pass_manager``),
observables are mapped with ``apply_layout``, and every call of the QNN becomes **one PUB**: the
ISA circuit, the K observables as a (K, 1) array and the parameter rows (one per chain) as an
(n, P) array, so the result is a (K, n) table from one job.

Two primitives (``RuntimeOptions.primitive``):

* ``executor`` (default): ``qiskit_ibm_runtime.executor_estimator.Estimator``, the client-side
  Estimator of qiskit-ibm-runtime >= 0.50. Mitigation (TREX, ZNE, twirling:
  :mod:`qhybrid.quantum.mitigation`) is prepared on this machine and the circuits go out as one
  ``QuantumProgram`` through the ``Executor`` (program ``executor``); fetching the job later
  re-runs the client-side post-processing, whose version a job record keeps. Offline, on a
  ``fake_*`` backend, the program runs on Aer with the backend's noise model, the ISA circuit
  compacted to the qubits it touches (:class:`LocalDevice`): the runtime's own local mode would
  measure all 133-156 qubits of the full-width circuit, which no simulator can hold. Everything
  before the simulator (options, boxing, twirling, folding, TREX circuits, post-processing) is
  the runtime's code, as on hardware.
* ``estimator`` (legacy): the server-side ``EstimatorV2`` that qiskit-ibm-runtime 0.50
  deprecated; kept selectable until the runtime removes it, and what records written before the
  executor path use. Its local testing mode honours shots and ``simulator.seed_simulator`` only
  (resilience, twirling and dynamical decoupling are recorded as ``ignored_locally``) and
  simulates the whole device (about 9 s per job on fake_torino, 20-30x the executor path: BENCHMARKS.md).

Credentials come only from the runtime's own account discovery (saved account or the
``QISKIT_IBM_*`` environment variables); qhybrid never reads, prints or writes a token.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
from qiskit import QuantumCircuit
from qiskit.primitives import BaseEstimatorV2, DataBin, PrimitiveResult, PubResult
from qiskit.quantum_info import SparsePauliOp
from qiskit.transpiler import generate_preset_pass_manager

from qhybrid.config import Config
from qhybrid.errors import InputError, QHybridError, one_line, redact
from qhybrid.quantum.mitigation import Mitigation, MitigationError
from qhybrid.quantum.primitives.pubs import (
    clip_to_spectrum,
    group_pubs,
    pub_evs,
    run_inline,
)

MODES = ("session", "batch", "job")
#: The runtime primitives the ibm: target can submit through (see the module docstring).
PRIMITIVES = ("executor", "estimator")
#: The runtime program each primitive's jobs run as (what IBM Quantum lists them under).
PROGRAM_IDS = {"executor": "executor", "estimator": "estimator"}
#: The first qiskit-ibm-runtime release with the executor-based Estimator.
EXECUTOR_SINCE = "0.50"
FINAL_STATES = ("DONE", "ERROR", "CANCELLED")
ACCOUNT_HELP = (
    "save one with QiskitRuntimeService.save_account(token=..., instance=..., set_as_default=True) "
    "or set QISKIT_IBM_TOKEN and QISKIT_IBM_INSTANCE; to rehearse offline use a fake_<name> backend"
)


class RuntimeTargetError(QHybridError):
    """IBM Quantum could not be used (no account, no network, a job failed): exit code 1."""


#: An IBM Cloud CRN has 10 colon-separated fields; a Qiskit Runtime instance's reads
#: ``crn:v1:bluemix:public:quantum-computing:<location>:a/<account>:<instance>::``.
CRN_FIELDS = 10
CRN_FORMAT = "crn:v1:bluemix:public:quantum-computing:<location>:a/<account>:<instance>::"


def is_local(backend_name: str) -> bool:
    """``fake_*`` names run in the runtime's local testing mode; anything else on IBM Quantum."""
    return backend_name.strip().lower().startswith("fake")


@lru_cache(maxsize=1)
def runtime_service():
    """``QiskitRuntimeService()`` with the runtime's own account discovery, or a clear error."""
    from qiskit_ibm_runtime import QiskitRuntimeService
    from qiskit_ibm_runtime.accounts import AccountNotFoundError

    if os.environ.get("QISKIT_IBM_TOKEN"):  # the runtime reads QISKIT_IBM_INSTANCE only beside a token
        _check_crn(os.environ.get("QISKIT_IBM_INSTANCE"), "QISKIT_IBM_INSTANCE")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return QiskitRuntimeService()
    except AccountNotFoundError:
        raise RuntimeTargetError(f"no IBM Quantum account is configured: {ACCOUNT_HELP}") from None
    except Exception as exc:  # noqa: BLE001 - account parsing, authentication and network errors
        if isinstance(exc, AttributeError) and "'group'" in str(exc):
            # qiskit-ibm-runtime 0.51 reads the region out of the CRN with a regex; on a malformed
            # CRN (a saved account's) it fails with "'NoneType' object has no attribute 'group'"
            _check_crn(*_configured_instance())
        raise RuntimeTargetError(
            f"could not connect to IBM Quantum ({one_line(exc, with_type=True, limit=300)}); check the network "
            f"and the account ({ACCOUNT_HELP})"
        ) from None


def crn_problem(instance: str | None) -> str | None:
    """What is wrong with ``instance`` as a CRN (None if it is not a CRN, or a well-formed one).
    Only values that start with ``crn:`` are CRNs; the runtime takes other values as names."""
    if not isinstance(instance, str) or not instance.startswith("crn:"):
        return None
    fields = instance.split(":")
    if len(fields) != CRN_FIELDS:
        return f"it has {len(fields)} colon-separated fields, a CRN has {CRN_FIELDS}"
    empty = [k for k in range(1, 8) if not fields[k]]
    if empty:
        return f"its field {empty[0] + 1} is empty"
    return None


def _check_crn(instance: str | None, source: str) -> None:
    """One line naming a malformed instance CRN and where it came from, before the runtime fails
    on it with an error that names neither."""
    problem = crn_problem(instance)
    if problem:
        shown = redact(instance if len(instance) <= 120 else instance[:117] + "...")
        raise RuntimeTargetError(
            f"the IBM Quantum instance {shown!r} (from {source}) is not a valid CRN ({problem}: "
            f"{CRN_FORMAT}); copy the instance's CRN from its page on quantum.cloud.ibm.com") from None


def _configured_instance() -> tuple[str | None, str]:
    """The instance the runtime's account discovery uses, and where it came from (no token read)."""
    if os.environ.get("QISKIT_IBM_TOKEN"):
        return os.environ.get("QISKIT_IBM_INSTANCE"), "QISKIT_IBM_INSTANCE"
    try:
        from qiskit_ibm_runtime.accounts import AccountManager

        return AccountManager.get().instance, "the saved account"
    except Exception:  # noqa: BLE001 - a file that cannot be read: the caller's generic message
        return None, "the saved account"


def get_backend(name: str):
    """A fake backend (local testing mode) or an IBM Quantum backend of the configured account."""
    if is_local(name):
        from qhybrid.quantum.primitives.aer import fake_backend

        return fake_backend(name)
    service = runtime_service()
    try:
        return service.backend(name)
    except Exception as exc:  # noqa: BLE001 - QiskitBackendNotFoundError or a network error
        if "not found" in str(exc).lower() or "NotFound" in type(exc).__name__:
            try:
                names = ", ".join(sorted(b.name for b in service.backends()))
            except Exception:  # noqa: BLE001
                names = "(could not list them)"
            raise InputError(f"unknown IBM Quantum backend {name!r}; your account has: {names}") from None
        raise RuntimeTargetError(f"could not get backend {name!r} from IBM Quantum "
                                 f"({one_line(exc, with_type=True, limit=300)})") from None


# --- options ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RuntimeOptions(Config):
    """What a run sends to the runtime Estimator, plus how the circuit is transpiled.

    ``mitigation`` (a :class:`~qhybrid.quantum.mitigation.Mitigation` as a dict) names exactly the
    techniques to use; without it, ``resilience_level`` picks the runtime's preset (None: the
    service's default, level 1: TREX). ``twirling`` and ``dd`` add gate-and-measurement twirling
    and XY4 dynamical decoupling to either."""

    shots: int = 1024
    resilience_level: int | None = None  # None: the service's default (1: readout mitigation, TREX)
    twirling: bool = False
    dd: bool = False
    optimization_level: int = 2
    seed_transpiler: int = 0
    primitive: str = "executor"
    mitigation: dict | None = None

    def __post_init__(self):
        if isinstance(self.shots, bool) or not isinstance(self.shots, (int, np.integer)) or self.shots <= 0:
            raise InputError(f"shots must be a positive integer, got {self.shots!r}")
        if self.resilience_level is not None and self.resilience_level not in (0, 1, 2):
            raise InputError(f"resilience level must be 0, 1 or 2, got {self.resilience_level!r}")
        if self.optimization_level not in (0, 1, 2, 3):
            raise InputError(f"optimization level must be 0-3, got {self.optimization_level!r}")
        if self.primitive not in PRIMITIVES:
            raise InputError(f"unknown runtime primitive {self.primitive!r}; allowed: {', '.join(PRIMITIVES)} "
                             "(executor: the client-side Estimator; estimator: the legacy server-side EstimatorV2)")
        if self.mitigation is not None:
            setting = Mitigation.of(self.mitigation)
            if setting.kind == "readout":
                raise MitigationError("'readout' is qhybrid's own inversion on the fake: target; on IBM Quantum use "
                                      "'trex', the runtime's readout mitigation")
            if self.resilience_level is not None:
                raise InputError("give a mitigation or a resilience level, not both (a mitigation sets resilience "
                                 "level 0 plus exactly its technique)")
            self._fill("mitigation", setting.to_dict())

    @property
    def setting(self) -> Mitigation | None:
        """The explicit mitigation, or None (the resilience level's preset)."""
        return None if self.mitigation is None else Mitigation.of(self.mitigation)

    def describe(self) -> str:
        """One phrase: ``TREX``, ``resilience level 1``, ``the service's default mitigation``."""
        if self.setting is not None:
            what = self.setting.label
        elif self.resilience_level is not None:
            what = f"resilience level {self.resilience_level}"
        else:
            what = "the service's default mitigation (level 1: TREX)"
        extras = [name for name, on in (("twirling", self.twirling), ("XY4 dynamical decoupling", self.dd)) if on]
        return " + ".join([what, *extras])

    def executor_options(self, seed_simulator: int | None = None, tags: list[str] | None = None) -> dict:
        """The options of the executor-based Estimator."""
        if self.setting is not None:
            opts = self.setting.estimator_options(self.shots, seed_simulator=seed_simulator, tags=tags)
        else:
            opts = {"default_shots": int(self.shots), "resilience_level": 1 if self.resilience_level is None
                    else int(self.resilience_level)}
            if seed_simulator is not None:
                opts["simulator"] = {"seed_simulator": int(seed_simulator)}
            if tags:
                opts["environment"] = {"job_tags": list(tags)}
        if self.twirling:
            opts["twirling"] = {**opts.get("twirling", {}), "enable_gates": True, "enable_measure": True}
        if self.dd:
            opts["dynamical_decoupling"] = {"enable": True, "sequence_type": "XY4"}
        return opts

    def primitive_options(self, local: bool, seed_simulator: int | None = None) -> dict:
        """The legacy ``EstimatorV2`` options dict (the local simulator's seed only in local mode)."""
        opts: dict[str, Any] = {"default_shots": int(self.shots)}
        if self.resilience_level is not None:
            opts["resilience_level"] = int(self.resilience_level)
        if self.setting is not None:
            opts.update(self.setting.legacy_options())
        if self.twirling:
            opts["twirling"] = {"enable_gates": True, "enable_measure": True}
        if self.dd:
            opts["dynamical_decoupling"] = {"enable": True, "sequence_type": "XY4"}
        if local and seed_simulator is not None:
            opts["simulator"] = {"seed_simulator": int(seed_simulator)}
        return opts

    def ignored_locally(self) -> list[str]:
        """The options that have no effect offline: on the legacy path the runtime's local mode
        ignores every mitigation option; on the executor path only dynamical decoupling, which
        needs the device's timing (the compact simulator has none)."""
        if self.primitive == "executor":
            return ["dynamical_decoupling"] if self.dd else []
        names = []
        if self.resilience_level is not None:
            names.append("resilience_level")
        if self.setting is not None and self.setting.kind != "none":
            names.append(f"mitigation ({self.setting.kind})")
        if self.twirling:
            names.append("twirling")
        if self.dd:
            names.append("dynamical_decoupling")
        return names


# --- ISA circuits -------------------------------------------------------------------------------
@dataclass
class IsaCircuit:
    """A circuit transpiled for one backend, its observables mapped to the physical layout."""

    circuit: QuantumCircuit
    observables: list[SparsePauliOp] = field(default_factory=list)

    @classmethod
    def transpile(cls, circuit: QuantumCircuit, observables, backend, optimization_level: int = 2,
                  seed_transpiler: int | None = 0) -> IsaCircuit:
        width = backend.num_qubits
        if circuit.num_qubits > width:
            raise InputError(
                f"the model's circuit has {circuit.num_qubits} qubits but backend {backend.name} has "
                f"only {width}; choose a larger backend ('qhybrid backends' lists the fake ones)"
            )
        pm = generate_preset_pass_manager(optimization_level=optimization_level, backend=backend,
                                          seed_transpiler=seed_transpiler)
        isa = pm.run(circuit)
        return cls(isa, [cls.map(isa, o) for o in observables])

    @staticmethod
    def map(isa: QuantumCircuit, observable) -> SparsePauliOp:
        op = observable if isinstance(observable, SparsePauliOp) else SparsePauliOp(observable)
        return op.apply_layout(isa.layout) if isa.layout is not None else op

    def values(self, logical: QuantumCircuit, values: np.ndarray) -> np.ndarray:
        """Rows in ``logical.parameters`` order -> rows in ``self.circuit.parameters`` order."""
        by_name = {p.name: k for k, p in enumerate(logical.parameters)}
        missing = [p.name for p in self.circuit.parameters if p.name not in by_name]
        if missing:
            raise ValueError(f"the ISA circuit has parameters the model's circuit lacks: {missing[:5]}")
        return np.asarray(values, dtype=float)[:, [by_name[p.name] for p in self.circuit.parameters]]

    def pub(self, values: np.ndarray) -> tuple:
        """One PUB for all rows: observables (K, 1) x parameter values (n, P) -> evs (K, n)."""
        return (self.circuit, [[o] for o in self.observables], values)


def job_status(job) -> str:
    """A job's status as an upper-case string (local jobs give an enum, runtime jobs a string)."""
    status = job.status()
    return str(getattr(status, "name", status)).upper()


def job_usage(job) -> tuple[float | None, str | None]:
    """The QPU time the service charged a job, in seconds, and whether that figure is final
    (``"complete"``) or still being computed (``"pending"``): from ``job.metrics()["usage"]``
    (qiskit-ibm-runtime 0.51 names it ``qpu_charge_time_seconds``; older services
    ``quantum_seconds``). (None, None) when the job reports none. Never raises: usage is
    bookkeeping, and a result must not be lost over it."""
    try:
        usage = job.metrics().get("usage") or {}
        seconds = usage.get("qpu_charge_time_seconds", usage.get("quantum_seconds"))
        return (None if seconds is None else float(seconds)), usage.get("status")
    except Exception:  # noqa: BLE001 - no metrics method, a network error, an unexpected shape
        return None, None


def evs_table(result, num_observables: int, rows: int) -> np.ndarray:
    """The (K, n) expectation values of the one PUB of a step's job."""
    evs = np.asarray(result[0].data.evs, dtype=np.float64)
    if evs.shape != (num_observables, rows):
        raise RuntimeTargetError(f"the job returned expectation values of shape {evs.shape}; expected "
                                 f"({num_observables}, {rows})")
    return evs


def estimator_for(mode, options: RuntimeOptions, local: bool, seed_simulator: int | None = None,
                  tags: list[str] | None = None):
    """The legacy server-side ``EstimatorV2`` on ``mode`` (backend, Session or Batch) with ``options``."""
    try:
        from qiskit_ibm_runtime import EstimatorV2
    except ImportError:  # a runtime release that removed it
        raise RuntimeTargetError(f"this run uses the legacy EstimatorV2, which the installed qiskit-ibm-runtime "
                                 f"{_runtime_version()} no longer has; install 'qiskit-ibm-runtime>=0.50,<1' to "
                                 "continue it, or start a new run on the executor path") from None

    opts = options.primitive_options(local, seed_simulator)
    if tags and not local:
        opts["environment"] = {"job_tags": list(tags)}
    with warnings.catch_warnings():
        # qiskit-ibm-runtime 0.50 deprecates the server-side EstimatorV2 in favour of the
        # executor-based Estimator; it stays selectable (primitive="estimator") for runs recorded
        # on it, until the runtime removes it
        warnings.simplefilter("ignore", DeprecationWarning)
        return EstimatorV2(mode=mode, options=opts)


def _runtime_version() -> str:
    from qhybrid.versions import software_versions

    return software_versions().get("qiskit-ibm-runtime") or "?"


def require_executor() -> None:
    """A clear line when the installed runtime predates the executor-based Estimator."""
    try:
        import qiskit_ibm_runtime.executor_estimator  # noqa: F401
    except ImportError:
        raise RuntimeTargetError(f"the executor-based Estimator needs qiskit-ibm-runtime >= {EXECUTOR_SINCE}; the "
                                 f"installed one is {_runtime_version()}: pip install 'qiskit-ibm-runtime>="
                                 f"{EXECUTOR_SINCE},<1'") from None


class LocalDevice:
    """A fake backend for the executor path offline: the ISA circuit compacted to the physical
    qubits it touches, and the device's noise model (qhybrid's, with the asymmetric readout of
    :func:`qhybrid.quantum.primitives.aer.with_asymmetric_readout`) restricted to them, on the
    Aer simulator of :func:`qhybrid.quantum.primitives.aer.local_simulator`. The same gates, layout,
    gate and readout errors as on the full-width circuit (Aer's noise models have no crosstalk)."""

    def __init__(self, backend_name: str, isa_circuit: QuantumCircuit, backend=None):
        from qhybrid.quantum.primitives.aer import (
            compact_circuit,
            local_simulator,
            restrict_noise,
        )

        layout = isa_circuit.layout
        physical = list(layout.final_index_layout()) if layout is not None else list(range(isa_circuit.num_qubits))
        self.isa_circuit = isa_circuit
        self.compact, self.active = compact_circuit(isa_circuit, physical)
        self.simulator = local_simulator(restrict_noise(_local_noise(backend_name, backend), self.active),
                                         len(self.active))

    def pub(self, isa: IsaCircuit, values: np.ndarray) -> tuple:
        """The compact form of ``isa.pub(values)``: observables restricted to the active qubits,
        values reordered to the compact circuit's parameters."""
        from qhybrid.quantum.primitives.aer import take_qubits

        observables = [[SparsePauliOp(take_qubits(o, self.active), o.coeffs)] for o in isa.observables]
        column = {p.name: k for k, p in enumerate(isa.circuit.parameters)}
        order = [column[p.name] for p in self.compact.parameters]
        return (self.compact, observables, np.asarray(values, dtype=float)[:, order])


def _local_noise(backend_name: str, backend) -> dict:
    """The noise-model dict of a fake backend by name, or of any other backend object."""
    from qhybrid.quantum.primitives.aer import noise_source_for_backend

    if backend is None:
        return noise_source_for_backend(backend_name).noise
    from qiskit_aer.noise import NoiseModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return NoiseModel.from_backend(backend).to_dict()


_LOCAL_DEVICES: dict[tuple[str, int], tuple[QuantumCircuit, LocalDevice]] = {}


def local_device(backend_name: str, isa_circuit: QuantumCircuit, backend=None) -> LocalDevice:
    """The cached :class:`LocalDevice` of an ISA circuit (built once per circuit object)."""
    key = (backend_name, id(isa_circuit))
    hit = _LOCAL_DEVICES.get(key)
    if hit is None or hit[0] is not isa_circuit:
        if len(_LOCAL_DEVICES) > 16:
            _LOCAL_DEVICES.clear()
        hit = _LOCAL_DEVICES[key] = (isa_circuit, LocalDevice(backend_name, isa_circuit, backend))
    return hit[1]


def submit_pub(mode, options: RuntimeOptions, local: bool, isa: IsaCircuit, values: np.ndarray,
               seed_simulator: int | None = None, tags: list[str] | None = None, backend_name: str | None = None,
               backend=None):
    """Submit one PUB (``isa`` with ``values``) through ``options.primitive``; returns the job.

    Offline (``local``) the executor path runs on the :class:`LocalDevice` of the backend
    (``backend_name``, or ``backend`` when it is not a fake backend by name); the legacy path on
    the runtime's local testing mode, whose "no effect" warnings are expected and silenced (the
    record lists the ignored options)."""
    if options.primitive == "executor":
        require_executor()
        from qhybrid.quantum.mitigation import submit as executor_submit

        opts = options if not (local and options.dd) else options.replace(dd=False)
        if local:
            device = local_device(backend_name or "", isa.circuit, backend)
            mode, pub = device.simulator, device.pub(isa, values)
        else:
            pub = isa.pub(values)
        return executor_submit(mode, opts.executor_options(seed_simulator if local else None, None if local else tags),
                               pub)
    estimator = estimator_for(mode, options, local, seed_simulator, tags)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*no effect in local testing mode.*")
        return estimator.run([isa.pub(values)])


# --- the estimator behind the ibm: target ------------------------------------------------------
Executor = Callable[[IsaCircuit, np.ndarray], np.ndarray]


class RuntimeEstimator(BaseEstimatorV2):
    """``BaseEstimatorV2`` that an ``EstimatorQNN`` calls; every QNN call becomes one runtime job.

    ``executor(isa, values) -> evs (K, n)`` does the submission; the default submits in job mode
    and waits. :mod:`qhybrid.workflows.jobs` sets its own for each denoiser call: one that only
    notes the PUB, or one that answers with a job's stored result (see that module).
    """

    def __init__(self, backend_name: str, options: RuntimeOptions | None = None, executor: Executor | None = None,
                 backend=None):
        self.backend_name = backend_name
        # any other BackendV2 object (``backend=``) runs in local testing mode too
        self.local = is_local(backend_name) or backend is not None
        self.options = options or RuntimeOptions()
        self.backend = backend if backend is not None else get_backend(backend_name)
        self.executor = executor or self._submit_and_wait
        self._isa: dict[int, tuple[QuantumCircuit, IsaCircuit]] = {}
        self.jobs: list[str] = []

    def isa(self, circuit: QuantumCircuit, observables) -> IsaCircuit:
        """The ISA form of ``circuit`` (transpiled once; observables mapped per call)."""
        hit = self._isa.get(id(circuit))
        if hit is None or hit[0] is not circuit:
            transpiled = IsaCircuit.transpile(circuit, [], self.backend, self.options.optimization_level,
                                              self.options.seed_transpiler)
            hit = (circuit, transpiled)
            self._isa[id(circuit)] = hit
        return IsaCircuit(hit[1].circuit, [IsaCircuit.map(hit[1].circuit, o) for o in observables])

    def use_isa(self, circuit: QuantumCircuit, isa_circuit: QuantumCircuit) -> None:
        """Use a stored ISA circuit (a job record's) instead of transpiling again."""
        self._isa[id(circuit)] = (circuit, IsaCircuit(isa_circuit))

    def _submit_and_wait(self, isa: IsaCircuit, values: np.ndarray) -> np.ndarray:
        job = submit_pub(self.backend, self.options, self.local, isa, values, backend_name=self.backend_name,
                         backend=None if is_local(self.backend_name) else self.backend)
        self.jobs.append(job.job_id())
        try:
            result = job.result()
        except Exception as exc:  # noqa: BLE001
            raise RuntimeTargetError(f"job {job.job_id()} on {self.backend_name} failed: "
                                     f"{one_line(exc, with_type=True, limit=300)}") from None
        return evs_table(result, len(isa.observables), len(values))

    def run(self, pubs, *, precision: float | None = None):
        # precision is ignored: the number of shots is a RuntimeOptions setting
        return run_inline(self._run, pubs, None, default_precision=None)

    def _run(self, pubs):
        groups, prepared = group_pubs(pubs)
        for group in groups:
            isa = self.isa(group.circuit, group.observables)
            values = isa.values(group.circuit, group.values)
            group.table = np.asarray(self.executor(isa, values)).T  # (rows, K)
            if self.options.primitive == "executor":
                # mitigated estimates (ZNE above all) can leave the observables' range: clipped, as
                # the fake: target does (legacy-path records replay as they were recorded)
                group.table, group.clipped = clip_to_spectrum(group.table, group.observables)
        results = []
        for entry in prepared:
            evs = pub_evs(entry)
            stds = np.sqrt(np.clip(1 - evs**2, 0, None) / self.options.shots)
            results.append(PubResult(DataBin(evs=evs, stds=stds, shape=evs.shape), metadata={
                "shots": self.options.shots, "backend": self.backend_name, "local": self.local,
                "primitive": self.options.primitive, "clipped_values": entry[1].clipped}))
        return PrimitiveResult(results, metadata={"version": 2})
