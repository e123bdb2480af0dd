"""Serving throughput and latency over HTTP with streaming: Turnout, vLLM's server, Ray Serve LLM.

Each system serves SmolLM2 with the same engine arguments; each load point sends
``requests_at(c)`` completions of PROMPT_TOKENS prompt and OUTPUT_TOKENS output tokens (EOS
ignored) from ``c`` concurrent streaming clients. The figures go to pytest-benchmark's
``extra_info``; ``benchmarks/report.py`` turns them into the report.
"""

from __future__ import annotations

import asyncio

import pytest

from benchmarks.conftest import (
    OUTPUT_TOKENS,
    PROMPT_TOKENS,
    SERVING_SYSTEMS,
    requests_at,
    serving_params,
)
from benchmarks.load import completion_body, run_load
from benchmarks.systems import DOWN_ID, System

_warm: set[str] = set()


def _load(system: System, prompts: list[str], concurrency: int, count: int, model: str | None = None):
    bodies = [completion_body(model or system.model, p, OUTPUT_TOKENS) for p in prompts[:count]]
    return asyncio.run(run_load(f"{system.base_url}/v1/completions", bodies, concurrency))


def _warm_up(system: System, prompts: list[str]) -> None:
    if system.base_url not in _warm:
        _load(system, prompts, 4, 8)
        _warm.add(system.base_url)


@pytest.mark.parametrize(("system", "concurrency"), serving_params(), indirect=["system"])
def test_serving(benchmark, request: pytest.FixtureRequest, system: System, prompts: list[str], concurrency: int) -> None:
    _warm_up(system, prompts)
    result = benchmark.pedantic(
        _load, args=(system, prompts, concurrency, requests_at(concurrency)), rounds=1, iterations=1
    )
    summary = result.summary()
    round_ = int(request.node.callspec.params["system"].split("@")[1])
    benchmark.extra_info.update(
        suite="serving", system=system.name, round=round_, prompt_tokens=PROMPT_TOKENS,
        startup_s=system.startup_s, **summary,
    )
    assert summary["errors"] == 0, [r.error for r in result.requests if r.error][:3]
    assert summary["output_tokens"] == requests_at(concurrency) * OUTPUT_TOKENS


@pytest.mark.parametrize("system", [f"{s}@1" for s in SERVING_SYSTEMS if s == "turnout"], indirect=True)
def test_fallback_over_http(benchmark, system: System, prompts: list[str]) -> None:
    """Time to first token of a request whose primary (a cloud provider that is down) fails,
    against the same request sent straight to the local model: circuit closed, then open."""
    if system.name != "turnout":
        pytest.skip("fallback is Turnout's")
    _warm_up(system, prompts)
    direct = _load(system, prompts, 1, 10)
    closed = _load(system, prompts, 1, 4, model=DOWN_ID)  # failures 1-4: threshold is 5
    _load(system, prompts, 1, 1, model=DOWN_ID)  # the 5th failure opens the circuit
    opened = benchmark.pedantic(_load, args=(system, prompts, 1, 10, DOWN_ID), rounds=1, iterations=1)
    figures = {name: r.summary()["ttft_p50_s"] for name, r in
               (("direct", direct), ("closed", closed), ("open", opened))}
    benchmark.extra_info.update(
        suite="fallback_http", system=system.name,
        ttft_direct_p50_s=figures["direct"], ttft_closed_p50_s=figures["closed"],
        ttft_open_p50_s=figures["open"],
        extra_closed_s=figures["closed"] - figures["direct"],
        extra_open_s=figures["open"] - figures["direct"],
    )
    for result in (direct, closed, opened):
        assert result.summary()["errors"] == 0
