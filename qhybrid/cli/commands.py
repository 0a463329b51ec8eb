"""The ``qhybrid`` subcommands: each reads its parsed arguments, calls the library, and prints what it
made. Library work (training, sampling, evaluation, writing files) lives in the library; here are
only the translation from flags to calls and the lines a person reads."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

from qhybrid.cli.usage import UsageError

#: What noisy-eval --mitigation-sweep compares (qhybrid.quantum.mitigation.KINDS).
MITIGATION_SWEEP = ("none", "readout", "trex", "zne", "twirling")
#: Shots of a fake: or ibm: target when --shots is not given.
DEFAULT_SHOTS = 1024


def resolve_device(name: str):
    """``--device`` -> a torch device (an InputError, exit 2, for a GPU that is not there)."""
    from qhybrid.devices import resolve_device as resolve

    return resolve(name)


def is_main_process() -> bool:
    """False in the processes after the first of a ``torchrun`` launch: only rank 0 reports."""
    return int(os.environ.get("RANK", "0")) == 0


# --- subcommands -------------------------------------------------------------------------------
@contextmanager
def _data_warnings_printed():
    """Print the data warnings of the block (a skipped unreadable image, labels for missing files)
    as 'qhybrid: warning:' lines once it is done."""
    from qhybrid.data.loaders import DataWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        yield
    for w in caught:
        if issubclass(w.category, DataWarning):
            print(f"qhybrid: warning: {w.message}", file=sys.stderr)


def cmd_demo(args: argparse.Namespace) -> int:
    from qhybrid.workflows.demo import DemoConfig, run_demo

    cfg = DemoConfig.quick(args.seed) if args.quick else DemoConfig(seed=args.seed)
    cfg = cfg.replace(with_qvae=args.with_qvae, with_ablations=args.with_ablations)
    out = run_demo(args.out, cfg, resume=args.resume, device=resolve_device(args.device))
    print(f"results: {out}/report.md (and data.png, samples.png, losses.png; checkpoints in {out}/vae, "
          f"{out}/ldm-classical, {out}/ldm-classical-large, {out}/ldm-hybrid)")
    return 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    from qhybrid.data.synthetic import write_folder

    try:
        out = write_folder(args.out, args.n, size=args.size, seed=args.seed, grade=args.grade)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(f"results: {out}/ ({args.n} PNG images, {args.size}x{args.size} px, labels.csv)")
    return 0


def cmd_data_show(args: argparse.Namespace) -> int:
    from qhybrid.data.loaders import load_dataset
    from qhybrid.plots import save_image_grid

    with _data_warnings_printed():
        data = load_dataset(args.source, size=args.size, split=args.split, n=args.n, seed=args.seed)
    titles = []
    for lab in data.labels:
        parts = []
        if lab.get("grade") is not None:
            parts.append(f"grade {lab['grade']}")
        if lab.get("eye"):
            parts.append(lab["eye"])
        if lab.get("gradable") is False:
            parts.append("ungradable")
        titles.append(", ".join(parts) or lab.get("file", ""))
    name = "synthetic fundus (qhybrid)" if args.source == "synthetic" else str(args.source)
    save_image_grid(data.images, args.out, titles=titles,
                    suptitle=f"{name} — {args.split} split, {len(data)} images, {data.size} px")
    print(f"results: {args.out} ({len(data)} images)")
    return 0


def cmd_train_vae(args: argparse.Namespace) -> int:
    from qhybrid.models.vae import VAE_SIZES, VAEConfig
    from qhybrid.quantum import CircuitSpec
    from qhybrid.training.vae import VAETrainConfig, train_vae

    if args.size not in VAE_SIZES:
        raise UsageError(f"--size must be one of {', '.join(map(str, VAE_SIZES))} for the VAE, got {args.size}")
    quantum = None
    if args.quantum:
        try:
            quantum = CircuitSpec(num_qubits=args.qubits, reps=args.reps, ansatz=args.ansatz,
                                  encoding=args.encoding).to_dict()
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if not args.quantum:
        for flag, value, default in (("--placement", args.placement, "qresblock"), ("--patch", args.patch, 4),
                                     ("--circuit-lr", args.circuit_lr, None)):
            if value != default:
                raise UsageError(f"{flag} applies to the quantum-enhanced VAE; add --quantum")
    try:
        model_cfg = VAEConfig(size=args.size, quantum=quantum, quantum_placement=args.placement,
                              quantum_patch=args.patch, base_channels=args.width,
                              latent_channels=args.latent_channels, latent_size=args.latent_size,
                              detail_weight=args.detail_weight)
    except ValueError as exc:
        raise UsageError(str(exc).replace("VAE quantum_patch", "--patch").replace("VAE latent_size", "--latent-size")) from None
    train_cfg = VAETrainConfig(data=args.data, n=args.n, epochs=args.epochs, batch=args.batch, lr=args.lr,
                               seed=args.seed, **({"circuit_lr": args.circuit_lr} if args.circuit_lr else {}))
    summary = train_vae(args.out, model_cfg, train_cfg, resume=args.resume, device=args.device,
                        precision=args.precision)
    if not is_main_process():
        return 0
    print(
        f"trained {'quantum-enhanced' if quantum else 'classical'} VAE for {summary['epochs']} epochs on "
        f"{summary['images']} images ({summary['images_per_second']:.0f} images/s); held-out "
        f"reconstruction MSE {summary['val_recon_mse']:.4f}, vessel-map Dice {summary['val_vessel_dice']:.3f} "
        "(1 = every vessel kept)"
    )
    print(f"results: {args.out}/ (config.json, model.safetensors, loss.png, reconstructions.png)")
    return 0


def cmd_train_diffusion(args: argparse.Namespace) -> int:
    from qhybrid.diffusion.scheduler import SchedulerConfig
    from qhybrid.models.checkpoint import read_header
    from qhybrid.models.denoiser import DenoiserConfig
    from qhybrid.quantum import CircuitSpec
    from qhybrid.training.diffusion import DiffusionTrainConfig, train_diffusion

    try:
        sched = SchedulerConfig(beta_schedule=args.schedule, prediction_type=args.prediction)
        CircuitSpec(num_qubits=args.qubits, reps=args.reps, ansatz=args.ansatz, encoding=args.encoding)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    vae = read_header(args.vae, "vae")["config"]
    latent_size = vae.get("latent_size") or (8 if vae.get("size") == 32 else 16)
    side = DenoiserConfig.for_kind("classical", 4, latent_size, patch=1).bottleneck_size  # as train_diffusion builds it
    width = 2 * DenoiserConfig.for_kind(args.denoiser, 4, latent_size, patch=1).channels  # the bottleneck's channels
    if args.attention_heads and width % args.attention_heads:
        raise UsageError(f"--attention-heads {args.attention_heads} does not divide the {width} channels of the "
                         f"{args.denoiser} denoiser's bottleneck; use a divisor such as 4")
    if args.patch < 1 or side % args.patch:
        raise UsageError(f"--patch {args.patch} does not divide the {side}x{side} bottleneck of "
                         f"this VAE's {latent_size}x{latent_size} latents; use a divisor such as 1 or 2")
    noise_flags = [f for f, given in (("--surrogate", args.surrogate), ("--noise-shots", args.noise_shots),
                                      ("--noise-consistency", args.noise_consistency)) if given is not None]
    if noise_flags and not args.noise_aware:
        raise UsageError(f"{', '.join(noise_flags)} {'apply' if len(noise_flags) > 1 else 'applies'} only with "
                         "--noise-aware fake:BACKEND")
    if args.noise_aware:
        if args.denoiser != "hybrid":
            raise UsageError(f"--noise-aware trains a circuit for a backend's noise; the {args.denoiser} denoiser "
                             "has none to train (use --denoiser hybrid)")
        if not args.noise_aware.startswith("fake:"):
            raise UsageError(f"--noise-aware takes a fake target such as fake:fake_torino, got {args.noise_aware!r} "
                             "(its surrogate is fitted on Aer with that backend's noise)")
        from qhybrid.quantum.targets import parse_target

        try:
            parse_target(args.noise_aware)
        except ValueError as exc:
            raise UsageError(f"--noise-aware: {exc}") from None
    cfg = DiffusionTrainConfig(data=args.data, n=args.n, steps=args.steps, batch=args.batch, lr=args.lr,
                               seed=args.seed, noise_aware=args.noise_aware, surrogate=args.surrogate,
                               init_from=args.init_from, min_snr_gamma=args.min_snr_gamma,
                               **_given(noise_shots=args.noise_shots,
                                                                  noise_consistency=args.noise_consistency,
                                                                  circuit_lr=args.circuit_lr))
    summary = train_diffusion(args.out, args.vae, args.denoiser, cfg, sched, num_qubits=args.qubits,
                              reps=args.reps, ansatz=args.ansatz, placement=args.placement, patch=args.patch,
                              encoding=args.encoding, resume=args.resume, device=args.device,
                              precision=args.precision, attention_heads=args.attention_heads)
    if not is_main_process():
        return 0
    p = summary["parameters"]
    print(
        f"trained {summary['denoiser']} denoiser ({p['total']:,} parameters, {p['quantum_circuit_weights']} "
        f"circuit weights) for {summary['steps']} steps ({summary['steps_per_second']:.1f} steps/s); "
        f"loss {summary['first_loss']:.3f} -> {summary['final_loss']:.3f}"
        + (f"; circuit weights moved {summary['circuit_travel_rad']:.3f} rad on average"
           if summary.get("circuit_travel_rad") is not None else "")
    )
    if summary.get("noise_aware"):
        na = summary["noise_aware"]
        q = na.get("quality") or {}
        print(f"noise-aware for {na['target']} at {na['shots']:,} shots (consistency weight {na['consistency']:g}); surrogate "
              f"held-out error {q.get('error_over_floor', float('nan')):.2f}x the shot-noise floor")
    print(f"results: {args.out}/ (config.json, model.safetensors, loss.png"
          + (", noise_surrogate.json)" if summary.get("noise_aware") else ")"))
    return 0


def _mitigation(kind, args: argparse.Namespace):
    """A :class:`~qhybrid.quantum.mitigation.Mitigation` from ``kind`` and the --zne-* flags."""
    from qhybrid.quantum.mitigation import MitigationError, parse_mitigation

    try:
        return parse_mitigation(kind, args.zne_factors, args.zne_extrapolator)
    except MitigationError as exc:
        raise UsageError(str(exc)) from None


def _target_options(args: argparse.Namespace) -> dict:
    """Options of the target from the command line: a fake: target's shots, mitigation, ...; the
    ideal target's shots (shot noise only) when --shots is given."""
    if not args.target.startswith("fake:"):
        given = [flag for flag, v in (("--noise-model", args.noise_model), ("--mitigation", args.mitigation),
                                      ("--zne-factors", args.zne_factors), ("--zne-extrapolator", args.zne_extrapolator))
                 if v]
        if given:
            verb = "applies" if len(given) == 1 else "apply"
            raise UsageError(f"{', '.join(given)} {verb} only to a fake:<backend> target here (an ibm: target takes "
                             "mitigations in 'qhybrid jobs submit')")
        if args.target == "ideal" and args.shots is not None:
            return {"shots": args.shots, "seed": args.seed}
        return {}
    opts = {"shots": args.shots or DEFAULT_SHOTS, "mitigation": _mitigation(args.mitigation, args).to_dict(),
            "method": args.method, "optimization_level": args.opt_level, "seed": args.seed}
    if args.noise_model:
        opts["noise_model"] = args.noise_model
    return opts


