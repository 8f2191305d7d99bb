"""Data-parallel training under ``torchrun``, in one place: process-group setup and teardown, the
backend (gloo on CPU, nccl on CUDA), and :class:`DataParallel`, the fit loop's strategy for it
(:class:`flowvi.loop.Strategy`; one process is :class:`flowvi.loop.Local`).

``torchrun --nproc_per_node N -m flowvi_experiments.cli.main train ...`` starts ``N`` processes and sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`process_group`
reads them. Without them (a plain ``flowvi train``) it is a no-op context of world size 1 and
nothing here is called by the training loop, so single-process runs are unchanged.

The gradient averaging itself is PyTorch's :class:`torch.nn.parallel.DistributedDataParallel`
(:meth:`DataParallel.wrap`); the other collectives run at the loop's checks only (every ``log_every``
updates, at validations and checkpoints): one all-gather of the device values (the loss and bound
sums, the non-finite flags and whether a signal arrived), the validation bound broadcast from rank 0,
and the RNG states gathered to rank 0 for a checkpoint. A signal on one rank therefore stops all of
them at the next check, at the same update.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from flowvi.loop import Local, Strategy

from .device import rank_device

#: seconds a collective may wait for the other ranks before failing (env ``FLOWVI_DIST_TIMEOUT``)
DEFAULT_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a data-parallel job (world size 1 = not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None  #: gloo or nccl; None when not distributed

    @property
    def is_main(self) -> bool:
        """True on the process that writes the run's files (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def env_context() -> DistContext:
    """The rank, world size and local rank that ``torchrun`` put in the environment (else 0, 1, 0)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"bad torchrun environment: RANK={rank}, WORLD_SIZE={world_size}")
    return DistContext(rank, world_size, local_rank)


def backend_for(device: str) -> str:
    """``nccl`` for CUDA devices, ``gloo`` for the CPU."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def timeout_s() -> float:
    """The collective timeout in seconds: ``$FLOWVI_DIST_TIMEOUT`` or :data:`DEFAULT_TIMEOUT_S`."""
    text = os.environ.get("FLOWVI_DIST_TIMEOUT")
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"FLOWVI_DIST_TIMEOUT must be a number of seconds, got {text!r}") from None
    if value <= 0:
        raise ValueError(f"FLOWVI_DIST_TIMEOUT must be positive, got {text!r}")
    return value


@contextmanager
def process_group(device: str) -> Iterator[DistContext]:
    """Join the job ``torchrun`` started (if any) for the lifetime of the ``with`` block.

    With ``WORLD_SIZE`` > 1: selects this rank's CUDA device (``cuda:LOCAL_RANK``) where ``device``
    is CUDA, initializes the default process group (nccl on CUDA, gloo on CPU) with the timeout of
    :func:`timeout_s`, and destroys it on exit, also after an exception. Otherwise yields
    ``DistContext()`` and does nothing.
    """
    ctx = env_context()
    if not ctx.distributed:
        yield ctx
        return
    if dist.is_initialized():  # a caller that set the group up itself keeps ownership of it
        if dist.get_world_size() != ctx.world_size:
            raise ValueError(f"process group has {dist.get_world_size()} ranks, WORLD_SIZE says {ctx.world_size}")
        yield DistContext(ctx.rank, ctx.world_size, ctx.local_rank, dist.get_backend())
        return
    backend = backend_for(device)
    dev = rank_device(device, ctx.local_rank, ctx.world_size)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    kwargs: dict[str, Any] = {"backend": backend, "timeout": timedelta(seconds=timeout_s())}
    if dev.type == "cuda":
        kwargs["device_id"] = dev
    dist.init_process_group(**kwargs)
    finished = False
    try:
        yield DistContext(ctx.rank, ctx.world_size, ctx.local_rank, backend)
        finished = True
    finally:
        try:
            if finished:  # tear down together: a rank leaving while a peer still talks aborted under load
                dist.barrier()
        finally:
            dist.destroy_process_group()


def rank_seed(seed: int, rank: int) -> int:
    """Seed of rank ``rank``'s sampling stream in a job with world size > 1 (distinct per rank)."""
    return (seed * 1_000_003 + 104_729 * (rank + 1)) % (2**63)


def _device() -> torch.device:
    """The device collectives run on: the current CUDA device for nccl, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_float(value: float | None, src: int = 0) -> float:
    """Rank ``src``'s ``value`` on every rank (the others pass anything, e.g. None)."""
    t = torch.tensor([math.nan if value is None else float(value)], dtype=torch.float64, device=_device())
    dist.broadcast(t, src=src)
    return float(t.item())


def gather_to_main(obj: Any) -> list[Any] | None:
    """Every rank's ``obj`` (picklable, e.g. an RNG state) as a list on rank 0; None elsewhere."""
    out: list[Any] | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


class DataParallel:
    """The fit loop's strategy for ``world_size`` processes of a job (:class:`flowvi.loop.Strategy`).

    Args: rank, world_size: this process in the initialized default process group; device: its device
    (``cuda:LOCAL_RANK`` or the CPU).
    """

    def __init__(self, rank: int, world_size: int, device: torch.device) -> None:
        if not (dist.is_initialized() and dist.get_world_size() == world_size and dist.get_rank() == rank):
            raise ValueError(f"world_size {world_size} needs an initialized process group in which this process "
                             f"is rank {rank}: start the run with torchrun (see docs/distributed.md)")
        self.rank, self.world_size, self.device = rank, world_size, device
        self.backend: str | None = dist.get_backend()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, objective: nn.Module) -> nn.Module:
        """DDP: rank 0's parameters broadcast now, the gradients averaged in every backward."""
        ids = [self.device] if self.device.type == "cuda" else None
        return DistributedDataParallel(objective, device_ids=ids)

    def gather(self, values: Tensor) -> Tensor:
        t = values.detach().to(device=_device(), dtype=torch.float64).reshape(-1)
        out = [torch.empty_like(t) for _ in range(self.world_size)]
        dist.all_gather(out, t)
        return torch.stack(out).cpu()

    def should_stop(self, signalled_here: bool, signalled_anywhere: bool) -> bool:
        return signalled_anywhere  # agreed at the last check: every rank stops at the same update

    def broadcast(self, value: float | None) -> float:
        return broadcast_float(value)

    def gather_objects(self, obj: Any) -> list[Any] | None:
        return gather_to_main(obj)

    def seed_noise(self, seed: int) -> None:
        """Each rank its own posterior-noise stream (:func:`rank_seed`)."""
        torch.manual_seed(rank_seed(seed, self.rank))


def strategy(rank: int, world_size: int, device: torch.device) -> Strategy:
    """:class:`flowvi.loop.Local` for one process, :class:`DataParallel` for more."""
    return DataParallel(rank, world_size, device) if world_size > 1 else Local()
