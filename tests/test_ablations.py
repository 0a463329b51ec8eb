"""QResBlocks with the circuit on the main path, the ablations that replace only the circuit, legacy
layouts, marked comparisons, the sweep."""

import json

import numpy as np
import pytest
import torch

from qhybrid.errors import InputError
from qhybrid.evaluation.report import comparison_table, intervals_separate
from qhybrid.models.denoiser import ALL_DENOISERS, DenoiserConfig, LatentDenoiser
from qhybrid.models.quantum_layers import (
    CORES,
    MatchedClassicalCore,
    QResBlock,
    QuantumConv2d,
    make_core,
)
from qhybrid.models.vae import VAE, VAEConfig
from qhybrid.quantum import CircuitSpec, QuantumBlock
from qhybrid.workflows.sweep import run_sweep


def denoiser(kind, placement="qresblock", qubits=4, reps=2, seed=0):
    torch.manual_seed(seed)
    return LatentDenoiser(DenoiserConfig.for_kind(kind, 4, 8, num_qubits=qubits, reps=reps, placement=placement))


@pytest.mark.parametrize("placement", ["qresblock", "bottleneck", "gated-qresblock"])
def test_ablations_have_the_parameter_counts_they_claim(placement):
    hybrid, twin, frozen, affine = (denoiser(k, placement) for k in
                                    ("hybrid", "hybrid-classical-core", "hybrid-frozen", "hybrid-affine-core"))
    spec = CircuitSpec(num_qubits=4, reps=2)
    h, t, f, a = (m.parameter_counts() for m in (hybrid, twin, frozen, affine))
    assert h["total"] == t["total"] == f["total"]  # same size, only the core differs
    assert h["core"] == t["core"] == spec.num_weights == 12
    assert a["core"] == 4 * 4 + 4 and a["total"] == h["total"] - 12 + 20  # W and b of the circuit's widths
    assert t["quantum_circuit_weights"] == 0 and isinstance(twin.quantum_layer.core, MatchedClassicalCore)
    assert f["trainable"] == f["total"] - spec.num_weights and f["quantum_circuit_weights"] == 12
    # the classical twin has the circuit's widths and output range
    out = twin.quantum_layer.core(torch.randn(64, 4) * 10)
    assert out.shape == (64, 4) and out.abs().max() <= 1


@pytest.mark.parametrize("seed", [0, 3])
def test_variants_start_from_identical_weights_except_their_core(seed):
    """Every ablation draws the weights outside its core from the same streams, so a comparison
    measures the core; the classical model differs only inside its middle block."""
    models = {kind: denoiser(kind, seed=seed).state_dict() for kind in ALL_DENOISERS if kind != "classical-large"}
    hybrid = models["hybrid"]
    for kind, state in models.items():
        differ = {k for k in hybrid if k not in state or not torch.equal(hybrid[k], state[k])}
        if kind == "classical":
            assert differ and all(k.startswith("mid.qconv.") for k in differ)
            assert {k for k in state if k not in hybrid} == {"mid.conv2.weight", "mid.conv2.bias"}
        elif kind in ("hybrid", "hybrid-frozen"):  # the same circuit at the same initial angles
            assert not differ
        else:
            assert differ == {"mid.qconv.core.connector.weight"}
    other_seed = denoiser("hybrid", seed=seed + 1).state_dict()
    assert not torch.equal(other_seed["mid.qconv.core.connector.weight"], hybrid["mid.qconv.core.connector.weight"])


def test_building_a_core_leaves_the_global_rng_alone():
    for kind in CORES:
        torch.manual_seed(0)
        make_core(kind, CircuitSpec(num_qubits=3, reps=1), seed=5)
        after = torch.rand(1)
        torch.manual_seed(0)
        assert torch.equal(after, torch.rand(1)), kind


def test_matched_core_counts_exactly_and_refuses_impossible_counts():
    for n_in, n_out, params in [(8, 8, 32), (4, 4, 4), (4, 2, 10), (3, 5, 20)]:
        core = MatchedClassicalCore(n_in, n_out, params)
        assert sum(p.numel() for p in core.parameters()) == params
    with pytest.raises(InputError, match="between 4 and 20 parameters, the circuit has 21"):
        MatchedClassicalCore(4, 4, 21)


