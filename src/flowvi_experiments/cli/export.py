"""``flowvi export RUN... --out results/mnist``: copy a run's results, as text, to a directory meant to be
committed: ``config.yaml``, ``summary.json``, ``log.csv``, every ``metrics*.json`` and per-image
``metrics*.per_image.csv`` (no checkpoints). ``flowvi report results/mnist/*`` renders from them.
Each run is checked and copied holding its writer lock (:mod:`flowvi_experiments.training.lock`), so a
run that ``train --resume`` or ``evaluate`` is changing is refused, never exported half-written.

    flowvi export runs/b100k/* --out results/mnist --prefix b100k-
"""

from __future__ import annotations

import argparse
import errno
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from .main import CLIError

#: what a committed result holds (glob patterns); everything else in a run directory stays behind
RESULT_FILES: tuple[str, ...] = ("config.yaml", "summary.json", "log.csv", "metrics*.json", "metrics*.per_image.csv")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="copy runs' results (config, summary, metrics, log; no checkpoints) for committing",
        description="Copy each run's config.yaml, summary.json, log.csv, metrics*.json and metrics*.per_image.csv "
        "to OUT/<run name>/, atomically; checkpoints and TensorBoard files stay behind.",
    )
    p.add_argument("runs", nargs="+", type=Path, help="run directories written by flowvi train")
    p.add_argument("--out", type=Path, required=True, help="results directory (e.g. results/mnist)")
    p.add_argument("--prefix", default="",
                   help="prefix of the exported names (e.g. b100k- for results/mnist/b100k-diagonal)")
    p.add_argument("--force", action="store_true", help="replace results already exported under the same name")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..atomic import atomic_write

    with ExitStack() as held:
        for run_dir in args.runs:
            if not (run_dir / "config.yaml").is_file():
                raise CLIError(f"{run_dir} is not a training run (no config.yaml)")
            held.enter_context(_no_writer(run_dir))  # checked and copied while no writer can change it
        for run_dir in args.runs:
            if not (run_dir / "summary.json").is_file():
                raise CLIError(f"{run_dir} has no summary.json: the run has not ended (finish or interrupt it first)")
            target = args.out / (args.prefix + run_dir.resolve().name)
            if (target / "config.yaml").exists() and not args.force:
                raise CLIError(f"{target} already holds exported results; pass --force to replace them")
        for run_dir in args.runs:
            target = args.out / (args.prefix + run_dir.resolve().name)
            files = sorted({f for pattern in RESULT_FILES for f in run_dir.glob(pattern) if f.is_file()})
            for f in files:
                data = f.read_bytes()
                atomic_write(target / f.name, lambda fh, data=data: fh.write(data))
            print(f"{run_dir} -> {target}/ ({', '.join(f.name for f in files)})")
    return 0


@contextmanager
def _no_writer(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir``'s writer lock for the block, so that no ``train --resume`` or ``evaluate``
    changes the run while it is exported (one being active is a sentence). A run directory this
    user may not write cannot be locked: there it is enough that no writer holds the lock."""
    from ..training.lock import RunLockedError, acquire, holder, release

    try:
        path: Path | None = acquire(run_dir, "export", subject=str(run_dir))
    except RunLockedError as exc:
        raise CLIError(str(exc)) from None
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        path = None
        info = holder(run_dir)
        if info is not None:
            raise CLIError(f"{run_dir} is in use by a writer: flowvi {info.get('command', '?')} (pid "
                           f"{info.get('pid')} on host {info.get('host')}, started {info.get('started')}); "
                           "wait for it to finish") from None
    try:
        yield
    finally:
        if path is not None:
            release(path)
