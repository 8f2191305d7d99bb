"""The common contract of every flow step.

A flow step is a :class:`torch.distributions.Transform` on vectors (``event_dim = 1``) built
from parameter *tensors*; parameters may carry batch dimensions (one set per data point) and
broadcast against the input. On top of torch's ``y = t(x)``, ``t.inv(y)`` and
``t.log_abs_det_jacobian(x, y)``, every step has the one-pass :meth:`FlowTransform.call_and_ladj`
returning ``(y, ln |det ∂y/∂x|)``, which is what the flow posterior uses (eq. 7).

``validate_args`` follows ``torch.distributions``: ``None`` (default) checks the parameters' values
(finite, in the constrained set) when :func:`flowvi.set_validation` is on, ``True``/``False`` always
or never. Shapes are always checked.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.distributions import Transform, constraints

from ..validation import resolve_validation


class InverseNotAvailable(NotImplementedError):
    """Raised by a flow step that has no inverse (e.g. Sylvester flows); ``log_prob`` then fails, sampling works.

    >>> q = fv.NormalizingFlow(3, [fv.SylvesterOrthogonal(3)])()
    >>> z, log_q = q.rsample_and_log_prob((2,))     # ln q of the flow's own samples: one forward pass
    >>> q.log_prob(z)
    Traceback (most recent call last):
    ...
    flowvi.transforms.base.InverseNotAvailable: Sylvester flows have no closed-form inverse ...
    """


class FlowTransform(Transform):
    """Base class: a bijection of R^D with a cheap log-determinant. A subclass gives
    :meth:`call_and_ladj` and ``_inverse``.

    Args:
        cache_size: as for ``torch.distributions.Transform`` (0 or 1).
        validate_args: check the parameters' values (``None``: :func:`flowvi.set_validation`).

    >>> class Scale(fv.FlowTransform):              # f(x) = 2x, ln|det| = D ln 2
    ...     def call_and_ladj(self, x):
    ...         return 2 * x, torch.full(x.shape[:-1], x.shape[-1] * torch.log(torch.tensor(2.0)).item())
    ...     def _inverse(self, y):
    ...         return y / 2
    >>> t = Scale()
    >>> y, ladj = t.call_and_ladj(torch.ones(3, 2))
    >>> t.inv(y)[0], ladj
    (tensor([1., 1.]), tensor([1.3863, 1.3863, 1.3863]))
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, cache_size: int = 0, validate_args: bool | None = None) -> None:
        super().__init__(cache_size=cache_size)
        #: whether this transform checks its parameters' values (``validate_args``, resolved)
        self.validate_args = resolve_validation(validate_args)

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(f(x), ln |det ∂f/∂x|)`` in one pass; the log-det has ``x.shape[:-1]``."""
        raise NotImplementedError

    def _call(self, x: Tensor) -> Tensor:
        return self.call_and_ladj(x)[0]

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return self.call_and_ladj(x)[1]

    def __eq__(self, other: object) -> bool:  # torch compares transforms by identity here
        return self is other

    __hash__ = Transform.__hash__


class ComposeFlow(FlowTransform):
    """``f_K ∘ … ∘ f_1`` (eq. 6) with the log-dets summed in one pass (eq. 7).

    Args:
        transforms: ``f_1 … f_K``, applied in order.

    >>> radial = fv.RadialTransform(torch.zeros(2), torch.tensor(1.0), torch.tensor(0.5))
    >>> f = fv.ComposeFlow([radial, fv.PermutationTransform(torch.tensor([1, 0]))])
    >>> z = torch.randn(4, 2)
    >>> y, ladj = f.call_and_ladj(z)
    >>> x, ladj_at_x = f.inverse_and_ladj(y)         # the inverse, and the forward log-det at f⁻¹(y)
    >>> bool(torch.allclose(x, z, atol=1e-6)), bool(torch.allclose(ladj_at_x, ladj, atol=1e-6))
    (True, True)
    """

    def __init__(self, transforms: Sequence[FlowTransform]) -> None:
        super().__init__()
        self.transforms = list(transforms)

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        total = x.new_zeros(())
        for t in self.transforms:
            x, ladj = t.call_and_ladj(x)
            total = total + ladj
        return x, total.expand(x.shape[:-1]) if total.dim() == 0 else total

    def _inverse(self, y: Tensor) -> Tensor:
        for t in reversed(self.transforms):
            y = t._inverse(y)
        return y

    def inverse_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(f^{-1}(y), ln |det ∂f/∂x|`` at ``x = f^{-1}(y)``), the forward log-det."""
        total = y.new_zeros(())
        for t in reversed(self.transforms):
            x = t._inverse(y)
            total = total + t.log_abs_det_jacobian(x, y)
            y = x
        return y, total.expand(y.shape[:-1]) if total.dim() == 0 else total


