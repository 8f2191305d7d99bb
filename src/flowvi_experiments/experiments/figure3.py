"""Figure 3 of the paper as one run (section 6.1): every target × flow × K, then the grid of
densities, the bound-against-K plot and a table (markdown and CSV) of each cell's F and KL.

Each cell lives in ``out/<target>-<flow>-<K>/`` (the files of ``flowvi energy``); a cell whose
``metrics.json`` exists, finished with the same configuration, is reused unless ``rerun``, so an
interrupted sweep resumes where it stopped (a cell from another recipe or an interrupted one is rerun).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import write_text
from ..energies import Target
from ..training.checkpoint import load_state_file, verify_state_file
from .energy import EnergyConfig, Evaluation, build_flow, evaluate

RunCell = Callable[[Target, EnergyConfig, Path], dict[str, Any]]

COLUMNS = ["target", "flow", "K", "steps_done", "free_energy", "free_energy_se", "log_z", "log_z_domain", "kl",
           "kl_box", "q_mass_z1_negative", "train_seconds"]


def cell_dir(out: Path, target: str, flow: str, K: int) -> Path:
    return out / f"{target.lower()}-{flow}-{K}"


#: how a damaged fit of a cell is written again
_REFIT = "rerun flowvi figure3 with --rerun to fit it again"


def _reusable(folder: Path, config: EnergyConfig, rerun: bool) -> dict[str, Any] | None:
    """The stored metrics of a finished cell of the same recipe (reused unless ``rerun``), else None."""
    metrics_path = folder / "metrics.json"
    stored = json.loads(metrics_path.read_text()) if metrics_path.exists() and not rerun else None
    if stored is not None and stored.get("config") == asdict(config) and not stored.get("interrupted"):
        return stored
    return None


def _cell_image(target: Target, config: EnergyConfig, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Reload a cell's flow and return ``(p, q)`` images for the grid (a smaller grid than density.png)."""
    from .energy_plots import density_images

    torch.manual_seed(config.seed)
    model = build_flow(config, target)
    state = load_state_file(folder / "flow.pt", fix=_REFIT)
    model.load_state_dict(state)
    small = EnergyConfig(**{**config.__dict__, "eval_samples": 2000, "grid_n": 120, "device": "cpu"})
    evaluation: Evaluation = evaluate(model, target, small)
    return density_images(target, evaluation)


def table_text(rows: list[dict[str, Any]]) -> tuple[str, str]:
    """``(markdown, csv)`` of the cells."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow(r)

    def fmt(v: Any) -> str:
        if v is None:
            return "—"
        if isinstance(v, float):
            return f"{v:.4f}"
        return str(v)

    md = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    md += ["| " + " | ".join(fmt(r.get(c)) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(md) + "\n", buf.getvalue()


def figure3(
    targets: Sequence[Target], flows: Sequence[str], Ks: Sequence[int], configs: dict[tuple[str, int], EnergyConfig],
    out: Path, run_cell: RunCell, rerun: bool = False, existing_only: bool = False,
) -> dict[str, Any]:
    """Run (or reuse) every cell, then write ``figure3.png``, ``bound_vs_k.png``, ``table.md``, ``table.csv``.

    With ``existing_only`` no cell is trained: the outputs show the finished cells of this recipe.
    A ``KeyboardInterrupt`` inside a cell ends the sweep after that cell's outputs are written
    (``run_cell`` returns with ``interrupted``); the figure and table then hold the cells done.
    """
    from .energy_plots import plot_bound_vs_k, plot_figure3_grid

    out.mkdir(parents=True, exist_ok=True)
    # the fits that will be reused are verified before any cell is trained (a damaged one is a sentence)
    for target in targets:
        for flow in flows:
            for K in Ks:
                folder = cell_dir(out, target.name, flow, K)
                stored = _reusable(folder, configs[(flow, K)], rerun)
                if stored is not None and "free_energy" in stored:
                    verify_state_file(folder / "flow.pt", fix=_REFIT)
    rows: list[dict[str, Any]] = []
    images: dict[tuple[str, str, int], np.ndarray] = {}
    truths: dict[str, np.ndarray] = {}
    interrupted = False
    for target in targets:
        for flow in flows:
            for K in Ks:
                if interrupted:
                    break
                folder = cell_dir(out, target.name, flow, K)
                config = configs[(flow, K)]
                stored = _reusable(folder, config, rerun)
                if stored is not None:
                    metrics = stored  # same recipe, finished: reuse
                elif existing_only:
                    continue  # assemble the figure and table from the cells done so far
                else:
                    metrics = run_cell(target, config, folder)
                    interrupted = bool(metrics.get("interrupted"))
                rows.append(metrics)
                if "free_energy" not in metrics:
                    continue  # interrupted before its evaluation: in the table, not in the figures
                try:
                    p, q = _cell_image(target, config, folder)
                except KeyboardInterrupt:  # the table below still gets written
                    interrupted = True
                    continue
                truths[target.name] = p
                images[(target.name, flow, K)] = q
    done_targets = [t for t in targets if t.name in truths]
    figure = out / "figure3.png"
    bound_plot = out / "bound_vs_k.png"
    try:
        if done_targets:
            plot_figure3_grid(done_targets, images, flows, Ks, truths, figure)
            plot_bound_vs_k([r for r in rows if "free_energy" in r], bound_plot)
    except KeyboardInterrupt:  # the plots may be missing; the table is written
        interrupted = True
    md, csv_text = table_text(rows)
    write_text(out / "table.md", md)
    write_text(out / "table.csv", csv_text)
    return {"figure": figure, "bound_plot": bound_plot, "table_md": out / "table.md", "table_csv": out / "table.csv",
            "rows": rows, "interrupted": interrupted}
