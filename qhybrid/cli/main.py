"""The ``qhybrid`` command.

Conventions: usage errors exit 2 and runtime failures exit 1, each with one line on stderr naming
the problem and the fix; ``--debug`` (before the subcommand) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from qhybrid import __version__
from qhybrid.errors import QHybridError, one_line


class UsageError(Exception):
    """Bad command-line input: exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (exit 2)."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _number(convert, ok, expected: str):
    """An argparse type: ``convert`` the text, then check ``ok``; both failures name what is expected."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value
    return parse


_positive_int = _number(int, lambda v: v > 0, "a positive integer")
_seed = _number(int, lambda v: v >= 0, "a non-negative integer")
_positive_float = _number(float, lambda v: v > 0, "a positive number")
_eta = _number(float, lambda v: 0 <= v <= 1, "a number from 0 (deterministic DDIM) to 1 (DDPM-like)")


def _folder(text: str) -> str:
    """argparse type: an output folder; an existing file in its place is a usage error."""
    if Path(text).exists() and not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file; give a folder")
    return text


def _file(text: str) -> str:
    """argparse type: an output file; an existing folder in its place is a usage error."""
    if Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file name to write")
    return text


# --- subcommands -------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from qhybrid.workflows.demo import DemoConfig, run_demo

    cfg = DemoConfig.quick(args.seed) if args.quick else DemoConfig(seed=args.seed)
    cfg.with_qvae = args.with_qvae
    cfg.with_ablations = args.with_ablations
    out = run_demo(args.out, cfg, resume=args.resume)
    print(f"results: {out}/report.md (and data.png, samples.png, losses.png; checkpoints in {out}/vae, "
          f"{out}/ldm-classical, {out}/ldm-classical-large, {out}/ldm-hybrid)")
    return 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    import csv
    import io as _io

    from PIL import Image
    from tqdm import tqdm

    from qhybrid import io
    from qhybrid.data.synthetic import SyntheticFundus

    try:
        gen = SyntheticFundus(size=args.size, seed=args.seed, grade=args.grade)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in tqdm(range(args.n), desc="draw synthetic fundus images", unit="img"):
        image, labels = gen[i]
        name = f"fundus_{i:05d}.png"
        buffer = _io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        io.write_bytes(out / name, buffer.getvalue())
        rows.append({"file": name, "grade": labels.grade, "eye": labels.eye,
                     "gradable": labels.gradable, "source": labels.source})
    text = _io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    io.write_text(out / "labels.csv", text.getvalue())
    print(f"results: {out}/ ({args.n} PNG images, {args.size}x{args.size} px, labels.csv)")
    return 0


def cmd_data_show(args: argparse.Namespace) -> int:
    import warnings

    from qhybrid.data.loaders import DataWarning, load_dataset
    from qhybrid.plots import save_image_grid

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        data = load_dataset(args.source, size=args.size, split=args.split, n=args.n, seed=args.seed)
    for w in caught:
        print(f"qhybrid: warning: {w.message}", file=sys.stderr)
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
            quantum = CircuitSpec(num_qubits=args.qubits, reps=args.reps, ansatz=args.ansatz).to_dict()
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if args.placement != "bottleneck" and not args.quantum:
        raise UsageError("--placement applies to the quantum-enhanced VAE; add --quantum")
    model_cfg = VAEConfig(size=args.size, quantum=quantum, quantum_placement=args.placement)
    train_cfg = VAETrainConfig(data=args.data, n=args.n, epochs=args.epochs, batch=args.batch,
                               lr=args.lr, seed=args.seed)
    summary = train_vae(args.out, model_cfg, train_cfg, resume=args.resume)
    print(
        f"trained {'quantum-enhanced' if quantum else 'classical'} VAE for {summary['epochs']} epochs on "
        f"{summary['images']} images ({summary['images_per_second']:.0f} images/s); held-out "
        f"reconstruction MSE {summary['val_recon_mse']:.4f}"
    )
    print(f"results: {args.out}/ (config.json, model.safetensors, loss.png, reconstructions.png)")
    return 0


def cmd_train_diffusion(args: argparse.Namespace) -> int:
    from qhybrid.diffusion.scheduler import SchedulerConfig
    from qhybrid.quantum import CircuitSpec
    from qhybrid.training.diffusion import DiffusionTrainConfig, train_diffusion

    try:
        sched = SchedulerConfig(beta_schedule=args.schedule, prediction_type=args.prediction)
        CircuitSpec(num_qubits=args.qubits, reps=args.reps, ansatz=args.ansatz)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    cfg = DiffusionTrainConfig(data=args.data, n=args.n, steps=args.steps, batch=args.batch, lr=args.lr,
                               seed=args.seed)
    summary = train_diffusion(args.out, args.vae, args.denoiser, cfg, sched, num_qubits=args.qubits,
                              reps=args.reps, ansatz=args.ansatz, placement=args.placement, resume=args.resume)
    p = summary["parameters"]
    print(
        f"trained {summary['denoiser']} denoiser ({p['total']:,} parameters, {p['quantum_circuit_weights']} "
        f"circuit weights) for {summary['steps']} steps ({summary['steps_per_second']:.1f} steps/s); "
        f"loss {summary['first_loss']:.3f} -> {summary['final_loss']:.3f}"
    )
    print(f"results: {args.out}/ (config.json, model.safetensors, loss.png)")
    return 0


def _target_options(args: argparse.Namespace) -> dict:
    """Options of a fake: target from the command line (shots, mitigation, ...)."""
    if not args.target.startswith("fake:"):
        given = [flag for flag, v in (("--noise-model", args.noise_model), ("--mitigation", args.mitigation)) if v]
        if given:
            raise UsageError(f"{', '.join(given)} only apply to a fake:<backend> target")
        return {}
    opts = {"shots": args.shots, "mitigation": args.mitigation, "method": args.method,
            "optimization_level": args.opt_level, "seed": args.seed}
    if args.noise_model:
        opts["noise_model"] = args.noise_model
    return opts


def _add_target_options(parser) -> None:
    parser.add_argument("--target", default="ideal", help="ideal (default), fake:<backend>, ibm:<backend>")
    parser.add_argument("--shots", type=_positive_int, default=1024, help="fake and ibm targets: shots per evaluation")
    parser.add_argument("--mitigation", action="store_true", help="fake target: readout-error mitigation")
    parser.add_argument("--method", choices=["counts", "estimator"], default="counts",
                        help="fake target: counts (one execution for all Z observables) or Aer EstimatorV2")
    parser.add_argument("--opt-level", type=int, choices=[0, 1, 2, 3], default=2, help="transpiler optimisation level")
    parser.add_argument("--noise-model", default=None, help="fake target: run from a noise-model snapshot JSON")


def cmd_sample(args: argparse.Namespace) -> int:
    from qhybrid.workflows.sampling import sample_images, write_samples

    if args.target != "ideal" and not args.target.startswith(("fake:", "ibm:")):
        raise UsageError(f"unknown --target {args.target!r}; allowed: ideal, fake:<backend>, ibm:<backend>")
    if args.target.startswith("ibm:"):
        return _sample_with_jobs(args)
    images, info = sample_images(args.model, n=args.n, steps=args.steps, target=args.target, seed=args.seed,
                                 sampler=args.sampler, eta=args.eta, target_options=_target_options(args))
    write_samples(images, args.out, info)
    print(f"sampled {len(images)} images in {info['seconds']:.1f} s ({info['seconds_per_image'] * 1e3:.0f} ms/image, "
          f"{args.steps} {args.sampler.upper()} steps, target {args.target})")
    print(f"results: {args.out}/ (sample_*.png, grid.png, samples.json)")
    return 0


def _sample_with_jobs(args: argparse.Namespace) -> int:
    """``sample --target ibm:X`` is ``jobs submit``: every paid job gets a record."""
    import shutil

    from qhybrid.workflows.jobs import submit

    if args.sampler != "ddim" or args.eta != 0:
        raise UsageError("the ibm: target samples with deterministic DDIM (--sampler ddim --eta 0): one job per step")
    if args.mitigation or args.noise_model or args.method != "counts":
        raise UsageError("--mitigation, --method and --noise-model belong to the fake: target; for the ibm: target "
                         "use 'qhybrid jobs submit' with --resilience-level, --twirling, --dd")
    backend = args.target.split(":", 1)[1]
    records = _jobs_call(submit, args.model, backend, n=args.n, steps=args.steps, seeds=[args.seed],
                         shots=args.shots, optimization_level=args.opt_level, jobs_dir=args.jobs_dir)
    record = records[0]
    shutil.copytree(record.folder / "samples", args.out, dirs_exist_ok=True)
    print(f"sampled {args.n} images on {backend} as job run {record.run_id} (record {record.path})")
    print(f"results: {args.out}/ (sample_*.png, grid.png, samples.json)")
    return 0


def cmd_validator_train(args: argparse.Namespace) -> int:
    from qhybrid.training.validator import ValidatorTrainConfig, train_validator

    metrics = train_validator(args.out, ValidatorTrainConfig(data=args.data, n=args.n, epochs=args.epochs,
                                                             seed=args.seed))
    print(f"gradability validator: held-out accuracy {metrics['heldout_accuracy']:.3f}, ROC AUC "
          f"{metrics['heldout_roc_auc']:.3f} on {metrics['heldout_images']} images ({metrics['data']} data)")
    print(f"results: {args.out}/ (config.json, model.safetensors, heldout.png)")
    return 0


def cmd_validator_score(args: argparse.Namespace) -> int:
    import json
    import warnings

    from qhybrid.data.loaders import DataWarning, crop_to_fundus, load_images
    from qhybrid.evaluation.validator import load_validator, predict

    model, _ = load_validator(args.model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        images, names, notes = load_images(args.images, size=None)
    for w in caught:
        print(f"qhybrid: warning: {w.message}", file=sys.stderr)
    import numpy as np
    from PIL import Image as _Image

    cropped = np.stack([crop_to_fundus(_Image.fromarray(im), model.cfg.size) for im in images])
    probs = predict(model, cropped)
    if args.json:
        print(json.dumps([{"image": n, "p_gradable": round(float(p), 4),
                           "gradable": bool(p >= model.cfg.threshold)} for n, p in zip(names, probs)], indent=2))
    else:
        for n, p in zip(names, probs):
            print(f"{p:.4f}\t{'gradable' if p >= model.cfg.threshold else 'ungradable'}\t{n}")
        print(f"{int((probs >= model.cfg.threshold).sum())} of {len(probs)} images gradable", file=sys.stderr)
    return 0


def cmd_encoder_train(args: argparse.Namespace) -> int:
    from qhybrid.training.encoder import EncoderTrainConfig, train_encoder

    metrics = train_encoder(args.out, EncoderTrainConfig(n=args.n, epochs=args.epochs, seed=args.seed))
    print(f"fundus feature encoder: held-out eye accuracy {metrics['heldout_eye_accuracy']:.3f}, grade accuracy "
          f"{metrics['heldout_grade_accuracy']:.3f}, disc position error {metrics['heldout_disc_position_error']:.3f}")
    print(f"results: {args.out}/")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import warnings

    from qhybrid import io
    from qhybrid.data.loaders import DataWarning, load_dataset, load_images
    from qhybrid.evaluation.evaluate import evaluate_sets, fmt

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        generated, _, notes = load_images(args.generated, size=None)
        size = generated.shape[1]
        if args.size:
            size = args.size
        real = load_dataset(args.real, size=size, split=args.split, n=args.n_real, seed=0).images
        if generated.shape[1] != size:
            generated, _, more = load_images(args.generated, size=size)
            notes = list(dict.fromkeys(notes + more))
    for w in caught:
        print(f"qhybrid: warning: {w.message}", file=sys.stderr)
    for note in notes:
        print(f"qhybrid: note: {note}", file=sys.stderr)
    encoder = validator = None
    if args.encoder:
        from qhybrid.evaluation.features import load_encoder
        encoder = load_encoder(args.encoder)
    if args.validator:
        from qhybrid.evaluation.validator import load_validator
        validator = load_validator(args.validator)[0]
    if encoder is None and validator is None and not args.inception:
        print("qhybrid: note: no --encoder, --validator or --inception given: colour statistics only", file=sys.stderr)
    result = evaluate_sets(real, generated, encoder=encoder, validator=validator, inception=args.inception,
                           k=args.k, n_boot=args.bootstrap, seed=args.seed)
    result["notes"] = notes
    print(f"{len(generated)} generated vs {len(real)} real images ({size} px); 95% intervals in brackets")
    if "gradable" in result:
        print(f"  gradable %        {fmt(result['gradable'], 100, 1)}   (real: {fmt(result['gradable_real'], 100, 1)})")
    for group, label in (("fundus_features", "fundus features"), ("inception", "Inception")):
        if group in result:
            g = result[group]
            print(f"  FD ({label})  {fmt(g['fd'], 1, 3)}")
            print(f"  KID ({label}) {fmt(g['kid'], 1, 5)}")
            for key in ("precision", "recall", "density", "coverage"):
                print(f"  {key:<17} {fmt(g[key], 1, 3)}")
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
                  reps=args.reps)
        print(f"results: {args.run}/sweep.md (sweep.json, sweep.png; models and per-size comparisons in "
              f"{args.run}/sweep/)")
        return 0

    summary = run_compare(args.run, n=args.n, steps=args.steps, seed=args.seed, real_n=args.n_real, k=args.k,
                          n_boot=args.bootstrap, validator_dir=args.validator, encoder_dir=args.encoder,
                          inception=args.inception)
    from qhybrid.evaluation.report import comparison_table
    print(comparison_table(summary))
    print(f"results: {args.run}/comparison.md (comparison.json, comparison.png, comparison_samples.png, samples/)")
    return 0


def cmd_backends(args: argparse.Namespace) -> int:
    from qhybrid.quantum.primitives.aer import fake_backend, fake_backend_names

    print(f"{'backend':<20} {'qubits':>6}  basis gates")
    for name in fake_backend_names():
        b = fake_backend(name)
        ops = [o for o in b.operation_names if o not in ("delay", "measure", "reset", "if_else", "for_loop",
                                                         "switch_case", "while_loop")]
        print(f"{name:<20} {b.num_qubits:>6}  {', '.join(sorted(ops))}")
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
    print(f"results: {path} ({path.stat().st_size / 1e6:.1f} MB; use it with --noise-model {path})")
    return 0


def cmd_circuits_inspect(args: argparse.Namespace) -> int:
    from qhybrid.models.checkpoint import circuit_spec_of
    from qhybrid.quantum.circuits import CircuitSpec
    from qhybrid.quantum.inspection import inspect_circuit

    if args.model:
        spec, name = circuit_spec_of(args.model)
    else:
        spec, name = CircuitSpec.from_file(args.spec), Path(args.spec).stem
    report = inspect_circuit(spec, name, backend=args.backend, noise_model=args.noise_model,
                             optimization_level=args.opt_level, seed=args.seed, out=args.out)
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
    from qhybrid.workflows.noisy_eval import run_noisy_eval

    backends = [b for b in (args.backends or "").split(",") if b.strip()]
    if not backends and not args.noise_model:
        raise UsageError("give --backends fake_a,fake_b and/or --noise-model FILE")
    out = args.out or str(Path(args.model).parent / "noisy-eval")
    summary = run_noisy_eval(args.model, out, backends, args.noise_model, n=args.n, steps=args.steps,
                             shots=args.shots, mitigation=args.mitigation, seed=args.seed, method=args.method,
                             optimization_level=args.opt_level)
    for name, e in summary["targets"].items():
        if name == "ideal":
            continue
        print(f"{name:<28} block error {e['block_error_mean']:.3f} (max {e['block_error_max']:.3f}), "
              f"image change {e['image_mean_abs_change'] * 100:.1f}%, {e['seconds_per_step']:.2f} s/step")
    print(f"results: {out}/noisy_eval.md (noisy_eval.json, samples.png)")
    return 0


def _int_list(allowed: tuple[int, ...] | None = None):
    """argparse type: a comma-separated list of integers (``0,1,2``)."""
    def parse(text: str) -> list[int]:
        try:
            values = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
        if not values:
            raise argparse.ArgumentTypeError(f"expected at least one integer, got {text!r}")
        bad = [v for v in values if allowed is not None and v not in allowed]
        if bad:
            raise argparse.ArgumentTypeError(f"{bad[0]} is not one of {', '.join(map(str, allowed))}")
        return values
    return parse


def _jobs_call(func, *args, **kwargs):
    """Run a jobs entry point; Ctrl-C becomes the runner's one-line 'where things stand'."""
    from qhybrid.workflows.jobs import Interrupted

    try:
        return func(*args, **kwargs)
    except KeyboardInterrupt:  # outside the runner's own handling (e.g. while loading)
        raise Interrupted("stopped; the records are saved; 'qhybrid jobs status RUN_ID' shows where each run "
                          "stands") from None


