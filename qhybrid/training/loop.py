"""The one training loop of every recipe (VAE, denoiser, validator, encoder), and resume.

A recipe owns its data and its loss; :class:`Trainer` owns everything that is the same for all of
them, so it is written (and fixed) once: AdamW (parameter groups allowed, so circuit weights can
have their own learning rate), a learning-rate schedule, gradient clipping, an optional EMA copy,
a tqdm bar, epoch- or step-based runs, and callbacks (:class:`Callback`) for what happens between
steps: validation, checkpoints, and, in the tests, a Ctrl-C at a chosen step.

Resume lives here too, in one place: :meth:`Trainer.state_dict` / :meth:`Trainer.load_state_dict`
hold everything a run needs to continue bit for bit (weights, optimiser, EMA, the recipe's torch
generator and the global torch RNG, counters, loss history), :func:`save_run` writes it next to
the checkpoint, and :func:`open_run` reads it back after checking that the folder holds the run
asked for. The schedule is *not* saved: it is a function of (step, total steps) and is rebuilt at
the resumed step for the run's (possibly larger) new total, so more epochs train at the LR they
should, instead of at the floor of the finished schedule.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from tqdm import tqdm

from qhybrid.config import Config
from qhybrid.devices import autocast, check_precision, to_device
from qhybrid.errors import InputError, one_line, param
from qhybrid.models import checkpoint as ckpt
from qhybrid.models.quantum_layers import circuit_weights
from qhybrid.training.distributed import (
    DataParallel,
    average,
    barrier,
    shard,
)

#: Layout of ``training_state.pt`` written by :func:`save_run`. Files without a version were
#: written by qhybrid 0.1 (one layout per recipe); :func:`open_run` reads those too.
STATE_VERSION = 2

C = TypeVar("C", bound=Config)


#: The circuit weights' peak learning rate (their own AdamW group), measured: see BENCHMARKS.md,
#: "circuit learning rate".
CIRCUIT_LR = 5e-2


class TrainingError(InputError):
    """A training run cannot start or continue; the message says why and what to do."""


# --- learning-rate schedules ------------------------------------------------------------------
@dataclass(frozen=True)
class OneCycle:
    """torch's ``OneCycleLR`` over the run (at least 2 steps): warm-up to each parameter group's
    own LR for ``pct_start`` of the steps, then cosine annealing to 1/250000 of it; AdamW's beta1
    cycles the other way. Its last LR holds if a run takes more optimiser steps than planned."""

    pct_start: float = 0.1

    def build(self, optimizer: torch.optim.Optimizer, total_steps: int,
              last_epoch: int = -1) -> torch.optim.lr_scheduler.LRScheduler:
        # resumed (last_epoch >= 0), torch reads each group's peak, floor and momenta from the
        # restored optimiser (written there by the first session from the same config)
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[group["lr"] for group in optimizer.param_groups],
            total_steps=max(total_steps, 2), pct_start=self.pct_start, last_epoch=last_epoch)


@dataclass(frozen=True)
class WarmupCosine:
    """Linear warm-up over ``min(100, total / 10)`` steps, then cosine decay to 5 % of the LR."""

    def build(self, optimizer: torch.optim.Optimizer, total_steps: int,
              last_epoch: int = -1) -> torch.optim.lr_scheduler.LRScheduler:
        warmup = max(1, min(100, total_steps // 10))

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(1, total_steps - warmup)
            return 0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * min(1.0, progress)))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor, last_epoch=last_epoch)


# --- EMA and callbacks ----------------------------------------------------------------------------
class EMA:
    """A copy of the model whose parameters trail the trained ones: after step ``k`` they move by
    ``1 - min(decay, (1 + k) / (10 + k))`` towards them, so early steps are not averaged with the
    random initialisation. Sampling uses it: it is smoother than the last step's weights."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        for shadow, param_ in zip(self.model.parameters(), model.parameters()):
            shadow.lerp_(param_, 1 - decay)


