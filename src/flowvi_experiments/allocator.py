"""Keep freed memory inside the process, so that a training step does not fault in fresh pages each update.

A DLGM step allocates and frees the same tensors every update. With glibc's default malloc settings the
top of the heap is returned to the kernel whenever more than the (dynamic) trim threshold is free, and the
next update touches those pages again: thousands of minor page faults in many updates of a K = 80 step
(measured in docs/benchmarks.md, "What made the step 15% faster").
:func:`retain_freed_memory` sets two of glibc's ``mallopt`` parameters
(the same ones as the environment variables ``MALLOC_TRIM_THRESHOLD_`` and ``MALLOC_MMAP_THRESHOLD_``):
freed memory stays in the process up to :data:`TRIM_THRESHOLD`, and blocks up to :data:`MMAP_THRESHOLD`
come from the heap (so they are reused) instead of a fresh ``mmap`` each time. Only where memory is placed
changes, never a computed value: the training runs stay bit for bit the same.

It is a setting of the process (like ``torch.set_num_threads``), so it lives with the experiments' command line
and trainer, not in the library. It does nothing where the C library is not glibc (macOS, musl,
Windows), and nothing when the user has set any ``MALLOC_*_`` variable of glibc themselves, or
``FLOWVI_MALLOC_DEFAULTS`` (any value: keep glibc's defaults; the benchmark's ``--default-malloc`` uses it).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Mapping

#: glibc's ``mallopt`` parameter numbers (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
#: free memory at the top of the heap kept in the process before any is given back (bytes)
TRIM_THRESHOLD = 1 << 30
#: blocks up to this size come from the heap; glibc's largest allowed value on 64-bit systems (bytes)
MMAP_THRESHOLD = 32 << 20
#: glibc's own environment variables for these settings (if the user set one, their choice stands), and ours
#: to keep glibc's defaults
USER_VARIABLES = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_",
                  "FLOWVI_MALLOC_DEFAULTS")

_applied: bool | None = None


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018  (only glibc has it)
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        libc.mallopt.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def keeps_glibc_defaults(environ: Mapping[str, str]) -> bool:
    """Whether this environment asks for glibc's own malloc settings (one of :data:`USER_VARIABLES` is set)."""
    return any(v in environ for v in USER_VARIABLES)


def retain_freed_memory() -> bool:
    """Set glibc's trim and mmap thresholds for this process (once); True if they are now in effect.

    False where the C library is not glibc, or one of :data:`USER_VARIABLES` is set (glibc's settings are kept).
    """
    global _applied
    if _applied is None:
        libc = None if keeps_glibc_defaults(os.environ) else _glibc()
        _applied = bool(
            libc is not None
            and libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
        )
    return _applied