def cmd_jobs_submit(args: argparse.Namespace) -> int:
    from qhybrid.workflows.jobs import submit

    records = _jobs_call(submit, args.model, args.backend, n=args.n, steps=args.steps, seeds=args.seed,
                         resilience_levels=args.resilience_level or [None], shots=args.shots, twirling=args.twirling,
                         dd=args.dd, mode=args.mode, optimization_level=args.opt_level, jobs_dir=args.jobs_dir,
                         wait=not args.detach, poll=args.poll)
    _print_run_summary(records, args.jobs_dir)
    return 0


def _print_run_summary(records, jobs_dir) -> None:
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
    from qhybrid.workflows.jobs import list_records

    rows = list_records(args.jobs_dir)
    if not rows:
        print(f"no job records in {args.jobs_dir}/ (submit one with 'qhybrid jobs submit')")
        return 0
    print(f"{'run id':<58} {'status':<10} {'backend':<16} {'mode':<8} {'steps':>7}  created")
    for path, data, problem in rows:
        if data is None:
            print(f"{path.stem:<58} {'DAMAGED':<10} {problem}")
            continue
        done = sum(s["status"] == "done" for s in data["steps"])
        mode = data["mode"].get("used") or data["mode"]["requested"]
        print(f"{data['run_id']:<58} {data['status']:<10} {data['backend']['name']:<16} {mode:<8} "
              f"{done:>3}/{len(data['steps']):<3}  {data['created']}")
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

    record = _jobs_call(fetch, args.run_id, args.jobs_dir)
    _print_run_summary([record], args.jobs_dir)
    return 0


