"""Input checks shared by the library: clear errors that name the problem.

Checks on parameter values (finiteness, ``wᵀû ≥ −1``, a mask or permutation that is what it should
be) cost a device synchronisation, and under ``torch.compile`` a graph break. They follow the
``torch.distributions`` convention: on by default, off globally with :func:`set_validation` (or for a
block: ``with set_validation(False):``), and per transform with ``validate_args=False``
(:class:`~flowvi.transforms.FlowTransform`; ``None``, the default, follows the global setting).
Shapes are always checked: they are known without looking at the data (free under ``torch.compile``).
Structural checks of fixed tensors (a NICE mask, a permutation, an orthogonal ``Q``) run once, when the
step is built or its state is loaded, never per call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

#: what :func:`check_values` takes: ``(message, bad)`` pairs, or a function that builds them when the checks run
Checks = Sequence[tuple[str, Tensor]] | Callable[[], Sequence[tuple[str, Tensor]]]

_VALIDATE = True


class set_validation:  # lower case: a function that is also a context manager, like torch.set_grad_enabled
    """Enable or disable value checks (shapes are always checked).

    A call sets the global switch; used as a context manager it also restores the previous setting
    on exit, like ``torch.set_grad_enabled``: ``with flowvi.set_validation(False): ...`` runs a training
    loop's hot path (or a step under ``torch.compile``, which would graph-break on each check) without
    the checks and the rest of the program with them.

    Args:
        enabled: whether value checks run.

    >>> w, u = torch.tensor([float("nan"), 0.0]), torch.zeros(2)
    >>> fv.PlanarTransform(w, u, torch.tensor(0.0))
    Traceback (most recent call last):
    ...
    flowvi.validation.NonFiniteError: w has 1 non-finite entries (NaN or inf)
    >>> with fv.set_validation(False):                 # unchecked here, checked again after the block
    ...     t = fv.PlanarTransform(w, u, torch.tensor(0.0))
    """

    def __init__(self, enabled: bool) -> None:
        global _VALIDATE
        self.previous = _VALIDATE
        _VALIDATE = bool(enabled)

    def __enter__(self) -> set_validation:
        return self

    def __exit__(self, *exc: object) -> None:
        global _VALIDATE
        _VALIDATE = self.previous


def validation_enabled() -> bool:
    """Whether value checks are on (:func:`set_validation`); steps with costly checks consult it."""
    return _VALIDATE


def resolve_validation(validate_args: bool | None) -> bool:
    """``validate_args`` of a transform: ``None`` follows :func:`set_validation`, else as given."""
    return _VALIDATE if validate_args is None else bool(validate_args)



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


def check_finite(name: str, value: Tensor, enabled: bool | None = None) -> Tensor:
    """``value`` must be finite (one host synchronisation; none when checks are off: ``enabled``
    ``None`` follows :func:`set_validation`)."""
    if resolve_validation(enabled) and not torch.isfinite(value).all():
        bad = (~torch.isfinite(value)).sum().item()
        raise NonFiniteError(f"{name} has {bad} non-finite entries (NaN or inf)")
    return value


def check_values(checks: Checks, enabled: bool | None = None) -> None:
    """Raise :class:`NonFiniteError` with the message of every ``(message, bad)`` whose boolean
    tensor ``bad`` has a True entry, at the cost of one host synchronisation for all of them
    (none when validation is off; ``enabled`` ``None`` follows :func:`set_validation`). ``{n}`` in a
    message is replaced by the number of bad entries.

    ``checks`` is the list, or a function that returns it: then the ``bad`` tensors are computed only
    when the checks run, so a check that is off costs nothing (not even the ``isfinite`` passes over the
    parameters), which is what the training loop's hot path needs."""
    if not resolve_validation(enabled):
        return
    if callable(checks):
        checks = checks()
    if not checks:
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
