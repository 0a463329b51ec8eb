"""The fused exact path: the same numbers as the gate-by-gate path and Qiskit's Statevector, on
every ansatz, both encodings, ISA gate sets and random circuits; gradients exact and summed over
rows for shared columns; the path choice follows the batch size and says why."""

import numpy as np
import pytest
import torch
from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector
from qiskit.quantum_info import SparsePauliOp, Statevector
from qiskit.transpiler import CouplingMap, generate_preset_pass_manager

from qhybrid.quantum import (
    CircuitSpec,
    ExactEstimator,
    QuantumBlock,
    build_circuit,
    build_observables,
)
from qhybrid.quantum.circuits import ANSATZE, ENCODINGS
from qhybrid.quantum.primitives.compiled import CompiledCircuit, CompiledObservables
from qhybrid.quantum.primitives.exact import ExactEstimatorGradient
from qhybrid.quantum.primitives.fused import MAX_FUSED_QUBITS, FusedProgram, choose_path

TOL = 1e-10


def weight_mask(circuit: QuantumCircuit) -> np.ndarray:
    return np.array([not p.name.startswith("inputs") for p in circuit.parameters])


def batch(rng, circuit, shared, rows=7):
    values = rng.uniform(-np.pi, np.pi, size=(rows, circuit.num_parameters))
    values[:, shared] = values[0, shared]
    return values


def statevector_values(circuit, observables, values):
    return np.array([[Statevector(circuit.assign_parameters(v)).expectation_value(o).real
                      for o in observables] for v in values])


def shift_vjp(circuit, observables, values, cotangent, columns):
    """sum_k cotangent[r, k] dE_k/dvalues[r, j] for ``columns`` j by the parameter-shift rule on
    Qiskit's Statevector: exact for a parameter that is the angle of one gate exp(-i a/2 P) (each
    weight is; a re-uploaded input is not)."""
    grads = np.zeros((len(values), len(columns)))
    for c, j in enumerate(columns):
        plus, minus = values.copy(), values.copy()
        plus[:, j] += np.pi / 2
        minus[:, j] -= np.pi / 2
        diff = (statevector_values(circuit, observables, plus)
                - statevector_values(circuit, observables, minus)) / 2
        grads[:, c] = np.sum(cotangent * diff, axis=1)
    return grads


def check_program(circuit, observables, values, shared, rng, *, statevector_rows=3):
    """Fused values and VJP against gate-by-gate (all rows) and Statevector (a few rows)."""
    compiled = CompiledCircuit(circuit)
    program = FusedProgram(compiled, shared)
    tensor = torch.from_numpy(values)
    fused_psi = program.statevector(tensor)
    np.testing.assert_allclose(fused_psi.numpy(), compiled.statevector(tensor).numpy(), atol=TOL, rtol=0)
    compiled_obs = CompiledObservables(observables, compiled.num_qubits, compiled.dtype)
    evs = compiled_obs.expectation(fused_psi).numpy()
    some = values[:statevector_rows]
    np.testing.assert_allclose(evs[:statevector_rows], statevector_values(circuit, observables, some),
                               atol=TOL, rtol=0)
    cotangent = rng.normal(size=(len(values), len(observables)))
    per_row, summed = (t.numpy() for t in program.vjp(tensor, compiled_obs, cotangent))
    gate = compiled.vjp(tensor, compiled_obs, cotangent).numpy()
    np.testing.assert_allclose(per_row[:, ~shared], gate[:, ~shared], atol=TOL, rtol=0)
    np.testing.assert_allclose(summed[shared], gate[:, shared].sum(0), atol=TOL, rtol=0)
    assert not per_row[:, shared].any() and not summed[~shared].any()
    return program, gate, cotangent


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("ansatz", sorted(ANSATZE))
def test_fused_equals_gate_by_gate_and_statevector_on_every_ansatz(ansatz, encoding, rng):
    spec = CircuitSpec(num_qubits=4, ansatz=ansatz, encoding=encoding, reps=2)
    circuit, _, _ = build_circuit(spec)
    shared = weight_mask(circuit)
    values = batch(rng, circuit, shared)
    rows = 3
    program, _, cotangent = check_program(circuit, build_observables(spec), values[:rows], shared, rng)
    assert any(block.as_matrix for block in program.blocks)  # something was actually fused
    # the weights' gradient, summed over rows, also matches the parameter-shift rule on Statevector
    _, summed = program.vjp(torch.from_numpy(values[:rows]),
                            CompiledObservables(build_observables(spec), 4, program.dtype), cotangent)
    weights = np.flatnonzero(shared)
    shift = shift_vjp(circuit, build_observables(spec), values[:rows], cotangent, weights)
    np.testing.assert_allclose(summed.numpy()[weights], shift.sum(0), atol=TOL, rtol=0)


