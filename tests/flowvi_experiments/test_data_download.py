"""``flowvi data download`` / ``verify`` against a local HTTP server on 127.0.0.1 started here,
serving small files in the canonical formats: the commands and the loaders are given a table of
datasets whose canonical files are these (their own sizes and sha256)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

import flowvi_experiments.data as fd
from flowvi_experiments.cli.main import CLIError, build_parser, main
from flowvi_experiments.data import DatasetError, registry
from flowvi_experiments.data.download import download_dataset, fetch_file
from flowvi_experiments.data.idx import to_idx


@pytest.fixture(autouse=True)
def _fresh_cache():
    fd.clear_verification_cache()
    yield
    fd.clear_verification_cache()




def data_command(argv: list[str], **tables) -> int:
    """``flowvi data ARGV`` as :func:`~flowvi_experiments.cli.main.main` runs it, on the tables of
    datasets (``datasets``) and archives (``archives``) given; a user error is raised as
    :class:`CLIError` (which ``main`` prints as one line with exit status 2)."""
    args = build_parser().parse_args(["data", *argv])
    return args.func(args, **tables)


def _amat(pixels: np.ndarray) -> bytes:
    return b"".join(b" ".join(b"%d" % v for v in row) + b"\n" for row in pixels)


@pytest.fixture
def small_datasets():
    """Small canonical-format contents of both datasets. Returns ``{dataset: {remote name: served bytes}}``,
    the decompressed contents and the table of datasets in which they are the canonical files."""
    rng = np.random.default_rng(0)
    content, served, datasets = {}, {"binarized_mnist": {}, "mnist": {}}, {}
    for split, n in [("train", 5), ("valid", 2), ("test", 3)]:
        content[f"binarized_mnist/binarized_mnist_{split}.amat"] = _amat(rng.integers(0, 2, (n, 784)))
    for prefix, n in [("train", 4), ("t10k", 2)]:
        content[f"mnist/{prefix}-images-idx3-ubyte"] = to_idx(
            rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        )
        content[f"mnist/{prefix}-labels-idx1-ubyte"] = to_idx(rng.integers(0, 10, n, dtype=np.uint8))
    for dataset, files in registry.DATASETS.items():
        specs = []
        for spec in files:
            data = content[spec.relpath]
            specs.append(
                registry.CanonicalFile(
                    dataset, spec.relpath, len(data), fd.sha256_hex(data), spec.remote_name
                )
            )
            served[dataset][spec.remote_name] = (
                gzip.compress(data) if spec.remote_name.endswith(".gz") else data
            )
        datasets[dataset] = tuple(specs)
    return served, content, datasets


def _publish(www: Path, dataset: str, files: dict[str, bytes]) -> str:
    (www / dataset).mkdir(exist_ok=True)
    for name, data in files.items():
        (www / dataset / name).write_bytes(data)
    return dataset


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*") if p.is_file()) if directory.exists() else []


def test_download_both_datasets_then_load_and_verify(server, small_datasets, tmp_path, capsys):
    url, www, _ = server
    served, content, datasets = small_datasets
    data_dir = tmp_path / "data"
    for dataset in ["binarized_mnist", "mnist"]:
        _publish(www, dataset, served[dataset])
        argv = ["download", dataset, "--data-dir", str(data_dir), "--base-url", f"{url}/{dataset}/"]
        assert data_command(argv, datasets=datasets) == 0
    assert _leftovers(data_dir / "binarized_mnist") == [
        "binarized_mnist_test.amat",
        "binarized_mnist_train.amat",
        "binarized_mnist_valid.amat",
    ]
    assert _leftovers(data_dir / "mnist") == sorted(served["mnist"])  # stored as served (.gz)
    fd.clear_verification_cache()
    x = fd.load_binarized_mnist("valid", data_dir, datasets=datasets)
    assert x.shape == (2, 784) and fd.sha256_hex(_amat(x.numpy().astype(int))) == fd.sha256_hex(
        content["binarized_mnist/binarized_mnist_valid.amat"]
    )
    assert fd.load_mnist("train", data_dir, datasets=datasets).shape == (4, 784)
    assert fd.load_mnist_labels("test", data_dir, datasets=datasets).shape == (2,)
    capsys.readouterr()
    assert data_command(["verify", "--data-dir", str(data_dir)], datasets=datasets) == 0
    out = capsys.readouterr().out
    assert "binarized_mnist: ok" in out and "mnist: ok" in out and "FAILED" not in out
    # the real command checks against the canonical files, which these small ones are not
    assert main(["data", "verify", "mnist", "--data-dir", str(data_dir)]) == 1
    assert "mnist: FAILED" in capsys.readouterr().out


def test_present_files_are_not_downloaded_again(server, small_datasets, tmp_path):
    url, www, requests = server
    served, _, datasets = small_datasets
    _publish(www, "mnist", served["mnist"])
    download_dataset("mnist", tmp_path / "d", base_url=f"{url}/mnist", log=lambda s: None, datasets=datasets)
    assert len(requests) == 4
    fd.clear_verification_cache()
    logged = []
    download_dataset("mnist", tmp_path / "d", base_url=f"{url}/mnist", log=logged.append, datasets=datasets)
    assert len(requests) == 4 and all("already present" in line for line in logged)
    download_dataset("mnist", tmp_path / "d", base_url=f"{url}/mnist", force=True, log=lambda s: None,
                     datasets=datasets)
    assert len(requests) == 8


def test_corrupt_download_leaves_no_file(server, small_datasets, tmp_path):
    url, www, _ = server
    served, _, datasets = small_datasets
    files = dict(served["binarized_mnist"])
    bad = bytearray(files["binarized_mnist_valid.amat"])
    bad[0] ^= 1  # '0' <-> '1': same size, wrong sha256
    files["binarized_mnist_valid.amat"] = bytes(bad)
    _publish(www, "binarized_mnist", files)
    data_dir = tmp_path / "data"
    with pytest.raises(CLIError) as info:
        data_command(["download", "binarized_mnist", "--data-dir", str(data_dir), "--base-url",
                      f"{url}/binarized_mnist"], datasets=datasets)
    err = str(info.value)
    assert "binarized_mnist_valid.amat: checksum mismatch: got sha256" in err
    assert registry.canonical_file("binarized_mnist/binarized_mnist_valid.amat", datasets).sha256 in err
    assert "\n" not in err
    # train came before valid and is kept; valid left nothing behind, not even a temporary file
    assert _leftovers(data_dir) == ["binarized_mnist_train.amat"]


@pytest.mark.parametrize("damage", ["truncated gzip", "too short", "too long", "much too long", "not gzip"])
def test_bad_gzip_download_leaves_no_file(server, small_datasets, tmp_path, damage):
    url, www, _ = server
    served, _, datasets = small_datasets
    name = "train-images-idx3-ubyte.gz"
    good = served["mnist"][name]
    data = {
        "truncated gzip": good[: len(good) // 2],
        "too short": gzip.compress(gzip.decompress(good)[:-1]),
        "too long": gzip.compress(gzip.decompress(good) + b"\0"),
        "much too long": gzip.compress(bytes(1 << 24)),  # stops reading early
        "not gzip": b"<html>moved</html>",
    }[damage]
    _publish(www, "mnist", {name: data})
    spec = registry.canonical_file("mnist/train-images-idx3-ubyte", datasets)
    dest = tmp_path / "d" / "mnist" / name
    match = {
        "truncated gzip": "truncated gzip",
        "too short": rf"got {spec.size - 1} bytes decompressed, expected {spec.size} bytes with sha256",
        "too long": rf"got more than {spec.size} bytes",
        "much too long": rf"got more than {spec.size} bytes",
        "not gzip": "download failed",
    }[damage]
    with pytest.raises(DatasetError, match=match):
        fetch_file(spec, f"{url}/mnist/{name}", dest)
    assert _leftovers(tmp_path / "d") == []


def test_failed_download_keeps_existing_file(server, small_datasets, tmp_path):
    url, www, _ = server
    served, _, datasets = small_datasets
    _publish(www, "mnist", {"t10k-labels-idx1-ubyte.gz": gzip.compress(b"\0\0\x08\x01\0\0\0\0")})
    spec = registry.canonical_file("mnist/t10k-labels-idx1-ubyte", datasets)
    dest = tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
    dest.parent.mkdir()
    dest.write_bytes(served["mnist"]["t10k-labels-idx1-ubyte.gz"])
    before = dest.read_bytes()
    with pytest.raises(DatasetError, match="checksum mismatch"):
        fetch_file(spec, f"{url}/mnist/t10k-labels-idx1-ubyte.gz", dest)
    assert dest.read_bytes() == before
    assert _leftovers(tmp_path / "mnist") == ["t10k-labels-idx1-ubyte.gz"]


def test_http_404_is_a_clear_error(server, tmp_path, capsys):
    url, _, _ = server
    code = main(
        ["data", "download", "mnist", "--data-dir", str(tmp_path / "d"), "--base-url", f"{url}/nothing"]
    )
    err = capsys.readouterr().err
    assert code == 2 and "HTTP error 404" in err and "train-images-idx3-ubyte.gz" in err
    assert _leftovers(tmp_path / "d") == []


def test_corrupt_local_copy_is_replaced_and_shadowing_copy_set_aside(server, small_datasets, tmp_path):
    url, www, _ = server
    served, content, datasets = small_datasets
    _publish(www, "mnist", served["mnist"])
    mnist = tmp_path / "mnist"
    mnist.mkdir()
    # a corrupt plain copy would be read before the .gz the download writes
    (mnist / "t10k-labels-idx1-ubyte").write_bytes(b"garbage")
    download_dataset("mnist", tmp_path, base_url=f"{url}/mnist", log=lambda s: None, datasets=datasets)
    assert (mnist / "t10k-labels-idx1-ubyte.corrupt").read_bytes() == b"garbage"
    assert not (mnist / "t10k-labels-idx1-ubyte").exists()
    fd.clear_verification_cache()
    assert fd.load_mnist_labels("test", tmp_path, datasets=datasets).tolist() == list(
        content["mnist/t10k-labels-idx1-ubyte"][8:]
    )


def test_verify_reports_bad_and_missing(small_datasets, tmp_path, capsys):
    _, content, datasets = small_datasets
    (tmp_path / "binarized_mnist").mkdir()
    for relpath in [
        "binarized_mnist/binarized_mnist_train.amat",
        "binarized_mnist/binarized_mnist_test.amat",
    ]:
        (tmp_path / relpath).write_bytes(content[relpath])
    assert data_command(["verify", "binarized_mnist", "--data-dir", str(tmp_path)], datasets=datasets) == 1
    out = capsys.readouterr().out
    assert "binarized_mnist_valid.amat: missing" in out and "binarized_mnist: FAILED" in out
    (tmp_path / "binarized_mnist" / "binarized_mnist_valid.amat.gz").write_bytes(
        gzip.compress(content["binarized_mnist/binarized_mnist_valid.amat"][:-5])
    )
    assert data_command(["verify", "--data-dir", str(tmp_path)], datasets=datasets) == 1
    out = capsys.readouterr().out
    assert "truncated" in out and "mnist: not downloaded" in out
    (tmp_path / "binarized_mnist" / "binarized_mnist_valid.amat.gz").write_bytes(
        gzip.compress(content["binarized_mnist/binarized_mnist_valid.amat"])
    )
    assert data_command(["verify", "--data-dir", str(tmp_path)], datasets=datasets) == 0
    assert data_command(["verify", "mnist", "--data-dir", str(tmp_path)], datasets=datasets) == 1


def test_verify_empty_dir_and_bad_name(tmp_path, capsys):
    assert main(["data", "verify", "--data-dir", str(tmp_path)]) == 2
    assert "no dataset found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["data", "download", "svhn"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_data_path(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("FLOWVI_DATA_DIR", str(tmp_path / "env"))
    assert main(["data", "path"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "env")
