"""Turnout's overrides of Ray Serve and Ray Serve LLM internals, in one place.

- :mod:`.llm_server`: ``LLMServer`` with Turnout's engine, adapters and health (the model replica);
- :mod:`.engine_class`: Ray LLM's ``VLLMEngine`` without the node-init task for local checkpoints,
  keeping the single-process executor;
- :mod:`.request_router`: Serve request routers choosing among one model's replicas;
- :mod:`.grpc_binding`: replica-to-replica gRPC bound to the node's address, not every interface;
- :mod:`.environment`: Ray's loopback binding and Serve's high-throughput mode (HAProxy, its retry
  policy riding on Ray's template variable).

They were written for one Ray release (:data:`WRITTEN_FOR`); importing this package on another
raises :class:`engine.versions.PatchVersionError` naming both.
"""

from __future__ import annotations

from engine.versions import require_versions

WRITTEN_FOR = {"ray": "2.60.0"}

require_versions(WRITTEN_FOR, __name__)
