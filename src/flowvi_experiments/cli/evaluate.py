"""``flowvi evaluate RUN``: test −ln p(x) by importance sampling and the test bound F(x) (section 6.2).

    flowvi evaluate runs/planar-k10 --samples 200      # writes runs/planar-k10/metrics.json
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

from .main import CLIError, check_options, locked


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="importance-sampled test -ln p(x) and bound of a trained run",
        description="Estimate -ln p(x) by importance sampling with the inference network as proposal, "
        "and the free energy F(x), with standard errors; writes RUN/metrics.json.",
    )
    p.add_argument("run", type=Path, help="run directory written by flowvi train")
    p.add_argument("--samples", type=int, default=200, help="importance samples S per data point (default 200)")
    p.add_argument("--split", choices=("test", "valid", "train"), default="test")
    p.add_argument("--limit", type=int, default=0, help="evaluate only the first N images of the split (0 = all)")
    p.add_argument("--batch-size", type=int, default=100, help="data points per forward pass")
    p.add_argument("--chunk-size", type=int, default=None,
                   help="samples per forward pass (bounds memory; default: 100 on the CPU, on a GPU as many as a "
                   "quarter of its free memory holds)")
    p.add_argument("--seed", type=int, default=0, help="seed of the importance samples")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    p.add_argument("--data-dir", default=None, help="dataset directory (default: the run's, else the default)")
    p.add_argument("--checkpoint", choices=("best", "last"), default=None,
                   help="best: the model at its lowest validation bound (best.pt); last: the end of training "
                   "(checkpoint.pt); default: best, or last for a refit on train + valid (flowvi train --refit-from)")
    p.add_argument("--output", type=Path, default=None, help="metrics file (default RUN/metrics.json)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = args.output or args.run / "metrics.json"
    if not args.run.is_dir():
        raise CLIError(f"no run directory {args.run}")
    if out.is_dir():
        raise CLIError(f"--output {out} is a folder; give a file name such as {out / 'metrics.json'}")
    with locked(out.parent, "evaluate"):  # one writer per run directory: not while it trains
        return _evaluate(args, out)


def _evaluate(args: argparse.Namespace, out: Path) -> int:
    from ..data import DatasetError
    from ..evaluation import (
        PER_IMAGE_SUFFIX,
        estimate_log_marginal,
        load_run_model,
        selected_checkpoint,
        write_per_image,
    )
    from ..training.checkpoint import write_json
    from ..training.data_source import load_split
    from ..training.device import resolve_device, set_threads

    check_options(args, ("samples", "batch_size", "chunk_size", "limit", "seed", "threads"))
    set_threads(args.threads)
    try:
        device = resolve_device(args.device)
        model, cfg, state = load_run_model(args.run, device, args.checkpoint)
        checkpoint = args.checkpoint or selected_checkpoint(cfg)
    except (FileNotFoundError, ValueError) as exc:
        raise CLIError(str(exc)) from None
    try:
        x = load_split(cfg.binarization, args.split, args.data_dir or cfg.data_dir, cfg.verify_data, dataset=cfg.data)
    except DatasetError as exc:
        raise CLIError(str(exc)) from None
    if args.limit:
        x = x[: args.limit]
    start = time.perf_counter()
    est = estimate_log_marginal(model, x, args.samples, batch_size=args.batch_size, chunk_size=args.chunk_size,
                                device=device, seed=args.seed)
    dims_ln2 = model.config.x_dim * math.log(2)  # bits per dimension = nats / (D ln 2)
    metrics = {
        **est.summary(),
        "bpd": est.nll / dims_ln2,
        "bpd_se": est.nll_se / dims_ln2,
        "data": cfg.data,
        "split": args.split,
        "binarization": cfg.binarization,
        "updates": int(state["update"]),  # of the evaluated checkpoint
        "checkpoint": checkpoint,
        "val_bound": state.get("val_bound"),  # the selection criterion (best.pt only)
        "seed": cfg.seed,
        "eval_seed": args.seed,
        "chunk_size": est.chunk_size,
        "family": cfg.family,
        "K": cfg.K,
        "train_wall_s": round(float(state["wall_s"]), 1),  # up to the evaluated checkpoint
        "eval_wall_s": round(time.perf_counter() - start, 1),
        "limit": args.limit or None,
        "run": str(args.run),
    }
    write_json(out, metrics)
    # per-image values (same order as the split) for paired comparisons between runs: plain text, so that a
    # results directory can be committed and read without unpickling anything
    write_per_image(out.with_name(out.stem + PER_IMAGE_SUFFIX), est)
    print(f"{args.run}: -ln p(x) = {est.nll:.2f} ± {est.nll_se:.2f}, F(x) = {est.bound:.2f} ± {est.bound_se:.2f} "
          f"nats ({metrics['bpd']:.3f} bits/dim; S = {args.samples}, {args.split}, {est.log_marginal.numel()} images) "
          f"-> {out}")
    return 0
