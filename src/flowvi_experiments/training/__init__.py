"""Training of the DLGM (section 6.2): configuration, the loop, checkpoints, logs, data order, devices."""

from .checkpoint import load_checkpoint, save_checkpoint, write_json
from .config import TrainConfig, add_config_arguments, load_config_file, overrides_from_args
from .device import resolve_device
from .sharding import EpochBatches
from .trainer import BEST, CHECKPOINT, CONFIG, SUMMARY, NonFiniteLossError, Trainer, TrainResult, build_model

__all__ = [
    "BEST",
    "CHECKPOINT",
    "CONFIG",
    "SUMMARY",
    "EpochBatches",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "add_config_arguments",
    "build_model",
    "load_checkpoint",
    "load_config_file",
    "overrides_from_args",
    "resolve_device",
    "save_checkpoint",
    "write_json",
]
