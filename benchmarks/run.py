"""qhybrid benchmarks: `make bench` runs them and rewrites BENCHMARKS.md.

Every comparison is measured side by side in one run on the same machine, and reported as times
and ratios; nothing here is a test. Each section of BENCHMARKS.md sits between markers, so
``--sections block`` re-measures one section and keeps the others.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from qhybrid import io  # noqa: E402

SECTIONS = ["block", "fused", "vae", "diffusion", "noisy", "runtime"]


def timeit(fn, *, min_time=1.0, max_reps=30, warmup=1):
    """Median wall time of ``fn`` over repeats (at least 3, up to ``max_reps`` or ``min_time``)."""
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < min_time and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def fmt_time(seconds: float | None) -> str:
    """Milliseconds below 10 s, seconds above; a dash for a missing measurement."""
    if seconds is None:
        return "–"
    return f"{seconds * 1e3:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"


def fmt_ratio(a: float | None, b: float | None, digits: int = 1) -> str:
    return "–" if a is None or b is None else f"{a / b:.{digits}f}×"


def interleaved_medians(run_one, names, rounds: int) -> dict:
    """Median seconds of ``run_one(name)`` per name: one warm-up each, then ``rounds`` interleaved
    rounds, so drifts in machine load hit every contender alike."""
    for name in names:
        run_one(name)
    times = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            times[name].append(run_one(name))
    return {name: statistics.median(v) for name, v in times.items()}


def machine_info() -> str:
    import qiskit
    import qiskit_aer
    import qiskit_machine_learning

    cpu, bf16 = "unknown CPU", "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu == "unknown CPU":
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and bf16 == "unknown":
                bf16 = "yes" if "avx512_bf16" in line.split() or "amx_bf16" in line.split() else "no"
    except OSError:
        pass
    return (
        f"{cpu} ({torch.backends.cpu.get_cpu_capability()} kernels, native bf16: {bf16}), {os.cpu_count()} cores, "
        f"torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), qiskit {qiskit.__version__}, qiskit-aer "
        f"{qiskit_aer.__version__}, qiskit-machine-learning {qiskit_machine_learning.__version__}, "
        f"Python {platform.python_version()}"
    )


# ----------------------------------------------------------------------------------------------
# section: the quantum block
# ----------------------------------------------------------------------------------------------
def pennylane_circuit(qml, device: str, diff_method: str, n: int, reps: int):
    """The benchmark circuit as a PennyLane QNode (torch interface): RY(x) encoding broadcast over
    the batch, then ``real_amplitudes`` (RY layers, reverse-linear CNOT ladder), Z on each qubit."""

    @qml.qnode(qml.device(device, wires=n), interface="torch", diff_method=diff_method)
    def circuit(inputs, w):
        for q in range(n):
            qml.RY(inputs[:, q], wires=q)
        wr = w.view(reps + 1, n)
        for r in range(reps + 1):
            for q in range(n):
                qml.RY(wr[r, q], wires=q)
            if r < reps:
                for c in reversed(range(n - 1)):
                    qml.CNOT(wires=[c, c + 1])
        return [qml.expval(qml.PauliZ(q)) for q in range(n)]

    return circuit


def bench_block(args) -> str:
    from qiskit.primitives import StatevectorEstimator
    from qiskit_machine_learning.connectors import TorchConnector
    from qiskit_machine_learning.neural_networks import EstimatorQNN
    from reference_torch import TorchReferenceCircuit

    from qhybrid.quantum import CircuitSpec, QuantumBlock

    try:
        import pennylane as qml
    except ImportError:  # the comparison is optional
        qml = None

    sizes = [int(s) for s in args.qubits.split(",")]
    batch, reps = args.batch, 3
    rows = []
    qml_budget = args.qml_budget
    qml_last = None  # (qubits, seconds) of the last qiskit-ml default measurement
    checks = []
    for n in sizes:
        print(f"[block] {n} qubits", flush=True)
        spec = CircuitSpec(num_qubits=n, ansatz="real_amplitudes", reps=reps,
                           entanglement="reverse_linear")
        torch.manual_seed(0)
        x = torch.rand(batch, n, dtype=torch.float64) * 2 - 1
        row = {"n": n}

        # qhybrid: the block (TorchConnector subclass, VJP backward), float64 like the others
        block = QuantumBlock(spec, seed=0).double()
        weights = block.weight.detach().clone()
        xg = x.clone().requires_grad_(True)

        def block_fb():
            block(xg).sum().backward()

        with torch.no_grad():
            row["qhybrid_f"] = timeit(lambda: block(x))
        row["qhybrid_fb"] = timeit(block_fb)
        out_q = block(x).detach().numpy()

        # qhybrid estimator + gradient through qiskit-machine-learning's own TorchConnector
        plain = TorchConnector(block.qnn, initial_weights=weights.numpy())
        x32 = x.clone().requires_grad_(True)
        row["plain_fb"] = timeit(lambda: plain(x32).sum().backward())

        # plain PyTorch reference
        ref = TorchReferenceCircuit(n, reps)
        with torch.no_grad():
            ref.weight.copy_(weights.view(reps + 1, n).reshape(-1))
        with torch.no_grad():
            row["torch_f"] = timeit(lambda: ref(x))
        row["torch_fb"] = timeit(lambda: ref(xg).sum().backward())
        checks.append(("plain PyTorch", n, float(np.max(np.abs(ref(x).detach().numpy() - out_q)))))

        # PennyLane default.qubit, backprop
        if qml is not None:
            circuit = pennylane_circuit(qml, "default.qubit", "backprop", n, reps)

            wp = weights.clone().requires_grad_(True)

            def pl_fwd():
                return torch.stack(circuit(xg, wp), dim=1)

            with torch.no_grad():
                row["pl_f"] = timeit(lambda: torch.stack(circuit(x, wp), 1))
            row["pl_fb"] = timeit(lambda: pl_fwd().sum().backward())
            checks.append(("PennyLane", n, float(np.max(np.abs(pl_fwd().detach().numpy() - out_q)))))

        # qiskit-machine-learning defaults: StatevectorEstimator + its default gradient
        predicted = None
        if qml_last is not None:
            pn, pt = qml_last
            # parameter shift runs one PUB per (shifted parameter, sample, output): the count grows
            # as n^2; the 1.5 allows for the larger statevectors
            predicted = pt * (n / pn) ** 2 * 1.5
        if args.skip_qml_default or (predicted is not None and predicted > qml_budget):
            row["qml_note"] = (
                "skipped (--skip-qml-default)" if args.skip_qml_default
                else f"skipped: predicted ~{predicted:.0f} s > remaining time box {qml_budget:.0f} s"
            )
        else:
            qnn = EstimatorQNN(
                circuit=block.circuit, estimator=StatevectorEstimator(),
                observables=block.observables, input_params=block.input_params,
                weight_params=block.weight_params, input_gradients=True,
            )
            default = TorchConnector(qnn, initial_weights=weights.numpy())
            xd = x.clone().requires_grad_(True)
            t0 = time.perf_counter()
            with torch.no_grad():
                default(x)
            row["qml_f"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            default(xd).sum().backward()
            row["qml_fb"] = time.perf_counter() - t0
            qml_budget -= row["qml_f"] + row["qml_fb"]
            qml_last = (n, row["qml_fb"])
        rows.append(row)
        print(f"    {row}", flush=True)

    ms, ratio = fmt_time, lambda a, b: fmt_ratio(a, b, digits=2)

    lines = [
        "## Quantum block: forward and forward+backward",
        "",
        f"Angle encoding RY(x) + `real_amplitudes` (reps {reps}, reverse-linear CX), Z on each "
        f"qubit, batch {batch}, float64, CPU. Median of repeated runs (qiskit-machine-learning's "
        "default: one run). Columns:",
        "",
        "- **qhybrid block**: `QuantumBlock` = `TorchConnector` subclass around "
        "`EstimatorQNN(ExactEstimator, ExactEstimatorGradient)`; backward asks the gradient for a "
        "vector-Jacobian product;",
        "- **qhybrid via TorchConnector**: the same estimator and gradient inside "
        "qiskit-machine-learning's unmodified `TorchConnector`, whose backward needs the full "
        "Jacobian (one adjoint pass per output);",
        "- **qiskit-ml default**: `EstimatorQNN` with `StatevectorEstimator` and its default "
        "`ParamShiftEstimatorGradient`;",
        "- **plain PyTorch**: a batched statevector written directly in PyTorch "
        "(`benchmarks/reference_torch.py`), autograd backward;",
        "- **PennyLane**: `default.qubit`, `diff_method=\"backprop\"`, torch interface"
        + ("." if qml is not None else " (not installed in this run)."),
        "",
        "| qubits | qhybrid block fwd | qhybrid block fwd+bwd | qhybrid via TorchConnector fwd+bwd "
        "| plain PyTorch fwd | plain PyTorch fwd+bwd | PennyLane fwd | PennyLane fwd+bwd "
        "| qiskit-ml default fwd | qiskit-ml default fwd+bwd |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']} | {ms(r['qhybrid_f'])} | {ms(r['qhybrid_fb'])} | {ms(r['plain_fb'])} "
            f"| {ms(r['torch_f'])} | {ms(r['torch_fb'])} | {ms(r.get('pl_f'))} "
            f"| {ms(r.get('pl_fb'))} | {ms(r.get('qml_f'))} | "
            f"{ms(r.get('qml_fb')) if 'qml_fb' in r else r.get('qml_note', '–')} |"
        )
    lines += [
        "",
        "Ratios, forward+backward (how many times slower than the qhybrid block):",
        "",
        "| qubits | qiskit-ml default / qhybrid | plain PyTorch / qhybrid | PennyLane / qhybrid "
        "| qhybrid via TorchConnector / qhybrid |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']} | {ratio(r.get('qml_fb'), r['qhybrid_fb'])} | "
            f"{ratio(r['torch_fb'], r['qhybrid_fb'])} | {ratio(r.get('pl_fb'), r['qhybrid_fb'])} | "
            f"{ratio(r['plain_fb'], r['qhybrid_fb'])} |"
        )
    lines += [
        "",
        "Same numbers from every implementation (max |difference| of outputs against the qhybrid "
        "block): " + ", ".join(f"{name} {n} qubits {d:.1e}" for name, n, d in checks) + ".",
        "",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# section: large batches (per-position layers) and frozen weights (sampling)
# ----------------------------------------------------------------------------------------------
def measure(fn, *, budget: float = 4.0) -> float:
    """Median seconds of ``fn``; one run when a single run already takes longer than ``budget``."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    if first > budget:
        return first
    return timeit(fn, min_time=1.5, max_reps=10, warmup=0)


