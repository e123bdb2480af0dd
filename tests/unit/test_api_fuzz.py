"""Schemathesis fuzzing of the in-process app over fake backends: no 5xx, no exception, OpenAI
error bodies, healthy afterwards. The number of cases is printed (``-s`` not needed)."""

from __future__ import annotations

import os

import pytest
import schemathesis
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.config import TurnoutConfig
from testkit.fakes import build_gateway
from tests.fuzz import fuzz

EXAMPLES = int(os.environ.get("TURNOUT_FUZZ_EXAMPLES", "25"))


def test_openapi_documents_every_post_body() -> None:
    spec = TestClient(create_app(build_gateway().gateway, TurnoutConfig(models=[]))).get("/openapi.json").json()
    posts = {path: ops["post"] for path, ops in spec["paths"].items() if "post" in ops}
    assert set(posts) == {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/moderations", "/tokenize"}
    for path, op in posts.items():
        schema = op["requestBody"]["content"]["application/json"]["schema"]
        assert schema["type"] == "object" and schema["required"], path


@pytest.mark.timeout(120)
def test_fuzzing_the_app_finds_no_server_error(capsys: pytest.CaptureFixture) -> None:
    stack = build_gateway()
    app = create_app(stack.gateway, TurnoutConfig(models=[]))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    report = fuzz(schema, lambda case: case.call(), examples=EXAMPLES)  # case.call raises app errors
    with capsys.disabled():
        print(f"\nin-process {report.summary()}")
    assert report.cases >= 5 * 2 * EXAMPLES // 2  # every POST route, both modes, most examples distinct
    health = TestClient(app)
    assert health.get("/health").status_code == 200
    assert health.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}).status_code == 200
