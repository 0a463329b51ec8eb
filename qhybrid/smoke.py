"""A short, honest end-to-end run of the quantum block (the main job until the diffusion model lands).

A tiny hybrid regressor (Linear -> QuantumBlock -> Linear) learns a smooth 2-D function on the
``ideal`` target. The run checks the block against Qiskit's own ``StatevectorEstimator`` on the
trained weights and writes a loss curve, a circuit drawing and a summary.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from . import io
from .quantum import CircuitSpec, QuantumBlock


@dataclass
class SmokeConfig:
    num_qubits: int = 4
    reps: int = 2
    steps: int = 150
    batch: int = 64
    lr: float = 0.03
    seed: int = 0


class HybridRegressor(nn.Module):
    """Linear(2 -> n) -> QuantumBlock(n qubits) -> Linear(n -> 1)."""

    def __init__(self, spec: CircuitSpec, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.inp = nn.Linear(2, spec.num_qubits)
        self.block = QuantumBlock(spec, seed=seed)
        self.out = nn.Linear(spec.num_outputs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.block(self.inp(x)))


def target_function(x: torch.Tensor) -> torch.Tensor:
    return torch.sin(math.pi * x[:, :1]) * torch.cos(0.5 * math.pi * x[:, 1:])


def run_smoke(out: Path, config: SmokeConfig) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from qiskit.primitives import StatevectorEstimator

    out.mkdir(parents=True, exist_ok=True)
    spec = CircuitSpec(num_qubits=config.num_qubits, reps=config.reps)
    model = HybridRegressor(spec, config.seed)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    gen = torch.Generator().manual_seed(config.seed + 1)
    x_test = torch.rand(256, 2, generator=gen) * 2 - 1
    y_test = target_function(x_test)
    losses = []
    start = time.perf_counter()
    with tqdm(range(config.steps), desc="train hybrid regressor", unit="step") as bar:
        for _ in bar:
            x = torch.rand(config.batch, 2, generator=gen) * 2 - 1
            loss = torch.mean((model(x) - target_function(x)) ** 2)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if len(losses) % 10 == 0:
                bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    train_seconds = time.perf_counter() - start
    with torch.no_grad():
        test_mse = torch.mean((model(x_test) - y_test) ** 2).item()
        baseline_mse = torch.mean((y_test - y_test.mean()) ** 2).item()

    # the same weights through Qiskit's reference estimator
    block = model.block
    with torch.no_grad():
        angles = model.inp(x_test[:8]).double().numpy()
    weights = block.weight.detach().double().numpy()
    values = np.concatenate([angles, np.tile(weights, (len(angles), 1))], axis=1)
    pubs = [(block.circuit, obs, values) for obs in block.observables]
    reference = np.stack([r.data.evs for r in StatevectorEstimator().run(pubs).result()], axis=1)
    ours = block.qnn.forward(angles, weights)
    max_diff = float(np.max(np.abs(reference - ours)))

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(losses, lw=1)
    ax.axhline(baseline_mse, color="grey", ls="--", lw=1, label="predict-the-mean baseline")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training MSE")
    ax.set_title(f"Hybrid regressor, {spec.num_qubits}-qubit {spec.ansatz} (ideal target)")
    ax.legend()
    io.save_figure(fig, out / "loss.png")
    plt.close(fig)
    circuit_fig = block.circuit.draw("mpl", fold=-1)
    io.save_figure(circuit_fig, out / "circuit.png")
    plt.close(circuit_fig)
    io.write_text(out / "circuit.txt", str(block.circuit.draw("text", fold=-1)) + "\n")

    summary = {
        "config": asdict(config),
        "spec": spec.to_dict(),
        "trainable_weights": {"quantum": len(block.weight_params),
                              "total": sum(p.numel() for p in model.parameters())},
        "first_loss": losses[0],
        "final_loss": float(np.mean(losses[-10:])),
        "test_mse": test_mse,
        "baseline_test_mse": baseline_mse,
        "train_seconds": train_seconds,
        "ms_per_step": 1000 * train_seconds / config.steps,
        "max_abs_diff_vs_StatevectorEstimator": max_diff,
    }
    io.write_json(out / "summary.json", summary)
    return summary
