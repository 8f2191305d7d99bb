"""Entry point of the ``flowvi`` console command.

Each subcommand module in :data:`SUBCOMMANDS` defines ``register(subparsers)``, which adds its
parser and sets ``func`` (called with the parsed arguments, returning an exit code). User
errors are raised as :class:`CLIError` and printed as one line, with exit status 2.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import importlib.util
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..allocator import retain_freed_memory

#: subcommand modules under ``flowvi_experiments.cli``, in the order ``flowvi --help`` lists them
SUBCOMMANDS: tuple[str, ...] = ("energy", "fit", "train", "status", "data", "evaluate", "report", "export")


class CLIError(Exception):
    """An error in what the user asked for: printed without a traceback."""


@contextmanager
def locked(directory: Path, command: str, enabled: bool = True) -> Iterator[None]:
    """Hold the run directory's writer lock (:mod:`flowvi_experiments.training.lock`); a second writer is a CLIError."""
    from ..training.lock import RunLockedError, run_lock

    try:
        with run_lock(directory, command, enabled):
            yield
    except RunLockedError as exc:
        raise CLIError(str(exc)) from None
    except (PermissionError, FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
        raise CLIError(_unwritable(directory, exc)) from None


def _unwritable(directory: Path, exc: OSError) -> str:
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        return f"cannot use {directory} as an output folder: {exc.filename or directory} is not a folder"
    return f"cannot write to {directory}: {exc.strerror or exc}"


def writable_dir(directory: Path, flag: str) -> Path:
    """Create ``directory`` if needed and prove it writable with a probe file, before any work starts."""
    import tempfile

    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".flowvi-probe.", suffix=".tmp", dir=directory)
        import os

        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise CLIError(f"{flag}: " + _unwritable(directory, exc)) from None
    return directory


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Inside the block SIGTERM raises KeyboardInterrupt, so that ``energy`` and ``figure3`` treat a
    ``kill`` like a Ctrl-C: they write what exists."""
    import signal

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def one_line_warnings(command: str) -> Iterator[None]:
    """Inside the block flowvi's own warnings print as one line, ``flowvi COMMAND: warning: MESSAGE``, like its
    errors; Python's default format adds the file, the line number and the warning call's source line, which reads
    as a traceback in a lane's log. Warnings of other packages keep Python's format; recording them (``pytest.warns``,
    ``catch_warnings(record=True)``) is unaffected, as only the format changes."""
    import os
    import warnings

    here = Path(__file__).resolve().parents[1]  # flowvi_experiments, beside the library's flowvi
    roots = tuple(str(p) + os.sep for p in (here, here.parent / "flowvi"))
    previous = warnings.formatwarning

    def format_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                       line: str | None = None) -> str:
        if os.path.realpath(filename).startswith(roots):
            return f"flowvi {command}: warning: {message}\n"
        return previous(message, category, filename, lineno, line)

    warnings.formatwarning = format_warning
    try:
        yield
    finally:
        warnings.formatwarning = previous


def check_options(args: argparse.Namespace, names: Sequence[str], **values: object) -> None:
    """Validate the options ``names`` of ``args`` (and ``values``) against the one table of
    :mod:`flowvi_experiments.cli.options`; every problem goes into one CLIError."""
    from .options import check_all

    given = {n: getattr(args, n) for n in names}
    given.update(values)
    problems = check_all(given, flags=True)
    if problems:
        raise CLIError("; ".join(problems))


def add_family_options(parser: argparse.ArgumentParser, family_flag: str) -> None:
    """``--family-options MAPPING``: keywords of :func:`flowvi.make_steps` for the family of ``family_flag``,
    a YAML mapping as in ``flowvi train --family-options`` and the ``family_options`` of its configs."""
    from flowvi.steps import STEP_OPTIONS

    yaml_kinds = (int, float, bool, str)  # what a YAML mapping can give (not NICE's torch.Generator)
    takes = "; ".join(f"{name}: {', '.join(o for o, spec in specs.items() if spec.kind in yaml_kinds)}"
                      for name, specs in STEP_OPTIONS.items() if specs and name != "nice")
    from .options import parse_mapping

    parser.add_argument(
        "--family-options", type=parse_mapping, default=None, metavar="MAPPING",
        help=f"options of the {family_flag} family's steps, a YAML mapping as in flowvi train's family_options, "
        f"e.g. '{{m: 20, shared_q: true}}' (keywords of flowvi.make_steps; by family: {takes})".replace("%", "%%"),
    )


def family_options(args: argparse.Namespace, family: str, dim: int, family_flag: str) -> dict[str, Any]:
    """``args.family_options`` checked for ``family`` on ``dim`` coordinates by the library's rules
    (:func:`flowvi.steps.check_step_options`): one CLIError naming every problem, before any work."""
    from collections.abc import Mapping

    from flowvi.steps import STEP_OPTIONS, check_step_options

    options = args.family_options
    where = f"--family-options of {family_flag} {family}"
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise CLIError(f"--family-options must be a YAML mapping of option names to values, such as "
                       f"'{{m: 20, shared_q: true}}', got {options!r}")
    if str(family).lower() not in STEP_OPTIONS:
        if options:
            raise CLIError(f"{where}: the {family} posterior takes no options, got {', '.join(map(repr, options))}")
        return {}
    try:
        return check_step_options(family, options, dim, where=where)
    except (TypeError, ValueError) as exc:
        raise CLIError(str(exc)) from None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``flowvi`` parser. When ``argv`` starts with a subcommand, only that subcommand's module is imported and
    registered (``flowvi status`` then starts without torch); otherwise all of them, for ``flowvi --help``."""
    parser = argparse.ArgumentParser(
        prog="flowvi", description="Variational inference with normalizing flows (Rezende & Mohamed 2015)."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    first = next(iter(argv), None) if argv is not None else None
    for name in (first,) if first in SUBCOMMANDS else SUBCOMMANDS:
        importlib.import_module(f"flowvi_experiments.cli.{name}").register(sub)
    return parser


#: the import names of the experiments extra's packages (pyproject.toml) and their distributions
EXTRA_PACKAGES = {"yaml": "pyyaml", "matplotlib": "matplotlib", "tqdm": "tqdm"}


def missing_extra() -> list[str]:
    """The distributions of the experiments extra that cannot be imported (looked up, not imported)."""
    return [dist for name, dist in EXTRA_PACKAGES.items() if importlib.util.find_spec(name) is None]


def main(argv: Sequence[str] | None = None) -> int:
    missing = missing_extra()  # before any work: a figure at the end of a run must not fail on a missing package
    if missing:
        print(f"flowvi: error: the flowvi command needs the experiments extra ({', '.join(missing)} "
              f"{'is' if len(missing) == 1 else 'are'} not installed): pip install -c constraints.txt "
              "'flowvi[experiments]'", file=sys.stderr)
        return 2
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    retain_freed_memory()  # a process setting of every command: freed tensors' pages stay mapped
    try:
        with one_line_warnings(args.command):
            return int(args.func(args) or 0)
    except CLIError as exc:
        print(f"flowvi {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f" while writing {exc.filename}" if exc.filename else ""
        print(f"flowvi {args.command}: error: no space left on device{where}; the files written before are "
              "kept (a checkpoint is replaced only once its successor is complete)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    # ``python -m flowvi_experiments.cli.main`` (e.g. under torchrun): run the imported module's main, so that the
    # subcommands' CLIError is the class caught there (this file also runs as ``__main__``)
    from flowvi_experiments.cli.main import main as _main

    sys.exit(_main())
