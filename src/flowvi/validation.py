"""Input checks shared by the library: clear errors that name the problem.

Checks on parameter values (finiteness) cost a device synchronisation, so like
``torch.distributions`` they can be switched off globally with :func:`set_validation`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

_VALIDATE = True


def set_validation(enabled: bool) -> None:
    """Enable or disable value checks (shapes are always checked)."""
    global _VALIDATE
    _VALIDATE = bool(enabled)


def validation_enabled() -> bool:
    """Whether value checks are on (:func:`set_validation`); steps with costly checks consult it."""
    return _VALIDATE


@contextmanager
def validation_scope(enabled: bool) -> Iterator[None]:
    """Value checks on or off inside the ``with`` block only, then back to what they were.

    The fit loop (:class:`flowvi.loop.TrainStep`) runs its updates under ``validation_scope(False)``:
    the checks cost a host synchronisation each, and a non-finite value there still reaches the loss,
    which the loop checks on the device. The default (checks on) is unchanged everywhere else.
    """
    global _VALIDATE
    before = _VALIDATE
    _VALIDATE = bool(enabled)
    try:
        yield
    finally:
        _VALIDATE = before


def check_tensor(name: str, value: object) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    return value


def check_event(name: str, value: Tensor, dim: int) -> Tensor:
    """``value`` must have a trailing event dimension of size ``dim``."""
    check_tensor(name, value)
    if value.dim() == 0 or value.shape[-1] != dim:
        raise ValueError(
            f"{name} must have a last (event) dimension of size {dim}, got shape {tuple(value.shape)}"
        )
    return value


class NonFiniteError(ValueError):
    """A non-finite (NaN or inf) or out-of-range value where the library needs a valid number."""


def check_finite(name: str, value: Tensor) -> Tensor:
    if _VALIDATE and not torch.isfinite(value).all():
        bad = (~torch.isfinite(value)).sum().item()
        raise NonFiniteError(f"{name} has {bad} non-finite entries (NaN or inf)")
    return value


def check_values(checks: list[tuple[str, Tensor]]) -> None:
    """Raise :class:`NonFiniteError` with the message of every ``(message, bad)`` whose boolean
    tensor ``bad`` has a True entry, at the cost of one host synchronisation for all of them
    (none when validation is off). ``{n}`` in a message is replaced by the number of bad entries."""
    if not _VALIDATE or not checks:
        return
    counts = torch.stack([bad.sum() for _, bad in checks]).tolist()
    problems = [msg.format(n=int(n)) for (msg, _), n in zip(checks, counts, strict=True) if n]
    if problems:
        raise NonFiniteError("; ".join(problems))


def not_finite(value: Tensor) -> Tensor:
    return ~torch.isfinite(value)


def check_same_event(names: tuple[str, ...], values: tuple[Tensor, ...]) -> int:
    dims = {n: v.shape[-1] if v.dim() else None for n, v in zip(names, values, strict=True)}
    if len(set(dims.values())) != 1 or None in dims.values():
        shapes = ", ".join(f"{n}{tuple(v.shape)}" for n, v in zip(names, values, strict=True))
        raise ValueError(f"dimension mismatch between parameters: {shapes}")
    return next(iter(dims.values()))
