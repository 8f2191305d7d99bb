"""``flowvi status``: where each training run stands, read from its files (nothing is loaded or executed).

    flowvi status runs/b100k/* runs/b300k/*

One row per run directory: its state (running, with the writer's pid and command from the run's lock; or the
status ``summary.json`` records: completed, early_stopped, interrupted; or ``no summary`` for a run that has
only logged), the update reached of its target, the rate between its last two log rows and the time left at that
rate, the best validation bound so far and its update, how many validations since have not improved on it by 1e-3
(the count ``early_stopping`` compares with), and the evaluations it has (``metrics*.json``). Everything comes from
``config.yaml``, ``log.csv``, ``summary.json``, ``metrics*.json`` and the lock file: JSON, YAML and CSV only.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path
from typing import Any

from .main import CLIError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "status",
        help="where each training run stands: update, rate, time left, best validation, evaluations",
        description="Summarise training run directories from their files (config, log, summary, metrics, lock): "
        "state, update of target, updates/s, time left, best validation bound and validations since.",
    )
    p.add_argument("runs", nargs="+", type=Path, help="run directories (paths that hold no run are skipped)")
    p.set_defaults(func=run)


def _float(value: str | None) -> float | None:
    try:
        x = float(value) if value not in (None, "") else None
    except ValueError:
        return None
    return None if x is None or math.isnan(x) else x


def _recent_rate(rows: list[dict[str, str]]) -> float | None:
    """Updates per second between the last two log rows (the logged rate averages over the whole segment since
    the start or resume, pauses included); the logged rate where there is one row."""
    if not rows:
        return None
    if len(rows) >= 2:
        w0, w1 = _float(rows[-2].get("wall_s")), _float(rows[-1].get("wall_s"))
        if w0 is not None and w1 is not None and w1 > w0:
            return (int(rows[-1]["update"]) - int(rows[-2]["update"])) / (w1 - w0)
    return _float(rows[-1].get("updates_per_s"))


def run_status(directory: Path) -> dict[str, Any]:
    """The state of one run directory, as :func:`run` prints it (keys: ``run``, ``state``, ``update``,
    ``target``, ``updates_per_s``, ``hours_left``, ``best_val``, ``best_update``, ``since_best``, ``evaluated``)."""
    import yaml

    from ..training.lock import holder
    from ..training.selection import record_validation

    config = yaml.safe_load((directory / "config.yaml").read_text()) or {}
    rows: list[dict[str, str]] = []
    if (directory / "log.csv").is_file():
        with open(directory / "log.csv", newline="") as f:
            rows = list(csv.DictReader(f))
    summary = None
    if (directory / "summary.json").is_file():
        summary = json.loads((directory / "summary.json").read_text())
    lock = holder(directory)
    if lock is not None:
        state = f"running (pid {lock.get('pid')}, {lock.get('command')})"
    elif summary is not None:
        state = str(summary.get("status"))
    else:
        state = "not started" if not rows else "no summary"
    target = int(config.get("updates") or 0)
    update = int(rows[-1]["update"]) if rows else 0
    rate = _recent_rate(rows)
    finished = state in ("completed", "early_stopped")
    left = None if finished or not rate else max(target - update, 0) / rate / 3600
    best_val, best_update, since = math.inf, None, 0
    for row in rows:  # the trainer's count, replayed from the logged validations
        val = _float(row.get("val_bound"))
        if val is None:
            continue
        lowest, since = record_validation(best_val, since, val)
        if lowest:
            best_val, best_update = val, int(row["update"])
    evaluated = []
    for path in sorted(directory.glob("metrics*.json")):
        m = json.loads(path.read_text())
        evaluated.append(f"{path.stem}: {m.get('nll', float('nan')):.2f} (S = {m.get('samples')}, "
                         f"{m.get('checkpoint', '?')} at {m.get('updates')})")
    return {"run": str(directory), "state": state, "update": update, "target": target, "updates_per_s": rate,
            "hours_left": left, "best_val": None if best_update is None else best_val, "best_update": best_update,
            "since_best": since,
            "evaluated": evaluated}


def _row(s: dict[str, Any]) -> str:
    rate = "–" if s["updates_per_s"] is None else f"{s['updates_per_s']:.1f}"
    left = "–" if s["hours_left"] is None else f"{s['hours_left']:.2f} h"
    best = "–" if s["best_val"] is None else f"{s['best_val']:.2f} at {s['best_update']} ({s['since_best']} since)"
    return (f"| {s['run']} | {s['state']} | {s['update']} / {s['target']} | {rate} | {left} | {best} | "
            f"{'; '.join(s['evaluated']) or '–'} |")


def run(args: argparse.Namespace) -> int:
    dirs = [p for p in args.runs if (p / "config.yaml").is_file()]
    if not dirs:
        raise CLIError(f"none of the given paths is a run directory (one with a config.yaml): {args.runs[0]}"
                       + (" ..." if len(args.runs) > 1 else ""))
    lines = ["| run | state | update / target | updates/s (last two log rows) | time left at that rate | "
             "best validation bound (validations since) | evaluated |", "|---|---|---|---|---|---|---|"]
    for d in dirs:
        try:
            lines.append(_row(run_status(d)))
        except (OSError, ValueError, KeyError, TypeError) as exc:  # a damaged file: name it, go on with the others
            lines.append(f"| {d} | unreadable: {exc} | | | | | |")
    print("\n".join(lines))
    return 0
