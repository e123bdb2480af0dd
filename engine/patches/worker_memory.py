"""The engine worker reports its own resident memory, where the weights and the KV cache live.

:func:`register` is a ``vllm.general_plugins`` entry point, run in every vLLM process: it gives
vLLM's worker a ``turnout_memory`` method, so ``collective_rpc("turnout_memory")`` (see
:meth:`engine.runtime.LocalEngine.memory`) reads the figure in the right process. (vLLM's own
"Model loading took" figure is a device-memory delta, and on the CPU its kernels keep repacked
weights outside the model's tensors, so neither measures the CPU weights.)
"""

from __future__ import annotations

from typing import Any

from engine.patches import require_written_for

METHOD = "turnout_memory"


def worker_memory(worker: Any) -> dict[str, int]:
    """``rss_bytes``: the resident memory of the worker process."""
    import psutil

    return {"rss_bytes": psutil.Process().memory_info().rss}


def register() -> None:
    """vLLM general plugin: add :func:`worker_memory` to vLLM's worker as ``turnout_memory``."""
    require_written_for(__name__)
    from vllm.v1.worker.worker_base import WorkerBase

    if not hasattr(WorkerBase, METHOD):
        setattr(WorkerBase, METHOD, worker_memory)
