"""Quantum residual branches and blocks, and the classical stand-ins that ablate them.

A *branch* pools a feature map (plus an optional conditioning vector such as the time embedding),
projects it to one angle per qubit, runs a *core*, projects the core's outputs back to the channels
and adds them, gated, to every position. The core is what an ablation swaps:

=============== =================================================================================
``quantum``     the :class:`QuantumBlock` (trained end to end)
``frozen``      the same block with its circuit weights frozen at initialisation
``matched``     :class:`MatchedClassicalCore`: a classical layer with the block's input and output
                widths, output range [-1, 1] and exactly its number of trainable parameters
``mlp``         a small MLP with as many hidden units as qubits (the original classical baseline)
=============== =================================================================================

A :class:`QResBlock` is a residual block whose residual carries such a branch (the paper's
"QResBlock"): ``out = skip(x) + h + gate * branch(h)``, with ``h`` the block's convolutional path.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from qhybrid.errors import InputError
from qhybrid.models.layers import ResBlock
from qhybrid.quantum import CircuitSpec, QuantumBlock

CORES = ("quantum", "frozen", "matched", "mlp")


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


def make_core(kind: str, spec: CircuitSpec, seed: int = 0) -> tuple[nn.Module, int]:
    """The core module and its output width."""
    if kind not in CORES:
        raise InputError(f"unknown core {kind!r}; allowed: {', '.join(CORES)}")
    if kind in ("quantum", "frozen"):
        block = QuantumBlock(spec, seed=seed)
        if kind == "frozen":
            block.weight.requires_grad_(False)
        return block, spec.num_outputs
    if kind == "matched":
        return MatchedClassicalCore(spec.num_qubits, spec.num_outputs, spec.num_weights, seed), spec.num_outputs
    n = spec.num_qubits
    return nn.Sequential(nn.Linear(n, n), nn.Tanh()), n


#: State-dict names of qhybrid 0.1's VAE ``QuantumBottleneck`` (the same branch without conditioning).
_BOTTLENECK_NAMES = {"block.": "core.", "from_block.": "back."}


def _rename_bottleneck_keys(module, state_dict, prefix, *args) -> None:
    """Load a qhybrid 0.1 quantum VAE: its ``QuantumBottleneck`` was this branch under other names."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        for old, new in _BOTTLENECK_NAMES.items():
            if key.startswith(prefix + old):
                state_dict[prefix + new + key[len(prefix + old):]] = state_dict.pop(key)


class QuantumBranch(nn.Module):
    """pooled features (+ conditioning) -> n angles -> core -> features, gated, broadcast-added."""

    def __init__(self, channels: int, cond_dim: int, spec: CircuitSpec, core: str, gate_init: float, seed: int = 0):
        super().__init__()
        self.to_angles = nn.Linear(channels + cond_dim, spec.num_qubits)
        self.core, out = make_core(core, spec, seed)
        self.core_kind = core
        self.back = nn.Linear(out, channels)
        self.gate = nn.Parameter(torch.tensor(float(gate_init)))
        self.register_load_state_dict_pre_hook(_rename_bottleneck_keys)

    @property
    def quantum(self) -> bool:
        return isinstance(self.core, QuantumBlock)

    def delta(self, h: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """The gated branch output, (B, C, 1, 1)."""
        pooled = h.mean(dim=(2, 3)) if cond is None else torch.cat([h.mean(dim=(2, 3)), cond], dim=1)
        angles = math.pi * torch.tanh(self.to_angles(pooled))
        return self.gate * self.back(self.core(angles))[:, :, None, None]

    def forward(self, h: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return h + self.delta(h, cond)


class QResBlock(ResBlock):
    """Residual block whose residual carries a :class:`QuantumBranch` (the paper's QResBlock):
    ``skip(x) + h + gate * branch(h, cond)``, with ``h`` the block's convolutional path."""

    def __init__(self, cin: int, cout: int, cond_dim: int, spec: CircuitSpec, core: str = "quantum",
                 gate_init: float = 0.5, seed: int = 0):
        super().__init__(cin, cout, cond_dim)
        self.branch = QuantumBranch(cout, cond_dim, spec, core, gate_init, seed)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        h = self.residual(x, cond)
        return self.skip(x) + h + self.branch.delta(h, cond)
