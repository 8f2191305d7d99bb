r"""Flow variational inference for any differentiable log-density, in one call.

:func:`fit` fits ``q_K`` (a learned Gaussian base ``N(μ, diag σ²)`` followed by ``K`` flow steps of a
family of :func:`flowvi.make_steps`) to an unnormalized density ``p̃(z)`` on ``R^D`` by maximizing the
evidence lower bound (Rezende & Mohamed 2015, eq. 15, with the sign flipped)

.. math::  \mathcal L(q) = E_{q_0}\big[\ln p̃(z_K) − \ln q_0(z_0) + Σ_k \ln|\det ∂f_k/∂z_{k−1}|\big]
           = \ln Z − \mathrm{KL}(q_K \,\|\, p),\qquad Z = ∫ p̃,

by Adam (Kingma & Ba 2015) on reparameterized Monte Carlo gradients, with a cosine learning-rate decay
and gradient-norm clipping, in the library's fit loop (:class:`flowvi.loop.FitLoop`: the ELBO and the
non-finite checks stay on the device and are read every ``progress_every`` updates). It then draws
``eval_samples`` fresh samples and reports the ELBO with its standard error, the importance-sampled
``ln Ẑ = ln (1/S Σ_s p̃(z_s)/q(z_s))`` (Burda et al. 2016) with a delta-method standard error, and
the Pareto ``k̂`` of the importance weights
(:mod:`flowvi.psis`; Yao et al. 2018 for its use in variational inference).

Example::

    import flowvi as fv
    log_p = lambda z: -0.5 * (z ** 2).sum(-1)          # N(0, I) up to a constant: ln Z = (D/2) ln 2π
    q, report = fv.fit(log_p, dim=3, family="planar", K=4, updates=500, progress=False)
    print(report.summary())
"""

from __future__ import annotations

import math
import numbers
import signal
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from .bases import StandardNormal
from .distribution import FlowPosterior
from .flow import NormalizingFlow
from .loop import Diverged, FitLoop, Hook, TrainStep, cosine_schedule
from .objectives import importance_log_marginal
from .psis import khat_reading, pareto_khat
from .steps import check_step_options, make_steps

LogDensity = Callable[[Tensor], Tensor]


class FitError(ValueError):
    """The log-density or the settings given to :func:`fit` cannot be used: the message says why.
    Raised before any update.

    >>> fv.fit(lambda z: z.sum(), dim=2, updates=10, progress=False)     # (S, 2) -> a scalar, not (S,)
    Traceback (most recent call last):
    ...
    flowvi.fitting.FitError: log_density must map a (S, D) batch to (S,) log-densities: ...
    """


@dataclass
class FitReport:
    """What :func:`fit` measured. ``to_dict()`` gives the JSON-ready numbers (without ``flow``).

    Attributes:
        family, K, dim, updates, samples, seed, eval_samples: the settings of the fit.
        updates_done, interrupted, wall_seconds: what ran (the seconds from the first update to the end of the
            evaluation; a process's one-time imports are not counted). elbo_trace: the Monte Carlo ELBO per update.
        elbo, elbo_se: the final ELBO ± standard error on ``eval_samples`` fresh samples.
        log_z, log_z_se: the importance-sampled ``ln Z`` ± its delta-method standard error.
        khat, khat_reading: the Pareto ``k̂`` of the importance weights and what it means.
        flow: the trained :class:`~flowvi.NormalizingFlow`.

    >>> log_p = lambda z: -0.5 * (z ** 2).sum(-1)           # N(0, I) up to a constant: ln Z = ln 2π ≈ 1.838
    >>> q, report = fv.fit(log_p, dim=2, family="planar", K=2, updates=100, progress=False)
    >>> report.updates_done, abs(report.log_z - 1.8379) < 0.05, report.usable
    (100, True, True)
    """

    family: str
    K: int
    dim: int
    updates: int  #: updates asked for
    updates_done: int  #: updates done (fewer when interrupted)
    samples: int  #: Monte Carlo samples per update
    seed: int
    elbo_trace: list[float]  #: the Monte Carlo ELBO of every update (its own samples)
    elbo: float  #: final ELBO on ``eval_samples`` fresh samples
    elbo_se: float
    log_z: float  #: importance-sampled ln Z with q as proposal (≥ elbo up to noise)
    log_z_se: float  #: delta-method standard error sd(w) / (√S mean w); meaningless when k̂ ≥ 0.7
    khat: float  #: Pareto k̂ of the importance weights
    khat_reading: str
    eval_samples: int
    wall_seconds: float
    interrupted: bool = False
    family_options: dict[str, Any] = field(default_factory=dict)  #: the keywords given to make_steps
    full_rank_base: bool = False  #: a full-rank Gaussian q_0 under the flow
    flow: NormalizingFlow | None = field(default=None, repr=False)  #: the trained module

    @property
    def usable(self) -> bool:
        """``k̂ < 0.7``: the importance-sampled estimates (and q) can be trusted."""
        return self.khat < 0.7

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "flow"}

    def summary(self) -> str:
        return (
            f"ELBO = {self.elbo:.4f} ± {self.elbo_se:.4f}, ln Z = {self.log_z:.4f} ± {self.log_z_se:.4f}, "
            f"{self.khat_reading}; {self.updates_done} updates in {self.wall_seconds:.1f} s"
        )


