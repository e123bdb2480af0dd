"""router.kv.index: the KV event index of one model's replicas, fed by a fake publisher.

:class:`FakeEngine` keeps the ground truth (the blocks an engine holds, with their parents) and
publishes each change as vLLM does: numbered batches, a bounded replay buffer. The property the
index must keep whatever is lost or reordered: it never reports more leading blocks of a chain
than the engine held after the last batch the index applied (batches still in flight are a lag
no subscriber can avoid).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from router.kv.cost import ReplicaLoad, choose, least_loaded
from router.kv.events import AllBlocksCleared, BlockRemoved, BlockStored, EventBatch
from router.kv.index import KvIndex, Phase, ReplayRequest


@dataclass
class FakeEngine:
    """An engine's prefix cache and its publisher (seq from 0, the last ``buffer`` batches kept)."""

    buffer: int = 10_000
    held: dict[int, int | None] = field(default_factory=dict)
    published: list[EventBatch] = field(default_factory=list)
    history: list[dict[int, int | None]] = field(default_factory=list)  # held after each seq

    def store(self, chain: list[int], upto: int) -> EventBatch:
        new = [i for i in range(upto) if chain[i] not in self.held]
        start = new[0] if new else upto
        parent = chain[start - 1] if start else None
        for key, par in zip(chain[start:upto], [parent, *chain[start:upto]]):
            self.held[key] = par
        return self._publish(BlockStored(tuple(chain[start:upto]), parent, (), 16, medium="GPU"))

    def remove(self, keys: list[int]) -> EventBatch:
        for key in keys:
            self.held.pop(key, None)
        return self._publish(BlockRemoved(tuple(keys), medium="GPU"))

    def clear(self) -> EventBatch:
        self.held.clear()
        return self._publish(AllBlocksCleared())

    def replay(self, start: int) -> list[EventBatch]:
        return [b for b in self.published[-self.buffer :] if b.seq >= start]

    def leading(self, chain: list[int], seq: int | None = -1) -> int:
        """Leading blocks of ``chain`` held now, or after batch ``seq`` (None: before any)."""
        held = self.held if seq == -1 else self.history[seq] if seq is not None else {}
        parent = None
        for depth, key in enumerate(chain):
            if held.get(key, -1) != parent:
                return depth
            parent = key
        return len(chain)

    def _publish(self, event: object) -> EventBatch:
        batch = EventBatch(seq=len(self.published), ts=0.0, events=(event,))
        self.published.append(batch)
        self.history.append(dict(self.held))
        return batch


def _chain(seed: int, n: int = 6) -> list[int]:
    rng = random.Random(seed)
    return [rng.getrandbits(64) for _ in range(n)]


def _replay(index: KvIndex, engine: FakeEngine, request: ReplayRequest | None, replica: str = "a") -> None:
    if request is None:
        return
    for batch in engine.replay(request.start_seq):
        index.apply(replica, batch, replayed=True)
    index.end_replay(replica)


@pytest.fixture
def chain() -> list[int]:
    return _chain(1)


def _index(replay: bool = False, **kwargs: object) -> KvIndex:
    index = KvIndex(**kwargs)  # type: ignore[arg-type]
    assert index.add_replica("a", replay_available=replay) == (ReplayRequest("a", 0) if replay else None)
    index.end_replay("a")  # the publisher had nothing buffered yet
    return index


def test_events_in_order_build_the_chain(chain: list[int]) -> None:
    index, engine = _index(), FakeEngine()
    index.apply("a", engine.store(chain, 3))
    index.apply("a", engine.store(chain, 5))
    assert index.match(chain, ["a"]) == {"a": 5}
    assert index.match(chain[:2] + _chain(2), ["a"]) == {"a": 2}  # diverges after block 2
    assert index.match(_chain(3), ["a", "unknown"]) == {"a": 0, "unknown": 0}


def test_a_chain_counts_from_its_first_block_only(chain: list[int]) -> None:
    index, engine = _index(), FakeEngine()
    index.apply("a", engine.store(chain, 4))
    index.apply("a", engine.remove([chain[0]]))  # vLLM may evict a parent before its children
    assert index.match(chain, ["a"]) == {"a": 0}
    assert index.match(chain[1:], ["a"]) == {"a": 0}  # block 1's parent is not "the start"


def test_eviction_shortens_the_match(chain: list[int]) -> None:
    index, engine = _index(), FakeEngine()
    index.apply("a", engine.store(chain, 6))
    index.apply("a", engine.remove([chain[4], chain[5]]))
    assert index.match(chain, ["a"]) == {"a": 4}
    index.apply("a", engine.remove([chain[1]]))
    assert index.match(chain, ["a"]) == {"a": 1}
    assert index.stats("a").num_blocks == 3


