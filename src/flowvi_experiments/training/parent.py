"""Workers that stop when their launcher dies.

Under ``torchrun`` each training process is a child of the launcher. If the launcher is killed
(``SIGKILL``, a lost session) the workers would otherwise train on as orphans, holding the run
directory. :func:`stop_when_parent_dies` starts a daemon thread that polls the parent pid; when it
changes (the process was re-parented) it sends ``SIGTERM`` to this process, which the trainer treats
like any interruption (agreed stop, checkpoint), and after ``grace_s`` more seconds (a collective
stuck on a dead peer) exits hard.
"""

from __future__ import annotations

import os
import signal
import threading
import time


def stop_when_parent_dies(poll_s: float = 1.0, grace_s: float = 60.0) -> threading.Thread:
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_s)
        os._exit(143)

    thread = threading.Thread(target=watch, name="flowvi-parent-watchdog", daemon=True)
    thread.start()
    return thread
