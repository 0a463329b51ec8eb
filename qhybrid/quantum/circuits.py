"""One description of the quantum block's circuit: :class:`CircuitSpec` -> Qiskit circuit + observables.

Every target (ideal statevector, Aer with a fake backend's noise, IBM hardware) starts from the
circuit built here, so the trained weights mean the same thing everywhere. The circuit uses two
``ParameterVector`` objects: ``inputs`` (one angle per qubit, fed by the classical network) and
``weights`` (the trainable circuit parameters, in circuit order).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from qiskit.circuit import Gate, ParameterVector, QuantumCircuit
from qiskit.circuit.library import efficient_su2, real_amplitudes
from qiskit.quantum_info import SparsePauliOp

from qhybrid.config import Config
from qhybrid.errors import InputError, one_line


def _layered(num_qubits: int, reps: int, parameter_prefix: str, rotation, entangle, final_rotation: bool,
             extra_per_layer: int = 0):
    """Build rotation | entanglement | rotation | ... with barriers between layers (the cut marks
    :func:`_ansatz_layers` uses). ``rotation(circuit, layer, next_parameter)`` and
    ``entangle(circuit, layer)`` add one layer each."""
    # count the parameters first, so they form one ParameterVector like Qiskit's builders
    counter = QuantumCircuit(num_qubits)
    count = [0]

    def dummy_param():
        count[0] += 1
        return 0.0

    for layer in range(reps + int(final_rotation)):
        rotation(counter, layer, dummy_param)
    params = iter(ParameterVector(parameter_prefix, count[0] + reps * extra_per_layer))
    circuit = QuantumCircuit(num_qubits)
    for layer in range(reps):
        rotation(circuit, layer, lambda: next(params))
        circuit.barrier()
        entangle(circuit, layer)
        if layer < reps - 1 or final_rotation:
            circuit.barrier()
    if final_rotation:
        rotation(circuit, reps, lambda: next(params))
    return circuit


def _ring_range(num_qubits: int, layer: int) -> int:
    """The CNOT range of layer ``layer`` in strongly entangling layers: 1, 2, ..., n-1, 1, ..."""
    return 1 if num_qubits < 2 else layer % (num_qubits - 1) + 1


def strongly_entangling(num_qubits: int, entanglement=None, reps: int = 1, insert_barriers: bool = True,
                        parameter_prefix: str = "w") -> QuantumCircuit:
    """Strongly entangling layers (Schuld et al. 2020, PennyLane's ``StronglyEntanglingLayers``):
    per layer a general rotation Rot = RZ RY RZ on every qubit, then a CNOT ring whose range
    changes from layer to layer. ``entanglement`` is ignored: the ring schedule is the ansatz."""
    def rotation(circuit, layer, param):
        for q in range(num_qubits):
            circuit.rz(param(), q)
            circuit.ry(param(), q)
            circuit.rz(param(), q)

    def entangle(circuit, layer):
        if num_qubits > 1:
            r = _ring_range(num_qubits, layer)
            for q in range(num_qubits):
                if num_qubits > 2 or q == 0:  # two qubits: one CNOT, not a cancelling pair
                    circuit.cx(q, (q + r) % num_qubits)

    return _layered(num_qubits, reps, parameter_prefix, rotation, entangle, final_rotation=False)


def strongly_entangling_edited(num_qubits: int, entanglement=None, reps: int = 1, insert_barriers: bool = True,
                               parameter_prefix: str = "w") -> QuantumCircuit:
    """A lighter edit of :func:`strongly_entangling`: RY RZ per qubit (2 parameters, not 3) and a
    CZ ring with the same changing range (CZ is native on IBM Heron devices and symmetric, so the
    transpiler adds no direction fixes). qhybrid's reading of the paper's "edited" ansatz."""
    def rotation(circuit, layer, param):
        for q in range(num_qubits):
            circuit.ry(param(), q)
            circuit.rz(param(), q)

    def entangle(circuit, layer):
        if num_qubits > 1:
            r = _ring_range(num_qubits, layer)
            pairs = {tuple(sorted((q, (q + r) % num_qubits))) for q in range(num_qubits)}
            for a, b in sorted(pairs):
                circuit.cz(a, b)

    return _layered(num_qubits, reps, parameter_prefix, rotation, entangle, final_rotation=False)


def simplified_two_design(num_qubits: int, entanglement=None, reps: int = 1, insert_barriers: bool = True,
                          parameter_prefix: str = "w") -> QuantumCircuit:
    """Simplified 2-design (Cerezo et al. 2021, the barren-plateau study; PennyLane's
    ``SimplifiedTwoDesign``): an RY layer, then per repetition CZ on pairs (0,1), (2,3), ... with
    RY on their qubits, and CZ on pairs (1,2), (3,4), ... with RY on theirs. In the layered form
    the "entanglement" layer holds CZ even, RY even, CZ odd and the "rotation" layer RY odd.
    ``entanglement`` is ignored."""
    even = [(q, q + 1) for q in range(0, num_qubits - 1, 2)]
    odd = [(q, q + 1) for q in range(1, num_qubits - 1, 2)]
    state = {"param": None}

    def rotation(circuit, layer, param):
        state["param"] = param  # the entanglement layer's RYs draw from the same vector
        qubits = range(num_qubits) if layer == 0 else [q for pair in odd for q in pair]
        for q in qubits:
            circuit.ry(param(), q)

    def entangle(circuit, layer):
        for a, b in even:
            circuit.cz(a, b)
        for q in [q for pair in even for q in pair]:
            circuit.ry(state["param"](), q)
        for a, b in odd:
            circuit.cz(a, b)

    return _layered(num_qubits, reps, parameter_prefix, rotation, entangle, final_rotation=True,
                    extra_per_layer=2 * len(even))


#: Ansatz name -> builder: Qiskit's functions (not the deprecated library classes) and three
#: ansätze of the quantum machine-learning literature built here in the same layered form.
ANSATZE = {
    "real_amplitudes": real_amplitudes,
    "efficient_su2": efficient_su2,
    "strongly_entangling": strongly_entangling,
    "strongly_entangling_edited": strongly_entangling_edited,
    "simplified_two_design": simplified_two_design,
}
#: Ansätze whose entanglement pattern is fixed (CircuitSpec.entanglement does not apply).
FIXED_ENTANGLEMENT = ("strongly_entangling", "strongly_entangling_edited", "simplified_two_design")
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
class CircuitSpec(Config):
    """What the quantum block computes. Validated on construction; saved as JSON next to weights
    (``to_dict``/``from_dict``, ``to_json``/``from_json`` from :class:`~qhybrid.config.Config`;
    ``observables`` travels as a list of dense labels).

    Attributes:
        num_qubits: width of the circuit; also the number of input angles.
        encoding: ``angle`` (one RY(x_i) layer, then the ansatz) or ``reuploading`` (the RY(x_i)
            layer is repeated before every ansatz repetition: more expressive in the inputs).
        ansatz: one of :data:`ANSATZE`.
        reps: repetitions of the ansatz's rotation + entanglement block.
        entanglement: Qiskit's entanglement strategy for the ansatz, one of :data:`ENTANGLEMENTS`
            (ignored by the ansätze in :data:`FIXED_ENTANGLEMENT`, which define their own).
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
        if not isinstance(observables, (list, tuple)):
            raise ValueError(
                f"CircuitSpec.observables must be a list of Pauli labels, got {observables!r}"
            )
        if not observables:
            observables = tuple(f"Z{q}" for q in range(n))
        self._fill("observables", tuple(_normalise_observable(o, n) for o in observables))

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

    # -- files ---------------------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | Path) -> CircuitSpec:
        """A CircuitSpec JSON file; a folder, a missing file or bad content is one InputError."""
        path = Path(path)
        if path.is_dir():
            raise InputError(f"circuit spec {path} is a folder; give a CircuitSpec JSON file")
        if not path.is_file():
            raise InputError(f"circuit spec {path} not found")
        try:
            return cls.from_json(path.read_text())
        except UnicodeDecodeError as exc:
            raise InputError(f"{path} is not a CircuitSpec JSON file ({one_line(exc, with_type=True)})") from None
        except ValueError as exc:  # our own validation: already one line naming the field
            raise InputError(f"{path}: {one_line(exc)}") from None


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


def two_qubit_gate_count(circuit: QuantumCircuit) -> int:
    """Number of two-qubit gates in ``circuit`` (every gate on two qubits: ``cx``, ``cz``, ``ecr``,
    ``rzz``, ``swap``, ``iswap``, ``cp``, ...), the cost that dominates on hardware.

    Only :class:`~qiskit.circuit.Gate` s count: barriers, measurements, resets and delays are
    instructions, not gates, whatever their width. The one counter for the logical circuit, the
    transpiled (ISA) circuit, the ansatz study and job records, so their numbers agree.
    """
    return sum(1 for instruction in circuit.data
               if isinstance(instruction.operation, Gate) and instruction.operation.num_qubits == 2)
