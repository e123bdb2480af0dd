"""Turnout's ingress deployment: holds the gateway and serves the FastAPI app built around it."""

from __future__ import annotations

import asyncio
import logging

from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from engine.protocol import ModelRecord
from router.circuit import CircuitBoard
from router.planner import Router
from router.providers.registry import make_provider
from service.api.app import create_app
from service.backends.cloud import CloudBackend
from service.backends.protocol import Backend
from service.backends.replica import ReplicaBackend
from service.config import TurnoutConfig
from service.gateway import Gateway
from service.metrics import Metrics

log = logging.getLogger("turnout.ingress")


@serve.deployment(name="TurnoutIngress")
@serve.ingress()
class TurnoutIngress:
    """The entry of every request: routing, fallback and metrics ahead of the model replicas."""

    async def __init__(
        self, config: TurnoutConfig, records: list[ModelRecord], handles: dict[str, DeploymentHandle]
    ) -> None:
        self.config = config
        records = [_overridden(r, config) for r in records]
        router = Router.build(records, config.routing)
        for dangling in router.dangling_references:
            log.warning("routing settings name unknown target %s", dangling)
        self.providers = {p.name: make_provider(p) for p in config.cloud_providers}
        backends: dict[str, Backend] = {
            r.id: ReplicaBackend(r.id, handles[r.id], config.limits.first_token_timeout_s) for r in records
        }
        for target in router.targets:
            if target.is_cloud:
                backends[target.id] = CloudBackend(target, self.providers[target.provider])
        self.gateway = Gateway(router, backends, CircuitBoard(config.routing.circuit), Metrics())
        self._prober = asyncio.get_running_loop().create_task(self._probe_forever())

    async def __serve_build_asgi_app__(self) -> FastAPI:
        return create_app(self.gateway, self.config)

    async def _probe_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.limits.health_check_period_s)
            try:
                await self.gateway.probe_health()
            except Exception:  # noqa: BLE001 - probing must outlive a bad round; logged
                log.exception("health probe failed")

    async def __del__(self) -> None:
        self._prober.cancel()
        await asyncio.gather(*(p.close() for p in self.providers.values()), return_exceptions=True)


def _overridden(record: ModelRecord, config: TurnoutConfig) -> ModelRecord:
    """The record as served: capabilities overridden, context capped by ``max_model_len``."""
    settings = next(m for m in config.models if m.id == record.id)
    updates: dict = {}
    if settings.capabilities is not None:
        updates["capabilities"] = settings.capabilities
    if settings.engine.max_model_len is not None:
        updates["context_length"] = min(record.context_length, settings.engine.max_model_len)
    return record.model_copy(update=updates)