@pytest.mark.parametrize("basis", [("rz", "sx", "x", "cz"), ("rz", "sx", "x", "ecr"), ("rz", "sx", "x", "cx")])
def test_fused_path_on_isa_gate_sets(basis, rng):
    """Transpiled circuits: inputs inside RZ between SX gates, ECR (not monomial) or CZ."""
    spec = CircuitSpec(num_qubits=4, reps=2, encoding="reuploading")
    circuit, _, _ = build_circuit(spec)
    pass_manager = generate_preset_pass_manager(
        optimization_level=1, basis_gates=list(basis), coupling_map=CouplingMap.from_line(4), seed_transpiler=0)
    isa = pass_manager.run(circuit)
    observables = [o.apply_layout(isa.layout) for o in build_observables(spec)]
    shared = weight_mask(isa)
    check_program(isa, observables, batch(rng, isa, shared), shared, rng)


def test_fused_path_on_random_circuits(rng):
    """Random gates (fixed, parametric with affine angles, 1-3 qubits, complex and real) and a
    random set of shared columns: whatever the scheduler reorders, the numbers stay exact."""
    one = ["h", "sx", "x", "s", "t", "rx", "ry", "rz", "u"]
    two = ["cx", "cz", "swap", "rzz", "rxx", "ecr", "cry"]
    for trial in range(25):
        n = int(rng.integers(1, 5))
        params = ParameterVector("p", int(rng.integers(2, 7)))
        circuit = QuantumCircuit(n)
        for _ in range(int(rng.integers(4, 20))):
            name = rng.choice(one + (two if n > 1 else []))
            qubits = [int(q) for q in rng.choice(n, size=2 if name in two else 1, replace=False)]
            angle = lambda: float(rng.choice([1.0, -1.0, 0.5])) * params[int(rng.integers(len(params)))] + float(rng.normal())  # noqa: E731
            if name == "u":
                circuit.u(angle(), angle(), angle(), qubits[0])
            elif name in ("rx", "ry", "rz", "rzz", "rxx", "cry"):
                getattr(circuit, name)(angle(), *qubits)
            else:
                getattr(circuit, name)(*qubits)
        if not circuit.num_parameters:
            continue
        shared = rng.random(circuit.num_parameters) < 0.5
        observables = [SparsePauliOp("Z" * n), SparsePauliOp("X" + "I" * (n - 1))]
        try:
            check_program(circuit, observables, batch(rng, circuit, shared, rows=5), shared, rng,
                          statevector_rows=2)
        except AssertionError as err:  # say which circuit
            raise AssertionError(f"trial {trial}: shared={shared}\n{circuit}") from err


