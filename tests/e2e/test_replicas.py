"""Several replicas of the edge model at the edge: both serve, and losing one loses nothing.

On the session's two-replica graph (``two_replicas`` in tests/e2e/conftest.py; the demo graph has
one replica per model): SmolLM2 with two replicas, each hosting an engine and serving HTTP behind
HAProxy. The test that kills a replica waits for Serve to replace it before it ends.
"""

from __future__ import annotations

import asyncio
import signal
import time

import httpx
import psutil
import pytest

from engine.store.demo import SMOLLM2_ID
from testkit.servers import Server

pytestmark = pytest.mark.e2e
HELLO = [{"role": "user", "content": "Hello"}]
REPLACED_S = 400


@pytest.fixture
def two(two_replicas) -> tuple[Server, str]:
    return two_replicas.server, two_replicas.base_url


def _edge_replicas(server: Server) -> list[psutil.Process]:
    """SmolLM2's replicas in this graph (the session's graph has one too)."""
    def title(p: psutil.Process) -> str:
        return " ".join(p.cmdline())

    return [
        p for p in psutil.Process(server.process.pid).children(recursive=True)
        if "model:local--llama--smollm2-135m-instruct" in title(p) and "replica" in title(p).lower()
    ]


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


async def _chats(base: str, count: int, max_tokens: int = 24) -> list[httpx.Response | BaseException]:
    body = {"model": SMOLLM2_ID, "messages": HELLO, "max_tokens": max_tokens, "ignore_eos": True}
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        calls = (client.post("/v1/chat/completions", json=body) for _ in range(count))
        return list(await asyncio.gather(*calls, return_exceptions=True))


def test_requests_are_spread_over_both_replicas(two) -> None:
    server, base = two
    replicas = _edge_replicas(server)
    assert len(replicas) == 2
    before = [_cpu(p) for p in replicas]
    replies = asyncio.run(_chats(base, 16))
    assert all(isinstance(r, httpx.Response) and r.status_code == 200 for r in replies), replies
    assert all(r.headers["x-turnout-route"] == f"{SMOLLM2_ID}=served" for r in replies)
    # each replica terminates its clients' HTTP and runs their tokens through its own engine
    busy = [_cpu(p) - b for p, b in zip(replicas, before)]
    assert min(busy) > 0.2 * max(busy), busy


def test_losing_a_replica_loses_no_request(two, two_replicas) -> None:
    server, base = two
    victim = _edge_replicas(server)[0]

    async def run() -> tuple[list, list]:
        load = asyncio.create_task(_chats(base, 12, max_tokens=16))
        await asyncio.sleep(0.5)
        victim.send_signal(signal.SIGKILL)
        return await load, await _chats(base, 8, max_tokens=4)  # right after: the survivor serves

    during, after = asyncio.run(run())
    # HAProxy sends the requests the killed replica had not answered to the survivor (it holds
    # each whole request, so it can send it again), and every request sent after the loss too
    def outcome(r: httpx.Response | BaseException) -> object:
        return r.status_code if isinstance(r, httpx.Response) else repr(r)

    assert [outcome(r) for r in during] == [200] * len(during)
    assert [outcome(r) for r in after] == [200] * len(after)
    assert all(r.headers["x-turnout-route"] == f"{SMOLLM2_ID}=served" for r in during + after)
    _wait_for_two_serving(two_replicas)


def _wait_for_two_serving(graph) -> None:
    """Serve replaces the killed replica: wait until both replicas run again (the graph is shared)."""
    deadline = time.monotonic() + REPLACED_S
    while time.monotonic() < deadline:
        if graph.running_replicas(SMOLLM2_ID) == 2:
            return
        time.sleep(3)
    raise AssertionError(f"the killed replica was not replaced within {REPLACED_S}s")
