"""Bad requests become OpenAI error bodies with the right status, before any target is called."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.config import LimitsSettings, TurnoutConfig
from testkit.fakes import NANO, Stack, build_gateway

HELLO = [{"role": "user", "content": "hello"}]
CHAT = "/v1/chat/completions"


@pytest.fixture
def stack() -> Stack:
    return build_gateway()


@pytest.fixture
def client(stack: Stack) -> TestClient:
    limits = LimitsSettings(max_tokens_cap=256, max_body_bytes=4096)
    return TestClient(create_app(stack.gateway, TurnoutConfig(models=[], limits=limits)))


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == status
    return error


def nothing_called(stack: Stack) -> bool:
    return all(not backend.calls for backend in stack.backends.values())


def test_malformed_json_is_400(client, stack):
    response = client.post(CHAT, content=b'{"messages": [', headers={"content-type": "application/json"})
    assert "not valid JSON" in error_of(response, 400)["message"]
    assert nothing_called(stack)


def test_a_json_array_body_is_400(client):
    error = error_of(client.post(CHAT, json=[{"messages": HELLO}]), 400)
    assert "JSON object" in error["message"]


def test_missing_messages_is_400_naming_the_field(client, stack):
    error = error_of(client.post(CHAT, json={"model": "auto"}), 400)
    assert error["param"] == "messages"
    assert error["type"] == "invalid_request_error"
    assert nothing_called(stack)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"messages": "hello"}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": HELLO, "temperature": "hot"}, "temperature"),
        ({"messages": HELLO, "max_tokens": "many"}, "max_tokens"),
        ({"messages": HELLO, "max_tokens": -1}, "max_tokens"),
        ({"messages": HELLO, "model": 7}, "model"),
        ({"messages": HELLO, "size": 3}, "size"),
    ],
)
def test_wrong_typed_fields_are_400(client, stack, fields, param):
    error = error_of(client.post(CHAT, json=fields), 400)
    assert error["param"] == param
    assert nothing_called(stack)


def test_unknown_model_is_404(client):
    error = error_of(client.post(CHAT, json={"model": "local/llama/nope", "messages": HELLO}), 404)
    assert error["type"] == "model_not_found"
    assert error["param"] == "model"


def test_unknown_auto_alias_is_404(client):
    assert error_of(client.post(CHAT, json={"model": "auto:huge", "messages": HELLO}), 404)["param"] == "model"


def test_invalid_size_header_is_400(client):
    response = client.post(CHAT, json={"messages": HELLO}, headers={"X-Turnout-Size": "huge"})
    assert error_of(response, 400)["param"] == "size"


def test_a_capability_no_model_has_is_400_naming_it(client):
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    error = error_of(client.post(CHAT, json={"messages": HELLO, "tools": tools}), 400)
    assert error["type"] == "capability_unavailable"
    assert error["param"] == "tools"
    assert "tools" in error["message"]


def test_an_explicit_model_without_the_capability_is_400(client):
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    response = client.post(CHAT, json={"model": "local/embedding/minilm", "messages": HELLO, "response_format": fmt})
    assert error_of(response, 400)["type"] == "capability_unavailable"


def test_a_size_no_capable_model_has_is_400(client):
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    response = client.post(CHAT, json={"model": "auto:nano", "messages": HELLO, "response_format": fmt})
    assert error_of(response, 400)["type"] == "size_unavailable"


@pytest.mark.parametrize(
    "response_format",
    [
        {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 12}}},
        {"type": "json_schema", "json_schema": {"name": "x"}},
        {"type": "json_schema", "json_schema": "not an object"},
    ],
)
def test_an_invalid_json_schema_is_400(client, stack, response_format):
    response = client.post(CHAT, json={"messages": HELLO, "response_format": response_format})
    assert error_of(response, 400)["param"] == "response_format"
    assert nothing_called(stack)


@pytest.mark.parametrize("key", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_above_the_cap_is_400(client, key):
    error = error_of(client.post(CHAT, json={"messages": HELLO, key: 257}), 400)
    assert error["param"] == key
    assert "256" in error["message"]


def test_max_tokens_at_the_cap_is_accepted(client):
    assert client.post(CHAT, json={"messages": HELLO, "max_tokens": 256}).status_code == 200


def test_a_body_over_the_limit_is_413(client, stack):
    big = [{"role": "user", "content": "x" * 5000}]
    error = error_of(client.post(CHAT, json={"messages": big}), 413)
    assert error["type"] == "payload_too_large"
    assert nothing_called(stack)


def test_a_chunked_body_over_the_limit_is_413(client):
    def parts():
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}]}'

    response = client.post(CHAT, content=parts(), headers={"content-type": "application/json"})
    error_of(response, 413)


def test_a_prompt_longer_than_every_context_is_400(stack):
    client = TestClient(create_app(stack.gateway, TurnoutConfig(models=[])))
    long = [{"role": "user", "content": "word " * 16_000}]  # about 20k tokens; largest context 16k
    error = error_of(client.post(CHAT, json={"messages": long}), 400)
    assert error["type"] == "context_length_exceeded"
    assert nothing_called(stack)


def test_moderation_needs_input(client):
    assert error_of(client.post("/v1/moderations", json={}), 400)["param"] == "input"


def test_moderation_input_of_the_wrong_type_is_400(client):
    assert error_of(client.post("/v1/moderations", json={"input": 42}), 400)["param"] == "input"


def test_unknown_route_is_an_openai_404(client):
    error = error_of(client.get("/v1/nothing"), 404)
    assert error["type"] == "invalid_request_error"


def test_wrong_method_is_an_openai_405(client):
    error_of(client.get(CHAT), 405)


def test_an_unexpected_backend_error_is_500_without_details():
    stack = build_gateway()
    stack.backends[NANO].error = KeyError("internal detail")
    client = TestClient(create_app(stack.gateway, TurnoutConfig(models=[])), raise_server_exceptions=False)
    response = client.post("/v1/chat/completions", json={"model": NANO, "messages": HELLO})
    # an unclassified failure falls back like any server error
    assert response.status_code == 200
    assert response.headers["X-Turnout-Route"].startswith(f"{NANO}=error")
