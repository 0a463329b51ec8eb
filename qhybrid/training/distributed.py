"""Data-parallel training over several processes (one per GPU, or several on a CPU), launched by
``torchrun``::

    torchrun --standalone --nproc_per_node 2 -m qhybrid -- train vae --out runs/x/vae --batch 32

(the ``--`` keeps torchrun from reading qhybrid's flags as abbreviations of its own: ``--n``).

Every process builds the same model from the same seed and draws the same *global* batch from the
run's generator; :func:`shard` gives each process its slice (sizes differ by at most one), and after
the backward pass :func:`average` replaces every gradient by the slice-size-weighted mean over the
processes (one all-reduce of all gradients and the logged numbers, flattened). For a loss that is a mean over the
batch, that is the gradient of the global batch's loss, so N processes take the same optimiser
steps as one process with the whole batch (up to the summation order of floating point), which
``tests/test_distributed.py`` checks. Rank 0 alone shows
progress and writes checkpoints; the others wait for it.

Why not ``torch.nn.parallel.DistributedDataParallel``: its all-reduce hooks fire only for a forward
call through the wrapper, but a recipe's loss calls the model's own methods (``VAE.loss``, the
scheduler's target around the denoiser), so the wrapper would have to reach into every recipe. An
explicit all-reduce of the flattened gradients does the same arithmetic in one place; it gives up
DDP's overlap of communication with the backward pass, which matters for large models on many GPUs.

The backend is NCCL on CUDA and gloo on the CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from qhybrid.devices import map_tensors, resolve_device
from qhybrid.errors import InputError, param


@dataclass(frozen=True)
class DataParallel:
    """This process's place among ``world_size`` training processes."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: str | torch.device | None = "auto") -> tuple[torch.device, DataParallel | None]:
    """The device of this process and, when started by ``torchrun`` with more than one process, its
    :class:`DataParallel` place (the process group is initialised once)."""
    device = resolve_device(device)
    if not launched_by_torchrun():
        return device, None
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise InputError(f"process {rank} needs GPU {local}, but only {torch.cuda.device_count()} are visible; "
                             f"start at most that many processes per node or use {param('device', 'cpu')}")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device, DataParallel(rank, world, local)


def check_batch(batch: int, parallel: DataParallel | None) -> None:
    """Refuse a global batch smaller than the number of processes (some would get no images)."""
    if parallel is not None and batch < parallel.world_size:
        raise InputError(f"{param('batch', batch)} is smaller than the {parallel.world_size} processes sharing it; "
                         f"use at least {parallel.world_size}")


def shard(batch, parallel: DataParallel) -> tuple[object, float]:
    """``(this process's slice of every tensor in batch, its weight)``: slices along the first
    dimension whose sizes differ by at most one (``torch.tensor_split``), and the weight
    ``world_size * slice / batch`` that makes the processes' mean of slice-mean gradients the
    batch-mean gradient."""
    sizes: list[int] = []

    def take(t: torch.Tensor) -> torch.Tensor:
        sizes.append(len(t))
        return torch.tensor_split(t, parallel.world_size)[parallel.rank]

    local = map_tensors(take, batch)
    total = sizes[0] if sizes else 0
    mine = len(range(parallel.rank, total, parallel.world_size))  # tensor_split's size of this slice
    return local, parallel.world_size * mine / total if total else 0.0


def average(parameters, logs: dict[str, float], parallel: DataParallel, weight: float = 1.0) -> dict[str, float]:
    """Every gradient replaced by its ``weight``-ed mean over the processes, and the logged numbers
    (each process logs its own slice's) returned as the same mean: one all-reduce for both."""
    grads = [p.grad for p in parameters if p.grad is not None]
    flat = torch.cat([g.reshape(-1).double() for g in grads] + [torch.tensor(list(logs.values()), dtype=torch.float64)])
    flat *= weight
    dist.all_reduce(flat)
    flat /= parallel.world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()
    return dict(zip(logs, flat[offset:].tolist()))


def barrier(parallel: DataParallel | None) -> None:
    if parallel is not None:
        dist.barrier()