class FitResult(NamedTuple):
    """What :func:`fit` returns; unpacks as ``q, report``.

    Attributes:
        posterior: ``q_K`` with the trained parameters (a :class:`~flowvi.FlowPosterior`).
        report: the :class:`FitReport`.

    >>> result = fv.fit(lambda z: -0.5 * (z ** 2).sum(-1), dim=3, K=2, updates=20, progress=False)
    >>> result.posterior.sample((4,)).shape, result.report.K
    (torch.Size([4, 3]), 2)
    """

    posterior: FlowPosterior  #: ``q_K`` with the trained parameters (detached from the optimizer)
    report: FitReport


def check_log_density(log_density: LogDensity, z: Tensor) -> Tensor:
    """Evaluate ``log_density`` on the batch ``z`` (``(S, D)``, requiring grad) and check the result.

    Raises :class:`FitError` with one sentence when it raises, does not return a floating ``(S,)``
    tensor, returns non-finite values, or is not differentiable in ``z``.
    """
    S, D = z.shape
    try:
        out = log_density(z)
    except Exception as exc:  # the user's function: report any failure in one line
        raise FitError(f"log_density raised {type(exc).__name__} on a ({S}, {D}) batch of samples: {exc}") from exc
    if not isinstance(out, Tensor):
        raise FitError(f"log_density must return a torch.Tensor, got {type(out).__name__}")
    if out.shape != (S,):
        raise FitError(
            f"log_density must map a (S, D) batch to (S,) log-densities: for S={S}, D={D} it returned shape "
            f"{tuple(out.shape)}"
        )
    if not out.is_floating_point():
        raise FitError(f"log_density must return a floating-point tensor, got {out.dtype}")
    if not torch.isfinite(out).all():
        bad = int((~torch.isfinite(out)).sum())
        raise FitError(
            f"log_density returned {bad} non-finite values (NaN or inf) of {S} at the initial samples "
            "(mean 0, scale 1): give a density that is finite there, or rescale the variables"
        )
    if not out.requires_grad:
        raise FitError(
            "log_density is not differentiable in z: its output does not depend on the input through torch "
            "operations (no .detach(), .item(), numpy or torch.no_grad() inside it)"
        )
    (grad,) = torch.autograd.grad(out.sum(), z, retain_graph=True, allow_unused=True)
    if grad is None:
        raise FitError("log_density is not differentiable in z: its output does not depend on z")
    if not torch.isfinite(grad).all():
        raise FitError("log_density has non-finite gradients at the initial samples (mean 0, scale 1)")
    return out


