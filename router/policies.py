"""Routing policies: pure functions of (candidates, stats, needs), registered by name.

Adding a policy is one class with a ``name`` and an ``order`` method, plus one line in
:data:`POLICIES`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

from engine.errors import ConfigError
from router.protocol import (
    IDLE,
    CircuitState,
    RequestNeeds,
    RoutingPolicy,
    Target,
    TargetKind,
    TargetStats,
)


class FirstEligible(RoutingPolicy):
    """Baseline: the eligible targets in configured order, unchanged."""

    name = "first_eligible"

    def order(
        self, candidates: Sequence[Target], stats: Mapping[str, TargetStats], needs: RequestNeeds
    ) -> list[Target]:
        return list(candidates)


class LeastLoaded(RoutingPolicy):
    """Local targets before cloud ones; closed circuits before half-open; least loaded first.

    Ties keep the configured order, so with no load information this equals the baseline with
    cloud targets moved last.
    """

    name = "least_loaded"

    def order(
        self, candidates: Sequence[Target], stats: Mapping[str, TargetStats], needs: RequestNeeds
    ) -> list[Target]:
        # One tuple per candidate built in a comprehension (this runs on every auto request);
        # the index keeps ties in configured order and never compares two targets.
        idle, closed = IDLE, CircuitState.CLOSED
        keyed = [
            (
                target.kind is TargetKind.CLOUD,
                (current := stats.get(target.id, idle)).circuit is not closed,
                0.0 if current is idle or target.kind is TargetKind.CLOUD else current.load,
                index,
            )
            for index, target in enumerate(candidates)
        ]
        keyed.sort()
        return [candidates[entry[3]] for entry in keyed]


POLICIES: Mapping[str, type[RoutingPolicy]] = MappingProxyType(
    {policy.name: policy for policy in (FirstEligible, LeastLoaded)}
)
DEFAULT_POLICY = LeastLoaded.name


def make_policy(name: str) -> RoutingPolicy:
    """Instantiate the policy registered as ``name``."""
    try:
        return POLICIES[name]()
    except KeyError:
        known = ", ".join(sorted(POLICIES))
        message = f"unknown routing policy {name!r} (one of {known})"
        raise ConfigError(message, param="policy") from None
