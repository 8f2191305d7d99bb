"""Table 2 and Figure 4 of the report from run records (no training needed), and ``flowvi report --update DOC``:
the report's sections pasted between the markers of a markdown document."""

import json

import pytest
import torch
import yaml

from flowvi_experiments.cli.main import main
from flowvi_experiments.report import (
    PAPER_TABLE2,
    SECTIONS,
    BlockError,
    ablation_pairs,
    ablations_markdown,
    beside_planar_markdown,
    figure4,
    figure4_budget,
    fill_blocks,
    image_grid,
    later_families_markdown,
    load_runs,
    longer_markdown,
    longer_pairs,
    main_runs,
    more_samples_markdown,
    ordering_markdown,
    paper_value,
    planar_with_K_markdown,
    plot_figure4,
    seeds_markdown,
    table2_markdown,
)


def fake_run(root, name, family, K, nll=None, **config):
    d = root / name
    d.mkdir()
    (d / "config.yaml").write_text(yaml.safe_dump({"name": name, "family": family, "K": K, "optimizer": "adam",
                                                   "lr": 1e-3, "lr_schedule": "cosine", **config}))
    (d / "summary.json").write_text(json.dumps({"updates": 12000, "status": "completed", "wall_s": 3600.0,
                                                "threads": 1, "device": "cpu"}))
    if nll is not None:
        (d / "metrics.json").write_text(json.dumps({"nll": nll, "nll_se": 0.3, "bound": nll + 4, "bound_se": 0.3,
                                                    "samples": 200, "n_points": 10000, "split": "test"}))
    return d


def test_paper_numbers():
    assert PAPER_TABLE2[("planar", 80)] == 85.1 and PAPER_TABLE2[("diagonal", 0)] == 89.9
    assert paper_value("nice-orth", 10) == paper_value("nice-perm", 10) == 88.6
    assert paper_value("radial", 10) is None
    assert [paper_value("hvi", t) for t in (1, 4, 8)] == [88.08, 86.40, 85.51]


def plotted(records) -> list[list[tuple[tuple, tuple, str]]]:
    """Figure 4's lines, per panel: ``(xs, ys, label)``."""
    import matplotlib.pyplot as plt

    fig = plot_figure4(records)
    try:
        return [[(tuple(int(x) for x in line.get_xdata()), tuple(float(y) for y in line.get_ydata()),
                  line.get_label()) for line in ax.get_lines()] for ax in fig.axes]
    finally:
        plt.close(fig)


def test_hvi_rows_in_table_not_in_figure4(tmp_path):
    runs = [fake_run(tmp_path, "h8", "hvi", 8, 94.0), fake_run(tmp_path, "h1", "hvi", 1, 95.0),
            fake_run(tmp_path, "p10", "planar", 10, 95.25)]
    records = load_runs(runs)
    assert [r.name for r in records] == ["p10", "h1", "h8"]
    table = table2_markdown(records)
    assert "| DLGM+HVI, 1 leapfrog step | 99.00 ± 0.30 | 95.00 ± 0.30 | – | 200 / 10000 test | ≤ 88.08 |" in table
    assert "| DLGM+HVI, 8 leapfrog steps | 98.00 ± 0.30 | 94.00 ± 0.30 |" in table
    assert figure4(records, tmp_path / "f.png")  # the planar run is plotted
    assert not figure4([r for r in records if r.family == "hvi"], tmp_path / "g.png")  # HVI alone: nothing


def test_table_and_figure(tmp_path):
    runs = [fake_run(tmp_path, "p10", "planar", 10, 95.25), fake_run(tmp_path, "d", "diagonal", 0, 97.5),
            fake_run(tmp_path, "n10", "nice-perm", 10, 96.0), fake_run(tmp_path, "p20", "planar", 20)]
    records = load_runs([*runs, tmp_path / "missing"])
    assert [r.name for r in records] == ["d", "p10", "p20", "n10"]  # diagonal, planar by K, NICE
    table = table2_markdown(records)
    lines = table.splitlines()
    assert lines[2].startswith("| DLGM diagonal | 101.50 ± 0.30 | 97.50 ± 0.30 | – | 200 / 10000 test | ≤ 89.9 |")
    assert "| DLGM+NF (planar) K = 10 | 99.25 ± 0.30 | 95.25 ± 0.30 | – |" in table
    assert "| DLGM+NF (planar) K = 20 | – | – | – | not evaluated | ≤ 86.5 |" in table
    assert "12000 upd (completed), adam lr 0.001 cosine, anneal 10000 upd, seed 0, 1.00 h on 1 cpu thread(s)" in table
    clipped = yaml.safe_load((runs[0] / "config.yaml").read_text()) | {"grad_clip": 10.0}
    (runs[0] / "config.yaml").write_text(yaml.safe_dump(clipped))
    assert "adam lr 0.001 cosine, grad clip 10, anneal 10000 upd, seed 0, 1.00 h" in table2_markdown(load_runs(runs))
    assert figure4(records, tmp_path / "fig" / "figure4.png")
    assert (tmp_path / "fig" / "figure4.png").stat().st_size > 1000
    assert not figure4([r for r in records if r.metrics is None], tmp_path / "none.png")


