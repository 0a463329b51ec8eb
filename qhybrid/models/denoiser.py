"""Latent denoisers: ``classical``, ``classical-large``, ``hybrid`` and the hybrid's ablations.

All are the same small time-conditioned U-Net on the VAE's latents (two resolutions, residual
blocks with FiLM time conditioning; optionally a self-attention block after the middle block,
``attention_heads``, off by default). They differ only in the middle block at the lowest resolution:

* ``hybrid``: a :class:`~qhybrid.models.quantum_layers.QResBlock` whose own path runs through a
  :class:`~qhybrid.models.quantum_layers.QuantumConv2d`: the circuit at every ``patch`` x ``patch``
  patch of the 8x8 bottleneck (16 positions at the default patch 2), conditioned on t;
* ``classical``: a plain residual block there (its second convolution in place of the circuit);
* ``classical-large``: the classical U-Net with twice the channels (about 3.7x the parameters).

Three ablations replace only the circuit, in the same QResBlock (see
:mod:`qhybrid.models.quantum_layers`): ``hybrid-classical-core`` (a classical layer of the circuit's
widths, output range and exact parameter count), ``hybrid-frozen`` (the circuit weights frozen at
initialisation) and ``hybrid-affine-core`` (a trained affine map of the circuit's widths). Every
variant draws the weights outside its middle block from the same stream, the middle block from a
stream of its own and the core from the core's own generator, so two variants with the same seed
start from identical weights except where they differ.

Latents larger than 16 x 16 (the 4 x 32 x 32 of ``fundus-vae-64-l32``) get ``outer_levels``: one more
resolution per doubling above 16, so the bottleneck stays 8 x 8 and the circuit runs at the same 16
positions per latent at the same cost. An outer level is a convolutional stem at half the width of
the level inside it: a strided convolution down, a transposed convolution up, the skip joined by one
convolution; no residual blocks, because at 32 x 32 they are what costs. Measured on 4 x 32 x 32
latents (``benchmarks/latent32_denoisers.py``: the demo's classical recipe, one seed each): the
stem trained in 91 s to FD 53 and 98% gradable; a full level with residual blocks in 126 s to FD 44
and 97% (intervals overlapping the stem's); folding 2 x 2 latent patches into channels instead
(DiT's patchify) in 72 s to FD 149 and 36%.

``placement`` ``qresblock`` is the layout above (the default). ``bottleneck`` and
``gated-qresblock`` are the legacy layouts of qhybrid 0.1 and 0.2 (one gated, global branch after or
inside the middle block), kept so their checkpoints load.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from qhybrid.config import Config
from qhybrid.errors import InputError
from qhybrid.models import checkpoint as ckpt
from qhybrid.models.layers import (
    ResBlock,
    SelfAttention,
    group_norm,
    timestep_embedding,
)
from qhybrid.models.quantum_layers import (
    ANGLE_SCALE,
    CIRCUIT_CORES,
    GatedQResBlock,
    QResBlock,
    QuantumBranch,
    QuantumConv2d,
)
from qhybrid.quantum import CircuitSpec, QuantumBlock

#: The demo's three denoisers.
DENOISERS = ("classical", "classical-large", "hybrid")
#: Ablations of the hybrid: only the quantum core changes.
ABLATIONS = ("hybrid-classical-core", "hybrid-frozen", "hybrid-affine-core")
ALL_DENOISERS = DENOISERS + ABLATIONS
#: Denoiser kind -> the core of its quantum layer (qhybrid.models.quantum_layers.CORES). The
#: classical kinds have no quantum layer in the ``qresblock`` placement; in the legacy placements
#: their branch has the ``mlp`` core.
CORE_OF = {"classical": "mlp", "classical-large": "mlp", "hybrid": "quantum",
           "hybrid-classical-core": "matched", "hybrid-frozen": "frozen", "hybrid-affine-core": "affine"}
PLACEMENTS = ("qresblock", "bottleneck", "gated-qresblock")
#: The circuit of a new hybrid denoiser: 6 qubits, real_amplitudes, 3 repetitions (24 weights), the
#: input angles re-uploaded before every repetition. Measured (BENCHMARKS.md, "choosing the circuit"):
#: 6 qubits, because at 16 patches x 64 latents a step evaluates 1,024 circuits: the hybrid then trains
#: at 0.72x the classical model's steps/s when chosen, at 8 qubits 0.40x (0.75x and 0.48x in make bench, 2026-12-02, channels-last, Intel; 0.82x and 0.55x on 2026-12-03, AMD), and it must keep at least
#: half the classical model's speed; re-uploading, because with one encoding layer training drove the circuit towards an
#: affine map of its angles (R² 0.80 after 1,200 steps), with re-uploading it stayed at 0.64.
DEFAULT_CIRCUIT = CircuitSpec(num_qubits=6, reps=3, encoding="reuploading")


def _is_new_layout(data: Any) -> bool:
    return isinstance(data, dict) and "patch" in data


@dataclass(frozen=True)
class DenoiserConfig(Config):
    """Saved next to the weights. ``quantum`` is the CircuitSpec dict of the hybrid's circuit (filled
    with :data:`DEFAULT_CIRCUIT` for the hybrid kinds when not given); ``patch`` and ``angle_scale``
    shape its :class:`QuantumConv2d`; ``gate_init`` applies to the legacy placements only."""

    kind: str = "hybrid"
    latent_channels: int = 4
    latent_size: int = 16
    channels: int = 24
    time_dim: int = 64
    quantum: dict | None = None
    placement: str = "qresblock"
    patch: int = 2
    angle_scale: float = ANGLE_SCALE
    gate_init: float = 0.5
    #: resolutions above the two standard ones: ``for_kind`` sets one per doubling of the latent side
    #: above 16 (:meth:`outer_levels_for`); a config built directly has none unless given
    outer_levels: int = 0
    #: heads of a self-attention block after the middle block, at the lowest resolution (0: none)
    attention_heads: int = 0

    def __post_init__(self):
        if self.kind not in ALL_DENOISERS:
            raise ValueError(f"unknown denoiser {self.kind!r}; allowed: {', '.join(ALL_DENOISERS)}")
        if self.placement not in PLACEMENTS:
            raise ValueError(f"unknown placement {self.placement!r}; allowed: {', '.join(PLACEMENTS)}")
        if self.kind.startswith("hybrid") and self.quantum is None:
            self._fill("quantum", DEFAULT_CIRCUIT.to_dict())
        if self.quantum is not None:
            CircuitSpec.from_dict(self.quantum)
        if isinstance(self.outer_levels, bool) or not isinstance(self.outer_levels, int) \
                or not 0 <= self.outer_levels <= 3:
            raise ValueError(f"DenoiserConfig.outer_levels must be an integer in [0, 3], got {self.outer_levels!r}")
        if self.latent_size % 2 ** (self.outer_levels + 1):
            raise ValueError(f"the denoiser needs a latent size divisible by {2 ** (self.outer_levels + 1)} "
                             f"({self.outer_levels} outer levels), got {self.latent_size}")
        if self.channels % 2 ** self.outer_levels:
            raise ValueError(f"DenoiserConfig.channels must be divisible by {2 ** self.outer_levels} "
                             f"({self.outer_levels} outer levels at half width each), got {self.channels}")
        if isinstance(self.attention_heads, bool) or not isinstance(self.attention_heads, int) \
                or self.attention_heads < 0 or (self.attention_heads and 2 * self.channels % self.attention_heads):
            raise ValueError(f"DenoiserConfig.attention_heads must be 0 or a count dividing the bottleneck's "
                             f"{2 * self.channels} channels, got {self.attention_heads!r}")
        if isinstance(self.patch, bool) or not isinstance(self.patch, int) or self.patch < 1 \
                or self.bottleneck_size % self.patch:
            raise ValueError(f"DenoiserConfig.patch must be a positive integer dividing the bottleneck side "
                             f"{self.bottleneck_size}, got {self.patch!r}")
        if isinstance(self.angle_scale, bool) or not isinstance(self.angle_scale, (int, float)) \
                or not 0 < self.angle_scale <= 10:
            raise ValueError(f"DenoiserConfig.angle_scale must be in (0, 10] radians, got {self.angle_scale!r}")

    @property
    def bottleneck_size(self) -> int:
        """The side of the middle block's feature map, where the circuit runs."""
        return self.latent_size // 2 ** (self.outer_levels + 1)

    @staticmethod
    def outer_levels_for(latent_size: int) -> int:
        """One outer level per doubling of the latent side above 16, so the bottleneck stays 8 x 8."""
        levels, side = 0, latent_size
        while side > 16 and side % 2 == 0:
            levels, side = levels + 1, side // 2
        return levels

    @classmethod
    def from_dict(cls, data: Any) -> "DenoiserConfig":
        """Also reads qhybrid 0.2 configs, whose ``qresblock`` was today's ``gated-qresblock``."""
        if isinstance(data, dict) and data.get("placement") == "qresblock" and not _is_new_layout(data):
            data = {**data, "placement": "gated-qresblock"}
        return super().from_dict(data)

    @classmethod
    def for_kind(cls, kind: str, latent_channels: int, latent_size: int, num_qubits: int = DEFAULT_CIRCUIT.num_qubits,
                 reps: int = DEFAULT_CIRCUIT.reps, ansatz: str = DEFAULT_CIRCUIT.ansatz, placement: str = "qresblock",
                 patch: int = 2, angle_scale: float = ANGLE_SCALE,
                 encoding: str = DEFAULT_CIRCUIT.encoding) -> "DenoiserConfig":
        spec = CircuitSpec(num_qubits=num_qubits, reps=reps, ansatz=ansatz, encoding=encoding).to_dict()
        channels = 48 if kind == "classical-large" else 24
        return cls(kind=kind, latent_channels=latent_channels, latent_size=latent_size,
                   channels=channels, quantum=spec, placement=placement, patch=patch, angle_scale=angle_scale,
                   outer_levels=cls.outer_levels_for(latent_size))