def test_frozen_circuit_weights_do_not_train_but_the_rest_does():
    model = denoiser("hybrid-frozen")
    before = model.quantum_block.weight.detach().clone()
    angles_before = model.quantum_layer.to_angles.weight.detach().clone()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):  # the output layer starts at 0: the layers before it get gradients from step 2 on
        loss = (model(torch.randn(4, 4, 8, 8), torch.tensor([10, 200, 500, 900])) - 1).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.equal(model.quantum_block.weight, before)
    assert not torch.equal(model.quantum_layer.to_angles.weight.detach(), angles_before)


@pytest.mark.parametrize("cond_dim", [0, 6])
def test_qresblock_sends_its_whole_residual_through_the_circuit(cond_dim):
    """No conv2 and no gate: skip(x) + qconv(silu(features)); with the core's output held constant the
    residual is the same at every patch (only the transposed convolution's kernel varies inside one)."""
    spec = CircuitSpec(num_qubits=3, reps=1)
    block = QResBlock(8, 8, cond_dim, spec, patch=2).double()
    assert not hasattr(block, "conv2") and not any("gate" in name for name, _ in block.named_parameters())
    x = torch.randn(2, 8, 6, 6, dtype=torch.float64)
    cond = torch.randn(2, cond_dim, dtype=torch.float64) if cond_dim else None
    out = block(x, cond)
    out.sum().backward()
    assert isinstance(block.qconv.core, QuantumBlock) and block.qconv.core.weight.grad.abs().sum() > 0
    with torch.no_grad():
        expected = block.skip(x) + block.qconv(torch.nn.functional.silu(block.features(x, cond)), cond)
        assert torch.allclose(out, expected)
        handle = block.qconv.core.register_forward_hook(lambda m, a, o: torch.zeros_like(o))
        flat = block(x, cond) - block.skip(x)
        handle.remove()
    patches = flat.unfold(2, 2, 2).unfold(3, 2, 2)  # (B, C, 3, 3, 2, 2): every patch alike
    assert torch.allclose(patches, patches[:, :, :1, :1].expand_as(patches))
    assert (out - block.skip(x)).detach().abs().max() > 0


@pytest.mark.parametrize("ansatz", ["real_amplitudes", "strongly_entangling_edited"])
def test_a_per_patch_layer_computes_the_circuit_of_each_patch_as_statevector_does(ansatz):
    from qiskit.quantum_info import Statevector

    spec = CircuitSpec(num_qubits=3, reps=2, ansatz=ansatz)
    layer = QuantumConv2d(5, 4, 2, spec, patch=2, seed=1).double()
    h = torch.randn(2, 5, 4, 4, dtype=torch.float64)
    cond = torch.randn(2, 2, dtype=torch.float64)
    seen = []
    layer.core.register_forward_hook(lambda m, a, o: seen.append(o.detach()))
    layer(h, cond)
    angles = layer.angles(h, cond).detach()  # (2, 3, 2, 2): 8 patches
    assert seen[0].shape == (8, spec.num_outputs)
    block = layer.core
    weights = block.weight.detach().double().numpy()
    for b, i, j in [(0, 0, 0), (0, 1, 0), (1, 0, 1), (1, 1, 1)]:
        row = b * 4 + i * 2 + j  # rows run over (batch, patch row, patch column)
        values = list(angles[b, :, i, j].numpy()) + list(weights)
        bound = block.circuit.assign_parameters(dict(zip([*block.input_params, *block.weight_params], values)))
        state = Statevector(bound)
        expected = [state.expectation_value(obs).real for obs in block.observables]
        assert np.allclose(seen[0][row].numpy(), expected, atol=1e-10)


def test_angles_keep_their_spread_however_the_projection_scales():
    spec = CircuitSpec(num_qubits=4, reps=1)
    layer = QuantumConv2d(6, 6, 0, spec, patch=1, angle_scale=1.0)
    h = torch.randn(3, 6, 4, 4)
    spread = layer.angles(h).std(dim=(1, 2, 3))
    with torch.no_grad():
        layer.to_angles.weight.mul_(0.01)
    assert torch.allclose(layer.angles(h).std(dim=(1, 2, 3)), spread, rtol=0.05)
    assert torch.allclose(spread, torch.ones(3), atol=0.05)


