"""Noise-aware training, measured: surrogate fits, and plain against noise-aware weights on noisy targets.

Three entry points, one per question a user asks:

* :func:`fit_surrogates` (``qhybrid noise surrogate``): does the surrogate of each backend
  reproduce Aer's noisy block outputs on held-out inputs of this model? One JSON file per backend
  and a table;
* :func:`compare_noise_aware` (``qhybrid noisy-eval --plain ... --noise-aware ...``): the same
  noisy evaluation (:mod:`qhybrid.workflows.noisy_eval`, one folder per model, resumable) of every
  model, then per group and backend the mean and the range over seeds of the block error, the
  sample change the noise causes (grey levels, latents, share of the circuit's knock-out), and the
  gradable share and FD on ideal and on each backend;
* :func:`noise_aware_study` (``qhybrid noise-aware``, ``make noise-aware``): trains what is missing
  of plain and noise-aware models for several seeds on one VAE, then compares them on the backend
  the noise-aware weights were trained for and on backends they were not.

Each takes ``device`` (:mod:`qhybrid.devices`): where the networks run (the denoiser, the VAE and
the evaluators; the study's training too). The circuits run in Aer on the CPU and the noise is
drawn on the CPU from seeded generators, so a seed gives the same figures on any device.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from qhybrid import io
from qhybrid.config import Config
from qhybrid.devices import resolve_device
from qhybrid.errors import InputError
from qhybrid.workflows.demo import DemoConfig

RESULT_FORMAT = "qhybrid-noise-aware-comparison"
#: What the comparison reports per model and target, and how a reader sees it.
METRICS = {
    "block_error_mean": "block error",
    "error_over_floor": "error / floor",
    "noise_image_change_grey": "image change (grey levels)",
    "latent_rms_change": "latent change (RMS)",
    "noise_share_of_knockout": "share of knock-out",
    "gradable": "gradable %",
    "fd": "FD",
}


# --- surrogate fits -------------------------------------------------------------------------------
def fit_surrogates(model_dir: str | Path, backends: list[str], *, shots: int = 4096, seed: int = 0,
                   out: str | Path = "noise_models", vae: str | Path | None = None, log=print,
                   device: str | torch.device | None = None) -> list[dict]:
    """Fit the noise surrogate of each backend on the block inputs of the hybrid LDM in ``model_dir``;
    write ``<out>/<model>-<backend>-surrogate.json`` each and ``<out>/<model>-surrogates.md``.
    ``device``: where the VAE and the denoiser compute those inputs (None: the CPU), recorded in
    each file as ``device``; the fits themselves run in Aer and NumPy on the CPU."""
    from qhybrid.quantum.noise_surrogate import fit_surrogate, quality_line

    device = resolve_device(device or "cpu")
    model_dir, out = Path(model_dir), Path(out)
    loaded, inputs = _model_inputs(model_dir, vae, seed, device)
    block = loaded.denoiser.quantum_block
    rows = []
    for backend in backends:
        t0 = time.perf_counter()
        log(f"fitting the noise surrogate of {backend} ({shots:,} shots)")
        surrogate = fit_surrogate(block, backend, inputs, shots=shots, seed=seed, log=log)
        surrogate.info["device"] = str(device)  # where the model computed the block inputs of the fit
        path = surrogate.save(out / f"{model_dir.name}-{backend}-surrogate.json")
        log(f"  {quality_line(surrogate)} ({time.perf_counter() - t0:.0f} s) -> {path}")
        rows.append({"backend": backend, "file": str(path), "device": str(device), "seconds": time.perf_counter() - t0,
                     "calibration_date": surrogate.info.get("calibration_date"), "layout": surrogate.info.get("layout"),
                     "attenuation": [float(v) for v in np.diag(surrogate.matrix.double().numpy())],
                     "offset": [float(v) for v in surrogate.offset.double().numpy()],
                     "residual_sd": [float(v) for v in surrogate.residual_sd.double().numpy()],
                     **surrogate.info["quality"]})
    io.write_text(out / f"{model_dir.name}-surrogates.md", surrogates_markdown(model_dir, rows))
    return rows


def _model_inputs(model_dir: Path, vae, seed: int, device: torch.device | None = None):
    """The model (on ``device``; None: the CPU) and 2,048 block inputs it produces on its training
    data (noisy latents, random t), on the CPU."""
    from qhybrid.data.loaders import load_dataset
    from qhybrid.diffusion.pipeline import LatentDiffusion
    from qhybrid.training.diffusion import block_inputs, encode_dataset

    loaded = LatentDiffusion.from_checkpoint(model_dir, vae=vae)
    if loaded.denoiser.quantum_block is None:
        raise InputError(f"{model_dir} is a {loaded.denoiser.cfg.kind} model without a circuit; "
                         "a noise surrogate needs a hybrid model")
    loaded.denoiser.to(device or "cpu")
    loaded.vae.to(device or "cpu")
    train = loaded.header.get("extra", {}).get("train", {})
    data = load_dataset(train.get("data", "synthetic"), loaded.vae.cfg.size, "train", n=64, seed=seed)
    latents = encode_dataset(loaded.vae, data.tensor())
    return loaded, block_inputs(loaded.denoiser, loaded.scheduler, latents, seed)


def surrogates_markdown(model_dir: Path, rows: list[dict]) -> str:
    lines = [f"# Noise surrogates of {model_dir}", "",
             "Held out: block inputs of this model not used in the fit, at its own weights, run on Aer with the "
             "backend's noise at the training shot count. **error / floor** is the mean |Aer - surrogate| over the "
             "shot-noise floor (1: the surrogate is within shot noise); the exact outputs' own ratio is beside it. "
             "**z spread**: the spread of (Aer - surrogate mean) / surrogate sd (1: the surrogate's noise has the "
             "right size)." + (f" The model computed the block inputs on {rows[0]['device']}." if rows and rows[0].get("device")
                               else ""), "",
             "| backend | calibrated | layout | attenuation | offset | residual sd | shots | held-out error | floor | "
             "error / floor | exact outputs: error / floor | z spread | fit s |",
             "|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {(r['calibration_date'] or '–')[:10]} | {', '.join(map(str, r['layout'] or []))} | "
            f"{min(r['attenuation']):.3f}–{max(r['attenuation']):.3f} | {min(r['offset']):+.4f}–{max(r['offset']):+.4f} | "
            f"{max(r['residual_sd']):.4f} max | {r['shots']:,} | {r['error_mean']:.4f} | {r['shot_noise_floor']:.4f} | "
            f"{r['error_over_floor']:.2f} | {r['ideal_error_over_floor']:.2f} | {r['z_sd']:.2f} | {r['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


# --- plain against noise-aware ----------------------------------------------------------------------
def compare_noise_aware(plain: list[str | Path], aware: list[str | Path], backends: list[str], *, shots: int = 4096,
                        n: int = 32, steps: int = 20, seed: int = 0, out: str | Path,
                        evaluators: str | Path | None = None, progress: bool = True, log=print,
                        device: str | torch.device | None = None) -> dict:
    """Evaluate every model on ideal and on each backend (one noisy-eval folder per model, kept and
    resumed), then write ``noise_aware.json`` / ``.md`` / ``.png`` in ``out``: per group and target
    the mean and range over the models (seeds) of :data:`METRICS`. ``evaluators``: a run folder
    with ``validator/`` and ``encoder/`` for the gradable share and FD, where the models' own run
    folder has none (default: the first plain model's run folder). ``device``: where the networks
    run (None: the CPU); kept evaluations continue on it whatever device began them."""
    from qhybrid.workflows.noisy_eval import (
        ImageQuality,
        NoisyEvalConfig,
        default_out,
        run_noisy_eval,
    )

    if not plain or not aware:
        raise InputError("comparing plain and noise-aware training needs at least one model of each")
    device = resolve_device(device or "cpu")
    out = Path(out)
    cfg = NoisyEvalConfig(backends=tuple(backends), shots=(shots,), n=n, steps=steps, seed=seed)
    evaluators = Path(evaluators) if evaluators is not None else Path(plain[0]).parent
    quality = None
    groups: dict[str, list[dict]] = {"plain": [], "noise-aware": []}
    for group, models in (("plain", plain), ("noise-aware", aware)):
        for model in map(Path, models):
            folder = default_out(model, cfg)
            _check_not_stale(folder, model)
            log(f"[{group}] {model}: noisy evaluation in {folder}")
            summary = run_noisy_eval(model, folder, cfg, resume=(folder / "config.json").exists(), progress=progress,
                                     log=log, device=device)
            if quality is None:
                quality = ImageQuality.of(evaluators, _training_data(model), _image_size(folder), seed,
                                          device=device) or False
            groups[group].append(_model_row(model, folder, summary, quality))
    result = {"format": RESULT_FORMAT, "backends": list(backends), "shots": shots, "n": n, "steps": steps,
              "seed": seed, "device": str(device), "evaluators": str(evaluators) if quality else None, "trained_for": sorted({r["trained_for"] for r in groups["noise-aware"] if r["trained_for"]}),
              "models": groups, "summary": _aggregate(groups, ["ideal"] + list(backends))}
    io.write_json(out / "noise_aware.json", result)
    io.write_text(out / "noise_aware.md", comparison_markdown(result))
    save_comparison_plot(out / "noise_aware.png", result)
    return result


def _check_not_stale(folder: Path, model: Path) -> None:
    """Refuse an evaluation folder made for other weights of this model (it trained on since)."""
    import json

    from qhybrid.models import checkpoint as ckpt

    saved = folder / "config.json"
    if not saved.exists():
        return
    try:
        evaluated = json.loads(saved.read_text()).get("model_sha256")
    except (OSError, ValueError, AttributeError):
        return  # noisy-eval itself names a damaged folder
    if evaluated != ckpt.read_header(model, "ldm").get("weights_sha256"):
        raise InputError(f"{folder} holds the evaluation of earlier weights of {model} (it has trained since); "
                         "move that folder aside to evaluate the model as it is now")


def _training_data(model: Path) -> str:
    from qhybrid.models import checkpoint as ckpt

    return ckpt.read_header(model, "ldm").get("extra", {}).get("train", {}).get("data", "synthetic")


def _image_size(folder: Path) -> int:
    with np.load(folder / "targets" / "ideal.npz") as arrays:
        return int(arrays["images"].shape[1])


def _model_row(model: Path, folder: Path, summary: dict, quality=None) -> dict:
    """One model's figures per target (``ideal`` and each backend at the comparison's shots); the
    gradable share and FD from ``quality`` (an :class:`ImageQuality`) on the evaluation's stored
    images where the evaluation itself had no evaluators."""
    from qhybrid.models import checkpoint as ckpt

    extra = ckpt.read_header(model, "ldm").get("extra", {})
    targets = {}
    for key, entry in summary["targets"].items():
        if key.startswith("shots-"):
            continue
        name = "ideal" if key == "ideal" else entry["source"]
        if "gradable" not in entry and quality:
            with np.load(folder / "targets" / f"{key}.npz") as arrays:
                entry = {**entry, **quality(arrays["images"])}
        row = {}
        for metric in METRICS:
            value = entry.get(metric)
            row[metric] = value["value"] if isinstance(value, dict) else value
        targets[name] = row
    noise_aware = extra.get("noise_aware") or {}
    return {"model": str(model), "evaluation": str(folder), "seed": extra.get("train", {}).get("seed"),
            "trained_for": noise_aware.get("target"), "surrogate_quality": noise_aware.get("quality"),
            "surrogate_after_training": _surrogate_after_training(model, folder, summary) if noise_aware else None,
            "targets": targets}


def _surrogate_after_training(model: Path, folder: Path, summary: dict) -> dict | None:
    """Does the surrogate, fitted before training, still describe the *trained* block? Its mean on the
    evaluation's probe inputs (the block's ideal outputs there) against the noisy target's outputs,
    over that target's shot-noise floor."""
    from qhybrid.quantum.analysis import shot_noise_floor
    from qhybrid.quantum.noise_surrogate import FILE_NAME, NoiseSurrogate

    if not (model / FILE_NAME).exists():
        return None
    surrogate = NoiseSurrogate.from_file(model / FILE_NAME)
    key = next((k for k, e in summary["targets"].items() if e.get("source") == surrogate.backend), None)
    if key is None:
        return None
    with np.load(folder / "targets" / "ideal.npz") as ideal, np.load(folder / "targets" / f"{key}.npz") as noisy:
        mu, y = ideal["block"], noisy["block"]
    import torch

    predicted = surrogate.mean(torch.from_numpy(mu).float()).double().numpy()
    floor = shot_noise_floor(predicted, summary["targets"][key]["shots"], "counts").mean()
    return {"backend": surrogate.backend, "error_mean": float(np.abs(y - predicted).mean()),
            "shot_noise_floor": float(floor), "error_over_floor": float(np.abs(y - predicted).mean() / floor),
            "ideal_error_over_floor": float(np.abs(y - mu).mean() / floor)}