def test_block_gradients_equal_on_both_paths_and_gradcheck_on_the_fused_one():
    spec = CircuitSpec(num_qubits=3, reps=2, encoding="reuploading")
    x = torch.rand(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    grads = {}
    for fusion in ("never", "always"):
        block = QuantumBlock(spec, target="ideal", fusion=fusion, seed=0).double()
        xi = x.clone().requires_grad_(True)
        out = block(xi)
        (out * torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view_as(out)).sum().backward()
        grads[fusion] = (out.detach(), xi.grad, block.weight.grad)
    for a, b in zip(grads["never"], grads["always"]):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    block = QuantumBlock(spec, target="ideal", fusion="always", seed=0).double()
    assert torch.autograd.gradcheck(block, (x.clone().requires_grad_(True),), atol=1e-8)


def test_path_choice_follows_batch_size_and_cached_matrices():
    spec = CircuitSpec(num_qubits=8, reps=3)
    circuit, _, _ = build_circuit(spec)
    compiled = CompiledCircuit(circuit)
    shared = weight_mask(circuit)
    rng = np.random.default_rng(0)
    small, large = (torch.from_numpy(batch(rng, circuit, shared, rows=rows)) for rows in (64, 4096))
    choice, _ = choose_path(compiled, small, shared, gradient=True)
    assert choice.path == "gate-by-gate" and "dearer" in choice.reason
    choice, program = choose_path(compiled, large, shared, gradient=True)
    assert choice.path == "fused" and "cheaper" in choice.reason
    program.statevector(large)  # sampling: the same weights again, matrices cached
    choice, _ = choose_path(compiled, large[:1024], shared)
    assert choice.path == "fused" and choice.reason.startswith("cached")
    for fusion, path in (("never", "gate-by-gate"), ("always", "fused")):
        assert choose_path(compiled, small, shared, fusion=fusion)[0].path == path
    with pytest.raises(ValueError, match="fusion must be one of"):
        choose_path(compiled, small, shared, fusion="sometimes")


def test_estimator_reports_its_path_and_handles_constant_input_columns(rng):
    """Auto-detected shared columns include an input that happens to be constant: still exact."""
    spec = CircuitSpec(num_qubits=3, reps=2)
    circuit, _, _ = build_circuit(spec)
    values = batch(rng, circuit, weight_mask(circuit), rows=9)
    values[:, 1] = 0.25  # input 1 is the same in every row
    observables = build_observables(spec)
    pub = (circuit, [[o] for o in observables], values)  # evs: (observables, rows)
    fused = ExactEstimator(fusion="always").run([pub]).result()[0]
    gate = ExactEstimator(fusion="never").run([pub]).result()[0]
    assert fused.metadata["path"] == "fused" and gate.metadata["path"] == "gate-by-gate"
    np.testing.assert_allclose(fused.data.evs, gate.data.evs, atol=TOL, rtol=0)
    np.testing.assert_allclose(fused.data.evs.T, statevector_values(circuit, observables, values), atol=TOL)


def test_float32_precision_stays_within_single_precision_rounding(rng):
    spec = CircuitSpec(num_qubits=6, reps=3)
    circuit, _, _ = build_circuit(spec)
    shared = weight_mask(circuit)
    values = batch(rng, circuit, shared, rows=256)
    obs = build_observables(spec)
    pub = (circuit, [[o] for o in obs], values)
    ref = ExactEstimator(fusion="never").run([pub]).result()[0].data.evs
    single = ExactEstimator(fusion="always", simulation_precision="float32").run([pub])
    err = np.abs(single.result()[0].data.evs - ref).max()
    assert 0 < err < 1e-5  # float32 really is used, and rounds like float32
    gradient = ExactEstimatorGradient(ExactEstimator(fusion="always", simulation_precision="float32"))
    cot = rng.normal(size=(256, len(obs)))
    per_row, summed = gradient.shared_vjp(circuit, obs, values, cot, shared)
    exact_rows, exact_sum = ExactEstimatorGradient(ExactEstimator(fusion="never")).shared_vjp(
        circuit, obs, values, cot, shared)
    np.testing.assert_allclose(per_row, exact_rows, atol=1e-4, rtol=0)
    np.testing.assert_allclose(summed, exact_sum, atol=1e-3, rtol=1e-5)


def test_unknown_options_and_too_wide_circuits_say_so():
    with pytest.raises(ValueError, match="simulation_precision must be one of"):
        ExactEstimator(simulation_precision="half")
    wide = QuantumCircuit(MAX_FUSED_QUBITS + 1)
    theta = ParameterVector("t", 2)
    wide.ry(theta[0], 0)
    wide.ry(theta[1], 1)
    compiled = CompiledCircuit(wide)
    choice, program = choose_path(compiled, torch.zeros(4, 2, dtype=torch.float64), np.array([True, False]))
    assert choice.path == "gate-by-gate" and program is None and str(MAX_FUSED_QUBITS) in choice.reason
