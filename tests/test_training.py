"""The training loop: resume with a longer run follows the longer schedule (and trains), old
training states resume, parameter groups keep their own peak LR, configs validate themselves,
and errors name parameters, not flags."""

import shutil
from pathlib import Path

import pytest
import torch

from qhybrid.models import checkpoint as ckpt
from qhybrid.models.vae import VAEConfig
from qhybrid.training.diffusion import DiffusionTrainConfig, train_diffusion
from qhybrid.training.encoder import EncoderTrainConfig
from qhybrid.training.loop import (
    STATE_VERSION,
    Callback,
    OneCycle,
    Trainer,
    TrainingError,
    _current_layout,
)
from qhybrid.training.vae import VAETrainConfig, train_vae
from qhybrid.training.validator import ValidatorTrainConfig

LEGACY = Path(__file__).parent / "data" / "legacy-0.1"


class Record(Callback):
    """What each optimiser step of a run used: LR and beta1 of the first parameter group, and the
    flattened weights after every epoch."""

    def __init__(self):
        self.lrs, self.betas, self.weights = [], [], []

    def _note(self, trainer):
        group = trainer.optimizer.param_groups[0]
        self.lrs.append(float(group["lr"]))
        self.betas.append(float(group["betas"][0]))

    def on_train_start(self, trainer):
        self._note(trainer)  # the first step of this session uses these

    def on_step_end(self, trainer):
        self._note(trainer)  # ... and the next one these

    def on_epoch_end(self, trainer):
        self.weights.append(torch.cat([p.detach().flatten().clone() for p in trainer.model.parameters()]))


def small(epochs):
    return VAETrainConfig(n=24, epochs=epochs, batch=8, lr=3e-3)


@pytest.mark.slow  # 5 s; resume stays covered in the fast suite by the interruption tests
def test_a_vae_resumed_with_more_epochs_trains_on_the_longer_schedule(tmp_path):
    """Resuming with more epochs used to train at the floor of the finished one-cycle schedule
    (about 1e-8): the extra epochs left the weights where they were."""
    fresh = Record()
    train_vae(tmp_path / "fresh", VAEConfig(size=32), small(3), progress=False, callbacks=[fresh])
    first, more = Record(), Record()
    train_vae(tmp_path / "run", VAEConfig(size=32), small(2), progress=False, callbacks=[first])
    train_vae(tmp_path / "run", VAEConfig(size=32), small(3), resume=True, progress=False, callbacks=[more])

    steps = len(first.lrs) - 1  # 2 epochs of steps
    # the resumed epoch uses the 3-epoch schedule from step `steps` on: the LRs and betas of the fresh run
    assert more.lrs == fresh.lrs[steps:]
    assert more.betas == fresh.betas[steps:]
    assert more.lrs[0] > 100 * first.lrs[-1]
    # and it moves the weights as much as an epoch of training does
    extra = (more.weights[0] - first.weights[-1]).norm()
    normal = (fresh.weights[2] - fresh.weights[1]).norm()
    assert extra > 0.5 * normal
    assert ckpt.read_header(tmp_path / "run", "vae")["extra"]["epoch"] == 3


@pytest.mark.slow  # 5 s; resume stays covered in the fast suite by the interruption tests
def test_a_denoiser_resumed_with_more_steps_follows_the_longer_schedule(tmp_path):
    vae = tmp_path / "vae"
    train_vae(vae, VAEConfig(size=32), VAETrainConfig(n=16, epochs=1, batch=8), progress=False)
    cfg = DiffusionTrainConfig(n=16, steps=40, batch=8, save_every=10)
    fresh, more = Record(), Record()
    train_diffusion(tmp_path / "fresh", vae, "classical", cfg, progress=False, callbacks=[fresh])
    train_diffusion(tmp_path / "run", vae, "classical", cfg.replace(steps=20), progress=False)
    train_diffusion(tmp_path / "run", vae, "classical", cfg, resume=True, progress=False, callbacks=[more])
    assert more.lrs == fresh.lrs[20:]


def test_a_training_state_written_by_qhybrid_0_1_resumes_like_one_written_today(tmp_path):
    """tests/data/legacy-0.1/vae-resumable: 1 epoch by the old code (n=8, batch 8, 4 channels). Its
    state, resumed, must train exactly as the same state written in today's layout does (today's
    fresh runs no longer equal 0.1's: the reparameterisation noise is now drawn with the batch,
    from the run's generator, rather than inside the forward pass)."""
    old, new = tmp_path / "old", tmp_path / "new"
    shutil.copytree(LEGACY / "vae-resumable", old)
    shutil.copytree(LEGACY / "vae-resumable", new)
    state = ckpt.load_training_state(new)
    assert "version" not in state  # the 0.1 layout
    torch.save(_current_layout(state, new / ckpt.STATE_NAME), new / ckpt.STATE_NAME)
    assert ckpt.load_training_state(new)["version"] == STATE_VERSION
    for folder in (old, new):
        train_vae(folder, VAEConfig(size=32), VAETrainConfig(epochs=3), resume=True, progress=False)
    a, b = ckpt.load_checkpoint(old, "vae"), ckpt.load_checkpoint(new, "vae")
    assert a[0]["extra"]["epoch"] == b[0]["extra"]["epoch"] == 3
    assert a[0]["config"]["detail_weight"] == 0.0  # trained before the detail loss: resumed without it
    assert a[1].keys() == b[1].keys()
    for key in a[1]:
        assert torch.equal(a[1][key], b[1][key]), key
    history_old, history_new = ckpt.load_training_state(old)["history"], ckpt.load_training_state(new)["history"]
    assert len(history_old["loss"]) == 3 and len(history_old["val_vessel_dice"]) == 2  # recorded from the resume on
    assert history_old == history_new


