"""Schemathesis fuzzing of the real demo graph from its /openapi.json, bounded for CI.

Valid cases are made cheap for the CPU engines (tests.fuzz.bound_cost: at most 8 tokens, n=1);
invalid ones go as generated. Afterwards the graph must be healthy and still answer a chat.
``TURNOUT_FUZZ_EXAMPLES`` sets the examples per operation and mode (default 8: about 150 cases).
"""

from __future__ import annotations

import os

import httpx
import pytest
import schemathesis

from engine.store.demo import SMOLLM2_ID
from tests.fuzz import bound_cost, fuzz
from tests.graph import Deployment

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
EXAMPLES = int(os.environ.get("TURNOUT_FUZZ_EXAMPLES", "8"))


def test_fuzzing_the_graph_finds_no_server_error(
    deployment: Deployment, http: httpx.Client, capsys: pytest.CaptureFixture
) -> None:
    schema = schemathesis.openapi.from_url(f"{deployment.base_url}/openapi.json")
    auth = {k: v for k, v in http.headers.items() if k.lower() == "authorization"}  # if keys are set
    report = fuzz(
        schema, lambda case: case.call(base_url=deployment.base_url, headers=auth, timeout=120),
        examples=EXAMPLES, prepare=bound_cost,
    )
    with capsys.disabled():
        print(f"\nend-to-end {report.summary()}")
    assert report.cases >= 5 * EXAMPLES
    assert http.get("/health").status_code == 200
    assert http.get("/ready").json()["ready"] is True
    reply = http.post(
        "/v1/chat/completions",
        json={"model": SMOLLM2_ID, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4},
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"]