def test_nice_with_global_couplings_is_its_own_series(tmp_path):
    runs = [fake_run(tmp_path, "g10", "nice-perm", 10, 95.5, nice_conditioning="global"),
            fake_run(tmp_path, "a10", "nice-perm", 10, 95.0, nice_conditioning="amortized"),
            fake_run(tmp_path, "o10", "nice-orth", 10, 95.1),  # runs from before the option: amortized
            fake_run(tmp_path, "g20", "nice-perm", 20, 95.2, nice_conditioning="global")]
    records = load_runs(runs)
    assert [r.name for r in records] == ["a10", "o10", "g10", "g20"]
    assert [r.series for r in records] == ["nice-perm", "nice-orth", "nice-perm-global", "nice-perm-global"]
    table = table2_markdown(records)
    assert ("| DLGM+NICE-perm (global couplings) K = 10 | 99.50 ± 0.30 | 95.50 ± 0.30 | – | 200 / 10000 test "
            "| ≤ 88.6 |") in table
    assert "| DLGM+NICE-perm K = 10 | 99.00 ± 0.30 | 95.00 ± 0.30 |" in table
    assert figure4(records, tmp_path / "f.png")
    ours = {(xs, label) for panel in plotted(records) for xs, _, label in panel
            if label.startswith("ours")}  # the same lines in both panels
    assert ours == {((10,), "ours: nice-orth"), ((10,), "ours: nice-perm"), ((10, 20), "ours: nice-perm-global")}


def test_paired_difference_to_the_diagonal(tmp_path):
    d, p = fake_run(tmp_path, "d", "diagonal", 0, 97.5), fake_run(tmp_path, "p", "planar", 10, 96.0)
    base = torch.linspace(-120, -80, 100, dtype=torch.float64)
    torch.save({"log_marginal": base}, d / "metrics.per_image.pt")
    shift = 1.0 + 0.1 * torch.sin(torch.arange(100, dtype=torch.float64))
    torch.save({"log_marginal": base + shift}, p / "metrics.per_image.pt")  # p better by ~1 nat everywhere
    table = table2_markdown(load_runs([d, p]))
    expected = f"{-float(shift.mean()):+.2f} ± {float(shift.std() / 10):.2f}"
    assert f"| 95.25 ± 0.30 | {expected} |" not in table  # guard: the row is the planar one
    assert f"| 96.00 ± 0.30 | {expected} |" in table


def test_ordering_is_checked_per_budget_with_paired_differences(tmp_path):
    base = torch.linspace(-120, -80, 100, dtype=torch.float64)
    wiggle = 0.1 * torch.sin(torch.arange(100, dtype=torch.float64))

    def run(name, family, K, gain, **config):  # gain: nats better than ``base`` on every image (about)
        d = fake_run(tmp_path, name, family, K, 97.0 - gain, **config)
        torch.save({"log_marginal": base + gain + wiggle * gain}, d / "metrics.per_image.pt")
        return d

    long = {"updates": 100000}
    runs = [run("d", "diagonal", 0, 0.0), run("p", "planar", 10, 1.5), run("n", "nice-perm", 10, 1.0),
            run("g", "nice-perm", 10, 2.0, nice_conditioning="global"),
            run("d100", "diagonal", 0, 0.5, **long), run("p100", "planar", 10, 0.6, **long),
            run("n100", "nice-perm", 10, 0.7, **long), run("n20", "nice-perm", 20, 3.0)]  # no planar K = 20
    text = ordering_markdown(load_runs(runs))
    rows = [line for line in text.splitlines() if line.startswith("| None") or "updates" in line]
    assert len(rows) == 3, text  # one per (budget, NICE run at a K with a planar run)
    short = [r for r in rows if r.startswith("| None")]  # fake runs without an updates key
    assert any("| nice-perm | +1.00 ± 0.01 | +0.50 ± 0.00 | yes |" in r for r in short), text
    assert any("| nice-perm-global | +2.00 ± 0.01 | -0.50 ± 0.00 | **no** |" in r for r in short), text
    longer = [r for r in rows if "100000 updates" in r]
    assert len(longer) == 1 and "| +0.20 ± 0.00 | -0.10 ± 0.00 | **no** |" in longer[0]  # d100, not d, is the reference
    table = table2_markdown(load_runs(runs))
    assert "| DLGM+NF (planar) K = 10 | 100.40 ± 0.30 | 96.40 ± 0.30 | -0.10 ± 0.00 |" in table  # vs d100
    assert ordering_markdown(load_runs(runs[:2])) == ""