def test_all_blocks_cleared_empties_the_replica(chain: list[int]) -> None:
    index, engine = _index(), FakeEngine()
    index.apply("a", engine.store(chain, 6))
    index.apply("a", engine.clear())
    assert index.match(chain, ["a"]) == {"a": 0}
    assert index.stats("a").num_blocks == 0


def test_out_of_order_with_replay_holds_back_then_recovers_exactly(chain: list[int]) -> None:
    index, engine = _index(replay=True), FakeEngine()
    first, second, third = engine.store(chain, 2), engine.store(chain, 4), engine.remove([chain[3]])
    index.apply("a", first)
    request = index.apply("a", third)  # seq 2 before seq 1
    assert request == ReplayRequest("a", 1)
    assert index.match(chain, ["a"]) == {"a": 0}  # untrusted while the gap is open
    assert index.stats("a").phase is Phase.GAP
    index.apply("a", second)  # a late live copy is held, not applied across the hole
    _replay(index, engine, request)
    assert index.match(chain, ["a"]) == {"a": engine.leading(chain)} == {"a": 3}
    assert index.stats("a").phase is Phase.LIVE and index.stats("a").restarts == 0


def test_a_gap_without_replay_starts_a_new_run(chain: list[int]) -> None:
    index, engine = _index(replay=False), FakeEngine()
    other = _chain(9)
    index.apply("a", engine.store(chain, 4))
    engine.remove([chain[1]])  # lost: the index must not keep claiming chain[1]
    assert index.apply("a", engine.store(other, 3)) is None
    assert index.match(chain, ["a"]) == {"a": 0}
    assert index.match(other, ["a"]) == {"a": 3}
    stats = index.stats("a")
    assert (stats.gaps, stats.restarts, stats.last_seq, stats.phase) == (1, 1, 2, Phase.LIVE)


def test_replay_that_cannot_reach_back_starts_a_new_run(chain: list[int]) -> None:
    index, engine = _index(replay=True), FakeEngine(buffer=1)
    index.apply("a", engine.store(chain, 2))
    engine.remove([chain[0]])  # lost, and gone from the one-batch buffer too
    request = index.apply("a", engine.store(_chain(4), 2))
    _replay(index, engine, request)
    assert index.match(chain, ["a"]) == {"a": 0}
    assert index.match(_chain(4), ["a"]) == {"a": 2}
    assert index.stats("a").restarts == 1


def test_an_engine_restart_drops_the_old_blocks(chain: list[int]) -> None:
    index, old = _index(replay=True), FakeEngine()
    for upto in (2, 4, 6):
        index.apply("a", old.store(chain, upto))
    new, other = FakeEngine(), _chain(5)
    assert index.apply("a", new.store(other, 2)) is None  # seq 0 again: a new publisher
    assert index.match(chain, ["a"]) == {"a": 0}
    assert index.match(other, ["a"]) == {"a": 2}


def test_a_restart_seen_late_is_replayed_from_zero(chain: list[int]) -> None:
    index, old = _index(replay=True), FakeEngine()
    for upto in (1, 2, 3, 4, 5):
        index.apply("a", old.store(chain, upto))
    new = FakeEngine()
    lost = new.store(_chain(6), 3)
    request = index.apply("a", new.store(_chain(7), 2))  # seq 1 < 5: restart, and seq 0 missed
    assert request == ReplayRequest("a", 0)
    _replay(index, new, request)
    assert lost.seq == 0 and index.match(_chain(6), ["a"]) == {"a": 3}
    assert index.match(chain, ["a"]) == {"a": 0}


def test_a_disconnect_distrusts_until_batches_flow_on(chain: list[int]) -> None:
    index, engine = _index(), FakeEngine()
    index.apply("a", engine.store(chain, 3))
    index.disconnected("a")
    assert index.match(chain, ["a"]) == {"a": 0}
    index.apply("a", engine.store(chain, 4))  # the next seq: nothing was lost
    assert index.match(chain, ["a"]) == {"a": 4}


def test_resync_rebuilds_from_the_replay_buffer(chain: list[int]) -> None:
    index, engine = _index(replay=True), FakeEngine()
    for batch in (engine.store(chain, 5), engine.remove([chain[2]]), engine.store(_chain(8), 3)):
        index.apply("a", batch)
    request = index.resync("a")
    assert index.match(chain, ["a"]) == {"a": 0}
    live = engine.store(chain, 6)
    index.apply("a", live)  # arrives before the replay: held back
    _replay(index, engine, request)
    assert index.match(chain, ["a"]) == {"a": engine.leading(chain)}
    assert index.match(_chain(8), ["a"]) == {"a": 3}


def test_memory_is_bounded_and_stays_a_subset() -> None:
    index, engine = _index(max_blocks=8), FakeEngine()
    chains = [_chain(seed, 4) for seed in range(5)]
    for c in chains:
        index.apply("a", engine.store(c, 4))
    assert index.stats("a").num_blocks == 8
    assert [index.match(c, ["a"])["a"] for c in chains] == [0, 0, 0, 4, 4]  # oldest stored dropped


