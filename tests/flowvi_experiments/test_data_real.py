"""The loaders on the real files in ``<repo>/../shared/data`` (skipped where that is absent)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import flowvi_experiments.data as fd

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"

pytestmark = pytest.mark.skipif(
    not (SHARED_DATA / "binarized_mnist").is_dir() or not (SHARED_DATA / "mnist").is_dir(),
    reason=f"real data not found at {SHARED_DATA} (CI clones the repo with shared/ beside it)",
)


@pytest.mark.parametrize(("split", "n"), [("train", 50_000), ("valid", 10_000), ("test", 10_000)])
def test_binarized_mnist_real(split, n):
    x = fd.load_binarized_mnist(split, SHARED_DATA)  # verifies the sha256 of the decompressed file
    assert x.shape == (n, 784) and x.dtype == torch.float32
    assert bool(((x == 0) | (x == 1)).all()) and x.max().item() == 1.0
    # about 13% of the pixels of binarized MNIST are on; every image has some ink
    assert 0.12 < x.mean().item() < 0.14
    assert (x.sum(1) > 0).all()


@pytest.mark.parametrize(("split", "n"), [("train", 60_000), ("test", 10_000)])
def test_mnist_real(split, n):
    x = fd.load_mnist(split, SHARED_DATA)
    y = fd.load_mnist_labels(split, SHARED_DATA)
    assert x.shape == (n, 784) and x.dtype == torch.float32
    assert x.min().item() == 0.0 and x.max().item() == 1.0
    assert y.shape == (n,) and set(y.unique().tolist()) == set(range(10))
    # the first labels of the canonical files (LeCun's order)
    assert y[:5].tolist() == ([5, 0, 4, 1, 9] if split == "train" else [7, 2, 1, 0, 4])


def test_dynamic_binarization_of_real_mnist_matches_grey_mean():
    x = fd.load_mnist("test", SHARED_DATA)
    b = fd.dynamic_binarize(x, torch.Generator().manual_seed(0))
    assert bool(((b == 0) | (b == 1)).all())
    assert abs(b.mean().item() - x.mean().item()) < 1e-3  # 7.8M Bernoulli draws: s.e. about 1.2e-4
