"""Caching: prefix affinity between two replicas, the response cache, and a Parlant agent on both.

- ``affinity``: two SmolLM2 replicas of one ``turnout serve`` (engine threads unbound, so each
  replica has the machine's two cores to share), under a Parlant-like load: 8 system prompts of
  about 1,000 tokens each, a short distinct question after each, 16 clients. Once with
  ``routing: default`` (HAProxy's fewest connections, Ray Serve's default choice on this path),
  once with ``routing: prefix_affinity``, and Ray Serve LLM in its high-throughput mode with its
  own ``PrefixCacheAffinityRouter`` on the same two replicas. Sampling requests, so the response
  cache takes no part.
- ``response_cache``: a greedy chat request answered by the engine (``Cache-Control: no-cache``)
  and from the cache, over HTTP on loopback.
- ``parlant``: a real Parlant server (``tests/parlant/agent_app.py``) starting its agent and
  answering one customer message through Turnout, with the response cache empty and then warm
  (a second Parlant, fresh home, against the same Turnout).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Iterator

import httpx
import pytest
from transformers import AutoTokenizer

from benchmarks.load import make_prompts, percentile, run_load
from benchmarks.systems import rayllm_server
from benchmarks.systems import turnout_replicas as _graph
from engine.launch.settings import EngineSettings
from engine.protocol import ModelRecord
from testkit.agent_turn import agent_turn
from testkit.servers import free_port, turnout_beside

AFFINITY_REQUESTS = int(os.environ.get("TURNOUT_BENCH_AFFINITY_REQUESTS", "128"))
PREFIXES, PREFIX_TOKENS, CONCURRENCY, OUTPUT_TOKENS = 8, 1000, 16, 16
CACHE_ROUNDS = 200
KV_BYTES = {"kv512MiB": 512 * 1024 * 1024, "kv144MiB": 144 * 1024 * 1024}
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def shared_prefixes(smollm2_record: ModelRecord) -> list[str]:
    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_record.path))
    return make_prompts(tokenizer, PREFIXES, PREFIX_TOKENS, seed=99)


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("kv", ["kv512MiB", "kv144MiB"])
@pytest.mark.parametrize("routing", ["default", "prefix_affinity", "rayllm_ht_prefix"])
def test_prefix_affinity(
    benchmark, routing: str, kv: str, smollm2_record, demo_store, shared_prefixes, tmp_path_factory,
) -> None:
    """``rayllm_ht_prefix``: the peer's best setting for this load, Ray Serve LLM in its
    high-throughput mode with two replicas and its ``PrefixCacheAffinityRouter``. ``kv``: each
    replica's KV cache; 512 MiB (the CPU default) holds all 8 prefixes on every replica, 144 MiB
    (about 6,500 tokens) about four of them beside the running requests."""
    rng = random.Random(7)
    bodies = [
        {
            "model": smollm2_record.id,
            "messages": [{"role": "system", "content": shared_prefixes[rng.randrange(PREFIXES)]},
                         {"role": "user", "content": f"Question {i}: what should I do next?"}],
            "max_tokens": OUTPUT_TOKENS, "min_tokens": OUTPUT_TOKENS, "ignore_eos": True, "temperature": 0.8,
            "stream": True, "stream_options": {"include_usage": True},
        }
        for i in range(AFFINITY_REQUESTS)
    ]
    work = tmp_path_factory.mktemp(routing)
    text = ""
    engine = EngineSettings(cpu_threads_bind="nobind", kv_cache_memory_bytes=KV_BYTES[kv], max_model_len=2048)
    if routing == "rayllm_ht_prefix":
        with rayllm_server(smollm2_record, work, engine, high_throughput=True, replicas=2, prefix_router=True) as peer:
            result = _load(benchmark, f"{peer.base_url}/v1/chat/completions", bodies)
    else:
        metrics_port = free_port()
        with _graph(smollm2_record, routing, engine, work, metrics_port, demo_store.root) as (_, base):
            result = _load(benchmark, f"{base}/v1/chat/completions", bodies)
            time.sleep(12)  # Ray exports metrics every few seconds
            text = httpx.get(f"http://127.0.0.1:{metrics_port}", timeout=10).text
    summary = result.summary()
    assert summary["errors"] == 0, [r.error for r in result.requests if r.error][:3]
    hits, queries = _total(text, "ray_vllm_prefix_cache_hits_total"), _total(text, "ray_vllm_prefix_cache_queries_total")
    decisions: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("ray_turnout_affinity_decisions_total{"):
            kind = line.split('kind="', 1)[1].split('"', 1)[0]
            decisions[kind] = decisions.get(kind, 0.0) + float(line.rsplit(" ", 1)[1])
    benchmark.extra_info.update(
        suite="affinity", routing=routing, kv=kv, prefix_cache_hit_ratio=hits / queries if queries else None,
        affinity_decisions=decisions,
        **{k: summary[k] for k in ("requests", "output_tokens_per_s", "ttft_p50_s", "ttft_p99_s", "wall_s")},
    )


def _load(benchmark, url: str, bodies: list[dict]):
    return benchmark.pedantic(lambda: asyncio.run(run_load(url, bodies, CONCURRENCY)), rounds=1, iterations=1)


def _total(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


@pytest.fixture(scope="module")
def cached_graph(smollm2_record, minilm_record, demo_store, tmp_path_factory) -> Iterator[tuple[str, str]]:
    """(API base URL, metrics URL) of one SmolLM2 replica with the response cache on."""
    metrics_port = free_port()
    config = {"models": [{"id": smollm2_record.id, "engine": {"cpu_threads_bind": "0"}},
                         {"id": minilm_record.id, "engine": {"cpu_threads_bind": "1"}}],  # Parlant embeds too
              "server": {"metrics_export_port": metrics_port}}
    with turnout_beside(config, tmp_path_factory.mktemp("cached"), demo_store.root, timeout_s=900) as (_, base):
        yield base, f"http://127.0.0.1:{metrics_port}"


@pytest.mark.parametrize("path", ["engine", "cache"])
def test_response_cache(benchmark, path: str, cached_graph, smollm2_record) -> None:
    body = {"model": smollm2_record.id, "messages": FRANCE, "max_tokens": 16, "temperature": 0}
    headers = {"Cache-Control": "no-cache"} if path == "engine" else {}
    with httpx.Client(base_url=cached_graph[0], timeout=120) as client:
        client.post("/v1/chat/completions", json=body)  # fills the cache

        def one() -> httpx.Response:
            return client.post("/v1/chat/completions", json=body, headers=headers)

        response = benchmark.pedantic(one, rounds=CACHE_ROUNDS if path == "cache" else 40, iterations=1, warmup_rounds=5)
    assert response.headers["x-turnout-cache"] == ("hit" if path == "cache" else "bypass")
    assert "Paris" in response.json()["choices"][0]["message"]["content"]
    if benchmark.stats is None:
        return
    data = benchmark.stats.stats.data
    benchmark.extra_info.update(suite="response_cache", path=path, p50_ms=percentile(data, 50) * 1e3,
                                p99_ms=percentile(data, 99) * 1e3)


@pytest.mark.timeout(3600)
@pytest.mark.parametrize("cache", ["cold", "warm"])
def test_parlant_agent(benchmark, cache: str, cached_graph, tmp_path_factory) -> None:
    """Parlant's start-up (its agent and guideline evaluated through Turnout) and one reply; the
    cold run goes first, on a cache that holds none of Parlant's requests yet."""
    base, metrics = cached_graph
    work = tmp_path_factory.mktemp(f"parlant-{cache}")
    before = _cache_counts(metrics)
    figures: dict[str, float] = {}

    def run() -> None:
        turn = agent_turn(base, work, 1800)
        assert turn.reply.strip()
        figures.update(ready_s=turn.ready_s, reply_s=turn.reply_s)

    benchmark.pedantic(run, rounds=1, iterations=1)
    after = _cache_counts(metrics)
    hit, miss = after.get("hit", 0) - before.get("hit", 0), after.get("miss", 0) - before.get("miss", 0)
    bypass = after.get("bypass", 0) - before.get("bypass", 0)
    benchmark.extra_info.update(suite="parlant", cache=cache, hit_ratio=hit / (hit + miss) if hit + miss else None,
                                hits=hit, misses=miss, bypassed=bypass, **figures)


def _cache_counts(metrics_url: str) -> dict[str, float]:
    """The response cache's requests by result, once Ray has exported the latest."""
    time.sleep(12)
    counts: dict[str, float] = {}
    for line in httpx.get(metrics_url, timeout=10).text.splitlines():
        if line.startswith("ray_turnout_response_cache_requests_total{"):
            result = line.split('result="', 1)[1].split('"', 1)[0]
            counts[result] = counts.get(result, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts
