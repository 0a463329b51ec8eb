"""Circuit diagnostics (qhybrid.quantum.analysis) against known answers: closed forms for the
Meyer-Wallach measure and the gradient variance, Qiskit's Statevector / partial_trace as an
independent reference, and the Haar distribution for expressibility."""

import numpy as np
import pytest
from qiskit.quantum_info import Statevector, partial_trace

from qhybrid.quantum import analysis
from qhybrid.quantum.analysis import (
    entangling_capability,
    expressibility,
    expressibility_of,
    gradient_variance,
    haar_fidelity_pdf,
    meyer_wallach,
    sample_states,
    weight_gradients,
)
from qhybrid.quantum.circuits import CircuitSpec, build_circuit, build_observables


def random_qubit_states(rng, count):
    v = rng.normal(size=(count, 2)) + 1j * rng.normal(size=(count, 2))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def haar_states(rng, rows, n):
    v = rng.normal(size=(rows, 2**n)) + 1j * rng.normal(size=(rows, 2**n))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def ghz(n):
    psi = np.zeros(2**n, dtype=complex)
    psi[0] = psi[-1] = 1 / np.sqrt(2)
    return psi


# ---------------------------------------------------------------------------------------------
# Meyer-Wallach
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_meyer_wallach_zero_on_product_states(n, rng):
    rows = []
    for _ in range(20):
        state = np.ones(1, dtype=complex)
        for q in random_qubit_states(rng, n):
            state = np.kron(q, state)
        rows.append(state)
    q = meyer_wallach(np.array(rows))
    assert q.shape == (20,)
    np.testing.assert_allclose(q, 0.0, atol=1e-12)


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_meyer_wallach_one_on_ghz(n):
    np.testing.assert_allclose(meyer_wallach(ghz(n)[None, :]), [1.0], atol=1e-12)
    np.testing.assert_allclose(meyer_wallach(ghz(n)), [1.0], atol=1e-12)  # 1-D: one row


def test_meyer_wallach_two_qubit_closed_form():
    # cos a|00> + sin a|11>: each marginal is diag(cos^2 a, sin^2 a), purity
    # cos^4 + sin^4 = 1 - sin^2(2a)/2, so Q = 2 (1 - purity) = sin^2(2a).
    a = np.linspace(0, np.pi, 37)
    states = np.zeros((a.size, 4))
    states[:, 0], states[:, 3] = np.cos(a), np.sin(a)
    np.testing.assert_allclose(meyer_wallach(states), np.sin(2 * a) ** 2, atol=1e-12)


def test_meyer_wallach_matches_qiskit_partial_trace(rng):
    states = haar_states(rng, 5, 3)
    ours = meyer_wallach(states)
    for psi, q in zip(states, ours):
        sv = Statevector(psi)
        purities = [partial_trace(sv, [j for j in range(3) if j != k]).purity().real
                    for k in range(3)]
        assert q == pytest.approx(2 * (1 - np.mean(purities)), abs=1e-12)
    assert np.all(ours > 0.05)  # random states are entangled: the check is not vacuous


# ---------------------------------------------------------------------------------------------
# sampling circuit states
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", [
    CircuitSpec(num_qubits=3, reps=2),
    CircuitSpec(num_qubits=4, ansatz="efficient_su2", reps=1, encoding="reuploading"),
], ids=["3q-real_amplitudes", "4q-efficient_su2-reuploading"])
def test_sample_states_match_qiskit_statevector(spec):
    circuit, _, _ = build_circuit(spec)
    states = sample_states(spec, 6, seed=11)
    assert states.shape == (6, 2**spec.num_qubits) and states.dtype == np.complex128
    # documented sampling: default_rng(seed), uniform [0, 2 pi), circuit.parameters order
    values = np.random.default_rng(11).uniform(0, 2 * np.pi, size=(6, circuit.num_parameters))
    for psi, row in zip(states, values):
        ref = Statevector(circuit.assign_parameters(row)).data
        np.testing.assert_allclose(psi, ref, atol=1e-10, rtol=0)
    np.testing.assert_array_equal(states, sample_states(spec, 6, seed=11))  # reproducible
    assert not np.allclose(states, sample_states(spec, 6, seed=12))


