"""The quantum block and everything that evaluates it."""

from qhybrid.quantum.block import QuantumBlock
from qhybrid.quantum.circuits import (
    ANSATZE,
    ENCODINGS,
    ENTANGLEMENTS,
    CircuitSpec,
    build_circuit,
    build_observables,
    two_qubit_gate_count,
)
from qhybrid.quantum.primitives.exact import (
    MAX_IDEAL_QUBITS,
    CompiledCircuit,
    ExactEstimator,
    ExactEstimatorGradient,
    UnsupportedCircuitError,
)
from qhybrid.quantum.targets import Target, parse_target

__all__ = [
    "ANSATZE", "ENCODINGS", "ENTANGLEMENTS", "MAX_IDEAL_QUBITS", "CircuitSpec", "CompiledCircuit",
    "ExactEstimator", "ExactEstimatorGradient", "QuantumBlock", "Target", "UnsupportedCircuitError",
    "build_circuit", "build_observables", "parse_target", "two_qubit_gate_count",
]
