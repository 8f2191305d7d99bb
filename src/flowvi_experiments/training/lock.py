"""One writer per run directory, and the leftovers of killed writers cleaned up.

``train``, ``energy``, ``figure3`` and ``evaluate`` hold :func:`run_lock` on the directory they write,
and ``export`` on each run it copies (so it never copies a run while a writer changes it): a lock
file ``.flowvi.lock`` created exclusively (``O_CREAT | O_EXCL``) holding the writer's pid, host,
command and start time (and, on Linux, the boot id and the process's start time, so that a pid
reused by another process does not keep a dead writer's lock alive). A second writer is refused
with :class:`RunLockedError` (a sentence naming the holder); a lock left by a process that no longer
exists on this host is taken over with a warning. Locks held from another host are never broken
automatically (the pid cannot be checked from here): the sentence names the host and says to
delete the lock file if that process is gone. ``flowvi data download`` holds the same kind of lock
per file it downloads (``.NAME.lock`` beside it).

On taking the lock, temporary files of atomic writes that a killed process left behind
(``.NAME.*.tmp``, see :mod:`flowvi_experiments.atomic`) are deleted: with the lock held nobody else is writing them.
"""

from __future__ import annotations

import json
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterator
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


def acquire(directory: str | Path, command: str, *, name: str = LOCK_NAME, subject: str | None = None,
            clean: Callable[[Path], list[Path]] = clean_temp_files) -> Path:
    """Take the lock ``name`` of ``directory`` (created if needed) for ``command``; return the lock file.

    ``subject`` is what the lock guards, as messages name it (default: the directory); with the lock
    held, ``clean(directory)`` removes what killed writers of it left behind (default: the temporary
    files of atomic writes).
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    path = d / name
    what = str(d) if subject is None else subject
    me = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
          "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **process_identity(os.getpid())}
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
            if same_host and isinstance(pid, int) and pid != os.getpid() and not _holder_alive(info):
                warnings.warn(f"{what}: taking over the lock of {info.get('command', 'a flowvi command')} "
                              f"(pid {pid}, started {info.get('started')}), which no longer runs", stacklevel=2)
                if _read(path) == info:
                    path.unlink(missing_ok=True)
                continue
            where = "" if same_host else f" on host {info.get('host')}"
            fix = ("wait for it to finish" + (" or choose another directory" if subject is None else "") if same_host
                   else f"the pid cannot be checked from {me['host']}, so if that process is gone, delete {path}")
            raise RunLockedError(
                f"{what} is in use by another writer: flowvi {info.get('command', '?')} (pid {pid}{where}, started "
                f"{info.get('started')}); {fix}") from None
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(me) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        removed = clean(d)
        if removed:
            warnings.warn(f"{what}: removed {len(removed)} temporary file(s) left by an interrupted write: "
                          + ", ".join(p.name for p in removed), stacklevel=2)
        return path
    raise RunLockedError(f"{what}: could not take the lock {path} (it keeps changing); is another writer starting?")


def process_identity(pid: int) -> dict[str, str]:
    """What tells this process apart from a later one given the same pid: the boot and the start
    time of the process (Linux ``/proc``; empty elsewhere, where the pid alone is checked)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
        start = stat[stat.rindex(")") + 2:].split()[19]  # field 22, starttime, after "pid (comm) "
    except (OSError, ValueError, IndexError):
        return {}
    return {"boot_id": boot, "pid_start": start}


def _holder_alive(info: dict[str, Any]) -> bool:
    """Whether the lock's process (on this host) still runs: its pid exists and, where the lock
    recorded them, it is the same boot and the same process (a reused pid is another process)."""
    pid = info["pid"]
    if not _pid_alive(pid):
        return False
    if "boot_id" not in info or "pid_start" not in info:
        return True
    now = process_identity(pid)
    return not now or (now["boot_id"] == info["boot_id"] and now["pid_start"] == info["pid_start"])


def holder(directory: str | Path, name: str = LOCK_NAME) -> dict[str, Any] | None:
    """The record of the process holding ``directory``'s lock, or None when there is no lock or its
    process is known to be gone (a lock from another host counts as held: it cannot be checked)."""
    info = _read(Path(directory) / name)
    if info is None:
        return None
    if info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int) and not _holder_alive(info):
        return None
    return info


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
def run_lock(directory: str | Path, command: str, enabled: bool = True, **kwargs: Any) -> Iterator[None]:
    """Hold the run directory's lock for the ``with`` block (``enabled=False``: a no-op, for ranks > 0);
    ``kwargs`` go to :func:`acquire`."""
    if not enabled:
        yield
        return
    path = acquire(directory, command, **kwargs)
    try:
        yield
    finally:
        release(path)
