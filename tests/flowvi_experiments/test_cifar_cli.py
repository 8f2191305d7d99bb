"""CIFAR-10 from the command line: ``flowvi data download cifar10`` against a loopback HTTP server serving
a small archive in the official format (the command run on a table of archives describing it),
``flowvi data verify``, and train → evaluate → report end to end on a tiny dataset written as official
pickled batches."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from test_cifar_data import make_batches, python_members, small_archive, tar_gz, with_archive, write_folder
from test_data_download import data_command

from flowvi_experiments.cli.main import CLIError, main
from flowvi_experiments.data import cifar
from flowvi_experiments.evaluation import read_per_image

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "cifar10"


pytestmark = pytest.mark.usefixtures("fresh_cifar_caches")




def test_download_verify_and_load(server, tmp_path, capsys):
    url, www, requests = server
    data = tar_gz(cifar.PYTHON, python_members(make_batches()))
    archive = small_archive(cifar.PYTHON, data)
    archives = with_archive(archive)
    (www / archive.filename).write_bytes(data)
    root = tmp_path / "data"
    download = ["download", "cifar10", "--data-dir", str(root), "--base-url", url]
    assert data_command(download, archives=archives) == 0
    dest = root / archive.relpath
    assert dest.read_bytes() == data and requests == [f"/{archive.filename}"]
    assert [p.name for p in dest.parent.iterdir()] == [archive.filename]  # no temporary file left
    assert cifar.load_cifar10("valid", root, verify=True, archives=archives)[0].shape == (3, 3072)
    # a verified copy is kept, not fetched again
    assert data_command(download, archives=archives) == 0
    assert len(requests) == 1 and "already present, md5 and sha256 ok" in capsys.readouterr().out
    assert data_command(["verify", "cifar10", "--data-dir", str(root)], archives=archives) == 0
    assert "cifar10: ok" in capsys.readouterr().out
    # against the official description these small files fail, and the real command says so
    assert main(["data", "verify", "cifar10", "--data-dir", str(root)]) == 1
    assert "cifar10: FAILED" in capsys.readouterr().out
    # a corrupt local copy fails verification and is replaced by a good download
    dest.write_bytes(data[:-7] + b"garbage")
    assert data_command(["verify", "--data-dir", str(root)], archives=archives) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "corrupt: md5" in out and "cifar10-binary: not downloaded" in out
    assert data_command(download, archives=archives) == 0
    assert dest.read_bytes() == data


def test_corrupt_or_truncated_download_leaves_nothing(server, tmp_path, capsys):
    url, www, _ = server
    data = tar_gz(cifar.PYTHON, python_members(make_batches()))
    archive = small_archive(cifar.PYTHON, data)
    root = tmp_path / "data"
    for served in (data[:-1] + bytes([data[-1] ^ 1]), data[: len(data) // 2]):
        (www / archive.filename).write_bytes(served)
        with pytest.raises(CLIError) as err:
            data_command(["download", "cifar10", "--data-dir", str(root), "--base-url", url],
                         archives=with_archive(archive))
        message = str(err.value)
        assert "checksum mismatch" in message and "nothing was written" in message and "\n" not in message
        assert not any((root / "cifar10").iterdir())  # neither the archive nor a partial file
    assert main(["data", "download", "cifar10", "--data-dir", str(root), "--base-url", url + "/nowhere"]) == 2
    assert "HTTP error 404" in capsys.readouterr().err


def common(data: Path) -> list[str]:
    return ["--data-dir", str(data), "--verify-data", "false", "--latent", "4", "--hidden", "8",
            "--batch-size", "9", "--val-every", "4", "--ckpt-every", "4", "--log-every", "4",
            "--progress", "false", "--tensorboard", "false"]


def test_train_evaluate_report_on_tiny_cifar(tmp_path, capsys):
    data = tmp_path / "data"
    write_folder(data, cifar.PYTHON, python_members(make_batches()))
    runs = {}
    for name, config in (("diagonal", "fast-diagonal.yaml"), ("planar-k2", "fast-planar-k2.yaml")):
        run = tmp_path / "runs" / name
        assert main(["train", "--config", str(CONFIGS / config), "--out", str(run), "--updates", "8",
                     *common(data)]) == 0
        saved = yaml.safe_load((run / "config.yaml").read_text())
        assert (saved["data"], saved["likelihood"]) == ("cifar10", "discretized_logistic")
        summary = json.loads((run / "summary.json").read_text())
        assert summary["train_examples"] == 27 and math.isfinite(summary["val_bound"])  # 4 × 6 + 3
        assert main(["evaluate", str(run), "--samples", "12", "--chunk-size", "5", "--data-dir", str(data)]) == 0
        runs[name] = json.loads((run / "metrics.json").read_text())
    assert main(["train", "--out", str(tmp_path / "runs" / "planar-k2"), "--resume", "--data", "mnist"]) == 2
    assert "cannot change data" in capsys.readouterr().err
    m = runs["planar-k2"]
    assert m["data"] == "cifar10" and m["n_points"] == 6 and m["split"] == "test"
    assert m["nll"] > 0 and m["bound"] >= m["nll"] - 1e-6  # importance sampling never above the bound on average
    assert m["bpd"] == pytest.approx(m["nll"] / (3072 * math.log(2)))
    assert m["bpd_se"] == pytest.approx(m["nll_se"] / (3072 * math.log(2)))
    per_image = read_per_image(tmp_path / "runs" / "planar-k2" / "metrics.per_image.csv")
    assert per_image["log_marginal"].shape == (6,)

    out = tmp_path / "report"
    assert main(["report", *(str(tmp_path / "runs" / n) for n in runs), "--out", str(out),
                 "--data-dir", str(data)]) == 0
    table3 = (out / "table3.md").read_text()
    row_k2 = next(line for line in table3.splitlines() if "(planar-k2)" in line)
    assert f"{m['nll']:.2f} ± {m['nll_se']:.2f}" in row_k2 and f"{m['bpd']:.3f}" in row_k2 and "-308.6" in row_k2
    assert "(diagonal) | 0 |" in table3
    for K, paper in ((5, "-317.9"), (10, "-320.7")):
        assert f"| DLGM+NF (planar) | {K} | not run here | not run here | not run here | – | {paper} | – |" in table3
    report = (out / "report.md").read_text()
    assert "## Table 3 (CIFAR-10)" in report and "## Table 2" not in report and not (out / "table2.md").exists()
    for name in ("planar-k2-samples.png", "planar-k2-reconstructions.png"):
        assert (out / name).stat().st_size > 0
