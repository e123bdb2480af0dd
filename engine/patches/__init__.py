"""Turnout's patches of third-party internals, in one place.

vLLM general plugins (``vllm.general_plugins`` entry points in pyproject.toml), which vLLM calls in
every process that hosts an engine: :mod:`.cpu_kernels` (the CPU kernel policy), :mod:`.lifeline`
(engine processes end with their parent), :mod:`.shm_wakeup` (idle engines wake at once),
:mod:`.seeded_sampling` (seeded requests on the CPU), :mod:`.worker_memory` (a worker's RSS); and
:mod:`.gguf_reader` (GGUF files parsed once per conversion). Each names the releases it was written
for (:data:`WRITTEN_FOR`, or its own) and refuses to apply on others (:mod:`engine.versions`).
"""

from __future__ import annotations

from engine.versions import require_versions

WRITTEN_FOR = {"vllm": "0.32.0", "torch": "2.13.0"}


def require_written_for(patch: str) -> None:
    """Refuse to apply ``patch`` (a module name) unless vLLM and torch are the releases it was written for."""
    require_versions(WRITTEN_FOR, patch)