def promote(x: Tensor, *params: Tensor) -> tuple[Tensor, ...]:
    """``x`` and ``params`` in the dtype that torch's type promotion gives them together, so that a float64
    input of a float32 flow is computed in float64 (as ``Normal(float32).log_prob(float64)`` is) where a
    matrix product would refuse mixed dtypes; tensors already in that dtype are returned as they are."""
    dtype = x.dtype
    for p in params:
        dtype = torch.promote_types(dtype, p.dtype)
    return tuple(t if t.dtype == dtype else t.to(dtype) for t in (x, *params))


def batch_dot(a: Tensor, b: Tensor) -> Tensor:
    """``Σ_i a_i b_i`` over the last dimension, broadcasting the leading ones."""
    return (a * b).sum(-1)


def zeros_ladj(x: Tensor) -> Tensor:
    return torch.zeros(x.shape[:-1], dtype=x.dtype, device=x.device)


#: estimated error of a numerical inverse (in z, or in planar's ln|det|) above which log_prob warns
INVERSE_ERROR_WARN = 0.1


def warn_if_inverse_unstable(what: str, solve: Callable[[Tensor], Tensor], y: Tensor, z: Tensor, magnitude: Tensor,
                             hint: str) -> None:
    """Warn where ``z = f⁻¹(y)``, computed by ``solve``, is too sensitive to rounding for ``y``'s dtype.

    ``y = f(z)`` carries the rounding of the forward map, about ``eps·magnitude`` per coordinate (``magnitude``:
    the sum of the absolute terms that make ``y``, e.g. ``|σ z| + |(1 − σ) m|`` for IAF, ``|μ| + |L||z|`` for a
    triangular map; large where they cancel), and a sequential or triangular solve amplifies it (an IAF step by up
    to ``∏_i (1 + ‖∂m_i/∂z‖ e^{−s_i})``, a triangular solve by the condition number of ``L``). The amplification
    is measured rather than bounded: ``solve`` runs twice more, from ``y`` moved by ``4·eps·(magnitude + |y|)``
    in two fixed patterns (alternating signs, and pseudo-random signs; sizes pseudo-random in [0.5, 1.5), so that no
    network with round weights cancels the move exactly; from a generator of its own: the global random state is
    untouched). Where ``z`` moves by more than :data:`INVERSE_ERROR_WARN`, or a solution is not finite, ``log_prob``
    (which inverts) can be off by about as much while the one-pass ``rsample_and_log_prob`` stays exact. An
    estimate, not a bound: a direction the solve happens to damp can under-read it. Two more solves and one host
    synchronisation; the callers run it only with validation on (``validate_args``,
    :func:`flowvi.set_validation`).
    """
    if z.numel() == 0:
        return
    with torch.no_grad():
        y, z = y.detach(), z.detach()
        dim = y.shape[-1]
        generator = torch.Generator().manual_seed(dim)
        signs = torch.stack([(torch.arange(dim) % 2) * 2 - 1, torch.randint(0, 2, (dim,), generator=generator) * 2 - 1])
        # sizes in [0.5, 1.5): with equal sizes a network whose weights are ±1 moved m_i by exactly the change of y_i
        # (hypothesis found such a case: an ill-conditioned inverse that did not move)
        patterns = signs * (0.5 + torch.rand(2, dim, generator=generator, dtype=torch.float64))
        step = 4 * torch.finfo(y.dtype).eps * (magnitude.detach().abs() + y.abs())
        err = torch.zeros_like(z)
        for pattern in patterns:
            err = torch.maximum(err, (solve(y + step * pattern.to(y.device, y.dtype)) - z).abs())
        err = torch.where(torch.isfinite(err) & torch.isfinite(z), err, torch.full_like(err, math.inf)).amax(-1)
        bad = err > INVERSE_ERROR_WARN
        n = int(bad.sum())
    if n:
        worst = float(err.max())
        fix = "" if y.dtype == torch.float64 else "; evaluate in float64 for an accurate density"
        warnings.warn(f"{what} log_prob in {y.dtype}: the inverse is ill-conditioned at {n} point(s) (z moves by up "
                      f"to {worst:.3g} when y moves by its rounding error: {hint}), so its density can be off by about "
                      f"as much (rsample_and_log_prob's ln q of the flow's own samples never inverts){fix}",
                      RuntimeWarning, stacklevel=5)
