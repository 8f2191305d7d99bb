"""``flowvi train``: train a DLGM with a flow posterior on binarized MNIST (section 6.2) or CIFAR-10 (Table 3).

    flowvi train --config configs/mnist/planar-k10.yaml --out runs/planar-k10 [--updates N] [--data-dir D]
    flowvi train --out runs/planar-k10 --resume          # continue an interrupted run
    flowvi train --config ... --out ... --check          # check config and arguments; train nothing

Data-parallel on one machine (docs/distributed.md); ``batch_size`` stays the global minibatch:

    torchrun --standalone --nproc_per_node 2 -m flowvi_experiments.cli.main train --config ... --out ...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .main import CLIError, locked

if TYPE_CHECKING:
    from ..training.config import TrainConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a DLGM with a flow posterior on binarized MNIST or CIFAR-10",
        description="Train a DLGM on binarized MNIST (data: mnist) or CIFAR-10 (data: cifar10). Every config key "
        "can be given on the command line and overrides the config file.",
    )
    p.add_argument("--config", type=Path, help="YAML config (e.g. configs/mnist/planar-k10.yaml)")
    p.add_argument("--out", type=Path, required=True, help="run directory (checkpoint, logs, summary)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--refit-from", type=Path, default=None, metavar="RUN",
                   help="refit RUN's recipe on train + valid (all of the data's training images) for the number "
                   "of updates its validation selected (best.pt's update); evaluate the refit with --checkpoint last")
    p.add_argument("--check", action="store_true",
                   help="check the config, the arguments and the run directory as a training would, print the "
                   "resolved config and exit without loading data or writing anything")
    from ..training.config import add_config_arguments

    add_config_arguments(p)
    p.set_defaults(func=run)


def _resolve_config(args: argparse.Namespace):  # -> TrainConfig
    from ..training import CHECKPOINT, CONFIG, TrainConfig, load_config_file, overrides_from_args

    values: dict = {}
    if args.refit_from is not None:
        if args.resume or args.config is not None:
            raise CLIError("--refit-from takes the recipe of the selected run; do not pass --config or --resume")
        values.update(_refit_values(args.refit_from))
    if args.resume:
        if not (args.out / CHECKPOINT).is_file():
            raise CLIError(f"--resume: no checkpoint in {args.out} (expected {args.out / CHECKPOINT})")
        try:
            values.update(load_config_file(args.out / CONFIG))
        except (FileNotFoundError, ValueError) as exc:
            raise CLIError(f"cannot resume {args.out}: {exc}") from None
        if args.config is not None:
            raise CLIError("--resume uses the run's own config.yaml; do not pass --config")
    elif args.config is not None:
        try:
            values.update(load_config_file(args.config))
        except (FileNotFoundError, ValueError) as exc:
            raise CLIError(str(exc)) from None
    if not args.resume and (args.out / CHECKPOINT).exists():
        raise CLIError(f"{args.out} already holds a run; use --resume to continue it or choose another --out")
    overrides = overrides_from_args(args)
    if args.resume:
        from ..training.config import MODEL_KEYS

        defaults = TrainConfig().to_dict()  # a key an older config.yaml lacks had its default
        fixed = {"seed", "train_on", "batch_size", "train_limit", "binarization", "optimizer", "data", *MODEL_KEYS}
        changed = sorted(k for k in fixed & set(overrides) if overrides[k] != values.get(k, defaults[k]))
        if changed:
            raise CLIError(f"cannot change {', '.join(changed)} when resuming")
    values.update(overrides)
    values.setdefault("name", args.out.name)
    try:
        return TrainConfig.from_dict(values)
    except (TypeError, ValueError) as exc:
        raise CLIError(f"bad config: {exc}") from None


def _refit_values(run_dir: Path) -> dict:
    """The config of a refit on train + valid: ``run_dir``'s, for as many updates as its best.pt."""
    import json

    from ..training import CONFIG, SUMMARY, load_config_file

    try:
        values = load_config_file(run_dir / CONFIG)
        summary = json.loads((run_dir / SUMMARY).read_text())
    except (FileNotFoundError, ValueError) as exc:
        raise CLIError(f"--refit-from {run_dir}: {exc}") from None
    best = summary.get("best_update")
    if not isinstance(best, int) or best < 1:
        raise CLIError(f"--refit-from {run_dir}: its summary.json records no best_update (a run that validated "
                       "with model selection is needed)")
    if values.get("train_on", "train") != "train":
        raise CLIError(f"--refit-from {run_dir}: that run already trained on {values['train_on']}")
    values.update(train_on="train+valid", updates=best, name=f"{values.get('name', run_dir.name)}-refit")
    return values


