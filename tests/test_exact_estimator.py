"""The ideal target: exact values against Qiskit's Statevector, exact gradients against finite
differences, and Qiskit's BaseEstimatorV2 contract against StatevectorEstimator."""

import itertools

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import Gate, Parameter, ParameterVector
from qiskit.primitives import BasePrimitiveJob, StatevectorEstimator
from qiskit.providers import JobStatus
from qiskit.quantum_info import SparsePauliOp, Statevector

from qhybrid.quantum import (
    CircuitSpec,
    ExactEstimator,
    ExactEstimatorGradient,
    UnsupportedCircuitError,
    build_circuit,
    build_observables,
)
from qhybrid.quantum.primitives.compiled import CompiledCircuit

SPECS = [
    CircuitSpec(num_qubits=n, ansatz=a, encoding=enc, reps=r, entanglement=e)
    for (n, a, enc, r, e) in [
        (1, "real_amplitudes", "angle", 1, "linear"),
        (2, "efficient_su2", "reuploading", 2, "full"),
        (3, "real_amplitudes", "reuploading", 3, "circular"),
        (4, "efficient_su2", "angle", 2, "sca"),
        (5, "real_amplitudes", "angle", 2, "pairwise"),
        (5, "efficient_su2", "reuploading", 1, "reverse_linear"),
        (6, "real_amplitudes", "angle", 3, "full"),
        (2, "strongly_entangling", "angle", 2, "linear"),
        (3, "strongly_entangling", "reuploading", 3, "linear"),
        (4, "strongly_entangling_edited", "angle", 3, "linear"),
        (5, "strongly_entangling_edited", "reuploading", 2, "linear"),
        (4, "simplified_two_design", "reuploading", 2, "linear"),
        (5, "simplified_two_design", "angle", 3, "linear"),
    ]
] + [
    CircuitSpec(num_qubits=4, ansatz="efficient_su2", reps=2,
                observables=("Z0", "X1", "Y2 Z3", "XXYY", "ZZZZ", "X0 Y1")),
    CircuitSpec(num_qubits=3, ansatz="real_amplitudes", reps=2, observables=("X0", "Y1 Y2", "Z0 X2")),
]


def reference_values(circuit, observables, values):
    return np.array([
        [Statevector(circuit.assign_parameters(v)).expectation_value(o).real for o in observables]
        for v in values
    ])


def random_values(rng, circuit, rows=6):
    return rng.uniform(-np.pi, np.pi, size=(rows, circuit.num_parameters))


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.num_qubits}q-{s.ansatz}-{s.encoding}-{s.entanglement}")
def test_values_match_statevector(spec, rng):
    circuit, _, _ = build_circuit(spec)
    observables = build_observables(spec)
    values = random_values(rng, circuit)
    pubs = [(circuit, obs, values) for obs in observables]
    result = ExactEstimator().run(pubs).result()
    ours = np.stack([r.data.evs for r in result], axis=1)
    np.testing.assert_allclose(ours, reference_values(circuit, observables, values), atol=1e-10, rtol=0)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.num_qubits}q-{s.ansatz}-{s.encoding}-{s.entanglement}")
def test_gradients_match_central_differences(spec, rng):
    circuit, _, _ = build_circuit(spec)
    observables = build_observables(spec)
    values = random_values(rng, circuit, rows=3)
    rows = [(v, o) for v in values for o in observables]
    job = ExactEstimatorGradient().run(
        [circuit] * len(rows), [o for _, o in rows], np.array([v for v, _ in rows])
    )
    grads = np.array(job.result().gradients)
    h = 1e-5
    estimator = ExactEstimator()
    for r, (v, o) in enumerate(rows):
        shifted = np.array([v + h * e for e in np.eye(len(v))] + [v - h * e for e in np.eye(len(v))])
        evs = estimator.run([(circuit, o, shifted)]).result()[0].data.evs
        fd = (evs[: len(v)] - evs[len(v):]) / (2 * h)
        np.testing.assert_allclose(grads[r], fd, atol=1e-8, rtol=0)


def test_vjp_equals_cotangent_times_jacobian(rng):
    spec = SPECS[-2]
    circuit, _, _ = build_circuit(spec)
    observables = build_observables(spec)
    values = random_values(rng, circuit, rows=4)
    gradient = ExactEstimatorGradient()
    rows = [(v, o) for v in values for o in observables]
    jac = np.array(gradient.run([circuit] * len(rows), [o for _, o in rows],
                                np.array([v for v, _ in rows])).result().gradients)
    jac = jac.reshape(len(values), len(observables), -1)
    cotangent = rng.normal(size=(len(values), len(observables)))
    vjp = gradient.vjp(circuit, observables, values, cotangent)
    np.testing.assert_allclose(vjp, np.einsum("rk,rkp->rp", cotangent, jac), atol=1e-12)