def bench_fused(args) -> str:
    from reference_torch import TorchFusedReference, TorchReferenceCircuit

    from qhybrid.quantum import CircuitSpec, QuantumBlock
    from qhybrid.quantum.primitives.exact import shared_columns
    from qhybrid.quantum.primitives.fused import choose_path

    try:
        import pennylane as qml
    except ImportError:  # the comparison is optional
        qml = None

    reps = 3
    sizes = [(n, b) for n in (8, 10) for b in (64, 1024, 4096)]
    rows, checks = [], []
    for n, rows_count in sizes:
        print(f"[fused] {n} qubits, batch {rows_count}", flush=True)
        spec = CircuitSpec(num_qubits=n, ansatz="real_amplitudes", reps=reps, entanglement="reverse_linear")
        gen = torch.Generator().manual_seed(0)
        x = torch.rand(rows_count, n, dtype=torch.float64, generator=gen) * 2 - 1
        xg = x.clone().requires_grad_(True)
        row = {"n": n, "batch": rows_count}
        blocks = {
            "auto": QuantumBlock(spec, seed=0).double(),
            "fused": QuantumBlock(spec, seed=0, fusion="always").double(),
            "fused32": QuantumBlock(spec, seed=0, fusion="always", simulation_precision="float32").double(),
            "gate": QuantumBlock(spec, seed=0, fusion="never").double(),
        }
        weights = blocks["auto"].weight.detach().clone()
        with torch.no_grad():
            reference = blocks["gate"](x).numpy()
        for name, block in blocks.items():
            def fb(block=block):
                block(xg).sum().backward()

            def fwd_fresh(block=block):  # a training step's forward: new weights every call
                with torch.no_grad():
                    block.weight.add_(0.0)  # same values, so outputs stay comparable
                    for program in _fused_programs(block):
                        program._matrices.clear()
                    block(x)

            row[f"{name}_f"] = measure(fwd_fresh)
            row[f"{name}_fb"] = measure(fb)
            with torch.no_grad():
                checks.append((name, n, rows_count, float(np.max(np.abs(block(x).numpy() - reference)))))
        with torch.no_grad():  # sampling: the same weights every call, matrices cached
            row["cached_f"] = measure(lambda: blocks["fused"](x))
        # what auto does in a training step: the forward decides with no matrices built, the
        # backward with the forward's matrices in the cache
        auto = blocks["auto"]
        compiled = auto.qnn.estimator._cache.circuit(auto.pub_circuit)
        values = torch.from_numpy(np.concatenate([x.numpy(), np.tile(weights.numpy(), (rows_count, 1))], 1))
        for program in _fused_programs(auto):
            program._matrices.clear()
        forward, program = choose_path(compiled, values, shared_columns(values.numpy()))
        if program is not None:
            program.statevector(values)
        backward, _ = choose_path(compiled, values, shared_columns(values.numpy()), gradient=True)
        row["choice"] = f"fwd {forward.path}, bwd {backward.path}"

        for key, cls, label in (("torch", TorchReferenceCircuit, "plain PyTorch"),
                                ("autograd_u", TorchFusedReference, "fused, autograd through U")):
            ref = cls(n, reps)
            with torch.no_grad():
                ref.weight.copy_(weights.view(reps + 1, n).reshape(-1))
                row[f"{key}_f"] = measure(lambda: ref(x))
            row[f"{key}_fb"] = measure(lambda: ref(xg).sum().backward())
            with torch.no_grad():
                checks.append((label, n, rows_count, float(np.max(np.abs(ref(x).numpy() - reference)))))

        if qml is not None:
            for device, method in (("default.qubit", "backprop"), ("lightning.qubit", "adjoint")):
                circuit = pennylane_circuit(qml, device, method, n, reps)
                wp = weights.clone().requires_grad_(True)
                key = "pl" if device == "default.qubit" else "lightning"
                with torch.no_grad():
                    row[f"{key}_f"] = measure(lambda: torch.stack(circuit(x, wp), 1))
                    out = torch.stack(circuit(x, wp), 1).numpy()
                row[f"{key}_fb"] = measure(lambda: torch.stack(circuit(xg, wp), 1).sum().backward())
                checks.append((f"PennyLane {device}", n, rows_count, float(np.max(np.abs(out - reference)))))
        rows.append(row)
        print(f"    {row}", flush=True)

    ms, ratio = fmt_time, fmt_ratio

    lines = [
        "## Large batches and frozen weights: the fused exact path",
        "",
        "A per-position quantum layer evaluates its circuit on batch × positions rows (1,024 per "
        "training step for the hybrid denoiser), and sampling evaluates the same weights at every "
        f"step. Angle encoding RY(x) + `real_amplitudes` (reps {reps}, reverse-linear CX), Z on each "
        "qubit, float64 unless marked, CPU, medians. All qhybrid columns are the `QuantumBlock` "
        "(`EstimatorQNN` in a `TorchConnector` subclass) on the ideal target with "
        "`fusion=`: **auto** (the default: the target picks a path per call), **fused** "
        "(`\"always\"`: product-state encoding, the weight layers as one cached 2ⁿ×2ⁿ matrix, "
        "weight gradients summed over rows), **fused f32** (the same with "
        "`simulation_precision=\"float32\"`), **fused, autograd through U** (the other backward the design "
        "allows: the same product state and weight matrix written as differentiable PyTorch ops, "
        "`benchmarks/reference_torch.py`, so autograd differentiates through the matrix's construction; "
        "qhybrid's fused path instead sweeps the adjoint through the matrix's gates on 2ⁿ pairs), **gate by gate** (`\"never\"`: qhybrid's path before "
        "the fused one). Forward times of a training step rebuild the matrix (new weights every "
        "step); **cached fwd** reuses it, as sampling does. **plain PyTorch**: "
        "`benchmarks/reference_torch.py`, autograd; **PennyLane**: `default.qubit` with "
        "`diff_method=\"backprop\"` and `lightning.qubit` with `diff_method=\"adjoint\"`, torch "
        "interface, inputs broadcast over the batch"
        + ("." if qml is not None else " (not installed in this run)."),
        "",
        "Forward + backward (a training step's quantum part):",
        "",
        "| qubits | batch | auto | fused | fused f32 | fused, autograd through U | gate by gate | plain PyTorch "
        "| PennyLane default.qubit | PennyLane lightning | gate by gate / fused | gate by gate / fused f32 "
        "| plain PyTorch / fused | auto picks |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']} | {r['batch']} | {ms(r['auto_fb'])} | {ms(r['fused_fb'])} | {ms(r['fused32_fb'])} "
            f"| {ms(r['autograd_u_fb'])} | {ms(r['gate_fb'])} | {ms(r['torch_fb'])} | {ms(r.get('pl_fb'))} "
            f"| {ms(r.get('lightning_fb'))} "
            f"| {ratio(r['gate_fb'], r['fused_fb'])} | {ratio(r['gate_fb'], r['fused32_fb'])} "
            f"| {ratio(r['torch_fb'], r['fused_fb'])} | {r['choice']} |")
    lines += [
        "",
        "Forward only:",
        "",
        "| qubits | batch | auto | fused | fused f32 | fused, autograd through U | cached fwd (sampling) "
        "| gate by gate | plain PyTorch | PennyLane default.qubit | PennyLane lightning | gate by gate / cached fwd |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']} | {r['batch']} | {ms(r['auto_f'])} | {ms(r['fused_f'])} | {ms(r['fused32_f'])} "
            f"| {ms(r['autograd_u_f'])} | {ms(r['cached_f'])} | {ms(r['gate_f'])} | {ms(r['torch_f'])} | {ms(r.get('pl_f'))} "
            f"| {ms(r.get('lightning_f'))} | {ratio(r['gate_f'], r['cached_f'])} |")
    worst = {}
    for name, n, b, d in checks:
        worst[name] = max(worst.get(name, 0.0), d)
    lines += [
        "",
        "Same numbers from every implementation (largest |difference| of outputs against gate by gate "
        "over all sizes): " + ", ".join(f"{name} {d:.1e}" for name, d in worst.items()) + ".",
        "",
    ]
    return "\n".join(lines)


