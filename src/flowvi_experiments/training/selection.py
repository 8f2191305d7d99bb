"""Model selection on the validation bound: which validation gives ``best.pt`` and how early stopping counts.

Torch-free, so that ``flowvi status`` can replay a run's validations from its log the way the trainer counted them.
"""

from __future__ import annotations

#: a validation bound lower than the best by less than this is not an improvement for early stopping
MIN_IMPROVEMENT = 1e-3


def record_validation(best: float, since: int, val: float) -> tuple[bool, int]:
    """After the validation bound ``val``, with ``best`` the lowest before it (``inf`` at first) and ``since`` the
    validations since the last improvement: whether ``val`` is the new lowest (it becomes ``best.pt``), and the new
    count, which early stopping compares with ``early_stopping`` (reset only by an improvement of at least
    :data:`MIN_IMPROVEMENT`)."""
    return val < best, 0 if val < best - MIN_IMPROVEMENT else since + 1
