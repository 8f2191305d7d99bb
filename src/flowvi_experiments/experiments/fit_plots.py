"""Plots of ``flowvi fit``: the ELBO trace and a pair plot of the first marginals of ``q``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..atomic import atomic_write  # noqa: E402


def _save(fig: plt.Figure, path: Path) -> None:
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110))
    plt.close(fig)


def plot_elbo_trace(trace: Sequence[float], path: Path, elbo: float | None = None, log_z: float | None = None,
                    title: str = "") -> None:
    """The Monte Carlo ELBO of every update, a running mean over 1 % of the run, and the final estimates."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    t = np.arange(1, len(trace) + 1)
    values = np.asarray(trace, dtype=float)
    ax.plot(t, values, lw=0.5, alpha=0.4, color="C0", label="ELBO (per update)")
    width = max(1, len(values) // 100)
    if len(values) >= width > 1:
        smooth = np.convolve(values, np.ones(width) / width, mode="valid")
        ax.plot(t[width - 1 :], smooth, color="C0", label=f"running mean ({width})")
    for value, label, color in ((elbo, "final ELBO", "C1"), (log_z, "ln Z (IS)", "C2")):
        if value is not None:
            ax.axhline(value, color=color, ls="--", lw=1, label=f"{label} {value:.3f}")
    if len(values):
        lo = np.percentile(values, 5)
        hi = max(values.max(), log_z if log_z is not None else values.max())
        ax.set_ylim(lo - 0.1 * abs(hi - lo) - 1e-9, hi + 0.1 * abs(hi - lo) + 1e-9)
    ax.set_xlabel("update")
    ax.set_ylabel("ELBO")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def plot_pairs(samples: np.ndarray, path: Path, n_dims: int = 4, names: Sequence[str] | None = None,
               max_points: int = 2000) -> None:
    """Histograms of the first ``n_dims`` coordinates on the diagonal and scatter plots of pairs below it."""
    d = min(n_dims, samples.shape[1])
    x = samples[:max_points, :d]
    names = list(names) if names is not None else [f"z[{i}]" for i in range(d)]
    fig, axes = plt.subplots(d, d, figsize=(1.8 * d + 1, 1.8 * d + 1), squeeze=False)
    for i in range(d):
        for j in range(d):
            ax = axes[i][j]
            if j > i:
                ax.axis("off")
            elif i == j:
                ax.hist(samples[:, i], bins=40, color="C0", alpha=0.8)
                ax.set_yticks([])
            else:
                ax.scatter(x[:, j], x[:, i], s=2, alpha=0.3, color="C0")
            if i == d - 1:
                ax.set_xlabel(names[j], fontsize=8)
            if j == 0 and i > 0:
                ax.set_ylabel(names[i], fontsize=8)
            ax.tick_params(labelsize=6)
    fig.tight_layout()
    _save(fig, path)
