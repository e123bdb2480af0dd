"""The HTTP entry's gateway (:class:`Entry`), and the engine-less ingress deployment that holds one.

On the edge the entry is a model replica (``service.edge.TurnoutEdge``) that holds a
:class:`Entry` beside its engine; without a local model to host it, :class:`TurnoutIngress` does.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from engine.launch.quantization import served_quantization
from engine.protocol import ModelRecord
from engine.store.manager import default_root
from router.circuit import CircuitBoard
from router.planner import Router
from router.providers.registry import make_provider
from service.adapters import AdapterCatalog, Revisions
from service.api.app import create_app
from service.availability import apply_status, read_serve_status
from service.backends.cloud import CloudBackend
from service.backends.protocol import Backend
from service.backends.replica import ReplicaBackend
from service.cache import ResponseCache
from service.config import TurnoutConfig
from service.gateway import Gateway
from service.metrics import Metrics
from service.serve_overrides.grpc_binding import bind_replica_grpc_to_node

log = logging.getLogger("turnout.ingress")


@serve.deployment(name="TurnoutIngress")
@serve.ingress()
class TurnoutIngress:
    """The entry of every request when no local model hosts it (a cloud-only graph, or
    ``server.data_path: ingress``): routing, fallback and metrics ahead of the model replicas."""

    async def __init__(
        self, config: TurnoutConfig, records: list[ModelRecord], handles: dict[str, DeploymentHandle]
    ) -> None:
        bind_replica_grpc_to_node()
        self.entry = Entry(config, records, handles, local={})

    async def __serve_build_asgi_app__(self) -> FastAPI:
        return create_app(self.entry.gateway, self.entry.config)

    async def __del__(self) -> None:
        await self.entry.close()


class Entry:
    """The gateway of an HTTP entry, its health prober and its cloud providers.

    ``local`` holds backends this process serves itself (the edge's own engine); every other
    local model is reached through its deployment handle, every cloud model through its provider.
    """

    def __init__(
        self, config: TurnoutConfig, records: list[ModelRecord], handles: dict[str, DeploymentHandle],
        local: dict[str, Backend],
    ) -> None:
        self.config = config
        records = [_overridden(r, config) for r in records]
        adapters = AdapterCatalog(config.store_root or default_root(), {r.id for r in records})
        router = Router.build(records, config.routing, adapters=adapters.index)
        for dangling in router.dangling_references:
            log.warning("routing settings name unknown target %s", dangling)
        self.providers = {p.name: make_provider(p) for p in config.cloud_providers}
        timeout = config.limits.first_token_timeout_s
        backends: dict[str, Backend] = {
            r.id: local.get(r.id) or ReplicaBackend(r.id, handles[r.id], timeout) for r in records
        }
        for target in router.targets:
            if target.is_cloud:
                backends[target.id] = CloudBackend(target, self.providers[target.provider])
        self.gateway = Gateway(
            router, backends, CircuitBoard(config.routing.circuit), Metrics(), config.limits.output_default,
            cache=_response_cache(config), revisions=Revisions({r.id: _revision(r) for r in records}, adapters),
        )
        self._prober = asyncio.get_running_loop().create_task(self._probe_forever())

    async def _probe_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.limits.health_check_period_s)
            try:
                apply_status(await read_serve_status(), self.gateway)
                await self.gateway.probe_health()
            except Exception:
                log.exception("health probe failed")

    async def close(self) -> None:
        self._prober.cancel()
        await asyncio.gather(*(p.close() for p in self.providers.values()), return_exceptions=True)


def _response_cache(config: TurnoutConfig) -> ResponseCache | None:
    settings = config.response_cache
    if not settings.enabled or settings.max_bytes == 0:
        return None
    return ResponseCache(settings.max_bytes, settings.ttl_s, settings.max_entry_bytes)


def _revision(record: ModelRecord) -> str:
    """What changes when a model id gets other weights: the hub revision and the registration."""
    return f"{record.revision or ''}@{record.created_at.isoformat()}"


def _overridden(record: ModelRecord, config: TurnoutConfig) -> ModelRecord:
    """The record as served: capabilities overridden, context capped by ``max_model_len``,
    quantization at load marked."""
    settings = next(m for m in config.models if m.id == record.id)
    updates: dict = {}
    if settings.capabilities is not None:
        updates["capabilities"] = settings.capabilities
    if settings.engine.max_model_len is not None:
        updates["context_length"] = min(record.context_length, settings.engine.max_model_len)
    updates["quantization"] = served_quantization(record, settings.engine)
    return record.model_copy(update=updates)