def test_gradient_respects_parameter_subsets_and_several_circuits(rng):
    a, b = Parameter("a"), Parameter("b")
    c1 = QuantumCircuit(2)
    c1.ry(a, 0)
    c1.rx(b, 1)
    c2 = QuantumCircuit(1)
    c2.ry(2 * a + 0.5, 0)
    obs1, obs2 = SparsePauliOp("ZZ"), SparsePauliOp("Z")
    result = ExactEstimatorGradient().run(
        [c1, c2, c1], [obs1, obs2, obs1], [[0.3, 0.7], [0.4], [0.3, 0.7]], parameters=[[b], None, [b, a]]
    ).result()
    # <ZZ> = cos(a) cos(b); <Z> = cos(2a + 0.5)
    np.testing.assert_allclose(result.gradients[0], [-np.cos(0.3) * np.sin(0.7)], atol=1e-12)
    np.testing.assert_allclose(result.gradients[1], [-2 * np.sin(0.8 + 0.5)], atol=1e-12)
    np.testing.assert_allclose(result.gradients[2], [-np.cos(0.3) * np.sin(0.7), -np.sin(0.3) * np.cos(0.7)], atol=1e-12)
    assert result.metadata[0]["parameters"] == [b]


# --- BaseEstimatorV2 contract ------------------------------------------------------------------
def _compare(pubs):
    ours = ExactEstimator().run(pubs).result()
    ref = StatevectorEstimator().run(pubs).result()
    assert len(ours) == len(ref)
    for o, r in zip(ours, ref):
        assert o.data.evs.shape == r.data.evs.shape
        np.testing.assert_allclose(o.data.evs, r.data.evs, atol=1e-10)
        assert np.all(o.data.stds == 0)


def test_estimator_v2_broadcasting(rng):
    spec = CircuitSpec(num_qubits=3, ansatz="efficient_su2", reps=1)
    circuit, _, _ = build_circuit(spec)
    p = circuit.num_parameters
    obs4 = ["ZII", "IXI", SparsePauliOp(["XYZ", "ZZI"], [0.5, -1.5]), {"YYI": 2.0}]
    _compare([
        (circuit, obs4, rng.uniform(-3, 3, size=(3, 4, p))),          # (3,4) x (4,) -> (3,4)
        (circuit, [["ZII"], ["IIX"]], rng.uniform(-3, 3, size=(5, p))),  # (2,1) x (5,) -> (2,5)
        (circuit, "ZZZ", rng.uniform(-3, 3, size=(p,))),              # scalar
    ])


def test_estimator_v2_fixed_circuits_and_several_pubs():
    bell = QuantumCircuit(2)
    bell.h(0)
    bell.cx(0, 1)
    ghz = QuantumCircuit(3)
    ghz.h(0)
    ghz.cx(0, 1)
    ghz.cx(1, 2)
    ghz.s(2)
    _compare([(bell, ["XX", "YY", "ZZ", "ZI"]), (ghz, ["XXY", "ZZI", "YXX"]), (bell, "IX")])


def test_precision_is_accepted_and_results_say_exact():
    circuit = QuantumCircuit(1)
    circuit.h(0)
    result = ExactEstimator().run([(circuit, "X")], precision=0.1).result()[0]
    assert result.data.evs == pytest.approx(1.0, abs=1e-12)
    assert result.metadata["exact"] is True and result.metadata["target_precision"] == 0.1


def test_many_gate_kinds_decompose_and_match(rng):
    a = ParameterVector("a", 6)
    qc = QuantumCircuit(3)
    qc.h(0)
    qc.sx(1)
    qc.crx(a[0], 0, 2)
    qc.rzz(2 * a[1] + 0.3, 1, 2)
    qc.u(a[2], a[3], a[4], 0)
    qc.ch(0, 1)
    qc.swap(0, 2)
    qc.rzx(a[5], 2, 0)
    qc.ryy(a[0] - a[1], 0, 1)
    qc.t(2)
    qc.ccx(0, 1, 2)
    qc.cp(a[3], 1, 0)
    qc.rx(a[2], 1)
    qc.barrier()
    obs = [SparsePauliOp(["XYZ", "ZZI"], [0.5, -1.2]), SparsePauliOp("YII")]
    values = rng.uniform(-3, 3, size=(4, 6))
    ours = np.stack([r.data.evs for r in ExactEstimator().run([(qc, o, values) for o in obs]).result()], 1)
    np.testing.assert_allclose(ours, reference_values(qc, obs, values), atol=1e-10)


