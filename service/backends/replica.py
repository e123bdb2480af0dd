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
    """Calls one model's replicas; ``first_token_timeout_s`` bounds the wait for a first chunk.

    :meth:`set_unavailable` (the entry's reading of Serve's status) marks the model as having no
    running replica: calls then fail at once with the reason, and calls already waiting for a
    first chunk stop waiting, so the gateway falls back instead of queueing for a replica that
    may never be placed.
    """

    def __init__(self, model_id: str, handle: DeploymentHandle, first_token_timeout_s: float) -> None:
        self.model_id = model_id
        self.deployment = (handle.app_name, handle.deployment_name)
        self._handle = handle
        self._stream = handle.options(stream=True)
        self._timeout = first_token_timeout_s
        self._gone = streams.Gone()

    def set_unavailable(self, reason: str | None) -> None:
        """``reason`` why the model has no running replica, or None once one runs again."""
        if reason is None:
            self._gone.clear()
        else:
            self._gone.set(reason)

    def unavailable_reason(self) -> str | None:
        return self._gone.reason if self._gone.event.is_set() else None

    async def chat(self, request: Any) -> Answer:
        return await streams.answer(self.model_id, self._call("chat", request), self._timeout, mapped, self._gone)

    async def completions(self, request: Any) -> Answer:
        source = self._call("completions", request)
        return await streams.answer(self.model_id, source, self._timeout, mapped, self._gone)

    async def embeddings(self, request: Any) -> Json:
        source = self._call("embeddings", request)
        return await streams.single(self.model_id, source, self._timeout, mapped, self._gone)

    async def tokenize(self, request: Any) -> Json:
        source = self._call("tokenize", request)
        return await streams.single(self.model_id, source, self._timeout, mapped, self._gone)

    async def moderations(self, body: Json) -> Json:
        raise TargetUnavailableError(f"{self.model_id} has no moderation endpoint")

    def _call(self, method: str, request: Any) -> Any:
        reason = self.unavailable_reason()
        if reason is not None:
            raise TargetUnavailableError(f"{self.model_id} is unavailable: {reason}")
        try:
            return getattr(self._stream, method).remote(request, None)
        except Exception as e:  # the handle refused at once (controller gone, deployment deleted)
            raise mapped(self.model_id, e) from e

    async def healthy(self) -> bool:
        if self.unavailable_reason() is not None:
            return False
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
