"""PUB plumbing shared by qhybrid's estimators: grouping, broadcasting, inline jobs."""

from __future__ import annotations

import numpy as np
from qiskit.primitives import PrimitiveJob
from qiskit.primitives.containers.estimator_pub import EstimatorPub
from qiskit.quantum_info import Operator, SparsePauliOp


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


def group_pubs(pubs) -> tuple[list[PubGroup], list[tuple]]:
    """Group coerced ``EstimatorPub`` s; returns the groups and, per PUB, how to cut its result
    back out of its group's table (see :func:`pub_evs`)."""
    groups: list[PubGroup] = []
    prepared = []
    for pub in pubs:
        values = pub.parameter_values.as_array(pub.circuit.parameters)
        shape = pub.parameter_values.shape
        rows = max(1, int(np.prod(shape)))
        flat = values.reshape(rows, len(pub.circuit.parameters))
        obs_array = pub.observables
        obs_list = [_as_sparse_pauli(obs_array[idx], pub.circuit.num_qubits) for idx in np.ndindex(*obs_array.shape)]
        group = next((g for g in groups if g.circuit is pub.circuit and g.values.shape == flat.shape
                      and np.array_equal(g.values, flat)), None)
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


def _as_sparse_pauli(observable, num_qubits: int) -> SparsePauliOp:
    if isinstance(observable, SparsePauliOp):
        return observable
    if isinstance(observable, dict):  # an ObservablesArray entry {label: coeff}
        return SparsePauliOp(list(observable), list(observable.values()))
    try:
        return SparsePauliOp(observable)
    except Exception:  # noqa: BLE001
        try:
            return SparsePauliOp.from_operator(Operator(observable))
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"cannot use {type(observable).__name__} as an observable: {exc}")


# ---------------------------------------------------------------------------------------------
# Qiskit primitive interfaces
# ---------------------------------------------------------------------------------------------
class _DoneJob(PrimitiveJob):
    """A primitive job that has already run: exact simulation is fast, and running it in the
    caller's thread avoids starting a worker thread for every call (the default ``PrimitiveJob``
    does), which costs more than simulating a small circuit."""

    def _submit(self) -> None:
        from concurrent.futures import Future

        future: Future = Future()
        try:
            future.set_result(self._function(*self._args, **self._kwargs))
        except Exception as exc:  # noqa: BLE001 - surfaced by result(), like PrimitiveJob
            future.set_exception(exc)
        self._future = future


def run_inline(function, pubs, precision: float | None, default_precision: float | None = 0.0) -> _DoneJob:
    """Coerce PUBs and run ``function(pubs)`` in the caller's thread (see :class:`_DoneJob`)."""
    if precision is None:
        precision = default_precision
    coerced = [EstimatorPub.coerce(pub, precision) if precision is not None else EstimatorPub.coerce(pub)
               for pub in pubs]
    job = _DoneJob(function, coerced)
    job._submit()
    return job