def test_a_difference_within_two_standard_errors_is_not_a_verdict(tmp_path):
    """helps / improves / holds say yes or no only when the paired difference is more than 2 standard errors
    from 0 (a change of −0.02 ± 0.02 nats is not an improvement)."""
    base = torch.linspace(-120, -80, 100, dtype=torch.float64)
    noise = torch.where(torch.arange(100) % 2 == 0, 1.0, -1.0).double()  # paired se 0.1 = 1 / sqrt(100)
    long = {"updates": 100000, "anneal_steps": 3000}
    cases = {"p10": (10, 0.0, {}), "p80": (80, 0.05 + noise, {}), "a10": (10, 0.15 + noise, {"anneal_steps": 10000}),
             "a80": (80, 0.25 + noise, {"anneal_steps": 10000}), "b10": (10, 0.1, {"seed": 1})}
    runs = []
    for name, (K, gain, config) in cases.items():
        d = fake_run(tmp_path, name, "planar", K, 90.0, **{**long, **config})
        _per_image(d, base + gain)
        runs.append(d)
    records = load_runs(runs)
    by_budget = {line.split(" | ")[0]: line for line in planar_with_K_markdown(records).splitlines()[2:] if line}
    assert by_budget["| 100000 updates, adam lr 0.001 cosine, anneal 3000 upd, static, seed 0"].endswith(
        "| -0.05 ± 0.10 | within 2 se |")
    assert by_budget["| 100000 updates, adam lr 0.001 cosine, anneal 10000 upd, static, seed 0"].endswith(
        "| -0.10 ± 0.00 | yes |")
    table = ablations_markdown(records)
    assert "| anneal_steps: 3000 → 10000 |" in table and "| -0.15 ± 0.10 | within 2 se |" in table, table
    assert "| -0.20 ± 0.00 | yes |" in table, table  # K = 80: the same noise on both sides cancels


#: ±1 per image, alternating: a paired standard error of 0.1 over 100 images
_NOISE = torch.where(torch.arange(100) % 2 == 0, 1.0, -1.0).double()


def _family_runs(tmp_path, cases):  # type: ignore[no-untyped-def]
    """Fake 100,000-update runs ``(name, family, K, gain, config)``, each with per-image ``ln p(x)`` of a
    common base plus its gain (a larger gain is a lower −ln p(x))."""
    base = torch.linspace(-120, -80, 100, dtype=torch.float64)
    runs = []
    for name, family, K, gain, config in cases:
        d = fake_run(tmp_path, name, family, K, 90.0, updates=100000, **config)
        _per_image(d, base + gain)
        runs.append(d)
    return runs


