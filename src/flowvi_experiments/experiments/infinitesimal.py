"""Infinitesimal flows on the 2-D energies (sections 3.2, 4.3 and 6.1).

* ``hvi``: Hamiltonian variational inference (:class:`flowvi.hamiltonian.HamiltonianVI`) registered in
  the energy experiment's flow registry, so ``flowvi energy U1 --flow hvi -K 8`` and ``flowvi figure3
  --flows hvi`` train it like any flow (``K`` = leapfrog steps). Its reported ``F`` is the negative HVI
  bound ``E[ln q(z_0) + ln q(ω_0|z_0) − ln r(ω_T|z_T) + U(z_T)]``, so ``kl = F + ln Z`` is the KL on the
  extended space ``(z, ω)``, an upper bound on ``KL(q(z_T)‖p)``; ``q(z_T)`` has no tractable density,
  so its density plot is a histogram of samples and there is no ``kl_box``.
* ``langevin``: the Langevin flow (eq. 9) has no parameters to fit and no tractable ``ln q_t``, so
  it is not a registry entry but a run of its own (:func:`run_langevin`): chains from ``q_0 = N(0, I)``
  follow ULA (or MALA) for ``K`` steps; at log-spaced ``t`` the sample divergence
  ``KL(q̂_t ‖ p)`` on the box (:func:`flowvi_experiments.histograms.histogram_kl`) is recorded, giving the
  density figure and the divergence-against-steps plot.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from flowvi.bases import StandardNormal
from flowvi.hamiltonian import HamiltonianVI, HVIPosterior
from flowvi.langevin import langevin

from ..atomic import write_text
from ..energies import Target
from ..histograms import histogram_kl, histogram_kl_floor, target_bin_masses

#: initial integration time ``T·ε`` of the 2-D HVI runs: every ``T`` starts from the same trajectory length
INITIAL_TIME = 0.2


class EnergyHVI(nn.Module):
    """HVI on a 2-D target: ``forward()`` returns the posterior tied to ``ln p(z) = −U(z)``.

    ``init_step_size`` defaults to ``INITIAL_TIME / K``, so that every ``K`` starts from the same
    integration time ``T·ε``: with one initial step for every ``K``, a longer chain starts with a longer
    trajectory, which through U1's stiff ring is chaotic and trains to a worse bound (the runs of both
    choices are in docs/infinitesimal.md).

    Args:
        K: leapfrog steps ``T``. target: the 2-D energy. hidden: width of the momentum and reverse networks.
        init_step_size: the initial leapfrog step ``ε`` (default ``INITIAL_TIME / K``).
    """

    def __init__(self, K: int, target: Target, hidden: int = 64, init_step_size: float | None = None) -> None:
        super().__init__()
        if init_step_size is None:
            init_step_size = INITIAL_TIME / max(K, 1)
        # fixed N(0, I) q(z_0), as the other flows of Figure 3 (section 6.1)
        self.hvi = HamiltonianVI(2, K, hidden=hidden, init_step_size=init_step_size, base=StandardNormal(2))
        self._target = target

    def _log_joint(self, z: Tensor) -> Tensor:
        # in float64: the dynamics differentiate ∇U once more. The built-in energies have stable second
        # derivatives in float32 too (flowvi_experiments.energies._logaddexp), but a user target written with
        # torch.logaddexp overflows to NaN there once its two exponents differ by > 88
        return self._target.log_density(z.double()).to(z.dtype)

    def forward(self) -> HVIPosterior:
        return self.hvi(None, self._log_joint)


def build_hvi(K: int, target: Target) -> nn.Module:
    """HVI with ``K`` leapfrog steps from ``q(z_0) = N(0, I)`` (Salimans et al. 2015)."""
    return EnergyHVI(K, target)


# ------------------------------------------------------------------------------------------------
# Langevin flow


@dataclass
class LangevinConfig:
    """One Langevin-flow run on a 2-D target."""

    n_steps: int = 1000  #: ``K``: Langevin steps
    step_size: float = 0.01  #: ``ε`` (time increment of eq. 9)
    adjusted: bool = False  #: MALA instead of ULA
    chains: int = 10_000  #: independent chains (samples of ``q_t``)
    bins: int = 40  #: histogram bins per axis on the box
    seed: int = 0


def checkpoints(n_steps: int) -> list[int]:
    """``t = 0, 1, 2, 5, 10, 20, 50, …`` up to and including ``n_steps``."""
    ts = {0, n_steps}
    decade = 1
    while decade <= n_steps:
        ts.update(m * decade for m in (1, 2, 5) if m * decade <= n_steps)
        decade *= 10
    return sorted(ts)


def run_langevin(target: Target, config: LangevinConfig, out: Path, plots: bool = True) -> dict[str, Any]:
    """Run the chains, write ``metrics.json``, ``divergence.csv``, ``density.png`` and ``divergence.png``."""
    if config.n_steps < 1 or config.chains < 2 or config.bins < 2:
        raise ValueError("n_steps must be >= 1, chains >= 2 and bins >= 2")
    if not (config.step_size > 0 and math.isfinite(config.step_size)):
        raise ValueError(f"step_size must be positive and finite, got {config.step_size}")
    wall = time.perf_counter()
    gen = torch.Generator().manual_seed(config.seed)
    z0 = torch.randn(config.chains, 2, generator=gen)
    ts = checkpoints(config.n_steps)
    start = time.perf_counter()
    run = langevin(target.energy, z0, config.n_steps, config.step_size, adjusted=config.adjusted,
                   record_at=ts, generator=gen)
    seconds = time.perf_counter() - start
    masses = target_bin_masses(target.energy, target.box, config.bins)
    floor = histogram_kl_floor(masses, config.chains)
    rows = []
    for t in ts:
        d = histogram_kl(run.snapshots[t], masses, target.box)
        rows.append({"t": t, "time": t * config.step_size, "kl_hist": d.kl, "outside": d.outside})
    metrics: dict[str, Any] = {
        "target": target.name,
        "flow": "langevin",
        "sampler": "MALA" if config.adjusted else "ULA",
        "K": config.n_steps,
        "divergence": (
            f"KL(q_hat_t || p_B): {config.bins}x{config.bins} histogram of {config.chains} chains on the box "
            "against the target's bin masses (midpoint quadrature, 8x8 points per bin), both restricted to the box"
        ),
        "box": list(target.box),
        "kl_hist": {str(r["t"]): r["kl_hist"] for r in rows},
        "kl_hist_final": rows[-1]["kl_hist"],
        "kl_hist_floor": floor,
        "outside_final": rows[-1]["outside"],
        "acceptance_rate": run.acceptance_rate,
        "sample_seconds": seconds,
        "config": asdict(config),
    }
    out.mkdir(parents=True, exist_ok=True)
    lines = ["t,time,kl_hist,outside"] + [f"{r['t']},{r['time']},{r['kl_hist']},{r['outside']}" for r in rows]
    write_text(out / "divergence.csv", "\n".join(lines) + "\n")
    if plots:
        _plot_langevin(target, run.snapshots, rows, floor, masses, config, out)
    metrics["wall_seconds"] = time.perf_counter() - wall
    write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics


def _plot_langevin(
    target: Target, snapshots: dict[int, torch.Tensor], rows: list[dict[str, float]], floor: float,
    masses: torch.Tensor, config: LangevinConfig, out: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    box = target.box
    extent = (box[0], box[1], box[2], box[3])
    shown = [t for t in (0, 10, 100, 1000, 10_000) if t in snapshots and t < config.n_steps] + [config.n_steps]
    fig, axes = plt.subplots(1, len(shown) + 1, figsize=(3 * (len(shown) + 1), 3.2))
    axes[0].imshow(masses.T.numpy(), origin="lower", extent=extent, cmap="viridis")
    axes[0].set_title(f"{target.name}: true (bin masses)")
    sampler = "MALA" if config.adjusted else "ULA"
    for ax, t in zip(axes[1:], shown, strict=True):
        z = snapshots[t].numpy()
        ax.hist2d(z[:, 0], z[:, 1], bins=config.bins * 2, range=[box[:2], box[2:]], cmap="viridis")
        ax.set_title(f"{sampler} t={t} (ε={config.step_size:g})")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_aspect("equal")
    fig.tight_layout()
    _save(fig, out / "density.png")
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ts = [r["t"] for r in rows if r["t"] > 0]
    ax.loglog(ts, [r["kl_hist"] for r in rows if r["t"] > 0], "o-", label=f"{sampler}, ε={config.step_size:g}")
    ax.axhline(floor, color="gray", ls="--", label=f"floor: {config.chains} exact samples")
    ax.set_xlabel("Langevin steps t")
    ax.set_ylabel(f"KL(q̂_t ‖ p), {config.bins}² bins")
    ax.set_title(f"{target.name}: Langevin flow → p as t grows")
    ax.legend()
    fig.tight_layout()
    _save(fig, out / "divergence.png")


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


# ------------------------------------------------------------------------------------------------
# CLI hooks for ``flowvi energy --flow langevin`` (called from flowvi_experiments.cli.energy)


def add_langevin_options(p: argparse.ArgumentParser) -> None:
    d = LangevinConfig()
    g = p.add_argument_group("Langevin flow (--flow langevin; -K is the number of Langevin steps)")
    g.add_argument("--step-size", type=float, default=d.step_size, help=f"Langevin step ε (default {d.step_size})")
    g.add_argument("--mala", action="store_true", help="Metropolis-adjusted Langevin (default: unadjusted, ULA)")
    g.add_argument("--chains", type=int, default=d.chains, help=f"number of chains (default {d.chains})")
    g.add_argument("--bins", type=int, default=d.bins, help=f"histogram bins per axis for the KL (default {d.bins})")


def langevin_config(args: argparse.Namespace) -> LangevinConfig:
    """The :class:`LangevinConfig` of parsed ``flowvi energy`` arguments; ``ValueError`` on bad values."""
    from ..cli.options import check_all

    if args.K < 1:
        raise ValueError(f"-K (Langevin steps) must be >= 1, got {args.K}")
    problems = check_all({"K": args.K, "step_size": args.step_size, "chains": args.chains, "bins": args.bins,
                          "seed": args.seed}, flags=True)
    if problems:
        raise ValueError("; ".join(problems))
    return LangevinConfig(args.K, args.step_size, args.mala, args.chains, args.bins, args.seed)
