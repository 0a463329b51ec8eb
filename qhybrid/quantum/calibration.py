"""A backend's calibration as JSON, the ``Target`` rebuilt from it, and a circuit's error budget.

Why a JSON form of the ``Target``: the transpiler picks qubits from the Target's gate and readout
errors (VF2Layout / VF2PostLayout score candidate layouts by them), so a noise snapshot that kept
only the coupling map and basis gates chose other qubits than the live fake backend. The form here
keeps exactly what the transpiler and an error budget read:

* per instruction (in the Target's order) its kind, its width and, per qargs (in the Target's
  order), ``[qargs, error, duration]`` (``[qargs]`` where the Target holds no properties);
* per qubit T1, T2 and frequency (the Target's ``QubitProperties``) and, when the backend's
  properties give them, the asymmetric readout errors ``prob_meas0_prep1`` (P(0|1)) and
  ``prob_meas1_prep0`` (P(1|0));
* ``dt``, the timing constraints and the calibration date.

Floats survive the JSON round trip exactly (``repr``), so the rebuilt Target transpiles a circuit
to the same layout as the live one for the same seed (tested on fake_kyiv).
"""

from __future__ import annotations

import math

#: Instructions the Target holds as classes (no qargs: allowed everywhere).
CONTROL_FLOW = ("if_else", "for_loop", "while_loop", "switch_case")
#: Per-qubit readout probabilities copied from the backend's properties (when it has them).
READOUT_PROBS = ("prob_meas0_prep1", "prob_meas1_prep0")
TIMING = ("granularity", "min_length", "pulse_alignment", "acquire_alignment")


# --- backend -> JSON ----------------------------------------------------------------------------
def calibration_date(backend) -> str | None:
    """When the backend's properties were last updated (ISO 8601), or None when it has none."""
    try:
        props = backend.properties()
        return props.last_update_date.isoformat() if props is not None else None
    except Exception:  # noqa: BLE001 - a backend without (readable) properties has no date
        return None


def calibration_of(backend, date: str | None) -> dict:
    """The JSON calibration of a (fake) BackendV2: everything :func:`target_from_calibration`
    needs, plus the readout probabilities an error budget reports."""
    target = backend.target
    return {
        "date": date,
        "num_qubits": target.num_qubits,
        "dt": target.dt,
        **{k: getattr(target, k) for k in TIMING},
        "concurrent_measurements": target.concurrent_measurements,
        "qubits": _qubits(backend),
        "instructions": [_instruction(target, name) for name in target.operation_names],
    }


def _qubits(backend) -> list[dict]:
    """Per qubit the values that are present (T1/T2 in s, frequency in Hz, readout probabilities)."""
    props_list = backend.target.qubit_properties or [None] * backend.target.num_qubits
    try:
        properties = backend.properties()
    except Exception:  # noqa: BLE001 - a backend without properties: no readout probabilities
        properties = None
    rows = []
    for q, props in enumerate(props_list):
        row = {k: getattr(props, k, None) for k in ("t1", "t2", "frequency")}
        if properties is not None:
            measured = properties.qubit_property(q) if q < len(properties.qubits) else {}
            row.update({k: measured[k][0] for k in READOUT_PROBS if k in measured})
        rows.append({k: v for k, v in row.items() if v is not None})
    return rows


def _instruction(target, name: str) -> dict:
    from qiskit.circuit import Gate
    from qiskit.circuit.library import get_standard_gate_name_mapping

    op = target.operation_from_name(name)
    if isinstance(op, type):  # control flow: a class, allowed on any qubits
        return {"name": name, "kind": "control_flow", "properties": None}
    standard = get_standard_gate_name_mapping().get(name)
    kind = "standard" if standard is not None and type(standard) is type(op) else \
        "gate" if isinstance(op, Gate) else "instruction"
    if kind != "standard" and op.params:
        raise ValueError(f"instruction {name!r} has parameters; only parameterless custom instructions are kept")
    entry = {"name": name, "kind": kind, "num_qubits": op.num_qubits, "num_clbits": op.num_clbits}
    props = target[name]
    # [qargs] alone where the Target has no properties (delay): None, not empty properties
    entry["properties"] = None if list(props) == [None] else [
        [list(qargs)] if p is None else [list(qargs), p.error, p.duration] for qargs, p in props.items()]
    return entry


