"""Quantum layers, the residual blocks built from them, and the classical stand-ins that ablate them.

The main layer is :class:`QuantumConv2d`: one weight-shared circuit applied at every ``patch`` x
``patch`` patch of a feature map, like a convolution whose kernel is a circuit. Per patch: the local
features (+ the time embedding, where it conditions) -> a normalised projection to one angle per
qubit -> the *core* -> a projection back to the channels. A :class:`QResBlock` (the paper's
QResBlock) uses it in place of the second convolution of its own path, ``skip(x) + qconv(h)``: the
circuit is the block's only residual path, with no gate that can close it.

The core is what an ablation swaps:

=============== =================================================================================
``quantum``     the :class:`QuantumBlock` (trained end to end)
``frozen``      the same block with its circuit weights frozen at initialisation
``matched``     :class:`MatchedClassicalCore`: a classical layer with the block's input and output
                widths, output range [-1, 1] and exactly its number of trainable parameters
``affine``      :class:`AffineCore`: a trained affine map of the block's widths (what a circuit
                reduces to when its angles stay in the linear range of the sines)
``mlp``         a small MLP with as many hidden units as qubits (the classical core of the
                legacy branch)
=============== =================================================================================

Every core draws its initial values from its own generator (``seed``), never from torch's global
RNG, so models that differ only in their core start from identical weights everywhere else.

The legacy layers of qhybrid 0.1 and 0.2 stay loadable: :class:`QuantumBranch` (pooled features ->
core -> one gated per-channel bias at every position) after the bottleneck (placement
``bottleneck``) or inside a residual block (:class:`GatedQResBlock`, placement ``gated-qresblock``).
Measured on the 0.2 demo, that branch hardly mattered (replacing its output by its mean changed the
denoiser's output by 2.4%), which is why the per-patch layer replaced it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from qhybrid.errors import InputError
from qhybrid.models.layers import ResBlock
from qhybrid.quantum import CircuitSpec, QuantumBlock

CORES = ("quantum", "frozen", "matched", "affine", "mlp")
#: Cores that hold a circuit.
CIRCUIT_CORES = ("quantum", "frozen")
#: Default spread (radians) of the angles a QuantumConv2d feeds its circuit: the projected features
#: are normalised to unit spread and multiplied by this. At 1 rad an affine fit explains about
#: 0.2-0.3 of a random 6-8 qubit circuit's outputs (R²), at 0.5 rad 0.6-0.8 (nearly linear), at
#: pi nothing (the sines wrap around); see ARCHITECTURE.md and BENCHMARKS.md.
ANGLE_SCALE = 1.0


class MatchedClassicalCore(nn.Module):
    """``tanh(W x + b)`` with exactly ``num_params`` trainable numbers: the output biases, then
    the entries of W filled diagonal band by diagonal band (a fixed sparsity pattern), so the
    classical replacement of a circuit has its widths, its output range and its parameter count."""

    def __init__(self, num_inputs: int, num_outputs: int, num_params: int, seed: int = 0):
        super().__init__()
        capacity = num_inputs * num_outputs + num_outputs
        if not num_outputs <= num_params <= capacity:
            raise InputError(
                f"a classical core with {num_inputs} inputs and {num_outputs} outputs holds between "
                f"{num_outputs} and {capacity} parameters, the circuit has {num_params}; change the circuit's reps")
        order = sorted(((o, i) for o in range(num_outputs) for i in range(num_inputs)),
                       key=lambda oi: ((oi[1] - oi[0]) % num_inputs, oi[0]))
        rows, cols = zip(*order[: num_params - num_outputs]) if num_params > num_outputs else ((), ())
        self.register_buffer("rows", torch.tensor(rows, dtype=torch.long), persistent=False)
        self.register_buffer("cols", torch.tensor(cols, dtype=torch.long), persistent=False)
        self.shape = (num_outputs, num_inputs)
        gen = torch.Generator().manual_seed(seed)
        bound = 1 / math.sqrt(num_inputs)
        self.weight = nn.Parameter((torch.rand(num_params, generator=gen) * 2 - 1) * bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n_out = self.shape[0]
        bias, values = self.weight[:n_out], self.weight[n_out:]
        matrix = torch.zeros(self.shape, dtype=self.weight.dtype, device=self.weight.device)
        matrix = matrix.index_put((self.rows, self.cols), values)
        return torch.tanh(F.linear(x, matrix.to(x.dtype), bias.to(x.dtype)))


class AffineCore(nn.Linear):
    """``W x + b`` of the circuit's widths, initialised from its own generator: the surrogate that
    asks whether a trained affine map does what the circuit does."""

    def __init__(self, num_inputs: int, num_outputs: int, seed: int = 0):
        super().__init__(num_inputs, num_outputs)
        gen = torch.Generator().manual_seed(seed)
        bound = 1 / math.sqrt(num_inputs)
        with torch.no_grad():
            self.weight.copy_((torch.rand(self.weight.shape, generator=gen) * 2 - 1) * bound)
            self.bias.copy_((torch.rand(self.bias.shape, generator=gen) * 2 - 1) * bound)


class MLPCore(nn.Sequential):
    """``tanh(W x + b)`` with as many hidden units as qubits: the legacy branch's classical core."""

    def __init__(self, width: int, seed: int = 0):
        super().__init__(AffineCore(width, width, seed), nn.Tanh())


