"""Checks made when a run resumes from its checkpoint."""

from __future__ import annotations

import warnings
from typing import Any

import torch


def warn_if_threads_changed(state: dict[str, Any], rank: int = 0) -> None:
    """Warn when the run was checkpointed with another torch thread count: CPU kernels split their
    reductions by thread, so the resumed trajectory is no longer bit-identical to an uninterrupted one
    (a different world size warns in :meth:`flowvi_experiments.training.Trainer._restore`)."""
    saved = state.get("threads")
    now = torch.get_num_threads()
    if rank == 0 and saved is not None and saved != now:
        warnings.warn(f"resuming a run checkpointed with {saved} torch thread(s) on {now}: training continues, "
                      "but not bit-identically to an uninterrupted run (pass --threads "
                      f"{saved} to keep it)", stacklevel=3)
