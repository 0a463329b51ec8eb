"""Quantum vs classical on the same data: sample every model of a run, evaluate, tabulate, plot.

``qhybrid compare RUN_DIR`` finds every latent diffusion checkpoint in the run folder (classical,
classical-large, hybrid, and variants trained on a quantum-enhanced VAE), samples the same number of
images from each with the same seed, and measures each set against held-out real images with the
same validator and the same feature encoder. Writes ``comparison.md``, ``comparison.json``,
``comparison.png`` (bars with 95% intervals) and ``comparison_samples.png``.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from qhybrid import io
from qhybrid.errors import InputError, param
from qhybrid.evaluation.evaluate import evaluate_sets, real_reference
from qhybrid.evaluation.report import comparison_markdown, plot_bars
from qhybrid.models import checkpoint as ckpt
from qhybrid.models.denoiser import ALL_DENOISERS


def find_models(run_dir: Path) -> list[tuple[str, Path]]:
    found = []
    for folder in sorted(p for p in run_dir.iterdir() if p.is_dir()):
        config = folder / ckpt.CONFIG_NAME
        if not config.exists():
            continue
        try:
            kind = json.loads(config.read_text()).get("kind")
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if kind == "ldm":
            found.append((folder.name.removeprefix("ldm-"), folder))
    rank = {k: i for i, k in enumerate(ALL_DENOISERS)}
    return sorted(found, key=lambda item: (rank.get(item[0], len(rank)), item[0]))


def ensure_evaluators(run_dir: Path, validator_dir=None, encoder_dir=None, progress: bool = True, log=print,
                      quick: bool = False):
    """Load the validator and the feature encoder; train them into the run folder if absent."""
    from qhybrid.evaluation.features import FundusEncoder
    from qhybrid.evaluation.validator import GradabilityNet
    from qhybrid.training.encoder import EncoderTrainConfig, train_encoder
    from qhybrid.training.validator import ValidatorTrainConfig, train_validator

    vdir = Path(validator_dir) if validator_dir else run_dir / "validator"
    edir = Path(encoder_dir) if encoder_dir else run_dir / "encoder"
    for given, folder, kind in ((validator_dir, vdir, "validator"), (encoder_dir, edir, "feature-encoder")):
        if given is not None:  # a wrong folder fails now, not after training the other evaluator
            ckpt.read_header(folder, kind)
    if validator_dir is None and not (vdir / ckpt.CONFIG_NAME).exists():
        log(f"training the gradability validator into {vdir} (once per run folder)")
        cfg = ValidatorTrainConfig(n=80, epochs=3) if quick else ValidatorTrainConfig()
        train_validator(vdir, cfg, progress=progress)
    if encoder_dir is None and not (edir / ckpt.CONFIG_NAME).exists():
        log(f"training the fundus feature encoder into {edir} (once per run folder)")
        cfg = EncoderTrainConfig(n=80, epochs=2) if quick else EncoderTrainConfig()
        train_encoder(edir, cfg, progress=progress)
    validator = GradabilityNet.from_checkpoint(vdir)
    vheader = validator.checkpoint_header
    return FundusEncoder.from_checkpoint(edir), validator, vheader, vdir, edir


def run_compare(run_dir: str | Path, n: int = 64, steps: int = 50, seed: int = 0, real_n: int = 200,
                k: int = 5, n_boot: int = 100, validator_dir=None, encoder_dir=None, inception=None,
                progress: bool = True, log=print, quick_evaluators: bool = False) -> dict:
    from qhybrid.diffusion.pipeline import LatentDiffusion
    from qhybrid.workflows.sampling import sample_images, write_samples

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"{run_dir} is not a folder; give a run folder holding ldm-* checkpoints")
    models = find_models(run_dir)
    if not models:
        raise InputError(f"{run_dir} holds no latent diffusion checkpoints (folders with a config.json of kind ldm)")
    if k >= min(n, real_n):  # as evaluate_sets checks, but before any sampling
        raise InputError(f"the k-NN metrics (k={k}) need more than {k} samples and real images, got "
                         f"{param('n', n)} and {param('real_n', real_n)}; raise them or lower {param('k')}")
    encoder, validator, vheader, vdir, edir = ensure_evaluators(run_dir, validator_dir, encoder_dir, progress, log,
                                                                 quick_evaluators)
    results, samples = {}, {}
    real = None
    for name, folder in models:
        loaded = LatentDiffusion.from_checkpoint(folder)
        model, _, vae, header = loaded
        if real is None:
            source = header.get("extra", {}).get("train", {}).get("data", "synthetic")
            real = real_reference(source, vae.cfg.size, real_n, seed=0)
            reference = {"source": source, "split": "test", "n": int(len(real)), "size": vae.cfg.size}
        log(f"sampling and evaluating {name} ({n} images)")
        images, info = sample_images(folder, n=n, steps=steps, seed=seed, progress=progress, loaded=loaded)
        write_samples(images, run_dir / "samples" / name, info)
        samples[name] = images
        metrics = evaluate_sets(real, images, encoder=encoder, validator=validator, inception=inception,
                                k=k, n_boot=n_boot, seed=seed)
        counts = model.parameter_counts()
        vae_counts = vae.parameter_counts()
        results[name] = {
            "folder": str(folder),
            "vae": "quantum-enhanced" if vae.is_quantum else "classical",
            "parameters": {
                "denoiser_classical": counts["total"] - counts["quantum_circuit_weights"],
                "denoiser_quantum": counts["quantum_circuit_weights"],
                "vae_classical": vae_counts["total"] - vae_counts["quantum_circuit_weights"],
                "vae_quantum": vae_counts["quantum_circuit_weights"],
            },
            "sampling": info,
            "metrics": metrics,
        }
    summary = {
        "created": dt.datetime.now().isoformat(timespec="seconds"),
        "run": str(run_dir), "n_per_model": n, "sampling_steps": steps, "seed": seed, "k": k,
        "bootstrap": n_boot, "reference": reference,
        "validator": {"folder": str(vdir), **vheader.get("extra", {}).get("metrics", {})},
        "encoder": str(edir), "models": results,
    }
    # the floor: how far two real sets of the same size are from each other under the same metrics
    try:
        other = real_reference(reference["source"], reference["size"], n, seed=0, split="val")
        summary["real_vs_real"] = evaluate_sets(real, other, encoder=encoder, validator=validator,
                                                inception=inception, k=k, n_boot=n_boot, seed=seed)
        summary["real_vs_real"]["note"] = f"{len(other)} real images of the val split against the same reference"
    except InputError as exc:
        summary["real_vs_real"] = {"note": f"not available: {exc}"}
    io.write_json(run_dir / "comparison.json", summary)
    plot_bars(run_dir / "comparison.png", results)
    from qhybrid.plots import save_side_by_side
    save_side_by_side(run_dir / "comparison_samples.png", real[:16], {k_: v[:16] for k_, v in samples.items()})
    io.write_text(run_dir / "comparison.md", comparison_markdown(summary))
    return summary