def test_later_families_are_paired_with_planar_of_the_same_budget_and_seed(tmp_path):
    """Sylvester / IAF rows (no row in the paper) beside planar at every K of their budget and seed: paired
    differences with a verdict beyond 2 standard errors, and each run's hours; other budgets and seeds, the
    paper's own families and ablations stay out."""
    cases = [("p10", "planar", 10, 0.0, {}), ("p80", "planar", 80, 1.0, {}), ("s4", "sylvester-orth", 4, 0.5, {}),
             ("i4", "iaf", 4, 0.1 + _NOISE, {}), ("n10", "nice-perm", 10, 0.2, {}),
             ("s4-seed1", "sylvester-orth", 4, 0.5, {"seed": 1}),
             ("s4-2layers", "sylvester-orth", 4, 2.0, {"hidden_layers": 2})]
    runs = _family_runs(tmp_path, cases)
    text = beside_planar_markdown(load_runs(runs))
    assert "| Δ vs planar K = 10 (paired) | Δ vs planar K = 80 (paired) | hours (1 run) |" in text, text
    rows = [line for line in text.splitlines() if line.startswith("| DLGM")]
    assert len(rows) == 2, text  # no NICE row (the paper has one), no seed-1 run or ablation (no planar beside it)
    assert rows[0].startswith("| DLGM+IAF K = 4") or rows[1].startswith("| DLGM+IAF K = 4"), text
    sylvester = next(r for r in rows if "Sylvester" in r)
    assert sylvester.endswith("| -0.50 ± 0.00, better | +0.50 ± 0.00, worse | 1.00 |"), sylvester
    iaf = next(r for r in rows if "IAF" in r)
    assert "| -0.10 ± 0.10, within 2 se | +0.90 ± 0.10, worse |" in iaf, iaf
    assert beside_planar_markdown(load_runs(runs[:2])) == ""


def test_later_families_are_paired_among_themselves(tmp_path):
    """Each later series against its own shorter K, then the series against each other at the same K, at one
    budget and seed; planar and NICE (rows of the paper), other seeds and ablations stay out."""
    cases = [("p10", "planar", 10, 0.0, {}), ("s4", "sylvester-orth", 4, 0.0, {}), ("s8", "sylvester-orth", 8, 0.3, {}),
             ("s16", "sylvester-orth", 16, 0.4 + 0.1 * _NOISE, {}), ("h4", "sylvester-householder", 4, 0.2, {}),
             ("i4", "iaf", 4, -0.1, {}), ("i8", "iaf", 8, -0.1 + _NOISE, {}),
             ("s4-seed1", "sylvester-orth", 4, 0.0, {"seed": 1}), ("s8-2layers", "sylvester-orth", 8, 2.0,
                                                                   {"hidden_layers": 2})]
    runs = _family_runs(tmp_path, cases)
    text = later_families_markdown(load_runs(runs))
    rows = [line.split(" | ")[1:] for line in text.splitlines() if line.startswith("| 100000")]
    pairs = {(m.split(",")[0], o.split(",")[0]): (delta, verdict.rstrip(" |")) for m, o, delta, verdict in rows}
    assert len(rows) == 7, text  # 2 + 1 steps of K, 3 pairs at K = 4, 1 at K = 8; not the seed-1 run or the ablation
    orth = "DLGM+Sylvester (orthogonal)"
    assert pairs[(f"{orth} K = 8", f"{orth} K = 4")] == ("-0.30 ± 0.00", "better")
    assert pairs[(f"{orth} K = 16", f"{orth} K = 8")] == ("-0.10 ± 0.01", "better")
    assert pairs[("DLGM+IAF K = 8", "DLGM+IAF K = 4")] == ("+0.00 ± 0.10", "within 2 se")
    assert pairs[("DLGM+Sylvester (Householder) K = 4", "DLGM+Sylvester (orthogonal) K = 4")] == ("-0.20 ± 0.00",
                                                                                                 "better")
    assert pairs[("DLGM+IAF K = 4", "DLGM+Sylvester (Householder) K = 4")] == ("+0.30 ± 0.00", "worse")
    assert pairs[("DLGM+IAF K = 8", "DLGM+Sylvester (orthogonal) K = 8")] == ("+0.40 ± 0.10", "worse")
    assert ("DLGM+IAF K = 4", "DLGM+Sylvester (orthogonal) K = 4") in pairs, pairs
    assert all("planar" not in m + o and "NICE" not in m + o for m, o in pairs), pairs
    assert later_families_markdown(load_runs(runs[:1])) == ""


def test_image_grid(tmp_path):
    image_grid(torch.rand(13, 784), tmp_path / "g.png", nrow=5, title="t")
    assert (tmp_path / "g.png").stat().st_size > 0


def _per_image(d, log_marginal):
    from flowvi_experiments.evaluation import MarginalEstimate, write_per_image

    write_per_image(d / "metrics.per_image.csv", MarginalEstimate(log_marginal, log_marginal - 4, 200))


