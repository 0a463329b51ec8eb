"""Quantum vs classical on the same data: sample every model of a run, evaluate, tabulate, plot.

``qhybrid compare RUN_DIR`` finds every latent diffusion checkpoint in the run folder (classical,
classical-large, hybrid, and variants trained on a quantum-enhanced VAE), samples the same number of
images from each with the same seed, and measures each set against held-out real images with the
same validator and the same feature encoder. Writes ``comparison.md``, ``comparison.json``,
``comparison.png`` (bars with 95% intervals) and ``comparison_samples.png``.

For every model it also measures how much its quantum layer's core matters
(:mod:`qhybrid.evaluation.contribution`: knock-out, reset, re-randomised, affine surrogate), and the
knock-out's effect on the full sample set (Δgradable, ΔFD). With ``seeds`` > 1 every model is
trained again with seeds 1 .. seeds-1 (folders ``ldm-<kind>-seed<K>``, the seed-0 model's saved
recipe with another seed), each replica is sampled with the same sampling seed, and the report gives
every figure as the mean over seeds with the seed spread beside it.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import torch

from qhybrid import io
from qhybrid.devices import resolve_device
from qhybrid.errors import InputError, param
from qhybrid.evaluation.contribution import (
    DEFAULT_CONFIG,
    ContributionConfig,
    held_out_reference,
    knocked_out,
    measure_contributions,
    public,
)
from qhybrid.evaluation.evaluate import evaluate_sets, real_reference
from qhybrid.evaluation.report import aggregate_seeds, comparison_markdown, plot_bars
from qhybrid.models import checkpoint as ckpt
from qhybrid.models.denoiser import ALL_DENOISERS

_SEED = re.compile(r"-seed(\d+)$")


def split_seed(name: str) -> tuple[str, int]:
    """``"hybrid-seed2"`` -> ``("hybrid", 2)``; a name without the suffix is seed 0."""
    match = _SEED.search(name)
    return (name[: match.start()], int(match.group(1))) if match else (name, 0)


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
    return sorted(found, key=lambda item: (rank.get(split_seed(item[0])[0], len(rank)), split_seed(item[0])))


def ensure_seed_replicas(run_dir: Path, seeds: int, progress: bool = True, log=print,
                         device: str | torch.device | None = "auto") -> None:
    """Train ``ldm-<kind>-seed<K>`` for K = 1 .. seeds-1 next to every seed-0 model that lacks them: the
    seed-0 model's saved denoiser, scheduler and training configs and precision, with the training seed K
    (resumable: an interrupted replica continues), on ``device`` (default auto, as train_diffusion's)."""
    from qhybrid.diffusion.pipeline import find_vae
    from qhybrid.diffusion.scheduler import SchedulerConfig
    from qhybrid.models.denoiser import DenoiserConfig
    from qhybrid.training.diffusion import DiffusionTrainConfig, train_diffusion

    for name, folder in find_models(run_dir):
        kind, seed = split_seed(name)
        if seed != 0:
            continue
        header = ckpt.read_header(folder, "ldm")
        train = header.get("extra", {}).get("train", {})
        for k in range(1, seeds):
            replica = run_dir / f"{folder.name}-seed{k}"
            done = (replica / ckpt.CONFIG_NAME).exists() and \
                ckpt.read_header(replica, "ldm").get("extra", {}).get("step", 0) >= train.get("steps", 0)
            if done:
                continue
            log(f"training {kind} with seed {k} into {replica} ({train.get('steps')} steps)")
            train_diffusion(replica, find_vae(folder, header["config"]), kind, DiffusionTrainConfig.from_dict({**train, "seed": k}),
                            SchedulerConfig.from_dict(header["config"]["scheduler"]),
                            config=DenoiserConfig.from_dict(header["config"]["denoiser"]),
                            resume=(replica / ckpt.STATE_NAME).exists(), progress=progress, device=device,
                            precision=header.get("extra", {}).get("precision", "fp32"))


#: The evaluators a run folder gets when it has none (qhybrid.pretrained).
SHIPPED_VALIDATOR, SHIPPED_ENCODER = "fundus-validator-64", "fundus-encoder-64"


def ensure_evaluators(run_dir: Path, validator_dir=None, encoder_dir=None, progress: bool = True, log=print,
                      quick: bool = False, device: str | torch.device | None = None):
    """Load the validator and the feature encoder (onto ``device``; None: the CPU). A run folder
    without them gets a copy of the shipped ones (``fundus-validator-64``, ``fundus-encoder-64``:
    every run measured with the same networks, see :mod:`qhybrid.pretrained`); ``quick`` trains
    toy-sized ones into it instead (the tests, ``demo --quick``)."""
    from qhybrid.evaluation.features import FundusEncoder
    from qhybrid.evaluation.validator import GradabilityNet
    from qhybrid.pretrained import copy_pretrained
    from qhybrid.training.encoder import EncoderTrainConfig, train_encoder
    from qhybrid.training.validator import ValidatorTrainConfig, train_validator

    vdir = Path(validator_dir) if validator_dir else run_dir / "validator"
    edir = Path(encoder_dir) if encoder_dir else run_dir / "encoder"
    for given, folder, kind in ((validator_dir, vdir, "validator"), (encoder_dir, edir, "feature-encoder")):
        if given is not None:  # a wrong folder fails now, not after training the other evaluator
            ckpt.read_header(folder, kind)
    toy = {"validator": lambda out: train_validator(out, ValidatorTrainConfig(n=80, epochs=3), progress=progress,
                                                    device=device or "cpu"),
           "encoder": lambda out: train_encoder(out, EncoderTrainConfig(n=80, epochs=2), progress=progress,
                                                device=device or "cpu")}
    for given, folder, what, shipped in ((validator_dir, vdir, "validator", SHIPPED_VALIDATOR),
                                         (encoder_dir, edir, "encoder", SHIPPED_ENCODER)):
        name = "gradability validator" if what == "validator" else "fundus feature encoder"
        if given is not None or (folder / ckpt.CONFIG_NAME).exists():
            continue
        if folder.is_dir() and any(folder.iterdir()):  # e.g. an evaluator's training interrupted by an older qhybrid
            raise InputError(f"{folder} exists but holds no checkpoint; move it aside, or give a trained {name} "
                             f"with {param(what)}")
        if quick:
            log(f"training a toy-sized {name} into {folder} (quick evaluators)")
            toy[what](folder)
        else:
            if folder.is_dir():
                folder.rmdir()
            copy_pretrained(shipped, folder)
            log(f"the shipped {name} {shipped} (hash checked), copied into {folder}")
    device = resolve_device(device or "cpu")
    validator = GradabilityNet.from_checkpoint(vdir).to(device)
    vheader = validator.checkpoint_header
    return FundusEncoder.from_checkpoint(edir).to(device), validator, vheader, vdir, edir


def run_compare(run_dir: str | Path, n: int = 64, steps: int = 50, seed: int = 0, real_n: int = 200,
                k: int = 5, n_boot: int = 100, validator_dir=None, encoder_dir=None, inception=None,
                progress: bool = True, log=print, quick_evaluators: bool = False, seeds: int = 1,
                contribution: ContributionConfig | None = DEFAULT_CONFIG,
                device: str | torch.device | None = None) -> dict:
    """Sample, evaluate and measure the core's contribution for every model of ``run_dir`` (with
    ``seeds`` > 1, after training the missing seed replicas); write the comparison files.
    ``device``: where sampling, the evaluators and the seed replicas' training run (None: the CPU
    for sampling and the evaluators, auto for training, as before); the contribution measurements
    run on the CPU."""
    from qhybrid.diffusion.pipeline import LatentDiffusion
    from qhybrid.workflows.sampling import sample_images, write_samples

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"{run_dir} is not a folder; give a run folder holding ldm-* checkpoints")
    if not find_models(run_dir):
        raise InputError(f"{run_dir} holds no latent diffusion checkpoints (folders with a config.json of kind ldm)")
    if k >= min(n, real_n):  # as evaluate_sets checks, but before any sampling
        raise InputError(f"the k-NN metrics (k={k}) need more than {k} samples and real images, got "
                         f"{param('n', n)} and {param('real_n', real_n)}; raise them or lower {param('k')}")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise InputError(f"{param('seeds', seeds)} must be a positive integer")
    encoder, validator, vheader, vdir, edir = ensure_evaluators(run_dir, validator_dir, encoder_dir, progress, log,
                                                                 quick_evaluators, device)
    if seeds > 1:
        ensure_seed_replicas(run_dir, seeds, progress, log, device=device if device is not None else "auto")
    models = [(name, folder) for name, folder in find_models(run_dir) if split_seed(name)[1] < seeds]
    results, samples = {}, {}
    real, references = None, {}
    for name, folder in models:
        loaded = LatentDiffusion.from_checkpoint(folder)
        model, scheduler, vae, header = loaded
        if real is None:
            source = header.get("extra", {}).get("train", {}).get("data", "synthetic")
            real = real_reference(source, vae.cfg.size, real_n, seed=0)
            reference = {"source": source, "split": "test", "n": int(len(real)), "size": vae.cfg.size}
        log(f"sampling and evaluating {name} ({n} images)")
        images, info = sample_images(folder, n=n, steps=steps, seed=seed, progress=progress, loaded=loaded,
                                     device=device)
        model.cpu(), vae.cpu()
        write_samples(images, run_dir / "samples" / name, info)
        samples[name] = images
        metrics = evaluate_sets(real, images, encoder=encoder, validator=validator, inception=inception,
                                k=k, n_boot=n_boot, seed=seed)
        counts = model.parameter_counts()
        vae_counts = vae.parameter_counts()
        results[name] = {
            "folder": str(folder),
            "kind": split_seed(name)[0], "seed": split_seed(name)[1],
            "vae": "quantum-enhanced" if vae.is_quantum else "classical",
            "parameters": {
                "denoiser_classical": counts["total"] - counts["quantum_circuit_weights"],
                "denoiser_quantum": counts["quantum_circuit_weights"],
                "vae_classical": vae_counts["total"] - vae_counts["quantum_circuit_weights"],
                "vae_quantum": vae_counts["quantum_circuit_weights"],
            },
            "circuit_travel_rad": header.get("extra", {}).get("circuit_travel_rad"),
            "sampling": info,
            "metrics": metrics,
        }
        if contribution is not None:
            key = str(header["config"].get("vae_sha256"))
            if key not in references:  # one reference set per VAE: held-out images, re-noised
                references[key] = held_out_reference(vae, scheduler, reference["source"], contribution)
            results[name]["contribution"] = _contribution(model, scheduler, vae, header, references[key], contribution,
                                                          folder, n, steps, seed, loaded, metrics, real, encoder,
                                                          validator, k, n_boot, progress)
    summary = {
        "created": dt.datetime.now().isoformat(timespec="seconds"),
        "run": str(run_dir), "n_per_model": n, "sampling_steps": steps, "seed": seed, "seeds": seeds, "k": k,
        "bootstrap": n_boot, "reference": reference,
        "validator": {"folder": str(vdir), **vheader.get("extra", {}).get("metrics", {})},
        "encoder": str(edir), "models": results,
    }
    if seeds > 1:
        summary["kinds"] = aggregate_seeds(results)
    # the floor: how far two real sets of the same size are from each other under the same metrics
    try:
        other = real_reference(reference["source"], reference["size"], n, seed=0, split="val")
        summary["real_vs_real"] = evaluate_sets(real, other, encoder=encoder, validator=validator,
                                                inception=inception, k=k, n_boot=n_boot, seed=seed)
        summary["real_vs_real"]["note"] = f"{len(other)} real images of the val split against the same reference"
    except InputError as exc:
        summary["real_vs_real"] = {"note": f"not available: {exc}"}
    io.write_json(run_dir / "comparison.json", summary)
    plot_bars(run_dir / "comparison.png", summary.get("kinds", results))
    from qhybrid.plots import save_side_by_side
    shown = {k_: v[:16] for k_, v in samples.items() if split_seed(k_)[1] == 0}
    save_side_by_side(run_dir / "comparison_samples.png", real[:16], shown)
    io.write_text(run_dir / "comparison.md", comparison_markdown(summary))
    return summary


