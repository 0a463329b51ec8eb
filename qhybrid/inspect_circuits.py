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

from . import io
from .errors import InputError

TWO_QUBIT = ("cz", "cx", "ecr", "rzz", "swap", "iswap")


def _spec_from_model(folder: Path):
    from . import checkpoint as ckpt
    from .quantum import CircuitSpec

    header = ckpt.read_header(folder, ("ldm", "vae"))
    cfg = header["config"]
    spec = cfg.get("denoiser", {}).get("quantum") if header["kind"] == "ldm" else cfg.get("quantum")
    kind = cfg.get("denoiser", {}).get("kind") if header["kind"] == "ldm" else "vae"
    if spec is None or (header["kind"] == "ldm" and kind != "hybrid"):
        raise InputError(f"{folder} has no quantum block (a {kind} model); give a hybrid LDM or a quantum VAE")
    return CircuitSpec.from_dict(spec), f"{folder.parent.name}_{folder.name}"


def inspect_circuit(model=None, spec=None, backend: str = "fake_torino", noise_model=None,
                    optimization_level: int = 2, seed: int = 0, out: str | Path = "circuits") -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from qiskit import qasm3

    from .noise import load_snapshot
    from .quantum import CircuitSpec, build_circuit
    from .quantum.noisy import IsaProgram, noise_source_for_backend

    if model:
        circuit_spec, name = _spec_from_model(Path(model))
    else:
        path = Path(spec)
        if path.is_dir():
            raise InputError(f"circuit spec {path} is a folder; give a CircuitSpec JSON file")
        if not path.is_file():
            raise InputError(f"circuit spec {path} not found")
        try:
            circuit_spec = CircuitSpec.from_json(path.read_text())
        except ValueError as exc:
            raise InputError(f"{path}: {exc}") from None
        name = path.stem
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
        "model": str(model) if model else str(spec),
        "backend": source.name + (" (snapshot)" if noise_model else ""),
        "optimization_level": optimization_level,
        "seed_transpiler": seed,
        "spec": circuit_spec.to_dict(),
        "logical": {"qubits": circuit.num_qubits, "depth": circuit.depth(),
                    "two_qubit_gates": int(sum(v for k, v in logical_ops.items() if k in TWO_QUBIT)),
                    "ops": dict(logical_ops)},
        "transpiled": {"qubits_used": len(program.active), "depth": isa.depth(),
                       "two_qubit_gates": int(sum(v for k, v in isa_ops.items() if k in TWO_QUBIT)),
                       "ops": dict(isa_ops), "layout": program.physical,
                       "estimated_duration_us": None if duration is None else duration * 1e6},
        "basis_gates": source.basis_gates,
    }
    folder = Path(out) / name
    base = source.name + ("-snapshot" if noise_model else "")
    io.write_text(folder / f"{base}.qasm", qasm3.dumps(isa) + "\n")
    io.write_text(folder / f"{base}.txt", str(isa.draw("text", idle_wires=False, fold=120)) + "\n")
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
