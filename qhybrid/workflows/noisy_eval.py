"""``qhybrid noisy-eval``: the same trained hybrid model sampled on ideal and noisy targets.

For each target (``ideal`` first, then each fake backend or noise snapshot at each shot count) the
sampler starts from the same noise with the same seed, so every difference comes from the quantum
block's evaluation. Reported per target:

* the quantum block's output error against ideal, on the block inputs met during ideal sampling
  (mean, max and per observable), **next to its shot-noise floor**: the error a noiseless device
  would show with the same shots. The floor is computed from the ideal outputs ``mu``
  (``E|error| = sqrt(2 / pi) * sqrt((1 - mu^2) / shots)`` per output) and measured on a
  noiseless-with-shots target (``ideal`` with ``shots``); ``error / floor`` near 1 means the
  figure is sampling error, not hardware noise;
* how far the final latents and images move, and that image change as a share of the circuit's
  knock-out (the same samples with the circuit's output replaced by its mean,
  :mod:`qhybrid.evaluation.contribution`: 100% means the noise erases as much as removing the
  circuit);
* the transpiled circuit (two-qubit gates, depth, layout, the median error of the two-qubit gates
  it uses), the cost (executions, bindings per execution, shots per image, seconds per step) and,
  when the run folder has them, the gradable share and FD against real images.

With several mitigations (``mitigations``; ``--mitigation-sweep`` takes none, readout, TREX, ZNE
and twirling) every noise source and shot count runs once per mitigation, and the report adds a
sweep table (error, its change against no mitigation, image change, circuits and shots per image
a device would run), ``mitigation.png`` (error against shots per image) and a recommendation per
backend (:func:`mitigation_sweep`).

The evaluation is incremental: each target's result is written to ``targets/`` as soon as it is
done, and the report files (``noisy_eval.json``, ``noisy_eval.md``, ``samples.png``,
``backends.png``) are rewritten from those after each target. ``resume=True`` continues a killed
evaluation without recomputing the finished targets; the final files equal an uninterrupted
run's, timings aside (every target draws its shots from its own seeded generator). A folder holding
another evaluation — other settings, another snapshot file's content or noise model, other Qiskit /
Aer / runtime versions — is refused rather than overwritten or mixed.

The denoiser, the VAE and the evaluators run on ``device`` (:mod:`qhybrid.devices`); the circuit
runs in Aer (or the exact simulator) on the CPU, the connector moving the block's inputs and
outputs, and the initial noise is drawn on the CPU, so a seed starts every target from the same
noise on any device. The device is recorded per target (and in the summary) but is not part of
what a resumed evaluation must match: it may continue on another device.
"""

from __future__ import annotations

import hashlib
import io as _io
import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from qhybrid import io
from qhybrid.config import Config
from qhybrid.devices import resolve_device
from qhybrid.errors import InputError, param
from qhybrid.evaluation.contribution import noise_share
from qhybrid.quantum.analysis import shot_noise_floor
from qhybrid.quantum.circuits import two_qubit_gate_count
from qhybrid.versions import software_versions

#: Below this many samples per target the gradable share's interval spans tens of points and FD
#: (a Gaussian fit in the encoder's feature space) is dominated by its small-sample bias.
SMALL_N = 32
RESULT_FORMAT = "qhybrid-noisy-eval"
#: Fields that are timings: they differ between an interrupted-and-resumed and a straight run.
TIMING_FIELDS = ("seconds", "seconds_per_step")


@dataclass(frozen=True)
class NoisyEvalConfig(Config):
    """What one noisy evaluation measures; saved as ``config.json`` and checked on resume."""

    backends: tuple[str, ...] = ("fake_torino", "fake_fez", "fake_kyiv")
    snapshots: tuple[str, ...] = ()
    shots: tuple[int, ...] = (1024, 4096, 32768)
    n: int = 32
    steps: int = 20
    mitigations: tuple[dict, ...] = ({"kind": "none"},)  # qhybrid.quantum.mitigation.Mitigation dicts
    method: str = "counts"
    seed: int = 0
    optimization_level: int = 2

    def __post_init__(self):
        from qhybrid.quantum.mitigation import Mitigation

        for name in ("backends", "snapshots", "shots"):
            self._fill(name, tuple(getattr(self, name)))
        settings = [Mitigation.of(m) for m in self.mitigations]
        if not settings or len({m.key for m in settings}) != len(settings):
            raise ValueError(f"NoisyEvalConfig.mitigations must be distinct, got {[m.key for m in settings]}")
        self._fill("mitigations", tuple(m.to_dict() for m in settings))
        if not self.backends and not self.snapshots:
            raise ValueError("NoisyEvalConfig needs at least one backend or snapshot")
        if not self.shots or len(set(self.shots)) != len(self.shots):
            raise ValueError(f"NoisyEvalConfig.shots must be distinct shot counts, got {list(self.shots)}")
        for name in ("backends", "snapshots"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ValueError(f"NoisyEvalConfig.{name} repeats an entry: {', '.join(values)}")
        if self.n < 2 or self.steps < 1:
            raise ValueError(f"NoisyEvalConfig needs n >= 2 and steps >= 1, got n={self.n}, steps={self.steps}")


def default_out(model_dir: str | Path, cfg: NoisyEvalConfig) -> Path:
    """``<run>/noisy-eval/<model>-<backends>-<shots>[-mitigated]-<hash>``: one folder per evaluation
    (the hash covers every setting, n, steps, seed and method included), so a new evaluation never
    meets another's folder."""
    model_dir = Path(model_dir)
    sources = list(cfg.backends) + [Path(s).stem for s in cfg.snapshots]
    kinds = [m["kind"] for m in cfg.mitigations]
    name = f"{model_dir.name}-{'+'.join(sources)}-{'+'.join(map(str, cfg.shots))}" + (
        "" if kinds == ["none"] else "-" + "+".join(kinds))
    name = re.sub(r"[^A-Za-z0-9._+-]", "_", name)[:90]
    digest = hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode()).hexdigest()[:8]
    return model_dir.parent / "noisy-eval" / f"{name}-{digest}"


