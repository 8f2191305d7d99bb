"""Loading a trained run directory (``config.yaml`` + ``checkpoint.pt``) back into a model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..models import DLGM
from ..training.checkpoint import load_checkpoint
from ..training.config import TrainConfig, load_config_file
from ..training.trainer import BEST, CHECKPOINT, CONFIG, build_model

CHECKPOINTS = {"best": BEST, "last": CHECKPOINT}


def selected_checkpoint(cfg: TrainConfig) -> str:
    """The checkpoint that a run's own recipe selects: ``"best"`` (lowest validation bound) for a run trained on
    the training split, ``"last"`` for a refit on train + valid (its validation images are training images, so
    its validation bound selects nothing; the refit's number of updates was selected on the run it refits)."""
    return "last" if cfg.train_on == "train+valid" else "best"


def load_run_model(
    run_dir: str | Path, device: str | torch.device = "cpu", checkpoint: str | None = "last"
) -> tuple[DLGM, TrainConfig, dict[str, Any]]:
    """Return ``(model, config, checkpoint)`` of the run in ``run_dir`` (model in eval mode).

    ``checkpoint``: ``"last"`` (``checkpoint.pt``, the end of training), ``"best"`` (``best.pt``, the
    model at its lowest validation bound, written by the trainer every ``val_every`` updates) or ``None``, the one
    the run's recipe selects (:func:`selected_checkpoint`).
    """
    if checkpoint is not None and checkpoint not in CHECKPOINTS:
        raise ValueError(f"checkpoint must be one of {', '.join(CHECKPOINTS)}, got {checkpoint!r}")
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"no run directory {run}")
    for name in (CONFIG, CHECKPOINT):
        if not (run / name).is_file():
            raise FileNotFoundError(f"{run} is not a training run: {name} is missing")
    cfg = TrainConfig.from_dict(load_config_file(run / CONFIG))
    checkpoint = checkpoint or selected_checkpoint(cfg)
    if not (run / CHECKPOINTS[checkpoint]).is_file():
        raise FileNotFoundError(f"{run} has no {CHECKPOINTS[checkpoint]} (runs trained before model selection "
                                "have none): evaluate it with --checkpoint last")
    state = load_checkpoint(run / CHECKPOINTS[checkpoint], map_location=device)
    model = build_model(cfg)
    model.load_state_dict(state["model"])
    model.to(device).eval()
    return model, cfg, state
