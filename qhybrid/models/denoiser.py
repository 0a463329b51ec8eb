"""Latent denoisers: ``classical``, ``classical-large`` and ``hybrid``.

All three are the same small time-conditioned U-Net on the VAE's latents (two resolutions,
residual blocks with FiLM time conditioning). They differ only in the bottleneck branch, so a
comparison measures the branch and nothing else:

* ``hybrid``: pooled bottleneck features and the time embedding -> classical projection to one
  angle per qubit -> :class:`QuantumBlock` -> projection back, added (gated) to every bottleneck
  position; the U-Net around it is the classical skip path;
* ``classical``: the same branch with a small classical MLP (``num_qubits`` hidden units) in place of
  the circuit, so the parameter counts are about equal;
* ``classical-large``: the classical variant with twice the channels (about 3.7x the parameters).

Two ablations replace only the quantum part of ``hybrid`` (see :mod:`qhybrid.models.quantum_layers`):
``hybrid-classical-core`` (a classical layer of the block's widths and exact parameter count) and
``hybrid-frozen`` (the circuit weights frozen at initialisation). ``placement`` puts the branch
after the middle block (``bottleneck``, default) or inside it as a QResBlock (``qresblock``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from qhybrid.config import Config
from qhybrid.errors import InputError
from qhybrid.models import checkpoint as ckpt
from qhybrid.models.layers import ResBlock, group_norm, timestep_embedding
from qhybrid.models.quantum_layers import QResBlock, QuantumBranch
from qhybrid.quantum import CircuitSpec, QuantumBlock

#: The demo's three denoisers.
DENOISERS = ("classical", "classical-large", "hybrid")
#: Ablations of the hybrid: only the quantum core changes.
ABLATIONS = ("hybrid-classical-core", "hybrid-frozen")
ALL_DENOISERS = DENOISERS + ABLATIONS
#: Denoiser kind -> the core of its branch (qhybrid.models.quantum_layers.CORES).
CORE_OF = {"classical": "mlp", "classical-large": "mlp", "hybrid": "quantum",
           "hybrid-classical-core": "matched", "hybrid-frozen": "frozen"}
PLACEMENTS = ("bottleneck", "qresblock")


@dataclass(frozen=True)
class DenoiserConfig(Config):
    """Saved next to the weights. ``quantum`` is the CircuitSpec dict of the hybrid's block (filled
    with the default circuit for the hybrid kinds when not given)."""

    kind: str = "hybrid"
    latent_channels: int = 4
    latent_size: int = 16
    channels: int = 24
    time_dim: int = 64
    quantum: dict | None = None
    gate_init: float = 0.5
    placement: str = "bottleneck"

    def __post_init__(self):
        if self.kind not in ALL_DENOISERS:
            raise ValueError(f"unknown denoiser {self.kind!r}; allowed: {', '.join(ALL_DENOISERS)}")
        if self.placement not in PLACEMENTS:
            raise ValueError(f"unknown placement {self.placement!r}; allowed: {', '.join(PLACEMENTS)}")
        if self.kind.startswith("hybrid") and self.quantum is None:
            self._fill("quantum", CircuitSpec(num_qubits=8, reps=3).to_dict())
        if self.quantum is not None:
            CircuitSpec.from_dict(self.quantum)
        if self.latent_size % 2:
            raise ValueError(f"the denoiser needs an even latent size, got {self.latent_size}")

    @classmethod
    def for_kind(cls, kind: str, latent_channels: int, latent_size: int, num_qubits: int = 8,
                 reps: int = 3, ansatz: str = "real_amplitudes", placement: str = "bottleneck") -> "DenoiserConfig":
        spec = CircuitSpec(num_qubits=num_qubits, reps=reps, ansatz=ansatz).to_dict()
        channels = 48 if kind == "classical-large" else 24
        return cls(kind=kind, latent_channels=latent_channels, latent_size=latent_size,
                   channels=channels, quantum=spec, placement=placement)


class LatentDenoiser(ckpt.FromCheckpoint, nn.Module):
    """Predicts the noise (or v) of a noisy latent ``z_t`` at timestep ``t``.
    ``LatentDenoiser.from_checkpoint(folder)`` loads the (EMA) weights of an LDM checkpoint; the
    whole model with its scheduler and VAE is :class:`qhybrid.diffusion.pipeline.LatentDiffusion`."""

    checkpoint_kind = "ldm"
    config_class = DenoiserConfig

    @classmethod
    def config_dict(cls, header: dict) -> dict:
        return header["config"]["denoiser"]

    def __init__(self, cfg: DenoiserConfig):
        super().__init__()
        self.cfg = cfg
        c, tdim = cfg.channels, cfg.time_dim
        self.time_mlp = nn.Sequential(nn.Linear(tdim, tdim), nn.SiLU(), nn.Linear(tdim, tdim))
        self.conv_in = nn.Conv2d(cfg.latent_channels, c, 3, padding=1)
        self.down1 = ResBlock(c, c, tdim)
        self.downsample = nn.Conv2d(c, 2 * c, 3, stride=2, padding=1)
        self.down2 = ResBlock(2 * c, 2 * c, tdim)
        spec = CircuitSpec.from_dict(cfg.quantum) if cfg.quantum else CircuitSpec(num_qubits=8, reps=3)
        core = CORE_OF[cfg.kind]
        if cfg.placement == "qresblock":
            self.mid = QResBlock(2 * c, 2 * c, tdim, spec, core, cfg.gate_init)
            self.branch = None
        else:
            self.mid = ResBlock(2 * c, 2 * c, tdim)
            self.branch = QuantumBranch(2 * c, tdim, spec, core, cfg.gate_init)
        self.mid2 = ResBlock(2 * c, 2 * c, tdim)
        self.upsample = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(2 * c, c, 3, padding=1))
        self.up1 = ResBlock(2 * c, c, tdim)
        self.norm_out = group_norm(c)
        self.conv_out = nn.Conv2d(c, cfg.latent_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    @property
    def quantum_branch(self) -> QuantumBranch:
        return self.branch if self.branch is not None else self.mid.branch

    @property
    def quantum_block(self) -> QuantumBlock | None:
        core = self.quantum_branch.core
        return core if isinstance(core, QuantumBlock) else None

    def to_target(self, target: str, **options) -> "LatentDenoiser":
        """Evaluate the quantum block on another execution target (no-op for classical models)."""
        if self.quantum_block is not None:
            self.quantum_block.to_target(target, **options)
        elif target != "ideal":
            raise InputError(f"the {self.cfg.kind} denoiser has no quantum block; its target must be 'ideal' "
                             "(sample a hybrid model on fake: or ibm: targets)")
        return self

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        shape = (self.cfg.latent_channels, self.cfg.latent_size, self.cfg.latent_size)
        if z.dim() != 4 or tuple(z.shape[1:]) != shape:
            raise ValueError(f"denoiser expects latents of shape (batch, {', '.join(map(str, shape))}), got {tuple(z.shape)}")
        temb = self.time_mlp(timestep_embedding(t, self.cfg.time_dim))
        h0 = self.down1(self.conv_in(z), temb)
        h = self.down2(self.downsample(h0), temb)
        h = self.mid(h, temb)
        if self.branch is not None:
            h = self.branch(h, temb)
        h = self.mid2(h, temb)
        h = self.up1(torch.cat([self.upsample(h), h0], dim=1), temb)
        return self.conv_out(F.silu(self.norm_out(h)))

    def parameter_counts(self) -> dict:
        total = sum(p.numel() for p in self.parameters())
        quantum = self.quantum_block.weight.numel() if self.quantum_block is not None else 0
        branch = self.quantum_branch
        return {"total": total, "trainable": sum(p.numel() for p in self.parameters() if p.requires_grad),
                "quantum_circuit_weights": quantum, "branch": sum(p.numel() for p in branch.parameters()),
                "branch_core": sum(p.numel() for p in branch.core.parameters())}


def circuit_spec_of(folder: str | Path) -> tuple[CircuitSpec, str]:
    """``(CircuitSpec, name)`` of the circuit in a hybrid LDM (``hybrid`` or ``hybrid-frozen``: the
    kinds whose core is a circuit) or a quantum VAE checkpoint, read from its header without loading
    weights; ``name`` is ``<run>_<model folder>``."""
    folder = Path(folder)
    header = ckpt.read_header(folder, ("ldm", "vae"))
    cfg = header["config"]
    if header["kind"] == "ldm":
        kind = cfg.get("denoiser", {}).get("kind")
        spec = cfg["denoiser"].get("quantum") if CORE_OF.get(kind) in ("quantum", "frozen") else None
    else:
        kind, spec = "vae", cfg.get("quantum")
    if spec is None:
        raise InputError(f"{folder} has no quantum block (a {kind} model); give a hybrid LDM or a quantum VAE")
    return CircuitSpec.from_dict(spec), f"{folder.parent.name}_{folder.name}"
