"""Table 2 of the paper as markdown: our test numbers beside the paper's, with the compute each run used."""

from __future__ import annotations

from collections import Counter

import torch

from ..evaluation.marginal import standard_error
from ..family_table import FAMILIES
from .runs import RunRecord, paper_value


def _fmt(value: float | None, se: float | None = None) -> str:
    if value is None:
        return "–"
    return f"{value:.2f}" if se is None else f"{value:.2f} ± {se:.2f}"


def _compute(r: RunRecord) -> str:
    s = r.summary
    if not s:
        return "–"
    return (f"{r.progress}, {r.recipe}, seed {r.seed}, {r.hours or 0:.2f} h on {s.get('threads')} {s.get('device')} "
            "thread(s)")


def paired_difference(r: RunRecord, reference: RunRecord) -> tuple[float, float] | None:
    """``−ln p(x)`` of ``r`` minus the reference's on the same test images (mean, paired standard error)."""
    a, b = r.per_image_nll(), reference.per_image_nll()
    if a is None or b is None or a.shape != b.shape:
        return None
    d = a - b
    return float(d.mean()), standard_error(d)


def _paired_delta(r: RunRecord, reference: RunRecord | None) -> str:
    delta = None if reference is None or reference is r else paired_difference(r, reference)
    return "–" if delta is None else f"{delta[0]:+.2f} ± {delta[1]:.2f}"


#: a paired difference is resolved when its mean is more than this many standard errors from 0
RESOLVED_SE = 2
UNRESOLVED = f"within {RESOLVED_SE} se"
#: how a paired Δ reads (after "± its standard error; ")
_THRESHOLDS = (f"yes when it is more than {RESOLVED_SE} standard errors below 0, **no** when more than "
               f"{RESOLVED_SE} above, {UNRESOLVED} otherwise.")
_VERDICT_NOTE = ("Δ: the later (or changed) run minus the other, on the same test images ± its standard error; "
                 + _THRESHOLDS)


def _sign(d: tuple[float, float]) -> int:
    """+1 or −1 when the paired difference ``(mean, se)`` is resolved (:data:`RESOLVED_SE`), else 0."""
    mean, se = d
    return 0 if abs(mean) <= RESOLVED_SE * se else (1 if mean > 0 else -1)


def _verdict(signs: list[int]) -> str:
    """"yes" when every difference is resolved in the expected direction (+1), "**no**" when one is resolved
    against it, :data:`UNRESOLVED` otherwise."""
    if all(s > 0 for s in signs):
        return "yes"
    return "**no**" if any(s < 0 for s in signs) else UNRESOLVED


def _paper_row(r: RunRecord) -> str | None:
    fam = FAMILIES.get(r.family)
    return None if fam is None else fam.paper_row


def _diagonal_of_budget(records: list[RunRecord]) -> dict[str, RunRecord]:
    return {r.budget: r for r in reversed(records) if r.family == "diagonal" and r.metrics}


def ordering_markdown(records: list[RunRecord]) -> str:
    """Table 2's ordering, diagonal > NICE > planar in −ln p(x), checked per budget and K with paired
    differences on the same test images ("" when no budget has a diagonal, planar and NICE run)."""
    diagonals = _diagonal_of_budget(records)
    lines = []
    for budget, diag in diagonals.items():
        same = [r for r in records if r.budget == budget and r.metrics]
        for K in sorted({r.K for r in same if r.family == "planar"}):
            planar = next(r for r in same if r.family == "planar" and r.K == K)
            for nice in (r for r in same if _paper_row(r) == "nice" and r.K == K):
                above, below = paired_difference(diag, nice), paired_difference(nice, planar)
                if above is None or below is None:
                    continue
                lines.append(f"| {budget} | {K} | {nice.series} | {above[0]:+.2f} ± {above[1]:.2f} | "
                             f"{below[0]:+.2f} ± {below[1]:.2f} | {_verdict([_sign(above), _sign(below)])} |")
    if not lines:
        return ""
    head = ["| budget | K | NICE | diagonal − NICE | NICE − planar | diagonal > NICE > planar |",
            "|---|---|---|---|---|---|"]
    note = ("Paired differences of test −ln p(x) in nats (mean over the same test images ± standard error); "
            f"the ordering holds where both are positive by more than {RESOLVED_SE} standard errors.")
    return "\n".join(head + lines + ["", note]) + "\n"


