"""The bad-input matrix (tests/bad_input.py) over the in-process app with fake backends."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.config import LimitsSettings, TurnoutConfig
from testkit.fakes import EMBED, NANO, build_gateway
from tests.bad_input import ENDPOINTS, BadInput, Deployed, bad_inputs, valid_body

# The largest context is the cloud model's 16k; a prompt beyond it needs a larger body cap.
DEPLOYED = Deployed(chat=NANO, embed=EMBED, longest_context=16384, max_body_bytes=256 * 1024, max_tokens_cap=4096)


@pytest.fixture(scope="module")
def client() -> TestClient:
    limits = LimitsSettings(max_body_bytes=DEPLOYED.max_body_bytes, max_tokens_cap=DEPLOYED.max_tokens_cap)
    app = create_app(build_gateway().gateway, TurnoutConfig(models=[], limits=limits))
    return TestClient(app, raise_server_exceptions=False)


def assert_openai_error(response, case: BadInput) -> None:
    assert response.status_code == case.status, response.text[:500]
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == case.type
    assert isinstance(error["message"], str) and error["message"]
    assert error["code"] == case.status
    if case.param is not None:
        assert error["param"] == case.param


@pytest.mark.parametrize("case", bad_inputs(DEPLOYED), ids=str)
def test_bad_input_gets_an_openai_error(client: TestClient, case: BadInput) -> None:
    headers = {"content-type": "application/json", **case.headers}
    assert_openai_error(client.post(case.path, content=case.body, headers=headers), case)
    assert client.get("/health").status_code == 200


@pytest.mark.parametrize("path", ENDPOINTS)
def test_every_endpoint_still_answers_valid_requests(client: TestClient, path: str) -> None:
    assert client.post(path, json=valid_body(path, DEPLOYED)).status_code == 200


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"])
def test_unknown_fields_are_rejected_not_dropped(client: TestClient, path: str) -> None:
    body = {**valid_body(path, DEPLOYED), "not_an_openai_field": {"x": 1}}
    reply = client.post(path, json=body)
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["param"] == "not_an_openai_field" and "Unrecognized request argument" in error["message"]


def test_vllm_extensions_and_the_size_hint_are_known_fields(client: TestClient) -> None:
    body = {**valid_body("/v1/chat/completions", DEPLOYED), "ignore_eos": True, "min_tokens": 1, "top_k": 5,
            "size": "nano"}
    assert client.post("/v1/chat/completions", json=body).status_code == 200