def test_seeds_planar_with_K_and_more_samples(tmp_path):
    base = torch.linspace(-120, -80, 100, dtype=torch.float64)
    runs = []
    for seed, nll in ((0, 88.0), (1, 88.2), (2, 88.4)):
        runs.append(fake_run(tmp_path, f"p10-s{seed}", "planar", 10, nll, seed=seed, updates=100000))
    p80 = fake_run(tmp_path, "p80", "planar", 80, 87.0, updates=100000)
    p40 = fake_run(tmp_path, "p40", "planar", 40, 87.5, updates=100000)
    _per_image(runs[0], base)
    _per_image(p40, base + 0.5)
    _per_image(p80, base + 0.2)  # worse than K = 40 by 0.3 nats: the check must say no
    (p80 / "metrics-s5000.json").write_text(json.dumps({"nll": 86.8, "nll_se": 0.3, "samples": 5000}))
    records = load_runs([*runs, p40, p80])
    seeds = seeds_markdown(records)
    # mean 88.2, sd 0.2 -> se 0.2/sqrt(3) = 0.115; the runs' own se 0.30; range 88.0 - 88.4
    assert "| DLGM+NF (planar) K = 10 | 100000 updates, adam lr 0.001 cosine, anneal 10000 upd, static | 0, 1, 2 | " \
           "88.20 ± 0.12 | 0.30 | 88.00 – 88.40 |" in seeds, seeds
    assert "One seed only: DLGM+NF (planar) K = 40, DLGM+NF (planar) K = 80." in seeds
    withk = planar_with_K_markdown(records)
    assert "| 10 → 40 | -0.50 ± 0.00 | yes |" in withk and "| 40 → 80 | +0.30 ± 0.00 | **no** |" in withk, withk
    more = more_samples_markdown(records)
    assert "| DLGM+NF (planar) K = 80 |" in more and "86.80 ± 0.30 (S = 5000)" in more and "(S = 200)" in more


def test_figure4_draws_one_budget_averaged_over_seeds(tmp_path):
    long = {"updates": 100000}
    runs = [fake_run(tmp_path, "d", "diagonal", 0, 90.0, **long), fake_run(tmp_path, "p", "planar", 10, 88.0, **long),
            fake_run(tmp_path, "p1", "planar", 10, 89.0, seed=1, **long),
            fake_run(tmp_path, "old", "planar", 10, 95.0, updates=12000)]
    records = load_runs(runs)
    assert figure4_budget(records) == "100000 updates, adam lr 0.001 cosine, anneal 10000 upd, static"
    bound_lines, nll_lines = plotted(records)
    assert ((0, 10), (90.0, 88.5), "ours: planar") in nll_lines  # seeds 0 and 1 averaged; the 12k run left out
    assert not any(label.startswith("paper") for _, _, label in bound_lines)  # paper values are -ln p(x)
    assert any(label == "paper Table 2: planar" for _, _, label in nll_lines)


def test_export_copies_results_without_checkpoints(tmp_path, capsys):
    from flowvi_experiments.cli.main import main

    run = fake_run(tmp_path, "p", "planar", 10, 88.0)
    _per_image(run, torch.linspace(-120, -80, 10, dtype=torch.float64))
    (run / "log.csv").write_text("update,loss\n1,2.0\n")
    (run / "checkpoint.pt").write_bytes(b"not copied")
    (run / "best.pt").write_bytes(b"not copied")
    out = tmp_path / "results"
    assert main(["export", str(run), "--out", str(out)]) == 0
    assert sorted(f.name for f in (out / "p").iterdir()) == ["config.yaml", "log.csv", "metrics.json",
                                                             "metrics.per_image.csv", "summary.json"]
    assert main(["export", str(run), "--out", str(out)]) == 2
    assert "already holds exported results" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert main(["export", str(run), "--out", str(out), "--prefix", "b100k-"]) == 0
    assert (out / "b100k-p" / "metrics.per_image.csv").is_file()
    records = load_runs([out / "p"])
    assert records[0].per_image_nll().shape == (10,) and "88.00 ± 0.30" in table2_markdown(records)


