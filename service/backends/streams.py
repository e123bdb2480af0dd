"""What an ``LLMServer`` answers, turned into a committed :class:`Answer` or a raised error.

An ``LLMServer`` answers every call with an async stream: a complete response object, or lists of
SSE strings (one list per batch), or an ``ErrorResponse``. The same reading applies whether the
server is another replica (a deployment handle's generator) or this replica's own, in-process
(an async generator): wait, bounded, for the first item; an error before it raises (the gateway
may fall back); a failure after it ends the stream with an OpenAI error event. Whoever stops
reading cancels the source, which aborts the engine request.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Protocol

from pydantic import BaseModel

from engine.errors import TurnoutError
from router.errors import (
    ContextLengthExceededError,
    TargetTimeoutError,
    TargetUnavailableError,
)
from router.providers.errors import UpstreamClientError
from service.backends.protocol import DONE, Answer, Json, error_event
from service.serve_overrides.openai_types import ErrorResponse

_CONTEXT_WORDS = ("context length", "maximum context", "too long", "max_model_len")


class Source(Protocol):
    """A server's answer stream: read with ``__anext__``, stopped with ``cancel``."""

    def __anext__(self) -> Any: ...

    def cancel(self) -> None: ...


class LocalSource:
    """This process's own ``LLMServer`` stream as a :class:`Source`."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._closing: asyncio.Task | None = None

    def __anext__(self) -> Any:
        return self._stream.__anext__()

    def cancel(self) -> None:
        if self._closing is None:  # closing the generator aborts the engine request
            self._closing = asyncio.get_running_loop().create_task(self._stream.aclose())


async def first_item(
    model_id: str, source: Source, timeout_s: float, mapped: Any, gone: Gone | None = None
) -> Any:
    """The first item of ``source``; raises (and cancels) on an error response or a failure.

    ``mapped(model_id, error)`` turns a transport error into a Turnout error. When ``gone`` is
    set before the first item (the model lost its last replica), the wait ends at once with
    ``TargetUnavailableError``.
    """
    # Not asyncio.wait_for: cancelling vLLM's serving code mid-request makes it *return* an error
    # response ("Client disconnected", a 400), which wait_for would hand back as the answer.
    pending = asyncio.ensure_future(source.__anext__())
    waiting = {pending} if gone is None else {pending, asyncio.ensure_future(gone.event.wait())}
    try:
        done, _ = await asyncio.wait(waiting, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # the caller was cancelled (its client left)
        _cancel(waiting, source)
        raise
    finally:
        for task in waiting - {pending}:
            task.cancel()
    if pending not in done:
        _cancel(waiting, source)
        if gone is not None and gone.event.is_set():
            raise TargetUnavailableError(f"{model_id} is unavailable: {gone.reason}")
        raise TargetTimeoutError(f"{model_id} sent no first token in time")
    try:
        first = pending.result()
    except StopAsyncIteration:
        raise TargetUnavailableError(f"{model_id} returned no answer") from None
    except BaseException as e:
        source.cancel()
        raise mapped(model_id, e) from e
    head = first[0] if isinstance(first, list) and first else first
    if isinstance(head, ErrorResponse):
        source.cancel()
        raise from_error_response(head)
    return first


def _cancel(waiting: set[asyncio.Future], source: Source) -> None:
    for task in waiting:
        task.cancel()
    source.cancel()


class Gone:
    """Set when a model has no running replica left; requests waiting for it stop waiting."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.reason = ""

    def set(self, reason: str) -> None:
        self.reason = reason
        self.event.set()

    def clear(self) -> None:
        self.event.clear()


async def single(model_id: str, source: Source, timeout_s: float, mapped: Any, gone: Gone | None = None) -> Json:
    """A one-item answer (embeddings, tokenize) as JSON."""
    first = await first_item(model_id, source, timeout_s, mapped, gone)
    source.cancel()
    return first.model_dump(mode="json", exclude_none=True)


async def answer(model_id: str, source: Source, timeout_s: float, mapped: Any, gone: Gone | None = None) -> Answer:
    """A chat or completion answer: a complete body, or a stream whose first batch has come."""
    first = await first_item(model_id, source, timeout_s, mapped, gone)
    if isinstance(first, BaseModel):
        source.cancel()
        return Answer(body=first.model_dump(mode="json", exclude_none=True))
    return Answer(chunks=relay(first, source))


async def relay(first: list[str] | str, source: Source) -> AsyncIterator[str]:
    """Yield the stream's SSE events, one string per batch the server sent (one write each,
    not one per token); a failure part-way ends it with an error event."""
    finished = False
    try:
        batch: Any = first
        while True:
            text, error = _joined(batch)
            if error is not None:
                yield text + error_event(error) + DONE
                finished = True
                return
            if text:
                yield text
            try:
                batch = await source.__anext__()
            except StopAsyncIteration:
                break
        finished = True
    except Exception as e:  # noqa: BLE001 - reported to the client as the stream's last event
        yield error_event(e) + DONE
    finally:
        if not finished:
            source.cancel()  # the client left, or the server failed: stop the engine request


def _joined(batch: Any) -> tuple[str, TurnoutError | None]:
    """One batch's SSE strings as one string, and the error that ends the stream, if any."""
    parts: list[str] = []
    for item in batch if isinstance(batch, list) else [batch]:
        if isinstance(item, ErrorResponse):
            return "".join(parts), from_error_response(item)
        parts.append(item)
    return "".join(parts), None


def from_error_response(error: ErrorResponse) -> TurnoutError:
    """vLLM's error response as a Turnout error: 4xx pass through, 5xx mean unavailable."""
    info = error.error
    message, code = info.message, int(info.code or 500)
    if code < 500 and any(word in message.lower() for word in _CONTEXT_WORDS):
        return ContextLengthExceededError(message, param="messages")
    if code < 500:
        return UpstreamClientError(message, status_code=code, param=info.param)
    return TargetUnavailableError(message)
