"""KV-aware routing under a multi-tenant agent workload, against the other replica choices.

The trace: 24 agents, each with its own system prompt of about 1,500 tokens; customers (16 at a
time) each talk to one agent for two turns; every turn sends 4-6 requests (an agent framework's
steps: match guidelines, call tools, draft, check, answer), each with the agent's system prompt,
the conversation so far and the step's instruction, so requests share the agent's prefix and
a growing conversation. Two SmolLM2 replicas (engine threads unbound: each has the two cores to
share), each with a KV cache of 288 MiB: about 13,000 tokens, a third of the agents' prompts
beside the running requests (cache pressure, as in production).

Systems: Turnout with the default replica choice (``routing: default``, the baseline), with
``prefix_affinity``, with ``kv_aware``, and Ray Serve LLM in its high-throughput mode with its
``PrefixCacheAffinityRouter`` (the peer's best setting for this load). Also a load without shared
prefixes (every request its own system prompt) on the default and ``kv_aware``: KV-aware routing
must not cost anything there. Figures per system: output tok/s, TTFT p50/p99, vLLM's own
prefix-cache hit ratio (Turnout's graphs: its metrics), every TTFT (for the CDF plot).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections import Counter

import aiohttp
import httpx
import pytest
from transformers import AutoTokenizer

from benchmarks.figures import metric_total
from benchmarks.load import LoadResult, RequestTiming, _one, make_prompts, percentile
from benchmarks.systems import rayllm_server, turnout_replicas
from engine.launch.settings import EngineSettings
from engine.protocol import ModelRecord
from testkit.servers import free_port

AGENTS, SYSTEM_TOKENS, TURNS, OUTPUT_TOKENS = 24, 1500, 2, 16
CUSTOMERS = int(os.environ.get("TURNOUT_BENCH_CUSTOMERS", "32"))
# every request of the no-shared-prefix load prefills ~1,500 new tokens: fewer customers there
UNSHARED_CUSTOMERS = int(os.environ.get("TURNOUT_BENCH_UNSHARED_CUSTOMERS", "8"))
CONCURRENCY = int(os.environ.get("TURNOUT_BENCH_CUSTOMER_CONCURRENCY", "16"))
KV_BYTES = 288 * 1024 * 1024
STEPS = ["Match the guidelines that apply.", "Decide which tool to call.", "Draft the reply.",
         "Check the draft against the guidelines.", "Write the final reply.", "Summarize the turn."]
# the cost model's weights for kv_aware (JSON), e.g. {"decode_s_per_request": 0.05}; default: the product's
KV_SETTINGS = json.loads(os.environ.get("TURNOUT_BENCH_KV", "{}"))
ENGINE = EngineSettings(cpu_threads_bind="nobind", kv_cache_memory_bytes=KV_BYTES, max_model_len=4096)


@pytest.fixture(scope="module")
def agent_prompts(smollm2_record: ModelRecord) -> list[str]:
    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_record.path))
    return make_prompts(tokenizer, AGENTS + CUSTOMERS * TURNS * len(STEPS), SYSTEM_TOKENS, seed=24)


def conversations(prompts: list[str], shared: bool, count: int = CUSTOMERS) -> list[list[list[dict]]]:
    """Per customer, per turn, the request bodies of that turn (in order). ``shared``: each
    customer's requests carry its agent's system prompt; otherwise each request its own."""
    rng = random.Random(2026)
    own = iter(prompts[AGENTS:])
    customers = []
    for c in range(count):
        agent = prompts[rng.randrange(AGENTS)]
        history: list[dict] = []
        turns = []
        for t in range(TURNS):
            history = [*history, {"role": "user", "content": f"Customer {c}, message {t}: my order is late, what now?"}]
            steps = STEPS[:rng.randint(4, 6)]
            turns.append([_body([{"role": "system", "content": agent if shared else next(own)}, *history,
                                 {"role": "user", "content": step}]) for step in steps])
            history = [*history, {"role": "assistant", "content": f"I looked at order {c}-{t}: it ships tomorrow."}]
        customers.append(turns)
    return customers


def _body(messages: list[dict]) -> dict:
    return {"model": "", "messages": messages, "max_tokens": OUTPUT_TOKENS, "min_tokens": OUTPUT_TOKENS,
            "ignore_eos": True, "temperature": 0.8, "stream": True, "stream_options": {"include_usage": True}}


async def run_customers(url: str, model: str, customers: list[list[list[dict]]]) -> LoadResult:
    """``CONCURRENCY`` customers at a time; each customer's requests one after another."""
    queue: asyncio.Queue = asyncio.Queue()
    for customer in customers:
        queue.put_nowait(customer)
    results: list[RequestTiming] = []
    connector = aiohttp.TCPConnector(limit=CONCURRENCY + 4)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=900)) as session:

        async def client() -> None:
            while not queue.empty():
                for turn in queue.get_nowait():
                    for body in turn:
                        results.append(await _one(session, url, {**body, "model": model}))

        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return LoadResult(CONCURRENCY, results, wall, cpu)


