"""Issue 14's guarantees (docs/reliability.md): run directories that are safe to open, share and lose
power in; user errors that end in a sentence; the library refuses bad numbers; derivatives right or
refused; downloads time out in total."""

from __future__ import annotations

import hashlib
import io
import pathlib
import warnings

import pytest
import torch

from flowvi.training.checkpoint import CheckpointError, load_checkpoint, previous_path, save_checkpoint


class _Evil:
    """Unpickling this would create ``self.marker`` (stands for arbitrary code)."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


# -- opening a run directory never runs code ------------------------------------------------------
@pytest.mark.parametrize("layer", ["outer", "inner"])
def test_a_checkpoint_whose_unpickling_runs_code_is_refused(tmp_path, layer):
    marker = tmp_path / "pwned"
    path = tmp_path / "checkpoint.pt"
    evil = {"update": 1, "model": _Evil(marker)}
    if layer == "outer":
        torch.save(evil, path)
    else:  # a well-formed envelope with a correct checksum around a malicious payload
        buf = io.BytesIO()
        torch.save(evil, buf)
        payload = buf.getvalue()
        torch.save({"flowvi_checkpoint": 2, "sha256": hashlib.sha256(payload).hexdigest(), "payload": torch.frombuffer(bytearray(payload), dtype=torch.uint8)},
                   path)
    with pytest.raises(CheckpointError, match=r"refusing to load .*checkpoint\.pt.*could run code"):
        load_checkpoint(path)
    assert not marker.exists()


def test_report_reads_per_image_metrics_without_running_code(tmp_path):
    from flowvi.report.runs import RunRecord

    marker = tmp_path / "pwned"
    torch.save({"log_marginal": _Evil(marker)}, tmp_path / "metrics.per_image.pt")
    with pytest.raises(CheckpointError, match="refusing"):
        RunRecord(tmp_path, "r", {}, None, None).per_image_nll()
    assert not marker.exists()


# -- corruption is detected -----------------------------------------------------------------------
def test_damaged_bytes_are_detected_and_the_previous_checkpoint_named(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"update": 5, "w": torch.randn(20_000)}, keep_previous=True)
    save_checkpoint(path, {"update": 10, "w": torch.randn(20_000)}, keep_previous=True)
    assert load_checkpoint(previous_path(path))["update"] == 5
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 100] = bytes(100)  # 100 zeroed bytes in the middle (inside a tensor's storage)
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt is damaged.*checkpoint\.prev\.pt \(update 5\)"):
        load_checkpoint(path)


def test_a_truncated_checkpoint_is_a_sentence(tmp_path):
    path = tmp_path / "best.pt"
    save_checkpoint(path, {"update": 1, "w": torch.ones(100)})
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint .*best\.pt"):
        load_checkpoint(path)


def test_old_checkpoints_without_checksum_load_with_a_warning(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": 1, "update": 3, "w": torch.ones(2)}, path)  # what flowvi wrote before issue 14
    with pytest.warns(UserWarning, match="without a checksum"):
        state = load_checkpoint(path)
    assert state["update"] == 3
    save_checkpoint(path, state)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_checkpoint(path)["update"] == 3


# -- one writer per run directory -----------------------------------------------------------------
def _write_amat(path, n, seed):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, 784, generator=g) < 0.3).int()
    path.write_text("\n".join(" ".join(map(str, row.tolist())) for row in x) + "\n")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    (root / "binarized_mnist").mkdir()
    for split, n, seed in (("train", 60, 0), ("valid", 20, 1), ("test", 20, 2)):
        _write_amat(root / "binarized_mnist" / f"binarized_mnist_{split}.amat", n, seed)
    return root


def _train_args(data, out, *extra):
    return ["train", "--out", str(out), "--data-dir", str(data), "--verify-data", "false", "--latent", "4",
            "--hidden", "8", "--batch-size", "10", "--val-every", "5", "--ckpt-every", "5", "--log-every", "5",
            "--progress", "false", "--tensorboard", "false", "--family", "planar", "--K", "2", "--lr", "1e-3",
            "--updates", "10", *extra]


def _lock_by(directory, pid):
    import json
    import socket

    directory.mkdir(parents=True, exist_ok=True)
    (directory / ".flowvi.lock").write_text(json.dumps({"pid": pid, "host": socket.gethostname(),
                                                        "command": "train", "started": "2026-01-01T00:00:00"}))


def test_a_second_writer_is_refused_with_a_sentence(tmp_path, tiny_data, capsys):
    import subprocess
    import sys

    from flowvi.cli.main import main

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for argv in (_train_args(tiny_data, tmp_path / "run"),
                     ["energy", "U1", "--flow", "planar", "-K", "1", "--steps", "1", "--out", str(tmp_path / "run")],
                     ["figure3", "--out", str(tmp_path / "run"), "--existing-only"],
                     ["evaluate", str(tmp_path / "run")]):
            _lock_by(tmp_path / "run", holder.pid)
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert f"in use by another writer: flowvi train (pid {holder.pid}" in err and err.count("\n") == 1
            assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".flowvi.lock"]  # nothing written
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_is_taken_over_and_leftover_temp_files_cleaned(tmp_path, tiny_data):
    import subprocess
    import sys

    from flowvi.cli.main import main

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = tmp_path / "run"
    _lock_by(run, dead.pid)
    (run / ".checkpoint.pt.k3j2l1.tmp").write_bytes(b"half a checkpoint")  # a write killed midway
    with pytest.warns(UserWarning) as record:
        assert main(_train_args(tiny_data, run)) == 0
    text = " ".join(str(w.message) for w in record)
    assert f"taking over the lock of train (pid {dead.pid}" in text and "removed 1 temporary file" in text
    assert not (run / ".flowvi.lock").exists()  # released at the end
    assert not list(run.glob(".*.tmp")) and (run / "summary.json").is_file()


def test_torchrun_workers_stop_when_the_launcher_dies(tmp_path):
    """A worker (grandchild) running the watchdog exits when its parent is killed with SIGKILL."""
    import os
    import subprocess
    import sys
    import time

    pidfile = tmp_path / "worker.pid"
    worker = ("import os, sys, time; from flowvi.training.parent import stop_when_parent_dies; "
              f"stop_when_parent_dies(poll_s=0.1); open({str(pidfile)!r}, 'w').write(str(os.getpid())); "
              "time.sleep(60)")
    launcher = subprocess.Popen([sys.executable, "-c",
                                 f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {worker!r}]); "
                                 "time.sleep(60)"])
    deadline = time.monotonic() + 30
    while not (pidfile.is_file() and pidfile.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    pid = int(pidfile.read_text())
    launcher.kill()
    launcher.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        pytest.fail("the worker outlived its launcher")
