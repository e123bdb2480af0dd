"""Every metric the Grafana dashboard queries is in a real scrape of Ray's metrics endpoint."""

from __future__ import annotations

import time

import httpx
import pytest

from engine.store.demo import DEEPSEEK_ID, SMOLLM2_ID
from tests.dashboard import CACHING_METRICS, dashboard_metrics, scraped_names
from tests.graph import DEEPSEEK_CONTEXT, Deployment

pytestmark = pytest.mark.e2e


def _traffic(http: httpx.Client) -> None:
    """A direct answer, a stream, and a fallback (a prompt too long for DeepSeek's context)."""
    hello = [{"role": "user", "content": "Hi"}]
    http.post("/v1/chat/completions", json={"model": SMOLLM2_ID, "messages": hello, "max_tokens": 3})
    body = {"model": SMOLLM2_ID, "messages": hello, "max_tokens": 3, "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as reply:
        reply.read()
    long = [{"role": "user", "content": "hello " * (DEEPSEEK_CONTEXT + 400)}]
    fallback = http.post("/v1/chat/completions", json={"model": DEEPSEEK_ID, "messages": long, "max_tokens": 3})
    assert f"{DEEPSEEK_ID}=context_length" in fallback.headers.get("x-turnout-route", ""), fallback.text


def test_every_dashboard_metric_is_exported(deployment: Deployment, http: httpx.Client) -> None:
    wanted = dashboard_metrics() - CACHING_METRICS
    assert len(wanted) >= 15, wanted
    deadline, missing = time.monotonic() + 180, wanted
    while missing and time.monotonic() < deadline:
        _traffic(http)
        scraped = scraped_names(httpx.get(deployment.metrics_url, timeout=10).text)
        missing = wanted - scraped
        time.sleep(3)
    assert not missing, f"queried by the dashboard but not exported: {sorted(missing)}"
