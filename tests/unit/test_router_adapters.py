"""LoRA adapters as targets: served by their base's backend, named in answers and metrics, never
picked by auto, falling back only where configured for them."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from engine.errors import ModelNotFoundError
from router.errors import TargetUnavailableError
from service.api.app import create_app
from service.config import TurnoutConfig
from testkit.fakes import CLOUD, NANO, build_gateway, router_settings

ZUB = f"{NANO}:zubrowka"
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture
def index() -> dict[str, str]:
    return {ZUB: NANO, "local/llama/absent:orphan": "local/llama/absent"}


def _client(stack) -> TestClient:
    return TestClient(create_app(stack.gateway, TurnoutConfig(models=[])))


def test_an_adapter_is_served_by_its_base_backend_under_its_own_name(index) -> None:
    stack = build_gateway(adapters=index)
    response = _client(stack).post("/v1/chat/completions", json={"model": ZUB, "messages": HELLO})
    assert response.status_code == 200
    assert response.headers["X-Turnout-Model"] == ZUB
    assert response.headers["X-Turnout-Route"] == f"{ZUB}=served"
    (method, request), = stack.backends[NANO].calls
    assert method == "chat" and request.model == ZUB  # the replica loads the adapter by this id
    assert [t["model"] for t in stack.recorder.tags("turnout_requests_total")] == [ZUB]


def test_an_adapter_registered_after_start_is_found(index) -> None:
    stack = build_gateway(adapters=index)
    client = _client(stack)
    late = f"{NANO}:late"
    assert client.post("/v1/chat/completions", json={"model": late, "messages": HELLO}).status_code == 404
    index[late] = NANO
    assert client.post("/v1/chat/completions", json={"model": late, "messages": HELLO}).status_code == 200


def test_models_lists_adapters_with_their_base(index) -> None:
    cards = {c["id"]: c for c in _client(build_gateway(adapters=index)).get("/v1/models").json()["data"]}
    assert cards[ZUB]["parent"] == NANO and cards[ZUB]["turnout"]["base"] == NANO
    assert "local/llama/absent:orphan" not in cards  # its base is not served here
    assert "parent" not in cards[NANO]
    assert _client(build_gateway(adapters=index)).get(f"/v1/models/{ZUB}").json()["parent"] == NANO


def test_auto_never_picks_an_adapter(index) -> None:
    stack = build_gateway(adapters=index)
    for _ in range(5):
        response = _client(stack).post("/v1/chat/completions", json={"model": "auto", "messages": HELLO})
        assert response.headers["X-Turnout-Model"] != ZUB


def test_an_adapter_falls_back_only_to_targets_configured_for_it(index) -> None:
    plain = build_gateway(adapters=index).gateway.router
    assert [t.id for t in plain.fallback_chain(ZUB)] == [ZUB]  # not the global order
    configured = build_gateway(router_settings(fallbacks={ZUB: [CLOUD]}), adapters=index).gateway.router
    assert [t.id for t in configured.fallback_chain(ZUB)] == [ZUB, CLOUD]
    assert configured.dangling_references == []


def test_a_failing_adapter_answers_an_error_and_does_not_use_another_model(index) -> None:
    stack = build_gateway(adapters=index)
    stack.backends[NANO].error = TargetUnavailableError(f"{NANO} failed")
    response = _client(stack).post("/v1/chat/completions", json={"model": ZUB, "messages": HELLO})
    assert response.status_code == 503
    assert [m for m, _ in stack.backends[NANO].calls] == ["chat"]


def test_unknown_adapters_are_not_found(index) -> None:
    router = build_gateway(adapters=index).gateway.router
    for missing in (f"{NANO}:nope", "local/llama/absent:orphan", f"{CLOUD}:x"):
        with pytest.raises(ModelNotFoundError):
            router.target(missing)
