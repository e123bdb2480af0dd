"""The edge's entry: a model replica that is also the HTTP ingress.

For one request this replica does everything the engine-less ingress does (API keys, limits,
validation, routing with ``auto`` and size hints, circuit breakers, fallback, metrics: the same
FastAPI app and :class:`~service.gateway.Gateway`), and when the route's target is its own model it
calls its own engine in-process, so the token stream goes from the engine to the client's socket
in this one process, as in ``vllm serve``. Other models are reached through their deployment
handles, cloud models through their providers, exactly as before; that slower path is taken only
when the request is for them or falls back to them.

Ray Serve runs this replica's ASGI app behind HAProxy (``RAY_SERVE_ENABLE_HA_PROXY``), which
spreads connections over the replicas of this deployment by fewest open connections, Turnout's
``least_loaded`` policy for one model. What the replica does not know: the other replicas of its
own model (each has its own gateway, circuits and health view).

A dead engine does not take the entry down: Serve's health check of this replica asks only
whether it can serve HTTP, the gateway sees the engine as unhealthy and falls back, and the engine
is started again in place.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from engine.protocol import ModelRecord
from router.errors import TargetUnavailableError
from service.api.app import create_app
from service.backends.local import LocalServerBackend
from service.config import TurnoutConfig
from service.deployment import Entry
from service.serve_overrides.llm_server import TurnoutLLMServer

log = logging.getLogger("turnout.edge")


@serve.ingress()
class TurnoutEdge(TurnoutLLMServer):
    """A :class:`TurnoutLLMServer` that also serves Turnout's OpenAI API for every target."""

    async def __init__(
        self, llm_config: Any, *, turnout: TurnoutConfig, records: list[ModelRecord],
        handles: dict[str, DeploymentHandle], max_in_flight: int, engine_cls: Any = None,
    ) -> None:
        self._reviving: asyncio.Task | None = None
        await super().__init__(llm_config, engine_cls=engine_cls)
        model_id = llm_config.model_id
        replica = serve.get_replica_context().replica_id.to_full_id_str()
        own = LocalServerBackend(model_id, self, turnout.limits.first_token_timeout_s, max_in_flight, replica)
        self.entry = Entry(turnout, records, handles, local={model_id: own})

    async def __serve_build_asgi_app__(self) -> FastAPI:
        return create_app(self.entry.gateway, self.entry.config)

    async def check_engine(self) -> None:
        """Raise unless this replica's engine can take requests (the gateway's health probe)."""
        if self.engine is None or self._reviving is not None:
            raise TargetUnavailableError("the engine is starting again")
        await self.engine.check_health()

    async def check_health(self) -> None:
        """Serve's health check: the HTTP entry is fine; a dead engine is started again here."""
        if self._reviving is not None:
            return
        try:
            await self.check_engine()
        except Exception as e:  # noqa: BLE001 - any engine failure: the engine restarts in place
            log.error("the engine of %s failed (%s); starting it again", self._llm_config.model_id, e)
            self._reviving = asyncio.get_running_loop().create_task(self._revive())

    async def _run_request(self, request: Any, **kwargs: Any) -> Any:
        if self._reviving is not None or self.engine is None:
            raise TargetUnavailableError(f"{self._llm_config.model_id}'s engine is starting again")
        return await super()._run_request(request, **kwargs)

    async def _revive(self) -> None:
        old, self.engine = self.engine, None
        try:
            await _shut_down(old)
            self._adapters.clear()  # the new engine has loaded none of them
            await self.start()
            log.warning("the engine of %s serves again", self._llm_config.model_id)
        except Exception:
            log.exception("the engine of %s did not start again", self._llm_config.model_id)
        finally:
            self._reviving = None

    async def __del__(self) -> None:
        await self.entry.close()
        await super().__del__()


async def _shut_down(engine: Any) -> None:
    """Release what is left of a failed engine (its processes are gone or going)."""
    client = getattr(engine, "_engine_client", None)
    if client is not None:
        try:
            client.shutdown()
        except Exception:
            log.exception("shutting the failed engine down")
