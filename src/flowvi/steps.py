"""Flow-step families: what raw parameters a step needs and how they become a Transform.

A :class:`FlowStep` is an ``nn.Module`` holding only what is shared by every data point
(network weights of a NICE coupling, a fixed permutation or rotation). Its per-point raw
parameters are declared by :meth:`FlowStep.layout` and supplied at call time by a parameter
source (:mod:`flowvi.params`), global or amortized; :meth:`FlowStep.build` constrains them and
returns the ``torch.distributions.Transform`` (:mod:`flowvi.transforms`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .transforms import (
    PLANAR_MARGIN,
    AdditiveCouplingTransform,
    FlowTransform,
    OrthogonalTransform,
    PermutationTransform,
    PlanarTransform,
    RadialTransform,
    planar_reparameterize,
    radial_constrain,
    random_orthogonal,
    random_permutation,
)
from .validation import check_values, not_finite


def inverse_softplus(x: float) -> float:
    return x + math.log(-math.expm1(-x))


class FlowStep(nn.Module):
    """One step ``f_k`` of a flow."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim = dim

    def layout(self) -> dict[str, Tensor]:
        """Raw per-data-point parameters ``{name: initial value}`` (shapes without batch dims)."""
        return {}

    def build(self, raw: dict[str, Tensor]) -> FlowTransform:
        raise NotImplementedError


class Planar(FlowStep):
    """Planar step (eq. 10) with ``û`` from the invertibility constraint (appendix A.1).

    Initialisation: the appendix map gives ``wᵀû = m(wᵀu)``, which is ``m(0) ≈ −0.31`` for a
    plain small random ``u`` (every step would start as a 0.7× contraction along ``w``). We start
    instead at ``wᵀu = m⁻¹(0)``, so that ``wᵀû = 0`` and ``û`` is a small vector orthogonal to ``w``
    (``init_scale`` its size; ``w ~ N(0, I/D)``): each step starts near the identity whatever K.
    """

    def __init__(self, dim: int, init_scale: float = 0.1) -> None:
        super().__init__(dim)
        self.init_scale = init_scale

    def layout(self) -> dict[str, Tensor]:
        w = torch.randn(self.dim) / math.sqrt(self.dim)  # ‖w‖ ≈ 1: wᵀz + b in tanh's active range
        u_perp = self.init_scale * torch.randn(self.dim)
        w_sq = (w * w).sum()
        u_perp = u_perp - (u_perp @ w) / w_sq * w
        wu_zero = inverse_softplus(1.0 - PLANAR_MARGIN)  # m(wu_zero) = 0
        return {"w": w, "u": u_perp + wu_zero / w_sq * w, "b": torch.zeros(())}

    def build(self, raw: dict[str, Tensor]) -> PlanarTransform:
        w, u, b = raw["w"], raw["u"], raw["b"]
        u_hat, uw = planar_reparameterize(u, w)
        return PlanarTransform(w, u_hat, b, uw=uw)


class Radial(FlowStep):
    """Radial step (eq. 14) with ``α > 0``, ``β ≥ −α`` (appendix A.2). Starts near the identity."""

    def layout(self) -> dict[str, Tensor]:
        alpha0 = F.softplus(torch.zeros(()))
        beta_raw = inverse_softplus(float(alpha0) * (1 - 1e-4))  # β ≈ 0 at start
        return {"z0": torch.randn(self.dim), "alpha": torch.zeros(()), "beta": torch.full((), beta_raw)}

    def build(self, raw: dict[str, Tensor]) -> RadialTransform:
        alpha, beta = radial_constrain(raw["alpha"], raw["beta"])
        return RadialTransform(raw["z0"], alpha, beta)


class Permutation(FlowStep):
    """A fixed random permutation of the coordinates (NICE-perm mixing)."""

    def __init__(self, dim: int, generator: torch.Generator | None = None) -> None:
        super().__init__(dim)
        self.register_buffer("perm", random_permutation(dim, generator))

    def build(self, raw: dict[str, Tensor]) -> PermutationTransform:
        return PermutationTransform(self.perm)


class Orthogonal(FlowStep):
    """A fixed random orthogonal mixing ``Q`` (NICE-orth): sign-corrected QR of a Gaussian matrix.

    ``Q`` is kept in float64 (saved with the module's state) and cast to the input's dtype and
    device when applied, so a flow converted to float64 stays orthogonal to float64 precision.
    """

    def __init__(self, dim: int, generator: torch.Generator | None = None) -> None:
        super().__init__(dim)
        self.q = random_orthogonal(dim, generator, dtype=torch.float64)

    def get_extra_state(self) -> dict[str, Tensor]:
        return {"q": self.q}

    def set_extra_state(self, state: dict[str, Tensor]) -> None:
        self.q = state["q"].to(torch.float64)

    def build(self, raw: dict[str, Tensor]) -> OrthogonalTransform:
        return OrthogonalTransform(self.q)


