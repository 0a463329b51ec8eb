"""The ansatz study of arXiv 2508.09903, redone on qhybrid's circuits and the user's backends.

The paper compared five ansätze for trainability, entanglement and noise resilience before choosing
one for the quantum block. :func:`run_study` repeats that comparison for every (ansatz, qubits)
cell of a :class:`StudyConfig`:

* trainability - variance of the gradient of ``<Z0>`` (the spec's first observable, a local cost)
  over random inputs and weights (:func:`~qhybrid.quantum.analysis.gradient_variance`), and the
  barren-plateau decay rate: the least-squares slope of ``ln(variance)`` against the number of
  qubits, reported as "variance shrinks xb per added qubit" with ``b = exp(slope)``;
* entanglement - mean Meyer-Wallach entangling capability (0 = product states, 1 = maximal);
* expressibility - KL divergence of the circuit's fidelity distribution from Haar (75 bins; lower =
  more expressive; loses resolution near 10 qubits, flagged per qubit count);
* cost - number of weights, logical depth and two-qubit gates, and per backend the transpiled
  (ISA) depth and two-qubit gate count from the same transpilation the ``fake:`` target uses;
* noise resilience - per backend, mean and max ``|noisy - ideal|`` of the block's outputs (the
  spec's observables) over ``noise_inputs`` random rows (inputs and weights uniform in
  ``[0, 2 pi)``): noisy from :class:`~qhybrid.quantum.primitives.aer.NoisyEstimator` (shots, seeded), ideal
  from :class:`~qhybrid.quantum.primitives.exact.ExactEstimator`. The shot-noise floor (the error shots alone
  would give) is reported beside it.

Written to ``out_dir``: ``study.json`` (config + every number; its ``timing`` entry is the only
part that changes between runs with the same seed), ``study.md`` (main table, decay rates and a
recommendation computed from the numbers by a stated rule) and three PNG plots. Every random draw
comes from a ``SeedSequence`` of (seed, ansatz name, qubits, purpose), so a cell's numbers do not
depend on which other cells are in the study.
"""

from __future__ import annotations

import math
import numbers
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from qhybrid import io
from qhybrid.config import Config
from qhybrid.errors import InputError, one_line, param
from qhybrid.quantum.analysis import (
    entangling_capability,
    expressibility_of,
    gradient_variance,
    shot_noise_floor,
)
from qhybrid.quantum.circuits import (
    ANSATZE,
    ENCODINGS,
    ENTANGLEMENTS,
    FIXED_ENTANGLEMENT,
    MAX_REPS,
    CircuitSpec,
    build_circuit,
    build_observables,
    two_qubit_gate_count,
)
from qhybrid.quantum.primitives.aer import (
    NoisyEstimator,
    fake_backend,
    noise_source_for_backend,
)
from qhybrid.quantum.primitives.exact import ExactEstimator

__all__ = ["StudyConfig", "run_study", "STUDY_FILES", "RECOMMENDATION_NOISE_TOLERANCE"]

#: Largest width of the exact parts (statevector gradients, states for MW and expressibility).
MAX_STUDY_QUBITS = 20
#: Files :func:`run_study` writes into ``out_dir``.
STUDY_FILES = ("study.json", "study.md", "gradient_variance.png", "entanglement_expressibility.png",
               "noise.png")
#: The recommendation keeps ansätze whose noise error is within this factor of the best one.
RECOMMENDATION_NOISE_TOLERANCE = 1.5
#: Expressibility histogram bins (Sim et al. 2019; what :func:`expressibility_of` defaults to).
EXPRESSIBILITY_BINS = 75
#: A qubit count is flagged "unresolved" when Haar fidelities put more than this share of their
#: mass into the first expressibility bin: the KL estimate then stops discriminating.
_SATURATED_FIRST_BIN = 0.95
_NON_GATES = ("barrier", "measure", "delay", "reset")

# purposes for the per-cell seed sequences
_GRADIENT, _ENTANGLEMENT, _EXPRESSIBILITY, _NOISE_ROWS, _NOISE_SHOTS = range(5)


# ---------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------
def _as_tuple(name: str, value) -> tuple:
    if isinstance(value, (str, numbers.Integral)):
        value = (value,)
    try:
        items = tuple(value)
    except TypeError:
        raise InputError(f"StudyConfig.{name} must be a list, got {value!r}") from None
    if not items:
        raise InputError(f"StudyConfig.{name} must not be empty")
    return items


def _positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"StudyConfig.{name} must be an integer, got {value!r}")
    if value < minimum:
        raise InputError(f"StudyConfig.{name} must be at least {minimum}, got {value}")
    return int(value)


def _unique(items) -> tuple:
    return tuple(dict.fromkeys(items))


