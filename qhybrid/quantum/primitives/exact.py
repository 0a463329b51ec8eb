"""The ``ideal`` target: exact, batched statevector simulation in PyTorch behind Qiskit's interfaces.

Why this exists: qiskit-machine-learning's defaults (``StatevectorEstimator`` plus parameter-shift
gradients, one PUB per shifted circuit) need ~100 s for one forward+backward pass of an 8-qubit
block at batch 64. Here a circuit is compiled once (:mod:`~qhybrid.quantum.primitives.compiled`)
and each call runs on one of two exact paths, whichever is cheaper for its size:

* **gate by gate** on every row of the batch, with adjoint gradients;
* **fused** (:mod:`~qhybrid.quantum.primitives.fused`): parameter columns that are the same in
  every row (an ``EstimatorQNN``'s weights) make runs of gates one cached matrix, applied to the
  whole batch by one product; the weights' gradient is formed summed over rows.

:class:`ExactEstimator` implements Qiskit's ``BaseEstimatorV2`` and :class:`ExactEstimatorGradient`
qiskit-machine-learning's ``BaseEstimatorGradient``, so an ``EstimatorQNN`` built on them is an
ordinary Qiskit object.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch
from qiskit.circuit import QuantumCircuit
from qiskit.primitives import (
    BaseEstimatorV2,
    DataBin,
    EstimatorPub,
    PrimitiveResult,
    PubResult,
)
from qiskit.providers import Options
from qiskit.quantum_info import SparsePauliOp
from qiskit_machine_learning.gradients import (
    BaseEstimatorGradient,
    EstimatorGradientResult,
)

from qhybrid.quantum.primitives.compiled import (  # noqa: F401 - re-exported: the ideal target's API
    MAX_IDEAL_QUBITS,
    CompiledCircuit,
    CompiledObservables,
    UnsupportedCircuitError,
    shared_columns,
)
from qhybrid.quantum.primitives.fused import FUSION_MODES, PRECISIONS, choose_path
from qhybrid.quantum.primitives.pubs import (
    DoneJob,
    as_sparse_pauli,
    group_pubs,
    pub_evs,
    run_inline,
)


# ---------------------------------------------------------------------------------------------
# caches shared by the estimator and its gradient
# ---------------------------------------------------------------------------------------------
class _Cache:
    """Compiled circuits keyed by object identity (the cache keeps the circuit alive, so an id is
    never reused while cached) plus a cheap mutation check; compiled observables by content."""

    def __init__(self, size: int = 32):
        self.size = size
        self.circuits: OrderedDict[int, tuple[QuantumCircuit, int, CompiledCircuit]] = OrderedDict()
        self.observables: OrderedDict[tuple, CompiledObservables] = OrderedDict()

    def circuit(self, circuit: QuantumCircuit) -> CompiledCircuit:
        key = id(circuit)
        hit = self.circuits.get(key)
        stamp = len(circuit.data) * 1000003 + circuit.num_parameters
        if hit is not None and hit[0] is circuit and hit[1] == stamp:
            self.circuits.move_to_end(key)
            return hit[2]
        compiled = CompiledCircuit(circuit)
        self.circuits[key] = (circuit, stamp, compiled)
        if len(self.circuits) > self.size:
            self.circuits.popitem(last=False)
        return compiled

    def observable_set(self, observables: Sequence[SparsePauliOp], compiled: CompiledCircuit):
        key = (compiled.num_qubits, compiled.dtype) + tuple(_observable_key(op) for op in observables)
        hit = self.observables.get(key)
        if hit is None:
            hit = CompiledObservables(observables, compiled.num_qubits, compiled.dtype)
            self.observables[key] = hit
            if len(self.observables) > 4 * self.size:
                self.observables.popitem(last=False)
        return hit


def _observable_key(op: SparsePauliOp) -> tuple:
    """Content key of an observable: Pauli bit arrays, phases and coefficients (cheaper than
    labels, which cost ~0.1 ms per observable and call)."""
    paulis = op.paulis
    return (paulis.z.tobytes(), paulis.x.tobytes(), paulis.phase.tobytes(), paulis.z.shape,
            np.asarray(op.coeffs).tobytes())


class ExactEstimator(BaseEstimatorV2):
    """Exact expectation values with Qiskit's ``BaseEstimatorV2`` interface.

    PUBs with parameter-value arrays and observable arrays broadcast as in Qiskit. ``precision``
    is accepted and ignored: results are exact, ``stds`` are zero and each result's metadata says
    ``exact: True``. PUBs that share a circuit object and parameter values share one simulation
    (an ``EstimatorQNN`` sends one PUB per observable); the grouping is
    :func:`~qhybrid.quantum.primitives.pubs.group_pubs`, the same as the other targets'.
    ``run`` simulates before it returns (a :class:`~qhybrid.quantum.primitives.pubs.DoneJob`).

    Args:
        fusion: ``"auto"`` (default) picks per call between gate-by-gate simulation and the
            fused path of :mod:`~qhybrid.quantum.primitives.fused` (columns equal in every row,
            such as broadcast weights, become cached matrices); ``"always"``/``"never"`` force one.
            Each result's metadata names the path taken (``"path"``).
        simulation_precision: ``"float64"`` (default) or ``"float32"``: the dtype of the fused
            path's matrix products (the gate-by-gate path is always float64).
        shots: None (default): exact values. An integer: the values a noiseless device would
            report from that many shots, so that a noisy target's error can be set against the
            part shot noise alone explains (the *shot-noise floor*). Diagonal (Z-type) observables
            are estimated from one multinomial draw of the measured bit strings per row, as the
            ``fake:`` target's counts path does; others get Gaussian noise of variance
            ``(1 - <O>^2) / shots``. Forward values only: gradients stay exact.
        seed: seed of those draws (None: fresh entropy).
    """

    def __init__(self, cache: _Cache | None = None, *, fusion: str = "auto",
                 simulation_precision: str = "float64", shots: int | None = None, seed: int | None = None):
        if shots is not None and (isinstance(shots, bool) or not isinstance(shots, (int, np.integer)) or shots < 1):
            raise ValueError(f"shots must be None (exact) or a positive integer, got {shots!r}")
        if fusion not in FUSION_MODES:
            raise ValueError(f"fusion must be one of {', '.join(FUSION_MODES)}, got {fusion!r}")
        if simulation_precision not in PRECISIONS:
            raise ValueError(f"simulation_precision must be one of {', '.join(PRECISIONS)}, "
                             f"got {simulation_precision!r}")
        self._cache = cache or _Cache()
        self.fusion = fusion
        self.simulation_precision = simulation_precision
        self.shots = None if shots is None else int(shots)
        self._rng = np.random.default_rng(seed)
        self.options = Options()

    def statevector(self, compiled: "CompiledCircuit", values: np.ndarray):
        """Final states for parameter rows ``values``, on the path :func:`choose_path` picks.
        Returns ``(states, PathChoice)``."""
        tensor = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float64))
        choice, program = choose_path(compiled, tensor, shared_columns(values), fusion=self.fusion,
                                      precision=self.simulation_precision)
        if program is not None:
            return program.statevector(tensor), choice
        return compiled.statevector(tensor), choice

    def run(self, pubs, *, precision: float | None = None) -> DoneJob:
        return run_inline(self._run, pubs, precision)

    def _run(self, pubs: list[EstimatorPub]) -> PrimitiveResult:
        groups, prepared = group_pubs(pubs)
        for group in groups:
            compiled = self._cache.circuit(group.circuit)
            psi, group.path = self.statevector(compiled, group.values)
            # all of the group's observables in one product (an EstimatorQNN's one PUB per
            # observable would otherwise read the states once per observable)
            observables = self._cache.observable_set(group.observables, compiled)
            with torch.inference_mode():
                group.table = observables.expectation(psi).numpy()
                if self.shots is not None:
                    group.table = self._with_shot_noise(psi, observables, group.table)
        results = []
        for entry in prepared:
            pub = entry[0]
            evs = pub_evs(entry)
            stds = np.zeros_like(evs) if self.shots is None else np.sqrt(np.clip(1 - evs**2, 0, None) / self.shots)
            data = DataBin(evs=evs, stds=stds, shape=evs.shape)
            metadata = {
                "target_precision": pub.precision,
                "exact": self.shots is None,
                "shots": self.shots,
                "path": entry[1].path.path,
                "circuit_metadata": pub.circuit.metadata,
            }
            results.append(PubResult(data, metadata=metadata))
        return PrimitiveResult(results, metadata={"version": 2, "simulator": "qhybrid.exact"})


    def _with_shot_noise(self, psi: torch.Tensor, observables: CompiledObservables, exact: np.ndarray) -> np.ndarray:
        """``exact`` (rows, K) as ``self.shots`` noiseless shots would estimate it (see the class)."""
        if observables.offdiag:  # not measurable from one set of Z-basis counts
            std = np.sqrt(np.clip(1 - exact**2, 0, None) / self.shots)
            noisy = exact + self._rng.standard_normal(exact.shape) * std
            return np.clip(noisy, -observables.bound, observables.bound)  # as a measurement would be
        probs = (psi.abs() ** 2).to(torch.float64).numpy()
        probs /= probs.sum(axis=1, keepdims=True)
        counts = self._rng.multinomial(self.shots, probs)
        return (counts / self.shots) @ observables.diag.numpy()


class ExactEstimatorGradient(BaseEstimatorGradient):
    """Exact gradients by adjoint differentiation, as a qiskit-machine-learning estimator gradient.

    All rows that share a circuit are handled in one batched sweep; repeated parameter rows (an
    ``EstimatorQNN`` sends each sample once per observable) are simulated once. :meth:`vjp` gives
    the cotangent-weighted gradient directly, which is what a PyTorch backward pass needs.
    """

    def __init__(self, estimator: ExactEstimator | None = None):
        estimator = estimator or ExactEstimator()
        super().__init__(estimator)
        self._cache = getattr(estimator, "_cache", None) or _Cache()
        self.fusion = getattr(estimator, "fusion", "auto")  # follow the estimator's settings
        self.simulation_precision = getattr(estimator, "simulation_precision", "float64")

    def run(self, circuits, observables, parameter_values, parameters=None, **options):
        """As :meth:`BaseEstimatorGradient.run`: gradients of every row's expectation value with
        respect to ``parameters[i]`` (all circuit parameters when ``None``). Options are
        recorded only: the result is exact. Computed before it returns, as a finished
        :class:`~qhybrid.quantum.primitives.pubs.DoneJob` (Qiskit's job interface)."""
        if isinstance(circuits, QuantumCircuit):
            circuits = (circuits,)
        if isinstance(observables, (SparsePauliOp, str)):
            observables = (observables,)
        rows = len(circuits)
        if len(observables) != rows or len(parameter_values) != rows:
            raise ValueError(
                f"circuits ({rows}), observables ({len(observables)}) and parameter values "
                f"({len(parameter_values)}) must have the same length"
            )
        if parameters is not None and len(parameters) != rows:
            raise ValueError(f"parameters has {len(parameters)} entries, expected {rows}")
        return DoneJob(self._run, circuits, observables, parameter_values, parameters, **options)

    def _run(self, circuits, observables, parameter_values, parameters, **options):
        rows = len(circuits)
        try:
            values_all = np.asarray(parameter_values, dtype=np.float64)
        except ValueError:  # ragged: rows of circuits with different parameter counts
            values_all = None
        if values_all is not None and values_all.ndim != 2:
            values_all = None
        gradients: list[np.ndarray | None] = [None] * rows
        groups: dict[int, list[int]] = {}
        for i, circuit in enumerate(circuits):
            groups.setdefault(id(circuit), []).append(i)
        metadata: list[dict] = [None] * rows  # type: ignore[list-item]
        for members in groups.values():
            circuit = circuits[members[0]]
            compiled = self._cache.circuit(circuit)
            num_params = len(compiled.parameters)
            if not num_params:
                raise ValueError("the circuit has no parameters to differentiate")
            idx = np.asarray(members)
            if values_all is not None and len(members) == rows:
                values = values_all
            else:
                values = np.asarray([parameter_values[i] for i in members], dtype=np.float64)
            if values.ndim != 2 or values.shape[1] != num_params:
                raise ValueError(
                    f"parameter values have shape {values.shape}, the circuit has "
                    f"{num_params} parameters"
                )
            # distinct parameter rows and distinct observables of this group
            uniq_values, u_idx = np.unique(values, axis=0, return_inverse=True)
            obs_key: dict[int, int] = {}
            uniq_obs = []
            k_idx = np.empty(len(members), dtype=np.int64)
            for j, i in enumerate(members):
                oid = id(observables[i])
                if oid not in obs_key:
                    obs_key[oid] = len(uniq_obs)
                    obs = as_sparse_pauli(observables[i], compiled.num_qubits)
                    if obs.num_qubits != compiled.num_qubits:
                        raise ValueError(
                            f"observable {i} acts on {obs.num_qubits} qubits, its circuit has "
                            f"{compiled.num_qubits}"
                        )
                    uniq_obs.append(obs)
                k_idx[j] = obs_key[oid]
            compiled_obs = self._cache.observable_set(uniq_obs, compiled)
            _, jac = compiled.jacobian(torch.from_numpy(uniq_values), compiled_obs)
            jac = jac.numpy()[u_idx.reshape(-1), k_idx]  # (members, num_params)
            all_params = circuit.parameters
            if parameters is None:
                for j, i in enumerate(idx):
                    gradients[i] = jac[j]
                    metadata[i] = {"parameters": all_params}
                continue
            position = {p: c for c, p in enumerate(compiled.parameters)}
            last, columns = None, None
            for j, i in enumerate(idx):
                params = parameters[i] if parameters[i] is not None else all_params
                if params is not last:
                    missing = [p for p in params if p not in position]
                    if missing:
                        raise ValueError(
                            f"row {i}: parameters {missing} are not in the circuit"
                        )
                    columns = np.fromiter((position[p] for p in params), dtype=np.int64)
                    last = params
                gradients[i] = jac[j, columns]
                metadata[i] = {"parameters": params}
        return EstimatorGradientResult(
            gradients=gradients, metadata=metadata, options=Options(**options)
        )

    def shared_vjp(self, circuit: QuantumCircuit, observables, parameter_values, cotangent,
                   shared) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`vjp` for a batch whose ``shared`` columns (a boolean mask over
        ``circuit.parameters``, e.g. an ``EstimatorQNN``'s broadcast weights) are equal in every
        row, where a PyTorch backward needs their gradient summed over rows only. Returns
        ``(per_row (rows, P), summed (P,))``, each zero in the other's columns. Large batches
        take the fused path (:mod:`~qhybrid.quantum.primitives.fused`), which never forms the
        per-row gradients of shared columns."""
        compiled = self._cache.circuit(circuit)
        obs = [as_sparse_pauli(o, compiled.num_qubits) for o in observables]
        compiled_obs = self._cache.observable_set(obs, compiled)
        values = torch.as_tensor(np.asarray(parameter_values, dtype=np.float64))
        shared = np.asarray(shared, dtype=bool)
        _, program = choose_path(compiled, values, shared, gradient=True, fusion=self.fusion,
                                 precision=self.simulation_precision)
        if program is not None:
            per_row, summed = program.vjp(values, compiled_obs, cotangent)
            return per_row.numpy(), summed.numpy()
        per_row = compiled.vjp(values, compiled_obs, cotangent).numpy()
        summed = np.where(shared, per_row.sum(axis=0), 0.0)
        per_row[:, shared] = 0.0
        return per_row, summed

    def vjp(self, circuit: QuantumCircuit, observables, parameter_values, cotangent) -> np.ndarray:
        """``sum_k cotangent[r, k] * d<O_k>/d values[r]`` for each row r: (rows, num_parameters).

        ``parameter_values`` is (rows, num_parameters) in ``circuit.parameters`` order and
        ``cotangent`` (rows, len(observables)).
        """
        compiled = self._cache.circuit(circuit)
        obs = [as_sparse_pauli(o, compiled.num_qubits) for o in observables]
        compiled_obs = self._cache.observable_set(obs, compiled)
        values = torch.as_tensor(np.asarray(parameter_values, dtype=np.float64))
        return compiled.vjp(values, compiled_obs, cotangent).numpy()
