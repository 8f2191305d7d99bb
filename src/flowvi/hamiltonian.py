r"""Hamiltonian flow and Hamiltonian variational inference (HVI; sections 3.2 and 4.3, Salimans et al. 2015).

The Hamiltonian flow acts on the augmented space ``(z, ω)`` with

    H(z, ω) = U(z) + ½ ωᵀ M⁻¹ ω,     U(z) = −ln p(x, z),     M = diag(m) (learned)

simulated by leapfrog steps with per-dimension step sizes ``ε_t`` (learned, one vector per step):

    ω ← ω − ½ ε_t ⊙ ∇U(z);   z ← z + ε_t ⊙ M⁻¹ω;   ω ← ω − ½ ε_t ⊙ ∇U(z)

Each half step is a shear (one block changes by a function of the other), so a leapfrog step has
Jacobian determinant 1 (volume preserving) and is inverted by negating ω, stepping, and negating
again. Hence ``q(z_T, ω_T) = q(z_0, ω_0)`` (section 4.3: ``q(z', ω') = |J| q(z) q(ω)``, ``|J| = 1``).

HVI: ``z_0 ~ q(z_0|x) = N(μ(x), diag σ²(x))``, ``ω_0 ~ q(ω_0|x, z_0)`` (a diagonal Gaussian from a small
network), ``T`` leapfrog steps, and an auxiliary reverse model ``r(ω_T|x, z_T)`` (a diagonal Gaussian
from a second network) give the lower bound

    ln p(x) ≥ E[ln p(x, z_T) + ln r(ω_T|x, z_T) − ln q(z_0|x) − ln q(ω_0|x, z_0)].

:class:`HVIPosterior` exposes it through the same ``rsample_and_log_prob`` contract as a flow
posterior, with the *auxiliary* log density ``ln q(z_0|x) + ln q(ω_0|x, z_0) − ln r(ω_T|x, z_T)`` in
place of ``ln q_K(z_K)``; so :func:`flowvi.free_energy` is exactly the negative HVI bound, and
:func:`flowvi.importance_log_marginal` is an unbiased importance estimate of ``p(x)`` on the
extended space (``E[p(x, z_T) r(ω_T|x, z_T) / (q(z_0|x) q(ω_0|x, z_0))] = p(x)``).
During training (grad mode on) the gradients ``∇U`` are taken with ``create_graph=True`` so the
bound is differentiated through the dynamics; one gradient of ``ln p(x, z)`` per leapfrog step
(``T + 1`` in all).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .bases import BaseDistribution
from .distribution import Context, diagonal_normal_log_prob
from .flow import NormalizingFlow
from .langevin import energy_and_grad

LogJoint = Callable[[Tensor], Tensor]


def leapfrog(
    z: Tensor,
    omega: Tensor,
    grad_energy: Callable[[Tensor], Tensor],
    step_size: Tensor,
    inv_mass: Tensor,
    grad: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """One leapfrog step on ``H(z, ω) = U(z) + ½ ωᵀ M⁻¹ ω`` (half momentum, full position, half momentum).

    Args:
        z, omega: position and momentum, shape ``(..., D)``.
        grad_energy: ``z -> ∇U(z)`` (same shape as ``z``).
        step_size: ``ε``, broadcastable to ``z`` (per-dimension step sizes).
        inv_mass: the diagonal of ``M⁻¹``, broadcastable to ``z``.
        grad: ``∇U(z)`` if already known (saves one gradient evaluation).

    Returns:
        ``(z', ω', ∇U(z'))``; the last can be passed as ``grad`` to the next step.
    """
    if grad is None:
        grad = grad_energy(z)
    omega = omega - 0.5 * step_size * grad
    z = z + step_size * inv_mass * omega
    grad = grad_energy(z)
    omega = omega - 0.5 * step_size * grad
    return z, omega, grad


class ConditionalGaussian(nn.Module):
    """A diagonal Gaussian ``N(ω; m(z, h), diag s(z, h)²)`` whose parameters a small tanh network maps
    from ``z`` (and the encoder features ``h`` when amortized): ``q(ω_0|x, z_0)`` and ``r(ω_T|x, z_T)``.

    The output layer starts at zero, so the initial distribution is ``N(0, init_scale² I)`` for every input.
    """

    def __init__(self, dim: int, context_features: int | None, hidden: int, init_scale: float = 1.0) -> None:
        super().__init__()
        self.dim = dim
        self.context_features = context_features
        in_features = dim + (context_features or 0)
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.Tanh(), nn.Linear(hidden, 2 * dim))
        with torch.no_grad():
            self.net[-1].weight.zero_()
            self.net[-1].bias.zero_()
            self.net[-1].bias[dim:] = math.log(math.expm1(init_scale))

    def forward(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """``(loc, scale)``, each of ``z``'s shape; ``context`` ``(*batch, H)`` broadcasts over ``z``'s sample dims."""
        inputs = z
        if self.context_features is not None:
            if context is None:
                raise ValueError("an amortized HVI needs a context (encoder features), got None")
            inputs = torch.cat([z, context.expand(z.shape[:-1] + context.shape[-1:])], -1)
        loc, raw_scale = self.net(inputs).split(self.dim, -1)
        return loc, F.softplus(raw_scale) + 1e-5


class HVITerms:
    """The per-sample terms of the HVI bound (all of shape ``(*sample, *batch)``)."""

    def __init__(self, log_q0: Tensor, log_q_omega: Tensor, log_r: Tensor) -> None:
        self.log_q0, self.log_q_omega, self.log_r = log_q0, log_q_omega, log_r

    @property
    def log_q_aux(self) -> Tensor:
        """``ln q(z_0|x) + ln q(ω_0|x, z_0) − ln r(ω_T|x, z_T)``: ``−bound = log_q_aux − ln p(x, z_T)``."""
        return self.log_q0 + self.log_q_omega - self.log_r


class HVIPosterior:
    """The HVI posterior of one (batch of) data point(s), tied to its log joint ``ln p(x, z)``.

    Not a ``torch.distributions.Distribution``: the marginal ``q(z_T|x)`` has no tractable density.
    It offers ``rsample`` and ``rsample_and_log_prob`` (with the auxiliary log density, see the module
    docstring), which is all :func:`flowvi.free_energy` and :func:`flowvi.importance_log_marginal` use;
    deliberately no ``log_prob`` (code that plots densities falls back to histograms of samples).

    Args:
        module: the :class:`HamiltonianVI` family. context: encoder features (None when global).
        log_joint: ``z ↦ ln p(x, z)``.

    >>> hvi = HamiltonianVI(2, n_leapfrog=3)
    >>> q = hvi(None, lambda z: -0.5 * (z ** 2).sum(-1))
    >>> z, omega, terms = q.rsample_with_terms((5,))
    >>> z.shape, omega.shape, terms.log_q_aux.shape
    (torch.Size([5, 2]), torch.Size([5, 2]), torch.Size([5]))
    """

    def __init__(self, module: HamiltonianVI, context: Tensor | None, log_joint: LogJoint) -> None:
        self.module = module
        self.context = context
        self.log_joint = log_joint
        self.initial = module.initial(context)
        self.batch_shape = self.initial.batch_shape
        self.event_shape = self.initial.event_shape

    def _grad_energy(self, z: Tensor) -> Tensor:
        create_graph = torch.is_grad_enabled()
        return energy_and_grad(lambda v: -self.log_joint(v), z, create_graph=create_graph)[1]

    def rsample_with_terms(self, sample_shape: Sequence[int] = ()) -> tuple[Tensor, Tensor, HVITerms]:
        """Draw ``z_T`` and return ``(z_T, ω_T, terms of the bound)``; differentiable (reparameterized)."""
        m = self.module
        z, log_q0 = self.initial.rsample_and_log_prob(torch.Size(sample_shape))
        loc, scale = m.momentum(z, self.context)
        omega = loc + scale * torch.randn_like(loc)
        log_q_omega = diagonal_normal_log_prob(omega, loc, scale)
        steps, inv_mass = m.step_sizes(), m.inv_mass()
        grad = None
        for t in range(m.n_leapfrog):
            try:
                z, omega, grad = leapfrog(z, omega, self._grad_energy, steps[t], inv_mass, grad)
            except FloatingPointError as exc:
                raise FloatingPointError(f"HVI leapfrog step {t + 1} of {m.n_leapfrog}: {exc}") from exc
        r_loc, r_scale = m.reverse(z, self.context)
        log_r = diagonal_normal_log_prob(omega, r_loc, r_scale)
        return z, omega, HVITerms(log_q0, log_q_omega, log_r)

    def rsample_and_log_prob(self, sample_shape: Sequence[int] = ()) -> tuple[Tensor, Tensor]:
        """``(z_T, ln q(z_0|x) + ln q(ω_0|x, z_0) − ln r(ω_T|x, z_T))`` (the auxiliary log density)."""
        z, _, terms = self.rsample_with_terms(sample_shape)
        return z, terms.log_q_aux

    def rsample(self, sample_shape: Sequence[int] = ()) -> Tensor:
        return self.rsample_with_terms(sample_shape)[0]

    def sample(self, sample_shape: Sequence[int] = ()) -> Tensor:
        z = self.rsample(sample_shape)
        return z.detach()



class HamiltonianVI(nn.Module):
    """HVI posterior family: ``hvi(context, log_joint) -> HVIPosterior`` (Salimans et al. 2015; section 4.3).

    Args:
        dim: latent dimension D.
        n_leapfrog: number of leapfrog steps T (0 gives the diagonal Gaussian ``q(z_0|x)``).
        context_features: ``None`` for a global ``q(z_0)`` (2-D energies); else the width H of the
            encoder features that ``q(z_0|x)``, ``q(ω_0|x, z_0)`` and ``r(ω_T|x, z_T)`` take as input.
        hidden: width of the momentum and reverse networks.
        init_step_size: initial value of every per-dimension leapfrog step size ``ε_t``.
        base: ``q(z_0)`` (:mod:`flowvi.bases`); default a learned (amortized) diagonal Gaussian. The 2-D
            experiments use the fixed :class:`~flowvi.StandardNormal`, like the other flows there (with a
            learned base, targets flat along a direction such as U2–U4 let ``q(z_0)`` widen without bound).
        trainable_base: shorthand for ``base`` (``False``: ``StandardNormal``), kept from earlier versions.

    >>> hvi = HamiltonianVI(2, n_leapfrog=4, context_features=6)
    >>> h, log_joint = torch.randn(3, 6), lambda z: -0.5 * (z ** 2).sum(-1)      # features, ln p(x, z)
    >>> q = hvi(fv.Context(h, log_joint))
    >>> loss = fv.free_energy(q, log_joint).mean()      # the negative HVI bound, through the dynamics
    >>> loss.backward()
    >>> hvi.log_step_size.grad.shape                      # learned ε_t, one vector per leapfrog step
    torch.Size([4, 2])
    """

    def __init__(
        self,
        dim: int,
        n_leapfrog: int,
        *,
        context_features: int | None = None,
        hidden: int = 64,
        init_step_size: float = 0.1,
        base: BaseDistribution | None = None,
        trainable_base: bool | None = None,
    ) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if n_leapfrog < 0:
            raise ValueError(f"n_leapfrog must be >= 0, got {n_leapfrog}")
        if hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden}")
        if not (init_step_size > 0 and math.isfinite(init_step_size)):
            raise ValueError(f"init_step_size must be positive and finite, got {init_step_size}")
        self.dim = dim
        self.n_leapfrog = n_leapfrog
        self.context_features = context_features
        self.amortized = context_features is not None
        self.initial = NormalizingFlow(dim, [], base=base, context_features=context_features,
                                       trainable_base=trainable_base)
        self.momentum = ConditionalGaussian(dim, context_features, hidden)
        self.reverse = ConditionalGaussian(dim, context_features, hidden)
        self.log_step_size = nn.Parameter(torch.full((n_leapfrog, dim), math.log(init_step_size)))
        self.log_mass = nn.Parameter(torch.zeros(dim))

    def step_sizes(self) -> Tensor:
        """``ε_t``, shape ``(T, D)``."""
        return self.log_step_size.exp()

    def inv_mass(self) -> Tensor:
        """The diagonal of ``M⁻¹``, shape ``(D,)``."""
        return torch.exp(-self.log_mass)

    def forward(self, context: Context | Tensor | None = None, log_joint: LogJoint | None = None) -> HVIPosterior:
        """The posterior of the data point(s) whose encoder features and ``ln p(x, z)`` the
        :class:`~flowvi.Context` carries (or given as ``context`` tensor and ``log_joint``)."""
        if isinstance(context, Context):
            context, log_joint = context.features, context.log_joint if log_joint is None else log_joint
        if log_joint is None:
            raise ValueError("HVI needs the log joint ln p(x, z) of the data point(s): pass log_joint=")
        if not callable(log_joint):
            raise TypeError(f"log_joint must be callable, got {type(log_joint).__name__}")
        return HVIPosterior(self, context, log_joint)
