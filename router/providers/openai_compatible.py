"""A cloud provider for any OpenAI-compatible HTTP API (OpenAI, vLLM, and the many look-alikes)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import TypeVar

import httpx

from engine.errors import TurnoutError
from router.errors import TargetTimeoutError, TargetUnavailableError
from router.providers.errors import StreamInterruptedError
from router.providers.protocol import CloudProvider, Json
from router.providers.retry import Backoff, retry_after_s
from router.providers.settings import CloudProviderSettings
from router.providers.sse import sse_data
from router.providers.upstream import (
    Scrubber,
    is_retryable_status,
    is_retryable_transport,
    problem_from_payload,
    problem_from_text,
    status_error,
    transport_error,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

DONE = "[DONE]"


class _Retryable(Exception):
    """A failure worth another attempt; ``error`` is what the caller sees if none is left."""

    def __init__(self, error: TurnoutError, retry_after: float | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.retry_after = retry_after


class OpenAICompatibleProvider(CloudProvider):
    """Talks to ``settings.base_url`` with httpx, retrying before anything reaches the caller.

    ``client`` is for sharing a connection pool or injecting a transport in tests; the caller
    keeps ownership of a client it passes (``close`` leaves it open).
    """

    kind = "openai"

    def __init__(
        self, settings: CloudProviderSettings, client: httpx.AsyncClient | None = None
    ) -> None:
        super().__init__(settings)
        self._client = client or httpx.AsyncClient()
        self._owns_client = client is None
        self._timeout = httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s)
        self._backoff = Backoff(
            settings.backoff_initial_s, settings.backoff_max_s, settings.max_retries
        )
        key = settings.api_key
        self._scrub = Scrubber(key.get_secret_value() if key else None)

    async def chat(self, body: Json) -> Json:
        return await self._post("/chat/completions", body)

    def stream_chat(self, body: Json) -> AsyncGenerator[Json, None]:
        return self._stream("/chat/completions", body)

    async def completions(self, body: Json) -> Json:
        return await self._post("/completions", body)

    def stream_completions(self, body: Json) -> AsyncGenerator[Json, None]:
        return self._stream("/completions", body)

    async def embeddings(self, body: Json) -> Json:
        return await self._post("/embeddings", body)

    async def moderations(self, body: Json) -> Json:
        return await self._post("/moderations", body)

    async def health_check(self) -> bool:
        """True when ``GET /models`` answers 200, which also proves the key is accepted."""
        request = self._client.build_request(
            "GET",
            self._url("/models"),
            headers=self._headers(),
            timeout=self.settings.health_check_timeout_s,
        )
        try:
            response = await self._client.send(request)
        except httpx.HTTPError as error:
            reason = transport_error(self.name, error, self._scrub)
            logger.info("%s: health check failed: %s", self.name, reason)
            return False
        if response.status_code != 200:
            logger.info("%s: health check answered %d", self.name, response.status_code)
        return response.status_code == 200

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def _post(self, path: str, body: Json) -> Json:
        payload = self._prepare(body, stream=False)
        return await self._with_retries(lambda: self._send_once(path, payload))

    async def _send_once(self, path: str, payload: Json) -> Json:
        response = await self._send(self._request(path, payload), stream=False)
        if response.is_error:
            raise self._status_failure(response)
        try:
            answer = response.json()
        except ValueError as error:
            raise TargetUnavailableError(f"{self.name}: upstream answered invalid JSON") from error
        if not isinstance(answer, dict):
            raise TargetUnavailableError(f"{self.name}: upstream answered JSON that is no object")
        return answer

    async def _stream(self, path: str, body: Json) -> AsyncGenerator[Json, None]:
        payload = self._prepare(body, stream=True)
        response, chunks, first = await self._with_retries(lambda: self._open_stream(path, payload))
        try:
            yield first
            try:
                async for chunk in chunks:
                    yield chunk
            except TurnoutError as error:
                raise StreamInterruptedError(
                    f"{self.name}: stream broke off after it had started: {error.message}"
                ) from error
        finally:
            await chunks.aclose()
            await response.aclose()

    async def _open_stream(
        self, path: str, payload: Json
    ) -> tuple[httpx.Response, AsyncGenerator[Json, None], Json]:
        deadline = self.settings.first_token_timeout_s
        try:
            async with asyncio.timeout(deadline):
                response = await self._send(self._request(path, payload), stream=True)
                chunks = self._chunks(response)
                try:
                    return response, chunks, await self._first_chunk(response, chunks)
                except BaseException:
                    await chunks.aclose()
                    await response.aclose()
                    raise
        except TimeoutError as error:
            raise TargetTimeoutError(f"{self.name}: no first chunk within {deadline} s") from error

    async def _first_chunk(
        self, response: httpx.Response, chunks: AsyncGenerator[Json, None]
    ) -> Json:
        if response.is_error:
            await response.aread()
            raise self._status_failure(response)
        try:
            return await anext(chunks)
        except StopAsyncIteration:
            message = f"{self.name}: stream ended before its first chunk"
            raise TargetUnavailableError(message) from None

    async def _chunks(self, response: httpx.Response) -> AsyncGenerator[Json, None]:
        """The stream's JSON chunks up to ``[DONE]``; an error event or early end raises."""
        try:
            async with aclosing(sse_data(response.aiter_lines())) as events:
                async for data in events:
                    if data == DONE:
                        return
                    yield self._decode_chunk(data)
        except httpx.HTTPError as error:
            raise transport_error(self.name, error, self._scrub) from error
        raise TargetUnavailableError(f"{self.name}: stream ended without [DONE]")

    def _decode_chunk(self, data: str) -> Json:
        try:
            chunk = json.loads(data)
        except ValueError as error:
            raise TargetUnavailableError(f"{self.name}: stream carried invalid JSON") from error
        if not isinstance(chunk, dict):
            raise TargetUnavailableError(f"{self.name}: stream carried JSON that is no object")
        if chunk.get("error"):
            problem = problem_from_payload(chunk)
            raise status_error(self.name, problem.status or 502, problem, self._scrub)
        return chunk

    async def _with_retries(self, attempt: Callable[[], Awaitable[T]]) -> T:
        retry = 0
        while True:
            try:
                return await attempt()
            except _Retryable as failure:
                retry += 1
                delay = self._backoff.delay(retry, failure.retry_after)
                if delay is None:
                    raise failure.error from failure.error.__cause__
                logger.warning(
                    "%s: retry %d of %d in %.2f s after: %s",
                    self.name, retry, self._backoff.max_retries, delay, failure.error.message,
                )
                await asyncio.sleep(delay)

    async def _send(self, request: httpx.Request, *, stream: bool) -> httpx.Response:
        try:
            return await self._client.send(request, stream=stream)
        except httpx.HTTPError as error:
            mapped = transport_error(self.name, error, self._scrub)
            mapped.__cause__ = error
            if is_retryable_transport(error):
                raise _Retryable(mapped) from error
            raise mapped from error

    def _status_failure(self, response: httpx.Response) -> Exception:
        problem = problem_from_text(response.text)
        error = status_error(self.name, response.status_code, problem, self._scrub)
        if is_retryable_status(response.status_code) and not problem.is_context_length:
            return _Retryable(error, retry_after_s(response.headers))
        return error

    def _request(self, path: str, payload: Json) -> httpx.Request:
        return self._client.build_request(
            "POST", self._url(path), json=payload, headers=self._headers(), timeout=self._timeout
        )

    def _url(self, path: str) -> str:
        return self.settings.base_url + path

    def _headers(self) -> dict[str, str]:
        headers = dict(self.settings.extra_headers)
        if self.settings.api_key is not None:
            headers["Authorization"] = f"Bearer {self.settings.api_key.get_secret_value()}"
        return headers

    def _prepare(self, body: Json, *, stream: bool) -> Json:
        payload = dict(body)
        model = payload.get("model")
        if isinstance(model, str):
            payload["model"] = self.settings.model_map.get(model, model)
        payload["stream"] = stream
        if not stream:
            payload.pop("stream_options", None)
        return payload
