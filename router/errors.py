"""Errors the router raises while planning a route, on top of :mod:`engine.errors`.

An unknown model id raises :class:`engine.errors.ModelNotFoundError` (404, ``model_not_found``);
the others are defined here.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.errors import ClientError, OverloadedError, ServerError
from engine.protocol import Capability
from router.protocol import RouteEvent, describe_route

_CAPABILITY_PARAM = {
    Capability.TOOLS: "tools",
    Capability.JSON_SCHEMA: "response_format",
    Capability.REASONING: "reasoning_effort",
}


class CapabilityUnavailableError(ClientError):
    """No target that could serve the request has a capability it needs."""

    type = "capability_unavailable"
    status_code = 400

    def __init__(self, message: str, *, capability: Capability) -> None:
        super().__init__(message, param=_CAPABILITY_PARAM.get(capability, "model"))
        self.capability = capability


class SizeUnavailableError(ClientError):
    """No target of the requested size class has every capability the request needs."""

    type = "size_unavailable"
    status_code = 400


class ContextLengthExceededError(ClientError):
    """The prompt plus ``max_tokens`` is longer than every eligible target's context."""

    type = "context_length_exceeded"
    status_code = 400


class NoHealthyTargetError(ServerError):
    """Every target that could serve the request is unhealthy, has an open circuit, or failed.

    ``events`` are the skips and failures that led here (for metrics); ``route`` renders them
    for the ``X-Turnout-Route`` header.
    """

    type = "no_healthy_target"
    status_code = 503

    def __init__(self, message: str, *, events: Sequence[RouteEvent] = ()) -> None:
        super().__init__(message)
        self.events = tuple(events)

    @property
    def route(self) -> str:
        return describe_route(self.events)


class TargetUnavailableError(ServerError):
    """A target could not be reached or refused the request (replica down, upstream 5xx)."""

    type = "target_unavailable"
    status_code = 503


class TargetOverloadedError(OverloadedError):
    """A target is at capacity or rate-limited; another target, or a later retry, may work."""


class TargetTimeoutError(ServerError):
    """A target did not produce its first token in time."""

    type = "timeout"
    status_code = 504