@dataclass(frozen=True)
class StudyConfig(Config):
    """What :func:`run_study` compares. Validated (and normalised) on construction; bad values
    raise :class:`~qhybrid.errors.InputError` (a ``ValueError``) naming the field. Its
    ``to_dict`` is the ``config`` entry of ``study.json``.

    Attributes:
        ansatze: names from :data:`~qhybrid.quantum.circuits.ANSATZE` (default: all five).
        qubits: circuit widths, 1..20 (the exact simulation's limit); sorted, duplicates dropped.
        reps: ansatz repetitions (as ``CircuitSpec.reps``).
        encoding: ``angle`` or ``reuploading`` (as ``CircuitSpec.encoding``).
        entanglement: Qiskit's entanglement strategy for ``real_amplitudes``/``efficient_su2``
            (ignored by the fixed-pattern ansätze); the ``CircuitSpec`` default.
        backends: fake backend names (``fake_torino``, ``FakeManila``, ``manila`` ...), stored
            canonical; each must have at least ``max(qubits)`` qubits.
        gradient_samples: random parameter rows for the gradient variance.
        entanglement_samples: random states for the Meyer-Wallach mean.
        expressibility_pairs: random state pairs for the expressibility histogram.
        noise_inputs: random input/weight rows evaluated on each backend and ideally.
        shots: shots per noisy circuit evaluation.
        optimization_level: transpiler preset level (0-3) for the ISA circuits.
        seed: master seed (transpiler seed too).

    ``backend_sizes`` (each backend's qubit count) is filled on construction; it is an
    attribute, not a field: neither saved nor compared.
    """

    ansatze: tuple[str, ...] = tuple(ANSATZE)
    qubits: tuple[int, ...] = (4, 6, 8, 10)
    reps: int = 3
    encoding: str = "angle"
    entanglement: str = "reverse_linear"
    backends: tuple[str, ...] = ("fake_torino",)
    gradient_samples: int = 200
    entanglement_samples: int = 200
    expressibility_pairs: int = 1000
    noise_inputs: int = 16
    shots: int = 1024
    optimization_level: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        ansatze = _unique(_as_tuple("ansatze", self.ansatze))
        unknown = [a for a in ansatze if a not in ANSATZE]
        if unknown:
            raise InputError(f"StudyConfig.ansatze: unknown {', '.join(map(repr, unknown))}; "
                             f"allowed: {', '.join(ANSATZE)}")
        self._fill("ansatze", ansatze)

        qubits = _as_tuple("qubits", self.qubits)
        for n in qubits:
            if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 1 <= n <= MAX_STUDY_QUBITS:
                raise InputError(f"StudyConfig.qubits: {n!r} is not a qubit count between 1 and "
                                 f"{MAX_STUDY_QUBITS} (the exact simulation's limit)")
        self._fill("qubits", tuple(sorted({int(n) for n in qubits})))

        self._fill("reps", _positive_int("reps", self.reps))
        if self.reps > MAX_REPS:
            raise InputError(f"StudyConfig.reps must be at most {MAX_REPS}, got {self.reps}")
        if self.encoding not in ENCODINGS:
            raise InputError(f"StudyConfig.encoding: unknown {self.encoding!r}; allowed: {', '.join(ENCODINGS)}")
        if self.entanglement not in ENTANGLEMENTS:
            raise InputError(f"StudyConfig.entanglement: unknown {self.entanglement!r}; "
                             f"allowed: {', '.join(ENTANGLEMENTS)}")
        self._fill("gradient_samples", _positive_int("gradient_samples", self.gradient_samples, 2))
        self._fill("entanglement_samples", _positive_int("entanglement_samples", self.entanglement_samples, 2))
        self._fill("expressibility_pairs", _positive_int("expressibility_pairs", self.expressibility_pairs, 2))
        self._fill("noise_inputs", _positive_int("noise_inputs", self.noise_inputs))
        self._fill("shots", _positive_int("shots", self.shots))
        if isinstance(self.optimization_level, bool) or self.optimization_level not in (0, 1, 2, 3):
            raise InputError(f"StudyConfig.optimization_level must be 0, 1, 2 or 3, got {self.optimization_level!r}")
        self._fill("seed", _positive_int("seed", self.seed, 0))

        # backends last: the lookup imports the fake provider (about a second)
        names = []
        sizes: dict[str, int] = {}
        for requested in _as_tuple("backends", self.backends):
            if not isinstance(requested, str) or not requested.strip():
                raise InputError(f"StudyConfig.backends: {requested!r} is not a backend name")
            backend = fake_backend(requested)  # NoisyTargetError (an InputError) lists valid names
            if backend.num_qubits < self.qubits[-1]:
                raise InputError(
                    f"StudyConfig.backends: {backend.name} has {backend.num_qubits} qubits, fewer than the "
                    f"largest requested circuit ({self.qubits[-1]} qubits); drop the larger qubit counts "
                    "or choose a larger backend")
            names.append(backend.name)
            sizes[backend.name] = int(backend.num_qubits)
        self._fill("backends", _unique(names))
        # each backend's qubit count, for the report: an attribute, not a field (not saved, not compared)
        self._fill("backend_sizes", sizes)

    @classmethod
    def from_dict(cls, data: Any) -> StudyConfig:
        """As :meth:`Config.from_dict`, with a malformed dict (unknown fields, not an object) an
        :class:`~qhybrid.errors.InputError` too: a study config is the user's input."""
        try:
            return super().from_dict(data)
        except InputError:
            raise
        except ValueError as exc:
            raise InputError(str(exc)) from None


