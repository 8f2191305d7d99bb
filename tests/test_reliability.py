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
