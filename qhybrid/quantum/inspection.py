"""``qhybrid circuits inspect``: what a model's circuit becomes on a backend.

Transpiles the quantum block's circuit (from a trained model or a bare ``CircuitSpec`` JSON) for a
fake backend (or a noise snapshot) exactly as the ``fake:`` target does, prints logical vs
transpiled depth and two-qubit gate counts, the chosen layout, an estimated duration from the
backend's gate times and an error budget from its calibration (per used qubit and coupler, and
an estimated circuit fidelity split into two-qubit / one-qubit / readout shares), and writes
``circuits/<model>/<backend>.qasm`` (OpenQASM 3), ``.txt`` and ``.png`` drawings and ``.json``
statistics. The output names where the calibration came from (the fake backend of this
qiskit-ibm-runtime, or a snapshot file) and its date, since both decide the layout and the budget.

Given a model's trained circuit weights it also writes ``<backend>-bound.qasm``: the ISA circuit
with those weights assigned and only the block's inputs left as ``input float[64]`` parameters,
so the trained block can be run outside qhybrid.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from qiskit import qasm3

from qhybrid import io
from qhybrid.errors import InputError, param
from qhybrid.quantum.calibration import error_budget, format_budget
from qhybrid.quantum.circuits import CircuitSpec, build_circuit, two_qubit_gate_count
from qhybrid.quantum.noise_snapshots import load_snapshot
from qhybrid.quantum.primitives.aer import (
    IsaProgram,
    fake_backend,
    noise_source_for_backend,
)
from qhybrid.quantum.targets import noise_source


def inspect_circuit(circuit_spec: CircuitSpec, name: str, *, backend: str | None = None, noise_model=None,
                    optimization_level: int = 2, seed: int = 0, out: str | Path = "circuits",
                    weights=None) -> dict:
    """Transpile ``circuit_spec`` for ``backend`` (or a noise snapshot) and write the files into
    ``out/name/``; ``name`` says where the circuit came from (a model folder or a JSON). ``weights``
    (the trained circuit weights, in :attr:`QuantumBlock.weight` order) adds ``-bound.qasm``."""
    source = resolve_source(backend, noise_model)
    circuit, _, weight_params = build_circuit(circuit_spec)
    program = IsaProgram(circuit, source, optimization_level, seed)
    target = source.layout_target
    duration = _duration(program.isa, target)
    budget = None if target is None else error_budget(program.isa, program.active, program.physical, target,
                                                      source.calibration)
    stats = _stats(circuit_spec, name, circuit, program, source, noise_model, optimization_level, seed, duration)
    stats["error_budget"] = budget
    folder = Path(out) / name
    base = source.name + ("-snapshot" if noise_model else "")
    files = _write_circuit_files(program.isa, folder, base)
    if weights is not None:
        stats["bound_qasm"] = _write_bound(program.isa, weight_params, weights, folder / f"{base}-bound.qasm")
        files.insert(1, f"{base}-bound.qasm")
    io.write_json(folder / f"{base}.json", stats)
    files.append(f"{base}.json")
    return {"stats": stats, "text": _text(stats, duration), "folder": str(folder), "files": files}


def resolve_source(backend: str | None, noise_model):
    """The NoiseSource to inspect. A snapshot holds one backend's calibration, so an explicit
    ``backend`` that names another one is refused rather than silently replaced."""
    if not noise_model:
        if not backend:
            raise InputError(f"give {param('backend')} (a fake backend, e.g. fake_torino) or "
                             f"{param('noise_model')} (a snapshot file)")
        return noise_source_for_backend(backend)
    source = load_snapshot(noise_model)
    if backend and fake_backend(backend).name != source.name:
        raise InputError(f"{param('backend')} {backend} differs from the backend of snapshot {noise_model} "
                         f"({source.name}); drop {param('backend')} or give a snapshot of {backend}")
    return source


def _duration(isa, target) -> float | None:
    if target is None:
        return None
    try:
        return float(isa.estimate_duration(target, unit="s"))
    except Exception:  # noqa: BLE001 - missing gate durations: report none
        return None


def calibration_source(source, noise_model) -> dict:
    """Where the layout's and the budget's calibration came from, for the text and the JSON: the
    targets' :func:`~qhybrid.quantum.targets.noise_source` description, plus the snapshot's format
    version and creation."""
    described = noise_source(f"fake:{source.name}", {"noise_model": str(noise_model)} if noise_model else {})
    origin = source.origin or {}
    return {**described, "file": described.get("file"), "date": described.get("calibration_date"),
            "format_version": origin.get("format_version"), "created": origin.get("created"),
            "versions": origin.get("versions") or {"qiskit-ibm-runtime": described.get("qiskit-ibm-runtime")}}


def _stats(spec, name, circuit, program, source, noise_model, optimization_level, seed, duration) -> dict:
    isa = program.isa
    return {
        "source": name,
        "backend": source.name + (" (snapshot)" if noise_model else ""),
        "calibration": calibration_source(source, noise_model),
        "optimization_level": optimization_level,
        "seed_transpiler": seed,
        "spec": spec.to_dict(),
        "logical": {"qubits": circuit.num_qubits, "depth": circuit.depth(),
                    "two_qubit_gates": two_qubit_gate_count(circuit),
                    "ops": dict(circuit.count_ops())},
        "transpiled": {"qubits_used": len(program.active), "depth": isa.depth(),
                       "two_qubit_gates": two_qubit_gate_count(isa),
                       "ops": dict(isa.count_ops()), "layout": program.physical,
                       "estimated_duration_us": None if duration is None else duration * 1e6},
        "basis_gates": source.basis_gates,
    }


def _write_circuit_files(isa, folder: Path, base: str) -> list[str]:
    io.write_text(folder / f"{base}.qasm", qasm3.dumps(isa) + "\n")
    io.write_text(folder / f"{base}.txt", str(isa.draw("text", idle_wires=False, fold=120)) + "\n")
    plt = io.pyplot()  # the Agg backend: no display needed
    fig = isa.draw("mpl", idle_wires=False, fold=60, scale=0.6)
    io.save_figure(fig, folder / f"{base}.png")
    plt.close(fig)
    return [f"{base}.qasm", f"{base}.txt", f"{base}.png"]


# --- the ISA circuit with trained weights -------------------------------------------------------
def _write_bound(isa, weight_params, weights, path: Path) -> dict:
    """Write the ISA circuit with ``weights`` assigned; the inputs stay ``input float[64]``
    parameters. Returns the file and the QASM name of each logical input, in qubit order."""
    values = [float(v) for v in weights]
    if len(values) != len(weight_params):
        raise InputError(f"the model has {len(values)} circuit weights but its circuit has {len(weight_params)} "
                         "weight parameters; the checkpoint is damaged")
    by_name = dict(zip((p.name for p in weight_params), values))
    bound = isa.assign_parameters({p: by_name[p.name] for p in isa.parameters if p.name in by_name})
    text = qasm3.dumps(bound) + "\n"
    io.write_text(path, text)
    # the exporter declares the remaining parameters in circuit order (inputs[0], inputs[1], ...)
    declared = re.findall(r"^input float\[64\] (\S+);", text, flags=re.MULTILINE)
    inputs = {p.index: qasm_name for p, qasm_name in zip(bound.parameters, declared)}
    return {"file": path.name, "inputs": [inputs.get(k) for k in range(max(inputs, default=-1) + 1)]}


# --- text ---------------------------------------------------------------------------------------
def _text(stats: dict, duration: float | None) -> str:
    t, lg, cal = stats["transpiled"], stats["logical"], stats["calibration"]
    lines = [
        (f"{stats['source']} on {stats['backend']} (optimisation level {stats['optimization_level']}, "
         f"seed {stats['seed_transpiler']}):"),
        "  calibration: " + _calibration_text(cal),
        f"  logical:    {lg['qubits']} qubits, depth {lg['depth']}, {lg['two_qubit_gates']} two-qubit gates",
        (f"  transpiled: depth {t['depth']}, {t['two_qubit_gates']} two-qubit gates, {t['qubits_used']} physical qubits "
         f"used, gates {json.dumps(t['ops'])}"),
        f"  layout (logical -> physical): {dict(enumerate(t['layout']))}",
        "  estimated duration: " + ("unknown (no gate times)" if duration is None else f"{duration * 1e6:.2f} us"),
    ]
    budget = stats["error_budget"]
    lines += format_budget(budget) if budget else [
        ("  error budget: unavailable (a version-1 snapshot holds no calibration; write it again with "
         "'qhybrid noise snapshot <backend>')")]
    bound = stats.get("bound_qasm")
    if bound:
        lines.append(f"  trained weights bound: {bound['file']} (inputs left as input float[64]: "
                     f"{', '.join(n or '?' for n in bound['inputs'])})")
    return "\n".join(lines)


def _calibration_text(cal: dict) -> str:
    date = cal["date"] or "date unknown"
    if cal["kind"] != "snapshot":
        return (f"fake backend {cal['backend']} of qiskit-ibm-runtime {cal['versions']['qiskit-ibm-runtime']}, "
                f"calibrated {date}")
    note = "" if cal["format_version"] != 1 else \
        " (version 1: no gate errors or durations, so the layout may differ from the live fake backend)"
    return f"snapshot {cal['file']} of {cal['backend']}, calibrated {date}{note}"
