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
)
BAR_METRICS = ("gradable", "fd", "kid", "precision", "recall", "coverage")
SWEEP_METRICS = ("gradable", "fd", "precision", "recall")


def metric(key: str) -> Metric:
    return next(m for m in METRICS if m.key == key)


def intervals_separate(a: dict | None, b: dict | None) -> bool:
    """True when two 95% intervals do not overlap: a difference the data resolves."""
    if not a or not b:
        return False
    return a["ci"][1] < b["ci"][0] or b["ci"][1] < a["ci"][0]


def comparison_table(summary: dict, baseline: str | None = "hybrid") -> str:
    """The comparison table; with a ``baseline`` model present, a dagger marks every figure whose
    95% interval does not overlap the baseline's."""
    models = summary["models"]
    base = models.get(baseline, {}).get("metrics") if baseline else None
    rows = [
        "| model | VAE | classical params | circuit weights | " + " | ".join(m.label for m in METRICS) + " |",
        "|---|---|---:|---:|" + "---:|" * len(METRICS),
    ]

    def cell(metrics: dict, m: Metric, name: str) -> str:
        text = fmt(m.entry(metrics), m.scale, m.digits)
        if base is not None and name != baseline and intervals_separate(m.entry(metrics), m.entry(base)):
            text += " †"
        return text

    def row(name, vae, classical, quantum, metrics):
        return f"| {name} | {vae} | {classical} | {quantum} | " + " | ".join(cell(metrics, m, name) for m in METRICS) + " |"

    for name, r in models.items():
        p = r["parameters"]
        rows.append(row(name, r["vae"], f"{p['denoiser_classical'] + p['vae_classical']:,}",
                        p["denoiser_quantum"] + p["vae_quantum"], r["metrics"]))
    ref = summary.get("real_vs_real", {})
    if "fundus_features" in ref or "gradable" in ref:
        rows.append(row("*real images (reference)*", "–", "–", "–", ref))
    if base is not None:
        rows.append("")
        rows.append(f"† the 95% intervals of this figure and of the `{baseline}` model's do not overlap: a difference "
                    "these sample sizes resolve. Unmarked differences are within the noise.")
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
        f"Gradability validator ({v['folder']}): held-out accuracy {v.get('heldout_accuracy', float('nan')):.3f}, "
        f"ROC AUC {v.get('heldout_roc_auc', float('nan')):.3f}, trained on {v.get('data', '?')} data; it accepts "
        + (f"{fmt(real_grad, 100, 1)} % of the real images." if real_grad else "– of the real images."),
        f"Feature encoder: {summary['encoder']} (qhybrid's fundus encoder, 64-d; not one of the generators).",
        "",
        "![metrics](comparison.png)",
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
        "Only the denoisers see fewer images.",
        "",
        "![metrics against training-set size](sweep.png)",
        "",
    ]
    for size, s_ in per_size.items():
        lines += [f"## N = {size}", "", comparison_table(s_), ""]
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