# ---------------------------------------------------------------------------------------------
# measurements
# ---------------------------------------------------------------------------------------------
def _seed(cfg: StudyConfig, ansatz: str, n: int, purpose: int, extra: str = "") -> np.random.SeedSequence:
    """Independent, reproducible stream per cell and purpose (crc32, not hash(): stable across runs)."""
    entropy = [cfg.seed, zlib.crc32(ansatz.encode()), n, purpose]
    if extra:
        entropy.append(zlib.crc32(extra.encode()))
    return np.random.SeedSequence(entropy)


def _gate_stats(circuit) -> tuple[int, int]:
    """(depth, two-qubit gate count), barriers and measurements ignored."""
    def is_gate(ins) -> bool:
        return ins.operation.name not in _NON_GATES

    return int(circuit.depth(filter_function=is_gate)), two_qubit_gate_count(circuit)


def _haar_first_bin_mass(n: int, bins: int = EXPRESSIBILITY_BINS) -> float:
    """Haar probability that a fidelity falls into the first expressibility bin [0, 1/bins)."""
    return float(1.0 - (1.0 - 1.0 / bins) ** (2**n - 1))


def _expectations(estimator, circuit, observables, values) -> np.ndarray:
    """(rows, observables): one PUB per observable; both estimators run them as one group."""
    result = estimator.run([(circuit, o, values) for o in observables]).result()
    return np.stack([np.asarray(r.data.evs, dtype=float) for r in result], axis=1)


def _noise_cell(cfg: StudyConfig, spec, circuit, observables, values, ideal, backend: str) -> dict:
    source = noise_source_for_backend(backend)
    seed = int(_seed(cfg, spec.ansatz, spec.num_qubits, _NOISE_SHOTS, backend).generate_state(1)[0])
    estimator = NoisyEstimator(source, shots=cfg.shots, optimization_level=cfg.optimization_level,
                               seed_transpiler=cfg.seed, seed=seed)
    program = estimator.program(circuit)  # the ISA circuit the simulation runs
    noisy = _expectations(estimator, circuit, observables, values)
    error = np.abs(noisy - ideal)
    floor = shot_noise_floor(ideal, cfg.shots)  # what shots alone would give
    isa_depth, isa_two = _gate_stats(program.isa)
    # least-squares gain of noisy on ideal: ~ the depolarising shrink factor (1 = outputs intact)
    power = float(np.sum(ideal**2))
    retained = float(np.sum(noisy * ideal) / power) if power > 1e-12 else None
    return {
        "isa_depth": isa_depth,
        "isa_two_qubit_gates": isa_two,
        "layout": [int(q) for q in program.physical],
        "active_qubits": len(program.active),
        "noise_error_mean": float(error.mean()),
        "noise_error_max": float(error.max()),
        "shot_noise_floor": float(floor.mean()),
        "signal_retained": retained,
    }


