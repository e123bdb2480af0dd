"""The OpenAI API over a real gateway and router: model choice, streaming, fallback, circuits."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from router.errors import (
    ContextLengthExceededError,
    TargetOverloadedError,
    TargetTimeoutError,
    TargetUnavailableError,
)
from router.needs import estimate_prompt_tokens
from router.protocol import Endpoint
from router.settings import CircuitSettings
from service.api.app import create_app
from service.config import TurnoutConfig
from testkit.fakes import (
    CLOUD,
    EMBED,
    JSON_MINI,
    NANO,
    R1,
    Stack,
    build_gateway,
    router_settings,
    sse_events,
)

ROUTE, MODEL = "X-Turnout-Route", "X-Turnout-Model"
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture
def stack() -> Stack:
    return build_gateway(router_settings(circuit=CircuitSettings(failure_threshold=2, cooldown_s=10)))


@pytest.fixture
def client(stack: Stack) -> TestClient:
    return TestClient(create_app(stack.gateway, TurnoutConfig(models=[])))


def chat(client: TestClient, model: str = "auto", headers: dict | None = None, **fields):
    return client.post("/v1/chat/completions", json={"model": model, "messages": HELLO, **fields}, headers=headers)


def test_explicit_model_answers_with_route_and_model_headers(client, stack):
    response = chat(client, JSON_MINI)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "hello"
    assert response.headers[MODEL] == JSON_MINI
    assert response.headers[ROUTE] == f"{JSON_MINI}=served"
    (method, request), = stack.backends[JSON_MINI].calls
    assert method == "chat" and request.model == JSON_MINI


def test_model_defaults_to_auto(client):
    response = client.post("/v1/chat/completions", json={"messages": HELLO})
    assert response.status_code == 200
    assert response.headers[MODEL] == NANO


def test_auto_picks_a_model_with_json_schema(client):
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    response = chat(client, response_format=fmt)
    assert response.status_code == 200
    assert response.headers[MODEL] == JSON_MINI


def test_auto_embeddings_go_to_the_embedding_model(client, stack):
    response = client.post("/v1/embeddings", json={"model": "auto", "input": ["a", "b"]})
    assert response.status_code == 200
    assert response.headers[MODEL] == EMBED
    assert len(response.json()["data"]) == 2
    assert stack.backends[EMBED].methods == ["embeddings"]


def test_auto_reasoning_alias_picks_the_reasoner(client):
    assert chat(client, "auto:reasoning").headers[MODEL] == R1


@pytest.mark.parametrize(
    ("model", "headers", "expected"),
    [
        ("auto:nano", None, NANO),
        ("auto", {"X-Turnout-Size": "mini"}, JSON_MINI),
        ("auto:large", None, CLOUD),
        ("auto:nano", {"X-Turnout-Size": "large"}, NANO),  # the alias wins over the header
    ],
)
def test_size_hints(client, model, headers, expected):
    response = chat(client, model, headers=headers)
    assert response.status_code == 200
    assert response.headers[MODEL] == expected


def test_cloud_target_receives_the_upstream_model_name(client, stack):
    chat(client, CLOUD)
    (_, request), = stack.backends[CLOUD].calls
    # The client's own JSON, not vLLM's validated object (whose engine fields upstreams reject).
    assert request.body == {"model": "big", "messages": HELLO}
    assert "structured_outputs" not in request.body


def test_streaming_chat_is_sse_ending_with_done(client, stack):
    response = chat(client, NANO, stream=True)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers[ROUTE] == f"{NANO}=served"
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    words = [json.loads(e)["choices"][0]["delta"].get("content") for e in events[:-1]]
    assert "".join(w for w in words if w) == "Hello"
    tokens = stack.recorder.calls("turnout_tokens_total")
    assert ("inc", 3, {"model": NANO, "direction": "out"}) in tokens


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (TargetUnavailableError("down"), "unavailable"),
        (TargetOverloadedError("busy"), "overloaded"),
        (TargetTimeoutError("slow"), "timeout"),
        (ContextLengthExceededError("too long"), "context_length"),
    ],
)
def test_falls_back_when_the_primary_fails_before_answering(client, stack, error, reason):
    stack.backends[NANO].error = error
    response = chat(client, NANO)
    assert response.status_code == 200
    assert response.headers[MODEL] == JSON_MINI
    assert response.headers[ROUTE] == f"{NANO}={reason}, {JSON_MINI}=served"
    assert stack.recorder.calls("turnout_fallbacks_total") == [
        ("inc", 1, {"target": NANO, "reason": reason})
    ]
    assert stack.recorder.tags("turnout_requests_total") == [
        {"endpoint": "chat", "model": JSON_MINI, "route": "fallback", "status": "ok"}
    ]


def test_streaming_request_falls_back_before_its_first_chunk(client, stack):
    stack.backends[NANO].error = TargetUnavailableError("down")
    response = chat(client, NANO, stream=True)
    assert response.status_code == 200
    assert response.headers[ROUTE] == f"{NANO}=unavailable, {JSON_MINI}=served"
    assert sse_events(response.text)[-1] == "[DONE]"


def test_cloud_fallback_comes_last(client, stack):
    stack.backends[NANO].error = TargetUnavailableError("down")
    stack.backends[JSON_MINI].error = TargetOverloadedError("busy")
    response = chat(client, NANO)
    assert response.status_code == 200
    assert response.headers[MODEL] == CLOUD
    assert response.headers[ROUTE] == f"{NANO}=unavailable, {JSON_MINI}=overloaded, {CLOUD}=served"


def test_every_target_failing_is_503_with_retry_after(client, stack):
    for backend in stack.backends.values():
        backend.error = TargetUnavailableError("down")
    response = chat(client, NANO)
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert response.headers[ROUTE] == f"{NANO}=unavailable, {JSON_MINI}=unavailable, {CLOUD}=unavailable"
    assert response.json()["error"]["type"] == "no_healthy_target"
    assert stack.recorder.tags("turnout_requests_total")[-1]["status"] == "503"


def test_a_client_error_from_a_target_is_not_retried_elsewhere(client, stack):
    from router.providers.errors import UpstreamClientError

    stack.backends[NANO].error = UpstreamClientError("bad logit_bias", status_code=422, param="logit_bias")
    response = chat(client, NANO)
    assert response.status_code == 422
    assert response.json()["error"]["param"] == "logit_bias"
    assert stack.backends[JSON_MINI].calls == []


def test_circuit_opens_after_repeated_failures_and_closes_after_cooldown(client, stack):
    nano = stack.backends[NANO]
    nano.error = TargetUnavailableError("down")
    for _ in range(2):  # failure_threshold
        assert chat(client, NANO).headers[ROUTE] == f"{NANO}=unavailable, {JSON_MINI}=served"
    assert _circuit(client, NANO) == "open"

    response = chat(client, NANO)
    assert response.headers[ROUTE] == f"{NANO}=circuit_open, {JSON_MINI}=served"
    assert len(nano.calls) == 2  # skipped without being called
    assert ("set", 2, {"target": NANO}) in stack.recorder.calls("turnout_circuit_state")

    stack.clock.advance(10)
    nano.error = None
    assert _circuit(client, NANO) == "half_open"
    response = chat(client, NANO)
    assert response.headers[ROUTE] == f"{NANO}=served"
    assert _circuit(client, NANO) == "closed"
    gauge = [value for _, value, tags in stack.recorder.calls("turnout_circuit_state") if tags["target"] == NANO]
    assert gauge[-1] == 0


def test_a_failed_probe_reopens_the_circuit(client, stack):
    stack.backends[NANO].error = TargetUnavailableError("down")
    for _ in range(2):
        chat(client, NANO)
    stack.clock.advance(10)
    assert chat(client, NANO).headers[ROUTE] == f"{NANO}=unavailable, {JSON_MINI}=served"
    assert _circuit(client, NANO) == "open"


def test_unhealthy_targets_are_skipped(client, stack):
    stack.gateway.healthy[NANO] = False
    response = chat(client, NANO)
    assert response.headers[ROUTE] == f"{NANO}=unhealthy, {JSON_MINI}=served"
    assert stack.backends[NANO].calls == []


async def test_probe_health_reads_every_backend(stack):
    stack.backends[R1].is_healthy = False
    await stack.gateway.probe_health()
    assert stack.gateway.healthy[R1] is False
    assert stack.gateway.healthy[NANO] is True


def test_non_streamed_answer_records_metrics(client, stack):
    chat(client, NANO)
    recorder = stack.recorder
    assert recorder.tags("turnout_requests_total") == [
        {"endpoint": "chat", "model": NANO, "route": "direct", "status": "ok"}
    ]
    assert ("inc", 5, {"model": NANO, "direction": "in"}) in recorder.calls("turnout_tokens_total")
    assert ("inc", 2, {"model": NANO, "direction": "out"}) in recorder.calls("turnout_tokens_total")
    assert len(recorder.calls("turnout_router_decision_seconds")) == 1
    assert recorder.tags("turnout_time_to_first_token_seconds") == [{"model": NANO}]
    assert recorder.tags("turnout_request_latency_seconds") == [{"endpoint": "chat", "model": NANO}]


def test_completions_route(client, stack):
    response = client.post("/v1/completions", json={"model": "auto", "prompt": "once upon"})
    assert response.status_code == 200
    assert response.headers[MODEL] == NANO
    assert stack.backends[NANO].methods == ["completions"]


def test_tokenize_needs_an_explicit_model(client, stack):
    assert client.post("/tokenize", json={"model": "auto", "prompt": "x"}).status_code == 400
    response = client.post("/tokenize", json={"model": NANO, "prompt": "x"})
    assert response.status_code == 200
    assert response.json()["count"] == 3


def _circuit(client: TestClient, model_id: str) -> str:
    return client.get(f"/v1/models/{model_id}").json()["turnout"]["circuit"]


def test_a_request_no_target_can_take_is_counted_as_503(client, stack):
    for target_id in stack.gateway.healthy:
        stack.gateway.healthy[target_id] = False
    assert chat(client, NANO).status_code == 503
    assert stack.recorder.tags("turnout_requests_total") == [
        {"endpoint": "chat", "model": NANO, "route": "none", "status": "503"}
    ]


def test_a_request_the_planner_rejects_is_counted_with_its_status(client, stack):
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    assert chat(client, tools=tools).status_code == 400
    assert stack.recorder.tags("turnout_requests_total") == [
        {"endpoint": "chat", "model": "auto", "route": "none", "status": "400"}
    ]


def test_unknown_model_ids_do_not_become_metric_labels(client, stack):
    assert chat(client, "local/llama/made-up").status_code == 404
    assert "turnout_requests_total" not in {name for name, m in stack.recorder.by_name.items() if m.calls}


def test_tokenize_with_a_cloud_model_is_a_client_error(client, stack):
    response = client.post("/tokenize", json={"model": CLOUD, "prompt": "x"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "model"
    assert "Retry-After" not in response.headers
    assert stack.backends[CLOUD].calls == []


def test_a_local_chat_without_max_tokens_gets_the_operators_default():
    stack = build_gateway(output_default=300)
    client = TestClient(create_app(stack.gateway, TurnoutConfig(models=[])))
    assert chat(client, NANO).status_code == 200
    assert chat(client, NANO, max_tokens=700).status_code == 200
    assert chat(client, NANO, max_completion_tokens=900).status_code == 200
    assert chat(client, CLOUD).status_code == 200
    (_, unset), (_, own), (_, completion) = stack.backends[NANO].calls
    assert unset.max_tokens == 300  # the default, where the client set nothing
    assert own.max_tokens == 700  # never over a client's own value
    assert completion.max_tokens is None and completion.max_completion_tokens == 900
    (_, cloud), = stack.backends[CLOUD].calls
    assert "max_tokens" not in cloud.body  # cloud providers keep their own default


def test_the_default_never_passes_what_the_prompt_leaves_of_the_context():
    stack = build_gateway(output_default=5000)
    client = TestClient(create_app(stack.gateway, TurnoutConfig(models=[])))
    assert chat(client, NANO).status_code == 200
    long_prompt = [{"role": "user", "content": "word " * 1000}]  # ~1,250 tokens as the router counts
    assert chat(client, NANO, messages=long_prompt).status_code == 200
    (_, short), (_, long) = stack.backends[NANO].calls
    prompt = estimate_prompt_tokens(Endpoint.CHAT, {"messages": HELLO})
    assert short.max_tokens == 2048 - prompt  # NANO's context, less the prompt
    assert long.max_tokens == 2048 - estimate_prompt_tokens(Endpoint.CHAT, {"messages": long_prompt}) < 800