def test_held_batches_are_bounded(chain: list[int]) -> None:
    index, engine = _index(replay=True, max_held_batches=2), FakeEngine()
    index.apply("a", engine.store(chain, 1))
    engine.store(chain, 2)  # lost
    for upto in (3, 4, 5):
        index.apply("a", engine.store(chain, upto))
    index.end_replay("a")  # the replay never came
    assert index.match(chain, ["a"]) == {"a": 0}  # blocks 1..2 are unknown: nothing counts
    assert index.stats("a").num_blocks == 2  # the run restarted at the batches held after the hole (seq 3, 4)


def test_removed_replicas_are_forgotten(chain: list[int]) -> None:
    index, engine = _index(), FakeEngine()
    index.apply("a", engine.store(chain, 3))
    index.remove_replica("a")
    index.apply("a", engine.store(chain, 4))
    assert index.match(chain, ["a"]) == {"a": 0}
    assert index.stats("a") is None and index.replicas == []


def test_other_media_and_groups_are_ignored(chain: list[int]) -> None:
    index = _index()
    events = (
        BlockStored(tuple(chain[:2]), None, (), 16, medium="CPU"),
        BlockStored(tuple(chain[:2]), None, (), 16, medium="GPU", group_idx=1),
    )
    index.apply("a", EventBatch(seq=0, ts=0.0, events=events))
    assert index.match(chain, ["a"]) == {"a": 0}


def test_stats_report_lag_and_size(chain: list[int]) -> None:
    now = [100.0]
    index = _index(clock=lambda: now[0], wall_clock=lambda: 50.5)
    assert index.stats("a").seconds_since_event is None
    index.apply("a", EventBatch(seq=0, ts=50.0, events=(BlockStored(tuple(chain[:3]), None, (), 128),)))
    now[0] = 103.0
    stats = index.stats("a")
    assert (stats.num_blocks, stats.last_seq, stats.block_size) == (3, 0, 128)
    assert (stats.seconds_since_event, stats.event_delay) == (3.0, 0.5)


@pytest.mark.parametrize("replay", [True, False])
@pytest.mark.parametrize("seed", range(20))
def test_lost_and_reordered_batches_never_overclaim(replay: bool, seed: int) -> None:
    rng = random.Random(seed)
    index, engine = _index(replay=replay), FakeEngine(buffer=rng.choice([3, 50]))
    chains = [_chain(seed * 100 + i) for i in range(6)]
    in_flight: list[EventBatch] = []
    for _ in range(300):
        in_flight.append(_random_change(rng, engine, chains))
        if rng.random() < 0.1:
            in_flight.pop(rng.randrange(len(in_flight)))  # lost
        if len(in_flight) > 1 and rng.random() < 0.2:
            i = rng.randrange(len(in_flight) - 1)
            in_flight[i], in_flight[i + 1] = in_flight[i + 1], in_flight[i]  # reordered
        if in_flight and rng.random() < 0.6:
            request = index.apply("a", in_flight.pop(0))
            if request is not None and rng.random() < 0.7:
                _replay(index, engine, request)
            elif request is not None:
                index.end_replay("a")  # the replay timed out
        seen = index.stats("a").last_seq  # the index lags the engine by the batches in flight
        for c in chains:
            assert index.match(c, ["a"])["a"] <= engine.leading(c, seen)
    if replay:  # a resync with a buffer that reaches back far enough is exact again
        engine.buffer = 10_000
        _replay(index, engine, index.resync("a"))
        assert [index.match(c, ["a"])["a"] for c in chains] == [engine.leading(c) for c in chains]


def _random_change(rng: random.Random, engine: FakeEngine, chains: list[list[int]]) -> EventBatch:
    roll = rng.random()
    if roll < 0.6:
        return engine.store(rng.choice(chains), rng.randint(1, 6))
    if roll < 0.97 and engine.held:
        return engine.remove(rng.sample(sorted(engine.held), k=min(2, len(engine.held))))
    return engine.clear()


def test_a_distrusted_index_routes_exactly_like_least_loaded(chain: list[int]) -> None:
    index, engine = _index(replay=True), FakeEngine()
    index.apply("a", engine.store(chain, 6))
    engine.store(chain, 6)
    assert index.apply("a", engine.remove([chain[0]])) is not None  # gap: replay asked for
    rng = random.Random(0)
    for _ in range(200):
        loads = {r: ReplicaLoad(rng.randrange(8), rng.randrange(4) * 128) for r in ("a", "b", "c")}
        picked = choose(loads, index.match(chain, loads), prompt_tokens=6 * 16, block_size=16)
        assert picked.replica == least_loaded(loads)
        assert picked.best_cached_tokens == 0
