"""A cloud model: an OpenAI-compatible provider from :mod:`router.providers`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from router.errors import TargetUnavailableError
from router.protocol import Target
from router.providers.protocol import CloudProvider
from service.backends.protocol import (
    DONE,
    Answer,
    Backend,
    Json,
    RawRequest,
    error_event,
    sse,
)


class CloudBackend(Backend):
    """Sends requests for ``target`` (``cloud/<provider>/<model>``) to its provider.

    Answers carry the target id in ``model`` so the client sees who served it.
    """

    def __init__(self, target: Target, provider: CloudProvider) -> None:
        self.target = target
        self._provider = provider

    async def chat(self, request: Any) -> Answer:
        body = self._body(request)
        if body.get("stream"):
            return await self._streamed(self._provider.stream_chat(body))
        return Answer(body=self._relabel(await self._provider.chat(body)))

    async def completions(self, request: Any) -> Answer:
        body = self._body(request)
        if body.get("stream"):
            return await self._streamed(self._provider.stream_completions(body))
        return Answer(body=self._relabel(await self._provider.completions(body)))

    async def embeddings(self, request: Any) -> Json:
        return self._relabel(await self._provider.embeddings(self._body(request)))

    async def tokenize(self, request: Any) -> Json:
        raise TargetUnavailableError(f"{self.target.id} cannot tokenize")

    async def moderations(self, body: Json) -> Json:
        return self._relabel(await self._provider.moderations({**body, "model": self.target.name}))

    async def healthy(self) -> bool:
        return await self._provider.health_check()

    def _body(self, request: RawRequest) -> Json:
        return {**request.body, "model": self.target.name}

    def _relabel(self, body: Json) -> Json:
        if "model" in body:
            body["model"] = self.target.id
        return body

    async def _streamed(self, chunks: AsyncIterator[Json]) -> Answer:
        try:
            first = await chunks.__anext__()
        except BaseException:
            await _close(chunks)
            raise
        return Answer(chunks=self._relay(first, chunks))

    async def _relay(self, first: Json, chunks: AsyncIterator[Json]) -> AsyncIterator[str]:
        try:
            yield sse(self._relabel(first))
            async for chunk in chunks:
                yield sse(self._relabel(chunk))
            yield DONE
        except Exception as e:  # noqa: BLE001 - the stream's last event tells the client
            yield error_event(e) + DONE
        finally:
            await _close(chunks)


async def _close(chunks: AsyncIterator[Json]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await asyncio.shield(aclose())