def run(args: argparse.Namespace) -> int:
    from ..training.distributed import env_context

    try:
        env = env_context()
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    cfg = _resolve_config(args)  # fail on a bad config before taking the lock or joining the process group
    if args.check:
        import yaml

        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0
    with locked(args.out, "train", enabled=env.rank == 0):  # one writer per run directory (rank 0 writes)
        return _run_locked(args, cfg, env.world_size)


def _run_locked(args: argparse.Namespace, cfg: TrainConfig, world_size: int) -> int:
    from ..training.distributed import process_group

    if world_size == 1:
        return _train(args, cfg, rank=0, world_size=1, local_rank=0)
    from ..training.parent import stop_when_parent_dies
    from ..training.sharding import per_rank_batch

    stop_when_parent_dies()  # a killed torchrun launcher stops its workers
    try:
        per_rank_batch(cfg.batch_size, world_size)
        with process_group(cfg.device) as ctx:
            return _train(args, cfg, ctx.rank, ctx.world_size, ctx.local_rank)
    except ValueError as exc:
        raise CLIError(str(exc)) from None


def _train(args: argparse.Namespace, cfg: TrainConfig, rank: int, world_size: int, local_rank: int) -> int:
    """Load the data, train, report; with ``world_size`` > 1 inside the job's process group, and
    only rank 0 writes files and prints."""
    from ..data import DatasetError
    from ..training import CONFIG, NonFiniteLossError, Trainer
    from ..training.checkpoint import write_text
    from ..training.data_source import load_split

    try:
        train_x = load_split(cfg.binarization, "train", cfg.data_dir, cfg.verify_data, dataset=cfg.data)
        valid_x = load_split(cfg.binarization, "valid", cfg.data_dir, cfg.verify_data, dataset=cfg.data)
        if cfg.train_on == "train+valid":  # a refit: the validation bound is then a training-set number
            import torch

            train_x = torch.cat([train_x, valid_x])
    except DatasetError as exc:
        raise CLIError(str(exc)) from None
    try:
        trainer = Trainer(cfg, args.out, train_x, valid_x, resume=args.resume, rank=rank, world_size=world_size,
                          local_rank=local_rank)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    if args.resume and rank == 0:  # record overrides such as a larger --updates
        import yaml

        write_text(args.out / CONFIG, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    try:
        result = trainer.run()
    except NonFiniteLossError as exc:
        if rank == 0:
            print(f"flowvi train: {exc}", file=sys.stderr)
        return 1
    if rank != 0:
        return 130 if result.status == "interrupted" else 0
    val = "n/a" if result.val_bound is None else f"{result.val_bound:.3f}"
    procs = f" on {world_size} processes" if world_size > 1 else ""
    print(f"{result.status}: {result.updates} updates{procs} in {result.wall_s:.0f} s; validation bound {val} nats; "
          f"run directory {args.out}")
    if result.status == "interrupted":
        again = "torchrun ... -m flowvi_experiments.cli.main train" if world_size > 1 else "flowvi train"
        print(f"checkpoint saved; continue with: {again} --out {args.out} --resume", file=sys.stderr)
        return 130
    return 0