def test_a_denoiser_state_in_the_0_1_layout_resumes_like_one_written_today(tmp_path, interrupt_at):
    vae = tmp_path / "vae"
    train_vae(vae, VAEConfig(size=32), VAETrainConfig(n=16, epochs=1, batch=8), progress=False)
    cfg = DiffusionTrainConfig(n=16, steps=20, batch=8, save_every=10)
    new, old = tmp_path / "new", tmp_path / "old"
    with pytest.raises(KeyboardInterrupt):
        train_diffusion(new, vae, "classical", cfg, progress=False, callbacks=[interrupt_at(step=15)])
    shutil.copytree(new, old)
    state = ckpt.load_training_state(old)  # 0.1 wrote 'losses', a scheduler state, no version or epoch
    state["losses"] = state.pop("history")["loss"]
    state["scheduler"] = {"last_epoch": state["step"]}
    del state["version"], state["epoch"]
    torch.save(state, old / ckpt.STATE_NAME)
    for folder in (new, old):
        train_diffusion(folder, vae, "classical", cfg, resume=True, progress=False)
    a, b = ckpt.load_checkpoint(new, "ldm")[1], ckpt.load_checkpoint(old, "ldm")[1]
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("damage, message", [
    (lambda state: state.pop("optimizer"), "training_state.pt lacks optimizer and cannot be resumed"),
    (lambda state: state["optimizer"]["param_groups"][0].pop("initial_lr"),
     "cannot rebuild the learning-rate schedule at step 1 from the saved optimiser state (param 'initial_lr' "),
])
def test_a_training_state_that_cannot_resume_is_refused_in_one_line(tmp_path, damage, message):
    folder = tmp_path / "vae"
    shutil.copytree(LEGACY / "vae-resumable", folder)
    state = ckpt.load_training_state(folder)
    damage(state)
    torch.save(state, folder / ckpt.STATE_NAME)
    with pytest.raises(TrainingError) as caught:
        train_vae(folder, VAEConfig(size=32), VAETrainConfig(epochs=2), resume=True, progress=False)
    assert message in str(caught.value)
    assert str(caught.value).endswith("; start a new run with another out")
    assert "\n" not in str(caught.value) and "\\n" not in str(caught.value)


def test_errors_name_parameters_and_the_cli_can_spell_them_as_flags(tmp_path):
    out = tmp_path / "vae"
    train_vae(out, VAEConfig(size=32), VAETrainConfig(n=8, epochs=1, batch=8), progress=False)
    with pytest.raises(TrainingError) as caught:
        train_vae(out, VAEConfig(size=32, quantum={"num_qubits": 3}), VAETrainConfig(epochs=2), resume=True,
                  progress=False)
    assert str(caught.value).endswith("resuming it needs the same quantum (or choose another out)")
    assert "--" not in str(caught.value)
    flags = caught.value.render(lambda name: "--" + name)
    assert flags.endswith("resuming it needs the same --quantum (or choose another --out)")


def test_each_parameter_group_follows_the_schedule_from_its_own_peak():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))
    groups = [{"params": model[0].parameters()}, {"params": model[1].parameters(), "lr": 0.1}]
    trainer = Trainer(model, lr=0.01, total_steps=20, schedule=OneCycle(pct_start=0.25), param_groups=groups,
                      progress=False)
    peaks = [0.0, 0.0]

    class Peak(Callback):
        def on_step_end(self, trainer):
            for i, group in enumerate(trainer.optimizer.param_groups):
                peaks[i] = max(peaks[i], group["lr"])

    trainer.callbacks.append(Peak())
    x = torch.randn(64, 4)
    y = x.sum(1, keepdim=True)

    def batches(_):
        for i in range(0, 64, 16):
            yield x[i:i + 16], y[i:i + 16]

    def loss_fn(batch):
        loss = torch.mean((model(batch[0]) - batch[1]) ** 2)
        return loss, {"loss": loss.item()}

    trainer.fit(loss_fn, batches, epochs=5)
    assert trainer.step == 20 and trainer.epoch == 5 and len(trainer.history["loss"]) == 20
    assert peaks == pytest.approx([0.01, 0.1])
    assert trainer.history["loss"][-1] < trainer.history["loss"][0]


