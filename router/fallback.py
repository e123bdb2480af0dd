"""Walking a route plan: try each target in turn, falling back when one fails before answering.

``attempt(target)`` should return once the target has committed to an answer (for a stream, once
the first chunk has arrived); a failure raised before that moves the request to the next target.
Client errors are not the target's fault and are re-raised at once, except a target's own
``context_length_exceeded``, which a target with a longer context may not hit. Neither counts
against the target's circuit, nor does a local replica that is at capacity. A per-target
deadline is the caller's: raise TimeoutError (e.g. from ``asyncio.timeout``) out of ``attempt``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from engine.errors import ClientError, OverloadedError
from router.circuit import CircuitBoard, CircuitBreaker
from router.errors import ContextLengthExceededError, NoHealthyTargetError
from router.protocol import (
    FallbackReason,
    RouteEvent,
    RoutePlan,
    SkipReason,
    Target,
    describe_route,
)

T = TypeVar("T")

_BY_STATUS = {
    429: FallbackReason.OVERLOADED,
    502: FallbackReason.UNAVAILABLE,
    503: FallbackReason.UNAVAILABLE,
    504: FallbackReason.TIMEOUT,
}


def classify_failure(error: BaseException) -> FallbackReason | None:
    """Why ``error`` should move the request to the next target; None if it should not."""
    if isinstance(error, ContextLengthExceededError):
        return FallbackReason.CONTEXT_LENGTH
    if isinstance(error, ClientError):
        return None
    if isinstance(error, TimeoutError):
        return FallbackReason.TIMEOUT
    if isinstance(error, ConnectionError):
        return FallbackReason.UNAVAILABLE
    if isinstance(error, OverloadedError):  # by kind: its status (503) is shared with outages
        return FallbackReason.OVERLOADED
    return _BY_STATUS.get(getattr(error, "status_code", None), FallbackReason.ERROR)


class _Failed(Exception):
    def __init__(self, error: Exception, reason: FallbackReason) -> None:
        super().__init__(str(error))
        self.error = error
        self.reason = reason


@dataclass(frozen=True)
class Routed(Generic[T]):
    """A successful walk: the attempt's result, who produced it, and what happened before."""

    result: T
    target: Target
    events: tuple[RouteEvent, ...]

    @property
    def route(self) -> str:
        """The ``X-Turnout-Route`` header value."""
        return describe_route(self.events, self.target.id)


async def walk(
    plan: RoutePlan, attempt: Callable[[Target], Awaitable[T]], circuits: CircuitBoard
) -> Routed[T]:
    """Try ``plan.targets`` in order through their circuit breakers until one answers.

    Raises the client error of an attempt unchanged, the last ``context_length_exceeded`` when
    every attempt hit it, or NoHealthyTargetError (503, chained to the last failure).
    """
    events = list(plan.skipped)
    failures: list[_Failed] = []
    for target in plan.targets:
        breaker = circuits.breaker(target.id)
        if not breaker.allow():
            events.append(RouteEvent(target.id, SkipReason.CIRCUIT_OPEN))
            continue
        try:
            result = await _attempt(target, attempt, breaker)
        except _Failed as failed:
            events.append(RouteEvent(target.id, failed.reason))
            failures.append(failed)
            continue
        return Routed(result, target, tuple(events))
    raise _exhausted(events, failures)


def _exhausted(events: list[RouteEvent], failures: list[_Failed]) -> Exception:
    if failures and all(f.reason is FallbackReason.CONTEXT_LENGTH for f in failures):
        return failures[-1].error
    message = f"every target failed or is unavailable ({describe_route(events)})"
    error = NoHealthyTargetError(message, events=events)
    error.__cause__ = failures[-1].error if failures else None
    return error


def _busy_replica(target: Target, reason: FallbackReason) -> bool:
    """A local replica at capacity is healthy, only busy: the request moves on, the circuit stays
    as it was (a cloud provider's 429 is a rate limit that will repeat, so it counts)."""
    return reason is FallbackReason.OVERLOADED and not target.is_cloud


async def _attempt(
    target: Target, attempt: Callable[[Target], Awaitable[T]], breaker: CircuitBreaker
) -> T:
    try:
        result = await attempt(target)
    except asyncio.CancelledError:
        breaker.release()
        raise
    except Exception as error:
        reason = classify_failure(error)
        if reason is None or reason is FallbackReason.CONTEXT_LENGTH or _busy_replica(target, reason):
            breaker.release()
        else:
            breaker.record_failure()
        if reason is None:
            raise
        raise _Failed(error, reason) from error
    breaker.record_success()
    return result
