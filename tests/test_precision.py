"""Mixed-precision training (``precision`` = bf16 / fp16 autocast) on the CPU: it trains as float32
does, weights and checkpoints stay float32, the circuit keeps float32 in and out, and an fp16 run
(loss scaling) resumes bit for bit."""

import pytest
import torch
from safetensors.torch import load_file

from qhybrid.devices import autocast, check_precision
from qhybrid.errors import InputError
from qhybrid.models.denoiser import DenoiserConfig, LatentDenoiser
from qhybrid.training.loop import Hooks, Trainer, WarmupCosine


def _hybrid(seed=0):
    torch.manual_seed(seed)
    return LatentDenoiser(DenoiserConfig.for_kind("hybrid", 4, 8, num_qubits=3, reps=1, patch=1))


def _batches(gen):
    def batches(_epoch):
        while True:
            z = torch.randn(8, 4, 8, 8, generator=gen)
            yield z, torch.randint(0, 1000, (8,), generator=gen), torch.randn(8, 4, 8, 8, generator=gen)
    return batches


def _loss(model):
    def loss_fn(batch):
        z, t, eps = batch
        loss = torch.mean((model(z + eps, t) - eps) ** 2)
        return loss, {"loss": loss.item()}
    return loss_fn


class _Stop(Exception):
    pass


def _train(precision, steps, model=None, state=None, stop_at=None, growth_interval=None):
    """A run of ``steps`` steps; ``stop_at``: interrupted after that step (the trainer is returned);
    ``growth_interval``: of the fp16 loss scaler (torch's default, 2000, never grows in a short run)."""
    model = model or _hybrid()
    gen = torch.Generator().manual_seed(1)  # the batches' generator, saved and restored with the run

    def stop(trainer):
        if trainer.step == stop_at:
            raise _Stop

    trainer = Trainer(model, lr=3e-3, total_steps=steps, schedule=WarmupCosine(), ema_decay=0.9, progress=False,
                      precision=precision, generator=gen, callbacks=[Hooks(on_step_end=stop)])
    if growth_interval is not None:
        trainer.scaler = torch.amp.GradScaler("cpu", growth_interval=growth_interval)
    if state is not None:
        trainer.load_state_dict(state)
    try:
        trainer.fit(_loss(model), _batches(gen))
    except _Stop:
        pass
    return trainer


def test_bf16_training_follows_the_float32_run_and_keeps_float32_weights():
    fp32, bf16 = _train("fp32", 40), _train("bf16", 40)
    for trainer in (fp32, bf16):
        assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
        assert all(p.dtype == torch.float32 for p in trainer.ema.model.parameters())
    a, b = fp32.history["loss"], bf16.history["loss"]
    # the same batches: each step's loss within 5% of the float32 run's, and the run learns as it does
    assert max(abs(x - y) / x for x, y in zip(a, b)) < 0.05
    assert sum(b[-10:]) < 0.9 * sum(b[:10])
    assert not torch.equal(fp32.model.quantum_block.weight, bf16.model.quantum_block.weight)  # not silently fp32


def test_the_quantum_layer_computes_in_float32_under_bf16_autocast():
    """Under autocast the classical layers run in bf16, but the quantum layer runs in float32 from its input
    features through the angles and the circuit to its output: the same values as without autocast."""
    model = _hybrid()
    seen = []
    model.quantum_block.register_forward_hook(lambda mod, args, out: seen.append((args[0].dtype, out.dtype)))
    z, t = torch.randn(2, 4, 8, 8), torch.randint(0, 1000, (2,))
    with torch.no_grad(), autocast(torch.device("cpu"), "bf16"):
        out = model(z, t)
    assert seen == [(torch.float32, torch.float32)]
    assert out.dtype == torch.bfloat16  # the classical layers after it did run in bf16
    layer = model.quantum_layer
    h, cond = torch.randn(2, 48, 8, 8), torch.randn(2, 64)
    with torch.no_grad():
        plain = layer(h, cond)
        with autocast(torch.device("cpu"), "bf16"):
            mixed = layer(h.bfloat16(), cond)
    # the only bf16 left is the input itself (rounded by the caller): compare with the layer on that input
    with torch.no_grad():
        reference = layer(h.bfloat16().float(), cond)
    assert mixed.dtype == torch.float32 and torch.allclose(mixed, reference, atol=1e-6)
    assert not torch.allclose(plain, reference, atol=1e-6)  # the input's rounding does show: the check can fail
    seen.clear()
    with torch.no_grad():  # without autocast nothing is cast: float64 stays float64 (gradcheck's path)
        layer.double()(h.double(), cond.double())
    assert seen == [(torch.float64, torch.float64)]


