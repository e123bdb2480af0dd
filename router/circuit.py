"""Per-target circuit breakers: stop sending to a target that keeps failing, then probe it.

closed --N consecutive failures--> open --cooldown--> half-open --probe succeeds--> closed
                                     ^-------------------------- probe fails ------'

Breakers are plain objects used from one event loop; they are not thread-safe.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

from router.protocol import IDLE, CircuitState, TargetStats
from router.settings import CircuitSettings

Clock = Callable[[], float]


class CircuitBreaker:
    """The circuit of one target. ``clock`` returns seconds (monotonic); inject one in tests."""

    def __init__(self, settings: CircuitSettings, clock: Clock = time.monotonic) -> None:
        self._settings = settings
        self._clock = clock
        self._state = CircuitState.CLOSED
        self._consecutive_failures = 0
        self._opened_at = 0.0
        self._probes_in_flight = 0

    @property
    def state(self) -> CircuitState:
        """Current state; an open circuit whose cooldown has passed reads as half-open."""
        if self._state is CircuitState.OPEN and self._cooled_down():
            self._state = CircuitState.HALF_OPEN
            self._probes_in_flight = 0
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._consecutive_failures

    def allow(self) -> bool:
        """Whether a request may be sent now; in half-open this takes one probe slot.

        Every allowed request must end in exactly one of :meth:`record_success`,
        :meth:`record_failure` or :meth:`release`.
        """
        state = self.state
        if state is CircuitState.CLOSED:
            return True
        if state is CircuitState.OPEN or self._probes_in_flight >= self._settings.half_open_probes:
            return False
        self._probes_in_flight += 1
        return True

    def record_success(self) -> None:
        """The target answered; a half-open circuit closes."""
        self._consecutive_failures = 0
        self._probes_in_flight = 0
        self._state = CircuitState.CLOSED

    def record_failure(self) -> None:
        """The target failed; opens the circuit at the threshold, or at once while half-open.

        A late failure while already open (a request let through before it opened) does not
        restart the cooldown.
        """
        self._consecutive_failures += 1
        state = self.state
        tripped = state is CircuitState.CLOSED and self._at_threshold()
        if state is CircuitState.HALF_OPEN or tripped:
            self._open()

    def release(self) -> None:
        """The request ended without a verdict on the target (cancelled, or the client's fault)."""
        if self._state is CircuitState.HALF_OPEN and self._probes_in_flight > 0:
            self._probes_in_flight -= 1

    def _at_threshold(self) -> bool:
        return self._consecutive_failures >= self._settings.failure_threshold

    def _open(self) -> None:
        self._state = CircuitState.OPEN
        self._opened_at = self._clock()
        self._probes_in_flight = 0

    def _cooled_down(self) -> bool:
        return self._clock() - self._opened_at >= self._settings.cooldown_s


class CircuitBoard:
    """The breakers of all targets, created on first use, sharing one settings object and clock."""

    def __init__(self, settings: CircuitSettings, clock: Clock = time.monotonic) -> None:
        self._settings = settings
        self._clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}

    def breaker(self, target_id: str) -> CircuitBreaker:
        """The breaker of ``target_id``."""
        if target_id not in self._breakers:
            self._breakers[target_id] = CircuitBreaker(self._settings, self._clock)
        return self._breakers[target_id]

    def reset(self, target_id: str) -> None:
        """Forget ``target_id``'s failures: its circuit is closed (its replicas were replaced)."""
        self._breakers.pop(target_id, None)

    def state(self, target_id: str) -> CircuitState:
        """State of ``target_id``'s circuit; closed for targets never seen."""
        known = self._breakers.get(target_id)
        return known.state if known else CircuitState.CLOSED

    def states(self) -> dict[str, CircuitState]:
        """State of every breaker created so far, by target id (for metrics)."""
        return {target_id: breaker.state for target_id, breaker in self._breakers.items()}

    def with_circuits(
        self, stats: Mapping[str, TargetStats], target_ids: Iterable[str]
    ) -> dict[str, TargetStats]:
        """``stats`` for ``target_ids`` with each entry's ``circuit`` set from this board.

        Runs on every routing decision, so an entry is copied only when its circuit is not closed.
        """
        merged = {i: stats.get(i, IDLE) for i in target_ids}
        for i, breaker in self._breakers.items():
            entry = merged.get(i)
            if entry is not None and entry.circuit is not breaker.state:
                merged[i] = entry.model_copy(update={"circuit": breaker.state})
        return merged
