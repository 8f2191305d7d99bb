"""Updates per second of a real ``flowvi train`` run (the CLI, in a subprocess), per way of using the machine.

Each mode runs ``python -m flowvi_experiments.cli.main train --config configs/mnist/planar-k80.yaml`` (the
paper's K = 80 recipe: RMSprop, minibatch 100; another config with ``--train-config``, e.g. the Adam recipe of
the Table 2 runs, ``configs/mnist/b100k/planar-k80.yaml``) for a few hundred updates in a temporary run directory:

- ``1-thread``, ``2-threads``: one process with ``--threads 1`` / ``2`` (and ``OMP_NUM_THREADS`` alike);
- ``torchrun-2x1``: 2 data-parallel processes of 1 thread each, launched as docs/distributed.md says
  (``python -m torch.distributed.run --standalone --nproc_per_node 2 -m flowvi_experiments.cli.main train``);
- ``cuda``: one process with ``--device cuda``;
- any mode with one variant appended (:data:`VARIANTS`): ``-compiled``, the compiled-step arguments
  (``--compiled-train-args``); ``-foreach`` and ``-fused``, torch's multi-tensor and fused optimizer kernels
  (``--optimizer-impl``; fused is Adam only). Each variant's row has ``speedup_vs_base``, its rate over its
  mode's without the variant in the same run (compiled rows also as ``speedup_vs_eager``).

The rate is measured between the trainer's log rows (``update``, ``wall_s`` in ``log.jsonl``), leaving out
the first window (start-up, warm-up, a compilation) and the last (it includes the final validation); the
rate over the whole run (``summary.json``) and the process's wall time are recorded too. The data are
synthetic binarized-MNIST-shaped images (Bernoulli(0.13) pixels, as the other DLGM cases), written as the
``binarized_mnist_*.amat`` files the trainer reads, or the real data with ``--train-data-dir``.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "mnist" / "planar-k80.yaml"
BASE_MODES: dict[str, dict[str, Any]] = {
    "1-thread": {"processes": 1, "threads": 1, "device": "cpu"},
    "2-threads": {"processes": 1, "threads": 2, "device": "cpu"},
    "torchrun-2x1": {"processes": 2, "threads": 1, "device": "cpu"},
    "cuda": {"processes": 1, "threads": 0, "device": "cuda"},
}
COMPILED = "-compiled"
#: the CLI arguments of a compiled step (a config key of ``flowvi train``; override with --compiled-train-args)
DEFAULT_COMPILED_ARGS = "--compile true"
#: a mode's optional suffix and the ``flowvi train`` arguments it adds (None: ``--compiled-train-args``)
VARIANTS: dict[str, str | None] = {COMPILED: None, "-foreach": "--optimizer-impl foreach",
                                   "-fused": "--optimizer-impl fused"}


def shown_path(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it (as the docs name configs), else absolute."""
    path = path.resolve()
    return str(path.relative_to(REPO) if path.is_relative_to(REPO) else path)


def split_mode(mode: str) -> tuple[str, str]:
    """``(base, variant)`` of a mode name (variant ``""`` when it has none)."""
    for variant in VARIANTS:
        if mode.endswith(variant):
            return mode[: -len(variant)], variant
    return mode, ""


def parse_modes(text: str) -> list[str]:
    """The comma-separated modes, each checked (a base mode, optionally one of :data:`VARIANTS`)."""
    modes = [m.strip() for m in text.split(",") if m.strip()]
    for mode in modes:
        base, variant = split_mode(mode)
        if base not in BASE_MODES:
            raise ValueError(f"unknown training mode {mode!r}: choose from {', '.join(BASE_MODES)}, each optionally "
                             f"with one of {', '.join(VARIANTS)} appended")
        if variant == COMPILED and BASE_MODES[base]["processes"] > 1:
            raise ValueError(f"training mode {mode!r}: a compiled update runs in a single process (flowvi train "
                             "refuses --compile under torchrun); use 2-threads-compiled for both cores")
    return modes


