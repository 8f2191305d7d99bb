"""Data for the paper's MNIST experiment (section 6.2): statically binarized MNIST and grey-level
MNIST with dynamic binarization, read from a data directory and verified by sha256.

The data directory is ``data_dir`` if given, else ``$FLOWVI_DATA_DIR``, else
``~/.cache/flowvi/data`` (``$XDG_CACHE_HOME/flowvi/data`` when that is set); ``flowvi data
download NAME`` fills it. This package sits on top of the library: the library never imports it.
"""

from .amat import parse_amat
from .checksums import clear_verification_cache, sha256_hex
from .errors import DatasetError
from .idx import parse_idx, to_idx
from .loaders import (
    BINARIZED_MNIST_SPLITS,
    MNIST_SPLITS,
    dynamic_binarize,
    load_binarized_mnist,
    load_mnist,
    load_mnist_labels,
)
from .paths import DATA_DIR_ENV, default_data_dir, resolve_data_dir
from .registry import DATASETS, DEFAULT_BASE_URLS, CanonicalFile

__all__ = [
    "BINARIZED_MNIST_SPLITS",
    "DATASETS",
    "DATA_DIR_ENV",
    "DEFAULT_BASE_URLS",
    "MNIST_SPLITS",
    "CanonicalFile",
    "DatasetError",
    "clear_verification_cache",
    "default_data_dir",
    "dynamic_binarize",
    "load_binarized_mnist",
    "load_mnist",
    "load_mnist_labels",
    "parse_amat",
    "parse_idx",
    "resolve_data_dir",
    "sha256_hex",
    "to_idx",
]
