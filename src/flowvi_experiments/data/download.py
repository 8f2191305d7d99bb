"""``flowvi data download`` and ``flowvi data verify``: fetch the canonical files over HTTP(S)
(urllib), check size and sha256 of the decompressed bytes while streaming, and write atomically
(a temporary file in the target directory, fsync, ``os.replace``): a failed download or checksum
leaves no file behind and never damages a file already there.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

from tqdm import tqdm

from . import checksums, registry
from .errors import DatasetError
from .files import candidates, expectation, read_file
from .paths import resolve_data_dir
from .registry import DATASETS, CanonicalFile, Datasets

_CHUNK = 1 << 16
Log = Callable[[str], None]


def _dataset_files(name: str, datasets: Datasets) -> tuple[CanonicalFile, ...]:
    if name not in datasets:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(sorted(datasets))}")
    return datasets[name]


def file_url(spec: CanonicalFile, base_url: str | None = None) -> str:
    """The download URL of ``spec``: ``base_url`` (default: the dataset's public location) joined
    with the file's remote name."""
    base = base_url or registry.DEFAULT_BASE_URLS[spec.dataset]
    return base.rstrip("/") + "/" + spec.remote_name


class _StreamCheck:
    """Size and sha256 of the decompressed stream, fed the downloaded bytes chunk by chunk."""

    def __init__(self, gzipped: bool) -> None:
        self.gzipped = gzipped
        self.sha = hashlib.sha256()
        self.size = 0
        self._gunzip = self._new() if gzipped else None

    @staticmethod
    def _new():
        return zlib.decompressobj(16 + zlib.MAX_WBITS)

    def _out(self, data: bytes) -> None:
        self.sha.update(data)
        self.size += len(data)

    def feed(self, chunk: bytes) -> None:
        if self._gunzip is None:
            self._out(chunk)
            return
        while chunk:
            if self._gunzip.eof:  # a further gzip member
                chunk, self._gunzip = self._gunzip.unused_data + chunk, self._new()
            self._out(self._gunzip.decompress(chunk))
            chunk = self._gunzip.unused_data if self._gunzip.eof else b""

    def finish(self) -> None:
        if self._gunzip is not None:
            self._out(self._gunzip.flush())
            if not self._gunzip.eof:
                raise EOFError("truncated gzip stream")


def fetch_file(
    spec: CanonicalFile,
    url: str,
    dest: Path,
    timeout: float = 60.0,
    progress: bool = False,
    gzipped: bool | None = None,
) -> Path:
    """Download ``url`` to ``dest`` atomically, keeping it only if its decompressed size and sha256
    are ``spec``'s; otherwise raise :class:`DatasetError` and leave ``dest`` as it was.

    ``gzipped`` says whether the checksums are of the gunzipped stream (default: when the remote name
    ends in ``.gz``); ``False`` checks the bytes as served (an archive such as CIFAR-10's ``.tar.gz``).

    ``timeout`` bounds the whole transfer (connection and every read together), not each read: a
    server that trickles bytes cannot hold the download longer. The temporary ``.part`` file goes
    whatever ends the transfer (an error, Ctrl-C, or SIGTERM, which ``flowvi data`` turns into one).

    One download per destination at a time: the transfer holds the lock ``.NAME.lock`` beside
    ``dest`` (:mod:`flowvi_experiments.training.lock`; a second download of the same file is refused
    with a sentence). A process killed outright (SIGKILL, power loss) leaves its ``.part`` file and
    lock; the next download takes the stale lock over and removes the ``.part`` files.
    """
    if not (timeout > 0 and math.isfinite(timeout)):
        raise DatasetError(f"timeout must be a finite number of seconds > 0, got {timeout}")
    from ..training.lock import RunLockedError, run_lock

    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with run_lock(dest.parent, "data download", name=f".{dest.name}.lock", subject=str(dest),
                      clean=lambda d: _stale_parts(d, dest.name)):
            return _fetch_locked(spec, url, dest, timeout, progress, gzipped)
    except RunLockedError as exc:
        raise DatasetError(str(exc)) from None


def _stale_parts(directory: Path, name: str) -> list[Path]:
    """The ``.part`` files of earlier downloads of ``name`` (deleted; called with its lock held)."""
    removed = []
    for p in directory.glob(f".{glob_escape(name)}.*.part"):
        if p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _fetch_locked(spec: CanonicalFile, url: str, dest: Path, timeout: float, progress: bool,
                  gzipped: bool | None) -> Path:
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(url, headers={"User-Agent": "flowvi-data"})
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        check = _StreamCheck(gzipped=spec.remote_name.endswith(".gz") if gzipped is None else gzipped)
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    read = _deadline_reader(response, deadline, url, timeout)
                    total = response.headers.get("Content-Length")
                    with tqdm(
                        total=int(total) if total else None,
                        unit="B",
                        unit_scale=True,
                        desc=dest.name,
                        disable=not progress,
                        leave=False,
                    ) as bar:
                        while chunk := read(_CHUNK):
                            out.write(chunk)
                            check.feed(chunk)
                            bar.update(len(chunk))
                            if check.size > spec.size:  # a wrong URL: stop early
                                break
                if check.size <= spec.size:
                    check.finish()
            except urllib.error.HTTPError as exc:
                raise DatasetError(f"{url}: HTTP error {exc.code} {exc.reason}") from exc
            except urllib.error.URLError as exc:
                raise DatasetError(f"{url}: cannot download ({exc.reason})") from exc
            except DownloadTimeout as exc:
                raise DatasetError(f"{url}: {exc}; nothing was written to {dest}") from exc
            except (OSError, EOFError, zlib.error) as exc:
                raise DatasetError(f"{url}: download failed ({type(exc).__name__}: {exc})") from exc
            out.flush()
            if hasattr(os, "fchmod"):  # mkstemp creates 0600; give the file the usual mode
                os.fchmod(out.fileno(), 0o666 & ~_umask())
            os.fsync(out.fileno())
        if check.size != spec.size or (digest := check.sha.hexdigest()) != spec.sha256:
            if check.size != spec.size:
                got = f"more than {spec.size}" if check.size > spec.size else f"{check.size}"
                got += " bytes"
            else:
                got = f"sha256 {digest}"
            raise DatasetError(
                f"{url}: checksum mismatch: got {got} decompressed, expected {expectation(spec)}; "
                f"nothing was written to {dest}"
            )
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(dest.parent)
    checksums.mark_verified(dest, spec.sha256)
    return dest


class DownloadTimeout(OSError):
    """The transfer did not finish within its total time limit."""


def _deadline_reader(response: Any, deadline: float, url: str, timeout: float) -> Callable[[int], bytes]:
    """``read(n)``: at most ``n`` bytes from one receive (``read1``), the socket's own timeout set to
    what is left of the total, so that the transfer ends by ``deadline``."""
    sock = getattr(getattr(getattr(response, "fp", None), "raw", None), "_sock", None)
    read1 = getattr(response, "read1", response.read)

    def read(n: int) -> bytes:
        left = deadline - time.monotonic()
        if left <= 0:
            raise DownloadTimeout(f"timed out: the download took more than {timeout:g} s in total (--timeout)")
        if sock is not None:
            sock.settimeout(left)
        try:
            return read1(n)
        except TimeoutError as exc:
            raise DownloadTimeout(
                f"timed out: the download took more than {timeout:g} s in total (--timeout)") from exc

    return read


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@dataclass(frozen=True)
class FileStatus:
    """The state of one canonical file in a data directory."""

    spec: CanonicalFile
    path: Path | None  # the file checked, None when missing
    ok: bool
    message: str


def check_file(spec: CanonicalFile, data_dir: str | os.PathLike[str] | None = None) -> list[FileStatus]:
    """Verify every copy of ``spec`` (plain and ``.gz``) in the data directory; one status per
    copy found, in the loaders' order of preference, or one "missing" status."""
    root = resolve_data_dir(data_dir)
    statuses = []
    for path in candidates(spec, root):
        if not path.is_file():
            continue
        try:
            read_file(spec, path, root, verify=True)
        except DatasetError as exc:
            statuses.append(FileStatus(spec, path, False, str(exc)))
        else:
            statuses.append(FileStatus(spec, path, True, f"{path}: ok"))
    if not statuses:
        missing = " or ".join(str(p) for p in candidates(spec, root))
        statuses.append(FileStatus(spec, None, False, f"{spec.relpath}: missing (no {missing})"))
    return statuses


def verify_dataset(
    name: str, data_dir: str | os.PathLike[str] | None = None, datasets: Datasets = DATASETS
) -> list[FileStatus]:
    """The status of every copy of every file of dataset ``name`` of ``datasets`` (default
    :data:`~flowvi_experiments.data.DATASETS`; see :func:`check_file`)."""
    return [status for spec in _dataset_files(name, datasets) for status in check_file(spec, data_dir)]


def _set_aside(path: Path, log: Log) -> None:
    aside = path.with_name(path.name + ".corrupt")
    os.replace(path, aside)
    log(f"moved the corrupt {path} to {aside} (the loaders would read it before the good copy)")


def download_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    base_url: str | None = None,
    force: bool = False,
    timeout: float = 60.0,
    progress: bool = False,
    log: Log = print,
    datasets: Datasets = DATASETS,
) -> list[Path]:
    """Download the canonical files of dataset ``name`` of ``datasets`` (default
    :data:`~flowvi_experiments.data.DATASETS`) into the data directory and return their paths. Files
    already present and verified are kept (unless ``force``); corrupt copies that the loaders would
    read first are renamed ``*.corrupt`` once a good copy is in place.
    """
    root = resolve_data_dir(data_dir)
    paths = []
    for spec in _dataset_files(name, datasets):
        statuses = [s for s in check_file(spec, root) if s.path is not None]
        good = [s.path for s in statuses if s.ok]
        bad = [s.path for s in statuses if not s.ok]
        for status in statuses:
            if not status.ok:
                log(f"{status.message.split('; ')[0]}")
        if good and not force:
            log(f"{good[0]}: already present, sha256 ok")
            for path in bad:
                if candidates(spec, root).index(path) < candidates(spec, root).index(good[0]):
                    _set_aside(path, log)
            paths.append(good[0])
            continue
        url = file_url(spec, base_url)
        dest = root / spec.dataset / spec.remote_name
        log(f"downloading {url} -> {dest}")
        fetch_file(spec, url, dest, timeout=timeout, progress=progress)
        log(f"{dest}: sha256 ok")
        for path in bad:
            if path != dest:
                _set_aside(path, log)
        paths.append(dest)
    return paths
