"""Overload: past the ingress's limit, requests get 503 with Retry-After at once, not a queue."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from engine.store.demo import SMOLLM2_ID
from tests.graph import MAX_ONGOING, Deployment

pytestmark = pytest.mark.e2e
CLIENTS = MAX_ONGOING + 16


async def _one(client: httpx.AsyncClient, i: int) -> tuple[int, float, httpx.Headers, dict | None]:
    body = {"model": SMOLLM2_ID, "messages": [{"role": "user", "content": f"Count to {i}"}],
            "max_tokens": 24, "ignore_eos": True, "stream": True}
    started = time.perf_counter()
    async with client.stream("POST", "/v1/chat/completions", json=body) as reply:
        if reply.status_code != 200:
            await reply.aread()
            return reply.status_code, time.perf_counter() - started, reply.headers, reply.json()
        async for _ in reply.aiter_lines():
            pass
        return 200, time.perf_counter() - started, reply.headers, None


def test_past_the_limit_the_ingress_sheds_load_with_retry_after(deployment: Deployment, http: httpx.Client) -> None:
    async def burst():
        limits = httpx.Limits(max_connections=CLIENTS + 4)
        async with httpx.AsyncClient(base_url=deployment.base_url, timeout=300, limits=limits) as client:
            return await asyncio.gather(*(_one(client, i) for i in range(CLIENTS)))

    results = asyncio.run(burst())
    shed = [r for r in results if r[0] == 503]
    served = [r for r in results if r[0] == 200]
    print(f"\noverload: {CLIENTS} concurrent streams, limit {MAX_ONGOING}: {len(served)} served, "
          f"{len(shed)} shed; slowest 503 after {max((r[1] for r in shed), default=0):.2f}s")
    assert len(served) + len(shed) == CLIENTS, [r[0] for r in results]
    assert len(served) >= MAX_ONGOING // 2 and len(shed) >= CLIENTS - MAX_ONGOING
    for _, seconds, headers, body in shed:
        assert int(headers["retry-after"]) >= 1
        assert body["error"]["type"] and body["error"]["code"] == 503
        assert seconds < 5  # answered at once, not after waiting for a slot
    assert http.get("/health").status_code == 200
    after = http.post("/v1/chat/completions", json={"model": SMOLLM2_ID, "max_tokens": 4,
                                                    "messages": [{"role": "user", "content": "Hi"}]})
    assert after.status_code == 200
