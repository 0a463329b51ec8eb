"""One description of the quantum block's circuit: :class:`CircuitSpec` -> Qiskit circuit + observables.

Every target (ideal statevector, Aer with a fake backend's noise, IBM hardware) starts from the
circuit built here, so the trained weights mean the same thing everywhere. The circuit uses two
``ParameterVector`` objects: ``inputs`` (one angle per qubit, fed by the classical network) and
``weights`` (the trainable circuit parameters, in circuit order).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from dataclasses import asdict, dataclass, field
from typing import Any

from qiskit.circuit import ParameterVector, QuantumCircuit
from qiskit.circuit.library import efficient_su2, real_amplitudes
from qiskit.quantum_info import SparsePauliOp

from ..config import config_from_dict

#: Ansatz name -> Qiskit builder (functions, not the deprecated library classes).
ANSATZE = {
    "real_amplitudes": real_amplitudes,
    "efficient_su2": efficient_su2,
}
ENCODINGS = ("angle", "reuploading")
ENTANGLEMENTS = ("linear", "reverse_linear", "circular", "full", "pairwise", "sca")
#: Hard cap for the spec itself; targets apply their own, tighter limits (ideal: 20).
MAX_SPEC_QUBITS = 64
MAX_REPS = 50

_SPARSE_TERM = re.compile(r"([IXYZ])(\d+)")


def _normalise_observable(label: str, num_qubits: int) -> str:
    """Accept a dense Qiskit label ('IIZ', rightmost = qubit 0) or a sparse one ('Z0', 'Z0 Z1',
    'X2Y3') and return the dense label."""
    if not isinstance(label, str) or not label.strip():
        raise ValueError(f"CircuitSpec.observables: {label!r} is not a Pauli label")
    text = label.strip().upper()
    if re.fullmatch(r"[IXYZ]+", text) and not re.search(r"\d", text):
        if len(text) != num_qubits:
            raise ValueError(
                f"CircuitSpec.observables: dense label {label!r} has {len(text)} characters, "
                f"expected num_qubits={num_qubits} (or use the sparse form, e.g. 'Z0', 'Z0 Z1')"
            )
        return text
    compact = text.replace(" ", "").replace("*", "")
    terms = _SPARSE_TERM.findall(compact)
    if not terms or "".join(p + q for p, q in terms) != compact:
        raise ValueError(
            f"CircuitSpec.observables: cannot parse {label!r}; use a dense label like 'IIZ' or a "
            "sparse one like 'Z0', 'Z0 Z1', 'X2Y3'"
        )
    chars = ["I"] * num_qubits
    for pauli, qubit in terms:
        q = int(qubit)
        if q >= num_qubits:
            raise ValueError(
                f"CircuitSpec.observables: {label!r} names qubit {q}, but num_qubits={num_qubits}"
            )
        if chars[num_qubits - 1 - q] != "I":
            raise ValueError(f"CircuitSpec.observables: {label!r} names qubit {q} twice")
        chars[num_qubits - 1 - q] = pauli
    return "".join(chars)


@dataclass(frozen=True)
class CircuitSpec:
    """What the quantum block computes. Validated on construction; saved as JSON next to weights.

    Attributes:
        num_qubits: width of the circuit; also the number of input angles.
        encoding: ``angle`` (one RY(x_i) layer, then the ansatz) or ``reuploading`` (the RY(x_i)
            layer is repeated before every ansatz repetition: more expressive in the inputs).
        ansatz: one of :data:`ANSATZE`.
        reps: repetitions of the ansatz's rotation + entanglement block.
        entanglement: Qiskit's entanglement strategy for the ansatz, one of :data:`ENTANGLEMENTS`.
        observables: Pauli labels measured as outputs; default Z on each qubit.
    """

    num_qubits: int = 4
    encoding: str = "angle"
    ansatz: str = "real_amplitudes"
    reps: int = 2
    entanglement: str = "reverse_linear"
    observables: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        n = self.num_qubits
        if isinstance(n, bool) or not isinstance(n, int):
            raise ValueError(f"CircuitSpec.num_qubits must be an integer, got {n!r}")
        if not 1 <= n <= MAX_SPEC_QUBITS:
            raise ValueError(
                f"CircuitSpec.num_qubits must be between 1 and {MAX_SPEC_QUBITS}, got {n}"
            )
        if self.encoding not in ENCODINGS:
            raise ValueError(
                f"CircuitSpec.encoding: unknown {self.encoding!r}; allowed: {', '.join(ENCODINGS)}"
            )
        if self.ansatz not in ANSATZE:
            raise ValueError(
                f"CircuitSpec.ansatz: unknown {self.ansatz!r}; allowed: {', '.join(ANSATZE)}"
            )
        if isinstance(self.reps, bool) or not isinstance(self.reps, int):
            raise ValueError(f"CircuitSpec.reps must be an integer, got {self.reps!r}")
        if not 1 <= self.reps <= MAX_REPS:
            raise ValueError(f"CircuitSpec.reps must be between 1 and {MAX_REPS}, got {self.reps}")
        if self.entanglement not in ENTANGLEMENTS:
            raise ValueError(
                f"CircuitSpec.entanglement: unknown {self.entanglement!r}; "
                f"allowed: {', '.join(ENTANGLEMENTS)}"
            )
        observables = self.observables
        if isinstance(observables, str):
            observables = (observables,)
        if not observables:
            observables = tuple(f"Z{q}" for q in range(n))
        dense = tuple(_normalise_observable(o, n) for o in observables)
        object.__setattr__(self, "observables", dense)

    # -- derived sizes -------------------------------------------------------------------------
    @property
    def num_inputs(self) -> int:
        return self.num_qubits

    @property
    def num_outputs(self) -> int:
        return len(self.observables)

    @property
    def num_weights(self) -> int:
        return _num_weights(self)

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["observables"] = list(self.observables)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CircuitSpec":
        if isinstance(data, dict) and "observables" in data:
            data = {**data, "observables": tuple(data["observables"])}
        return config_from_dict(cls, data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "CircuitSpec":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"CircuitSpec: not valid JSON ({exc})") from None
        return cls.from_dict(data)


def _ansatz_layers(spec: CircuitSpec) -> list[QuantumCircuit]:
    """The ansatz cut into its layers (rotation, entanglement, rotation, ...), using Qiskit's own
    builder with barriers as cut marks, so entanglement strategies like 'sca' stay Qiskit's."""
    builder = ANSATZE[spec.ansatz]
    full = builder(spec.num_qubits, entanglement=spec.entanglement, reps=spec.reps,
                   insert_barriers=True, parameter_prefix="w")
    layers: list[QuantumCircuit] = []
    current = full.copy_empty_like()
    for instruction in full.data:
        if instruction.operation.name == "barrier":
            layers.append(current)
            current = full.copy_empty_like()
        else:
            current.append(instruction)
    layers.append(current)
    return layers


