"""Atomic file writes, shared by every experiment and the training loop.

The content goes to a temporary file in the destination's directory, is flushed to disk
(``fsync``), and replaces the destination with ``os.replace``: a crash mid-write leaves the
previous file intact and no partial file behind. A full disk raises ``OSError(ENOSPC)`` whose
``filename`` is the destination (the command line prints "no space left on device while writing
FILE"); the previous file is kept. Temporary files of a process killed mid-write
(``.NAME.XXXX.tmp``) are removed when the next writer takes the directory's lock
(:mod:`flowvi_experiments.training.lock`).
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(fh)`` on a binary temporary file, then move it to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        full = _disk_full(exc)
        if full is not None:  # name the destination, not the temporary file
            raise OSError(full, os.strerror(full), str(path)) from exc
        raise


def _disk_full(exc: BaseException | None) -> int | None:
    """``ENOSPC``/``EDQUOT`` if ``exc`` or an exception it was raised from is a full disk (``torch.save``
    wraps the ``OSError`` of its writer in a ``RuntimeError``)."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return exc.errno
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def write_text(path: str | Path, text: str) -> None:
    """Atomically write a text file (UTF-8)."""
    atomic_write(path, lambda fh: fh.write(text.encode()))


def write_json(path: str | Path, data: dict[str, Any]) -> None:
    """Atomically write ``data`` as indented JSON with sorted keys."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def save_torch(path: str | Path, obj: Any) -> None:
    """Atomically ``torch.save`` ``obj`` to ``path``."""
    atomic_write(path, lambda fh: torch.save(obj, fh))