def cmd_sample(args: argparse.Namespace) -> int:
    from qhybrid.quantum.targets import describe_noise
    from qhybrid.workflows.sampling import sample_images, write_samples

    if args.target != "ideal" and not args.target.startswith(("fake:", "ibm:")):
        raise UsageError(f"unknown --target {args.target!r}; allowed: ideal, fake:<backend>, ibm:<backend>")
    if args.target.startswith("ibm:"):
        return _sample_with_jobs(args)
    images, info = sample_images(args.model, n=args.n, steps=args.steps, target=args.target, seed=args.seed,
                                 sampler=args.sampler, eta=args.eta, target_options=_target_options(args),
                                 device=args.device, vae=args.vae)
    write_samples(images, args.out, info)
    print(f"sampled {len(images)} images in {info['seconds']:.1f} s ({info['seconds_per_image'] * 1e3:.0f} ms/image, "
          f"{args.steps} {args.sampler.upper()} steps, target {args.target}: {describe_noise(info['noise_source'])})")
    print(f"results: {args.out}/ (sample_*.png, grid.png, samples.json)")
    return 0


def _sample_with_jobs(args: argparse.Namespace) -> int:
    """``sample --target ibm:X`` is ``jobs submit``: every paid job gets a record."""
    import shutil

    from qhybrid.workflows.jobs import submit

    if args.sampler != "ddim" or args.eta != 0:
        raise UsageError("the ibm: target samples with deterministic DDIM (--sampler ddim --eta 0): one job per step")
    if args.noise_model or args.method != "counts":
        raise UsageError("--method and --noise-model belong to the fake: target; for the ibm: target use "
                         "'qhybrid jobs submit' with --mitigation, --resilience-level, --twirling, --dd")
    if args.mitigation == "readout":
        raise UsageError("--mitigation readout is qhybrid's own inversion on the fake: target; on an ibm: target use "
                         "--mitigation trex, the runtime's readout mitigation")
    mitigation = _mitigation(args.mitigation, args).to_dict() if args.mitigation else None
    backend = args.target.split(":", 1)[1]
    records = _jobs_call(submit, args.model, backend, n=args.n, steps=args.steps, seeds=[args.seed],
                         shots=args.shots or DEFAULT_SHOTS, optimization_level=args.opt_level, jobs_dir=args.jobs_dir,
                         vae=args.vae, mitigation=mitigation, device=args.device)
    record = records[0]
    shutil.copytree(record.folder / "samples", args.out, dirs_exist_ok=True)
    print(f"sampled {args.n} images on {backend} as job run {record.run_id} (record {record.path})")
    print(f"results: {args.out}/ (sample_*.png, grid.png, samples.json)")
    return 0


