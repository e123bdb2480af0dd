"""A bounded soak of the demo graph: mixed traffic at fixed concurrency for a fixed time.

CI runs a short one (``TURNOUT_SOAK_S``, default 60 s at concurrency 8); ``make soak`` runs the
long one (600 s at concurrency 16). Checks: no 5xx, latency percentiles stable from the first
quarter to the last, and resident memory of the whole graph growing by less than 10%. The figures
are printed, and written as JSON to ``TURNOUT_SOAK_REPORT`` when it is set.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from pathlib import Path

import httpx
import psutil
import pytest

from benchmarks.load import percentile
from engine.store.demo import DEEPSEEK_ID, MINILM_ID, SMOLLM2_ID
from tests.graph import Deployment

pytestmark = pytest.mark.e2e
DURATION_S = float(os.environ.get("TURNOUT_SOAK_S", "60"))
CONCURRENCY = int(os.environ.get("TURNOUT_SOAK_CONCURRENCY", "8"))
WINDOWS = 4


def _request(rng: random.Random) -> dict:
    kind = rng.choice(["chat", "stream", "deepseek", "embed"])
    hello = [{"role": "user", "content": rng.choice(["Hi", "Name a colour", "What is 2+2?"])}]
    if kind == "embed":
        return {"path": "/v1/embeddings", "json": {"model": MINILM_ID, "input": ["a", "b c"]}}
    model = DEEPSEEK_ID if kind == "deepseek" else SMOLLM2_ID
    return {"path": "/v1/chat/completions",
            "json": {"model": model, "messages": hello, "max_tokens": 16, "stream": kind == "stream"}}


def graph_rss(pid: int) -> int:
    """Resident bytes of ``turnout serve`` and every process under it (Ray, replicas, engines)."""
    root = psutil.Process(pid)
    total = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


async def _soak(base_url: str) -> list[tuple[float, float, int]]:
    """(start offset, latency, status) of every request sent during DURATION_S."""
    records: list[tuple[float, float, int]] = []
    started = time.perf_counter()

    async def client(seed: int) -> None:
        rng = random.Random(seed)
        async with httpx.AsyncClient(base_url=base_url, timeout=120) as http:
            while (offset := time.perf_counter() - started) < DURATION_S:
                request = _request(rng)
                sent = time.perf_counter()
                reply = await http.post(request["path"], json=request["json"])
                if reply.status_code == 200 and request["json"].get("stream"):
                    assert reply.text.rstrip().endswith("data: [DONE]")
                records.append((offset, time.perf_counter() - sent, reply.status_code))

    await asyncio.gather(*(client(seed) for seed in range(CONCURRENCY)))
    return records


def test_soak(deployment: Deployment, http: httpx.Client) -> None:
    asyncio.run(_soak_warm_up(deployment.base_url))
    rss_before = graph_rss(deployment.server.process.pid)
    records = asyncio.run(_soak(deployment.base_url))
    rss_after = graph_rss(deployment.server.process.pid)
    window = DURATION_S / WINDOWS
    p50s, p99s = [], []
    for w in range(WINDOWS):
        latencies = [lat for off, lat, _ in records if w * window <= off < (w + 1) * window]
        p50s.append(percentile(latencies, 50))
        p99s.append(percentile(latencies, 99))
    statuses = {str(code): sum(1 for *_, s in records if s == code) for code in sorted({s for *_, s in records})}
    report = {
        "duration_s": DURATION_S, "concurrency": CONCURRENCY, "requests": len(records),
        "statuses": statuses, "p50_by_window_s": p50s, "p99_by_window_s": p99s,
        "rss_before_gib": rss_before / 2**30, "rss_after_gib": rss_after / 2**30,
        "rss_growth": rss_after / rss_before - 1,
    }
    print("\nsoak: " + json.dumps(report))
    if os.environ.get("TURNOUT_SOAK_REPORT"):
        Path(os.environ["TURNOUT_SOAK_REPORT"]).write_text(json.dumps(report, indent=2))
    assert not [s for *_, s in records if s >= 500], statuses
    assert set(statuses) == {"200"}, statuses
    assert p50s[-1] <= 2 * p50s[0] + 0.5, p50s  # stable: the last quarter is not drifting upward
    assert report["rss_growth"] < 0.10, report
    assert http.get("/health").status_code == 200


async def _soak_warm_up(base_url: str) -> None:
    rng = random.Random(99)
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as http:
        for _ in range(8):
            request = _request(rng)
            await http.post(request["path"], json=request["json"])
