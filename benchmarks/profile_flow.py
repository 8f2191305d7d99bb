"""Where the time of an amortized planar flow goes: the parameter head vs the flow steps.

    python benchmarks/profile_flow.py [--K 80] [--threads 1] [--reference]
    python benchmarks/profile_flow.py --dlgm [--K 80] [--threads 1]

Runs ``NormalizingFlow(40, planar_steps(40, K), context_features=400)`` forward + backward at
batch 100 (one sample per point, as in the DLGM step) under ``torch.profiler`` and prints the
operators by self CPU time, then the time of the head (the ``Linear(400, 80 + K(2·40+1))`` that
maps encoder features to μ, σ and every step's (w, u, b)) against the rest.

``--dlgm``: the whole training step of ``benchmarks/run.py``'s ``dlgm-train`` case, flowvi against its
floor (the same networks and head, no flow steps), interleaved: the operators of each by self CPU time,
and the thread CPU time per step (minimum and median of 40: on a loaded machine the minimum is the
steadier estimate) with their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.profiler import profile

import flowvi
from flowvi_experiments.allocator import retain_freed_memory


def dlgm_against_floor(K: int, repeats: int = 40) -> None:
    """The flowvi DLGM step against its floor: operators, and thread CPU time per step."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import cases

    steps = {lib: cases.dlgm_train(lib, K)[0] for lib in ("flowvi", "floor")}
    for step in steps.values():
        for _ in range(3):
            step()
    for lib, step in steps.items():
        with profile() as prof:
            for _ in range(10):
                step()
        print(f"== {lib}, K = {K}")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))
    times: dict[str, list[float]] = {lib: [] for lib in steps}
    for r in range(repeats):
        for lib in list(steps)[:: 1 if r % 2 else -1]:
            t0 = time.thread_time()
            steps[lib]()
            times[lib].append(time.thread_time() - t0)
    low = {lib: min(ts) for lib, ts in times.items()}
    mid = {lib: statistics.median(ts) for lib, ts in times.items()}
    for lib in steps:
        print(f"{lib:>6}: thread CPU time per step min {low[lib] * 1e3:.2f} ms, median {mid[lib] * 1e3:.2f} ms")
    print(f"flowvi / floor at K = {K}: {low['flowvi'] / low['floor']:.3f} (min), "
          f"{mid['flowvi'] / mid['floor']:.3f} (median)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--K", type=int, default=80)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reference", action="store_true", help="per-step PlanarTransform path")
    parser.add_argument("--dlgm", action="store_true", help="the DLGM training step against its floor")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    retain_freed_memory()  # as flowvi train does (flowvi_experiments.allocator)
    if args.dlgm:
        dlgm_against_floor(args.K)
        return
    torch.manual_seed(0)
    flow = flowvi.NormalizingFlow(
        40, flowvi.planar_steps(40, args.K, fused=not args.reference), context_features=400
    )
    h = torch.randn(100, 400, requires_grad=True)

    def step() -> None:
        z, log_q = flow(h).rsample_and_log_prob((1,))
        (z.sum() + log_q.sum()).backward()

    def head() -> None:
        flow.head.linear(h).sum().backward()

    def median_cpu(f, n: int = 20) -> float:
        for _ in range(3):
            f()
        ts = []
        for _ in range(n):
            t0 = time.process_time()
            f()
            ts.append(time.process_time() - t0)
        return statistics.median(ts)

    with profile() as prof:
        for _ in range(10):
            step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    total, head_only = median_cpu(step), median_cpu(head)
    n_out = flow.head.out_features
    print(f"K={args.K}, {'reference' if args.reference else 'fast'} path, {args.threads} thread(s), CPU time per "
          f"forward+backward: total {total * 1e3:.2f} ms, head Linear(400, {n_out}) alone {head_only * 1e3:.2f} ms, "
          f"rest (base, constraint, flow steps) {max(total - head_only, 0.0) * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
