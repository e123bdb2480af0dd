"""A small HTTP client for Turnout's OpenAI-compatible API, with errors mapped in one place."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from turnout_parlant.errors import (
    TurnoutAPIError,
    TurnoutClientError,
    TurnoutConnectionError,
    TurnoutRateLimitError,
    TurnoutServerError,
)

Json = dict[str, Any]
MODEL_HEADER = "X-Turnout-Model"


@dataclass(frozen=True)
class Timeouts:
    """Seconds to wait: to connect, and for a whole answer (generation on a CPU is slow)."""

    connect_s: float = 5.0
    request_s: float = 300.0

    def as_httpx(self) -> httpx.Timeout:
        return httpx.Timeout(self.request_s, connect=self.connect_s)


@dataclass(frozen=True)
class Reply:
    """A JSON answer, the target that served it, and how long it took."""

    body: Json
    model: str
    duration_s: float


@dataclass
class StreamState:
    """What a finished stream reported: the serving target and the usage chunk, if any."""

    model: str = ""
    usage: Json = field(default_factory=dict)


class TurnoutClient:
    """Async calls to one Turnout server; ``base_url`` may end in ``/v1`` or not."""

    def __init__(self, base_url: str, api_key: str | None = None, timeouts: Timeouts = Timeouts()) -> None:
        self.root = base_url.rstrip("/").removesuffix("/v1")
        self.timeouts = timeouts
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(base_url=self.root, headers=self._headers, timeout=timeouts.as_httpx())

    async def get(self, path: str) -> Json:
        return (await self._send("GET", path)).body

    async def post(self, path: str, body: Json) -> Reply:
        return await self._send("POST", path, body)

    async def stream(self, path: str, body: Json, state: StreamState) -> AsyncIterator[Json]:
        """Yield the JSON events of a server-sent-event stream; an error event raises."""
        try:
            async with self._http.stream("POST", path, json=body) as response:
                if response.is_error:
                    await response.aread()
                    raise_for_status(response)
                state.model = response.headers.get(MODEL_HEADER, "")
                async for event in _events(response):
                    yield event
        except httpx.TransportError as e:
            raise _unreachable(self.root, path, e) from e

    def get_sync(self, path: str) -> Json:
        """A blocking GET, for start-up code that Parlant calls synchronously."""
        with httpx.Client(base_url=self.root, headers=self._headers, timeout=self.timeouts.as_httpx()) as http:
            try:
                response = http.get(path)
            except httpx.TransportError as e:
                raise _unreachable(self.root, path, e) from e
            raise_for_status(response)
            return response.json()

    def post_sync(self, path: str, body: Json) -> Json:
        with httpx.Client(base_url=self.root, headers=self._headers, timeout=self.timeouts.as_httpx()) as http:
            try:
                response = http.post(path, json=body)
            except httpx.TransportError as e:
                raise _unreachable(self.root, path, e) from e
            raise_for_status(response)
            return response.json()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, method: str, path: str, body: Json | None = None) -> Reply:
        started = time.monotonic()
        try:
            response = await self._http.request(method, path, json=body)
        except httpx.TransportError as e:
            raise _unreachable(self.root, path, e) from e
        raise_for_status(response)
        answer = response.json()
        model = response.headers.get(MODEL_HEADER) or answer.get("model", "")
        return Reply(answer, model, time.monotonic() - started)


def raise_for_status(response: httpx.Response) -> None:
    """Turn an OpenAI-style error answer into the matching ``TurnoutAPIError``."""
    if not response.is_error:
        return
    message, kind = _error_fields(response)
    status = response.status_code
    cls: type[TurnoutAPIError]
    if status == 429:
        cls = TurnoutRateLimitError
    elif status < 500:
        cls = TurnoutClientError
    else:
        cls = TurnoutServerError
    raise cls(status, message, kind, str(response.request.url))


def _error_fields(response: httpx.Response) -> tuple[str, str | None]:
    try:
        error = response.json().get("error")
    except (json.JSONDecodeError, AttributeError):
        return response.text[:500] or response.reason_phrase, None
    if isinstance(error, dict):
        return str(error.get("message", "")), error.get("type")
    return str(error or response.reason_phrase), None


def _unreachable(root: str, path: str, error: Exception) -> TurnoutConnectionError:
    kind = "timed out" if isinstance(error, httpx.TimeoutException) else "is unreachable"
    return TurnoutConnectionError(f"Turnout at {root} {kind} ({path}): {type(error).__name__}: {error}")


async def _events(response: httpx.Response) -> AsyncIterator[Json]:
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        event = json.loads(data)
        if "error" in event:
            raise _stream_error(event["error"], str(response.request.url))
        yield event


def _stream_error(error: Any, url: str) -> TurnoutServerError:
    """An error event after the first token: the stream cannot be resumed, so it is a server error."""
    if not isinstance(error, dict):
        return TurnoutServerError(500, str(error), None, url)
    code = error.get("code")
    status = code if isinstance(code, int) and code >= 500 else 500
    return TurnoutServerError(status, str(error.get("message", "")), error.get("type"), url)