# --- the plan: which targets, in which order ------------------------------------------------------
@dataclass(frozen=True)
class _Planned:
    key: str  # folder-safe, unique
    label: str  # what a reader sees
    source: str  # the noise source alone (the label without the shots and the mitigation)
    target: str
    options: dict
    shots: int | None
    mitigation: str = "no mitigation"  # the mitigation's label ("TREX", ...)


def plan_targets(cfg: NoisyEvalConfig) -> list[_Planned]:
    """ideal; per shot count the noiseless-with-shots floor; per noise source and shot count its run."""
    from qhybrid.quantum.noise_snapshots import load_snapshot
    from qhybrid.quantum.primitives.aer import noise_source_for_backend

    planned = [_Planned("ideal", "ideal", "ideal", "ideal", {}, None)]
    for shots in cfg.shots:
        planned.append(_Planned(f"shots-{shots}", f"shot noise only, {shots:,} shots", "shot noise only", "ideal",
                                {"shots": shots, "seed": cfg.seed}, shots))
    from qhybrid.quantum.mitigation import Mitigation

    noisy = {"seed": cfg.seed, "method": cfg.method, "optimization_level": cfg.optimization_level}
    settings = [Mitigation.of(m) for m in cfg.mitigations]

    def variants(key: str, label: str, source: str, target: str, options: dict, shots: int):
        for m in settings:
            suffix = "" if m.kind == "none" else f"-{m.key}"
            shown = label if m.kind == "none" else f"{label}, {m.label}"
            planned.append(_Planned(key + suffix, shown, source, target,
                                    {**noisy, **options, "shots": shots, "mitigation": m.to_dict()}, shots,
                                    m.label))

    for backend in cfg.backends:
        noise_source_for_backend(backend)  # fails early, listing the valid names
        for shots in cfg.shots:
            variants(f"{backend}-{shots}", f"{backend}, {shots:,} shots", backend, f"fake:{backend}", {}, shots)
    for path in cfg.snapshots:
        source = load_snapshot(path)
        tag = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:6]  # two files may share a name
        for shots in cfg.shots:
            name = f"{source.name} snapshot {Path(path).name}"
            variants(f"snapshot-{Path(path).stem}-{tag}-{shots}", f"{name}, {shots:,} shots", name,
                     f"fake:{source.name}", {"noise_model": str(path)}, shots)
    return planned


# --- the evaluation -------------------------------------------------------------------------------
def run_noisy_eval(model_dir: str | Path, out: str | Path | None, cfg: NoisyEvalConfig, *, resume: bool = False,
                   vae: str | Path | None = None, progress: bool = True, log=print,
                   device: str | torch.device | None = None) -> dict:
    """Evaluate the hybrid LDM in ``model_dir`` on ideal and noisy targets into ``out`` (default:
    :func:`default_out`); returns the summary written to ``noisy_eval.json``. ``device``: where the
    denoiser, the VAE and the evaluators run (None: the CPU); not part of a resumed evaluation's
    identity."""
    from qhybrid.diffusion.pipeline import LatentDiffusion

    device = resolve_device(device or "cpu")  # a GPU that is not there: refused before anything is written
    model_dir = Path(model_dir)
    out = Path(out) if out is not None else default_out(model_dir, cfg)
    loaded = LatentDiffusion.from_checkpoint(model_dir, vae=vae)
    model, header = loaded.denoiser, loaded.header
    if model.quantum_block is None:
        raise InputError(f"{model_dir} is a {model.cfg.kind} model without a quantum block; noisy-eval needs a hybrid model")
    model.to(device)
    loaded.vae.to(device)
    planned = plan_targets(cfg)
    versions = software_versions()
    identity = {"format": RESULT_FORMAT, "model_sha256": header.get("weights_sha256"),
                "vae_sha256": loaded.vae.checkpoint_header.get("weights_sha256"), "config": cfg.to_dict(),
                "snapshot_sha256": {str(Path(p).resolve()): _file_sha256(p) for p in cfg.snapshots},
                "noise_sha256": {b: _noise_sha256(b) for b in cfg.backends},
                "versions": {k: versions[k] for k in ("qiskit", "qiskit-aer", "qiskit-ibm-runtime")}}
    _claim_folder(out, identity, resume)
    for warning in _warnings(cfg):
        log(f"qhybrid: warning: {warning}")
    study = _Study(model_dir, out, cfg, loaded, progress, log, device)
    for item in planned:
        if study.done(item):
            log(f"kept {item.label} (finished earlier in {out / 'targets'})")
            continue
        study.run(item)
        write_reports(out, identity, model_dir, planned)
    return write_reports(out, identity, model_dir, planned)


