"""Checkpoint writing and reading, in one place. Writes are atomic (:mod:`flowvi_experiments.atomic`): a crash
mid-write leaves the previous checkpoint intact.

Format 2 (written since issue 14) is an envelope
``{"flowvi_checkpoint": 2, "sha256": HEX, "payload": uint8 tensor}``: ``payload`` holds the bytes of
the ``torch.save`` of the state and ``sha256`` its digest, verified on every
load, so that damaged bytes anywhere in the file are detected. Both levels are read with
``torch.load(weights_only=True)``: opening a checkpoint never runs code from it (a pickle that would
call a function is refused with a sentence). Format-1 checkpoints (a bare state, no checksum) still load,
with a one-line warning that their integrity cannot be checked.

``save_checkpoint(..., keep_previous=True)`` (the trainer's ``checkpoint.pt``) first keeps the
current file as ``<name>.prev<suffix>`` (a hard link, so the destination exists at every instant):
a damaged checkpoint is reported with the previous good one to fall back to.

Plain state files that users load themselves (``flow.pt`` of ``flowvi energy``, a bare
``state_dict``) keep their format and get their sha256 *beside* them instead:
:func:`save_state_file` writes ``NAME.sha256`` (``sha256sum`` format, so ``sha256sum -c`` checks it
too) and :func:`load_state_file` verifies it, with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_write, write_json, write_text

__all__ = ["CheckpointError", "checksum_path", "load_checkpoint", "load_state_file", "previous_path", "save_checkpoint",
           "save_state_file", "verify_state_file", "write_json", "write_text"]

FORMAT = 2
_ENVELOPE_KEY = "flowvi_checkpoint"


class CheckpointError(ValueError):
    """A checkpoint that cannot be trusted or read: damaged, truncated, foreign or unsafe."""


def previous_path(path: str | Path) -> Path:
    """Where ``save_checkpoint(path, ..., keep_previous=True)`` keeps the previous checkpoint."""
    p = Path(path)
    return p.with_name(f"{p.stem}.prev{p.suffix}")


def _serialize(state: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def save_checkpoint(path: str | Path, state: dict[str, Any], *, keep_previous: bool = False) -> None:
    """Atomically write ``state`` (tensors, numbers, strings, lists, dicts) with its sha256."""
    p = Path(path)
    payload = _serialize(state)
    envelope = {_ENVELOPE_KEY: FORMAT, "sha256": hashlib.sha256(payload).hexdigest(),
                "payload": torch.frombuffer(bytearray(payload), dtype=torch.uint8)}
    if keep_previous and p.is_file():
        prev, tmp = previous_path(p), p.with_name(f".{p.name}.link.tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(p, tmp)  # the current file stays in place; prev is replaced atomically
        except OSError:  # a file system without hard links: copy
            shutil.copyfile(p, tmp)
        os.replace(tmp, prev)
    data = _serialize(envelope)  # in memory first: a full disk is then a plain OSError(ENOSPC) of the write
    atomic_write(p, lambda fh: fh.write(data))


def _load_bytes(data: bytes | Path, map_location: Any, what: Path) -> Any:
    src = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        return torch.load(src, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" in str(exc):
            raise CheckpointError(
                f"refusing to load {what}: it holds Python objects other than tensors and plain data, and "
                "unpickling them could run code (flowvi checkpoints never do; the file is foreign or tampered "
                "with)") from None
        detail = str(exc).split("WeightsUnpickler error:")[-1].strip().splitlines()[0]
        raise CheckpointError(f"cannot read checkpoint {what}: not a torch file or damaged ({detail})") from None
    except Exception as exc:  # a truncated or foreign file
        raise CheckpointError(f"cannot read checkpoint {what}: {exc}") from None


def _previous_hint(p: Path) -> str:
    prev = previous_path(p)
    if not prev.is_file():
        return ""
    try:
        state = _load_verified(prev, "cpu", warn_old=False)
    except CheckpointError:
        return f"; the previous checkpoint {prev} is damaged too"
    upd = state.get("update") if isinstance(state, dict) else None
    at = f" (update {upd})" if upd is not None else ""
    return f"; the previous good checkpoint is {prev}{at}: copy it to {p} to resume from there"


def _load_verified(p: Path, map_location: Any, warn_old: bool = True) -> dict[str, Any]:
    outer = _load_bytes(p, "cpu", p)
    if isinstance(outer, dict) and _ENVELOPE_KEY in outer:
        if outer[_ENVELOPE_KEY] > FORMAT:
            raise CheckpointError(f"{p} is checkpoint format {outer[_ENVELOPE_KEY]}, newer than this flowvi "
                                  f"({FORMAT}): upgrade flowvi to read it")
        payload = outer.get("payload")
        payload = payload.numpy().tobytes() if isinstance(payload, torch.Tensor) else None
        if payload is None or hashlib.sha256(payload).hexdigest() != outer.get("sha256"):
            raise CheckpointError(f"checkpoint {p} is damaged (its sha256 does not match its content)")
        state = _load_bytes(payload, map_location, p)
    else:
        state = outer
        if warn_old:
            warnings.warn(f"{p} is a checkpoint without a checksum (format 1, written before flowvi stored one): "
                          "its integrity cannot be verified", stacklevel=3)
    if not isinstance(state, dict):
        raise CheckpointError(f"{p} is not a flowvi checkpoint (it holds a {type(state).__name__}, not a dict)")
    return state


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, verifying its checksum (format 2).

    Raises :class:`FileNotFoundError` when there is none, :class:`CheckpointError` (a ``ValueError``)
    with a sentence naming the file, and the previous good checkpoint where one exists, when it is
    damaged, truncated, foreign or would run code when unpickled.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no checkpoint at {p}")
    try:
        return _load_verified(p, map_location)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}{_previous_hint(p)}") from None


def checksum_path(path: str | Path) -> Path:
    """Where :func:`save_state_file` records the sha256 of ``path``: ``NAME.sha256`` beside it."""
    p = Path(path)
    return p.with_name(p.name + ".sha256")


def save_state_file(path: str | Path, state: dict[str, Any]) -> None:
    """Atomically ``torch.save`` ``state`` to ``path`` and record its sha256 in :func:`checksum_path`.

    The old record is removed first and the new one written only once ``path`` is complete, so an
    interruption between the two writes leaves a file without a record (loaded with a warning),
    never a good file whose record says it is damaged.
    """
    p = Path(path)
    data = _serialize(state)
    record = checksum_path(p)
    record.unlink(missing_ok=True)
    atomic_write(p, lambda fh: fh.write(data))
    write_text(record, f"{hashlib.sha256(data).hexdigest()}  {p.name}\n")


def verify_state_file(path: str | Path, *, fix: str) -> bytes:
    """Return the bytes of ``path`` once its sha256 matches :func:`checksum_path`'s record.

    Raises :class:`CheckpointError` ending in ``fix`` (what the user runs to write it again) when it
    does not; a file without its record (written before flowvi kept one) passes with a warning.
    """
    p = Path(path)
    data = p.read_bytes()
    record = checksum_path(p)
    if record.is_file():
        expected = record.read_text().split()[:1]
        if expected != [hashlib.sha256(data).hexdigest()]:
            raise CheckpointError(f"{p} is damaged (its sha256 does not match the one recorded in {record.name} "
                                  f"when it was written); {fix}")
    else:
        warnings.warn(f"{p} has no recorded sha256 ({record.name}; written before flowvi kept one): its integrity "
                      "cannot be verified", stacklevel=3)
    return data


def load_state_file(path: str | Path, map_location: str | torch.device = "cpu", *, fix: str) -> dict[str, Any]:
    """Read a file written by :func:`save_state_file`, verifying its sha256 (:func:`verify_state_file`);
    ``weights_only=True``, so it never runs code from the file."""
    p = Path(path)
    state = _load_bytes(verify_state_file(p, fix=fix), map_location, p)
    if not isinstance(state, dict):
        raise CheckpointError(f"{p} is not a state_dict (it holds a {type(state).__name__}); {fix}")
    return state