def cmd_validator_train(args: argparse.Namespace) -> int:
    from qhybrid.training.validator import ValidatorTrainConfig, train_validator

    metrics = train_validator(args.out, ValidatorTrainConfig(data=args.data, n=args.n, epochs=args.epochs,
                                                             seed=args.seed), device=args.device)
    print(f"gradability validator: held-out accuracy {metrics['heldout_accuracy']:.3f}, ROC AUC "
          f"{metrics['heldout_roc_auc']:.3f} on {metrics['heldout_images']} images ({metrics['data']} data)")
    if "clean_accepted" in metrics:
        print(f"accepts {100 * metrics['clean_accepted']:.1f}% of clean held-out retinas and rejects "
              f"{100 * metrics['vessel_erased_rejected']:.1f}% of them with their vessels just erased "
              "(each vessel-erasing degradation at its smallest ungradable severity)")
    print(f"results: {args.out}/ (config.json, model.safetensors, heldout.png)")
    return 0


def cmd_validator_score(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from qhybrid.data.loaders import quality_labels
    from qhybrid.evaluation.validator import (
        GradabilityNet,
        label_agreement,
        score_files,
    )

    model = GradabilityNet.from_checkpoint(args.model).to(resolve_device(args.device))
    labels_csv = args.labels
    if labels_csv is None and len(args.images) == 1 and (Path(args.images[0]) / "labels.csv").is_file():
        labels_csv = Path(args.images[0]) / "labels.csv"
    labels = quality_labels(labels_csv) if labels_csv else None
    with _data_warnings_printed():
        names, probs, _ = score_files(model, args.images)
    gradable = probs >= model.cfg.threshold
    agreement = label_agreement(names, probs, labels, model.cfg.threshold) if labels else None
    if args.json:
        scores = [{"image": n, "p_gradable": round(float(p), 4), "gradable": bool(g)}
                  for n, p, g in zip(names, probs, gradable)]
        print(json.dumps(scores if agreement is None else {"scores": scores, "agreement": agreement}, indent=2))
    else:
        for n, p, g in zip(names, probs, gradable):
            print(f"{p:.4f}\t{'gradable' if g else 'ungradable'}\t{n}")
        print(f"{int(gradable.sum())} of {len(probs)} images gradable", file=sys.stderr)
        if agreement is not None:
            a = agreement
            print(f"against {labels_csv} ({a['labelled']} labelled, {a['unlabelled']} without a label): accuracy "
                  f"{a['accuracy']:.3f}, ROC AUC {a['roc_auc']:.3f}; accepted {100 * a['accepted_gradable']:.1f}% of "
                  f"the {a['gradable']} labelled gradable and {100 * a['accepted_ungradable']:.1f}% of the "
                  f"{a['ungradable']} labelled ungradable", file=sys.stderr)
    return 0


def cmd_encoder_train(args: argparse.Namespace) -> int:
    from qhybrid.training.encoder import EncoderTrainConfig, train_encoder

    metrics = train_encoder(args.out, EncoderTrainConfig(n=args.n, epochs=args.epochs, seed=args.seed),
                            device=args.device)
    print(f"fundus feature encoder: held-out eye accuracy {metrics['heldout_eye_accuracy']:.3f}, grade accuracy "
          f"{metrics['heldout_grade_accuracy']:.3f}, disc position error {metrics['heldout_disc_position_error']:.3f}")
    print(f"results: {args.out}/")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from qhybrid import io
    from qhybrid.evaluation.evaluate import evaluate_folders, fmt
    from qhybrid.evaluation.features import FundusEncoder
    from qhybrid.evaluation.validator import GradabilityNet

    device = resolve_device(args.device)
    encoder = FundusEncoder.from_checkpoint(args.encoder).to(device) if args.encoder else None
    validator = GradabilityNet.from_checkpoint(args.validator).to(device) if args.validator else None
    with _data_warnings_printed():
        result = evaluate_folders(args.generated, args.real, split=args.split, n_real=args.n_real, size=args.size,
                                  encoder=encoder, validator=validator, inception=args.inception, k=args.k,
                                  n_boot=args.bootstrap, seed=args.seed)
    for note in result["notes"]:
        print(f"qhybrid: note: {note}", file=sys.stderr)
    if encoder is None and validator is None and not args.inception:
        print("qhybrid: note: no --encoder, --validator or --inception given: colour statistics only", file=sys.stderr)
    print(f"{result['n_generated']} generated vs {result['n_real']} real images ({result['size']} px); "
          "95% intervals in brackets")
    if "gradable" in result:
        print(f"  gradable %        {fmt(result['gradable'], 100, 1)}   (real: {fmt(result['gradable_real'], 100, 1)})")
    for group, label in (("fundus_features", "fundus features"), ("inception", "Inception")):
        if group in result:
            g = result[group]
            print(f"  FD ({label})  {fmt(g['fd'], 1, 3)}")
            print(f"  KID ({label}) {fmt(g['kid'], 1, 5)}")
            for key in ("precision", "recall", "density", "coverage"):
                print(f"  {key:<17} {fmt(g[key], 1, 3)}")
    v = result["vessels"]
    print(f"  vessel density %  {fmt(v['vessel_density'], 100, 1)}   (real: {fmt(v['real']['vessel_density'], 100, 1)})")
    print(f"  vessel depth      {fmt(v['vessel_depth'], 255, 1)}   (real: {fmt(v['real']['vessel_depth'], 255, 1)}) "
          "grey levels below the surround")
    cr, cg = result["colour_real"], result["colour_generated"]
    print("  colour (real -> generated): " + ", ".join(f"{k} {cr[k]:.3f} -> {cg[k]:.3f}" for k in cr))
    if args.json:
        io.write_json(args.json, result)
        print(f"results: {args.json}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from qhybrid.workflows.compare import run_compare
    from qhybrid.workflows.sweep import run_sweep

    if args.train_sizes:
        kinds = [k.strip() for k in args.kinds.split(",") if k.strip()] if args.kinds else None
        run_sweep(args.run, args.train_sizes, kinds=kinds, steps=args.train_steps, n=args.n, sample_steps=args.steps,
                  seed=args.seed, real_n=args.n_real, k=args.k, n_boot=args.bootstrap, num_qubits=args.qubits,
                  reps=args.reps, seeds=args.seeds, device=args.device)
        print(f"results: {args.run}/sweep.md (sweep.json, sweep.png; models and per-size comparisons in "
              f"{args.run}/sweep/)")
        return 0

    summary = run_compare(args.run, n=args.n, steps=args.steps, seed=args.seed, real_n=args.n_real, k=args.k,
                          n_boot=args.bootstrap, validator_dir=args.validator, encoder_dir=args.encoder,
                          inception=args.inception, seeds=args.seeds, device=resolve_device(args.device))
    from qhybrid.evaluation.report import comparison_table, contribution_table
    print(comparison_table(summary))
    print()
    print(contribution_table(summary))
    print(f"results: {args.run}/comparison.md (comparison.json, comparison.png, comparison_samples.png, samples/)")
    return 0


def cmd_backends(args: argparse.Namespace) -> int:
    import json

    from qhybrid.cli.backend_cache import (
        backend_summaries,
        cache_dir,
        format_table,
        with_fit,
    )

    needed = args.qubits
    if args.model:
        from qhybrid.models.denoiser import circuit_spec_of

        needed = circuit_spec_of(args.model)[0].num_qubits
    rows = with_fit(backend_summaries(), needed)
    if args.json:
        print(json.dumps({"needed_qubits": needed, "cache": str(cache_dir()), "backends": rows}, indent=2))
    else:
        print(format_table(rows, needed))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    import json

    from qhybrid.workflows.doctor import collect, format_report

    info = collect()
    print(json.dumps(info, indent=2) if args.json else format_report(info))
    return 0


def cmd_noise_snapshot(args: argparse.Namespace) -> int:
    from qhybrid.quantum.noise_snapshots import write_snapshot

    path = write_snapshot(args.backend, args.out)
    print(f"results: {path} ({path.stat().st_size / 1e6:.1f} MB; noise model and Target calibration, so runs "
          f"from it get the live backend's layout; use it with --noise-model {path})")
    return 0


def cmd_noise_surrogate(args: argparse.Namespace) -> int:
    from qhybrid.workflows.noise_aware import fit_surrogates

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not backends:
        raise UsageError("give --backends fake_a,fake_b")
    _check_backends(backends)
    rows = fit_surrogates(args.model, backends, seed=args.seed, out=args.out, device=args.device,
                          **_given(shots=args.shots))
    print(f"results: {Path(args.out) / (Path(args.model).name + '-surrogates.md')} and one "
          f"<model>-<backend>-surrogate.json per backend ({len(rows)}); train with --noise-aware fake:BACKEND "
          "--surrogate FILE")
    return 0


def cmd_noise_aware(args: argparse.Namespace) -> int:
    from qhybrid.workflows.noise_aware import NoiseAwareStudyConfig, noise_aware_study

    unseen = None if args.unseen is None else tuple(b.strip() for b in args.unseen.split(",") if b.strip())
    try:
        cfg = NoiseAwareStudyConfig(**_given(
            backend=args.backend, unseen=unseen, seeds=tuple(args.seeds) if args.seeds else None, n=args.n,
            sample_steps=args.sample_steps, steps=args.steps, n_train=args.n_train, prediction=args.prediction,
            noise_shots=args.shots, noise_consistency=args.noise_consistency))
    except ValueError as exc:
        raise UsageError(str(exc).replace("NoiseAwareStudyConfig.", "--")) from None
    _check_backends([cfg.backend, *cfg.unseen])
    result = noise_aware_study(args.out, args.vae, cfg, device=args.device)
    _print_comparison(result)
    print(f"results: {Path(args.out) / 'comparison'}/noise_aware.md (noise_aware.json, noise_aware.png)")
    return 0


def _given(**values) -> dict:
    """The flags the user gave (not None): the rest keep their config's defaults, defined once there."""
    return {k: v for k, v in values.items() if v is not None}


def _check_backends(backends: list[str]) -> None:
    from qhybrid.quantum.primitives.aer import fake_backend

    for name in backends:
        try:
            fake_backend(name)
        except ValueError as exc:
            raise UsageError(str(exc)) from None


def _print_comparison(result: dict) -> None:
    """Per backend: the sample change and block error of plain and noise-aware weights (means)."""
    s = result["summary"]
    for backend in result["backends"]:
        p, a = s["plain"].get(backend, {}), s["noise-aware"].get(backend, {})
        if "noise_image_change_grey" not in p or "noise_image_change_grey" not in a:
            continue
        ratio = s["ratio"].get(backend, {}).get("noise_image_change_grey")  # none when plain's change is 0
        print(f"{backend:<14} image change {p['noise_image_change_grey']['mean']:.3f} -> "
              f"{a['noise_image_change_grey']['mean']:.3f} grey levels "
              f"({'–' if ratio is None else f'{ratio:.2f}x'}); block error "
              f"{p['block_error_mean']['mean']:.4f} -> {a['block_error_mean']['mean']:.4f} (plain -> noise-aware, "
              "means over seeds)")
    for group in ("plain", "noise-aware"):
        g = s[group].get("ideal", {}).get("gradable")
        if g:
            print(f"ideal, {group:<12} gradable {g['mean']:.1%} [{g['min']:.1%}, {g['max']:.1%}] over seeds")


def cmd_circuits_inspect(args: argparse.Namespace) -> int:
    from qhybrid.models.denoiser import circuit_spec_of
    from qhybrid.quantum.circuits import CircuitSpec
    from qhybrid.quantum.inspection import inspect_circuit

    weights = None
    if args.model:
        from qhybrid.models import checkpoint as ckpt
        from qhybrid.models.denoiser import LatentDenoiser

        spec, name = circuit_spec_of(args.model)
        if ckpt.read_header(args.model, ("ldm", "vae"))["kind"] == "ldm":  # a quantum VAE: a circuit per QResBlock
            block = LatentDenoiser.from_checkpoint(args.model).quantum_block  # trained (EMA) circuit weights
            weights = block.weight.detach().double().tolist()
    else:
        spec, name = CircuitSpec.from_file(args.spec), Path(args.spec).stem
    report = inspect_circuit(spec, name, backend=args.backend, noise_model=args.noise_model,
                             optimization_level=args.opt_level, seed=args.seed, out=args.out, weights=weights)
    print(report["text"])
    print(f"results: {report['folder']}/ ({', '.join(report['files'])})")
    return 0


def cmd_circuits_study(args: argparse.Namespace) -> int:
    from qhybrid.quantum.study import StudyConfig, run_study

    def names(text):
        return tuple(v.strip() for v in text.split(",") if v.strip())

    kwargs = {"qubits": tuple(args.qubits), "reps": args.reps, "encoding": args.encoding, "shots": args.shots,
              "gradient_samples": args.samples, "entanglement_samples": args.samples,
              "expressibility_pairs": args.pairs, "noise_inputs": args.noise_inputs, "seed": args.seed,
              "optimization_level": args.opt_level}
    if args.ansatze:
        kwargs["ansatze"] = names(args.ansatze)
    if args.backends is not None:
        kwargs["backends"] = names(args.backends)
        if not kwargs["backends"]:
            raise UsageError("--backends needs at least one fake backend (e.g. fake_torino) for the noise columns")
    results = run_study(args.out, StudyConfig(**kwargs))
    rec = results.get("recommendation", {})
    if rec.get("ansatz"):
        print(f"recommended default by the report's rule: {rec['ansatz']}")
    print(f"results: {args.out}/study.md (study.json, gradient_variance.png, entanglement_expressibility.png, noise.png)")
    return 0


def cmd_noisy_eval(args: argparse.Namespace) -> int:
    from qhybrid.quantum.targets import describe_noise
    from qhybrid.workflows.noisy_eval import (
        NoisyEvalConfig,
        default_out,
        percent,
        run_noisy_eval,
    )

    backends = [b.strip() for b in (args.backends or "").split(",") if b.strip()]
    if args.plain or args.noise_aware:
        return _noisy_eval_comparison(args, backends)
    if args.evaluators:
        raise UsageError("--evaluators applies to the plain / noise-aware comparison (--plain ... --noise-aware ...); "
                         "a single model's evaluation uses its own run folder's")
    if not backends and not args.noise_model:
        raise UsageError("give --backends fake_a,fake_b and/or --noise-model FILE")
    if args.mitigation_sweep and args.mitigation:
        raise UsageError("--mitigation-sweep runs every mitigation; give it or --mitigation, not both")
    kinds = list(MITIGATION_SWEEP) if args.mitigation_sweep else (args.mitigation or ["none"])
    zne_kinds = [k for k in kinds if k in ("zne", "trex+zne")]
    if (args.zne_factors or args.zne_extrapolator) and not zne_kinds:
        raise UsageError("--zne-factors and --zne-extrapolator only apply when zne (or trex+zne) is among the "
                         "mitigations")
    mitigations = tuple(_mitigation(k, args).to_dict() if k in zne_kinds else {"kind": k} for k in kinds)
    sweep = args.mitigation_sweep
    try:
        cfg = NoisyEvalConfig(backends=tuple(backends), snapshots=tuple(args.noise_model),
                              shots=tuple(args.shots or ([4096] if sweep else [1024])),
                              n=args.n or (8 if sweep else 32), steps=args.steps or (10 if sweep else 20),
                              mitigations=mitigations, method=args.method, seed=args.seed,
                              optimization_level=args.opt_level)
    except ValueError as exc:  # a repeated backend or snapshot
        raise UsageError(str(exc).replace("NoisyEvalConfig.backends", "--backends")
                         .replace("NoisyEvalConfig.snapshots", "--noise-model")) from None
    out = Path(args.out) if args.out else default_out(args.model, cfg)
    summary = run_noisy_eval(args.model, out, cfg, resume=args.resume, vae=args.vae, device=args.device)
    for e in summary["targets"].values():
        if "block_error_mean" not in e or not e.get("transpiled"):
            continue
        ratio = "–" if e["error_over_floor"] is None else f"{e['error_over_floor']:.2f}"
        print(f"{e['label']:<44} block error {e['block_error_mean']:.4f} = {ratio} x its shot-noise "
              f"floor {e['shot_noise_floor']:.4f}; image change {e['noise_image_change_grey']:.3f} grey levels "
              f"({percent(e['noise_share_of_knockout'])} of the circuit's knock-out); {e['seconds_per_step']:.2f} s/step")
    for line in summary.get("recommendations", []):
        print(f"recommended: {line}")
    sources = {describe_noise(e["noise_source"]) for e in summary["targets"].values()
               if e.get("transpiled") and e.get("noise_source")}
    print("noise: " + "; ".join(sorted(sources)))
    print(f"results: {out}/noisy_eval.md (noisy_eval.json, samples.png, backends.png; per target in targets/)")
    return 0


def _noisy_eval_comparison(args: argparse.Namespace, backends: list[str]) -> int:
    """``noisy-eval --plain ... --noise-aware ...``: every model evaluated, then compared."""
    from qhybrid.workflows.noise_aware import compare_noise_aware

    if args.evaluators and not all((Path(args.evaluators) / name / "config.json").exists()
                                   for name in ("validator", "encoder")):
        raise UsageError(f"--evaluators {args.evaluators} lacks validator/ or encoder/ (a run folder of 'make demo' "
                         "has both)")
    if not (args.plain and args.noise_aware):
        raise UsageError("--plain and --noise-aware go together: give both lists of model folders")
    if not backends:
        raise UsageError("give --backends: the backend the noise-aware models train for and any unseen ones")
    unused = [flag for flag, given in (("--noise-model", args.noise_model), ("--mitigation", args.mitigation),
                                       ("--mitigation-sweep", args.mitigation_sweep), ("--resume", args.resume),
                                       ("--vae", args.vae), ("--zne-factors", args.zne_factors),
                                       ("--zne-extrapolator", args.zne_extrapolator),
                                       ("--method", args.method != "counts"), ("--opt-level", args.opt_level != 2))
              if given]
    if unused:
        raise UsageError(f"{', '.join(unused)} do not apply to the plain / noise-aware comparison (each model's "
                         "evaluation resumes by itself)")
    if args.shots and len(args.shots) > 1:
        raise UsageError("the comparison runs one shot count; give one --shots value (the one trained for)")
    if not args.out:
        raise UsageError("give --out: the folder the comparison is written to")
    _check_backends(backends)
    result = compare_noise_aware(args.plain, args.noise_aware, backends, seed=args.seed, out=args.out,
                                 evaluators=args.evaluators, device=args.device,
                                 **_given(shots=args.shots[0] if args.shots else None, n=args.n, steps=args.steps))
    _print_comparison(result)
    print(f"results: {args.out}/noise_aware.md (noise_aware.json, noise_aware.png)")
    return 0


def _jobs_call(func, *args, **kwargs):
    """Run a jobs entry point; Ctrl-C becomes the runner's one-line 'where things stand'."""
    from qhybrid.workflows.jobs import Interrupted

    try:
        return func(*args, **kwargs)
    except KeyboardInterrupt:  # outside the runner's own handling (e.g. while loading)
        raise Interrupted("stopped; the records are saved; 'qhybrid jobs status RUN_ID' shows where each run "
                          "stands") from None


def cmd_jobs_submit(args: argparse.Namespace) -> int:
    """``--dry-run`` prints the QPU cost estimate (and saves it, or prints it as JSON with ``--json``)
    and submits and records nothing; ``--max-qpu-seconds`` refuses over-budget runs either way."""
    import json

    from qhybrid.workflows.jobs import estimate, estimate_lines, submit, write_estimate

    if args.json and not args.dry_run:
        raise UsageError("--json prints a dry run's estimate: add --dry-run ('qhybrid jobs status RUN_ID --json' "
                         "prints a record)")
    if args.mitigation and args.resilience_level:
        raise UsageError("give --mitigation or --resilience-level, not both (a mitigation sets resilience level 0 plus "
                         "exactly its technique)")
    if (args.zne_factors or args.zne_extrapolator) and args.mitigation not in ("zne", "trex+zne"):
        raise UsageError("--zne-factors and --zne-extrapolator only apply with --mitigation zne (or trex+zne)")
    mitigation = _mitigation(args.mitigation, args).to_dict() if args.mitigation else None
    common = {"n": args.n, "steps": args.steps, "seeds": args.seed,
              "resilience_levels": args.resilience_level or [None], "shots": args.shots, "twirling": args.twirling,
              "dd": args.dd, "mode": args.mode, "optimization_level": args.opt_level, "vae": args.vae,
              "max_qpu_seconds": args.max_qpu_seconds, "mitigation": mitigation, "primitive": args.primitive,
              "device": args.device}
    if args.dry_run:
        cost = _jobs_call(estimate, args.model, args.backend, **common)
        if args.json:
            print(json.dumps(cost, indent=2))
            return 0
        print("\n".join(estimate_lines(cost)))
        print(f"written    {write_estimate(cost, args.jobs_dir)} (no job record; submit without --dry-run to run)")
        return 0
    records = _jobs_call(submit, args.model, args.backend, jobs_dir=args.jobs_dir, wait=not args.detach,
                         poll=args.poll, **common)
    _print_run_summary(records, args.jobs_dir)
    return 0


def _print_run_summary(records, jobs_dir) -> None:
    group = (records[0].data.get("group") or {}).get("id") if len(records) > 1 else None
    if group:
        print(f"group {group}: {len(records)} runs submitted together")
    for record in records:
        done = record.completed_steps()
        state = record.data["status"]
        print(f"run {record.run_id}: {state}, {done}/{len(record.steps)} steps; record {record.path}")
        if state == "completed":
            print(f"results: {record.folder / 'samples'}/ (grid.png, sample_*.png, samples.json)")
        else:
            extra = "" if str(jobs_dir) == "jobs" else f" --jobs-dir {jobs_dir}"
            print(f"  next: qhybrid jobs status {record.run_id}{extra}; qhybrid jobs fetch|resume {record.run_id}{extra}")


def cmd_jobs_list(args: argparse.Namespace) -> int:
    from qhybrid.workflows.jobs import effective_status, list_records

    rows = list_records(args.jobs_dir)
    if not rows:
        print(f"no job records in {args.jobs_dir}/ (submit one with 'qhybrid jobs submit')")
        return 0
    print(f"{'run id':<58} {'status':<10} {'backend':<16} {'mode':<8} {'steps':>7}  {'created':<25}  group")
    for path, data, problem in rows:
        if data is None:
            print(f"{path.stem:<58} {'DAMAGED':<10} {problem}")
            continue
        done = sum(s["status"] == "done" for s in data["steps"])
        mode = data["mode"].get("used") or data["mode"]["requested"]
        status, note = effective_status(path, data)
        group = (data.get("group") or {}).get("id") or "-"
        print(f"{data['run_id']:<58} {status:<10} {data['backend']['name']:<16} {mode:<8} "
              f"{done:>3}/{len(data['steps']):<3}  {data['created']:<25}  {group}" + (f"  ({note})" if note else ""))
    return 0


def cmd_jobs_status(args: argparse.Namespace) -> int:
    import json

    from qhybrid.workflows.jobs import JobRecord, status_lines

    record = JobRecord.load(args.jobs_dir, args.run_id)
    if args.json:
        print(json.dumps(record.data, indent=2))
    else:
        print("\n".join(status_lines(record)))
    return 0


def cmd_jobs_fetch(args: argparse.Namespace) -> int:
    from qhybrid.workflows.jobs import fetch

    record = _jobs_call(fetch, args.run_id, args.jobs_dir, device=args.device)
    _print_run_summary([record], args.jobs_dir)
    return 0


def cmd_jobs_cancel(args: argparse.Namespace) -> int:
    """Exit 0 also for a completed run (nothing to cancel is said, not an error)."""
    from qhybrid.workflows.jobs import cancel

    record = _jobs_call(cancel, args.run_id, args.jobs_dir)
    _print_run_summary([record], args.jobs_dir)
    return 0


def cmd_jobs_resume(args: argparse.Namespace) -> int:
    from qhybrid.workflows.jobs import resume

    record = _jobs_call(resume, args.run_id, args.jobs_dir, wait=not args.detach, poll=args.poll, device=args.device)
    _print_run_summary([record], args.jobs_dir)
    return 0

