"""The committed results (results/mnist/<run>/: config, summary, metrics, per-image values, log; no
checkpoints) render the README's Table 2 and Figure 4 through ``flowvi report``."""

import json
from pathlib import Path

import pytest

from flowvi_experiments.cli.main import main
from flowvi_experiments.report import load_runs, table2_markdown

RESULTS = Path(__file__).resolve().parents[2] / "results" / "mnist"
RUNS = sorted(p for p in RESULTS.iterdir() if p.is_dir()) if RESULTS.is_dir() else []


def test_results_are_committed_as_text_without_checkpoints():
    assert RUNS, f"no committed results under {RESULTS}"
    allowed = {".yaml", ".json", ".csv"}
    for run in RUNS:
        names = {f.name for f in run.iterdir()}
        assert {"config.yaml", "summary.json", "metrics.json", "metrics.per_image.csv", "log.csv"} <= names, run
        assert all(Path(n).suffix in allowed for n in names), (run, names)  # no checkpoints, nothing to unpickle


@pytest.mark.parametrize("run", RUNS, ids=[p.name for p in RUNS])
def test_each_result_is_complete_and_consistent(run):
    summary = json.loads((run / "summary.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert summary["status"] == "completed" and summary["updates"] == summary["target_updates"]
    assert metrics["split"] == "test" and metrics["n_points"] == 10000 and metrics["samples"] >= 200
    assert metrics["checkpoint"] == "best" and metrics["updates"] == summary["best_update"]
    assert 0 < metrics["nll"] < metrics["bound"]  # importance sampling is never worse than the bound
    record = load_runs([run])[0]
    assert abs(float(record.per_image_nll().mean()) - metrics["nll"]) < 1e-4


def test_report_renders_table2_and_figure4_from_the_committed_results(tmp_path):
    out = tmp_path / "report"
    assert main(["report", *map(str, RUNS), "--out", str(out), "--no-grids"]) == 0
    table = (out / "table2.md").read_text()
    for record in load_runs(RUNS):
        assert f"{record.metrics['nll']:.2f} ± {record.metrics['nll_se']:.2f}" in table
    assert table.split("\n", 2)[2] == table2_markdown(load_runs(RUNS))
    assert (out / "figure4.png").stat().st_size > 0