def backend_summary(backend) -> dict:
    """One line of ``qhybrid backends``: qubits, the two-qubit gate(s), median two-qubit and
    readout errors, median T1 (us) and the calibration date."""
    import statistics

    target = backend.target
    two_qubit = sorted(name for name in target.operation_names
                       if not isinstance(target.operation_from_name(name), type)
                       and target.operation_from_name(name).num_qubits == 2)
    t1 = [p.t1 for p in (target.qubit_properties or []) if p is not None and p.t1 is not None]
    return {
        "name": backend.name,
        "qubits": backend.num_qubits,
        "two_qubit_gate": "/".join(two_qubit) or None,
        "median_two_qubit_error": _median_error(target, two_qubit),
        "median_readout_error": _median_error(target, ["measure"]),
        "median_t1_us": statistics.median(t1) * 1e6 if t1 else None,
        "calibration_date": calibration_date(backend),
    }


def _median_error(target, names: list[str]) -> float | None:
    import statistics

    errors = [p.error for name in names if name in target.operation_names
              for p in target[name].values() if p is not None and p.error is not None]
    return statistics.median(errors) if errors else None


# --- JSON -> Target -----------------------------------------------------------------------------
def target_from_calibration(cal: dict):
    """A ``qiskit.transpiler.Target`` equal to the one :func:`calibration_of` read, for
    ``generate_preset_pass_manager(target=...)`` and ``estimate_duration``."""
    from qiskit.transpiler import InstructionProperties, QubitProperties, Target

    qubits = cal["qubits"]
    qubit_properties = [QubitProperties(t1=q.get("t1"), t2=q.get("t2"), frequency=q.get("frequency"))
                        for q in qubits] if qubits else None
    target = Target(num_qubits=int(cal["num_qubits"]), dt=cal["dt"], qubit_properties=qubit_properties,
                    concurrent_measurements=cal.get("concurrent_measurements"),
                    **{k: cal[k] for k in TIMING if cal.get(k) is not None})
    for entry in cal["instructions"]:
        op = _operation(entry)
        if entry["properties"] is None:
            target.add_instruction(op, name=entry["name"])
            continue
        props = {_qargs(row[0], target.num_qubits): None if len(row) == 1 else
                 InstructionProperties(duration=row[2], error=row[1]) for row in entry["properties"]}
        target.add_instruction(op, props, name=entry["name"])
    return target


def _qargs(qargs: list, num_qubits: int) -> tuple:
    """Checked qargs: the Target itself accepts qubits it does not have."""
    if not all(isinstance(q, int) and 0 <= q < num_qubits for q in qargs):
        raise ValueError(f"qargs {qargs} outside the {num_qubits} qubits")
    return tuple(qargs)


def _operation(entry: dict):
    from qiskit.circuit import Gate, Instruction
    from qiskit.circuit.controlflow import (
        ForLoopOp,
        IfElseOp,
        SwitchCaseOp,
        WhileLoopOp,
    )
    from qiskit.circuit.library import get_standard_gate_name_mapping

    name, kind = entry["name"], entry["kind"]
    if kind == "control_flow":
        return {"if_else": IfElseOp, "for_loop": ForLoopOp, "while_loop": WhileLoopOp,
                "switch_case": SwitchCaseOp}[name]
    if kind == "standard":
        return get_standard_gate_name_mapping()[name]
    if kind == "gate":
        return Gate(name, int(entry["num_qubits"]), [])
    return Instruction(name, int(entry["num_qubits"]), int(entry["num_clbits"]), [])


# --- error budget -------------------------------------------------------------------------------
def error_budget(isa, active: list[int], measured: list[int], target, cal: dict | None) -> dict:
    """What the calibration says about one ISA circuit on its physical qubits.

    ``active`` are the physical qubits the circuit uses, ``measured`` the physical qubit of each
    logical qubit (the block measures every logical qubit). The estimated fidelity is the product
    over the ISA circuit's gates of (1 - gate error) times the product over measured qubits of
    (1 - readout error): a rough figure that ignores decoherence while idle and crosstalk. The
    infidelity is split by shares of -log(fidelity), which add up across the three parts (shares
    of 1 - fidelity would not).
    """
    gates = _gate_errors(isa, target)
    readout = {q: _error(target, "measure", (q,)) for q in measured}
    parts = {"two_qubit": [e for _, qargs, e in gates if len(qargs) == 2],
             "one_qubit": [e for _, qargs, e in gates if len(qargs) == 1],
             "readout": list(readout.values())}
    logs = {k: -sum(math.log1p(-min(e or 0.0, 1 - 1e-12)) for e in v) for k, v in parts.items()}
    total = sum(logs.values())
    return {
        "calibration_date": (cal or {}).get("date"),
        "estimated_fidelity": math.exp(-total),
        "fidelity": {k: math.exp(-v) for k, v in logs.items()},
        "counts": {k: len(v) for k, v in parts.items()},
        "infidelity_share": {k: (v / total if total > 0 else 0.0) for k, v in logs.items()},
        "gates_without_error": sorted({name for name, _, e in gates if e is None}),
        "qubits": _qubit_rows(gates, active, measured, readout, target, cal),
        "couplers": _coupler_rows(gates),
    }


