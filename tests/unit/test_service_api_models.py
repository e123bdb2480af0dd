"""The model list with Turnout metadata, and moderation through a chat model or a cloud endpoint."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from router.errors import TargetUnavailableError
from service.api.app import create_app
from service.config import TurnoutConfig
from service.moderation import CATEGORIES, SUBCATEGORIES
from testkit.fakes import (
    CLOUD,
    EMBED,
    JSON_MINI,
    NANO,
    R1,
    FakeBackend,
    Stack,
    build_gateway,
    verdict,
)

ALL_IDS = [NANO, JSON_MINI, R1, EMBED, CLOUD]


@pytest.fixture
def stack() -> Stack:
    return build_gateway(backends={JSON_MINI: FakeBackend(JSON_MINI, content=verdict(violence=True))})


@pytest.fixture
def client(stack: Stack) -> TestClient:
    return TestClient(create_app(stack.gateway, TurnoutConfig(models=[])))


def test_models_lists_every_target_with_turnout_metadata(client):
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    cards = {card["id"]: card for card in body["data"]}
    assert list(cards) == ALL_IDS
    nano = cards[NANO]
    assert nano["object"] == "model" and nano["owned_by"] == "turnout"
    assert nano["turnout"] == {
        "kind": "local", "family": "llama", "capabilities": ["chat", "completion"],
        "context_length": 2048, "size": "nano", "healthy": True, "circuit": "closed",
    }
    assert cards[R1]["turnout"]["size"] == "mini"
    assert cards[EMBED]["turnout"]["capabilities"] == ["embeddings"]
    cloud = cards[CLOUD]
    assert cloud["owned_by"] == "acme"
    assert cloud["turnout"]["kind"] == "cloud" and cloud["turnout"]["family"] is None
    assert cloud["turnout"]["context_length"] == 16384


def test_models_show_health(client, stack):
    stack.gateway.healthy[R1] = False
    cards = {c["id"]: c for c in client.get("/v1/models").json()["data"]}
    assert cards[R1]["turnout"]["healthy"] is False


def test_one_model_by_its_id(client):
    response = client.get(f"/v1/models/{JSON_MINI}")
    assert response.status_code == 200
    assert response.json()["id"] == JSON_MINI
    assert response.json()["turnout"]["capabilities"] == ["chat", "completion", "json_schema", "moderation"]


def test_an_unknown_model_id_is_404(client):
    response = client.get("/v1/models/local/llama/missing")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "model_not_found"


def test_moderation_through_a_chat_model(client, stack):
    response = client.post("/v1/moderations", json={"input": ["a threat", "a greeting"]})
    assert response.status_code == 200
    assert response.headers["X-Turnout-Model"] == JSON_MINI
    body = response.json()
    assert body["id"].startswith("modr-") and body["model"] == JSON_MINI
    assert len(body["results"]) == 2
    result = body["results"][0]
    assert result["flagged"] is True
    assert set(result["categories"]) == set(CATEGORIES) | set(SUBCATEGORIES)
    assert result["categories"]["violence"] is True
    assert result["categories"]["violence/graphic"] is True
    assert result["categories"]["hate"] is False
    assert result["category_scores"]["violence"] == 1.0 and result["category_scores"]["hate"] == 0.0
    assert result["category_applied_input_types"]["violence"] == ["text"]

    requests = [request for method, request in stack.backends[JSON_MINI].calls if method == "chat"]
    assert [r.messages[-1]["content"] for r in requests] == ["a threat", "a greeting"]
    fmt = requests[0].response_format
    assert fmt.type == "json_schema"
    assert set(fmt.json_schema.json_schema["required"]) == set(CATEGORIES)


def test_a_clean_verdict_is_not_flagged():
    stack = build_gateway(backends={JSON_MINI: FakeBackend(JSON_MINI, content=verdict())})
    client = TestClient(create_app(stack.gateway, TurnoutConfig(models=[])))
    result = client.post("/v1/moderations", json={"input": "hello"}).json()["results"][0]
    assert result["flagged"] is False
    assert not any(result["categories"].values())


def test_moderation_through_a_cloud_target_calls_its_moderation_endpoint(client, stack):
    response = client.post("/v1/moderations", json={"model": CLOUD, "input": "a threat"})
    assert response.status_code == 200
    assert response.headers["X-Turnout-Model"] == CLOUD
    assert stack.backends[CLOUD].methods == ["moderations"]
    assert stack.backends[CLOUD].calls[0][1]["input"] == "a threat"
    assert response.json()["results"][0]["flagged"] is False


def test_an_unparseable_verdict_falls_back_to_the_cloud():
    stack = build_gateway(backends={JSON_MINI: FakeBackend(JSON_MINI, content="I think it is fine")})
    client = TestClient(create_app(stack.gateway, TurnoutConfig(models=[])))
    response = client.post("/v1/moderations", json={"input": "hello"})
    assert response.status_code == 200
    assert response.headers["X-Turnout-Route"] == f"{JSON_MINI}=unavailable, {CLOUD}=served"


@pytest.mark.parametrize("content", [json.dumps({"violence": True}), json.dumps(["x"]), "null"])
def test_incomplete_verdicts_are_a_target_failure(content):
    stack = build_gateway(backends={JSON_MINI: FakeBackend(JSON_MINI, content=content)})
    stack.backends[CLOUD].error = TargetUnavailableError("down")
    client = TestClient(create_app(stack.gateway, TurnoutConfig(models=[])))
    response = client.post("/v1/moderations", json={"input": "hello"})
    assert response.status_code == 503
    assert response.json()["error"]["type"] == "no_healthy_target"


def test_moderation_with_a_model_that_cannot_moderate_goes_to_its_fallbacks(client):
    response = client.post("/v1/moderations", json={"model": NANO, "input": "x"})
    assert response.status_code == 200
    assert response.headers["X-Turnout-Route"] == f"{NANO}=missing_capability, {JSON_MINI}=served"


def test_moderation_with_a_model_that_cannot_moderate_and_no_fallbacks_is_400(client):
    response = client.post("/v1/moderations", json={"model": EMBED, "input": "x"})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "capability_unavailable"


def test_models_show_how_a_local_model_is_quantized():
    from engine.quantize.schemes import at_load, detect
    from testkit.fakes import demo_records

    records = demo_records()
    records[0] = records[0].model_copy(update={"quantization": at_load("int8")})
    w4 = {"quant_method": "gptq", "bits": 4, "group_size": 128}
    records[1] = records[1].model_copy(update={"quantization": detect({"quantization_config": w4})})
    client = TestClient(create_app(build_gateway(records=records).gateway, TurnoutConfig(models=[])))
    cards = {card["id"]: card["turnout"] for card in client.get("/v1/models").json()["data"]}
    assert cards[NANO]["quantization"] == {
        "method": "load", "scheme": "int8", "weight_bits": 8, "activation_bits": 8, "weight_type": "int",
        "origin": "load",
    }
    assert cards[JSON_MINI]["quantization"]["scheme"] == "w4a16"
    assert cards[JSON_MINI]["quantization"]["group_size"] == 128
    assert "quantization" not in cards[R1] and "quantization" not in cards[CLOUD]
