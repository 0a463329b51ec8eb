"""QuantumBlock: a TorchConnector(EstimatorQNN) module that is exact, differentiable and portable."""

import numpy as np
import pytest
import torch
from qiskit.quantum_info import Statevector
from qiskit_machine_learning.connectors import TorchConnector
from qiskit_machine_learning.neural_networks import EstimatorQNN
from safetensors.torch import load_file, save_file

from qhybrid.quantum import CircuitSpec, ExactEstimatorGradient, QuantumBlock


def reference(block, x, w):
    out = []
    for row in x:
        bind = dict(zip(block.input_params, row)) | dict(zip(block.weight_params, w))
        state = Statevector(block.circuit.assign_parameters(bind))
        out.append([state.expectation_value(o).real for o in block.observables])
    return np.array(out)


def test_block_is_a_torch_connector_around_an_estimator_qnn():
    block = QuantumBlock(CircuitSpec(num_qubits=3), seed=0)
    assert isinstance(block.connector, TorchConnector)
    assert isinstance(block.qnn, EstimatorQNN)
    assert isinstance(block.qnn.gradient, ExactEstimatorGradient)
    assert block.qnn.input_gradients is True
    assert isinstance(block.weight, torch.nn.Parameter)
    assert block.weight.shape == (len(block.weight_params),)
    assert [p.name for p in block.weight_params] == [f"weights[{i}]" for i in range(len(block.weight_params))]


@pytest.mark.parametrize("spec", [
    CircuitSpec(num_qubits=4, ansatz="real_amplitudes", reps=3),
    CircuitSpec(num_qubits=3, ansatz="efficient_su2", encoding="reuploading", reps=2,
                entanglement="circular", observables=("Z0", "X1 X2", "Y0 Z1")),
])
def test_outputs_match_statevector(spec):
    block = QuantumBlock(spec, seed=3).double()
    x = torch.randn(5, spec.num_qubits, dtype=torch.float64) * 2
    out = block(x).detach().numpy()
    assert out.shape == (5, spec.num_outputs) and block(x).dtype == torch.float64
    np.testing.assert_allclose(out, reference(block, x.numpy(), block.weight.detach().numpy()), atol=1e-10)
    # float32 in, float32 out: what the models use
    assert block.float()(x.float()).dtype == torch.float32


@pytest.mark.parametrize("spec", [
    CircuitSpec(num_qubits=2, reps=1),
    CircuitSpec(num_qubits=3, ansatz="efficient_su2", encoding="reuploading", reps=1,
                observables=("Z0", "X1 Y2")),
])
def test_gradcheck(spec):
    block = QuantumBlock(spec, seed=1).double()
    x = torch.randn(3, spec.num_qubits, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda inp, w: block(inp), (x, block.weight), eps=1e-6, atol=1e-8)


def test_gradients_match_central_differences_and_the_plain_torch_connector():
    spec = CircuitSpec(num_qubits=4, ansatz="efficient_su2", reps=2, entanglement="full",
                       observables=("Z0", "Z1 Z2", "X3", "Y0 Y1"))
    block = QuantumBlock(spec, seed=7).double()
    x = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    g = torch.randn(6, spec.num_outputs, dtype=torch.float64)
    (block(x) * g).sum().backward()
    gx, gw = x.grad.clone(), block.weight.grad.clone()

    def loss(xv, wv):
        return float((torch.as_tensor(block.qnn.forward(xv, wv)) * g).sum())

    h = 1e-6
    xv, wv = x.detach().numpy(), block.weight.detach().numpy()
    fd_x = np.zeros_like(xv)
    for idx in np.ndindex(*xv.shape):
        e = np.zeros_like(xv)
        e[idx] = h
        fd_x[idx] = (loss(xv + e, wv) - loss(xv - e, wv)) / (2 * h)
    fd_w = np.array([(loss(xv, wv + h * e) - loss(xv, wv - h * e)) / (2 * h) for e in np.eye(len(wv))])
    np.testing.assert_allclose(gx.numpy(), fd_x, atol=1e-7)
    np.testing.assert_allclose(gw.numpy(), fd_w, atol=1e-7)

    # qiskit-machine-learning's own TorchConnector (full-Jacobian path) agrees
    plain = TorchConnector(block.qnn, initial_weights=wv)
    x2 = x.detach().clone().requires_grad_(True)
    (plain(x2) * g.float()).sum().backward()
    np.testing.assert_allclose(x2.grad.numpy(), gx.numpy(), atol=1e-5)
    np.testing.assert_allclose(plain.weight.grad.numpy(), gw.numpy(), atol=1e-5)