def test_ablations_are_their_own_budget_and_are_paired_with_their_reference(tmp_path):
    """An ablation (one setting changed) is not merged into its reference's row, seeds, K steps or Figure 4; the
    report pairs it with the run it changes, on the same test images."""
    base = torch.linspace(-120, -80, 100, dtype=torch.float64)
    long = {"updates": 100000, "anneal_steps": 3000}
    runs = [fake_run(tmp_path, f"p80-s{s}", "planar", 80, 87.2 + s / 10, seed=s, **long) for s in (0, 1)]
    runs.append(fake_run(tmp_path, "p10", "planar", 10, 88.4, **long))
    anneal = fake_run(tmp_path, "p80-anneal", "planar", 80, 87.1, updates=100000, anneal_steps=10000,
                      optimizer_impl="fused", threads=2)  # how it ran is not a change of the experiment
    deep = fake_run(tmp_path, "p80-deep", "planar", 80, 86.9, hidden_layers=2, **long)
    other = fake_run(tmp_path, "p80-two", "planar", 80, 86.0, hidden_layers=2, updates=300000, anneal_steps=10000)
    refit = fake_run(tmp_path, "p80-refit", "planar", 80, 87.0, train_on="train+valid", **long)
    for d, shift in ((runs[0], 0.0), (anneal, -0.1), (deep, -0.3), (refit, -0.2)):
        _per_image(d, base - shift)
    records = load_runs([*runs, anneal, deep, other, refit])
    assert {r.name: r.label for r in records}["p80-deep"] == "DLGM+NF (planar) K = 80 (2 Maxout layers)"
    by_name = {r.name: r for r in records}
    assert by_name["p80-deep"].recipe_budget.endswith(", static, 2 Maxout layers")
    assert by_name["p80-refit"].recipe_budget.endswith(", static, refit on train+valid")
    assert len({r.recipe_budget for r in records}) == 5  # main, anneal, deep, the long run, the refit

    pairs = {(ref.name, abl.name, key) for ref, abl, key in ablation_pairs(records)}
    # the main recipe (three runs) is the reference; the 300k run changes three settings: no pair
    assert pairs == {("p80-s0", "p80-anneal", "anneal_steps"), ("p80-s0", "p80-deep", "hidden_layers"),
                     ("p80-s0", "p80-refit", "train_on")}
    table = ablations_markdown(records)
    assert "| anneal_steps: 3000 → 10000 |" in table and "| -0.10 ± 0.00 | yes |" in table, table
    assert "| DLGM+NF (planar) K = 80 | hidden_layers: 1 → 2 |" in table and "| -0.30 ± 0.00 | yes |" in table
    assert "| train_on: train → train+valid |" in table and "| -0.20 ± 0.00 | yes |" in table
    main_recipe = "100000 updates, adam lr 0.001 cosine, anneal 3000 upd, static"
    assert figure4_budget(records) == main_recipe  # Figure 4 draws the main recipe, not the ablations
    assert f"| DLGM+NF (planar) K = 80 | {main_recipe} | 0, 1 |" in seeds_markdown(records)  # seeds 0 and 1 only
    assert ablations_markdown(records[:3]) == ""
    # Table 2 proper holds every run but the ablation side of a pair (the 300k run is a recipe of its own)
    assert [r.name for r in main_runs(records)] == [
        r.name for r in records if r.name not in ("p80-anneal", "p80-deep", "p80-refit")]


def test_a_longer_run_is_paired_with_the_shorter_run_it_extends(tmp_path):
    """A run with more updates is paired with each evaluated run of the same row and seed that differs from it in
    at most one other setting, with how far it trained, the update its validation selected and its end of
    training; a shorter run of another seed, K or two other settings is not its pair."""
    base = torch.linspace(-120, -80, 100, dtype=torch.float64)
    short = fake_run(tmp_path, "p80", "planar", 80, 85.4, updates=100000, anneal_steps=3000, hidden_layers=2)
    one_layer = fake_run(tmp_path, "p80-1", "planar", 80, 87.1, updates=100000, anneal_steps=10000)
    seed1 = fake_run(tmp_path, "p80-s1", "planar", 80, 85.5, updates=100000, anneal_steps=10000, hidden_layers=2,
                     seed=1)
    both = fake_run(tmp_path, "p80-both", "planar", 80, 87.2, updates=100000, anneal_steps=3000)
    p10 = fake_run(tmp_path, "p10", "planar", 10, 86.7, updates=100000, anneal_steps=10000, hidden_layers=2)
    long = fake_run(tmp_path, "p80-long", "planar", 80, 86.5, updates=300000, anneal_steps=10000, hidden_layers=2)
    (long / "summary.json").write_text(json.dumps({"updates": 235000, "status": "early_stopped", "wall_s": 1.0}))
    metrics = json.loads((long / "metrics.json").read_text())
    (long / "metrics.json").write_text(json.dumps({**metrics, "checkpoint": "best", "updates": 95000}))
    (long / "metrics-last.json").write_text(json.dumps({**metrics, "nll": 86.9, "checkpoint": "last"}))
    for d, shift in ((short, 0.0), (one_layer, -1.6), (long, -1.1)):  # log p(x): the negative of −ln p(x)
        _per_image(d, base + shift)
    records = load_runs([short, one_layer, seed1, both, p10, long])
    pairs = {(a.name, b.name, tuple(o)) for a, b, o in longer_pairs(records)}
    assert pairs == {("p80", "p80-long", ("anneal_steps",)), ("p80-1", "p80-long", ("hidden_layers",))}, pairs
    table = longer_markdown(records)
    row = next(line for line in table.splitlines() if "anneal_steps: 3000 → 10000" in line)
    assert "| 100000 → 300000 |" in row and "| 235000 upd (early_stopped), best at 95000 |" in row, row
    assert row.endswith("| 85.40 ± 0.30 | 86.50 ± 0.30 | 86.90 ± 0.30 | +1.10 ± 0.00 | **no** |"), row
    row = next(line for line in table.splitlines() if "hidden_layers: 1 → 2" in line)
    assert row.endswith("| -0.50 ± 0.00 | yes |"), row
    assert longer_markdown([r for r in records if r.name != "p80-long"]) == ""


