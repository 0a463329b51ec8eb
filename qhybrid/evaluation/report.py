"""Reports of a comparison: the one list of reported metrics, the table that marks resolved
differences, the Markdown page and the figures (bars with intervals; metrics against training-set
size for the data-scarcity sweep). Pure functions of the summaries that compare/sweep compute."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qhybrid import io
from qhybrid.evaluation.evaluate import fmt


class Metric:
    """One reported figure: where it sits in a metrics dict, its label, display scale and digits."""

    def __init__(self, key: str, group: str | None, label: str, scale: float = 1.0, digits: int = 2):
        self.key, self.group, self.label, self.scale, self.digits = key, group, label, scale, digits

    def entry(self, metrics: dict):
        """``{"value", "ci"}`` of this metric in ``metrics``, or None."""
        return (metrics.get(self.group, {}) if self.group else metrics).get(self.key)


#: Every figure of the comparison table, in column order; the plots and the sweep pick from it.
METRICS = (
    Metric("gradable", None, "gradable %", 100, 1),
    Metric("fd", "fundus_features", "FD (fundus features)", 1, 1),
    Metric("kid", "fundus_features", "KID", 1, 2),
    Metric("precision", "fundus_features", "precision"),
    Metric("recall", "fundus_features", "recall"),
    Metric("density", "fundus_features", "density"),
    Metric("coverage", "fundus_features", "coverage"),
    Metric("vessel_density", "vessels", "vessel density %", 100, 1),
    Metric("vessel_depth", "vessels", "vessel depth (grey levels)", 255, 1),
)
BAR_METRICS = ("gradable", "fd", "kid", "precision", "recall", "coverage", "vessel_density")
SWEEP_METRICS = ("gradable", "fd", "precision", "recall")


def metric(key: str) -> Metric:
    return next(m for m in METRICS if m.key == key)


def intervals_separate(a: dict | None, b: dict | None) -> bool:
    """True when two 95% intervals do not overlap: a difference the data resolves. For figures
    aggregated over training seeds (entries with a ``range``), the seed ranges must not overlap
    either: a difference beyond both the sampling intervals and the seed spread."""
    if not a or not b:
        return False
    apart = a["ci"][1] < b["ci"][0] or b["ci"][1] < a["ci"][0]
    if "range" in a and "range" in b:
        apart = apart and (a["range"][1] < b["range"][0] or b["range"][1] < a["range"][0])
    return apart


def _entry_text(entry: dict | None, scale: float, digits: int) -> str:
    """``value [lo, hi]``, and for seed aggregates ``mean ± sd [mean lo, mean hi]``."""
    if entry is None or "sd" not in entry:
        return fmt(entry, scale, digits)
    return (f"{entry['value'] * scale:.{digits}f} ± {entry['sd'] * scale:.{digits}f} "
            f"[{entry['ci'][0] * scale:.{digits}f}, {entry['ci'][1] * scale:.{digits}f}]")


def _over_seeds(values: list[float]) -> dict:
    arr = np.asarray(values, dtype=float)
    return {"value": float(arr.mean()), "sd": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
            "range": [float(arr.min()), float(arr.max())], "values": [float(v) for v in arr]}


def aggregate_seeds(results: dict) -> dict:
    """Per model kind, every metric and contribution figure over its training seeds: the mean, the
    seed spread (sd, range) and, for metrics with intervals, the mean interval. Same nested layout
    as one model's ``metrics``, so the table code reads both."""
    kinds: dict[str, list[dict]] = {}
    for r in results.values():
        kinds.setdefault(r["kind"], []).append(r)
    out = {}
    for kind, runs in kinds.items():
        metrics: dict = {}
        for m in METRICS:
            entries = [m.entry(r["metrics"]) for r in runs]
            if any(e is None for e in entries):
                continue
            agg = {**_over_seeds([e["value"] for e in entries]),
                   "ci": [float(np.mean([e["ci"][0] for e in entries])), float(np.mean([e["ci"][1] for e in entries]))]}
            (metrics.setdefault(m.group, {}) if m.group else metrics)[m.key] = agg
        contribution = {}
        for c in CONTRIBUTIONS:
            values = [c.value(r) for r in runs]
            if all(v is not None for v in values):
                contribution[c.path] = _over_seeds(values)
        first = runs[0]
        out[kind] = {"seeds": [r["seed"] for r in runs], "vae": first["vae"], "parameters": first["parameters"],
                     "metrics": metrics, "contribution": contribution}
    return out


