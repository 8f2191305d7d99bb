"""Table 2 of the paper as markdown: our test numbers beside the paper's, with the compute each run used."""

from __future__ import annotations

from ..evaluation.marginal import standard_error
from .runs import RunRecord, paper_value


def _fmt(value: float | None, se: float | None = None) -> str:
    if value is None:
        return "–"
    return f"{value:.2f}" if se is None else f"{value:.2f} ± {se:.2f}"


def _compute(r: RunRecord) -> str:
    s = r.summary
    if not s:
        return "–"
    hours = s.get("wall_s", 0) / 3600
    cfg = r.config
    recipe = f"{cfg.get('optimizer')} lr {cfg.get('lr'):g}" + (
        f" {cfg.get('lr_schedule')}" if cfg.get("lr_schedule", "constant") != "constant" else "") + (
        f", grad clip {cfg['grad_clip']:g}" if cfg.get("grad_clip") else "")
    return (f"{s.get('updates')} upd ({s.get('status')}), {recipe}, {hours:.2f} h on {s.get('threads')} "
            f"{s.get('device')} thread(s)")


def _paired_delta(r: RunRecord, reference: RunRecord | None) -> str:
    """``−ln p(x)`` of ``r`` minus the reference's on the same test images, ± the paired standard error."""
    if reference is None or reference is r:
        return "–"
    a, b = r.per_image_nll(), reference.per_image_nll()
    if a is None or b is None or a.shape != b.shape:
        return "–"
    d = a - b
    return f"{float(d.mean()):+.2f} ± {standard_error(d):.2f}"


def table2_markdown(records: list[RunRecord]) -> str:
    """Markdown Table 2: model, our test bound F(x), our −ln p(x) (importance sampled), the paper's.

    Where ``flowvi evaluate`` left per-image values, the difference in ``−ln p(x)`` to the diagonal run
    on the same images is given with its paired standard error."""
    reference = next((r for r in records if r.family == "diagonal" and r.metrics), None)
    lines = [
        "| model | test F(x) (ours) | test −ln p(x) (ours) | Δ −ln p(x) vs diagonal (paired) | IS samples / images "
        "| paper −ln p(x) | compute |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in records:
        m = r.metrics or {}
        paper = paper_value(r.family, r.K)
        evaluated = f"{m.get('samples')} / {m.get('n_points')} {m.get('split')}" if m else "not evaluated"
        theirs = f"≤ {paper:g}" if paper is not None else "–"
        lines.append(
            f"| {r.label} | {_fmt(m.get('bound'), m.get('bound_se'))} | {_fmt(m.get('nll'), m.get('nll_se'))} | "
            f"{_paired_delta(r, reference)} | {evaluated} | {theirs} | {_compute(r)} |"
        )
    lines.append("")
    lines.append("Ours: mean over test images ± standard error over images (one seed). Paper: Rezende & Mohamed "
                 "(2015) Table 2, RMSprop lr 1e-5, 500,000 updates; its HVI rows are Salimans et al. (2015)'s.")
    return "\n".join(lines) + "\n"
