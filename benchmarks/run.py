"""Side-by-side speed benchmark of flowvi and its peers (issues 5 and 12).

    python benchmarks/run.py [--json PATH] [--quick] [--tiny] [--threads 1] [--no-memory]
        [--cases dlgm-train,energy-fit,nice,iw-eval,train] [--device cuda] [--compiled]
        [--train-updates 300] [--train-modes 1-thread,2-threads,torchrun-2x1] [--train-data-dir DIR]

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
- ``ratio_to_floor`` (``dlgm-train``): ``median_s / median_s(floor)`` in the same group, the ``floor`` being
  the same networks and amortizing head with the flow steps replaced by nothing (``cases.FloorDLGM``);
- ``points_per_s``: data points per second.

The ``dlgm-train`` K = 80 group runs a second time on 2 threads (``threads`` in the record). The case
``train`` measures the updates/s of real ``flowvi train`` runs at K = 80 on 1 thread, 2 threads and 2 processes
under torchrun (``train_rate.py``). ``--tiny`` shrinks the DLGM cases and the training runs for a smoke test
(seconds, not numbers); ``--device cuda`` runs the DLGM cases there (GPU script: ``benchmarks/gpu_check.sh``).

The JSON is ``{"machine": …, "settings": …, "records": [...]}``: the machine (CPU model, cores, torch,
threads, load average, GPU) and the options of the run with one record per row.

Peers missing from the environment are reported as missing, not as errors
(``pip install -e '.[peers]' -c constraints.txt``).
"""

from __future__ import annotations

import argparse
import datetime
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
import train_rate  # noqa: E402

from flowvi_experiments.allocator import retain_freed_memory  # noqa: E402

PROBE_STEPS = 3
#: cases whose step is long: 1 warm-up and repeats // 5 (at least 3) timed steps
SLOW_CASES = ("iw-eval",)
TRAIN_DESCRIPTION = ("updates/s of real flowvi train runs ({config}, batch 100; default: the paper's RMSprop recipe) "
                     "in each mode: 1 thread, 2 threads, 2 processes under torchrun, a variant of the optimizer "
                     "(benchmarks/train_rate.py)")


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def memory_probe(case: str, library: str, K: int) -> dict[str, Any]:
    """Run in a fresh process: peak RSS (on a GPU: peak allocated device memory) added by PROBE_STEPS steps."""
    step, _ = cases.build(case, library, K)
    if cases.DEVICE.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        for _ in range(PROBE_STEPS):
            step()
        torch.cuda.synchronize()
        return {"peak_mb": (torch.cuda.max_memory_allocated() - before) / 2**20, "memory_method": "cuda-max-allocated"}
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


def _probe_in_subprocess(case: str, library: str, K: int, threads: int, tiny: bool, device: str) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd = [sys.executable, __file__, "--memory-probe", case, library, str(K), "--threads", str(threads),
           "--device", device] + (["--tiny"] if tiny else [])
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if out.returncode != 0:
        return {"peak_mb": None, "memory_method": f"probe failed: {out.stderr.strip().splitlines()[-1:]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def time_group(case: str, K: int, libraries: list[str], warmup: int, repeats: int) -> dict[str, dict[str, Any]]:
    """Interleaved timing of one (case, K) for the available libraries (at the current thread count)."""
    steps = {}
    points = {}
    for lib in libraries:
        steps[lib], points[lib] = cases.build(case, lib, K)
    warm_s = dict.fromkeys(libraries, 0.0)  # includes torch.compile's compilation for the -compiled rows
    for _ in range(warmup):
        for lib in libraries:
            t0 = time.perf_counter()
            steps[lib]()
            cases.synchronize()
            warm_s[lib] += time.perf_counter() - t0
    wall: dict[str, list[float]] = {lib: [] for lib in libraries}
    cpu: dict[str, list[float]] = {lib: [] for lib in libraries}
    for r in range(repeats):
        order = libraries[r % len(libraries) :] + libraries[: r % len(libraries)]
        for lib in order:
            t0, c0 = time.perf_counter(), time.process_time()
            steps[lib]()
            cases.synchronize()
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
            "warmup_s": warm_s[lib],
        }
    return out