class Contribution:
    """One figure of the contribution table: its path in a model's result (``knockout.denoiser_change``
    is ``result["contribution"]["knockout"]["denoiser_change"]``; ``circuit_travel_rad`` is top level)."""

    def __init__(self, path: str, label: str, scale: float = 1.0, digits: int = 2):
        self.path, self.label, self.scale, self.digits = path, label, scale, digits

    def value(self, result: dict):
        if "." not in self.path:
            return result.get(self.path)
        section, key = self.path.split(".")
        return result.get("contribution", {}).get(section, {}).get(key)


#: The contribution table's columns (see qhybrid.evaluation.contribution).
CONTRIBUTIONS = (
    Contribution("knockout.denoiser_change", "knock-out: denoiser Δ %", 100, 1),
    Contribution("knockout.sample_image_change_grey", "knock-out: samples Δ (grey levels)", 1, 2),
    Contribution("knockout.delta_gradable", "knock-out: Δ gradable (pp)", 100, 1),
    Contribution("knockout.delta_fd", "knock-out: Δ FD", 1, 1),
    Contribution("reset.denoiser_change", "reset to init: denoiser Δ %", 100, 1),
    Contribution("rerandomised.denoiser_change", "re-randomised: denoiser Δ %", 100, 1),
    Contribution("affine.r2", "affine fit R²", 1, 2),
    Contribution("affine.denoiser_change", "affine fit swapped in: denoiser Δ %", 100, 1),
    Contribution("circuit_travel_rad", "circuit weights travel (rad)", 1, 3),
)


def validator_summary(metrics: dict) -> str:
    """One clause on what the validator's own held-out tests say (from its checkpoint's metrics)."""
    text = (f"held-out accuracy {metrics.get('heldout_accuracy', float('nan')):.3f}, ROC AUC "
            f"{metrics.get('heldout_roc_auc', float('nan')):.3f}")
    if "vessel_erased_rejected" in metrics:
        text += (f"; it accepts {100 * metrics['clean_accepted']:.1f}% of clean held-out retinas and rejects "
                 f"{100 * metrics['vessel_erased_rejected']:.1f}% of them with their vessels just erased")
    return text


