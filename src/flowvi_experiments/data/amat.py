"""Parser of the ``.amat`` text format of statically binarized MNIST (Larochelle & Murray 2011):
one image per line, 784 whitespace-separated ``0``/``1`` values (28x28, row-major).
"""

from __future__ import annotations

import numpy as np

#: pixels per image (28 x 28)
PIXELS = 784

_SPACE, _TAB, _CR, _LF = (ord(c) for c in " \t\r\n")
_ZERO, _ONE = ord("0"), ord("1")


def parse_amat(data: bytes, source: str = "<bytes>", columns: int = PIXELS) -> np.ndarray:
    """Parse ``.amat`` text into a ``uint8`` array of shape ``(N, columns)`` with values 0/1.

    Vectorized over the whole text: every byte must be ``0``, ``1`` or whitespace, values are
    single characters, and every line holds exactly ``columns`` values (blank lines are only
    allowed at the end). Anything else raises :class:`~flowvi_experiments.data.DatasetError` naming
    ``source`` and the first offending line.
    """
    from .errors import DatasetError

    b = np.frombuffer(data, dtype=np.uint8)
    canonical = _parse_canonical(b, columns)
    if canonical is not None:
        return canonical
    is_value = (b == _ZERO) | (b == _ONE)
    is_newline = b == _LF
    is_blank = (b == _SPACE) | (b == _TAB) | (b == _CR)
    bad = ~(is_value | is_newline | is_blank)
    if bad.any():
        at = int(np.argmax(bad))
        raise DatasetError(
            f"{source}: not a binarized .amat file: byte {data[at : at + 1]!r} on line {_line_of(b, at)} "
            f"(expected only 0/1 values separated by whitespace)"
        )
    adjacent = is_value[1:] & is_value[:-1]
    if adjacent.any():
        at = int(np.argmax(adjacent))
        raise DatasetError(
            f"{source}: not a binarized .amat file: value {data[at : at + 2].decode()}... on line "
            f"{_line_of(b, at)} (expected single 0/1 values)"
        )
    # values per line: sums of is_value over the segments that start after each newline
    starts = np.concatenate(([0], np.flatnonzero(is_newline) + 1))
    starts = starts[starts < b.size]
    counts = np.add.reduceat(is_value.view(np.uint8), starts, dtype=np.int64) if b.size else starts
    filled = np.flatnonzero(counts)
    n_rows = int(filled[-1]) + 1 if filled.size else 0
    if n_rows == 0:
        raise DatasetError(f"{source}: empty .amat file (no values)")
    wrong = np.flatnonzero(counts[:n_rows] != columns)
    if wrong.size:
        line = int(wrong[0])
        raise DatasetError(
            f"{source}: line {line + 1} has {int(counts[line])} values, expected {columns} "
            f"(truncated or not a {columns}-pixel .amat file)"
        )
    return (b[is_value] - _ZERO).reshape(n_rows, columns)


def _line_of(b: np.ndarray, at: int) -> int:
    return int(np.count_nonzero(b[:at] == _LF)) + 1


def _parse_canonical(b: np.ndarray, columns: int) -> np.ndarray | None:
    """Fast path for the canonical layout (``"v v ... v\\n"``, one space between values, each
    line ``2 * columns`` bytes); ``None`` when ``b`` is laid out otherwise."""
    width = 2 * columns
    if b.size == 0 or b.size % width:
        return None
    rows = b.reshape(-1, width)
    values = rows[:, 0::2] - np.uint8(_ZERO)  # '0' -> 0, '1' -> 1, anything else > 1
    separators = rows[:, 1::2]
    if (values > 1).any() or (separators[:, :-1] != _SPACE).any() or (separators[:, -1] != _LF).any():
        return None
    return values
