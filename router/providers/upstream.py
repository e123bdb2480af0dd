"""Turning upstream failures (statuses, error bodies, transport errors) into Turnout errors.

The mapping decides the fallback reason (see the table in :mod:`router.providers.protocol`) and
whether a failure is worth retrying. Upstream text may be echoed, always through a
:class:`Scrubber`, and cut to :data:`MAX_MESSAGE_CHARS`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import httpx

from engine.errors import TurnoutError
from router.errors import (
    ContextLengthExceededError,
    TargetOverloadedError,
    TargetTimeoutError,
    TargetUnavailableError,
)
from router.providers.errors import UpstreamAuthError, UpstreamClientError

MAX_MESSAGE_CHARS = 500
REDACTED = "[redacted]"

_CONTEXT_LENGTH = re.compile(
    r"context[ _]length[ _]exceeded|maximum context length|context window|prompt is too long",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(bearer\s+)[^\s\"',;]+", re.IGNORECASE)
# Retrying these is safe: the upstream cannot have started answering.
_RETRYABLE_TRANSPORT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError)


class Scrubber:
    """Removes the API key, and any bearer token, from text that is about to be shown."""

    def __init__(self, secret: str | None) -> None:
        self._secret = secret

    def __call__(self, text: str) -> str:
        if self._secret:
            text = text.replace(self._secret, REDACTED)
        return _BEARER.sub(rf"\g<1>{REDACTED}", text)

    def __repr__(self) -> str:
        return "Scrubber()"


@dataclass(frozen=True)
class UpstreamProblem:
    """What an upstream error body says, as far as it can be read."""

    message: str
    param: str | None = None
    code: str | None = None
    status: int | None = None

    @property
    def is_context_length(self) -> bool:
        return self.code == "context_length_exceeded" or bool(_CONTEXT_LENGTH.search(self.message))


def problem_from_text(text: str) -> UpstreamProblem:
    """Parse an error body: OpenAI's ``{"error": {...}}``, ``{"error": "..."}``, or plain text."""
    try:
        payload = json.loads(text)
    except ValueError:
        return UpstreamProblem(text.strip())
    if isinstance(payload, dict):
        return problem_from_payload(payload)
    return UpstreamProblem(text.strip())


def problem_from_payload(payload: dict[str, Any]) -> UpstreamProblem:
    """Parse a decoded error object, including an SSE error event (vLLM puts the status in code)."""
    error = payload.get("error", payload)
    if not isinstance(error, dict):
        return UpstreamProblem(str(error))
    message = error.get("message") or error.get("detail") or json.dumps(error)
    code = error.get("code")
    status = code if isinstance(code, int) and 400 <= code <= 599 else None
    return UpstreamProblem(
        message=str(message),
        param=_optional_str(error.get("param")),
        code=None if code is None or status is not None else str(code),
        status=status,
    )


def status_error(
    provider: str, status: int, problem: UpstreamProblem, scrub: Scrubber
) -> TurnoutError:
    """The error for an upstream answer with HTTP ``status`` and the given error body."""
    message = f"{provider}: upstream answered {status}: {_clip(scrub(problem.message))}"
    if 400 <= status < 500 and problem.is_context_length:
        return ContextLengthExceededError(message, param=problem.param)
    if status == 429:
        return TargetOverloadedError(message)
    if status in (401, 403):
        return UpstreamAuthError(message, upstream_status=status)
    if status in (408, 504):
        return TargetTimeoutError(message)
    if 400 <= status < 500:
        return UpstreamClientError(
            message, status_code=status, param=problem.param, code=problem.code
        )
    return TargetUnavailableError(message)


def is_retryable_status(status: int) -> bool:
    """429 and 5xx may go away; 501 (not implemented) will not."""
    return status == 429 or (status >= 500 and status != 501)


def transport_error(provider: str, error: httpx.HTTPError, scrub: Scrubber) -> TurnoutError:
    """The error for a failure below HTTP: connecting, reading, or a broken connection."""
    detail = _clip(scrub(str(error) or type(error).__name__))
    if isinstance(error, httpx.ConnectTimeout):
        return TargetUnavailableError(f"{provider}: connecting timed out: {detail}")
    if isinstance(error, httpx.TimeoutException):
        return TargetTimeoutError(f"{provider}: upstream timed out ({type(error).__name__})")
    if isinstance(error, httpx.ConnectError):
        return TargetUnavailableError(f"{provider}: cannot connect: {detail}")
    return TargetUnavailableError(f"{provider}: connection failed: {detail}")


def is_retryable_transport(error: httpx.HTTPError) -> bool:
    """Whether a transport failure happened before the upstream could have answered."""
    return isinstance(error, _RETRYABLE_TRANSPORT)


def _clip(text: str) -> str:
    text = text.strip()
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + "..."


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)