def planar_with_K_markdown(records: list[RunRecord]) -> str:
    """Planar improving with K, per budget: paired differences of −ln p(x) between consecutive K."""
    lines = []
    for budget in dict.fromkeys(r.budget for r in records):
        planar = sorted((r for r in records if r.budget == budget and r.family == "planar" and r.metrics),
                        key=lambda r: r.K)
        for a, b in zip(planar, planar[1:], strict=False):
            d = paired_difference(b, a)
            if d is not None:
                lines.append(f"| {budget} | {a.K} → {b.K} | {d[0]:+.2f} ± {d[1]:.2f} | {_verdict([-_sign(d)])} |")
    if not lines:
        return ""
    head = ["| budget | K | Δ −ln p(x) (paired) | improves |", "|---|---|---|---|"]
    return "\n".join(head + lines + ["", _VERDICT_NOTE]) + "\n"


def beside_planar_markdown(records: list[RunRecord]) -> str:
    """The families the paper did not have (Sylvester, IAF, radial, a full-rank base: no ``paper_row``) against
    planar flows of the same budget and seed: ``−ln p(x)`` paired on the same test images with planar at each K of
    that budget (negative: the family is better), and the hours each run took."""
    main = [r for r in main_runs(records) if r.metrics]
    planar = {}
    for r in main:
        if r.family == "planar":
            planar.setdefault(r.budget, {})[r.K] = r
    others = [r for r in main if _paper_row(r) is None and r.budget in planar]
    if not others:
        return ""
    Ks = sorted({K for r in others for K in planar[r.budget]})
    lines = []
    for r in others:
        cells = []
        for K in Ks:
            ref = planar[r.budget].get(K)
            d = None if ref is None else paired_difference(r, ref)
            verdict = "" if d is None else {1: ", worse", -1: ", better", 0: f", {UNRESOLVED}"}[_sign(d)]
            cells.append("–" if d is None else f"{d[0]:+.2f} ± {d[1]:.2f}{verdict}")
        hours = r.hours
        lines.append(f"| {r.label} | {r.budget} | {_fmt(r.metrics.get('nll'), r.metrics.get('nll_se'))} | "
                     + " | ".join(cells) + f" | {'–' if hours is None else f'{hours:.2f}'} |")
    head = ["| model | budget | test −ln p(x) | " + " | ".join(f"Δ vs planar K = {K} (paired)" for K in Ks)
            + " | hours (1 run) |", "|---|---|---|" + "---|" * len(Ks) + "---|"]
    note = ("Δ: the family's −ln p(x) minus planar's at that K, same budget and seed, on the same test images ± its "
            f"standard error; better / worse when more than {RESOLVED_SE} standard errors from 0. Hours: the run's "
            "wall time on the threads its Table 2 row names.")
    return "\n".join(head + lines + ["", note]) + "\n"


def later_families_markdown(records: list[RunRecord]) -> str:
    """The later families (no ``paper_row``) among themselves, per budget and seed, paired on the same test
    images: each series (a family with its options) against its own next shorter K, then the series against
    each other at the same K (the one later in the report's order minus the earlier; negative: it is better)."""
    later = [r for r in main_runs(records) if r.metrics and _paper_row(r) is None]
    lines = []

    def line(budget: str, r: RunRecord, other: RunRecord) -> None:
        d = paired_difference(r, other)
        if d is not None:
            verdict = {1: "worse", -1: "better", 0: UNRESOLVED}[_sign(d)]
            lines.append(f"| {budget} | {r.label} | {other.label} | {d[0]:+.2f} ± {d[1]:.2f} | {verdict} |")

    for budget in dict.fromkeys(r.budget for r in later):
        runs = [r for r in later if r.budget == budget]
        for series in dict.fromkeys(r.series for r in runs):
            chain = sorted((r for r in runs if r.series == series), key=lambda r: r.K)
            for shorter, longer in zip(chain, chain[1:], strict=False):
                line(budget, longer, shorter)
        for K in sorted({r.K for r in runs}):
            at_K = [r for r in runs if r.K == K]
            for i, first in enumerate(at_K):
                for r in at_K[i + 1 :]:
                    line(budget, r, first)
    if not lines:
        return ""
    head = ["| budget | model | against | Δ −ln p(x) (paired) | verdict |", "|---|---|---|---|---|"]
    note = ("Δ: the model's −ln p(x) minus the other's, same budget and seed, on the same test images ± its standard "
            f"error; better / worse when more than {RESOLVED_SE} standard errors from 0. First each family against "
            "its own shorter K, then the families against each other at the same K.")
    return "\n".join(head + lines + ["", note]) + "\n"


