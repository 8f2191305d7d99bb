"""One table of every numeric option of the command line and of the training config files.

:data:`RULES` maps an option's name (the config key, or the flag without dashes, ``-`` as ``_``) to its
type and range. :func:`check` validates one value against it and :func:`check_all` every known key of
a mapping, collecting all problems into one sentence; :class:`flowvi_experiments.training.TrainConfig` (config
files and ``flowvi train`` flags), ``flowvi energy``/``figure3``, ``flowvi evaluate`` and ``flowvi data
download`` all go through it, so a value is judged the same wherever it is given.

Checks: the type (``K: 10.7`` and ``K: true`` are named as a float and a boolean where an integer is
expected), finiteness (no NaN or inf), and the range, with open or closed ends.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import yaml

MAX_K = 1000  #: the longest flow accepted (memory grows linearly in K; the paper uses K ≤ 80)


@dataclass(frozen=True)
class Rule:
    kind: type  #: int or float
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False  #: lo itself is excluded
    hi_open: bool = False  #: hi itself is excluded
    note: str = ""

    def describe(self) -> str:
        if self.lo is not None and self.hi is not None:
            return f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}"
        if self.hi is not None:
            return f"{'<' if self.hi_open else '<='} {self.hi:g}"
        return "finite"


def _int(lo: int | None = None, hi: int | None = None, note: str = "") -> Rule:
    return Rule(int, lo, hi, note=note)


def _float(lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False) -> Rule:
    return Rule(float, lo, hi, lo_open, hi_open)


_POS = _float(0, lo_open=True)
_NONNEG = _float(0)
_UNIT_OPEN = _float(0, 1, hi_open=True)

RULES: dict[str, Rule] = {
    # model
    "K": _int(0, MAX_K, note=f"a flow of more than {MAX_K} steps is almost surely a typo"),
    "latent": _int(1), "hidden": _int(1), "window": _int(1), "hidden_layers": _int(1),
    "stochastic_layers": _int(1), "nice_hidden": _int(1), "nice_depth": _int(1),
    # optimisation
    "lr": _POS, "lr_final": _NONNEG, "momentum": _UNIT_OPEN, "rmsprop_alpha": _UNIT_OPEN,
    "adam_beta1": _UNIT_OPEN, "adam_beta2": _UNIT_OPEN, "grad_clip": _NONNEG, "warmup": _int(0),
    "batch_size": _int(1), "updates": _int(1), "steps": _int(0),
    "anneal_start": _float(0, 1), "anneal_steps": _int(0),
    # run control
    "seed": _int(0, 2**63 - 1), "threads": _int(0, 4096), "val_every": _int(1), "ckpt_every": _int(1),
    "log_every": _int(1), "early_stopping": _int(0), "train_limit": _int(0), "val_size": _int(0),
    # evaluation
    "samples": _int(1), "chunk_size": _int(1), "limit": _int(0), "eval_samples": _int(2),
    # Langevin
    "step_size": _POS, "chains": _int(2), "bins": _int(2),
    # downloads
    "timeout": _POS,
}


def _kind_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, str):
        return "a string"
    return f"a {type(value).__name__}"


def problem(name: str, value: Any, rule: Rule | None = None, flag: str | None = None) -> str | None:
    """What is wrong with ``value`` for option ``name`` (None: nothing)."""
    rule = rule or RULES.get(name)
    if rule is None or value is None:
        return None
    shown = flag or name
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        want = "an integer" if rule.kind is int else "a number"
        return f"{shown} must be {want}, got {value!r} ({_kind_name(value)})"
    if rule.kind is int and not isinstance(value, int):
        return f"{shown} must be an integer, got {value!r} ({_kind_name(value)})"
    if not math.isfinite(value):
        return f"{shown} must be finite, got {value}"
    low_bad = rule.lo is not None and (value <= rule.lo if rule.lo_open else value < rule.lo)
    high_bad = rule.hi is not None and (value >= rule.hi if rule.hi_open else value > rule.hi)
    if low_bad or high_bad:
        return f"{shown} must be {rule.describe()}, got {value!r}" + (f" ({rule.note})" if rule.note else "")
    return None


def check_all(values: dict[str, Any], flags: bool = False) -> list[str]:
    """The problems of every key of ``values`` that :data:`RULES` knows (``flags``: name them as ``--flag``)."""
    out = []
    for key, value in values.items():
        msg = problem(key, value, flag=("-K" if key == "K" else "--" + key.replace("_", "-")) if flags else None)
        if msg:
            out.append(msg)
    return out


def parse_mapping(text: str) -> Any:
    """A flag's YAML mapping, ``"{m: 20, shared_q: true}"`` (``"{}"`` or ``""``: none), as ``flowvi train
    --family-options`` and ``flowvi energy``/``fit --family-options`` read it. Text that is not YAML is
    returned as read, for the checks to name in their one sentence of problems; ``"{m:20}"`` (YAML reads
    the key ``m:20`` with no value) raises ``argparse.ArgumentTypeError`` saying to write ``{m: 20}``."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, dict):
        glued = [k for k, v in value.items() if v is None and ":" in str(k)]
        if glued:
            raise argparse.ArgumentTypeError(f"YAML reads {text!r} as the key {glued[0]!r} with no value: write a "
                                             "space after each colon, as in '{m: 20}'")
    return {} if value is None else value


def check_url(name: str, url: str | None) -> str | None:
    """What is wrong with ``url`` (None: nothing): it must be http(s) or file with a host or path."""
    if url is None:
        return None
    try:
        parts = urlparse(url)
    except ValueError as exc:
        return f"{name} is not a URL ({exc}): {url!r}"
    if parts.scheme not in ("http", "https", "file") or not (parts.netloc or parts.path):
        return f"{name} must be an http://, https:// or file:// URL, got {url!r}"
    if parts.scheme != "file":
        try:
            parts.port  # noqa: B018 (raises on a bad port)
        except ValueError as exc:
            return f"{name} has a bad port ({exc}): {url!r}"
        if not parts.hostname:
            return f"{name} has no host name: {url!r}"
    return None
