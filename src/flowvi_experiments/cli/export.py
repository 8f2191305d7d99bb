"""``flowvi export RUN... --out results/mnist``: copy a run's results, as text, to a directory meant to be
committed: ``config.yaml``, ``summary.json``, ``log.csv``, every ``metrics*.json`` and per-image
``metrics*.per_image.csv`` (no checkpoints). ``flowvi report results/mnist/*`` renders from them.

    flowvi export runs/b100k/* --out results/mnist --prefix b100k-
"""

from __future__ import annotations

import argparse
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

    for run_dir in args.runs:
        if not (run_dir / "config.yaml").is_file():
            raise CLIError(f"{run_dir} is not a training run (no config.yaml)")
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