def seeds_markdown(records: list[RunRecord]) -> str:
    """Rows trained with several seeds at one budget: mean test −ln p(x) over seeds ± its standard error
    across seeds (sd/√n), beside the mean of the runs' own standard errors over test images."""
    groups: dict[tuple[str, str, int], list[RunRecord]] = {}
    for r in records:
        if r.metrics:
            groups.setdefault((r.recipe_budget, r.series, r.K), []).append(r)
    lines = []
    for (budget, _series, _K), runs in groups.items():
        if len(runs) < 2:
            continue
        nll = torch.tensor([float(r.metrics["nll"]) for r in runs], dtype=torch.float64)
        own = sum(float(r.metrics["nll_se"]) for r in runs) / len(runs)
        seeds = ", ".join(str(r.seed) for r in sorted(runs, key=lambda r: r.seed))
        lines.append(f"| {runs[0].label} | {budget} | {seeds} | {float(nll.mean()):.2f} ± {standard_error(nll):.2f} "
                     f"| {own:.2f} | {float(nll.min()):.2f} – {float(nll.max()):.2f} |")
    if not lines:
        return ""
    head = ["| model | budget | seeds | −ln p(x), mean ± se across seeds | se over test images (per run) | range |",
            "|---|---|---|---|---|---|"]

    def single(r: RunRecord) -> bool:
        return bool(r.metrics) and len(groups[(r.recipe_budget, r.series, r.K)]) == 1

    main = main_runs(records)
    ones = sorted({r.label for r in main if single(r)})
    ablations = [r for r in records if r.metrics and r not in main]
    note = f"One seed only: {', '.join(ones)}." if ones else "Every row of Table 2 has several seeds."
    if ablations:
        n = sum(map(single, ablations))
        note += (" The ablations have one seed each." if n == len(ablations)
                 else f" {n} of the {len(ablations)} ablations have one seed.")
    return "\n".join(head + lines + ["", note]) + "\n"


#: settings whose change is a row of Table 2 or of the seeds table, not an ablation
_NOT_ABLATIONS = frozenset({"seed", "family", "K", "family_options", "nice_conditioning"})


def _changed(a: RunRecord, b: RunRecord) -> list[str]:
    """The settings that change what is computed (:attr:`RunRecord.experiment`) in which ``a`` and ``b`` differ."""
    return [k for k in a.experiment if a.experiment[k] != b.experiment[k]]


def ablation_pairs(records: list[RunRecord]) -> list[tuple[RunRecord, RunRecord, str]]:
    """Evaluated runs that differ from another evaluated run in exactly one setting that changes what is
    computed (:meth:`RunRecord.experiment`), other than the seed and the Table 2 row (family, K, couplings):
    ``(reference, ablation, key)``. The reference is the run of the recipe with more runs (the main one)."""
    evaluated = [r for r in records if r.metrics]
    size = Counter(r.recipe_budget for r in evaluated)
    pairs = []
    for i, a in enumerate(evaluated):
        for b in evaluated[i + 1:]:
            changed = _changed(a, b)
            if len(changed) == 1 and changed[0] not in _NOT_ABLATIONS:
                ref, abl = (a, b) if (-size[a.recipe_budget], a.name) <= (-size[b.recipe_budget], b.name) else (b, a)
                pairs.append((ref, abl, changed[0]))
    return pairs


def longer_pairs(records: list[RunRecord]) -> list[tuple[RunRecord, RunRecord, list[str]]]:
    """Evaluated runs trained for more updates than another evaluated run of the same Table 2 row and seed,
    differing from it in at most one other setting (a longer schedule often comes with one, e.g. a longer
    annealing): ``(shorter, longer, the other settings changed)``."""
    evaluated = [r for r in records if r.metrics]
    pairs = []
    for a in evaluated:
        for b in evaluated:
            if int(b.setting("updates")) <= int(a.setting("updates")):
                continue
            others = [k for k in _changed(a, b) if k != "updates"]
            if len(others) <= 1 and not set(others) & _NOT_ABLATIONS:
                pairs.append((a, b, others))
    return pairs


def _trained(r: RunRecord) -> str:
    """How far a run trained and which update its evaluation took: ``235000 upd (early_stopped), best at 95000``."""
    m = r.metrics or {}
    at = f", {m.get('checkpoint')} at {m['updates']}" if m.get("updates") is not None and m.get("checkpoint") else ""
    return f"{r.progress}{at}"


def longer_markdown(records: list[RunRecord]) -> str:
    """Each :func:`longer_pairs` pair: both runs' budgets, how far the longer one trained and the checkpoint its
    validation selected, both test −ln p(x), the longer run's end of training where it was evaluated
    (metrics-last.json), and the paired difference (longer minus shorter; negative: the longer run is better)."""
    lines = []
    for short, long, others in longer_pairs(records):
        d = paired_difference(long, short)
        delta = "–" if d is None else f"{d[0]:+.2f} ± {d[1]:.2f}"
        helps = "–" if d is None else _verdict([-_sign(d)])
        also = ", ".join(f"{k}: {short.setting(k)} → {long.setting(k)}" for k in others) or "–"
        last = long.last_metrics or {}
        nll = [_fmt(m.get("nll"), m.get("nll_se")) for m in (short.metrics, long.metrics, last)]
        lines.append(f"| {long.label} | {short.setting('updates')} → {long.setting('updates')} | {also} | "
                     f"{long.budget} | {_trained(long)} | {' | '.join(nll)} | {delta} | {helps} |")
    if not lines:
        return ""
    head = ["| model | updates | also changed | longer budget | longer run trained, evaluated | shorter −ln p(x) | "
            "longer −ln p(x) | longer, end of training | Δ −ln p(x) (paired) | helps |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    note = ("Δ: the longer run's selected checkpoint minus the shorter run's, on the same test images ± its standard "
            f"error; {_THRESHOLDS} End of training: its last checkpoint at the same S, where evaluated "
            "(`flowvi evaluate RUN --checkpoint last --output RUN/metrics-last.json`).")
    return "\n".join(head + lines + ["", note]) + "\n"


