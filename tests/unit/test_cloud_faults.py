"""A cloud provider that fails over real HTTP (tests/scripted_upstream.py), through the whole
stack: OpenAICompatibleProvider, CloudBackend, the gateway, the circuit board and the API."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from router.protocol import CircuitState
from router.providers import CloudProviderSettings, OpenAICompatibleProvider
from router.settings import CircuitSettings
from service.api.app import create_app
from service.backends.cloud import CloudBackend
from service.config import TurnoutConfig
from testkit.fakes import CLOUD, NANO, Stack, build_gateway, router_settings, sse_events
from tests.scripted_upstream import CHUNKS, Hang, Reply, ScriptedUpstream, Stream

HELLO = [{"role": "user", "content": "hi"}]
TIMEOUT_S = 0.5
INITIAL_S, MAX_S = 0.1, 0.4


def stack_over(upstream: ScriptedUpstream, *, retries: int = 0) -> Stack:
    """The cloud model first, the local NANO (a fake) as its fallback; a circuit of two failures."""
    settings = router_settings(
        fallbacks={CLOUD: [NANO]}, circuit=CircuitSettings(failure_threshold=2, cooldown_s=30)
    )
    stack = build_gateway(settings)
    provider = OpenAICompatibleProvider(CloudProviderSettings(
        name="acme", base_url=upstream.base_url, max_retries=retries, backoff_initial_s=INITIAL_S,
        backoff_max_s=MAX_S, timeout_s=TIMEOUT_S, first_token_timeout_s=TIMEOUT_S,
    ))
    stack.gateway.backends[CLOUD] = CloudBackend(stack.gateway.router.target(CLOUD), provider)
    return stack


@pytest.fixture
async def upstream() -> AsyncIterator[ScriptedUpstream]:
    async with ScriptedUpstream([Reply()]) as server:
        yield server


def client_of(stack: Stack) -> httpx.AsyncClient:
    app = create_app(stack.gateway, TurnoutConfig(models=[]))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=10)


async def chat(stack: Stack, **extra: object) -> httpx.Response:
    async with client_of(stack) as client:
        return await client.post("/v1/chat/completions", json={"model": CLOUD, "messages": HELLO, **extra})


async def test_429_and_500_are_retried_with_growing_bounded_backoff(upstream):
    upstream.script[:] = [Reply(429, retry_after="0"), Reply(500), Reply(503), Reply()]
    response = await chat(stack_over(upstream, retries=3))
    assert response.status_code == 200, response.text
    assert response.json()["model"] == CLOUD
    times = [s.at for s in upstream.posts]
    assert len(times) == 4
    gaps = [b - a for a, b in zip(times, times[1:])]
    for retry, gap in enumerate(gaps, start=1):  # equal jitter: between half and all of the ceiling
        assert INITIAL_S * 2 ** (retry - 1) / 2 <= gap <= MAX_S + 1.0, gaps  # slack for a loaded machine
    assert gaps[2] > gaps[0], gaps


async def test_retry_after_is_waited_and_retries_give_up_into_the_fallback(upstream):
    upstream.script[:] = [Reply(429, retry_after="0.3"), Reply(500)]
    response = await chat(stack_over(upstream, retries=2))
    times = [s.at for s in upstream.posts]
    assert len(times) == 3  # the first try and two retries
    assert times[1] - times[0] >= 0.3
    assert response.status_code == 200
    assert response.headers["X-Turnout-Model"] == NANO
    assert response.headers["X-Turnout-Route"] == f"{CLOUD}=unavailable, {NANO}=served"


@pytest.mark.parametrize("stream", [False, True])
async def test_a_hanging_upstream_times_out_and_falls_back(upstream, stream):
    upstream.script[:] = [Hang()]
    started = time.monotonic()
    response = await chat(stack_over(upstream, retries=2), stream=stream)
    assert response.status_code == 200
    assert response.headers["X-Turnout-Model"] == NANO
    assert response.headers["X-Turnout-Route"] == f"{CLOUD}=timeout, {NANO}=served"
    assert len(upstream.posts) == 1  # a timeout is not retried: the upstream may be working on it
    assert time.monotonic() - started < TIMEOUT_S + 5  # far below the 120 s default: the timeout fired


async def test_a_stream_cut_midway_ends_with_an_error_event_and_done(upstream):
    upstream.script[:] = [Stream(cut=True), Reply()]
    response = await chat(stack_over(upstream, retries=2), stream=True)
    assert response.status_code == 200  # committed at the first chunk
    assert response.headers["X-Turnout-Model"] == CLOUD
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    payloads = [json.loads(e) for e in events[:-1]]
    assert [p["choices"][0]["delta"]["content"] for p in payloads[:-1]] == [f"w{i} " for i in range(CHUNKS)]
    assert payloads[-1]["error"]["type"] == "stream_interrupted"
    assert len(upstream.posts) == 1  # never retried once bytes reached the client


async def test_a_whole_stream_is_relayed(upstream):
    upstream.script[:] = [Stream()]
    response = await chat(stack_over(upstream), stream=True)
    events = sse_events(response.text)
    assert events[-1] == "[DONE]" and len(events) == CHUNKS + 1
    assert all(json.loads(e)["model"] == CLOUD for e in events[:-1])


async def test_failures_open_the_circuit_and_a_probe_after_the_cooldown_closes_it(upstream):
    upstream.script[:] = [Reply(500), Reply(500), Reply()]
    stack = stack_over(upstream)
    for _ in range(2):
        response = await chat(stack)
        assert response.headers["X-Turnout-Route"] == f"{CLOUD}=unavailable, {NANO}=served"
    assert stack.gateway.circuits.state(CLOUD) is CircuitState.OPEN
    response = await chat(stack)  # open: not even tried
    assert response.headers["X-Turnout-Route"] == f"{CLOUD}=circuit_open, {NANO}=served"
    assert len(upstream.posts) == 2
    stack.clock.advance(30)
    assert stack.gateway.circuits.state(CLOUD) is CircuitState.HALF_OPEN
    response = await chat(stack)  # the probe
    assert response.headers["X-Turnout-Route"] == f"{CLOUD}=served"
    assert response.json()["choices"][0]["message"]["content"] == "cloud says hi"
    assert stack.gateway.circuits.state(CLOUD) is CircuitState.CLOSED


async def test_a_failed_probe_opens_the_circuit_again(upstream):
    upstream.script[:] = [Reply(500)]
    stack = stack_over(upstream)
    for _ in range(2):
        await chat(stack)
    stack.clock.advance(30)
    response = await chat(stack)
    assert response.headers["X-Turnout-Route"] == f"{CLOUD}=unavailable, {NANO}=served"
    assert stack.gateway.circuits.state(CLOUD) is CircuitState.OPEN
    assert len(upstream.posts) == 3