def _fused_programs(block):
    """The fused programs cached for a block's circuit (to time a training step's matrix build)."""
    cache = getattr(block.qnn.estimator, "_cache", None)
    if cache is None:
        return []
    return [p for _, _, compiled in cache.circuits.values()
            for p in compiled.__dict__.get("_fused_programs", {}).values()]


# ----------------------------------------------------------------------------------------------
# section: VAE training throughput
# ----------------------------------------------------------------------------------------------
def bench_vae(args) -> str:
    from qhybrid.data.loaders import load_dataset
    from qhybrid.models.vae import VAE, VAEConfig
    from qhybrid.quantum import CircuitSpec

    size, batch, rounds, steps = 64, 16, 4, 5
    x = load_dataset("synthetic", size, "train", n=batch * steps).tensor()
    spec = CircuitSpec(num_qubits=6, reps=2)
    torch.manual_seed(0)
    models = {"classical": VAE(VAEConfig(size=size)), "quantum-enhanced": VAE(VAEConfig(size=size, quantum=spec.to_dict()))}
    opts = {k: torch.optim.AdamW(m.parameters(), 1e-3) for k, m in models.items()}

    def epoch(name):
        model, opt = models[name], opts[name]
        t0 = time.perf_counter()
        for i in range(steps):
            loss, _ = model.loss(x[i * batch:(i + 1) * batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
        return time.perf_counter() - t0

    rate = {k: batch * steps / t for k, t in interleaved_medians(epoch, list(models), rounds).items()}
    q = models["quantum-enhanced"]
    lines = [
        "## VAE training throughput",
        "",
        f"{size}×{size} synthetic fundus images, batch {batch}, AdamW, forward+backward+step with the default "
        f"loss (L1 + KL + the Laplacian-pyramid detail term, weight {models['classical'].cfg.detail_weight:g}); median of "
        f"{rounds} interleaved rounds of {steps} steps. Quantum-enhanced: a {spec.num_qubits}-qubit "
        f"`real_amplitudes` circuit (reps {spec.reps}, {len(q.quantum_block.weight_params)} weights) at every "
        f"{q.cfg.quantum_patch}×{q.cfg.quantum_patch} patch of the 16×16 middle of the encoder and of the decoder "
        "(QResBlocks, 2 × 16 evaluations per image), ideal target.",
        "",
        "| VAE | parameters | images/s | relative |",
        "|---|---:|---:|---:|",
    ]
    for name, model in models.items():
        lines.append(f"| {name} | {model.parameter_counts()['total']:,} | {rate[name]:.0f} | "
                     f"{rate[name] / rate['classical']:.2f}× |")
    lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# section: latent diffusion training and sampling
# ----------------------------------------------------------------------------------------------
def bench_diffusion(args) -> str:
    from qhybrid.devices import autocast
    from qhybrid.diffusion.sampling import sample_latents
    from qhybrid.diffusion.scheduler import NoiseScheduler
    from qhybrid.models.denoiser import DenoiserConfig, LatentDenoiser
    from qhybrid.quantum.noise_surrogate import fit_surrogate
    from qhybrid.training.diffusion import block_inputs
    from qhybrid.training.loop import CIRCUIT_LR, circuit_param_groups

    batch, rounds, steps, n_samples, sample_steps = 64, 4, 5, 64, 50
    aware_kind = "hybrid, noise-aware (fake_torino)"
    plain_layout = "classical, contiguous activations"
    side = {"classical, 4×32×32": 32, "classical-large, 4×32×32": 32, "hybrid, 4×32×32": 32,
            "classical, 4×32×32, bf16": 32, "classical-large, 4×32×32, bf16": 32, "hybrid, 4×32×32, bf16": 32,
            "hybrid, 4×32×32, attention": 32}
    kinds = ("classical", "classical-large", "hybrid", aware_kind, "hybrid, 8 qubits", plain_layout, *side)
    torch.manual_seed(0)
    models = {k: LatentDenoiser(DenoiserConfig.for_kind(k.split(",")[0], 4, side.get(k, 16)).replace(
                  attention_heads=4 if k.endswith("attention") else 0))
              for k in kinds if k != "hybrid, 8 qubits"}
    models["hybrid, 8 qubits"] = LatentDenoiser(DenoiserConfig.for_kind("hybrid", 4, 16, num_qubits=8, reps=3))
    models[plain_layout].memory_format = torch.contiguous_format
    opts = {k: torch.optim.AdamW(circuit_param_groups(m, CIRCUIT_LR) or m.parameters(), 1e-3) for k, m in models.items()}
    scheduler = NoiseScheduler()
    gen = torch.Generator().manual_seed(0)
    z0 = torch.randn(batch, 4, 16, 16, generator=gen)
    z0_32 = torch.randn(batch, 4, 32, 32, generator=gen)
    # noise-aware: the surrogate fitted as `train diffusion --noise-aware` fits it (a one-time cost)
    aware = models[aware_kind]
    t0 = time.perf_counter()
    surrogate = fit_surrogate(aware.quantum_block, "fake_torino", block_inputs(aware, scheduler, z0, seed=0), shots=4096)
    fit_seconds = time.perf_counter() - t0

    def train_round(kind):
        m, opt, z = models[kind], opts[kind], z0_32 if kind in side else z0
        t0 = time.perf_counter()
        for _ in range(steps):
            t = torch.randint(0, 1000, (batch,), generator=gen)
            eps = torch.randn(z.shape, generator=gen)
            z_t = scheduler.add_noise(z, eps, t)
            if kind.endswith("bf16"):  # train diffusion --precision bf16: the forward pass under autocast
                with autocast(torch.device("cpu"), "bf16"):
                    loss = torch.mean((m(z_t, t) - eps) ** 2)
            elif kind == aware_kind:  # the recipe's loss: both predictions, the circuit evaluated once
                exact, noisy = m.forward_pair(z_t, t, surrogate.train())
                loss = 0.5 * (torch.mean((exact - eps) ** 2) + torch.mean((noisy - eps) ** 2)) \
                    + 4.0 * torch.mean((noisy - exact) ** 2)
            else:
                loss = torch.mean((m(z_t, t) - eps) ** 2)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return time.perf_counter() - t0

    rate = {k: steps / t for k, t in interleaved_medians(train_round, kinds, rounds).items()}
    sample_time = {}
    for k in ("classical", "classical-large", "hybrid", plain_layout, *(k for k in side if not k.endswith("bf16"))):
        models[k].eval()
        sample_time[k] = timeit(lambda: sample_latents(models[k], scheduler, n_samples, sample_steps, seed=0,
                                                       progress=False), min_time=0.5, max_reps=3)
    lines = [
        "## Latent diffusion: training and sampling speed",
        "",
        "Denoisers on 4×16×16 latents (`fundus-vae-64`) and, in the 4×32×32 rows, on the demo's "
        "`fundus-vae-64-l32` latents (one outer level, a convolutional stem, in front of the same U-Net); "
        "activations in training in channels-last memory format (what qhybrid uses), except the contiguous "
        "row, the classical model in the plain layout; sampling runs in the plain layout (eval mode). The bf16 rows "
        "train in mixed precision (`--precision bf16`: bfloat16 autocast on the CPU, whose oneDNN kernels use "
        "AVX-512 BF16 where the CPU has it; the circuit stays float32); the attention row adds a 4-head "
        "self-attention block after the middle block (`DenoiserConfig.attention_heads`). "
        f"Training: batch {batch}, AdamW step, median of {rounds} "
        f"interleaved rounds of {steps} steps; sampling: {n_samples} latents, {sample_steps} DDIM steps, ideal "
        "target, time per image excluding VAE decoding. Hybrid: the default QResBlock, a 6-qubit `real_amplitudes` "
        "circuit (reps 3) at every 2×2 patch of the 8×8 bottleneck, so a training step evaluates "
        f"{batch} × 16 = {batch * 16} circuits; the 8-qubit row (reps 3) shows why the default has 6. The "
        "noise-aware row is `train diffusion --noise-aware fake:fake_torino`'s step: every batch predicted with "
        "the exact block outputs and with the same outputs through fake_torino's noise surrogate (4,096 shots; the "
        "layers before the circuit and the circuit run once, the layers after it on both), plus 4× the "
        f"consistency term; fitting that surrogate on Aer took {fit_seconds:.0f} s once, before training "
        f"(512 + 256 rows of executions), and a training step with it takes {rate['hybrid'] / rate[aware_kind]:.2f}× the "
        "plain hybrid's time (measured side by side; the budget is 1.5×).",
        "",
        "| denoiser | parameters | training steps/s | relative to classical | sampling ms / image |",
        "|---|---:|---:|---:|---:|",
    ]
    for k in kinds:
        sampling = f"{sample_time[k] / n_samples * 1e3:.1f}" if k in sample_time else "–"
        lines.append(f"| {k} | {models[k].parameter_counts()['total']:,} | {rate[k]:.1f} | "
                     f"{rate[k] / rate['classical']:.2f}× | {sampling} |")
    lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# section: noisy execution on fake backends
# ----------------------------------------------------------------------------------------------
def bench_noisy(args) -> str:
    import warnings

    from qiskit import ClassicalRegister
    from qiskit_aer import AerSimulator

    from qhybrid.quantum import CircuitSpec, QuantumBlock
    from qhybrid.quantum.primitives.aer import (
        noise_model_from_dict,
        noise_source_for_backend,
    )

    warnings.simplefilter("ignore")
    batch, patches, shots = 16, 16, 1024
    spec = CircuitSpec(num_qubits=6, reps=3)  # the hybrid denoiser's default circuit
    n = spec.num_qubits
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, n, generator=gen) * 2 - 1
    x_step = torch.rand(batch * patches, n, generator=gen) * 2 - 1  # every chain x patch of one step
    rows, scaling, shots_cost = [], {}, {}
    for backend in ("fake_torino", "fake_brisbane", "fake_sherbrooke"):
        print(f"[noisy] {backend}", flush=True)
        source = noise_source_for_backend(backend)
        row = {"backend": backend, "qubits": source.num_qubits}
        for method in ("counts", "estimator"):
            block = QuantumBlock(spec, target=f"fake:{backend}", shots=shots, method=method, seed=0)
            row[method] = timeit(lambda: block(x), min_time=2.0, max_reps=5)
        block = QuantumBlock(spec, target=f"fake:{backend}", shots=shots, seed=0)
        row["step"] = timeit(lambda: block(x_step), min_time=2.0, max_reps=3)
        step_est = QuantumBlock(spec, target=f"fake:{backend}", shots=shots, method="estimator", seed=0)
        row["step_estimator"] = timeit(lambda: step_est(x_step), min_time=2.0, max_reps=3)
        # the shot-noise floor of one step: the spread shots alone give each output,
        # sqrt((1 - <Z>^2) / shots) from the exact values, averaged over outputs
        with torch.no_grad():
            exact = QuantumBlock(spec, seed=0)(x_step).double().numpy()
            noisy = block(x_step).double().numpy()
        row["floor"] = float(np.sqrt(np.mean(1 - exact**2) / shots))
        row["error"] = float(np.sqrt(np.mean((noisy - exact) ** 2)))
        if backend == "fake_torino":  # seconds per step against the number of bindings
            scaling = {}
            for count in (16, 64, 256, 1024):
                xs = torch.rand(count, n, generator=gen) * 2 - 1
                scaling[count] = timeit(lambda: block(xs), min_time=1.0, max_reps=3)
            # ... and against the shots (one step's bindings): what a noisy-eval shots sweep costs
            for count in (1024, 4096, 32768):
                swept = QuantumBlock(spec, target=f"fake:{backend}", shots=count, seed=0)
                shots_cost[count] = timeit(lambda: swept(x_step), min_time=1.0, max_reps=3)
        # the straightforward way: the full-width ISA circuit with the full noise model
        program = block.qnn.estimator.program(block.pub_circuit)
        full = program.isa.copy()
        creg = ClassicalRegister(n)
        full.add_register(creg)
        for v, p in enumerate(program.physical):
            full.measure(p, creg[v])
        values = np.concatenate([x.double().numpy(), np.tile(block.weight.detach().double().numpy(), (batch, 1))], 1)
        sim = AerSimulator(noise_model=noise_model_from_dict(source.noise), method="density_matrix")
        binds = program.binds(values)
        row["full_width"] = timeit(lambda: sim.run(full, parameter_binds=binds, shots=shots).result(),
                                   min_time=2.0, max_reps=3)
        rows.append(row)
        print(f"    {row}", flush=True)
    lines = [
        "## Noisy execution: one sampling step on fake backends",
        "",
        f"The hybrid denoiser's circuit ({n} qubits, `real_amplitudes` reps {spec.reps}) on fake backends, {shots} shots "
        f"per binding, Aer density-matrix method, transpiler optimisation level 2. A sampling step of the per-patch "
        f"QResBlock evaluates every chain × patch in one execution: **one step** = {batch} chains × {patches} patches = "
        f"{batch * patches} parameter bindings. The other columns use {batch} bindings: **counts**: all "
        "qubits measured once, every ⟨Z⟩ from the same counts, circuit compacted to the qubits it uses with the noise "
        "model restricted to them (qhybrid's default); **EstimatorV2**: Aer's `EstimatorV2` on the same compact circuit "
        "and mapped observables; **full width**: the counts circuit left at the backend's width with the full "
        "noise model (what transpile-then-run does without compaction).",
        "",
        "Aer runs the bindings of an execution in parallel on all cores (`max_parallel_experiments=0`). "
        "**shot-noise floor**: the spread shots alone give one output of a step, √((1 − ⟨Z⟩²)/shots) from "
        "the exact values, averaged over the step's outputs: no noise study at this shot budget can resolve "
        "differences below it (`shots=` on the target sets the budget per binding). **RMS error**: the "
        "counts path's outputs against the exact ones (device noise + shots).",
        "",
        f"| backend | qubits | one step, counts ({batch * patches}) | one step, EstimatorV2 ({batch * patches}) "
        "| shot-noise floor | RMS error | counts (16) | EstimatorV2 (16) | full width (16) | full width / counts |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['backend']} | {r['qubits']} | {r['step']:.2f} s | {r['step_estimator']:.2f} s "
                     f"| {r['floor']:.4f} | {r['error']:.4f} | {r['counts']:.2f} s | {r['estimator']:.2f} s "
                     f"| {r['full_width']:.2f} s | {r['full_width'] / r['counts']:.1f}× |")
    lines += [
        "",
        "Seconds per execution against the number of bindings (fake_torino, counts path):",
        "",
        "| bindings | " + " | ".join(str(c) for c in scaling) + " |",
        "|---|" + "---:|" * len(scaling),
        "| seconds | " + " | ".join(f"{t:.2f}" for t in scaling.values()) + " |",
        "| ms per binding | " + " | ".join(f"{t / c * 1e3:.1f}" for c, t in scaling.items()) + " |",
        "",
        f"Seconds per execution against the shots per binding (fake_torino, counts path, one step: "
        f"{batch * patches} bindings) — Aer draws every shot, so a `noisy-eval --shots` sweep's cost grows with "
        "the largest count:",
        "",
        "| shots | " + " | ".join(f"{c:,}" for c in shots_cost) + " |",
        "|---|" + "---:|" * len(shots_cost),
        "| seconds | " + " | ".join(f"{t:.2f}" for t in shots_cost.values()) + " |",
        f"| × {min(shots_cost):,} shots | " + " | ".join(f"{t / shots_cost[min(shots_cost)]:.1f}×"
                                                   for t in shots_cost.values()) + " |",
        "",
    ]
    return "\n".join(lines)


def bench_runtime(args) -> str:
    """The ibm: target offline (executor path and legacy local testing mode) vs qhybrid's fake:
    target, one step; then what each mitigation costs on the fake target."""
    import warnings

    from qhybrid.quantum import CircuitSpec, QuantumBlock

    warnings.simplefilter("ignore")
    batch, shots = 16, 1024
    spec = CircuitSpec(num_qubits=8, reps=3)
    x = torch.rand(batch, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    rows = []
    for backend in ("fake_guadalupe", "fake_torino"):
        print(f"[runtime] {backend}", flush=True)
        fake = QuantumBlock(spec, target=f"fake:{backend}", shots=shots, seed=0)
        weights = fake.weight.detach()
        blocks = {"fake": fake,
                  "executor": QuantumBlock(spec, target=f"ibm:{backend}", shots=shots, initial_weights=weights,
                                           mitigation="none"),
                  "legacy": QuantumBlock(spec, target=f"ibm:{backend}", shots=shots, initial_weights=weights,
                                         primitive="estimator")}

        def run_one(name):
            t0 = time.perf_counter()
            blocks[name](x)
            return time.perf_counter() - t0

        timings = interleaved_medians(run_one, list(blocks), rounds=3)
        with torch.no_grad():
            out = {name: block(x) for name, block in blocks.items()}
        rows.append({"backend": backend, "qubits": blocks["legacy"].qnn.estimator.backend.num_qubits, **timings,
                     "diff_executor": float((out["fake"] - out["executor"]).abs().mean()),
                     "diff_legacy": float((out["fake"] - out["legacy"]).abs().mean())})
        print(f"    {rows[-1]}", flush=True)
    lines = [
        "## IBM Runtime offline vs the fake: target",
        "",
        f"One forward pass of the same 8-qubit block for {batch} chains ({shots} shots, no mitigation; one denoising "
        "step of `qhybrid jobs submit` with a `fake_*` backend, or of `sample --target fake:…`), medians of 3 "
        "interleaved rounds. **ibm: executor**: qiskit-ibm-runtime's client-side `executor_estimator.Estimator` (the "
        "default path to IBM Quantum) with an Aer simulator of the compacted device as its backend. **ibm: legacy**: "
        "the deprecated `EstimatorV2` in the runtime's local testing mode, which simulates the device's whole noise "
        "model for every job. **fake:**: qhybrid's compact Aer simulation (Aer's `NoiseModel.from_backend` with each "
        "qubit's asymmetric readout error put back). Mean |difference| from fake:: the shot noise of both — two "
        "independent 1,024-shot estimates of an output near 0 differ by sqrt(2/pi)·sqrt(2/1024) ≈ 0.035 on average "
        "(agreement within shot noise is tested in tests/test_noisy.py).",
        "",
        "| backend | qubits | fake: | ibm: executor | ibm: legacy | executor / fake: | legacy / fake: | "
        "mean abs diff, executor | mean abs diff, legacy |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['backend']} | {r['qubits']} | {r['fake']:.2f} s | {r['executor']:.2f} s | "
                     f"{r['legacy']:.2f} s | {r['executor'] / r['fake']:.1f}× | {r['legacy'] / r['fake']:.0f}× | "
                     f"{r['diff_executor']:.3f} | {r['diff_legacy']:.3f} |")
    lines += ["", _bench_mitigation_cost(spec, x, shots)]
    return "\n".join(lines)


def _bench_mitigation_cost(spec, x, shots: int) -> str:
    """Seconds, circuits and shots of one forward pass per mitigation on the fake target (fake_torino)."""
    from qhybrid.quantum import QuantumBlock
    from qhybrid.quantum.mitigation import KINDS, Mitigation

    print("[runtime] mitigation cost on fake_torino", flush=True)
    blocks = {kind: QuantumBlock(spec, target="fake:fake_torino", shots=shots, seed=0, mitigation=kind)
              for kind in KINDS}

    def run_one(kind):
        t0 = time.perf_counter()
        with torch.no_grad():
            blocks[kind](x)
        return time.perf_counter() - t0

    timings = interleaved_medians(run_one, list(KINDS), rounds=3)
    counts = {}
    for kind, block in blocks.items():  # 1 warm-up + 3 rounds = 4 passes so far
        est = block.qnn.estimator
        counts[kind] = (est.circuit_executions / 4, est.shots_run / 4)
    lines = [f"What each mitigation costs: the same forward pass ({len(x)} chains, {shots} shots) on `fake:fake_torino`, "
             "medians of 3 interleaved rounds; circuits and shots are what a device would run (twirling randomisations, "
             "ZNE noise factors and calibration circuits included; readout's two calibration circuits are run once "
             "per transpiled circuit, so they vanish over a sampling run).",
             "",
             "| mitigation | seconds | × none | circuits | shots | shots × none |",
             "|---|---:|---:|---:|---:|---:|"]
    for kind in KINDS:
        circuits, shots_run = counts[kind]
        lines.append(f"| {Mitigation(kind).label} | {timings[kind]:.2f} | {timings[kind] / timings['none']:.1f}× | "
                     f"{circuits:,.0f} | {shots_run:,.0f} | {shots_run / counts['none'][1]:.2f}× |")
    lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
def merge(existing: str, name: str, body: str) -> str:
    start, end = f"<!-- section:{name} -->", f"<!-- /section:{name} -->"
    block = f"{start}\n{body}\n{end}"
    if start in existing:
        return re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, existing, flags=re.S)
    return existing.rstrip() + "\n\n" + block + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="BENCHMARKS.md")
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--qubits", default="4,8,10,12")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--qml-budget", type=float, default=300.0,
                        help="time box in seconds for qiskit-machine-learning's default path")
    parser.add_argument("--skip-qml-default", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    text = out.read_text() if out.exists() else ""
    header = (
        "# Benchmarks\n\nWritten by `make bench` (`benchmarks/run.py`); every comparison below "
        "was measured side by side in one run, on one machine. The machine is shared and noisy: "
        "read the ratios, not the absolute times.\n"
    )
    if not text.startswith("# Benchmarks"):
        text = header + text
    for name in args.sections.split(","):
        body = {"block": bench_block, "fused": bench_fused, "vae": bench_vae, "diffusion": bench_diffusion, "noisy": bench_noisy,
                "runtime": bench_runtime}[name](args)
        stamp = f"_Measured {dt.date.today().isoformat()} on {machine_info()}._\n\n"
        text = merge(text, name, stamp + body)
        io.write_text(out, text)
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