def _measure_cell(cfg: StudyConfig, ansatz: str, n: int, stage) -> tuple[dict, dict]:
    spec = CircuitSpec(num_qubits=n, encoding=cfg.encoding, ansatz=ansatz, reps=cfg.reps,
                       entanglement=cfg.entanglement)
    circuit, _, weights = build_circuit(spec)
    observables = build_observables(spec)
    depth, two = _gate_stats(circuit)
    seconds: dict[str, Any] = {}

    t = time.perf_counter()
    stage("gradients")
    grad = gradient_variance(spec, cfg.gradient_samples, _seed(cfg, ansatz, n, _GRADIENT))
    seconds["gradient"] = time.perf_counter() - t

    t = time.perf_counter()
    stage("entanglement")
    ent = entangling_capability(spec, cfg.entanglement_samples, _seed(cfg, ansatz, n, _ENTANGLEMENT))
    seconds["entanglement"] = time.perf_counter() - t

    t = time.perf_counter()
    stage("expressibility")
    kl = expressibility_of(spec, cfg.expressibility_pairs, _seed(cfg, ansatz, n, _EXPRESSIBILITY),
                           bins=EXPRESSIBILITY_BINS)
    seconds["expressibility"] = time.perf_counter() - t
    first_bin = _haar_first_bin_mass(n)

    rng = np.random.default_rng(_seed(cfg, ansatz, n, _NOISE_ROWS))
    values = rng.uniform(0.0, 2.0 * np.pi, size=(cfg.noise_inputs, circuit.num_parameters))
    ideal = _expectations(ExactEstimator(), circuit, observables, values)
    backends, seconds["noise"] = {}, {}
    for backend in cfg.backends:
        t = time.perf_counter()
        stage(f"noise on {backend}")
        backends[backend] = _noise_cell(cfg, spec, circuit, observables, values, ideal, backend)
        seconds["noise"][backend] = time.perf_counter() - t

    cell = {
        "ansatz": ansatz,
        "num_qubits": n,
        "num_weights": len(weights),
        "logical_depth": depth,
        "logical_two_qubit_gates": two,
        "gradient_variance": {k: (int(v) if isinstance(v, numbers.Integral) else float(v))
                              for k, v in grad.items()},
        "entangling_capability": {k: (int(v) if isinstance(v, numbers.Integral) else float(v))
                                  for k, v in ent.items()},
        "expressibility": {
            "kl": float(kl),
            "pairs": cfg.expressibility_pairs,
            "bins": EXPRESSIBILITY_BINS,
            "haar_first_bin_mass": first_bin,
            "resolved": bool(first_bin <= _SATURATED_FIRST_BIN),
            "bias": (EXPRESSIBILITY_BINS - 1) / (2 * cfg.expressibility_pairs),
        },
        "ideal_output_mean_abs": float(np.abs(ideal).mean()),
        "backends": backends,
    }
    return cell, seconds


# ---------------------------------------------------------------------------------------------
# derived numbers
# ---------------------------------------------------------------------------------------------
def _cell(results: dict, ansatz: str, n: int) -> dict:
    return next(c for c in results["cells"] if c["ansatz"] == ansatz and c["num_qubits"] == n)


def _decay(cells: list[dict]) -> dict:
    """Least-squares fit ln(variance) = a + slope * qubits over one ansatz's cells."""
    points = [(c["num_qubits"], c["gradient_variance"]["variance"]) for c in cells
              if c["gradient_variance"]["variance"] > 0]
    out: dict[str, Any] = {"qubits": [p[0] for p in points], "slope": None, "slope_stderr": None,
                           "factor_per_qubit": None, "r2": None}
    if len(points) < 2:
        return out
    x = np.array([p[0] for p in points], dtype=float)
    y = np.log([p[1] for p in points])
    slope, intercept = np.polyfit(x, y, 1)
    out.update(slope=float(slope), intercept=float(intercept), factor_per_qubit=float(np.exp(slope)))
    if len(points) >= 3:
        residual = y - (intercept + slope * x)
        ss_tot = float(np.sum((y - y.mean()) ** 2))
        out["r2"] = float(1.0 - np.sum(residual**2) / ss_tot) if ss_tot > 0 else None
        out["slope_stderr"] = float(np.sqrt(np.sum(residual**2) / (len(x) - 2) / np.sum((x - x.mean()) ** 2)))
    return out


def _decay_phrase(decay: dict) -> str:
    b = decay["factor_per_qubit"]
    if b is None:
        return "not fitted (needs two qubit counts with positive variance)"
    verb = "shrinks" if b < 1 else "grows"
    text = f"variance {verb} ×{b:.3g} per added qubit"
    if decay.get("slope_stderr") is not None:
        lo, hi = np.exp(decay["slope"] - decay["slope_stderr"]), np.exp(decay["slope"] + decay["slope_stderr"])
        text += f" (±1 s.e.: ×{lo:.3g}–×{hi:.3g}; R² {decay['r2']:.3f})" if decay["r2"] is not None else ""
    return text