def contribution_table(summary: dict) -> str:
    """How much each model's core matters; with seeds, ``mean ± sd`` over them."""
    rows = ["| model | " + " | ".join(c.label for c in CONTRIBUTIONS) + " |", "|---|" + "---:|" * len(CONTRIBUTIONS)]
    if "kinds" in summary:
        for kind, agg in summary["kinds"].items():
            cells = []
            for c in CONTRIBUTIONS:
                e = agg["contribution"].get(c.path)
                cells.append("–" if e is None else f"{e['value'] * c.scale:.{c.digits}f} ± {e['sd'] * c.scale:.{c.digits}f}")
            rows.append(f"| {kind} ({len(agg['seeds'])} seeds) | " + " | ".join(cells) + " |")
    else:
        for name, r in summary["models"].items():
            cells = []
            for c in CONTRIBUTIONS:
                v = c.value(r)
                cells.append("–" if v is None else f"{v * c.scale:.{c.digits}f}")
            rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def comparison_table(summary: dict, baseline: str | None = "hybrid") -> str:
    """The comparison table; with a ``baseline`` model present, a dagger marks every figure whose
    95% interval does not overlap the baseline's. A summary over several training seeds
    (``summary["kinds"]``) gives one row per kind, ``mean ± seed sd [mean interval]``, and marks only
    differences beyond both the intervals and the seed ranges."""
    seeded = "kinds" in summary
    models = summary["kinds"] if seeded else summary["models"]
    base = models.get(baseline, {}).get("metrics") if baseline else None
    rows = [
        "| model | VAE | classical params | circuit weights | " + " | ".join(m.label for m in METRICS) + " |",
        "|---|---|---:|---:|" + "---:|" * len(METRICS),
    ]

    def cell(metrics: dict, m: Metric, name: str) -> str:
        text = _entry_text(m.entry(metrics), m.scale, m.digits)
        if base is not None and name != baseline and intervals_separate(m.entry(metrics), m.entry(base)):
            text += " †"
        return text

    def row(name, label, vae, classical, quantum, metrics):
        return f"| {label} | {vae} | {classical} | {quantum} | " + " | ".join(cell(metrics, m, name) for m in METRICS) + " |"

    for name, r in models.items():
        p = r["parameters"]
        label = f"{name} ({len(r['seeds'])} seeds)" if seeded else name
        rows.append(row(name, label, r["vae"], f"{p['denoiser_classical'] + p['vae_classical']:,}",
                        p["denoiser_quantum"] + p["vae_quantum"], r["metrics"]))
    ref = summary.get("real_vs_real", {})
    if "fundus_features" in ref or "gradable" in ref:
        rows.append(row(None, "*real images (reference)*", "–", "–", "–", ref))
    if base is not None:
        rows.append("")
        if seeded:
            rows.append(f"Each figure: mean over the training seeds ± their standard deviation [mean 95% interval]. "
                        f"† neither the 95% intervals nor the ranges over seeds of this figure and of the "
                        f"`{baseline}` model's overlap: a difference beyond both the sampling noise and the seed spread.")
        else:
            rows.append(f"† the 95% intervals of this figure and of the `{baseline}` model's do not overlap: a "
                        "difference these sample sizes resolve. Unmarked differences are within the noise.")
    return "\n".join(rows)


def comparison_markdown(summary: dict) -> str:
    ref = summary["reference"]
    first = next(iter(summary["models"].values()))["metrics"]
    v = summary["validator"]
    real_grad = first.get("gradable_real")
    lines = [
        "# Quantum vs classical: comparison",
        "",
        f"{summary['n_per_model']} samples per model ({summary['sampling_steps']} DDIM steps, seed {summary['seed']}), "
        f"each against {ref['n']} held-out real images ({ref['source']}, {ref['split']} split, {ref['size']} px). "
        f"Brackets: 95% intervals (gradable: Wilson; FD, KID: bootstrap over both sets, {summary['bootstrap']} draws; "
        "precision/recall/density/coverage: subsampling). Lower FD and KID are better; higher precision "
        "(fidelity), recall (diversity), density and coverage are better. The last row measures real "
        "images (another held-out split) the same way: what a perfect generator would score at these sample sizes.",
        "",
        comparison_table(summary),
        "",
        f"Gradability validator ({v['folder']}): {validator_summary(v)}, trained on {v.get('data', '?')} data; "
        "it accepts " + (f"{fmt(real_grad, 100, 1)} % of the real images." if real_grad else "– of the real images."),
        f"Feature encoder: {summary['encoder']} (qhybrid's fundus encoder, 64-d; not one of the generators).",
        "",
        "![metrics](comparison.png)",
        "",
        "## How much the quantum layer's core matters",
        "",
        "Measured per model on a fixed reference set (held-out latents re-noised at 10 timesteps) and on "
        "same-seed samples (`qhybrid.evaluation.contribution`). Denoiser Δ: RMS change of the denoiser's output "
        "relative to its spread over the reference set (100% = as if the output were replaced by its mean). "
        "Knock-out: the core's output replaced by its mean; reset / re-randomised: the core's weights at "
        "initialisation / drawn afresh; affine fit: least-squares affine map from the core's inputs to its "
        "outputs (R² = the share of its output variance an affine layer explains) swapped in for the core. "
        "Δ gradable and Δ FD: the knock-out's full same-seed sample set against the unchanged one. "
        "Models without a quantum layer score 0; – = not applicable.",
        "",
        contribution_table(summary),
        "",
        "What each change does to the same-seed samples: `contribution_<model>.png` (trained model first).",
        "",
        "![samples](comparison_samples.png)",
        "",
        "These are measurements on this run's data and sample sizes, reported as measured; overlapping "
        "intervals mean the data cannot tell the models apart.",
    ]
    return "\n".join(lines) + "\n"


