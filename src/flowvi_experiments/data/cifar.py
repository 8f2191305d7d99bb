r"""CIFAR-10 (Krizhevsky 2009, *Learning Multiple Layers of Features from Tiny Images*), the data of the
paper's Table 3 (Rezende & Mohamed 2015, section 6.2): 60,000 colour images of 32×32 pixels, 8 bits per
channel, in the two official formats, read without executing any code.

Layout below the data directory (either format, extracted or as the official archive)::

    cifar10/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}   # pickled batches
    cifar10/cifar-10-python.tar.gz                                            # the same, archived
    cifar10/cifar-10-batches-bin/{data_batch_1..5.bin, test_batch.bin, batches.meta.txt}
    cifar10/cifar-10-binary.tar.gz                                            # the same, archived

The loaders look in that order and take the first source present. Checks, with ``verify``:

- the archives: size, the md5 published on the CIFAR page and the sha256 (the one TensorFlow Datasets
  records for the same files), both computed in one pass;
- the extracted pickled batches: the per-file md5s that torchvision publishes for them;
- the extracted binary batches: their size (30,730,000 bytes each; no per-file checksum is published).

Without ``verify`` only the structure is checked (any number of images per batch). What ``verify``
checks is the :class:`Archive` description the loaders are given (``archives``, default
:data:`ARCHIVES`, the official CIFAR-10): a description of small files written in the official formats
(:func:`python_batch_bytes`, :func:`binary_batch_bytes`) with their own checksums is how the tests
check them.

The pickled batches are parsed by :class:`RestrictedUnpickler`, whose ``find_class`` resolves only the
numpy names that rebuild a ``uint8`` array: a pickle naming anything else (``os.system``,
``builtins.eval``, ...) is refused before any of it runs.

Split (fixed, see docs/cifar10.md): ``train`` = the first 45,000 of the 50,000 training images
(``data_batch_1..4`` and the first half of ``data_batch_5``), ``valid`` = the last 5,000 (the second
half of ``data_batch_5``), ``test`` = the 10,000 images of ``test_batch``.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import threading
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from . import checksums
from .errors import DatasetError
from .paths import resolve_data_dir

DataDir = str | os.PathLike[str] | None

DATASET = "cifar10"
PIXELS = 3 * 32 * 32  #: values per image: 1024 red, 1024 green, 1024 blue, each row-major 32×32
IMAGE_SHAPE = (3, 32, 32)
RECORD = 1 + PIXELS  #: bytes per image in the binary format: the label, then the pixels
BATCH_IMAGES = 10_000
SPLITS = ("train", "valid", "test")
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass(frozen=True)
class Archive:
    """One archive format of CIFAR-10 and what ``verify`` checks of it: where it sits below the data
    directory, its size and checksums, the folder its members are in, the file names of the batches
    (train 1..5, then test), their checksums and the images in each.

    Args:
        name: the dataset name for ``flowvi data download``.
        filename: the archive's file name (below ``<data dir>/cifar10/``).
        size, md5, sha256: the archive's size and checksums (:data:`PYTHON`, :data:`BINARY`: the md5
            published on https://www.cs.toronto.edu/~kriz/cifar.html, the sha256 recorded by TensorFlow
            Datasets for the same file).
        folder: the folder the members are in, in the archive and extracted.
        batch_names: the member names of ``data_batch_1..5`` and ``test_batch``.
        meta: the member name of the metadata file.
        kind: ``"python"`` (pickled batches) or ``"binary"``.
        member_md5: the md5 of each extracted member (pickled batches: torchvision's published ones);
            the binary batches have none and are checked by their size, :attr:`member_size`.
        batch_images: the images in each batch.

    >>> PYTHON.relpath, PYTHON.batch_images, BINARY.member_size
    ('cifar10/cifar-10-python.tar.gz', 10000, 30730000)
    """

    name: str
    filename: str
    size: int
    md5: str
    sha256: str
    folder: str
    batch_names: tuple[str, ...]
    meta: str
    kind: str
    member_md5: Mapping[str, str] = field(default_factory=dict, hash=False)
    batch_images: int = BATCH_IMAGES

    @property
    def member_size(self) -> int:
        """Bytes of an extracted binary batch: ``batch_images`` records of :data:`RECORD` bytes."""
        return self.batch_images * RECORD

    @property
    def relpath(self) -> str:
        return f"{DATASET}/{self.filename}"

    @property
    def folder_relpath(self) -> str:
        return f"{DATASET}/{self.folder}"


#: md5 of each extracted pickled file, as torchvision publishes them (torchvision/datasets/cifar.py)
PYTHON_MEMBER_MD5: dict[str, str] = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
PYTHON = Archive(
    "cifar10", "cifar-10-python.tar.gz", 170_498_071, "c58f30108f718f92721af3b95e74349a",
    "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce", "cifar-10-batches-py",
    (*TRAIN_BATCHES, TEST_BATCH), "batches.meta", "python", member_md5=PYTHON_MEMBER_MD5,
)
#: the binary batches are checked by size (30,730,000 bytes each: :attr:`Archive.member_size`)
BINARY = Archive(
    "cifar10-binary", "cifar-10-binary.tar.gz", 170_052_171, "c32a1d4ab5d03f1284b67883e8d87530",
    "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd", "cifar-10-batches-bin",
    tuple(f"{n}.bin" for n in (*TRAIN_BATCHES, TEST_BATCH)), "batches.meta.txt", "binary",
)
#: ``flowvi data download NAME`` for the CIFAR-10 archives, in the loaders' order of preference
ARCHIVES: dict[str, Archive] = {a.name: a for a in (PYTHON, BINARY)}
#: public location of the archives (``--base-url`` replaces it)
BASE_URL = "https://www.cs.toronto.edu/~kriz/"


def how_to_get(archive: Archive, root: Path) -> str:
    """The remedy sentence of every error about CIFAR-10 files."""
    return (f"get it with `flowvi data download {archive.name} --data-dir {root}`, or put {archive.filename} "
            f"or its extracted {archive.folder}/ in {root / DATASET} (or choose another directory with "
            f"--data-dir / $FLOWVI_DATA_DIR)")


# -- safe unpickling ------------------------------------------------------------------------------------------

def _numpy_reconstruct() -> Callable:
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


#: the only globals a CIFAR-10 batch refers to: numpy's array reconstruction (under its numpy 1 and
#: numpy 2 module names), the array type and the dtype
_ALLOWED_GLOBALS: dict[tuple[str, str], Callable[[], object]] = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """A :class:`pickle.Unpickler` that builds only dicts, lists, strings, numbers and numpy arrays.

    ``find_class`` resolves exactly the numpy names in ``_ALLOWED_GLOBALS`` and refuses every other
    global with :class:`pickle.UnpicklingError`, so a pickle that would call ``os.system`` (or any
    other callable) fails before anything runs; persistent ids are refused too (the default).
    """

    def find_class(self, module: str, name: str) -> object:
        factory = _ALLOWED_GLOBALS.get((module, name))
        if factory is None:
            raise pickle.UnpicklingError(f"refused global {module}.{name} (a CIFAR-10 batch holds only "
                                         "dicts, lists and numpy uint8 arrays)")
        return factory()


def safe_loads(data: bytes, source: str) -> object:
    """Unpickle ``data`` (read from ``source``) with :class:`RestrictedUnpickler` (Python 2 strings
    become ``bytes``); any failure is a :class:`DatasetError` naming ``source``."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        if str(exc).startswith("refused global"):
            raise DatasetError(f"{source}: not a CIFAR-10 batch: {exc}; nothing in it was run") from exc
        if "truncated" in str(exc):
            raise DatasetError(f"{source}: truncated pickle ({exc})") from exc
        raise DatasetError(f"{source}: corrupt pickle ({exc})") from exc
    except EOFError as exc:
        raise DatasetError(f"{source}: truncated pickle (it ends before its STOP opcode)") from exc
    except Exception as exc:  # noqa: BLE001 - any malformed pickle is a data error
        raise DatasetError(f"{source}: corrupt pickle ({type(exc).__name__}: {exc})") from exc


def _get(d: dict, key: str) -> object:
    return d[key.encode()] if key.encode() in d else d.get(key)


def parse_python_batch(data: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    """``(images, labels)`` of one pickled batch: ``uint8 (N, 3072)`` and ``int64 (N,)``."""
    batch = safe_loads(data, source)
    if not isinstance(batch, dict):
        raise DatasetError(f"{source}: a CIFAR-10 batch is a dict, found {type(batch).__name__}")
    images, labels = _get(batch, "data"), _get(batch, "labels")
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 2 \
            or images.shape[1] != PIXELS:
        what = f"{images.dtype} array of shape {images.shape}" if isinstance(images, np.ndarray) \
            else type(images).__name__
        raise DatasetError(f"{source}: 'data' is {what}, expected a uint8 array of shape (N, {PIXELS})")
    if not isinstance(labels, list) or len(labels) != len(images) \
            or not all(isinstance(v, int) and 0 <= v <= 9 for v in labels):
        raise DatasetError(f"{source}: 'labels' must be a list of {len(images)} integers in 0..9")
    return images, np.asarray(labels, dtype=np.int64)


def parse_binary_batch(data: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    """``(images, labels)`` of one binary batch: records of one label byte and 3072 pixel bytes."""
    if len(data) == 0 or len(data) % RECORD:
        raise DatasetError(f"{source}: {len(data)} bytes is not a whole number of {RECORD}-byte records "
                           "(truncated or not a CIFAR-10 binary batch)")
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise DatasetError(f"{source}: label {int(labels.max())} out of range 0..9 (corrupt binary batch)")
    return np.ascontiguousarray(records[:, 1:]), labels


def python_batch_bytes(images: np.ndarray, labels: list[int] | np.ndarray, batch_label: str = "batch") -> bytes:
    """A pickled batch in the official layout (dict of bytes keys ``batch_label``, ``labels``, ``data``,
    ``filenames``), naming numpy's reconstruction ``numpy.core.multiarray`` as the official files do."""
    images = np.ascontiguousarray(images, dtype=np.uint8).reshape(-1, PIXELS)
    labels = [int(v) for v in labels]
    batch = {b"batch_label": batch_label.encode(), b"labels": labels, b"data": images,
             b"filenames": [f"image_{i}.png".encode() for i in range(len(labels))]}
    return pickle.dumps(batch, protocol=3).replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def meta_bytes(num_cases_per_batch: int = BATCH_IMAGES) -> bytes:
    """``batches.meta`` in the official layout."""
    meta = {b"num_cases_per_batch": num_cases_per_batch, b"label_names": [c.encode() for c in CLASSES],
            b"num_vis": PIXELS}
    return pickle.dumps(meta, protocol=3)


def binary_batch_bytes(images: np.ndarray, labels: list[int] | np.ndarray) -> bytes:
    """A binary batch: for each image its label byte, then its 3072 pixel bytes."""
    images = np.ascontiguousarray(images, dtype=np.uint8).reshape(-1, PIXELS)
    return np.concatenate([np.asarray(labels, dtype=np.uint8)[:, None], images], 1).tobytes()


# -- checksums ------------------------------------------------------------------------------------------------

def _digests(data: bytes) -> tuple[str, str]:
    return hashlib.md5(data, usedforsecurity=False).hexdigest(), hashlib.sha256(data).hexdigest()


def check_archive_bytes(archive: Archive, data: bytes, path: Path, root: Path) -> None:
    """Raise :class:`DatasetError` unless ``data`` (read from ``path``) is the official ``archive``."""
    expected = f"{archive.size} bytes with md5 {archive.md5} and sha256 {archive.sha256}"
    if len(data) != archive.size:
        kind = "truncated" if len(data) < archive.size else "too long"
        raise DatasetError(f"{path}: {kind}: {len(data)} bytes, expected {expected}; {how_to_get(archive, root)}")
    key = f"md5:{archive.md5}"
    if checksums.is_verified(path, key):
        return
    md5, sha256 = _digests(data)
    if (md5, sha256) != (archive.md5, archive.sha256):
        raise DatasetError(f"{path}: corrupt: md5 {md5}, sha256 {sha256}, expected {expected}; "
                           f"{how_to_get(archive, root)}")
    checksums.mark_verified(path, key)


def check_member_bytes(archive: Archive, member: str, data: bytes, path: Path, root: Path) -> None:
    """Raise :class:`DatasetError` unless the extracted ``member`` matches its published md5
    (pickled batches) or size (binary batches, for which no checksum is published)."""
    if archive.kind == "binary":
        if member != archive.meta and len(data) != archive.member_size:
            kind = "truncated" if len(data) < archive.member_size else "too long"
            raise DatasetError(f"{path}: {kind}: {len(data)} bytes, expected {archive.member_size}; "
                               f"{how_to_get(archive, root)}")
        return
    want = archive.member_md5[member]
    key = f"md5:{want}"
    if checksums.is_verified(path, key):
        return
    md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
    if md5 != want:
        raise DatasetError(f"{path}: corrupt: md5 {md5}, expected {want} (torchvision's published md5 of "
                           f"{member}); {how_to_get(archive, root)}")
    checksums.mark_verified(path, key)


# -- reading the members from a folder or an archive ---------------------------------------------------------

def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from exc


def _folder_members(archive: Archive, root: Path, verify: bool, names: tuple[str, ...]) -> dict[str, bytes]:
    folder = root / archive.folder_relpath
    out = {}
    for name in names:
        path = folder / name
        if not path.is_file():
            raise DatasetError(f"{path}: not found (the folder {folder} lacks {name}); {how_to_get(archive, root)}")
        data = _read(path)
        if verify:
            check_member_bytes(archive, name, data, path, root)
        out[name] = data
    return out


def _archive_members(archive: Archive, root: Path, verify: bool, names: tuple[str, ...]) -> dict[str, bytes]:
    path = root / archive.relpath
    raw = _read(path)
    if verify:
        check_archive_bytes(archive, raw, path, root)
    out = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as tar:
            for name in names:
                try:
                    info = tar.getmember(f"{archive.folder}/{name}")
                except KeyError:
                    raise DatasetError(f"{path}: has no member {archive.folder}/{name} (not the official "
                                       f"archive); {how_to_get(archive, root)}") from None
                handle = tar.extractfile(info) if info.isfile() else None
                if handle is None:
                    raise DatasetError(f"{path}: member {info.name} is not a regular file; "
                                       f"{how_to_get(archive, root)}")
                out[name] = handle.read()  # read into memory only: nothing is extracted to disk
    except DatasetError:
        raise
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        kind = "truncated" if isinstance(exc, EOFError) or "unexpected end" in str(exc).lower() else "corrupt"
        raise DatasetError(f"{path}: {kind} archive ({type(exc).__name__}: {exc}); "
                           f"{how_to_get(archive, root)}") from exc
    return out


def sources(root: Path, archives: Mapping[str, Archive] = ARCHIVES) -> list[tuple[Archive, str, Path]]:
    """Every CIFAR-10 source present in ``root``, in the loaders' order of preference (the order of
    ``archives``; each extracted folder before its archive): ``(archive, "folder" | "archive", path)``."""
    found = []
    for archive in archives.values():
        for how, rel in (("folder", archive.folder_relpath), ("archive", archive.relpath)):
            path = root / rel
            if (path.is_dir() if how == "folder" else path.is_file()):
                found.append((archive, how, path))
    return found


_cache: dict[tuple, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
_cache_lock = threading.Lock()


def clear_cache() -> None:
    """Forget the batches :func:`load_batches` keeps in memory (the next load reads the files again)."""
    with _cache_lock:
        _cache.clear()


def _stat_key(path: Path) -> tuple:
    if path.is_dir():
        return tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(path.iterdir()))
    st = path.stat()
    return (st.st_size, st.st_mtime_ns)


def load_batches(
    data_dir: DataDir = None, verify: bool = True, archives: Mapping[str, Archive] = ARCHIVES
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{batch: (images uint8 (N, 3072), labels int64 (N,))}`` for ``data_batch_1..5`` and
    ``test_batch``, from the first source present (see the module docstring); the last result is
    kept in memory while its files are unchanged.

    Args:
        data_dir: the data directory (default: ``$FLOWVI_DATA_DIR``, else ``~/.cache/flowvi/data``).
        verify: check sizes, checksums and images per batch against the archive's description.
        archives: the archive formats to look for, in order of preference (default: the official ones).
    """
    root = resolve_data_dir(data_dir)
    found = sources(root, archives)
    if not found:
        looked = ", ".join(str(root / r) for a in archives.values() for r in (a.folder_relpath, a.relpath))
        raise DatasetError(f"CIFAR-10 not found (looked for {looked}); "
                           f"{how_to_get(next(iter(archives.values())), root)}")
    archive, how, path = found[0]
    key = (str(path.resolve()), _stat_key(path), verify, archive)
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    names = archive.batch_names + ((archive.meta,) if verify else ())
    read = _folder_members if how == "folder" else _archive_members
    members = read(archive, root, verify, names)
    parse = parse_python_batch if archive.kind == "python" else parse_binary_batch
    batches = {}
    for logical, name in zip((*TRAIN_BATCHES, TEST_BATCH), archive.batch_names, strict=True):
        batches[logical] = parse(members[name], f"{path}/{name}" if how == "archive" else str(path / name))
        if verify and len(batches[logical][0]) != archive.batch_images:
            raise DatasetError(f"{path}/{name}: {len(batches[logical][0])} images, expected {archive.batch_images}")
    with _cache_lock:
        _cache.clear()
        _cache[key] = batches
    return batches


def load_cifar10(
    split: str, data_dir: DataDir = None, verify: bool = True, archives: Mapping[str, Archive] = ARCHIVES
) -> tuple[Tensor, Tensor]:
    """CIFAR-10 images of ``split`` as ``uint8 (N, 3072)`` (channel-major 3×32×32) and their labels.

    ``train``: 45,000 images (``data_batch_1..4`` and the first half of ``data_batch_5``);
    ``valid``: the last 5,000 training images (the second half of ``data_batch_5``); ``test``: 10,000.
    Missing, truncated or corrupt files raise :class:`DatasetError` with a sentence saying how to fix it.
    ``data_dir``, ``verify`` and ``archives`` as in :func:`load_batches`.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown cifar10 split {split!r}; expected one of {', '.join(SPLITS)}")
    batches = load_batches(data_dir, verify, archives)
    if split == "test":
        images, labels = batches[TEST_BATCH]
    else:
        last_images, last_labels = batches[TRAIN_BATCHES[-1]]
        cut = len(last_images) - len(last_images) // 2
        if split == "valid":
            images, labels = last_images[cut:], last_labels[cut:]
        else:
            images = np.concatenate([batches[b][0] for b in TRAIN_BATCHES[:-1]] + [last_images[:cut]])
            labels = np.concatenate([batches[b][1] for b in TRAIN_BATCHES[:-1]] + [last_labels[:cut]])
    return torch.from_numpy(np.array(images)), torch.from_numpy(np.array(labels))


def to_unit_interval(images: Tensor) -> Tensor:
    """8-bit levels ``k`` as float32 ``k / 255`` in [0, 1], the DLGM's input (the discretized logistic
    likelihood recovers ``k = round(255 x)``)."""
    return images.to(torch.float32).div_(255.0)


# -- verify and download -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SourceStatus:
    """The state of one CIFAR-10 source (an archive or an extracted folder) in a data directory."""

    path: Path | None
    ok: bool
    message: str


def verify_archive_dataset(
    name: str, data_dir: DataDir = None, archives: Mapping[str, Archive] = ARCHIVES
) -> list[SourceStatus]:
    """Check the archive ``name`` of ``archives`` (default: the official ``cifar10`` and
    ``cifar10-binary``) and its extracted folder, each if present (one "missing" status if neither is)."""
    archive = archives[name]
    root = resolve_data_dir(data_dir)
    statuses = []
    for how, path in (("folder", root / archive.folder_relpath), ("archive", root / archive.relpath)):
        if not (path.is_dir() if how == "folder" else path.is_file()):
            continue
        try:
            read = _folder_members if how == "folder" else _archive_members
            members = read(archive, root, True, archive.batch_names + (archive.meta,))
            parse = parse_python_batch if archive.kind == "python" else parse_binary_batch
            for member in archive.batch_names:
                parse(members[member], str(path / member))
        except DatasetError as exc:
            statuses.append(SourceStatus(path, False, str(exc)))
        else:
            statuses.append(SourceStatus(path, True, f"{path}: ok"))
    if not statuses:
        statuses.append(SourceStatus(None, False, f"{archive.relpath}: missing (no {root / archive.relpath} "
                                                  f"or {root / archive.folder_relpath})"))
    return statuses


def download_archive_dataset(
    name: str,
    data_dir: DataDir = None,
    base_url: str | None = None,
    force: bool = False,
    timeout: float = 60.0,
    progress: bool = False,
    log: Callable[[str], None] = print,
    archives: Mapping[str, Archive] = ARCHIVES,
) -> Path:
    """Download the archive ``name`` of ``archives`` (default: the official ones) into
    ``<data dir>/cifar10/`` unless a verified copy is there (or ``force``); size and sha256 are checked
    while streaming and the file is written atomically (:func:`flowvi_experiments.data.download.fetch_file`),
    then md5 and sha256 are checked once more."""
    from .download import fetch_file
    from .registry import CanonicalFile

    archive = archives[name]
    root = resolve_data_dir(data_dir)
    dest = root / archive.relpath
    if dest.is_file() and not force:
        try:
            check_archive_bytes(archive, _read(dest), dest, root)
        except DatasetError as exc:
            log(str(exc).split("; ")[0])
        else:
            log(f"{dest}: already present, md5 and sha256 ok")
            return dest
    url = (base_url or BASE_URL).rstrip("/") + "/" + archive.filename
    log(f"downloading {url} -> {dest}")
    spec = CanonicalFile(DATASET, archive.relpath, archive.size, archive.sha256, archive.filename)
    fetch_file(spec, url, dest, timeout=timeout, progress=progress, gzipped=False)
    try:
        check_archive_bytes(archive, _read(dest), dest, root)
    except DatasetError:
        dest.unlink(missing_ok=True)
        raise
    log(f"{dest}: md5 and sha256 ok")
    return dest
