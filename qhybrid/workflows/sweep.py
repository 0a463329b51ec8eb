"""The data-scarcity sweep: every denoiser trained on fewer images, compared per size."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import torch

from qhybrid import io
from qhybrid.devices import resolve_device
from qhybrid.errors import InputError, param
from qhybrid.evaluation.report import plot_sweep, sweep_markdown
from qhybrid.models import checkpoint as ckpt
from qhybrid.models.denoiser import ALL_DENOISERS
from qhybrid.workflows.compare import ensure_evaluators, run_compare


def run_sweep(run_dir: str | Path, train_sizes, kinds=None, steps: int | None = None, batch: int = 64,
              n: int = 64, sample_steps: int = 50, seed: int = 0, real_n: int = 200, k: int = 5,
              n_boot: int = 100, num_qubits: int = 6, reps: int = 3, progress: bool = True, log=print,
              quick_evaluators: bool = False, seeds: int = 1, device: str | torch.device | None = "auto") -> dict:
    """Train every denoiser kind on ``train_sizes`` images each (the run's VAE, its validator and
    encoder are shared), compare each size's models, and plot every metric against the size.

    Only the denoisers see fewer images: the paper's claim is about the generative model when data
    are scarce, so the VAE (the image codec) stays the run's, trained on its full data. With
    ``seeds`` > 1 each size's comparison trains every model with that many seeds (see
    :func:`~qhybrid.workflows.compare.run_compare`) and the figures are means over seeds. ``device``:
    where training, sampling and the evaluators run (default auto, as the demo's); models trained
    by an earlier call are kept whatever device trained them."""
    from qhybrid.training.diffusion import (
        RECIPE_SCHEDULER,
        DiffusionTrainConfig,
        check_kept_prediction,
        train_diffusion,
    )

    device = resolve_device(device)  # a GPU that is not there: refused before anything is trained
    run_dir = Path(run_dir)
    vae_dir = run_dir / "vae"
    if not (vae_dir / ckpt.CONFIG_NAME).exists():
        raise InputError(f"{run_dir} has no vae/ checkpoint; run the demo into that folder or train a VAE into "
                         f"{run_dir / 'vae'} first")
    sizes = sorted({int(v) for v in train_sizes})
    if not sizes or sizes[0] < 8:
        raise InputError(f"{param('train_sizes')} must be integers >= 8, got {list(train_sizes)}")
    kinds = list(kinds or ALL_DENOISERS)
    unknown = [kd for kd in kinds if kd not in ALL_DENOISERS]
    if unknown:
        raise InputError(f"unknown denoiser(s) {', '.join(unknown)}; allowed: {', '.join(ALL_DENOISERS)}")
    vae_header = ckpt.read_header(vae_dir, "vae")
    data = vae_header.get("extra", {}).get("train", {}).get("data", "synthetic")
    steps = steps or 1200
    ensure_evaluators(run_dir, progress=progress, log=log, quick=quick_evaluators, device=device)
    per_size = {}
    for size in sizes:
        size_dir = run_dir / "sweep" / f"n{size}"
        for kind in kinds:
            folder = size_dir / f"ldm-{kind}"
            if (folder / ckpt.CONFIG_NAME).exists():  # trained before v-prediction became the recipe's?
                check_kept_prediction(folder, RECIPE_SCHEDULER.prediction_type, "the sweep",
                                      f"move {run_dir / 'sweep'} aside to sweep again")
            if _trained_steps(folder) >= steps:
                continue  # trained by an earlier (interrupted) sweep
            log(f"[sweep] {kind} denoiser on {size} images ({steps} steps)")
            train_diffusion(folder, vae_dir, kind, DiffusionTrainConfig(data=data, n=size, steps=steps, batch=batch,
                                                                        seed=seed),
                            num_qubits=num_qubits, reps=reps, resume=(folder / ckpt.STATE_NAME).exists(),
                            progress=progress, device=device)
        log(f"[sweep] comparing the models trained on {size} images")
        per_size[size] = run_compare(size_dir, n=n, steps=sample_steps, seed=seed, real_n=real_n, k=k, n_boot=n_boot,
                                     validator_dir=run_dir / "validator", encoder_dir=run_dir / "encoder",
                                     progress=progress, log=log, seeds=seeds, device=device)
    summary = {"created": dt.datetime.now().isoformat(timespec="seconds"), "run": str(run_dir), "train_sizes": sizes,
               "kinds": kinds, "steps": steps, "n_per_model": n, "vae": str(vae_dir), "seeds": seeds,
               "device": str(device),
               "results": {str(size): {name: r["metrics"] for name, r in s_.get("kinds", s_["models"]).items()}
                           for size, s_ in per_size.items()},
               "contribution": {str(size): {name: r.get("contribution") for name, r in s_.get("kinds", s_["models"]).items()}
                                for size, s_ in per_size.items()}}
    io.write_json(run_dir / "sweep.json", summary)
    plot_sweep(run_dir / "sweep.png", summary)
    io.write_text(run_dir / "sweep.md", sweep_markdown(summary, per_size))
    return summary


def _trained_steps(folder: Path) -> int:
    try:
        return int(ckpt.read_header(folder, "ldm").get("extra", {}).get("step", 0))
    except Exception:  # noqa: BLE001 - no or partial checkpoint: not done
        return 0


