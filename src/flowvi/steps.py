"""Flow-step families: what raw parameters a step needs and how they become a Transform.

A :class:`FlowStep` is an ``nn.Module`` holding what is shared by every data point (network
weights of a NICE coupling, a fixed permutation or rotation). Its raw parameters are declared by
:meth:`FlowStep.layout`; the flow gives them a source when it is built (:mod:`flowvi.params`):
global parameters the step owns, or a slice of the flow's shared amortizing head, as the step's
``amortize`` asks (``None``: amortized exactly when the flow has a context), or per parameter
(``shared``: layout entries kept global inside an amortized step).
:meth:`FlowStep.build` constrains them and returns the ``torch.distributions.Transform``
(:mod:`flowvi.transforms`).

A run of K planar steps is one step, :class:`PlanarChain` (stacked parameters, one fused
transform), which :func:`planar_steps` chooses by default; ``fused=False`` gives K
:class:`Planar` steps, the per-step reference. Both give the same distribution.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .bases import inverse_softplus
from .transforms import (
    PLANAR_MARGIN,
    AdditiveCouplingTransform,
    FlowTransform,
    OrthogonalTransform,
    PermutationTransform,
    PlanarChainTransform,
    PlanarTransform,
    RadialTransform,
    check_orthogonal,
    check_permutation,
    coupling_partition,
    planar_reparameterize,
    promote,
    radial_constrain,
    random_orthogonal,
    random_permutation,
)
from .validation import check_values, not_finite


class FlowStep(nn.Module):
    """One step ``f_k`` of a flow (or, for :class:`PlanarChain`, a run of ``length`` steps).

    Args:
        dim: D.
        amortize: where the raw parameters come from in an amortized flow: ``None`` (default) the
            flow's amortizing head when the flow has a context; ``False`` global parameters owned by
            the step, shared by every data point; ``True`` the head (the flow must have a context).
        shared: the names of layout entries that stay global (owned by the step, shared by every data
            point) even where the rest of the step is amortized: the source is chosen per parameter
            (a Sylvester step's ``Q`` with ``shared_q=True``). Names not in :meth:`layout` are refused
            when the flow is built.

    A new step declares its raw parameters and builds its transform from them; the flow gives them a
    source (global or amortized) without the step knowing which:

    >>> class Shift(fv.FlowStep):                    # f(z) = z + c
    ...     def layout(self):
    ...         return {"c": torch.zeros(self.dim)}
    ...     def build(self, raw):
    ...         return fv.transforms.LowerTriangularAffineTransform(raw["c"], torch.eye(self.dim))
    >>> fv.NormalizingFlow(2, [Shift(2)])().rsample((5,)).shape                      # c learned, global
    torch.Size([5, 2])
    >>> fv.NormalizingFlow(2, [Shift(2)], context_features=3)(torch.randn(4, 3)).batch_shape  # c(x)
    torch.Size([4])
    """

    length = 1  #: elementary flow steps this step stands for

    def __init__(self, dim: int, amortize: bool | None = None, shared: Iterable[str] = ()) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim = dim
        self.amortize = amortize
        self.shared = frozenset(shared)

    def layout(self) -> dict[str, Tensor]:
        """Raw parameters ``{name: initial value}`` for one data point (shapes without batch dims)."""
        return {}

    def build(self, raw: dict[str, Tensor]) -> FlowTransform:
        """The step's transform from its raw parameters (shapes of :meth:`layout`, with leading batch
        dimensions when they come from the amortizing head)."""
        raise NotImplementedError


class Planar(FlowStep):
    """Planar step (eq. 10) with ``û`` from the invertibility constraint (appendix A.1).

    Initialisation: the appendix map gives ``wᵀû = m(wᵀu)``, which is ``m(0) ≈ −0.31`` for a
    plain small random ``u`` (every step would start as a 0.7× contraction along ``w``). We start
    instead at ``wᵀu = m⁻¹(0)``, so that ``wᵀû = 0`` and ``û`` is a small vector orthogonal to ``w``
    (``init_scale`` its size; ``w ~ N(0, I/D)``): each step starts near the identity whatever K.

    Args:
        dim: D. init_scale: the size of the initial ``û``. amortize: see :class:`FlowStep`.

    >>> flow = fv.NormalizingFlow(2, [fv.Planar(2) for _ in range(4)])   # the per-step reference
    >>> z, log_q = flow().rsample_and_log_prob((3,))
    >>> bool(torch.allclose(flow().log_prob(z), log_q, atol=1e-5))        # through the numerical inverse
    True
    """

    def __init__(self, dim: int, init_scale: float = 0.1, amortize: bool | None = None) -> None:
        super().__init__(dim, amortize)
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


class PlanarChain(FlowStep):
    """K planar steps (eq. 10) as one step: parameters stacked as ``(K, 2D + 1)`` rows ``[w_k, u_k, b_k]``,
    applied by one fused :class:`~flowvi.transforms.PlanarChainTransform`.

    The same family, initialisation (K :class:`Planar` layouts, drawn in order) and distribution as K
    :class:`Planar` steps, whose parameters are the rows in the same order; faster for long chains.

    Args:
        dim: D. K: the number of planar steps. init_scale, amortize: as for :class:`Planar`.

    >>> flow = fv.NormalizingFlow(40, [fv.PlanarChain(40, K=10)], context_features=400)
    >>> flow.K, flow.head.out_features           # μ, σ and 10 rows [w, u, b] per data point
    (10, 890)
    >>> flow(torch.randn(8, 400)).rsample().shape
    torch.Size([8, 40])
    """

    def __init__(self, dim: int, K: int, init_scale: float = 0.1, amortize: bool | None = None) -> None:
        super().__init__(dim, amortize)
        if K < 1:
            raise ValueError(f"a planar chain needs K >= 1 steps, got {K}")
        self.K = self.length = K
        self.init_scale = init_scale

    def layout(self) -> dict[str, Tensor]:
        rows = []
        for _ in range(self.K):
            one = Planar(self.dim, self.init_scale).layout()
            rows.append(torch.cat([one["w"], one["u"], one["b"].reshape(1)]))
        return {"wub": torch.stack(rows)}

    def build(self, raw: dict[str, Tensor]) -> PlanarChainTransform:
        wub, D = raw["wub"], self.dim
        # one split, not three slices: its backward is one concatenation where each slice's would pad its
        # gradient with zeros to the size of wub, and the three be summed (the same values, 3 passes more)
        w, u, b = wub.split([D, D, 1], -1)
        u_hat, uw = planar_reparameterize(u, w)
        b = b.squeeze(-1)
        return PlanarChainTransform(w, u_hat, b, uw=uw)


class Radial(FlowStep):
    """Radial step (eq. 14) with ``α > 0``, ``β ≥ −α`` (appendix A.2). Starts near the identity.

    Args:
        dim: D. amortize, shared: see :class:`FlowStep`.

    >>> flow = fv.NormalizingFlow(2, fv.radial_steps(2, K=3))
    >>> z, log_q = flow().rsample_and_log_prob((4,))
    >>> bool(torch.allclose(flow().log_prob(z), log_q, atol=1e-5))        # through the exact inverse
    True
    """

    def layout(self) -> dict[str, Tensor]:
        alpha0 = F.softplus(torch.zeros(()))
        beta_raw = inverse_softplus(float(alpha0) * (1 - 1e-4))  # β ≈ 0 at start
        return {"z0": torch.randn(self.dim), "alpha": torch.zeros(()), "beta": torch.full((), beta_raw)}

    def build(self, raw: dict[str, Tensor]) -> RadialTransform:
        alpha, beta = radial_constrain(raw["alpha"], raw["beta"])
        return RadialTransform(raw["z0"], alpha, beta)


class Permutation(FlowStep):
    """A fixed random permutation of the coordinates (NICE-perm mixing).

    The permutation is checked and inverted once, here and when a state dict is loaded; the transform
    built per call trusts it (no host synchronisation, nothing for ``torch.compile`` to break on).

    Args:
        dim: D. generator: the random generator of the permutation (default torch's global one).

    >>> step = fv.Permutation(4, generator=torch.Generator().manual_seed(1))
    >>> z = torch.arange(4.0)
    >>> bool(torch.equal(step.build({})(z), z[step.perm])), sorted(step.perm.tolist())
    (True, [0, 1, 2, 3])
    """

    def __init__(self, dim: int, generator: torch.Generator | None = None) -> None:
        super().__init__(dim)
        self.register_buffer("perm", random_permutation(dim, generator))
        self.register_buffer("inv_perm", check_permutation(self.perm), persistent=False)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args)
        if self.perm.numel() != self.dim:
            raise ValueError(f"a loaded permutation has {self.perm.numel()} entries, the step has dim {self.dim}")
        self.inv_perm = check_permutation(self.perm)

    def build(self, raw: dict[str, Tensor]) -> PermutationTransform:
        return PermutationTransform(self.perm, validate_args=False, inv_perm=self.inv_perm)


class Orthogonal(FlowStep):
    """A fixed random orthogonal mixing ``Q`` (NICE-orth): sign-corrected QR of a Gaussian matrix.

    ``Q`` is kept in float64 (saved with the module's state) and cast to the input's dtype and
    device when applied, so a flow converted to float64 stays orthogonal to float64 precision.

    Args:
        dim: D. generator: the random generator of ``Q`` (default torch's global one).

    >>> q = fv.Orthogonal(3).q
    >>> bool(torch.allclose(q @ q.T, torch.eye(3, dtype=torch.float64), atol=1e-12))
    True
    """

    def __init__(self, dim: int, generator: torch.Generator | None = None) -> None:
        super().__init__(dim)
        self.q = random_orthogonal(dim, generator, dtype=torch.float64)

    def get_extra_state(self) -> dict[str, Tensor]:
        return {"q": self.q}

    def set_extra_state(self, state: dict[str, Tensor]) -> None:
        q = state["q"].to(torch.float64)
        if q.shape != (self.dim, self.dim):
            raise ValueError(f"a loaded Q has shape {tuple(q.shape)}, the step needs ({self.dim}, {self.dim})")
        self.q = check_orthogonal(q)  # once, when loaded: the transforms built per call trust it

    def build(self, raw: dict[str, Tensor]) -> OrthogonalTransform:
        return OrthogonalTransform(self.q, validate_args=False)


class AdditiveCoupling(FlowStep):
    """NICE additive coupling (eq. 16) with an MLP coupling function ``h_λ``.

    ``h_λ(z_A) = W_L act(… act(W_1 z_A + c) …)``: the first layer's bias ``c`` (``hidden`` values)
    is the step's raw parameter. Amortized (the default in an amortized flow) it conditions the
    coupling on ``x`` (equivalent to feeding the encoder features into the first layer); with
    ``amortize=False`` it is a global parameter and the coupling network is shared by every data
    point (only ``q_0`` depends on ``x``, as in Dinh et al.'s NICE, where ``λ`` are network weights).
    The other weights are always shared. The last layer starts at zero: the step starts as the identity.

    Args:
        dim: D. parity: which half is the conditioning part ``A`` (even or odd positions).
        hidden: width of the coupling MLP; depth: its number of hidden layers.
        amortize: see :class:`FlowStep`.

    >>> steps = [fv.Permutation(4), fv.AdditiveCoupling(4, parity=0, hidden=16, amortize=False)]
    >>> flow = fv.NormalizingFlow(4, steps, context_features=8)     # global coupling, per-point q_0
    >>> z, log_q = flow(torch.randn(2, 8)).rsample_and_log_prob((3,))
    >>> z.shape, flow.head.out_features                             # the head holds μ(x), σ(x) only
    (torch.Size([3, 2, 4]), 8)
    """

    def __init__(self, dim: int, parity: int = 0, hidden: int = 64, depth: int = 2,
                 amortize: bool | None = None) -> None:
        super().__init__(dim, amortize)
        if dim < 2:
            raise ValueError("a coupling layer needs dim >= 2")
        mask = (torch.arange(dim) % 2) == (parity % 2)
        self.register_buffer("mask", mask)
        idx_a, idx_b = coupling_partition(mask)  # once: each call's transform reuses the positions
        self.register_buffer("idx_a", idx_a, persistent=False)
        self.register_buffer("idx_b", idx_b, persistent=False)
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

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args) -> None:
        n_a = self.idx_a.numel()
        super()._load_from_state_dict(state_dict, prefix, *args)
        idx_a, idx_b = coupling_partition(self.mask)
        if idx_a.numel() != n_a or self.mask.numel() != self.dim:
            raise ValueError(f"a loaded coupling mask has {idx_a.numel()} of {self.mask.numel()} positions in A, "
                             f"the step's networks need {n_a} of {self.dim}")
        self.idx_a, self.idx_b = idx_a, idx_b

    def build(self, raw: dict[str, Tensor]) -> AdditiveCouplingTransform:
        bias = raw["bias"]
        check_coupling(self, bias)
        return AdditiveCouplingTransform(self.mask, _CouplingShift(self, bias), validate_args=False,
                                         partition=(self.idx_a, self.idx_b))


class _CouplingShift:
    """``h_λ(z_A) = rest(first(z_A) + bias)``: a named callable (not a closure), so posteriors pickle."""

    def __init__(self, step: AdditiveCoupling, bias: Tensor) -> None:
        self.step, self.bias = step, bias

    def __call__(self, z_a: Tensor) -> Tensor:
        # nn.Linear's own F.linear, with the input and weights promoted to one dtype (a float64 z_A of a
        # float32 flow is computed in float64; the same operations, bit for bit, when the dtypes agree)
        z_a, weight = promote(z_a, self.step.first.weight)
        a = F.linear(z_a, weight) + self.bias
        for layer in self.step.rest:
            if isinstance(layer, nn.Linear):
                a, weight, bias = promote(a, layer.weight, layer.bias)
                a = F.linear(a, weight, bias)
            else:
                a = layer(a)
        return a


def check_coupling(step: AdditiveCoupling, bias: Tensor) -> None:
    """NaN or inf in a coupling network's weights (or its first-layer bias) raise instead of
    flowing on as NaN shifts: one host synchronisation per step, none with validation off."""
    params = [("bias", bias)] + [(n, p) for n, p in step.named_parameters() if n != "bias"]
    check_values(lambda: [(f"coupling {name} has {{n}} non-finite entries (NaN or inf)", not_finite(p.detach()))
                  for name, p in params])


#: how NICE couplings depend on ``x`` in an amortized flow: the couplings' ``amortize`` flag
CONDITIONINGS: dict[str, bool | None] = {"amortized": None, "global": False}


def planar_steps(dim: int, K: int, fused: bool = True, init_scale: float = 0.1) -> list[FlowStep]:
    """K planar steps: one :class:`PlanarChain` (``fused``, the default) or K :class:`Planar` steps."""
    if fused:
        return [PlanarChain(dim, K, init_scale=init_scale)] if K > 0 else []
    return [Planar(dim, init_scale=init_scale) for _ in range(K)]


def radial_steps(dim: int, K: int) -> list[FlowStep]:
    return [Radial(dim) for _ in range(K)]


def nice_steps(dim: int, K: int, mixing: str = "perm", hidden: int = 64, depth: int = 2,
               generator: torch.Generator | None = None, conditioning: str = "amortized") -> list[FlowStep]:
    """``K`` coupling layers with alternating partitions, each preceded by a fixed random mixing
    (``"perm"``: NICE-perm, ``"orth"``: NICE-orth, ``"none"``: alternate the partition only).

    ``conditioning`` matters in an amortized flow: ``"amortized"`` couplings take a per-data-point
    first-layer bias from the inference network, ``"global"`` ones are shared by all data points
    (``AdditiveCoupling(..., amortize=False)``)."""
    mixers = {"perm": Permutation, "orth": Orthogonal}
    if mixing not in (*mixers, "none"):
        raise ValueError(f"mixing must be 'perm', 'orth' or 'none', got {mixing!r}")
    if conditioning not in CONDITIONINGS:
        raise ValueError(f"conditioning must be one of {', '.join(CONDITIONINGS)}, got {conditioning!r}")
    steps: list[FlowStep] = []
    for k in range(K):
        if mixing != "none":
            steps.append(mixers[mixing](dim, generator))
        steps.append(AdditiveCoupling(dim, parity=k, hidden=hidden, depth=depth, amortize=CONDITIONINGS[conditioning]))
    return steps


@dataclass(frozen=True)
class StepOption:
    """One keyword of :func:`make_steps` for a family, and the values it takes.

    Args:
        kind: ``int``, ``float``, ``bool``, ``str`` or a class (then any instance of it). A float option
            takes an integer and makes it a float; a boolean is never taken as a number.
        lo: the smallest value (numbers).
        at_most_dim: the value may not exceed the dimension D (Sylvester's ``M``).
        choices: the strings a ``str`` option takes.
        optional: ``None`` (the keyword's default) may be given.
    """

    kind: type
    lo: float | None = None
    at_most_dim: bool = False
    choices: tuple[str, ...] = ()
    optional: bool = False

    def check(self, name: str, value: Any, dim: int | None = None) -> tuple[Any, str | None]:
        """``(value in its kind, None)``, or ``(value, what is wrong with it)``; ``dim`` ``None``: D unknown."""
        if value is None and self.optional:
            return value, None
        if self.kind is bool:
            return value, None if isinstance(value, bool) else f"{name} must be true or false, got {value!r}"
        if self.kind is str:
            ok = isinstance(value, str) and (not self.choices or value in self.choices)
            return value, None if ok else f"{name} must be one of {', '.join(self.choices)}, got {value!r}"
        if self.kind not in (int, float):
            ok = isinstance(value, self.kind)
            return value, None if ok else f"{name} must be a {self.kind.__name__}, got {value!r}"
        integral = isinstance(value, numbers.Integral)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or (self.kind is int and not integral):
            return value, f"{name} must be {'an integer' if self.kind is int else 'a number'}, got {value!r}"
        value = self.kind(value)
        if not math.isfinite(value):
            return value, f"{name} must be finite, got {value!r}"
        if self.lo is not None and value < self.lo:
            return value, f"{name} must be >= {self.lo:g}, got {value!r}"
        if self.at_most_dim and dim is not None and value > dim:
            return value, f"{name} must be at most the latent dimension {dim}, got {value!r}"
        return value, None


_POSITIVE_INT = StepOption(int, lo=1)
_NICE_OPTIONS = {"hidden": _POSITIVE_INT, "depth": _POSITIVE_INT,
                 "generator": StepOption(torch.Generator, optional=True),
                 "conditioning": StepOption(str, choices=tuple(CONDITIONINGS))}
_SHARED_Q = StepOption(bool)
#: the keywords :func:`make_steps` passes on, per family name, with the values each takes (anything else is
#: an error, not ignored; :func:`check_step_options`)
STEP_OPTIONS: dict[str, dict[str, StepOption]] = {
    "planar": {"init_scale": StepOption(float, lo=0), "fused": StepOption(bool)}, "radial": {},
    "nice": _NICE_OPTIONS, "nice-perm": _NICE_OPTIONS, "nice-orth": _NICE_OPTIONS,
    "diagonal": {}, "gaussian": {}, "none": {}, "full-rank": {},
    "sylvester-orth": {"m": StepOption(int, lo=1, at_most_dim=True, optional=True), "shared_q": _SHARED_Q},
    "sylvester-householder": {"reflections": _POSITIVE_INT, "shared_q": _SHARED_Q},
    "sylvester-triangular": {},
    "iaf": {"hidden": StepOption(int, lo=1, optional=True), "depth": _POSITIVE_INT, "gate_bias": StepOption(float)},
}


def check_step_options(family: str, options: Mapping[str, Any], dim: int | None = None, *,
                       where: str | None = None) -> dict[str, Any]:
    """``options``, keywords of :func:`make_steps` for ``family`` on ``dim`` coordinates, checked before
    anything is built: a name the family does not take raises ``TypeError`` naming the ones it takes; bad
    values raise ``ValueError`` naming every problem in one sentence. Returns the options in their kinds
    (``gate_bias=1`` becomes ``1.0``). ``where`` names the options in the messages (default
    ``make_steps('<family>')``). An unknown family passes them through (:func:`make_steps` names it)."""
    specs = STEP_OPTIONS.get(str(family).lower())
    if specs is None:
        return dict(options)
    where = where or f"make_steps({family!r})"
    unused = sorted(set(options) - set(specs), key=str)
    if unused:
        raise TypeError(f"{where} does not take {', '.join(map(repr, unused))}: it takes "
                        f"{', '.join(specs) or 'no keywords'}")
    checked, problems = {}, []
    for name, value in options.items():
        checked[name], problem = specs[name].check(name, value, dim)
        if problem:
            problems.append(problem)
    if problems:
        raise ValueError(f"{where}: {'; '.join(problems)}")
    return checked


def make_steps(family: str, dim: int, K: int, *, full_rank_base: bool = False, **kwargs) -> list[FlowStep]:
    """Steps by family name: ``planar``, ``radial``, ``nice-perm``, ``nice-orth``, ``sylvester-orth``,
    ``sylvester-householder``, ``sylvester-triangular``, ``iaf`` (:mod:`flowvi.families`);
    ``diagonal`` = none. ``full_rank_base=True`` (or the family ``full-rank``, with K = 0) puts a
    :class:`~flowvi.families.FullRank` step first: over a fixed N(0, I) base, a full-rank Gaussian q_0.

    Keywords go to the family's factory (:data:`STEP_OPTIONS`); one it does not take raises ``TypeError``,
    a value it does not take ``ValueError`` (:func:`check_step_options`)."""
    from .families import FAMILY_STEPS, FullRank

    family = family.lower()
    if isinstance(K, bool) or not isinstance(K, int) or K < 0:
        raise ValueError(f"K must be an integer >= 0, got {K!r}")
    kwargs = check_step_options(family, kwargs, dim)
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