class Callback:
    """Hooks into a :class:`Trainer` run; override the ones you need. Each gets the trainer, whose
    ``step``, ``epoch``, ``history`` and ``model`` are up to date. The recipe's own callbacks
    (checkpoints) run before the ones passed in, so an exception raised by a passed-in callback
    (KeyboardInterrupt in the tests) comes after that step's or epoch's checkpoint."""

    def on_train_start(self, trainer: Trainer) -> None:
        """Before the first step of this call to :meth:`Trainer.fit` (a resumed run: the first new one)."""

    def on_step_end(self, trainer: Trainer) -> None:
        """After each optimiser step (``trainer.step`` counts them, resumed steps included)."""

    def on_epoch_end(self, trainer: Trainer) -> None:
        """After each epoch of an epoch-based run (``trainer.epoch`` counts completed epochs)."""

    def on_train_end(self, trainer: Trainer) -> None:
        """After the last step, once the progress bar is closed and ``trainer.seconds`` is set."""


class Hooks(Callback):
    """A callback made of plain functions, for recipes: ``Hooks(on_epoch_end=save)``."""

    def __init__(self, **hooks: Callable[[Trainer], None]):
        unknown = sorted(set(hooks) - {n for n in vars(Callback) if n.startswith("on_")})
        if unknown:
            raise TypeError(f"Hooks: unknown hook(s) {', '.join(unknown)}")
        self.__dict__.update(hooks)