def cmd_jobs_resume(args: argparse.Namespace) -> int:
    from qhybrid.workflows.jobs import resume

    record = _jobs_call(resume, args.run_id, args.jobs_dir, wait=not args.detach, poll=args.poll)
    _print_run_summary([record], args.jobs_dir)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="qhybrid", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"qhybrid {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    demo = sub.add_parser(
        "demo",
        help="the main job: VAE + three latent diffusion models on built-in data, and a report",
        description="Train the VAE and the classical, classical-large and hybrid denoisers on built-in "
        "synthetic fundus images, sample from each and write a report.",
    )
    demo.add_argument("--out", type=_folder, default="runs/demo", help="output folder (default: runs/demo)")
    demo.add_argument("--seed", type=_seed, default=0)
    demo.add_argument("--quick", action="store_true", help="tiny sizes (about 3 minutes), for smoke tests")
    demo.add_argument("--resume", action="store_true", help="continue an interrupted demo in --out")
    demo.add_argument("--with-qvae", action="store_true",
                      help="also train the quantum-enhanced VAE and a hybrid denoiser on it (about +3.5 min)")
    demo.add_argument("--with-ablations", action="store_true",
                      help="also train hybrid-classical-core and hybrid-frozen (about +4 min)")
    demo.set_defaults(func=cmd_demo)

    data = sub.add_parser("data", help="fundus data: synthesise, show").add_subparsers(
        dest="data_command", metavar="SUBCOMMAND", parser_class=_Parser, required=True)
    synth = data.add_parser("synth", help="write synthetic fundus PNGs and labels.csv")
    synth.add_argument("--out", type=_folder, required=True, help="output folder")
    synth.add_argument("--n", type=_positive_int, default=64, help="number of images (default 64)")
    synth.add_argument("--size", type=_positive_int, default=64, help="pixels, 32-256 (default 64)")
    synth.add_argument("--seed", type=_seed, default=0)
    synth.add_argument("--grade", type=int, default=None, help="fix the DR grade (0-4)")
    synth.set_defaults(func=cmd_data_synth)
    show = data.add_parser("show", help="write a grid of a data set")
    show.add_argument("source", help="'synthetic', an image folder or an .npz file")
    show.add_argument("--out", type=_file, required=True, help="PNG file to write")
    show.add_argument("--n", type=_positive_int, default=16)
    show.add_argument("--size", type=_positive_int, default=64)
    show.add_argument("--split", default="train", choices=["train", "val", "test", "all"])
    show.add_argument("--seed", type=_seed, default=0)
    show.set_defaults(func=cmd_data_show)

    train = sub.add_parser("train", help="train a VAE or a latent diffusion model").add_subparsers(
        dest="train_command", metavar="MODEL", parser_class=_Parser, required=True)
    vae = train.add_parser("vae", help="train a classical or quantum-enhanced VAE")
    vae.add_argument("--data", default="synthetic", help="'synthetic' (default), an image folder or an .npz")
    vae.add_argument("--size", type=_positive_int, default=64, help="image size: 32, 64 or 128")
    vae.add_argument("--quantum", action="store_true", help="quantum block in the bottleneck")
    vae.add_argument("--qubits", type=_positive_int, default=6, help="quantum block width (default 6)")
    vae.add_argument("--reps", type=_positive_int, default=2, help="ansatz repetitions (default 2)")
    vae.add_argument("--ansatz", default="real_amplitudes")
    vae.add_argument("--placement", choices=["bottleneck", "qresblock"], default="bottleneck",
                     help="quantum: a gated branch after the encoder (bottleneck) or QResBlocks as the encoder's and "
                          "decoder's middle blocks (qresblock)")
    vae.add_argument("--epochs", type=_positive_int, default=20)
    vae.add_argument("--n", type=_positive_int, default=None, help="training images (synthetic: 512)")
    vae.add_argument("--batch", type=_positive_int, default=16)
    vae.add_argument("--lr", type=_positive_float, default=2e-3)
    vae.add_argument("--seed", type=_seed, default=0)
    vae.add_argument("--out", type=_folder, required=True, help="checkpoint folder, e.g. runs/x/vae")
    vae.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    vae.set_defaults(func=cmd_train_vae)
    ldm = train.add_parser("diffusion", help="train a latent denoiser on a trained VAE")
    ldm.add_argument("--vae", required=True, help="VAE checkpoint folder")
    ldm.add_argument("--denoiser", required=True, choices=["classical", "classical-large", "hybrid",
                                                            "hybrid-classical-core", "hybrid-frozen"],
                     help="hybrid-classical-core / hybrid-frozen: ablations that replace only the quantum core")
    ldm.add_argument("--placement", choices=["bottleneck", "qresblock"], default="bottleneck",
                     help="the branch after the middle block, or inside it as a QResBlock")
    ldm.add_argument("--ansatz", default="real_amplitudes", help="hybrid: circuit ansatz (see 'circuits study')")
    ldm.add_argument("--data", default="synthetic", help="the VAE's training source (default synthetic)")
    ldm.add_argument("--n", type=_positive_int, default=None, help="training images (synthetic: 512)")
    ldm.add_argument("--steps", type=_positive_int, default=1200)
    ldm.add_argument("--batch", type=_positive_int, default=64)
    ldm.add_argument("--lr", type=_positive_float, default=2e-3)
    ldm.add_argument("--qubits", type=_positive_int, default=8, help="hybrid: quantum block width (default 8)")
    ldm.add_argument("--reps", type=_positive_int, default=3, help="hybrid: ansatz repetitions (default 3)")
    ldm.add_argument("--schedule", default="cosine", help="beta schedule: cosine or linear")
    ldm.add_argument("--prediction", default="epsilon", help="epsilon or v_prediction")
    ldm.add_argument("--seed", type=_seed, default=0)
    ldm.add_argument("--out", type=_folder, required=True, help="checkpoint folder, e.g. runs/x/ldm-hybrid")
    ldm.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    ldm.set_defaults(func=cmd_train_diffusion)

    sample = sub.add_parser("sample", help="sample images from a trained latent diffusion model")
    sample.add_argument("--model", required=True, help="LDM checkpoint folder")
    sample.add_argument("--n", type=_positive_int, default=64)
    sample.add_argument("--steps", type=_positive_int, default=50, help="sampling steps (default 50)")
    sample.add_argument("--sampler", choices=["ddim", "ddpm"], default="ddim")
    sample.add_argument("--eta", type=_eta, default=0.0, help="DDIM noise, 0 to 1 (0 = deterministic)")
    _add_target_options(sample)
    sample.add_argument("--jobs-dir", type=_folder, default="jobs", help="ibm target: where the job record goes (default jobs/)")
    sample.add_argument("--seed", type=_seed, default=0)
    sample.add_argument("--out", type=_folder, required=True, help="output folder")
    sample.set_defaults(func=cmd_sample)

    val = sub.add_parser("validator", help="the gradability (image-quality) validator").add_subparsers(
        dest="validator_command", metavar="SUBCOMMAND", parser_class=_Parser, required=True)
    vt = val.add_parser("train", help="train the validator (synthetic + degradations, or a labelled folder)")
    vt.add_argument("--out", type=_folder, required=True)
    vt.add_argument("--data", default="synthetic", help="'synthetic' or an image folder with a quality CSV")
    vt.add_argument("--n", type=_positive_int, default=600, help="synthetic base images (default 600)")
    vt.add_argument("--epochs", type=_positive_int, default=10)
    vt.add_argument("--seed", type=_seed, default=1234)
    vt.set_defaults(func=cmd_validator_train)
    vs = val.add_parser("score", help="probability that each image is gradable")
    vs.add_argument("--model", required=True, help="validator folder")
    vs.add_argument("images", nargs="+", help="image files and/or folders")
    vs.add_argument("--json", action="store_true", help="print a JSON list")
    vs.set_defaults(func=cmd_validator_score)

    enc = sub.add_parser("encoder", help="the fundus feature encoder used by the metrics").add_subparsers(
        dest="encoder_command", metavar="SUBCOMMAND", parser_class=_Parser, required=True)
    et = enc.add_parser("train", help="train the fundus feature encoder")
    et.add_argument("--out", type=_folder, required=True)
    et.add_argument("--n", type=_positive_int, default=600)
    et.add_argument("--epochs", type=_positive_int, default=8)
    et.add_argument("--seed", type=_seed, default=2024)
    et.set_defaults(func=cmd_encoder_train)

    ev = sub.add_parser("evaluate", help="compare generated images with real ones (metrics with intervals)")
    ev.add_argument("--real", required=True, help="'synthetic', an image folder or an .npz")
    ev.add_argument("--generated", required=True, nargs="+", help="generated image folder(s) or files")
    ev.add_argument("--split", default="test", choices=["train", "val", "test", "all"], help="real split (default test)")
    ev.add_argument("--n-real", type=_positive_int, default=None, help="cap on real images (synthetic: 128)")
    ev.add_argument("--size", type=_positive_int, default=None, help="compare at this size (default: generated size)")
    ev.add_argument("--encoder", default=None, help="feature encoder folder (qhybrid encoder train)")
    ev.add_argument("--validator", default=None, help="validator folder (qhybrid validator train)")
    ev.add_argument("--inception", default=None, help="local TorchScript Inception file for FID/KID")
    ev.add_argument("--k", type=_positive_int, default=5, help="k of the k-NN metrics")
    ev.add_argument("--bootstrap", type=_positive_int, default=100, help="bootstrap draws")
    ev.add_argument("--seed", type=_seed, default=0)
    ev.add_argument("--json", type=_file, default=None, help="write all figures to this JSON file")
    ev.set_defaults(func=cmd_evaluate)

    cmp_ = sub.add_parser("compare", help="sample and evaluate every model of a run folder")
    cmp_.add_argument("run", help="run folder (e.g. runs/demo)")
    cmp_.add_argument("--n", type=_positive_int, default=64, help="samples per model")
    cmp_.add_argument("--steps", type=_positive_int, default=50)
    cmp_.add_argument("--n-real", type=_positive_int, default=200)
    cmp_.add_argument("--k", type=_positive_int, default=5)
    cmp_.add_argument("--bootstrap", type=_positive_int, default=100)
    cmp_.add_argument("--validator", default=None, help="validator folder (default: RUN/validator, trained if missing)")
    cmp_.add_argument("--encoder", default=None, help="encoder folder (default: RUN/encoder, trained if missing)")
    cmp_.add_argument("--inception", default=None)
    cmp_.add_argument("--seed", type=_seed, default=0)
    cmp_.add_argument("--train-sizes", type=_int_list(), default=None,
                      help="data-scarcity sweep: train every denoiser on each number of images (e.g. 64,256,1024) "
                           "with the run's VAE, compare each size, plot metrics against size (resumable)")
    cmp_.add_argument("--kinds", default=None, help="sweep: denoisers to train (default: all five, ablations included)")
    cmp_.add_argument("--train-steps", type=_positive_int, default=None, help="sweep: training steps (default 1200)")
    cmp_.add_argument("--qubits", type=_positive_int, default=8, help="sweep: hybrid circuit width (default 8)")
    cmp_.add_argument("--reps", type=_positive_int, default=3, help="sweep: ansatz repetitions (default 3)")
    cmp_.set_defaults(func=cmd_compare)

    backends = sub.add_parser("backends", help="list the fake backends (qubits, basis gates)")
    backends.set_defaults(func=cmd_backends)

    doctor = sub.add_parser("doctor", help="versions, fake backends, account (never shown), disk: for bug reports")
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")
    doctor.set_defaults(func=cmd_doctor)

    noise = sub.add_parser("noise", help="noise-model snapshots").add_subparsers(
        dest="noise_command", metavar="SUBCOMMAND", parser_class=_Parser, required=True)
    snap = noise.add_parser("snapshot", help="freeze a fake backend's noise model into a JSON file")
    snap.add_argument("backend", help="e.g. fake_torino")
    snap.add_argument("--out", type=_folder, default="noise_models", help="folder (default noise_models/)")
    snap.set_defaults(func=cmd_noise_snapshot)

    circ = sub.add_parser("circuits", help="inspect the quantum block's circuits").add_subparsers(
        dest="circuits_command", metavar="SUBCOMMAND", parser_class=_Parser, required=True)
    insp = circ.add_parser("inspect", help="transpile for a backend: depth, 2q gates, layout, duration, files")
    src = insp.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="a hybrid LDM (or quantum VAE) checkpoint folder")
    src.add_argument("--spec", help="a CircuitSpec JSON file")
    insp.add_argument("--backend", required=True, help="fake backend, e.g. fake_torino")
    insp.add_argument("--noise-model", default=None, help="transpile for a snapshot's coupling map instead")
    insp.add_argument("--opt-level", type=int, choices=[0, 1, 2, 3], default=2)
    insp.add_argument("--seed", type=_seed, default=0, help="transpiler seed")
    insp.add_argument("--out", type=_folder, default="circuits", help="folder (default circuits/)")
    insp.set_defaults(func=cmd_circuits_inspect)

    cst = circ.add_parser("study", help="ansatz study: gradient variance, entanglement, expressibility, noise")
    cst.add_argument("--ansatze", default=None, help="comma-separated (default: all five)")
    cst.add_argument("--qubits", type=_int_list(), default=[4, 6, 8, 10], help="default 4,6,8,10")
    cst.add_argument("--reps", type=_positive_int, default=3)
    cst.add_argument("--encoding", choices=["angle", "reuploading"], default="angle")
    cst.add_argument("--backends", default=None, help="fake backends for the noise columns (default fake_torino)")
    cst.add_argument("--samples", type=_positive_int, default=200, help="random parameter draws per cell (default 200)")
    cst.add_argument("--pairs", type=_positive_int, default=1000, help="state pairs for expressibility (default 1000)")
    cst.add_argument("--noise-inputs", type=_positive_int, default=16, help="rows for the noise error (default 16)")
    cst.add_argument("--shots", type=_positive_int, default=1024)
    cst.add_argument("--opt-level", type=int, choices=[0, 1, 2, 3], default=2)
    cst.add_argument("--seed", type=_seed, default=0)
    cst.add_argument("--out", type=_folder, default="circuits/study", help="folder (default circuits/study)")
    cst.set_defaults(func=cmd_circuits_study)

    ne = sub.add_parser("noisy-eval", help="sample a hybrid model on ideal and noisy fake-backend targets")
    ne.add_argument("--model", required=True, help="hybrid LDM checkpoint folder")
    ne.add_argument("--backends", default="", help="comma-separated fake backends, e.g. fake_torino,fake_brisbane")
    ne.add_argument("--noise-model", action="append", default=[], help="a snapshot JSON (repeatable)")
    ne.add_argument("--n", type=_positive_int, default=16)
    ne.add_argument("--steps", type=_positive_int, default=20)
    ne.add_argument("--shots", type=_positive_int, default=1024)
    ne.add_argument("--mitigation", action="store_true", help="readout-error mitigation")
    ne.add_argument("--method", choices=["counts", "estimator"], default="counts")
    ne.add_argument("--opt-level", type=int, choices=[0, 1, 2, 3], default=2)
    ne.add_argument("--seed", type=_seed, default=0)
    ne.add_argument("--out", type=_folder, default=None, help="output folder (default: next to the model, noisy-eval/)")
    ne.set_defaults(func=cmd_noisy_eval)
    jobs = sub.add_parser("jobs", help="sampling runs on IBM Quantum (or fake_* backends, locally) with job records"
                          ).add_subparsers(dest="jobs_command", metavar="SUBCOMMAND", parser_class=_Parser, required=True)
    js = jobs.add_parser("submit", help="sample a hybrid LDM with one runtime job per denoising step")
    js.add_argument("--model", required=True, help="hybrid LDM checkpoint folder, e.g. runs/demo/ldm-hybrid")
    js.add_argument("--backend", required=True, help="ibm_<name> (IBM Quantum) or fake_<name> (local testing mode)")
    js.add_argument("--n", type=int, default=16, help="chains (images); all go in one PUB per step (default 16)")
    js.add_argument("--steps", type=int, default=20, help="DDIM steps = jobs per run (default 20)")
    js.add_argument("--shots", type=_positive_int, default=1024)
    js.add_argument("--mode", choices=["session", "batch", "job"], default=None,
                    help="execution mode (default: session for one run, batch for several)")
    js.add_argument("--resilience-level", type=_int_list((0, 1, 2)), default=None,
                    help="0, 1 or 2; a list (0,1,2) makes one run per level (default: the service's, 1)")
    js.add_argument("--twirling", action="store_true", help="Pauli twirling of gates and measurements")
    js.add_argument("--dd", action="store_true", help="dynamical decoupling (XY4)")
    js.add_argument("--opt-level", type=int, choices=[0, 1, 2, 3], default=2, help="transpiler optimisation level")
    js.add_argument("--seed", type=_int_list(), default=[0], help="initial-noise seed; a list (0,1,2) makes one run each")
    js.add_argument("--detach", action="store_true",
                    help="submit the next step and return without waiting (IBM Quantum backends)")
    js.add_argument("--poll", type=_positive_float, default=None, help="seconds between status checks (default 10; local 0.02)")
    js.add_argument("--jobs-dir", type=_folder, default="jobs", help="where records go (default jobs/)")
    js.set_defaults(func=cmd_jobs_submit)
    jl = jobs.add_parser("list", help="list the job records")
    jl.add_argument("--jobs-dir", type=_folder, default="jobs")
    jl.set_defaults(func=cmd_jobs_list)
    jst = jobs.add_parser("status", help="show a run's record (steps, job ids, options); no service calls")
    jst.add_argument("run_id")
    jst.add_argument("--json", action="store_true", help="print the record itself")
    jst.add_argument("--jobs-dir", type=_folder, default="jobs")
    jst.set_defaults(func=cmd_jobs_status)
    jf = jobs.add_parser("fetch", help="collect finished job results; decode the images when all steps are done")
    jf.add_argument("run_id")
    jf.add_argument("--jobs-dir", type=_folder, default="jobs")
    jf.set_defaults(func=cmd_jobs_fetch)
    jr = jobs.add_parser("resume", help="continue a run from its last completed step (finished or running jobs are reused)")
    jr.add_argument("run_id")
    jr.add_argument("--detach", action="store_true", help="submit the next step and return without waiting")
    jr.add_argument("--poll", type=_positive_float, default=None, help="seconds between status checks")
    jr.add_argument("--jobs-dir", type=_folder, default="jobs")
    jr.set_defaults(func=cmd_jobs_resume)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "command", None):
            raise UsageError("no command given (see 'qhybrid --help')")
        return int(args.func(args) or 0)
    except UsageError as exc:
        _close_progress_bars()
        if debug:
            traceback.print_exc()
        print(f"qhybrid: error: {exc}", file=sys.stderr)
        return 2
    except QHybridError as exc:  # the message already names the problem and the fix
        _close_progress_bars()
        if debug:
            traceback.print_exc()
        print(f"qhybrid: error: {one_line(exc.render(flag_for))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        _close_progress_bars()
        print("qhybrid: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place that turns failures into a line
        _close_progress_bars()
        if debug:
            traceback.print_exc()
        print(f"qhybrid: error: {_one_line(exc)}", file=sys.stderr)
        return 1


def _close_progress_bars() -> None:
    """Close the progress bars a failure left open, so the error line starts a line of its own
    (an open bar would end up in front of it, and be redrawn after it at exit)."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ())):
        bar.close()


#: Library parameters whose command-line flag is not ``--`` + the name with dashes.
FLAG_NAMES = {"real_n": "--n-real", "n_boot": "--bootstrap", "optimization_level": "--opt-level",
              "validator_dir": "--validator", "encoder_dir": "--encoder",
              "resilience_levels": "--resilience-level", "seeds": "--seed", "vae_path": "--vae"}


def flag_for(name: str) -> str:
    """The command-line flag of a library parameter named in an error (see qhybrid.errors.param)."""
    return FLAG_NAMES.get(name, "--" + name.replace("_", "-"))


def _one_line(exc: BaseException) -> str:
    message = one_line(exc)
    if isinstance(exc, (OSError,)) and getattr(exc, "filename", None):
        message = f"{exc.strerror or message}: {exc.filename}"
    return message + " (run with --debug for the traceback)"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
