"""Which device the networks run on: ``auto`` (a CUDA GPU when PyTorch sees one, else the CPU),
``cpu`` or ``cuda`` (``cuda:N`` for a given GPU).

Data, random draws and checkpoints stay on the CPU: batches are drawn from the run's CPU torch
generator and moved, so a run draws the same images, timesteps and noise on any device, and a
checkpoint written on a GPU loads on a CPU-only machine. The exact quantum target simulates the
circuit with PyTorch on the CPU (its Qiskit primitive takes NumPy parameter values); its outputs
and gradients are moved to and from the model's device by the connector.

Precision: training steps run in float32 unless a run asks for mixed precision (``bf16`` or
``fp16``: PyTorch's autocast around the forward pass and the loss). The weights, the optimiser,
the EMA copy and every checkpoint stay float32 either way, and the quantum layers run in float32
(:func:`~qhybrid.models.quantum_layers.in_float32` switches autocast off from their input features to
their outputs), so a checkpoint trained in mixed precision samples like any other. ``fp16`` scales the
loss (``torch.amp.GradScaler``) so small gradients do not underflow; ``bf16`` has float32's range
and needs no scaling.
"""

from __future__ import annotations

import torch

from qhybrid.errors import InputError, param

DEVICES = ("auto", "cpu", "cuda")
#: Precisions of a training step: float32, or mixed precision with bfloat16 / float16 autocast.
PRECISIONS = ("fp32", "bf16", "fp16")
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` / ``"cpu"`` / ``"cuda"`` / ``"cuda:N"`` (or a ``torch.device``) -> a usable device;
    an unknown name or a GPU PyTorch cannot see is an :class:`InputError` naming the fix."""
    if isinstance(name, torch.device):
        name = str(name)
    name = "auto" if name is None else str(name).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        index = name.partition(":")[2]
        if index and not index.isdigit():
            raise InputError(f"device {name!r} is not one of {', '.join(DEVICES)} or cuda:N")
        if not torch.cuda.is_available():
            raise InputError(f"{param('device', name)}: PyTorch sees no CUDA GPU on this machine (torch "
                             f"{torch.__version__}, CUDA build: {torch.version.cuda or 'none'}); use "
                             f"{param('device', 'cpu')} or {param('device', 'auto')}")
        if index and int(index) >= torch.cuda.device_count():
            raise InputError(f"{param('device', name)}: only {torch.cuda.device_count()} CUDA GPU(s) are visible")
        return torch.device(name)
    raise InputError(f"device {name!r} is not one of {', '.join(DEVICES)} or cuda:N")


def map_tensors(fn, batch):
    """``batch`` (a tensor, or nested tuples / lists / dicts of them) with ``fn`` applied to every
    tensor; anything else is passed through."""
    if isinstance(batch, torch.Tensor):
        return fn(batch)
    if isinstance(batch, (tuple, list)):
        return type(batch)(map_tensors(fn, b) for b in batch)
    if isinstance(batch, dict):
        return {k: map_tensors(fn, v) for k, v in batch.items()}
    return batch


def to_device(batch, device: torch.device):
    """Tensors in ``batch`` moved to ``device``."""
    return map_tensors(lambda t: t.to(device, non_blocking=True), batch)


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of a module's parameters (the CPU for a module without any)."""
    param_ = next(module.parameters(), None)
    return torch.device("cpu") if param_ is None else param_.device


def check_precision(name: str) -> str:
    """``name`` if it is one of :data:`PRECISIONS`, else an :class:`InputError` naming them."""
    if name not in PRECISIONS:
        raise InputError(f"{param('precision', name)} is not one of {', '.join(PRECISIONS)}")
    return name


def autocast(device: torch.device, precision: str):
    """The autocast context of a training step on ``device`` in ``precision`` (disabled for fp32)."""
    check_precision(precision)
    return torch.autocast(device_type=device.type, dtype=_AUTOCAST_DTYPES.get(precision, torch.bfloat16),
                          enabled=precision != "fp32")
