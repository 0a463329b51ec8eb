"""PUB plumbing shared by qhybrid's estimators: grouping, broadcasting, inline jobs."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from functools import lru_cache

import numpy as np
from qiskit.primitives import BasePrimitiveJob, EstimatorPub
from qiskit.providers import JobStatus
from qiskit.quantum_info import Operator, SparsePauliOp

from qhybrid.errors import one_line


def broadcast_table(table: np.ndarray, param_shape: tuple, obs_shape: tuple) -> np.ndarray:
    """PUB broadcasting: ``table[row, obs]`` (flattened parameter sets x flattened observables)
    -> expectation values of the broadcast shape of ``param_shape`` and ``obs_shape``."""
    state_idx = np.arange(max(1, int(np.prod(param_shape)))).reshape(param_shape)
    obs_idx = np.arange(int(np.prod(obs_shape))).reshape(obs_shape)
    s_idx, o_idx = np.broadcast_arrays(state_idx, obs_idx)
    return np.asarray(table[s_idx, o_idx], dtype=np.float64)


class PubGroup:
    """PUBs that share one circuit object and one set of parameter rows: one execution for all
    their observables (an ``EstimatorQNN`` sends one PUB per observable)."""

    def __init__(self, circuit, values: np.ndarray):
        self.circuit = circuit
        self.values = values  # (rows, P) in ``circuit.parameters`` order
        self.observables: list[SparsePauliOp] = []
        self.table: np.ndarray | None = None  # (rows, len(observables)), filled by the estimator
        self.path = None  # how the estimator simulated it, if it says
        self.clipped = 0  # estimates the estimator clipped to the observables' range


def group_pubs(pubs) -> tuple[list[PubGroup], list[tuple]]:
    """Group coerced ``EstimatorPub`` s; returns the groups and, per PUB, how to cut its result
    back out of its group's table (see :func:`pub_evs`)."""
    groups: list[PubGroup] = []
    prepared = []
    # An EstimatorQNN sends one PUB per observable, all binding the same array: order its columns
    # once (every array stays alive until this returns, so ids are not reused meanwhile).
    ordered: dict[tuple, np.ndarray] = {}
    for pub in pubs:
        key = (id(pub.circuit), pub.parameter_values.shape,
               tuple((names, id(arr)) for names, arr in pub.parameter_values.data.items()))
        flat = ordered.get(key)
        shape = pub.parameter_values.shape
        if flat is None:
            values = pub.parameter_values.as_array(pub.circuit.parameters)
            rows = max(1, int(np.prod(shape)))
            flat = ordered[key] = values.reshape(rows, len(pub.circuit.parameters))
        obs_array = pub.observables
        obs_list = [as_sparse_pauli(obs_array[idx], pub.circuit.num_qubits) for idx in np.ndindex(*obs_array.shape)]
        group = next((g for g in groups if g.circuit is pub.circuit and g.values.shape == flat.shape
                      and (g.values is flat or np.array_equal(g.values, flat))), None)
        if group is None:
            group = PubGroup(pub.circuit, flat)
            groups.append(group)
        start = len(group.observables)
        group.observables += obs_list
        prepared.append((pub, group, start, len(obs_list), shape, obs_array.shape))
    return groups, prepared


def pub_evs(entry: tuple) -> np.ndarray:
    """The expectation values of one PUB of :func:`group_pubs`, in its broadcast shape."""
    _, group, start, count, shape, obs_shape = entry
    return broadcast_table(group.table[:, start:start + count], shape, obs_shape)


@lru_cache(maxsize=1024)
def _from_labels(items: tuple) -> SparsePauliOp:
    """A PUB's observable entry as an operator; cached, since an EstimatorQNN sends the same
    observables on every call (callers never modify the operators they get)."""
    return SparsePauliOp([label for label, _ in items], [coeff for _, coeff in items])


def as_sparse_pauli(observable, num_qubits: int) -> SparsePauliOp:
    """One entry of a PUB's ``ObservablesArray`` (or any operator) as a ``SparsePauliOp``."""
    if isinstance(observable, SparsePauliOp):
        return observable
    if isinstance(observable, dict):  # an ObservablesArray entry {label: coeff}
        return _from_labels(tuple(observable.items()))
    try:
        return SparsePauliOp(observable)
    except Exception:  # noqa: BLE001
        try:
            return SparsePauliOp.from_operator(Operator(observable))
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"cannot use {type(observable).__name__} as an observable "
                             f"({one_line(exc, with_type=True)}); give a Pauli label or a SparsePauliOp") from None


# ---------------------------------------------------------------------------------------------
# Qiskit primitive interfaces
# ---------------------------------------------------------------------------------------------
class DoneJob(BasePrimitiveJob):
    """A primitive job that ran in the caller's thread before it was handed back.

    Qiskit's reference ``PrimitiveJob`` starts a worker thread for every call, which costs more
    than simulating a small circuit exactly, and the estimators here are synchronous anyway (the
    runtime estimator waits for its IBM job itself). This implements Qiskit's public job interface
    (:class:`~qiskit.primitives.BasePrimitiveJob`) for a finished computation: ``result()`` returns
    the value or raises the error the computation raised, like ``PrimitiveJob`` does, and the
    status is ``DONE`` or ``ERROR`` from the start.
    """

    def __init__(self, function: Callable, *args, **kwargs):
        super().__init__(str(uuid.uuid4()))
        self._value = None
        self._error: Exception | None = None
        try:
            self._value = function(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - surfaced by result(), like PrimitiveJob
            self._error = exc

    def result(self):
        if self._error is not None:
            raise self._error
        return self._value

    def status(self) -> JobStatus:
        return JobStatus.ERROR if self._error is not None else JobStatus.DONE

    def done(self) -> bool:
        return self._error is None

    def running(self) -> bool:
        return False

    def cancelled(self) -> bool:
        return False

    def in_final_state(self) -> bool:
        return True

    def cancel(self) -> bool:
        """Nothing to cancel: the job finished before it was returned."""
        return False


def run_inline(function, pubs, precision: float | None, default_precision: float | None = 0.0) -> DoneJob:
    """Coerce PUBs and run ``function(pubs)`` in the caller's thread (see :class:`DoneJob`)."""
    if precision is None:
        precision = default_precision
    coerced = [EstimatorPub.coerce(pub, precision) if precision is not None else EstimatorPub.coerce(pub)
               for pub in pubs]
    return DoneJob(function, coerced)


def clip_to_spectrum(table: np.ndarray, observables) -> tuple[np.ndarray, int]:
    """Estimates (rows, K) clipped to each observable's possible range ``[-sum|c|, sum|c|]`` (±1 for
    a Pauli), and how many were outside it. Readout-mitigated quasi-probabilities and the estimator
    path's Gaussian shot noise can leave that range (at 3 shots, a third of mitigated values did);
    no measurement can, and the layers after the block expect values within it."""
    bound = np.array([float(np.sum(np.abs(o.coeffs))) for o in observables])
    clipped = np.clip(table, -bound, bound)
    return clipped, int(np.count_nonzero(clipped != table))


def measurement_bases(observables) -> int:
    """How many measurement settings the Estimator runs per binding: it measures qubit-wise
    commuting Pauli terms together (the hybrid block's Z observables: one)."""
    terms = SparsePauliOp.sum([SparsePauliOp(o) for o in observables]).simplify()
    paulis = [p for p in terms.paulis if p.z.any() or p.x.any()]  # the identity needs no measurement
    return len(SparsePauliOp(paulis).group_commuting(qubit_wise=True)) if paulis else 1
