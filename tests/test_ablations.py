"""QResBlocks, the ablations that replace only the quantum part, marked comparisons, the sweep."""

import json

import numpy as np
import pytest
import torch

from qhybrid.errors import InputError
from qhybrid.evaluation.report import comparison_table, intervals_separate
from qhybrid.models.denoiser import ALL_DENOISERS, DenoiserConfig, LatentDenoiser
from qhybrid.models.quantum_layers import MatchedClassicalCore, QResBlock
from qhybrid.models.vae import VAE, VAEConfig
from qhybrid.quantum import CircuitSpec, QuantumBlock
from qhybrid.workflows.sweep import run_sweep


def denoiser(kind, placement="bottleneck", qubits=4, reps=2):
    return LatentDenoiser(DenoiserConfig.for_kind(kind, 4, 8, num_qubits=qubits, reps=reps, placement=placement))


@pytest.mark.parametrize("placement", ["bottleneck", "qresblock"])
def test_ablations_have_the_parameter_counts_they_claim(placement):
    hybrid, twin, frozen = (denoiser(k, placement) for k in ("hybrid", "hybrid-classical-core", "hybrid-frozen"))
    spec = CircuitSpec(num_qubits=4, reps=2)
    h, t, f = hybrid.parameter_counts(), twin.parameter_counts(), frozen.parameter_counts()
    assert h["total"] == t["total"] == f["total"]  # same size, only the core differs
    assert h["branch_core"] == t["branch_core"] == spec.num_weights == 12
    assert t["quantum_circuit_weights"] == 0 and isinstance(twin.quantum_branch.core, MatchedClassicalCore)
    assert f["trainable"] == f["total"] - spec.num_weights and f["quantum_circuit_weights"] == 12
    # the classical twin has the circuit's widths and output range
    core = twin.quantum_branch.core
    out = core(torch.randn(64, 4) * 10)
    assert out.shape == (64, 4) and out.abs().max() <= 1


def test_matched_core_counts_exactly_and_refuses_impossible_counts():
    for n_in, n_out, params in [(8, 8, 32), (4, 4, 4), (4, 2, 10), (3, 5, 20)]:
        core = MatchedClassicalCore(n_in, n_out, params)
        assert sum(p.numel() for p in core.parameters()) == params
    with pytest.raises(InputError, match="between 4 and 20 parameters, the circuit has 21"):
        MatchedClassicalCore(4, 4, 21)


def test_frozen_quantum_weights_do_not_train_but_the_rest_does():
    model = denoiser("hybrid-frozen")
    before = model.quantum_block.weight.detach().clone()
    gate_before = model.quantum_branch.gate.detach().clone()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        loss = model(torch.randn(4, 4, 8, 8), torch.tensor([10, 200, 500, 900])).pow(2).mean() + \
            model.quantum_branch.gate ** 2
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.equal(model.quantum_block.weight, before)
    assert not torch.equal(model.quantum_branch.gate.detach(), gate_before)


@pytest.mark.parametrize("cond_dim", [0, 6])
def test_qresblock_adds_a_trainable_quantum_branch_to_the_residual(cond_dim):
    spec = CircuitSpec(num_qubits=3, reps=1)
    block = QResBlock(8, 8, cond_dim, spec).double()
    x = torch.randn(2, 8, 5, 5, dtype=torch.float64)
    cond = torch.randn(2, cond_dim, dtype=torch.float64) if cond_dim else None
    out = block(x, cond)
    out.sum().backward()
    assert isinstance(block.branch.core, QuantumBlock) and block.branch.core.weight.grad.abs().sum() > 0
    # the branch's contribution is exactly the gated, broadcast quantum output
    with torch.no_grad():
        block.branch.gate.zero_()
        plain = block(x, cond)
    delta = (out - plain).detach()
    assert delta.abs().max() > 0 and out.shape == x.shape
    assert torch.allclose(delta, delta[:, :, :1, :1].expand_as(delta))  # constant over positions


