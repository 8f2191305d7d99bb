"""Maxout units (Goodfellow et al. 2013), the deterministic layers of the paper's DLGM (section 6.2).

``maxout(x)_k = max_{j < window} (W x + b)_{k·window + j}``: each of the ``out_features`` units is
the maximum over a window of ``window`` consecutive linear units.
"""

from __future__ import annotations

from torch import Tensor, nn


class Maxout(nn.Module):
    """A linear layer to ``out_features × window`` units followed by a max over each window of 4 (§6.2)."""

    def __init__(self, in_features: int, out_features: int, window: int = 4) -> None:
        super().__init__()
        if in_features < 1 or out_features < 1 or window < 1:
            raise ValueError(
                f"in_features, out_features and window must be >= 1, got {in_features}, {out_features}, {window}"
            )
        self.in_features, self.out_features, self.window = in_features, out_features, window
        self.linear = nn.Linear(in_features, out_features * window)

    def forward(self, x: Tensor) -> Tensor:
        y = self.linear(x)
        return y.view(*y.shape[:-1], self.out_features, self.window).amax(-1)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, window={self.window}"


def maxout_mlp(in_features: int, hidden: int, layers: int, window: int = 4) -> nn.Sequential:
    """``layers`` Maxout layers of ``hidden`` units each (``layers >= 1``)."""
    if layers < 1:
        raise ValueError(f"a Maxout network needs at least one layer, got {layers}")
    mods = [Maxout(in_features if i == 0 else hidden, hidden, window) for i in range(layers)]
    return nn.Sequential(*mods)