def test_quantum_vae_with_qresblocks_in_encoder_and_decoder_trains():
    cfg = VAEConfig(size=32, quantum=CircuitSpec(num_qubits=3, reps=1).to_dict(), quantum_patch=2)
    vae = VAE(cfg)
    assert cfg.quantum_placement == "qresblock" and vae.encoder.quantum is None
    assert isinstance(vae.encoder.mid, QResBlock) and isinstance(vae.decoder.mid, QResBlock)
    assert len(vae.quantum_blocks) == 2
    assert vae.parameter_counts()["quantum_circuit_weights"] == 2 * CircuitSpec(num_qubits=3, reps=1).num_weights
    loss, _ = vae.loss(torch.rand(2, 3, 32, 32) * 2 - 1)
    loss.backward()
    assert all(b.weight.grad is not None and b.weight.grad.abs().sum() > 0 for b in vae.quantum_blocks)
    with pytest.raises(ValueError, match="quantum_placement"):
        VAEConfig(size=32, quantum_placement="everywhere")
    with pytest.raises(ValueError, match="quantum_patch"):
        VAEConfig(size=32, quantum_patch=3)


def test_every_denoiser_kind_and_placement_runs():
    for kind in ALL_DENOISERS:
        for placement in ("qresblock", "bottleneck", "gated-qresblock"):
            out = denoiser(kind, placement)(torch.randn(2, 4, 8, 8), torch.tensor([1, 999]))
            assert out.shape == (2, 4, 8, 8) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="unknown placement"):
        DenoiserConfig(kind="hybrid", placement="middle")
    with pytest.raises(ValueError, match="patch"):
        DenoiserConfig(kind="hybrid", latent_size=8, patch=3)


def test_configs_of_qhybrid_0_2_read_qresblock_as_the_gated_branch():
    """0.2 wrote placement 'qresblock' for the gated branch; today's configs always carry 'patch'."""
    old = DenoiserConfig.for_kind("hybrid", 4, 8, num_qubits=3, reps=1).to_dict()
    del old["patch"], old["angle_scale"]
    assert DenoiserConfig.from_dict({**old, "placement": "qresblock"}).placement == "gated-qresblock"
    assert DenoiserConfig.from_dict({**old, "placement": "bottleneck"}).placement == "bottleneck"
    new = DenoiserConfig.for_kind("hybrid", 4, 8, num_qubits=3, reps=1)
    assert DenoiserConfig.from_dict(new.to_dict()) == new and new.placement == "qresblock"
    vae_old = VAEConfig(size=32, quantum=CircuitSpec(num_qubits=3, reps=1).to_dict()).to_dict()
    del vae_old["quantum_patch"]
    assert VAEConfig.from_dict({**vae_old, "quantum_placement": "qresblock"}).quantum_placement == "gated-qresblock"
    del vae_old["quantum_placement"]  # 0.1: no placement at all, the branch after the encoder
    assert VAEConfig.from_dict(vae_old).quantum_placement == "bottleneck"


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


def seeded(value, lo, hi, low, high):
    return {"value": value, "ci": [lo, hi], "sd": 0.01, "range": [low, high]}


def test_seed_aggregates_mark_only_differences_beyond_intervals_and_seed_spread():
    # intervals apart but seed ranges overlapping: not marked
    assert not intervals_separate(seeded(0.3, 0.2, 0.4, 0.25, 0.55), seeded(0.6, 0.5, 0.7, 0.5, 0.65))
    assert intervals_separate(seeded(0.3, 0.2, 0.4, 0.25, 0.35), seeded(0.6, 0.5, 0.7, 0.55, 0.65))
    from qhybrid.evaluation.report import aggregate_seeds

    params = {"denoiser_classical": 10, "denoiser_quantum": 0, "vae_classical": 5, "vae_quantum": 0}
    results = {
        f"hybrid{suffix}": {"kind": "hybrid", "seed": seed, "vae": "classical", "parameters": params,
                            "circuit_travel_rad": travel, "contribution": {"knockout": {"denoiser_change": ko}},
                            "metrics": {"gradable": entry(g, g - 0.1, g + 0.1)}}
        for suffix, seed, g, ko, travel in (("", 0, 0.3, 0.2, 0.4), ("-seed1", 1, 0.5, 0.1, 0.2))}
    agg = aggregate_seeds(results)["hybrid"]
    assert agg["seeds"] == [0, 1]
    assert agg["metrics"]["gradable"]["value"] == pytest.approx(0.4)
    assert agg["metrics"]["gradable"]["range"] == pytest.approx([0.3, 0.5])
    assert agg["metrics"]["gradable"]["ci"] == pytest.approx([0.3, 0.5])  # the mean interval
    assert agg["contribution"]["knockout.denoiser_change"]["value"] == pytest.approx(0.15)
    assert agg["contribution"]["circuit_travel_rad"]["sd"] == pytest.approx(np.std([0.4, 0.2], ddof=1))


