"""Engine processes end when the process that started them is gone.

vLLM starts its engine core and CPU workers as multiprocessing children of the process that
hosts the engine (a Serve replica, ``vllm serve``). When that process is killed outright (its
Ray node lost, ``ray stop --force``, an OOM kill) nothing tells the children: they live on as
orphans holding their memory (about 1.5-2 GiB each for the small demo models). :func:`register`
is a ``vllm.general_plugins`` entry point, run in every vLLM process: in a multiprocessing child
it starts a daemon thread that ends the process (and its own children) once its parent changes.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable

from engine.patches import require_written_for

log = logging.getLogger("turnout.lifeline")


def register() -> None:
    """vLLM general plugin: watch the parent of a vLLM child process.

    The parent is the process that started this one (multiprocessing knows it), not whatever
    ``os.getppid()`` says now: a parent killed while this process was still starting (importing
    torch under load takes seconds) has already been replaced by the reaper, and watching the
    reaper would keep this process alive for good."""
    require_written_for(__name__)
    parent = multiprocessing.parent_process()
    if parent is not None and parent.pid is not None:
        watch_parent(parent.pid)


def watch_parent(parent: int, period_s: float = 1.0, on_orphaned: Callable[[], None] | None = None) -> threading.Thread:
    """Call ``on_orphaned`` (default: :func:`end_process_tree`) once ``os.getppid()`` is no longer
    ``parent``; checks every ``period_s`` from a daemon thread, which it returns."""
    action = on_orphaned or end_process_tree

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(period_s)
        log.warning("parent process %d is gone; ending this engine process %d", parent, os.getpid())
        action()

    thread = threading.Thread(target=watch, name="turnout-lifeline", daemon=True)
    thread.start()
    return thread


def end_process_tree() -> None:
    """Kill this process's descendants, then exit at once (no cleanup: the parent is gone)."""
    import psutil

    for child in psutil.Process().children(recursive=True):
        try:
            child.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass
    os._exit(1)
