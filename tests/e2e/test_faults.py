"""Replicas killed under the graph: fallback, the circuit opening and closing, broken streams."""

from __future__ import annotations

import json
import signal
import time

import httpx
import psutil
import pytest

from engine.demo import DEEPSEEK_ID, SMOLLM2_ID
from tests.graph import CLOUD_ID

pytestmark = pytest.mark.e2e
HELLO = [{"role": "user", "content": "Hello"}]
RECOVERY_S = 400


def kill_replica(model_id: str) -> int:
    """SIGKILL the Ray worker hosting ``model_id``'s replica; return how many were killed."""
    # Ray retitles a replica's worker as it works ("ray::ServeReplica:<app>:<deployment>",
    # "ray::SERVE_REPLICA::<app>#<deployment>#...", ...); the deployment name is in every form.
    deployment = "model:" + model_id.replace("/", "--").replace(".", "_")
    victims = [
        p for p in psutil.process_iter(["cmdline"])
        if deployment in _title(p) and "replica" in _title(p).lower()
    ]
    assert len(victims) <= 1, [_title(p) for p in victims]
    for process in victims:
        process.send_signal(signal.SIGKILL)
    return len(victims)


def _title(process: psutil.Process) -> str:
    return " ".join(process.info["cmdline"] or [])


def card(http: httpx.Client, model_id: str) -> dict:
    return http.get(f"/v1/models/{model_id}").json()["turnout"]


def wait_until_served_by(http: httpx.Client, model_id: str) -> httpx.Response:
    deadline = time.monotonic() + RECOVERY_S
    while time.monotonic() < deadline:
        reply = http.post("/v1/chat/completions", json={"model": model_id, "messages": HELLO, "max_tokens": 2})
        if reply.status_code == 200 and reply.json()["model"] == model_id:
            return reply
        time.sleep(3)
    raise AssertionError(f"{model_id} did not come back within {RECOVERY_S}s")


def test_killed_replica_falls_back_opens_circuit_and_recovers(http: httpx.Client) -> None:
    assert kill_replica(SMOLLM2_ID) == 1
    routes = []
    for _ in range(4):
        reply = http.post("/v1/chat/completions", json={"model": SMOLLM2_ID, "messages": HELLO, "max_tokens": 4})
        assert reply.status_code == 200, reply.text
        assert reply.json()["model"] in {DEEPSEEK_ID, CLOUD_ID}
        routes.append(reply.headers["x-turnout-route"])
    assert all(r.startswith(f"{SMOLLM2_ID}=") for r in routes)
    assert any(f"{SMOLLM2_ID}=circuit_open" in r or f"{SMOLLM2_ID}=unhealthy" in r for r in routes[1:])
    assert card(http, SMOLLM2_ID)["circuit"] in {"open", "half_open"} or not card(http, SMOLLM2_ID)["healthy"]
    recovered = wait_until_served_by(http, SMOLLM2_ID)
    assert recovered.headers["x-turnout-route"] == f"{SMOLLM2_ID}=served"
    assert card(http, SMOLLM2_ID)["circuit"] == "closed"


def test_stream_that_fails_after_first_token_ends_with_error_event(http: httpx.Client) -> None:
    body = {"model": DEEPSEEK_ID, "messages": HELLO, "max_tokens": 400, "stream": True, "ignore_eos": True}
    events = []
    with http.stream("POST", "/v1/chat/completions", json=body) as reply:
        assert reply.status_code == 200
        for line in reply.iter_lines():
            if not line.startswith("data: "):
                continue
            events.append(line.removeprefix("data: "))
            if len(events) == 3:
                assert kill_replica(DEEPSEEK_ID) == 1
    assert events[-1] == "[DONE]"
    payloads = [json.loads(e) for e in events[:-1]]
    assert "error" in payloads[-1], payloads[-1]
    assert len(payloads) < 400
    wait_until_served_by(http, DEEPSEEK_ID)