class LatentDenoiser(ckpt.FromCheckpoint, nn.Module):
    """Predicts the noise (or v) of a noisy latent ``z_t`` at timestep ``t``.
    ``LatentDenoiser.from_checkpoint(folder)`` loads the (EMA) weights of an LDM checkpoint; the
    whole model with its scheduler and VAE is :class:`qhybrid.diffusion.pipeline.LatentDiffusion`."""

    checkpoint_kind = "ldm"
    config_class = DenoiserConfig
    #: the activations' memory format in training: channels-last, because the CPU's (oneDNN)
    #: convolutions run faster on it (BENCHMARKS.md, "Latent diffusion", the contiguous row). In eval
    #: mode (sampling, evaluation, IBM jobs) the plain layout is kept: the two agree only up to float
    #: rounding (about 1e-6), and a job record's block inputs are compared exactly on the CPU, so
    #: sampling stays bit for bit what it was. ``torch.contiguous_format`` on an instance trains in
    #: the plain layout.
    memory_format = torch.channels_last

    @classmethod
    def config_dict(cls, header: dict) -> dict:
        return header["config"]["denoiser"]

    def __init__(self, cfg: DenoiserConfig):
        super().__init__()
        self.cfg = cfg
        c, tdim = cfg.channels, cfg.time_dim
        self.time_mlp = nn.Sequential(nn.Linear(tdim, tdim), nn.SiLU(), nn.Linear(tdim, tdim))
        # the outer levels (none for latents up to 16 x 16), outermost first: width c / 2**k at level k
        widths = [c // 2 ** k for k in range(cfg.outer_levels, 0, -1)]
        top = widths[0] if widths else c  # the width at the latent's own resolution
        self.conv_in = nn.Conv2d(cfg.latent_channels, top, 3, padding=1)
        self.outer_down = nn.ModuleList(nn.Conv2d(w, 2 * w, 3, stride=2, padding=1) for w in widths)
        self.down1 = ResBlock(c, c, tdim)
        self.downsample = nn.Conv2d(c, 2 * c, 3, stride=2, padding=1)
        self.down2 = ResBlock(2 * c, 2 * c, tdim)
        # The middle block draws from a stream of its own (one draw from the main stream in every
        # variant), so the blocks after it start the same whatever the middle block holds.
        mid_seed = int(torch.randint(0, 2**31 - 1, (1,)))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(mid_seed)
            self.mid, self.branch = self._middle(cfg, core_seed=mid_seed + 1)
        self.mid2 = ResBlock(2 * c, 2 * c, tdim)
        self.upsample = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(2 * c, c, 3, padding=1))
        self.up1 = ResBlock(2 * c, c, tdim)
        self.outer_up = nn.ModuleList(
            nn.ModuleDict({"upsample": nn.ConvTranspose2d(2 * w, w, 2, stride=2), "join": nn.Conv2d(2 * w, w, 3, padding=1)})
            for w in reversed(widths))
        self.norm_out = group_norm(top)
        self.conv_out = nn.Conv2d(top, cfg.latent_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        # built last, so a model without it starts from the weights it always did
        self.attention = SelfAttention(2 * c, cfg.attention_heads) if cfg.attention_heads else None

    @staticmethod
    def _middle(cfg: DenoiserConfig, core_seed: int) -> tuple[nn.Module, QuantumBranch | None]:
        """The middle block, and the legacy branch after it (placement ``bottleneck``)."""
        c2, tdim, core = 2 * cfg.channels, cfg.time_dim, CORE_OF[cfg.kind]
        spec = CircuitSpec.from_dict(cfg.quantum) if cfg.quantum else CircuitSpec(num_qubits=8, reps=3)
        if cfg.placement == "qresblock":
            if cfg.kind in ("classical", "classical-large"):
                return ResBlock(c2, c2, tdim), None
            return QResBlock(c2, c2, tdim, spec, core, cfg.patch, cfg.angle_scale, seed=core_seed), None
        if cfg.placement == "gated-qresblock":
            return GatedQResBlock(c2, c2, tdim, spec, core, cfg.gate_init, seed=core_seed), None
        return ResBlock(c2, c2, tdim), QuantumBranch(c2, tdim, spec, core, cfg.gate_init, seed=core_seed)

    @property
    def quantum_layer(self) -> QuantumConv2d | QuantumBranch | None:
        """The layer holding the core (circuit or stand-in); None for classical kinds in the
        ``qresblock`` placement."""
        if self.branch is not None:
            return self.branch
        for name in ("qconv", "branch"):
            if hasattr(self.mid, name):
                return getattr(self.mid, name)
        return None

    @property
    def quantum_block(self) -> QuantumBlock | None:
        layer = self.quantum_layer
        return layer.core if layer is not None and isinstance(layer.core, QuantumBlock) else None

    def to_target(self, target: str, **options) -> "LatentDenoiser":
        """Evaluate the quantum block on another execution target (no-op for classical models)."""
        if self.quantum_block is not None:
            self.quantum_block.to_target(target, **options)
        elif target != "ideal":
            raise InputError(f"the {self.cfg.kind} denoiser has no quantum block; its target must be 'ideal' "
                             "(sample a hybrid model on fake: or ibm: targets)")
        return self

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        temb, skips, h = self._down(z, t)
        h = self.mid(h, temb)
        if self.branch is not None:
            h = self.branch(h, temb)
        return self._up(h, skips, temb)

    def forward_pair(self, z: torch.Tensor, t: torch.Tensor, noise: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """The prediction with the exact quantum layer and with its core's outputs through ``noise``
        (a backend's noise surrogate: noise-aware training). The layers before the middle block and
        the circuit run once; the layers after it run on both versions as one batch."""
        if not isinstance(self.mid, QResBlock) or self.quantum_block is None:
            raise InputError(f"a paired (noise-aware) prediction needs a circuit in the qresblock placement; this "
                             f"denoiser is {self.cfg.kind} ({self.cfg.placement})")
        temb, skips, h = self._down(z, t)
        exact, noisy = self.mid.forward_pair(h, temb, noise)
        out = self._up(torch.cat([exact, noisy]), [torch.cat([s, s]) for s in skips], torch.cat([temb, temb]))
        return out.chunk(2)

    def _down(self, z: torch.Tensor, t: torch.Tensor):
        shape = (self.cfg.latent_channels, self.cfg.latent_size, self.cfg.latent_size)
        if z.dim() != 4 or tuple(z.shape[1:]) != shape:
            raise ValueError(f"denoiser expects latents of shape (batch, {', '.join(map(str, shape))}), got {tuple(z.shape)}")
        temb = self.time_mlp(timestep_embedding(t, self.cfg.time_dim))
        if self.training:
            z = z.contiguous(memory_format=self.memory_format)
        h, skips = self.conv_in(z), []
        for downsample in self.outer_down:
            skips.append(h)
            h = downsample(F.silu(h))
        skips.append(self.down1(h, temb))
        return temb, skips, self.down2(self.downsample(skips[-1]), temb)

    def _up(self, h: torch.Tensor, skips: list[torch.Tensor], temb: torch.Tensor) -> torch.Tensor:
        """The decoder half; ``skips`` are the down path's outputs, outermost first."""
        if self.attention is not None:
            h = self.attention(h)
        h = self.mid2(h, temb)
        h = self.up1(torch.cat([self.upsample(h), skips[-1]], dim=1), temb)
        for level, skip in zip(self.outer_up, reversed(skips[:-1])):
            h = level["join"](torch.cat([level["upsample"](h), skip], dim=1))
        return self.conv_out(F.silu(self.norm_out(h)))

    def parameter_counts(self) -> dict:
        total = sum(p.numel() for p in self.parameters())
        quantum = self.quantum_block.weight.numel() if self.quantum_block is not None else 0
        layer = self.quantum_layer
        return {"total": total, "trainable": sum(p.numel() for p in self.parameters() if p.requires_grad),
                "quantum_circuit_weights": quantum,
                "quantum_layer": sum(p.numel() for p in layer.parameters()) if layer is not None else 0,
                "core": sum(p.numel() for p in layer.core.parameters()) if layer is not None else 0}


def circuit_spec_of(folder: str | Path) -> tuple[CircuitSpec, str]:
    """``(CircuitSpec, name)`` of the circuit in a hybrid LDM (``hybrid`` or ``hybrid-frozen``: the
    kinds whose core is a circuit) or a quantum VAE checkpoint, read from its header without loading
    weights; ``name`` is ``<run>_<model folder>``."""
    folder = Path(folder)
    header = ckpt.read_header(folder, ("ldm", "vae"))
    cfg = header["config"]
    if header["kind"] == "ldm":
        kind = cfg.get("denoiser", {}).get("kind")
        spec = cfg["denoiser"].get("quantum") if CORE_OF.get(kind) in CIRCUIT_CORES else None
    else:
        kind, spec = "vae", cfg.get("quantum")
    if spec is None:
        raise InputError(f"{folder} has no quantum block (a {kind} model); give a hybrid LDM or a quantum VAE")
    return CircuitSpec.from_dict(spec), f"{folder.parent.name}_{folder.name}"
