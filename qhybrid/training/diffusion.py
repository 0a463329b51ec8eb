"""Training a latent denoiser on a trained VAE's latents: EMA weights, checkpoints, ``--resume``.

The training images are encoded once (and their mirror images: left and right eyes are mirror
images of each other), then each step draws a batch of latents, a timestep and noise and regresses
the scheduler's target. The checkpoint (``kind: ldm``) stores the EMA weights as the model, the
denoiser and scheduler configs, and the VAE's path and hash; ``training_state.pt`` holds the raw
weights, optimiser and EMA for ``--resume``. It is written every ``save_every`` steps and at the end.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from qhybrid.data.loaders import load_dataset
from qhybrid.diffusion.scheduler import NoiseScheduler, SchedulerConfig
from qhybrid.errors import InputError
from qhybrid.models import checkpoint as ckpt
from qhybrid.models.denoiser import DenoiserConfig, LatentDenoiser
from qhybrid.models.vae import load_vae
from qhybrid.plots import save_loss_curves


class DiffusionTrainingError(InputError):
    """A diffusion training run cannot start or continue."""


@dataclass
class DiffusionTrainConfig:
    data: str = "synthetic"
    n: int | None = None
    steps: int = 2000
    batch: int = 64
    lr: float = 2e-3
    ema_decay: float = 0.995
    seed: int = 0
    save_every: int = 500


@torch.no_grad()
def encode_dataset(vae, images: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """Scaled latents of the images and of their mirror images."""
    out = []
    for flip in (False, True):
        x = images.flip(-1) if flip else images
        out += [vae.encode_latents(x[i:i + batch]) for i in range(0, len(x), batch)]
    return torch.cat(out)




def train_diffusion(out: str | Path, vae_path: str | Path, denoiser: str, train_cfg: DiffusionTrainConfig,
                    scheduler_cfg: SchedulerConfig | None = None, num_qubits: int = 8, reps: int = 3,
                    ansatz: str = "real_amplitudes", placement: str = "bottleneck", resume: bool = False, progress: bool = True, interrupt_after_step: int | None = None) -> dict:
    out, vae_path = Path(out), Path(vae_path)
    vae = load_vae(vae_path)
    vae_header = ckpt.read_header(vae_path, "vae")
    state = None
    if resume:
        state = ckpt.load_training_state(out)
        if state is None:
            raise DiffusionTrainingError(f"nothing to resume: {out} has no {ckpt.STATE_NAME}; start without --resume")
        header = ckpt.read_header(out, "ldm")
        saved = header["config"]
        if saved["denoiser"]["kind"] != denoiser:
            raise DiffusionTrainingError(
                f"{out} holds a {saved['denoiser']['kind']} denoiser; --resume needs the same --denoiser"
            )
        if saved.get("vae_sha256") != vae_header.get("weights_sha256"):
            raise DiffusionTrainingError(f"{out} was trained on another VAE than {vae_path}; --resume needs the same --vae")
        dcfg = DenoiserConfig.from_dict(saved["denoiser"])
        scheduler_cfg = SchedulerConfig.from_dict(saved["scheduler"])
        train_cfg = DiffusionTrainConfig(**{**state["train_config"], "steps": train_cfg.steps})
    else:
        if (out / ckpt.CONFIG_NAME).exists():
            raise DiffusionTrainingError(f"{out} already holds a checkpoint; continue it with --resume or choose another --out")
        c, s, _ = vae.cfg.latent_shape
        dcfg = DenoiserConfig.for_kind(denoiser, c, s, num_qubits=num_qubits, reps=reps, ansatz=ansatz,
                                       placement=placement)
        scheduler_cfg = scheduler_cfg or SchedulerConfig()
    scheduler = NoiseScheduler(scheduler_cfg)

    torch.manual_seed(train_cfg.seed)
    data = load_dataset(train_cfg.data, vae.cfg.size, "train", n=train_cfg.n, seed=train_cfg.seed)
    latents = encode_dataset(vae, data.tensor())

    model = LatentDenoiser(dcfg)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=1e-4)
    warmup = max(1, min(100, train_cfg.steps // 10))

    def lr_lambda(step):
        if step < warmup:
            return (step + 1) / warmup
        progress_ = (step - warmup) / max(1, train_cfg.steps - warmup)
        return 0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * min(1.0, progress_)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    gen = torch.Generator().manual_seed(train_cfg.seed)
    losses: list[float] = []
    start = 0
    if state is not None:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        losses = state["losses"]
        start = state["step"]
        if start >= train_cfg.steps:
            raise DiffusionTrainingError(f"{out} has already trained {start} steps; pass a larger --steps to continue")

    def save(step: int) -> None:
        training_state = {
            "model": model.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
            "losses": losses, "step": step, "train_config": train_cfg.__dict__,
        }
        config = {
            "denoiser": dcfg.to_dict(),
            "scheduler": scheduler_cfg.to_dict(),
            "vae_path": str(vae_path.resolve()),
            "vae_sha256": vae_header.get("weights_sha256"),
            "latent_shape": list(vae.cfg.latent_shape),
            "image_size": vae.cfg.size,
        }
        extra = {"step": step, "train": train_cfg.__dict__, "parameters": model.parameter_counts(),
                 "final_loss": float(np.mean(losses[-50:])) if losses else None, "weights": "ema"}
        ckpt.save_checkpoint(out, "ldm", config, ema.state_dict(), extra=extra, training_state=training_state)

    t0 = time.perf_counter()
    bar = tqdm(total=train_cfg.steps - start, disable=not progress, unit="step",
               desc=f"train {denoiser} denoiser")
    step = start
    T = scheduler.num_train_timesteps
    for step in range(start, train_cfg.steps):
        model.train()
        idx = torch.randint(0, len(latents), (train_cfg.batch,), generator=gen)
        z0 = latents[idx]
        t = torch.randint(0, T, (len(z0),), generator=gen)
        eps = torch.randn(z0.shape, generator=gen)
        z_t = scheduler.add_noise(z0, eps, t)
        loss = torch.mean((model(z_t, t) - scheduler.target(z0, eps, t)) ** 2)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        decay = min(train_cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - decay)
        losses.append(loss.item())
        bar.update(1)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", refresh=False)
        if (step + 1) % train_cfg.save_every == 0 and step + 1 < train_cfg.steps:
            save(step + 1)
        if interrupt_after_step is not None and step + 1 >= interrupt_after_step:
            bar.close()
            raise KeyboardInterrupt
    bar.close()
    seconds = time.perf_counter() - t0
    save(train_cfg.steps)
    save_loss_curves({"training MSE": losses}, out / "loss.png",
                     title=f"latent diffusion, {denoiser} denoiser", smooth=50)
    return {
        "out": str(out), "denoiser": denoiser, "steps": train_cfg.steps, "seconds": seconds,
        "steps_per_second": (train_cfg.steps - start) / seconds if seconds > 0 else float("nan"),
        "first_loss": float(np.mean(losses[:20])), "final_loss": float(np.mean(losses[-50:])),
        "parameters": model.parameter_counts(), "latents": len(latents),
    }
