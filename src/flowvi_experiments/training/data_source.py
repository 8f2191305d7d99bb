"""Training and validation images for the DLGM, from :mod:`flowvi_experiments.data`: the datasets a run can
name (``data: mnist | cifar10``, :data:`DATA`), with the data dimension and likelihood each calls for.

MNIST (``binarization``):

- ``static``: Larochelle's fixed binarization (``binarized_mnist_{train,valid,test}``, 50k/10k/10k).
- ``dynamic``: MNIST grey levels; the first 50,000 training images train and the last 10,000
  validate; training images get a fresh Bernoulli draw every epoch (``binarize_epoch``), the
  validation and test images one fixed draw (seeded), so bounds are comparable across runs.

CIFAR-10: 8-bit levels ``k`` as ``k / 255`` (float32, ``(N, 3072)``), split 45,000 / 5,000 / 10,000
(:func:`flowvi_experiments.data.cifar.load_cifar10`); ``binarization`` does not apply.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from .sharding import epoch_generator

_VALID_SPLIT = 50_000


@dataclass(frozen=True)
class DataSpec:
    """A dataset a run can train on: its data dimension, image shape and the likelihood it calls for."""

    name: str
    x_dim: int
    image_shape: tuple[int, ...]  #: (H, W) grey levels or (C, H, W) colour, for image grids
    likelihood: str


#: ``TrainConfig.data`` -> what the model needs to know about it
DATA: dict[str, DataSpec] = {
    "mnist": DataSpec("mnist", 784, (28, 28), "bernoulli"),
    "cifar10": DataSpec("cifar10", 3072, (3, 32, 32), "discretized_logistic"),
}


def load_split(binarization: str, split: str, data_dir: str | None = None, verify: bool = True,
               dataset: str = "mnist") -> Tensor:
    """Images of ``split`` (train, valid, test) of ``dataset`` as a float ``(N, x_dim)`` tensor.

    MNIST: for ``dynamic``, train/valid are grey levels in [0, 1] (binarized later) and test is
    binarized with a fixed seed. CIFAR-10: levels ``k / 255``.
    """
    from .. import data

    if dataset == "cifar10":
        from ..data import cifar

        return cifar.to_unit_interval(cifar.load_cifar10(split, data_dir, verify)[0])
    if dataset != "mnist":
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATA)}")
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