def _recommend(results: dict) -> dict:
    """Rank ansätze by the documented rule (see ``rule`` in the returned dict)."""
    cfg = results["config"]
    size = max(cfg["qubits"])
    tol = RECOMMENDATION_NOISE_TOLERANCE
    cells = {a: _cell(results, a, size) for a in cfg["ansatze"]}
    best_cell = {b: min(cells.values(), key=lambda c: c["backends"][b]["noise_error_mean"])["backends"][b]
                 for b in cfg["backends"]}
    best = {b: e["noise_error_mean"] for b, e in best_cell.items()}
    rows = []
    for a, c in cells.items():
        ratios = {b: c["backends"][b]["noise_error_mean"] / best[b] if best[b] > 0 else 1.0
                  for b in cfg["backends"]}
        worst_backend = max(ratios, key=ratios.get)
        rows.append({
            "ansatz": a,
            "gradient_variance": c["gradient_variance"]["variance"],
            "gradient_stderr": c["gradient_variance"]["stderr"],
            "noise_ratio": ratios[worst_backend],
            "noise_ratio_backend": worst_backend,
            "candidate": bool(ratios[worst_backend] <= tol),
            "isa_two_qubit_gates": max(c["backends"][b]["isa_two_qubit_gates"] for b in cfg["backends"]),
        })
    # candidates first, then by trainability; fewer ISA two-qubit gates break exact ties
    rows.sort(key=lambda r: (not r["candidate"], -r["gradient_variance"], r["isa_two_qubit_gates"]))
    for rank, r in enumerate(rows, 1):
        r["rank"] = rank
    winner = rows[0]
    runner = next((r for r in rows[1:] if r["candidate"]), None)
    settled = None
    if runner is not None:
        gap = winner["gradient_variance"] - runner["gradient_variance"]
        settled = bool(gap > 2.0 * math.hypot(winner["gradient_stderr"], runner["gradient_stderr"]))
    near_floor = all(e["noise_error_mean"] <= 1.3 * e["shot_noise_floor"] for e in best_cell.values())
    rule = (f"Among the ansätze whose mean noise error at the largest size ({size} qubits) is within "
            f"{tol:g}× of the best ansatz's on every backend, choose the one with the largest gradient "
            f"variance at that size (trainability); exact ties go to fewer transpiled two-qubit gates.")
    return {"rule": rule, "size": size, "ansatz": winner["ansatz"], "ranking": rows,
            "runner_up": runner["ansatz"] if runner else None, "lead_beyond_2_stderr": settled,
            "noise_near_shot_floor": bool(near_floor)}


# ---------------------------------------------------------------------------------------------
# the study
# ---------------------------------------------------------------------------------------------
def run_study(out_dir: str | Path, cfg: StudyConfig | None = None, progress: bool = True) -> dict:
    """Run the ansatz study for ``cfg`` (default: :class:`StudyConfig()`) and write
    :data:`STUDY_FILES` into ``out_dir``. Returns the dict saved as ``study.json``: ``config``,
    ``backends`` (sizes), ``cells`` (one dict per (ansatz, qubits) with a ``backends`` entry per
    backend), ``decay`` (per ansatz), ``recommendation`` and ``timing`` (seconds; the only part
    that differs between runs with the same config). Output goes only to the files and to a tqdm
    progress bar (on stderr; ``progress=False`` hides it)."""
    if cfg is None:
        cfg = StudyConfig()
    if not isinstance(cfg, StudyConfig):
        raise InputError(f"cfg must be a StudyConfig, got {type(cfg).__name__}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a folder; choose another output folder")
    try:  # now, not after minutes of simulation
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the output folder {out} ({exc.strerror or one_line(exc, with_type=True)}); "
                         f"choose another {param('out_dir')}") from None

    start = time.perf_counter()
    cells, cell_seconds = [], []
    grid = [(a, n) for a in cfg.ansatze for n in cfg.qubits]
    bar = tqdm(total=len(grid), disable=not progress, unit="cell", desc="ansatz study")
    try:
        for ansatz, n in grid:
            bar.set_description(f"{ansatz}, {n} qubits")
            cell, seconds = _measure_cell(cfg, ansatz, n, lambda s: bar.set_postfix_str(s))
            cells.append(cell)
            cell_seconds.append({"ansatz": ansatz, "num_qubits": n, "seconds": seconds})
            bar.update(1)
    finally:
        bar.close()

    results: dict[str, Any] = {
        "study": "ansatz study after arXiv 2508.09903",
        "config": cfg.to_dict(),
        "backends": {b: {"num_qubits": cfg.backend_sizes[b]} for b in cfg.backends},
        "cells": cells,
    }
    results["decay"] = {a: _decay([c for c in cells if c["ansatz"] == a]) for a in cfg.ansatze}
    results["recommendation"] = _recommend(results)
    results["timing"] = {"total_seconds": time.perf_counter() - start, "cells": cell_seconds}

    out.mkdir(parents=True, exist_ok=True)
    _plot_gradients(results, out / "gradient_variance.png")
    _plot_entanglement_expressibility(results, out / "entanglement_expressibility.png")
    _plot_noise(results, out / "noise.png")
    io.write_text(out / "study.md", _markdown(results))
    io.write_json(out / "study.json", results)
    return results


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------
def _sci(value: float, digits: int = 2) -> str:
    return f"{value:.{digits}e}"


