r"""Inverse autoregressive flow (Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling, NeurIPS 2016).

One step is the numerically stable gated update of the paper's Algorithm 1:

.. math::
    [m, s] = \mathrm{MADE}(z; c), \qquad \sigma = \operatorname{sigmoid}(s), \qquad
    f(z) = \sigma \odot z + (1 - \sigma) \odot m,

where ``m_i`` and ``s_i`` depend on ``z_{<i}`` only (and on a context ``c``), so ``∂f/∂z`` is lower
triangular with diagonal ``σ`` and ``ln |det ∂f/∂z| = Σ_i ln σ_i`` (Algorithm 1's
``l ← l − Σ ln σ`` for ``ln q``). The autoregressive network is a MADE (Germain et al. 2015): dense
layers whose weights are multiplied by binary masks built from unit degrees (:func:`made_masks`).

The inverse is sequential (``D`` passes of the network): pass ``i`` sets
``z_i = (y_i − (1 − σ_i) m_i)/σ_i``, exact since ``m_i``, ``s_i`` only read ``z_{<i}``, set before.
Exact in exact arithmetic, it is not stable: pass ``i`` divides by ``σ_i`` the rounding error of ``y_i`` and the
error that ``m_i``, ``s_i`` carry from the coordinates set before, so errors compound across coordinates, by up to
``∏_i (1 + ‖∂m_i/∂z‖ e^{−s_i})`` (with small gates, ``σ_i = 3·10⁻⁷``, a round trip in float64 can be off by 10⁴
or be NaN; where ``σ_i`` is below the float's epsilon the forward map has already rounded ``z_i`` away). With
validation on, ``log_prob`` measures this and warns (:func:`~flowvi.transforms.base.warn_if_inverse_unstable`);
sampling and the one-pass ``ln q`` of ``rsample_and_log_prob`` never invert.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..validation import check_event
from .base import FlowTransform, promote, warn_if_inverse_unstable


def made_masks(dim: int, hidden: int, depth: int) -> list[Tensor]:
    """MADE masks (Germain et al. 2015) for ``depth`` hidden layers of width ``hidden``.

    Inputs and outputs have degrees ``1 … D``; hidden units degrees ``0 … D−1`` (cyclic). A hidden
    unit of degree ``k`` reads the inputs ``d ≤ k``; output ``d`` reads hidden units of degree ``< d``.
    Degree-0 units read no input: they carry the context (the first layer's bias) to every output,
    including the first, which no input may reach. Returns ``depth + 1`` masks of shape ``(out, in)``.
    """
    if depth < 1 or hidden < 1:
        raise ValueError(f"a MADE needs depth >= 1 and hidden >= 1, got depth={depth}, hidden={hidden}")
    d_in = torch.arange(1, dim + 1)
    d_hidden = torch.arange(hidden) % dim
    masks = [(d_hidden.unsqueeze(-1) >= d_in.unsqueeze(0)).to(torch.get_default_dtype())]
    for _ in range(depth - 1):
        masks.append((d_hidden.unsqueeze(-1) >= d_hidden.unsqueeze(0)).to(torch.get_default_dtype()))
    masks.append((d_in.unsqueeze(-1) > d_hidden.unsqueeze(0)).to(torch.get_default_dtype()))
    return masks


class MaskedLinear(nn.Linear):
    """``y = x (W ⊙ M)ᵀ + b`` with a fixed binary mask ``M`` (a MADE layer).

    Args:
        mask: ``(out, in)`` 0/1 tensor. bias: whether the layer has a bias.

    >>> from flowvi.transforms import MaskedLinear
    >>> layer = MaskedLinear(torch.tensor([[1.0, 0.0], [1.0, 1.0]]), bias=False)   # output 0 reads input 0 only
    >>> jac = torch.autograd.functional.jacobian(layer, torch.randn(2))
    >>> bool((jac[0, 1] == 0).item())
    True
    """

    def __init__(self, mask: Tensor, bias: bool = True) -> None:
        super().__init__(mask.shape[1], mask.shape[0], bias=bias)
        self.register_buffer("mask", mask)

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight * self.mask.to(self.weight.dtype)
        if self.bias is None:
            x, weight = promote(x, weight)
            return F.linear(x, weight)
        x, weight, bias = promote(x, weight, self.bias)
        return F.linear(x, weight, bias)


class MADE(nn.Module):
    """MADE network ``(z, c) ↦ (m, s)`` for IAF: ``m_i``, ``s_i`` depend on ``z_{<i}`` and the context.

    The context enters as an additive input to the first hidden layer, ``a_1 = W_1 z + c``: pass
    the per-data-point ``c`` (shape ``(..., hidden)``, e.g. produced from encoder features by the
    amortized parameter head) to :meth:`forward`; it broadcasts against ``z``. The output layer
    starts at zero, so ``m = 0`` and ``s = gate_bias`` at initialisation.

    Args:
        dim: D. hidden: the width of the hidden layers. depth: their number. gate_bias: the initial ``s``.

    >>> from flowvi.transforms import MADE
    >>> made = MADE(3, hidden=8, depth=1)
    >>> torch.nn.init.normal_(made.out.weight)                 # away from the zero start ...
    Parameter containing: ...
    >>> jac = torch.autograd.functional.jacobian(lambda z: made(z)[0], torch.randn(3))
    >>> bool((jac.triu() == 0).all())                          # ... m_i reads z_{<i} only
    True
    """

    def __init__(self, dim: int, hidden: int = 64, depth: int = 2, gate_bias: float = 2.0) -> None:
        super().__init__()
        self.dim, self.hidden = dim, hidden
        masks = made_masks(dim, hidden, depth)
        self.first = MaskedLinear(masks[0], bias=False)
        self.hidden_layers = nn.ModuleList(MaskedLinear(mk) for mk in masks[1:-1])
        out = masks[-1]
        self.out = MaskedLinear(torch.cat([out, out], 0))  # rows 0..D−1: m, rows D..2D−1: s
        nn.init.zeros_(self.out.weight)
        with torch.no_grad():
            self.out.bias.copy_(torch.cat([torch.zeros(dim), torch.full((dim,), gate_bias)]))
        for layer in (self.first, *self.hidden_layers):
            nn.init.normal_(layer.weight, 0.0, 1.0 / math.sqrt(layer.in_features))

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        a = self.first(z)
        if context is not None:
            a = a + context
        a = F.elu(a)
        for layer in self.hidden_layers:
            a = F.elu(layer(a))
        m, s = self.out(a).chunk(2, dim=-1)
        return m, s


class IAFTransform(FlowTransform):
    """``f(z) = σ ⊙ z + (1 − σ) ⊙ m`` with ``[m, s] = net(z)``, ``σ = sigmoid(s)`` (Algorithm 1).

    Args:
        dim: D.
        net: an autoregressive map ``z (..., D) -> (m, s)``, each ``(..., D)``, where output ``i``
            depends on ``z_{<i}`` only (e.g. ``lambda z: made(z, context)``), or on ``z_{>i}`` only
            with ``reverse=True``. Per-data-point parameters it closes over broadcast against
            ``z``'s leading dimensions.
        reverse: the autoregressive order is reversed (``net``'s output ``i`` reads ``z_{>i}``).
        validate_args: as for every :class:`FlowTransform`.

    >>> from flowvi.transforms import MADE, IAFTransform
    >>> made = MADE(3, hidden=8)
    >>> t = IAFTransform(3, lambda z: made(z))
    >>> z = torch.randn(4, 3)
    >>> y, ladj = t.call_and_ladj(z)
    >>> bool(torch.allclose(t.inv(y), z, atol=1e-5)), ladj.shape     # ln|det| = Σ ln σ_i
    (True, torch.Size([4]))
    """

    def __init__(self, dim: int, net: Callable[[Tensor], tuple[Tensor, Tensor]], reverse: bool = False,
                 cache_size: int = 0, validate_args: bool | None = None) -> None:
        super().__init__(cache_size=cache_size, validate_args=validate_args)
        self.dim = dim
        self.net = net
        self.reverse = reverse

    def call_and_ladj(self, z: Tensor) -> tuple[Tensor, Tensor]:
        check_event("z", z, self.dim)
        m, s = self.net(z)
        sigma = torch.sigmoid(s)
        y = sigma * z + (1.0 - sigma) * m
        return y, F.logsigmoid(s).sum(-1)

    def _inverse(self, y: Tensor) -> Tensor:
        check_event("y", y, self.dim)
        z = self._solve(y)
        if self.validate_args:
            with torch.no_grad():
                m, s = self.net(z)
                sigma = torch.sigmoid(s)
                magnitude = (sigma * z).abs() + ((1.0 - sigma) * m).abs()  # the terms of y = σ z + (1 − σ) m
            warn_if_inverse_unstable("IAF", self._solve, y, z, magnitude, "small gates σ = sigmoid(s) divide the "
                                     "error of every coordinate, and the autoregressive network carries it on")
        return z

    def _solve(self, y: Tensor) -> Tensor:
        """The sequential inverse, ``D`` passes of the network."""
        z = torch.zeros_like(y)
        positions = torch.arange(self.dim, device=y.device)
        for d in range(self.dim):
            # pass d sets coordinate i (m_i, s_i read only coordinates already exact) and leaves the
            # others at 0, so a not-yet-valid value never reaches the network (inf · 0 in a mask is NaN)
            i = self.dim - 1 - d if self.reverse else d
            m, s = self.net(z)
            # (y − (1 − σ) m)/σ = y + (y − m) e^{−s}
            z = torch.where(positions == i, y + (y - m) * torch.exp(-s), z)
        return z