@pytest.mark.timeout(3600)
@pytest.mark.parametrize("load", ["agents", "unshared"])
@pytest.mark.parametrize("routing", ["default", "prefix_affinity", "kv_aware", "rayllm_ht_prefix"])
def test_agent_trace(benchmark, routing: str, load: str, smollm2_record, demo_store, agent_prompts,
                     tmp_path_factory) -> None:
    if load == "unshared" and routing not in ("default", "kv_aware"):
        pytest.skip("the no-shared-prefix load compares kv_aware with the default only")
    customers = conversations(agent_prompts, load == "agents", CUSTOMERS if load == "agents" else UNSHARED_CUSTOMERS)
    work = tmp_path_factory.mktemp(f"{routing}-{load}")
    metrics_port = free_port()
    if routing == "rayllm_ht_prefix":
        with rayllm_server(smollm2_record, work, ENGINE, {"TURNOUT_HOME": str(demo_store.root)}, high_throughput=True,
                           replicas=2, prefix_router=True, metrics_port=metrics_port) as peer:
            result = _run(benchmark, f"{peer.base_url}/v1/chat/completions", smollm2_record.id, customers)
            text = _metrics(metrics_port)
    else:
        kv = {"kv": KV_SETTINGS} if routing == "kv_aware" else {}
        with turnout_replicas(smollm2_record, routing, ENGINE, work, metrics_port, demo_store.root, **kv) as (_, base):
            result = _run(benchmark, f"{base}/v1/chat/completions", smollm2_record.id, customers)
            text = _metrics(metrics_port)
    summary = result.summary()
    hits, queries = metric_total(text, "ray_vllm_prefix_cache_hits_total"), metric_total(text, "ray_vllm_prefix_cache_queries_total")
    benchmark.extra_info.update(
        suite="agent_trace", routing=routing, load=load, prefix_cache_hit_ratio=hits / queries if queries else None,
        preemptions=metric_total(text, "ray_vllm_num_preemptions_total") if text else None,
        ttfts=sorted(r.ttft for r in result.ok), kv=KV_SETTINGS if routing == "kv_aware" else None,
        ttft_p99_after_opening_s=_after_opening_p99(result),
        error_kinds=dict(Counter((r.error or "")[:120] for r in result.requests if r.error)),
        timeline=_timeline(result),
        **{k: summary[k] for k in ("requests", "errors", "output_tokens_per_s", "ttft_p50_s", "ttft_p99_s", "wall_s")},
    )
    assert summary["errors"] == 0, [r.error for r in result.requests if r.error][:3]


def _run(benchmark, url: str, model: str, customers) -> LoadResult:
    return benchmark.pedantic(lambda: asyncio.run(run_customers(url, model, customers)), rounds=1, iterations=1)


def _timeline(result: LoadResult) -> list[tuple[float, float]]:
    """(seconds since the first request started, TTFT) of each answered request, by start."""
    ok = sorted(result.ok, key=lambda r: r.started)
    return [(round(r.started - ok[0].started, 3), round(r.ttft, 3)) for r in ok]


def _after_opening_p99(result: LoadResult) -> float:
    """TTFT p99 without the opening wave: the first request of each of the ``CONCURRENCY`` clients,
    all sent at once to empty caches, whose prefill queue is the same whatever the routing."""
    ordered = sorted(result.ok, key=lambda r: r.started)[CONCURRENCY:]
    return percentile([r.ttft for r in ordered], 99)


def _metrics(port: int) -> str:
    """The Prometheus text of the system's Ray (vLLM's counters are exported every few seconds)."""
    time.sleep(12)
    try:
        return httpx.get(f"http://127.0.0.1:{port}", timeout=10).text
    except httpx.HTTPError:
        return ""
