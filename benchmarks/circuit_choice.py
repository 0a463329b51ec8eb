"""How the hybrid denoiser's circuit defaults were chosen: train variants, measure what the circuit does.

    python benchmarks/circuit_choice.py --out runs/circuit-choice [--only NAME ...]

Trains the demo's VAE once (or uses ``--vae``), then each variant below as a hybrid denoiser on the
demo's data (512 synthetic images, batch 64), and measures its contribution metrics
(``qhybrid.evaluation.contribution``, default reference set and samples): how much knocking the circuit
out changes the denoiser and same-seed samples, how much of the circuit an affine map explains, how
far the circuit weights moved. Finished variants are kept (the script is resumable). Writes
``OUT/circuit_choice.json`` and the section "circuit-choice" of BENCHMARKS.md. About 25 minutes on
a 2-core machine for all variants (not part of ``make bench``: it trains models).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qhybrid import io  # noqa: E402
from qhybrid.diffusion.pipeline import LatentDiffusion  # noqa: E402
from qhybrid.evaluation.contribution import (  # noqa: E402
    ContributionConfig,
    held_out_reference,
    measure_contributions,
    public,
)
from qhybrid.models import checkpoint as ckpt  # noqa: E402
from qhybrid.models.denoiser import DenoiserConfig  # noqa: E402
from qhybrid.models.vae import VAEConfig  # noqa: E402
from qhybrid.quantum import CircuitSpec  # noqa: E402
from qhybrid.training.diffusion import DiffusionTrainConfig, train_diffusion  # noqa: E402
from qhybrid.training.vae import VAETrainConfig, train_vae  # noqa: E402

#: name -> (encoding, angle scale, circuit LR, steps, seed); 6 qubits, real_amplitudes, reps 3, patch 2.
VARIANTS = {
    "angle, LR 2e-3, 400 steps": ("angle", 1.0, 2e-3, 400, 0),
    "angle, LR 1e-2, 400 steps": ("angle", 1.0, 1e-2, 400, 0),
    "angle, LR 3e-2, 400 steps": ("angle", 1.0, 3e-2, 400, 0),
    "angle, LR 1e-1, 400 steps": ("angle", 1.0, 1e-1, 400, 0),
    "angle, LR 3e-2": ("angle", 1.0, 3e-2, 1200, 0),
    "angle, scale 1.5, LR 3e-2": ("angle", 1.5, 3e-2, 1200, 0),
    "re-uploading, LR 3e-2": ("reuploading", 1.0, 3e-2, 1200, 0),
    "re-uploading, LR 3e-2, seed 1": ("reuploading", 1.0, 3e-2, 1200, 1),
    "re-uploading, scale 1.5, LR 3e-2": ("reuploading", 1.5, 3e-2, 1200, 0),
    "re-uploading, LR 5e-2 (default)": ("reuploading", 1.0, 5e-2, 1200, 0),
}


def folder_name(name: str) -> str:
    return "ldm-" + "".join(c if c.isalnum() else "-" for c in name).strip("-")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--vae", type=Path, default=None, help="a 64 px VAE checkpoint (default: train one into OUT/vae)")
    parser.add_argument("--only", nargs="*", default=None, help="variant names to run (default: all)")
    args = parser.parse_args()
    vae_dir = args.vae or args.out / "vae"
    if not (vae_dir / ckpt.CONFIG_NAME).exists():
        train_vae(vae_dir, VAEConfig(size=64), VAETrainConfig(n=512, epochs=20, batch=16, seed=0), progress=False)
    cfg = ContributionConfig()
    results = {}
    results_file = args.out / "circuit_choice.json"
    if results_file.exists():
        results = json.loads(results_file.read_text())
    for name, (encoding, scale, lr, steps, seed) in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        folder = args.out / folder_name(name)
        if not (folder / ckpt.CONFIG_NAME).exists():
            print(f"training: {name}", flush=True)
            spec = CircuitSpec(num_qubits=6, reps=3, encoding=encoding).to_dict()
            denoiser = DenoiserConfig.for_kind("hybrid", 4, 16, angle_scale=scale).replace(quantum=spec)
            train_diffusion(folder, vae_dir, "hybrid", DiffusionTrainConfig(n=512, steps=steps, batch=64, circuit_lr=lr,
                                                                            seed=seed, save_every=10_000),
                            config=denoiser, progress=False)
        model, scheduler, vae, header = LatentDiffusion.from_checkpoint(folder)
        reference = held_out_reference(vae, scheduler, "synthetic", cfg)
        saved = header["extra"].get("initial_core")
        initial = {k: torch.tensor(v) for k, v in saved.items()} if saved else None
        report = public(measure_contributions(model, scheduler, vae, reference, cfg, initial_core=initial))
        extra = header["extra"]
        results[name] = {"encoding": encoding, "angle_scale": scale, "circuit_lr": lr, "steps": steps, "seed": seed,
                         "final_loss": extra["final_loss"], "circuit_travel_rad": extra["circuit_travel_rad"],
                         "contribution": report}
        print(f"{name}: {json.dumps(results[name]['contribution']['knockout'])[:200]}", flush=True)
        io.write_json(results_file, results)
    rows = ["| variant | steps | final loss | circuit travel (rad) | knock-out: denoiser Δ | knock-out: samples Δ "
            "(grey levels) | reset: denoiser Δ | affine R² |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        c = r["contribution"]
        rows.append(f"| {name} | {r['steps']} | {r['final_loss']:.4f} | {r['circuit_travel_rad']:.3f} | "
                    f"{c['knockout']['denoiser_change'] * 100:.1f}% | {c['knockout']['sample_image_change_grey']:.2f} | "
                    + (f"{c['reset']['denoiser_change'] * 100:.1f}%" if "reset" in c else "–") + f" | {c['affine']['r2']:.2f} |")
    from run import machine_info, merge  # benchmarks/run.py, beside this script

    body = "\n".join([
        f"_Measured {dt.date.today().isoformat()} on {machine_info()} by `python benchmarks/circuit_choice.py`._",
        "",
        "## Choosing the hybrid denoiser's circuit",
        "",
        "Hybrid denoisers (the default QResBlock: 6 qubits, `real_amplitudes` reps 3, every 2×2 patch of the 8×8 "
        "bottleneck) trained on the demo's 512 synthetic images and VAE, batch 64, one seed unless stated; contribution "
        "metrics as `qhybrid compare` reports them (knock-out: the circuit's output replaced by its mean; reset: its "
        "initial weights; affine R²: how much of its output an affine map of its angles explains). Read each row as "
        "one training run: the sample change moves by ±1 grey level between seeds.",
        "",
        *rows,
        "",
    ])
    bench = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
    io.write_text(bench, merge(bench.read_text(), "circuit-choice", body))
    print("\n".join(rows))
    print(f"results: {results_file}, {bench} (section circuit-choice)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
