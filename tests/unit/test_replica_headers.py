"""The edge's answer headers that explain routing: which replica answered (``X-Turnout-Replica``)
and how many prompt tokens its engine found cached (``X-Turnout-Cached-Tokens``)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from service.api.app import create_app
from service.backends.protocol import Answer
from service.config import TurnoutConfig
from testkit.fakes import NANO, FakeBackend, build_gateway

QUESTION = {"model": NANO, "messages": [{"role": "user", "content": "hi"}], "temperature": 0.7}


class ReplicaBackend(FakeBackend):
    """The edge's own engine as the gateway sees it: answers name the replica, usage the cache."""

    def __init__(self, model: str, cached: int | None) -> None:
        super().__init__(model)
        self.cached = cached

    async def chat(self, request: Any) -> Answer:
        answer = await super().chat(request)
        if answer.body is not None and self.cached is not None:
            answer.body["usage"]["prompt_tokens_details"] = {"cached_tokens": self.cached}
        answer.replica = "SERVE_REPLICA::turnout#model:nano#abc"
        return answer


def _client(backend: FakeBackend) -> TestClient:
    stack = build_gateway(backends={NANO: backend})
    return TestClient(create_app(stack.gateway, TurnoutConfig(models=[])))


def test_a_json_answer_names_its_replica_and_the_cached_prompt_tokens() -> None:
    response = _client(ReplicaBackend(NANO, cached=256)).post("/v1/chat/completions", json=QUESTION)
    assert response.status_code == 200
    assert response.headers["x-turnout-replica"] == "SERVE_REPLICA::turnout#model:nano#abc"
    assert response.headers["x-turnout-cached-tokens"] == "256"
    assert response.json()["usage"]["prompt_tokens_details"] == {"cached_tokens": 256}


def test_a_stream_names_its_replica_and_leaves_the_count_to_its_usage_event() -> None:
    response = _client(ReplicaBackend(NANO, cached=256)).post("/v1/chat/completions", json={**QUESTION, "stream": True})
    assert response.status_code == 200
    assert response.headers["x-turnout-replica"].endswith("#abc")
    assert "x-turnout-cached-tokens" not in response.headers


def test_answers_from_elsewhere_have_neither_header() -> None:
    response = _client(FakeBackend(NANO)).post("/v1/chat/completions", json=QUESTION)
    assert response.status_code == 200 and response.json()["model"] == NANO
    assert "x-turnout-replica" not in response.headers and "x-turnout-cached-tokens" not in response.headers
