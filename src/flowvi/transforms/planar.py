r"""Planar flow (Rezende & Mohamed 2015, eq. 10–13 and appendix A.1).

.. math::
    f(z) = z + \hat u\, h(w^\top z + b), \qquad h = \tanh,

    \ln |\det \partial f / \partial z| = \ln |1 + \hat u^\top \psi(z)|, \quad
    \psi(z) = h'(w^\top z + b)\, w   \qquad (11\text{–}12).

``f`` is invertible iff ``wᵀû ≥ −1``. :func:`planar_constrain` maps any raw ``u`` to a ``û``
that satisfies it (appendix A.1):
``û = u + [m(wᵀu) − wᵀu] w / ‖w‖²`` with ``m(x) = −1 + softplus(x)``.

The inverse has no closed form. Writing ``a = wᵀz + b`` and ``t = wᵀy + b``, ``y = f(z)`` gives
the scalar equation ``a + c tanh(a) = t`` with ``c = wᵀû ≥ −1``, whose left side is monotone.
We solve it in float64 whatever the dtype of the flow (its residual cancels;
:func:`flowvi.roots.root_dtype`), with ``c`` the dot product of the stored ``w`` and ``û`` (the map
the forward pass applies), by safeguarded Newton (:func:`flowvi.roots.monotone_root`) from a bracket
end where Newton converges monotonically (:func:`_solve_planar_root`), and set
``z = y − û tanh(a)``. Gradients through the inverse follow from one differentiable Newton
step at the root (implicit function theorem): they are exact to first order only (second
derivatives of ``log_prob`` through the inverse are not). With validation on, the inverse
bounds its own error (the roots with ``t`` moved by its rounding error, solved alongside) and
warns when it is ill-conditioned for the dtype (docs/reliability.md).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..roots import monotone_root, root_dtype
from ..validation import check_event, check_same_event, check_tensor, check_values, not_finite
from .base import INVERSE_ERROR_WARN, FlowTransform, batch_dot

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


def _data_error(w: Tensor, u_hat: Tensor, b: Tensor, y: Tensor) -> Tensor:
    """How far ``t = wᵀy + b`` may be from ``a + c tanh(a)`` at the ``a`` the forward pass computed.

    Rounding in the forward pass (of ``wᵀz + b`` and of ``y = z + û tanh a``) and in ``wᵀy + b`` is
    about ``eps·(|w|ᵀ|y| + |b| + |w|ᵀ|û|)``, far more than ``eps·|t|`` when the sums cancel
    (``|z| ≤ |y| + |û|``); ``eps`` is that of the dtype ``t`` is computed in. Returns four times
    it, plus ``4·eps``.
    """
    eps = torch.finfo(torch.promote_types(y.dtype, w.dtype)).eps
    w, u_hat, b, y = w.detach().abs(), u_hat.detach().abs(), b.detach().abs(), y.detach().abs()
    return 4 * eps * (batch_dot(w, y) + b + batch_dot(w, u_hat) + 1.0)


def _warn_if_ill_conditioned(a: Tensor, a_minus: Tensor, a_plus: Tensor, delta: Tensor, c: Tensor, u_norm: Tensor,
                             dtype: torch.dtype) -> None:
    """Warn when the root ``a`` of ``a + c tanh(a) = t`` is too ill-conditioned for ``dtype``.

    ``a_minus ≤ a ≤ a_plus`` are the roots with ``t`` moved by ``delta``, the error of the data
    (:func:`_data_error`), solved exactly, not linearised (near ``wᵀû = −1`` the left side is flat
    and the root moves like a cube root). Their spread reaches ``z = y − û tanh a`` as
    ``‖û‖·|Δ tanh a|``, to which the rounding of ``û tanh a`` adds ``4·eps·‖û‖``. The log-det is
    recomputed from the returned ``z`` (``a = wᵀz + b``, rounded once more by up to ``delta``), so
    its error is the change of ``ln|1 + c sech²(a)|`` over ``[a_minus − delta, a_plus + delta]``
    (extreme at the ends, or at 0 when it lies between them). With a huge ``û``, or near
    ``wᵀû = −1`` with a large ``w`` or ``û``, this is large in float32 (the one-pass density and
    ``log_prob`` then disagree by many nats). A NaN estimate (an infinite log-det) warns too. One
    host synchronisation; only with validation on (:func:`flowvi.set_validation`).
    """
    if a.numel() == 0:
        return

    def ladj(at: Tensor) -> Tensor:
        return torch.log(torch.abs(1.0 + c * torch.exp(_log_sech2(at))))

    here = ladj(a)
    spread = torch.maximum(torch.tanh(a_plus) - torch.tanh(a), torch.tanh(a) - torch.tanh(a_minus))
    err_z = u_norm * (spread + 4 * torch.finfo(dtype).eps)
    lo, hi = a_minus - delta, a_plus + delta
    err_ladj = torch.maximum((ladj(hi) - here).abs(), (ladj(lo) - here).abs())
    straddles = (lo <= 0) & (hi >= 0)
    err_ladj = torch.where(straddles, torch.maximum(err_ladj, (ladj(torch.zeros_like(a)) - here).abs()), err_ladj)
    err = torch.nan_to_num(torch.maximum(err_z, err_ladj), nan=math.inf)
    worst = float(err.max())
    if worst > INVERSE_ERROR_WARN:
        import warnings

        n = int((err > INVERSE_ERROR_WARN).sum())
        warnings.warn(f"planar log_prob in {dtype}: the numerical inverse is ill-conditioned at {n} point(s) "
                      f"(estimated error up to {worst:.3g} in z or ln|det|: a huge û, or wᵀû near −1 with a large w "
                      "or û); evaluate in float64 for an accurate density", RuntimeWarning, stacklevel=4)


def _log_sech2(a: Tensor) -> Tensor:
    """``ln sech²(a) = ln tanh'(a)``, accurate for all ``a`` (no ``1 − tanh²`` cancellation)."""
    abs_a = a.abs()
    return 2.0 * (_LOG2 - abs_a - F.softplus(-2.0 * abs_a))


