"""scripts/mnist_lane.sh, the lane of long MNIST trainings: train, evaluate, skip what is done, resume what is not."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flowvi_experiments.training.lock import run_lock

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "mnist_lane.sh"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def lane(tmp_path, data, *rows, **more_env):
    env = {**os.environ, **more_env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "VIRTUAL_ENV": str(Path(sys.executable).parent.parent), "FLOWVI_DATA_DIR": str(data),
           "RUNS": str(tmp_path / "runs"), "CONFIGS": str(tmp_path / "configs"), "S5000_MIN_K": "2"}
    return subprocess.run(["bash", str(SCRIPT), *rows], env=env, capture_output=True, text=True, timeout=600)


def test_lane_trains_evaluates_skips_and_resumes(tmp_path, tiny_data):
    config = {"family": "planar", "K": 2, "latent": 2, "hidden": 8, "window": 2, "batch_size": 20, "updates": 6,
              "val_every": 3, "ckpt_every": 3, "log_every": 3, "optimizer": "adam", "lr": 1e-3, "seed": 0,
              "verify_data": False, "tensorboard": False}  # the tiny files are not the published ones
    (tmp_path / "configs" / "b").mkdir(parents=True)
    (tmp_path / "configs" / "b" / "row.yaml").write_text(yaml.safe_dump(config))
    run = tmp_path / "runs" / "b" / "row"

    done = lane(tmp_path, tiny_data, "b/row")
    assert done.returncode == 0, done.stderr
    assert "b/row: train" in done.stdout and "evaluate S=200 rc=0" in done.stdout and "S=5000 rc=0" in done.stdout
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    assert json.loads((run / "metrics.json").read_text())["samples"] == 200
    assert json.loads((run / "metrics-s5000.json").read_text())["samples"] == 5000  # K >= S5000_MIN_K

    again = lane(tmp_path, tiny_data, "b/row")
    assert "b/row: already trained" in again.stdout and "evaluate" not in again.stdout

    # an interrupted row (its checkpoint at update 3 of 6, no summary of a finished run) is resumed
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "status": "interrupted"}))
    (run / "metrics.json").unlink()
    resumed = lane(tmp_path, tiny_data, "b/row")
    assert "b/row: resume" in resumed.stdout and "evaluate S=200 rc=0" in resumed.stdout, resumed.stderr

    # a row that ended by early stopping is trained: it is not resumed (which would train until the next validation)
    (run / "summary.json").write_text(json.dumps({**summary, "status": "early_stopped"}))
    stopped = lane(tmp_path, tiny_data, "b/row")
    assert "b/row: already trained" in stopped.stdout and "resume" not in stopped.stdout, stopped.stdout

    (tmp_path / "configs" / "b" / "broken.yaml").write_text(yaml.safe_dump({**config, "family": "nosuch"}))
    refused = lane(tmp_path, tiny_data, "b/row", "b/broken")  # every row is checked before the first one runs
    assert refused.returncode == 2 and "row b/broken would fail" in refused.stderr and "nosuch" in refused.stderr
    assert refused.stdout == ""

    # a row that fails once running (here: its run directory held by another writer) fails, and the lane goes on
    (tmp_path / "configs" / "b" / "taken.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "runs" / "b" / "taken").mkdir()
    with run_lock(tmp_path / "runs" / "b" / "taken", "train"):
        failed = lane(tmp_path, tiny_data, "b/taken", "b/row")
    assert failed.returncode == 1 and "b/taken: train failed" in failed.stdout, failed.stdout + failed.stderr
    assert "b/row: already trained" in failed.stdout and "failed: b/taken" in failed.stdout

    (tmp_path / "configs" / "b" / "other.yaml").write_text(yaml.safe_dump(config))
    more = lane(tmp_path, tiny_data, "b/other", TRAIN_ARGS="--log-every 2 --updates 4")  # for every row
    assert more.returncode == 0, more.stderr
    assert yaml.safe_load((tmp_path / "runs" / "b" / "other" / "config.yaml").read_text())["log_every"] == 2
    assert json.loads((tmp_path / "runs" / "b" / "other" / "summary.json").read_text())["updates"] == 4

    (tmp_path / "configs" / "b" / "fresh.yaml").write_text(yaml.safe_dump(config))
    typo = lane(tmp_path, tiny_data, "b/row", "b/fresh", TRAIN_ARGS="--compile maybe")
    assert typo.returncode == 2 and "--compile" in typo.stderr and typo.stdout == ""  # before any row runs
    assert not (tmp_path / "runs" / "b" / "fresh").exists()

    bad = lane(tmp_path, tiny_data, "b/row", "b/nosuch")
    assert bad.returncode == 2 and "no config" in bad.stderr and "b/nosuch.yaml" in bad.stderr
    assert "train" not in bad.stdout  # refused before any row runs
