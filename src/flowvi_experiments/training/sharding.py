"""The order in which training examples are visited, in one place (shuffling, epochs, sharding).

Every epoch is a fresh permutation drawn from a generator seeded by ``(seed, epoch)``, so the
order is a pure function of the seed and the position ``(epoch, offset)``: a checkpoint stores
that position and a resumed run sees exactly the batches an uninterrupted one would. For
data-parallel training (``world_size`` > 1) each rank takes every ``world_size``-th index of the
epoch's permutation; ``batch_size`` of the run is then the global minibatch, split evenly
(:meth:`EpochBatches.for_global_batch`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


def per_rank_batch(global_batch: int, world_size: int) -> int:
    """Examples per process and update when ``global_batch`` is split over ``world_size`` processes."""
    if global_batch % world_size:
        raise ValueError(
            f"batch_size {global_batch} (the global minibatch) is not divisible by the world size "
            f"{world_size}: each process takes batch_size / world_size examples per update"
        )
    return global_batch // world_size


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + epoch) * 7 + stream)
    return g


@dataclass
class EpochBatches:
    """Minibatch indices of ``n`` examples, ``batch_size`` at a time, reshuffled every epoch.

    Incomplete final batches are dropped (every update sees ``batch_size`` examples). The order is
    drawn on the CPU (the same numbers on every device) and kept on ``device`` for the epoch, so that
    minibatches are indexed where the data are, without a copy per update.
    """

    n: int
    batch_size: int
    seed: int
    rank: int = 0
    world_size: int = 1
    epoch: int = 0
    offset: int = 0  #: batches already taken in the current epoch
    device: torch.device | str = field(default="cpu", compare=False)

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank must be in [0, world_size), got {self.rank} of {self.world_size}")
        if self.n // self.world_size < self.batch_size:
            raise ValueError(
                f"{self.n} examples over {self.world_size} rank(s) cannot fill a batch of {self.batch_size}"
            )
        self._perm: Tensor | None = None

    @classmethod
    def for_global_batch(cls, n: int, global_batch: int, seed: int, rank: int = 0, world_size: int = 1,
                         device: torch.device | str = "cpu") -> EpochBatches:
        """Rank ``rank``'s share of minibatches of ``global_batch`` examples per update.

        Each rank takes ``global_batch // world_size`` examples; the ranks' batches of one update
        are disjoint and together are the contiguous block ``perm[t·B : (t+1)·B]`` of the epoch's
        permutation, so the global data order does not depend on ``world_size`` (and with
        ``world_size`` 1 this is ``EpochBatches(n, global_batch, seed)``).
        """
        return cls(n, per_rank_batch(global_batch, world_size), seed, rank, world_size, device=device)

    @property
    def batches_per_epoch(self) -> int:
        return (self.n // self.world_size) // self.batch_size

    def _order(self) -> Tensor:
        if self._perm is None:
            perm = torch.randperm(self.n, generator=epoch_generator(self.seed, self.epoch))
            self._perm = perm[self.rank :: self.world_size].to(self.device)
        return self._perm

    def next(self) -> tuple[int, Tensor]:
        """Return ``(epoch, indices)`` of the next batch and advance."""
        if self.offset >= self.batches_per_epoch:
            self.epoch, self.offset, self._perm = self.epoch + 1, 0, None
        start = self.offset * self.batch_size
        idx = self._order()[start : start + self.batch_size]
        self.offset += 1
        return self.epoch, idx

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "offset": self.offset, "n": self.n, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["n"] != self.n or state["seed"] != self.seed:
            raise ValueError(
                f"checkpoint data order is for n={state['n']}, seed={state['seed']}; this run has "
                f"n={self.n}, seed={self.seed}"
            )
        self.epoch, self.offset, self._perm = state["epoch"], state["offset"], None
