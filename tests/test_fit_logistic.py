"""benchmarks/fit_logistic.py (docs/fit.md's worked example): its rows build, the script runs at tiny sizes,
and the docs table is the committed JSON's, with the best value of each compared column in bold."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

import flowvi as fv

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import fit_logistic  # noqa: E402

DIM = 31  # 30 features + intercept
FIRST_ROWS = [("diagonal", 0, "learned"), ("planar", 2, "learned"), ("planar", 8, "learned"),
              ("planar", 32, "learned"), ("radial", 8, "learned"), ("radial", 32, "learned"),
              ("planar", 8, "fixed N(0, I)")]


def test_rows_keep_the_first_seven_and_add_the_later_families():
    rows = [(c.family, c.K, c.base) for c in fit_logistic.CONFIGS]
    assert rows[:7] == FIRST_ROWS
    keys = [(c.family, c.K, c.base, tuple(sorted(c.family_options.items()))) for c in fit_logistic.CONFIGS]
    assert len(set(keys)) == len(keys)
    later = {(c.family, c.K, c.base, c.family_options.get("m")) for c in fit_logistic.CONFIGS[7:]}
    assert later == {("full-rank", 0, "full-rank", None), ("planar", 8, "full-rank", None),
                     ("sylvester-orth", 4, "learned", 8), ("sylvester-orth", 8, "learned", 8),
                     ("sylvester-orth", 8, "learned", DIM), ("sylvester-householder", 8, "learned", None),
                     ("sylvester-triangular", 8, "learned", None), ("iaf", 4, "learned", None),
                     ("iaf", 8, "learned", None)}


@pytest.mark.parametrize("c", fit_logistic.CONFIGS, ids=lambda c: f"{c.family}-{c.K}-{c.base}-{c.family_options}")
def test_every_row_builds_and_evaluates_as_fit_builds_it(c):
    """The row's fv.fit call at D = 31 with no updates: its options pass, its steps are the family's (a full-rank
    step first where the base says so), and q evaluates to finite numbers."""
    q, r = fv.fit(lambda z: -0.5 * z.pow(2).sum(-1), DIM, c.family, c.K, updates=0, eval_samples=64,
                  family_options=c.family_options, full_rank_base=c.full_rank_base, flow_options=c.flow_options,
                  progress=False)
    steps = list(r.flow.steps)
    assert isinstance(steps[0], fv.FullRank) if c.base == "full-rank" else not any(
        isinstance(s, fv.FullRank) for s in steps)
    assert r.family_options == c.family_options and r.full_rank_base == c.full_rank_base
    assert math.isfinite(r.elbo) and math.isfinite(r.log_z)
    kinds = {"sylvester-orth": fv.SylvesterOrthogonal, "sylvester-householder": fv.SylvesterHouseholder,
             "sylvester-triangular": fv.SylvesterTriangular, "iaf": fv.IAF}
    if c.family in kinds:
        flow_steps = [s for s in steps if not isinstance(s, fv.FullRank)]
        assert len(flow_steps) == c.K and all(isinstance(s, kinds[c.family]) for s in flow_steps)
        if c.family == "sylvester-orth":
            assert all(s.m == c.family_options["m"] for s in flow_steps)


def test_tiny_run_writes_every_row(tmp_path):
    pytest.importorskip("sklearn")
    out = tmp_path / "fit.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "fit_logistic.py"), "--updates", "3", "--samples", "4",
         "--nuts-warmup", "10", "--nuts-samples", "20", "--out", str(out)],
        capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert "failed" not in result and result["settings"]["updates"] == 3
    rows = result["rows"]
    assert [(r["family"], r["K"], r["base"], r["family_options"]) for r in rows] == \
        [(c.family, c.K, c.base, c.family_options) for c in fit_logistic.CONFIGS]
    for r in rows:
        assert all(math.isfinite(r[k]) for k in ("elbo", "elbo_se", "log_z", "log_z_se", "khat", "mean_err_max",
                                                  "mean_err_rms", "mean_err_over_sd", "seconds")), r
    assert "| sylvester-orth (m = 8) | 4 | learned |" in proc.stdout


def _docs_table() -> list[list[str]]:
    lines = (ROOT / "docs" / "fit.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| family | K | base | ELBO ± se |"))
    body = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        body.append([cell.strip() for cell in line.strip("|").split("|")])
    return body


def test_docs_table_is_the_committed_json_with_the_best_in_bold():
    rows = json.loads((ROOT / "benchmarks" / "results" / "fit_logistic.json").read_text())["rows"]
    table = _docs_table()
    assert len(table) == len(rows)
    for cells, r in zip(table, rows, strict=True):
        plain = [cell.replace("**", "").replace("−", "-") for cell in cells]
        expected = fit_logistic.table_cells(r)
        assert plain[1:] == expected[1:], (cells, r)
    # bold marks the best of each compared column (the ties too): ELBO highest; k̂ and the mean errors lowest
    columns = {3: (lambda r: r["elbo"], max), 5: (lambda r: r["khat"], min),
               6: (lambda r: r["mean_err_max"], min), 7: (lambda r: r["mean_err_rms"], min)}
    for col, (value, best) in columns.items():
        shown = [fit_logistic.table_cells(r)[col].split(" ")[0] for r in rows]
        top = shown[rows.index(best(rows, key=value))]
        for cells, text in zip(table, shown, strict=True):
            assert cells[col].startswith("**") == (text == top), (col, cells[col], top)
