"""``flowvi energy`` and ``flowvi figure3``: the 2-D energy experiments (section 6.1, Figure 3).

    flowvi energy U1 --flow planar -K 32 --out runs/u1-planar-32
    flowvi energy --target my_energy.py:U --box -5 5 -5 5 --flow radial -K 8 --out runs/mine
    flowvi figure3 --out runs/fig3
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .main import CLIError, add_family_options, check_options, family_options, locked, sigterm_as_interrupt


def _add_training_options(p: argparse.ArgumentParser) -> None:
    from ..experiments.energy import EnergyConfig

    d = EnergyConfig()
    p.add_argument("--steps", type=int, default=d.steps, help=f"parameter updates (default {d.steps})")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"samples per update (default {d.batch_size})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"Adam learning rate, cosine-decayed (default {d.lr})")
    p.add_argument("--lr-final", type=float, default=d.lr_final, help=f"final learning rate (default {d.lr_final})")
    p.add_argument("--grad-clip", type=float, default=d.grad_clip,
                   help="clip the gradient norm to this before each update (default 0: off)")
    p.add_argument(
        "--anneal", action=argparse.BooleanOptionalAction, default=d.anneal,
        help="anneal β from 0.01 to 1 over the first half of training (eq. 20; default off)",
    )
    p.add_argument("--seed", type=int, default=d.seed, help=f"random seed (default {d.seed})")
    p.add_argument("--device", default=d.device, help="torch device, e.g. cpu or cuda (default cpu)")
    p.add_argument(
        "--eval-samples", type=int, default=d.eval_samples, help=f"samples for the final F (default {d.eval_samples})"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..family_table import energy_families

    flows = energy_families()
    p = subparsers.add_parser(
        "energy", help="fit a flow to a 2-D energy U1-U4 or your own (Figure 3)",
        description="Fit q_K (N(0,I) base + K flow steps) to p(z) ∝ exp(-U(z)) by minimizing "
        "F = E_q[ln q + U] (eq. 15); writes metrics.json, density.png, training.png, history.csv, flow.pt.",
    )
    p.add_argument("target", nargs="?", help="U1, U2, U3 or U4 (or use --target FILE.py:FN)")
    p.add_argument("--target", dest="target_file", metavar="FILE.py:FN",
                   help="your own energy: FN maps a (N, 2) tensor to the (N,) energy U(z), p ∝ exp(-U)")
    p.add_argument("--box", type=float, nargs=4, metavar=("XMIN", "XMAX", "YMIN", "YMAX"),
                   help="box for plots and quadrature (default -4 4 -4 4)")
    p.add_argument("--flow", default="planar", choices=sorted([*flows, "langevin"]),
                   help="flow family (default planar)")
    p.add_argument("--not-normalizable", action="store_true",
                   help="declare that exp(-U) has infinite mass on R^2 (report KL on the box only); found out "
                   "after training otherwise, keeping the fit")
    p.add_argument("-K", type=int, default=32, help="flow length K (default 32)")
    add_family_options(p, "--flow")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run already in --out")
    _add_training_options(p)
    from ..experiments.infinitesimal import add_langevin_options

    add_langevin_options(p)
    p.set_defaults(func=run_energy_command)

    f = subparsers.add_parser(
        "figure3", help="reproduce Figure 3: U1-U4 × flows × K, grid figure, bound-vs-K plot, table",
        description="Runs `energy` for every target × flow × K into OUT/<target>-<flow>-<K>/ (cells whose "
        "metrics.json exists are reused), then writes figure3.png, bound_vs_k.png, table.md and table.csv.",
    )
    f.add_argument("--out", type=Path, required=True, help="output folder")
    f.add_argument("--targets", nargs="+", default=["U1", "U2", "U3", "U4"], help="targets (default U1-U4)")
    f.add_argument("--flows", nargs="+", default=["planar", "nice-perm", "radial"], choices=sorted(flows),
                   help="flow families (default planar nice-perm radial)")
    f.add_argument("--Ks", type=int, nargs="+", default=[2, 8, 32], help="flow lengths (default 2 8 32)")
    f.add_argument("--rerun", action="store_true", help="recompute cells that already have metrics.json")
    f.add_argument("--existing-only", action="store_true",
                   help="train nothing: assemble the figure and table from the cells already finished")
    _add_training_options(f)
    f.set_defaults(func=run_figure3_command)


def _config(args: argparse.Namespace, flow: str, K: int):
    from ..experiments.energy import EnergyConfig

    if args.out.exists() and not args.out.is_dir():
        raise CLIError(f"--out {args.out} exists and is not a folder")

    check_options(args, ("steps", "eval_samples", "batch_size", "lr", "grad_clip", "seed"), K=K)
    if not args.lr_final > 0:  # the cosine decay ends here; the table's lr_final (training) may be 0
        raise CLIError(f"--lr-final must be > 0, got {args.lr_final}")
    _check_device(args.device)
    options = family_options(args, flow, 2, "--flow") if hasattr(args, "family_options") else {}
    return EnergyConfig(
        flow=flow, K=K, steps=args.steps, batch_size=args.batch_size, lr=args.lr, lr_final=args.lr_final,
        anneal=args.anneal, seed=args.seed, device=args.device, eval_samples=args.eval_samples,
        grad_clip=args.grad_clip, family_options=options,
    )


def _check_device(device: str) -> None:
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise CLIError(f"invalid --device {device!r}: {exc}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CLIError(f"--device {device}: CUDA is not available on this machine")


def _load_target(spec: str, box: list[float] | None):
    from ..energies import TargetError, load_target

    try:
        return load_target(spec, tuple(box) if box is not None else None)
    except TargetError as exc:
        raise CLIError(str(exc)) from exc


def _run_one(target, config, out: Path, quiet: bool, desc: str) -> dict[str, Any]:
    from tqdm import tqdm

    from ..experiments.energy import TrainingDiverged, run_energy

    bar = tqdm(total=config.steps, desc=desc, disable=quiet, dynamic_ncols=True, leave=True)
    last = [0]

    def progress(step: int, bound: float, beta: float) -> None:
        bar.update(step - last[0])
        last[0] = step
        bar.set_postfix(F=f"{bound:.4f}", beta=f"{beta:.2f}")

    try:
        metrics = run_energy(target, config, out, progress)
    except TrainingDiverged as exc:
        raise CLIError(str(exc)) from exc
    except FloatingPointError as exc:
        raise CLIError(f"evaluation failed: {exc}") from exc
    finally:
        bar.close()
    return metrics


def _summary(m: dict[str, Any]) -> str:
    if "free_energy" not in m:
        return (f"interrupted during {m.get('interrupted_during', 'evaluation')} after {m['steps_done']} training "
                "steps: flow.pt, history.csv and metrics.json hold the fit")
    s = f"F = {m['free_energy']:.4f} ± {m['free_energy_se']:.4f}, ln Z = {m['log_z']:.4f} ({m['log_z_domain']})"
    if m.get("kl") is not None:
        s += f", KL(q||p) = {m['kl']:.4f}"
    if m.get("kl_box") is not None:
        s += f", KL_box = {m['kl_box']:.4f}"
    return s + f", wall {m['wall_seconds']:.1f} s"


def run_energy_command(args: argparse.Namespace) -> int:
    if (args.target is None) == (args.target_file is None):
        raise CLIError("give exactly one target: U1, U2, U3, U4 or --target FILE.py:FN")
    spec = args.target if args.target is not None else args.target_file
    if args.target is not None and args.target.upper() not in ("U1", "U2", "U3", "U4") and ":" not in args.target:
        raise CLIError(f"unknown target {args.target!r}: expected U1, U2, U3, U4 or --target FILE.py:FN")
    target = _load_target(spec, args.box)
    if args.not_normalizable:
        import dataclasses

        target = dataclasses.replace(target, normalizable=False)
    if args.flow == "langevin":
        from ..experiments.infinitesimal import langevin_config

        family_options(args, "langevin", 2, "--flow")  # it takes none: given ones are an error, not ignored

        try:
            langevin_config(args)  # bad options fail before the output folder is touched
        except ValueError as exc:
            raise CLIError(str(exc)) from exc
        _refuse_overwrite(args)
        with locked(args.out, "energy"):
            return _run_langevin(args, target)
    config = _config(args, args.flow, args.K)
    _refuse_overwrite(args)
    with locked(args.out, "energy"), sigterm_as_interrupt():
        metrics = _run_one(target, config, args.out, args.quiet, f"{target.name} {args.flow} K={args.K}")
    if metrics["interrupted"]:
        print(f"interrupted at step {metrics['steps_done']}: wrote what it has to {args.out}")
    print(f"{target.name} {args.flow} K={args.K}: {_summary(metrics)} -> {args.out}")
    return 130 if metrics["interrupted"] else 0


def _refuse_overwrite(args: argparse.Namespace) -> None:
    """A finished run in ``--out`` (metrics.json, not interrupted) is replaced only with ``--overwrite``."""
    import json

    metrics = args.out / "metrics.json"
    if args.overwrite or not metrics.is_file():
        return
    try:
        finished = not json.loads(metrics.read_text()).get("interrupted", False)
    except (ValueError, AttributeError):
        finished = False  # damaged: nothing to keep
    if finished:
        raise CLIError(f"{args.out} already holds a finished run ({metrics}); choose another --out or pass "
                       "--overwrite to replace it")


def _run_langevin(args: argparse.Namespace, target) -> int:
    """``--flow langevin``: Langevin chains from N(0, I), the density figure and KL-against-steps plot."""
    from ..experiments.infinitesimal import langevin_config, run_langevin

    try:
        config = langevin_config(args)
        m = run_langevin(target, config, args.out)
    except (ValueError, FloatingPointError) as exc:
        raise CLIError(str(exc)) from exc
    kl = ", ".join(f"t={t}: {v:.4f}" for t, v in m["kl_hist"].items())
    print(f"{target.name} langevin ({m['sampler']}, ε={config.step_size:g}, {config.chains} chains) "
          f"KL(q_t||p) on the box: {kl}; floor {m['kl_hist_floor']:.4f} -> {args.out}")
    return 0


def run_figure3_command(args: argparse.Namespace) -> int:
    from ..experiments.figure3 import figure3

    targets = [_load_target(t, None) for t in args.targets]
    configs = {(f, k): _config(args, f, k) for f in args.flows for k in args.Ks}

    def run_cell(target, config, out: Path) -> dict[str, Any]:
        m = _run_one(target, config, out, args.quiet, f"{target.name} {config.flow} K={config.K}")
        print(f"{target.name} {config.flow} K={config.K}: {_summary(m)}", flush=True)
        return m

    if args.rerun and args.existing_only:
        raise CLIError("--rerun and --existing-only exclude each other")
    from ..training.checkpoint import CheckpointError

    with locked(args.out, "figure3"), sigterm_as_interrupt():
        try:
            outcome = figure3(targets, args.flows, args.Ks, configs, args.out, run_cell, rerun=args.rerun,
                              existing_only=args.existing_only)
        except CheckpointError as exc:  # a damaged or unsafe flow.pt of a cell
            raise CLIError(str(exc)) from None
    print(f"wrote {outcome['figure']}, {outcome['bound_plot']}, {outcome['table_md']}, {outcome['table_csv']}")
    if outcome["interrupted"]:
        print("interrupted: the figure and table hold the cells finished so far")
        return 130
    return 0