@pytest.mark.parametrize("cls, field, value", [
    (VAETrainConfig, "epochs", 0), (VAETrainConfig, "lr", -1.0), (VAETrainConfig, "n", 0),
    (DiffusionTrainConfig, "steps", 0), (DiffusionTrainConfig, "ema_decay", 1.0),
    (DiffusionTrainConfig, "save_every", 0), (ValidatorTrainConfig, "batch", 0),
    (EncoderTrainConfig, "seed", -1),
])
def test_training_configs_refuse_bad_values_naming_the_field(cls, field, value):
    with pytest.raises(ValueError, match=rf"{cls.__name__}\.{field}"):
        cls(**{field: value})


def test_training_configs_are_frozen_and_round_trip_with_the_saved_keys():
    cfg = VAETrainConfig(n=16, epochs=2)
    with pytest.raises(AttributeError):
        cfg.epochs = 3
    # 0.1 saved these keys; 0.3 adds the circuit weights' own learning rate after lr
    assert list(cfg.to_dict()) == ["data", "n", "epochs", "batch", "lr", "circuit_lr", "seed"]
    assert VAETrainConfig.from_dict(cfg.to_dict()) == cfg
    old = {k: v for k, v in cfg.to_dict().items() if k != "circuit_lr"}
    assert VAETrainConfig.from_dict(old) == cfg  # a 0.1 or 0.2 run resumes with the default circuit LR
    assert cfg.replace(epochs=3).epochs == 3 and cfg.epochs == 2
    # noise-aware training (issue 18) adds its fields after save_every, min-SNR weighting after them;
    # older runs resume without them
    assert list(DiffusionTrainConfig().to_dict()) == ["data", "n", "steps", "batch", "lr", "circuit_lr", "ema_decay",
                                                       "seed", "save_every", "noise_aware", "noise_shots",
                                                       "noise_consistency", "surrogate", "init_from", "min_snr_gamma"]
    saved_before = {k: v for k, v in DiffusionTrainConfig().to_dict().items()
                    if k not in ("noise_aware", "noise_shots", "noise_consistency", "surrogate", "init_from",
                                 "min_snr_gamma")}
    assert DiffusionTrainConfig.from_dict(saved_before) == DiffusionTrainConfig()


def test_min_snr_weighting_is_recorded_changes_the_loss_and_is_kept_on_resume(tiny_models, tmp_path):
    """``train diffusion --min-snr-gamma``: the same seed draws the same batches, so only the
    weighting changes the first logged loss; the checkpoint records gamma (and v-prediction, the
    default); resuming with another gamma is refused in one line, resuming without the flag keeps
    it, and a gamma <= 0 or infinite is a usage error."""
    import json

    from tests.cli_helpers import one_line_error, run

    base = ["train", "diffusion", "--vae", tiny_models / "vae", "--denoiser", "classical", "--n", 16,
            "--steps", 2, "--batch", 8]
    plain, weighted = tmp_path / "plain", tmp_path / "weighted"
    assert run(*base, "--out", plain).returncode == 0
    # v-prediction is the recipe's default (README, "The diffusion recipe")
    assert json.loads((plain / "config.json").read_text())["config"]["scheduler"]["prediction_type"] == "v_prediction"
    proc = run(*base, "--min-snr-gamma", 1, "--out", weighted)
    assert proc.returncode == 0, proc.stderr
    first = {name: torch.load(folder / "training_state.pt", weights_only=False)["history"]["loss"][0]
             for name, folder in (("plain", plain), ("weighted", weighted))}
    assert first["weighted"] < first["plain"]  # gamma 1 weights every v error by min(SNR, 1) / (SNR + 1) < 1
    assert json.loads((weighted / "config.json").read_text())["extra"]["train"]["min_snr_gamma"] == 1
    line = one_line_error(run(*base, "--steps", 3, "--min-snr-gamma", 5, "--out", weighted, "--resume"))
    assert "min_snr_gamma=1" in line and "--min-snr-gamma" in line
    assert run(*base, "--steps", 3, "--out", weighted, "--resume").returncode == 0  # resumed without the flag: kept
    assert json.loads((weighted / "config.json").read_text())["extra"]["train"]["min_snr_gamma"] == 1
    for bad in (0, "inf"):
        assert "positive number" in one_line_error(run(*base, "--min-snr-gamma", bad, "--out", tmp_path / "x"), code=2)


def test_the_recipe_prediction_is_the_cli_default_and_the_demo_s():
    """``RECIPE_SCHEDULER`` names the recipe's prediction; the parser (which must not import torch)
    and ``DemoConfig`` repeat it as literals, so this checks they agree."""
    from qhybrid.cli.parser import build_parser
    from qhybrid.training.diffusion import RECIPE_SCHEDULER
    from qhybrid.workflows.demo import DemoConfig

    args = build_parser().parse_args(["train", "diffusion", "--vae", "v", "--denoiser", "classical", "--out", "o"])
    assert args.prediction == DemoConfig().prediction == RECIPE_SCHEDULER.prediction_type == "v_prediction"