def make_core(kind: str, spec: CircuitSpec, seed: int = 0) -> tuple[nn.Module, int]:
    """The core module and its output width. Its initial values come from ``seed`` alone: torch's
    global RNG is left exactly as it was (torch's own initialisers draw from it), so the layers
    built after a core start the same whichever core it is."""
    if kind not in CORES:
        raise InputError(f"unknown core {kind!r}; allowed: {', '.join(CORES)}")
    with torch.random.fork_rng(devices=[]):
        if kind in CIRCUIT_CORES:
            block = QuantumBlock(spec, seed=seed)
            if kind == "frozen":
                block.weight.requires_grad_(False)
            return block, spec.num_outputs
        if kind == "matched":
            return MatchedClassicalCore(spec.num_qubits, spec.num_outputs, spec.num_weights, seed), spec.num_outputs
        if kind == "affine":
            return AffineCore(spec.num_qubits, spec.num_outputs, seed), spec.num_outputs
        return MLPCore(spec.num_qubits, seed), spec.num_qubits


def in_float32(fn):
    """Decorate a quantum layer's forward: under mixed-precision autocast it runs in float32 all the
    same, from its input features through the angles, the core and the projection back, and its
    outputs are float32. A bf16 angle is off by up to 0.4% (a circuit's outputs move by as much), and
    the estimators compute in float64 anyway; the layer is a few small matrices, so this costs
    nothing that mixed precision would have saved. Without autocast nothing is cast (float64 stays
    float64, as gradcheck needs)."""
    def wrapper(self, h: torch.Tensor, *args, **kwargs):
        if not torch.is_autocast_enabled(h.device.type):
            return fn(self, h, *args, **kwargs)
        as32 = lambda x: x.float() if isinstance(x, torch.Tensor) and x.is_floating_point() else x  # noqa: E731
        with torch.autocast(device_type=h.device.type, enabled=False):
            return fn(self, as32(h), *(as32(a) for a in args), **{k: as32(v) for k, v in kwargs.items()})
    return wrapper


def circuit_weights(model: nn.Module, trainable: bool = True) -> list[nn.Parameter]:
    """The (trainable) circuit weights of every :class:`QuantumBlock` in ``model`` (an optimiser gives
    them their own learning rate: they are angles, on another scale than the classical weights)."""
    return [m.weight for m in model.modules()
            if isinstance(m, QuantumBlock) and (m.weight.requires_grad or not trainable)]


