"""CircuitSpec: validation, JSON round trip, and the circuits it builds; the two-qubit gate count."""

import dataclasses
import json
from pathlib import Path

import pytest
from qiskit import QuantumCircuit
from qiskit.quantum_info import SparsePauliOp

from qhybrid.config import Config
from qhybrid.errors import InputError
from qhybrid.quantum import (
    ANSATZE,
    ENTANGLEMENTS,
    CircuitSpec,
    build_circuit,
    build_observables,
    two_qubit_gate_count,
)

LEGACY = Path(__file__).parent / "data" / "legacy-0.1"


def test_defaults_measure_z_on_each_qubit():
    spec = CircuitSpec(num_qubits=3)
    assert spec.observables == ("IIZ", "IZI", "ZII")
    assert spec.num_inputs == 3 and spec.num_outputs == 3


@pytest.mark.parametrize("ansatz", sorted(ANSATZE))
@pytest.mark.parametrize("encoding", ["angle", "reuploading"])
def test_json_round_trip(ansatz, encoding):
    spec = CircuitSpec(num_qubits=5, ansatz=ansatz, encoding=encoding, reps=3,
                       entanglement="sca", observables=("Z0 Z1", "X4", "IIYII"))
    again = CircuitSpec.from_json(spec.to_json())
    assert again == spec
    assert json.loads(spec.to_json())["observables"] == ["IIIZZ", "XIIII", "IIYII"]


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"num_qubits": 0}, "num_qubits"),
        ({"num_qubits": -2}, "num_qubits"),
        ({"num_qubits": 65}, "num_qubits"),
        ({"num_qubits": 2.5}, "num_qubits"),
        ({"ansatz": "hardware_magic"}, "ansatz"),
        ({"entanglement": "star"}, "entanglement"),
        ({"encoding": "amplitude"}, "encoding"),
        ({"reps": 0}, "reps"),
        ({"observables": ("Q0",)}, "observables"),
        ({"observables": ("Z7",)}, "observables"),
        ({"observables": ("ZZ",)}, "observables"),
        ({"observables": 5}, "observables"),
    ],
)
def test_invalid_fields_name_the_field_and_allowed_values(kwargs, field):
    with pytest.raises(ValueError, match=f"CircuitSpec.{field}"):
        CircuitSpec(num_qubits=kwargs.pop("num_qubits", 3), **kwargs)


def test_unknown_ansatz_lists_allowed():
    with pytest.raises(ValueError, match="real_amplitudes, efficient_su2"):
        CircuitSpec(ansatz="nope")


def test_unknown_entanglement_lists_allowed():
    with pytest.raises(ValueError) as info:
        CircuitSpec(entanglement="nope")
    for name in ENTANGLEMENTS:
        assert name in str(info.value)


def test_from_dict_rejects_unknown_keys_and_bad_json():
    with pytest.raises(ValueError, match="unknown field"):
        CircuitSpec.from_dict({"num_qubits": 2, "qubits": 3})
    with pytest.raises(ValueError, match="not valid JSON"):
        CircuitSpec.from_json("{num_qubits: 2")


@pytest.mark.parametrize("ansatz", sorted(ANSATZE))
@pytest.mark.parametrize("encoding", ["angle", "reuploading"])
@pytest.mark.parametrize("reps", [1, 3])
def test_built_circuit_parameters(ansatz, encoding, reps):
    spec = CircuitSpec(num_qubits=4, ansatz=ansatz, encoding=encoding, reps=reps)
    circuit, inputs, weights = build_circuit(spec)
    expected = {  # 4 qubits
        "real_amplitudes": 4 * (reps + 1),  # RY per qubit, final rotation layer
        "efficient_su2": 8 * (reps + 1),  # RY RZ per qubit, final rotation layer
        "strongly_entangling": 12 * reps,  # RZ RY RZ per qubit and layer
        "strongly_entangling_edited": 8 * reps,  # RY RZ per qubit and layer
        "simplified_two_design": 4 + 6 * reps,  # RY layer, then RY on the 4 + 2 qubits of each brick pair
    }[ansatz]
    assert len(weights) == expected == spec.num_weights
    assert len(inputs) == 4
    assert set(circuit.parameters) == set(inputs) | set(weights)
    uploads = sum(1 for ins in circuit.data for p in ins.operation.params
                  if getattr(p, "name", "").startswith("inputs"))
    assert uploads == (4 * reps if encoding == "reuploading" else 4)
    # inputs come first in Qiskit's parameter order, as EstimatorQNN expects
    assert list(circuit.parameters)[:4] == list(inputs)


