"""Table 3 of the paper (Rezende & Mohamed 2015, CIFAR-10, DLGM with planar flows of length K = 0, 2, 5,
10) as markdown: our test numbers beside the paper's, every row marked "not run here" until a run of
it has been trained and evaluated on the real data.
"""

from __future__ import annotations

from .runs import RunRecord

#: the paper's Table 3, by K (0 = the diagonal posterior): values as commonly cited, not checked against
#: the paper here. They are negative: a density of continuous pixel values in the paper's (unstated)
#: preprocessing, not the probability of 8-bit levels that our discretized likelihood gives.
PAPER_TABLE3: dict[int, float] = {0: -293.7, 2: -308.6, 5: -317.9, 10: -320.7}

NOT_RUN = "not run here"


def is_cifar(record: RunRecord) -> bool:
    """Whether ``record`` is a CIFAR-10 run (``data: cifar10`` in its config)."""
    return record.config.get("data", "mnist") == "cifar10"


def table3_row_K(record: RunRecord) -> int | None:
    """The Table 3 row (K) of a CIFAR-10 run: the diagonal posterior is K = 0, planar flows their K."""
    if record.family == "diagonal":
        return 0
    if record.family == "planar" and record.K in PAPER_TABLE3:
        return record.K
    return None


def _fmt(value: float | None, se: float | None, digits: int = 2) -> str:
    if value is None:
        return NOT_RUN
    return f"{value:.{digits}f} ± {se:.{digits}f}" if se is not None else f"{value:.{digits}f}"


def _compute(r: RunRecord) -> str:
    if not r.summary:
        return "–"
    return f"{r.progress}, {r.recipe}, {r.hours or 0:.2f} h"


def table3_markdown(records: list[RunRecord]) -> str:
    """Markdown Table 3: one line per Table 3 row (K = 0, 2, 5, 10) and evaluated CIFAR-10 run of it;
    a row without one says "not run here". Columns: our test −ln p(x) (importance sampled) in nats per
    image and in bits per dimension, our test bound F(x), the paper's value, the compute used."""
    runs = [r for r in records if is_cifar(r) and r.metrics and table3_row_K(r) is not None]
    lines = [
        "| model | K | test −ln p(x), nats (ours) | bits/dim (ours) | test F(x), nats (ours) | IS samples / images "
        "| paper −ln p(x) | compute |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for K, paper in PAPER_TABLE3.items():
        model = "DLGM diagonal" if K == 0 else "DLGM+NF (planar)"
        mine = [r for r in runs if table3_row_K(r) == K]
        for r in mine:
            m = r.metrics or {}
            lines.append(f"| {model} ({r.name}) | {K} | {_fmt(m.get('nll'), m.get('nll_se'))} | "
                         f"{_fmt(m.get('bpd'), m.get('bpd_se'), 3)} | {_fmt(m.get('bound'), m.get('bound_se'))} | "
                         f"{m.get('samples')} / {m.get('n_points')} {m.get('split')} | {paper:g} | {_compute(r)} |")
        if not mine:
            lines.append(f"| {model} | {K} | {NOT_RUN} | {NOT_RUN} | {NOT_RUN} | – | {paper:g} | – |")
    lines += [
        "",
        "Ours: a discretized logistic likelihood of the 8-bit levels, so −ln p(x) is in nats per image "
        "(positive) and bits/dim = nats / (3072 ln 2); mean over test images ± standard error. "
        "Paper: Rezende & Mohamed (2015) Table 3 as commonly cited (not checked against the paper here); "
        "its values are negative, a density of continuous pixels in a preprocessing the paper does not "
        "state, so the two columns are not on the same scale. \"not run here\": no evaluated run of that "
        "row was given (the CIFAR-10 data were not available where this report was made).",
    ]
    return "\n".join(lines) + "\n"