def fit(
    log_density: LogDensity,
    dim: int,
    family: str = "planar",
    K: int = 8,
    *,
    updates: int = 2000,
    samples: int = 64,
    lr: float = 1e-2,
    lr_final: float = 1e-4,
    grad_clip: float = 10.0,
    seed: int = 0,
    eval_samples: int = 4096,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    family_options: Mapping[str, Any] | None = None,
    full_rank_base: bool = False,
    flow_options: dict[str, Any] | None = None,
    progress: bool = True,
    progress_every: int | None = None,
    callback: Callable[[int, float], None] | None = None,
    step_options: Mapping[str, Any] | None = None,
) -> FitResult:
    """Fit a flow posterior to ``p ∝ exp(log_density)`` on ``R^dim`` by maximizing the ELBO.

    Args:
        log_density: maps a ``(S, dim)`` tensor of points to the ``(S,)`` unnormalized log-density
            ``ln p̃(z)`` (differentiable in ``z``; for a Bayesian model, ``ln p(x, z)`` in unconstrained
            coordinates, e.g. from :func:`flowvi_experiments.pyro_bridge.log_density`).
        dim: ``D``. family, K: the flow steps, ``make_steps(family, dim, K, **family_options)`` (any family
            it accepts; ``"diagonal"`` or ``K = 0`` is mean-field Gaussian VI).
        family_options: keywords of :func:`flowvi.make_steps` for ``family`` (Sylvester's ``m`` and
            ``shared_q``, the IAF's ``hidden``, planar's ``init_scale`` …: :data:`flowvi.steps.STEP_OPTIONS`),
            the ``family_options`` of ``flowvi train`` configs; checked before anything is built or run
            (:func:`flowvi.steps.check_step_options`). ``step_options`` is its former name (deprecated).
        full_rank_base: put a :class:`~flowvi.FullRank` step (``z = μ + L ε``, Cholesky factor ``L``) before the
            family's steps, over a fixed ``N(0, I)`` base unless ``flow_options`` gives one: a full-rank Gaussian
            ``q_0`` (:func:`flowvi.make_steps`' ``full_rank_base``).
        updates: Adam updates (a fixed number); samples: Monte Carlo samples per update.
        lr, lr_final: Adam's learning rate, cosine-decayed from ``lr`` to ``lr_final``.
        grad_clip: the gradient's global norm is clipped to this before each update (0: off).
        seed: seeds the initialization and every sample (``torch.manual_seed``).
        eval_samples: fresh samples for the final ELBO, ``ln Z`` and ``k̂``.
        dtype, device: of the flow and of the points handed to ``log_density``.
        flow_options: extra keywords of :class:`NormalizingFlow` (the base is a learned
            :class:`~flowvi.DiagonalNormal` unless ``base`` is given).
        progress: print one line to stderr every ``progress_every`` updates (default ``updates // 10``);
            ``False`` silences it. callback: ``callback(update, elbo)`` for every update, in order (called
            when the loop reads the device, every ``progress_every`` updates).

    Returns ``(posterior, report)`` (:class:`FitResult`): the trained ``q_K`` and a :class:`FitReport`.
    Ctrl-C stops training early; the report then says ``interrupted=True``. A wrong output shape,
    non-finite values at the start, a non-differentiable density or a diverging fit raise :class:`FitError`.
    """
    counts = {"dim": dim, "K": K, "updates": updates, "samples": samples, "eval_samples": eval_samples}
    wrong = [f"{name} = {value!r}" for name, value in counts.items()
             if isinstance(value, bool) or not isinstance(value, numbers.Integral)]
    if wrong:
        raise FitError(f"dim, K, updates, samples and eval_samples must be integers, got {', '.join(wrong)}")
    if dim < 1:
        raise FitError(f"dim must be >= 1, got {dim}")
    if K < 0 or updates < 0 or samples < 1 or eval_samples < 25:
        raise FitError(f"need K >= 0, updates >= 0, samples >= 1 and eval_samples >= 25, got {K}, {updates}, "
                       f"{samples}, {eval_samples}")
    if not (lr > 0 and lr_final > 0 and grad_clip >= 0):
        raise FitError(f"need lr > 0, lr_final > 0 and grad_clip >= 0, got {lr}, {lr_final}, {grad_clip}")
    if not callable(log_density):
        raise FitError(f"log_density must be callable, got {type(log_density).__name__}")
    if step_options is not None:
        if family_options is not None:
            raise FitError("give family_options or its former name step_options, not both")
        warnings.warn("fit(step_options=...) is now fit(family_options=...)", DeprecationWarning, stacklevel=2)
        family_options = step_options
    if family_options is not None and not isinstance(family_options, Mapping):
        raise FitError(f"family_options must be a mapping of make_steps keywords to values, such as "
                       f"{{'m': 20}}, got {family_options!r}")
    try:
        options = check_step_options(family, family_options or {}, dim,
                                     where=f"family_options of the {family} family")
    except (TypeError, ValueError) as exc:
        raise FitError(str(exc)) from None
    torch.manual_seed(seed)
    try:
        steps = make_steps(family, dim, K, full_rank_base=full_rank_base, **options)
    except (TypeError, ValueError) as exc:
        raise FitError(str(exc)) from exc
    flow_options = dict(flow_options or {})
    full_rank = full_rank_base or family.lower() == "full-rank"
    if full_rank and "base" not in flow_options and "trainable_base" not in flow_options:
        flow_options["base"] = StandardNormal(dim)  # μ and L are the full-rank step's: q_0 = N(μ, LLᵀ)
    flow = NormalizingFlow(dim, steps, **flow_options)
    flow = flow.to(device=device, dtype=dtype)
    every = progress_every or max(1, updates // 10)

    with torch.no_grad():
        z0 = flow().sample((min(samples, 256),))
    check_log_density(log_density, z0.requires_grad_(True))

    params = [p for p in flow.parameters() if p.requires_grad]
    progress_hook = _Progress(updates, every, progress, callback)
    # built before the clock starts: the first torch.optim optimizer of a process imports torch._dynamo (seconds; 15 s
    # beside two trainings), a cost of the process, not of the fit
    optimizer = torch.optim.Adam(params, lr=lr) if params else None
    start = time.perf_counter()
    interrupted = False
    if params and updates > 0:
        current = [1]  # the update being computed, for the error message of a failing log_density

        def inputs(t: int) -> tuple[()]:
            current[0] = t + 1
            return ()

        def negative_elbo() -> Tensor:
            z, log_q = flow().rsample_and_log_prob((samples,))
            try:
                log_p = log_density(z)
            except Exception as exc:  # the user's function: one line, naming the update
                raise FitError(f"log_density raised {type(exc).__name__} at update {current[0]}: {exc}") from exc
            return -(log_p - log_q).mean()

        assert optimizer is not None
        step = TrainStep(negative_elbo, params, optimizer, grad_clip=grad_clip,
                         record_each=every)
        loop = FitLoop(step, inputs, updates=updates, log_every=every, schedule=cosine_schedule(lr, min(lr, lr_final),
                       updates), hooks=[progress_hook], signals=(signal.SIGINT,))
        try:
            interrupted = loop.run() == "interrupted"
        except Diverged as exc:
            if exc.what == "loss":
                raise FitError(f"the ELBO became non-finite at update {exc.update} (try a smaller lr or more "
                               "samples)") from None
            raise FitError(f"non-finite gradient at update {exc.update} (try a smaller lr)") from None
    trace = progress_hook.trace
    with torch.no_grad():
        q = flow()
    evaluation = evaluate(q, log_density, eval_samples)
    report = FitReport(
        family=family, K=K, dim=dim, updates=updates, updates_done=len(trace), samples=samples, seed=seed,
        elbo_trace=trace, eval_samples=eval_samples, wall_seconds=time.perf_counter() - start,
        interrupted=interrupted, family_options=options, full_rank_base=full_rank_base, flow=flow, **evaluation,
    )
    return FitResult(q, report)


class _Progress(Hook):
    """The ELBO of every update (read from the device once per window), the callback, the progress lines."""

    def __init__(self, updates: int, every: int, progress: bool, callback: Callable[[int, float], None] | None
                 ) -> None:
        self.updates, self.every, self.progress, self.callback = updates, every, progress, callback
        self.trace: list[float] = []
        self.start = time.perf_counter()

    def on_record(self, loop: FitLoop, record: dict[str, Any]) -> None:
        first = len(self.trace) + 1
        self.trace.extend(-v for v in record["values"])  # the step records the loss, −ELBO
        if self.callback is not None:
            for t in range(first, len(self.trace) + 1):
                self.callback(t, self.trace[t - 1])
        t = record["update"]
        if self.progress and (t % self.every == 0 or t == self.updates):
            recent = self.trace[-self.every:]
            print(f"flowvi.fit: update {t}/{self.updates}, ELBO {sum(recent) / len(recent):.4f} "
                  f"(mean of the last {len(recent)}), {time.perf_counter() - self.start:.1f} s",
                  file=sys.stderr, flush=True)

    def on_end(self, loop: FitLoop, status: str) -> None:
        record = loop.flush()  # the updates of an interrupted window
        if record is not None:
            self.on_record(loop, record)


class _Recorder:
    """A proxy of ``q`` for :func:`importance_log_marginal` that keeps every ``ln q`` and ``ln p̃`` drawn."""

    def __init__(self, q: FlowPosterior, log_density: LogDensity) -> None:
        self.q, self.log_density = q, log_density
        self.log_q: list[Tensor] = []
        self.log_p: list[Tensor] = []

    def rsample_and_log_prob(self, sample_shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
        z, log_q = self.q.rsample_and_log_prob(sample_shape)
        self.log_q.append(log_q)
        return z, log_q

    def log_joint(self, z: Tensor) -> Tensor:
        self.log_p.append(self.log_density(z))
        return self.log_p[-1]


def evaluate(q: FlowPosterior, log_density: LogDensity, n_samples: int = 4096, chunk_size: int = 512
             ) -> dict[str, Any]:
    r"""ELBO ± se, importance-sampled ``ln Ẑ`` ± se and Pareto ``k̂`` from ``n_samples`` draws of ``q``.

    With ``ln w_s = ln p̃(z_s) − ln q(z_s)``: ELBO ``= mean ln w`` (se ``sd(ln w)/√S``),
    ``ln Ẑ = logsumexp(ln w) − ln S`` (:func:`flowvi.importance_log_marginal`) and its delta-method
    se ``sd(w)/(√S · mean w)``, computed on ``w / max w``.

    Raises :class:`FitError` for fewer than 25 samples (``k̂`` fits a tail of at least 5 weights) and where
    ``log_density`` is NaN, ``+inf`` or ``−inf`` at a sample of ``q`` (with ``−inf`` the ELBO is ``−inf``: q
    puts mass where the target has none).
    """
    if n_samples < 25:
        raise FitError(f"evaluate needs n_samples >= 25 (Pareto k̂ fits the tail of the importance weights), "
                       f"got {n_samples}")
    rec = _Recorder(q, log_density)
    try:
        est = importance_log_marginal(rec, rec.log_joint, n_samples=n_samples, chunk_size=chunk_size)
    except FloatingPointError as exc:
        raise FitError(f"evaluation failed: {exc}") from exc
    log_w = (torch.cat(rec.log_p) - torch.cat(rec.log_q)).detach().to(torch.float64).cpu().numpy()
    outside = int(np.isneginf(log_w).sum())
    if outside:
        raise FitError(f"log_density is -inf at {outside} of {n_samples} samples of q, so the ELBO is -inf: fit in "
                       f"coordinates where the density is positive everywhere (e.g. the log of a positive parameter)")
    w = np.exp(log_w - log_w.max())
    khat = pareto_khat(log_w)
    return {
        "elbo": float(est.elbo),
        "elbo_se": float(log_w.std(ddof=1) / math.sqrt(n_samples)),
        "log_z": float(est.log_marginal),
        "log_z_se": float(w.std(ddof=1) / (math.sqrt(n_samples) * w.mean())),
        "khat": khat,
        "khat_reading": khat_reading(khat),
    }
