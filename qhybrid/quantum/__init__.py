"""The quantum block and everything that evaluates it."""

from .block import QuantumBlock
from .circuits import ANSATZE, ENCODINGS, ENTANGLEMENTS, CircuitSpec, build_circuit, build_observables
from .exact import (
    MAX_IDEAL_QUBITS,
    CompiledCircuit,
    ExactEstimator,
    ExactEstimatorGradient,
    UnsupportedCircuitError,
)
from .targets import Target, parse_target

__all__ = [
    "ANSATZE", "ENCODINGS", "ENTANGLEMENTS", "MAX_IDEAL_QUBITS", "CircuitSpec", "CompiledCircuit",
    "ExactEstimator", "ExactEstimatorGradient", "QuantumBlock", "Target", "UnsupportedCircuitError",
    "build_circuit", "build_observables", "parse_target",
]