def test_chunked_simulation_gives_same_results(monkeypatch):
    spec = CircuitSpec(num_qubits=3, reps=2, ansatz="efficient_su2")
    full_states = sample_states(spec, 50, seed=3)
    full_grads = weight_gradients(spec, 50, seed=3)[1]
    full_ent = entangling_capability(spec, 50, seed=3)
    full_expr = expressibility_of(spec, 50, seed=3)
    monkeypatch.setattr(analysis, "_CHUNK_AMPLITUDES", 8 * 7)  # 7-row chunks, a ragged end
    np.testing.assert_allclose(sample_states(spec, 50, seed=3), full_states, atol=1e-14)
    np.testing.assert_allclose(weight_gradients(spec, 50, seed=3)[1], full_grads, atol=1e-14)
    assert entangling_capability(spec, 50, seed=3)["mean"] == pytest.approx(full_ent["mean"])
    assert expressibility_of(spec, 50, seed=3) == pytest.approx(full_expr)


# ---------------------------------------------------------------------------------------------
# gradient variance
# ---------------------------------------------------------------------------------------------
def test_one_qubit_circuit_is_three_ry_rotations():
    # The known-answer test below relies on this structure.
    circuit, inputs, weights = build_circuit(CircuitSpec(num_qubits=1, reps=1))
    assert [i.operation.name for i in circuit.data] == ["ry", "ry", "ry"]
    assert [i.operation.params[0] for i in circuit.data] == [inputs[0], weights[0], weights[1]]


def test_gradient_variance_one_qubit_known_answer():
    # RY(x) RY(w0) RY(w1)|0> gives C = <Z> = cos(x + w0 + w1); dC/dw_j = -sin(x + w0 + w1).
    # With the angles uniform on [0, 2 pi) the sum mod 2 pi is uniform, so Var = E[sin^2] = 1/2
    # for both weights.
    result = gradient_variance(CircuitSpec(num_qubits=1, reps=1), samples=4000, seed=5)
    assert result["samples"] == 4000 and result["num_weights"] == 2
    # stderr: Var(sin^2) = E sin^4 - 1/4 = 1/8, so stderr ~ sqrt(1/8 / 4000) = 0.0056
    assert 0.004 < result["stderr"] < 0.0075
    assert abs(result["variance"] - 0.5) < 4 * result["stderr"]
    assert abs(result["variance_first"] - 0.5) < 4 * result["stderr_first"]


def test_gradients_match_central_differences():
    spec = CircuitSpec(num_qubits=3, ansatz="efficient_su2", reps=2,
                       observables=("X0 Z2", "Z1"))  # the cost is the FIRST observable
    circuit, _, weights = build_circuit(spec)
    observable = build_observables(spec)[0]
    values, grads = weight_gradients(spec, 2, seed=9)
    assert grads.shape == (2, len(weights))
    params = list(circuit.parameters)
    h = 1e-5

    def cost(row):
        return Statevector(circuit.assign_parameters(row)).expectation_value(observable).real

    for row, grad in zip(values, grads):
        for j, w in enumerate(weights):
            col = params.index(w)
            plus, minus = row.copy(), row.copy()
            plus[col] += h
            minus[col] -= h
            assert grad[j] == pytest.approx((cost(plus) - cost(minus)) / (2 * h), abs=1e-7)
    assert np.max(np.abs(grads)) > 0.1  # not trivially zero


def test_barren_plateau_variance_decays_with_qubits():
    def variance(n):
        spec = CircuitSpec(num_qubits=n, reps=6, observables=("Z" * n,))  # global cost
        return gradient_variance(spec, samples=600, seed=2)

    small, large = variance(2), variance(6)
    # measured ~0.22 vs ~0.019 with stderrs ~0.005 and ~0.0002: a >10x gap
    assert large["variance"] + 5 * large["stderr"] < 0.5 * (small["variance"] - 5 * small["stderr"])


