"""Routing policies: pure functions of (candidates, stats, needs), registered by name.

Adding a policy is one class with a ``name`` and an ``order`` method, plus one line in
:data:`POLICIES`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

from engine.errors import ConfigError
from router.protocol import IDLE, CircuitState, RequestNeeds, RoutingPolicy, Target, TargetStats


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
        def key(target: Target) -> tuple[bool, bool, float]:
            current = stats.get(target.id, IDLE)
            probing = current.circuit is not CircuitState.CLOSED
            return (target.is_cloud, probing, 0.0 if target.is_cloud else current.load)

        return sorted(candidates, key=key)


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
