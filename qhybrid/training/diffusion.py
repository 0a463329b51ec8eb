"""Training a latent denoiser on a trained VAE's latents: EMA weights, checkpoints, resume.

The training images are encoded once (and their mirror images: left and right eyes are mirror
images of each other), then each step draws a batch of latents, a timestep and noise and regresses
the scheduler's target. The checkpoint (``kind: ldm``) stores the EMA weights as the model, the
denoiser and scheduler configs, and the VAE's path and hash; ``training_state.pt`` holds the raw
weights, optimiser and EMA for ``resume=True``. It is written every ``save_every`` steps and at the end.

Noise-aware training (``noise_aware="fake:<backend>"``) puts the backend's
:class:`~qhybrid.quantum.noise_surrogate.NoiseSurrogate` between the exact block and the rest of the
model while training. Each batch is predicted twice, with everything up to the circuit and the
circuit itself evaluated once (:meth:`LatentDenoiser.forward_pair`): with the exact block outputs
and with the same outputs through the surrogate; the loss is the mean of both task losses plus ``noise_consistency`` times the squared
difference of the two predictions, so the model learns to give the same answer with and without
the device's noise. (Showing the surrogate to half of the samples instead, with no pairing, moved
noisy samples by 0.94x of plain training's on fake_torino: the difference is too small a part of
the diffusion loss's own noise to learn from.) The surrogate is fitted at the start on the model's
own block inputs (or read from ``surrogate``) and saved as ``noise_surrogate.json`` next to the
checkpoint; the saved weights load and sample exactly like any other. ``init_from`` starts from
another hybrid checkpoint's weights: the fine-tune mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from qhybrid.config import Config
from qhybrid.data.loaders import load_dataset
from qhybrid.devices import module_device
from qhybrid.diffusion.pipeline import vae_reference
from qhybrid.diffusion.scheduler import NoiseScheduler, SchedulerConfig
from qhybrid.models import checkpoint as ckpt
from qhybrid.models.denoiser import DEFAULT_CIRCUIT, DenoiserConfig, LatentDenoiser
from qhybrid.models.quantum_layers import circuit_weights
from qhybrid.models.vae import VAE
from qhybrid.plots import save_loss_curves
from qhybrid.training import distributed
from qhybrid.training.loop import (
    CIRCUIT_LR,
    Callback,
    Hooks,
    Trainer,
    TrainingError,
    WarmupCosine,
    check_data,
    check_lr,
    check_positive_int,
    check_seed,
    circuit_param_groups,
    circuit_travel,
    open_run,
    save_run,
)

__all__ = ["RECIPE_SCHEDULER", "DiffusionTrainConfig", "TrainingError", "block_inputs", "check_kept_prediction", "encode_dataset", "train_diffusion"]


#: The schedule and prediction a new run trains with unless told otherwise: cosine betas and
#: v-prediction. Over three seeds of the demo's classical recipe (1,200 steps, shipped VAE) v-prediction
#: gave FD 41 and 94% gradable, epsilon FD 183 and 77% (README, "The diffusion recipe"). The config's
#: own field default stays epsilon, as in diffusers, so that a bare ``SchedulerConfig()`` means what it did.
RECIPE_SCHEDULER = SchedulerConfig(prediction_type="v_prediction")


@dataclass(frozen=True)
class DiffusionTrainConfig(Config):
    """``steps`` optimiser steps of ``batch`` latents; the model saved is the EMA (``ema_decay``);
    a resumable checkpoint every ``save_every`` steps. The circuit weights of a hybrid train at
    ``circuit_lr`` (their own AdamW group, no weight decay): at the classical weights' 2e-3 they
    barely moved in qhybrid 0.2 (0.014 rad in 1,200 steps)."""

    data: str = "synthetic"
    n: int | None = None
    steps: int = 2000
    batch: int = 64
    lr: float = 2e-3
    circuit_lr: float = CIRCUIT_LR
    ema_decay: float = 0.995
    seed: int = 0
    save_every: int = 500
    #: noise-aware training: ``fake:<backend>`` whose noise surrogate sits after the circuit
    noise_aware: str | None = None
    #: the shot count the noise-aware model is trained for (the surrogate's shot noise)
    noise_shots: int = 4096
    #: weight of the consistency term |noisy - exact|^2 of the predictions (every batch runs with
    #: the exact block and with the same block outputs through the surrogate)
    noise_consistency: float = 4.0
    #: a fitted surrogate file to use instead of fitting one at the start
    surrogate: str | None = None
    #: fine-tune: start from this hybrid LDM checkpoint's (EMA) weights
    init_from: str | None = None
    #: min-SNR-gamma loss weighting (Hang et al. 2023; 5 in the paper); None: the plain MSE
    min_snr_gamma: float | None = None

    def __post_init__(self):
        check_data(self)
        check_positive_int(self, "steps", "batch", "save_every", "noise_shots")
        check_lr(self)
        check_lr(self, "circuit_lr")
        check_seed(self)
        if isinstance(self.ema_decay, bool) or not isinstance(self.ema_decay, (int, float)) \
                or not 0 <= self.ema_decay < 1:
            raise ValueError(f"DiffusionTrainConfig.ema_decay must be in [0, 1), got {self.ema_decay!r}")
        if self.noise_aware is not None and (not isinstance(self.noise_aware, str)
                                             or not self.noise_aware.startswith("fake:") or len(self.noise_aware) < 6):
            raise ValueError(f"DiffusionTrainConfig.noise_aware must be a fake target such as 'fake:fake_torino', "
                             f"got {self.noise_aware!r}")
        if isinstance(self.noise_consistency, bool) or not isinstance(self.noise_consistency, (int, float)) \
                or not 0 <= self.noise_consistency < 1e6:
            raise ValueError(f"DiffusionTrainConfig.noise_consistency must be a number >= 0 (0: the noisy pass "
                             f"only adds its task loss), got {self.noise_consistency!r}")
        if self.min_snr_gamma is not None and (isinstance(self.min_snr_gamma, bool)
                                               or not isinstance(self.min_snr_gamma, (int, float))
                                               or not 0 < self.min_snr_gamma < 1e6):
            raise ValueError(f"DiffusionTrainConfig.min_snr_gamma must be a positive number (5 in Hang et al. 2023) "
                             f"or None, got {self.min_snr_gamma!r}")
        if self.surrogate is not None and self.noise_aware is None:
            raise ValueError("DiffusionTrainConfig.surrogate is used by noise-aware training only; "
                             "give noise_aware too (e.g. 'fake:fake_torino')")


@torch.no_grad()
def encode_dataset(vae, images: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """Scaled latents of the images and of their mirror images (encoded on the VAE's device,
    returned on the CPU)."""
    device = module_device(vae)
    out = []
    for flip in (False, True):
        x = images.flip(-1) if flip else images
        out += [vae.encode_latents(x[i:i + batch].to(device)).cpu() for i in range(0, len(x), batch)]
    return torch.cat(out)


def train_diffusion(out: str | Path, vae_path: str | Path, denoiser: str, train_cfg: DiffusionTrainConfig,
                    scheduler_cfg: SchedulerConfig | None = None, num_qubits: int = DEFAULT_CIRCUIT.num_qubits,
                    reps: int = DEFAULT_CIRCUIT.reps, ansatz: str = DEFAULT_CIRCUIT.ansatz, placement: str = "qresblock",
                    patch: int = 2, encoding: str = DEFAULT_CIRCUIT.encoding, resume: bool = False,
                    progress: bool = True, *, config: DenoiserConfig | None = None,
                    callbacks: tuple[Callback, ...] = (), device: str | torch.device | None = "auto",
                    precision: str = "fp32", attention_heads: int = 0) -> dict:
    """Train (or, with ``resume``, continue) a ``denoiser`` on the VAE in ``vae_path``; returns a summary.

    A resumed run keeps the saved denoiser, scheduler and training config, except for
    ``train_cfg.steps``: the total to reach. ``config``, if given, is the denoiser's whole config (its
    kind must be ``denoiser``; the circuit arguments are then ignored). ``callbacks`` run after the
    recipe's own (checkpoints). ``device``: see :mod:`qhybrid.devices`; under ``torchrun`` the
    processes share each batch (:mod:`qhybrid.training.distributed`) and rank 0 writes checkpoints.
    ``scheduler_cfg``: None trains with :data:`RECIPE_SCHEDULER` (v-prediction). ``precision``:
    ``fp32``, or mixed precision ``bf16`` / ``fp16`` (see :mod:`qhybrid.devices`); like the
    device, a resumed run may change it. ``attention_heads``: a self-attention block of that many
    heads after the middle block of a new denoiser (0: none; see ``DenoiserConfig.attention_heads``).
    """
    out, vae_path = Path(out), Path(vae_path)
    device, parallel = distributed.setup(device)
    distributed.check_batch(train_cfg.batch, parallel)
    vae = VAE.from_checkpoint(vae_path)
    vae_header = ckpt.read_header(vae_path, "vae")
    run = open_run(out, "ldm", resume)
    if run is not None:
        saved = run.header["config"]
        run.check_same(f"a {saved['denoiser']['kind']} denoiser trained on the VAE in {saved.get('vae_path')}",
                       denoiser=(saved["denoiser"]["kind"], denoiser),
                       vae_path=(saved.get("vae_sha256"), vae_header.get("weights_sha256")))
        asked = train_cfg
        train_cfg = run.train_config(DiffusionTrainConfig, steps=train_cfg.steps)
        changed = [name for name in ("noise_aware", "surrogate", "init_from", "min_snr_gamma")
                   if getattr(asked, name) is not None and getattr(asked, name) != getattr(train_cfg, name)]
        if changed:
            raise TrainingError(f"{out} was trained with {', '.join(f'{n}={getattr(train_cfg, n)!r}' for n in changed)}; "
                                "a resumed run keeps its training settings: resume without "
                                f"{', '.join('--' + n.replace('_', '-') for n in changed)}, or train into a new --out")
        run.check_unfinished("steps", train_cfg.steps)
        dcfg = DenoiserConfig.from_dict(saved["denoiser"])
        if attention_heads and attention_heads != dcfg.attention_heads:
            raise TrainingError(f"{out} holds a denoiser with attention_heads={dcfg.attention_heads}; a resumed run "
                                "keeps its architecture: resume without --attention-heads, or train into a new --out")
        scheduler_cfg = SchedulerConfig.from_dict(saved["scheduler"])
    else:
        c, s, _ = vae.cfg.latent_shape
        if config is not None and config.kind != denoiser:
            raise ValueError(f"train_diffusion: config is for a {config.kind} denoiser, not {denoiser}")
        if config is not None and attention_heads:
            raise ValueError("train_diffusion: give attention_heads in the config, not beside it")
        dcfg = config or DenoiserConfig.for_kind(denoiser, c, s, num_qubits=num_qubits, reps=reps, ansatz=ansatz,
                                       placement=placement, patch=patch, encoding=encoding).replace(
                                           attention_heads=attention_heads)
        scheduler_cfg = scheduler_cfg or RECIPE_SCHEDULER
        if train_cfg.init_from is not None:
            dcfg, scheduler_cfg, start = _fine_tune_start(train_cfg.init_from, denoiser, vae_header)
            if attention_heads and attention_heads != dcfg.attention_heads:
                raise TrainingError(f"{train_cfg.init_from} holds a denoiser with attention_heads={dcfg.attention_heads}; "
                                    "a fine-tune keeps its architecture: drop --attention-heads")
    scheduler = NoiseScheduler(scheduler_cfg)

    torch.manual_seed(train_cfg.seed)
    data = load_dataset(train_cfg.data, vae.cfg.size, "train", n=train_cfg.n, seed=train_cfg.seed)
    latents = encode_dataset(vae.to(device), data.tensor())

    model = LatentDenoiser(dcfg)
    if train_cfg.init_from is not None:  # on resume too: the start is what circuit travel is measured from
        model.load_state_dict(start if run is None else _fine_tune_start(train_cfg.init_from, denoiser, vae_header)[2])
    initial_circuit = [w.detach().clone() for w in circuit_weights(model, trainable=False)]  # the same on resume: seeded
    layer = model.quantum_layer  # its core's initial state, for the contribution metrics' "reset"
    initial_core = {k: v.tolist() for k, v in layer.core.state_dict().items()} if layer is not None else None
    gen = torch.Generator().manual_seed(train_cfg.seed)
    T = scheduler.num_train_timesteps
    surrogate = None
    if train_cfg.noise_aware is not None:
        surrogate = _noise_surrogate(out, model, scheduler, latents, train_cfg, resumed=run is not None,
                                     write=parallel is None or parallel.is_main, parallel=parallel,
                                     progress=progress and (parallel is None or parallel.is_main))
        noisy_view = surrogate.to(device).train()  # the second pass of each batch

    def batches(_epoch: int):
        """Endless: latents, timesteps and noise, drawn from the run's generator."""
        while True:
            idx = torch.randint(0, len(latents), (train_cfg.batch,), generator=gen)
            z0 = latents[idx]
            t = torch.randint(0, T, (len(z0),), generator=gen)
            eps = torch.randn(z0.shape, generator=gen)
            yield z0, t, eps

    def mse(prediction, target, t):
        """The (min-SNR-weighted, when asked) mean squared error of a batch."""
        if train_cfg.min_snr_gamma is None:
            return torch.mean((prediction - target) ** 2)
        weight = scheduler.min_snr_weight(t, train_cfg.min_snr_gamma).to(prediction.device)
        return torch.mean(weight * torch.mean((prediction - target) ** 2, dim=tuple(range(1, target.dim()))))

    def loss_fn(batch):
        z0, t, eps = batch
        z_t = scheduler.add_noise(z0, eps, t)
        target = scheduler.target(z0, eps, t)
        if surrogate is not None:
            exact, noisy = model.forward_pair(z_t, t, noisy_view)
            task = 0.5 * (mse(exact, target, t) + mse(noisy, target, t))
            consistency = torch.mean((noisy - exact) ** 2)
            loss = task + train_cfg.noise_consistency * consistency
            return loss, {"loss": task.item(), "consistency": consistency.item()}
        loss = mse(model(z_t, t), target, t)
        return loss, {"loss": loss.item()}

    def save(trainer: Trainer) -> None:
        losses = trainer.history.get("loss", [])
        config = {
            "denoiser": dcfg.to_dict(),
            "scheduler": scheduler_cfg.to_dict(),
            **vae_reference(out, vae_path, vae_header),
            "latent_shape": list(vae.cfg.latent_shape),
            "image_size": vae.cfg.size,
        }
        extra = {"step": trainer.step, "train": train_cfg.to_dict(), "precision": precision,
                 "parameters": model.parameter_counts(),
                 "circuit_travel_rad": circuit_travel(model, initial_circuit), "initial_core": initial_core,
                 "final_loss": float(np.mean(losses[-50:])) if losses else None, "weights": "ema",
                 **({"noise_aware": _noise_record(train_cfg, surrogate)} if surrogate is not None else {})}
        save_run(out, "ldm", config, trainer.ema.model.state_dict(), extra, trainer, train_cfg)

    def save_every(trainer: Trainer) -> None:
        if trainer.step % train_cfg.save_every == 0 and trainer.step < train_cfg.steps:
            save(trainer)

    trainer = Trainer(model, lr=train_cfg.lr, total_steps=train_cfg.steps, schedule=WarmupCosine(),
                      param_groups=circuit_param_groups(model, train_cfg.circuit_lr), clip_grad_norm=1.0, ema_decay=train_cfg.ema_decay, generator=gen,
                      callbacks=[Hooks(on_step_end=save_every, on_train_end=save), *callbacks],
                      progress=progress, desc=f"train {denoiser} denoiser", postfix=("loss",),
                      device=device, parallel=parallel, precision=precision)
    if run is not None:
        trainer.load_state_dict(run.state)
    trainer.fit(loss_fn, batches)

    losses = trainer.history["loss"]
    if parallel is None or parallel.is_main:
        save_loss_curves({"training MSE": losses}, out / "loss.png",
                         title=f"latent diffusion, {denoiser} denoiser", smooth=50)
    return {
        "out": str(out), "denoiser": denoiser, "steps": train_cfg.steps, "seconds": trainer.seconds,
        "steps_per_second": trainer.steps_run / trainer.seconds if trainer.seconds > 0 else float("nan"),
        "first_loss": float(np.mean(losses[:20])), "final_loss": float(np.mean(losses[-50:])),
        "parameters": model.parameter_counts(), "latents": len(latents),
        "circuit_travel_rad": circuit_travel(model, initial_circuit),
        "device": str(device), "precision": precision,
        "processes": 1 if parallel is None else parallel.world_size,
        **({"noise_aware": _noise_record(train_cfg, surrogate)} if surrogate is not None else {}),
    }