# ---------------------------------------------------------------------------------------------
# entangling capability
# ---------------------------------------------------------------------------------------------
def test_entangling_capability_is_mean_meyer_wallach():
    spec = CircuitSpec(num_qubits=3, reps=2)
    result = entangling_capability(spec, 200, seed=4)
    q = meyer_wallach(sample_states(spec, 200, seed=4))
    assert result["mean"] == pytest.approx(q.mean(), abs=1e-12)
    assert result["stderr"] == pytest.approx(q.std(ddof=1) / np.sqrt(200), rel=1e-9)
    assert result["samples"] == 200 and 0.05 < result["mean"] < 1
    assert entangling_capability(CircuitSpec(num_qubits=1), 20, seed=0)["mean"] == pytest.approx(
        0.0, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# expressibility
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dim", [2, 4, 8, 64])
def test_haar_fidelity_pdf_is_a_density(dim):
    f = np.linspace(0, 1, 200001)
    pdf = haar_fidelity_pdf(f, dim)
    assert np.trapezoid(pdf, f) == pytest.approx(1.0, abs=1e-6)
    assert np.trapezoid(f * pdf, f) == pytest.approx(1 / dim, abs=1e-6)  # E[F] = 1/dim


def test_expressibility_of_haar_states_is_near_zero(rng):
    kl = expressibility(haar_states(rng, 5000, 3), haar_states(rng, 5000, 3))
    assert 0 <= kl < 0.05


def test_expressibility_of_a_fixed_state_is_large(rng):
    state = np.repeat(haar_states(rng, 1, 3), 500, axis=0)
    assert expressibility(state, state) > 3
    # one qubit: Haar fidelities are uniform on [0, 1], so all mass in the last of `bins` bins
    # gives exactly log(bins)
    qubit = np.repeat(random_qubit_states(rng, 1), 100, axis=0)
    assert expressibility(qubit, qubit, bins=20) == pytest.approx(np.log(20), rel=1e-9)


def test_deeper_complex_ansatz_is_more_expressive():
    deep = expressibility_of(CircuitSpec(num_qubits=3, reps=4, ansatz="efficient_su2"), 3000,
                             seed=1)
    shallow = expressibility_of(CircuitSpec(num_qubits=3, reps=1), 3000, seed=1)
    # measured ~0.01 vs ~0.23 (real amplitudes only reach real states)
    assert deep < 0.05 and shallow > max(0.1, 5 * deep)


# ---------------------------------------------------------------------------------------------
# argument validation
# ---------------------------------------------------------------------------------------------
SPEC = CircuitSpec(num_qubits=2, reps=1)


@pytest.mark.parametrize("call, match", [
    (lambda: sample_states(SPEC, 0, seed=0), "samples"),
    (lambda: sample_states(SPEC, 2.5, seed=0), "samples"),
    (lambda: sample_states(SPEC, True, seed=0), "samples"),
    (lambda: sample_states("not a spec", 5, seed=0), "spec"),
    (lambda: sample_states(SPEC, 5, seed=-1), "seed"),
    (lambda: gradient_variance(SPEC, 1, seed=0), "samples"),
    (lambda: weight_gradients(SPEC, 0, seed=0), "samples"),
    (lambda: entangling_capability(SPEC, 1, seed=0), "samples"),
    (lambda: expressibility_of(SPEC, 1, seed=0), "pairs"),
    (lambda: expressibility_of(SPEC, 10, seed=0, bins=0), "bins"),
    (lambda: meyer_wallach(np.ones((2, 3)) / np.sqrt(3)), "2\\*\\*n"),
    (lambda: meyer_wallach(np.ones((2, 4))), "normalised"),
    (lambda: meyer_wallach(np.ones((2, 2, 2))), "states"),
    (lambda: expressibility(np.eye(4)[:2], np.eye(4)[:3]), "same shape"),
    (lambda: expressibility(np.eye(4)[:2], np.eye(8)[:2]), "same shape"),
    (lambda: expressibility(np.eye(4)[:1], np.eye(4)[:1]), "at least 2 pairs"),
    (lambda: expressibility(np.eye(4)[:2], np.eye(4)[:2], bins=0), "bins"),
    (lambda: haar_fidelity_pdf(0.5, 1), "dim"),
    (lambda: haar_fidelity_pdf(1.5, 4), "F"),
])
def test_bad_arguments_raise_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
