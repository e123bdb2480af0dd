"""The response cache: its store, and the API over a real gateway with fake backends."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from router.protocol import Endpoint
from service.api.app import create_app
from service.cache import (
    CachePolicy,
    Entry,
    ResponseCache,
    StreamRecorder,
    cache_key,
    deterministic,
)
from service.config import TurnoutConfig
from testkit.fakes import EMBED, NANO, Stack, build_gateway, sse_events
from testkit.recorders import FakeClock

CACHE, ROUTE = "X-Turnout-Cache", "X-Turnout-Route"
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture
def stack() -> Stack:
    return build_gateway(cache=ResponseCache(max_bytes=1 << 20, ttl_s=60, max_entry_bytes=1 << 16))


@pytest.fixture
def client(stack: Stack) -> TestClient:
    return TestClient(create_app(stack.gateway, TurnoutConfig(models=[])))


def chat(client: TestClient, headers: dict | None = None, **fields):
    body = {"model": NANO, "messages": HELLO, "temperature": 0} | fields
    return client.post("/v1/chat/completions", json=body, headers=headers)


def calls(stack: Stack, model: str = NANO) -> int:
    return len(stack.backends[model].calls)


# --- which requests ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "body", "expected"),
    [
        (Endpoint.CHAT, {"temperature": 0}, True),
        (Endpoint.CHAT, {"temperature": 0.0}, True),
        (Endpoint.CHAT, {"seed": 7, "temperature": 0.9}, True),
        (Endpoint.CHAT, {}, False),  # OpenAI's default temperature is 1
        (Endpoint.CHAT, {"temperature": 0.2}, False),
        (Endpoint.CHAT, {"temperature": False}, False),
        (Endpoint.CHAT, {"seed": True}, False),
        (Endpoint.COMPLETIONS, {"temperature": 0}, True),
        (Endpoint.EMBEDDINGS, {}, True),
        (Endpoint.MODERATIONS, {"temperature": 0}, False),
    ],
)
def test_only_deterministic_requests_are_cached(endpoint, body, expected) -> None:
    assert deterministic(endpoint, body) is expected


def test_cache_control_directives() -> None:
    assert CachePolicy.from_header(None) == CachePolicy(read=True, write=True)
    assert CachePolicy.from_header("No-Cache") == CachePolicy(read=False, write=True)
    assert CachePolicy.from_header("max-age=0, no-store") == CachePolicy(read=True, write=False)


def test_key_covers_endpoint_model_revision_and_the_whole_request() -> None:
    body = {"a": 1, "b": [1, 2]}
    key = cache_key(Endpoint.CHAT, NANO, "r1", body)
    assert key == cache_key(Endpoint.CHAT, NANO, "r1", {"b": [1, 2], "a": 1})
    assert len({key, cache_key(Endpoint.COMPLETIONS, NANO, "r1", body), cache_key(Endpoint.CHAT, EMBED, "r1", body),
                cache_key(Endpoint.CHAT, NANO, "r2", body), cache_key(Endpoint.CHAT, NANO, "r1", {**body, "a": 2})}) == 5


# --- the store -----------------------------------------------------------------------------


def test_memory_stays_within_its_bound_under_distinct_requests() -> None:
    cache = ResponseCache(max_bytes=10_000, ttl_s=60, max_entry_bytes=5_000)
    for i in range(2_000):
        assert cache.put(f"k{i}", Entry(NANO, body={"text": "x" * (i % 400)}))
        assert cache.bytes <= 10_000
    assert cache.bytes == sum(len(json.dumps({"text": "x" * (i % 400)})) for i in range(2_000 - len(cache), 2_000))
    assert cache.get("k1999") is not None and cache.get("k0") is None and cache.evictions > 0


def test_least_recently_used_goes_first() -> None:
    size = len(json.dumps({"t": "x"}))
    cache = ResponseCache(max_bytes=2 * size, ttl_s=60, max_entry_bytes=size)
    cache.put("a", Entry(NANO, body={"t": "x"}))
    cache.put("b", Entry(NANO, body={"t": "x"}))
    assert cache.get("a") is not None
    cache.put("c", Entry(NANO, body={"t": "x"}))
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None


def test_entries_expire_and_big_ones_are_refused() -> None:
    clock = FakeClock()
    cache = ResponseCache(max_bytes=1000, ttl_s=5, max_entry_bytes=100, clock=clock)
    assert not cache.put("big", Entry(NANO, body={"t": "x" * 200}))
    assert cache.put("a", Entry(NANO, body={"t": "x"}))
    clock.advance(4.9)
    assert cache.get("a") is not None
    clock.advance(0.2)
    assert cache.get("a") is None and cache.bytes == 0


def test_a_stream_is_kept_only_when_it_ended_well() -> None:
    good = StreamRecorder(NANO, 1000)
    for event in ('data: {"id":"x"}\n\n', "data: [DONE]\n\n"):
        good.add(event)
    assert good.entry() is not None
    failed = StreamRecorder(NANO, 1000)
    for event in ('data: {"id":"x"}\n\n', 'data: {"error":{"message":"boom"}}\n\ndata: [DONE]\n\n'):
        failed.add(event)
    assert failed.entry() is None
    cut = StreamRecorder(NANO, 1000)
    cut.add('data: {"id":"x"}\n\n')
    assert cut.entry() is None
    long = StreamRecorder(NANO, 10)
    for event in ('data: {"id":"x"}\n\n', "data: [DONE]\n\n"):
        long.add(event)
    assert long.entry() is None


# --- through the API -----------------------------------------------------------------------


def test_a_repeated_greedy_chat_is_answered_from_the_cache(client, stack) -> None:
    first = chat(client)
    second = chat(client)
    assert first.status_code == second.status_code == 200
    assert (first.headers[CACHE], second.headers[CACHE]) == ("miss", "hit")
    assert second.headers[ROUTE] == f"{NANO}=cached"
    assert calls(stack) == 1
    a, b = first.json(), second.json()
    assert a["choices"] == b["choices"] and a["id"] != b["id"] and b["id"].startswith("chatcmpl-")
    assert "prompt_tokens_details" not in a["usage"] or not a["usage"]["prompt_tokens_details"]
    assert b["usage"]["prompt_tokens_details"]["cached_tokens"] == b["usage"]["prompt_tokens"] == 5
    assert b["usage"]["completion_tokens"] == a["usage"]["completion_tokens"]
    hits = [t for t in stack.recorder.tags("turnout_response_cache_requests_total") if t["result"] == "hit"]
    assert hits == [{"endpoint": "chat", "model": NANO, "result": "hit"}]


def test_sampling_requests_are_not_cached(client, stack) -> None:
    responses = [chat(client, temperature=0.7) for _ in range(2)]
    assert [r.headers[CACHE] for r in responses] == ["bypass", "bypass"]
    assert calls(stack) == 2


def test_a_seeded_request_is_cached(client, stack) -> None:
    responses = [chat(client, temperature=0.7, seed=3) for _ in range(2)]
    assert [r.headers[CACHE] for r in responses] == ["miss", "hit"]


def test_no_cache_skips_the_lookup_and_no_store_the_fill(client, stack) -> None:
    assert chat(client, headers={"Cache-Control": "no-store"}).headers[CACHE] == "miss"
    assert chat(client).headers[CACHE] == "miss"  # the no-store answer was not kept
    assert chat(client, headers={"Cache-Control": "no-cache"}).headers[CACHE] == "bypass"
    assert chat(client).headers[CACHE] == "hit"
    assert calls(stack) == 3


def test_any_change_to_the_request_misses(client, stack) -> None:
    chat(client)
    assert chat(client, max_tokens=9).headers[CACHE] == "miss"
    assert chat(client, messages=[{"role": "user", "content": "hello!"}]).headers[CACHE] == "miss"
    assert calls(stack) == 3


def test_a_replayed_stream_looks_live(client, stack) -> None:
    body = {"model": NANO, "messages": HELLO, "temperature": 0, "stream": True}
    live = client.post("/v1/chat/completions", json=body)
    replay = client.post("/v1/chat/completions", json=body)
    assert (live.headers[CACHE], replay.headers[CACHE]) == ("miss", "hit")
    assert replay.headers["content-type"].startswith("text/event-stream")
    live_events, replay_events = sse_events(live.text), sse_events(replay.text)
    assert replay_events[-1] == "[DONE]" and len(replay_events) == len(live_events)
    chunks = [json.loads(e) for e in replay_events[:-1]]
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"] != json.loads(live_events[0])["id"]
    assert [c["choices"] for c in chunks] == [json.loads(e)["choices"] for e in live_events[:-1]]
    assert calls(stack) == 1


def test_a_failed_stream_is_not_kept(client, stack) -> None:
    stack.backends[NANO].words = ()
    body = {"model": NANO, "messages": HELLO, "temperature": 0, "stream": True}

    async def broken(model: str):
        yield 'data: {"id":"chatcmpl-9","choices":[]}\n\n'
        raise RuntimeError("engine died")

    stack.backends[NANO]._stream = broken  # type: ignore[method-assign]
    first = client.post("/v1/chat/completions", json=body)
    assert '"error"' in first.text
    assert client.post("/v1/chat/completions", json=body).headers[CACHE] == "miss"


def test_embeddings_are_cached(client, stack) -> None:
    body = {"model": EMBED, "input": "hello"}
    first, second = (client.post("/v1/embeddings", json=body) for _ in range(2))
    assert (first.headers[CACHE], second.headers[CACHE]) == ("miss", "hit")
    assert first.json()["data"] == second.json()["data"]
    assert calls(stack, EMBED) == 1


def test_an_error_is_not_cached(client, stack) -> None:
    from router.errors import TargetUnavailableError

    for backend in stack.backends.values():
        backend.error = TargetUnavailableError("down")
    assert chat(client).status_code >= 500
    for backend in stack.backends.values():
        backend.error = None
    assert chat(client).headers[CACHE] == "miss"


def test_without_a_cache_there_is_no_header() -> None:
    stack = build_gateway()
    client = TestClient(create_app(stack.gateway, TurnoutConfig(models=[])))
    assert CACHE not in chat(client).headers
