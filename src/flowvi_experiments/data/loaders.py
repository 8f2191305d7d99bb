"""Loaders of the MNIST variants of the paper's experiment (section 6.2): statically binarized
MNIST (``.amat``) and grey-level MNIST (IDX) with dynamic binarization.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import Tensor

from . import registry
from .amat import PIXELS, parse_amat
from .errors import DatasetError
from .files import read_canonical
from .idx import parse_idx
from .registry import DATASETS, Datasets

DataDir = str | os.PathLike[str] | None

#: split -> file of statically binarized MNIST (50,000 / 10,000 / 10,000 images)
BINARIZED_MNIST_SPLITS: dict[str, str] = {
    "train": "binarized_mnist/binarized_mnist_train.amat",
    "valid": "binarized_mnist/binarized_mnist_valid.amat",
    "test": "binarized_mnist/binarized_mnist_test.amat",
}

#: split -> (images, labels) files of MNIST (60,000 / 10,000 images)
MNIST_SPLITS: dict[str, tuple[str, str]] = {
    "train": ("mnist/train-images-idx3-ubyte", "mnist/train-labels-idx1-ubyte"),
    "test": ("mnist/t10k-images-idx3-ubyte", "mnist/t10k-labels-idx1-ubyte"),
}


def _split(split: str, splits: dict, dataset: str) -> str:
    if split not in splits:
        raise ValueError(f"unknown {dataset} split {split!r}; expected one of {', '.join(splits)}")
    return split


def load_binarized_mnist(
    split: str, data_dir: DataDir = None, verify: bool = True, datasets: Datasets = DATASETS
) -> Tensor:
    """Statically binarized MNIST: a float32 tensor ``(N, 784)`` of 0/1 pixels, row-major 28x28.

    ``split`` is ``train`` (N = 50,000), ``valid`` (10,000) or ``test`` (10,000), read from
    ``binarized_mnist/binarized_mnist_{split}.amat[.gz]`` in the data directory (see
    :func:`~flowvi_experiments.data.resolve_data_dir`). With ``verify`` the decompressed bytes must match the
    canonical sha256; a missing, truncated or corrupt file raises :class:`DatasetError`. The
    canonical files are those of ``datasets`` (default: :data:`~flowvi_experiments.data.DATASETS`).
    """
    spec = registry.canonical_file(
        BINARIZED_MNIST_SPLITS[_split(split, BINARIZED_MNIST_SPLITS, "binarized_mnist")], datasets
    )
    data, path = read_canonical(spec, data_dir, verify)
    pixels = parse_amat(data, source=str(path), columns=PIXELS)
    return torch.from_numpy(pixels.astype(np.float32))


def _mnist_idx(relpath: str, data_dir: DataDir, verify: bool, ndim: int, datasets: Datasets) -> np.ndarray:
    spec = registry.canonical_file(relpath, datasets)
    data, path = read_canonical(spec, data_dir, verify)
    values = parse_idx(data, source=str(path))
    if values.dtype != np.uint8 or values.ndim != ndim or (ndim == 3 and values.shape[1:] != (28, 28)):
        what = "(N, 28, 28) images" if ndim == 3 else "(N,) labels"
        raise DatasetError(f"{path}: IDX {values.dtype} array of shape {values.shape}, expected uint8 {what}")
    return values


def load_mnist(split: str, data_dir: DataDir = None, verify: bool = True, datasets: Datasets = DATASETS) -> Tensor:
    """MNIST grey levels scaled to [0, 1]: a float32 tensor ``(N, 784)``, row-major 28x28.

    ``split`` is ``train`` (N = 60,000) or ``test`` (10,000), read from LeCun's IDX files
    ``mnist/{train,t10k}-images-idx3-ubyte[.gz]``. For the dynamically binarized protocol draw
    fresh pixels each epoch with :func:`dynamic_binarize`. Errors as :func:`load_binarized_mnist`.
    """
    images_path, _ = MNIST_SPLITS[_split(split, MNIST_SPLITS, "mnist")]
    images = _mnist_idx(images_path, data_dir, verify, 3, datasets)
    return torch.from_numpy(images.reshape(len(images), PIXELS).astype(np.float32)).div_(255.0)


def load_mnist_labels(
    split: str, data_dir: DataDir = None, verify: bool = True, datasets: Datasets = DATASETS
) -> Tensor:
    """MNIST digit labels 0..9 as an int64 tensor ``(N,)``, aligned with :func:`load_mnist`."""
    _, labels_path = MNIST_SPLITS[_split(split, MNIST_SPLITS, "mnist")]
    labels = _mnist_idx(labels_path, data_dir, verify, 1, datasets)
    if labels.size and int(labels.max()) > 9:
        raise DatasetError(f"{labels_path}: label {int(labels.max())} out of range 0..9")
    return torch.from_numpy(labels.astype(np.int64))


def dynamic_binarize(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """A fresh binarization ``b ~ Bernoulli(x)`` of grey levels ``x`` in [0, 1] (same shape, dtype
    and device): the dynamic binarization protocol, one new draw per epoch (Burda et al. 2015).
    """
    if not torch.is_floating_point(x):
        raise TypeError(f"dynamic_binarize expects floating-point grey levels, got {x.dtype}")
    if x.numel() and not bool(((x >= 0) & (x <= 1)).all()):
        bad = x[~((x >= 0) & (x <= 1))][0].item()
        raise ValueError(f"dynamic_binarize expects grey levels in [0, 1], found {bad}")
    return torch.bernoulli(x, generator=generator)
