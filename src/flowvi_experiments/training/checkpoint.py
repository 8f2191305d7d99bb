"""Checkpoint writing and reading, in one place. Writes are atomic (:mod:`flowvi_experiments.atomic`): a crash
mid-write leaves the previous checkpoint intact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..atomic import save_torch, write_json, write_text

__all__ = ["load_checkpoint", "save_checkpoint", "write_json", "write_text"]


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Atomically write ``state`` (tensors, numbers, dicts) with ``torch.save``."""
    save_torch(path, state)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no checkpoint at {p}")
    try:
        return torch.load(p, map_location=map_location, weights_only=False)
    except Exception as exc:  # a truncated or foreign file
        raise ValueError(f"cannot read checkpoint {p}: {exc}") from exc
