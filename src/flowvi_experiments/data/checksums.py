"""sha256 verification of the canonical files (of their decompressed bytes), with an in-memory
cache of files already verified, keyed by path, size and modification time.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

_verified: set[tuple[str, int, int, str]] = set()
_lock = threading.Lock()


def sha256_hex(data: bytes | bytearray | memoryview) -> str:
    """The sha256 of ``data`` as 64 lower-case hex digits."""
    return hashlib.sha256(data).hexdigest()


def _key(path: Path, sha256: str) -> tuple[str, int, int, str]:
    st = os.stat(path)
    return (str(Path(path).resolve()), st.st_size, st.st_mtime_ns, sha256.lower())


def is_verified(path: Path, sha256: str) -> bool:
    """Whether ``path`` was verified against ``sha256`` in this process and has not changed since
    (same size and modification time)."""
    try:
        key = _key(path, sha256)
    except OSError:
        return False
    with _lock:
        return key in _verified


def mark_verified(path: Path, sha256: str) -> None:
    """Remember that ``path`` (as it is now) matches ``sha256``."""
    key = _key(path, sha256)
    with _lock:
        _verified.add(key)


def clear_verification_cache() -> None:
    """Forget every verification result (the next load hashes again)."""
    with _lock:
        _verified.clear()