def _contribution(model, scheduler, vae, header, reference, cfg: ContributionConfig, folder, n, steps, seed, loaded,
                  metrics, real, encoder, validator, k, n_boot, progress) -> dict:
    """The contribution metrics, plus the knock-out's Δgradable and ΔFD on the full same-seed sample set."""
    from qhybrid.workflows.sampling import sample_images

    initial = header.get("extra", {}).get("initial_core")
    initial = {key: torch.tensor(v) for key, v in initial.items()} if initial else None
    report = measure_contributions(model, scheduler, vae, reference, cfg, initial_core=initial)
    if report["core"] is not None:  # what each change does to the same-seed samples
        from qhybrid.plots import save_side_by_side

        labels = {"knockout": "circuit knocked out", "reset": "reset to init", "rerandomised": "re-randomised",
                  "affine": "affine fit in its place"}
        save_side_by_side(Path(folder).parent / f"contribution_{Path(folder).name.removeprefix('ldm-')}.png",
                          report["_baseline_images"],
                          {label: report[key]["_images"] for key, label in labels.items() if key in report},
                          first="trained")
    if report["core"] is None:
        report["knockout"].update({"delta_gradable": 0.0, "delta_fd": 0.0})
        return public(report)
    mean = report["_knockout_mean"]
    with knocked_out(model.quantum_layer.core, mean):
        images, _ = sample_images(folder, n=n, steps=steps, seed=seed, progress=progress, loaded=loaded)
    knocked = evaluate_sets(real, images, encoder=encoder, validator=validator, k=k, n_boot=n_boot, seed=seed)
    report["knockout"]["delta_gradable"] = knocked["gradable"]["value"] - metrics["gradable"]["value"]
    report["knockout"]["delta_fd"] = (knocked["fundus_features"]["fd"]["value"]
                                      - metrics["fundus_features"]["fd"]["value"])
    return public(report)