def _file_sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _noise_sha256(backend: str) -> str:
    """The hash of the noise model the fake target simulates for ``backend``: a resumed evaluation
    must not mix noise models (a new qiskit-ibm-runtime or a change in how qhybrid builds them)."""
    from qhybrid.quantum.primitives.aer import encode_noise, noise_source_for_backend

    def without_ids(value):  # Aer names each error with a random id: not part of the model
        if isinstance(value, dict):
            return {k: without_ids(v) for k, v in value.items() if k != "id"}
        if isinstance(value, list):
            return [without_ids(v) for v in value]
        return value

    def canonical(value) -> str:
        return json.dumps(value, sort_keys=True, default=str)

    noise = without_ids(encode_noise(noise_source_for_backend(backend).noise))
    # the errors' order follows Python's string hashing (it changes from process to process)
    noise["errors"] = sorted(noise.get("errors", []), key=canonical)
    return hashlib.sha256(canonical(noise).encode()).hexdigest()


def _warnings(cfg: NoisyEvalConfig) -> list[str]:
    if cfg.n >= SMALL_N:
        return []
    return [f"n={cfg.n} samples per target: the gradable share's interval is tens of points wide and FD is biased "
            f"upwards at this size; use n >= {SMALL_N} (n >= 64 for FD) to compare targets on them"]


