"""Issue 14's guarantees (docs/reliability.md): run directories that are safe to open, share and lose
power in; user errors that end in a sentence; the library refuses bad numbers; derivatives right or
refused; downloads time out in total.

Faults are injected through public seams where there is one: a signal at an update boundary by a fit-loop
:class:`~flowvi.loop.Hook` (``run_energy(hooks=...)``), a signal during evaluation by a user energy
(``flowvi energy --target FILE.py:FN``, code the experiment calls). Exempt, by decision (issue 13), are
the faults at points no caller code reaches, which are injected by replacing a function:

- system calls: ``os.fsync`` failing with ENOSPC (:func:`test_full_disk_simulated`, where no tmpfs can be
  mounted) and a SIGKILL inside ``os.replace`` or halfway through a log record (``_KILLER``, in a child
  process). The failure has to come from beneath every writer of a real ``flowvi train`` run
  (checkpoints, logs, JSON); a seam for it would be a process-wide replaceable ``fsync``/``replace`` in
  :mod:`flowvi_experiments.atomic`, a module global under another name that exists only for these tests.
- signals inside drawing (``_sigterm_on_call`` on ``plot_training``, ``plot_figure3_grid``): the figures
  are drawn from finished tensors by matplotlib, with no caller code on the way to hang a signal on.
"""

from __future__ import annotations

import hashlib
import io
import os
import pathlib
import signal
import warnings

import pytest
import torch

from flowvi.loop import Hook
from flowvi_experiments.training.checkpoint import CheckpointError, load_checkpoint, previous_path, save_checkpoint


