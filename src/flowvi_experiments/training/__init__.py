"""Training of the DLGM (section 6.2): configuration, the loop, checkpoints, logs, data order, devices.

The names below are loaded on first use (PEP 562), so that a light submodule such as :mod:`.lock` can be
imported without torch (``flowvi status`` reads run directories without it).
"""

from __future__ import annotations

import importlib
from typing import Any

#: each public name and the submodule that defines it
_EXPORTS: dict[str, str] = {
    "load_checkpoint": ".checkpoint", "save_checkpoint": ".checkpoint", "write_json": ".checkpoint",
    "TrainConfig": ".config", "add_config_arguments": ".config", "load_config_file": ".config",
    "overrides_from_args": ".config", "resolve_device": ".device", "EpochBatches": ".sharding",
    "BEST": ".trainer", "CHECKPOINT": ".trainer", "CONFIG": ".trainer", "SUMMARY": ".trainer",
    "NonFiniteLossError": ".trainer", "Trainer": ".trainer", "TrainResult": ".trainer", "build_model": ".trainer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