def _cpu_model() -> tuple[str, int | None]:
    """The CPU's model name and its number of physical cores (from /proc/cpuinfo; platform's name otherwise)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine(), None
    model, cores, phys = None, set(), None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name" and model is None:
            model = value
        elif key == "physical id":
            phys = value
        elif key == "core id":
            cores.add((phys, value))
    return model or platform.processor() or platform.machine(), len(cores) or None


def machine_info(threads: int, device: str) -> dict[str, Any]:
    """What the numbers were measured on."""
    model, physical = _cpu_model()
    info: dict[str, Any] = {
        "cpu_model": model, "physical_cores": physical, "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch": torch.__version__, "torch_default_threads": torch.get_num_threads(), "threads": threads,
        "python": platform.python_version(), "platform": platform.platform(),
        "load_average_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info.update(gpu=torch.cuda.get_device_name(), cuda=torch.version.cuda)
    return info


def add_ratios(records: list[dict[str, Any]]) -> None:
    """``ratio`` (to flowvi) and ``ratio_to_floor`` (to the floor) within each group (case, K, threads)."""
    groups: dict[tuple, dict[str, float]] = {}
    for r in records:
        if r.get("status") == "ok" and r["case"] != "train":
            groups.setdefault((r["case"], r["K"], r["threads"]), {})[r["library"]] = r["median_s"]
    for r in records:
        if r.get("status") != "ok" or r["case"] == "train":
            continue
        group = groups[(r["case"], r["K"], r["threads"])]
        r["ratio"] = r["median_s"] / group["flowvi"] if "flowvi" in group else None
        floor = "floor-compiled" if r["library"].endswith("-compiled") else "floor"  # compiled against compiled
        if floor in group:
            r["ratio_to_floor"] = r["median_s"] / group[floor]


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the run (machine, settings, records) to this JSON file")
    parser.add_argument("--quick", action="store_true", help="few repeats, for a smoke test")
    parser.add_argument("--tiny", action="store_true",
                        help="small DLGM (batch 10, 4 latents, 16 hidden) and short training runs: a smoke test")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--repeats", type=int, help="timed steps per row (default 30, 5 with --quick)")
    parser.add_argument("--warmup", type=int, help="untimed steps per row first (default 5, 2 with --quick)")
    all_cases = [*cases.BUILDERS, "train"]
    parser.add_argument("--cases", help=f"comma-separated subset of {','.join(all_cases)}")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--device", default="cpu", help="device of the DLGM cases (cpu, cuda); default cpu")
    parser.add_argument("--compiled", action="store_true",
                        help="add flowvi-compiled and floor-compiled rows to dlgm-train K=80 (the loss under "
                        "torch.compile; the warm-up includes the compilation)")
    parser.add_argument("--train-updates", type=int, help="updates per training run (default 300, 12 with --tiny)")
    parser.add_argument("--train-K", type=int, default=80, help="flow length of the training runs (default 80)")
    parser.add_argument("--train-modes", help="training runs (default 1-thread,2-threads,torchrun-2x1; with "
                        f"--device cuda: cuda,cuda-compiled); any of {', '.join(train_rate.BASE_MODES)}, each "
                        f"optionally with one of {', '.join(train_rate.VARIANTS)} (fused: Adam configs only)")
    parser.add_argument("--train-config", type=Path, default=train_rate.CONFIG,
                        help="the config of the training runs (default configs/mnist/planar-k80.yaml, the paper's "
                        "RMSprop recipe; configs/mnist/b100k/planar-k80.yaml is the Adam recipe of Table 2's runs)")
    parser.add_argument("--train-data-dir", type=Path,
                        help="train on the real binarized MNIST in this directory (default: synthetic images)")
    parser.add_argument("--compiled-train-args", default=train_rate.DEFAULT_COMPILED_ARGS,
                        help="flowvi train arguments of the -compiled modes "
                        f"(default {train_rate.DEFAULT_COMPILED_ARGS!r})")
    parser.add_argument("--train-timeout", type=float, default=1800.0, help="seconds per training run (default 1800)")
    parser.add_argument("--default-malloc", action="store_true",
                        help="keep glibc's default trim/mmap thresholds (flowvi train sets them: "
                        "flowvi_experiments.allocator); shows what the setting is worth")
    parser.add_argument("--memory-probe", nargs=3, metavar=("CASE", "LIBRARY", "K"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be >= 1")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available in this torch ({torch.__version__})")
    default_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    # the process setting flowvi's commands make (freed pages stay mapped), for every library of the run alike
    if args.default_malloc:
        os.environ["FLOWVI_MALLOC_DEFAULTS"] = "1"  # here, in the memory probes and in the flowvi train runs
    malloc_tuned = retain_freed_memory()
    cases.configure(tiny=args.tiny, device=args.device)

    if args.memory_probe:
        case, lib, K = args.memory_probe
        print(json.dumps(memory_probe(case, lib, int(K))))
        return 0

    repeats = args.repeats or (5 if args.quick else 30)
    warmup = args.warmup if args.warmup is not None else (2 if args.quick else 5)
    if repeats < 1 or warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")
    on_gpu = args.device != "cpu"
    default_cases = {"dlgm-train", "train"} if on_gpu else set(all_cases)
    selected = default_cases if not args.cases else set(args.cases.split(","))
    unknown = selected - set(all_cases)
    if unknown:
        parser.error(f"unknown case(s) {sorted(unknown)}; choose from {sorted(all_cases)}")
    if on_gpu and selected - {"dlgm-train", "iw-eval", "train"}:
        parser.error(f"--device {args.device} runs only the DLGM cases dlgm-train, iw-eval and train")
    try:
        modes = train_rate.parse_modes(args.train_modes or ("cuda,cuda-compiled" if on_gpu else
                                                             "1-thread,2-threads,torchrun-2x1"))
    except ValueError as exc:
        parser.error(str(exc))
    if "train" in selected and not args.train_config.is_file():
        parser.error(f"--train-config {args.train_config} is not a file: give a flowvi train config, e.g. "
                     "configs/mnist/b100k/planar-k80.yaml")
    train_updates = args.train_updates or (12 if args.tiny else 300)
    if train_updates < 6:
        parser.error("--train-updates must be >= 6 (the rate is measured between log rows)")

    machine = machine_info(args.threads, args.device)
    machine["torch_default_threads"] = default_threads
    print(f"flowvi benchmark: torch {torch.__version__}, {args.threads} thread(s), python {platform.python_version()}, "
          f"{machine['cpu_model']}, {os.cpu_count()} logical CPUs, device {args.device}"
          f"{' (' + machine['gpu'] + ')' if 'gpu' in machine else ''}; {warmup} warm-up + {repeats} timed steps per "
          f"row, libraries interleaved{'; TINY sizes (a smoke test, not numbers)' if args.tiny else ''}")
    missing_reported = set()
    records: list[dict[str, Any]] = []
    for case, K, libs, threads in cases.CASES:
        if case not in selected:
            continue
        if threads is not None and (threads == args.threads or on_gpu):
            continue  # the group already runs at that thread count (or threads do not apply)
        if case == "dlgm-train" and args.compiled and threads is None and K == 80:
            libs = (*libs, "flowvi-compiled", "floor-compiled")
        group_threads = args.threads if threads is None else threads
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
            records.append({"case": case, "library": lib, "K": K, "threads": group_threads, "median_s": None,
                            "peak_mb": None, "status": f"missing peer: {pkg}"})
        # an importance-sampling batch is ~100x a training step: fewer repeats keep the run short
        slow = case in SLOW_CASES
        torch.set_num_threads(group_threads)
        try:
            timings = time_group(case, K, available, min(warmup, 1) if slow else warmup,
                                 max(3, repeats // 5) if slow else repeats)
        finally:
            torch.set_num_threads(args.threads)
        for lib in available:
            rec = {"case": case, "library": lib, "K": K, **timings[lib], "threads": group_threads, "status": "ok",
                   "device": args.device}
            if not args.no_memory:
                rec.update(_probe_in_subprocess(case, lib, K, group_threads, args.tiny, args.device))
            else:
                rec["peak_mb"] = None
            records.append(rec)
        print(f"  done: {case} K={K}, {group_threads} thread(s)", file=sys.stderr)
    add_ratios(records)

    train_records = []
    if "train" in selected:
        for mode in modes:
            train_records.append(train_rate.run_mode(mode, train_updates, args.train_K, args.tiny,
                                                     args.train_data_dir, args.compiled_train_args,
                                                     args.train_timeout, args.train_config))
            print(f"  done: train {mode}: {train_records[-1]['status']}", file=sys.stderr)
        train_rate.add_speedups(train_records)
    records += train_records

    step_rows = [r for r in records if r["case"] != "train"]
    print()
    header = f"{'case':<11} {'library':<17} {'K':>3} {'thr':>3} {'median ms':>10} {'IQR ms':>15} {'cpu ms':>8} " \
             f"{'points/s':>9} {'peak MiB':>9} {'ratio':>6} {'/floor':>6}"
    if step_rows:
        print(header)
        print("-" * len(header))
    for r in step_rows:
        if r["status"] != "ok":
            print(f"{r['case']:<11} {r['library']:<17} {r['K']:>3} {r['threads']:>3} {r['status']}")
            continue
        iqr = f"{r['q1_s'] * 1e3:.1f}-{r['q3_s'] * 1e3:.1f}"
        print(f"{r['case']:<11} {r['library']:<17} {r['K']:>3} {r['threads']:>3} {r['median_s'] * 1e3:>10.2f} "
              f"{iqr:>15} {r['cpu_median_s'] * 1e3:>8.1f} {r['points_per_s']:>9.0f} {_fmt(r.get('peak_mb'), '9.1f')} "
              f"{_fmt(r.get('ratio'), '6.2f')} {_fmt(r.get('ratio_to_floor'), '6.2f')}")
    if step_rows:
        print("\nratio = median / flowvi's median in the same case, K and threads (> 1: flowvi faster); "
              "/floor = median / the floor's (the same networks and head, no flow steps).")
    if train_records:
        print(f"\nflowvi train, K = {args.train_K}, {train_updates} updates per run "
              f"({'real data' if args.train_data_dir else 'synthetic data'}; rate between log rows):")
        print(train_rate.format_rows(train_records))
    _print_targets(records)
    train_description = TRAIN_DESCRIPTION.format(config=train_rate.shown_path(args.train_config))
    for case in sorted(selected):
        print(f"  {case}: {cases.DESCRIPTIONS.get(case, train_description)}")
    if args.json:
        machine["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
        settings = {"argv": sys.argv[1:] if argv is None else list(argv), "repeats": repeats, "warmup": warmup,
                    "threads": args.threads, "tiny": args.tiny, "device": args.device,
                    "malloc_retains_freed_memory": malloc_tuned,
                    "train_updates": train_updates if train_records else None,
                    "sizes": vars(cases.SIZES) if hasattr(cases.SIZES, "__dict__") else None}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp.write_text(json.dumps({"machine": machine, "settings": settings, "records": records}, indent=1))
        tmp.replace(args.json)
        print(f"wrote {args.json}")
    return 0


def _print_targets(records: list[dict[str, Any]]) -> None:
    rows = [r for r in records if r["status"] == "ok" and r["case"] != "train"]
    main_threads = min((r["threads"] for r in rows), default=None)
    med = {(r["case"], r["library"], r["K"], r["threads"]): r["median_s"] for r in rows}

    def check(label: str, num: tuple, den: tuple, op: str, bound: float) -> None:
        if num not in med or den not in med:
            print(f"target {label}: not measured")
            return
        value = med[num] / med[den]
        ok = value <= bound if op == "<=" else value >= bound
        print(f"target {label}: {value:.2f} ({'met' if ok else 'NOT met'}, need {op} {bound})")

    print("targets (issue 12; they hold in one run on an idle machine):")
    t = main_threads
    check(f"flowvi DLGM step K=80 / floor ({t or '-'} thread(s))", ("dlgm-train", "flowvi", 80, t),
          ("dlgm-train", "floor", 80, t), "<=", 1.10)
    for r in rows:
        if (r["case"], r["library"], r["K"]) == ("dlgm-train", "flowvi", 80) and r["threads"] != t:
            check(f"flowvi DLGM step K=80 / floor ({r['threads']} threads)", ("dlgm-train", "flowvi", 80, r["threads"]),
                  ("dlgm-train", "floor", 80, r["threads"]), "<=", 1.10)
    check(f"compiled flowvi DLGM step K=80 / compiled floor ({t or '-'} thread(s))",
          ("dlgm-train", "flowvi-compiled", 80, t), ("dlgm-train", "floor-compiled", 80, t), "<=", 1.10)
    check("pyro / flowvi DLGM step at K=80", ("dlgm-train", "pyro", 80, t), ("dlgm-train", "flowvi", 80, t), ">=", 2.5)
    check("normflows / flowvi energy step K=32", ("energy-fit", "normflows", 32, t), ("energy-fit", "flowvi", 32, t),
          ">=", 3.0)
    best = train_rate.best_two_core([r for r in records if r["case"] == "train"])
    if best is None:
        print("target K=80 training on both cores / 1 thread: not measured")
    else:
        mode, value = best
        print(f"target K=80 training on both cores / 1 thread: {value:.2f} with {mode} "
              f"({'met' if value >= 1.7 else 'NOT met'}, need >= 1.7)")


if __name__ == "__main__":
    sys.exit(main())
