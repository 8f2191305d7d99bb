"""The committed results (results/mnist/<run>/: config, summary, metrics, per-image values, log; no
checkpoints) render the README's Table 2, its sections and Figure 4 through ``flowvi report``."""

import json
from pathlib import Path

import pytest

from flowvi_experiments.cli.main import main
from flowvi_experiments.report import fill_blocks, load_runs, main_runs, report_sections, table2_markdown

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "results" / "mnist"
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
    if summary["status"] == "early_stopped":  # its validation bound stopped improving: it ended before its target
        patience = summary["config"]["early_stopping"]
        assert 0 < patience and summary["updates"] < summary["target_updates"]
        val_every = summary["config"]["val_every"]
        assert summary["updates"] - summary["best_update"] >= patience * val_every  # no better one was cut short
    else:
        assert summary["status"] == "completed" and summary["updates"] == summary["target_updates"]
    assert metrics["split"] == "test" and metrics["n_points"] == 10000 and metrics["samples"] >= 200
    record = load_runs([run])[0]
    if record.setting("train_on") == "train+valid":  # a refit: its end of training, for the selected updates
        assert metrics["checkpoint"] == "last" and metrics["updates"] == summary["updates"]
    else:  # model selection on the validation split
        assert metrics["checkpoint"] == "best" and metrics["updates"] == summary["best_update"]
    assert 0 < metrics["nll"] < metrics["bound"]  # importance sampling is never worse than the bound
    assert abs(float(record.per_image_nll().mean()) - metrics["nll"]) < 1e-4


def test_report_renders_table2_and_figure4_from_the_committed_results(tmp_path):
    out = tmp_path / "report"
    assert main(["report", *map(str, RUNS), "--out", str(out), "--no-grids"]) == 0
    table, report = (out / "table2.md").read_text(), (out / "report.md").read_text()
    records = load_runs(RUNS)
    table2_runs = main_runs(records)
    assert 0 < len(table2_runs) < len(records)  # the ablations are in their own section, beside the run they change
    for record in records:
        quoted = f"{record.metrics['nll']:.2f} ± {record.metrics['nll_se']:.2f}"
        assert quoted in (table if record in table2_runs else report)
    assert table.split("\n", 2)[2] == table2_markdown(table2_runs)
    assert (out / "figure4.png").stat().st_size > 0


def test_readme_quotes_the_report_of_the_committed_results():
    """Every table the README pastes from the report (its report blocks) is the report of results/mnist/ as
    committed: re-rendering them changes nothing (`flowvi report results/mnist/* --out report/ --no-grids
    --update README.md` after new results)."""
    readme = (REPO / "README.md").read_text()
    assert readme.count("<!-- flowvi report:") >= 4
    assert fill_blocks(readme, report_sections(load_runs(RUNS)), where="README.md") == readme