def _aggregate(groups: dict[str, list[dict]], targets: list[str]) -> dict:
    """Per group, target and metric: mean, min, max and standard deviation over the models."""
    summary: dict = {}
    for group, rows in groups.items():
        summary[group] = {}
        for target in targets:
            summary[group][target] = {}
            for metric in METRICS:
                values = [r["targets"].get(target, {}).get(metric) for r in rows]
                values = [v for v in values if v is not None and math.isfinite(v)]
                if values:
                    summary[group][target][metric] = {
                        "mean": float(np.mean(values)), "min": float(np.min(values)), "max": float(np.max(values)),
                        "sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, "values": values}
    for target in targets[1:]:  # the noise-aware over the plain mean, per backend
        ratios = {}
        for metric in ("block_error_mean", "noise_image_change_grey", "latent_rms_change"):
            a = summary["noise-aware"].get(target, {}).get(metric)
            p = summary["plain"].get(target, {}).get(metric)
            if a and p and p["mean"] > 0:
                ratios[metric] = a["mean"] / p["mean"]
        summary.setdefault("ratio", {})[target] = ratios
    return summary


def _cell(stat: dict | None, metric: str) -> str:
    if not stat:
        return "–"
    scale, fmt = (100, "{:.1f}") if metric in ("gradable", "noise_share_of_knockout") else (1, _format(metric))
    return (f"{fmt.format(stat['mean'] * scale)} [{fmt.format(stat['min'] * scale)}, "
            f"{fmt.format(stat['max'] * scale)}]")


def _format(metric: str) -> str:
    return {"block_error_mean": "{:.4f}", "error_over_floor": "{:.2f}", "noise_image_change_grey": "{:.3f}",
            "latent_rms_change": "{:.4f}", "fd": "{:.1f}"}.get(metric, "{:.3g}")


def comparison_markdown(result: dict) -> str:
    s, groups = result["summary"], result["models"]
    trained = ", ".join(result["trained_for"]) or "?"
    counts = ", ".join(f"{len(rows)} {g}" for g, rows in groups.items())
    lines = [f"# Plain against noise-aware training (noise-aware weights trained for {trained})", "",
             f"{counts} models; each sampled {result['n']} images with {result['steps']} DDIM steps (seed "
             f"{result['seed']}) on ideal and on {', '.join(result['backends'])} at {result['shots']:,} shots. "
             "Each cell: the mean over the models (seeds) and, in brackets, the lowest and highest. The *sample "
             "change* is each model's own noisy samples against its own ideal samples (same seed): what the noise "
             "does to that model. Share of knock-out: that change over the change the circuit's knock-out makes.", ""]
    header = "| target | group | " + " | ".join(METRICS.values()) + " |"
    lines += [header, "|---|---|" + "---:|" * len(METRICS)]
    for target in ["ideal"] + result["backends"]:
        label = target + (" (trained for)" if f"fake:{target}" in result["trained_for"] else
                          "" if target == "ideal" else " (unseen)")
        for group in ("plain", "noise-aware"):
            stats = s[group].get(target, {})
            cells = [("–" if target == "ideal" and m not in ("gradable", "fd") else _cell(stats.get(m), m))
                     for m in METRICS]
            lines.append(f"| {label} | {group} | " + " | ".join(cells) + " |")
    lines += ["", "Noise-aware over plain (means):", ""]
    for target, ratios in s.get("ratio", {}).items():
        parts = [f"{METRICS[m]} {v:.2f}x" for m, v in ratios.items()]
        lines.append(f"- {target}: " + ("; ".join(parts) if parts else "–"))
    qualities = [r["surrogate_quality"] for r in groups["noise-aware"] if r.get("surrogate_quality")]
    if qualities:
        lines += ["", "Surrogates of the noise-aware runs, fitted before training (held-out inputs at the initial "
                  "weights, training shots): error / floor " + ", ".join(f"{q['error_over_floor']:.2f}" for q in qualities)
                  + " (exact outputs: " + ", ".join(f"{q['ideal_error_over_floor']:.2f}" for q in qualities) + ")."]
    after = [r["surrogate_after_training"] for r in groups["noise-aware"] if r.get("surrogate_after_training")]
    if after:
        lines += ["", "The same surrogates on the *trained* blocks (the evaluation's probe inputs, against "
                  f"{after[0]['backend']}): error / floor " + ", ".join(f"{a['error_over_floor']:.2f}" for a in after)
                  + " (exact outputs: " + ", ".join(f"{a['ideal_error_over_floor']:.2f}" for a in after) + ")."]
    lines += ["", "Models:", ""] + [f"- {g}: {r['model']} (seed {r['seed']}; evaluation {r['evaluation']})"
                                    for g, rows in groups.items() for r in rows]
    return "\n".join(lines) + "\n\n![sample change per backend](noise_aware.png)\n"


def save_comparison_plot(path: Path, result: dict) -> None:
    """Per backend, each model's sample change (dots) and the group means (bars)."""
    plt = io.pyplot()
    backends = result["backends"]
    panels = (("noise_image_change_grey", 1, METRICS["noise_image_change_grey"]),
              ("noise_share_of_knockout", 100, "share of the circuit's knock-out (%)"),
              ("block_error_mean", 1, METRICS["block_error_mean"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(13, 3.8))
    for ax, (metric, scale, label) in zip(axes, panels):
        for g, (group, colour) in enumerate((("plain", "#888888"), ("noise-aware", "#2a7ab0"))):
            stats = [result["summary"][group].get(b, {}).get(metric, {}) for b in backends]
            x = np.arange(len(backends)) + (g - 0.5) * 0.38
            ax.bar(x, [st.get("mean", np.nan) * scale for st in stats], width=0.36, color=colour, alpha=0.6,
                   label=group)
            for i, st in enumerate(stats):
                values = [v * scale for v in st.get("values", [])]
                ax.scatter([x[i]] * len(values), values, color=colour, s=14, zorder=3)
        ax.set_xticks(np.arange(len(backends)))
        ax.set_xticklabels([b + ("\n(trained for)" if f"fake:{b}" in result["trained_for"] else "\n(unseen)")
                            for b in backends])
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(frameon=False)
    fig.suptitle(f"what {result['shots']:,}-shot noise does to each model's samples (bars: mean; dots: seeds)",
                 fontsize=10)
    fig.tight_layout()
    io.save_figure(fig, path, dpi=110)
    plt.close(fig)


# --- the whole study --------------------------------------------------------------------------------
@dataclass(frozen=True)
class NoiseAwareStudyConfig(Config):
    """Plain and noise-aware hybrids on one VAE for ``seeds``, compared on ``backend`` (the one the
    noise-aware weights train for) and the ``unseen`` backends."""

    backend: str = "fake_torino"
    unseen: tuple[str, ...] = ("fake_fez",)
    seeds: tuple[int, ...] = (0, 1, 2)
    # the demo's recipe, so that the plain models are the demo's hybrid for other seeds
    steps: int = DemoConfig.steps
    n_train: int = DemoConfig.n_train
    batch: int = DemoConfig.batch
    prediction: str = DemoConfig.prediction
    noise_shots: int = 4096
    noise_consistency: float = 4.0
    n: int = 32
    sample_steps: int = 20

    def __post_init__(self):
        self._fill("unseen", tuple(self.unseen))
        self._fill("seeds", tuple(self.seeds))
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"NoiseAwareStudyConfig.seeds must be distinct, got {list(self.seeds)}")
        if not isinstance(self.backend, str) or not self.backend:
            raise ValueError(f"NoiseAwareStudyConfig.backend must name a fake backend, got {self.backend!r}")
        if self.backend in self.unseen:
            raise ValueError(f"NoiseAwareStudyConfig.unseen must not hold the trained-for backend {self.backend}")
        if self.prediction not in ("epsilon", "v_prediction"):
            raise ValueError(f"NoiseAwareStudyConfig.prediction must be epsilon or v_prediction, got {self.prediction!r}")
        if isinstance(self.noise_consistency, bool) or not isinstance(self.noise_consistency, (int, float)) \
                or self.noise_consistency < 0:
            raise ValueError(f"NoiseAwareStudyConfig.noise_consistency must be a number >= 0, got {self.noise_consistency!r}")
        for name in ("steps", "n_train", "batch", "noise_shots", "n", "sample_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"NoiseAwareStudyConfig.{name} must be a positive integer, got {value!r}")


def noise_aware_study(out: str | Path, vae: str | Path, cfg: NoiseAwareStudyConfig, *, progress: bool = True,
                      log=print, device: str | torch.device | None = "auto") -> dict:
    """Train (or keep) ``ldm-hybrid-s<seed>`` and ``ldm-hybrid-na-<backend>-s<seed>`` in ``out`` and
    compare them (:func:`compare_noise_aware`); prints the stage times. ``device``: where training,
    sampling and the evaluators run (default auto, as the demo's); kept models and evaluations are
    kept whatever device made them."""
    from qhybrid.diffusion.scheduler import SchedulerConfig
    from qhybrid.models import checkpoint as ckpt
    from qhybrid.training.diffusion import DiffusionTrainConfig, train_diffusion

    device = resolve_device(device)  # a GPU that is not there: refused before any training
    out = Path(out)
    plain, aware = [], []
    timings = _previous_timings(out / "study.json")  # of the models kept from an earlier call
    for seed in cfg.seeds:
        for name, extra, bucket in ((f"ldm-hybrid-s{seed}", {}, plain),
                                    (f"ldm-hybrid-na-{cfg.backend}-s{seed}",
                                     {"noise_aware": f"fake:{cfg.backend}", "noise_shots": cfg.noise_shots,
                                      "noise_consistency": cfg.noise_consistency}, aware)):
            folder = out / name
            bucket.append(folder)
            step = _finished_step(folder)
            if step is not None:
                _check_kept(folder, cfg, seed, extra)
            if step is not None and step >= cfg.steps:
                log(f"kept {folder} ({step} steps)")
                continue
            log(f"training {folder} ({cfg.steps} steps)")
            t0 = time.perf_counter()
            train_diffusion(folder, vae, "hybrid",
                            DiffusionTrainConfig(n=cfg.n_train, steps=cfg.steps, batch=cfg.batch, seed=seed,
                                                 save_every=max(100, cfg.steps // 4), **extra),
                            SchedulerConfig(prediction_type=cfg.prediction), resume=(folder / ckpt.STATE_NAME).exists(),
                            progress=progress, device=device)
            timings[name] = time.perf_counter() - t0
            log(f"  {name}: {timings[name]:.0f} s")
    t0 = time.perf_counter()
    result = compare_noise_aware(plain, aware, [cfg.backend, *cfg.unseen], shots=cfg.noise_shots, n=cfg.n,
                                 steps=cfg.sample_steps, out=out / "comparison", evaluators=Path(vae).parent,
                                 progress=progress, log=log, device=device)
    timings["evaluation"] = time.perf_counter() - t0
    io.write_json(out / "study.json", {"config": cfg.to_dict(), "vae": str(vae), "device": str(device),
                                       "timings_seconds": timings})
    log("stage times: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    return result


def _check_kept(folder: Path, cfg: NoiseAwareStudyConfig, seed: int, extra: dict) -> None:
    """Refuse a model in the study's folder that was trained with other settings than the study asks."""
    from qhybrid.models import checkpoint as ckpt

    header = ckpt.read_header(folder, "ldm")
    train = header.get("extra", {}).get("train", {})
    asked = {"seed": seed, "n": cfg.n_train, "batch": cfg.batch, "noise_aware": extra.get("noise_aware"),
             "prediction": cfg.prediction}
    saved = {**{k: train.get(k) for k in ("seed", "n", "batch", "noise_aware")},
             "prediction": header["config"]["scheduler"].get("prediction_type")}
    if extra.get("noise_aware"):
        asked.update(noise_shots=cfg.noise_shots, noise_consistency=cfg.noise_consistency)
        saved.update(noise_shots=train.get("noise_shots"), noise_consistency=train.get("noise_consistency"))
    differ = [f"{k} {saved[k]!r} (asked {asked[k]!r})" for k in asked if saved[k] != asked[k]]
    if differ:
        raise InputError(f"{folder} holds a model trained with other settings: {', '.join(differ)}; use another "
                         "--out or the same settings")


def _previous_timings(path: Path) -> dict:
    import json

    try:
        return dict(json.loads(path.read_text()).get("timings_seconds", {}))
    except (OSError, ValueError, AttributeError):
        return {}


def _finished_step(folder: Path) -> int | None:
    """The step of the checkpoint in ``folder`` (None when it holds none, or an unreadable one)."""
    from qhybrid.models import checkpoint as ckpt

    if not (folder / ckpt.CONFIG_NAME).exists():
        return None
    try:
        return ckpt.read_header(folder).get("extra", {}).get("step")
    except ckpt.CheckpointError:
        return None