class AdditiveCoupling(FlowStep):
    """NICE additive coupling (eq. 16) with an MLP coupling function ``h_λ``.

    ``h_λ(z_A) = W_L act(… act(W_1 z_A + c) …)``: the first layer's bias ``c`` (``hidden`` values)
    is the step's per-data-point parameter, so an amortized flow conditions every coupling on
    ``x`` (equivalent to feeding the encoder features into the first layer), while the weights
    are shared. The last layer starts at zero, so the step starts as the identity.

    Args:
        dim: D. parity: which half is the conditioning part ``A`` (even or odd positions).
        hidden: width of the coupling MLP; depth: its number of hidden layers.
    """

    def __init__(self, dim: int, parity: int = 0, hidden: int = 64, depth: int = 2) -> None:
        super().__init__(dim)
        if dim < 2:
            raise ValueError("a coupling layer needs dim >= 2")
        mask = (torch.arange(dim) % 2) == (parity % 2)
        self.register_buffer("mask", mask)
        n_a, n_b = int(mask.sum()), dim - int(mask.sum())
        self.hidden = hidden
        self.first = nn.Linear(n_a, hidden, bias=False)
        layers: list[nn.Module] = []
        for _ in range(depth - 1):
            layers += [nn.ReLU(), nn.Linear(hidden, hidden)]
        layers += [nn.ReLU(), nn.Linear(hidden, n_b)]
        self.rest = nn.Sequential(*layers)
        nn.init.zeros_(self.rest[-1].weight)
        nn.init.zeros_(self.rest[-1].bias)

    def layout(self) -> dict[str, Tensor]:
        return {"bias": torch.zeros(self.hidden)}

    def build(self, raw: dict[str, Tensor]) -> AdditiveCouplingTransform:
        bias = raw["bias"]
        check_coupling(self, bias)
        return AdditiveCouplingTransform(self.mask, _CouplingShift(self, bias))


class _CouplingShift:
    """``h_λ(z_A) = rest(first(z_A) + bias)``: a named callable (not a closure), so posteriors pickle."""

    def __init__(self, step: AdditiveCoupling, bias: Tensor) -> None:
        self.step, self.bias = step, bias

    def __call__(self, z_a: Tensor) -> Tensor:
        return self.step.rest(self.step.first(z_a) + self.bias)


def check_coupling(step: AdditiveCoupling, bias: Tensor) -> None:
    """NaN or inf in a coupling network's weights (or its first-layer bias) raise instead of
    flowing on as NaN shifts: one host synchronisation per step, none with validation off."""
    params = [("bias", bias)] + [(n, p) for n, p in step.named_parameters() if n != "bias"]
    check_values([(f"coupling {name} has {{n}} non-finite entries (NaN or inf)", not_finite(p.detach()))
                  for name, p in params])


class SharedAdditiveCoupling(AdditiveCoupling):
    """NICE additive coupling (eq. 16) whose ``h_λ`` is shared by every data point.

    The first layer's bias is the step's own weight, so the step has no per-data-point
    parameters: in an amortized flow only ``q_0`` depends on ``x`` and the coupling network is a
    global parameter (as in Dinh et al.'s NICE, where ``λ`` are network weights). With global
    parameters the two couplings are the same family.
    """

    def __init__(self, dim: int, parity: int = 0, hidden: int = 64, depth: int = 2) -> None:
        super().__init__(dim, parity, hidden, depth)
        self.bias = nn.Parameter(torch.zeros(hidden))

    def layout(self) -> dict[str, Tensor]:
        return {}

    def build(self, raw: dict[str, Tensor]) -> AdditiveCouplingTransform:
        return super().build({"bias": self.bias})


#: how a NICE coupling depends on ``x`` in an amortized flow
COUPLINGS: dict[str, type[AdditiveCoupling]] = {"amortized": AdditiveCoupling, "global": SharedAdditiveCoupling}


def planar_steps(dim: int, K: int, init_scale: float = 0.1) -> list[FlowStep]:
    return [Planar(dim, init_scale=init_scale) for _ in range(K)]


def radial_steps(dim: int, K: int) -> list[FlowStep]:
    return [Radial(dim) for _ in range(K)]