def _solve_planar_root(c: Tensor, t: Tensor) -> Tensor:
    """The root ``a`` of ``a + c tanh(a) = t`` (``c ≥ −1``), element-wise, without gradient.

    The equation is odd in ``(a, t)``, so we solve ``A + c tanh(A) = T`` for ``A = |a|``, ``T = |t|``,
    and return ``sign(t)·A``. Since ``|tanh A| ≤ min(A, 1)``, the root lies in ``[max(T − c,
    T/(1 + c)), T]`` for ``c ≥ 0`` (and below ``atanh(T/c)`` when ``T < c``) and in
    ``[T, min(T − c, T/(1 + c))]`` for ``c < 0``; one pass of the fixed-point map
    ``φ(A) = T − c tanh(A)`` (monotone, with ``A = φ(A)`` at the root) narrows it further: ``φ`` of
    one end bounds the root from the other side. Each bound is widened by more than its rounding
    error. For ``c ≥ 0`` the left side is concave on ``A ≥ 0``, so Newton from the lower end rises
    monotonically to the root; for ``c < 0`` it is convex and Newton falls monotonically from the
    upper end. The bracket and the safeguard of :func:`flowvi.roots.monotone_root` remain as a
    backstop; iteration stops once the residual is below its own rounding error.
    """
    T = t.abs()
    pos = c >= 0
    tiny = torch.finfo(c.dtype).tiny
    slack = 4 * torch.finfo(c.dtype).eps * (T + c.abs() + 1.0)
    shrunk = T / (1.0 + c).clamp_min(tiny)
    saturated = torch.atanh(((T + slack) / c.clamp_min(tiny)).clamp_max(1.0))  # inf where T ≥ c
    lo = torch.where(pos, torch.maximum(T - c, shrunk), T)
    hi = torch.where(pos, torch.minimum(T, saturated), torch.minimum(T - c, shrunk))
    phi_lo, phi_hi = T - c * torch.tanh(lo), T - c * torch.tanh(hi)
    lo, hi = (torch.where(pos, torch.maximum(lo, phi_hi), torch.maximum(lo, phi_lo)) - slack,
              torch.where(pos, torch.minimum(hi, phi_lo), torch.minimum(hi, phi_hi)) + slack)

    def g(A: Tensor) -> tuple[Tensor, Tensor]:
        return A + c * torch.tanh(A) - T, 1.0 + c * torch.exp(_log_sech2(A))

    # the residual's rounding error: below it, its sign is noise
    A = monotone_root(g, lo, hi, x0=torch.where(pos, lo, hi), gtol=2 * torch.finfo(c.dtype).eps * (2 * T + c.abs()))
    return torch.sign(t) * A


