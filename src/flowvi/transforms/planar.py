r"""Planar flow (Rezende & Mohamed 2015, eq. 10–13 and appendix A.1).

.. math::
    f(z) = z + \hat u\, h(w^\top z + b), \qquad h = \tanh,

    \ln |\det \partial f / \partial z| = \ln |1 + \hat u^\top \psi(z)|, \quad
    \psi(z) = h'(w^\top z + b)\, w   \qquad (11\text{–}12).

``f`` is invertible iff ``wᵀû ≥ −1``. :func:`planar_constrain` maps any raw ``u`` to a ``û``
that satisfies it (appendix A.1):
``û = u + [m(wᵀu) − wᵀu] w / ‖w‖²`` with ``m(x) = −1 + softplus(x)``.

The inverse has no closed form. Writing ``a = wᵀz + b`` and ``t = wᵀy + b``, ``y = f(z)`` gives
the scalar equation ``a + c tanh(a) = t`` with ``c = wᵀû ≥ −1``, whose left side is monotone;
its root lies in ``[t − |c|, t + |c|]``. We solve it by safeguarded Newton
(:func:`flowvi.roots.monotone_root`) to ``4·eps`` relative tolerance on ``a`` and set
``z = y − û tanh(a)``. Gradients through the inverse follow from one differentiable Newton
step at the root (implicit function theorem): they are exact to first order only (second
derivatives of ``log_prob`` through the inverse are not). With validation on, the inverse
estimates its own error and warns when it is ill-conditioned for the dtype (docs/reliability.md).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..roots import monotone_root
from ..validation import check_event, check_same_event, check_tensor, check_values, not_finite
from .base import FlowTransform, batch_dot

_LOG2 = math.log(2.0)

#: Margin kept in the planar constraint, ``wᵀû ≥ −1 + PLANAR_MARGIN``. The paper's bound ``−1``
#: is attained by the softplus in floating point for very negative ``wᵀu`` (softplus underflows
#: to 0), where ``det ∂f/∂z`` vanishes at one point and its log is −∞. The margin keeps every
#: log-det finite (≥ ln PLANAR_MARGIN ≈ −9.2) at no measurable cost in expressiveness.
PLANAR_MARGIN = 1e-4


#: Floor on ``‖w‖²`` in the reparameterization: ``û`` diverges as ``w → 0`` (it must keep
#: ``wᵀû = m`` while ``w`` vanishes), so below this the correction is damped, keeping ``û`` and its
#: gradient finite; ``wᵀû`` is then a convex combination of ``wᵀu ≈ 0`` and ``m``, still ≥ −1.
W_SQ_MIN = 1e-12


def planar_reparameterize(u: Tensor, w: Tensor, margin: float = PLANAR_MARGIN) -> tuple[Tensor, Tensor]:
    """Return ``(û, wᵀû)`` with ``wᵀû = m(wᵀu) = −1 + margin + softplus(wᵀu) ≥ −1`` (appendix A.1).

    ``wᵀû`` is returned as computed from the constraint, not re-computed from ``û``: for large
    ``|wᵀu|`` the dot product of the rounded vectors can differ from ``m`` by more than 1 in
    float32 and fall below −1, while the constrained value is exact. Shapes broadcast over
    leading dimensions.
    """
    wu = batch_dot(w, u)
    m = -1.0 + margin + F.softplus(wu)
    w_sq = batch_dot(w, w)
    ratio = w_sq / w_sq.clamp_min(W_SQ_MIN)  # 1 unless ‖w‖² < W_SQ_MIN
    u_hat = u + ((m - wu) / w_sq.clamp_min(W_SQ_MIN)).unsqueeze(-1) * w
    uw = m * ratio + wu * (1.0 - ratio)
    return u_hat, uw


def planar_constrain(u: Tensor, w: Tensor, margin: float = PLANAR_MARGIN) -> Tensor:
    """Return ``û = u + [m(wᵀu) − wᵀu] w / ‖w‖²`` (appendix A.1); see :func:`planar_reparameterize`."""
    return planar_reparameterize(u, w, margin)[0]


def planar_checks(w: Tensor, u_hat: Tensor, b: Tensor, uw: Tensor) -> list[tuple[str, Tensor]]:
    """What :func:`flowvi.validation.check_values` verifies for planar parameters: finite, and
    ``wᵀû ≥ −1`` (else ``f`` is not invertible and ``ln|det|`` is not its log-density correction)."""
    return [(f"{name} has {{n}} non-finite entries (NaN or inf)", not_finite(v))
            for name, v in (("w", w), ("u_hat", u_hat), ("b", b))] + [
        ("wᵀû < −1 in {n} planar step(s): the flow is not invertible (build û with planar_constrain)", uw < -1)]


#: estimated error (in z or ln|det|) of the numerical inverse above which log_prob warns
INVERSE_ERROR_WARN = 0.1


def _warn_if_ill_conditioned(a: Tensor, c: Tensor, t: Tensor, u_hat: Tensor) -> None:
    """Warn when the root ``a`` of ``a + c tanh(a) = t`` is too ill-conditioned for the dtype.

    The root is solved to a residual of about ``4·eps·(|t| + |c| + 1)``; divided by the slope
    ``d = 1 + c sech²(a)`` that is the error of ``a``, which reaches ``z`` scaled by ``‖û‖ sech²(a)``
    and ``ln|det|`` by ``|2c tanh(a) sech²(a) / d|``. Near ``wᵀû = −1`` with a large ``û`` this can be
    huge in float32 (the one-pass density and ``log_prob`` then disagree by many nats). One host
    synchronisation; only with validation on (:func:`flowvi.set_validation`).
    """
    if a.numel() == 0:
        return
    eps = torch.finfo(a.dtype).eps
    sech2 = torch.exp(_log_sech2(a))
    d = (1.0 + c * sech2).abs().clamp_min(torch.finfo(a.dtype).tiny)
    err_a = 4 * eps * (t.abs() + c.abs() + 1.0) / d
    gain = u_hat.norm(dim=-1) * sech2 + (2.0 * c * torch.tanh(a) * sech2).abs() / d
    worst = float((err_a * gain).max())
    if worst > INVERSE_ERROR_WARN:
        import warnings

        n = int(((err_a * gain) > INVERSE_ERROR_WARN).sum())
        warnings.warn(f"planar log_prob in {a.dtype}: the numerical inverse is ill-conditioned at {n} point(s) "
                      f"(estimated error up to {worst:.3g} in z or ln|det|, wᵀû near −1 with a large û); "
                      "evaluate in float64 for an accurate density", RuntimeWarning, stacklevel=4)


def _log_sech2(a: Tensor) -> Tensor:
    """``ln sech²(a) = ln tanh'(a)``, accurate for all ``a`` (no ``1 − tanh²`` cancellation)."""
    abs_a = a.abs()
    return 2.0 * (_LOG2 - abs_a - F.softplus(-2.0 * abs_a))


