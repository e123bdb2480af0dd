"""Caching on a real graph: prefix affinity between two SmolLM2 replicas, and the response cache.

On the session's two-replica graph (``two_replicas`` in tests/e2e/conftest.py): SmolLM2 with two
replicas, ``routing: prefix_affinity`` (HAProxy asks Ray Serve LLM's ingress request router, which
applies Turnout's ``PrefixAffinityRouter``, which edge replica gets a request), and the response
cache on (the default). Other tests use the graph too, so figures read from its metrics are the
changes a test made, not totals.
"""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from engine.store.demo import SMOLLM2_ID
from tests.dashboard import CACHING_METRICS, scraped_names

pytestmark = pytest.mark.e2e
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


def france(asker: str) -> list[dict[str, str]]:
    """The question about France, with a system line of its own per test: its prompt has no
    history in the router's table from other tests on the shared graph."""
    return [{"role": "system", "content": f"You answer {asker}'s questions."}, *FRANCE]
PRODUCTS = ["gardening tools", "kitchen knives", "bicycle parts", "office chairs"]


@pytest.fixture
def graph(two_replicas) -> tuple[str, str]:
    """(API base URL, metrics URL) of the two-replica graph."""
    return two_replicas.base_url, two_replicas.metrics_url


def agent(product: str) -> str:
    """A long system prompt per shop, like a Parlant agent's description and guidelines."""
    return " ".join(
        f"Rule {i}: as the support agent of a shop for {product}, answer politely and briefly, "
        f"never promise refunds, and ask for the order number first." for i in range(24)
    )


def _counter(text: str, name: str, label: str) -> dict[str, float]:
    """Sum of ``name`` per value of ``label`` in Prometheus text."""
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            match = re.search(rf'{label}="([^"]*)"', line)
            key = match.group(1) if match else ""
            totals[key] = totals.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return totals


def _wait_for(metrics_url: str, name: str, label: str, done, timeout_s: float = 60) -> dict[str, float]:
    """Ray exports metrics every few seconds: read ``name`` until ``done(values)`` holds."""
    deadline = time.monotonic() + timeout_s
    values: dict[str, float] = {}
    while time.monotonic() < deadline:
        values = _counter(httpx.get(metrics_url, timeout=10).text, name, label)
        if done(values):
            return values
        time.sleep(2)
    return values


def _settled(metrics_url: str, name: str, label: str) -> dict[str, float]:
    """``name`` per ``label`` once Ray's export has caught up (two reads in a row agree)."""
    values = _counter(httpx.get(metrics_url, timeout=10).text, name, label)
    while True:
        time.sleep(3)
        again = _counter(httpx.get(metrics_url, timeout=10).text, name, label)
        if again == values:
            return values
        values = again


def _delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0)}


def test_prompts_that_share_a_prefix_go_where_it_is_cached(graph) -> None:
    base, metrics = graph
    decided = _settled(metrics, "ray_turnout_affinity_decisions_total", "kind")
    queried = _settled(metrics, "ray_vllm_prefix_cache_queries_total", "ReplicaId")
    hit = _counter(httpx.get(metrics, timeout=10).text, "ray_vllm_prefix_cache_hits_total", "ReplicaId")

    def ask(client: httpx.Client, turn: int, product: str) -> None:
        messages = [{"role": "system", "content": agent(product)},
                    {"role": "user", "content": f"Question {turn} about {product}?"}]
        body = {"model": SMOLLM2_ID, "messages": messages, "max_tokens": 1, "temperature": 0.8}
        response = client.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        assert response.headers["x-turnout-cache"] == "bypass"  # sampling: never cached

    with httpx.Client(base_url=base, timeout=120) as client:
        # the first question about each shop all at once: a new prefix goes to the least loaded
        # replica, so they spread over both (one after another, both replicas are idle at every
        # choice and the tie is broken by the prompt, which may pick the same replica four times)
        with ThreadPoolExecutor(len(PRODUCTS)) as pool:
            list(pool.map(lambda product: ask(client, 0, product), PRODUCTS))
        for turn in (1, 2):
            for product in PRODUCTS:
                ask(client, turn, product)
    decisions = _delta(_wait_for(metrics, "ray_turnout_affinity_decisions_total", "kind",
                                 lambda v: sum(_delta(v, decided).values()) >= 12), decided)
    # the first question about each shop is new; every later one goes where its prefix is
    assert decisions.get("new") == 4 and decisions.get("hit") == 8, decisions
    queries = _delta(_wait_for(metrics, "ray_vllm_prefix_cache_queries_total", "ReplicaId",
                               lambda v: len(_delta(v, queried)) == 2), queried)
    hits = _delta(_counter(httpx.get(metrics, timeout=10).text, "ray_vllm_prefix_cache_hits_total", "ReplicaId"), hit)
    # the four shops are spread over both replicas, and vLLM found most prompt tokens cached
    assert len(queries) == 2 and all(q > 0 for q in queries.values()), queries
    assert sum(hits.values()) / sum(queries.values()) > 0.5, (hits, queries)


