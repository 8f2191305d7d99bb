"""Training and validation images for the DLGM, from :mod:`flowvi_experiments.data`.

- ``static``: Larochelle's fixed binarization (``binarized_mnist_{train,valid,test}``, 50k/10k/10k).
- ``dynamic``: MNIST grey levels; the first 50,000 training images train and the last 10,000
  validate; training images get a fresh Bernoulli draw every epoch (``binarize_epoch``), the
  validation and test images one fixed draw (seeded), so bounds are comparable across runs.
"""

from __future__ import annotations

from torch import Tensor

from .sharding import epoch_generator

_VALID_SPLIT = 50_000


def load_split(binarization: str, split: str, data_dir: str | None = None, verify: bool = True) -> Tensor:
    """Images of ``split`` (train, valid, test) as a float ``(N, 784)`` tensor.

    For ``dynamic``, train/valid are grey levels in [0, 1] (binarized later) and test is binarized
    with a fixed seed.
    """
    from .. import data

    if binarization == "static":
        return data.load_binarized_mnist(split, data_dir=data_dir, verify=verify)
    if binarization != "dynamic":
        raise ValueError(f"binarization must be 'static' or 'dynamic', got {binarization!r}")
    if split == "test":
        grey_test = data.load_mnist("test", data_dir=data_dir, verify=verify)
        return data.dynamic_binarize(grey_test, generator=epoch_generator(0, 0, 2))
    grey = data.load_mnist("train", data_dir=data_dir, verify=verify)
    if split == "train":
        return grey[:_VALID_SPLIT]
    if split == "valid":
        return data.dynamic_binarize(grey[_VALID_SPLIT:], generator=epoch_generator(0, 0, 3))
    raise ValueError(f"split must be train, valid or test, got {split!r}")


def binarize_epoch(grey: Tensor, seed: int, epoch: int) -> Tensor:
    """A fresh Bernoulli draw of the training images for ``epoch`` (dynamic binarization)."""
    from .. import data

    return data.dynamic_binarize(grey, generator=epoch_generator(seed, epoch, 1))
