"""Fitting a flow posterior ``q_K`` to a 2-D energy ``p(z) ∝ e^{−U(z)}`` (section 6.1, Figure 3).

Minimizes the free energy ``F = E_q[ln q_K(z) + U(z)] = KL(q‖p) − ln Z`` (eq. 15 with
``ln p(x, z) = −U(z)``), optionally annealed as ``F^β = E_q[ln q_K − β(−U)]`` with
``β_t = min(1, 0.01 + t/T_anneal)`` (eq. 20), then measures ``F`` on ≥ 100,000 samples,
``ln Z`` and ``KL(q‖p)`` (or ``KL_box`` on the plotting box when ``p`` is not normalizable on R²).
Training is the library's fit loop (:mod:`flowvi.loop`), as for the DLGM and :func:`flowvi.fit`:
Adam at a cosine learning-rate schedule, optional gradient-norm clipping, the non-finite checks read
from the device every ``log_every`` updates, the history as means over those windows, and interrupts.

The flow families are the ``energy`` builders of the family table
(:data:`flowvi_experiments.family_table.FAMILIES`): ``builder(K, target) -> nn.Module``, where the module's
``forward()`` (no arguments) returns the posterior ``q_K``, an object with
``rsample_and_log_prob(shape) -> (z, ln q)`` (used for training and the free energy) and, if the
density plot and ``KL_box`` are wanted, ``log_prob(z)``. A family whose transitions need ``∇U``
(``hvi``) takes it from ``target``. Adding a family is one :func:`~flowvi_experiments.family_table.register_family`;
nothing in the training loop, the metrics or the CLI changes (``flowvi energy --flow`` lists the table's
names). A posterior without ``log_prob`` gets its density plot from a histogram of samples and no ``kl_box``.
"""

from __future__ import annotations

import json
import math
import signal
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from flowvi.bases import DiagonalNormal, StandardNormal
from flowvi.flow import NormalizingFlow
from flowvi.loop import Diverged, FitLoop, Hook, TrainStep, cosine_schedule
from flowvi.objectives import LinearAnnealing, free_energy
from flowvi.steps import STEP_OPTIONS, check_step_options, make_steps
from flowvi.transforms import InverseNotAvailable
from flowvi.validation import NonFiniteError

from ..atomic import write_text
from ..energies import BUILTIN, Target
from ..quadrature import grid, kl_box, kl_from_free_energy, log_z_box, log_z_r2
from ..training.checkpoint import save_state_file

if TYPE_CHECKING:
    from ..family_table import Family

#: ``(K, target, **options) -> q_K`` module (options: keywords of flowvi.make_steps)
FlowBuilder = Callable[..., nn.Module]


def flow_on_energy(family: str, learned_base: bool = False) -> FlowBuilder:
    """The builder ``(K, target, **options) -> q_K`` of a normalizing flow of ``family`` on a 2-D energy (the
    options: keywords of :func:`flowvi.make_steps`): the paper's fixed N(0, I) base (section 6.1), or with
    ``learned_base`` a learned diagonal Gaussian.

    NICE needs the learned base: it is volume preserving (eq. 18), so with the fixed N(0, I) base q_K
    keeps the entropy of N(0, I) whatever the couplings and cannot concentrate on a target (the measured
    KL is in docs/energy.md); the learned base plays the role of NICE's diagonal scaling layer (Dinh et
    al. 2014)."""

    def build(K: int, target: Target, **options: Any) -> nn.Module:
        base = DiagonalNormal(2) if learned_base else StandardNormal(2)
        return NormalizingFlow(2, make_steps(family, 2, K, **options), base=base)

    build.__name__ = f"build_{family.replace('-', '_')}"
    what = "a learned diagonal Gaussian" if learned_base else "N(0, I)"
    build.__doc__ = f"``q_K``: {what} followed by K {family} steps (section 6.1)."
    return build


