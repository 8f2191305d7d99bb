r"""Flow steps of the Sylvester, IAF and full-rank-Gaussian families (see :mod:`flowvi.steps`).

Each :class:`~flowvi.steps.FlowStep` declares its per-data-point raw parameters as a layout; a
global flow learns them as ``nn.Parameter`` s, an amortized one gets them per data point from the
encoder's linear head (:mod:`flowvi.params`). What is per data point in the amortized case:

- **Sylvester** (van den Berg et al. 2018, §3, §4): the triangular ``R``, ``R̃`` (their diagonals
  and upper parts), the bias ``b`` and, as in the paper, the parameters of ``Q`` (the skew matrix
  of the Cayley map, or the Householder vectors) all come from the encoder; with
  ``shared_q=True`` ``Q`` is one learned global matrix per step instead, while ``R``, ``R̃``, ``b``
  stay per data point (the source is chosen per parameter, :mod:`flowvi.params`). At ``D = 40``,
  ``M = D`` that is 1,680 head outputs per step instead of 2,460 (``Q``'s ``D(D−1)/2 = 780`` skew
  entries, and one ``D × D`` solve per step instead of one per data point and step). The
  triangular variant's ``Q`` is a fixed permutation.
- **IAF** (Kingma et al. 2016, Algorithm 1): the MADE weights are shared; the encoder's context
  ``c(x)`` enters the first hidden layer, ``a_1 = W_1 z + c(x)``, as the step's per-point
  parameter (the head is linear in the encoder features ``h(x)``, so this is the paper's ``h``
  fed into the first layer through a learned matrix).
- **Full-rank Gaussian**: ``μ`` and the Cholesky factor ``L`` per data point. Over the fixed
  ``N(0, I)`` base (``NormalizingFlow(..., trainable_base=False)``) it makes ``q_0 = N(μ, LLᵀ)``.

:func:`flowvi.make_steps` builds them by name: ``sylvester-orth``, ``sylvester-householder``,
``sylvester-triangular``, ``iaf`` and ``full-rank``; ``full_rank_base=True`` puts a
:class:`FullRank` step before any family's steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .steps import FlowStep, inverse_softplus
from .transforms import (
    CHOLESKY_MIN,
    MADE,
    IAFTransform,
    LowerTriangularAffineTransform,
    SylvesterTransform,
    cayley_orthogonal,
    cholesky_factor,
    householder_orthogonal,
    sylvester_diagonal,
    upper_triangular,
)


class Sylvester(FlowStep):
    """Base of the Sylvester steps: ``R``, ``R̃``, ``b`` per data point; subclasses give ``Q``.

    Initialisation: every raw entry of ``R``, ``R̃`` ~ U(−1/√M, 1/√M) (``R = R̃ = 0``, ``b = 0`` would
    be a stationary point), ``b = 0``: a step starts as a small perturbation of the identity.
    """

    def __init__(self, dim: int, m: int) -> None:
        super().__init__(dim)
        if not 1 <= m <= dim:
            raise ValueError(f"the number of orthonormal columns M must be in 1..{dim}, got {m}")
        self.m = m

    def _triangular_layout(self) -> dict[str, Tensor]:
        m, n_up = self.m, self.m * (self.m - 1) // 2
        bound = 1.0 / math.sqrt(m)

        def uniform(n: int) -> Tensor:
            return torch.empty(n).uniform_(-bound, bound)

        return {"r_diag": uniform(m), "r_upper": uniform(n_up), "rt_diag": uniform(m), "rt_upper": uniform(n_up),
                "b": torch.zeros(m)}

    def q_layout(self) -> dict[str, Tensor]:
        return {}

    def orthogonal(self, raw: dict[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def layout(self) -> dict[str, Tensor]:
        return {**self._triangular_layout(), **self.q_layout()}

    def build(self, raw: dict[str, Tensor]) -> SylvesterTransform:
        r = upper_triangular(sylvester_diagonal(raw["r_diag"]), raw["r_upper"])
        r_tilde = upper_triangular(sylvester_diagonal(raw["rt_diag"]), raw["rt_upper"])
        return SylvesterTransform(self.orthogonal(raw), r, r_tilde, raw["b"])


class _LearnedQ(Sylvester):
    """A Sylvester step whose ``Q`` comes from the raw parameters ``q``: per data point in an amortized
    flow, or, with ``shared_q``, one global ``q`` per step (its source chosen per parameter: the step
    declares ``q`` in :attr:`~flowvi.steps.FlowStep.shared`, :mod:`flowvi.params`)."""

    def __init__(self, dim: int, m: int, shared_q: bool) -> None:
        super().__init__(dim, m)
        self.shared_q = bool(shared_q)
        if self.shared_q:
            self.shared = frozenset({"q"})

    def q_init(self) -> Tensor:
        raise NotImplementedError

    def q_layout(self) -> dict[str, Tensor]:
        return {"q": self.q_init()}

    def q_raw(self, raw: dict[str, Tensor]) -> Tensor:
        return raw["q"]


class SylvesterOrthogonal(_LearnedQ):
    """Orthogonal Sylvester step (van den Berg et al. 2018, §3.1) with ``M`` orthonormal columns.

    ``Q`` = the first ``M`` columns of the Cayley map ``(I + S)⁻¹(I − S)`` of a skew-symmetric ``S``
    (``D(D−1)/2`` raw values, initialised N(0, 1)): exactly orthonormal for any raw values, where
    the paper's iterative orthogonalisation ``Q ← Q(I + ½(I − QᵀQ))`` needs ``‖QᵀQ − I‖₂ < 1`` and a
    stopping rule. Costs one ``D × D`` solve per step (per data point when amortized).

    Args:
        dim: D. m: the number ``M`` of orthonormal columns (default ``D``).
        shared_q: one global ``Q`` per step in an amortized flow (``R``, ``R̃``, ``b`` stay per point).

    >>> flow = fv.NormalizingFlow(4, [fv.SylvesterOrthogonal(4, m=2) for _ in range(2)], context_features=6)
    >>> z, log_q = flow(torch.randn(3, 6)).rsample_and_log_prob()
    >>> z.shape, log_q.shape
    (torch.Size([3, 4]), torch.Size([3]))
    """

    def __init__(self, dim: int, m: int | None = None, shared_q: bool = False) -> None:
        super().__init__(dim, dim if m is None else m, shared_q)

    def q_init(self) -> Tensor:
        return torch.randn(self.dim * (self.dim - 1) // 2)

    def orthogonal(self, raw: dict[str, Tensor]) -> Tensor:
        return cayley_orthogonal(self.q_raw(raw), self.dim, self.m)


class SylvesterHouseholder(_LearnedQ):
    """Householder Sylvester step (§3.2): ``Q = H_1 ⋯ H_T`` from ``T`` reflection vectors, ``M = D``.

    Args:
        dim: D. reflections: ``T``. shared_q: as for :class:`SylvesterOrthogonal`.

    >>> flow = fv.NormalizingFlow(3, fv.make_steps("sylvester-householder", 3, K=2, reflections=2))
    >>> flow().rsample((5,)).shape
    torch.Size([5, 3])
    """

    def __init__(self, dim: int, reflections: int = 4, shared_q: bool = False) -> None:
        if reflections < 1:
            raise ValueError(f"reflections must be >= 1, got {reflections}")
        self.reflections = reflections
        super().__init__(dim, dim, shared_q)

    def q_init(self) -> Tensor:
        return torch.randn(self.reflections, self.dim)

    def orthogonal(self, raw: dict[str, Tensor]) -> Tensor:
        return householder_orthogonal(self.q_raw(raw))


class SylvesterTriangular(Sylvester):
    """Triangular Sylvester step (§3.3): ``Q`` a fixed permutation, the identity or (``reverse``) the
    reversal of the coordinates; :func:`sylvester_steps` alternates the two. ``M = D``.

    Args:
        dim: D. reverse: ``Q`` the reversal instead of the identity.

    >>> flow = fv.NormalizingFlow(3, [fv.SylvesterTriangular(3), fv.SylvesterTriangular(3, reverse=True)])
    >>> z, log_q = flow().rsample_and_log_prob((5,))
    >>> log_q.shape
    torch.Size([5])
    """

    def __init__(self, dim: int, reverse: bool = False) -> None:
        super().__init__(dim, dim)
        eye = torch.eye(dim)
        self.register_buffer("perm", eye.flip(-1) if reverse else eye)

    def orthogonal(self, raw: dict[str, Tensor]) -> Tensor:
        return self.perm.to(raw["b"].dtype)


class IAF(FlowStep):
    """IAF step (Kingma et al. 2016, Algorithm 1): ``f(z) = σ ⊙ z + (1 − σ) ⊙ m`` with ``[m, s]`` from a
    MADE and ``σ = sigmoid(s)``; ``ln |det| = Σ ln σ``.

    The MADE's weights are the step's own (shared by every data point); its per-data-point
    parameter is ``context``, added to the first hidden layer's pre-activations (``hidden`` values,
    zero at start): in an amortized flow the head maps encoder features to it. ``reverse`` flips
    the autoregressive order (``m_i``, ``s_i`` read ``z_{>i}``); :func:`iaf_steps` alternates it,
    as the paper reverses the ordering after each step. ``σ`` starts at ``sigmoid(gate_bias)``
    and ``m`` at 0 (the paper's advice: a forget-gate bias of +1 or +2).

    Args:
        dim: D. hidden: width of the MADE's hidden layers (default ``max(64, 2D)``). depth: its number of
        hidden layers. gate_bias: the initial ``s``. reverse: the reversed autoregressive order.

    >>> flow = fv.NormalizingFlow(4, [fv.IAF(4, hidden=16), fv.IAF(4, hidden=16, reverse=True)], context_features=8)
    >>> q = flow(torch.randn(2, 8))                  # the encoder's context enters each MADE's first layer
    >>> z, log_q = q.rsample_and_log_prob((3,))
    >>> bool(torch.allclose(q.log_prob(z), log_q, atol=1e-4))   # the inverse: D sequential passes
    True
    """

    def __init__(self, dim: int, hidden: int | None = None, depth: int = 2, gate_bias: float = 2.0,
                 reverse: bool = False) -> None:
        super().__init__(dim)
        self.hidden = max(64, 2 * dim) if hidden is None else hidden
        self.made = MADE(dim, self.hidden, depth, gate_bias)
        self.reverse = reverse

    def layout(self) -> dict[str, Tensor]:
        return {"context": torch.zeros(self.hidden)}

    def build(self, raw: dict[str, Tensor]) -> IAFTransform:
        return IAFTransform(self.dim, _OrderedMADE(self.made, raw["context"], self.reverse), reverse=self.reverse)


class _OrderedMADE:
    """``z ↦ made(z, context)`` in a step's autoregressive order (``reverse``: on the flipped coordinates,
    so that ``m_i``, ``s_i`` read ``z_{>i}``): a named callable, not a closure, so posteriors pickle."""

    def __init__(self, made: MADE, context: Tensor, reverse: bool) -> None:
        self.made, self.context, self.reverse = made, context, reverse

    def __call__(self, z: Tensor) -> tuple[Tensor, Tensor]:
        if not self.reverse:
            return self.made(z, self.context)
        m, s = self.made(z.flip(-1), self.context)
        return m.flip(-1), s.flip(-1)


class FullRank(FlowStep):
    """``f(ε) = μ + L ε``, ``L`` lower triangular with ``L_ii = softplus(ℓ_ii) + CHOLESKY_MIN``.

    Placed first over a fixed ``N(0, I)`` base it makes the base a full-rank Gaussian
    ``N(μ, LLᵀ)``; per data point in an amortized flow. Starts as the identity (``μ = 0``, ``L = I``).

    Args:
        dim: D. amortize: see :class:`~flowvi.FlowStep`.

    >>> flow = fv.NormalizingFlow(3, [fv.FullRank(3)], base=fv.StandardNormal(3))   # q_0 = N(μ, LLᵀ)
    >>> z, log_q = flow().rsample_and_log_prob((4,))
    >>> exact = torch.distributions.MultivariateNormal(torch.zeros(3), torch.eye(3)).log_prob(z)
    >>> bool(torch.allclose(log_q, exact, atol=1e-5))               # at the start, N(0, I)
    True
    """

    def layout(self) -> dict[str, Tensor]:
        return {"loc": torch.zeros(self.dim), "diag": torch.full((self.dim,), inverse_softplus(1.0 - CHOLESKY_MIN)),
                "lower": torch.zeros(self.dim * (self.dim - 1) // 2)}

    def build(self, raw: dict[str, Tensor]) -> LowerTriangularAffineTransform:
        return LowerTriangularAffineTransform(raw["loc"], cholesky_factor(raw["diag"], raw["lower"]))


def sylvester_steps(dim: int, K: int, variant: str = "orth", **kwargs) -> list[FlowStep]:
    """``K`` Sylvester steps: ``variant`` ``"orth"`` (options ``m``, ``shared_q``), ``"householder"``
    (options ``reflections``, ``shared_q``) or ``"triangular"`` (identity and reversal alternating)."""
    if variant == "orth":
        return [SylvesterOrthogonal(dim, **kwargs) for _ in range(K)]
    if variant == "householder":
        return [SylvesterHouseholder(dim, **kwargs) for _ in range(K)]
    if variant == "triangular":
        if kwargs:
            raise TypeError(f"triangular Sylvester steps take no options, got {', '.join(kwargs)}")
        return [SylvesterTriangular(dim, reverse=k % 2 == 1) for k in range(K)]
    raise ValueError(f"variant must be 'orth', 'householder' or 'triangular', got {variant!r}")


def iaf_steps(dim: int, K: int, **kwargs) -> list[FlowStep]:
    """``K`` IAF steps, the autoregressive order reversed every other step (options ``hidden``,
    ``depth``, ``gate_bias``)."""
    return [IAF(dim, reverse=k % 2 == 1, **kwargs) for k in range(K)]


#: family name -> ``builder(dim, K, **options)``, looked up by :func:`flowvi.make_steps`
FAMILY_STEPS: dict[str, Callable[..., list[FlowStep]]] = {
    "sylvester-orth": lambda dim, K, **kw: sylvester_steps(dim, K, "orth", **kw),
    "sylvester-householder": lambda dim, K, **kw: sylvester_steps(dim, K, "householder", **kw),
    "sylvester-triangular": lambda dim, K, **kw: sylvester_steps(dim, K, "triangular", **kw),
    "iaf": iaf_steps,
}