class PlanarTransform(FlowTransform):
    """``f(z) = z + û tanh(wᵀz + b)`` for *constrained* parameters (see :func:`planar_constrain`).

    Args:
        w, u_hat: ``(..., D)`` tensors; ``wᵀû ≥ −1`` is required for invertibility.
        b: ``(...)`` tensor (a scalar per parameter set).
        uw: the value of ``wᵀû`` when known exactly from the constraint
            (:func:`planar_reparameterize`); computed from ``w`` and ``û`` otherwise.
        validate_args: check the parameters (finite, ``wᵀû ≥ −1``) and the inverse's conditioning;
            ``None`` follows :func:`flowvi.set_validation`.
    """

    def __init__(
        self, w: Tensor, u_hat: Tensor, b: Tensor, uw: Tensor | None = None, cache_size: int = 0,
        validate_args: bool | None = None,
    ) -> None:
        super().__init__(cache_size=cache_size, validate_args=validate_args)
        check_tensor("w", w)
        check_tensor("u_hat", u_hat)
        check_tensor("b", b)
        self.dim = check_same_event(("w", "u_hat"), (w, u_hat))
        self.w, self.u_hat, self.b = w, u_hat, b
        self.uw = batch_dot(w, u_hat) if uw is None else uw
        check_values(planar_checks(w, u_hat, b, self.uw), enabled=self.validate_args)

    def _pre(self, z: Tensor) -> Tensor:
        check_event("z", z, self.dim)
        return batch_dot(self.w, z) + self.b

    def call_and_ladj(self, z: Tensor) -> tuple[Tensor, Tensor]:
        a = self._pre(z)
        y = z + self.u_hat * torch.tanh(a).unsqueeze(-1)
        ladj = torch.log(torch.abs(1.0 + self.uw * torch.exp(_log_sech2(a))))
        return y, ladj

    def _inverse(self, y: Tensor) -> Tensor:
        check_event("y", y, self.dim)
        t = batch_dot(self.w, y) + self.b
        c, t = torch.broadcast_tensors(self.uw, t)
        if bool((c < -1).any()):
            raise ValueError("planar flow is not invertible: wᵀû < −1 (use planar_constrain)")

        def g(a: Tensor) -> tuple[Tensor, Tensor]:
            return a + c * torch.tanh(a) - t, 1.0 + c * torch.exp(_log_sech2(a))

        reach = c.detach().abs()
        a = monotone_root(g, t.detach() - reach, t.detach() + reach)
        if self.validate_args:
            _warn_if_ill_conditioned(a, c.detach(), t.detach(), self.u_hat.detach())
        if torch.is_grad_enabled() and (y.requires_grad or self.w.requires_grad or self.u_hat.requires_grad):
            value, slope = g(a)  # a is detached: one Newton step carries the implicit gradient
            a = a - value / slope
        return y - self.u_hat * torch.tanh(a).unsqueeze(-1)
