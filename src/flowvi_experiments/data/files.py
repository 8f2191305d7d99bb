"""Finding a canonical file in the data directory (plain or ``.gz``), reading its decompressed
bytes and checking them against the expected size and sha256.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

from . import checksums
from .errors import DatasetError
from .paths import resolve_data_dir
from .registry import CanonicalFile


def how_to_get(spec: CanonicalFile, data_dir: Path) -> str:
    """The remedy sentence of every error about ``spec``."""
    return (
        f"get it with `flowvi data download {spec.dataset} --data-dir {data_dir}`, or put "
        f"{spec.name} or {spec.name}.gz in {data_dir / spec.dataset} (or choose another directory "
        f"with --data-dir / $FLOWVI_DATA_DIR)"
    )


def expectation(spec: CanonicalFile) -> str:
    return f"{spec.size} bytes with sha256 {spec.sha256} (both of the decompressed file)"


def candidates(spec: CanonicalFile, data_dir: Path) -> list[Path]:
    """The paths where ``spec`` may be, in order of preference (plain first: faster to read)."""
    plain = data_dir / spec.relpath
    return [plain, plain.with_name(plain.name + ".gz")]


def locate(spec: CanonicalFile, data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The existing file for ``spec`` in the data directory, or :class:`DatasetError`."""
    root = resolve_data_dir(data_dir)
    for path in candidates(spec, root):
        if path.is_file():
            return path
    looked = " or ".join(str(p) for p in candidates(spec, root))
    raise DatasetError(f"{spec.relpath}: not found (looked for {looked}); {how_to_get(spec, root)}")


def read_decompressed(path: Path) -> bytes:
    """The bytes of ``path``, gunzipped when its name ends in ``.gz``."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from exc
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError as exc:
        raise DatasetError(f"{path}: truncated gzip stream ({exc})") from exc
    except (OSError, zlib.error) as exc:
        raise DatasetError(f"{path}: corrupt gzip file ({exc})") from exc


def read_canonical(
    spec: CanonicalFile, data_dir: str | os.PathLike[str] | None = None, verify: bool = True
) -> tuple[bytes, Path]:
    """The decompressed bytes of the canonical file ``spec`` and the path they were read from.

    With ``verify`` the size and sha256 are checked (the hash is skipped for a file already
    verified in this process and unchanged since); a mismatch raises :class:`DatasetError`.
    """
    root = resolve_data_dir(data_dir)
    path = locate(spec, root)
    return read_file(spec, path, root, verify), path


def read_file(spec: CanonicalFile, path: Path, root: Path, verify: bool = True) -> bytes:
    """The decompressed bytes of ``path``, which should hold ``spec`` (checked with ``verify``)."""
    try:
        data = read_decompressed(path)
    except DatasetError as exc:
        raise DatasetError(f"{exc}; expected {expectation(spec)}; {how_to_get(spec, root)}") from exc
    if verify:
        check_bytes(spec, data, path, root)
    return data


def check_bytes(spec: CanonicalFile, data: bytes, path: Path, root: Path) -> None:
    """Raise :class:`DatasetError` unless ``data`` (read from ``path``) is ``spec``'s content."""
    if len(data) != spec.size:
        kind = "truncated" if len(data) < spec.size else "too long"
        raise DatasetError(
            f"{path}: {kind}: {len(data)} bytes decompressed, expected {expectation(spec)}; "
            f"{how_to_get(spec, root)}"
        )
    if checksums.is_verified(path, spec.sha256):
        return
    actual = checksums.sha256_hex(data)
    if actual != spec.sha256:
        raise DatasetError(
            f"{path}: corrupt: sha256 {actual} decompressed, expected {expectation(spec)}; "
            f"{how_to_get(spec, root)}"
        )
    checksums.mark_verified(path, spec.sha256)
