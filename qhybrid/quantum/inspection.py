"""``qhybrid circuits inspect``: what a model's circuit becomes on a backend.

Transpiles the quantum block's circuit (from a trained model or a bare ``CircuitSpec`` JSON) for a
fake backend exactly as the ``fake:`` target does, prints logical vs transpiled depth and
two-qubit gate counts, the chosen layout and an estimated duration from the backend's gate times,
and writes ``circuits/<model>/<backend>.qasm`` (OpenQASM 3), ``.txt`` and ``.png`` drawings and
``.json`` statistics.
"""

from __future__ import annotations

import json
from pathlib import Path

from qiskit import qasm3

from qhybrid import io
from qhybrid.quantum.circuits import CircuitSpec, build_circuit, two_qubit_gate_count
from qhybrid.quantum.noise_snapshots import load_snapshot
from qhybrid.quantum.primitives.aer import IsaProgram, noise_source_for_backend


def inspect_circuit(circuit_spec: CircuitSpec, name: str, *, backend: str = "fake_torino", noise_model=None,
                    optimization_level: int = 2, seed: int = 0, out: str | Path = "circuits") -> dict:
    """Transpile ``circuit_spec`` for ``backend`` (or a noise snapshot's coupling map) and write the
    files into ``out/name/``; ``name`` says where the circuit came from (a model folder or a JSON)."""
    source = load_snapshot(noise_model) if noise_model else noise_source_for_backend(backend)
    circuit, _, _ = build_circuit(circuit_spec)
    program = IsaProgram(circuit, source, optimization_level, seed)
    isa = program.isa
    logical_ops = circuit.count_ops()
    isa_ops = isa.count_ops()
    duration = None
    if source.backend is not None:
        try:
            duration = float(isa.estimate_duration(source.backend.target, unit="s"))
        except Exception:  # noqa: BLE001 - missing gate durations: report none
            duration = None
    stats = {
        "source": name,
        "backend": source.name + (" (snapshot)" if noise_model else ""),
        "optimization_level": optimization_level,
        "seed_transpiler": seed,
        "spec": circuit_spec.to_dict(),
        "logical": {"qubits": circuit.num_qubits, "depth": circuit.depth(),
                    "two_qubit_gates": two_qubit_gate_count(circuit),
                    "ops": dict(logical_ops)},
        "transpiled": {"qubits_used": len(program.active), "depth": isa.depth(),
                       "two_qubit_gates": two_qubit_gate_count(isa),
                       "ops": dict(isa_ops), "layout": program.physical,
                       "estimated_duration_us": None if duration is None else duration * 1e6},
        "basis_gates": source.basis_gates,
    }
    folder = Path(out) / name
    base = source.name + ("-snapshot" if noise_model else "")
    io.write_text(folder / f"{base}.qasm", qasm3.dumps(isa) + "\n")
    io.write_text(folder / f"{base}.txt", str(isa.draw("text", idle_wires=False, fold=120)) + "\n")
    plt = io.pyplot()  # the Agg backend: no display needed
    fig = isa.draw("mpl", idle_wires=False, fold=60, scale=0.6)
    io.save_figure(fig, folder / f"{base}.png")
    plt.close(fig)
    io.write_json(folder / f"{base}.json", stats)
    t, lg = stats["transpiled"], stats["logical"]
    text = (
        f"{name} on {stats['backend']} (optimisation level {optimization_level}, seed {seed}):\n"
        f"  logical:    {lg['qubits']} qubits, depth {lg['depth']}, {lg['two_qubit_gates']} two-qubit gates\n"
        f"  transpiled: depth {t['depth']}, {t['two_qubit_gates']} two-qubit gates, {t['qubits_used']} physical qubits "
        f"used, gates {json.dumps(t['ops'])}\n"
        f"  layout (logical -> physical): {dict(enumerate(t['layout']))}\n"
        f"  estimated duration: " + ("unknown (no gate times)" if duration is None else f"{duration * 1e6:.2f} us")
    )
    return {"stats": stats, "text": text, "folder": str(folder),
            "files": [f"{base}.qasm", f"{base}.txt", f"{base}.png", f"{base}.json"]}