def _fine_tune_start(folder: str, denoiser: str, vae_header: dict) -> tuple[DenoiserConfig, SchedulerConfig, dict]:
    """The denoiser config, scheduler config and (EMA) weights of the checkpoint a fine-tune starts
    from; it must be a ``denoiser`` trained on this very VAE."""
    header = ckpt.read_header(folder, "ldm")
    saved = header["config"]
    if saved["denoiser"]["kind"] != denoiser:
        raise TrainingError(f"{folder} holds a {saved['denoiser']['kind']} denoiser, not {denoiser}; "
                            f"fine-tune it with --denoiser {saved['denoiser']['kind']}")
    if saved.get("vae_sha256") != vae_header.get("weights_sha256"):
        raise TrainingError(f"{folder} was trained on another VAE ({saved.get('vae_path')}); fine-tune it on that VAE")
    weights = LatentDenoiser.from_checkpoint(folder).state_dict()
    return DenoiserConfig.from_dict(saved["denoiser"]), SchedulerConfig.from_dict(saved["scheduler"]), weights


def _noise_surrogate(out: Path, model: LatentDenoiser, scheduler: NoiseScheduler, latents: torch.Tensor,
                     train_cfg: DiffusionTrainConfig, *, resumed: bool, write: bool, parallel, progress: bool):
    """The noise surrogate of the run: the saved one on resume, the given file, or a new fit on the
    block inputs the model meets on training batches (drawn from a generator of their own, so the
    run's data order is the same as plain training's). Under torchrun the first process fits and
    writes it and the others read it after a barrier."""
    from qhybrid.models.quantum_layers import QuantumConv2d
    from qhybrid.quantum.noise_surrogate import (
        FILE_NAME,
        NoiseSurrogate,
        fit_surrogate,
        quality_line,
    )

    layer, block = model.quantum_layer, model.quantum_block
    if not isinstance(layer, QuantumConv2d) or block is None:
        raise TrainingError(f"noise-aware training needs a hybrid denoiser with a circuit in the qresblock placement; "
                            f"this one is {model.cfg.kind} ({model.cfg.placement})")
    target = train_cfg.noise_aware
    if resumed or not write:  # other torchrun processes read what the first one fitted and wrote
        distributed.barrier(parallel)
        surrogate = NoiseSurrogate.from_file(out / FILE_NAME)
    elif train_cfg.surrogate is not None:
        surrogate = NoiseSurrogate.from_file(train_cfg.surrogate)
        surrogate.check_fits(block.spec.to_dict(), target)
        surrogate = surrogate.for_shots(train_cfg.noise_shots)
    else:
        surrogate = fit_surrogate(block, target.partition(":")[2], block_inputs(model, scheduler, latents, train_cfg.seed + 1),
                                  shots=train_cfg.noise_shots, seed=train_cfg.seed,
                                  log=print if progress else None)
    if progress:
        print(f"noise surrogate: {quality_line(surrogate)}")
    if write and not resumed:
        out.mkdir(parents=True, exist_ok=True)
        surrogate.save(out / FILE_NAME)
        distributed.barrier(parallel)
    return surrogate



