"""A local model: a Ray Serve ``LLMServer`` deployment hosting vLLM's AsyncLLM, via its handle."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel
from ray import exceptions as ray_exceptions
from ray.serve import exceptions as serve_exceptions
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

from engine.errors import ClientError, TurnoutError
from router.errors import (
    ContextLengthExceededError,
    TargetOverloadedError,
    TargetTimeoutError,
    TargetUnavailableError,
)
from router.providers.errors import UpstreamClientError
from service.backends.protocol import DONE, Answer, Backend, Json, error_event
from service.openai_types import ErrorResponse

_CONTEXT_WORDS = ("context length", "maximum context", "too long", "max_model_len")
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
        return await self._answer(self._stream.chat.remote(request, None))

    async def completions(self, request: Any) -> Answer:
        return await self._answer(self._stream.completions.remote(request, None))

    async def embeddings(self, request: Any) -> Json:
        return await self._single(self._stream.embeddings.remote(request, None))

    async def tokenize(self, request: Any) -> Json:
        return await self._single(self._stream.tokenize.remote(request, None))

    async def moderations(self, body: Json) -> Json:
        raise TargetUnavailableError(f"{self.model_id} has no moderation endpoint")

    async def healthy(self) -> bool:
        try:
            await asyncio.wait_for(self._handle.check_health.remote(), self._timeout)
        except Exception:  # noqa: BLE001 - any failure means unhealthy; the reason is logged by Ray
            return False
        return True

    async def _single(self, gen: DeploymentResponseGenerator) -> Json:
        first = await self._first(gen)
        gen.cancel()
        return first.model_dump(mode="json", exclude_none=True)

    async def _answer(self, gen: DeploymentResponseGenerator) -> Answer:
        first = await self._first(gen)
        if isinstance(first, BaseModel):
            gen.cancel()
            return Answer(body=first.model_dump(mode="json", exclude_none=True))
        return Answer(chunks=_relay(first, gen))

    async def _first(self, gen: DeploymentResponseGenerator) -> Any:
        try:
            first = await asyncio.wait_for(gen.__anext__(), self._timeout)
        except StopAsyncIteration:
            raise TargetUnavailableError(f"{self.model_id} returned no answer") from None
        except BaseException as e:
            gen.cancel()
            raise _mapped(self.model_id, e) from e
        head = first[0] if isinstance(first, list) and first else first
        if isinstance(head, ErrorResponse):
            gen.cancel()
            raise _from_error_response(head)
        return first


async def _relay(first: list[str] | str, gen: DeploymentResponseGenerator) -> AsyncIterator[str]:
    """Yield the stream's SSE events, one string per batch the replica sent (one write each,
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
                batch = await gen.__anext__()
            except StopAsyncIteration:
                break
        finished = True
    except Exception as e:  # noqa: BLE001 - reported to the client as the stream's last event
        yield error_event(e) + DONE
    finally:
        if not finished:
            gen.cancel()  # the client left, or the replica failed: stop the engine request


def _joined(batch: Any) -> tuple[str, TurnoutError | None]:
    """One batch's SSE strings as one string, and the error that ends the stream, if any."""
    parts: list[str] = []
    for item in _as_list(batch):
        if isinstance(item, ErrorResponse):
            return "".join(parts), _from_error_response(item)
        parts.append(item)
    return "".join(parts), None


def _as_list(item: Any) -> list[Any]:
    return item if isinstance(item, list) else [item]


def _from_error_response(error: ErrorResponse) -> TurnoutError:
    info = error.error
    message, code = info.message, int(info.code or 500)
    if code < 500 and any(word in message.lower() for word in _CONTEXT_WORDS):
        return ContextLengthExceededError(message, param="messages")
    if code < 500:
        return UpstreamClientError(message, status_code=code, param=info.param)
    return TargetUnavailableError(message)


def _mapped(model_id: str, error: BaseException) -> BaseException:
    if isinstance(error, (asyncio.TimeoutError, TimeoutError)):
        return TargetTimeoutError(f"{model_id} sent no first token in time")
    if isinstance(error, serve_exceptions.BackPressureError):
        return TargetOverloadedError(f"{model_id} is at capacity")
    if isinstance(error, _UNAVAILABLE):
        return TargetUnavailableError(f"{model_id} is unavailable ({type(error).__name__})")
    if isinstance(error, (ClientError, asyncio.CancelledError)):
        return error
    return TargetUnavailableError(f"{model_id} failed ({type(error).__name__})")