def plot_bars(path: Path, results: dict) -> None:
    """One panel per metric of :data:`BAR_METRICS`: a bar per model with its 95% interval."""
    plt = io.pyplot()
    names = list(results)
    shown = [metric(key) for key in BAR_METRICS]
    fig, axes = plt.subplots(1, len(shown), figsize=(2.6 * len(shown), 3.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, m in zip(axes, shown):
        vals, los, his = [], [], []
        for name in names:
            e = m.entry(results[name]["metrics"])
            if e is None:
                vals.append(np.nan)
                los.append(0)
                his.append(0)
                continue
            # an interval need not contain the point estimate (subsampling intervals of k-NN metrics)
            vals.append(e["value"] * m.scale)
            los.append(max(0.0, e["value"] - e["ci"][0]) * m.scale)
            his.append(max(0.0, e["ci"][1] - e["value"]) * m.scale)
        ax.bar(range(len(names)), vals, yerr=[los, his], capsize=3, color=colours[: len(names)])
        real = results[names[0]]["metrics"].get("vessels", {}).get("real", {}).get(m.key) if m.group == "vessels" else None
        if real is not None:  # the real images' figure, for scale
            ax.axhline(real["value"] * m.scale, color="k", ls="--", lw=1, label="real")
            ax.legend(fontsize=7)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=35, ha="right", fontsize=8)
        ax.set_title(m.label, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    io.save_figure(fig, path)
    plt.close(fig)


def sweep_markdown(summary: dict, per_size: dict) -> str:
    lines = [
        "# Data-scarcity sweep",
        "",
        f"Each denoiser trained for {summary['steps']} steps on the first N training images (N = "
        f"{', '.join(map(str, summary['train_sizes']))}), on the run's VAE ({summary['vae']}); {summary['n_per_model']} "
        "samples per model, evaluated as in `qhybrid compare` (same validator, encoder and real reference). "
        "Only the denoisers see fewer images."
        + (f" Every model trained with {summary['seeds']} seeds: figures are means over seeds ± their standard "
           "deviation, error bars the mean 95% interval." if summary.get("seeds", 1) > 1 else ""),
        "",
        "![metrics against training-set size](sweep.png)",
        "",
    ]
    for size, s_ in per_size.items():
        lines += [f"## N = {size}", "", comparison_table(s_), "", contribution_table(s_), ""]
    return "\n".join(lines) + "\n"


def plot_sweep(path: Path, summary: dict) -> None:
    """One panel per metric of :data:`SWEEP_METRICS`: each model's figure against training-set size."""
    plt = io.pyplot()
    sizes = summary["train_sizes"]
    shown = [metric(key) for key in SWEEP_METRICS]
    fig, axes = plt.subplots(1, len(shown), figsize=(3.4 * len(shown), 3.2))
    for ax, m in zip(axes, shown):
        title, scale = m.label, m.scale
        for kind in summary["kinds"]:
            vals, lo, hi = [], [], []
            for size in sizes:
                e = m.entry(summary["results"][str(size)].get(kind, {}))
                v = e["value"] * scale if e else np.nan
                vals.append(v)
                lo.append(max(0.0, v - e["ci"][0] * scale) if e else 0)
                hi.append(max(0.0, e["ci"][1] * scale - v) if e else 0)
            ax.errorbar(sizes, vals, yerr=[lo, hi], marker="o", capsize=3, label=kind)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes)
        ax.set_xticklabels([str(v) for v in sizes])
        ax.set_xlabel("training images")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    io.save_figure(fig, path)
    plt.close(fig)