class _Evil:
    """Unpickling this would create ``self.marker`` (stands for arbitrary code)."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


# -- opening a run directory never runs code ------------------------------------------------------
@pytest.mark.parametrize("layer", ["outer", "inner"])
def test_a_checkpoint_whose_unpickling_runs_code_is_refused(tmp_path, layer):
    marker = tmp_path / "pwned"
    path = tmp_path / "checkpoint.pt"
    evil = {"update": 1, "model": _Evil(marker)}
    if layer == "outer":
        torch.save(evil, path)
    else:  # a well-formed envelope with a correct checksum around a malicious payload
        buf = io.BytesIO()
        torch.save(evil, buf)
        payload = buf.getvalue()
        envelope = {"flowvi_checkpoint": 2, "sha256": hashlib.sha256(payload).hexdigest(),
                    "payload": torch.frombuffer(bytearray(payload), dtype=torch.uint8)}
        torch.save(envelope, path)
    with pytest.raises(CheckpointError, match=r"refusing to load .*checkpoint\.pt.*could run code"):
        load_checkpoint(path)
    assert not marker.exists()


def test_report_reads_per_image_metrics_without_running_code(tmp_path):
    from flowvi_experiments.report.runs import RunRecord

    marker = tmp_path / "pwned"
    torch.save({"log_marginal": _Evil(marker)}, tmp_path / "metrics.per_image.pt")
    with pytest.raises(CheckpointError, match="refusing"):
        RunRecord(tmp_path, "r", {}, None, None).per_image_nll()
    assert not marker.exists()


# -- corruption is detected -----------------------------------------------------------------------
def test_damaged_bytes_are_detected_and_the_previous_checkpoint_named(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"update": 5, "w": torch.randn(20_000)}, keep_previous=True)
    save_checkpoint(path, {"update": 10, "w": torch.randn(20_000)}, keep_previous=True)
    assert load_checkpoint(previous_path(path))["update"] == 5
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 100] = bytes(100)  # 100 zeroed bytes in the middle (inside a tensor's storage)
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt is damaged.*checkpoint\.prev\.pt \(update 5\)"):
        load_checkpoint(path)


def test_a_truncated_checkpoint_is_a_sentence(tmp_path):
    path = tmp_path / "best.pt"
    save_checkpoint(path, {"update": 1, "w": torch.ones(100)})
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint .*best\.pt"):
        load_checkpoint(path)


def test_old_checkpoints_without_checksum_load_with_a_warning(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": 1, "update": 3, "w": torch.ones(2)}, path)  # what flowvi wrote before issue 14
    with pytest.warns(UserWarning, match="without a checksum"):
        state = load_checkpoint(path)
    assert state["update"] == 3
    save_checkpoint(path, state)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_checkpoint(path)["update"] == 3


def test_a_saved_flow_has_its_sha256_beside_it_and_damage_is_one_sentence(tmp_path, capsys):
    """``flow.pt`` of an energy run (here a figure-3 cell) gets ``flow.pt.sha256`` (``sha256sum`` format);
    100 zeroed bytes are a sentence naming the file and the fix before any work, and a flow saved
    before the record existed loads with a warning."""
    from flowvi_experiments.cli.main import main

    out = tmp_path / "f"
    argv = ["figure3", "--targets", "U2", "--flows", "planar", "--Ks", "2", "--steps", "5", "--batch-size", "16",
            "--eval-samples", "100", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    flow = out / "u2-planar-2" / "flow.pt"
    record = flow.with_name("flow.pt.sha256")
    assert record.read_text() == f"{hashlib.sha256(flow.read_bytes()).hexdigest()}  flow.pt\n"
    good = flow.read_bytes()
    data = bytearray(good)
    middle = len(data) // 2
    data[middle - 50 : middle + 50] = bytes(100)
    flow.write_bytes(bytes(data))
    table = (out / "table.md").stat().st_mtime_ns
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == (f"flowvi figure3: error: {flow} is damaged (its sha256 does not match the one recorded in "
                   "flow.pt.sha256 when it was written); rerun flowvi figure3 with --rerun to fit it again\n")
    assert (out / "table.md").stat().st_mtime_ns == table  # refused before the sweep
    flow.write_bytes(good)
    record.unlink()  # as written before flowvi kept the record
    with pytest.warns(UserWarning, match=r"flow\.pt has no recorded sha256 .* its integrity cannot be verified"):
        assert main(argv) == 0


def test_a_saved_flow_whose_unpickling_runs_code_is_refused_even_with_a_matching_sha256(tmp_path):
    from flowvi_experiments.training.checkpoint import checksum_path, load_state_file

    marker = tmp_path / "pwned"
    path = tmp_path / "flow.pt"
    torch.save({"steps.0.w": _Evil(marker)}, path)
    checksum_path(path).write_text(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  flow.pt\n")
    with pytest.raises(CheckpointError, match=r"refusing to load .*flow\.pt.*could run code"):
        load_state_file(path, fix="fit it again")
    assert not marker.exists()


# -- one writer per run directory -----------------------------------------------------------------
def _train_args(data, out, *extra):
    return ["train", "--out", str(out), "--data-dir", str(data), "--verify-data", "false", "--latent", "4",
            "--hidden", "8", "--batch-size", "10", "--val-every", "5", "--ckpt-every", "5", "--log-every", "5",
            "--progress", "false", "--tensorboard", "false", "--family", "planar", "--K", "2", "--lr", "1e-3",
            "--updates", "10", "--threads", "1", *extra]


def _config_args(data, out, cfg):
    """``flowvi train`` with the model and recipe from the config file ``cfg``."""
    return ["train", "--config", str(cfg), "--out", str(out), "--data-dir", str(data), "--verify-data", "false",
            "--latent", "4", "--hidden", "8", "--batch-size", "10", "--updates", "5", "--progress", "false",
            "--tensorboard", "false"]


def _lock_by(directory, pid):
    import json
    import socket

    directory.mkdir(parents=True, exist_ok=True)
    (directory / ".flowvi.lock").write_text(json.dumps({"pid": pid, "host": socket.gethostname(),
                                                        "command": "train", "started": "2026-01-01T00:00:00"}))


def test_a_second_writer_is_refused_with_a_sentence(tmp_path, tiny_data, capsys):
    import subprocess
    import sys

    from flowvi_experiments.cli.main import main

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for argv in (_train_args(tiny_data, tmp_path / "run"),
                     ["energy", "U1", "--flow", "planar", "-K", "1", "--steps", "1", "--out", str(tmp_path / "run")],
                     ["figure3", "--out", str(tmp_path / "run"), "--existing-only"],
                     ["evaluate", str(tmp_path / "run")]):
            _lock_by(tmp_path / "run", holder.pid)
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert f"in use by another writer: flowvi train (pid {holder.pid}" in err and err.count("\n") == 1
            assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".flowvi.lock"]  # nothing written
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_is_taken_over_and_leftover_temp_files_cleaned(tmp_path, tiny_data):
    import subprocess
    import sys

    from flowvi_experiments.cli.main import main

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = tmp_path / "run"
    _lock_by(run, dead.pid)
    (run / ".checkpoint.pt.k3j2l1.tmp").write_bytes(b"half a checkpoint")  # a write killed midway
    with pytest.warns(UserWarning) as record:
        assert main(_train_args(tiny_data, run)) == 0
    text = " ".join(str(w.message) for w in record)
    assert f"taking over the lock of train (pid {dead.pid}" in text and "removed 1 temporary file" in text
    assert not (run / ".flowvi.lock").exists()  # released at the end
    assert not list(run.glob(".*.tmp")) and (run / "summary.json").is_file()


def test_the_cli_prints_its_own_warnings_as_one_line_and_others_in_pythons_format(tmp_path, tiny_data):
    """On stderr (as in a lane's log) a lock takeover is one line, ``flowvi train: warning: ...``, without the file,
    line and source line Python's format adds; a third-party warning keeps that format."""
    import subprocess
    import sys
    import warnings

    from flowvi_experiments.cli.main import one_line_warnings
    from flowvi_experiments.training import lock

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = tmp_path / "run"
    _lock_by(run, dead.pid)
    proc = subprocess.run([sys.executable, "-W", "always", "-m", "flowvi_experiments.cli.main",
                           *_train_args(tiny_data, run)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "taking over the lock" in line]
    assert len(lines) == 1 and lines[0].startswith(f"flowvi train: warning: {run}: taking over"), proc.stderr
    assert "acquire(" not in proc.stderr and "UserWarning" not in proc.stderr, proc.stderr
    with one_line_warnings("fit"):
        assert warnings.formatwarning("ours", UserWarning, lock.__file__, 9) == "flowvi fit: warning: ours\n"
        theirs = warnings.formatwarning("theirs", UserWarning, "/elsewhere/pkg/mod.py", 7, "")
    assert theirs == "/elsewhere/pkg/mod.py:7: UserWarning: theirs\n"
    assert warnings.formatwarning("ours", UserWarning, lock.__file__, 9, "").startswith(lock.__file__)  # restored


def test_a_lock_from_another_host_is_never_broken(tmp_path, tiny_data, capsys):
    """The pid of a lock taken on another host cannot be checked here: refused in one sentence naming
    the host and the fix (delete the lock file), even if the same pid is not running here."""
    import json
    import socket
    import subprocess
    import sys

    from flowvi_experiments.cli.main import main

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = tmp_path / "run"
    run.mkdir()
    lock = run / ".flowvi.lock"
    record = {"pid": dead.pid, "host": "elsewhere.example", "command": "train", "started": "2026-01-01T00:00:00"}
    lock.write_text(json.dumps(record))
    assert main(_train_args(tiny_data, run)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert (f"in use by another writer: flowvi train (pid {dead.pid} on host elsewhere.example, started "
            f"2026-01-01T00:00:00); the pid cannot be checked from {socket.gethostname()}, so if that process is "
            f"gone, delete {lock}") in err, err
    assert json.loads(lock.read_text()) == record and sorted(p.name for p in run.iterdir()) == [".flowvi.lock"]


@pytest.mark.skipif(not pathlib.Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_a_lock_whose_pid_now_belongs_to_another_process_is_taken_over(tmp_path, tiny_data):
    """A pid reused after its writer died (a live process, but started at another time than the one the
    lock recorded) does not keep the lock: it is taken over like a dead writer's."""
    import json
    import subprocess
    import sys

    from flowvi_experiments.cli.main import main
    from flowvi_experiments.training.lock import process_identity

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run = tmp_path / "run"
        _lock_by(run, other.pid)
        identity = process_identity(other.pid)
        assert identity, "no /proc identity"
        lock = json.loads((run / ".flowvi.lock").read_text())
        lock.update(identity, pid_start=str(int(identity["pid_start"]) - 1))  # the writer started a tick earlier
        (run / ".flowvi.lock").write_text(json.dumps(lock))
        with pytest.warns(UserWarning, match=rf"taking over the lock of train \(pid {other.pid}"):
            assert main(_train_args(tiny_data, run)) == 0
        assert (run / "summary.json").is_file() and not (run / ".flowvi.lock").exists()
        lock.update(pid_start=identity["pid_start"])  # the very process: the lock is held
        (run / ".flowvi.lock").write_text(json.dumps(lock))
        assert main(_train_args(tiny_data, run, "--resume")) == 2
    finally:
        other.kill()
        other.wait()


def test_export_never_copies_a_run_a_writer_holds(tmp_path, capsys):
    """``flowvi export`` takes the run's lock: while ``train --resume`` (or ``evaluate``) writes the run,
    export is refused in one sentence and copies nothing; afterwards it exports and leaves no lock."""
    import subprocess
    import sys

    from flowvi_experiments.cli.main import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("family: planar\n")
    (run / "summary.json").write_text("{}\n")
    (run / "log.csv").write_text("update,loss\n1,2.0\n")
    out = tmp_path / "results"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _lock_by(run, holder.pid)
        assert main(["export", str(run), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and (f"{run} is in use by another writer: flowvi train (pid {holder.pid}, "
                                         "started 2026-01-01T00:00:00); wait for it to finish") in err, err
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()
    with pytest.warns(UserWarning, match="taking over the lock of train"):  # its writer is gone now
        assert main(["export", str(run), "--out", str(out)]) == 0
    assert sorted(f.name for f in (out / "run").iterdir()) == ["config.yaml", "log.csv", "summary.json"]
    assert sorted(f.name for f in run.iterdir()) == ["config.yaml", "log.csv", "summary.json"]


def test_torchrun_workers_stop_when_the_launcher_dies(tmp_path):
    """A worker (grandchild) running the watchdog exits when its parent is killed with SIGKILL."""
    import os
    import subprocess
    import sys
    import time

    pidfile = tmp_path / "worker.pid"
    worker = ("import os, sys, time; from flowvi_experiments.training.parent import stop_when_parent_dies; "
              f"stop_when_parent_dies(poll_s=0.1); open({str(pidfile)!r}, 'w').write(str(os.getpid())); "
              "time.sleep(600)")
    launcher = subprocess.Popen([sys.executable, "-c",
                                 f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {worker!r}]); "
                                 "time.sleep(600)"])
    # the worker imports torch before it writes its pid: minutes on a machine loaded by two trainings
    deadline = time.monotonic() + 240
    while not (pidfile.is_file() and pidfile.read_text()) and time.monotonic() < deadline and launcher.poll() is None:
        time.sleep(0.05)
    if not (pidfile.is_file() and pidfile.read_text()):
        launcher.kill()
        pytest.fail("the worker did not start within 240 s")
    pid = int(pidfile.read_text())
    launcher.kill()
    launcher.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        pytest.fail("the worker outlived its launcher")


# -- crash consistency ----------------------------------------------------------------------------
def _trainer_pair(tmp_path):
    from flowvi_experiments.training import TrainConfig, Trainer

    cfg = TrainConfig(family="planar", K=2, latent=4, hidden=8, updates=24, batch_size=10, val_every=7, ckpt_every=5,
                      log_every=4, optimizer="adam", lr=1e-3, anneal_steps=10, progress=False, tensorboard=False,
                      seed=3)
    g = torch.Generator().manual_seed(0)
    train_x = (torch.rand(60, 784, generator=g) < 0.3).float()
    valid_x = (torch.rand(20, 784, generator=g) < 0.3).float()
    return cfg, lambda out, **kw: Trainer(cfg, out, train_x, valid_x, **kw)


def _interrupt_after(update):
    """A fit-loop hook that sends SIGINT after ``update`` (the trainer stops there and checkpoints)."""
    import os
    import signal

    from flowvi.loop import Hook

    class Interrupt(Hook):
        def after_update(self, loop, t):
            if t == update:
                os.kill(os.getpid(), signal.SIGINT)

    return [Interrupt()]


def _rows(path):
    import json

    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("kill_at", [2, 13])  # inside the first log window, and past a checkpoint mid-window
def test_the_first_logged_window_after_a_resume_spans_the_right_updates(tmp_path, kill_at):
    _, make = _trainer_pair(tmp_path)
    make(tmp_path / "a").run()
    b = make(tmp_path / "b", hooks=_interrupt_after(kill_at + 1))
    assert b.run().status == "interrupted"
    make(tmp_path / "b", resume=True).run()
    keys = ("update", "loss", "train_bound", "val_bound", "beta", "lr")
    assert [{k: r[k] for k in keys} for r in _rows(tmp_path / "a" / "log.jsonl")] == \
        [{k: r[k] for k in keys} for r in _rows(tmp_path / "b" / "log.jsonl")]


def test_a_torn_last_log_record_is_dropped_with_a_warning(tmp_path):
    _, make = _trainer_pair(tmp_path)
    b = make(tmp_path / "b", hooks=_interrupt_after(14))
    b.run()
    with (tmp_path / "b" / "log.jsonl").open("a") as fh:
        fh.write('{"update": 16, "epoch": 2, "be')  # power lost mid-append
    with pytest.warns(UserWarning, match=r"log\.jsonl: dropped 1 damaged log record\(s\) \(line 6\)"):
        c = make(tmp_path / "b", resume=True)
        assert c.run().status == "completed"
    assert [r["update"] for r in _rows(tmp_path / "b" / "log.jsonl")][-1] == 24


def test_cutting_the_log_back_on_resume_is_atomic(tmp_path):
    """``--resume`` cuts log.jsonl and log.csv back to the checkpoint's update. A write that fails halfway
    (here: the file size limit, RLIMIT_FSIZE, met after 4 KiB of the ~9 KiB that are kept) leaves both
    files as they were; a non-atomic rewrite would leave 4 KiB of them."""
    import errno

    resource = pytest.importorskip("resource")
    from flowvi_experiments.training.logs import MetricsLogger, read_log

    logger = MetricsLogger(tmp_path, tensorboard=False)
    for t in range(1, 121):
        logger.log({"update": t, "epoch": 1, "beta": 1.0, "lr": 1e-3, "loss": 100.0 - t / 7, "train_bound": 99.5})
    logger.close()
    before = {name: (tmp_path / name).read_bytes() for name in ("log.jsonl", "log.csv")}
    assert len(before["log.jsonl"]) > 11_000
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    try:
        with pytest.raises(OSError) as info:
            MetricsLogger(tmp_path, resume_from=90, tensorboard=False)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert info.value.errno == errno.EFBIG
    assert {name: (tmp_path / name).read_bytes() for name in before} == before
    assert not list(tmp_path.glob(".*.tmp"))
    MetricsLogger(tmp_path, resume_from=90, tensorboard=False).close()  # with room, the cut is made
    assert [r["update"] for r in read_log(tmp_path / "log.jsonl")] == list(range(1, 91))
    csv_rows = (tmp_path / "log.csv").read_text().splitlines()
    assert len(csv_rows) == 91 and csv_rows[-1].startswith("90,")


def test_resuming_with_another_thread_count_warns(tmp_path):
    from flowvi_experiments.training.checkpoint import load_checkpoint, save_checkpoint

    _, make = _trainer_pair(tmp_path)
    b = make(tmp_path / "b", hooks=_interrupt_after(4))
    b.run()
    state = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert state["threads"] == torch.get_num_threads()
    state["threads"] = torch.get_num_threads() + 3
    save_checkpoint(tmp_path / "b" / "checkpoint.pt", state)
    with pytest.warns(UserWarning, match=r"checkpointed with \d+ torch thread\(s\) on \d+: .*not bit-identically"):
        make(tmp_path / "b", resume=True)


_KILLER = r"""
import os, signal, sys
import flowvi_experiments.atomic, flowvi_experiments.training.logs as logs
from flowvi_experiments.cli.main import main
mode, n = sys.argv[1], int(sys.argv[2])
calls = [0]
if mode == "replace":  # SIGKILL inside an atomic write, after the temp file is complete, before it replaces
    real = flowvi_experiments.atomic.os.replace
    def replace(a, b):
        calls[0] += 1
        if calls[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)
        real(a, b)
    flowvi_experiments.atomic.os.replace = replace
else:  # SIGKILL halfway through appending the n-th log record: a torn last line
    real_log = logs.MetricsLogger.log
    def log(self, row):
        calls[0] += 1
        if calls[0] == n:
            with self.jsonl_path.open("a") as fh:
                fh.write('{"update": %d, "lo' % row["update"])
            os.kill(os.getpid(), signal.SIGKILL)
        real_log(self, row)
    logs.MetricsLogger.log = log
sys.exit(main(sys.argv[3:]))
"""


def test_sigkill_at_seeded_points_resumes_bit_identical(tmp_path, tiny_data):
    """Kill the process (SIGKILL: no handler runs) inside checkpoint writes and mid log record at seeded
    points; ``--resume`` then ends with exactly the parameters of an uninterrupted run."""
    import random
    import subprocess
    import sys

    from flowvi_experiments.cli.main import main
    from flowvi_experiments.training.checkpoint import load_checkpoint

    extra = ("--updates", "20", "--val-every", "7", "--log-every", "3")
    assert main(_train_args(tiny_data, tmp_path / "ref", *extra)) == 0
    ref = load_checkpoint(tmp_path / "ref" / "checkpoint.pt")["model"]
    rng = random.Random(14)
    points = [("replace", rng.randint(4, 8)), ("log", rng.randint(2, 6))]
    for mode, n in points:
        run = tmp_path / f"{mode}-{n}"
        proc = subprocess.run([sys.executable, "-c", _KILLER, mode, str(n),
                               *_train_args(tiny_data, run, *extra)], capture_output=True, timeout=120)
        assert proc.returncode == -9, (mode, n, proc.stderr.decode()[-2000:])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # the stale lock, temp files and torn record are reported
            assert main(["train", "--out", str(run), "--resume"]) == 0
        assert "taking over the lock" in " ".join(str(w.message) for w in caught)
        assert not any("bit-identical" in str(w.message) for w in caught)
        got = load_checkpoint(run / "checkpoint.pt")["model"]
        assert all(torch.equal(ref[k], got[k]) for k in ref), (mode, n)
        assert not list(run.glob(".*.tmp")) and not (run / ".flowvi.lock").exists()


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs (needs root and mount; skipped with the reason otherwise)."""
    import shutil
    import subprocess

    mnt = tmp_path / "disk"
    mnt.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command: a full disk is simulated in test_full_disk_simulated")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip()}): see test_full_disk_simulated")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(directory):
    """Fill the file system holding ``directory``."""
    with (directory / "filler").open("wb", buffering=0) as fh:
        try:
            while True:
                fh.write(bytes(4096))
        except OSError:
            pass


def test_a_full_disk_keeps_the_last_good_checkpoint(small_disk):
    import errno

    path = small_disk / "checkpoint.pt"
    save_checkpoint(path, {"update": 1, "w": torch.ones(1000)}, keep_previous=True)
    _fill(small_disk)
    with pytest.raises(OSError) as info:
        save_checkpoint(path, {"update": 2, "w": torch.zeros(1000)}, keep_previous=True)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert load_checkpoint(path)["update"] == 1
    assert not list(small_disk.glob(".*.tmp"))


def test_a_full_disk_during_training_is_one_sentence(small_disk, tiny_data, capsys):
    from flowvi_experiments.cli.main import main

    run = small_disk / "run"
    code = main(_train_args(tiny_data, run, "--updates", "200", "--ckpt-every", "2"))
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1, err
    assert f"no space left on device while writing {run}/" in err
    assert load_checkpoint(run / "checkpoint.pt")["update"] >= 2  # the last good state, verified


def test_full_disk_simulated(tmp_path, tiny_data, capsys, monkeypatch):
    """The same without a tmpfs: the first checkpoint write after update 2 raises ENOSPC."""
    import errno

    import flowvi_experiments.atomic
    from flowvi_experiments.cli.main import main

    real, calls = flowvi_experiments.atomic.os.fsync, [0]

    def fsync(fd):
        calls[0] += 1
        if calls[0] > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(flowvi_experiments.atomic.os, "fsync", fsync)
    run = tmp_path / "run"
    assert main(_train_args(tiny_data, run, "--ckpt-every", "2")) == 1
    err = capsys.readouterr().err
    assert f"no space left on device while writing {run}/" in err and err.count("\n") == 1
    monkeypatch.undo()
    assert load_checkpoint(run / "checkpoint.pt")["update"] == 2
    assert not list(run.glob(".*.tmp"))


# -- fail before the work -------------------------------------------------------------------------
BAD_CONFIG_VALUES = [
    ("K: 10.7", "K must be an integer, got 10.7 (a float)"),
    ("K: true", "K must be an integer, got True (a boolean)"),
    ("K: 100000", "K must be in [0, 1000]"),
    ("K: -1", "K must be in [0, 1000]"),
    ("lr: .nan", "lr must be finite"),
    ("lr: 0", "lr must be > 0"),
    ("lr: abc", "lr must be a number, got 'abc' (a string)"),
    ("momentum: 5", "momentum must be in [0, 1)"),
    ("momentum: 1", "momentum must be in [0, 1)"),
    ("grad_clip: -1", "grad_clip must be >= 0"),
    ("anneal_start: 1.5", "anneal_start must be in [0, 1]"),
    ("batch_size: 0", "batch_size must be >= 1"),
    ("tensorboard: maybe", "tensorboard must be true or false"),
]


@pytest.mark.parametrize(("line", "message"), BAD_CONFIG_VALUES)
def test_bad_config_values_are_named_before_training(tmp_path, tiny_data, capsys, line, message):
    from flowvi_experiments.cli.main import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"family: planar\n{line}\n")
    argv = _config_args(tiny_data, tmp_path / "run", cfg)
    if line.startswith("batch_size"):
        argv = [a for a in argv if a not in ("--batch-size", "10")]
    if line.startswith("tensorboard"):
        argv = argv[:-2]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()  # refused before anything was written


@pytest.mark.parametrize(("argv", "message"), [
    (["--momentum", "5"], "momentum must be in [0, 1)"),
    (["--lr", "nan"], "lr must be finite"),
    (["--lr", "inf"], "lr must be finite"),
    (["--anneal-start", "-0.5"], "anneal_start must be in [0, 1]"),
    (["--K", "5000"], "K must be in [0, 1000]"),
])
def test_bad_train_flags_are_named(tmp_path, tiny_data, capsys, argv, message):
    from flowvi_experiments.cli.main import main

    assert main(_train_args(tiny_data, tmp_path / "run", *argv)) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "message"), [
    (["energy", "U1", "--lr", "nan"], "--lr must be finite"),
    (["energy", "U1", "--grad-clip", "-2"], "--grad-clip must be >= 0"),
    (["energy", "U1", "-K", "99999"], "-K must be in [0, 1000]"),
    (["energy", "U1", "--flow", "langevin", "--step-size", "inf"], "--step-size must be finite"),
    (["figure3", "--Ks", "2", "-3", "--existing-only"], "-K must be in [0, 1000]"),
    (["evaluate", ".", "--samples", "0"], "--samples must be >= 1"),
    (["data", "download", "mnist", "--timeout", "0"], "--timeout must be > 0"),
    (["data", "download", "mnist", "--timeout", "nan"], "--timeout must be finite"),
    (["data", "download", "mnist", "--base-url", "htp:/nowhere"], "--base-url must be an http://"),
    (["data", "download", "mnist", "--base-url", "http://host:99999/"], "--base-url has a bad port"),
])
def test_bad_numbers_and_urls_on_other_commands_are_one_sentence(tmp_path, capsys, monkeypatch, argv, message):
    from flowvi_experiments.cli.main import main

    monkeypatch.chdir(tmp_path)
    argv = [*argv, "--out", str(tmp_path / "out")] if argv[0] in ("energy", "figure3") else argv
    if argv[0] == "data":
        argv = [*argv, "--data-dir", str(tmp_path / "data")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists() and not (tmp_path / "data").exists()


def test_a_yaml_syntax_error_names_file_and_line(tmp_path, tiny_data, capsys):
    from flowvi_experiments.cli.main import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text("family: planar\nK: 10\nlr: [1e-3\nseed: 1\n")
    assert main(_config_args(tiny_data, tmp_path / "run", cfg)) == 2
    err = capsys.readouterr().err
    assert f"config file {cfg} is not valid YAML at line" in err and err.count("\n") == 1


def test_an_unwritable_output_fails_before_the_work(tmp_path, tiny_data, capsys):
    from flowvi_experiments.cli.main import main

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.yaml").write_text("family: planar\nK: 2\n")
    for argv in (["energy", "U1", "--steps", "100000", "--out", str(blocker)],
                 _train_args(tiny_data, blocker / "run"),
                 ["report", str(tmp_path / "r"), "--out", str(blocker / "rep")],
                 ["data", "download", "mnist", "--data-dir", str(blocker / "d")]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "not a folder" in err and err.count("\n") == 1, err


@pytest.mark.parametrize(("name", "content", "command"), [
    ("summary.json", '{"status": "compl', "report"),
    ("metrics.json", "[1, 2]", "report"),
    ("config.yaml", "family: [planar\n", "report"),
    ("config.yaml", "family: [planar\n", "evaluate"),
    ("config.yaml", "family: [planar\n", "resume"),
])
def test_damaged_run_files_are_a_sentence(tmp_path, tiny_data, capsys, name, content, command):
    from flowvi_experiments.cli.main import main

    run = tmp_path / "run"
    assert main(_train_args(tiny_data, run, "--updates", "5")) == 0
    capsys.readouterr()
    (run / name).write_text(content)
    argv = {"report": ["report", str(run), "--out", str(tmp_path / "rep"), "--no-grids"],
            "evaluate": ["evaluate", str(run)], "resume": ["train", "--out", str(run), "--resume"]}[command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert str(run / name) in err and err.count("\n") == 1, err


# -- nothing lost ---------------------------------------------------------------------------------
_ENERGY = ["energy", "U2", "--flow", "planar", "-K", "2", "--steps", "30", "--batch-size", "16",
           "--eval-samples", "200", "--quiet"]


def _sigterm_on_call(monkeypatch, module, name, n=1):
    import os
    import signal

    real, calls = getattr(module, name), [0]

    def wrapped(*a, **kw):
        calls[0] += 1
        if calls[0] == n:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*a, **kw)

    monkeypatch.setattr(module, name, wrapped)


class _SigtermAfter(Hook):
    """A fit-loop hook that sends this process SIGTERM after update ``update``."""

    def __init__(self, update: int) -> None:
        self.update = update

    def after_update(self, loop, update):
        if update == self.update:
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_during_energy_training_keeps_the_fit_and_evaluates_it(tmp_path):
    """SIGTERM after update 6 of 30: the fit loop takes it (no handler outside it runs), stops there, and the
    fit so far is evaluated, plotted and written."""
    import json

    from flowvi_experiments.energies import load_target
    from flowvi_experiments.experiments.energy import EnergyConfig, run_energy

    def outside(signum, frame):
        raise AssertionError("SIGTERM reached the handler outside the fit loop")

    out = tmp_path / "e"
    config = EnergyConfig(flow="planar", K=2, steps=30, batch_size=16, eval_samples=200)
    previous = signal.signal(signal.SIGTERM, outside)
    try:
        run_energy(load_target("U2"), config, out, hooks=[_SigtermAfter(6)])
    finally:
        signal.signal(signal.SIGTERM, previous)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["interrupted"] and (out / "flow.pt").is_file() and (out / "history.csv").is_file()
    assert "interrupted_during" not in metrics and metrics["steps_done"] == 6
    assert "free_energy" in metrics and (out / "density.png").is_file()
    assert (out / "history.csv").read_text().splitlines()[-1].startswith("6,")  # the window cut short is kept


_SIGTERM_IN_EVALUATION = """
import os, signal
from flowvi_experiments.energies import u2
sent = []
def U(z):  # U2; the first call with as many points as the evaluation (200) sends SIGTERM
    if not sent and z.reshape(-1, 2).shape[0] >= 200:
        sent.append(True)
        os.kill(os.getpid(), signal.SIGTERM)
    return u2(z)
"""


@pytest.mark.parametrize("stage", ["evaluation", "plotting"])
def test_sigterm_at_any_point_of_energy_writes_what_exists(tmp_path, monkeypatch, capsys, stage):
    import json

    import flowvi_experiments.experiments.energy_plots as plots_mod
    from flowvi_experiments.cli.main import main

    target = ["U2"]
    if stage == "evaluation":
        (tmp_path / "interrupting.py").write_text(_SIGTERM_IN_EVALUATION)
        target = ["--target", f"{tmp_path / 'interrupting.py'}:U", "--not-normalizable"]
    else:  # exempt: inside drawing (see the module docstring)
        _sigterm_on_call(monkeypatch, plots_mod, "plot_training")
    out = tmp_path / "e"
    assert main([_ENERGY[0], *target, *_ENERGY[2:], "--out", str(out)]) == 130
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["interrupted"] and (out / "flow.pt").is_file() and (out / "history.csv").is_file()
    assert metrics.get("interrupted_during") == stage and metrics["steps_done"] == 30
    assert ("free_energy" in metrics) == (stage == "plotting")
    assert "interrupted" in capsys.readouterr().out


def test_sigterm_in_figure3_still_writes_the_table(tmp_path, monkeypatch, capsys):
    import flowvi_experiments.experiments.energy_plots as plots_mod
    from flowvi_experiments.cli.main import main

    _sigterm_on_call(monkeypatch, plots_mod, "plot_figure3_grid")
    out = tmp_path / "f"
    argv = ["figure3", "--targets", "U2", "--flows", "planar", "--Ks", "1", "2", "--steps", "10",
            "--batch-size", "16", "--eval-samples", "100", "--quiet", "--out", str(out)]
    assert main(argv) == 130
    table = (out / "table.md").read_text()
    assert table.count("| U2 |") == 2 and (out / "u2-planar-2" / "metrics.json").is_file()


def test_a_target_that_is_not_normalizable_keeps_the_fit(tmp_path, capsys):
    import json

    from flowvi_experiments.cli.main import main

    energy = tmp_path / "ridge.py"
    energy.write_text("def U(z):\n    return 0.5 * (z[:, 1] / 0.2) ** 2\n")  # constant along z1: infinite mass
    args = ["energy", "--target", f"{energy}:U", "--box", "-0.5", "0.5", "-0.5", "0.5", "--flow", "planar", "-K", "2",
            "--steps", "20",
            "--batch-size", "16", "--eval-samples", "200", "--quiet"]
    with pytest.warns(UserWarning, match="looks not normalizable; the fit is kept"):
        assert main([*args, "--out", str(tmp_path / "a")]) == 0
    m = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert m["kl"] is None and m["log_z_domain"] == "box" and m["kl_box"] >= 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main([*args, "--not-normalizable", "--out", str(tmp_path / "b")]) == 0
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["kl"] is None


def test_a_finished_energy_run_is_not_overwritten(tmp_path, capsys):
    from flowvi_experiments.cli.main import main

    out = tmp_path / "e"
    assert main([*_ENERGY, "--out", str(out)]) == 0
    before = (out / "metrics.json").read_text()
    capsys.readouterr()
    assert main([*_ENERGY, "--seed", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already holds a finished run" in err and "--overwrite" in err and err.count("\n") == 1
    assert (out / "metrics.json").read_text() == before
    assert main([*_ENERGY, "--seed", "1", "--overwrite", "--out", str(out)]) == 0
    assert (out / "metrics.json").read_text() != before


# -- derivatives are right or refused -------------------------------------------------------------
def _bent_planar_flows(dim=3, K=4, seed=0):
    """The same planar flow twice: fused (one PlanarChain, the factory's default) and per step (the
    reference), with the same parameters far from the identity (curvature everywhere)."""
    from torch.nn.utils import parameters_to_vector, vector_to_parameters

    import flowvi as fv

    flows = {}
    for fused in (True, False):
        torch.manual_seed(seed)
        flows[fused] = fv.NormalizingFlow(dim, fv.planar_steps(dim, K, fused=fused),
                                          base=fv.StandardNormal(dim)).double()
    with torch.no_grad():
        for p in flows[False].parameters():
            p.copy_(torch.randn_like(p))
    vector_to_parameters(parameters_to_vector(flows[False].parameters()), flows[True].parameters())
    return flows


def test_second_derivatives_through_the_fused_chain_match_the_reference():
    flows = _bent_planar_flows()
    x = torch.randn(3, dtype=torch.float64)
    results = {}
    for fast, flow in flows.items():
        q = flow()

        def ladj(v, q=q):
            return q.flow.call_and_ladj(v)[1]

        hess = torch.autograd.functional.hessian(ladj, x)
        # a gradient penalty: d/dθ ‖∂ ln q(z)/∂z‖² needs the mixed second derivative in parameters
        z = x.clone().requires_grad_(True)
        _, log_det = q.flow.call_and_ladj(z)
        (g,) = torch.autograd.grad(log_det, z, create_graph=True)
        penalty_grads = torch.autograd.grad((g * g).sum(), list(flow.parameters()), allow_unused=True)
        results[fast] = (hess, torch.cat([torch.zeros(p.numel(), dtype=p.dtype) if t is None else t.reshape(-1)
                                          for t, p in zip(penalty_grads, flow.parameters(), strict=True)]))
    (h_fast, p_fast), (h_ref, p_ref) = results[True], results[False]
    assert h_ref.norm() > 1e-2  # not trivially zero
    torch.testing.assert_close(h_fast, h_ref)
    torch.testing.assert_close(p_fast, p_ref)  # the parameters in the same order (rows of the chain)


def test_torch_func_jacrev_and_vmap_work_through_the_default_path():
    flows = _bent_planar_flows()
    x = torch.randn(5, 3, dtype=torch.float64)
    out = {}
    for fast, flow in flows.items():
        q = flow()

        def f(v, q=q):
            return q.flow.call_and_ladj(v)[0]

        def ladj(v, q=q):
            return q.flow.call_and_ladj(v)[1]

        out[fast] = (torch.func.vmap(torch.func.jacrev(f))(x), torch.func.vmap(ladj)(x))
    for a, b in zip(out[True], out[False], strict=True):
        torch.testing.assert_close(a, b)
    # ln|det J| from the flow agrees with the log-determinant of the Jacobian torch.func computes
    torch.testing.assert_close(torch.linalg.slogdet(out[True][0])[1], out[True][1])


def test_importance_log_marginal_accepts_zero_weights():
    import math

    from flowvi.objectives import importance_log_marginal

    class Q:
        def rsample_and_log_prob(self, shape):
            z = torch.arange(shape[0], dtype=torch.float64).unsqueeze(1) + torch.tensor([0.0, 1.0])
            return z, torch.zeros(shape[0], 2, dtype=torch.float64)

    def log_joint(z):  # p = 0 where z is odd: half the weights are zero
        return torch.where(z % 2 == 1, torch.tensor(-math.inf, dtype=z.dtype), torch.zeros_like(z))

    est = importance_log_marginal(Q(), log_joint, n_samples=8, chunk_size=4)
    torch.testing.assert_close(est.log_marginal, torch.full((2,), math.log(0.5), dtype=torch.float64))
    with pytest.raises(FloatingPointError, match="every importance weight is zero .* for 2 data point"):
        importance_log_marginal(Q(), lambda z: torch.full_like(z, -math.inf), n_samples=4)
    with pytest.raises(FloatingPointError, match="NaN or \\+inf"):
        importance_log_marginal(Q(), lambda z: torch.full_like(z, math.nan), n_samples=4)


# -- the library refuses bad numbers --------------------------------------------------------------
def test_free_energy_refuses_nan_log_joint_and_beta():
    import math

    import flowvi as fv
    from flowvi.objectives import free_energy
    from flowvi.validation import NonFiniteError

    q = fv.NormalizingFlow(2, fv.planar_steps(2, 2))()
    with pytest.raises(NonFiniteError, match="log_joint\\(z\\) has 4 NaN entries"):
        free_energy(q, lambda z: torch.full(z.shape[:-1], math.nan), n_samples=4)
    for beta in (math.nan, math.inf, -0.5, torch.tensor(math.nan)):
        with pytest.raises(NonFiniteError, match="beta"):
            free_energy(q, lambda z: -(z * z).sum(-1), n_samples=4, beta=beta)
    fv.set_validation(False)  # the checks cost a host sync: off, NaN flows on as in torch
    try:
        assert torch.isnan(free_energy(q, lambda z: torch.full(z.shape[:-1], math.nan), n_samples=4))
    finally:
        fv.set_validation(True)


def test_bad_parameters_raise_when_the_flow_is_built():
    import math

    import flowvi as fv
    from flowvi.transforms import PlanarTransform, RadialTransform
    from flowvi.transforms.planar_chain import PlanarChainTransform
    from flowvi.validation import NonFiniteError

    # NaN coupling weights
    flow = fv.NormalizingFlow(4, fv.make_steps("nice-perm", 4, 2, hidden=8))
    with torch.no_grad():
        flow.steps[1].first.weight[0, 0] = math.nan
    with pytest.raises(NonFiniteError, match="coupling first.weight has 1 non-finite"):
        flow()
    # a base scale that underflows to 0
    flow = fv.NormalizingFlow(2, fv.planar_steps(2, 1))
    with torch.no_grad():
        flow.base.scale.fill_(-200.0)  # the learned DiagonalNormal's raw scale
    with pytest.raises(NonFiniteError, match="base scale is <= 0 in 2 entries"):
        flow()
    # wᵀû < −1 given to the planar forward, per step and fused
    w, u = torch.tensor([1.0, 0.0]), torch.tensor([-2.0, 0.0])
    with pytest.raises(NonFiniteError, match="wᵀû < −1 in 1 planar step"):
        PlanarTransform(w, u, torch.tensor(0.0))
    with pytest.raises(NonFiniteError, match="wᵀû < −1 in 1 planar step"):
        PlanarChainTransform(w[None], u[None], torch.zeros(1))
    # α <= 0 for radial
    with pytest.raises(NonFiniteError, match="α <= 0 in 1 radial step"):
        RadialTransform(torch.zeros(2), torch.tensor(0.0), torch.tensor(0.0))
    with pytest.raises(NonFiniteError, match="α <= 0 in 1 radial step"):
        RadialTransform(torch.zeros(2), torch.tensor(-1.0), torch.tensor(2.0))


def test_a_global_flow_refuses_a_context_and_make_steps_a_negative_k():
    import flowvi as fv

    with pytest.raises(ValueError, match="global parameters .* takes no context"):
        fv.NormalizingFlow(2, fv.planar_steps(2, 2))(torch.zeros(3, 5))
    for K in (-1, 2.5, True):
        with pytest.raises(ValueError, match="K must be an integer >= 0"):
            fv.make_steps("planar", 2, K)


@pytest.mark.parametrize("family", ["planar", "radial", "nice-perm", "diagonal"])
def test_log_prob_of_an_empty_batch(family):
    import flowvi as fv

    q = fv.NormalizingFlow(2, fv.make_steps(family, 2, 3))()
    for shape in ((0, 2), (5, 0, 2)):
        out = q.log_prob(torch.empty(shape))
        assert out.shape == shape[:-1]


# -- downloads time out in total ------------------------------------------------------------------
def test_a_trickling_server_times_out_in_total(tmp_path, trickle_server):
    import time

    from flowvi_experiments.data import DatasetError
    from flowvi_experiments.data.download import fetch_file
    from flowvi_experiments.data.registry import CanonicalFile

    spec = CanonicalFile("x", "x/file.bin", 1000, "0" * 64, "file.bin")
    start = time.monotonic()
    with pytest.raises(DatasetError, match=r"more than 2 s in total"):
        fetch_file(spec, f"{trickle_server}/file.bin", tmp_path / "x" / "file.bin", timeout=2.0)
    assert time.monotonic() - start < 3.5  # per-read timeouts would never fire: a byte comes every 0.5 s
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == []  # no .part left


def test_sigterm_during_a_download_leaves_no_part_file(tmp_path, trickle_server):
    import os
    import signal
    import subprocess
    import sys
    import time

    data = tmp_path / "data"
    proc = subprocess.Popen([sys.executable, "-m", "flowvi_experiments.cli.main", "data", "download", "mnist",
                             "--base-url", trickle_server, "--data-dir", str(data), "--timeout", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not list(data.rglob("*.part")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert list(data.rglob("*.part")), proc.communicate()
    time.sleep(0.7)  # some bytes are in
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err.decode()
    assert "interrupted; no partial file was left" in err.decode()
    assert not [p for p in data.rglob("*") if p.is_file()]


def test_a_sigkilled_download_leaves_a_part_file_that_the_next_download_removes(tmp_path, trickle_server, server):
    """SIGKILL mid-transfer (no handler runs) leaves the ``.part`` file and the destination's lock; the
    next download of the file takes the stale lock over, removes the ``.part`` and ends with the file."""
    import hashlib
    import os
    import signal
    import subprocess
    import sys
    import time
    from dataclasses import astuple

    from conftest import TRICKLE_BODY

    from flowvi_experiments.data.download import fetch_file
    from flowvi_experiments.data.registry import CanonicalFile

    spec = CanonicalFile("x", "x/file.bin", 10240, hashlib.sha256(bytes(range(256)) * 40).hexdigest(), "file.bin")
    dest = tmp_path / "data" / "x" / "file.bin"
    child = ("import sys; from pathlib import Path; from flowvi_experiments.data.download import fetch_file; "
             "from flowvi_experiments.data.registry import CanonicalFile; "
             f"fetch_file(CanonicalFile(*{astuple(spec)!r}), sys.argv[1], Path(sys.argv[2]), timeout=60, gzipped=True)")
    proc = subprocess.Popen([sys.executable, "-c", child, f"{trickle_server}/file.bin", str(dest)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not list(dest.parent.glob("*.part")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    time.sleep(0.7)  # some bytes are in
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    left = sorted(p.name for p in dest.parent.iterdir())
    parts = [name for name in left if name.endswith(".part")]
    assert len(parts) == 1 and left == sorted([".file.bin.lock", *parts]), left

    base, www, _ = server
    (www / "file.bin").write_bytes(TRICKLE_BODY)
    with pytest.warns(UserWarning) as record:
        fetch_file(spec, f"{base}/file.bin", dest, timeout=30, gzipped=True)
    text = " ".join(str(w.message) for w in record)
    assert f"taking over the lock of data download (pid {proc.pid}" in text, text
    assert f"removed 1 temporary file(s) left by an interrupted write: {parts[0]}" in text, text
    assert sorted(p.name for p in dest.parent.iterdir()) == ["file.bin"]
    assert dest.read_bytes() == TRICKLE_BODY


def test_a_download_of_a_file_being_downloaded_is_refused_and_leaves_its_part_file(tmp_path, server):
    """One writer per destination: a live download's lock refuses a second one with a sentence, and
    the second touches neither the first one's ``.part`` file nor its lock."""
    import json
    import socket
    import subprocess
    import sys

    from flowvi_experiments.data import DatasetError
    from flowvi_experiments.data.download import fetch_file
    from flowvi_experiments.data.registry import CanonicalFile

    spec = CanonicalFile("x", "x/file.bin", 3, "0" * 64, "file.bin")
    dest = tmp_path / "x" / "file.bin"
    dest.parent.mkdir()
    part = dest.parent / ".file.bin.abc123.part"
    part.write_bytes(b"half")
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (dest.parent / ".file.bin.lock").write_text(json.dumps(
            {"pid": holder.pid, "host": socket.gethostname(), "command": "data download", "started": "now"}))
        base, www, requests = server
        (www / "file.bin").write_bytes(b"abc")
        with pytest.raises(DatasetError, match=rf"^{dest} is in use by another writer: flowvi data download "
                                               rf"\(pid {holder.pid}, started now\); wait for it to finish$"):
            fetch_file(spec, f"{base}/file.bin", dest, timeout=30)
        assert part.read_bytes() == b"half" and (dest.parent / ".file.bin.lock").exists() and not requests
    finally:
        holder.kill()
        holder.wait()


def _ill_conditioned_planar(dtype):
    from flowvi.distribution import FlowPosterior
    from flowvi.transforms import PlanarTransform, planar_reparameterize

    w = torch.tensor([1.0, 0.0], dtype=dtype)
    u_hat, uw = planar_reparameterize(torch.tensor([-30.0, 1e6], dtype=dtype), w)  # wᵀû ≈ −1, ‖û‖ = 1e6
    return FlowPosterior(torch.zeros(2, dtype=dtype), torch.ones(2, dtype=dtype),
                         [PlanarTransform(w, u_hat, torch.tensor(0.0, dtype=dtype), uw=uw)])


def test_planar_log_prob_is_accurate_or_warns():
    torch.manual_seed(0)
    q32 = _ill_conditioned_planar(torch.float32)
    y, one_pass = q32.rsample_and_log_prob((500,))
    with pytest.warns(RuntimeWarning, match="ill-conditioned .* evaluate in float64"):
        through_inverse = q32.log_prob(y)
    assert (through_inverse - one_pass).abs().max() > 1  # the warning is not a false alarm here
    q64 = _ill_conditioned_planar(torch.float64)
    y, one_pass = q64.rsample_and_log_prob((500,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.testing.assert_close(q64.log_prob(y), one_pass, rtol=0, atol=1e-6)
    # a well-conditioned float32 flow: no warning, and log_prob agrees with the one-pass density
    import flowvi as fv

    q = fv.NormalizingFlow(2, fv.planar_steps(2, 8))()
    y, one_pass = q.rsample_and_log_prob((500,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.testing.assert_close(q.log_prob(y.detach()), one_pass.detach(), rtol=0, atol=1e-3)
