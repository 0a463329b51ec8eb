"""``qhybrid noisy-eval``: the same trained hybrid model sampled on ideal and noisy targets.

For each target (``ideal`` first, then each fake backend or noise snapshot) the sampler starts from
the same noise with the same seed, so every difference comes from the quantum block's evaluation.
Reported per target: the quantum block's output error against ideal (on the block inputs that
occur during ideal sampling), how far the final latents and images move, that image change as a
share of the circuit's knock-out (the same samples on ideal with the circuit's output replaced by
its mean, :mod:`qhybrid.evaluation.contribution`: 100% means the noise erases as much as removing
the circuit), the cost (circuit executions, bindings per execution, shots per image, seconds per
step) and, when the run folder has them, the gradable share and FD against real images.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from qhybrid import io
from qhybrid.errors import InputError
from qhybrid.evaluation.contribution import noise_share
from qhybrid.quantum.circuits import two_qubit_gate_count


def run_noisy_eval(model_dir: str | Path, out: str | Path, backends: list[str], snapshots: list[str] | None = None,
                   n: int = 16, steps: int = 20, shots: int = 1024, mitigation: bool = False, seed: int = 0,
                   method: str = "counts", optimization_level: int = 2, progress: bool = True, log=print) -> dict:
    from qhybrid.diffusion.pipeline import LatentDiffusion
    from qhybrid.diffusion.sampling import sample_latents
    from qhybrid.evaluation.evaluate import evaluate_sets, real_reference
    from qhybrid.plots import save_side_by_side
    from qhybrid.quantum.primitives.aer import noise_source_for_backend
    from qhybrid.workflows.sampling import decode_images

    model_dir, out = Path(model_dir), Path(out)
    model, scheduler, vae, header = LatentDiffusion.from_checkpoint(model_dir)
    block = model.quantum_block
    if block is None:
        raise InputError(f"{model_dir} is a {model.cfg.kind} model without a quantum block; noisy-eval needs a hybrid model")
    targets: list[tuple[str, str, dict]] = [("ideal", "ideal", {})]
    for b in backends:
        noise_source_for_backend(b)  # fails early with the list of valid names
        targets.append((b, f"fake:{b}", {}))
    for path in snapshots or []:
        from qhybrid.quantum.noise_snapshots import load_snapshot

        source = load_snapshot(path)
        targets.append((f"{source.name} (snapshot)", f"fake:{source.name}", {"noise_model": str(path)}))

    # the block inputs seen during ideal sampling (first, middle and last step)
    captured: list[torch.Tensor] = []
    hook = block.register_forward_hook(lambda mod, inp, outp: captured.append(inp[0].detach().clone()))
    calls: list[int] = []  # rows (bindings) of every block evaluation while sampling
    counter = block.register_forward_hook(lambda mod, inp, outp: calls.append(len(inp[0])))
    results, images, latents = {}, {}, {}
    for name, target, extra in targets:
        opts = {} if target == "ideal" else {"shots": shots, "mitigation": mitigation, "seed": seed,
                                             "method": method, "optimization_level": optimization_level, **extra}
        log(f"sampling {n} images on {target}{' (' + extra['noise_model'] + ')' if extra else ''}")
        model.to_target(target, **opts)
        calls.clear()
        t0 = time.perf_counter()
        z = sample_latents(model, scheduler, n, steps, seed=seed, progress=progress)
        seconds = time.perf_counter() - t0
        executions, bindings, rows = len(calls), max(calls, default=0), sum(calls)  # before the probe below
        if target == "ideal":
            hook.remove()
            probe = torch.cat([captured[0], captured[len(captured) // 2], captured[-1]])
        imgs = decode_images(vae, z)
        with torch.no_grad():
            block_out = block(probe.to(block.weight.dtype)).double()
        latents[name], images[name] = z, imgs
        entry = {"target": target, "options": {k: v for k, v in opts.items()}, "seconds": seconds,
                 "seconds_per_step": seconds / steps, "executions": executions, "bindings_per_execution": bindings,
                 "shots_per_image": shots * rows // n if target != "ideal" else 0}
        if target != "ideal":
            estimator = block.qnn.estimator
            program = estimator.program(block.pub_circuit) if hasattr(estimator, "program") else None
            if program is not None:
                entry["transpiled"] = {"depth": program.isa.depth(), "two_qubit_gates": two_qubit_gate_count(program.isa),
                                       "layout": program.physical}
        results[name] = entry
        results[name]["_block"] = block_out
    counter.remove()
    model.to_target("ideal")
    knockout = _knockout_images(model, scheduler, vae, header, n, steps, seed, progress)
    ideal_block = results["ideal"].pop("_block")
    for name, entry in results.items():
        if name == "ideal":
            continue
        diff = (entry.pop("_block") - ideal_block).abs()
        entry["block_error_mean"] = float(diff.mean())
        entry["block_error_max"] = float(diff.max())
        entry["latent_rms_change"] = float((latents[name] - latents["ideal"]).pow(2).mean().sqrt())
        entry.update(noise_share(images[name], images["ideal"], knockout))

    # optional: the run's evaluators
    run_dir = model_dir.parent
    evaluators = None
    if (run_dir / "validator" / "config.json").exists() and (run_dir / "encoder" / "config.json").exists():
        from qhybrid.evaluation.features import FundusEncoder
        from qhybrid.evaluation.validator import GradabilityNet

        evaluators = (FundusEncoder.from_checkpoint(run_dir / "encoder"), GradabilityNet.from_checkpoint(run_dir / "validator"))
        source = header.get("extra", {}).get("train", {}).get("data", "synthetic")
        real = real_reference(source, vae.cfg.size, 200)
        k = min(5, n - 1)
        for name, imgs in images.items():
            m = evaluate_sets(real, imgs, encoder=evaluators[0], validator=evaluators[1], k=k, n_boot=50, seed=seed)
            results[name]["gradable"] = m["gradable"]
            results[name]["fd"] = m["fundus_features"]["fd"]
    summary = {"model": str(model_dir), "n": n, "steps": steps, "shots": shots, "mitigation": mitigation,
               "method": method, "seed": seed, "optimization_level": optimization_level, "targets": results,
               "knockout_image_change_grey": float(np.mean(np.abs(knockout.astype(float) - images["ideal"].astype(float)))),
               "evaluated": evaluators is not None}
    out.mkdir(parents=True, exist_ok=True)
    io.write_json(out / "noisy_eval.json", summary)
    save_side_by_side(out / "samples.png", images["ideal"], {k: v for k, v in images.items() if k != "ideal"},
                      first="ideal")
    io.write_text(out / "noisy_eval.md", _markdown(summary))
    return summary


def _knockout_images(model, scheduler, vae, header, n: int, steps: int, seed: int, progress: bool) -> np.ndarray:
    """The ideal samples (same seed) with the circuit's output replaced by its mean over the
    contribution metrics' reference set: the yardstick for the noise's effect."""
    from qhybrid.diffusion.sampling import sample_latents
    from qhybrid.evaluation.contribution import (
        held_out_reference,
        knocked_out,
        knockout_mean,
    )
    from qhybrid.workflows.sampling import decode_images

    source = header.get("extra", {}).get("train", {}).get("data", "synthetic")
    mean = knockout_mean(model, held_out_reference(vae, scheduler, source))
    with knocked_out(model.quantum_layer.core, mean):
        z = sample_latents(model, scheduler, n, steps, seed=seed, progress=progress)
    return decode_images(vae, z)


def _markdown(summary: dict) -> str:
    from qhybrid.evaluation.evaluate import fmt
    from qhybrid.evaluation.report import metric

    gradable, fd = metric("gradable"), metric("fd")

    rows = ["| target | s / sampling step | executions × bindings | shots / image | block error (mean, max) | "
            "latent RMS change | image change (grey levels) | share of knock-out | 2q gates, depth | gradable % | FD |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, e in summary["targets"].items():
        tr = e.get("transpiled", {})
        share = e.get("noise_share_of_knockout")
        rows.append(
            f"| {name} | {e['seconds_per_step']:.2f} | {e['executions']} × {e['bindings_per_execution']} | "
            f"{e['shots_per_image']:,} | "
            + (f"{e['block_error_mean']:.3f}, {e['block_error_max']:.3f}" if "block_error_mean" in e else "–")
            + f" | {e.get('latent_rms_change', 0):.3f} | {e.get('noise_image_change_grey', 0):.2f} | "
            + (f"{share * 100:.1f}%" if share is not None else "–") + " | "
            + (f"{tr['two_qubit_gates']}, {tr['depth']}" if tr else "–")
            + f" | {fmt(e.get('gradable'), gradable.scale, gradable.digits)} | {fmt(e.get('fd'), fd.scale, fd.digits)} |")
    return (
        f"# Noisy evaluation of {summary['model']}\n\n"
        f"{summary['n']} samples per target, {summary['steps']} DDIM steps, seed {summary['seed']}, "
        f"{summary['shots']} shots per circuit evaluation, method `{summary['method']}`, readout mitigation "
        f"{'on' if summary['mitigation'] else 'off'}, transpiler optimisation level {summary['optimization_level']}. "
        "Every target starts from the same noise, so differences come from the quantum block alone. "
        "Block error: |noisy - ideal| of the block's expectation values on the inputs met during ideal "
        "sampling. Image change: mean absolute difference from the ideal samples in grey levels (0-255); "
        "share of knock-out: that change divided by the change the circuit's knock-out (its output replaced "
        f"by its mean) makes to the same samples ({summary['knockout_image_change_grey']:.2f} grey levels). "
        "One execution per sampling step holds every chain × patch as parameter bindings.\n\n"
        + "\n".join(rows) + "\n\n![samples: ideal first, then each target](samples.png)\n"
    )