def _markdown(results: dict) -> str:
    cfg = results["config"]
    backends = cfg["backends"]
    rec = results["recommendation"]
    head = ["ansatz", "qubits", "weights", "depth", "2q", "grad variance ± s.e.", "MW ± s.e.", "expressibility (KL)"]
    align = ["---", "---:", "---:", "---:", "---:", "---:", "---:", "---:"]
    for b in backends:
        head += [f"{b} ISA depth / 2q", f"{b} noise error mean (max)"]
        align += ["---:", "---:"]
    rows = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    for c in results["cells"]:
        g, e, x = c["gradient_variance"], c["entangling_capability"], c["expressibility"]
        cols = [f"`{c['ansatz']}`", str(c["num_qubits"]), str(c["num_weights"]), str(c["logical_depth"]),
                str(c["logical_two_qubit_gates"]), f"{_sci(g['variance'])} ± {_sci(g['stderr'], 1)}",
                f"{e['mean']:.3f} ± {e['stderr']:.3f}", f"{x['kl']:.4f}" + ("" if x["resolved"] else "*")]
        for b in backends:
            nb = c["backends"][b]
            cols += [f"{nb['isa_depth']} / {nb['isa_two_qubit_gates']}",
                     f"{nb['noise_error_mean']:.4f} ({nb['noise_error_max']:.3f})"]
        rows.append("| " + " | ".join(cols) + " |")

    unresolved = sorted({c["num_qubits"] for c in results["cells"] if not c["expressibility"]["resolved"]})
    first = results["cells"][0]["expressibility"]
    expr_note = (
        f"Expressibility is the KL divergence from Haar of a {first['bins']}-bin fidelity histogram over "
        f"{cfg['expressibility_pairs']} state pairs (lower = closer to Haar); the estimate carries a positive bias of "
        f"about {first['bias']:.3f}. Haar fidelities concentrate near 1/2^n, so at larger widths almost all of them "
        f"land in the first bin and the measure stops discriminating")
    if unresolved:
        expr_note += (f": for {', '.join(map(str, unresolved))} qubits (marked *) the first bin holds more than "
                      f"{_SATURATED_FIRST_BIN:.0%} of the Haar mass, so read those values as \"close to Haar\", "
                      "not as a ranking.")
    else:
        expr_note += " (around 8-10 qubits with 75 bins; no qubit count here reaches that point)."

    decay_lines = [f"- `{a}`: {_decay_phrase(d)}" for a, d in results["decay"].items()]

    rank_rows = ["| rank | ansatz | grad variance at {} qubits | worst noise ratio to best (backend) | kept |".format(rec["size"]),
                 "|---:|---|---:|---:|---|"]
    for r in rec["ranking"]:
        rank_rows.append(f"| {r['rank']} | `{r['ansatz']}` | {_sci(r['gradient_variance'])} ± "
                         f"{_sci(r['gradient_stderr'], 1)} | {r['noise_ratio']:.3f}× ({r['noise_ratio_backend']}) | "
                         f"{'yes' if r['candidate'] else 'no'} |")
    winner = next(r for r in rec["ranking"] if r["ansatz"] == rec["ansatz"])
    kept = [r["ansatz"] for r in rec["ranking"] if r["candidate"]]
    dropped = [r for r in rec["ranking"] if not r["candidate"]]
    para = [f"**Rule.** {rec['rule']}"]
    text = (f"**Result: default to `{rec['ansatz']}`.** At {rec['size']} qubits "
            f"{len(kept)} of {len(rec['ranking'])} ansätze pass the noise screen ({', '.join(f'`{a}`' for a in kept)})")
    if dropped:
        text += "; dropped: " + ", ".join(
            f"`{r['ansatz']}` ({r['noise_ratio']:.3f}× the best noise error on {r['noise_ratio_backend']})" for r in dropped)
    text += (f". `{rec['ansatz']}` has the largest gradient variance among them "
             f"({_sci(winner['gradient_variance'])} ± {_sci(winner['gradient_stderr'], 1)})")
    if rec["runner_up"]:
        runner = next(r for r in rec["ranking"] if r["ansatz"] == rec["runner_up"])
        ratio = winner["gradient_variance"] / runner["gradient_variance"] if runner["gradient_variance"] > 0 else float("inf")
        text += f", {ratio:.2f}× that of the runner-up `{runner['ansatz']}`"
        if not rec["lead_beyond_2_stderr"]:
            text += (" - but the lead is within two standard errors, so the ranking of the top two is not settled "
                     "at this sample size (raise `gradient_samples`)")
    text += f"; its {_decay_phrase(results['decay'][rec['ansatz']])}."
    para.append(text)
    if rec["noise_near_shot_floor"]:
        para.append(
            f"Caveat: the best noise errors are close to the shot-noise floor of {cfg['shots']} shots, so the noise "
            "screen barely separates the ansätze; raise `shots` to sharpen it. Deep, scrambling circuits also have "
            "small ideal outputs at random parameters (see \"Noise in detail\"), which limits how much noise can move them.")

    noise_lines = []
    for c in results["cells"]:
        for b in backends:
            nb = c["backends"][b]
            noise_lines.append(f"| `{c['ansatz']}` | {c['num_qubits']} | {b} | {nb['noise_error_mean']:.4f} | "
                               f"{nb['shot_noise_floor']:.4f} | {c['ideal_output_mean_abs']:.3f} | "
                               f"{'–' if nb['signal_retained'] is None else format(nb['signal_retained'], '.3f')} | "
                               f"{nb['active_qubits']} |")

    fixed = [a for a in cfg["ansatze"] if a in FIXED_ENTANGLEMENT]
    t = results["timing"]["total_seconds"]
    return "\n".join([
        "# Ansatz study",
        "",
        f"The comparison of arXiv 2508.09903 (trainability, entanglement, noise resilience) on qhybrid's circuits: "
        f"{len(cfg['ansatze'])} ansätze × qubits {', '.join(map(str, cfg['qubits']))}, reps {cfg['reps']}, "
        f"`{cfg['encoding']}` encoding, entanglement `{cfg['entanglement']}`"
        + (f" (ignored by {', '.join(f'`{a}`' for a in fixed)}, which fix their own pattern)" if fixed else "")
        + f"; backends {', '.join(backends)} (optimisation level {cfg['optimization_level']}, {cfg['shots']} shots); "
        f"seed {cfg['seed']}. Took {t:.0f} s.",
        "",
        "## Main table",
        "",
        f"Grad variance: variance over {cfg['gradient_samples']} random input/weight rows of d<Z0>/dθ, averaged over "
        "the weights (exact adjoint gradients; an exponential fall with the qubit count is a barren plateau). "
        f"MW: mean Meyer–Wallach entanglement of {cfg['entanglement_samples']} random states (0 = product, 1 = maximal). "
        "Depth and 2q: the logical circuit (encoding included); ISA: transpiled for the backend. Noise error: "
        f"|noisy − ideal| of the block's outputs (Z on each qubit) over {cfg['noise_inputs']} random rows, inputs "
        "and weights uniform in [0, 2π), mean and (max).",
        "",
        *rows,
        "",
        expr_note,
        "",
        "## Barren-plateau decay",
        "",
        "Least-squares slope of ln(gradient variance) against the number of qubits, per ansatz:",
        "",
        *decay_lines,
        "",
        "![gradient variance](gradient_variance.png)",
        "",
        "## Which ansatz to default to",
        "",
        *[p + "\n" for p in para],
        *rank_rows,
        "",
        "## Noise in detail",
        "",
        f"Shot floor: the mean |error| {cfg['shots']} shots alone would give, sqrt(2/π)·sqrt((1 − ideal²)/shots). "
        "Active qubits: physical qubits the transpiled circuit touches (what Aer simulates; more than the "
        "circuit's width when routing uses extra qubits). Signal retained: least-squares gain of the noisy on the ideal "
        "outputs, Σ noisy·ideal / Σ ideal² (about the depolarising shrink factor; 1 = intact). The absolute noise error "
        "cannot exceed what there is to lose: circuits whose ideal outputs are near 0 at random parameters (deep, "
        "scrambling ones) look resilient by that measure, so read it together with the signal retained.",
        "",
        "| ansatz | qubits | backend | noise error mean | shot floor | mean abs ideal output | signal retained | active qubits |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
        *noise_lines,
        "",
        "![entanglement and expressibility](entanglement_expressibility.png)",
        "",
        "![noise](noise.png)",
        "",
    ])


