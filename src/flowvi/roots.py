"""Vectorised root finding for strictly monotone scalar functions.

Used by the numerical inverses of the planar flow (a 1-D problem along ``w``, section 4.1 and appendix A.1).
The solver is a safeguarded Newton method: every Newton step that leaves the current
bracket is replaced by a bisection step, so it converges for every monotone function on a
valid bracket (bisection alone halves the bracket each iteration), and quadratically once
Newton takes over.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def monotone_root(
    fn: Callable[[Tensor], tuple[Tensor, Tensor]],
    lo: Tensor,
    hi: Tensor,
    *,
    xtol: float | None = None,
    max_iter: int = 200,
) -> Tensor:
    """Solve ``g(x) = 0`` element-wise for an increasing ``g`` with a root in ``[lo, hi]``.

    Args:
        fn: returns ``(g(x), g'(x))`` element-wise.
        lo, hi: brackets with ``g(lo) <= 0 <= g(hi)`` (broadcastable).
        xtol: absolute-and-relative tolerance on ``x``: iteration stops once every bracket
            or Newton step is narrower than ``xtol * (1 + |x|)`` or ``g(x) == 0``. Defaults to
            ``4 * eps`` of the dtype (about 9e-16 in float64, 5e-7 in float32).
        max_iter: bound on iterations; 200 suffices for bisection alone to exhaust float64.

    Returns the root, without gradient (see callers for the implicit-function gradient).
    """
    with torch.no_grad():
        lo, hi = torch.broadcast_tensors(lo.detach().clone(), hi.detach().clone())
        lo, hi = lo.clone(), hi.clone()
        tol = xtol if xtol is not None else 4 * torch.finfo(lo.dtype).eps
        x = 0.5 * (lo + hi)
        for _ in range(max_iter):
            g, dg = fn(x)
            step = g / dg
            scale = tol * (1 + x.abs())
            done = (g == 0) | ((hi - lo) <= scale) | (step.abs() <= scale)
            if bool(done.all()):
                break
            # shrink the bracket using the sign of g at x
            lo = torch.where(g < 0, x, lo)
            hi = torch.where(g > 0, x, hi)
            newton = x - step
            ok = torch.isfinite(newton) & (newton > lo) & (newton < hi)
            x = torch.where(done, x, torch.where(ok, newton, 0.5 * (lo + hi)))
        return x
