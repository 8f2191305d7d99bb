"""Entry point of the ``flowvi`` console command.

Each subcommand module in :data:`SUBCOMMANDS` defines ``register(subparsers)``, which adds its
parser and sets ``func`` (called with the parsed arguments, returning an exit code). User
errors are raised as :class:`CLIError` and printed as one line, with exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: subcommand modules under ``flowvi_experiments.cli``, in the order ``flowvi --help`` lists them
SUBCOMMANDS: tuple[str, ...] = ("energy", "fit", "train", "data", "evaluate", "report", "export")


class CLIError(Exception):
    """An error in what the user asked for: printed without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowvi", description="Variational inference with normalizing flows (Rezende & Mohamed 2015)."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"flowvi_experiments.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CLIError as exc:
        print(f"flowvi {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    # ``python -m flowvi_experiments.cli.main`` (e.g. under torchrun): run the imported module's main, so that the
    # subcommands' CLIError is the class caught there (this file also runs as ``__main__``)
    from flowvi_experiments.cli.main import main as _main

    sys.exit(_main())
