import pytest

from router.circuit import CircuitBoard, CircuitBreaker
from router.protocol import CircuitState, TargetStats
from router.settings import CircuitSettings
from testkit.recorders import FakeClock

SETTINGS = CircuitSettings(failure_threshold=3, cooldown_s=10.0, half_open_probes=2)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def breaker(clock) -> CircuitBreaker:
    return CircuitBreaker(SETTINGS, clock)


def open_it(breaker: CircuitBreaker) -> None:
    for _ in range(SETTINGS.failure_threshold):
        assert breaker.allow()
        breaker.record_failure()


def test_metric_values():
    assert [s.metric for s in CircuitState] == [0, 1, 2]
    assert CircuitState.HALF_OPEN.value == "half_open"


def test_opens_after_threshold_consecutive_failures(breaker):
    for _ in range(SETTINGS.failure_threshold - 1):
        breaker.record_failure()
    assert breaker.state is CircuitState.CLOSED and breaker.allow()
    breaker.record_failure()
    assert breaker.state is CircuitState.OPEN and not breaker.allow()


def test_success_resets_the_failure_count(breaker):
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is CircuitState.CLOSED and breaker.consecutive_failures == 2


def test_half_open_after_cooldown_lets_limited_probes_through(breaker, clock):
    open_it(breaker)
    clock.now += SETTINGS.cooldown_s - 0.01
    assert breaker.state is CircuitState.OPEN and not breaker.allow()
    clock.now += 0.01
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.allow() and breaker.allow()
    assert not breaker.allow()


def test_half_open_closes_on_success(breaker, clock):
    open_it(breaker)
    clock.now += SETTINGS.cooldown_s
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is CircuitState.CLOSED and breaker.consecutive_failures == 0
    assert all(breaker.allow() for _ in range(5))


def test_half_open_reopens_on_failure_with_a_new_cooldown(breaker, clock):
    open_it(breaker)
    clock.now += SETTINGS.cooldown_s
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is CircuitState.OPEN
    clock.now += SETTINGS.cooldown_s - 1
    assert breaker.state is CircuitState.OPEN
    clock.now += 1
    assert breaker.state is CircuitState.HALF_OPEN


def test_release_frees_a_probe_slot(breaker, clock):
    open_it(breaker)
    clock.now += SETTINGS.cooldown_s
    assert breaker.allow() and breaker.allow() and not breaker.allow()
    breaker.release()
    assert breaker.allow()
    assert breaker.state is CircuitState.HALF_OPEN


def test_release_while_closed_changes_nothing(breaker):
    breaker.record_failure()
    breaker.release()
    assert breaker.state is CircuitState.CLOSED and breaker.consecutive_failures == 1


def test_late_failure_while_open_does_not_extend_cooldown(breaker, clock):
    open_it(breaker)
    clock.now += SETTINGS.cooldown_s - 1
    breaker.record_failure()
    clock.now += 1
    assert breaker.state is CircuitState.HALF_OPEN


def test_board_creates_breakers_on_demand(clock):
    board = CircuitBoard(SETTINGS, clock)
    assert board.state("local/llama/a") is CircuitState.CLOSED
    assert board.states() == {}
    for _ in range(3):
        board.breaker("local/llama/a").record_failure()
    assert board.breaker("local/llama/a") is board.breaker("local/llama/a")
    assert board.states() == {"local/llama/a": CircuitState.OPEN}
    clock.now += SETTINGS.cooldown_s
    assert board.state("local/llama/a") is CircuitState.HALF_OPEN


def test_board_merges_circuit_states_into_stats(clock):
    board = CircuitBoard(SETTINGS, clock)
    for _ in range(3):
        board.breaker("b").record_failure()
    merged = board.with_circuits({"a": TargetStats(in_flight=2), "b": TargetStats(healthy=False)}, ["a", "b", "c"])
    assert merged["a"] == TargetStats(in_flight=2)
    assert merged["b"] == TargetStats(healthy=False, circuit=CircuitState.OPEN)
    assert merged["c"] == TargetStats()


def test_a_reset_circuit_is_closed_with_its_failures_forgotten():
    board = CircuitBoard(CircuitSettings(failure_threshold=2, cooldown_s=30))
    for _ in range(2):
        board.breaker("t").record_failure()
    assert board.state("t") is CircuitState.OPEN
    board.reset("t")
    assert board.state("t") is CircuitState.CLOSED
    board.breaker("t").record_failure()
    assert board.state("t") is CircuitState.CLOSED  # one failure, not three
