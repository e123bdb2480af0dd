"""Router cost: one routing decision (live stats, then the plan) with 2, 10 and 50 models.

This is the work the gateway does per request before the first attempt (``Gateway._route``):
collect each target's health, load and circuit state, then plan. Each round is one decision, so
pytest-benchmark's rounds give the distribution; p99 goes to ``extra_info``.
"""

from __future__ import annotations

import pytest

from benchmarks.load import percentile
from engine.protocol import Capability as C
from router.needs import derive_needs
from router.protocol import Endpoint
from router.settings import RouterSettings
from testkit.fakes import build_gateway, record

ROUNDS = 5000
HELLO = [{"role": "user", "content": "What is the capital of France?"}]


def _records(count: int):
    kinds = [[C.CHAT, C.COMPLETION], [C.CHAT, C.JSON_SCHEMA], [C.CHAT, C.REASONING], [C.EMBEDDINGS]]
    return [
        record(f"local/llama/model-{i}", kinds[i % len(kinds)], context=4096, size_bytes=(i + 1) * 10**8)
        for i in range(count)
    ]


@pytest.mark.parametrize("models", [2, 10, 50])
@pytest.mark.parametrize("request_kind", ["auto", "explicit"])
def test_router_decision(benchmark, models: int, request_kind: str) -> None:
    records = _records(models)
    gateway = build_gateway(RouterSettings(), records=records).gateway
    model = "auto" if request_kind == "auto" else records[-2].id
    body = {"model": model, "messages": HELLO, "max_tokens": 64}

    def decide():
        needs = derive_needs(Endpoint.CHAT, body)
        return gateway.router.plan(needs, gateway.stats())

    plan = benchmark.pedantic(decide, rounds=ROUNDS, iterations=1, warmup_rounds=200)
    assert plan.targets
    if benchmark.stats is None:  # --benchmark-disable: a smoke run, nothing to record
        return
    data = benchmark.stats.stats.data
    benchmark.extra_info.update(
        suite="router", models=models, request=request_kind,
        p50_us=percentile(data, 50) * 1e6, p99_us=percentile(data, 99) * 1e6,
    )