def nice_steps(dim: int, K: int, mixing: str = "perm", hidden: int = 64, depth: int = 2,
               generator: torch.Generator | None = None, conditioning: str = "amortized") -> list[FlowStep]:
    """``K`` coupling layers with alternating partitions, each preceded by a fixed random mixing
    (``"perm"``: NICE-perm, ``"orth"``: NICE-orth, ``"none"``: alternate the partition only).

    ``conditioning`` matters in an amortized flow: ``"amortized"`` couplings take a per-data-point
    first-layer bias from the inference network (:class:`AdditiveCoupling`), ``"global"`` ones are
    shared by all data points (:class:`SharedAdditiveCoupling`)."""
    mixers = {"perm": Permutation, "orth": Orthogonal}
    if mixing not in (*mixers, "none"):
        raise ValueError(f"mixing must be 'perm', 'orth' or 'none', got {mixing!r}")
    if conditioning not in COUPLINGS:
        raise ValueError(f"conditioning must be one of {', '.join(COUPLINGS)}, got {conditioning!r}")
    coupling = COUPLINGS[conditioning]
    steps: list[FlowStep] = []
    for k in range(K):
        if mixing != "none":
            steps.append(mixers[mixing](dim, generator))
        steps.append(coupling(dim, parity=k, hidden=hidden, depth=depth))
    return steps


_NICE_OPTIONS = ("hidden", "depth", "generator", "conditioning")
#: the keywords :func:`make_steps` passes on, per family name (anything else is an error, not ignored)
STEP_OPTIONS: dict[str, tuple[str, ...]] = {
    "planar": ("init_scale",), "radial": (), "nice": _NICE_OPTIONS, "nice-perm": _NICE_OPTIONS,
    "nice-orth": _NICE_OPTIONS, "diagonal": (), "gaussian": (), "none": (), "full-rank": (),
    "sylvester-orth": ("m", "shared_q"), "sylvester-householder": ("reflections", "shared_q"),
    "sylvester-triangular": (), "iaf": ("hidden", "depth", "gate_bias"),
}


def make_steps(family: str, dim: int, K: int, *, full_rank_base: bool = False, **kwargs) -> list[FlowStep]:
    """Steps by family name: ``planar``, ``radial``, ``nice-perm``, ``nice-orth``, ``sylvester-orth``,
    ``sylvester-householder``, ``sylvester-triangular``, ``iaf`` (:mod:`flowvi.families`);
    ``diagonal`` = none. ``full_rank_base=True`` (or the family ``full-rank``, with K = 0) puts a
    :class:`~flowvi.families.FullRank` step first: over a fixed N(0, I) base, a full-rank Gaussian q_0.

    Keywords go to the family's factory (:data:`STEP_OPTIONS`); one it does not take raises ``TypeError``."""
    from .families import FAMILY_STEPS, FullRank

    family = family.lower()
    if isinstance(K, bool) or not isinstance(K, int) or K < 0:
        raise ValueError(f"K must be an integer >= 0, got {K!r}")
    unused = sorted(set(kwargs) - set(STEP_OPTIONS.get(family, kwargs)))
    if unused:
        takes = ", ".join(STEP_OPTIONS[family]) or "no keywords"
        raise TypeError(f"make_steps({family!r}) does not take {', '.join(map(repr, unused))}: it takes {takes}")
    if family == "full-rank":
        if K != 0:
            raise ValueError(f"the full-rank family is a Gaussian (K = 0), got K={K}: use full_rank_base=True")
        full_rank_base, family = True, "diagonal"
    first: list[FlowStep] = [FullRank(dim)] if full_rank_base else []
    if family in FAMILY_STEPS:
        return first + FAMILY_STEPS[family](dim, K, **kwargs)
    return first + _classic_steps(family, dim, K, **kwargs)


def _classic_steps(family: str, dim: int, K: int, **kwargs) -> list[FlowStep]:
    if family in ("diagonal", "gaussian", "none") or K == 0:
        return []
    if family == "planar":
        return planar_steps(dim, K, **kwargs)
    if family == "radial":
        return radial_steps(dim, K)
    if family in ("nice-perm", "nice-orth", "nice"):
        mixing = {"nice": "perm", "nice-perm": "perm", "nice-orth": "orth"}[family]
        return nice_steps(dim, K, mixing=mixing, **kwargs)
    raise ValueError(f"unknown flow family {family!r}: expected planar, radial, nice-perm, nice-orth, "
                     "sylvester-orth, sylvester-householder, sylvester-triangular, iaf, full-rank or diagonal")