# ---------------------------------------------------------------------------------------------
# plots
# ---------------------------------------------------------------------------------------------
def _series(results: dict, ansatz: str, get) -> tuple[np.ndarray, np.ndarray]:
    cells = sorted((c for c in results["cells"] if c["ansatz"] == ansatz), key=lambda c: c["num_qubits"])
    return np.array([c["num_qubits"] for c in cells]), np.array([get(c) for c in cells], dtype=float)


_STYLE = dict(markersize=5, linewidth=1.4, capsize=3)


def _plot_gradients(results: dict, path: Path) -> None:
    plt = io.pyplot()
    cfg = results["config"]
    fig, ax = plt.subplots(figsize=(6.8, 4.2))
    for a in cfg["ansatze"]:
        x, v = _series(results, a, lambda c: c["gradient_variance"]["variance"])
        _, se = _series(results, a, lambda c: c["gradient_variance"]["stderr"])
        lower = np.minimum(se, 0.9 * v)  # keep the bar above zero on the log axis
        d = results["decay"][a]
        label = a if d["factor_per_qubit"] is None else f"{a} (×{d['factor_per_qubit']:.2f}/qubit)"
        line = ax.errorbar(x, v, yerr=[lower, se], marker="o", label=label, **_STYLE)
        if d["factor_per_qubit"] is not None:
            xs = np.linspace(x.min(), x.max(), 50)
            ax.plot(xs, np.exp(d["intercept"] + d["slope"] * xs), ls=":", lw=1, color=line[0].get_color())
    ax.set_yscale("log")
    ax.set_xticks(cfg["qubits"])
    ax.set_xlabel("number of qubits")
    ax.set_ylabel("Var[∂⟨Z0⟩/∂θ] (mean over weights)")
    ax.set_title(f"Trainability: gradient variance (reps {cfg['reps']}, {cfg['encoding']} encoding)\n"
                 f"±1 s.e. over {cfg['gradient_samples']} random rows; dotted: exponential fit", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    io.save_figure(fig, path)
    plt.close(fig)


def _plot_entanglement_expressibility(results: dict, path: Path) -> None:
    plt = io.pyplot()
    cfg = results["config"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for a in cfg["ansatze"]:
        x, mw = _series(results, a, lambda c: c["entangling_capability"]["mean"])
        _, se = _series(results, a, lambda c: c["entangling_capability"]["stderr"])
        left.errorbar(x, mw, yerr=se, marker="o", label=a, **_STYLE)
        _, kl = _series(results, a, lambda c: c["expressibility"]["kl"])
        right.plot(x, np.maximum(kl, 1e-5), marker="o", label=a, lw=1.4, ms=5)
    left.set_ylim(0, 1.02)
    left.set_title(f"Entangling capability (Meyer–Wallach, {cfg['entanglement_samples']} states)", fontsize=10)
    left.set_ylabel("mean Q (0 = product, 1 = maximal)")
    unresolved = [c["num_qubits"] for c in results["cells"] if not c["expressibility"]["resolved"]]
    if unresolved:
        right.axvspan(min(unresolved) - 0.5, max(cfg["qubits"]) + 0.5, color="0.85", zorder=0,
                      label=f"75-bin resolution lost (≥{min(unresolved)} qubits)")
    bias = results["cells"][0]["expressibility"]["bias"]
    right.axhline(bias, color="0.4", ls=":", lw=1, label=f"estimator bias ≈ {bias:.3f}")
    right.set_yscale("log")
    right.set_title(f"Expressibility: KL to Haar ({cfg['expressibility_pairs']} pairs, lower = more expressive)",
                    fontsize=10)
    right.set_ylabel("D_KL(P_circuit ‖ P_Haar) (nats)")
    for ax in (left, right):
        ax.set_xticks(cfg["qubits"])
        ax.set_xlim(min(cfg["qubits"]) - 0.5, max(cfg["qubits"]) + 0.5)
        ax.set_xlabel("number of qubits")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    io.save_figure(fig, path)
    plt.close(fig)


def _plot_noise(results: dict, path: Path) -> None:
    plt = io.pyplot()
    cfg = results["config"]
    backends = cfg["backends"]
    fig, axes = plt.subplots(2, len(backends), figsize=(5.8 * len(backends), 6.4), squeeze=False, sharex=True)
    for col, b in enumerate(backends):
        top, bottom = axes[0, col], axes[1, col]
        k = len(cfg["ansatze"])
        for i, a in enumerate(cfg["ansatze"]):
            x, err = _series(results, a, lambda c: c["backends"][b]["noise_error_mean"])
            line, = top.plot(x, err, marker="o", lw=1.4, ms=5, label=a)
            _, two = _series(results, a, lambda c: c["backends"][b]["isa_two_qubit_gates"])
            shift = (i - (k - 1) / 2) * 0.05  # small offsets so equal counts stay visible
            bottom.plot(x + shift, two, marker="s", lw=1.4, ms=5, color=line.get_color(), label=a)
        floors = {}
        for c in results["cells"]:
            floors.setdefault(c["num_qubits"], []).append(c["backends"][b]["shot_noise_floor"])
        xs = sorted(floors)
        top.plot(xs, [np.mean(floors[n]) for n in xs], ls="--", color="0.4", lw=1,
                 label=f"shot-noise floor ({cfg['shots']} shots)")
        top.set_ylim(bottom=0)
        top.set_title(f"{b}: noise error of the block's outputs", fontsize=10)
        top.set_ylabel(f"mean |noisy − ideal| ({cfg['noise_inputs']} rows)")
        bottom.set_title(f"{b}: transpiled two-qubit gates (opt. level {cfg['optimization_level']})", fontsize=10)
        bottom.set_ylabel("ISA two-qubit gate count\n(markers offset slightly in x)")
        bottom.set_xlabel("number of qubits")
        bottom.set_xticks(cfg["qubits"])
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
        top.legend(fontsize=7)
    fig.tight_layout()
    io.save_figure(fig, path)
    plt.close(fig)
