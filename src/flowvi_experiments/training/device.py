"""Device placement for training and evaluation, in one place (``--device cpu|cuda``; under ``torchrun``
one GPU per process, see :func:`rank_device`)."""

from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N``; a clear error where CUDA is not available."""
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {name!r}: expected cpu or cuda") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available on this machine")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {name!r}: expected cpu or cuda")
    return dev


def set_threads(threads: int) -> None:
    """Limit torch's intra-op threads (0 keeps torch's default)."""
    if threads > 0:
        torch.set_num_threads(threads)


def rank_device(name: str, local_rank: int, world_size: int) -> torch.device:
    """The device of one process of a data-parallel job: ``cuda:LOCAL_RANK`` when ``name`` is a CUDA
    device and ``world_size`` > 1 (one GPU per process), else :func:`resolve_device` of ``name``."""
    dev = resolve_device(name)
    if dev.type != "cuda" or world_size == 1:
        return dev
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise ValueError(f"process with LOCAL_RANK {local_rank} needs cuda:{local_rank}, but this machine has "
                         f"{count} CUDA device(s): start at most {count} processes per node")
    return torch.device("cuda", local_rank)