def failure_line(output: str) -> str:
    """The line of a failed run's output that says why: flowvi's own one-sentence error where there is one
    (under torchrun it is buried above the launcher's report), else the last line."""
    lines = [ln.strip() for ln in output.strip().splitlines() if ln.strip()]
    ours = [ln for ln in lines if ln.startswith("flowvi ")]
    return (ours or lines or ["no output"])[-1]


def write_synthetic_mnist(root: Path, n_train: int, n_valid: int, seed: int = 0) -> Path:
    """``root/binarized_mnist/binarized_mnist_{train,valid}.amat`` of Bernoulli(0.13) pixels; returns ``root``."""
    folder = root / "binarized_mnist"
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    for split, n in (("train", n_train), ("valid", n_valid)):
        x = (torch.rand(n, 784, generator=g) < 0.13).int()
        (folder / f"binarized_mnist_{split}.amat").write_text(
            "".join(" ".join(map(str, row)) + "\n" for row in x.tolist()))
    return root


def steady_rate(log_rows: list[dict[str, Any]]) -> tuple[float | None, int]:
    """Updates per second between the first and the second-to-last log row, and the updates that spans."""
    number = (int, float)
    rows = [r for r in log_rows if isinstance(r.get("update"), number) and isinstance(r.get("wall_s"), number)]
    if len(rows) < 3:
        return None, 0
    first, last = rows[0], rows[-2]
    span, seconds = int(last["update"] - first["update"]), last["wall_s"] - first["wall_s"]
    return (span / seconds if seconds > 0 else None), span


def train_command(mode: str, out: Path, data_dir: Path, updates: int, K: int, tiny: bool, verify: bool,
                  compiled_args: str, config: Path = CONFIG) -> tuple[list[str], dict[str, str]]:
    base, variant = split_mode(mode)
    spec = BASE_MODES[base]
    log_every = max(1, updates // 6)
    args = ["train", "--config", str(config), "--out", str(out), "--K", str(K), "--updates", str(updates),
            "--log-every", str(log_every), "--val-every", str(updates), "--ckpt-every", str(updates),
            "--val-size", "20" if tiny else "100", "--data-dir", str(data_dir), "--verify-data", str(verify).lower(),
            "--progress", "false", "--tensorboard", "false", "--device", spec["device"],
            "--threads", str(spec["threads"])]
    if tiny:
        args += ["--latent", "4", "--hidden", "16", "--batch-size", "10"]
    if variant:
        args += shlex.split(compiled_args if variant == COMPILED else VARIANTS[variant])
    env = dict(os.environ)
    if spec["threads"]:
        env.update(OMP_NUM_THREADS=str(spec["threads"]), MKL_NUM_THREADS=str(spec["threads"]))
    env.setdefault("FLOWVI_DIST_TIMEOUT", "300")
    if spec["processes"] == 1:
        return [sys.executable, "-m", "flowvi_experiments.cli.main", *args], env
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                str(spec["processes"]), "-m", "flowvi_experiments.cli.main"]
    return launcher + args, env


