"""Engines and replicas killed under the graph: fallback, the circuit opening and closing, broken
streams. SmolLM2's replica is the HTTP entry at the edge: its engine is killed (the model
fails, the entry stays); DeepSeek's replica is killed whole."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import httpx
import psutil
import pytest

from engine.store.demo import DEEPSEEK_ID, SMOLLM2_ID
from tests.graph import CLOUD_ID, DEEPSEEK_CONTEXT, Deployment

pytestmark = pytest.mark.e2e
HELLO = [{"role": "user", "content": "Hello"}]
RECOVERY_S = 400


def replicas(deployment: Deployment, model_id: str) -> list[psutil.Process]:
    """The Ray workers hosting ``model_id``'s replicas in ``deployment``'s graph (its Ray instance
    runs under its ``turnout serve``; other graphs of the session are left alone)."""
    # Ray retitles a replica's worker as it works ("ray::ServeReplica:<app>:<deployment>",
    # "ray::SERVE_REPLICA::<app>#<deployment>#...", ...); the deployment name is in every form.
    name = "model:" + model_id.replace("/", "--").replace(".", "_")
    graph = psutil.Process(deployment.server.process.pid).children(recursive=True)
    return [
        p for p in graph
        if name in _title(p) and "replica" in _title(p).lower()
    ]


def kill_replica(deployment: Deployment, model_id: str) -> int:
    """SIGKILL the Ray worker hosting ``model_id``'s replica; return how many were killed."""
    victims = replicas(deployment, model_id)
    assert len(victims) <= 1, [_title(p) for p in victims]
    for process in victims:
        process.send_signal(signal.SIGKILL)
    return len(victims)


def kill_engine(deployment: Deployment, model_id: str) -> int:
    """SIGKILL the engine core under ``model_id``'s replica (the model fails, its replica
    stays); return how many were killed. On the edge SmolLM2's replica is also the HTTP
    entry: its engine fails, the entry keeps serving."""
    victims = [
        child for replica in replicas(deployment, model_id) for child in replica.children(recursive=True)
        if "EngineCore" in " ".join(child.cmdline())
    ]
    assert len(victims) <= 1, victims
    for process in victims:
        process.send_signal(signal.SIGKILL)
    return len(victims)


def _title(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:  # ended meanwhile
        return ""


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


def test_killed_engine_falls_back_opens_circuit_and_recovers(deployment: Deployment, http: httpx.Client) -> None:
    assert kill_engine(deployment, SMOLLM2_ID) == 1
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


def test_stream_that_fails_after_first_token_ends_with_error_event(deployment: Deployment, http: httpx.Client) -> None:
    # Long enough that the kill lands while tokens are still being generated (the tiny DeepSeek
    # is fast, and the ingress relays a batch of tokens per write).
    tokens = DEEPSEEK_CONTEXT - 64
    body = {"model": DEEPSEEK_ID, "messages": HELLO, "max_tokens": tokens, "stream": True, "ignore_eos": True}
    events = []
    with http.stream("POST", "/v1/chat/completions", json=body) as reply:
        assert reply.status_code == 200
        for line in reply.iter_lines():
            if not line.startswith("data: "):
                continue
            events.append(line.removeprefix("data: "))
            if len(events) == 3:
                assert kill_replica(deployment, DEEPSEEK_ID) == 1
    assert events[-1] == "[DONE]"
    payloads = [json.loads(e) for e in events[:-1]]
    assert "error" in payloads[-1], payloads[-1]
    assert len(payloads) < tokens
    wait_until_served_by(http, DEEPSEEK_ID)


def _outcome(reply: httpx.Response, stream: bool) -> str:
    """How one request ended: served (by whom), an error event in the stream, or a clean error."""
    if reply.status_code != 200:
        body = reply.json()  # a clean OpenAI error, never a bare 500 page
        assert "error" in body and reply.status_code in {429, 503}, (reply.status_code, body)
        return "error"
    if not stream:
        answer = reply.json()
        assert answer["choices"][0]["finish_reason"] in {"length", "stop"} and answer["usage"]["completion_tokens"]
        return "fallback" if answer["model"] != SMOLLM2_ID else "served"
    events = [line.removeprefix("data: ") for line in reply.text.splitlines() if line.startswith("data: ")]
    assert events and events[-1] == "[DONE]", events[-3:]  # every stream is closed properly
    last = json.loads(events[-2])
    if "error" in last:
        return "stream_error"
    assert last["choices"] or last.get("usage"), last
    return "fallback" if last["model"] != SMOLLM2_ID else "served"


def test_engine_killed_under_concurrent_load_loses_no_request(deployment: Deployment, http: httpx.Client) -> None:
    """12 clients (half streaming) on SmolLM2; its engine is SIGKILLed while they run."""
    async def one(client: httpx.AsyncClient, i: int) -> str:
        stream = i % 2 == 1
        body = {"model": SMOLLM2_ID, "messages": HELLO, "max_tokens": 48, "ignore_eos": True, "stream": stream}
        await asyncio.sleep(0.2 * i)
        reply = await client.post("/v1/chat/completions", json=body)
        return _outcome(reply, stream)

    async def load() -> list[str]:
        async with httpx.AsyncClient(base_url=deployment.base_url, timeout=120) as client:
            tasks = [asyncio.create_task(one(client, i)) for i in range(12)]
            await asyncio.sleep(1.5)  # the first requests are being generated
            assert kill_engine(deployment, SMOLLM2_ID) == 1
            return await asyncio.gather(*tasks)  # a hang fails here, on the client timeout

    outcomes = asyncio.run(load())
    counts = {kind: outcomes.count(kind) for kind in sorted(set(outcomes))}
    print(f"\nengine killed under load: {len(outcomes)} requests -> {counts}")
    assert len(outcomes) == 12
    assert counts.get("fallback", 0) >= 1, counts  # later requests went to the next target
    assert set(counts) <= {"served", "fallback", "stream_error", "error"}
    wait_until_served_by(http, SMOLLM2_ID)
