"""router.kv.subscriber against vLLM 0.32's own ZmqEventPublisher, in process, on loopback.

The publisher is vLLM's class as an engine runs it (its thread, PUB socket, replay ROUTER), fed
batches by the test; no engine. The publisher connects to the subscriber's bound SUB socket, as
it does for any endpoint without a wildcard.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator

import pytest
import zmq

from router.kv.index import KvIndex, Phase
from router.kv.subscriber import KvEventSubscriber

kv_events = pytest.importorskip("vllm.distributed.kv_events")
pytestmark = pytest.mark.asyncio(loop_scope="session")

CHAIN = [11, 12, 13, 14]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ports() -> tuple[int, int]:
    return _free_port(), _free_port()


@pytest.fixture
def publishers(ports: tuple[int, int]) -> Iterator[Callable[..., object]]:
    started: list[object] = []

    def start(**kwargs: object) -> object:
        publisher = kv_events.ZmqEventPublisher(
            data_parallel_rank=0, endpoint=f"tcp://127.0.0.1:{ports[0]}",
            replay_endpoint=f"tcp://127.0.0.1:{ports[1]}", topic="a", **kwargs,
        )
        started.append(publisher)
        return publisher

    yield start
    for publisher in started:
        publisher.shutdown()


def _stored(keys: list[int], parent: int | None = None) -> object:
    event = kv_events.BlockStored(
        block_hashes=keys, parent_block_hash=parent, token_ids=[0] * 16 * len(keys), block_size=16,
        lora_id=None, medium="GPU", lora_name=None,
    )
    return kv_events.KVEventBatch(ts=0.0, events=[event])


def _removed(keys: list[int]) -> object:
    return kv_events.KVEventBatch(ts=0.0, events=[kv_events.BlockRemoved(block_hashes=keys, medium="GPU")])


async def _until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def _subscriber(index: KvIndex, ports: tuple[int, int], replay: bool = True) -> KvEventSubscriber:
    return KvEventSubscriber(
        index, "a", f"tcp://127.0.0.1:{ports[0]}",
        replay_endpoint=f"tcp://127.0.0.1:{ports[1]}" if replay else None,
        bind=True, topic="a", replay_timeout=1.0,
    )


async def test_batches_published_before_the_subscription_are_replayed(publishers, ports) -> None:
    index = KvIndex()
    publisher = publishers()
    publisher.publish(_stored(CHAIN[:2]))  # nobody listens yet: only the replay buffer has it
    publisher.publish(_stored(CHAIN[2:], parent=CHAIN[1]))
    async with _subscriber(index, ports) as sub:
        await _until(lambda: index.match(CHAIN, ["a"])["a"] == 4)
        publisher.publish(_removed([CHAIN[2]]))
        await _until(lambda: index.match(CHAIN, ["a"])["a"] == 2)
        assert sub.stats.replayed_batches >= 2 and sub.stats.decode_errors == 0
        assert index.stats("a").last_seq == 2


async def test_a_restarted_publisher_is_resynced(publishers, ports) -> None:
    index = KvIndex()
    first = publishers()
    async with _subscriber(index, ports) as sub:
        await _until(lambda: sub.stats.connections >= 1)
        first.publish(_stored(CHAIN))
        await _until(lambda: index.match(CHAIN, ["a"])["a"] == 4)
        first.shutdown()
        await _until(lambda: index.stats("a").phase is not Phase.LIVE)  # disconnected
        assert index.match(CHAIN, ["a"]) == {"a": 0}
        second = publishers()  # same endpoints, seq from 0, an empty cache
        second.publish(_stored([21, 22]))
        await _until(lambda: index.match([21, 22], ["a"])["a"] == 2)
        assert index.match(CHAIN, ["a"]) == {"a": 0}
        assert sub.stats.connections >= 2


async def test_without_replay_it_still_indexes_live_batches(publishers, ports) -> None:
    index = KvIndex()
    publisher = publishers()
    async with _subscriber(index, ports, replay=False) as sub:
        await _until(lambda: sub.stats.connections >= 1)
        await asyncio.sleep(0.2)  # let the subscription reach the publisher
        publisher.publish(_stored(CHAIN))
        await _until(lambda: index.match(CHAIN, ["a"])["a"] == 4)
        assert sub.stats.replays == 0


async def test_close_releases_the_endpoint(ports) -> None:
    index = KvIndex()
    sub = _subscriber(index, ports)
    await sub.start()
    await sub.close()
    await sub.close()
    # binding the same port again works, once ZeroMQ's I/O thread has let it go (it closes
    # sockets in the background: on a busy machine, a moment later)
    for attempt in range(50):
        again = _subscriber(index, ports)
        try:
            await again.start()
            break
        except zmq.ZMQError:
            await again.close()
            await asyncio.sleep(0.1)
    else:
        raise AssertionError(f"port {ports[0]} is still taken 5 s after close")
    await again.close()
    assert index.replicas == ["a"]


async def test_a_failing_reader_distrusts_the_replica(publishers, ports) -> None:
    class Broken(KvIndex):
        def apply(self, replica, batch, *, replayed=False):
            if batch.seq == 1:
                raise RuntimeError("boom")
            return super().apply(replica, batch, replayed=replayed)

    index = Broken()
    publisher = publishers()
    async with _subscriber(index, ports, replay=False) as sub:
        await _until(lambda: sub.stats.connections >= 1)
        await asyncio.sleep(0.2)
        publisher.publish(_stored(CHAIN))
        await _until(lambda: index.match(CHAIN, ["a"])["a"] == 4)
        publisher.publish(_removed([CHAIN[0]]))
        await _until(lambda: index.stats("a").phase is Phase.DISCONNECTED)
        assert index.match(CHAIN, ["a"]) == {"a": 0}
