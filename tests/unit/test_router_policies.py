import pytest

from engine.errors import ConfigError
from engine.protocol import Capability
from router.policies import POLICIES, FirstEligible, LeastLoaded, make_policy
from router.protocol import (
    CircuitState,
    RequestNeeds,
    RoutingPolicy,
    SizeClass,
    Target,
    TargetKind,
    TargetStats,
)

NEEDS = RequestNeeds(capabilities=frozenset({Capability.CHAT}), prompt_tokens=10)


def target(target_id: str) -> Target:
    kind = TargetKind.CLOUD if target_id.startswith("cloud/") else TargetKind.LOCAL
    return Target(
        id=target_id,
        kind=kind,
        name=target_id.rsplit("/", 1)[-1],
        capabilities=frozenset({Capability.CHAT}),
        context_length=4096,
        size=SizeClass.MINI,
    )


A, B, C = target("local/llama/a"), target("local/llama/b"), target("local/llama/c")
X, Y = target("cloud/openai/x"), target("cloud/anthropic/y")


def ids(targets):
    return [t.id for t in targets]


def test_registry_and_factory():
    assert set(POLICIES) == {"first_eligible", "least_loaded"}
    assert isinstance(make_policy("least_loaded"), LeastLoaded)
    assert all(issubclass(p, RoutingPolicy) for p in POLICIES.values())
    with pytest.raises(ConfigError) as info:
        make_policy("random")
    assert "first_eligible" in info.value.message
    with pytest.raises(TypeError):
        POLICIES["mine"] = FirstEligible  # the registry is read-only


def test_first_eligible_keeps_configured_order():
    candidates = [X, B, A]
    stats = {"local/llama/b": TargetStats(in_flight=9)}
    assert ids(FirstEligible().order(candidates, stats, NEEDS)) == ids(candidates)


def test_least_loaded_without_stats_moves_cloud_last_and_keeps_order():
    assert ids(LeastLoaded().order([X, B, Y, A], {}, NEEDS)) == ids([B, A, X, Y])


def test_least_loaded_orders_locals_by_load():
    stats = {
        "local/llama/a": TargetStats(in_flight=3),
        "local/llama/b": TargetStats(in_flight=1, queued=1),
        "local/llama/c": TargetStats(),
    }
    assert ids(LeastLoaded().order([A, B, C, X], stats, NEEDS)) == ids([C, B, A, X])


def test_least_loaded_uses_capacity_when_known():
    stats = {
        "local/llama/a": TargetStats(in_flight=4, capacity=16),
        "local/llama/b": TargetStats(in_flight=2, capacity=4),
    }
    assert ids(LeastLoaded().order([B, A], stats, NEEDS)) == ids([A, B])


def test_least_loaded_puts_half_open_after_closed_but_before_cloud():
    stats = {
        "local/llama/a": TargetStats(circuit=CircuitState.HALF_OPEN),
        "local/llama/b": TargetStats(in_flight=50),
        "cloud/openai/x": TargetStats(circuit=CircuitState.HALF_OPEN),
    }
    assert ids(LeastLoaded().order([X, Y, A, B], stats, NEEDS)) == ids([B, A, Y, X])


def test_policies_are_pure():
    candidates = [X, A, B]
    stats = {"local/llama/a": TargetStats(in_flight=2)}
    for policy in (FirstEligible(), LeastLoaded()):
        first = policy.order(candidates, stats, NEEDS)
        assert first == policy.order(candidates, stats, NEEDS)
        assert candidates == [X, A, B] and sorted(ids(first)) == sorted(ids(candidates))
