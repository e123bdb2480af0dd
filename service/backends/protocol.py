"""The contract between the gateway and a target: one :class:`Backend` per router target.

A backend call returns once the target has committed to an answer: a complete JSON body, or a
stream whose first chunk has already arrived. A failure before that raises (and the gateway may
fall back); a failure after it ends the stream with an OpenAI error event.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from engine.errors import TurnoutError

Json = dict[str, Any]
DONE = "data: [DONE]\n\n"


@dataclass
class Answer:
    """A committed answer: ``body`` (JSON) or ``chunks`` (server-sent event strings), and the
    Serve replica that answered when the backend knows it (the edge's own engine)."""

    body: Json | None = None
    chunks: AsyncIterator[str] | None = None
    replica: str | None = None


@dataclass(frozen=True)
class RawRequest:
    """A request as the client sent it, for targets that take OpenAI JSON over HTTP.

    vLLM's validated request objects carry engine-side fields (``structured_outputs`` and the
    like) that another OpenAI server rejects, so cloud targets get the client's own body.
    """

    body: Json


class Backend(ABC):
    """One target. Local replicas get validated vLLM request objects; cloud targets a RawRequest."""

    @abstractmethod
    async def chat(self, request: Any) -> Answer:
        """A chat completion (streamed when ``request.stream``)."""

    @abstractmethod
    async def completions(self, request: Any) -> Answer:
        """A text completion (streamed when ``request.stream``)."""

    @abstractmethod
    async def embeddings(self, request: Any) -> Json:
        """Embeddings of the request's input."""

    @abstractmethod
    async def tokenize(self, request: Any) -> Json:
        """Token ids of the request's prompt or messages."""

    @abstractmethod
    async def moderations(self, body: Json) -> Json:
        """An OpenAI moderation result (only providers that offer the endpoint)."""

    @abstractmethod
    async def healthy(self) -> bool:
        """Whether the target answers its health check; never raises."""

    def unavailable_reason(self) -> str | None:
        """Why the target cannot serve at all (no replica runs), or None; shown in /v1/models."""
        return None


def sse(payload: Json) -> str:
    """One server-sent event."""
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


def error_event(error: BaseException) -> str:
    """The OpenAI-style error event that ends a stream that failed after its first chunk."""
    if isinstance(error, TurnoutError):
        info = {"message": error.message, "type": error.type, "code": error.status_code}
    else:
        info = {"message": f"the stream failed ({type(error).__name__})", "type": "server_error", "code": 500}
    return sse({"error": info})
