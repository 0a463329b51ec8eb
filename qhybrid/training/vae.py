"""Training the VAE: epochs over a fundus data set, a checkpoint after every epoch, ``--resume``.

Writes into the output folder: the checkpoint (``config.json``, ``model.safetensors``,
``training_state.pt``), ``loss.png`` and ``reconstructions.png`` (held-out images above their
reconstructions). Interrupting a run keeps the last complete epoch's checkpoint.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from qhybrid.data.loaders import FundusDataset, load_dataset
from qhybrid.data.transforms import tensor_to_images
from qhybrid.errors import InputError
from qhybrid.models import checkpoint as ckpt
from qhybrid.models.vae import VAE, VAEConfig, latent_scale
from qhybrid.plots import save_image_grid, save_loss_curves


@dataclass
class VAETrainConfig:
    data: str = "synthetic"
    n: int | None = None
    epochs: int = 20
    batch: int = 32
    lr: float = 2e-3
    seed: int = 0


class TrainingError(InputError):
    """A training run cannot start or continue; the message says why."""






def _split_holdout(train: FundusDataset, val: FundusDataset | None, seed: int):
    if val is not None and len(val) >= 4:
        return train, val
    k = max(1, len(train) // 10)
    order = np.random.default_rng(seed).permutation(len(train))
    hold, keep = order[:k], order[k:]
    sub = lambda idx: FundusDataset(train.images[idx], [train.labels[i] for i in idx], train.source, train.split)  # noqa: E731
    return sub(keep), sub(hold)


def train_vae(out: str | Path, model_cfg: VAEConfig, train_cfg: VAETrainConfig, resume: bool = False,
              progress: bool = True, interrupt_after_epoch: int | None = None) -> dict:
    """Train (or continue training) a VAE into ``out``; returns a summary dict."""
    out = Path(out)
    state = None
    if resume:
        state = ckpt.load_training_state(out)
        if state is None:
            raise TrainingError(f"nothing to resume: {out} has no {ckpt.STATE_NAME}; start without --resume")
        header = ckpt.read_header(out, "vae")
        saved_cfg = VAEConfig.from_dict(header["config"])
        if (saved_cfg.size, saved_cfg.quantum is not None) != (model_cfg.size, model_cfg.quantum is not None):
            raise TrainingError(
                f"{out} holds a {'quantum' if saved_cfg.quantum else 'classical'} VAE for "
                f"{saved_cfg.size} px; --resume must use the same --size and --quantum setting"
            )
        model_cfg = saved_cfg
        train_cfg = VAETrainConfig(**{**state["train_config"], "epochs": train_cfg.epochs})
    elif (out / ckpt.CONFIG_NAME).exists():
        raise TrainingError(f"{out} already holds a checkpoint; continue it with --resume or choose another --out")

    torch.manual_seed(train_cfg.seed)
    train = load_dataset(train_cfg.data, model_cfg.size, "train", n=train_cfg.n, seed=train_cfg.seed)
    try:
        val = load_dataset(train_cfg.data, model_cfg.size, "val", n=64, seed=train_cfg.seed)
    except ValueError:
        val = None
    train, val = _split_holdout(train, val, train_cfg.seed)
    x_train, x_val = train.tensor(), val.tensor()

    model = VAE(model_cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=1e-4)
    steps_per_epoch = max(1, int(np.ceil(len(x_train) / train_cfg.batch)))
    total_steps = steps_per_epoch * train_cfg.epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=train_cfg.lr, total_steps=max(total_steps, 2),
                                                pct_start=0.1)
    history = {"loss": [], "recon": [], "kl": [], "val_recon": []}
    start_epoch = 0
    gen = torch.Generator().manual_seed(train_cfg.seed)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        try:
            sched.load_state_dict(state["scheduler"])
        except (KeyError, ValueError):
            pass
        history = state["history"]
        start_epoch = state["epoch"]
        gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if start_epoch >= train_cfg.epochs:
            raise TrainingError(
                f"{out} has already trained {start_epoch} epochs; pass a larger --epochs to continue"
            )

    t0 = time.perf_counter()
    images_seen = 0
    bar = tqdm(total=(train_cfg.epochs - start_epoch) * steps_per_epoch, disable=not progress,
               desc=f"train {'quantum ' if model.is_quantum else ''}VAE", unit="step")
    epoch = start_epoch
    for epoch in range(start_epoch, train_cfg.epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=gen)
        for i in range(steps_per_epoch):
            batch = x_train[order[i * train_cfg.batch:(i + 1) * train_cfg.batch]]
            if torch.rand((), generator=gen) < 0.5:  # left/right eyes are mirror images
                batch = batch.flip(-1)
            loss, parts = model.loss(batch)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            if sched.last_epoch + 1 < sched.total_steps:
                sched.step()
            for key in ("loss", "recon", "kl"):
                history[key].append(parts[key])
            images_seen += len(batch)
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, recon=f"{parts['recon']:.4f}", refresh=False)
        model.eval()
        with torch.no_grad():
            val_recon = float(torch.mean((model(x_val, sample=False)[0] - x_val) ** 2))
        history["val_recon"].append(val_recon)
        model.cfg.latent_scale = latent_scale(model, x_train[:256])
        _save(out, model, opt, sched, train_cfg, history, epoch + 1, gen)
        if interrupt_after_epoch is not None and epoch + 1 >= interrupt_after_epoch:
            bar.close()
            raise KeyboardInterrupt  # used by the tests to simulate Ctrl-C after a saved epoch
    bar.close()
    seconds = time.perf_counter() - t0

    with torch.no_grad():
        shown = x_val[:8]
        recon = model(shown, sample=False)[0]
    save_image_grid(np.concatenate([tensor_to_images(shown), tensor_to_images(recon)]),
                    out / "reconstructions.png", ncols=len(shown))
    save_loss_curves({"train loss": history["loss"], "train recon (MSE)": history["recon"]},
                     out / "loss.png", title=f"VAE training ({'quantum-enhanced' if model.is_quantum else 'classical'})",
                     smooth=10)
    return {
        "out": str(out),
        "epochs": epoch + 1,
        "images": len(x_train),
        "seconds": seconds,
        "images_per_second": images_seen / seconds if seconds > 0 else float("nan"),
        "val_recon_mse": history["val_recon"][-1] if history["val_recon"] else None,
        "first_recon": history["recon"][0] if history["recon"] else None,
        "last_recon": float(np.mean(history["recon"][-steps_per_epoch:])) if history["recon"] else None,
        "latent_scale": model.cfg.latent_scale,
        "parameters": model.parameter_counts(),
    }


def _save(out, model, opt, sched, train_cfg, history, epoch, gen) -> None:
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "epoch": epoch,
        "history": history,
        "generator": gen.get_state(),
        "torch_rng": torch.get_rng_state(),
        "train_config": train_cfg.__dict__,
    }
    extra = {"epoch": epoch, "train": train_cfg.__dict__, "val_recon_mse": history["val_recon"][-1],
             "parameters": model.parameter_counts()}
    ckpt.save_checkpoint(out, "vae", model.cfg.to_dict(), model.state_dict(), extra=extra, training_state=state)
