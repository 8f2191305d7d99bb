"""CIFAR-10 readers on small files in the official formats: pickled and binary batches, extracted or in
the official ``.tar.gz`` archives; checksums; missing, truncated and corrupt files; the restricted
unpickler refusing a malicious pickle. The checksums are checked against an :class:`cifar.Archive`
description of the small files (their own sizes, checksums and images per batch), given to the
loaders as ``archives``."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from flowvi_experiments.data import DatasetError, cifar

N_TRAIN = N_TEST = 6  # images per batch (the official files hold 10,000; the small descriptions say 6)


pytestmark = pytest.mark.usefixtures("fresh_cifar_caches")


def make_batches(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = {}
    for name in (*cifar.TRAIN_BATCHES, cifar.TEST_BATCH):
        n = N_TEST if name == cifar.TEST_BATCH else N_TRAIN
        out[name] = (rng.integers(0, 256, (n, cifar.PIXELS), dtype=np.uint8), rng.integers(0, 10, n))
    return out


def python_members(batches) -> dict[str, bytes]:
    members = {name: cifar.python_batch_bytes(images, labels, name) for name, (images, labels) in batches.items()}
    members["batches.meta"] = cifar.meta_bytes(N_TRAIN)
    return members


def binary_members(batches) -> dict[str, bytes]:
    members = {f"{name}.bin": cifar.binary_batch_bytes(images, labels) for name, (images, labels) in batches.items()}
    members["batches.meta.txt"] = "\n".join(cifar.CLASSES).encode() + b"\n"
    return members


def write_folder(root: Path, archive: cifar.Archive, members: dict[str, bytes]) -> Path:
    folder = root / archive.folder_relpath
    folder.mkdir(parents=True)
    for name, data in members.items():
        (folder / name).write_bytes(data)
    return folder


def tar_gz(archive: cifar.Archive, members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(f"{archive.folder}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def small_archive(archive: cifar.Archive, data: bytes, **changes) -> cifar.Archive:
    """``archive``'s description of ``data``, an archive of small batches: its own size and checksums,
    :data:`N_TRAIN` images per batch (and ``changes``)."""
    return dataclasses.replace(archive, size=len(data), md5=hashlib.md5(data).hexdigest(),
                               sha256=hashlib.sha256(data).hexdigest(), batch_images=N_TRAIN, **changes)


def with_archive(small: cifar.Archive) -> dict[str, cifar.Archive]:
    """The official table of archives with ``small`` in place of the one of its name."""
    return {**cifar.ARCHIVES, small.name: small}


def expected_split(batches, split):
    last_images, last_labels = batches["data_batch_5"]
    cut = N_TRAIN - N_TRAIN // 2
    if split == "test":
        return batches["test_batch"]
    if split == "valid":
        return last_images[cut:], last_labels[cut:]
    images = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 5)] + [last_images[:cut]])
    labels = np.concatenate([batches[f"data_batch_{i}"][1] for i in range(1, 5)] + [last_labels[:cut]])
    return images, labels


@pytest.mark.parametrize("source", ["python-folder", "python-archive", "binary-folder", "binary-archive"])
def test_every_format_reads_the_same_images_and_split(tmp_path, source):
    batches = make_batches()
    kind, how = source.split("-")
    archive = cifar.PYTHON if kind == "python" else cifar.BINARY
    members = python_members(batches) if kind == "python" else binary_members(batches)
    if how == "folder":
        write_folder(tmp_path, archive, members)
    else:
        (tmp_path / "cifar10").mkdir()
        (tmp_path / archive.relpath).write_bytes(tar_gz(archive, members))
    for split in cifar.SPLITS:
        images, labels = cifar.load_cifar10(split, tmp_path, verify=False)
        want_images, want_labels = expected_split(batches, split)
        assert images.dtype == torch.uint8 and images.shape == (len(want_images), 3072)
        assert np.array_equal(images.numpy(), want_images) and np.array_equal(labels.numpy(), want_labels)
    train, valid = cifar.load_cifar10("train", tmp_path, False)[0], cifar.load_cifar10("valid", tmp_path, False)[0]
    assert len(train) + len(valid) == 5 * N_TRAIN and len(valid) == N_TRAIN // 2  # the last half of batch 5
    x = cifar.to_unit_interval(train)
    assert x.dtype == torch.float32 and torch.equal(torch.round(x * 255).to(torch.uint8), train)


def test_verified_archive_and_checksum_errors(tmp_path):
    data = tar_gz(cifar.PYTHON, python_members(make_batches()))
    archive = small_archive(cifar.PYTHON, data)
    archives = with_archive(archive)
    path = tmp_path / archive.relpath
    path.parent.mkdir()
    path.write_bytes(data)
    assert cifar.load_cifar10("test", tmp_path, verify=True, archives=archives)[0].shape == (N_TEST, 3072)
    # the official description (the default), which these small files are not; not answered from the cache
    with pytest.raises(DatasetError, match=rf"truncated: {len(data)} bytes, expected 170498071 bytes with md5"):
        cifar.load_cifar10("test", tmp_path, verify=True)
    with pytest.raises(DatasetError, match=rf"data_batch_1: {N_TRAIN} images, expected 10000"):
        cifar.load_cifar10("test", tmp_path, verify=True,
                           archives=with_archive(dataclasses.replace(archive, batch_images=10_000)))
    bad = bytearray(data)
    bad[len(bad) // 2] ^= 0xFF
    path.write_bytes(bytes(bad))
    cifar.clear_cache()
    with pytest.raises(DatasetError, match=r"corrupt: md5 [0-9a-f]{32}, sha256 [0-9a-f]{64}, expected") as err:
        cifar.load_cifar10("train", tmp_path, verify=True, archives=archives)
    assert "flowvi data download cifar10" in str(err.value) and "\n" not in str(err.value)
    path.write_bytes(data[:-100])
    with pytest.raises(DatasetError, match="truncated"):
        cifar.load_cifar10("train", tmp_path, verify=True, archives=archives)
    # without verification the damage still gives a sentence, not a traceback from tarfile
    with pytest.raises(DatasetError, match=r"(truncated|corrupt) archive"):
        cifar.load_cifar10("train", tmp_path, verify=False)


def test_extracted_python_batches_are_checked_against_their_md5(tmp_path):
    members = python_members(make_batches())
    write_folder(tmp_path, cifar.PYTHON, members)
    md5 = {name: hashlib.md5(data).hexdigest() for name, data in members.items()}
    archive = dataclasses.replace(cifar.PYTHON, batch_images=N_TRAIN, member_md5=md5)
    images, _ = cifar.load_cifar10("test", tmp_path, verify=True, archives={archive.name: archive})
    assert images.shape == (N_TEST, 3072)
    cifar.clear_cache()
    archive = dataclasses.replace(archive, member_md5={**md5, "test_batch": "0" * 32})
    with pytest.raises(DatasetError, match=r"test_batch: corrupt: md5 [0-9a-f]{32}, expected 0{32}"):
        cifar.load_cifar10("test", tmp_path, verify=True, archives={archive.name: archive})


def test_missing_truncated_and_malformed_files_are_sentences(tmp_path):
    with pytest.raises(DatasetError, match=r"CIFAR-10 not found .*flowvi data download cifar10"):
        cifar.load_cifar10("train", tmp_path)
    members = python_members(make_batches())
    folder = write_folder(tmp_path, cifar.PYTHON, members)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match=r"data_batch_3: not found"):
        cifar.load_cifar10("train", tmp_path, verify=False)
    (folder / "data_batch_3").write_bytes(members["data_batch_3"][:-40])
    with pytest.raises(DatasetError, match=r"data_batch_3: truncated pickle"):
        cifar.load_cifar10("train", tmp_path, verify=False)
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": [1, 2], b"labels": [0]}))
    with pytest.raises(DatasetError, match=r"'data' is list, expected a uint8 array of shape \(N, 3072\)"):
        cifar.load_cifar10("train", tmp_path, verify=False)
    with pytest.raises(DatasetError, match=r"not a whole number of 3073-byte records"):
        cifar.parse_binary_batch(b"\x00" * 3000, "x.bin")
    with pytest.raises(DatasetError, match=r"label 12 out of range"):
        cifar.parse_binary_batch(bytes([12]) + b"\x00" * 3072, "x.bin")


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_a_malicious_pickle(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({b"data": _Exploit(marker), b"labels": []}, protocol=3)
    with pytest.raises(DatasetError, match=r"refused global (posix|nt|os)\.system.*nothing in it was run"):
        cifar.safe_loads(payload, "data_batch_1")
    assert not marker.exists()
    # the same through the loader, from a folder in the official layout
    members = python_members(make_batches())
    members["data_batch_1"] = payload
    write_folder(tmp_path, cifar.PYTHON, members)
    with pytest.raises(DatasetError, match="refused global"):
        cifar.load_cifar10("train", tmp_path, verify=False)
    assert not marker.exists()
    with pytest.raises(DatasetError, match=r"refused global builtins\.eval"):
        cifar.safe_loads(b"cbuiltins\neval\n(S'1+1'\ntR.", "x")
    # what the format needs is allowed, under numpy 1's and numpy 2's module names
    array = np.arange(6, dtype=np.uint8).reshape(2, 3)
    for blob in (pickle.dumps(array, protocol=3), cifar.python_batch_bytes(np.zeros((1, 3072)), [3])):
        assert isinstance(cifar.safe_loads(blob, "x"), (np.ndarray, dict))
    assert b"numpy.core.multiarray" in cifar.python_batch_bytes(np.zeros((1, 3072)), [3])


def test_verify_archive_dataset_reports_each_source(tmp_path):
    data = tar_gz(cifar.BINARY, binary_members(make_batches()))
    archive = small_archive(cifar.BINARY, data)
    archives = with_archive(archive)
    assert archive.member_size == N_TRAIN * cifar.RECORD
    (tmp_path / "cifar10").mkdir()
    (tmp_path / archive.relpath).write_bytes(data)
    [status] = cifar.verify_archive_dataset("cifar10-binary", tmp_path, archives)
    assert status.ok
    [official] = cifar.verify_archive_dataset("cifar10-binary", tmp_path)
    assert not official.ok and "truncated" in official.message
    members = binary_members(make_batches())
    members["data_batch_2.bin"] = members["data_batch_2.bin"][:-1]
    write_folder(tmp_path, archive, members)
    folder_status, archive_status = cifar.verify_archive_dataset("cifar10-binary", tmp_path, archives)
    assert not folder_status.ok and "data_batch_2.bin: truncated" in folder_status.message and archive_status.ok
    [missing] = cifar.verify_archive_dataset("cifar10", tmp_path, archives)
    assert not missing.ok and missing.path is None and "missing" in missing.message
