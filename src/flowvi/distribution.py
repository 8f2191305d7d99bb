"""The flow posterior as a ``torch.distributions.Distribution`` (section 3.1, eq. 5–7 and 13).

``q_K`` is the law of ``z_K = f_K ∘ … ∘ f_1(z_0)``, ``z_0 ~ q_0 = N(μ, diag σ²)``:

    ln q_K(z_K) = ln q_0(z_0) − Σ_k ln |det ∂f_k/∂z_{k−1}|     (7)

:meth:`FlowPosterior.rsample_and_log_prob` computes ``z_K`` and ``ln q_K(z_K)`` in one pass;
:meth:`FlowPosterior.log_prob` evaluates the density at arbitrary points through the inverses
(analytic for NICE, numerical for planar and radial).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor
from torch.distributions import Distribution, Independent, Normal, constraints

from .transforms import ComposeFlow, FlowTransform
from .validation import check_event, check_tensor, check_values, not_finite

_LOG_2PI = math.log(2 * math.pi)


def diagonal_normal_log_prob(x: Tensor, loc: Tensor | float = 0.0, scale: Tensor | float = 1.0,
                             eps: Tensor | None = None, *, termwise: bool = False) -> Tensor:
    """``ln N(x; μ, diag σ²) = −½ Σ ε² − Σ ln σ − (D/2) ln 2π`` with ``ε = (x − μ)/σ``, summed over the
    last dimension (``D``); the one diagonal-Gaussian log-density of flowvi and its experiments.

    Args:
        x: ``(..., D)``. loc, scale: ``μ`` and ``σ``, broadcasting against ``x`` (numbers: the same for
            every coordinate; the default is ``N(0, I)``).
        eps: ``(x − μ)/σ`` when already known (a reparameterized draw ``x = μ + σ ε``).
        termwise: add the per-coordinate terms ``−ε²/2 − ln σ − ln(2π)/2`` instead of the three sums.
            The same number up to float rounding; the DLGM's prior terms (``ln p(z_1)``, ``ln p(z_1|z_2)``)
            are summed in this order, which pins a fixed-seed DLGM run's losses bit for bit
            (tests/test_compat.py), and the flows' base densities in the other.
    """
    if eps is None:
        eps = (x - loc) / scale
    # a number stays a number (no tensor made from the host in a training step)
    log_scale = scale.log() if isinstance(scale, Tensor) else math.log(scale)
    if termwise:
        return (-0.5 * eps * eps - log_scale - 0.5 * _LOG_2PI).sum(-1)
    sum_log_scale = log_scale.sum(-1) if isinstance(log_scale, Tensor) else x.shape[-1] * log_scale
    return -0.5 * (eps * eps).sum(-1) - sum_log_scale - 0.5 * x.shape[-1] * _LOG_2PI


class Context(NamedTuple):
    """What a posterior module is conditioned on: ``posterior(Context(h, log_joint))`` is ``q(z|x)``.

    Args:
        features: the encoder features ``h(x)``, ``(*batch, H)``, for amortized posteriors; ``None`` for
            global ones.
        log_joint: ``z ↦ ln p(x, z)`` of the same data points, ``(*sample, *batch, D) -> (*sample, *batch)``,
            for posteriors whose transitions follow it (Hamiltonian VI); the others ignore it.

    Every posterior module of :mod:`flowvi` accepts a ``Context`` (or, for short, the features alone)
    and returns an object with ``rsample_and_log_prob(sample_shape)``.

    >>> from flowvi.hamiltonian import HamiltonianVI
    >>> h, log_joint = torch.randn(4, 5), lambda z: -0.5 * (z ** 2).sum(-1)    # features, ln p(x, z)
    >>> flow = fv.NormalizingFlow(3, fv.planar_steps(3, 2), context_features=5)
    >>> hvi = HamiltonianVI(3, n_leapfrog=2, context_features=5)
    >>> [q(fv.Context(h, log_joint)).rsample_and_log_prob((2,))[1].shape for q in (flow, hvi)]
    [torch.Size([2, 4]), torch.Size([2, 4])]
    """

    features: Tensor | None = None
    log_joint: Callable[[Tensor], Tensor] | None = None


def as_context(context: Context | Tensor | None) -> Context:
    """``context`` as a :class:`Context` (a tensor or ``None`` is the encoder features alone)."""
    return context if isinstance(context, Context) else Context(context)


class FlowPosterior(Distribution):
    """``q_K``: a diagonal Gaussian base followed by ``K`` flow transforms.

    Args:
        loc, scale: ``(..., D)`` mean and standard deviation of ``q_0`` (per data point or global).
        transforms: the flow steps, applied in order.
        validate_args: as in ``torch.distributions`` (see ``__init__``).

    A :class:`~flowvi.NormalizingFlow` builds one per call; it can also be made from transforms directly:

    >>> radial = fv.RadialTransform(torch.zeros(2), torch.tensor(1.0), torch.tensor(0.5))
    >>> q = fv.FlowPosterior(torch.zeros(2), torch.ones(2), [radial])
    >>> z, log_q = q.rsample_and_log_prob((5,))       # eq. (7), one pass
    >>> bool(torch.allclose(q.log_prob(z), log_q, atol=1e-5))   # eq. (5), through the inverse
    True
    """

    arg_constraints = {"loc": constraints.real_vector, "scale": constraints.independent(constraints.positive, 1)}
    support = constraints.real_vector
    has_rsample = True
    #: Monte Carlo sample count of :attr:`mean`, :attr:`variance`, :attr:`stddev` and :meth:`entropy`
    mc_samples: int = 4096

    def __init__(
        self, loc: Tensor, scale: Tensor, transforms: Sequence[FlowTransform], validate_args: bool | None = None
    ) -> None:
        """``validate_args=True`` checks, as ``torch.distributions`` does, that ``scale > 0`` and that values
        given to :meth:`log_prob` are real vectors. ``None`` or ``False`` skips those checks (unlike torch,
        ``None`` does not follow torch's global default: a flow posterior is rebuilt at every training step,
        and each check costs a device synchronisation); flowvi's own finiteness checks
        (:func:`flowvi.set_validation`) apply either way."""
        check_tensor("loc", loc)
        check_tensor("scale", scale)
        if loc.dim() == 0:
            raise ValueError("loc must have an event dimension (shape (..., D))")
        loc, scale = torch.broadcast_tensors(loc, scale)
        check_values(lambda: [("loc has {n} non-finite entries (NaN or inf)", not_finite(loc)),
                      ("scale has {n} non-finite entries (NaN or inf)", not_finite(scale)),
                      ("the base scale is <= 0 in {n} entries (a softplus of a very negative raw scale underflows "
                       "to 0; ln q would be infinite)", scale <= 0)])
        for t in transforms:
            if not isinstance(t, FlowTransform):
                raise TypeError(f"transforms must be FlowTransform instances, got {type(t).__name__}")
        self.loc, self.scale = loc, scale
        self.base = Independent(Normal(loc, scale, validate_args=False), 1, validate_args=False)
        self.flow = ComposeFlow(transforms)
        super().__init__(loc.shape[:-1], loc.shape[-1:], validate_args=bool(validate_args))

    def expand(self, batch_shape: torch.Size | Sequence[int], _instance: FlowPosterior | None = None) -> FlowPosterior:
        """The same ``q_K`` repeated over ``batch_shape`` (``loc`` and ``scale`` expanded, no copy; the
        transforms' parameters broadcast against the new batch dimensions)."""
        batch_shape = torch.Size(batch_shape)
        new = self._get_checked_instance(FlowPosterior, _instance)
        shape = batch_shape + self.event_shape
        FlowPosterior.__init__(new, self.loc.expand(shape), self.scale.expand(shape), self.transforms,
                               validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def transforms(self) -> list[FlowTransform]:
        return self.flow.transforms

    def rsample(self, sample_shape: torch.Size | Sequence[int] = ()) -> Tensor:
        return self.rsample_and_log_prob(sample_shape)[0]

    def rsample_and_log_prob(self, sample_shape: torch.Size | Sequence[int] = ()) -> tuple[Tensor, Tensor]:
        """Draw ``z_K`` (reparameterized) and return it with ``ln q_K(z_K)`` (eq. 7) in one pass."""
        shape = self._extended_shape(torch.Size(sample_shape))
        eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        z0 = self.loc + self.scale * eps
        log_q0 = diagonal_normal_log_prob(z0, self.loc, self.scale, eps)  # through ε: no (z0 − μ)/σ
        z, ladj = self.flow.call_and_ladj(z0)
        return z, log_q0 - ladj

    def sample(self, sample_shape: torch.Size | Sequence[int] = ()) -> Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        """``ln q_K(value)`` through the inverse flow (eq. 5); differentiable in ``value`` and parameters."""
        check_event("value", value, self.loc.shape[-1])
        if self._validate_args:
            self._validate_sample(value)
        z0, ladj = self.flow.inverse_and_ladj(value)
        return diagonal_normal_log_prob(z0, self.loc, self.scale) - ladj  # also for an empty batch

    def entropy_estimate(self, n_samples: int = 1000) -> Tensor:
        """Monte Carlo ``−E[ln q_K]``."""
        return -self.rsample_and_log_prob((n_samples,))[1].mean(0)

    def entropy(self, n_samples: int | None = None) -> Tensor:
        r"""A Monte Carlo **estimate** of ``H[q_K] = −E[\ln q_K(z_K)]`` from ``n_samples`` draws (default
        :attr:`mc_samples`), through eq. (7); differentiable (reparameterized). Its standard error is
        ``sd(ln q_K)/√n``; the flow has no closed-form entropy."""
        return self.entropy_estimate(self.mc_samples if n_samples is None else n_samples)

    def moments(self, n_samples: int | None = None) -> tuple[Tensor, Tensor]:
        """Monte Carlo **estimates** of the mean and variance of ``q_K`` from ``n_samples`` draws (default
        :attr:`mc_samples`), without gradients. Their standard errors are ``stddev/√n`` for the mean."""
        n = self.mc_samples if n_samples is None else n_samples
        if n < 2:
            raise ValueError(f"n_samples must be >= 2, got {n}")
        z = self.sample((n,))
        return z.mean(0), z.var(0)

    @property
    def mean(self) -> Tensor:
        """A Monte Carlo **estimate** of ``E[z_K]`` (:attr:`mc_samples` fresh draws per access; see :meth:`moments`)."""
        return self.moments()[0]

    @property
    def variance(self) -> Tensor:
        """A Monte Carlo **estimate** of ``Var[z_K]`` per coordinate (:attr:`mc_samples` fresh draws per access)."""
        return self.moments()[1]

    @property
    def stddev(self) -> Tensor:
        """The square root of :attr:`variance` (a Monte Carlo estimate)."""
        return self.variance.sqrt()