def test_observables_are_qiskit_operators():
    ops = build_observables(CircuitSpec(num_qubits=3, observables=("Z0", "X1 Y2")))
    assert ops[0] == SparsePauliOp("IIZ") and ops[1] == SparsePauliOp("YXI")


def test_strongly_entangling_ring_range_changes_per_layer():
    circuit, _, _ = build_circuit(CircuitSpec(num_qubits=4, ansatz="strongly_entangling", reps=4))
    pairs = [tuple(circuit.find_bit(q).index for q in ins.qubits) for ins in circuit.data if ins.operation.name == "cx"]
    layers = [pairs[i:i + 4] for i in range(0, 16, 4)]
    assert layers[0] == [(0, 1), (1, 2), (2, 3), (3, 0)]  # range 1
    assert layers[1] == [(0, 2), (1, 3), (2, 0), (3, 1)]  # range 2
    assert layers[2] == [(0, 3), (1, 0), (2, 1), (3, 2)]  # range 3
    assert layers[3] == layers[0]  # and round again
    edited, _, _ = build_circuit(CircuitSpec(num_qubits=4, ansatz="strongly_entangling_edited", reps=2))
    assert {ins.operation.name for ins in edited.data} == {"ry", "rz", "cz"}


def test_spec_is_a_frozen_config_changed_only_through_validated_replace():
    spec = CircuitSpec(num_qubits=3)
    assert isinstance(spec, Config)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.reps = 5
    assert spec.replace(reps=4).reps == 4 and spec.reps == 2
    with pytest.raises(ValueError, match="CircuitSpec.reps"):
        spec.replace(reps=0)


def test_specs_saved_by_0_1_load_and_save_to_the_same_json():
    checkpoint = json.loads((LEGACY / "ldm-hybrid" / "config.json").read_text())
    saved = checkpoint["config"]["denoiser"]["quantum"]
    spec = CircuitSpec.from_dict(saved)
    assert spec.observables == ("IIZ", "IZI", "ZII")
    assert spec.to_dict() == saved and list(spec.to_dict()) == list(saved)
    assert json.loads(spec.to_json()) == saved


def test_from_file_turns_every_bad_file_into_one_input_error(tmp_path):
    good = tmp_path / "spec.json"
    good.write_text(CircuitSpec(num_qubits=2, reps=3).to_json())
    assert CircuitSpec.from_file(good) == CircuitSpec(num_qubits=2, reps=3)
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00")
    (tmp_path / "broken.json").write_text("{num_qubits: 2")
    (tmp_path / "wrong.json").write_text(json.dumps({"num_qubits": 2, "reps": 0}))
    for name, message in [("folder", "is a folder"), ("missing.json", "not found"),
                          ("binary.json", "not a CircuitSpec JSON file"), ("broken.json", "not valid JSON"),
                          ("wrong.json", "CircuitSpec.reps")]:
        if name == "folder":
            (tmp_path / name).mkdir()
        with pytest.raises(InputError, match=message) as info:
            CircuitSpec.from_file(tmp_path / name)
        assert "\n" not in str(info.value)


def _two_qubit_circuit(gate: str) -> QuantumCircuit:
    qc = QuantumCircuit(3, 1)
    if gate == "rzz":
        qc.rzz(0.3, 0, 2)
    else:
        getattr(qc, gate)(0, 2)
    return qc


@pytest.mark.parametrize("gate", ["cx", "cz", "ecr", "rzz", "swap", "iswap"])
def test_every_two_qubit_gate_counts_once(gate):
    assert two_qubit_gate_count(_two_qubit_circuit(gate)) == 1


def test_barriers_measurements_delays_and_other_widths_do_not_count():
    qc = QuantumCircuit(3, 2)
    qc.h(0)
    qc.rx(0.2, 1)
    qc.barrier(0, 1)  # a two-qubit instruction, not a gate
    qc.barrier()
    qc.ccx(0, 1, 2)
    qc.delay(100, 0)
    qc.reset(2)
    qc.measure([0, 1], [0, 1])
    assert two_qubit_gate_count(qc) == 0
    for gate in ("cx", "cz", "ecr", "rzz", "swap", "iswap"):
        qc.compose(_two_qubit_circuit(gate), inplace=True)
    assert two_qubit_gate_count(qc) == 6


def test_gate_count_of_the_built_ansatze():
    # 4 qubits, reps 2: reverse_linear entanglement has 3 CNOTs per layer; the edited ring 4 CZs
    assert two_qubit_gate_count(build_circuit(CircuitSpec(num_qubits=4, reps=2))[0]) == 6
    edited = CircuitSpec(num_qubits=4, ansatz="strongly_entangling_edited", reps=2)
    assert two_qubit_gate_count(build_circuit(edited)[0]) == 4 + 2  # range 1: 4 pairs; range 2: 2 pairs