def check_kept_prediction(folder: str | Path, prediction: str, what: str, fix: str) -> None:
    """A denoiser kept from an earlier run (a finished demo stage, a sweep's model) must predict
    what the models trained beside it now do: a comparison mixing epsilon and v models would
    measure the prediction type, not the models. ``what`` names the caller ("this demo"), ``fix``
    says what to do instead."""
    saved = ckpt.read_header(folder).get("config", {}).get("scheduler", {}).get("prediction_type", "epsilon")
    if saved != prediction:
        raise TrainingError(f"{folder} was trained with {saved} prediction, {what} trains {prediction}; {fix}")

@torch.no_grad()
def block_inputs(model: LatentDenoiser, scheduler: NoiseScheduler, latents: torch.Tensor, seed: int,
                 rows: int = 2048) -> torch.Tensor:
    """``rows`` circuit inputs the model produces on training batches (noisy latents at random
    timesteps), drawn on the CPU from a generator seeded with ``seed`` (not the run's own); the
    model runs on its own device and the inputs are returned on the CPU."""
    gen = torch.Generator().manual_seed(seed)
    device = module_device(model)
    captured: list[torch.Tensor] = []
    handle = model.quantum_block.register_forward_hook(lambda m, inputs, output: captured.append(inputs[0].detach()))
    try:
        while sum(len(c) for c in captured) < rows:
            idx = torch.randint(0, len(latents), (16,), generator=gen)
            z0 = latents[idx]
            t = torch.randint(0, scheduler.num_train_timesteps, (len(z0),), generator=gen)
            eps = torch.randn(z0.shape, generator=gen)
            model(scheduler.add_noise(z0, eps, t).to(device), t.to(device))
    finally:
        handle.remove()
    return torch.cat(captured)[:rows].cpu()


def _noise_record(train_cfg: DiffusionTrainConfig, surrogate) -> dict:
    """What the checkpoint header says of noise-aware training."""
    from qhybrid.quantum.noise_surrogate import FILE_NAME

    return {"target": train_cfg.noise_aware, "shots": surrogate.shots, "consistency": train_cfg.noise_consistency,
            "surrogate": FILE_NAME, "calibration_date": surrogate.info.get("calibration_date"),
            "quality": surrogate.info.get("quality")}
