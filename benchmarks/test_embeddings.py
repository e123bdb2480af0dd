"""Embeddings throughput (texts/s): Turnout against vLLM's own server, both serving MiniLM."""

from __future__ import annotations

import asyncio
import random
import time

import aiohttp
import pytest

from benchmarks.load import PROMPT_SEED
from benchmarks.systems import System

TEXTS_PER_REQUEST = 16
REQUESTS = 48
CONCURRENCY = 4
WORDS = ["the", "a", "model", "serves", "tokens", "fast", "slow", "river", "mountain", "city", "paris", "data", "engine", "cache", "graph"]


def _texts(count: int) -> list[str]:
    rng = random.Random(PROMPT_SEED)
    return [" ".join(rng.choice(WORDS) for _ in range(24)) for _ in range(count)]


async def _embed_all(system: System) -> tuple[float, int]:
    texts = _texts(TEXTS_PER_REQUEST * REQUESTS)
    batches = [texts[i:i + TEXTS_PER_REQUEST] for i in range(0, len(texts), TEXTS_PER_REQUEST)]
    vectors = 0
    async with aiohttp.ClientSession() as session:

        async def client(mine: list[list[str]]) -> None:
            nonlocal vectors
            for batch in mine:
                async with session.post(f"{system.base_url}/v1/embeddings",
                                        json={"model": system.model, "input": batch}) as response:
                    assert response.status == 200, await response.text()
                    data = (await response.json())["data"]
                vectors += len(data)

        started = time.perf_counter()
        await asyncio.gather(*(client(batches[i::CONCURRENCY]) for i in range(CONCURRENCY)))
        return time.perf_counter() - started, vectors


@pytest.mark.parametrize("embedding_system", ["vllm", "turnout"], indirect=True)
def test_embeddings(benchmark, embedding_system: System) -> None:
    asyncio.run(_embed_all(embedding_system))  # warm-up
    wall, vectors = benchmark.pedantic(lambda: asyncio.run(_embed_all(embedding_system)), rounds=1, iterations=1)
    benchmark.extra_info.update(
        suite="embeddings", system=embedding_system.name, texts=vectors, wall_s=wall,
        texts_per_s=vectors / wall, concurrency=CONCURRENCY, texts_per_request=TEXTS_PER_REQUEST,
    )
    assert vectors == TEXTS_PER_REQUEST * REQUESTS