class QuantumConv2d(nn.Module):
    """One weight-shared core (a circuit, or an ablation's stand-in) at every patch of a feature map.

    ``(B, cin, H, W)`` -> ``(B, cout, H, W)`` for ``H`` and ``W`` divisible by ``patch``:

    1. ``to_angles``: a ``patch`` x ``patch`` convolution with stride ``patch`` projects each patch to
       one value per qubit; the values are normalised per sample (zero mean, unit spread over qubits
       and patches), so however the projection's weights grow or shrink during training the circuit
       sees angles of spread ``angle_scale``: inside the sines' non-linear range, not in the nearly
       linear region around 0 where an affine map could replace the circuit, nor wrapped around;
    2. with a conditioning vector (the time embedding) a learned per-sample shift is added to the
       angles, so the circuit itself is conditioned on t;
    3. the core maps the ``B * (H/patch) * (W/patch)`` rows of angles to expectation values in one
       call (one estimator evaluation on every target);
    4. ``back``: a transposed convolution of the same kernel and stride maps each patch's outputs back
       to ``cout`` channels at each of its ``patch**2`` positions.

    :meth:`forward_pair` (noise-aware training) returns the output twice: with the core's outputs
    and with the same outputs through a backend's noise surrogate between steps 3 and 4. The
    surrogate is never part of the module, so a trained model samples on ``ideal`` exactly.
    """

    def __init__(self, cin: int, cout: int, cond_dim: int, spec: CircuitSpec, core: str = "quantum",
                 patch: int = 1, angle_scale: float = ANGLE_SCALE, seed: int = 0):
        super().__init__()
        if patch < 1:
            raise InputError(f"a quantum layer's patch must be at least 1, got {patch}")
        self.spec, self.patch, self.angle_scale, self.core_kind = spec, patch, float(angle_scale), core
        self.to_angles = nn.Conv2d(cin, spec.num_qubits, patch, stride=patch)
        self.time_to_angles = nn.Linear(cond_dim, spec.num_qubits) if cond_dim else None
        self.core, out = make_core(core, spec, seed)
        self.back = nn.ConvTranspose2d(out, cout, patch, stride=patch)

    @property
    def quantum(self) -> bool:
        return isinstance(self.core, QuantumBlock)

    def angles(self, h: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """The circuit's input angles, ``(B, num_qubits, H/patch, W/patch)``."""
        if h.shape[-1] % self.patch or h.shape[-2] % self.patch:
            raise ValueError(f"a quantum layer with patch {self.patch} needs feature maps whose sides it divides, "
                             f"got {tuple(h.shape[-2:])}")
        a = F.group_norm(self.to_angles(h), 1)
        if self.time_to_angles is not None and cond is not None:
            a = a + self.time_to_angles(cond)[:, :, None, None]
        return self.angle_scale * a

    @in_float32
    def forward(self, h: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        out, shape = self._core_outputs(h, cond)
        return self._back(out, shape)

    @in_float32
    def forward_pair(self, h: torch.Tensor, cond: torch.Tensor | None, noise: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer's output with the exact core outputs and with the same outputs through ``noise``
        (noise-aware training): the core runs once."""
        out, shape = self._core_outputs(h, cond)
        return self._back(out, shape), self._back(noise(out), shape)

    def _core_outputs(self, h: torch.Tensor, cond: torch.Tensor | None) -> tuple[torch.Tensor, tuple]:
        a = self.angles(h, cond)
        b, n, hp, wp = a.shape
        return self.core(a.permute(0, 2, 3, 1).reshape(b * hp * wp, n)), (b, hp, wp)

    def _back(self, out: torch.Tensor, shape: tuple) -> torch.Tensor:
        b, hp, wp = shape
        return self.back(out.reshape(b, hp, wp, -1).permute(0, 3, 1, 2))

    def extra_repr(self) -> str:
        return f"core={self.core_kind}, patch={self.patch}, angle_scale={self.angle_scale:g}"


class QResBlock(ResBlock):
    """The paper's QResBlock: a residual block whose own path runs through a :class:`QuantumConv2d`.

    ``skip(x) + qconv(silu(h))`` with ``h = FiLM(norm2(conv1(silu(norm1(x)))))``: the quantum layer
    takes the place of the block's second convolution (``conv2`` does not exist here), so everything
    the block adds to its input has gone through the core, at every patch.
    """

    def __init__(self, cin: int, cout: int, cond_dim: int, spec: CircuitSpec, core: str = "quantum",
                 patch: int = 1, angle_scale: float = ANGLE_SCALE, seed: int = 0):
        super().__init__(cin, cout, cond_dim)
        del self.conv2
        self.qconv = QuantumConv2d(cout, cout, cond_dim, spec, core, patch, angle_scale, seed)

    def residual(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.qconv(F.silu(self.features(x, cond)), cond)

    def forward_pair(self, x: torch.Tensor, cond: torch.Tensor | None, noise: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """The block's output with the exact circuit and with its outputs through ``noise``; everything
        before the circuit, and the circuit itself, computed once."""
        skip = self.skip(x)
        exact, noisy = self.qconv.forward_pair(F.silu(self.features(x, cond)), cond, noise)
        return skip + exact, skip + noisy


#: State-dict names of qhybrid 0.1's VAE ``QuantumBottleneck`` (the same branch without conditioning).
_BOTTLENECK_NAMES = {"block.": "core.", "from_block.": "back."}


def _rename_bottleneck_keys(module, state_dict, prefix, *args) -> None:
    """Load a qhybrid 0.1 quantum VAE: its ``QuantumBottleneck`` was this branch under other names."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        for old, new in _BOTTLENECK_NAMES.items():
            if key.startswith(prefix + old):
                state_dict[prefix + new + key[len(prefix + old):]] = state_dict.pop(key)


class QuantumBranch(nn.Module):
    """Legacy (placements ``bottleneck`` and ``gated-qresblock``): pooled features (+ conditioning) -> n angles -> core -> features, gated, broadcast-added."""

    def __init__(self, channels: int, cond_dim: int, spec: CircuitSpec, core: str, gate_init: float, seed: int = 0):
        super().__init__()
        self.spec = spec
        self.to_angles = nn.Linear(channels + cond_dim, spec.num_qubits)
        self.core, out = make_core(core, spec, seed)
        self.core_kind = core
        self.back = nn.Linear(out, channels)
        self.gate = nn.Parameter(torch.tensor(float(gate_init)))
        self.register_load_state_dict_pre_hook(_rename_bottleneck_keys)

    @property
    def quantum(self) -> bool:
        return isinstance(self.core, QuantumBlock)

    @in_float32
    def delta(self, h: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """The gated branch output, (B, C, 1, 1)."""
        pooled = h.mean(dim=(2, 3)) if cond is None else torch.cat([h.mean(dim=(2, 3)), cond], dim=1)
        angles = math.pi * torch.tanh(self.to_angles(pooled))
        return self.gate * self.back(self.core(angles))[:, :, None, None]

    def forward(self, h: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return h + self.delta(h, cond)


class GatedQResBlock(ResBlock):
    """qhybrid 0.2's QResBlock (placement ``gated-qresblock``, kept to load its checkpoints): a residual
    block plus a gated :class:`QuantumBranch`, ``skip(x) + h + gate * branch(h, cond)``."""

    def __init__(self, cin: int, cout: int, cond_dim: int, spec: CircuitSpec, core: str = "quantum",
                 gate_init: float = 0.5, seed: int = 0):
        super().__init__(cin, cout, cond_dim)
        self.branch = QuantumBranch(cout, cond_dim, spec, core, gate_init, seed)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        h = self.residual(x, cond)
        return self.skip(x) + h + self.branch.delta(h, cond)
