"""Training the VAE: epochs over a fundus data set, a checkpoint after every epoch, resume.

Writes into the output folder: the checkpoint (``config.json``, ``model.safetensors``,
``training_state.pt``), ``loss.png`` and ``reconstructions.png`` (held-out images above their
reconstructions). Interrupting a run keeps the last complete epoch's checkpoint; ``resume=True``
continues it, also with more epochs than first planned (the schedule follows the new total).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from qhybrid.config import Config
from qhybrid.data.loaders import FundusDataset, load_dataset
from qhybrid.data.transforms import tensor_to_images
from qhybrid.evaluation.vessels import vessel_dice
from qhybrid.models.quantum_layers import circuit_weights
from qhybrid.models.vae import VAE, VAEConfig, latent_scale
from qhybrid.plots import save_image_grid, save_loss_curves
from qhybrid.training import distributed
from qhybrid.training.loop import (
    CIRCUIT_LR,
    Callback,
    Hooks,
    OneCycle,
    Trainer,
    TrainingError,
    check_data,
    check_lr,
    check_positive_int,
    check_seed,
    circuit_param_groups,
    circuit_travel,
    open_run,
    save_run,
)

__all__ = ["TrainingError", "VAETrainConfig", "train_vae"]


@dataclass(frozen=True)
class VAETrainConfig(Config):
    """``data``: 'synthetic', an image folder or an .npz; ``n``: training images (None: all, or
    the synthetic default); ``batch`` images per step; ``lr`` the one-cycle peak."""

    data: str = "synthetic"
    n: int | None = None
    epochs: int = 20
    batch: int = 32
    lr: float = 2e-3
    circuit_lr: float = CIRCUIT_LR
    seed: int = 0

    def __post_init__(self):
        check_data(self)
        check_positive_int(self, "epochs", "batch")
        check_lr(self)
        check_lr(self, "circuit_lr")
        check_seed(self)


def _split_holdout(train: FundusDataset, val: FundusDataset | None, seed: int):
    if val is not None and len(val) >= 4:
        return train, val
    k = max(1, len(train) // 10)
    order = np.random.default_rng(seed).permutation(len(train))
    hold, keep = order[:k], order[k:]
    sub = lambda idx: FundusDataset(train.images[idx], [train.labels[i] for i in idx], train.source, train.split)
    return sub(keep), sub(hold)


def train_vae(out: str | Path, model_cfg: VAEConfig, train_cfg: VAETrainConfig, resume: bool = False,
              progress: bool = True, *, callbacks: tuple[Callback, ...] = (),
              device: str | torch.device | None = "auto", precision: str = "fp32") -> dict:
    """Train (or, with ``resume``, continue) a VAE into ``out``; returns a summary dict.

    A resumed run keeps the saved model and training config, except for ``train_cfg.epochs``:
    the total to reach. ``callbacks`` run after the recipe's own (the checkpoint of each epoch).
    ``device``: see :mod:`qhybrid.devices`; under ``torchrun`` the processes share each batch
    (:mod:`qhybrid.training.distributed`) and rank 0 writes the checkpoint. ``precision``: ``fp32``,
    or mixed precision ``bf16`` / ``fp16`` (see :mod:`qhybrid.devices`).
    """
    out = Path(out)
    device, parallel = distributed.setup(device)
    distributed.check_batch(train_cfg.batch, parallel)
    run = open_run(out, "vae", resume)
    if run is not None:
        saved = VAEConfig.from_dict(run.header["config"])
        run.check_same(f"a {'quantum' if saved.quantum else 'classical'} VAE for {saved.size} px",
                       size=(saved.size, model_cfg.size),
                       quantum=(saved.quantum is not None, model_cfg.quantum is not None))
        model_cfg = saved
        train_cfg = run.train_config(VAETrainConfig, epochs=train_cfg.epochs)
        run.check_unfinished("epochs", train_cfg.epochs)

    torch.manual_seed(train_cfg.seed)
    train = load_dataset(train_cfg.data, model_cfg.size, "train", n=train_cfg.n, seed=train_cfg.seed)
    try:
        val = load_dataset(train_cfg.data, model_cfg.size, "val", n=64, seed=train_cfg.seed)
    except ValueError:
        val = None
    train, val = _split_holdout(train, val, train_cfg.seed)
    x_train, x_val = train.tensor(), val.tensor()

    model = VAE(model_cfg)
    initial_circuit = [w.detach().clone() for w in circuit_weights(model, trainable=False)]  # the same on resume: seeded
    steps_per_epoch = max(1, int(np.ceil(len(x_train) / train_cfg.batch)))
    gen = torch.Generator().manual_seed(train_cfg.seed)
    images_seen = 0

    def batches(epoch: int):
        """Images (half the batches mirrored: left and right eyes are mirror images) and the
        reparameterisation noise of the whole batch, all from the run's generator: the same in
        every data-parallel process (each takes its slice), saved and restored with the run, and
        independent of the memory layout of the encoder's output. (Earlier qhybrid drew the noise
        inside the forward pass with ``randn_like`` from the global RNG, so fresh runs are no
        longer bit-identical to theirs.)"""
        nonlocal images_seen
        order = torch.randperm(len(x_train), generator=gen)
        for i in range(steps_per_epoch):
            batch = x_train[order[i * train_cfg.batch:(i + 1) * train_cfg.batch]]
            if torch.rand((), generator=gen) < 0.5:
                batch = batch.flip(-1)
            images_seen += len(batch)
            yield batch, torch.randn((len(batch), *model_cfg.latent_shape), generator=gen)

    def end_of_epoch(trainer: Trainer) -> None:
        """Held-out reconstruction error, the latent scale diffusion will use, and a checkpoint."""
        model.eval()
        with torch.no_grad():
            recon_val = torch.cat([model(x_val[i:i + 64].to(device), sample=False)[0].cpu()
                                   for i in range(0, len(x_val), 64)])
        val_recon = float(torch.mean((recon_val - x_val) ** 2))
        # do the reconstructions keep the vessels? (pixel errors do not see them)
        vessel_dice_val = float(vessel_dice(tensor_to_images(x_val), tensor_to_images(recon_val)).mean())
        trainer.history.setdefault("val_recon", []).append(val_recon)
        trainer.history.setdefault("val_vessel_dice", []).append(vessel_dice_val)
        model.cfg = dataclasses.replace(model.cfg, latent_scale=latent_scale(model, x_train[:256]))
        extra = {"epoch": trainer.epoch, "train": train_cfg.to_dict(), "precision": precision,
                 "val_recon_mse": val_recon,
                 "val_vessel_dice": vessel_dice_val,
                 "parameters": model.parameter_counts(), "circuit_travel_rad": circuit_travel(model, initial_circuit)}
        save_run(out, "vae", model.cfg.to_dict(), model.state_dict(), extra, trainer, train_cfg)

    trainer = Trainer(model, lr=train_cfg.lr, total_steps=steps_per_epoch * train_cfg.epochs,
                      schedule=OneCycle(pct_start=0.1), clip_grad_norm=1.0, generator=gen,
                      param_groups=circuit_param_groups(model, train_cfg.circuit_lr),
                      callbacks=[Hooks(on_epoch_end=end_of_epoch), *callbacks], progress=progress,
                      desc=f"train {'quantum ' if model.is_quantum else ''}VAE", postfix=("recon",),
                      device=device, parallel=parallel, precision=precision)
    if run is not None:
        trainer.load_state_dict(run.state)
    trainer.fit(lambda batch: model.loss(*batch), batches, epochs=train_cfg.epochs)

    history = trainer.history
    if parallel is None or parallel.is_main:
        with torch.no_grad():
            shown = x_val[:8]
            recon = model(shown.to(device), sample=False)[0].cpu()
        save_image_grid(np.concatenate([tensor_to_images(shown), tensor_to_images(recon)]),
                        out / "reconstructions.png", ncols=len(shown))
        curves = {"train loss": history["loss"], f"train recon ({model.cfg.recon_loss.upper()})": history["recon"]}
        if "detail" in history:
            curves["train detail (Laplacian L1)"] = history["detail"]
        save_loss_curves(curves, out / "loss.png",
                         title=f"VAE training ({'quantum-enhanced' if model.is_quantum else 'classical'})", smooth=10)
    seconds = trainer.seconds
    return {
        "out": str(out),
        "epochs": trainer.epoch,
        "images": len(x_train),
        "seconds": seconds,
        "images_per_second": images_seen / seconds if seconds > 0 else float("nan"),
        "val_recon_mse": history["val_recon"][-1] if history.get("val_recon") else None,
        "val_vessel_dice": history["val_vessel_dice"][-1] if history.get("val_vessel_dice") else None,
        "first_recon": history["recon"][0] if history.get("recon") else None,
        "last_recon": float(np.mean(history["recon"][-steps_per_epoch:])) if history.get("recon") else None,
        "latent_scale": model.cfg.latent_scale,
        "parameters": model.parameter_counts(),
        "circuit_travel_rad": circuit_travel(model, initial_circuit),
        "device": str(device), "precision": precision, "processes": 1 if parallel is None else parallel.world_size,
    }