def test_quantum_vae_with_qresblocks_in_encoder_and_decoder_trains():
    cfg = VAEConfig(size=32, quantum=CircuitSpec(num_qubits=3, reps=1).to_dict(), quantum_placement="qresblock")
    vae = VAE(cfg)
    assert len(vae.quantum_blocks) == 2 and vae.encoder.quantum is None
    assert vae.parameter_counts()["quantum_circuit_weights"] == 2 * CircuitSpec(num_qubits=3, reps=1).num_weights
    loss, _ = vae.loss(torch.rand(2, 3, 32, 32) * 2 - 1)
    loss.backward()
    assert all(b.weight.grad is not None and b.weight.grad.abs().sum() > 0 for b in vae.quantum_blocks)
    with pytest.raises(ValueError, match="quantum_placement"):
        VAEConfig(size=32, quantum_placement="everywhere")


def test_every_denoiser_kind_and_placement_runs():
    for kind in ALL_DENOISERS:
        for placement in ("bottleneck", "qresblock"):
            out = denoiser(kind, placement)(torch.randn(2, 4, 8, 8), torch.tensor([1, 999]))
            assert out.shape == (2, 4, 8, 8) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="unknown placement"):
        DenoiserConfig(kind="hybrid", placement="middle")


def entry(value, lo, hi):
    return {"value": value, "ci": [lo, hi]}


def test_intervals_and_comparison_table_marks():
    assert intervals_separate(entry(0.5, 0.4, 0.6), entry(0.8, 0.7, 0.9))
    assert not intervals_separate(entry(0.5, 0.4, 0.75), entry(0.8, 0.7, 0.9))
    assert not intervals_separate(None, entry(0.8, 0.7, 0.9))
    params = {"denoiser_classical": 10, "denoiser_quantum": 0, "vae_classical": 5, "vae_quantum": 0}
    summary = {"models": {
        "hybrid": {"vae": "classical", "parameters": params,
                   "metrics": {"gradable": entry(0.3, 0.2, 0.4), "fundus_features": {"fd": entry(200, 190, 210)}}},
        "classical-large": {"vae": "classical", "parameters": params,
                            "metrics": {"gradable": entry(0.6, 0.5, 0.7), "fundus_features": {"fd": entry(205, 195, 215)}}},
    }}
    table = comparison_table(summary)
    large = next(line for line in table.splitlines() if line.startswith("| classical-large"))
    assert "60.0 [50.0, 70.0] †" in large and "205.0 [195.0, 215.0] |" in large  # FD overlaps: unmarked
    hybrid = next(line for line in table.splitlines() if line.startswith("| hybrid"))
    assert "†" not in hybrid and "do not overlap" in table


@pytest.mark.slow
def test_data_scarcity_sweep_end_to_end(tmp_path):
    from qhybrid.training.vae import VAETrainConfig, train_vae

    train_vae(tmp_path / "vae", VAEConfig(size=32), VAETrainConfig(n=32, epochs=1, batch=8), progress=False)
    summary = run_sweep(tmp_path, [16, 32], kinds=["classical", "hybrid", "hybrid-classical-core"], steps=4, batch=8,
                        n=8, sample_steps=3, real_n=16, n_boot=5, num_qubits=3, reps=1, progress=False,
                        log=lambda *_: None, quick_evaluators=True)
    assert summary["train_sizes"] == [16, 32]
    for size in ("16", "32"):
        assert set(summary["results"][size]) == {"classical", "hybrid", "hybrid-classical-core"}
        header = json.loads((tmp_path / "sweep" / f"n{size}" / "ldm-hybrid" / "config.json").read_text())
        assert header["extra"]["train"]["n"] == int(size)
    assert (tmp_path / "sweep.png").exists() and "## N = 32" in (tmp_path / "sweep.md").read_text()
    # resumable: a second call trains nothing new and gives the same numbers
    again = run_sweep(tmp_path, [16, 32], kinds=["classical", "hybrid", "hybrid-classical-core"], steps=4, batch=8,
                      n=8, sample_steps=3, real_n=16, n_boot=5, num_qubits=3, reps=1, progress=False,
                      log=lambda *_: None, quick_evaluators=True)
    g = lambda s: [s["results"][z][k]["gradable"]["value"] for z in ("16", "32") for k in sorted(s["results"][z])]  # noqa: E731
    assert np.allclose(g(summary), g(again))
    with pytest.raises(InputError, match="unknown denoiser"):
        run_sweep(tmp_path, [16], kinds=["quantum"], progress=False)
