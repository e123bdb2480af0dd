"""service.serve_overrides.request_router.PrefixAffinityRouter as Ray Serve drives it, over stand-in replicas."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from ray.serve._private.common import DeploymentHandleSource, DeploymentID, ReplicaID

from service.model_config import AffinitySettings
from service.serve_overrides.request_router import PrefixAffinityRouter, router_config

DEPLOYMENT = DeploymentID(name="model:x", app_name="turnout")
SYSTEM = "You are the support agent of a shop. " * 20


class Replica:
    """What a request router reads of a running replica."""

    def __init__(self, name: str) -> None:
        self.replica_id = ReplicaID(unique_id=name, deployment_id=DEPLOYMENT)
        self.max_ongoing_requests = 100


def request(question: str, system: str = SYSTEM) -> SimpleNamespace:
    chat = SimpleNamespace(messages=[{"role": "system", "content": system}, {"role": "user", "content": question}])
    return SimpleNamespace(args=[chat], metadata=SimpleNamespace(multiplexed_model_id=""))


@pytest.fixture
def router() -> PrefixAffinityRouter:
    router = PrefixAffinityRouter(deployment_id=DEPLOYMENT, handle_source=DeploymentHandleSource.UNKNOWN)
    router.initialize_state(**AffinitySettings(max_imbalance=2).model_dump())
    return router


def report(router: PrefixAffinityRouter, loads: dict[Replica, int]) -> None:
    for replica, load in loads.items():
        router._replica_queue_len_cache.update(replica.replica_id, load)


def first(ranks: list[list[Replica]]) -> Replica:
    assert len(ranks[0]) == 1  # one preferred replica, the others after it
    return ranks[0][0]


def test_a_shared_prefix_stays_on_its_replica_within_the_guard(router) -> None:
    a, b = Replica("a"), Replica("b")
    report(router, {a: 0, b: 0})

    async def route() -> list[Replica]:
        return [first(await router.choose_replicas([a, b], request(f"q{i}"))) for i in range(3)]

    chosen = asyncio.run(route())
    assert len(set(chosen)) == 1  # within max_imbalance (2) of the other: the requests it was sent count
    owner = chosen[0]
    other = b if owner is a else a
    report(router, {owner: 5, other: 0})  # the owner reports a long queue: past the guard
    diverted = asyncio.run(router.choose_replicas([a, b], request("q9")))
    assert first(diverted) is other and diverted[1] == [owner]


def test_distinct_prefixes_spread_and_prompts_without_text_are_balanced(router) -> None:
    a, b = Replica("a"), Replica("b")
    report(router, {a: 0, b: 0})

    async def route() -> tuple[Replica, Replica, Replica]:
        one = first(await router.choose_replicas([a, b], request("q", system="A" * 2000)))
        two = first(await router.choose_replicas([a, b], request("q", system="B" * 2000)))
        none = SimpleNamespace(args=[SimpleNamespace(input="x")], metadata=SimpleNamespace(multiplexed_model_id=""))
        return one, two, first(await router.choose_replicas([a, b], none))

    one, two, balanced = asyncio.run(route())
    assert one is not two  # the second prefix went to the replica the first did not load
    assert balanced in (a, b)


def test_a_dead_replica_is_forgotten(router) -> None:
    a, b = Replica("a"), Replica("b")
    report(router, {a: 0, b: 0})
    owner = first(asyncio.run(router.choose_replicas([a, b], request("q"))))
    router.on_replica_actor_died(owner.replica_id)
    survivor = b if owner is a else a
    assert first(asyncio.run(router.choose_replicas([survivor], request("q")))) is survivor


def test_the_deployment_config_names_this_router() -> None:
    config = router_config(AffinitySettings(block_chars=128))
    assert config["request_router_class"] == "service.serve_overrides.request_router:PrefixAffinityRouter"
    assert config["request_router_kwargs"]["block_chars"] == 128