@dataclass
class EnergyConfig:
    """One 2-D experiment: target, flow and training recipe (the defaults are the recipe of docs/energy.md)."""

    flow: str = "planar"
    K: int = 32
    steps: int = 5_000
    batch_size: int = 256
    lr: float = 1e-2
    lr_final: float = 1e-4  # cosine decay from lr to lr_final over the run
    grad_clip: float = 0.0  # clip the gradient's global norm to this before each Adam step (0: off)
    anneal: bool = False
    anneal_steps: int | None = None  # default: half of ``steps``
    seed: int = 0
    device: str = "cpu"
    eval_samples: int = 100_000
    grid_n: int = 300  # grid cells per axis for the density plot and KL_box
    log_every: int = 50
    #: keywords of flowvi.make_steps for the flow's steps (Sylvester's m, the IAF's hidden …), as a DLGM
    #: config's family_options; checked when the flow is built (flowvi.steps.check_step_options)
    family_options: dict[str, Any] = field(default_factory=dict)


class TrainingDiverged(RuntimeError):
    """Training produced a non-finite value; the message names the step and the cause."""


@dataclass
class TrainResult:
    model: nn.Module
    history: list[dict[str, float]] = field(default_factory=list)  # step, beta, loss (F^β), bound (F)
    steps_done: int = 0
    interrupted: bool = False
    train_seconds: float = 0.0


def build_flow(config: EnergyConfig, target: Target, families: Mapping[str, Family] | None = None) -> nn.Module:
    """The posterior module of ``config.flow``, a family of ``families`` with an ``energy`` builder.

    Args:
        config: the experiment (``flow``, ``K``, ``family_options``).
        target: the energy, for families whose transitions need ``∇U`` (HVI).
        families: the family table (default :data:`flowvi_experiments.family_table.FAMILIES`).
    """
    from ..family_table import FAMILIES

    families = FAMILIES if families is None else families
    names = [name for name, family in families.items() if family.energy is not None]
    if config.flow not in names:
        raise ValueError(f"unknown flow {config.flow!r}: expected one of {', '.join(names)}")
    if config.K < 0:
        raise ValueError(f"K must be >= 0, got {config.K}")
    options = config.family_options or {}
    if config.flow not in STEP_OPTIONS and options:  # HVI: not a make_steps family
        raise ValueError(f"the {config.flow} posterior takes no family options, got {', '.join(map(repr, options))}")
    options = check_step_options(config.flow, options, 2, where=f"family_options of {config.flow}")
    return families[config.flow].energy(config.K, target, **options)


class _FreeEnergy:
    """The objective of one update: ``β -> (F^β, F)`` on ``batch_size`` fresh samples of ``model()``
    (eq. 20, and eq. 15 from the same samples: ``F = F^β + (β − 1) E_q[ln p]``), and, on the device,
    the update where ``U(z)`` first became non-finite, so that a divergence names its cause."""

    def __init__(self, model: nn.Module, target: Target, batch_size: int) -> None:
        self.model, self.target, self.batch_size = model, target, batch_size
        dev = _device_of(model)
        self.u_finite = torch.ones((), dtype=torch.float64, device=dev)  #: 1 while every U(z) was finite
        self.u_clean = torch.zeros((), dtype=torch.float64, device=dev)  #: updates before the first non-finite U(z)
        self.u_bad = torch.zeros((), dtype=torch.float64, device=dev)  #: its non-finite samples

    def __call__(self, beta: float, track: bool = True) -> tuple[Tensor, Tensor]:
        log_p: list[Tensor] = []

        def log_joint(z: Tensor) -> Tensor:
            log_p.append(self.target.log_density(z))
            return log_p[-1]

        loss = free_energy(self.model(), log_joint, n_samples=self.batch_size, beta=beta)
        u = log_p[-1].detach()
        if track:  # not for the fit loop's checked first pass, which is no update
            with torch.no_grad():
                bad = (~torch.isfinite(u)).sum().to(torch.float64)
                self.u_bad.add_(self.u_finite * bad)
                self.u_finite.mul_((bad == 0).to(torch.float64))
                self.u_clean.add_(self.u_finite)
        return loss, loss.detach() + (beta - 1.0) * u.mean()

    def cause(self, exc: Diverged) -> str:
        """Why update ``exc.update`` diverged, in words."""
        if exc.what != "loss":
            return "non-finite gradient"
        if float(self.u_finite) == 0 and int(self.u_clean) + 1 == exc.update:
            return f"U(z) is non-finite for {int(self.u_bad)} of {self.batch_size} samples"
        return "ln q_K(z) is non-finite (the flow's log-determinant or base density overflowed)"