@pytest.mark.slow
def test_compare_over_seeds_trains_the_missing_replicas_and_reports_contributions(tmp_path):
    from qhybrid.evaluation.contribution import ContributionConfig
    from qhybrid.training.diffusion import DiffusionTrainConfig, train_diffusion
    from qhybrid.training.vae import VAETrainConfig, train_vae
    from qhybrid.workflows.compare import run_compare

    train_vae(tmp_path / "vae", VAEConfig(size=32), VAETrainConfig(n=32, epochs=1, batch=8), progress=False)
    for kind in ("classical", "hybrid"):
        train_diffusion(tmp_path / f"ldm-{kind}", tmp_path / "vae", kind,
                        DiffusionTrainConfig(n=32, steps=3, batch=8), num_qubits=3, reps=1, progress=False)
    contribution = ContributionConfig(n_latents=4, timesteps=(100, 900), n_samples=2, sample_steps=2)
    kwargs = dict(n=8, steps=2, real_n=16, n_boot=5, progress=False, log=lambda *_: None, quick_evaluators=True,
                  seeds=2, contribution=contribution)
    summary = run_compare(tmp_path, **kwargs)
    replica = json.loads((tmp_path / "ldm-hybrid-seed1" / "config.json").read_text())
    assert replica["extra"]["train"]["seed"] == 1 and replica["config"]["denoiser"]["quantum"]["num_qubits"] == 3
    assert set(summary["models"]) == {"classical", "classical-seed1", "hybrid", "hybrid-seed1"}
    assert summary["kinds"]["hybrid"]["seeds"] == [0, 1]
    classical = summary["models"]["classical"]["contribution"]
    assert classical["core"] is None and classical["knockout"]["denoiser_change"] == 0
    hybrid = summary["models"]["hybrid"]["contribution"]
    assert hybrid["core"] == "quantum" and hybrid["knockout"]["denoiser_change"] > 0
    assert 0 <= hybrid["affine"]["r2"] <= 1 and "delta_gradable" in hybrid["knockout"]
    assert "reset" in hybrid  # the initial state was saved with the checkpoint
    assert (tmp_path / "contribution_hybrid.png").exists() and not (tmp_path / "contribution_classical.png").exists()
    text = (tmp_path / "comparison.md").read_text()
    assert "hybrid (2 seeds)" in text and " ± " in text and "How much the quantum layer's core matters" in text
    before = (tmp_path / "ldm-hybrid-seed1" / "model.safetensors").stat().st_mtime_ns
    run_compare(tmp_path, **kwargs)  # the replicas are there: nothing is trained again
    assert (tmp_path / "ldm-hybrid-seed1" / "model.safetensors").stat().st_mtime_ns == before


def test_a_qhybrid_0_2_qresblock_checkpoint_loads_as_the_gated_branch(tmp_path):
    """0.2 saved placement 'qresblock' (the gated branch) without 'patch': it loads, weights and all."""
    from qhybrid.models import checkpoint as ckpt

    torch.manual_seed(0)
    cfg = DenoiserConfig.for_kind("hybrid", 4, 8, num_qubits=3, reps=1, placement="gated-qresblock")
    model = LatentDenoiser(cfg).eval()
    saved = cfg.to_dict()
    saved["placement"] = "qresblock"
    del saved["patch"], saved["angle_scale"]
    ckpt.save_checkpoint(tmp_path / "ldm", "ldm", {"denoiser": saved}, model.state_dict())
    loaded = LatentDenoiser.from_checkpoint(tmp_path / "ldm")
    assert loaded.cfg.placement == "gated-qresblock"
    z, t = torch.randn(2, 4, 8, 8), torch.tensor([5, 700])
    with torch.no_grad():
        assert torch.equal(loaded(z, t), model(z, t))
