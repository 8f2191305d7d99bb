"""Side-by-side speed benchmark of flowvi and its peers (issue 5).

    python benchmarks/run.py [--json PATH] [--quick] [--threads 2] [--cases dlgm-train,energy-fit,nice,iw-eval]

For every case (see ``benchmarks/cases.py``) all libraries run in the same process, their steps
interleaved (A, B, C, A, B, C, … with the order rotated every round) so that load from other
processes on a shared machine hits all of them alike. Reported per row:

- ``median_s``: median wall-clock seconds per step over ``--repeats`` steps after ``--warmup``
  (for ``iw-eval``, whose step is ~100x longer: ``max(3, repeats // 5)`` steps after 1 warm-up);
  ``cpu_median_s``: the same in process CPU time (all threads);
- ``peak_mb``: peak resident memory added by the steps, in MiB, measured in a fresh subprocess
  per row: the Linux high-water mark ``VmHWM`` is reset (``/proc/self/clear_refs``) after the model
  is built, 3 steps run, and ``VmHWM − VmRSS(before)`` is reported (includes the autograd graph
  and optimizer state; ``tracemalloc`` does not see torch's allocations);
- ``ratio``: ``median_s / median_s(flowvi)`` in the same case and K (> 1: flowvi is faster);
- ``points_per_s``: data points per second.

Peers missing from the environment are reported as missing, not as errors
(``pip install -e '.[peers]' -c constraints.txt``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cases  # noqa: E402

PROBE_STEPS = 3
#: cases whose step is long: 1 warm-up and repeats // 5 (at least 3) timed steps
SLOW_CASES = ("iw-eval",)


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def memory_probe(case: str, library: str, K: int) -> dict[str, Any]:
    """Run in a fresh process: peak RSS added by PROBE_STEPS steps of one row."""
    step, _ = cases.build(case, library, K)
    before_kb = _status_kb("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        method = "VmHWM-reset"
    except OSError:
        method = "ru_maxrss"
    for _ in range(PROBE_STEPS):
        step()
    if method == "VmHWM-reset":
        peak_kb = _status_kb("VmHWM")
    else:  # high-water mark since process start: an upper bound that includes imports
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if before_kb is None or peak_kb is None:
        return {"peak_mb": None, "memory_method": "unavailable"}
    return {"peak_mb": max(peak_kb - before_kb, 0) / 1024, "rss_mb": peak_kb / 1024, "memory_method": method}


def _probe_in_subprocess(case: str, library: str, K: int, threads: int) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd = [sys.executable, __file__, "--memory-probe", case, library, str(K), "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if out.returncode != 0:
        return {"peak_mb": None, "memory_method": f"probe failed: {out.stderr.strip().splitlines()[-1:]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def time_group(case: str, K: int, libraries: list[str], warmup: int, repeats: int) -> dict[str, dict[str, Any]]:
    """Interleaved timing of one (case, K) for the available libraries."""
    steps = {}
    points = {}
    for lib in libraries:
        steps[lib], points[lib] = cases.build(case, lib, K)
    for _ in range(warmup):
        for lib in libraries:
            steps[lib]()
    wall: dict[str, list[float]] = {lib: [] for lib in libraries}
    cpu: dict[str, list[float]] = {lib: [] for lib in libraries}
    for r in range(repeats):
        order = libraries[r % len(libraries) :] + libraries[: r % len(libraries)]
        for lib in order:
            t0, c0 = time.perf_counter(), time.process_time()
            steps[lib]()
            wall[lib].append(time.perf_counter() - t0)
            cpu[lib].append(time.process_time() - c0)
    out = {}
    for lib in libraries:
        med = statistics.median(wall[lib])
        q = statistics.quantiles(wall[lib], n=4) if len(wall[lib]) >= 4 else [med, med, med]
        out[lib] = {
            "median_s": med,
            "q1_s": q[0],
            "q3_s": q[2],
            "cpu_median_s": statistics.median(cpu[lib]),
            "points_per_s": points[lib] / med,
            "repeats": repeats,
        }
    return out


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the records (a JSON list) to this file")
    parser.add_argument("--quick", action="store_true", help="few repeats, for a smoke test")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--repeats", type=int, help="timed steps per row (default 30, 5 with --quick)")
    parser.add_argument("--warmup", type=int, help="untimed steps per row first (default 5, 2 with --quick)")
    parser.add_argument("--cases", help=f"comma-separated subset of {','.join(cases.BUILDERS)}")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--memory-probe", nargs=3, metavar=("CASE", "LIBRARY", "K"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be >= 1")
    torch.set_num_threads(args.threads)

    if args.memory_probe:
        case, lib, K = args.memory_probe
        print(json.dumps(memory_probe(case, lib, int(K))))
        return 0

    repeats = args.repeats or (5 if args.quick else 30)
    warmup = args.warmup if args.warmup is not None else (2 if args.quick else 5)
    if repeats < 1 or warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")
    selected = set(cases.BUILDERS) if not args.cases else set(args.cases.split(","))
    unknown = selected - set(cases.BUILDERS)
    if unknown:
        parser.error(f"unknown case(s) {sorted(unknown)}; choose from {sorted(cases.BUILDERS)}")

    print(f"flowvi benchmark: torch {torch.__version__}, {args.threads} thread(s), python {platform.python_version()}, "
          f"{platform.machine()}, {os.cpu_count()} logical CPUs; {warmup} warm-up + {repeats} timed steps per row, "
          "libraries interleaved")
    missing_reported = set()
    records: list[dict[str, Any]] = []
    for case, K, libs in cases.CASES:
        if case not in selected:
            continue
        available = []
        for lib in libs:
            pkg = cases.missing_peer(lib)
            if pkg is None:
                available.append(lib)
                continue
            if pkg not in missing_reported:
                print(f"peer missing: {pkg} is not installed; its rows are skipped "
                      "(pip install -e '.[peers]' -c constraints.txt)")
                missing_reported.add(pkg)
            records.append({"case": case, "library": lib, "K": K, "median_s": None, "peak_mb": None,
                            "status": f"missing peer: {pkg}"})
        # an importance-sampling batch is ~100x a training step: fewer repeats keep the run short
        slow = case in SLOW_CASES
        timings = time_group(case, K, available, min(warmup, 1) if slow else warmup,
                             max(3, repeats // 5) if slow else repeats)
        base = timings.get("flowvi", {}).get("median_s")
        for lib in available:
            rec = {"case": case, "library": lib, "K": K, **timings[lib], "threads": args.threads, "status": "ok"}
            rec["ratio"] = rec["median_s"] / base if base else None
            if not args.no_memory:
                rec.update(_probe_in_subprocess(case, lib, K, args.threads))
            else:
                rec["peak_mb"] = None
            records.append(rec)
        print(f"  done: {case} K={K}", file=sys.stderr)

    print()
    header = f"{'case':<11} {'library':<17} {'K':>3} {'median ms':>10} {'IQR ms':>15} {'cpu ms':>8} " \
             f"{'points/s':>9} {'peak MiB':>9} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for r in records:
        if r["status"] != "ok":
            print(f"{r['case']:<11} {r['library']:<17} {r['K']:>3} {r['status']}")
            continue
        iqr = f"{r['q1_s'] * 1e3:.1f}-{r['q3_s'] * 1e3:.1f}"
        print(f"{r['case']:<11} {r['library']:<17} {r['K']:>3} {r['median_s'] * 1e3:>10.2f} {iqr:>15} "
              f"{r['cpu_median_s'] * 1e3:>8.1f} {r['points_per_s']:>9.0f} {_fmt(r.get('peak_mb'), '9.1f')} "
              f"{_fmt(r.get('ratio'), '6.2f')}")
    print("\nratio = median / flowvi's median in the same case and K (> 1: flowvi faster).")
    _print_targets(records)
    for case in sorted(selected):
        print(f"  {case}: {cases.DESCRIPTIONS[case]}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp.write_text(json.dumps(records, indent=1))
        tmp.replace(args.json)
        print(f"wrote {args.json}")
    return 0


def _print_targets(records: list[dict[str, Any]]) -> None:
    med = {(r["case"], r["library"], r["K"]): r["median_s"] for r in records if r["status"] == "ok"}

    def check(label: str, num: tuple, den: tuple, op: str, bound: float) -> None:
        if num not in med or den not in med:
            print(f"target {label}: not measured")
            return
        value = med[num] / med[den]
        ok = value <= bound if op == "<=" else value >= bound
        print(f"target {label}: {value:.2f} ({'met' if ok else 'NOT met'}, need {op} {bound})")

    print("targets (issue 5):")
    check("flowvi DLGM step K=80 / K=0", ("dlgm-train", "flowvi", 80), ("dlgm-train", "flowvi", 0), "<=", 1.5)
    check("pyro / flowvi DLGM step at K=80", ("dlgm-train", "pyro", 80), ("dlgm-train", "flowvi", 80), ">=", 3.0)
    check("normflows / flowvi energy step K=32", ("energy-fit", "normflows", 32), ("energy-fit", "flowvi", 32),
          ">=", 2.0)


if __name__ == "__main__":
    sys.exit(main())