class _History(Hook):
    """The history (means of F^β and F over each window of ``log_every`` updates) and the progress callback."""

    def __init__(self, beta: Callable[[int], float], progress: Callable[[int, float, float], None] | None) -> None:
        self.beta, self.progress = beta, progress
        self.history: list[dict[str, float]] = []

    def on_record(self, loop: FitLoop, record: dict[str, Any]) -> None:
        row = {"step": record["update"], "beta": float(self.beta(record["update"] - 1)), "loss": record["loss"],
               "bound": record["bound"]}
        self.history.append(row)
        if self.progress is not None:
            self.progress(row["step"], row["bound"], row["beta"])

    def on_end(self, loop: FitLoop, status: str) -> None:
        record = loop.flush()  # the updates of a window cut short by an interrupt
        if record is not None:
            self.on_record(loop, record)


def train(
    config: EnergyConfig,
    target: Target,
    progress: Callable[[int, float, float], None] | None = None,
    *,
    families: Mapping[str, Family] | None = None,
    hooks: Sequence[Hook] = (),
) -> TrainResult:
    """Minimize the (annealed) free energy by Adam with a cosine learning-rate decay, in the library's fit
    loop (:class:`flowvi.loop.FitLoop`: schedule, clipping, non-finite checks, history, interrupts).

    ``progress(step, bound, beta)`` is called every ``log_every`` steps. Ctrl-C (SIGINT) or SIGTERM
    finishes the current update and stops training cleanly (``interrupted=True``), as does a
    ``KeyboardInterrupt``; the model so far is returned. A non-finite loss or gradient raises
    :class:`TrainingDiverged` naming the step and the cause.

    Args:
        config: the experiment and its recipe.
        target: the energy ``U``.
        progress: called with ``(step, bound, beta)`` at the end of each window of the history.
        families: the family table ``config.flow`` is looked up in (default
            :data:`flowvi_experiments.family_table.FAMILIES`).
        hooks: more :class:`flowvi.loop.Hook` s of the fit loop, after the history's (e.g. early
            stopping, or a look at the parameters and their gradients after every update).
    """
    if config.steps < 0 or config.batch_size < 1 or not config.lr > 0 or not config.grad_clip >= 0:
        raise ValueError("steps must be >= 0, batch_size >= 1, lr > 0 and grad_clip >= 0")
    torch.manual_seed(config.seed)
    device = torch.device(config.device)
    model = build_flow(config, target, families).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    result = TrainResult(model)
    if not params or config.steps == 0:
        return result
    annealing = LinearAnnealing(0.01, config.anneal_steps if config.anneal_steps is not None else config.steps // 2)

    def beta(t: int) -> float:
        return annealing(t) if config.anneal else 1.0

    objective = _FreeEnergy(model, target, config.batch_size)
    step = TrainStep(objective, params, torch.optim.Adam(params, lr=config.lr), aux_names=("bound",),
                     grad_clip=config.grad_clip, check_objective=lambda b: objective(b, track=False))
    history = _History(beta, progress)
    loop = FitLoop(step, lambda t: (beta(t),), updates=config.steps, log_every=config.log_every,
                   schedule=cosine_schedule(config.lr, min(config.lr_final, config.lr), config.steps),
                   hooks=[history, *hooks], signals=(signal.SIGINT, signal.SIGTERM))
    start = time.perf_counter()
    try:
        result.interrupted = loop.run() == "interrupted"
    except Diverged as exc:
        raise TrainingDiverged(f"training stopped at step {exc.update}: {objective.cause(exc)} "
                               "(try a smaller --lr)") from None
    except NonFiniteError as exc:  # the checked first pass: NaN in U(z) or in the flow's parameters
        raise TrainingDiverged(f"training stopped at step 1: {exc} (try a smaller --lr)") from None
    result.steps_done, result.history = loop.update, history.history
    result.train_seconds = time.perf_counter() - start
    return result


@dataclass
class Evaluation:
    metrics: dict[str, Any]
    grid_log_q: Tensor | None  # ln q_K on the plotting grid (None when the posterior has no log_prob)
    grid_energy: Tensor  # U on the same grid
    samples: Tensor  # a few samples of q_K for plots


def _log_prob_on_grid(q: Any, points: Tensor, chunk: int = 20_000) -> Tensor | None:
    if not hasattr(q, "log_prob"):
        return None
    out = []
    for start in range(0, points.shape[0], chunk):
        try:
            out.append(q.log_prob(points[start : start + chunk]).detach().to(torch.float64))
        except InverseNotAvailable:  # e.g. Sylvester flows: histogram of samples instead
            return None
    return torch.cat(out)


@torch.no_grad()
def evaluate(model: nn.Module, target: Target, config: EnergyConfig, chunk: int = 10_000) -> Evaluation:
    """``F`` over ``eval_samples`` samples with its standard error, ``ln Z``, ``KL`` or ``KL_box``.

    For a normalizable target ``kl = F + ln Z`` (``ln Z`` by quadrature on R², section 6.1); for
    U2–U4 only ``kl_box`` (both densities restricted to ``target.box``) is reported. ``kl_box`` is
    reported for every target whose posterior has ``log_prob``. Also the mass that ``q`` and ``p``
    put on ``z1 < 0`` (U1's two modes: both covered when both masses are near ½).
    """
    model.eval()
    q = model()
    n = config.eval_samples
    total, total_sq, done, left = 0.0, 0.0, 0, 0
    keep: Tensor | None = None
    while done < n:
        m = min(chunk, n - done)
        z, log_q = q.rsample_and_log_prob((m,))
        v = (log_q + target.energy(z.reshape(-1, 2)).reshape(log_q.shape)).to(torch.float64)
        if not torch.isfinite(v).all():
            raise FloatingPointError(f"non-finite ln q + U for {int((~torch.isfinite(v)).sum())} evaluation samples")
        total += float(v.sum())
        total_sq += float((v * v).sum())
        left += int((z[..., 0] < 0).sum())
        if keep is None:
            keep = z[:5000].detach().cpu()
        done += m
    mean = total / n
    var = max(0.0, total_sq / n - mean * mean) * n / max(1, n - 1)
    metrics: dict[str, Any] = {
        "free_energy": mean,
        "free_energy_se": math.sqrt(var / n),
        "eval_samples": n,
    }
    metrics["log_z_box"], log_z_on_r2 = _log_z(target)
    metrics["box"] = list(target.box)
    if target.normalizable and log_z_on_r2 is None:  # declared normalizable, but ln Z on R² diverges
        warnings.warn(f"{target.name}: ln Z on R^2 did not converge, so p looks not normalizable; the fit is kept "
                      "and KL is reported on the box only (declare it with --not-normalizable)", stacklevel=2)
        metrics["kl"] = None
        metrics["log_z"] = metrics["log_z_box"]
        metrics["log_z_domain"] = "box"
        metrics["kl_note"] = ("ln Z on R^2 did not converge (p looks not normalizable): kl_box is KL(q_B||p_B) with "
                              "both restricted to the box")
    elif target.normalizable:
        metrics["log_z"] = log_z_on_r2
        metrics["log_z_domain"] = "R2"
        metrics["kl"] = kl_from_free_energy(mean, metrics["log_z"])
        metrics["kl_se"] = metrics["free_energy_se"]
    else:
        metrics["log_z"] = metrics["log_z_box"]
        metrics["log_z_domain"] = "box"
        metrics["kl"] = None
        metrics["kl_note"] = "p is not normalizable on R^2: kl_box is KL(q_B||p_B) with both restricted to the box"
    g = grid(target.box, config.grid_n)
    points = g.points
    energy = target.energy(points.to(torch.get_default_dtype())).to(torch.float64).cpu()
    grid_log_q = _log_prob_on_grid(q, points.to(device=_device_of(model), dtype=torch.get_default_dtype()))
    if grid_log_q is not None:
        grid_log_q = grid_log_q.cpu()
        metrics["kl_box"] = kl_box(grid_log_q, energy, g.cell_area)
        metrics["q_mass_in_box"] = float(grid_log_q.exp().sum() * g.cell_area)
    metrics["q_mass_z1_negative"] = left / n
    log_p = -energy
    neg = (points[:, 0] < 0).cpu()
    metrics["p_mass_z1_negative_in_box"] = float(torch.exp(torch.logsumexp(log_p[neg], 0) - torch.logsumexp(log_p, 0)))
    assert keep is not None
    return Evaluation(metrics, grid_log_q, energy, keep)


def _device_of(model: nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


_LOG_Z_CACHE: dict[tuple[str, tuple[float, ...]], tuple[float, float | None]] = {}


def _log_z(target: Target) -> tuple[float, float | None]:
    """``(ln Z on the box, ln Z on R² or None)`` by quadrature; cached for the built-in targets."""
    key = (target.name, tuple(target.box))
    if key in _LOG_Z_CACHE and target.energy is BUILTIN.get(target.name, (None,))[0]:
        return _LOG_Z_CACHE[key]
    r2: float | None = None
    if target.normalizable:
        try:
            r2 = log_z_r2(target.energy, target.box)
        except ValueError:  # did not converge on growing boxes: not normalizable after all
            r2 = None
    value = (log_z_box(target.energy, target.box), r2)
    if target.name in BUILTIN:
        _LOG_Z_CACHE[key] = value
    return value


def run_energy(
    target: Target, config: EnergyConfig, out: Path, progress: Callable[[int, float, float], None] | None = None,
    plots: bool = True, *, hooks: Sequence[Hook] = (),
) -> dict[str, Any]:
    """Train, evaluate and write ``metrics.json``, ``history.csv``, ``flow.pt``, ``density.png`` and
    ``training.png`` to ``out``. Returns the metrics.

    Nothing is lost to a Ctrl-C (or SIGTERM, which the command line turns into one): during training
    the fit so far is kept; the flow and its history are written before evaluation starts; an
    interruption during evaluation or plotting still writes ``metrics.json`` with what exists
    (``"interrupted": true``, ``"interrupted_during"``).

    Args:
        target, config: the energy and the experiment.
        out: the output folder.
        progress: as in :func:`train`.
        plots: draw ``density.png`` and ``training.png``.
        hooks: more hooks of the fit loop (:func:`train`).
    """
    wall = time.perf_counter()
    result = train(config, target, progress, hooks=hooks)
    metrics: dict[str, Any] = {
        "target": target.name,
        "flow": config.flow,
        "K": config.K,
        "steps": config.steps,
        "steps_done": result.steps_done,
        "interrupted": result.interrupted,
        "seed": config.seed,
        "final_train_bound": result.history[-1]["bound"] if result.history else None,
        "train_seconds": result.train_seconds,
        "config": asdict(config),
    }
    out.mkdir(parents=True, exist_ok=True)
    save_state_file(out / "flow.pt", result.model.state_dict())  # the fit is kept whatever happens next
    lines = ["step,beta,loss,bound"] + [f"{h['step']},{h['beta']},{h['loss']},{h['bound']}" for h in result.history]
    write_text(out / "history.csv", "\n".join(lines) + "\n")
    stage = "evaluation"
    try:
        evaluation = evaluate(result.model, target, config)
        metrics.update(evaluation.metrics)
        if plots:
            stage = "plotting"
            from .energy_plots import plot_density, plot_training

            plot_density(target, evaluation, out / "density.png", title=f"{config.flow}, K={config.K}")
            log_z = metrics["log_z"] if metrics.get("log_z_domain") == "R2" else None
            plot_training(result.history, out / "training.png", log_z, f"{target.name} {config.flow} K={config.K}")
    except KeyboardInterrupt:
        metrics["interrupted"] = True
        metrics["interrupted_during"] = stage
    metrics["wall_seconds"] = time.perf_counter() - wall
    write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics
