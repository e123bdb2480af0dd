"""API keys, the ingress concurrency limit, readiness, and keeping configured secrets out of answers."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi.testclient import TestClient

from router.errors import TargetUnavailableError
from service.api.app import create_app
from service.config import AuthSettings, LimitsSettings, TurnoutConfig
from testkit.fakes import CLOUD, NANO, SlowBackend, Stack, build_gateway

KEY = "sk-turnout-0123456789-secret"
OTHER_KEY = "sk-second-key-abcdef"
HELLO = {"messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture
def stack() -> Stack:
    return build_gateway()


@pytest.fixture
def client(stack: Stack) -> TestClient:
    config = TurnoutConfig(models=[], auth=AuthSettings(api_keys=[KEY, OTHER_KEY]))
    return TestClient(create_app(stack.gateway, config))


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize(
    "headers",
    [{}, bearer("sk-wrong"), {"Authorization": KEY}, {"Authorization": f"Basic {KEY}"}, bearer("")],
)
def test_requests_without_a_valid_key_are_401(client, stack, headers):
    response = client.post("/v1/chat/completions", json=HELLO, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "invalid_api_key"
    assert all(not b.calls for b in stack.backends.values())


@pytest.mark.parametrize("key", [KEY, OTHER_KEY])
def test_a_configured_key_is_accepted(client, key):
    assert client.post("/v1/chat/completions", json=HELLO, headers=bearer(key)).status_code == 200
    assert client.get("/v1/models", headers={"authorization": f"bearer {key}"}).status_code == 200


def test_models_need_a_key_too(client):
    assert client.get("/v1/models").status_code == 401


@pytest.mark.parametrize("path", ["/health", "/ready"])
def test_health_and_ready_are_open(client, path):
    assert client.get(path).status_code == 200


def test_keys_from_a_file(stack, tmp_path):
    keys = tmp_path / "keys"
    keys.write_text(f"\n{KEY}\n\n")
    client = TestClient(create_app(stack.gateway, TurnoutConfig(models=[], auth=AuthSettings(api_keys_file=keys))))
    assert client.get("/v1/models").status_code == 401
    assert client.get("/v1/models", headers=bearer(KEY)).status_code == 200


def test_without_keys_the_api_is_open(stack):
    client = TestClient(create_app(stack.gateway, TurnoutConfig(models=[])))
    assert client.post("/v1/chat/completions", json=HELLO).status_code == 200


def test_configured_keys_never_appear_in_answers(client, stack):
    stack.backends[NANO].error = TargetUnavailableError("down")
    answers = [
        client.post("/v1/chat/completions", json=HELLO),
        client.post("/v1/chat/completions", json=HELLO, headers=bearer("sk-wrong")),
        client.post("/v1/chat/completions", json=HELLO, headers=bearer(KEY)),
        client.post("/v1/chat/completions", json={**HELLO, "stream": True}, headers=bearer(KEY)),
        client.post("/v1/chat/completions", json={"model": "local/x/y"}, headers=bearer(KEY)),
        client.post("/v1/chat/completions", content=b"{", headers=bearer(KEY)),
        client.post("/v1/embeddings", json={"input": "hi"}, headers=bearer(KEY)),
        client.post("/v1/embeddings", json={"input": 3}, headers=bearer(KEY)),
        client.get("/v1/models", headers=bearer(KEY)),
        client.get(f"/v1/models/{CLOUD}", headers=bearer(KEY)),
        client.get("/v1/models/local/llama/none", headers=bearer(KEY)),
        client.get("/ready"),
        client.get("/health"),
    ]
    for response in answers:
        seen = response.text + " ".join(f"{k}: {v}" for k, v in response.headers.items())
        for key in (KEY, OTHER_KEY):
            assert key not in seen, response.request.url


async def test_over_the_concurrency_limit_is_503_with_retry_after():
    slow = SlowBackend(NANO)
    stack = build_gateway(backends={NANO: slow})
    app = create_app(stack.gateway, TurnoutConfig(models=[], limits=LimitsSettings(max_ongoing_requests=1)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        first = asyncio.create_task(client.post("/v1/chat/completions", json={**HELLO, "model": NANO}))
        await asyncio.wait_for(slow.entered.wait(), 5)
        second = await client.post("/v1/chat/completions", json={**HELLO, "model": NANO})
        assert second.status_code == 503
        assert second.headers["retry-after"]
        assert second.json()["error"]["type"] == "overloaded"
        assert (await client.get("/health")).status_code == 200  # never limited
        slow.release.set()
        assert (await first).status_code == 200
        assert (await client.post("/v1/chat/completions", json={**HELLO, "model": NANO})).status_code == 200


async def test_a_stream_holds_its_slot_until_its_last_byte():
    stack = build_gateway()
    app = create_app(stack.gateway, TurnoutConfig(models=[], limits=LimitsSettings(max_ongoing_requests=1)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        response = await client.post("/v1/chat/completions", json={**HELLO, "stream": True})
        assert response.status_code == 200
        assert (await client.post("/v1/chat/completions", json=HELLO)).status_code == 200  # slot released


def test_ready_is_503_when_no_target_is_healthy(stack):
    client = TestClient(create_app(stack.gateway, TurnoutConfig(models=[])))
    assert client.get("/ready").json()["ready"] is True
    for target_id in stack.gateway.healthy:
        stack.gateway.healthy[target_id] = False
    response = client.get("/ready")
    assert response.status_code == 503
    assert response.json() == {"ready": False, "healthy_targets": []}
    stack.gateway.healthy[NANO] = True
    assert client.get("/ready").json() == {"ready": True, "healthy_targets": [NANO]}


def test_no_healthy_target_is_503(stack):
    client = TestClient(create_app(stack.gateway, TurnoutConfig(models=[])))
    for target_id in stack.gateway.healthy:
        stack.gateway.healthy[target_id] = False
    response = client.post("/v1/chat/completions", json=HELLO)
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert "unhealthy" in response.headers["X-Turnout-Route"]