def test_an_fp16_run_resumed_from_its_state_ends_where_the_uninterrupted_run_does():
    """The loss scale is part of the run: here it doubles after every step without overflow (growth interval
    1), so a resume that did not restore it would end with another scale."""
    whole = _train("fp16", 6, growth_interval=1)
    state = _train("fp16", 6, stop_at=3, growth_interval=1).state_dict()
    assert state["step"] == 3 and state["grad_scaler"]["scale"] != 2.0**16  # it moved from torch's initial scale
    resumed = _train("fp16", 6, model=_hybrid(), state=state, growth_interval=1)
    for p, q in zip(whole.model.parameters(), resumed.model.parameters()):
        assert torch.equal(p, q)
    assert whole.scaler.get_scale() == resumed.scaler.get_scale()
    assert whole.history["loss"] == resumed.history["loss"]
    forgot = _train("fp16", 6, model=_hybrid(), state={k: v for k, v in state.items() if k != "grad_scaler"},
                    growth_interval=1)
    assert forgot.scaler.get_scale() != whole.scaler.get_scale()


def test_an_unknown_precision_is_one_line_naming_the_choices():
    assert check_precision("bf16") == "bf16"
    with pytest.raises(InputError, match="fp64.*is not one of fp32, bf16, fp16") as refused:
        Trainer(torch.nn.Linear(2, 2), lr=1e-3, total_steps=2, schedule=WarmupCosine(), precision="fp64")
    assert "\n" not in str(refused.value)


def test_train_diffusion_in_bf16_records_it_and_writes_a_float32_checkpoint(tiny_models, tmp_path):
    from qhybrid.training.diffusion import DiffusionTrainConfig, train_diffusion
    from qhybrid.workflows.sampling import sample_images

    summary = train_diffusion(tmp_path / "ldm", tiny_models / "vae", "hybrid", DiffusionTrainConfig(n=16, steps=4, batch=8),
                              num_qubits=3, reps=1, progress=False, device="cpu", precision="bf16")
    assert summary["precision"] == "bf16"
    weights = load_file(tmp_path / "ldm" / "model.safetensors")
    assert {w.dtype for w in weights.values()} == {torch.float32}
    images, _ = sample_images(tmp_path / "ldm", n=2, steps=2, progress=False, device="cpu")
    assert images.shape == (2, 32, 32, 3)


def test_the_cli_trains_with_attention_and_bf16_and_refuses_what_it_cannot_do(tiny_models, tmp_path):
    """``train diffusion --attention-heads N --precision bf16``: saved in the config; a head count that does not
    divide the bottleneck is one usage line (exit 2); a resume cannot change the architecture (exit 2, as every
    refused resume)."""
    import json

    from tests.cli_helpers import run

    common = ["train", "diffusion", "--vae", str(tiny_models / "vae"), "--denoiser", "hybrid", "--qubits", "3",
              "--reps", "1", "--n", "16", "--batch", "8", "--device", "cpu"]
    out = tmp_path / "ldm"
    done = run(*common, "--steps", "2", "--attention-heads", "4", "--precision", "bf16", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "config.json").read_text())["config"]["denoiser"]["attention_heads"] == 4
    bad = run(*common, "--attention-heads", "5", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
    assert "--attention-heads 5 does not divide the 48 channels" in bad.stderr
    resumed = run(*common, "--steps", "3", "--attention-heads", "2", "--resume", "--out", str(out))
    assert resumed.returncode == 2 and "keeps its architecture" in resumed.stderr


def test_a_fine_tune_keeps_the_architecture_it_starts_from(tiny_models, tmp_path):
    from qhybrid.training.diffusion import (
        DiffusionTrainConfig,
        TrainingError,
        train_diffusion,
    )

    cfg = DiffusionTrainConfig(n=16, steps=2, batch=8, init_from=str(tiny_models / "ldm-hybrid"))
    with pytest.raises(TrainingError, match="attention_heads=0; a fine-tune keeps its architecture"):
        train_diffusion(tmp_path / "ft", tiny_models / "vae", "hybrid", cfg, progress=False, device="cpu",
                        attention_heads=4)
