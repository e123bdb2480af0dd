"""The load generator: concurrent streaming requests over HTTP, and what they measured.

One asyncio task per concurrent client, each sending its share of the requests one after another
(closed loop). Every request streams; the time of each SSE event is taken as it arrives, and the
output token count comes from the final ``usage`` event (``stream_options.include_usage``), so no
chunk is parsed on the hot path. The generator's own CPU time is measured, so a report can show
that the client was not the bottleneck.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

PROMPT_SEED = 1234


@dataclass
class RequestTiming:
    """One streamed request: when it started, when each event arrived, how many tokens it made."""

    started: float
    events: list[float] = field(default_factory=list)
    output_tokens: int = 0
    error: str | None = None

    @property
    def ttft(self) -> float:
        return self.events[0] - self.started

    @property
    def latency(self) -> float:
        return self.events[-1] - self.started

    @property
    def itls(self) -> list[float]:
        return [b - a for a, b in zip(self.events, self.events[1:])]


@dataclass
class LoadResult:
    """The outcome of one load point."""

    concurrency: int
    requests: list[RequestTiming]
    wall_s: float
    client_cpu_s: float

    @property
    def ok(self) -> list[RequestTiming]:
        return [r for r in self.requests if r.error is None and r.events]

    def summary(self) -> dict[str, Any]:
        """Throughput and latency figures (seconds; percentiles over successful requests)."""
        ok = self.ok
        tokens = sum(r.output_tokens for r in ok)
        ttfts = [r.ttft for r in ok]
        itls = [gap for r in ok for gap in r.itls]
        tpots = [(r.latency - r.ttft) / (r.output_tokens - 1) for r in ok if r.output_tokens > 1]
        return {
            "concurrency": self.concurrency,
            "requests": len(self.requests),
            "errors": len(self.requests) - len(ok),
            "output_tokens": tokens,
            "wall_s": self.wall_s,
            "output_tokens_per_s": tokens / self.wall_s,
            "requests_per_s": len(ok) / self.wall_s,
            "ttft_p50_s": percentile(ttfts, 50),
            "ttft_p99_s": percentile(ttfts, 99),
            "itl_p50_s": percentile(itls, 50),
            "itl_p99_s": percentile(itls, 99),
            "tpot_p50_s": percentile(tpots, 50),
            "client_cpu_share": self.client_cpu_s / self.wall_s,
        }


def percentile(values: list[float], pct: float) -> float:
    """The ``pct`` percentile by linear interpolation (NaN when empty)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def make_prompts(tokenizer: Any, count: int, length: int, seed: int = PROMPT_SEED) -> list[str]:
    """``count`` prompts of about ``length`` tokens: seeded random ordinary tokens, decoded."""
    rng = random.Random(seed)
    special = set(tokenizer.all_special_ids)
    vocab = [i for i in range(min(tokenizer.vocab_size, 40_000)) if i not in special]
    prompts = []
    for _ in range(count):
        ids = [rng.choice(vocab) for _ in range(length)]
        prompts.append(tokenizer.decode(ids, skip_special_tokens=True))
    return prompts


def completion_body(model: str, prompt: str, output_tokens: int) -> dict[str, Any]:
    """A streamed text completion of exactly ``output_tokens`` tokens (EOS ignored)."""
    return {
        "model": model,
        "prompt": prompt,
        "max_tokens": output_tokens,
        "min_tokens": output_tokens,
        "ignore_eos": True,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def run_load(
    url: str, bodies: list[dict[str, Any]], concurrency: int, headers: dict[str, str] | None = None,
    timeout_s: float = 600,
) -> LoadResult:
    """Send ``bodies`` to ``url`` (``.../v1/completions``) with ``concurrency`` clients."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    results: list[RequestTiming] = []
    connector = aiohttp.TCPConnector(limit=concurrency + 4)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers) as session:

        async def client() -> None:
            while not queue.empty():
                results.append(await _one(session, url, queue.get_nowait()))

        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return LoadResult(concurrency, results, wall, cpu)


async def _one(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> RequestTiming:
    timing = RequestTiming(started=time.perf_counter())
    last = b""
    try:
        async with session.post(url, json=body) as response:
            if response.status != 200:
                timing.error = f"{response.status}: {(await response.text())[:200]}"
                return timing
            async for line in response.content:
                if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                    continue
                if line.startswith(b'data: {"error"'):
                    timing.error = line.decode(errors="replace")[:200]
                    return timing
                if b'"usage":{' in line.replace(b" ", b"") and b'"choices":[]' in line.replace(b" ", b""):
                    last = line  # the usage-only event: not a token
                    continue
                timing.events.append(time.perf_counter())
                last = line
    except (TimeoutError, aiohttp.ClientError) as e:
        timing.error = f"{type(e).__name__}: {e}"
        return timing
    timing.output_tokens = _usage_tokens(last)
    if not timing.events:
        timing.error = "no events"
    return timing


def _usage_tokens(line: bytes) -> int:
    try:
        usage = json.loads(line[len(b"data: "):]).get("usage") or {}
    except ValueError:
        return 0
    return int(usage.get("completion_tokens") or 0)
