"""Worked example of docs/fit.md: Bayesian logistic regression on scikit-learn's breast cancer data.

31 latent dimensions (30 standardized features + intercept), prior w ~ N(0, I), Bernoulli likelihood.
Fits flowvi.fit through the Pyro bridge with every row of ``CONFIGS`` (mean field, planar K = 2, 8, 32,
radial K = 8, 32, planar K = 8 with a fixed N(0, I) base; then a full-rank Gaussian, planar K = 8 on a
full-rank base, orthogonal Sylvester K = 4, 8 with M = 8 and K = 8 with M = D, Householder and triangular
Sylvester K = 8, IAF K = 4, 8), and compares each posterior mean with a Pyro NUTS reference.

    python benchmarks/fit_logistic.py --out benchmarks/results/fit_logistic.json

Needs pyro-ppl (the test extra) and scikit-learn (the peers extra). Twenty minutes or so on a CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyro
import pyro.distributions as dist
import torch

import flowvi as fv
from flowvi_experiments.atomic import write_text
from flowvi_experiments.pyro_bridge import log_density


@dataclass(frozen=True)
class Config:
    """One row: ``fv.fit(ld, D, family, K, family_options=..., full_rank_base=..., flow_options=...)``."""

    family: str
    K: int
    family_options: dict[str, Any] = field(default_factory=dict)
    full_rank_base: bool = False
    flow_options: dict[str, Any] = field(default_factory=dict)

    @property
    def base(self) -> str:
        """q_0: learned N(μ, diag σ²), the fixed N(0, I), or a learned full-rank N(μ, LLᵀ)."""
        if self.full_rank_base or self.family == "full-rank":
            return "full-rank"
        return "fixed N(0, I)" if self.flow_options.get("trainable_base") is False else "learned"


#: the rows, in the table's order: the first seven as first measured, then the later families
CONFIGS: tuple[Config, ...] = (
    Config("diagonal", 0), Config("planar", 2), Config("planar", 8), Config("planar", 32),
    Config("radial", 8), Config("radial", 32), Config("planar", 8, flow_options={"trainable_base": False}),
    Config("full-rank", 0), Config("planar", 8, full_rank_base=True),
    Config("sylvester-orth", 4, {"m": 8}), Config("sylvester-orth", 8, {"m": 8}),
    Config("sylvester-orth", 8, {"m": 31}),  # M = D
    Config("sylvester-householder", 8), Config("sylvester-triangular", 8),
    Config("iaf", 4), Config("iaf", 8),
)


def data() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_breast_cancer  # here, so that CONFIGS can be read without scikit-learn

    X, y = load_breast_cancer(return_X_y=True)
    X = torch.tensor(X, dtype=torch.float32)
    X = (X - X.mean(0)) / X.std(0)
    X = torch.cat([torch.ones(X.shape[0], 1), X], 1)  # intercept first
    return X, torch.tensor(y, dtype=torch.float32)


def model(X: torch.Tensor, y: torch.Tensor) -> None:
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    with pyro.plate("data", X.shape[0]):
        pyro.sample("y", dist.Bernoulli(logits=X @ w), obs=y)


def nuts(X: torch.Tensor, y: torch.Tensor, warmup: int, samples: int, seed: int) -> dict:
    pyro.set_rng_seed(seed)
    kernel = pyro.infer.NUTS(model, jit_compile=False)
    mcmc = pyro.infer.MCMC(kernel, num_samples=samples, warmup_steps=warmup, disable_progbar=True)
    start = time.perf_counter()
    mcmc.run(X, y)
    w = mcmc.get_samples()["w"]
    return {"mean": w.mean(0), "sd": w.std(0), "seconds": time.perf_counter() - start}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/fit_logistic.json"))
    p.add_argument("--updates", type=int, default=3000)
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--nuts-warmup", type=int, default=500)
    p.add_argument("--nuts-samples", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    X, y = data()
    ld = log_density(model, X, y)  # vmap over samples
    u = torch.randn(64, ld.dim)
    for mode in ("vmap", "loop"):
        f = log_density(model, X, y, vectorize=mode)
        f(u)
        start = time.perf_counter()
        reps = 20 if mode == "vmap" else 2
        for _ in range(reps):
            f(u)
        print(f"log-density of 64 samples, {mode}: {(time.perf_counter() - start) / reps * 1e3:.1f} ms", flush=True)
    ref = nuts(X, y, args.nuts_warmup, args.nuts_samples, args.seed)
    print(f"NUTS: {args.nuts_warmup} warm-up + {args.nuts_samples} draws in {ref['seconds']:.0f} s", flush=True)
    rows, failed = [], []
    for c in CONFIGS:
        try:
            q, r = fv.fit(ld, ld.dim, c.family, c.K, updates=args.updates, samples=args.samples, seed=args.seed,
                          family_options=c.family_options, full_rank_base=c.full_rank_base,
                          flow_options=c.flow_options, progress=False)
        except fv.FitError as exc:  # recorded and reported, so that the other rows still run
            failed.append({"family": c.family, "K": c.K, "base": c.base, "family_options": c.family_options,
                           "error": str(exc)})
            print(f"FAILED: {json.dumps(failed[-1])}", flush=True)
            continue
        mean = q.moments(20_000)[0]
        err = (mean - ref["mean"]).abs()
        row = {"family": c.family, "K": c.K, "base": c.base, "family_options": r.family_options,
               "elbo": r.elbo, "elbo_se": r.elbo_se, "log_z": r.log_z, "log_z_se": r.log_z_se, "khat": r.khat,
               "mean_err_max": float(err.max()), "mean_err_rms": float(err.pow(2).mean().sqrt()),
               "mean_err_over_sd": float((err / ref["sd"]).max()), "seconds": r.wall_seconds}
        rows.append(row)
        print(json.dumps(row), flush=True)
    best = max(r["log_z"] for r in rows if r["khat"] < 0.7) if any(r["khat"] < 0.7 for r in rows) else math.nan
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {"rows": rows, "nuts_seconds": ref["seconds"], "best_log_z": best,
              "settings": vars(args) | {"out": str(args.out)}}
    write_text(args.out, json.dumps(result | ({"failed": failed} if failed else {}), indent=2) + "\n")
    print("| family | K | base | ELBO ± se | ln Z ± se | k̂ | max abs. mean error (in NUTS sd) | RMS mean error | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(table_cells(r)) + " |")
    if failed:
        raise SystemExit(f"{len(failed)} fit(s) failed: {', '.join(f['family'] for f in failed)} (see {args.out})")


def table_cells(r: dict[str, Any]) -> list[str]:
    """A row of docs/fit.md's table (family, K, base, then the measured columns) from a JSON row."""
    options = ", ".join(f"{k} = {v}" for k, v in r.get("family_options", {}).items())
    return [r["family"] + (f" ({options})" if options else ""), str(r["K"]), r["base"],
            f"{r['elbo']:.2f} ± {r['elbo_se']:.2f}", f"{r['log_z']:.2f} ± {r['log_z_se']:.2f}", f"{r['khat']:.2f}",
            f"{r['mean_err_max']:.3f} ({r['mean_err_over_sd']:.2f})", f"{r['mean_err_rms']:.3f}",
            f"{r['seconds']:.0f}"]


if __name__ == "__main__":
    main()
