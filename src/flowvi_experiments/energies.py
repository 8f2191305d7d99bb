"""The 2-D unnormalized target densities ``p(z) ∝ exp(−U(z))`` of Table 1 / Figure 3 (section 6.1).

Each energy maps a ``(N, 2)`` tensor to the ``(N,)`` tensor ``U(z)``:

    w1(z) = sin(2π z1 / 4),  w2(z) = 3 exp(−½((z1 − 1)/0.6)²),  w3(z) = 3 σ((z1 − 1)/0.3)
    U1(z) = ½((‖z‖ − 2)/0.4)² − ln(e^{−½((z1−2)/0.6)²} + e^{−½((z1+2)/0.6)²})
    U2(z) = ½((z2 − w1(z))/0.4)²
    U3(z) = −ln(e^{−½((z2−w1(z))/0.35)²} + e^{−½((z2−w1(z)+w2(z))/0.35)²})
    U4(z) = −ln(e^{−½((z2−w1(z))/0.4)²} + e^{−½((z2−w1(z)+w3(z))/0.35)²})

:func:`load_target` resolves a built-in name or a user's ``path/to/file.py:fn`` into a checked
:class:`Target` (energy, plotting/quadrature box, whether it is normalizable on R²).
"""

from __future__ import annotations

import importlib.util
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

Energy = Callable[[Tensor], Tensor]
Box = tuple[float, float, float, float]

#: the box of Figure 3 (xmin, xmax, ymin, ymax)
DEFAULT_BOX: Box = (-4.0, 4.0, -4.0, 4.0)


def _w1(z: Tensor) -> Tensor:
    return torch.sin(2 * math.pi * z[..., 0] / 4)


def _w2(z: Tensor) -> Tensor:
    return 3 * torch.exp(-0.5 * ((z[..., 0] - 1) / 0.6) ** 2)


def _w3(z: Tensor) -> Tensor:
    return 3 * torch.sigmoid((z[..., 0] - 1) / 0.3)


def _logaddexp(x: Tensor, y: Tensor) -> Tensor:
    """``ln(eˣ + eʸ) = max + ln(1 + e^{−|x − y|})``: stable, and so are its first *and second*
    derivatives (``torch.logaddexp``'s double backward overflows in float32 once ``|x − y| ≳ 88``,
    which Langevin and HVI, which differentiate ``∇U``, reach at ``|z1| > 7.9`` on U1)."""
    return torch.maximum(x, y) + torch.log1p(torch.exp(-(x - y).abs()))


def _neg_logaddexp_quad(a: Tensor, b: Tensor) -> Tensor:
    """``−ln(e^{−½a²} + e^{−½b²})`` computed stably."""
    return -_logaddexp(-0.5 * a**2, -0.5 * b**2)


def u1(z: Tensor) -> Tensor:
    """U1: a ring of radius 2 with two modes at z1 = ±2 (Table 1)."""
    ring = 0.5 * ((z.norm(dim=-1) - 2) / 0.4) ** 2
    return ring + _neg_logaddexp_quad((z[..., 0] - 2) / 0.6, (z[..., 0] + 2) / 0.6)


def u2(z: Tensor) -> Tensor:
    """U2: a sine-shaped ridge (Table 1)."""
    return 0.5 * ((z[..., 1] - _w1(z)) / 0.4) ** 2


def u3(z: Tensor) -> Tensor:
    """U3: a sine ridge that splits around z1 = 1 (Table 1)."""
    d = z[..., 1] - _w1(z)
    return _neg_logaddexp_quad(d / 0.35, (d + _w2(z)) / 0.35)


def u4(z: Tensor) -> Tensor:
    """U4: a sine ridge with a second, shifted ridge for z1 > 1 (Table 1)."""
    d = z[..., 1] - _w1(z)
    return -_logaddexp(-0.5 * (d / 0.4) ** 2, -0.5 * ((d + _w3(z)) / 0.35) ** 2)


@dataclass(frozen=True)
class Target:
    """A 2-D target ``p(z) ∝ exp(−U(z))``.

    Attributes:
        name: ``U1`` … ``U4`` or the user's ``file.py:fn``.
        energy: ``U``, ``(N, 2) -> (N,)``.
        box: ``(xmin, xmax, ymin, ymax)`` for plots and the box quadrature.
        normalizable: ``True`` when ``∫_{R²} e^{−U}`` is finite, so ``KL(q‖p)`` on R² exists
            (U1, and user targets, which the user declares normalizable); U2–U4 have constant
            mass along z1 and only get a KL on ``box``.
    """

    name: str
    energy: Energy
    box: Box = DEFAULT_BOX
    normalizable: bool = True

    def log_density(self, z: Tensor) -> Tensor:
        """``−U(z)`` for ``z`` of shape ``(*batch, 2)`` (the log joint of section 6.1)."""
        flat = z.reshape(-1, 2)
        return -self.energy(flat).reshape(z.shape[:-1])


