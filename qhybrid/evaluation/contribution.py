"""How much the circuit matters to a trained model: knock-out, training, affine and noise shares.

A quantum layer's *core* (the circuit, or an ablation's classical stand-in) maps rows of angles to
rows of outputs. Each measurement here changes only what the core returns, through a forward hook
on the core (the model's code is untouched), and asks how much the model's output moves:

* **knock-out**: every output replaced by the core's mean output over the reference set: the
  model keeps the core's average effect and loses everything it says about its input;
* **training**: the core's weights reset to their initial values, or re-randomised (drawn afresh);
  if either changes nothing, training the circuit bought nothing;
* **affine**: an affine map fitted (least squares) from the core's inputs to its outputs on the
  reference set: its R² is the share of the core's output variance a classical affine layer
  explains, and the model with the fit swapped in shows how much of the effect survives;
* **noise** (:func:`noise_share`): a noisy target's change of the samples as a share of the
  knock-out's change of the same samples.

Output changes are relative to the output's own spread over the reference set,
``RMS(f - f_changed) / RMS(f - mean(f))``: 0 when nothing changes, 100% when a model whose output
*is* the core's output gets its knock-out (its output becomes its mean). A model without a core
(the classical denoisers) scores 0 everywhere. Samples are compared chain by chain with the same
seed: the latent change on the same relative scale, the image change in grey levels (mean absolute
difference of the 8-bit images).

The reference set is fixed: held-out images encoded by the VAE, each re-noised at every timestep
of a grid with noise from a fixed seed. Bands of t report where in the reverse process the core acts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from qhybrid.config import Config
from qhybrid.data.transforms import images_to_tensor, tensor_to_images
from qhybrid.devices import module_device
from qhybrid.diffusion.sampling import sample_latents
from qhybrid.evaluation.evaluate import real_reference
from qhybrid.models.quantum_layers import QuantumBranch, QuantumConv2d, make_core

#: Bands of t (of 1,000 training timesteps) the denoiser change is also reported in.
T_BANDS = {"t < 333": (0, 333), "333 <= t < 667": (333, 667), "t >= 667": (667, 1000)}


@dataclass(frozen=True)
class ContributionConfig(Config):
    """The reference set (``n_latents`` held-out latents x ``timesteps``, noise from ``seed``) and the
    same-seed samples (``n_samples`` chains of ``sample_steps`` DDIM steps from ``seed``)."""

    n_latents: int = 32
    timesteps: tuple[int, ...] = (50, 150, 250, 350, 450, 550, 650, 750, 850, 950)
    n_samples: int = 16
    sample_steps: int = 25
    seed: int = 0
    fields: tuple[str, ...] = field(default=("knockout", "reset", "rerandomised", "affine"))

    def __post_init__(self):
        for name in ("n_latents", "n_samples", "sample_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ContributionConfig.{name} must be a positive integer, got {value!r}")
        self._fill("timesteps", tuple(int(t) for t in self.timesteps))
        if not self.timesteps or any(not 0 <= t < 1000 for t in self.timesteps):
            raise ValueError(f"ContributionConfig.timesteps must be timesteps in [0, 1000), got {self.timesteps}")
        self._fill("fields", tuple(self.fields))
        unknown = set(self.fields) - {"knockout", "reset", "rerandomised", "affine"}
        if unknown:
            raise ValueError(f"ContributionConfig.fields: unknown {sorted(unknown)}")


#: The reference set and samples ``compare``, ``noisy-eval`` and the demo measure with.
DEFAULT_CONFIG = ContributionConfig()


# --- the core and hooks on it ----------------------------------------------------------------------
def quantum_layer_of(model: nn.Module) -> QuantumConv2d | QuantumBranch | None:
    """The (one) layer of ``model`` that holds a core, or None."""
    layers = [m for m in model.modules() if isinstance(m, (QuantumConv2d, QuantumBranch))]
    if len(layers) > 1:
        raise ValueError(f"{type(model).__name__} holds {len(layers)} quantum layers; contributions are "
                         "measured for one")
    return layers[0] if layers else None


@contextlib.contextmanager
def replaced_core(core: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """While open, ``core(x)`` returns ``fn(x)`` (a forward hook; the model's code is untouched)."""
    handle = core.register_forward_hook(lambda module, args, out: fn(args[0]).to(out.device, out.dtype))
    try:
        yield
    finally:
        handle.remove()


def knocked_out(core: nn.Module, mean: torch.Tensor):
    """While open, ``core`` returns ``mean`` for every row: the knock-out."""
    return replaced_core(core, lambda rows: mean.expand(len(rows), -1))


@contextlib.contextmanager
def recorded_core(core: nn.Module) -> Iterator[list[tuple[torch.Tensor, torch.Tensor]]]:
    """While open, every ``(input rows, output rows)`` of the core is appended to the yielded list."""
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    handle = core.register_forward_hook(lambda module, args, out: seen.append((args[0].detach(), out.detach())))
    try:
        yield seen
    finally:
        handle.remove()


@contextlib.contextmanager
def core_state(core: nn.Module, state: dict[str, torch.Tensor]) -> Iterator[None]:
    """While open, the core holds ``state`` (its own weights are put back afterwards)."""
    saved = {k: v.detach().clone() for k, v in core.state_dict().items()}
    core.load_state_dict(state)
    try:
        yield
    finally:
        core.load_state_dict(saved)


def affine_fit(inputs: torch.Tensor, outputs: torch.Tensor) -> tuple[Callable[[torch.Tensor], torch.Tensor], float]:
    """Least-squares affine map inputs -> outputs and its R² (pooled over the outputs)."""
    x = torch.cat([inputs.double(), torch.ones(len(inputs), 1, dtype=torch.float64)], dim=1)
    y = outputs.double()
    beta = torch.linalg.lstsq(x, y).solution
    total = (y - y.mean(dim=0)).pow(2).sum()
    r2 = float(1 - (y - x @ beta).pow(2).sum() / total) if total > 0 else 1.0

    def fn(rows: torch.Tensor) -> torch.Tensor:
        return (torch.cat([rows.double(), torch.ones(len(rows), 1, dtype=torch.float64)], dim=1) @ beta)

    return fn, r2


# --- measurements ----------------------------------------------------------------------------------
def relative_change(base: torch.Tensor, changed: torch.Tensor) -> float:
    """``RMS(base - changed) / RMS(base - mean(base))`` with the mean over the first axis (the set)."""
    spread = (base - base.mean(dim=0, keepdim=True)).pow(2).mean().sqrt()
    return float((base - changed).pow(2).mean().sqrt() / spread) if spread > 0 else 0.0


def grey_level_change(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two sets of 8-bit images, in grey levels (0-255)."""
    return float(np.mean(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def reference_inputs(vae, scheduler, images: torch.Tensor, cfg: ContributionConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """``(z_t, t)``: the images' scaled latents (encoded on the VAE's device), each noised at every
    timestep of ``cfg.timesteps`` with noise drawn on the CPU; on the CPU."""
    with torch.no_grad():
        z0 = vae.encode_latents(images[: cfg.n_latents].to(module_device(vae))).cpu()
    gen = torch.Generator().manual_seed(cfg.seed)
    t = torch.tensor(cfg.timesteps, dtype=torch.long).repeat_interleave(len(z0))
    z0 = z0.repeat(len(cfg.timesteps), 1, 1, 1)
    noise = torch.randn(z0.shape, generator=gen)
    return scheduler.add_noise(z0, noise, t), t


def held_out_reference(vae, scheduler, source: str, cfg: ContributionConfig = DEFAULT_CONFIG
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference set every caller uses: ``cfg.n_latents`` images of the source's val split
    (never trained on), encoded and re-noised by :func:`reference_inputs`."""
    held_out = real_reference(source, vae.cfg.size, cfg.n_latents, seed=0, split="val")
    return reference_inputs(vae, scheduler, images_to_tensor(held_out), cfg)


@torch.no_grad()
def _predict(model, z_t: torch.Tensor, t: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """The model's output on ``(z_t, t)``, ``batch`` rows at a time on the model's device."""
    device = module_device(model)
    return torch.cat([model(z_t[i:i + batch].to(device), t[i:i + batch].to(device))
                      for i in range(0, len(z_t), batch)])


def _recorded_predict(model, core: nn.Module, reference) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The model's output on the reference set, and its core's input and output rows on the way."""
    with recorded_core(core) as seen:
        out = _predict(model, *reference)
    return out, torch.cat([a for a, _ in seen]), torch.cat([b for _, b in seen])


def knockout_mean(model, reference: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The mean output of ``model``'s core over the reference set: what a knock-out returns."""
    return _recorded_predict(model, quantum_layer_of(model).core, reference)[2].mean(dim=0)


@torch.no_grad()
def _samples(model, scheduler, vae, cfg: ContributionConfig) -> tuple[torch.Tensor, np.ndarray]:
    z = sample_latents(model, scheduler, cfg.n_samples, cfg.sample_steps, seed=cfg.seed, progress=False)
    return z, tensor_to_images(vae.decode_latents(z))


def _zero_report(cfg: ContributionConfig) -> dict:
    changes = {"denoiser_change": 0.0, "sample_latent_change": 0.0, "sample_image_change_grey": 0.0}
    report = {name: dict(changes) for name in cfg.fields}
    if "knockout" in report:
        report["knockout"]["denoiser_change_by_t"] = {band: 0.0 for band in T_BANDS}
    if "affine" in report:
        report["affine"]["r2"] = None
    return report


def measure_contributions(model, scheduler, vae, reference: tuple[torch.Tensor, torch.Tensor],
                          cfg: ContributionConfig = DEFAULT_CONFIG,
                          initial_core: dict[str, torch.Tensor] | None = None,
                          baseline: tuple[torch.Tensor, np.ndarray] | None = None) -> dict:
    """Every contribution metric of ``model``'s core (all 0 without a core); see the module docstring.

    ``initial_core`` is the core's state at initialisation (for ``reset``; without it ``reset`` is
    left out). ``baseline`` is the unchanged model's same-seed ``(latents, images)`` if already sampled.
    """
    layer = quantum_layer_of(model)
    report: dict = {"core": None if layer is None else layer.core_kind, "config": cfg.to_dict()}
    if layer is None:
        return {**report, **_zero_report(cfg)}
    core = layer.core
    z_t, t = reference
    base, inputs, outputs = _recorded_predict(model, core, reference)
    base_z, base_images = baseline if baseline is not None else _samples(model, scheduler, vae, cfg)

    def measure(context) -> dict:
        with context():
            changed = _predict(model, z_t, t)
            z, images = _samples(model, scheduler, vae, cfg)
        return {"denoiser_change": relative_change(base, changed),
                "denoiser_change_by_t": {band: relative_change(base[(t >= lo) & (t < hi)], changed[(t >= lo) & (t < hi)])
                                         for band, (lo, hi) in T_BANDS.items() if ((t >= lo) & (t < hi)).any()},
                "sample_latent_change": relative_change(base_z, z),
                "sample_image_change_grey": grey_level_change(base_images, images),
                "_images": images}

    mean = outputs.mean(dim=0)
    if "knockout" in cfg.fields:
        report["knockout"] = measure(lambda: knocked_out(core, mean))
    if "reset" in cfg.fields and initial_core is not None:
        report["reset"] = measure(lambda: core_state(core, initial_core))
    if "rerandomised" in cfg.fields:
        report["rerandomised"] = measure(lambda: core_state(core, _rerandomised(layer, cfg.seed)))
    if "affine" in cfg.fields:
        fit, r2 = affine_fit(inputs, outputs)
        report["affine"] = {"r2": r2, **measure(lambda: replaced_core(core, fit))}
    report["_knockout_mean"] = mean
    report["_baseline_images"] = base_images
    report["reference"] = {"rows": int(len(inputs)), "inputs_spread_rad": float(inputs.std()),
                           "outputs_spread": float(outputs.std(dim=0).mean())}
    return report


def _rerandomised(layer: QuantumConv2d | QuantumBranch, seed: int) -> dict[str, torch.Tensor]:
    """The state of a fresh core of the layer's kind, drawn from another seed than the model's."""
    return make_core(layer.core_kind, layer.spec, seed=10_000 + seed)[0].state_dict()


def public(report: dict) -> dict:
    """The report without what it keeps for callers (``_``-prefixed: images, the knock-out mean): JSON-ready."""
    return {k: ({kk: vv for kk, vv in v.items() if not kk.startswith("_")} if isinstance(v, dict) else v)
            for k, v in report.items() if not k.startswith("_")}


def noise_share(noisy_images: np.ndarray, ideal_images: np.ndarray, knockout_images: np.ndarray) -> dict:
    """A noisy target's same-seed image change as a share of the knock-out's change of the same images."""
    noise = grey_level_change(noisy_images, ideal_images)
    knockout = grey_level_change(knockout_images, ideal_images)
    return {"noise_image_change_grey": noise, "knockout_image_change_grey": knockout,
            "noise_share_of_knockout": noise / knockout if knockout > 0 else float("nan")}