def test_state_dict_round_trip_through_safetensors(tmp_path):
    spec = CircuitSpec(num_qubits=3, reps=2)
    a = QuantumBlock(spec, seed=1)
    b = QuantumBlock(spec, seed=2)
    x = torch.randn(4, 3)
    assert not torch.equal(a(x), b(x))
    save_file(a.state_dict(), tmp_path / "block.safetensors")
    b.load_state_dict(load_file(tmp_path / "block.safetensors"))
    assert torch.equal(a(x), b(x))
    assert list(a.state_dict()) == ["connector.weight"]


def test_to_target_keeps_the_same_parameter():
    block = QuantumBlock(CircuitSpec(num_qubits=3), seed=0)
    weight = block.weight
    x = torch.randn(2, 3)
    before = block(x)
    block.to_target("ideal")
    assert block.weight is weight
    assert torch.equal(block(x), before)
    opt = torch.optim.SGD(block.parameters(), lr=0.1)
    block(x).sum().backward()
    opt.step()
    assert not torch.equal(block(x), before)


def test_moving_target_leaves_one_registered_weight_and_draws_no_random_numbers():
    block = QuantumBlock(CircuitSpec(num_qubits=3), seed=0)
    weight = block.weight
    rng_state = torch.get_rng_state()
    block.to_target("ideal")
    assert torch.equal(torch.get_rng_state(), rng_state)  # fresh training stays bit-reproducible
    # every name the weight is registered under (TorchConnector keeps an alias) holds the same tensor
    assert all(p is weight for _, p in block.named_parameters(remove_duplicate=False))
    assert list(block.state_dict()) == ["connector.weight"]
    other = QuantumBlock(CircuitSpec(num_qubits=3), seed=5)
    block.load_state_dict(other.state_dict())
    x = torch.randn(3, 3)
    assert torch.equal(block(x), other(x)) and block.weight is weight


def test_pub_circuit_is_the_one_object_the_qnn_evaluates():
    block = QuantumBlock(CircuitSpec(num_qubits=3, reps=2), seed=0).double()
    sent = block.pub_circuit
    assert sent is block.pub_circuit  # one object, unlike EstimatorQNN.circuit (a new copy per call)
    assert sent is not block.circuit and block.qnn.circuit is not block.qnn.circuit
    assert [p.name for p in sent.parameters] == [p.name for p in [*block.input_params, *block.weight_params]]
    x = torch.randn(5, 3, dtype=torch.float64)
    values = np.concatenate([x.numpy(), np.tile(block.weight.detach().numpy(), (5, 1))], axis=1)
    result = block.qnn.estimator.run([(sent, o, values) for o in block.observables]).result()
    assert np.array_equal(np.stack([r.data.evs for r in result], 1), block(x).detach().numpy())
    block.to_target("ideal")
    assert block.pub_circuit is not sent  # a new QNN sends its own circuit


@pytest.mark.parametrize("target, match", [
    ("ibm:fake_nowhere", "unknown fake backend 'fake_nowhere'; valid names: .*fake_torino"),
    ("quantum-cloud", "allowed: ideal, fake:<fake backend>, ibm:<backend>"),
    ("fake:", "needs a backend name"),
])
def test_unknown_or_unavailable_targets(target, match):
    with pytest.raises(ValueError, match=match):
        QuantumBlock(CircuitSpec(num_qubits=2), target=target)


def test_bad_inputs_raise_value_errors_naming_the_problem():
    block = QuantumBlock(CircuitSpec(num_qubits=3), seed=0)
    with pytest.raises(ValueError, match=r"shape \(batch, 3\).*got \(4, 5\)"):
        block(torch.randn(4, 5))
    with pytest.raises(ValueError, match=r"shape \(batch, 3\)"):
        block(torch.randn(3))
    with pytest.raises(ValueError, match="NaN or infinite"):
        block(torch.tensor([[0.1, float("nan"), 0.2]]))
    with pytest.raises(ValueError, match="NaN or infinite"):
        block(torch.tensor([[0.1, float("inf"), 0.2]]))
    with pytest.raises(ValueError, match="initial_weights has 2 values"):
        QuantumBlock(CircuitSpec(num_qubits=3), initial_weights=torch.zeros(2))
    with pytest.raises(ValueError, match=r"num_qubits=21 .* at most 20 qubits"):
        QuantumBlock(CircuitSpec(num_qubits=21))


def test_a_short_training_run_fits_targets():
    torch.manual_seed(0)
    block = QuantumBlock(CircuitSpec(num_qubits=3, reps=2), seed=0)
    x = torch.rand(32, 3) * 2 - 1
    y = torch.tanh(x.sum(1, keepdim=True)).repeat(1, 3) * 0.5
    opt = torch.optim.Adam(block.parameters(), lr=0.1)
    losses = []
    for _ in range(60):
        loss = torch.mean((block(x) - y) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.3 * losses[0]
