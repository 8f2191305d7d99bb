"""flowvi status: where each run stands, from its files only."""

import csv
import json

import pytest
import yaml

from flowvi_experiments.cli.main import main
from flowvi_experiments.cli.status import run_status
from flowvi_experiments.training.lock import run_lock

FIELDS = ["update", "epoch", "beta", "lr", "loss", "train_bound", "val_bound", "updates_per_s", "wall_s"]


def fake(tmp_path, name, updates, vals, rate=10.0, summary=None):
    d = tmp_path / name
    d.mkdir()
    (d / "config.yaml").write_text(yaml.safe_dump({"name": name, "updates": updates}))
    with open(d / "log.csv", "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        for i, val in enumerate(vals, 1):
            w.writerow({"update": 500 * i, "val_bound": "" if val is None else val, "updates_per_s": 1.0,
                        "wall_s": 500 * i / rate})  # the logged rate is the segment's: the last two rows give it
    if summary is not None:
        (d / "summary.json").write_text(json.dumps({"status": summary}))
    return d


def test_status_reads_progress_best_validation_and_evaluations(tmp_path, capsys):
    # validations 95, 94, 94.0005 (not an improvement of 1e-3), 94.5: best 94 at update 1000, two since
    run = fake(tmp_path, "a", 10000, [95.0, 94.0, None, 94.0005, 94.5], rate=2.0, summary="interrupted")
    s = run_status(run)
    assert s["state"] == "interrupted" and (s["update"], s["target"]) == (2500, 10000)
    assert abs(s["hours_left"] - 7500 / 2.0 / 3600) < 1e-9
    assert (s["best_val"], s["best_update"], s["since_best"]) == (94.0, 1000, 2)
    (run / "metrics.json").write_text(json.dumps({"nll": 88.123, "samples": 200, "checkpoint": "best",
                                                  "updates": 1000}))
    assert run_status(run)["evaluated"] == ["metrics: 88.12 (S = 200, best at 1000)"]

    done = fake(tmp_path, "b", 1000, [90.0, 89.0], summary="completed")
    assert run_status(done)["hours_left"] is None and run_status(done)["state"] == "completed"
    with run_lock(done, "train"):  # a live writer holds the run
        assert run_status(done)["state"].startswith("running (pid ")

    assert main(["status", str(run), str(done), str(tmp_path / "nothing")]) == 0
    out = capsys.readouterr().out
    assert f"| {run} | interrupted | 2500 / 10000 | 2.0 | 1.04 h | 94.00 at 1000 (2 since) |" in out, out
    assert f"| {done} | completed | 1000 / 1000 |" in out and "nothing" not in out
    (done / "metrics.json").write_text(json.dumps({"nll": None}))  # damaged: named in its row, the others go on
    assert main(["status", str(done), str(run)]) == 0
    out = capsys.readouterr().out
    assert f"| {done} | unreadable:" in out and f"| {run} | interrupted |" in out
    assert main(["status", str(tmp_path / "nothing")]) == 2
    assert "none of the given paths is a run directory" in capsys.readouterr().err


def test_status_starts_without_torch(tmp_path):
    """Only the invoked subcommand is imported, and the training package loads its names on first use: reading
    run directories needs no torch (a second or two to start instead of a minute beside two trainings)."""
    import subprocess
    import sys

    run = fake(tmp_path, "a", 1000, [90.0], summary="completed")
    code = ("import sys; from flowvi_experiments.cli.main import main; rc = main(['status', sys.argv[1]]); "
            "print('torch' in sys.modules); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, str(run)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "False", proc.stdout


def test_training_package_names_load_on_first_use():
    import flowvi_experiments.training as training

    assert training.Trainer.__name__ == "Trainer" and "TrainConfig" in dir(training)
    with pytest.raises(AttributeError, match="nosuch"):
        training.nosuch  # noqa: B018
