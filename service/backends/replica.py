"""A local model on another replica: a Ray Serve ``LLMServer`` deployment, via its handle."""

from __future__ import annotations

import asyncio
from typing import Any

from ray import exceptions as ray_exceptions
from ray.serve import exceptions as serve_exceptions
from ray.serve.handle import DeploymentHandle

from engine.errors import ClientError
from router.errors import TargetOverloadedError, TargetUnavailableError
from service.backends import streams
from service.backends.protocol import Answer, Backend, Json

_UNAVAILABLE = (
    ray_exceptions.RayActorError,
    ray_exceptions.ActorUnavailableError,
    serve_exceptions.DeploymentUnavailableError,
    ray_exceptions.RayTaskError,
    ConnectionError,
)


class ReplicaBackend(Backend):
    """Calls one model's replicas; ``first_token_timeout_s`` bounds the wait for a first chunk."""

    def __init__(self, model_id: str, handle: DeploymentHandle, first_token_timeout_s: float) -> None:
        self.model_id = model_id
        self._handle = handle
        self._stream = handle.options(stream=True)
        self._timeout = first_token_timeout_s

    async def chat(self, request: Any) -> Answer:
        return await streams.answer(self.model_id, self._stream.chat.remote(request, None), self._timeout, mapped)

    async def completions(self, request: Any) -> Answer:
        source = self._stream.completions.remote(request, None)
        return await streams.answer(self.model_id, source, self._timeout, mapped)

    async def embeddings(self, request: Any) -> Json:
        return await streams.single(self.model_id, self._stream.embeddings.remote(request, None), self._timeout, mapped)

    async def tokenize(self, request: Any) -> Json:
        return await streams.single(self.model_id, self._stream.tokenize.remote(request, None), self._timeout, mapped)

    async def moderations(self, body: Json) -> Json:
        raise TargetUnavailableError(f"{self.model_id} has no moderation endpoint")

    async def healthy(self) -> bool:
        try:
            await asyncio.wait_for(self._handle.check_health.remote(), self._timeout)
        except Exception:  # noqa: BLE001 - any failure means unhealthy; the reason is logged by Ray
            return False
        return True


def mapped(model_id: str, error: BaseException) -> BaseException:
    """A failure of a replica call as a Turnout error (client errors and cancels pass through)."""
    if isinstance(error, serve_exceptions.BackPressureError):
        return TargetOverloadedError(f"{model_id} is at capacity")
    if isinstance(error, _UNAVAILABLE):
        return TargetUnavailableError(f"{model_id} is unavailable ({type(error).__name__})")
    if isinstance(error, (ClientError, asyncio.CancelledError)):
        return error
    return TargetUnavailableError(f"{model_id} failed ({type(error).__name__})")