def main_runs(records: list[RunRecord]) -> list[RunRecord]:
    """The runs of Table 2 proper: every run but the ablation side of an :func:`ablation_pairs` pair (those are the
    Ablations section's rows, beside the run they change)."""
    ablations = {id(abl) for _ref, abl, _key in ablation_pairs(records)}
    return [r for r in records if id(r) not in ablations]


def ablations_markdown(records: list[RunRecord]) -> str:
    """Each ablation (:func:`ablation_pairs`): the one setting changed, both runs' test −ln p(x) and the paired
    difference on the same test images (ablation minus reference; negative: the change helps)."""
    lines = []
    for ref, abl, key in ablation_pairs(records):
        d = paired_difference(abl, ref)
        delta = "–" if d is None else f"{d[0]:+.2f} ± {d[1]:.2f}"
        helps = "–" if d is None else _verdict([-_sign(d)])
        lines.append(f"| {ref.label} | {key}: {ref.setting(key)} → {abl.setting(key)} | {ref.budget} | "
                     f"{_fmt(ref.metrics.get('nll'), ref.metrics.get('nll_se'))} | "
                     f"{_fmt(abl.metrics.get('nll'), abl.metrics.get('nll_se'))} | {delta} | {helps} |")
    if not lines:
        return ""
    head = ["| model | change | reference budget | reference −ln p(x) | ablation −ln p(x) | Δ −ln p(x) (paired) "
            "| helps |", "|---|---|---|---|---|---|---|"]
    return "\n".join(head + lines + ["", _VERDICT_NOTE]) + "\n"


def more_samples_markdown(records: list[RunRecord]) -> str:
    """Runs also evaluated with more importance samples (``metrics-s{S}.json``), beside S of metrics.json."""
    lines = []
    for r in records:
        for S, m in sorted(r.extra_metrics.items()):
            base = r.metrics or {}
            lines.append(f"| {r.label} | {r.budget} | {_fmt(base.get('nll'), base.get('nll_se'))} (S = "
                         f"{base.get('samples', '–')}) | {_fmt(m.get('nll'), m.get('nll_se'))} (S = {S}) |")
    if not lines:
        return ""
    head = ["| model | budget | test −ln p(x) | test −ln p(x), more samples |", "|---|---|---|---|"]
    return "\n".join(head + lines) + "\n"


def table2_markdown(records: list[RunRecord]) -> str:
    """Markdown Table 2: model, our test bound F(x), our −ln p(x) (importance sampled), the paper's.

    Where ``flowvi evaluate`` left per-image values, the difference in ``−ln p(x)`` to the diagonal run
    on the same images (and the same budget, :attr:`RunRecord.budget`) is given with its paired standard error."""
    diagonals = _diagonal_of_budget(records)
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
            f"{_paired_delta(r, diagonals.get(r.budget))} | {evaluated} | {theirs} | {_compute(r)} |"
        )
    lines.append("")
    lines.append("Ours: mean over test images ± standard error over images, one run each (rows with several seeds "
                 "are summarised below). Paper: Rezende & Mohamed "
                 "(2015) Table 2, RMSprop lr 1e-5, 500,000 updates; its HVI rows are Salimans et al. (2015)'s.")
    return "\n".join(lines) + "\n"


def report_sections(records: list[RunRecord]) -> dict[str, str]:
    """Every MNIST section of the report by its block name (:data:`~flowvi_experiments.report.blocks.SECTIONS`):
    Table 2 of the main runs (:func:`main_runs`), the orderings, seeds, ablations and more-samples tables ("" for a
    section the runs do not have). Raises ``ValueError`` (one sentence) for a damaged per-image file."""
    return {
        "table2": table2_markdown(main_runs(records)),
        "ordering": ordering_markdown(records),
        "planar-with-K": planar_with_K_markdown(records),
        "beside-planar": beside_planar_markdown(records),
        "later-families": later_families_markdown(records),
        "seeds": seeds_markdown(records),
        "ablations": ablations_markdown(records),
        "longer": longer_markdown(records),
        "more-samples": more_samples_markdown(records),
    }
