"""One writer per run directory, and the leftovers of killed writers cleaned up.

``train``, ``energy``, ``figure3`` and ``evaluate`` hold :func:`run_lock` on the directory they write:
a lock file ``.flowvi.lock`` created exclusively (``O_CREAT | O_EXCL``) holding the writer's pid, host,
command and start time. A second writer is refused with :class:`RunLockedError` (a sentence naming
the holder); a lock left by a process that no longer exists on this host is taken over with a warning.
Locks held from another host are never broken automatically (the pid cannot be checked from here):
the message says how to remove it.

On taking the lock, temporary files of atomic writes that a killed process left behind
(``.NAME.*.tmp``, see :mod:`flowvi_experiments.atomic`) are deleted: with the lock held nobody else is writing them.
"""

from __future__ import annotations

import json
import os
import socket
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

LOCK_NAME = ".flowvi.lock"


class RunLockedError(RuntimeError):
    """The run directory is in use by another writer."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read(path: Path) -> dict[str, Any] | None:
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def clean_temp_files(directory: str | Path) -> list[Path]:
    """Delete the temporary files of interrupted atomic writes in ``directory`` (not recursive)."""
    removed = []
    d = Path(directory)
    if not d.is_dir():
        return removed
    for p in d.iterdir():
        if p.name.startswith(".") and p.name.endswith(".tmp") and p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def acquire(directory: str | Path, command: str) -> Path:
    """Take the lock of ``directory`` (created if needed) for ``command``; return the lock file."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    path = d / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
          "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    for _ in range(5):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            info = _read(path)
            if info is None:  # empty or torn: its writer died while creating it
                if time.time() - _mtime(path) < 2.0:
                    time.sleep(0.2)  # perhaps being written right now
                    continue
                path.unlink(missing_ok=True)
                continue
            same_host = info.get("host") == me["host"]
            pid = info.get("pid")
            if same_host and isinstance(pid, int) and pid != os.getpid() and not _pid_alive(pid):
                warnings.warn(f"{d}: taking over the lock of {info.get('command', 'a flowvi command')} "
                              f"(pid {pid}, started {info.get('started')}), which no longer runs", stacklevel=2)
                if _read(path) == info:
                    path.unlink(missing_ok=True)
                continue
            where = "" if same_host else f" on host {info.get('host')}"
            raise RunLockedError(
                f"{d} is in use by another writer: flowvi {info.get('command', '?')} (pid {pid}{where}, started "
                f"{info.get('started')}); wait for it to finish or choose another directory"
                + ("" if same_host else f" (if that process is gone, delete {path})")) from None
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(me) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        removed = clean_temp_files(d)
        if removed:
            warnings.warn(f"{d}: removed {len(removed)} temporary file(s) left by an interrupted write: "
                          + ", ".join(p.name for p in removed), stacklevel=2)
        return path
    raise RunLockedError(f"{d}: could not take the lock {path} (it keeps changing); is another writer starting?")


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def release(path: Path) -> None:
    """Remove the lock file if it is still this process's."""
    info = _read(path)
    if info is not None and info.get("pid") == os.getpid() and info.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)


@contextmanager
def run_lock(directory: str | Path, command: str, enabled: bool = True) -> Iterator[None]:
    """Hold the run directory's lock for the ``with`` block (``enabled=False``: a no-op, for ranks > 0)."""
    if not enabled:
        yield
        return
    path = acquire(directory, command)
    try:
        yield
    finally:
        release(path)