class PlanarTransform(FlowTransform):
    """``f(z) = z + û tanh(wᵀz + b)`` for *constrained* parameters (see :func:`planar_constrain`).

    Args:
        w, u_hat: ``(..., D)`` tensors; ``wᵀû ≥ −1`` is required for invertibility.
        b: ``(...)`` tensor (a scalar per parameter set).
        uw: the value of ``wᵀû`` when known exactly from the constraint
            (:func:`planar_reparameterize`); computed from ``w`` and ``û`` otherwise.
        validate_args: check the parameters (finite, ``wᵀû ≥ −1``) and the inverse's conditioning;
            ``None`` follows :func:`flowvi.set_validation`.

    >>> w, u = torch.tensor([1.0, 0.0]), torch.tensor([-3.0, 1.0])   # wᵀu = −3 < −1: not invertible ...
    >>> u_hat = fv.planar_constrain(u, w)                          # ... until constrained (appendix A.1)
    >>> t = fv.PlanarTransform(w, u_hat, torch.tensor(0.0))
    >>> z = torch.randn(4, 2, dtype=torch.float64)
    >>> bool(torch.allclose(t.inv(t(z.float())).double(), z, atol=1e-5)), bool((w @ u_hat) >= -1)
    (True, True)
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
        check_values(lambda: planar_checks(w, u_hat, b, self.uw), enabled=self.validate_args)

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

        work = root_dtype(t.dtype, t.device)  # the scalar equation in float64 (its residual cancels)
        # c of the map the forward pass applies: wᵀû of the stored vectors, not the constraint's value
        # (they differ by far more than eps in float32 where û = u + correction cancels)
        c_vec = batch_dot(self.w.to(work), self.u_hat.to(work))
        c_r, t_r = torch.broadcast_to(c_vec.clamp_min(-1.0), t.shape), t.to(work)

        def g(a: Tensor) -> tuple[Tensor, Tensor]:
            return a + c_r * torch.tanh(a) - t_r, 1.0 + c_r * torch.exp(_log_sech2(a))

        if self.validate_args:  # solve the roots with t moved by the data's error alongside (one solve)
            # where rounding put the stored û past wᵀû = −1 the map is not one-to-one: c_r is clamped
            delta = (_data_error(self.w, self.u_hat, self.b, y).to(work) + (c_r - c_vec).detach()).expand_as(t_r)
            c_d, t_d = c_r.detach(), t_r.detach()
            a, a_minus, a_plus = _solve_planar_root(c_d.expand(3, *c_d.shape),
                                                    torch.stack([t_d, t_d - delta, t_d + delta])).unbind(0)
            u_norm = self.u_hat.detach().norm(dim=-1).to(work).expand_as(a)
            _warn_if_ill_conditioned(a, a_minus, a_plus, delta, c_d, u_norm, t.dtype)
        else:
            a = _solve_planar_root(c_r.detach(), t_r.detach())
        if torch.is_grad_enabled() and (t_r.requires_grad or c_r.requires_grad):
            value, slope = g(a)  # a is detached: one Newton step carries the implicit gradient
            a = a - value / slope
        return y - self.u_hat * torch.tanh(a).to(t.dtype).unsqueeze(-1)