BUILTIN: dict[str, tuple[Energy, bool]] = {
    "U1": (u1, True),
    "U2": (u2, False),
    "U3": (u3, False),
    "U4": (u4, False),
}


class TargetError(ValueError):
    """A user target that cannot be loaded or evaluated: the message says why."""


def check_box(box: Box) -> Box:
    """``box`` must be four finite numbers with ``xmin < xmax`` and ``ymin < ymax``."""
    if len(box) != 4:
        raise TargetError(f"a box needs four numbers xmin xmax ymin ymax, got {len(box)}")
    xmin, xmax, ymin, ymax = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (xmin, xmax, ymin, ymax)):
        raise TargetError(f"box must be finite, got {box}")
    if not (xmin < xmax and ymin < ymax):
        raise TargetError(f"box needs xmin < xmax and ymin < ymax, got {box}")
    return (xmin, xmax, ymin, ymax)


def load_energy_file(spec: str) -> Energy:
    """Load ``fn`` from ``path/to/file.py:fn``; raise :class:`TargetError` with a clear message."""
    path_str, sep, fn_name = spec.rpartition(":")
    if not sep or not path_str or not fn_name:
        raise TargetError(f"target {spec!r} must be U1, U2, U3, U4 or path/to/file.py:function")
    path = Path(path_str)
    if not path.is_file():
        raise TargetError(f"target file {path_str!r} does not exist")
    module_name = f"_flowvi_user_target_{abs(hash(str(path.resolve())))}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None:
        raise TargetError(f"cannot import {path_str!r} as a Python file")
    module = importlib.util.module_from_spec(module_spec)
    try:
        sys.modules[module_name] = module
        module_spec.loader.exec_module(module)
    except Exception as exc:  # the user's file: report any failure in one line
        sys.modules.pop(module_name, None)
        raise TargetError(f"importing {path_str!r} failed: {type(exc).__name__}: {exc}") from exc
    fn = getattr(module, fn_name, None)
    if fn is None:
        raise TargetError(f"{path_str!r} has no function {fn_name!r}")
    if not callable(fn):
        raise TargetError(f"{path_str}:{fn_name} is not callable")
    return fn


def check_energy(name: str, energy: Energy, box: Box, n: int = 64) -> None:
    """Evaluate ``energy`` on ``n`` points of ``box``: it must return ``n`` finite values (shape ``(n,)``)."""
    xmin, xmax, ymin, ymax = box
    gen = torch.Generator().manual_seed(0)
    u = torch.rand(n, 2, generator=gen)
    z = torch.stack([xmin + (xmax - xmin) * u[:, 0], ymin + (ymax - ymin) * u[:, 1]], -1)
    try:
        out = energy(z)
    except Exception as exc:
        raise TargetError(f"target {name} raised {type(exc).__name__} on a (N, 2) input: {exc}") from exc
    if not isinstance(out, Tensor):
        raise TargetError(f"target {name} must return a torch.Tensor, got {type(out).__name__}")
    if out.shape != (n,):
        raise TargetError(f"target {name} must map (N, 2) to (N,): for N={n} it returned shape {tuple(out.shape)}")
    if not out.is_floating_point():
        raise TargetError(f"target {name} must return a floating-point tensor, got {out.dtype}")
    if not torch.isfinite(out).all():
        bad = int((~torch.isfinite(out)).sum())
        raise TargetError(f"target {name} returned {bad} non-finite values (NaN or inf) of {n} inside the box {box}")


def load_target(spec: str, box: Box | None = None) -> Target:
    """Resolve ``U1`` … ``U4`` (case-insensitive) or ``path/to/file.py:fn`` into a checked :class:`Target`.

    A user target is taken as normalizable on R² (its KL is then ``F + ln Z`` with ``ln Z`` by
    quadrature on a grid widened until it converges, see :mod:`flowvi_experiments.quadrature`).
    """
    box = check_box(box) if box is not None else DEFAULT_BOX
    key = spec.upper()
    if key in BUILTIN:
        energy, normalizable = BUILTIN[key]
        target = Target(key, energy, box, normalizable)
    else:
        target = Target(spec, load_energy_file(spec), box, True)
    check_energy(target.name, target.energy, box)
    return target