def _doc(*names, body="old\n"):
    parts = ["# A page\n\nProse that stays.\n"]
    for name in names:
        parts.append(f"<!-- flowvi report: {name} -->\n{body}<!-- /flowvi report: {name} -->\n\nMore prose.\n")
    return "\n".join(parts)


def test_fill_blocks_replaces_only_the_bodies():
    doc = _doc("table2", "seeds")
    filled = fill_blocks(doc, {"table2": "| a |\n", "seeds": "| b |"})  # a missing final newline is added
    assert filled == doc.replace("old\n", "| a |\n", 1).replace("old\n", "| b |\n", 1)
    assert fill_blocks(filled, {"table2": "| a |\n", "seeds": "| b |\n"}) == filled  # idempotent
    assert "old" not in fill_blocks(doc, {})  # a section the runs do not have leaves an empty block
    assert fill_blocks(doc, {}).count("<!-- flowvi report:") == 2


@pytest.mark.parametrize("doc, words", [
    ("# no blocks\n", "has no report block"),
    (_doc("tabel2"), "'tabel2' that names no section"),
    ("<!-- flowvi report: seeds -->\nx\n", "opens the report block 'seeds' without closing it"),
    (_doc("seeds") + "<!-- flowvi report: table2 -->\n", "opens the report block 'table2' without closing it"),
])
def test_fill_blocks_names_what_is_wrong_in_one_sentence(doc, words):
    with pytest.raises(BlockError, match=words) as info:
        fill_blocks(doc, {name: "x\n" for name in SECTIONS})
    assert "\n" not in str(info.value)


def test_report_updates_a_document_and_refuses_a_bad_one_before_any_work(tmp_path, capsys):
    runs = [fake_run(tmp_path, "diag", "diagonal", 0, 90.0), fake_run(tmp_path, "p10", "planar", 10, 88.0)]
    doc = tmp_path / "README.md"
    doc.write_text(_doc("table2", "ablations"))
    out = tmp_path / "report"
    assert main(["report", *map(str, runs), "--out", str(out), "--no-grids", "--update", str(doc)]) == 0
    text = doc.read_text()
    table = (out / "table2.md").read_text().split("\n", 2)[2]
    assert f"<!-- flowvi report: table2 -->\n{table}<!-- /flowvi report: table2 -->" in text
    assert "<!-- flowvi report: ablations -->\n<!-- /flowvi report: ablations -->" in text  # none: empty
    assert "Prose that stays." in text and "report blocks updated" in capsys.readouterr().out

    bad = tmp_path / "bad.md"
    bad.write_text(_doc("table2") + "<!-- flowvi report: seeds -->\n")
    fresh = tmp_path / "fresh"
    assert main(["report", *map(str, runs), "--out", str(fresh), "--no-grids", "--update", str(doc),
                 "--update", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.md opens the report block 'seeds' without closing it" in err and "Traceback" not in err
    assert not fresh.exists() and doc.read_text() == text  # refused before any work: nothing written
    assert main(["report", *map(str, runs), "--out", str(fresh), "--update", str(tmp_path / "missing.md")]) == 2
    assert "missing.md: cannot read it" in capsys.readouterr().err
