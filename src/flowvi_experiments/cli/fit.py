"""``flowvi fit``: flow VI for a log-density of any dimension given in a Python file.

    flowvi fit --target model.py:log_p --dim 31 --family planar -K 8 --out runs/mine

``FN`` maps a ``(S, D)`` tensor to the ``(S,)`` unnormalized log-density ``ln p̃(z)``. Writes
``metrics.json`` (ELBO ± se, importance-sampled ln Z ± se, Pareto k̂ and its reading, wall time, the
settings), ``elbo.csv`` and ``elbo.png`` (the trace), ``pairs.png`` (the first marginals) and
``samples.npy`` (``--draws`` samples of ``q``).
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

from .main import CLIError, add_family_options, family_options

DEFAULT_DRAWS = 4096


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "fit", help="fit a flow posterior to your own log-density in any dimension",
        description="Fit q_K (learned Gaussian base + K flow steps) to p ∝ exp(FN(z)) on R^D by maximizing the "
        "ELBO; writes metrics.json (ELBO, ln Z, Pareto k̂), elbo.csv, elbo.png, pairs.png and samples.npy.",
    )
    p.add_argument("--target", required=True, metavar="FILE.py:FN",
                   help="FN maps a (S, D) tensor to the (S,) log-density ln p(z) up to a constant")
    p.add_argument("--dim", type=int, required=True, help="dimension D")
    p.add_argument("--family", default="planar",
                   help="flow family, any name flowvi.make_steps accepts (default planar; diagonal: mean field)")
    p.add_argument("-K", type=int, default=8, help="flow length K (default 8)")
    add_family_options(p, "--family")
    p.add_argument("--full-rank-base", action="store_true",
                   help="a full-rank Gaussian q_0 = N(μ, LLᵀ) under the flow (a Cholesky-factor step first)")
    p.add_argument("--updates", type=int, default=2000, help="Adam updates (default 2000)")
    p.add_argument("--samples", type=int, default=64, help="Monte Carlo samples per update (default 64)")
    p.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate, cosine-decayed (default 0.01)")
    p.add_argument("--eval-samples", type=int, default=4096,
                   help="samples for the final ELBO, ln Z and k̂ (default 4096)")
    p.add_argument("--draws", type=int, default=DEFAULT_DRAWS, help=f"samples saved (default {DEFAULT_DRAWS})")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--double", action="store_true", help="float64 instead of float32")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run_fit_command)


def _load(spec: str):
    from ..energies import TargetError, load_energy_file

    try:
        return load_energy_file(spec)
    except TargetError as exc:
        raise CLIError(str(exc)) from exc


def run_fit_command(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from flowvi.fitting import FitError, fit

    from ..atomic import atomic_write, write_json, write_text

    if args.out.exists() and not args.out.is_dir():
        raise CLIError(f"--out {args.out} exists and is not a folder")
    if args.dim < 1:
        raise CLIError(f"--dim must be >= 1, got {args.dim}")
    if args.draws < 1:
        raise CLIError(f"--draws must be >= 1, got {args.draws}")
    options = family_options(args, args.family, args.dim, "--family")  # before the user's file is run
    fn = _load(args.target)
    try:
        q, report = fit(
            fn, args.dim, args.family, args.K, updates=args.updates, samples=args.samples, lr=args.lr,
            seed=args.seed, eval_samples=args.eval_samples, dtype=torch.float64 if args.double else torch.float32,
            family_options=options, full_rank_base=args.full_rank_base, progress=not args.quiet,
        )
    except FitError as exc:
        raise CLIError(str(exc)) from exc
    with torch.no_grad():
        samples = q.sample((args.draws,)).double().cpu().numpy()
    metrics = report.to_dict()
    trace = metrics.pop("elbo_trace")
    metrics.update(target=args.target, lr=args.lr, draws=args.draws, dtype="float64" if args.double else "float32")
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "metrics.json", metrics)
    write_text(args.out / "elbo.csv", "update,elbo\n" + "".join(f"{i + 1},{v!r}\n" for i, v in enumerate(trace)))

    def save_npy(fh) -> None:
        buf = io.BytesIO()
        np.save(buf, samples)
        fh.write(buf.getvalue())

    atomic_write(args.out / "samples.npy", save_npy)
    from ..experiments.fit_plots import plot_elbo_trace, plot_pairs

    title = f"{args.target} {args.family} K={args.K}"
    plot_elbo_trace(trace, args.out / "elbo.png", report.elbo, report.log_z, title)
    plot_pairs(samples, args.out / "pairs.png")
    if report.interrupted:
        print(f"interrupted at update {report.updates_done}: wrote what it has to {args.out}")
    print(f"{title}: {report.summary()} -> {args.out}")
    return 130 if report.interrupted else 0
