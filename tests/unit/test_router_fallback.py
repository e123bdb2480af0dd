import asyncio

import pytest

from engine.errors import ClientError, ServerError
from engine.protocol import Capability
from router.circuit import CircuitBoard
from router.errors import (
    ContextLengthExceededError,
    NoHealthyTargetError,
    TargetOverloadedError,
    TargetTimeoutError,
    TargetUnavailableError,
)
from router.fallback import classify_failure, walk
from router.protocol import (
    CircuitState,
    FallbackReason,
    RouteEvent,
    RoutePlan,
    SizeClass,
    SkipReason,
    Target,
    TargetKind,
    describe_route,
)
from router.settings import CircuitSettings

SETTINGS = CircuitSettings(failure_threshold=2, cooldown_s=10.0, half_open_probes=1)


def target(target_id: str) -> Target:
    kind = TargetKind.CLOUD if target_id.startswith("cloud/") else TargetKind.LOCAL
    return Target(
        id=target_id, kind=kind, name="n", capabilities=frozenset({Capability.CHAT}),
        context_length=1024, size=SizeClass.MINI,
    )


A, B, X = target("local/llama/a"), target("local/llama/b"), target("cloud/openai/x")
PLAN = RoutePlan(targets=(A, B, X), skipped=(RouteEvent("local/llama/c", SkipReason.UNHEALTHY),), policy="p")


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


class Script:
    """An attempt function that raises the scripted error for a target, or answers."""

    def __init__(self, **errors: BaseException) -> None:
        self.errors = {f"local/llama/{k}" if "/" not in k else k: v for k, v in errors.items()}
        self.calls: list[str] = []

    async def __call__(self, t: Target) -> str:
        self.calls.append(t.id)
        if t.id in self.errors:
            raise self.errors[t.id]
        return f"answer from {t.id}"


@pytest.fixture
def board() -> CircuitBoard:
    return CircuitBoard(SETTINGS, Clock())


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (TimeoutError(), FallbackReason.TIMEOUT),
        (TimeoutError(), FallbackReason.TIMEOUT),
        (ConnectionRefusedError(), FallbackReason.UNAVAILABLE),
        (TargetUnavailableError("down"), FallbackReason.UNAVAILABLE),
        (TargetOverloadedError("busy"), FallbackReason.OVERLOADED),
        (TargetTimeoutError("slow"), FallbackReason.TIMEOUT),
        (ServerError("boom"), FallbackReason.ERROR),
        (RuntimeError("bug"), FallbackReason.ERROR),
        (ContextLengthExceededError("long"), FallbackReason.CONTEXT_LENGTH),
        (ClientError("bad request"), None),
    ],
)
def test_classify_failure(error, reason):
    assert classify_failure(error) is reason


def test_error_types_and_statuses():
    assert (TargetOverloadedError.type, TargetOverloadedError.status_code) == ("overloaded", 503)
    assert (TargetUnavailableError.status_code, TargetTimeoutError.status_code) == (503, 504)
    assert issubclass(TargetOverloadedError, ServerError)


async def test_first_target_answers(board):
    script = Script()
    routed = await walk(PLAN, script, board)
    assert routed.result == "answer from local/llama/a" and routed.target == A
    assert script.calls == [A.id]
    assert routed.route == "local/llama/c=unhealthy, local/llama/a=served"
    assert board.state(A.id) is CircuitState.CLOSED


async def test_falls_back_and_records_reasons(board):
    script = Script(a=TimeoutError(), b=TargetOverloadedError("busy"))
    routed = await walk(PLAN, script, board)
    assert routed.target == X and script.calls == [A.id, B.id, X.id]
    assert routed.events == (
        RouteEvent("local/llama/c", SkipReason.UNHEALTHY),
        RouteEvent(A.id, FallbackReason.TIMEOUT),
        RouteEvent(B.id, FallbackReason.OVERLOADED),
    )
    assert [e.fallback_reason.value for e in routed.events] == ["unavailable", "timeout", "overloaded"]
    assert board.breaker(A.id).consecutive_failures == 1
    assert board.breaker(B.id).consecutive_failures == 0  # a busy local replica is not a failing one


async def test_a_rate_limited_cloud_target_counts_against_its_circuit(board):
    script = Script(**{X.id: TargetOverloadedError("rate limit")})
    routed = await walk(RoutePlan(targets=(X, B), skipped=(), policy="p"), script, board)
    assert routed.target == B and board.breaker(X.id).consecutive_failures == 1


async def test_client_error_is_raised_without_fallback(board):
    script = Script(a=ClientError("bad"))
    with pytest.raises(ClientError):
        await walk(PLAN, script, board)
    assert script.calls == [A.id] and board.breaker(A.id).consecutive_failures == 0


async def test_every_target_failing_is_a_503_chained_to_the_last_error(board):
    last = RuntimeError("x down")
    script = Script(a=TimeoutError(), b=ServerError("b"), **{"cloud/openai/x": last})
    with pytest.raises(NoHealthyTargetError) as info:
        await walk(PLAN, script, board)
    assert info.value.__cause__ is last
    assert info.value.route == (
        "local/llama/c=unhealthy, local/llama/a=timeout, local/llama/b=error, cloud/openai/x=error"
    )


async def test_context_length_everywhere_is_the_client_error(board):
    errors = {t.id: ContextLengthExceededError(f"too long for {t.id}") for t in PLAN.targets}
    script = Script(**errors)
    with pytest.raises(ContextLengthExceededError) as info:
        await walk(PLAN, script, board)
    assert "cloud/openai/x" in info.value.message
    assert all(board.breaker(t.id).consecutive_failures == 0 for t in PLAN.targets)


async def test_context_length_then_outage_is_a_503(board):
    script = Script(a=ContextLengthExceededError("long"), b=TimeoutError(), **{"cloud/openai/x": TimeoutError()})
    with pytest.raises(NoHealthyTargetError):
        await walk(PLAN, script, board)


async def test_open_circuits_are_skipped_and_failures_open_them(board):
    script = Script(a=TargetUnavailableError("down"))
    await walk(PLAN, script, board)
    await walk(PLAN, script, board)
    assert board.state(A.id) is CircuitState.OPEN
    routed = await walk(PLAN, script, board)
    assert script.calls == [A.id, B.id, A.id, B.id, B.id]
    assert RouteEvent(A.id, SkipReason.CIRCUIT_OPEN) in routed.events


async def test_half_open_probe_success_closes_the_circuit():
    clock = Clock()
    board = CircuitBoard(SETTINGS, clock)
    for _ in range(2):
        board.breaker(A.id).record_failure()
    clock.now += SETTINGS.cooldown_s
    routed = await walk(PLAN, Script(), board)
    assert routed.target == A and board.state(A.id) is CircuitState.CLOSED


async def test_cancellation_releases_the_probe_slot():
    clock = Clock()
    board = CircuitBoard(SETTINGS, clock)
    for _ in range(2):
        board.breaker(A.id).record_failure()
    clock.now += SETTINGS.cooldown_s
    with pytest.raises(asyncio.CancelledError):
        await walk(PLAN, Script(a=asyncio.CancelledError()), board)
    assert board.state(A.id) is CircuitState.HALF_OPEN and board.breaker(A.id).allow()


def test_describe_route():
    events = [RouteEvent("a", SkipReason.CONTEXT_LENGTH), RouteEvent("b", FallbackReason.ERROR)]
    assert describe_route(events, "c") == "a=context_length, b=error, c=served"
    assert describe_route([]) == ""
