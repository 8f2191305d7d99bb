"""The one error for a configuration key that does not exist (config files, model configs)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def unknown_keys_error(what: str, unknown: Iterable[str], valid: Iterable[str]) -> str:
    """One sentence naming the unknown key(s) of a ``what`` mapping, the closest valid one for each,
    and every valid key: ``unknown config key 'updatez' (did you mean 'updates'?); the keys are: ...``."""
    valid = list(valid)
    named = []
    for key in sorted(unknown):
        close = difflib.get_close_matches(key, valid, n=1)
        named.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
    s = "s" if len(named) > 1 else ""
    return f"unknown {what} key{s} {', '.join(named)}; the keys are: {', '.join(valid)}"
