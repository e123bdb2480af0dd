"""The edge's own model: the ``LLMServer`` in this replica, called in-process.

On the edge the replica that terminates the client's HTTP connection also hosts an engine
(see ``service.edge``). Requests routed to that engine call the server's methods directly: no
handle, no serialisation, no second process between the engine and the client's socket. Past
``max_in_flight`` requests the engine counts as overloaded, so the gateway falls back instead of
queueing, as a replica's ``max_ongoing_requests`` does over a handle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from router.errors import TargetOverloadedError, TargetUnavailableError
from service.backends import streams
from service.backends.protocol import Answer, Backend, Json
from service.backends.replica import mapped


class LocalServer(Protocol):
    """The slice of ``ray.serve.llm.LLMServer`` the backend calls."""

    async def chat(self, request: Any, raw_request_info: Any = None) -> Any: ...

    async def completions(self, request: Any, raw_request_info: Any = None) -> Any: ...

    async def embeddings(self, request: Any, raw_request_info: Any = None) -> Any: ...

    async def tokenize(self, request: Any, raw_request_info: Any = None) -> Any: ...

    async def check_engine(self) -> None: ...


class LocalServerBackend(Backend):
    """Calls this replica's own server; at most ``max_in_flight`` requests at once."""

    def __init__(
        self, model_id: str, server: LocalServer, first_token_timeout_s: float, max_in_flight: int,
        replica: str | None = None,
    ) -> None:
        self.model_id = model_id
        self.replica = replica  # this Serve replica's id, named in each answer
        self._server = server
        self._timeout = first_token_timeout_s
        self._max_in_flight = max_in_flight
        self.in_flight = 0

    async def chat(self, request: Any) -> Answer:
        return await self._answer(self._server.chat, request)

    async def completions(self, request: Any) -> Answer:
        return await self._answer(self._server.completions, request)

    async def embeddings(self, request: Any) -> Json:
        return await streams.single(self.model_id, await self._open(self._server.embeddings, request), self._timeout, mapped)

    async def tokenize(self, request: Any) -> Json:
        return await streams.single(self.model_id, await self._open(self._server.tokenize, request), self._timeout, mapped)

    async def moderations(self, body: Json) -> Json:
        raise TargetUnavailableError(f"{self.model_id} has no moderation endpoint")

    async def healthy(self) -> bool:
        try:
            await asyncio.wait_for(self._server.check_engine(), self._timeout)
        except Exception:  # noqa: BLE001 - any failure means unhealthy; the server logs why
            return False
        return True

    async def _answer(self, method: Callable[..., Awaitable[Any]], request: Any) -> Answer:
        source = await self._open(method, request)
        self.in_flight += 1
        try:
            answer = await streams.answer(self.model_id, source, self._timeout, mapped)
        except BaseException:
            self.in_flight -= 1
            raise
        if answer.chunks is None:
            self.in_flight -= 1
        else:
            answer.chunks = self._counted(answer.chunks)
        answer.replica = self.replica
        return answer

    async def _open(self, method: Callable[..., Awaitable[Any]], request: Any) -> streams.LocalSource:
        if self.in_flight >= self._max_in_flight:
            raise TargetOverloadedError(f"{self.model_id} is at capacity ({self._max_in_flight} requests)")
        try:
            return streams.LocalSource(await method(request, None))
        except Exception as e:  # the server refused before streaming (engine dead, bad LoRA, ...)
            raise mapped(self.model_id, e) from e

    async def _counted(self, chunks: Any) -> Any:
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            self.in_flight -= 1
