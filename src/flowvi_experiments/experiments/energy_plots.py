"""Plots of the 2-D experiments (section 6.1, Figure 3): densities, training curves, the Figure 3
grid and the bound against the flow length K. Matplotlib with the Agg backend (no display)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from ..energies import Target  # noqa: E402
from .energy import Evaluation  # noqa: E402


def _normalized_density(log_values: torch.Tensor, cell_area: float) -> np.ndarray:
    """Density on the grid, renormalized over the box (both panels then share one colour scale)."""
    log_values = log_values.to(torch.float64)
    return (log_values - torch.logsumexp(log_values, 0)).exp().numpy() / cell_area


def density_images(target: Target, evaluation: Evaluation) -> tuple[np.ndarray, np.ndarray]:
    """``(p, q)`` as ``n × n`` images on ``target.box`` (rows = z2, columns = z1), each normalized on the box.

    ``q`` comes from ``ln q_K`` on the grid (the flow's inverse) or, for posteriors without
    ``log_prob``, from a histogram of samples.
    """
    n = int(round(evaluation.grid_energy.numel() ** 0.5))
    xmin, xmax, ymin, ymax = target.box
    cell = (xmax - xmin) / n * (ymax - ymin) / n
    p = _normalized_density(-evaluation.grid_energy, cell).reshape(n, n)
    if evaluation.grid_log_q is not None:
        q = _normalized_density(evaluation.grid_log_q, cell).reshape(n, n)
    else:
        s = evaluation.samples.numpy()
        hist, _, _ = np.histogram2d(s[:, 1], s[:, 0], bins=n, range=[[ymin, ymax], [xmin, xmax]], density=True)
        q = hist
    return p, q


def _show(ax: Any, image: np.ndarray, box: Sequence[float], vmax: float) -> None:
    ax.imshow(image, origin="lower", extent=tuple(box), cmap="viridis", vmin=0.0, vmax=vmax, aspect="equal")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_density(target: Target, evaluation: Evaluation, path: Path, title: str = "") -> None:
    """``density.png``: true density and fitted ``q_K`` side by side, same grid and colour scale."""
    p, q = density_images(target, evaluation)
    vmax = float(max(p.max(), q.max()))
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.6))
    _show(axes[0], p, target.box, vmax)
    axes[0].set_title(f"true density {target.name}")
    _show(axes[1], q, target.box, vmax)
    m = evaluation.metrics
    kl = m.get("kl") if m.get("kl") is not None else m.get("kl_box")
    kl_name = "KL" if m.get("kl") is not None else "KL_box"
    sub = f"F={m['free_energy']:.3f}" + (f", {kl_name}={kl:.3f}" if kl is not None else "")
    axes[1].set_title(f"q_K: {title}\n{sub}", fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def plot_training(history: list[dict[str, float]], path: Path, log_z: float | None = None, title: str = "") -> None:
    """The free energy ``F`` (β = 1, batch estimate) over training, with ``−ln Z`` (its minimum) if known."""
    fig, ax = plt.subplots(figsize=(6, 4))
    if history:
        steps = [h["step"] for h in history]
        ax.plot(steps, [h["bound"] for h in history], lw=1, label="F = E_q[ln q + U] (batch)")
        if any(h["beta"] < 1 for h in history):
            ax.plot(steps, [h["loss"] for h in history], lw=1, alpha=0.6, label="annealed F^β (eq. 20)")
        finite = [h["bound"] for h in history]
        lo = min(finite)
        hi = np.percentile(finite, 95)
        if log_z is not None:
            lo = min(lo, -log_z)
        ax.set_ylim(lo - 0.1 * (hi - lo + 1e-3), hi + 0.1 * (hi - lo + 1e-3))
    if log_z is not None:
        ax.axhline(-log_z, color="k", ls="--", lw=1, label="−ln Z (F at q = p)")
    ax.set_xlabel("parameter update")
    ax.set_ylabel("free energy (nats)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def plot_figure3_grid(
    targets: Sequence[Target], cells: dict[tuple[str, str, int], np.ndarray], flows: Sequence[str],
    Ks: Sequence[int], truths: dict[str, np.ndarray], path: Path,
) -> None:
    """Figure 3 (a, b): rows = targets; columns = true density, then each flow × K (missing cells blank)."""
    columns = [("true", 0)] + [(f, k) for f in flows for k in Ks]
    size = (1.6 * len(columns), 1.6 * len(targets))
    fig, axes = plt.subplots(len(targets), len(columns), figsize=size, squeeze=False)
    for r, target in enumerate(targets):
        truth = truths[target.name]
        for c, (flow, k) in enumerate(columns):
            ax = axes[r][c]
            image = truth if flow == "true" else cells.get((target.name, flow, k))
            if image is None:
                ax.axis("off")
                continue
            _show(ax, image, target.box, float(max(truth.max(), image.max())))
            if r == 0:
                ax.set_title("true" if flow == "true" else f"{flow} K={k}", fontsize=7)
            if c == 0:
                ax.set_ylabel(target.name)
    fig.tight_layout()
    _save(fig, path)


def plot_bound_vs_k(rows: list[dict[str, Any]], path: Path) -> None:
    """Figure 3 (c): the free energy ``F`` (± s.e.) against K, one panel per target, one line per flow;
    the dashed line is ``−ln Z`` (U1 on R²; U2–U4 on the box, for orientation only)."""
    targets = sorted({r["target"] for r in rows})
    flows = sorted({r["flow"] for r in rows})
    fig, axes = plt.subplots(1, len(targets), figsize=(3.2 * len(targets), 3), squeeze=False)
    for ax, target in zip(axes[0], targets, strict=True):
        for flow in flows:
            mine = [r for r in rows if r["target"] == target and r["flow"] == flow]
            pts = sorted((r["K"], r["free_energy"], r["free_energy_se"]) for r in mine)
            if pts:
                ks, fs, ses = zip(*pts, strict=True)
                ax.errorbar(ks, fs, yerr=ses, marker="o", ms=3, lw=1, label=flow)
        log_zs = [r["log_z"] for r in rows if r["target"] == target]
        if log_zs:
            ax.axhline(-log_zs[0], color="k", ls="--", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("flow length K")
        ax.set_title(target)
    axes[0][0].set_ylabel("free energy F (nats)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def _save(fig: Any, path: Path) -> None:
    """Save atomically (render to a temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
