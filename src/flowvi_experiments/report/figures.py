"""Figure 4 (bound and −ln p(x) against K, planar vs NICE) and sample / reconstruction grids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..family_table import FAMILIES, series_color, series_order
from .runs import PAPER_TABLE2, RunRecord


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _on_k_axis(r: RunRecord) -> bool:
    """K counts flow steps (not, as for HVI, leapfrog steps)."""
    fam = FAMILIES.get(r.family)
    return fam is None or fam.k_unit is None


def figure4_budget(records: list[RunRecord]) -> str | None:
    """The budget Figure 4 draws: the one (whatever the seed) with the most evaluated flow runs."""
    counts: dict[str, int] = {}
    for r in records:
        if r.metrics and _on_k_axis(r):
            counts[r.recipe_budget] = counts.get(r.recipe_budget, 0) + 1
    return max(counts, key=lambda b: (counts[b], b)) if counts else None


def figure4(records: list[RunRecord], path: str | Path) -> bool:
    """Write :func:`plot_figure4` to ``path``; False (and nothing written) without evaluated runs."""
    fig = plot_figure4(records)
    if fig is None:
        return False
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
    return True


def plot_figure4(records: list[RunRecord]) -> Any:
    """The figure of test F(x) and −ln p(x) against K for each flow family (the diagonal at K = 0), at
    one budget (:func:`figure4_budget`), each point the mean over the seeds of that row (a matplotlib
    ``Figure``, open; None without evaluated runs). The paper's Table 2 values are importance-sampled
    −ln p(x), so they are drawn (dashed) on that panel only. Each line's label names its series
    (``ours: <series>``, ``paper Table 2: <family>``).

    HVI runs are left out: their K counts leapfrog steps, not flow steps (they are in Table 2)."""
    budget = figure4_budget(records)
    if budget is None:
        return None
    evaluated = [r for r in records if r.metrics and _on_k_axis(r) and r.recipe_budget == budget]
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=False)

    def mean(runs: list[RunRecord], key: str) -> float:
        return sum(float(r.metrics[key]) for r in runs) / len(runs)

    diag = [r for r in evaluated if r.family == "diagonal"]
    families = sorted({r.series for r in evaluated if r.family != "diagonal"}, key=series_order)
    for ax, key, title in ((axes[0], "bound", "test bound F(x)"), (axes[1], "nll", "test −ln p(x)")):
        for fam in families:
            ks = sorted({r.K for r in evaluated if r.series == fam})
            xs = ([0] if diag else []) + ks
            vals = ([mean(diag, key)] if diag else []) + [
                mean([r for r in evaluated if r.series == fam and r.K == k], key) for k in ks]
            ax.plot(xs, vals, "o-", color=series_color(fam), label=f"ours: {fam}")
        if diag and not families:
            ax.plot([0], [mean(diag, key)], "o", label="diagonal")
        if key == "nll":
            for fam, style in (("planar", "C0--"), ("nice", "C1--")):
                pts = sorted((k, v) for (f, k), v in PAPER_TABLE2.items() if f == fam)
                ax.plot([0] + [k for k, _ in pts], [PAPER_TABLE2[("diagonal", 0)]] + [v for _, v in pts], style,
                        alpha=0.5, label=f"paper Table 2: {fam}")
        ax.set_xlabel("flow length K")
        ax.set_ylabel("nats")
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.suptitle(f"{budget} (mean over seeds)", fontsize=9)
    fig.tight_layout()
    return fig


def image_grid(images: Tensor, path: str | Path, nrow: int = 10, title: str | None = None,
               image_shape: tuple[int, ...] = (28, 28)) -> None:
    """Save ``(N, prod(image_shape))`` images in ``[0, 1]`` as a grid of tiles: grey ``(H, W)`` (MNIST's
    28×28, the default) or colour ``(C, H, W)`` channel-major (CIFAR-10's 3×32×32)."""
    n = images.shape[0]
    if n == 0:
        raise ValueError("no images to draw")
    ncol = (n + nrow - 1) // nrow
    C, H, W = (1, *image_shape) if len(image_shape) == 2 else image_shape
    tiles = torch.zeros(ncol * nrow, C, H, W)
    tiles[:n] = images.detach().cpu().reshape(n, C, H, W)
    grid = tiles.reshape(ncol, nrow, C, H, W).permute(0, 3, 1, 4, 2).reshape(ncol * H, nrow * W, C)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(nrow * 0.6, ncol * 0.6 + (0.4 if title else 0)))
    ax.imshow(grid[..., 0].numpy() if C == 1 else grid.numpy(), cmap="gray" if C == 1 else None, vmin=0, vmax=1)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
