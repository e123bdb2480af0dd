"""Serving-layer capacity: what the layers in front of an engine carry, with the engine's cost removed.

Every system runs with ``benchmarks.zero_engine.ZeroEngine`` in place of vLLM (Ray Serve LLM's
``LLMServer`` loads it from ``RAYLLM_VLLM_ENGINE_CLS`` in each replica), which streams tokens at a
fast GPU's pace and computes nothing. At each of CAPACITY_CLIENTS streaming clients, each asking
for CAPACITY_TOKENS tokens at a time, the figures are the streamed tokens/s and requests/s the
client saw, and the CPU time the system's processes (HTTP, routing, replicas, Ray's daemons) spent
per streamed token; a system's capacity is its best point. On a GPU host this overhead is what caps a fast engine: it is the figure that
carries over from these 2 cores. ``vllm serve`` is not measured here: its engine cannot be swapped.
"""

from __future__ import annotations

import asyncio
import os
import time

import psutil
import pytest

from benchmarks.load import completion_body, run_load
from benchmarks.systems import STARTERS, System
from engine.protocol import ModelRecord
from testkit.servers import REPO

CAPACITY_SYSTEMS = os.environ.get("TURNOUT_BENCH_CAPACITY_SYSTEMS", "rayllm,rayllm_ht,turnout").split(",")
CAPACITY_CLIENTS = [int(c) for c in os.environ.get("TURNOUT_BENCH_CAPACITY_CLIENTS", "64,256").split(",")]
CAPACITY_TOKENS = 64
ZERO_ENGINE = {
    "RAYLLM_VLLM_ENGINE_CLS": "benchmarks.zero_engine.ZeroEngine", "PYTHONPATH": str(REPO),
    # 2 ms a token per stream: 64 clients ask for 32,000 tokens/s, more than any system carries here
    "ZERO_ENGINE_TOKEN_INTERVAL_MS": os.environ.get("ZERO_ENGINE_TOKEN_INTERVAL_MS", "2"),
}


@pytest.fixture(scope="module")
def zero_system(request: pytest.FixtureRequest, smollm2_record: ModelRecord, tmp_path_factory):
    """A system whose replicas run the zero-cost engine (SmolLM2's record only names the model)."""
    name = request.param
    with STARTERS[name](smollm2_record, tmp_path_factory.mktemp(f"zero-{name}"), env=ZERO_ENGINE) as running:
        yield running


def _cpu_seconds(root: psutil.Process) -> float:
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
        except psutil.Error:
            continue
    return total


def _measure(system: System, prompts: list[str], clients: int) -> tuple[dict, float, float]:
    bodies = [completion_body(system.model, p, CAPACITY_TOKENS) for p in prompts]
    root = psutil.Process(system.server.process.pid)
    before, started = _cpu_seconds(root), time.perf_counter()
    result = asyncio.run(run_load(f"{system.base_url}/v1/completions", bodies, clients))
    return result.summary(), _cpu_seconds(root) - before, time.perf_counter() - started


@pytest.mark.parametrize("clients", CAPACITY_CLIENTS)
@pytest.mark.parametrize("zero_system", CAPACITY_SYSTEMS, indirect=True)
def test_capacity(benchmark, zero_system: System, prompts: list[str], clients: int) -> None:
    short = [p[:200] for p in prompts]
    requests = [short[i % len(short)] for i in range(4 * clients)]
    _measure(zero_system, requests[:clients], clients)  # warm-up
    summary, cpu_s, wall_s = benchmark.pedantic(
        _measure, args=(zero_system, requests, clients), rounds=1, iterations=1
    )
    assert summary["errors"] == 0, summary
    tokens = summary["output_tokens"]
    benchmark.extra_info.update(
        suite="capacity", system=zero_system.name, tokens_per_request=CAPACITY_TOKENS,
        serving_cpu_s=cpu_s, serving_cores=cpu_s / wall_s, cpu_us_per_token=cpu_s / tokens * 1e6,
        **summary,
    )
    assert tokens == len(requests) * CAPACITY_TOKENS
