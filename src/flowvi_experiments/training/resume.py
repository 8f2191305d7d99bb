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


def check_same_model(saved_config: dict[str, Any], cfg: Any, where: Any) -> None:
    """Refuse to resume a checkpoint whose model keys (family, K, family options, sizes …) differ from
    ``cfg``'s: a changed ``family_options`` may load without a shape error (an IAF's ``gate_bias``) and
    silently train another model. Keys an older checkpoint's config lacks are not compared."""
    from .config import MODEL_KEYS

    changed = [k for k in MODEL_KEYS if k in saved_config and saved_config[k] != getattr(cfg, k)]
    if changed:
        what = ", ".join(f"{k} {saved_config[k]!r} (now {getattr(cfg, k)!r})" for k in changed)
        raise ValueError(f"cannot resume {where}: its checkpoint was trained with {what}; resume with the "
                         "run's own config.yaml or start a new run")

