"""Fallback cost inside the gateway: a request whose primary fails, circuit closed and open.

The gateway is the real one (router, circuit board, metrics) over in-process backends that answer
at once, so the figures are Turnout's own cost of a failed attempt and of skipping an open
circuit, without any network or engine time. ``test_fallback_over_http`` in ``test_serving.py``
measures the same over the full path.
"""

from __future__ import annotations

import asyncio

import pytest

from benchmarks.load import percentile
from router.errors import TargetUnavailableError
from router.needs import derive_needs
from router.protocol import Endpoint
from router.settings import CircuitSettings
from service.requests import ClientRequest
from service.serve_overrides.openai_types import ChatCompletionRequest
from testkit.fakes import JSON_MINI, NANO, FakeBackend, build_gateway, router_settings

ROUNDS = 2000
BODY = {"model": NANO, "messages": [{"role": "user", "content": "hello"}]}


def _stack(primary_fails: bool, threshold: int):
    settings = router_settings(
        fallbacks={NANO: [JSON_MINI]}, circuit=CircuitSettings(failure_threshold=threshold, cooldown_s=3600)
    )
    error = TargetUnavailableError("down") if primary_fails else None
    return build_gateway(settings, backends={NANO: FakeBackend(NANO, error=error)})


@pytest.mark.parametrize("case", ["healthy", "closed", "open"])
def test_fallback_cost(benchmark, case: str) -> None:
    # "closed": the threshold is never reached, so every request pays for the failed attempt;
    # "open": the first failure opens the circuit, and later requests skip the primary.
    stack = _stack(case != "healthy", threshold=10_000 if case == "closed" else 1)
    request = ChatCompletionRequest(**BODY)
    loop = asyncio.new_event_loop()

    def one():
        # the needs derived in the timed part, as the HTTP entry derives them per request
        incoming = ClientRequest(Endpoint.CHAT, BODY, request, derive_needs(Endpoint.CHAT, BODY))
        return loop.run_until_complete(stack.gateway.chat(incoming))

    one()
    served = benchmark.pedantic(one, rounds=ROUNDS, iterations=1, warmup_rounds=100)
    loop.close()
    assert served.target.id == (NANO if case == "healthy" else JSON_MINI)
    if benchmark.stats is None:  # --benchmark-disable: a smoke run, nothing to record
        return
    data = benchmark.stats.stats.data
    benchmark.extra_info.update(
        suite="fallback", case=case, p50_us=percentile(data, 50) * 1e6, p99_us=percentile(data, 99) * 1e6,
    )
