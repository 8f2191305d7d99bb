"""Training logs: one row per logged update, as CSV and JSONL (and TensorBoard scalars when installed)."""

from __future__ import annotations

import csv
import io
import json
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..atomic import write_text

COLUMNS = ("update", "epoch", "beta", "lr", "loss", "train_bound", "val_bound", "updates_per_s", "wall_s")


class MetricsLogger:
    """Appends rows to ``log.csv`` and ``log.jsonl`` in ``out_dir``.

    On resume (``resume_from`` = the checkpoint's update) rows written after that update by the
    interrupted run are dropped first, so the logs match the resumed trajectory.
    """

    def __init__(self, out_dir: str | Path, resume_from: int | None = None, tensorboard: bool = True) -> None:
        self.dir = Path(out_dir)
        self.csv_path, self.jsonl_path = self.dir / "log.csv", self.dir / "log.jsonl"
        if resume_from is None:
            for p in (self.csv_path, self.jsonl_path):
                p.unlink(missing_ok=True)
        else:
            self._truncate(resume_from)
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.dir / "tensorboard"))
            except ImportError:  # tensorboard is optional
                self._tb = None

    def _truncate(self, last_update: int) -> None:
        """Keep the rows up to ``last_update``. Each file is replaced atomically, so a crash or a full disk
        leaves it whole (the old rows, or the kept ones); the CSV is rebuilt from the JSONL, so a crash
        between the two is repaired by the next resume."""
        if self.jsonl_path.exists():
            rows = [r for r in read_log(self.jsonl_path) if r["update"] <= last_update]
            write_text(self.jsonl_path, "".join(json.dumps(r) + "\n" for r in rows))
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=COLUMNS)
            writer.writeheader()
            for r in rows:
                writer.writerow({k: r.get(k, "") for k in COLUMNS})
            write_text(self.csv_path, buf.getvalue())

    def log(self, row: dict[str, Any]) -> None:
        clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        new = not self.csv_path.exists()
        with _named(self.csv_path), self.csv_path.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=COLUMNS)
            if new:
                writer.writeheader()
            writer.writerow({k: "" if clean.get(k) is None else clean[k] for k in COLUMNS})
        with _named(self.jsonl_path), self.jsonl_path.open("a") as fh:
            fh.write(json.dumps(clean) + "\n")
        if self._tb is not None:
            for k, v in clean.items():
                if k != "update" and isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, clean["update"])

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


@contextmanager
def _named(path: Path) -> Iterator[None]:
    """Re-raise an ``OSError`` without a file name (a full disk on ``write``) with ``path`` as its name."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


class NullLogger:
    """The logger of a data-parallel rank other than 0: rank 0 alone writes the logs."""

    def log(self, row: dict[str, Any]) -> None:
        """Discard ``row``."""

    def close(self) -> None:
        """Nothing to close."""


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The rows of ``log.jsonl``. Records that do not parse (a torn last line after a power loss or a
    full disk) are dropped with a warning naming the file and line, instead of failing."""
    p = Path(path)
    if not p.exists():
        return []
    rows, bad = [], []
    for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            bad.append(i)
            continue
        if not isinstance(row, dict) or not isinstance(row.get("update"), int):
            bad.append(i)
            continue
        rows.append(row)
    if bad:
        lines = ", ".join(map(str, bad[:5])) + (" ..." if len(bad) > 5 else "")
        warnings.warn(f"{p}: dropped {len(bad)} damaged log record(s) (line {lines}), e.g. torn by a crash",
                      stacklevel=2)
    return rows
