"""The ``fake:<backend>`` target: Qiskit Aer with an IBM fake backend's noise, on ISA circuits.

What happens to a circuit, once per (circuit, backend, optimisation level, seed):

1. it is transpiled for the backend with ``generate_preset_pass_manager`` (an ISA circuit: only
   the backend's basis gates, only its coupled pairs); observables are mapped with
   ``apply_layout``;
2. for simulation it is compacted to the physical qubits it touches, and the backend's noise
   model is restricted to those qubits (relabelled), so Aer simulates 8 qubits, not 133, with the
   same gate and readout errors (about 5-7x faster for an 8-qubit block on a 127-133 qubit device;
   measured in BENCHMARKS.md);
3. it is run with the noise model, with shots. Two evaluation paths:

   * ``counts`` (default when every observable is diagonal in Z): measure all qubits once and
     compute every expectation value from the same counts: one execution per parameter row
     instead of one per observable; optional client-side readout-error mitigation (tensored,
     per-qubit calibration, exact inversion) because local simulation ignores the runtime's
     mitigation options;
   * ``estimator``: Qiskit Aer's ``EstimatorV2`` on the compact circuit and mapped observables
     (exact noisy expectation values plus Gaussian noise of size 1/sqrt(shots)).

Small circuits use Aer's density-matrix method: one simulation per parameter row, whatever the
number of shots.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister
from qiskit.primitives import BaseEstimatorV2, DataBin, PrimitiveResult, PubResult
from qiskit.quantum_info import SparsePauliOp
from qiskit.transpiler import CouplingMap, generate_preset_pass_manager

from qhybrid.errors import InputError
from qhybrid.quantum.mitigation import Mitigation
from qhybrid.quantum.primitives.compiled import CompiledObservables
from qhybrid.quantum.primitives.pubs import (
    clip_to_spectrum,
    group_pubs,
    measurement_bases,
    pub_evs,
    run_inline,
)

COUNTS, ESTIMATOR = "counts", "estimator"
DENSITY_MATRIX_MAX_QUBITS = 12
#: Aer runs the parameter bindings of one execution (every chain x position of a sampling step)
#: in parallel on all cores; by default it runs them one after another, and a small circuit's
#: density matrix is too small for Aer to parallelise inside (2.4x on 2 cores for 256 bindings,
#: BENCHMARKS.md). Seeds are per binding, so results do not depend on the thread count.
PARALLEL_BINDINGS = {"max_parallel_experiments": 0}


class NoisyTargetError(InputError):
    """A fake backend, snapshot or option that cannot be used (a ValueError)."""


# --- backends -----------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _fake_backend_classes() -> dict[str, type]:
    import qiskit_ibm_runtime.fake_provider as fp

    classes = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for attr in dir(fp):
            cls = getattr(fp, attr)
            if not (attr.startswith("Fake") and isinstance(cls, type)) or attr in (
                    "FakeProviderForBackendV2", "FakeFractionalBackend"):
                continue
            try:
                name = cls.backend_name if hasattr(cls, "backend_name") else None
                if not isinstance(name, str):
                    name = cls().name
            except Exception:  # noqa: BLE001 - skip anything that is not a plain fake backend
                continue
            classes[name] = cls
    return classes


def fake_backend_names() -> list[str]:
    return sorted(_fake_backend_classes())


@lru_cache(maxsize=8)
def fake_backend(name: str):
    """A ``qiskit_ibm_runtime.fake_provider`` backend by name (``fake_torino``, ``FakeTorino``...)."""
    key = name.strip()
    if not key.lower().startswith("fake"):
        key = "fake_" + key
    classes = _fake_backend_classes()
    lookup = {n.lower(): n for n in classes} | {cls.__name__.lower(): n for n, cls in classes.items()}
    canonical = lookup.get(key.lower()) or lookup.get(key.lower().replace("-", "_"))
    if canonical is None:
        raise NoisyTargetError(f"unknown fake backend {name!r}; valid names: {', '.join(fake_backend_names())}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return classes[canonical]()


# --- noise models -------------------------------------------------------------------------------
def noise_model_from_dict(data: dict):
    """``NoiseModel.from_dict`` (deprecated in qiskit-aer 0.15 but present in the pinned 0.18.2; the
    snapshot round-trip test guards it)."""
    from qiskit_aer.noise import NoiseModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return NoiseModel.from_dict(data)


def encode_noise(value):
    """JSON-safe copy of a ``NoiseModel.to_dict()`` (complex arrays as {"re", "im", "shape"})."""
    if isinstance(value, dict):
        return {k: encode_noise(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode_noise(v) for v in value]
    if isinstance(value, np.ndarray):
        arr = np.asarray(value, dtype=complex)
        return {"__ndarray__": True, "shape": list(arr.shape), "re": arr.real.ravel().tolist(),
                "im": arr.imag.ravel().tolist()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def decode_noise(value):
    """Inverse of :func:`encode_noise`."""
    if isinstance(value, dict):
        if value.get("__ndarray__"):
            return (np.asarray(value["re"]) + 1j * np.asarray(value["im"])).reshape(value["shape"])
        return {k: decode_noise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_noise(v) for v in value]
    return value


def restrict_noise(noise: dict, qubits: list[int]) -> dict:
    """The part of a noise-model dict acting on ``qubits``, relabelled 0..len-1 in that order."""
    index = {q: i for i, q in enumerate(qubits)}
    errors = []
    for err in noise.get("errors", []):
        gate_qubits = err.get("gate_qubits")
        if gate_qubits is None:  # an all-qubit error
            errors.append(err)
            continue
        kept = [[index[q] for q in qs] for qs in gate_qubits if all(q in index for q in qs)]
        if kept:
            errors.append({**err, "gate_qubits": kept})
    return {**noise, "errors": errors}


@dataclass
class NoiseSource:
    """Everything the fake target needs from a backend or from a snapshot file.

    The transpiler needs a ``Target`` (gate and readout errors, durations) for a noise-aware
    layout: the live fake backend's, or one rebuilt from a version-2 snapshot's calibration
    (``target``). A version-1 snapshot has neither, and transpiles with its coupling map and basis
    gates only, so its layout can differ from the live backend's.
    """

    name: str
    num_qubits: int
    basis_gates: list[str]
    coupling_map: list[list[int]]
    noise: dict
    backend: object | None = None  # the live fake backend (noise-aware layout); None for snapshots
    calibration_date: str | None = None
    target: object | None = None  # a snapshot's rebuilt qiskit Target (noise-aware layout), or None
    calibration: dict | None = None  # qhybrid.quantum.calibration.calibration_of's JSON form, or None
    origin: dict | None = None  # a snapshot's file, format version and creation; None for a live backend

    @property
    def layout_target(self):
        """The ``Target`` the transpiler and duration estimates use; None for a version-1 snapshot."""
        return self.backend.target if self.backend is not None else self.target

    def pass_manager(self, optimization_level: int, seed: int | None):
        if self.backend is not None:
            return generate_preset_pass_manager(optimization_level=optimization_level, backend=self.backend,
                                                seed_transpiler=seed)
        if self.target is not None:
            return generate_preset_pass_manager(optimization_level=optimization_level, target=self.target,
                                                seed_transpiler=seed)
        return generate_preset_pass_manager(optimization_level=optimization_level, basis_gates=self.basis_gates,
                                            coupling_map=CouplingMap(self.coupling_map), seed_transpiler=seed)


@lru_cache(maxsize=8)
def noise_source_for_backend(name: str) -> NoiseSource:
    from qiskit_aer.noise import NoiseModel

    from qhybrid.quantum.calibration import calibration_date, calibration_of

    backend = fake_backend(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = NoiseModel.from_backend(backend)
    coupling = [list(edge) for edge in (backend.coupling_map.get_edges() if backend.coupling_map else [])]
    basis = [op for op in backend.operation_names
             if op not in ("for_loop", "if_else", "switch_case", "while_loop", "delay", "reset", "measure")]
    date = calibration_date(backend)
    noise = with_asymmetric_readout(model.to_dict(), backend)
    return NoiseSource(backend.name, backend.num_qubits, basis, coupling, noise, backend, date,
                       calibration=calibration_of(backend, date))


def with_asymmetric_readout(noise: dict, backend) -> dict:
    """``noise`` with each qubit's readout error as the device reports it, P(0|1) != P(1|0).

    Aer's ``NoiseModel.from_backend`` builds one symmetric readout error per qubit from the
    Target's single ``measure`` error (their average); the backends' properties keep both
    probabilities (fake_fez qubit 0: P(0|1) = 1.76%, P(1|0) = 0.54%), and a decay-dominated
    readout is that lopsided on real devices. qiskit-ibm-runtime's local testing mode simulates
    the asymmetric errors, so without this the two offline paths disagreed by up to 0.05 in the
    block's outputs. Qubits without both probabilities keep Aer's symmetric error."""
    try:
        props = backend.properties()
    except Exception:  # noqa: BLE001 - a backend without (readable) properties: Aer's errors stay
        props = None
    if props is None:
        return noise
    errors = []
    for err in noise.get("errors", []):
        if err.get("type") == "roerror" and len(err.get("gate_qubits") or []) == 1 and len(err["gate_qubits"][0]) == 1:
            qubit = err["gate_qubits"][0][0]
            try:
                p01 = props.qubit_property(qubit, "prob_meas0_prep1")[0]  # P(measure 0 | prepared 1)
                p10 = props.qubit_property(qubit, "prob_meas1_prep0")[0]  # P(measure 1 | prepared 0)
            except Exception:  # noqa: BLE001 - BackendPropertyError: not reported for this qubit
                errors.append(err)
                continue
            # rows: prepared state; columns: measured outcome (Aer's ReadoutError convention)
            err = {**err, "probabilities": [[1 - p10, p10], [p01, 1 - p01]]}
        errors.append(err)
    return {**noise, "errors": errors}


def local_simulator(noise, num_qubits: int):
    """The Aer simulator the executor runs on offline: the (compacted) device's noise model, the
    density-matrix method for small circuits (every shot of a binding from one simulation), and
    the bindings of one execution in parallel (see :data:`PARALLEL_BINDINGS`)."""
    from qiskit_aer import AerSimulator

    from qhybrid.quantum.primitives.aer import (
        DENSITY_MATRIX_MAX_QUBITS,
        PARALLEL_BINDINGS,
        noise_model_from_dict,
    )

    method = "density_matrix" if num_qubits <= DENSITY_MATRIX_MAX_QUBITS else "automatic"
    model = noise_model_from_dict(noise) if isinstance(noise, dict) else noise
    return AerSimulator(noise_model=model, method=method, **PARALLEL_BINDINGS)


# --- transpiled programs ------------------------------------------------------------------------
class IsaProgram:
    """One circuit transpiled for one backend, plus its compact simulation form."""

    def __init__(self, circuit: QuantumCircuit, source: NoiseSource, optimization_level: int, seed: int | None):
        if circuit.num_qubits > source.num_qubits:
            raise NoisyTargetError(
                f"the circuit has {circuit.num_qubits} qubits but backend {source.name} has only "
                f"{source.num_qubits}; use a smaller circuit or a larger backend"
            )
        self.circuit = circuit
        self.source = source
        self.isa = source.pass_manager(optimization_level, seed).run(circuit)
        layout = self.isa.layout
        self.physical = list(layout.final_index_layout()) if layout is not None else list(range(circuit.num_qubits))
        compact, self.active = compact_circuit(self.isa, self.physical)
        qr = compact.qregs[0]
        index = {q: i for i, q in enumerate(self.active)}
        self.compact = compact
        measured = compact.copy()
        creg = ClassicalRegister(circuit.num_qubits, "c")
        measured.add_register(creg)
        for v, p in enumerate(self.physical):
            measured.measure(qr[index[p]], creg[v])
        self.measured = measured
        self.compact_noise = noise_model_from_dict(restrict_noise(source.noise, self.active))
        self._calibration: dict[int, np.ndarray] = {}
        self.simulator = None  # built by the estimator on first use
        self.executor_simulator = None  # the same noise for the runtime's executor (built on first use)

    def map_observable(self, observable: SparsePauliOp) -> SparsePauliOp:
        """Observable on the logical qubits -> ISA layout (apply_layout) -> compact qubits."""
        mapped = observable.apply_layout(self.isa.layout) if self.isa.layout is not None else observable
        return SparsePauliOp(take_qubits(mapped, self.active), mapped.coeffs)

    def binds(self, values: np.ndarray) -> list[dict]:
        """Parameter values (rows, P) in ``circuit.parameters`` order -> Aer parameter_binds."""
        by_name = {p.name: k for k, p in enumerate(self.circuit.parameters)}
        return [{p: values[:, by_name[p.name]].tolist() for p in self.isa.parameters}]


def compact_circuit(isa: QuantumCircuit, physical) -> tuple[QuantumCircuit, list[int]]:
    """``isa`` on only the physical qubits it touches (and the layout's ``physical`` ones), in
    ascending order, barriers dropped: the circuit a simulator can hold; returns it and those
    qubits (compact qubit i is physical qubit ``active[i]``)."""
    touched = {isa.find_bit(q).index for ins in isa.data for q in ins.qubits}
    active = sorted(touched | set(physical))
    index = {q: i for i, q in enumerate(active)}
    qr = QuantumRegister(len(active), "q")
    compact = QuantumCircuit(qr, global_phase=isa.global_phase)
    for ins in isa.data:
        if ins.operation.name == "barrier":
            continue
        compact.append(ins.operation, [qr[index[isa.find_bit(q).index]] for q in ins.qubits])
    return compact, active


def take_qubits(op: SparsePauliOp, qubits) -> list[str]:
    """Labels of ``op`` restricted to ``qubits`` (the others must be identities)."""
    labels = []
    for label in op.paulis.to_labels():
        phase = ""
        while label and label[0] in "-i":
            phase, label = phase + label[0], label[1:]
        rev = label[::-1]  # rev[q] is qubit q
        labels.append(phase + "".join(rev[q] for q in qubits)[::-1])
    return labels


# --- the estimator ------------------------------------------------------------------------------
class NoisyEstimator(BaseEstimatorV2):
    """``BaseEstimatorV2`` on Aer with a fake backend's noise (see the module docstring)."""

    def __init__(self, source: NoiseSource, shots: int = 1024, method: str = COUNTS, mitigation=None,
                 optimization_level: int = 2, seed_transpiler: int | None = 0, seed: int | None = None,
                 calibration_shots: int = 8192):
        if isinstance(shots, bool) or not isinstance(shots, (int, np.integer)) or shots <= 0:
            raise NoisyTargetError(f"shots must be a positive integer, got {shots!r}")
        if method not in (COUNTS, ESTIMATOR):
            raise NoisyTargetError(f"unknown method {method!r}; allowed: {COUNTS}, {ESTIMATOR}")
        if optimization_level not in (0, 1, 2, 3):
            raise NoisyTargetError(f"optimization level must be 0-3, got {optimization_level!r}")
        self.source = source
        self.shots = int(shots)
        self.method = method
        self.mitigation = Mitigation.of(mitigation)
        self.optimization_level = optimization_level
        self.seed_transpiler = seed_transpiler
        self.seed = seed
        self.calibration_shots = calibration_shots
        self._programs: OrderedDict[int, tuple[QuantumCircuit, IsaProgram]] = OrderedDict()
        self._rng = np.random.default_rng(seed)
        self.executions = 0  # primitive executions (one per PUB group)
        self.circuit_executions = 0  # circuits a device would run (bindings x randomisations x factors)
        self.shots_run = 0  # shots a device would take over all of them

    def program(self, circuit: QuantumCircuit) -> IsaProgram:
        """The cached ISA program of ``circuit`` (transpiled once)."""
        hit = self._programs.get(id(circuit))
        if hit is not None and hit[0] is circuit:
            return hit[1]
        program = IsaProgram(circuit, self.source, self.optimization_level, self.seed_transpiler)
        self._programs[id(circuit)] = (circuit, program)
        if len(self._programs) > 16:
            self._programs.popitem(last=False)
        return program

    def _simulator(self, program: IsaProgram):
        """The program's Aer simulator, built once (the seed is given per run)."""
        if program.simulator is None:
            from qiskit_aer import AerSimulator

            method = "density_matrix" if len(program.active) <= DENSITY_MATRIX_MAX_QUBITS else "automatic"
            program.simulator = AerSimulator(noise_model=program.compact_noise, method=method,
                                             **PARALLEL_BINDINGS)
        return program.simulator

    def _seed(self) -> int:
        return int(self._rng.integers(2**31))

    def run(self, pubs, *, precision: float | None = None):
        return run_inline(self._run, pubs, precision)

    def _run(self, pubs):
        groups, prepared = group_pubs(pubs)
        for group in groups:
            program = self.program(group.circuit)
            diagonal = all(not np.any(o.paulis.x) for o in group.observables)
            group.method = self.method if diagonal else ESTIMATOR
            if self.mitigation.uses_executor:
                group.method = "executor"
                group.table = self._executor_values(program, group.values, group.observables)
            elif group.method == COUNTS:
                probs = self._probabilities(program, group.values)
                group.table = _z_expectations(probs, group.observables, group.circuit.num_qubits)
            else:
                group.table = self._estimator_values(program, group.values, group.observables)
            group.table, group.clipped = clip_to_spectrum(group.table, group.observables)
        results = []
        for entry in prepared:
            pub, group = entry[0], entry[1]
            evs = pub_evs(entry)
            stds = np.sqrt(np.clip(1 - evs**2, 0, None) / self.shots)
            results.append(PubResult(DataBin(evs=evs, stds=stds, shape=evs.shape), metadata={
                "target_precision": pub.precision, "shots": self.shots, "method": group.method,
                "backend": self.source.name, "mitigation": self.mitigation.to_dict(),
                "readout_mitigation": self.mitigation.kind == "readout" and group.method == COUNTS,
                "clipped_values": group.clipped, "circuit_metadata": pub.circuit.metadata}))
        return PrimitiveResult(results, metadata={"version": 2, "simulator": f"aer+{self.source.name}"})

    # -- counts path --------------------------------------------------------------------------
    def _probabilities(self, program: IsaProgram, values: np.ndarray) -> np.ndarray:
        """Measured outcome frequencies per row: (rows, 2**n) over the logical qubits."""
        n = program.circuit.num_qubits
        sim = self._simulator(program)
        if program.measured.num_parameters:
            result = sim.run(program.measured, parameter_binds=program.binds(values), shots=self.shots,
                             seed_simulator=self._seed()).result()
        else:
            result = sim.run([program.measured] * len(values), shots=self.shots, seed_simulator=self._seed()).result()
        self.executions += 1
        self._count(len(values), len(values) * self.shots)
        probs = np.zeros((len(values), 2**n))
        for r in range(len(values)):
            for key, count in result.get_counts(r).items():
                probs[r, int(key.replace(" ", ""), 2)] += count
        probs /= self.shots
        if self.mitigation.kind == "readout":
            probs = _unfold(probs, self.readout_matrices(program))
        return probs

    def readout_matrices(self, program: IsaProgram) -> np.ndarray:
        """Per logical qubit, the 2x2 assignment matrix A[measured, prepared] of its physical qubit."""
        key = self.calibration_shots
        if key in program._calibration:
            return program._calibration[key]
        n = program.circuit.num_qubits
        base = QuantumCircuit(program.measured.qubits, program.measured.clbits)
        zeros, ones = base.copy(), base.copy()
        for p in program.physical:
            ones.x(program.active.index(p))
        for circ in (zeros, ones):
            for v, p in enumerate(program.physical):
                circ.measure(program.active.index(p), v)
        sim = self._simulator(program)
        result = sim.run([zeros, ones], shots=self.calibration_shots, seed_simulator=self._seed()).result()
        self._count(2, 2 * self.calibration_shots)
        matrices = np.zeros((n, 2, 2))
        for prepared, counts in enumerate((result.get_counts(0), result.get_counts(1))):
            for outcome, count in counts.items():
                bits = int(outcome.replace(" ", ""), 2)
                for v in range(n):
                    matrices[v, (bits >> v) & 1, prepared] += count
        matrices /= self.calibration_shots
        program._calibration[key] = matrices
        return matrices

    # -- estimator path -----------------------------------------------------------------------
    def _estimator_values(self, program: IsaProgram, values: np.ndarray, observables) -> np.ndarray:
        from qiskit_aer.primitives import EstimatorV2 as AerEstimator

        method = "density_matrix" if len(program.active) <= DENSITY_MATRIX_MAX_QUBITS else "automatic"
        estimator = AerEstimator(options={
            "backend_options": {"noise_model": program.compact_noise, "method": method, **PARALLEL_BINDINGS},
            "run_options": {"seed_simulator": self._seed()},
        })
        mapped = [program.map_observable(o) for o in observables]
        compact_values = _compact_values(program, values)
        pub = (program.compact, [[m] for m in mapped], compact_values)
        result = estimator.run([pub], precision=1 / np.sqrt(self.shots)).result()[0]
        self.executions += 1
        self._count(len(values) * measurement_bases(mapped), len(values) * measurement_bases(mapped) * self.shots)
        return np.asarray(result.data.evs).reshape(len(mapped), len(values)).T

    # -- executor path: the runtime's client-side mitigation, offline --------------------------
    def _executor_values(self, program: IsaProgram, values: np.ndarray, observables) -> np.ndarray:
        """TREX, ZNE or twirling through qiskit-ibm-runtime's executor-based Estimator, run
        locally on the compact circuit with the device's (compacted) noise model: the code path
        a submission to IBM Quantum takes, minus the QPU."""
        from qhybrid.quantum.mitigation import program_cost, submit

        if program.executor_simulator is None:
            program.executor_simulator = local_simulator(program.compact_noise, len(program.active))
        mapped = [program.map_observable(o) for o in observables]
        pub = (program.compact, [[m] for m in mapped], _compact_values(program, values))
        job = submit(program.executor_simulator, self.mitigation.estimator_options(self.shots, seed_simulator=self._seed()),
                     pub)
        evs = np.asarray(job.result()[0].data.evs, dtype=np.float64).reshape(len(mapped), len(values))
        self.executions += 1
        cost = program_cost(job)
        self._count(cost.get("circuit_executions", 0), cost.get("shots", 0))
        return evs.T

    def _count(self, circuits: int, shots: int) -> None:
        self.circuit_executions += int(circuits)
        self.shots_run += int(shots)



def _compact_values(program: IsaProgram, values: np.ndarray) -> np.ndarray:
    """Reorder values from ``circuit.parameters`` order to ``compact.parameters`` order."""
    by_name = {p.name: k for k, p in enumerate(program.circuit.parameters)}
    return values[:, [by_name[p.name] for p in program.compact.parameters]]


def _z_expectations(probs: np.ndarray, observables, n: int) -> np.ndarray:
    """Expectation values of diagonal Pauli sums from (quasi-)probabilities over 2**n outcomes:
    ``probs @ diag`` with the exact target's diagonal table of the observables."""
    import torch

    diag = CompiledObservables(observables, n, torch.float64).diag.numpy()
    return probs @ diag


def _unfold(probs: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """Apply the inverse of the tensored assignment matrix to each row (quasi-probabilities)."""
    n = matrices.shape[0]
    out = probs.reshape((len(probs),) + (2,) * n)
    for v in range(n):
        inv = np.linalg.inv(matrices[v])
        axis = 1 + (n - 1 - v)  # reshape puts the most significant bit (qubit n-1) first
        out = np.moveaxis(np.tensordot(out, inv.T, axes=([axis], [0])), -1, axis)
    return out.reshape(len(probs), -1)
