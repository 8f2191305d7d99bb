"""Vectorised root finding for strictly monotone scalar functions.

Used by the numerical inverses of the planar flow (a 1-D problem along ``w``, section 4.1 and appendix A.1).
The solver is a safeguarded Newton method after Numerical Recipes' ``rtsafe``: the sign of ``g``
at every iterate shrinks a bracket around the root, and a Newton step is taken only when it lands
inside the bracket and either continues from the side of the root the last Newton step started
from (monotone convergence, as from the convex side; the bracket then shrinks by every step) or is
at most half as long as the step before last; otherwise the bracket is bisected. The last rule
breaks cycles: on ``a + c tanh(a) = t`` with ``c ≈ 6`` and ``t ≈ ±4.4``, plain Newton falls into a
2-cycle whose iterates straddle the root and stay inside the bracket, shrinking it by about 1e-5
per iteration, so "bisect when Newton leaves the bracket" alone never bisects (this solver once
ran out of iterations there and returned an iterate 2 away from the root, in float32 and float64
alike). Elements still unconverged after ``max_iter`` iterations give a warning, never silence.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor


def root_dtype(dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """The dtype to solve a scalar root equation in: float64 where the device supports it.

    The residual of an equation such as ``a + c tanh(a) − t`` cancels (its terms are much larger
    than their sum near the root), so in float32 its sign, and with it the bracket, is noise within
    ``eps·(|a| + |c| + |t|)`` of the root; in float64 the scalar problem costs little more and is
    solved well beyond float32 precision. MPS has no float64 and keeps ``dtype``.
    """
    if dtype == torch.float64 or device.type == "mps":
        return dtype
    return torch.float64


def monotone_root(
    fn: Callable[[Tensor], tuple[Tensor, Tensor]],
    lo: Tensor,
    hi: Tensor,
    *,
    x0: Tensor | None = None,
    xtol: float | None = None,
    gtol: Tensor | float = 0.0,
    max_iter: int = 200,
) -> Tensor:
    """Solve ``g(x) = 0`` element-wise for an increasing ``g`` with a root in ``[lo, hi]``.

    Args:
        fn: returns ``(g(x), g'(x))`` element-wise, in the dtype of ``lo`` and ``hi``.
        lo, hi: brackets with ``g(lo) <= 0 <= g(hi)`` (broadcastable).
        x0: the first iterate, inside ``[lo, hi]`` (default: the midpoint). A start from which
            Newton converges monotonically (e.g. the bracket end on the convex side) saves the
            bisections the safeguard would otherwise take.
        xtol: absolute-and-relative tolerance on ``x``: an element stops once ``|g(x)| <= gtol``, its
            bracket is narrower than ``xtol * (1 + |x|)``, or the step just taken (Newton or
            bisection, which moves to the bracket's midpoint) is that short. Defaults to
            ``4 * eps`` of the dtype (about 9e-16 in float64, 5e-7 in float32).
        gtol: residual tolerance (broadcastable): an element also stops once ``|g(x)| <= gtol``.
            Give the rounding error of ``g`` where it is known: below it the sign of ``g``, and
            with it every further step, is noise.
        max_iter: bound on iterations; 200 suffices for bisection alone to exhaust float64.
            Elements still unconverged after it give a ``RuntimeWarning``.

    Returns the root, without gradient (see callers for the implicit-function gradient).
    One host synchronisation per iteration.
    """
    with torch.no_grad():
        lo, hi = torch.broadcast_tensors(lo.detach(), hi.detach())
        lo, hi = lo.clone(), hi.clone()
        tol = xtol if xtol is not None else 4 * torch.finfo(lo.dtype).eps
        x = 0.5 * (lo + hi) if x0 is None else torch.broadcast_to(x0.detach(), lo.shape).clone()
        step_old = 2 * (hi - lo)  # rtsafe's "dxold", the step before last: any first two Newton steps in the bracket
        step_last = step_old.clone()
        side = torch.zeros_like(x)  # sign of g at the last iterate if a Newton step led from it, else 0
        done = torch.zeros_like(x, dtype=torch.bool)
        for _ in range(max_iter):
            g, dg = fn(x)
            lo = torch.where(g < 0, x, lo)
            hi = torch.where(g > 0, x, hi)
            newton = x - g / dg
            inside = torch.isfinite(newton) & (newton >= lo) & (newton <= hi)
            shrinking = 2 * (newton - x).abs() <= step_old
            # still on the side the last Newton step came from: no cycle, and the bracket shrinks by the step
            onward = torch.sign(g) * side > 0
            ok = inside & (shrinking | onward)
            x_new = torch.where(ok, newton, 0.5 * (lo + hi))
            moved = (x_new - x).abs()
            scale = tol * (1 + x.abs())
            at_root = g.abs() <= gtol
            converged = at_root | ((hi - lo) <= scale) | (moved <= scale)
            x = torch.where(done | at_root, x, x_new)
            step_old, step_last = step_last, moved
            side = torch.where(ok, torch.sign(g), 0.0)
            done = done | converged
            if bool(done.all()):
                break
        else:
            n = int((~done).sum())
            warnings.warn(f"monotone_root: {n} of {done.numel()} roots did not converge in {max_iter} iterations; "
                          "the result there is the last iterate", RuntimeWarning, stacklevel=2)
        return x