def build_circuit(spec: CircuitSpec) -> tuple[QuantumCircuit, ParameterVector, ParameterVector]:
    """Build the block's circuit. Returns ``(circuit, inputs, weights)``.

    ``weights`` follows the order in which weight parameters first appear in the circuit, which is
    the order of :attr:`QuantumBlock.weight`.
    """
    n = spec.num_qubits
    inputs = ParameterVector("inputs", n)
    layers = _ansatz_layers(spec)
    # Rotation layers sit at even positions; entanglement layers at odd ones.
    body = QuantumCircuit(n, name=f"qhybrid_{spec.ansatz}")

    def encode() -> None:
        for q in range(n):
            body.ry(inputs[q], q)

    encode()
    for i, layer in enumerate(layers):
        if spec.encoding == "reuploading" and i > 0 and i % 2 == 0 and i < len(layers) - 1:
            encode()
        body.compose(layer, inplace=True)
    # Rename the ansatz parameters into one 'weights' vector in order of first appearance.
    old = []
    for instruction in body.data:
        for p in instruction.operation.params:
            for par in getattr(p, "parameters", ()):
                if par.name.startswith("w[") and par not in old:
                    old.append(par)
    weights = ParameterVector("weights", len(old))
    body.assign_parameters(dict(zip(old, weights)), inplace=True)
    return body, inputs, weights


@lru_cache(maxsize=256)
def _num_weights(spec: CircuitSpec) -> int:
    return len(build_circuit(spec)[2])


def build_observables(spec: CircuitSpec) -> list[SparsePauliOp]:
    """The block's outputs as Qiskit operators, one per entry of ``spec.observables``."""
    return [SparsePauliOp(label) for label in spec.observables]
