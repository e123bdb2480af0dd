"""An idle engine process wakes for new work within milliseconds, not five seconds.

vLLM's CPU engine runs its scheduler (EngineCore) and its model worker in two processes that pass
every step through a shared-memory ring (``vllm.distributed.device_communicators.shm_broadcast``).
A reader that has been idle for a second stops spinning on the ring and waits for a ZeroMQ
notification from the writer, re-reading the ring at the latest every
``SHM_READER_RECHECK_INTERVAL_MS`` (5,000 ms in vLLM 0.32) in case the notification was lost.
Notifications are lost in practice (the writer's socket drops one when the previous one is still
queued): on these machines about a quarter of requests sent one after another waited 5 s before
the engine saw them, with two replicas sharing two cores.

:func:`register` is a ``vllm.general_plugins`` entry point, run in every vLLM process: it lowers
the recheck interval to :data:`RECHECK_MS`, which bounds the cost of a lost notification at that;
an idle reader then re-reads one flag every few milliseconds (a ``poll`` wakeup, no spinning).
``TURNOUT_SHM_RECHECK_MS`` overrides it; 0 keeps vLLM's own.
"""

from __future__ import annotations

import logging
import os

from engine.patches import require_written_for

log = logging.getLogger("turnout.shm_wakeup")
RECHECK_MS = 20
ENV = "TURNOUT_SHM_RECHECK_MS"


def register() -> None:
    """vLLM general plugin: bound an idle shared-memory reader's missed-wakeup delay."""
    require_written_for(__name__)
    value = int(os.environ.get(ENV, RECHECK_MS))
    if value <= 0:
        return
    from vllm.distributed.device_communicators import shm_broadcast

    if not hasattr(shm_broadcast, "SHM_READER_RECHECK_INTERVAL_MS"):
        log.warning("vLLM has no SHM_READER_RECHECK_INTERVAL_MS any more; %s has no effect", ENV)
        return
    shm_broadcast.SHM_READER_RECHECK_INTERVAL_MS = min(shm_broadcast.SHM_READER_RECHECK_INTERVAL_MS, value)
