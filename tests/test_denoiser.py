"""Latent denoisers: shapes, parameter budgets, the quantum layer, a short training run each."""

import pytest
import torch

from qhybrid.diffusion.scheduler import NoiseScheduler
from qhybrid.models.denoiser import DenoiserConfig, LatentDenoiser
from qhybrid.quantum import QuantumBlock


def model(kind, **kw):
    return LatentDenoiser(DenoiserConfig.for_kind(kind, 4, 8, num_qubits=kw.get("qubits", 4), reps=2))


def test_shapes_and_parameter_budgets():
    models = {k: model(k) for k in ("classical", "classical-large", "hybrid")}
    z, t = torch.randn(3, 4, 8, 8), torch.tensor([0, 500, 999])
    for m in models.values():
        assert m(z, t).shape == z.shape
    counts = {k: m.parameter_counts() for k, m in models.items()}
    # the hybrid's quantum layer replaces the classical middle block's 3x3 convolution (48 -> 48 channels)
    conv2 = 48 * 48 * 9 + 48
    assert counts["classical"]["total"] - conv2 + counts["hybrid"]["quantum_layer"] == counts["hybrid"]["total"]
    assert counts["classical-large"]["total"] > 3 * counts["classical"]["total"]
    assert counts["hybrid"]["quantum_circuit_weights"] == 12 and counts["classical"]["quantum_circuit_weights"] == 0
    assert isinstance(models["hybrid"].quantum_block, QuantumBlock)
    assert models["classical"].quantum_block is None


def test_the_circuit_sees_the_time_embedding():
    m = model("hybrid")
    torch.manual_seed(0)
    z = torch.randn(2, 4, 8, 8)
    seen = []
    hook = m.quantum_block.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].clone()))
    m(z, torch.tensor([10, 10]))
    m(z, torch.tensor([900, 900]))
    hook.remove()
    assert not torch.allclose(seen[0], seen[1])


def test_a_32x32_latent_gets_an_outer_level_so_the_circuit_keeps_its_8x8_bottleneck_and_cost():
    """fundus-vae-64-l32's 4x32x32 latents: one outer (stem) level, the circuit at the same 16
    positions per latent as on 16x16 latents, and a middle block of the same size."""
    small, large = (LatentDenoiser(DenoiserConfig.for_kind("hybrid", 4, s, num_qubits=3, reps=1)) for s in (16, 32))
    assert (small.cfg.outer_levels, large.cfg.outer_levels) == (0, 1)
    assert small.cfg.bottleneck_size == large.cfg.bottleneck_size == 8
    rows = []
    for m, side in ((small, 16), (large, 32)):
        hook = m.quantum_block.register_forward_hook(lambda mod, inp, out: rows.append(inp[0].shape[0]))
        z = torch.randn(2, 4, side, side)
        assert m(z, torch.tensor([3, 700])).shape == z.shape
        hook.remove()
    assert rows == [2 * 16, 2 * 16]
    assert sum(p.numel() for p in large.mid.parameters()) == sum(p.numel() for p in small.mid.parameters())
    assert [k for k in small.state_dict() if k.startswith("outer_")] == []  # 16x16 checkpoints keep their keys


@pytest.mark.parametrize("kind, digest", [
    ("classical", "4727164304e6bddeb8559fdf94fbd9d68256326b73abd4fc7a6089bd44b49ff6"),
    ("hybrid", "3c3e6e113167c3703eed48f44e65a36980372959a404459f3a88f969e434f124"),
])
def test_a_16x16_denoiser_starts_from_the_weights_it_started_from_before_outer_levels_existed(kind, digest):
    """SHA-256 of the initial state dict (names and float32 bytes) at seed 0, measured on the code before
    outer levels were added: a 16x16 model's seeded start, and so a seed's training run, is unchanged."""
    import hashlib

    torch.manual_seed(0)
    m = LatentDenoiser(DenoiserConfig.for_kind(kind, 4, 16))
    h = hashlib.sha256()
    for name, t in m.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().contiguous().numpy().tobytes())
    assert h.hexdigest() == digest


def test_channels_last_is_used_in_training_only_so_sampling_keeps_the_plain_layouts_values():
    """Eval mode (sampling, IBM job steps, whose block inputs are compared exactly) gives the same bits
    whatever ``memory_format`` says; training mode gives the plain layout's values up to rounding."""
    torch.manual_seed(0)
    fast = LatentDenoiser(DenoiserConfig.for_kind("classical", 4, 16))
    plain = LatentDenoiser(DenoiserConfig.for_kind("classical", 4, 16))
    plain.load_state_dict(fast.state_dict())
    plain.memory_format = torch.contiguous_format
    torch.nn.init.normal_(fast.conv_out.weight, std=0.1)  # zero at initialisation: make the output depend on the input
    plain.conv_out.weight.data.copy_(fast.conv_out.weight)
    z, t = torch.randn(8, 4, 16, 16), torch.randint(0, 1000, (8,))
    with torch.no_grad():
        assert torch.equal(fast.eval()(z, t), plain.eval()(z, t))
        trained_fast, trained_plain = fast.train()(z, t), plain.train()(z, t)
    assert torch.allclose(trained_fast, trained_plain, atol=1e-5)
    assert trained_fast.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("kind", ["classical", "hybrid"])