def _claim_folder(out: Path, identity: dict, resume: bool) -> None:
    """Start ``out`` (empty or new), or continue the same evaluation there with ``resume``: the same
    model, VAE, settings, snapshot contents and Qiskit / Aer / runtime versions (a fake backend's
    calibration comes with qiskit-ibm-runtime)."""
    saved_path = out / "config.json"
    if saved_path.exists():
        try:
            saved = json.loads(saved_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise InputError(f"{saved_path} is damaged (not JSON); choose another {param('out')}") from None
        if not resume:
            raise InputError(f"{out} already holds a noisy evaluation; continue it with {param('resume', True)}, or "
                             f"choose another {param('out')}")
        if saved != identity:
            changed = _differences(saved if isinstance(saved, dict) else {}, identity)
            raise InputError(f"{out} holds an evaluation with other settings ({', '.join(changed)} differ); resume it "
                             f"with the same settings and software, or choose another {param('out')}")
        return
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} exists and is not a noisy-evaluation folder; choose another {param('out')}")
    io.write_json(saved_path, identity)


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted names of the fields where two identities differ (``config.shots``)."""
    names = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict) and key not in ("snapshot_sha256", "noise_sha256"):
            names += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            names.append(f"{prefix}{key}")
    return names


class _Study:
    """The shared state of one evaluation: the model, the ideal run's probe inputs, the knock-out
    images and the evaluators."""

    def __init__(self, model_dir: Path, out: Path, cfg: NoisyEvalConfig, loaded, progress: bool, log,
                 device: torch.device):
        self.model_dir, self.out, self.cfg, self.progress, self.log = model_dir, out, cfg, progress, log
        self.model, self.scheduler, self.vae, self.header = loaded
        self.device = device  # of the denoiser, the VAE and the evaluators
        self.block = self.model.quantum_block
        self._evaluators = None
        #: the model's training data: its held-out split is the knock-out's reference and the real set
        self.training_data = self.header.get("extra", {}).get("train", {}).get("data", "synthetic")

    def done(self, item: _Planned) -> bool:
        """Both files of the target are there (the .json is written last, after the .npz)."""
        folder = self.out / "targets"
        return (folder / f"{item.key}.json").exists() and (folder / f"{item.key}.npz").exists()

    def run(self, item: _Planned) -> None:
        from qhybrid.diffusion.sampling import sample_latents
        from qhybrid.quantum.targets import describe_noise, noise_source
        from qhybrid.workflows.sampling import decode_images

        source = noise_source(item.target, item.options)
        self.log(f"sampling {self.cfg.n} images on {item.target} ({describe_noise(source)})"
                 + ("" if item.mitigation == "no mitigation" else f" with {item.mitigation}"))
        self.model.to_target(item.target, **item.options)
        captured: list[torch.Tensor] = []
        calls: list[int] = []

        def hook(module, inputs, output):
            calls.append(len(inputs[0]))
            if item.key == "ideal":
                captured.append(inputs[0].detach().cpu().clone())

        handle = self.block.register_forward_hook(hook)
        estimator = self.block.qnn.estimator
        try:
            t0 = time.perf_counter()
            z = sample_latents(self.model, self.scheduler, self.cfg.n, self.cfg.steps, seed=self.cfg.seed,
                               progress=self.progress)
            seconds = time.perf_counter() - t0
        finally:
            handle.remove()
        # what a device would run for these images (the fake target counts every circuit and shot,
        # randomisations, noise factors and calibration circuits included)
        device_cost = ({"circuits_per_image": estimator.circuit_executions / self.cfg.n,
                        "shots_per_image": estimator.shots_run // self.cfg.n}
                       if hasattr(estimator, "circuit_executions") else {})
        if item.key == "ideal":  # the block inputs of the first, middle and last step
            probe = torch.cat([captured[0], captured[len(captured) // 2], captured[-1]])
            _save_arrays(self.out / "probe.npz", probe=probe.numpy())
        probe = torch.from_numpy(_load_arrays(self.out / "probe.npz")["probe"])
        with torch.no_grad():  # (the connector runs the circuit on the CPU whatever the block's device)
            block_out = self.block(probe.to(self.block.weight.dtype)).cpu().double().numpy()
        images = decode_images(self.vae, z)
        rows = sum(calls)
        entry = {"label": item.label, "source": item.source, "target": item.target, "options": item.options, "noise_source": source,
                 "shots": item.shots, "device": str(self.device), "seconds": seconds,
                 "seconds_per_step": seconds / self.cfg.steps,
                 "mitigation": item.mitigation, "executions": len(calls),
                 "bindings_per_execution": max(calls, default=0),
                 "circuits_per_image": rows / self.cfg.n if item.shots else 0,
                 "shots_per_image": (item.shots or 0) * rows // self.cfg.n, **device_cost}
        if item.target.startswith("fake:"):
            entry["transpiled"] = _transpiled(self.block)
        if item.key == "ideal":
            self._knockout()
        entry.update(self._quality(images))
        _save_arrays(self.out / "targets" / f"{item.key}.npz", images=images, latents=z.numpy(), block=block_out)
        io.write_json(self.out / "targets" / f"{item.key}.json", entry)  # last: marks the target done

    def _knockout(self) -> None:
        """The ideal samples (same seed) with the circuit's output replaced by its mean over the
        contribution metrics' reference set: the yardstick for the noise's effect."""
        from qhybrid.diffusion.sampling import sample_latents
        from qhybrid.evaluation.contribution import (
            held_out_reference,
            knocked_out,
            knockout_mean,
        )
        from qhybrid.workflows.sampling import decode_images

        mean = knockout_mean(self.model, held_out_reference(self.vae, self.scheduler, self.training_data))
        with knocked_out(self.model.quantum_layer.core, mean):
            z = sample_latents(self.model, self.scheduler, self.cfg.n, self.cfg.steps, seed=self.cfg.seed,
                               progress=self.progress)
        _save_arrays(self.out / "knockout.npz", images=decode_images(self.vae, z))

    def _quality(self, images: np.ndarray) -> dict:
        """Gradable share and FD against real images, when the run folder has the evaluators."""
        if self._evaluators is None:
            self._evaluators = ImageQuality.of(self.model_dir.parent, self.training_data, self.vae.cfg.size,
                                               self.cfg.seed, device=self.device) or False
        return self._evaluators(images) if self._evaluators else {}


class ImageQuality:
    """Gradable share and FD against real images (the held-out split of the model's training data),
    with the gradability validator and feature encoder a run folder holds (``validator/``,
    ``encoder/``: copies of the shipped ones in a ``make demo`` run), on ``device`` (None: the CPU)."""

    def __init__(self, run_dir: Path, training_data: str, size: int, seed: int = 0,
                 device: str | torch.device | None = None):
        from qhybrid.evaluation.evaluate import real_reference
        from qhybrid.evaluation.features import FundusEncoder
        from qhybrid.evaluation.validator import GradabilityNet

        self.run_dir, self.seed = Path(run_dir), seed
        device = resolve_device(device or "cpu")
        self.encoder = FundusEncoder.from_checkpoint(self.run_dir / "encoder").to(device)
        self.validator = GradabilityNet.from_checkpoint(self.run_dir / "validator").to(device)
        self.real = real_reference(training_data, size, 200)

    @classmethod
    def of(cls, run_dir: Path, training_data: str, size: int, seed: int = 0,
           device: str | torch.device | None = None) -> "ImageQuality | None":
        """The evaluators of ``run_dir`` on ``device``, or None when it has none."""
        run_dir = Path(run_dir)
        if not ((run_dir / "validator" / "config.json").exists() and (run_dir / "encoder" / "config.json").exists()):
            return None
        return cls(run_dir, training_data, size, seed, device)

    def __call__(self, images: np.ndarray) -> dict:
        from qhybrid.evaluation.evaluate import evaluate_sets

        m = evaluate_sets(self.real, images, encoder=self.encoder, validator=self.validator,
                          k=min(5, len(images) - 1), n_boot=50, seed=self.seed)
        return {"gradable": m["gradable"], "fd": m["fundus_features"]["fd"]}


def _transpiled(block) -> dict | None:
    """The ISA circuit the fake target runs: two-qubit gates, depth, layout, and what the backend's
    calibration says of it (:func:`qhybrid.quantum.calibration.error_budget`: the median error of
    its two-qubit gates on the chosen qubits, its estimated fidelity and where the infidelity comes
    from), when the noise source has a calibration."""
    from qhybrid.quantum.calibration import error_budget

    estimator = block.qnn.estimator
    program = estimator.program(block.pub_circuit) if hasattr(estimator, "program") else None
    if program is None:
        return None
    isa, target = program.isa, program.source.layout_target
    summary = {"depth": isa.depth(), "two_qubit_gates": two_qubit_gate_count(isa), "layout": program.physical,
               "median_two_qubit_error": None, "estimated_fidelity": None, "infidelity_share": None}
    if target is not None:
        budget = error_budget(isa, program.active, program.physical, target, program.source.calibration)
        errors = [c["error"] for c in budget["couplers"] for _ in range(c["count"]) if c.get("error") is not None]
        summary.update({"median_two_qubit_error": float(np.median(errors)) if errors else None,
                        "estimated_fidelity": budget["estimated_fidelity"],
                        "infidelity_share": budget["infidelity_share"]})
    return summary


def _save_arrays(path: Path, **arrays) -> None:
    buffer = _io.BytesIO()
    np.savez(buffer, **arrays)
    io.write_bytes(path, buffer.getvalue())


def _load_arrays(path: Path) -> dict:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


# --- the report, rebuilt from targets/ after every target -----------------------------------------
def write_reports(out: Path, identity: dict, model_dir: Path, planned: list[_Planned]) -> dict:
    """``noisy_eval.json`` / ``.md``, ``samples.png`` and ``backends.png`` from the finished targets."""
    cfg = NoisyEvalConfig.from_dict(identity["config"])
    entries, arrays = {}, {}
    for item in planned:
        path = out / "targets" / f"{item.key}.json"
        if path.exists() and path.with_suffix(".npz").exists():
            entries[item.key] = json.loads(path.read_text())
            arrays[item.key] = _load_arrays(out / "targets" / f"{item.key}.npz")
    knockout = _load_arrays(out / "knockout.npz")["images"] if (out / "knockout.npz").exists() else None
    if "ideal" in arrays and knockout is not None:
        ideal = arrays["ideal"]
        for key, entry in entries.items():
            if key == "ideal":
                continue
            a = arrays[key]
            diff = np.abs(a["block"] - ideal["block"])
            # the shot-noise-only rows sample counts; a fake target's floor follows its method
            floor = shot_noise_floor(ideal["block"], entry["shots"], "counts" if key.startswith("shots-") else cfg.method)
            entry["block_error_mean"] = float(diff.mean())
            entry["block_error_max"] = float(diff.max())
            entry["block_error_per_observable"] = [float(v) for v in diff.mean(axis=0)]
            entry["shot_noise_floor"] = float(floor.mean())
            entry["shot_noise_floor_per_observable"] = [float(v) for v in floor.mean(axis=0)]
            entry["error_over_floor"] = float(diff.mean() / floor.mean()) if floor.mean() > 0 else None
            entry["latent_rms_change"] = float(np.sqrt(np.mean((a["latents"] - ideal["latents"]) ** 2)))
            entry.update(noise_share(a["images"], ideal["images"], knockout))
    # where the networks ran: one device, or each of them in order when a resume moved the evaluation
    devices = list(dict.fromkeys(e["device"] for e in entries.values() if e.get("device")))
    summary = {"format": RESULT_FORMAT, "model": str(model_dir), "model_sha256": identity["model_sha256"],
               "vae_sha256": identity["vae_sha256"], **cfg.to_dict(), "device": ", ".join(devices) or None,
               "versions": software_versions(),
               "complete": len(entries) == len(planned),
               "pending": [p.label for p in planned if p.key not in entries],
               "knockout_image_change_grey": (float(np.mean(np.abs(knockout.astype(float) - arrays["ideal"]["images"].astype(float))))
                                              if knockout is not None and "ideal" in arrays else None),
               "evaluated": any("gradable" in e for e in entries.values()),
               "warnings": _warnings(cfg),
               "targets": entries}
    if len(cfg.mitigations) > 1:
        summary["mitigation_sweep"] = mitigation_sweep(entries)
        summary["recommendations"] = [r["line"] for r in summary["mitigation_sweep"]["recommendations"]]
    io.write_json(out / "noisy_eval.json", summary)
    if len(cfg.mitigations) > 1 and summary["mitigation_sweep"]["rows"]:
        save_mitigation_plot(out / "mitigation.png", summary)
    if "ideal" in arrays:
        save_sample_panels(out / "samples.png", arrays["ideal"]["images"],
                           [(entries[k], arrays[k]["images"]) for k in entries if entries[k].get("transpiled") is not None])
    if any(e.get("transpiled") and "block_error_mean" in e for e in entries.values()):
        save_backend_plot(out / "backends.png", summary)
    io.write_text(out / "noisy_eval.md", markdown(summary))
    return summary


def percent(share: float | None) -> str:
    """A share as a percentage with two significant digits, so that 0.034% is not printed as 0.0%."""
    if share is None or not math.isfinite(share):
        return "–"
    if share == 0:
        return "0%"
    digits = max(0, 1 - math.floor(math.log10(abs(share * 100))))
    return f"{share * 100:.{digits}f}%"


def markdown(summary: dict) -> str:
    from qhybrid.evaluation.evaluate import fmt
    from qhybrid.evaluation.report import metric
    from qhybrid.quantum.targets import describe_noise

    gradable, fd = metric("gradable"), metric("fd")
    rows = ["| target | block error (mean, max) | shot-noise floor | error / floor | image change (grey levels) | "
            "share of knock-out | 2q gates, depth | median 2q error | est. fidelity | gradable % | FD | s / step | "
            "shots / image |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for e in summary["targets"].values():
        tr = e.get("transpiled") or {}
        has = "block_error_mean" in e
        ratio = e.get("error_over_floor")
        rows.append(
            f"| {e['label']} | " + (f"{e['block_error_mean']:.4f}, {e['block_error_max']:.3f}" if has else "–")
            + " | " + (f"{e['shot_noise_floor']:.4f}" if has else "–")
            + " | " + (f"{ratio:.2f}" if ratio is not None else "–")
            + f" | {e.get('noise_image_change_grey', 0):.3f} | {percent(e.get('noise_share_of_knockout'))} | "
            + (f"{tr['two_qubit_gates']}, {tr['depth']}" if tr else "–") + " | "
            + (f"{tr['median_two_qubit_error']:.2e}" if tr.get("median_two_qubit_error") is not None else "–")
            + " | " + (f"{tr['estimated_fidelity']:.3f}" if tr.get("estimated_fidelity") is not None else "–")
            + f" | {fmt(e.get('gradable'), gradable.scale, gradable.digits)} | {fmt(e.get('fd'), fd.scale, fd.digits)}"
            f" | {e['seconds_per_step']:.2f} | {e['shots_per_image']:,} |")
    per_obs = [f"| {e['label']} | " + (", ".join(map(str, e["transpiled"]["layout"])) if e.get("transpiled") else "–")
               + " | " + " | ".join(f"{v:.4f}" for v in e["block_error_per_observable"]) + " |"
               for e in summary["targets"].values() if "block_error_per_observable" in e]
    first = next((e for e in summary["targets"].values() if "block_error_per_observable" in e), None)
    sources = sorted({describe_noise(e["noise_source"]) for e in summary["targets"].values()
                      if e.get("noise_source") and e["noise_source"]["kind"] != "shot noise only"})
    knockout = summary["knockout_image_change_grey"]
    text = [
        f"# Noisy evaluation of {summary['model']}\n",
        ("" if summary["complete"] else f"**Incomplete**: {', '.join(summary['pending'])} not finished yet "
         "(continue with `--resume`).\n"),
        f"{summary['n']} samples per target, {summary['steps']} DDIM steps, seed {summary['seed']}, method "
        f"`{summary['method']}`, mitigation: {', '.join(_labels(summary))}, transpiler "
        f"optimisation level {summary['optimization_level']}"
        + (f", networks on {summary['device']}" if summary.get("device") else "")
        + ". Every target starts from the same noise, so differences come from the quantum block alone.\n",
        *(f"**Warning**: {w}.\n" for w in summary["warnings"]),
        "- **Block error**: |noisy - ideal| of the block's expectation values on the inputs met during ideal "
        "sampling (first, middle and last step).",
        "- **Shot-noise floor**: the mean |error| that many shots of a *noiseless* device would give, "
        "sqrt(2/pi) * sqrt((1 - mu^2) / shots) per output from the ideal outputs mu; the *shot noise only* "
        "rows measure it" + (" (the `estimator` method's floor is sqrt(2/pi) / sqrt(shots): it adds Gaussian noise of "
                              "that size)" if summary["method"] == "estimator" else "")
        + ". **error / floor** near 1: the figure is sampling error; well above 1: device noise"
        + (" (with mitigation the floor is a lower bound: inverting readout errors or extrapolating to zero "
           "noise amplifies shot noise)." if _labels(summary) != ["no mitigation"] else "."),
        "- **Image change**: mean absolute difference from the ideal samples in grey levels (0-255); **share of "
        "knock-out**: that change over the change the circuit's knock-out (its output replaced by its mean) "
        "makes to the same samples" + (f" ({knockout:.2f} grey levels)." if knockout is not None else "."),
        "- **Median 2q error**: of the two-qubit gates the transpiled circuit uses, from the backend's "
        "calibration; **est. fidelity**: the product of (1 - error) over the circuit's gates and measured qubits "
        "(`qhybrid circuits inspect` prints its split). One execution per sampling step holds every chain × "
        "patch as parameter bindings.\n",
        *([f"Noise sources: {'; '.join(sources)}.\n"] if sources else []),
        "\n".join(rows), "",
    ]
    if first is not None:
        k = len(first["block_error_per_observable"])
        text += ["Block error per observable (output k is ⟨Z⟩ of logical qubit k, measured on the k-th physical "
                 "qubit of the layout):", "",
                 "| target | physical qubits | " + " | ".join(f"⟨Z{j}⟩" for j in range(k)) + " |",
                 "|---|---|" + "---:|" * k,
                 *per_obs, ""]
    if summary.get("mitigation_sweep"):
        text += sweep_markdown(summary["mitigation_sweep"])
    text.append("![samples: ideal first, then each noisy target](samples.png)")
    if any(e.get("transpiled") for e in summary["targets"].values()):
        text.append("\n![block error against the transpiled circuit and the device's two-qubit error](backends.png)")
    return "\n".join(t for t in text if t is not None) + "\n"


def save_backend_plot(path: Path, summary: dict) -> Path:
    """Block error (one marker per shot count, one point per noise source) against the transpiled
    circuit's two-qubit gate count, its depth, the median error of those gates and the estimated
    infidelity, with each shot count's shot-noise floor as a dashed line: which backends are above
    their floor and why."""
    plt = io.pyplot()
    summary = json.loads(json.dumps(summary))  # the plot adds a field; the summary stays as written
    noisy = [e for e in summary["targets"].values() if e.get("transpiled") and "block_error_mean" in e]
    labels = _labels(summary)  # the first mitigation only (no mitigation, when it is there): the device's own error
    noisy = [e for e in noisy if e.get("mitigation", "no mitigation") == labels[0]]
    axes_spec = [("two_qubit_gates", "two-qubit gates (transpiled)"), ("depth", "depth (transpiled)"),
                 ("median_two_qubit_error", "median error of its two-qubit gates"),
                 ("estimated_infidelity", "1 - estimated fidelity (calibration)")]
    for e in noisy:
        fidelity = e["transpiled"].get("estimated_fidelity")
        e["transpiled"]["estimated_infidelity"] = None if fidelity is None else 1 - fidelity
    fig, axes = plt.subplots(1, len(axes_spec), figsize=(4.2 * len(axes_spec), 4.2), sharey=True)
    shots = sorted({e["shots"] for e in noisy})
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    markers = {s: "osD^v<>"[k % 7] for k, s in enumerate(shots)}
    colours = {s: cycle[k % len(cycle)] for k, s in enumerate(shots)}
    floors = {e["shots"]: e["shot_noise_floor"] for e in summary["targets"].values() if "shot_noise_floor" in e}
    for ax, (field, xlabel) in zip(axes, axes_spec):
        for s in shots:
            points = [(e["transpiled"].get(field), e["block_error_mean"], e["noise_source"].get("backend", "?"))
                      for e in noisy if e["shots"] == s and e["transpiled"].get(field) is not None]
            if points:
                ax.scatter([p[0] for p in points], [p[1] for p in points], marker=markers[s], color=colours[s],
                           label=f"{s:,} shots")
                for x, y, name in points:
                    ax.annotate(name.removeprefix("fake_"), (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
            if s in floors:
                ax.axhline(floors[s], color=colours[s], linestyle="--", linewidth=0.8)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("block error vs ideal (mean |Δ⟨Z⟩|)")
    axes[0].set_ylim(bottom=0)
    axes[0].legend(fontsize=8, title="dashed: shot-noise floor", title_fontsize=7)
    fig.suptitle("Noisy block error per backend" + ("" if labels == ["no mitigation"] else f" ({labels[0]})"))
    fig.tight_layout()
    io.save_figure(fig, path)
    plt.close(fig)
    return path


def save_sample_panels(path: Path, ideal: np.ndarray, noisy: list[tuple[dict, np.ndarray]]) -> list[str]:
    """The first 16 samples of each target: the exact ideal samples first, then one row per noise
    source with one panel per shot count and mitigation, so that columns compare shots (or
    mitigations) and rows compare devices. Returns the panels' titles, in order."""
    from qhybrid.plots import grid_array

    plt = io.pyplot()
    sources = list(dict.fromkeys(e["source"] for e, _ in noisy))
    # by shots, then in the evaluation's order of mitigations (no mitigation first)
    columns = sorted(dict.fromkeys((e["shots"], e.get("mitigation", "no mitigation")) for e, _ in noisy),
                     key=lambda c: c[0])
    nrows, ncols = 1 + len(sources), max(1, len(columns))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.0 * ncols, 3.2 * nrows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    titles = ["ideal (exact): the reference"]
    axes[0][0].imshow(grid_array(ideal[:16], ncols=4))
    axes[0][0].set_title(titles[0], fontsize=9)
    for entry, images in noisy:
        r = 1 + sources.index(entry["source"])
        c = columns.index((entry["shots"], entry.get("mitigation", "no mitigation")))
        titles.append(f"{entry['label']}\nchange {entry.get('noise_image_change_grey', 0):.2f} grey levels")
        axes[r][c].imshow(grid_array(images[:16], ncols=4))
        axes[r][c].set_title(titles[-1], fontsize=8)
    fig.tight_layout()
    io.save_figure(fig, path)
    plt.close(fig)
    return titles


def _labels(summary: dict) -> list[str]:
    """The mitigations of an evaluation as reports name them, "no mitigation" first."""
    from qhybrid.quantum.mitigation import Mitigation

    labels = [Mitigation.of(m).label for m in summary.get("mitigations", [{"kind": "none"}])]
    return sorted(labels, key=lambda label: label != "no mitigation")


#: A mitigation is recommended over no mitigation only if it lowers the block error by at least
#: this share; between options within this share of the best, the one with fewer shots per image.
MEANINGFUL_GAIN = 0.10


def mitigation_sweep(entries: dict) -> dict:
    """Per noise source and shot count, each mitigation's block error, its change against no
    mitigation, image change and cost (circuits and shots per image, seconds per step), and the
    option the data recommend: the cheapest among those within :data:`MEANINGFUL_GAIN` of the
    lowest error, and no mitigation unless one beats it by that much."""
    rows, groups = [], {}
    for e in entries.values():
        if "block_error_mean" not in e or not e.get("transpiled"):
            continue
        groups.setdefault((e["source"], e["shots"]), []).append(e)
    recommendations = []
    for (source, shots), group in groups.items():
        base = next((e for e in group if e.get("mitigation") == "no mitigation"), None)
        for e in group:
            rows.append({
                "source": source, "shots": shots, "mitigation": e.get("mitigation", "no mitigation"),
                "block_error": e["block_error_mean"], "error_over_floor": e.get("error_over_floor"),
                "error_vs_none": (e["block_error_mean"] / base["block_error_mean"] - 1) if base else None,
                "image_change_grey": e.get("noise_image_change_grey"),
                "share_of_knockout": e.get("noise_share_of_knockout"),
                "circuits_per_image": e.get("circuits_per_image"), "shots_per_image": e.get("shots_per_image"),
                "shots_vs_none": (e["shots_per_image"] / base["shots_per_image"]) if base and base.get("shots_per_image") else None,
                "seconds_per_step": e.get("seconds_per_step")})
        best = min(group, key=lambda e: e["block_error_mean"])
        close = [e for e in group if e["block_error_mean"] <= best["block_error_mean"] * (1 + MEANINGFUL_GAIN)]
        choice = min(close, key=lambda e: (e.get("shots_per_image") or 0, e["block_error_mean"]))
        if base is not None and choice is not base and choice["block_error_mean"] > base["block_error_mean"] * (1 - MEANINGFUL_GAIN):
            choice = base
        name = choice.get("mitigation", "no mitigation")
        if base is None or choice is base:
            why = (f"no option lowers the block error by {MEANINGFUL_GAIN:.0%} or more (best: {best.get('mitigation')}, "
                   f"{best['block_error_mean']:.4f} vs {base['block_error_mean']:.4f})" if base is not None and best is not base
                   else "it has the lowest block error")
        else:
            gain = 1 - choice["block_error_mean"] / base["block_error_mean"]
            cost = choice["shots_per_image"] / base["shots_per_image"] if base.get("shots_per_image") else float("nan")
            why = (f"block error {choice['block_error_mean']:.4f} vs {base['block_error_mean']:.4f} unmitigated "
                   f"({gain:.0%} lower) for {cost:.2f}x the shots per image")
        recommendations.append({"source": source, "shots": shots, "mitigation": name,
                                "line": f"{source} at {shots:,} shots: {name}: {why}"})
    return {"rows": rows, "recommendations": recommendations, "meaningful_gain": MEANINGFUL_GAIN}


def sweep_markdown(sweep: dict) -> list[str]:
    lines = ["## Mitigation sweep", "",
             "Per backend and shot count: the block's error against ideal with each mitigation, its change against "
             "no mitigation, the image change, and what a device would run for it (circuits and shots per image: "
             "every twirling randomisation, ZNE noise factor and calibration circuit counted). The floor is a lower "
             "bound for mitigated rows (mitigation amplifies shot noise). Seconds are this machine's simulation time, "
             "not QPU time.", "",
             "| backend | shots | mitigation | block error | vs none | error / floor | image change (grey) | share of "
             "knock-out | circuits / image | shots / image | shots vs none | s / step |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sweep["rows"]:
        vs = "–" if r["error_vs_none"] is None else f"{r['error_vs_none']:+.0%}"
        ratio = "–" if r["error_over_floor"] is None else f"{r['error_over_floor']:.2f}"
        shots_vs = "–" if r["shots_vs_none"] is None else f"{r['shots_vs_none']:.2f}×"
        lines.append(f"| {r['source']} | {r['shots']:,} | {r['mitigation']} | {r['block_error']:.4f} | {vs} | {ratio} | "
                     f"{r['image_change_grey']:.3f} | {percent(r['share_of_knockout'])} | "
                     f"{r['circuits_per_image'] or 0:,.0f} | {r['shots_per_image'] or 0:,} | {shots_vs} | "
                     f"{r['seconds_per_step']:.2f} |")
    lines += ["", f"**Recommended** (the cheapest option within {sweep['meaningful_gain']:.0%} of the lowest error; no "
              f"mitigation unless an option lowers the error by {sweep['meaningful_gain']:.0%} or more):", ""]
    lines += [f"- {r['line']}" for r in sweep["recommendations"]]
    lines += ["", "![block error against shots per image, per backend and mitigation](mitigation.png)", ""]
    return lines


def save_mitigation_plot(path: Path, summary: dict) -> Path:
    """Block error against shots per image (the cost), one colour per backend and one marker per
    mitigation, each backend's options joined in cost order, the shot-noise floor dashed."""
    plt = io.pyplot()
    rows = summary["mitigation_sweep"]["rows"]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    groups = list(dict.fromkeys((r["source"], r["shots"]) for r in rows))
    kinds = list(dict.fromkeys(r["mitigation"] for r in rows))
    markers = {k: "osD^v<>P*X"[i % 10] for i, k in enumerate(kinds)}
    for g, (source, shots) in enumerate(groups):
        mine = sorted((r for r in rows if (r["source"], r["shots"]) == (source, shots)), key=lambda r: r["shots_per_image"] or 0)
        colour = cycle[g % len(cycle)]
        ax.plot([r["shots_per_image"] for r in mine], [r["block_error"] for r in mine], color=colour, alpha=0.4)
        for r in mine:
            ax.scatter(r["shots_per_image"], r["block_error"], color=colour, marker=markers[r["mitigation"]], s=46,
                       zorder=3)
        ax.annotate(source.removeprefix("fake_") + (f" {shots:,}" if len({s for _, s in groups}) > 1 else ""),
                    (mine[-1]["shots_per_image"], mine[-1]["block_error"]), textcoords="offset points", xytext=(5, 0),
                    fontsize=8, color=colour)
    floors = {e["shots"]: e["shot_noise_floor"] for k, e in summary["targets"].items() if k.startswith("shots-")}
    for shots, floor in floors.items():
        ax.axhline(floor, color="grey", linestyle="--", linewidth=0.8)
        ax.text(0.01, floor, f" shot-noise floor, {shots:,} shots", transform=ax.get_yaxis_transform(),
                va="bottom", fontsize=7, color="grey")
    for k in kinds:
        ax.scatter([], [], color="black", marker=markers[k], label=k)
    ax.set_xscale("log")
    ax.set_xlabel("shots per image a device would run (log)")
    ax.set_ylabel("block error vs ideal (mean |Δ⟨Z⟩|)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="mitigation", title_fontsize=8)
    ax.set_title("Mitigation: block error against cost, per backend")
    fig.tight_layout()
    io.save_figure(fig, path)
    plt.close(fig)
    return path


def strip_timings(summary: dict) -> dict:
    """``summary`` without the timing fields (for comparing two runs of the same evaluation)."""
    copy = json.loads(json.dumps(summary))
    for entry in copy.get("targets", {}).values():
        for key in TIMING_FIELDS:
            entry.pop(key, None)
    return copy