def test_unsupported_circuits_fail_clearly():
    x = Parameter("x")
    nonlinear = QuantumCircuit(1)
    nonlinear.ry(x * x, 0)
    with pytest.raises(UnsupportedCircuitError, match="not linear"):
        CompiledCircuit(nonlinear)
    measured = QuantumCircuit(1, 1)
    measured.h(0)
    measured.measure(0, 0)
    with pytest.raises(UnsupportedCircuitError, match="remove the measurements"):
        CompiledCircuit(measured)
    opaque = QuantumCircuit(3)
    opaque.append(Gate("mystery", 3, []), [0, 1, 2])
    with pytest.raises(UnsupportedCircuitError, match="mystery"):
        CompiledCircuit(opaque)
    with pytest.raises(UnsupportedCircuitError, match="at most 20 qubits"):
        CompiledCircuit(QuantumCircuit(21))


def test_real_circuits_simulate_in_float64_complex_ones_in_complex128():
    real, _, _ = build_circuit(CircuitSpec(num_qubits=3, ansatz="real_amplitudes"))
    cplx, _, _ = build_circuit(CircuitSpec(num_qubits=3, ansatz="efficient_su2"))
    assert CompiledCircuit(real).is_real and not CompiledCircuit(cplx).is_real


def test_every_row_combination_of_the_qnn_layout_is_consistent(rng):
    """An EstimatorQNN sends each sample once per observable; the deduplicated sweep must give
    each (sample, observable) row its own gradient."""
    spec = CircuitSpec(num_qubits=3, reps=1, observables=("Z0", "X1", "Z2"))
    circuit, _, _ = build_circuit(spec)
    observables = build_observables(spec)
    values = random_values(rng, circuit, rows=4)
    tiled = np.tile(values, (len(observables), 1))
    obs_rows = [o for o in observables for _ in range(len(values))]
    grads = np.array(ExactEstimatorGradient().run([circuit] * len(tiled), obs_rows, tiled).result().gradients)
    single = [ExactEstimatorGradient().run([circuit], [o], [v]).result().gradients[0]
              for o, v in itertools.product(observables, values)]
    np.testing.assert_allclose(grads, np.array(single), atol=1e-13)


def test_pubs_run_together_share_one_simulation_and_repeat_bit_for_bit(rng):
    """PUBs that share a circuit and parameter rows share one simulation (and one product over all
    their observables). Their values equal each PUB's on its own to rounding, and the same call
    gives the very same bits every time (training is bit-reproducible)."""
    spec = CircuitSpec(num_qubits=5, ansatz="efficient_su2", reps=2,
                       observables=("Z0", "X1 X2", "Y3", "Z0 Z4", "X4"))
    circuit, _, _ = build_circuit(spec)
    observables = build_observables(spec)
    values = random_values(rng, circuit, rows=33)
    other = random_values(rng, circuit, rows=33)
    pubs = [(circuit, o, values) for o in observables] + [
        (circuit, [[observables[0]], [observables[3]]], values),  # same rows: joins their group
        (circuit, [[observables[1]], [observables[4]]], other),  # other rows: a group of its own
    ]
    together = ExactEstimator().run(pubs).result()
    again = ExactEstimator().run(pubs).result()
    for pub, result, repeat in zip(pubs, together, again):
        alone = ExactEstimator().run([pub]).result()[0]
        np.testing.assert_allclose(result.data.evs, alone.data.evs, rtol=0, atol=1e-14)
        assert np.array_equal(result.data.evs, repeat.data.evs)
    np.testing.assert_allclose(np.stack([r.data.evs for r in together[:5]], 1),
                               reference_values(circuit, observables, values), atol=1e-10)


def test_jobs_are_finished_qiskit_jobs_and_raise_failures_from_result():
    circuit = QuantumCircuit(1)
    circuit.h(0)
    job = ExactEstimator().run([(circuit, "X")])
    assert isinstance(job, BasePrimitiveJob)
    assert job.status() == JobStatus.DONE and job.done() and job.in_final_state()
    assert not job.running() and not job.cancelled() and job.cancel() is False
    assert job.result()[0].data.evs == pytest.approx(1.0)
    assert job.job_id() != ExactEstimator().run([(circuit, "X")]).job_id()

    x = Parameter("x")
    nonlinear = QuantumCircuit(1)
    nonlinear.ry(x * x, 0)
    failed = ExactEstimator().run([(nonlinear, "Z", [0.1])])  # fails inside the job, as in Qiskit
    assert failed.status() == JobStatus.ERROR and not failed.done() and failed.in_final_state()
    with pytest.raises(UnsupportedCircuitError, match="not linear"):
        failed.result()

    rotation = QuantumCircuit(1)
    rotation.ry(x, 0)  # <X> = sin(x)
    gradient = ExactEstimatorGradient().run([rotation], ["X"], [[0.3]])
    assert isinstance(gradient, BasePrimitiveJob) and gradient.done()
    assert gradient.result().gradients[0] == pytest.approx([np.cos(0.3)])
    fixed = ExactEstimatorGradient().run([circuit], ["X"], [[]])
    assert fixed.status() == JobStatus.ERROR
    with pytest.raises(ValueError, match="no parameters"):
        fixed.result()