# --- the loop -----------------------------------------------------------------------------------
class Trainer:
    """Optimises ``model`` on the batches a recipe yields, with the loss it computes.

    ``total_steps`` is the planned number of optimiser steps: the schedule's length, the bar's
    length, and the end of a step-based run. ``param_groups`` (torch's dicts, each with its own
    ``lr`` if it likes) replace ``model.parameters()``; every group's LR follows the schedule
    relative to its own peak. ``generator`` is the recipe's torch generator for data order and
    noise: it is saved and restored with the run, like the global torch RNG.

    ``device``: the model (and its EMA) move there and every batch is moved there before the loss;
    recipes draw their batches on the CPU, so a run draws the same data on any device. ``parallel``
    (from :func:`qhybrid.training.distributed.setup` under ``torchrun``): each process takes its
    slice of every batch, gradients and logged numbers are averaged over the processes, and only
    rank 0 shows progress and runs the callbacks (checkpoints), the others waiting for it.

    ``precision``: ``"fp32"`` (default), or ``"bf16"`` / ``"fp16"`` for mixed precision: the batch's
    forward pass and loss run under autocast, the weights, optimiser and EMA stay float32, and
    ``fp16`` scales the loss (its scaler's state is saved with the run); see :mod:`qhybrid.devices`.
    """

    def __init__(self, model: torch.nn.Module, *, lr: float, total_steps: int,
                 schedule: OneCycle | WarmupCosine, param_groups: Sequence[dict] | None = None,
                 weight_decay: float = 1e-4, clip_grad_norm: float | None = None,
                 ema_decay: float | None = None, generator: torch.Generator | None = None,
                 callbacks: Iterable[Callback] = (), progress: bool = True, desc: str = "train",
                 postfix: Sequence[str] = ("loss",), device: torch.device | None = None,
                 parallel: DataParallel | None = None, precision: str = "fp32"):
        self.device = torch.device("cpu") if device is None else device
        self.precision = check_precision(precision)
        self.scaler = torch.amp.GradScaler(self.device.type) if precision == "fp16" else None
        self.parallel = parallel
        self.model = model.to(self.device)
        self.ema = EMA(model, ema_decay) if ema_decay is not None else None
        self.optimizer = torch.optim.AdamW(list(param_groups) if param_groups is not None else model.parameters(),
                                           lr=lr, weight_decay=weight_decay)
        self.total_steps = total_steps
        self.schedule = schedule
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        self.clip_grad_norm = clip_grad_norm
        self.generator = generator
        self.callbacks = list(callbacks)
        self.progress = progress and (parallel is None or parallel.is_main)
        self.desc, self.postfix = desc, tuple(postfix)
        self.step = 0  # optimiser steps taken, over all sessions of the run
        self.epoch = 0  # completed epochs (epoch-based runs)
        self.history: dict[str, list[float]] = {}
        self.seconds = 0.0  # wall time of the last fit()
        self.steps_run = 0  # steps taken by the last fit()
        self._bar = None

    # --- resume -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this run bit for bit (the schedule is rebuilt, not saved)."""
        state = {"version": STATE_VERSION, "model": self.model.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "step": self.step, "epoch": self.epoch,
                 "history": self.history, "torch_rng": torch.get_rng_state()}
        if self.ema is not None:
            state["ema"] = self.ema.model.state_dict()
        if self.generator is not None:
            state["generator"] = self.generator.get_state()
        if self.scaler is not None:
            state["grad_scaler"] = self.scaler.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` (as :func:`open_run` returns it). Call it after the
        model was built exactly as in the first session, so the RNG consumption matches."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None:
            self.ema.model.load_state_dict(state["ema"])
        if self.generator is not None:
            self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if self.scaler is not None and "grad_scaler" in state:  # a run that was fp16 before
            self.scaler.load_state_dict(state["grad_scaler"])
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.history = {k: list(v) for k, v in state["history"].items()}

    def _build_schedule(self) -> torch.optim.lr_scheduler.LRScheduler:
        """The schedule at the current step for the current total: a function of (step, total),
        so a run resumed with more steps follows the longer schedule from where it stands."""
        try:
            return self.schedule.build(self.optimizer, self.total_steps, last_epoch=self.step - 1)
        except KeyError as exc:  # a saved optimiser without the schedule's settings ('initial_lr', ...)
            reason = one_line(str(exc.args[0]) if exc.args else repr(exc))  # str(KeyError) is a repr: no line breaks
            raise TrainingError(
                f"cannot rebuild the learning-rate schedule at step {self.step} from the saved optimiser state "
                f"({reason}); start a new run with another {param('out')}"
            ) from None

    # --- training -----------------------------------------------------------------------------
    def fit(self, loss_fn: Callable[[Any], tuple[torch.Tensor, dict[str, float]]],
            batches: Callable[[int], Iterable[Any]], *, epochs: int | None = None) -> None:
        """Train from the current step: ``epochs`` epochs of ``batches(epoch)`` (each a finite
        iterable), or, without ``epochs``, until ``total_steps`` steps of ``batches(0)`` (which
        may be endless; no batch is drawn beyond the last step, so the RNG states saved at the end
        are the ones the last step left). ``loss_fn(batch)`` returns the loss to minimise and
        numbers to log (appended to ``history`` by name)."""
        self.scheduler = self._build_schedule()
        first = self.step
        t0 = time.perf_counter()
        self._bar = tqdm(total=max(0, self.total_steps - self.step), disable=not self.progress,
                         desc=self.desc, unit="step")
        try:
            self._call("on_train_start")
            if epochs is None:
                self._steps(loss_fn, iter(batches(self.epoch)), limit=self.total_steps, show_epoch=False)
            else:
                for epoch in range(self.epoch, epochs):
                    self._steps(loss_fn, iter(batches(epoch)), limit=None, show_epoch=True)
                    self.epoch = epoch + 1
                    self._call("on_epoch_end")
        finally:
            self._bar.close()
        self.seconds = time.perf_counter() - t0
        self.steps_run = self.step - first
        self._call("on_train_end")

    def _steps(self, loss_fn, batches: Iterator, limit: int | None, show_epoch: bool) -> None:
        while limit is None or self.step < limit:
            batch = next(batches, _END)
            if batch is _END:
                return
            self.model.train()
            if self.parallel is not None:
                batch, weight = shard(batch, self.parallel)
            with autocast(self.device, self.precision):
                loss, logs = loss_fn(to_device(batch, self.device))
            self.optimizer.zero_grad()
            (loss if self.scaler is None else self.scaler.scale(loss)).backward()
            if self.parallel is not None:
                logs = average(self.model.parameters(), logs, self.parallel, weight)
            if self.scaler is not None:  # clip the true gradients; a step with inf/NaN ones is skipped
                self.scaler.unscale_(self.optimizer)
            if self.clip_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad_norm)
            if self.scaler is None:
                self.optimizer.step()
            else:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            # a fixed-length schedule (OneCycleLR) refuses steps past its end: it holds its last LR
            if self.scheduler.last_epoch + 1 < getattr(self.scheduler, "total_steps", math.inf):
                if self.scaler is None:
                    self.scheduler.step()
                else:  # a step the scaler skipped (inf gradients) still advances the schedule, as the step
                    # counter does, so a resumed run's rebuilt schedule is the one it left; torch warns about it
                    with warnings.catch_warnings():
                        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")
                        self.scheduler.step()
            if self.ema is not None:
                self.ema.update(self.model, self.step)
            for name, value in logs.items():
                self.history.setdefault(name, []).append(value)
            self.step += 1
            self._show(show_epoch)
            self._call("on_step_end")

    def _show(self, show_epoch: bool) -> None:
        self._bar.update(1)
        if self._bar.disable:
            return
        shown = {"epoch": self.epoch + 1} if show_epoch else {}
        for name in self.postfix:
            if self.history.get(name):
                shown[name] = f"{np.mean(self.history[name][-20:]):.4f}"
        self._bar.set_postfix(shown, refresh=False)

    def _call(self, hook: str) -> None:
        if self.parallel is None or self.parallel.is_main:
            for callback in self.callbacks:
                getattr(callback, hook)(self)
        barrier(self.parallel)  # the others wait while rank 0 validates or writes a checkpoint


_END = object()


# --- run folders: new, resumed, saved -------------------------------------------------------------
@dataclass
class Resume:
    """A run folder to continue: its checkpoint header and its training state (today's layout)."""

    out: Path
    header: dict
    state: dict

    def check_same(self, saved_run: str, **same: tuple[Any, Any]) -> None:
        """Refuse to continue another run: ``same`` maps a parameter to (saved value, asked value);
        ``saved_run`` says what the folder holds (``"a classical VAE for 32 px"``)."""
        differ = [name for name, (saved, asked) in same.items() if saved != asked]
        if differ:
            raise TrainingError(
                f"{self.out} holds {saved_run}; resuming it needs the same "
                f"{' and '.join(param(name) for name in differ)} (or choose another {param('out')})"
            )

    def train_config(self, cls: type[C], **changes) -> C:
        """The saved training config with ``changes`` (the new length of the run)."""
        try:
            return cls.from_dict(self.state["train_config"]).replace(**changes)
        except (KeyError, TypeError, ValueError) as exc:
            raise TrainingError(
                f"{self.out / ckpt.STATE_NAME} has no valid training config ({one_line(exc, with_type=True)}); "
                f"start a new run with another {param('out')}"
            ) from None

    def check_unfinished(self, unit: str, total: int) -> None:
        """Refuse a resume that has nothing left to do (``unit``: ``"epochs"`` or ``"steps"``)."""
        done = self.state["epoch" if unit == "epochs" else "step"]
        if done >= total:
            raise TrainingError(
                f"{self.out} has already trained {done} {unit}; pass a larger {param(unit)} to continue"
            )


def check_new_folder(out: Path, resumable: bool = True) -> None:
    """Refuse to start a run in a folder that holds a checkpoint (a finished or resumable run)."""
    if (out / ckpt.CONFIG_NAME).exists():
        fix = f"continue it with {param('resume', True)} or choose" if resumable else "choose"
        raise TrainingError(f"{out} already holds a checkpoint; {fix} another {param('out')}")


def open_run(out: Path, kind: str, resume: bool) -> Resume | None:
    """``None`` for a new run (refusing a folder that already holds a checkpoint), or, with
    ``resume``, the ``kind`` checkpoint and training state in ``out`` to continue."""
    if not resume:
        check_new_folder(out)
        return None
    state = ckpt.load_training_state(out)
    if state is None:
        raise TrainingError(f"nothing to resume: {out} has no {ckpt.STATE_NAME}; start without {param('resume')}")
    header = ckpt.read_header(out, kind)
    return Resume(out, header, _current_layout(state, out / ckpt.STATE_NAME))


def loss_history(out: Path) -> dict[str, list[float]]:
    """The per-step (and per-epoch) curves of the run in ``out``, from its training state in any
    layout (e.g. ``{"loss": [...]}`` for a denoiser); ``{}`` for a folder without one."""
    state = ckpt.load_training_state(out)
    return {} if state is None else dict(_current_layout(state, Path(out) / ckpt.STATE_NAME)["history"])


def _current_layout(state: dict, path: Path) -> dict:
    """A training state in today's layout. qhybrid 0.1 wrote one layout per recipe: the VAE's has
    ``epoch`` and a ``history`` dict but no ``step`` (one loss per step, so it is the number of
    losses), the denoiser's has ``step`` and a ``losses`` list; both carry a ``scheduler`` state,
    which is ignored: the schedule is rebuilt from (step, total)."""
    if state.get("version") == STATE_VERSION:
        return state
    if "version" in state:
        raise TrainingError(
            f"{path} has training-state version {state['version']}; this qhybrid reads {STATE_VERSION} "
            f"and the unversioned 0.1 layout; start a new run with another {param('out')}"
        )
    need = ("model", "optimizer", "torch_rng", "train_config")
    missing = [k for k in need if k not in state] + ([] if "history" in state or "losses" in state else ["history"])
    if missing:
        raise TrainingError(
            f"{path} lacks {', '.join(missing)} and cannot be resumed; start a new run with another {param('out')}"
        )
    upgraded = {k: v for k, v in state.items() if k not in ("scheduler", "losses")}
    if "losses" in state:  # the denoiser's
        upgraded["history"] = {"loss": list(state["losses"])}
        upgraded.setdefault("epoch", 0)
    else:  # the VAE's
        upgraded["step"] = len(state["history"].get("loss", []))
    upgraded["version"] = STATE_VERSION
    return upgraded


def save_run(out: Path, kind: str, config: dict, weights: dict[str, torch.Tensor], extra: dict,
             trainer: Trainer, train_cfg: Config) -> None:
    """Write the checkpoint (``weights`` under ``config``) and, before it, the training state that
    :func:`open_run` continues (see :func:`qhybrid.models.checkpoint.save_checkpoint`)."""
    state = {**trainer.state_dict(), "train_config": train_cfg.to_dict()}
    ckpt.save_checkpoint(out, kind, config, weights, extra=extra, training_state=state)


# --- config checks shared by the recipes' configs -----------------------------------------------
def circuit_param_groups(model: torch.nn.Module, circuit_lr: float) -> list[dict] | None:
    """Two AdamW groups when ``model`` holds trainable circuit weights: the classical weights at the
    run's LR and the circuit weights at ``circuit_lr`` without weight decay (angles: decay would pull
    them towards 0, not towards a simpler model). None (one group) otherwise."""
    circuit = circuit_weights(model)
    if not circuit:
        return None
    ids = {id(p) for p in circuit}
    return [{"params": [p for p in model.parameters() if id(p) not in ids]},
            {"params": circuit, "lr": circuit_lr, "weight_decay": 0.0}]


def circuit_travel(model: torch.nn.Module, initial: list[torch.Tensor]) -> float | None:
    """Mean absolute change (radians) of the circuit weights since ``initial``; None without circuit."""
    now = circuit_weights(model, trainable=False)
    if not now:
        return None
    return float(torch.cat([(w.detach().cpu() - w0.cpu()).abs().flatten() for w, w0 in zip(now, initial)]).mean())


def check_positive_int(cfg: Config, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{type(cfg).__name__}.{name} must be a positive integer, got {value!r}")


def check_seed(cfg: Config) -> None:
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int) or cfg.seed < 0:
        raise ValueError(f"{type(cfg).__name__}.seed must be a non-negative integer, got {cfg.seed!r}")


def check_lr(cfg: Config, name: str = "lr") -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"{type(cfg).__name__}.{name} must be a positive number, got {value!r}")


def check_data(cfg: Config) -> None:
    """``data`` names a source ('synthetic' or a path) and ``n``, when given, caps it at a positive count."""
    if not isinstance(cfg.data, str) or not cfg.data:
        raise ValueError(f"{type(cfg).__name__}.data must be 'synthetic' or a path, got {cfg.data!r}")
    if cfg.n is not None:
        check_positive_int(cfg, "n")