def _gate_errors(isa, target) -> list[tuple[str, tuple, float | None]]:
    """(name, physical qargs, error) of every gate of ``isa``; barriers and delays carry no error,
    and measurements are the readout part of the budget (on the measured qubits)."""
    rows = []
    for ins in isa.data:
        name = ins.operation.name
        if name in ("barrier", "delay", "measure"):
            continue
        qargs = tuple(isa.find_bit(q).index for q in ins.qubits)
        rows.append((name, qargs, _error(target, name, qargs)))
    return rows


def _error(target, name: str, qargs: tuple) -> float | None:
    if name not in target.operation_names:
        return None
    props = target[name].get(qargs)
    return None if props is None else props.error


def _qubit_rows(gates, active, measured, readout, target, cal) -> list[dict]:
    """Per used physical qubit: readout error (and P(0|1), P(1|0)), T1/T2 in us, 1q gate errors."""
    qubits = (cal or {}).get("qubits") or []
    one_qubit = sorted({name for name, qargs, _ in gates if len(qargs) == 1})
    rows = []
    for q in active:
        info = qubits[q] if q < len(qubits) else {}
        row = {"physical": q, "logical": measured.index(q) if q in measured else None,
               "readout_error": readout.get(q, _error(target, "measure", (q,))),
               **{k: info.get(k) for k in READOUT_PROBS},
               "t1_us": _us(info.get("t1")), "t2_us": _us(info.get("t2")),
               "gate_errors": {n: _error(target, n, (q,)) for n in one_qubit}}
        rows.append(row)
    return rows


def _coupler_rows(gates) -> list[dict]:
    """Per used coupler (and two-qubit gate): how often the circuit uses it, and its error."""
    rows: dict[tuple, dict] = {}
    for name, qargs, error in gates:
        if len(qargs) == 2:
            row = rows.setdefault((name, qargs), {"qubits": list(qargs), "gate": name, "count": 0, "error": error})
            row["count"] += 1
    return sorted(rows.values(), key=lambda r: (r["qubits"], r["gate"]))


def _us(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e6


def format_budget(budget: dict) -> list[str]:
    """The budget as a few printed lines (fidelity and split, then per qubit and per coupler)."""
    f, share, n = budget["fidelity"], budget["infidelity_share"], budget["counts"]
    lines = [
        (f"  error budget (calibration {budget['calibration_date'] or 'date unknown'}): estimated fidelity "
         f"{budget['estimated_fidelity']:.3f} = 2q gates {f['two_qubit']:.3f} ({n['two_qubit']}) x 1q gates "
         f"{f['one_qubit']:.3f} ({n['one_qubit']}) x readout {f['readout']:.3f} ({n['readout']} qubits)"),
        "    infidelity share (of -log F): " + ", ".join(
            f"{label} {share[k]:.0%}" for k, label in (("two_qubit", "2q"), ("one_qubit", "1q"), ("readout", "readout"))),
        "    per qubit (readout, P(0|1)/P(1|0), T1/T2 us, 1q errors): " + "; ".join(_qubit_text(r) for r in budget["qubits"]),
        "    per coupler (gate x count: error): " + ("; ".join(
            f"{a}-{b} {r['gate']} x{r['count']}: {_pct(r['error'])}" for r in budget["couplers"] for a, b in [r["qubits"]])
            or "none"),
    ]
    if budget["gates_without_error"]:
        lines.append(f"    no error in the calibration for: {', '.join(budget['gates_without_error'])} (counted as exact)")
    return lines


def _qubit_text(row: dict) -> str:
    probs = "" if row.get("prob_meas0_prep1") is None else \
        f" ({_pct(row['prob_meas0_prep1'])}/{_pct(row['prob_meas1_prep0'])})"
    times = f"{_num(row['t1_us'])}/{_num(row['t2_us'])}"
    gates = ",".join(f"{n} {_pct(e)}" for n, e in row["gate_errors"].items() if e)
    return f"q{row['physical']}: {_pct(row['readout_error'])}{probs} {times}" + (f" {gates}" if gates else "")


def _pct(value: float | None) -> str:
    return "?" if value is None else f"{value * 100:.2g}%"


def _num(value: float | None) -> str:
    return "?" if value is None else f"{value:.0f}"