def run_mode(mode: str, updates: int, K: int, tiny: bool, data_dir: Path | None, compiled_args: str,
             timeout: float, config: Path = CONFIG) -> dict[str, Any]:
    """One ``flowvi train`` run of ``mode``; its record (``status`` says why when it did not complete)."""
    base, variant = split_mode(mode)
    spec = BASE_MODES[base]
    rec: dict[str, Any] = {"case": "train", "library": "flowvi", "K": K, "mode": mode, "threads": spec["threads"],
                           "processes": spec["processes"], "device": spec["device"], "updates": updates,
                           "compiled": variant == COMPILED, "variant": variant or None,
                           "config": shown_path(config),
                           "data": "real" if data_dir is not None else "synthetic"}
    if spec["device"] == "cuda" and not torch.cuda.is_available():
        return {**rec, "status": "skipped: CUDA is not available"}
    with tempfile.TemporaryDirectory(prefix="flowvi-bench-train-") as tmp:
        tmp_path = Path(tmp)
        if data_dir is None:
            data_dir = write_synthetic_mnist(tmp_path / "data", 100 if tiny else 1000, 20 if tiny else 100)
            verify = False
        else:
            verify = True
        out = tmp_path / "run"
        cmd, env = train_command(mode, out, data_dir, updates, K, tiny, verify, compiled_args, config)
        rec["command"] = " ".join(shlex.quote(c) for c in cmd[1:])
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)
        except subprocess.TimeoutExpired:
            return {**rec, "status": f"failed: no result within {timeout:.0f} s"}
        rec["process_s"] = time.perf_counter() - t0
        if proc.returncode != 0:
            return {**rec, "status": f"failed (exit {proc.returncode}): {failure_line(proc.stderr or proc.stdout)}"}
        log_path, summary_path = out / "log.jsonl", out / "summary.json"
        rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()] \
            if log_path.is_file() else []
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    rate, span = steady_rate(rows)
    whole = summary.get("updates_per_s")
    windows = rate is not None
    rec.update(updates_per_s=rate if windows else whole, measured_updates=span if windows else updates,
               whole_run_updates_per_s=whole, rate_from="log windows" if windows else "summary.json", status="ok")
    if rec["updates_per_s"]:
        rec["median_s"] = 1.0 / rec["updates_per_s"]
        rec["projected_500k_h"] = 500_000 / rec["updates_per_s"] / 3600
    else:
        rec["status"] = "failed: no rate in log.jsonl or summary.json"
    return rec


def add_speedups(records: list[dict[str, Any]]) -> None:
    """``speedup_vs_1_thread`` on every training row (the ``1-thread`` row's rate as 1), and
    ``speedup_vs_base`` on the rows of a variant (their mode without it), also as ``speedup_vs_eager`` on
    compiled rows."""
    rate = {r["mode"]: r["updates_per_s"] for r in records if r.get("status") == "ok" and r.get("updates_per_s")}
    for r in records:
        if r.get("status") != "ok" or not r.get("updates_per_s"):
            continue
        if "1-thread" in rate:
            r["speedup_vs_1_thread"] = r["updates_per_s"] / rate["1-thread"]
        base, variant = split_mode(r["mode"])
        if variant and base in rate:
            r["speedup_vs_base"] = r["updates_per_s"] / rate[base]
            if variant == COMPILED:
                r["speedup_vs_eager"] = r["speedup_vs_base"]


def best_two_core(records: list[dict[str, Any]]) -> tuple[str, float] | None:
    """The faster of ``2-threads`` and ``torchrun-2x1`` and its speed-up over ``1-thread``."""
    got = [(r["mode"], r["speedup_vs_1_thread"]) for r in records
           if r.get("mode") in ("2-threads", "torchrun-2x1") and r.get("speedup_vs_1_thread") is not None]
    return max(got, key=lambda m: m[1]) if got else None


def format_rows(records: list[dict[str, Any]]) -> str:
    header = (f"{'mode':<22} {'K':>3} {'updates':>8} {'updates/s':>10} {'vs 1 thread':>12} {'vs base':>8} "
              f"{'500k updates':>13}  status")
    lines = [header, "-" * len(header)]
    for r in records:
        ups = r.get("updates_per_s")
        vs, vb = r.get("speedup_vs_1_thread"), r.get("speedup_vs_base")
        proj = r.get("projected_500k_h")
        lines.append(f"{r['mode']:<22} {r['K']:>3} {r.get('measured_updates', r['updates']):>8} "
                     f"{'-' if not ups else format(ups, '10.2f'):>10} {'-' if vs is None else format(vs, '12.2f'):>12} "
                     f"{'-' if vb is None else format(vb, '8.2f'):>8} "
                     f"{'-' if proj is None or not math.isfinite(proj) else format(proj, '11.1f') + ' h':>13}  "
                     f"{r['status']}")
    return "\n".join(lines)