def test_idle_replicas_answer_at_once(graph) -> None:
    base, _ = graph
    body = {"model": SMOLLM2_ID, "messages": france("Idle"), "max_tokens": 1, "temperature": 0.8}
    slowest = 0.0
    with httpx.Client(base_url=base, timeout=120) as client:
        for _ in range(20):
            started = time.perf_counter()
            assert client.post("/v1/chat/completions", json=body).status_code == 200
            slowest = max(slowest, time.perf_counter() - started)
    # vLLM's idle engine processes re-read their shared-memory queue every 5 s when a wakeup is
    # lost, which happened to a quarter of such requests before engine.patches.shm_wakeup; a one-token
    # answer takes about 0.1 s here
    assert slowest < 2.5, slowest


def test_a_repeated_greedy_request_is_answered_from_the_cache(graph) -> None:
    base, metrics = graph
    body = {"model": SMOLLM2_ID, "messages": france("Anna"), "max_tokens": 16, "temperature": 0}
    with httpx.Client(base_url=base, timeout=120) as client:
        first = client.post("/v1/chat/completions", json=body)
        second = client.post("/v1/chat/completions", json=body)
        fresh = client.post("/v1/chat/completions", json=body, headers={"Cache-Control": "no-cache"})
    assert (first.headers["x-turnout-cache"], second.headers["x-turnout-cache"]) == ("miss", "hit")
    assert fresh.headers["x-turnout-cache"] == "bypass"
    assert "Paris" in first.json()["choices"][0]["message"]["content"]
    assert second.json()["choices"] == first.json()["choices"] == fresh.json()["choices"]
    assert second.headers["x-turnout-route"] == f"{SMOLLM2_ID}=cached"
    usage = second.json()["usage"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == usage["prompt_tokens"] > 0
    results = _wait_for(metrics, "ray_turnout_response_cache_requests_total", "result", lambda v: v.get("hit", 0) >= 1)
    assert results.get("hit", 0) >= 1 and results.get("miss", 0) >= 1


def test_a_cached_stream_replays_like_a_live_one(graph) -> None:
    base, _ = graph
    body = {"model": SMOLLM2_ID, "messages": france("Ben"), "max_tokens": 16, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    with httpx.Client(base_url=base, timeout=120) as client:
        live = client.post("/v1/chat/completions", json=body)
        replay = client.post("/v1/chat/completions", json=body)
    assert (live.headers["x-turnout-cache"], replay.headers["x-turnout-cache"]) == ("miss", "hit")

    def events(response: httpx.Response) -> list:
        return [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]

    live_events, replay_events = events(live), events(replay)
    assert replay_events[-1] == "[DONE]" and len(replay_events) == len(live_events)
    chunks = [json.loads(e) for e in replay_events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert "Paris" in text
    assert text == "".join(
        c["choices"][0]["delta"].get("content") or "" for c in map(json.loads, live_events[:-1]) if c["choices"]
    )
    assert chunks[0]["id"] != json.loads(live_events[0])["id"]
    usage = chunks[-1]["usage"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == usage["prompt_tokens"] > 0


def test_the_dashboards_caching_panels_have_data(graph) -> None:
    base, metrics = graph
    body = {"model": SMOLLM2_ID, "messages": france("Panels"), "max_tokens": 8, "temperature": 0}
    for _ in range(2):  # traffic of its own, whatever ran before: routed by affinity, cached, replayed
        assert httpx.post(f"{base}/v1/chat/completions", json=body, timeout=180).status_code == 200
    deadline, missing = time.monotonic() + 60, set(CACHING_METRICS)
    while missing and time.monotonic() < deadline:
        missing = CACHING_METRICS - scraped_names(httpx.get(metrics, timeout=10).text)
        time.sleep(2)
    assert not missing, f"queried by the dashboard but not exported: {sorted(missing)}"