def test_an_attention_block_starts_as_the_identity_on_the_weights_the_model_has_without_it(kind):
    """The self-attention block after the middle block is built last and its output projection starts
    at zero: at a seed, the model with it has every other weight of the model without it and gives
    the same output; once its projection is non-zero, every position sees every other."""
    torch.manual_seed(0)
    plain = LatentDenoiser(DenoiserConfig.for_kind(kind, 4, 32, num_qubits=3, reps=1))
    torch.manual_seed(0)
    attn = LatentDenoiser(DenoiserConfig.for_kind(kind, 4, 32, num_qubits=3, reps=1).replace(attention_heads=4))
    extra = set(attn.state_dict()) - set(plain.state_dict())
    assert extra and all(k.startswith("attention.") for k in extra)
    for name, tensor in plain.state_dict().items():
        assert torch.equal(tensor, attn.state_dict()[name]), name
    for m in (plain, attn):
        torch.nn.init.normal_(m.conv_out.weight, std=0.1, generator=torch.Generator().manual_seed(1))
    z, t = torch.randn(2, 4, 32, 32), torch.tensor([10, 500])
    with torch.no_grad():
        assert torch.allclose(plain.eval()(z, t), attn.eval()(z, t), atol=1e-6)
        torch.nn.init.normal_(attn.attention.proj.weight, std=0.1)
        # the bottleneck's mixing: changing one corner of the latent moves the far corner's features
        h = attn._down(z, t)[2]
        mixed = attn.attention(h)
        h2 = h.clone()
        h2[:, :, 0, 0] += 1
        assert not torch.allclose(attn.attention(h2)[:, :, -1, -1], mixed[:, :, -1, -1])


@pytest.mark.parametrize("changes, message", [
    ({"attention_heads": 5}, "attention_heads must be 0 or a count dividing the bottleneck's 48 channels"),
    ({"attention_heads": -1}, "attention_heads must be 0 or a count"),
    ({"outer_levels": 4}, "outer_levels must be an integer in"),
    ({"outer_levels": 1, "latent_size": 18}, "divisible by 4"),
    ({"outer_levels": 1, "latent_size": 32, "channels": 25}, "channels must be divisible by 2"),
    ({"outer_levels": 1, "latent_size": 32, "patch": 3}, "dividing the bottleneck side 8"),
])
def test_bad_outer_levels_and_attention_heads_are_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        DenoiserConfig(kind="classical", **changes)


def test_bad_latents_and_targets():
    with pytest.raises(ValueError, match="expects latents of shape"):
        model("classical")(torch.randn(2, 4, 16, 16), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="no quantum block"):
        model("classical").to_target("fake:fake_torino")
    with pytest.raises(ValueError, match="unknown denoiser"):
        DenoiserConfig(kind="quantum-large")


@pytest.mark.parametrize("kind", ["classical", "classical-large", "hybrid"])
def test_a_short_training_run_reduces_the_loss(kind):
    torch.manual_seed(0)
    m = model(kind)
    s = NoiseScheduler()
    data = torch.randn(8, 4, 8, 8) * 0.5 + torch.linspace(-1, 1, 8).view(1, 1, 8, 1)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(60):
        z0 = data[torch.randint(0, 8, (16,), generator=gen)]
        t = torch.randint(0, 1000, (16,), generator=gen)
        eps = torch.randn(z0.shape, generator=gen)
        loss = torch.mean((m(s.add_noise(z0, eps, t), t) - eps) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.8 * sum(losses[:10]) / 10


def test_the_circuit_of_every_kind_with_a_circuit_is_found(tmp_path):
    """circuits inspect --model reads the circuit of hybrid and hybrid-frozen models (0.1 refused the
    frozen ablation, whose circuit is the hybrid's) and refuses kinds without one."""
    from qhybrid.errors import InputError
    from qhybrid.models import checkpoint as ckpt
    from qhybrid.models.denoiser import (
        ALL_DENOISERS,
        CORE_OF,
        DenoiserConfig,
        circuit_spec_of,
    )

    for kind in ALL_DENOISERS:
        cfg = DenoiserConfig.for_kind(kind, 4, 8, num_qubits=3, reps=1)
        folder = ckpt.save_checkpoint(tmp_path / "run" / f"ldm-{kind}", "ldm", {"denoiser": cfg.to_dict()}, {})
        if CORE_OF[kind] in ("quantum", "frozen"):
            spec, name = circuit_spec_of(folder)
            assert (spec.num_qubits, spec.reps, name) == (3, 1, f"run_ldm-{kind}")
        else:
            with pytest.raises(InputError, match=f"no quantum block \\(a {kind} model\\)"):
                circuit_spec_of(folder)
