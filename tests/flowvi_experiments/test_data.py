"""Loaders and parsers of flowvi_experiments.data on small files written here, in the canonical formats
(the loaders given a table of datasets whose canonical files are these, with their own sizes and sha256)."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np
import pytest
import torch
from hypothesis import given, settings

import flowvi_experiments.data as fd
from flowvi_experiments.data import DatasetError, registry
from flowvi_experiments.data.amat import parse_amat
from flowvi_experiments.data.idx import parse_idx, to_idx


@pytest.fixture(autouse=True)
def _fresh_cache():
    fd.clear_verification_cache()
    yield
    fd.clear_verification_cache()


def amat_bytes(pixels: np.ndarray) -> bytes:
    """The canonical .amat text of a 0/1 array (one image per line, single spaces)."""
    return b"".join(b" ".join(b"1" if v else b"0" for v in row) + b"\n" for row in pixels)


def install(root: Path, dataset: str, files: dict[str, bytes], gz: bool = False) -> registry.Datasets:
    """Write ``files`` (name -> decompressed bytes) under ``root/dataset``; returns the table of datasets
    in which they are the canonical files of ``dataset`` (their own sizes and sha256)."""
    (root / dataset).mkdir(parents=True, exist_ok=True)
    specs = []
    for name, content in files.items():
        path = root / dataset / (name + (".gz" if gz else ""))
        path.write_bytes(gzip.compress(content) if gz else content)
        specs.append(
            registry.CanonicalFile(dataset, f"{dataset}/{name}", len(content), fd.sha256_hex(content), name)
        )
    return {**registry.DATASETS, dataset: tuple(specs)}


def small_binarized(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        split: (rng.random((n, 784)) < 0.3).astype(np.uint8)
        for split, n in [("train", 7), ("valid", 3), ("test", 4)]
    }


def install_binarized(root: Path, gz: bool = False, seed: int = 0) -> tuple[dict[str, np.ndarray], registry.Datasets]:
    arrays = small_binarized(np.random.default_rng(seed))
    datasets = install(
        root,
        "binarized_mnist",
        {f"binarized_mnist_{s}.amat": amat_bytes(a) for s, a in arrays.items()},
        gz=gz,
    )
    return arrays, datasets


def install_mnist(root: Path, gz: bool = False, seed: int = 0):
    rng = np.random.default_rng(seed)
    out, files = {}, {}
    for split, prefix, n in [("train", "train", 6), ("test", "t10k", 3)]:
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        out[split] = (images, labels)
        files[f"{prefix}-images-idx3-ubyte"] = to_idx(images)
        files[f"{prefix}-labels-idx1-ubyte"] = to_idx(labels)
    return out, install(root, "mnist", files, gz=gz)


# --- data directory -------------------------------------------------------------------------


def test_resolve_data_dir_order(monkeypatch, tmp_path):
    monkeypatch.setenv("FLOWVI_DATA_DIR", str(tmp_path / "env"))
    assert fd.resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert fd.resolve_data_dir() == tmp_path / "env"
    monkeypatch.delenv("FLOWVI_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert fd.resolve_data_dir() == tmp_path / "xdg" / "flowvi" / "data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert fd.resolve_data_dir() == Path.home() / ".cache" / "flowvi" / "data"


def test_embedded_sums_are_the_shared_ones():
    assert len(registry.EXPECTED_SHA256) == 7
    assert registry.EXPECTED_SHA256["binarized_mnist/binarized_mnist_test.amat"] == (
        "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c"
    )
    assert {s.relpath for files in registry.DATASETS.values() for s in files} == set(registry.EXPECTED_SHA256)
    shared = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "SHA256SUMS.uncompressed"
    if shared.is_file():
        text = shared.read_text()
        for relpath, digest in registry.EXPECTED_SHA256.items():
            assert f"{digest}  {relpath}" in text


# --- binarized MNIST ------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_load_binarized_mnist_roundtrip(tmp_path, gz):
    arrays, datasets = install_binarized(tmp_path, gz=gz)
    for split, expected in arrays.items():
        x = fd.load_binarized_mnist(split, tmp_path, datasets=datasets)
        assert x.dtype == torch.float32 and x.shape == expected.shape
        assert torch.equal(x, torch.from_numpy(expected.astype(np.float32)))


def test_load_uses_env_data_dir(monkeypatch, tmp_path):
    arrays, datasets = install_binarized(tmp_path)
    monkeypatch.setenv("FLOWVI_DATA_DIR", str(tmp_path))
    assert torch.equal(fd.load_binarized_mnist("test", datasets=datasets),
                       torch.from_numpy(arrays["test"].astype(np.float32)))
    with pytest.raises(DatasetError, match=r"binarized_mnist_test\.amat: truncated: \d+ bytes decompressed, "
                                           r"expected 15680000 bytes"):  # the canonical table, the default
        fd.load_binarized_mnist("test")


def test_unknown_split(tmp_path):
    with pytest.raises(ValueError, match="train, valid, test"):
        fd.load_binarized_mnist("validation", tmp_path)
    with pytest.raises(ValueError, match="train, test"):
        fd.load_mnist("valid", tmp_path)


def test_missing_file_message(tmp_path):
    _, datasets = install_binarized(tmp_path)
    os.remove(tmp_path / "binarized_mnist" / "binarized_mnist_valid.amat")
    with pytest.raises(DatasetError) as info:
        fd.load_binarized_mnist("valid", tmp_path, datasets=datasets)
    msg = str(info.value)
    assert "binarized_mnist/binarized_mnist_valid.amat: not found" in msg
    assert "binarized_mnist_valid.amat.gz" in msg
    assert "flowvi data download binarized_mnist" in msg


def test_corrupt_file_names_expected_sha(tmp_path):
    _, datasets = install_binarized(tmp_path)
    path = tmp_path / "binarized_mnist" / "binarized_mnist_train.amat"
    data = bytearray(path.read_bytes())
    data[0] = ord("1") if data[0] == ord("0") else ord("0")  # still a valid .amat, one pixel flipped
    path.write_bytes(bytes(data))
    spec = registry.canonical_file("binarized_mnist/binarized_mnist_train.amat", datasets)
    with pytest.raises(DatasetError) as info:
        fd.load_binarized_mnist("train", tmp_path, datasets=datasets)
    msg = str(info.value)
    assert str(path) in msg and "corrupt" in msg and spec.sha256 in msg and "flowvi data download" in msg
    # verify=False skips the checksum and reads the (well-formed) file as it is
    unchecked = fd.load_binarized_mnist("train", tmp_path, verify=False, datasets=datasets)
    assert unchecked[0, 0].item() == data[0] - ord("0")


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_file(tmp_path, gz):
    _, datasets = install_binarized(tmp_path, gz=gz)
    path = tmp_path / "binarized_mnist" / ("binarized_mnist_test.amat" + (".gz" if gz else ""))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2 - 3])  # mid-line
    with pytest.raises(DatasetError, match="truncated") as info:
        fd.load_binarized_mnist("test", tmp_path, datasets=datasets)
    assert str(path) in str(info.value)
    if not gz:  # without the checksum the parser still sees the cut line
        with pytest.raises(DatasetError, match=r"line \d+ has \d+ values, expected 784"):
            fd.load_binarized_mnist("test", tmp_path, verify=False, datasets=datasets)


def test_corrupt_gzip(tmp_path):
    _, datasets = install_binarized(tmp_path, gz=True)
    path = tmp_path / "binarized_mnist" / "binarized_mnist_valid.amat.gz"
    path.write_bytes(b"this is not gzip data at all")
    with pytest.raises(DatasetError, match="corrupt gzip") as info:
        fd.load_binarized_mnist("valid", tmp_path, datasets=datasets)
    assert "expected" in str(info.value) and "flowvi data download binarized_mnist" in str(info.value)


def test_verification_cache_skips_hash_until_file_changes(tmp_path):
    """A verified file is not hashed again while its size and modification time stay (the cache's key):
    a change that keeps both goes unnoticed, a new modification time is hashed and found."""
    _, datasets = install_binarized(tmp_path)
    fd.load_binarized_mnist("test", tmp_path, datasets=datasets)
    path = tmp_path / "binarized_mnist" / "binarized_mnist_test.amat"
    st, sha = os.stat(path), fd.sha256_hex(path.read_bytes())
    data = bytearray(path.read_bytes())
    data[2] = ord("1") if data[2] == ord("0") else ord("0")  # same size, new content
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the same modification time
    assert fd.checksums.is_verified(path, sha)
    fd.load_binarized_mnist("test", tmp_path, datasets=datasets)  # not hashed again: a hash would find the change
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert not fd.checksums.is_verified(path, sha)
    with pytest.raises(DatasetError, match="corrupt"):
        fd.load_binarized_mnist("test", tmp_path, datasets=datasets)


def test_parse_amat_accepts_loose_whitespace():
    pixels = (np.random.default_rng(1).random((3, 784)) < 0.5).astype(np.uint8)
    canonical = amat_bytes(pixels)
    loose = canonical.replace(b"\n", b" \r\n").replace(b" 1", b"\t 1") + b"\n\n"
    assert np.array_equal(parse_amat(canonical), pixels)
    assert np.array_equal(parse_amat(loose), pixels)
    assert np.array_equal(parse_amat(canonical[:-1]), pixels)  # no final newline


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda t: t.replace(b"0", b"2", 1), "byte b'2' on line 1"),
        (lambda t: t.replace(b"0 ", b"0.5 ", 1), r"byte b'\.' on line 1"),
        (lambda t: t.replace(b"\n", b"\n\n", 1), "line 2 has 0 values"),
        (lambda t: t.replace(b" ", b"", 1), r"value 10\.\.\. on line 1"),
        (lambda t: t.replace(b"\n", b" 1\n", 1), "line 1 has 785 values"),
        (lambda t: b"", "empty"),
    ],
)
def test_parse_amat_rejects_bad_text(mutate, message):
    text = amat_bytes(np.zeros((2, 784), dtype=np.uint8) | np.eye(2, 784, dtype=np.uint8))
    with pytest.raises(DatasetError, match=message):
        parse_amat(mutate(text), source="x.amat")


# --- MNIST (IDX) ----------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_roundtrip(tmp_path, gz):
    arrays, datasets = install_mnist(tmp_path, gz=gz)
    for split, (images, labels) in arrays.items():
        x = fd.load_mnist(split, tmp_path, datasets=datasets)
        y = fd.load_mnist_labels(split, tmp_path, datasets=datasets)
        assert x.dtype == torch.float32 and x.shape == (len(images), 784)
        assert torch.allclose(x, torch.from_numpy(images.reshape(-1, 784).astype(np.float32) / 255))
        assert x.min() >= 0 and x.max() <= 1
        assert y.dtype == torch.int64 and torch.equal(y, torch.from_numpy(labels.astype(np.int64)))


def test_idx_roundtrip_dtypes():
    for dtype in ["u1", "i1", ">i2", "<i4", "f4", "f8"]:
        a = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
        b = parse_idx(to_idx(a))
        assert b.shape == a.shape and np.array_equal(a, b) and b.dtype.isnative


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x00", "shorter than the 4-byte magic"),
        (b"\x1f\x8b\x08\x00" + bytes(20), "magic number 1f8b0800"),
        (b"\x00\x00\x07\x01" + bytes(8), "magic number 00000701"),
        (b"\x00\x00\x08\x00", "magic number 00000800"),
        (b"\x00\x00\x08\x03\x00\x00", "truncated IDX header"),
        (bytes([0, 0, 8, 1, 0, 0, 0, 5, 1, 2, 3]), "truncated IDX file: 11 bytes"),
        (bytes([0, 0, 8, 1, 0, 0, 0, 2, 1, 2, 3]), "trailing bytes in IDX file"),
    ],
)
def test_parse_idx_rejects_bad_files(data, message):
    with pytest.raises(DatasetError, match=message):
        parse_idx(data, source="f.idx")


def test_mnist_wrong_dims_or_labels(tmp_path):
    datasets = install(
        tmp_path,
        "mnist",
        {
            "train-images-idx3-ubyte": to_idx(np.zeros((2, 28, 27), dtype=np.uint8)),
            "train-labels-idx1-ubyte": to_idx(np.array([3, 12], dtype=np.uint8)),
            "t10k-images-idx3-ubyte": to_idx(np.zeros((2, 28, 28), dtype=np.float32)),
            "t10k-labels-idx1-ubyte": to_idx(np.zeros((2, 1), dtype=np.uint8)),
        },
    )
    with pytest.raises(DatasetError, match=r"shape \(2, 28, 27\), expected uint8 \(N, 28, 28\)"):
        fd.load_mnist("train", tmp_path, datasets=datasets)
    with pytest.raises(DatasetError, match="label 12 out of range"):
        fd.load_mnist_labels("train", tmp_path, datasets=datasets)
    with pytest.raises(DatasetError, match="float32 array"):
        fd.load_mnist("test", tmp_path, datasets=datasets)
    with pytest.raises(DatasetError, match=r"expected uint8 \(N,\) labels"):
        fd.load_mnist_labels("test", tmp_path, datasets=datasets)


# --- dynamic binarization -------------------------------------------------------------------


def test_dynamic_binarize_is_bernoulli_of_grey_levels():
    grey = torch.tensor([0.0, 0.25, 0.5, 0.9, 1.0]).expand(20_000, 5)
    b = fd.dynamic_binarize(grey, torch.Generator().manual_seed(0))
    assert b.shape == grey.shape and b.dtype == grey.dtype
    assert set(b.unique().tolist()) <= {0.0, 1.0}
    freq = b.mean(0)
    assert freq[0] == 0 and freq[-1] == 1
    # binomial standard error at n = 20,000 is <= 0.0036; 5 sigma
    assert torch.allclose(freq, grey[0], atol=0.018)


def test_dynamic_binarize_fresh_draws_and_seeding():
    grey = torch.full((100, 784), 0.5)
    a = fd.dynamic_binarize(grey, torch.Generator().manual_seed(3))
    b = fd.dynamic_binarize(grey, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    c, d = fd.dynamic_binarize(grey, g), fd.dynamic_binarize(grey, g)
    assert torch.equal(a, b) and torch.equal(a, c)
    assert not torch.equal(c, d)


def test_dynamic_binarize_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\[0, 1\], found 2"):
        fd.dynamic_binarize(torch.tensor([0.5, 2.0]))
    with pytest.raises(ValueError, match="found nan"):
        fd.dynamic_binarize(torch.tensor([float("nan")]))
    with pytest.raises(TypeError, match="floating-point"):
        fd.dynamic_binarize(torch.tensor([0, 255], dtype=torch.uint8))


def test_library_does_not_import_data_package():
    code = "import sys, flowvi; sys.exit(any(m.startswith('flowvi_experiments.data') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


@settings(max_examples=40, deadline=None)
@given(
    pixels=hnp.arrays(np.uint8, st.tuples(st.integers(1, 4), st.just(784)), elements=st.integers(0, 1)),
    sep=st.sampled_from([b" ", b"\t", b"  ", b" \t"]),
    eol=st.sampled_from([b"\n", b"\r\n", b" \n"]),
    final=st.sampled_from([b"", b"\n", b"\n\n"]),
)
def test_parse_amat_property(pixels, sep, eol, final):
    text = eol.join(sep.join(b"%d" % v for v in row) for row in pixels) + final
    assert np.array_equal(parse_amat(text), pixels)


@settings(max_examples=40, deadline=None)
@given(
    values=hnp.arrays(
        st.sampled_from([np.dtype(t) for t in ["u1", "i1", ">i2", "<i4", "<f4", ">f8"]]),
        hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5),
    )
)
def test_idx_roundtrip_property(values):
    decoded = parse_idx(to_idx(values))
    assert decoded.shape == values.shape and decoded.dtype.isnative
    assert np.array_equal(decoded, values, equal_nan=values.dtype.kind == "f")
