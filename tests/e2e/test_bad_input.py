"""The bad-input matrix (tests/bad_input.py) against the real demo graph: an OpenAI error each,
and the graph still healthy and answering afterwards."""

from __future__ import annotations

import httpx
import pytest

from engine.store.demo import MINILM_ID, SMOLLM2_ID
from tests.bad_input import ENDPOINTS, BadInput, Deployed, bad_inputs, valid_body

pytestmark = pytest.mark.e2e
# tests/graph.py: max_body_bytes 65536, the default max_tokens cap, the cloud stand-in's 8k context.
DEPLOYED = Deployed(chat=SMOLLM2_ID, embed=MINILM_ID, longest_context=8192, max_body_bytes=65536, max_tokens_cap=4096)


@pytest.mark.parametrize("case", bad_inputs(DEPLOYED), ids=str)
def test_bad_input_gets_an_openai_error(http: httpx.Client, case: BadInput) -> None:
    response = http.post(case.path, content=case.body, headers={"content-type": "application/json", **case.headers})
    assert response.status_code == case.status, response.text[:500]
    error = response.json()["error"]
    assert error["type"] == case.type
    assert isinstance(error["message"], str) and error["message"]
    if case.param is not None:
        assert error["param"] == case.param
    assert http.get("/health").status_code == 200


@pytest.mark.parametrize("path", ENDPOINTS)
def test_every_endpoint_answers_after_the_matrix(http: httpx.Client, path: str) -> None:
    assert http.post(path, json=valid_body(path, DEPLOYED)).status_code == 200
    assert http.get("/ready").json()["ready"] is True
