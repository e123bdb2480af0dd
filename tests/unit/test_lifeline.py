"""An engine child process ends when its parent is killed outright, instead of living on as an
orphan that holds the engine's memory. Real processes: a parent that starts a multiprocessing
child (as vLLM starts its engine core), a grandchild under it (as the engine core starts workers)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil

from engine.patches import lifeline

PARENT = textwrap.dedent(
    """
    import multiprocessing, subprocess, sys, time

    def child(pids):
        time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 0)  # a child still starting up
        from engine.patches.lifeline import register
        register()
        worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        pids.put(worker.pid)
        time.sleep(300)

    if __name__ == "__main__":
        ctx = multiprocessing.get_context("spawn")
        pids = ctx.Queue()
        process = ctx.Process(target=child, args=(pids,))
        process.start()
        print(process.pid, flush=True)
        print(pids.get(), flush=True)
        time.sleep(300)
    """
)


def _gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.1)
    return False


def test_a_child_whose_parent_is_killed_ends_with_its_own_children(tmp_path: Path):
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    repo = Path(__file__).resolve().parents[2]
    parent = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
    )
    child, worker = int(parent.stdout.readline()), int(parent.stdout.readline())
    try:
        time.sleep(1.5)
        assert psutil.pid_exists(child) and psutil.pid_exists(worker)  # alive while the parent is
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        assert _gone(child, 10), "the child outlived its parent"
        assert _gone(worker, 10), "the child's own worker outlived it"
    finally:
        for pid in (child, worker):
            if psutil.pid_exists(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_child_whose_parent_was_killed_while_it_started_ends_too(tmp_path: Path):
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    repo = Path(__file__).resolve().parents[2]
    parent = subprocess.Popen(
        [sys.executable, str(script), "3"], stdout=subprocess.PIPE, text=True, cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
    )
    child = int(parent.stdout.readline())
    try:
        parent.send_signal(signal.SIGKILL)  # before the child has registered its watch
        parent.wait(10)
        assert _gone(child, 15), "a child that registered after its parent was gone lived on"
    finally:
        if psutil.pid_exists(child):
            os.kill(child, signal.SIGKILL)


def test_the_watch_stays_quiet_while_the_parent_lives():
    called: list[bool] = []
    thread = lifeline.watch_parent(os.getppid(), period_s=0.01, on_orphaned=lambda: called.append(True))
    time.sleep(0.1)
    assert thread.is_alive() and not called


def test_the_watch_acts_once_the_parent_changes():
    called: list[bool] = []
    thread = lifeline.watch_parent(-1, period_s=0.01, on_orphaned=lambda: called.append(True))
    thread.join(2)
    assert called == [True]
