"""The canonical data files: where each one sits below the data directory, its size and sha256
(of the decompressed bytes, embedded from ``SHA256SUMS.uncompressed``) and where to download it.

:data:`DATASETS` is the table the loaders, ``flowvi data download`` and ``flowvi data verify`` read;
each of them takes another table as ``datasets`` (e.g. small files in the canonical formats with
their own sizes and sha256, as the tests use).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources

#: public locations of the canonical files (``flowvi data download --base-url`` replaces them)
DEFAULT_BASE_URLS: dict[str, str] = {
    "binarized_mnist": "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/",
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
}

_SUMS_RESOURCE = "SHA256SUMS.uncompressed"


def _read_embedded_sums() -> dict[str, str]:
    """``{relative path: sha256}`` from the package's copy of ``SHA256SUMS.uncompressed``."""
    text = resources.files(__package__).joinpath(_SUMS_RESOURCE).read_text(encoding="ascii")
    sums: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        digest, _, relpath = line.partition("  ")
        if len(digest) != 64 or not relpath:
            raise RuntimeError(f"malformed line {lineno} in flowvi/data/{_SUMS_RESOURCE}: {line!r}")
        sums[relpath.strip()] = digest.lower()
    return sums


EXPECTED_SHA256: dict[str, str] = _read_embedded_sums()


@dataclass(frozen=True)
class CanonicalFile:
    """One canonical file. ``relpath`` names the decompressed file below the data directory (the
    loaders also accept ``relpath + ".gz"``); ``size`` and ``sha256`` are of the decompressed bytes;
    ``remote_name`` is the file name on the download server (with ``.gz`` if served compressed).
    """

    dataset: str
    relpath: str
    size: int
    sha256: str
    remote_name: str

    @property
    def name(self) -> str:
        return self.relpath.rsplit("/", 1)[-1]


def _file(dataset: str, name: str, size: int, remote_suffix: str = "") -> CanonicalFile:
    relpath = f"{dataset}/{name}"
    return CanonicalFile(dataset, relpath, size, EXPECTED_SHA256[relpath], name + remote_suffix)


#: a table of datasets: name -> its canonical files
Datasets = Mapping[str, tuple[CanonicalFile, ...]]

#: every dataset ``flowvi data download`` knows, with its files
DATASETS: dict[str, tuple[CanonicalFile, ...]] = {
    "binarized_mnist": (
        _file("binarized_mnist", "binarized_mnist_train.amat", 78_400_000),
        _file("binarized_mnist", "binarized_mnist_valid.amat", 15_680_000),
        _file("binarized_mnist", "binarized_mnist_test.amat", 15_680_000),
    ),
    "mnist": (
        _file("mnist", "train-images-idx3-ubyte", 47_040_016, ".gz"),
        _file("mnist", "train-labels-idx1-ubyte", 60_008, ".gz"),
        _file("mnist", "t10k-images-idx3-ubyte", 7_840_016, ".gz"),
        _file("mnist", "t10k-labels-idx1-ubyte", 10_008, ".gz"),
    ),
}


def canonical_file(relpath: str, datasets: Datasets = DATASETS) -> CanonicalFile:
    """The :class:`CanonicalFile` of ``datasets`` (default :data:`DATASETS`) whose ``relpath`` is ``relpath``.

    >>> canonical_file("mnist/t10k-labels-idx1-ubyte").size
    10008
    """
    for files in datasets.values():
        for spec in files:
            if spec.relpath == relpath:
                return spec
    raise KeyError(f"no canonical data file {relpath!r}")
