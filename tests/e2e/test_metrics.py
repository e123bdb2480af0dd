"""Prometheus scrape of Ray's metrics endpoint after traffic: Turnout's, Serve's and vLLM's."""

from __future__ import annotations

import time

import httpx
import pytest

from engine.store.demo import DEEPSEEK_ID
from tests.graph import DEEPSEEK_CONTEXT, Deployment

pytestmark = pytest.mark.e2e
EXPECTED = [
    "ray_turnout_requests_total",
    "ray_turnout_fallbacks_total",
    "ray_turnout_router_decision_seconds_bucket",
    "ray_turnout_time_to_first_token_seconds_bucket",
    "ray_turnout_request_latency_seconds_bucket",
    "ray_turnout_tokens_total",
    "ray_turnout_circuit_state",
    "ray_serve_num_http_requests",
    "ray_vllm_",
]


def test_metrics_are_exported(deployment: Deployment, http: httpx.Client) -> None:
    http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3})
    # a fallback of its own, whatever ran before: longer than DeepSeek's context, the next target serves
    long = [{"role": "user", "content": "hello " * (DEEPSEEK_CONTEXT + 400)}]
    reply = http.post("/v1/chat/completions", json={"model": DEEPSEEK_ID, "messages": long, "max_tokens": 2})
    assert f"{DEEPSEEK_ID}=context_length" in reply.headers["x-turnout-route"], reply.text
    deadline, missing = time.monotonic() + 120, EXPECTED
    while missing and time.monotonic() < deadline:
        text = httpx.get(deployment.metrics_url, timeout=10).text
        missing = [name for name in EXPECTED if name not in text]
        time.sleep(3)
    assert not missing, f"not exported: {missing}"
    assert 'route="fallback"' in text or "ray_turnout_fallbacks_total{" in text
